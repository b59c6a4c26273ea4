"""The video part of the bad-input corpus: every odd or broken input gives frames or ONE clear error.

Each case is generated on the fly (tests/media_corpus.py) and read by a real :class:`AvSource`. An
expected outcome is either "decodes between a and b frames (state ended)" or "fails with an error
containing X (state failed, error counted by kind)", or both (frames, then a failure). Nothing may
raise out of ``run()``, every run ends with an end marker, and no password ever shows up in the
error, the log or the metric labels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from daemon.metrics import Metrics
from daemon.sources.av import AvSource, AvSourceSettings
from daemon.types import Frame, StreamState
from tests import media_corpus as mc

PASSWORD = "s3cr3t-PW"
NET = {"open_timeout_s": 1.5, "read_timeout_s": 1.5, "reconnect": {"max_attempts": 0}}


@dataclass
class Case:
    id: str
    make: Callable[[Path, contextlib.ExitStack], str]
    frames: tuple[int, int] | None = None  # (min, max) analysed frames
    error: str | None = None  # substring of the one-line error (state failed)
    kind: str | None = None  # stream_errors{kind} that must be counted
    settings: dict = field(default_factory=dict)
    dropped: str | None = None  # frames_dropped_total{reason} that must be counted (skipped and counted)
    check: Callable[[list[Frame]], None] | None = None


def _clip(name: str, n: int = mc.N_FRAMES, **kw) -> Callable[[Path, contextlib.ExitStack], str]:
    def make(d: Path, _: contextlib.ExitStack) -> str:
        return str(mc.encode(d / name, mc.face_frames(n), **kw))

    return make


def _gray(frames: list[Frame]) -> None:
    for f in frames:
        assert np.array_equal(f.image[..., 0], f.image[..., 1]) and np.array_equal(f.image[..., 1], f.image[..., 2])
        assert f.image.std() > 5  # a real picture, not a blank


def _picture(frames: list[Frame]) -> None:
    ref = mc.face_frames(len(frames))
    for f, r in zip(frames, ref, strict=True):
        assert np.abs(f.image.astype(int) - r.astype(int)).mean() < 12, "decoded picture differs from the source"


def _upright(frames: list[Frame]) -> None:
    # marker_frame: 160x120 with a red block top-left; display rotation 90 (counter-clockwise)
    # -> 120x160 with the block bottom-left, exactly like `ffmpeg -autorotate` shows it
    for f in frames:
        assert f.image.shape == (160, 120, 3)
        assert f.image[150, 10, 0] > 200 and f.image[150, 10, 1] < 60  # red
        assert f.image[10, 10].max() < 60 and f.image[10, 100].max() < 60  # black


def _vfr(frames: list[Frame]) -> None:
    assert [round(f.pts, 3) for f in frames] == [0.0, 0.04, 0.08, 0.3, 0.31, 0.32, 0.7, 0.74, 1.5, 1.54]


def _rgba(n: int) -> list[np.ndarray]:
    return [np.dstack([f, np.full(f.shape[:2], 128, np.uint8)]) for f in mc.face_frames(n)]


def _truncated(keep: float, n: int, faststart: bool):
    def make(d: Path, _):
        return str(mc.truncated(mc.h264_mp4(d, "src.mp4", n=n, faststart=faststart), d / "cut.mp4", keep))

    return make


def _corrupted(ext: str, codec: str, fraction: float):
    def make(d: Path, _):
        opts = {"g": "5"} if codec == "libx264" else None  # (mc.encode adds the options that fix the bytes)
        src = mc.encode(d / f"src.{ext}", mc.face_frames(30), codec, options=opts)
        return str(mc.corrupted(src, d / f"bad.{ext}", fraction=fraction))

    return make


def _file(fn) -> Callable[[Path, contextlib.ExitStack], str]:
    return lambda d, _: str(fn(d))


def _stall_silent(d: Path, stack: contextlib.ExitStack) -> str:
    port = stack.enter_context(mc.stalling_server())
    return f"http://127.0.0.1:{port}/live.ts"


def _stall_mid_stream(d: Path, stack: contextlib.ExitStack) -> str:
    ts = mc.to_mpegts(mc.h264_mp4(d, "src.mp4", n=50), d / "src.ts").read_bytes()
    port = stack.enter_context(mc.stalling_server(ts[: len(ts) * 7 // 10], http=True))
    return f"http://127.0.0.1:{port}/live.ts"


def _stall_fifo(d: Path, stack: contextlib.ExitStack) -> str:
    ts = mc.to_mpegts(mc.h264_mp4(d, "src.mp4", n=50), d / "src.ts").read_bytes()
    return str(stack.enter_context(mc.stalling_fifo(d / "pipe.ts", ts[: len(ts) * 7 // 10])))


def _size_change(d: Path, _) -> str:
    small = mc.to_mpegts(mc.encode(d / "a.mp4", mc.face_frames(10, (160, 120))), d / "a.ts").read_bytes()
    big = mc.to_mpegts(mc.encode(d / "b.mp4", mc.face_frames(10, (320, 240))), d / "b.ts").read_bytes()
    p = d / "grows.ts"
    p.write_bytes(small + big)  # concatenated MPEG-TS: the frame size changes mid-stream
    return str(p)


_8K: list[Path] = []  # encoded once per session (pytest keeps tmp dirs), used by two cases


def _8k(d: Path, _) -> str:
    if not _8K or not _8K[0].is_file():
        frames = [np.zeros((4320, 7680, 3), np.uint8)] * 3
        _8K[:] = [mc.encode(d / "8k.mp4", frames, "libx264", options={"preset": "ultrafast"})]
    return str(_8K[0])


CASES = [
    Case("h264_mp4_ok", _clip("ok.mp4", options={"g": "5"}), frames=(10, 10), check=_picture),
    Case("truncated_mp4_30pct", _truncated(0.3, 10, False), error="not a readable video", kind="invalid_data"),
    Case("truncated_mp4_faststart", _truncated(0.3, 40, True), frames=(1, 39)),
    # corrupted bytes in the middle: the damaged packets are skipped and counted, the rest decodes
    Case("corrupted_mp4_middle", _corrupted("mp4", "libx264", 0.2), frames=(1, 29), dropped="decode_error"),
    Case("corrupted_mkv_middle", _corrupted("mkv", "libx264", 0.2), frames=(1, 29), dropped="decode_error"),
    Case("corrupted_webm_middle", _corrupted("webm", "libvpx-vp9", 0.05), frames=(1, 29), dropped="decode_error"),
    Case("zero_byte", _file(mc.zero_byte), error="file is empty (0 bytes)", kind="empty"),
    Case("text_renamed_mp4", _file(mc.text_as_mp4), error="not a readable video", kind="invalid_data"),
    Case("random_bytes_mkv", _file(mc.random_bytes), error="not a readable video", kind="invalid_data"),
    Case("missing_file", lambda d, _: str(d / "nope.mp4"), error="file not found", kind="not_found"),
    Case("directory", lambda d, _: str(d), error="is a directory", kind="not_found"),
    Case("audio_only", _file(mc.audio_only), error="no video stream (streams: audio)", kind="no_video"),
    Case("mjpeg_avi_valid", _clip("m.avi", codec="mjpeg", pix_fmt="yuvj420p"), frames=(10, 10), check=_picture),
    Case("vp9_webm_valid", _clip("v.webm", codec="libvpx-vp9"), frames=(10, 10), check=_picture),
    Case("mpeg4_avi_valid", _clip("m4.avi", codec="mpeg4", options={"qscale": "2"}), frames=(10, 10)),
    Case("h264_10bit", _clip("10b.mkv", pix_fmt="yuv420p10le"), frames=(10, 10), check=_picture),
    Case("odd_size_yuv444", lambda d, _: str(mc.encode(d / "odd.mkv", mc.face_frames(5, (161, 121)), "ffv1",
                                                       "yuv444p")), frames=(5, 5),
         check=lambda fr: _expect({f.image.shape for f in fr}, {(121, 161, 3)})),
    Case("variable_frame_rate", _clip("vfr.mkv", pts_ms=[0, 40, 80, 300, 310, 320, 700, 740, 1500, 1540]),
         frames=(10, 10), check=_vfr),
    Case("vfr_sampled_by_pts", _clip("vfr.mkv", pts_ms=[0, 40, 80, 300, 310, 320, 700, 740, 1500, 1540]),
         frames=(3, 3), settings={"analysis_fps": 2.0},  # one per 0.5 s of pts; a gap restarts the grid
         check=lambda fr: _expect([round(f.pts, 2) for f in fr], [0.0, 0.7, 1.5])),
    Case("rotation_90", lambda d, _: str(mc.encode(d / "rot.mp4", [mc.marker_frame()] * 5, rotation=90)),
         frames=(5, 5), check=_upright),
    Case("one_by_one", lambda d, _: str(mc.encode(d / "1x1.mkv", [np.full((1, 1, 3), 200, np.uint8)] * 5,
                                                  "ffv1", "bgr0")), frames=(5, 5),
         check=lambda fr: _expect({f.image.shape for f in fr}, {(1, 1, 3)})),
    Case("8k_decodes_downscaled", _8k, frames=(3, 3), settings={"resize_max_side": 640},
         check=lambda fr: _expect({f.image.shape for f in fr}, {(360, 640, 3)})),
    Case("8k_rejected_by_limit", _8k, error="resolution 7680x4320 exceeds the limit", kind="resolution",
         settings={"max_width": 4096, "max_height": 4096}),
    Case("resolution_grows_mid_stream", _size_change, frames=(1, 10), error="resolution 320x240 exceeds the limit",
         kind="resolution", settings={"max_width": 200, "max_height": 200}),
    Case("gray_ffv1", lambda d, _: str(mc.encode(d / "g.mkv", [f[..., 0] for f in mc.face_frames()], "ffv1",
                                                 "gray", src_format="gray")),
         frames=(10, 10), check=_gray),
    Case("gray_h264", lambda d, _: str(mc.encode(d / "g.mp4", [f[..., 0] for f in mc.face_frames()], "libx264",
                                                 "gray", src_format="gray")), frames=(10, 10), check=_gray),
    Case("rgb48_png_mov", lambda d, _: str(mc.encode(d / "rgb48.mov", [f.astype(np.uint16) * 257 for f in
                                                                        mc.face_frames(3)], "png", "rgb48be",
                                                     src_format="rgb48le")), frames=(3, 3), check=_picture),
    Case("gray16_ffv1", lambda d, _: str(mc.encode(d / "g16.mkv", [f[..., 0].astype(np.uint16) * 257 for f in
                                                                   mc.face_frames(3)], "ffv1", "gray16le",
                                                   src_format="gray16le")), frames=(3, 3), check=_gray),
    Case("alpha_png_mov", lambda d, _: str(mc.encode(d / "a.mov", _rgba(3), "png", "rgba", src_format="rgba")),
         frames=(3, 3), check=_picture),
    Case("alpha_vp9_webm", lambda d, _: str(mc.encode(d / "a.webm", _rgba(3), "libvpx-vp9", "yuva420p",
                                                      src_format="rgba")), frames=(3, 3), check=_picture),
    Case("ends_mid_gop", _file(mc.ends_mid_gop), frames=(1, 7)),
    Case("stall_silent_server", _stall_silent, error="timed out", kind="timeout", settings=NET),
    Case("stall_mid_stream", _stall_mid_stream, frames=(1, 49), error="timed out", kind="timeout",
         settings={**NET, "analysis_fps": None}),
    # a blocking read() that FFmpeg's own timeout cannot interrupt: only the watchdog sees it
    Case("stall_blocking_read_watchdog", _stall_fifo, frames=(0, 49), error="stalled, no data", kind="stall",
         settings={"open_timeout_s": 1, "read_timeout_s": 1, "analysis_fps": None}),
    Case("unreachable_host", lambda d, _: f"http://127.0.0.1:{mc.closed_port()}/live.ts",
         error="connection refused", kind="connect", settings=NET),
    Case("url_with_credentials", lambda d, _: f"rtsp://admin:{PASSWORD}@127.0.0.1:{mc.closed_port()}/live",
         error="rtsp://***@127.0.0.1", kind="connect", settings=NET),
    Case("http_url_with_token", lambda d, _: f"http://127.0.0.1:{mc.closed_port()}/live.m3u8?token={PASSWORD}",
         error="token=***", kind="connect", settings=NET),
    Case("unknown_protocol", lambda d, _: "nosuchproto://127.0.0.1/x", error="unsupported", kind="unsupported",
         settings=NET),
]


def _expect(got, want) -> None:
    assert got == want, f"{got} != {want}"


async def _run(src: AvSource, timeout: float = 30.0) -> list[Frame]:
    out: list[Frame] = []

    async def emit(f: Frame) -> bool:
        out.append(f)
        return True

    await asyncio.wait_for(src.run(emit), timeout)  # nothing but CancelledError may escape run()
    return out


def test_corpus_is_big_enough():
    assert len(CASES) >= 20
    assert len({c.id for c in CASES}) == len(CASES)


def corpus_hashes(root: Path) -> dict[str, str]:
    """Build every case's files under ``root/<case id>/`` and return {relative path: sha256} of each file."""
    import hashlib

    _8K.clear()  # build the 8K clip here too, not reuse an earlier one
    for case in CASES:
        d = root / case.id
        d.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            case.make(d, stack)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # (not the FIFO of the stall case)


_HASH_CORPUS = """
import json, tempfile
from pathlib import Path
from tests.test_bad_video_inputs import corpus_hashes
with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
    first, second = corpus_hashes(Path(a)), corpus_hashes(Path(b))
print(json.dumps([first, second]))
"""


def test_corpus_files_are_byte_identical_across_processes():
    """Every generated file has the same bytes in every build: twice in one process (the second build runs
    on recycled heap memory, where libx264's default mbtree read garbage) and in two fresh processes."""
    import json
    import subprocess
    import sys

    env = {**mc.env_without_proxies(), "OMP_NUM_THREADS": "1"}
    runs = []
    for _ in range(2):
        p = subprocess.run([sys.executable, "-c", _HASH_CORPUS], capture_output=True, text=True, timeout=300,
                           cwd=Path(__file__).resolve().parents[1], env=env)
        assert p.returncode == 0, p.stderr[-2000:]
        runs += json.loads(p.stdout.splitlines()[-1])
    assert len(runs[0]) >= 30 and all(r == runs[0] for r in runs[1:]), [
        k for k in runs[0] if len({r.get(k) for r in runs}) > 1]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_bad_video_input(case: Case, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG, logger="fakewatch")
    metrics = Metrics()
    with contextlib.ExitStack() as stack:
        url = case.make(tmp_path, stack)
        src = AvSource("cam", url, metrics, AvSourceSettings(**{"analysis_fps": None, **case.settings}))
        out = await _run(src)

    assert out and out[-1].end_of_stream, "run() must finish with an end marker"
    assert sum(f.end_of_stream for f in out) == 1
    frames = out[:-1]
    for f in frames:
        assert f.image.dtype == np.uint8 and f.image.ndim == 3 and f.image.shape[2] == 3
        assert f.image.flags.c_contiguous
    assert [f.seq for f in frames] == sorted({f.seq for f in frames})
    assert all(b.pts >= a.pts for a, b in zip(frames, frames[1:]))

    reg = metrics.registry
    if case.frames is not None:
        lo, hi = case.frames
        assert lo <= len(frames) <= hi, f"{len(frames)} frames, expected {lo}..{hi}"
    else:
        assert frames == []
    if case.error is not None:
        assert src.state == StreamState.FAILED
        assert src.last_error and case.error in src.last_error, src.last_error
        assert "\n" not in src.last_error
        assert reg.get_sample_value("fakewatch_stream_state", {"stream": "cam", "state": "failed"}) == 1.0
        failed_logs = [r for r in caplog.records if "-> failed" in r.getMessage()]
        assert len(failed_logs) == 1 and failed_logs[0].levelno == logging.ERROR  # ONE clear line
    else:
        assert src.state == StreamState.ENDED, src.last_error
        assert reg.get_sample_value("fakewatch_stream_state", {"stream": "cam", "state": "ended"}) == 1.0
    if case.kind is not None:
        assert reg.get_sample_value("fakewatch_stream_errors_total", {"stream": "cam", "kind": case.kind}) >= 1
    if case.dropped is not None:
        assert reg.get_sample_value("fakewatch_frames_dropped_total", {"stream": "cam", "reason": case.dropped}) >= 1
    if case.check is not None:
        case.check(frames)

    # credentials never leak: not in the error, not in any log line, not in any metric label
    assert PASSWORD not in (src.last_error or "")
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(src)
    for fam in reg.collect():
        for sample in fam.samples:
            assert all(PASSWORD not in v for v in sample.labels.values())


async def test_bad_and_good_source_side_by_side(tmp_path: Path):
    """A stalled stream and a broken file next to a good file in one loop: the good one delivers everything."""
    metrics = Metrics()
    good_clip = mc.h264_mp4(tmp_path, "good.mp4", n=40)
    with mc.stalling_server() as port:
        bad_net = AvSource("stalled", f"http://127.0.0.1:{port}/live.ts", metrics, AvSourceSettings(**NET))
        bad_file = AvSource("broken", str(mc.text_as_mp4(tmp_path)), metrics, AvSourceSettings())
        good = AvSource("good", str(good_clip), metrics, AvSourceSettings(analysis_fps=None))

        async def slow_run(src: AvSource) -> list[Frame]:
            out: list[Frame] = []

            async def emit(f: Frame) -> bool:
                await asyncio.sleep(0.01)  # a pipeline slower than decoding
                out.append(f)
                return True

            await asyncio.wait_for(src.run(emit), 30)
            return out

        got_bad_net, got_bad_file, got_good = await asyncio.gather(slow_run(bad_net), slow_run(bad_file),
                                                                   slow_run(good))
    assert bad_net.state == StreamState.FAILED and "timed out" in bad_net.last_error
    assert bad_file.state == StreamState.FAILED
    assert [f.end_of_stream for f in got_bad_net] == [True] and [f.end_of_stream for f in got_bad_file] == [True]
    assert good.state == StreamState.ENDED
    assert [f.seq for f in got_good[:-1]] == list(range(40)) and got_good[-1].end_of_stream
    assert metrics.registry.get_sample_value("fakewatch_frames_received_total", {"stream": "good"}) == 40
