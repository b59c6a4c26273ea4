"""Calibrated fusion: weights fitted from measured validation AUCs, carried by the bundle, used by the daemon;
and the DiffFake embedder taken from the frame detector's encoder."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from daemon.fusion import DEFAULT_WEIGHTS, FusionConfig, Observation, StreamFusion
from detectors.models import build_embedder, build_frame_detector
from trainer import train_loop as tl
from trainer.calibrate import fusion_weights
from trainer.difffake import init_backbone_from


def test_weights_follow_measured_auc_and_unmeasured_components_get_none():
    w = fusion_weights({"frame": {"video_auc": 0.9, "n_real_videos": 50, "n_fake_videos": 50},
                        "temporal": {"video_auc": 0.7, "n_real_videos": 10, "n_fake_videos": 10}})
    assert w["frame_weight"] == pytest.approx(0.4 / 0.6, abs=1e-3) and w["temporal_weight"] == pytest.approx(0.2 / 0.6, abs=1e-3)
    # two validation videos: not measured, no weight, whatever its AUC
    w = fusion_weights({"frame": {"video_auc": 0.8, "n_real_videos": 600, "n_fake_videos": 600},
                        "temporal": {"video_auc": 1.0, "n_real_videos": 2, "n_fake_videos": 2}})
    assert (w["frame_weight"], w["temporal_weight"]) == (1.0, 0.0)
    assert "not measured" in w["components"]["temporal"]["why"]
    # at chance: no signal, no weight; nothing qualifies -> the frame model decides alone
    w = fusion_weights({"frame": {"video_auc": 0.52, "n_real_videos": 9, "n_fake_videos": 9},
                        "temporal": {"video_auc": math.nan, "n_real_videos": 9, "n_fake_videos": 9}})
    assert (w["frame_weight"], w["temporal_weight"]) == (1.0, 0.0) and "decides alone" in w["components"]["frame"]["why"]


def test_config_weights_resolve_from_the_bundle_then_the_defaults():
    assert FusionConfig().frame_weight is None
    r = FusionConfig().resolve({"frame_weight": 1.0, "temporal_weight": 0.0})
    assert (r.frame_weight, r.temporal_weight) == (1.0, 0.0)
    assert (FusionConfig().resolve({}).frame_weight, FusionConfig().resolve(None).temporal_weight) == DEFAULT_WEIGHTS
    r = FusionConfig(temporal_weight=0.5).resolve({"frame_weight": 1.0, "temporal_weight": 0.0})
    assert (r.frame_weight, r.temporal_weight) == (1.0, 0.5)  # an explicit config value wins
    with pytest.raises(ValueError, match="resolve to 0"):
        FusionConfig(frame_weight=0.0).resolve({"frame_weight": 1.0, "temporal_weight": 0.0})


def test_a_zero_temporal_weight_leaves_the_verdict_to_the_frame_model():
    cfg = FusionConfig(frame_ema_alpha=1.0, min_frames=1).resolve({"frame_weight": 1.0, "temporal_weight": 0.0})
    f = StreamFusion("s", cfg, frame_threshold=0.8)
    t = f.observe(1, Observation(seq=0, pts=0.0, frame_prob=0.9, temporal=0.05))
    assert t.score == pytest.approx(0.5 + 0.5 * 0.1 / 0.2)  # the calibrated frame score alone
    assert t.temporal == 0.05  # still computed and reported
    # an unresolved config still works (defaults), instead of failing on a None weight
    g = StreamFusion("s", FusionConfig(frame_ema_alpha=1.0, min_frames=1), frame_threshold=0.8)
    s = g.observe(1, Observation(seq=0, pts=0.0, frame_prob=0.9, temporal=0.05)).score
    assert s == pytest.approx((0.6 * 0.75 + 0.4 * 0.05) / 1.0)


def test_difffake_embedder_starts_from_the_frame_detectors_encoder(tmp_path: Path):
    det = build_frame_detector("tiny_cnn")
    with torch.no_grad():
        for p in det.parameters():
            p.add_(torch.randn_like(p))

    class Wrapper(nn.Module):  # the ANL checkpoint layout: detector.* (+ train-only heads)
        def __init__(self):
            super().__init__()
            self.detector = det
            self.head = nn.Linear(2, 2)

    ck = tl.save_checkpoint(tmp_path / "anl.pt", "anl", Wrapper(), {"model": {"backbone": "tiny_cnn"}})
    emb = build_embedder("tiny_cnn")
    init_backbone_from(emb, ck)
    x = torch.randn(2, 3, 64, 64)
    det.eval(), emb.eval()
    with torch.no_grad():
        assert torch.allclose(emb(x), det.features(x).mean((2, 3)))
    other = build_embedder("tiny_cnn", width=16)
    with pytest.raises(tl.ConfigError, match="anl.pt: its backbone does not fit"):
        init_backbone_from(other, ck)
