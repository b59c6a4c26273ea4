"""Exportable torch modules shared by trainer (training, export) and tools: backbones, frame detector, embedder."""

from detectors.models.backbones import KNOWN, Backbone, TinyCNN, create_backbone, load_backbone_weights
from detectors.models.embed import Embedder, build_embedder
from detectors.models.frame import FrameDetector, build_frame_detector

__all__ = ["KNOWN", "Backbone", "TinyCNN", "create_backbone", "load_backbone_weights", "Embedder",
           "build_embedder", "FrameDetector", "build_frame_detector"]


def export_module(model):
    """The inference-only module of a trained model, in eval mode.

    FrameDetector (input (N,3,S,S) normalised -> logit (N,1)) and Embedder (-> embedding (N,D)) export as
    they are; a training wrapper (ANL, DiffusionFake) exposes ``export_module()`` returning its inference
    part (backbone + head; no noise head, filters, guide or diffusion model).
    """
    import torch

    if hasattr(model, "export_module") and callable(model.export_module):
        model = model.export_module()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"cannot export {type(model).__name__}: not a torch module")
    return model.eval()


__all__.append("export_module")
