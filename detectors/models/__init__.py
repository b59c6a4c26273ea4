"""Exportable torch modules shared by trainer (training, export) and tools: backbones, frame detector, embedder."""

from detectors.models.backbones import KNOWN, Backbone, TinyCNN, create_backbone, load_backbone_weights
from detectors.models.embed import Embedder, build_embedder
from detectors.models.frame import FrameDetector, build_frame_detector

__all__ = ["KNOWN", "Backbone", "TinyCNN", "create_backbone", "load_backbone_weights", "Embedder",
           "build_embedder", "FrameDetector", "build_frame_detector"]
