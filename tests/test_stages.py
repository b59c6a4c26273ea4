"""The daemon's stage units on their own: the tracking-embedding decision and model loading
(daemon/models.py), and the evidence of events (daemon/evidence.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from daemon.events import VerdictEvent
from daemon.evidence import EvidenceConfig, StreamEvidence
from daemon.models import BundleConfig, load_models, tracking_embedding, wants_bundle_embedder
from daemon.pipeline import PipelineConfig
from daemon.temporal import TemporalConfig
from detectors.bundle import load_bundle
from detectors.faces.types import Face
from tests.tiny_bundle import build_tiny_bundle


@pytest.mark.parametrize(("mode", "face", "bundle", "expected"), [
    ("auto", True, True, "face"),
    ("auto", True, False, "face"),
    ("auto", False, True, "bundle"),
    ("auto", False, False, "none"),
    ("bundle", True, True, "bundle"),
    ("bundle", True, False, "face"),  # the bundle has no embedding model: the face backend's
    ("bundle", False, False, "none"),
    ("none", True, True, "none"),
])
def test_tracking_embedding_decision(mode, face, bundle, expected):
    assert tracking_embedding(mode, face, bundle) == expected


def test_bundle_embedder_is_wanted_for_difffake_or_as_the_trackers_embedding():
    assert wants_bundle_embedder("none", True, temporal_enabled=True)
    assert not wants_bundle_embedder("none", False, temporal_enabled=False)
    assert wants_bundle_embedder("auto", False, temporal_enabled=False)  # no ArcFace: the bundle's embeds
    assert not wants_bundle_embedder("auto", True, temporal_enabled=False)
    assert wants_bundle_embedder("bundle", True, temporal_enabled=False)


class _Faces:
    """What load_models reads of a face pipeline: its embedder, name and crop geometry."""

    def __init__(self, embedder=None, crop_size=64, crop_scale=1.3):
        self.embedder, self.name, self.crop_size, self.crop_scale = embedder, "stand-in", crop_size, crop_scale


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_bundle(build_tiny_bundle(tmp_path_factory.mktemp("bundle")))


def test_load_models_loads_only_what_is_needed(tiny):
    one = BundleConfig.defaults(runtime="cpu", threads=1)
    off = PipelineConfig(temporal=TemporalConfig(enabled=False), tracking_embedding="auto")
    m = load_models(tiny, one, off, _Faces(embedder=object()))  # ArcFace present, DiffFake off: no embedder
    try:
        assert m.frame is not None and m.embedder is None and m.temporal is None
        assert m.track_embed == "face" and set(m.versions) == {"frame"}
        assert m.info["tracking_embedding"] == "face" and m.info["faces"] == "stand-in"
        assert m.info["frame_runtime"] == "onnxruntime-cpu"
    finally:
        m.close()
    m = load_models(tiny, one, PipelineConfig(), _Faces())  # DiffFake on, no ArcFace: the bundle's embeds
    try:
        assert m.embedder is not None and m.temporal is not None and m.track_embed == "bundle"
        assert set(m.versions) == {"frame", "temporal"}
    finally:
        m.close()


def test_bundle_section_defaults_do_not_touch_the_filesystem():
    cfg = BundleConfig.defaults(path="/nonexistent/bundle", threads=2)
    assert cfg.path == Path("/nonexistent/bundle") and cfg.threads == 2 and cfg.runtime == "auto"
    assert cfg.runtime_options() == {"torch_precision": "fp32", "cuda_graphs": False}
    with pytest.raises(ValueError, match="bundle folder not found"):
        BundleConfig(path="/nonexistent/bundle")


def test_pipeline_threads_points_to_the_bundle_section():
    with pytest.raises(ValueError, match="threads was removed: the bundle models' threads are bundle.threads"):
        PipelineConfig(threads=1)
    with pytest.raises(ValueError, match="evidence.enabled needs evidence.dir"):
        PipelineConfig(evidence=EvidenceConfig(enabled=True))


class _Obs:
    def __init__(self, quality: float, x: float):
        self.face = Face(np.array([x, 10.0, x + 40.0, 60.0], np.float32), 0.9, np.zeros((5, 2), np.float32))
        self.crop = np.full((8, 8, 3), int(quality * 100), np.uint8)
        self.quality = quality


def _event(track: int, kind: str, evidence: dict) -> VerdictEvent:
    return VerdictEvent("s", track, kind, 0, 5, 0.0, 1.0, 3, 0.2, "real", evidence=evidence)


def test_evidence_is_complete_before_the_event_exists(tmp_path):
    ev = StreamEvidence("cam/1", EvidenceConfig(enabled=True, dir=tmp_path))
    assert ev.for_event(7) == {}  # nothing seen of track 7
    ev.observe(7, _Obs(0.5, 0.0))
    ev.observe(7, _Obs(0.9, 100.0))  # the best so far
    ev.observe(7, _Obs(0.7, 200.0))
    got = ev.for_event(7, _Obs(0.7, 200.0))
    assert got["box"] == [200.0, 10.0, 240.0, 60.0] and got["quality"] == 0.7
    assert got["best_box"] == [100.0, 10.0, 140.0, 60.0] and got["best_quality"] == 0.9
    assert got["crop"] == str(tmp_path / "cam_1" / "track-7.jpg")
    # the id covers the evidence: the same event with another best crop is another event
    assert _event(7, "update", got).id != _event(7, "update", {**got, "best_quality": 0.5}).id


def test_evidence_writes_a_changed_crop_once_and_forgets_ended_tracks(tmp_path):
    ev = StreamEvidence("cam", EvidenceConfig(enabled=True, dir=tmp_path))
    ev.observe(1, _Obs(0.9, 0.0))
    ev.emitted(_event(1, "start", ev.for_event(1)))
    asyncio.run(ev.flush())
    crop = tmp_path / "cam" / "track-1.jpg"
    assert crop.is_file()
    crop.unlink()
    ev.emitted(_event(1, "update", ev.for_event(1)))  # unchanged best crop: not written again
    asyncio.run(ev.flush())
    assert not crop.exists()
    ev.emitted(_event(1, "end", ev.for_event(1)))
    assert ev.for_event(1) == {} and not ev.best


def test_evidence_without_crops_has_no_crop_path(tmp_path):
    ev = StreamEvidence("cam", EvidenceConfig())
    ev.observe(3, _Obs(0.8, 0.0))
    assert "crop" not in ev.for_event(3) and ev.for_event(3)["best_quality"] == 0.8
    ev.emitted(_event(3, "start", ev.for_event(3)))
    asyncio.run(ev.flush())
    assert not list(tmp_path.iterdir())
