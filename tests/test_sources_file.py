"""AvSource on files: frame counts, pts sampling, states and metrics, end marker, backpressure, stop/loop."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import numpy as np
import pydantic
import pytest

from daemon.metrics import Metrics
from daemon.sources.av import AvSource, AvSourceSettings, ReconnectPolicy
from daemon.sources.base import is_network_url, redact_url, scrub
from daemon.types import Frame, StreamState
from detectors import samples
from tests.media_corpus import deterministic_options


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """50 frames, 25 fps, 320x180 H.264 of a moving real face (2 s)."""
    p = tmp_path_factory.mktemp("clips") / "face25.mp4"
    return samples.write_video(p, samples.moving_frames(samples.astronaut(), 50, (320, 180)), fps=25,
                               options=deterministic_options("libx264", {"g": "10"}))  # same bytes every run


def val(m: Metrics, name: str, **labels) -> float | None:
    return m.registry.get_sample_value(name, labels)


async def collect(src: AvSource, delay: float = 0.0, timeout: float = 30.0, on_frame=None) -> list[Frame]:
    out: list[Frame] = []

    async def emit(f: Frame) -> bool:
        if delay:
            await asyncio.sleep(delay)
        out.append(f)
        if on_frame is not None:
            await on_frame(f)
        return True

    await asyncio.wait_for(src.run(emit), timeout)
    return out


async def test_every_frame_in_order(clip: Path):
    m = Metrics()
    src = AvSource("cam1", str(clip), m, AvSourceSettings(analysis_fps=None))
    assert src.live is False and src.state == StreamState.STARTING
    out = await collect(src)
    frames, end = out[:-1], out[-1]
    assert len(frames) == 50
    assert [f.seq for f in frames] == list(range(50))
    assert np.allclose([f.pts for f in frames], np.arange(50) / 25, atol=1e-3)
    assert all(f.stream_id == "cam1" and f.image.shape == (180, 320, 3) and f.image.dtype == np.uint8 for f in frames)
    assert end.end_of_stream and end.stream_id == "cam1" and end.image.size == 0
    assert src.state == StreamState.ENDED
    assert val(m, "fakewatch_frames_received_total", stream="cam1") == 50
    assert val(m, "fakewatch_frames_dropped_total", stream="cam1", reason="sampled_out") is None
    assert val(m, "fakewatch_stage_latency_seconds_count", stage="decode") == 50


async def test_sampling_to_analysis_fps(clip: Path):
    """25 fps at analysis_fps=5: one frame in five, by pts, the rest counted as sampled_out."""
    m = Metrics()
    out = await collect(AvSource("cam1", str(clip), m, AvSourceSettings(analysis_fps=5)))
    frames = out[:-1]
    assert [f.seq for f in frames] == list(range(0, 50, 5))
    assert np.allclose(np.diff([f.pts for f in frames]), 0.2, atol=1e-3)
    assert val(m, "fakewatch_frames_received_total", stream="cam1") == 50
    assert val(m, "fakewatch_frames_dropped_total", stream="cam1", reason="sampled_out") == 40
    assert val(m, "fakewatch_stage_latency_seconds_count", stage="decode") == 10  # only analysed frames converted


@pytest.mark.parametrize("fps,expected", [(25, 50), (10, 20), (7, 14), (1, 2), (100, 50)])
async def test_sampling_rates(clip: Path, fps: float, expected: int):
    m = Metrics()
    frames = (await collect(AvSource("c", str(clip), m, AvSourceSettings(analysis_fps=fps))))[:-1]
    assert len(frames) == expected
    assert val(m, "fakewatch_frames_dropped_total", stream="c", reason="sampled_out") == (50 - expected or None)


async def test_states_and_metrics(clip: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="fakewatch")
    m = Metrics()
    src = AvSource("cam1", str(clip), m, AvSourceSettings(analysis_fps=5))
    assert val(m, "fakewatch_stream_state", stream="cam1", state="starting") == 1
    seen: list[tuple[str, float | None, float | None]] = []

    async def on_frame(f: Frame) -> None:
        seen.append((src.state.value, val(m, "fakewatch_stream_state", stream="cam1", state="running"),
                     val(m, "fakewatch_stream_up", stream="cam1")))

    t0 = time.time()
    await collect(src, on_frame=on_frame)
    assert seen[0] == ("running", 1.0, 1.0)
    assert src.state == StreamState.ENDED
    assert val(m, "fakewatch_stream_state", stream="cam1", state="ended") == 1
    assert val(m, "fakewatch_stream_state", stream="cam1", state="running") == 0
    assert val(m, "fakewatch_stream_up", stream="cam1") == 0
    assert val(m, "fakewatch_stream_last_frame_timestamp_seconds", stream="cam1") >= t0
    assert val(m, "fakewatch_stream_errors_total", stream="cam1", kind="eof") is None  # files end normally
    log = caplog.text
    assert "starting -> running" in log and "running -> ended" in log and "h264 320x180" in log


async def test_backpressure_slow_pipeline_loses_nothing(clip: Path):
    """A file waits for a slow pipeline (buffer of 2): every frame arrives, nothing is dropped."""
    m = Metrics()
    src = AvSource("slow", str(clip), m, AvSourceSettings(analysis_fps=None, buffer_frames=2))
    frames = (await collect(src, delay=0.01))[:-1]
    assert [f.seq for f in frames] == list(range(50))
    for reason in ("queue_full", "sampled_out", "decode_error"):
        assert val(m, "fakewatch_frames_dropped_total", stream="slow", reason=reason) is None


async def test_live_mode_drops_instead_of_waiting(clip: Path):
    """Live streams never wait for a slow pipeline: frames without room are dropped and counted."""
    m = Metrics()
    src = AvSource("fast", str(clip), m, AvSourceSettings(analysis_fps=None, live=True, buffer_frames=1,
                                                         reconnect={"max_attempts": 0}))
    frames = (await collect(src, delay=0.02))[:-1]
    dropped = val(m, "fakewatch_frames_dropped_total", stream="fast", reason="queue_full")
    assert dropped and dropped >= 1
    assert len(frames) + dropped == val(m, "fakewatch_frames_received_total", stream="fast") == 50
    assert src.state == StreamState.FAILED and "stream ended (EOF)" in src.last_error  # a live stream must not end
    assert val(m, "fakewatch_stream_errors_total", stream="fast", kind="eof") == 1


async def test_resize_and_meta(clip: Path):
    src = AvSource("c", str(clip), Metrics(), AvSourceSettings(analysis_fps=5, resize_max_side=160))
    frames = (await collect(src))[:-1]
    assert {f.image.shape for f in frames} == {(90, 160, 3)}
    assert frames[0].meta["source_size"] == (320, 180)


async def test_stop_ends_gracefully(clip: Path):
    """stop() while looping: state ended, end marker, seq and pts continuous across loops."""
    m = Metrics()
    src = AvSource("loop", str(clip), m, AvSourceSettings(analysis_fps=None, loop=True, buffer_frames=2))

    async def on_frame(f: Frame) -> None:
        if f.seq == 120:
            await src.stop()

    out = await collect(src, on_frame=on_frame)
    frames = out[:-1]
    assert out[-1].end_of_stream and src.state == StreamState.ENDED
    assert len(frames) >= 121  # looped at least twice
    assert [f.seq for f in frames] == list(range(len(frames)))
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    assert val(m, "fakewatch_stream_reconnects_total", stream="loop") is None  # looping is not reconnecting


async def test_stop_during_reconnect_backoff():
    """stop() wakes a live source that sleeps in a long backoff: it ends at once, as ended."""
    from tests.media_corpus import closed_port

    m = Metrics()
    src = AvSource("cam", f"rtsp://127.0.0.1:{closed_port()}/live", m,
                   AvSourceSettings(open_timeout_s=2, reconnect={"initial_s": 300, "max_s": 300}))
    got: list[Frame] = []

    async def emit(f: Frame) -> bool:
        got.append(f)
        return True

    task = asyncio.create_task(src.run(emit))
    for _ in range(200):
        if src.state == StreamState.RECONNECTING:
            break
        await asyncio.sleep(0.05)
    assert src.state == StreamState.RECONNECTING
    await src.stop()
    await asyncio.wait_for(task, 10)  # far less than the 300 s backoff
    assert src.state == StreamState.ENDED and [f.end_of_stream for f in got] == [True]
    assert val(m, "fakewatch_stream_errors_total", stream="cam", kind="connect") == 1


async def test_cancel_propagates_and_ends(clip: Path):
    src = AvSource("c", str(clip), Metrics(), AvSourceSettings(analysis_fps=None, loop=True))
    got: list[Frame] = []
    started = asyncio.Event()

    async def emit(f: Frame) -> bool:
        got.append(f)
        started.set()
        await asyncio.sleep(0.005)
        return True

    task = asyncio.create_task(src.run(emit))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert src.state == StreamState.ENDED
    assert got[-1].end_of_stream


async def test_shared_data_video(shared_data: Path):
    """A real talking-head clip from ../shared/data decodes at the analysis rate."""
    videos = sorted((shared_data / "videos").rglob("*.mp4"))
    assert videos
    m = Metrics()
    frames = (await collect(AvSource("real", str(videos[0]), m, AvSourceSettings(analysis_fps=2))))[:-1]
    received = val(m, "fakewatch_frames_received_total", stream="real")
    assert len(frames) >= 2 and received > len(frames)
    duration = frames[-1].pts - frames[0].pts
    assert abs(len(frames) - (duration * 2 + 1)) <= 2  # ~2 per second of video, whatever its fps


# --- settings and helpers ---------------------------------------------------------------------------


def test_settings_are_strict():
    with pytest.raises(pydantic.ValidationError):
        AvSourceSettings(analysis_fsp=5)  # typo: rejected, not ignored
    with pytest.raises(pydantic.ValidationError):
        AvSourceSettings(analysis_fps=0)
    with pytest.raises(pydantic.ValidationError):
        AvSourceSettings(reconnect={"initial_s": 5, "max_s": 1})
    s = AvSourceSettings.model_validate({"analysis_fps": None, "av_options": {"rtsp_transport": "tcp"},
                                         "reconnect": {"max_attempts": 3}})
    assert s.analysis_fps is None and s.reconnect.max_attempts == 3 and s.av_options == {"rtsp_transport": "tcp"}


def test_backoff_is_capped_exponential():
    p = ReconnectPolicy(initial_s=0.5, max_s=4, factor=2, jitter=0)
    assert [p.delay(n) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]
    j = ReconnectPolicy(initial_s=1, max_s=10, factor=2, jitter=0.2)
    ds = [j.delay(3) for _ in range(200)]
    assert 3.2 <= min(ds) < max(ds) <= 4.8


def test_live_auto_detection(tmp_path: Path):
    m = Metrics()
    assert AvSource("a", "rtsp://127.0.0.1/x", m).live
    assert AvSource("b", "http://127.0.0.1/x.m3u8", m).live
    assert not AvSource("c", str(tmp_path / "x.mp4"), m).live
    assert not AvSource("d", "rtsp://127.0.0.1/x", m, AvSourceSettings(live=False)).live
    assert not is_network_url("C:\\videos\\a.mp4") and not is_network_url("file:///tmp/a.mp4")


@pytest.mark.parametrize(
    "url,expected",
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
        ("rtmp://user@127.0.0.1/live/key", "rtmp://***@127.0.0.1/live/key"),
        ("http://127.0.0.1/live.m3u8?token=abc&x=1", "http://127.0.0.1/live.m3u8?token=***&x=1"),
        ("https://a:b@host/p?password=zz", "https://***@host/p?password=***"),
        ("rtsp://127.0.0.1:8554/live", "rtsp://127.0.0.1:8554/live"),
        ("/videos/a@b.mp4", "/videos/a@b.mp4"),
        ("", ""),
    ],
)
def test_redact_url(url: str, expected: str):
    assert redact_url(url) == expected


def test_scrub_text_mentioning_the_url():
    url = "rtsp://admin:p%40ss@127.0.0.1/x"
    msg = "Connection to rtsp://admin:p%40ss@127.0.0.1/x failed; user admin:p%40ss"
    out = scrub(msg, url)
    assert "p%40ss" not in out and "rtsp://***@127.0.0.1/x" in out


async def test_realtime_releases_frames_at_their_presentation_time(clip: Path):
    """realtime paces the reader itself (a camera made from a file): frames are not released
    faster than their pts advance, and with a live buffer nothing is dropped as queue_full."""
    m = Metrics()
    src = AvSource("rt", str(clip), m, AvSourceSettings(analysis_fps=5, live=True, realtime=True,
                                                        reconnect=ReconnectPolicy(max_attempts=0)))
    out = [f for f in await collect(src) if not f.end_of_stream]
    assert len(out) >= 8  # 2 s at 5 fps
    span_pts = out[-1].pts - out[0].pts
    span_wall = out[-1].received_at - out[0].received_at
    assert span_wall >= 0.9 * span_pts  # lower bound only: a loaded machine can only be slower
    assert not val(m, "fakewatch_frames_dropped_total", stream="rt", reason="queue_full")


async def test_loop_replays_without_reconnect_backoff(clip: Path):
    m = Metrics()
    src = AvSource("lp", str(clip), m, AvSourceSettings(analysis_fps=None, live=True, loop=True))
    got: list[Frame] = []

    async def on_frame(f: Frame) -> None:
        if len(got) >= 120:  # more than two passes over the 50-frame clip
            await src.stop()

    async def emit(f: Frame) -> bool:
        got.append(f)
        await on_frame(f)
        return True

    await asyncio.wait_for(src.run(emit), 30)
    frames = [f for f in got if not f.end_of_stream]
    assert len(frames) >= 100
    assert all(b.pts > a.pts for a, b in zip(frames, frames[1:]))  # continuous across replays
    assert not val(m, "fakewatch_stream_reconnects_total", stream="lp")
