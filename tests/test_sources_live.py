"""AvSource on live network streams served on 127.0.0.1: HTTP/MPEG-TS (ffmpeg -listen) and RTSP.

The HTTP test kills the server mid-stream, restarts it and checks the reconnect path: state
``reconnecting`` in the metrics, ``stream_reconnects_total`` counted, frames resume with seq/pts
continuing. The RTSP test runs npm's ``rtsp-streaming-server`` (GPL-3.0, a test tool only, installed
into a cache folder outside the repo) fed by ``ffmpeg -f rtsp``. Everything is bounded by timeouts and
every child process is killed in ``finally``.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from daemon.metrics import Metrics
from daemon.sources.av import AvSource, AvSourceSettings
from daemon.types import Frame, StreamState
from tests import media_corpus as mc

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(mc.ffmpeg_bin() is None, reason="ffmpeg CLI not installed (apt-get install ffmpeg)"),
]

RTSP_SERVER_PKG = "rtsp-streaming-server@2.1.0"


@pytest.fixture(scope="module")
def live_clip(tmp_path_factory) -> Path:
    """6 s, 25 fps, 320x180 H.264 with a keyframe every 0.4 s (a reconnect resumes quickly)."""
    return mc.encode(tmp_path_factory.mktemp("live") / "live.mp4", mc.face_frames(150, (320, 180)), "libx264",
                     options={"g": "10", "bf": "0"})


def val(m: Metrics, name: str, **labels) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


async def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


class Collector:
    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.end: Frame | None = None

    async def emit(self, f: Frame) -> bool:
        if f.end_of_stream:
            self.end = f
        else:
            self.frames.append(f)
        return True


@asynccontextmanager
async def running(src: AvSource, got: Collector):
    """Run ``src`` into ``got`` as a task; on a clean exit stop it and check that it ended with an
    end-of-stream frame; on any failure cancel it (bounded)."""
    task = asyncio.create_task(src.run(got.emit))
    try:
        yield task
        await src.stop()
        await asyncio.wait_for(task, 15)
        assert src.state == StreamState.ENDED and got.end is not None
    finally:
        if not task.done():
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)


async def test_http_live_reconnects_after_server_restart(live_clip: Path):
    port = mc.free_port()
    url = f"http://127.0.0.1:{port}/live.ts"
    m = Metrics()
    settings = AvSourceSettings(
        analysis_fps=None, open_timeout_s=5, read_timeout_s=3,
        reconnect={"initial_s": 0.2, "max_s": 1.0, "factor": 2.0, "jitter": 0.1},
    )
    src = AvSource("cam-http", url, m, settings)
    assert src.live
    got = Collector()
    server = mc.serve_http_ts(live_clip, port, loops=-1)
    try:
        async with running(src, got):
            await wait_for(lambda: len(got.frames) >= 25, 30, "first frames")
            assert src.state == StreamState.RUNNING
            assert val(m, "fakewatch_stream_state", stream="cam-http", state="running") == 1
            reconnects_before = val(m, "fakewatch_stream_reconnects_total", stream="cam-http")

            mc.kill(server)  # the stream dies mid-way
            await wait_for(lambda: src.state == StreamState.RECONNECTING, 15, "state reconnecting")
            assert val(m, "fakewatch_stream_state", stream="cam-http", state="reconnecting") == 1
            assert val(m, "fakewatch_stream_up", stream="cam-http") == 0
            n_before = len(got.frames)
            await asyncio.sleep(1.5)  # a few failed attempts against the dead port

            server = mc.serve_http_ts(live_clip, port, loops=-1)
            await wait_for(lambda: len(got.frames) >= n_before + 25, 40, "frames after the restart")
            assert src.state == StreamState.RUNNING
            assert val(m, "fakewatch_stream_reconnects_total", stream="cam-http") >= reconnects_before + 1
            errors = sum(val(m, "fakewatch_stream_errors_total", stream="cam-http", kind=k)
                         for k in ("eof", "connect", "io", "timeout", "stall"))
            assert errors >= 1
            seqs = [f.seq for f in got.frames]
            assert seqs == sorted(set(seqs))
            pts = [f.pts for f in got.frames]
            assert all(b > a for a, b in zip(pts, pts[1:])), "pts must keep increasing across the reconnect"
    finally:
        mc.kill(server)


async def test_http_live_gives_up_after_max_attempts(live_clip: Path):
    """With reconnect.max_attempts, a live stream that never comes back ends as failed (one clear error)."""
    port = mc.closed_port()
    m = Metrics()
    src = AvSource("gone", f"http://127.0.0.1:{port}/live.ts", m,
                   AvSourceSettings(open_timeout_s=2, reconnect={"initial_s": 0.1, "max_s": 0.2, "max_attempts": 3}))
    got = Collector()
    await asyncio.wait_for(src.run(got.emit), 30)
    assert src.state == StreamState.FAILED and got.end is not None
    assert "gave up after 3 reconnect attempts" in src.last_error
    assert val(m, "fakewatch_stream_reconnects_total", stream="gone") == 3
    assert val(m, "fakewatch_stream_errors_total", stream="gone", kind="connect") == 4


# --- RTSP ----------------------------------------------------------------------------------------------

NODE_SCRIPT = r"""
// Start rtsp-streaming-server bound to 127.0.0.1 only (the package listens on all interfaces).
const net = require('net'), dgram = require('dgram');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (port, ...rest) {
  if (typeof port === 'number' && (rest.length === 0 || typeof rest[0] === 'function'))
    return listen.call(this, port, '127.0.0.1', ...rest);
  return listen.call(this, port, ...rest);
};
const bind = dgram.Socket.prototype.bind;
dgram.Socket.prototype.bind = function (port, ...rest) {
  if (typeof port === 'number' && (rest.length === 0 || typeof rest[0] === 'function'))
    return bind.call(this, port, '127.0.0.1', ...rest);
  return bind.call(this, port, ...rest);
};
const RtspServer = require('rtsp-streaming-server').default;
const [serverPort, clientPort, rtpPortStart] = process.argv.slice(2).map(Number);
new RtspServer({ serverPort, clientPort, rtpPortStart, rtpPortCount: 200 })
  .start().then(() => console.log('READY'), (e) => { console.error(e); process.exit(1); });
setTimeout(() => process.exit(0), 120000);  // never outlive the test
"""


@pytest.fixture(scope="session")
def rtsp_server_dir() -> Path:
    """npm install of rtsp-streaming-server into a cache folder (skips when npm or the registry is missing)."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        pytest.skip("RTSP test needs node and npm (to install rtsp-streaming-server, a GPL test tool)")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fakewatch-tests" / "rtsp-2.1.0"
    pkg = cache / "node_modules" / "rtsp-streaming-server" / "package.json"
    if not pkg.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        try:
            r = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache), RTSP_SERVER_PKG],
                               capture_output=True, text=True, timeout=180)
        except subprocess.TimeoutExpired:
            pytest.skip(f"npm install {RTSP_SERVER_PKG} timed out")
        if r.returncode != 0 or not pkg.is_file():
            pytest.skip(f"npm install {RTSP_SERVER_PKG} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    (cache / "serve.js").write_text(NODE_SCRIPT)
    return cache


def start_rtsp_server(d: Path) -> tuple[subprocess.Popen, int, int]:
    publish, client = mc.free_port(), mc.free_port()
    rtp = random.Random().randrange(20000, 40000, 2)
    proc = subprocess.Popen(["node", str(d / "serve.js"), str(publish), str(client), str(rtp)], cwd=d,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if "READY" not in line:
        mc.kill(proc)
        raise AssertionError(f"rtsp server did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    return proc, publish, client


def publish_rtsp(clip: Path, port: int) -> subprocess.Popen:
    cmd = [mc.ffmpeg_bin(), "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(clip),
           "-c", "copy", "-f", "rtsp", f"rtsp://127.0.0.1:{port}/live"]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def test_rtsp_live(live_clip: Path, rtsp_server_dir: Path):
    server = publisher = None
    try:
        server, publish_port, client_port = start_rtsp_server(rtsp_server_dir)
        publisher = publish_rtsp(live_clip, publish_port)
        await asyncio.sleep(1.0)  # let the publisher ANNOUNCE/RECORD the mount
        m = Metrics()
        src = AvSource("cam-rtsp", f"rtsp://127.0.0.1:{client_port}/live", m,
                       AvSourceSettings(analysis_fps=5, open_timeout_s=5, read_timeout_s=5,
                                        reconnect={"initial_s": 0.5, "max_s": 1.0}))
        got = Collector()
        async with running(src, got):
            await wait_for(lambda: len(got.frames) >= 8, 40, "RTSP frames")
            assert src.state == StreamState.RUNNING
            assert {f.image.shape for f in got.frames} == {(180, 320, 3)}
            received = val(m, "fakewatch_frames_received_total", stream="cam-rtsp")
            sampled = val(m, "fakewatch_frames_dropped_total", stream="cam-rtsp", reason="sampled_out")
            assert received >= 5 * len(got.frames) - 5 and sampled > 0  # 25 fps read, ~5 fps analysed
    finally:
        mc.kill(publisher)
        mc.kill(server)
