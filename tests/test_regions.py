"""Region passes between full-frame face detections (detectors/faces/roi.py): geometry, the planner's
rules, CenterFace on real photos (regions find what the full pass finds), and the daemon using them."""

from __future__ import annotations

import asyncio

import cv2
import numpy as np
import pytest

from daemon.app import Daemon
from daemon.runner import region_planner
from daemon.metrics import Metrics
from daemon.sources.av import AvSource, AvSourceSettings
from detectors import samples
from detectors.bundle import load_bundle
from detectors.faces.centerface import CenterFaceDetector
from detectors.faces.factory import FacesConfig, RegionsConfig
from detectors.faces.pipeline import FacePipeline
from detectors.faces.roi import RegionPlan, RegionPlanner, crop_region, inner_half, square_regions
from detectors.faces.types import Face
from tests.media_corpus import deterministic_options
from tests.test_pipeline import ONE_THREAD, CollectSink, _cfg
from tests.tiny_bundle import build_tiny_bundle


def _face(x1, y1, x2, y2, score=0.9) -> Face:
    box = np.array([x1, y1, x2, y2], np.float32)
    return Face(box=box, score=score, kps=np.zeros((5, 2), np.float32))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = np.maximum(a[:2], b[:2])
    x2, y2 = np.minimum(a[2:], b[2:])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


# --- geometry ----------------------------------------------------------------------------------------


def test_square_regions_are_centred_squares():
    r = square_regions([_face(100, 50, 140, 110)], 2.0)  # 40 x 60 face
    np.testing.assert_allclose(r, [[60, 20, 180, 140]])  # side 2 x 60, centred on (120, 80)
    assert square_regions([], 2.0).shape == (0, 4)


@pytest.mark.parametrize("region", [(10.3, 20.7, 74.9, 85.3), (-30.0, -10.0, 50.0, 70.0), (600.0, 300.0, 700.0, 400.0)])
def test_crop_region_maps_back_exactly(region):
    """A marked pixel lands where origin + crop / s says, also for regions hanging off the frame."""
    img = np.zeros((360, 640, 3), np.uint8)
    x0, y0, x1, y1 = region
    mx, my = int(np.clip((x0 + x1) / 2, 0, 639)), int(np.clip((y0 + y1) / 2, 0, 359))
    img[my, mx] = 255
    crop, origin, s = crop_region(img, np.array(region, np.float32), 256)  # upscaled: the mark spreads
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    ys, xs = np.nonzero(crop[:, :, 0] == crop[:, :, 0].max())
    back = origin + np.array([xs.mean() + 0.5, ys.mean() + 0.5]) / s
    np.testing.assert_allclose(back, [mx + 0.5, my + 0.5], atol=1.0)
    if x0 < 0:  # the off-frame part is zero padding
        assert crop[:, : int(-np.floor(x0) * s) - 1].max() == 0


def test_inner_half():
    region = np.array([0, 0, 100, 100], np.float32)
    assert inner_half(np.array([30, 30, 70, 70]), region)
    assert inner_half(np.array([55, 55, 95, 95]), region)  # centre (75, 75): on the edge of the inner half
    assert not inner_half(np.array([60, 60, 100, 100]), region)


# --- planner ----------------------------------------------------------------------------------------


def test_planner_rules():
    p = RegionPlanner(full_every=3, expand=2.0, face_px=64)
    shape = (720, 1280, 3)
    assert p.plan("a", shape) is None  # nothing known: full pass
    p.update("a", shape, [], None)
    assert p.plan("a", shape) is None  # no face yet: keep looking everywhere
    faces = [_face(100, 100, 200, 220), _face(400, 100, 480, 200)]
    p.update("a", shape, faces, None)
    plan = p.plan("a", shape)
    assert isinstance(plan, RegionPlan) and plan.regions.shape == (2, 4)
    assert plan.input_px == 128  # 2 x min(64, 120 px face at scale 1) = 128
    p.update("a", shape, faces, plan)
    plan2 = p.plan("a", shape)
    assert plan2 is not None
    p.update("a", shape, faces, plan2)
    assert p.plan("a", shape) is None  # third frame: full_every = 3
    p.update("a", shape, faces, None)
    plan = p.plan("a", shape)
    p.update("a", shape, faces[:1], plan)  # a face was lost in a region pass
    assert p.plan("a", shape) is None
    p.update("a", shape, faces, None)
    assert p.plan("a", (360, 640, 3)) is None  # new frame size
    assert p.plan("b", shape) is None  # streams are independent
    p.forget("a")
    p.forget("b")
    assert p.plan("a", shape) is None and len(p) == 1


def test_planner_cadence_holds_when_a_batch_plans_several_frames_of_one_stream():
    """The daemon plans a whole batch before detecting it: still one full pass per full_every frames."""
    p = RegionPlanner(full_every=4)
    shape = (360, 640, 3)
    faces = [_face(100, 100, 150, 160)]
    kinds = []
    for _ in range(6):  # batches of 4 frames of the same stream
        plans = [p.plan("s", shape) for _ in range(4)]
        for pl in plans:
            p.update("s", shape, faces, pl)
        kinds += ["F" if pl is None else "r" for pl in plans]
    assert "".join(kinds) == "FFFF" + "rrrF" * 5  # the first batch knows no face yet: all full


def test_planner_full_pass_interval_follows_stream_time():
    p = RegionPlanner(full_interval_s=0.5, full_every=100)
    shape = (360, 640, 3)
    faces = [_face(100, 100, 150, 160)]
    kinds = ""
    for pts in [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.2, 0.3, 0.9, 1.05]:  # 0.2: the stream looped
        pl = p.plan("s", shape, pts)
        p.update("s", shape, faces, pl)
        kinds += "F" if pl is None else "r"
    assert kinds == "FrrrrFrFrFr"
    with pytest.raises(ValueError):
        RegionPlanner(full_interval_s=-1)


def test_planner_never_sees_faces_smaller_than_a_full_pass_and_falls_back_when_regions_cost_more():
    # full pass at scale 0.25: a 100-px face is 25 px there, so regions keep 25 px: 2 x 25 -> 64
    p = RegionPlanner(full_every=10, expand=2.0, face_px=64, full_scale=lambda w, h: 0.25,
                      full_cost_px=lambda w, h: 320 * 192)
    shape = (720, 1280, 3)
    p.update("s", shape, [_face(0, 0, 100, 100)], None)
    plan = p.plan("s", shape)
    assert plan is not None and plan.input_px == 64
    many = [_face(i * 80, 0, i * 80 + 100, 100) for i in range(15)]  # 15 x 64^2 >= 320 x 192
    p.update("s", shape, many, None)
    assert p.plan("s", shape) is None
    with pytest.raises(ValueError):
        RegionPlanner(full_every=0)
    with pytest.raises(ValueError):
        RegionPlanner(face_px=8)


# --- CenterFace on real photos ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def centerface():
    return CenterFaceDetector(threads=1)


@pytest.fixture(scope="module")
def group_frame():
    """insightface's t1 group photo (6 faces) on a 1280x720 canvas."""
    img = samples.group_photo()
    h, w = img.shape[:2]
    s = min(1280 / w, 720 / h)
    small = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[: small.shape[0], : small.shape[1]] = small
    return frame


def test_regions_find_what_the_full_pass_finds(centerface, group_frame):
    full = centerface.detect(group_frame)
    assert len(full) == 6
    # the faces move a little between frames: shift the frame by 12 px and search last frame's regions
    moved = np.roll(group_frame, (6, 12), axis=(0, 1))
    ref = centerface.detect(moved)
    got = centerface.detect_regions(moved, square_regions(full, 2.0), 128)
    assert len(got) == len(ref) == 6
    for f in ref:
        g = max(got, key=lambda x: _iou(x.box, f.box))
        assert _iou(g.box, f.box) > 0.8
        assert np.abs(g.kps - f.kps).max() < 0.08 * f.width  # landmarks agree to a few % of the face
        assert abs(g.score - f.score) < 0.15


def test_region_without_face_and_cut_neighbours(centerface, group_frame):
    full = centerface.detect(group_frame)
    assert centerface.detect_regions(group_frame, np.array([[1100, 600, 1200, 700]], np.float32), 64) == []
    assert centerface.detect_regions(group_frame, np.zeros((0, 4), np.float32)) == []
    # one region around one face: only faces centred in its inner half come back (no cut neighbours)
    region = square_regions(full[:1], 2.0)
    got = centerface.detect_regions(group_frame, region, 128)
    assert len(got) >= 1 and all(inner_half(f.box, region[0]) for f in got)
    with pytest.raises(ValueError, match="multiple of 32"):
        centerface.detect_regions(group_frame, region, 100)


def test_pipeline_regions_and_backends_without_them(centerface, group_frame):
    pipe = FacePipeline(centerface)
    assert pipe.supports_regions
    full = pipe.process(group_frame)
    plan = RegionPlan(square_regions([o.face for o in full], 2.0), 128)
    a, b = pipe.process_many([group_frame, group_frame], [plan, None])
    assert len(a) == len(b) == len(full)
    assert all(o.crop.shape == (256, 256, 3) for o in a)
    with pytest.raises(ValueError, match="region lists"):
        pipe.process_many([group_frame], [plan, None])

    class FullOnly:
        name = "full-only"

        def detect(self, image):
            return centerface.detect(image)

    other = FacePipeline(FullOnly())
    assert not other.supports_regions
    with pytest.raises(ValueError, match="cannot search regions"):
        other.process_many([group_frame], [plan])
    assert region_planner(FacesConfig(), other) is None  # the daemon falls back to full passes
    assert region_planner(FacesConfig(regions=RegionsConfig(enabled=False)), pipe) is None
    assert isinstance(region_planner(FacesConfig(), pipe), RegionPlanner)


# --- the daemon -----------------------------------------------------------------------------------------


async def _run(clip, regions, tmp_path):
    metrics = Metrics()
    sink = CollectSink()
    faces = FacePipeline(CenterFaceDetector(det_max_side=320, threads=1))
    bundle = load_bundle(build_tiny_bundle(tmp_path / "bundle"))
    planner = region_planner(FacesConfig(regions=RegionsConfig(full_every=4)), faces) if regions else None
    d = Daemon(_cfg(), faces, bundle, [sink], metrics, models=ONE_THREAD, regions=planner)
    await d.start()
    d.add_source(AvSource("cam", str(clip), metrics, AvSourceSettings(analysis_fps=10.0)))
    await asyncio.wait_for(d.wait_sources(), 120)
    await d.shutdown()
    passes = {m: metrics.registry.get_sample_value("fakewatch_detect_passes_total", {"mode": m}) or 0.0
              for m in ("full", "regions")}
    n_faces = metrics.registry.get_sample_value("fakewatch_faces_detected_total", {"stream": "cam"})
    return sink.events, passes, n_faces, planner


async def test_daemon_uses_region_passes_and_keeps_the_tracks(tmp_path):
    clip = samples.write_video(tmp_path / "two.mp4", samples.moving_frames(samples.group_photo(), 60, (640, 360)),
                               options=deterministic_options("libx264"))  # same bytes every run
    ev_full, passes_full, faces_full, _ = await _run(clip, False, tmp_path / "a")
    ev_reg, passes_reg, faces_reg, planner = await _run(clip, True, tmp_path / "b")
    assert passes_full["regions"] == 0 and passes_full["full"] > 0
    assert passes_reg["regions"] > passes_reg["full"] > 0  # mostly region passes, a full one every 4th frame
    assert faces_reg >= 0.95 * faces_full
    tracks = lambda evs: sorted({e.track_id for e in evs if e.event == "start"})  # noqa: E731
    assert len(tracks(ev_reg)) == len(tracks(ev_full)) >= 4
    assert len(planner) == 0  # the end of the stream forgot its state
