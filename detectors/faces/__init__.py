"""Face detection, alignment and identity embeddings (one pipeline for training and serving)."""

from detectors.faces.align import ARCFACE_TEMPLATE_112, align_face, crop_template, similarity_transform
from detectors.faces.types import Face, FaceDetector, FaceEmbedder

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "Face",
    "FaceDetector",
    "FaceEmbedder",
    "align_face",
    "crop_template",
    "similarity_transform",
]
