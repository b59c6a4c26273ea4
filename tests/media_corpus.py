"""Generators of good, odd and bad video inputs for the source tests (all made here, with PyAV).

Every generator writes into a folder it is given and returns the path (or URL). Clips are tiny
(a few frames, small sizes) so that the whole corpus builds in seconds on a loaded 2-core box.
Also: small loopback servers that misbehave (accept and say nothing, or stall mid-stream) and a
helper that serves a clip as live HTTP/MPEG-TS with the ffmpeg CLI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from detectors import samples

N_FRAMES = 10  # frames in most generated clips


# --- frame makers -------------------------------------------------------------------------------------


def face_frames(n: int = N_FRAMES, size: tuple[int, int] = (160, 120)) -> list[np.ndarray]:
    """``n`` RGB frames of a moving real face (scikit-image astronaut), ``size`` = (w, h)."""
    return list(samples.moving_frames(samples.astronaut(), n, size))


def marker_frame(w: int = 160, h: int = 120) -> np.ndarray:
    """Black RGB frame with a red block in the top-left corner (to check orientation)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 3, : w // 2] = (255, 0, 0)
    return img


# --- encoder ----------------------------------------------------------------------------------------------

# Options that make an encode byte-identical run to run (tests/test_bad_video_inputs.py checks it).
# libx264 with its defaults is NOT: its macroblock-tree rate control reads memory it never wrote in
# the SIMD path, so the second and later encodes in a process differ from the first (fresh memory
# is zero) at some sizes (160x120, 160x90 seen), and a seeded corruption then hits other content.
# mbtree=0 removes that (asm=0 would too, slower); one thread and no slice/lookahead threads keep
# the rest of the encoder single-threaded.
DETERMINISTIC_CODEC_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"threads": "1", "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0:mbtree=0"},
    "libvpx-vp9": {"threads": "1", "row-mt": "0"},
}
# Muxers: bitexact drops the random segment/track UIDs and the date that Matroska/WebM write.
DETERMINISTIC_CONTAINER_OPTIONS = {"fflags": "+bitexact"}


def deterministic_options(codec: str, options: dict[str, str] | None = None) -> dict[str, str]:
    """``options`` over the codec's deterministic defaults (``x264-params`` lists are joined, the caller's last)."""
    base = dict(DETERMINISTIC_CODEC_OPTIONS.get(codec, {"threads": "1"}))
    extra = dict(options or {})
    if "x264-params" in base and "x264-params" in extra:
        extra["x264-params"] = f"{base['x264-params']}:{extra['x264-params']}"
    return {**base, **extra}


def encode(
    path: Path,
    frames: Iterable[np.ndarray],
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    src_format: str = "rgb24",
    fps: int = 25,
    options: dict[str, str] | None = None,
    pts_ms: list[int] | None = None,
    rotation: int | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode ``frames`` (ndarrays in ``src_format``) to ``path`` with PyAV; no even-size cropping.

    ``pts_ms`` gives explicit presentation times in milliseconds (variable frame rate);
    ``rotation`` stores a display rotation (degrees counter-clockwise) in the stream.
    The same arguments give the same bytes in any run (:data:`DETERMINISTIC_CODEC_OPTIONS`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options={**DETERMINISTIC_CONTAINER_OPTIONS, **(container_options or {})}) as out:
        stream = None
        for i, img in enumerate(frames):
            if stream is None:
                stream = out.add_stream(codec, rate=fps)
                stream.width, stream.height = img.shape[1], img.shape[0]
                stream.pix_fmt = pix_fmt
                stream.options = deterministic_options(codec, options)
                if pts_ms is not None:
                    stream.codec_context.time_base = Fraction(1, 1000)
                    stream.time_base = Fraction(1, 1000)
                if rotation is not None:
                    stream.set_display_rotation(rotation)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format=src_format)
            if pts_ms is not None:
                frame.pts = pts_ms[i]
                frame.time_base = Fraction(1, 1000)
            for pkt in stream.encode(frame):
                out.mux(pkt)
        assert stream is not None, "no frames"
        for pkt in stream.encode():
            out.mux(pkt)
    return path


def h264_mp4(d: Path, name: str = "ok.mp4", n: int = N_FRAMES, faststart: bool = False) -> Path:
    opts = {"movflags": "faststart"} if faststart else None
    return encode(d / name, face_frames(n), "libx264", options={"g": "5"}, container_options=opts)


# --- bad files ---------------------------------------------------------------------------------------------


def truncated(src: Path, dst: Path, keep: float = 0.3) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def corrupted(src: Path, dst: Path, start: float = 0.4, end: float = 0.6, fraction: float = 0.2, seed: int = 0) -> Path:
    """Copy of ``src`` whose video packets from ``start`` to ``end`` (relative packet index) are damaged.

    The packets are located by demuxing ``src`` and finding each packet's payload in the file, so the
    damage always lands in coded picture data, never in the container framing (which the demuxer
    would skip over or stop at, on some byte offsets and not on others). In each damaged packet the
    first 8 bytes (H.264: NAL length + header; VP9: frame header) and ``fraction`` of the rest are
    overwritten with seeded random bytes: every damaged packet fails to decode.
    """
    data = bytearray(src.read_bytes())
    with av.open(str(src)) as inp:
        packets = [(pkt.pos, bytes(pkt)) for pkt in inp.demux(inp.streams.video[0]) if pkt.size]
    lo, hi = int(len(packets) * start), max(int(len(packets) * start) + 1, int(len(packets) * end))
    rng = np.random.default_rng(seed)
    for pos, payload in packets[lo:hi]:
        at = data.find(payload, max(0, pos or 0))
        assert at >= 0, f"packet at {pos} not found in {src}"
        n = len(payload)
        head = min(8, n)
        body = rng.choice(np.arange(head, n), size=int((n - head) * fraction), replace=False) if n > head else []
        for i in [*range(head), *(int(j) for j in body)]:
            data[at + i] = int(rng.integers(0, 256))
    dst.write_bytes(bytes(data))
    return dst


def zero_byte(d: Path) -> Path:
    p = d / "empty.mp4"
    p.write_bytes(b"")
    return p


def text_as_mp4(d: Path) -> Path:
    p = d / "notes.mp4"
    p.write_text("This is not a video, it is a text file renamed to .mp4.\n" * 50)
    return p


def random_bytes(d: Path, n: int = 64 * 1024) -> Path:
    p = d / "noise.mkv"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8).tobytes())
    return p


def audio_only(d: Path, seconds: float = 0.5) -> Path:
    p = d / "audio_only.mp4"
    rate = 16000
    with av.open(str(p), "w", options=DETERMINISTIC_CONTAINER_OPTIONS) as out:
        s = out.add_stream("aac", rate=rate)
        s.layout = "mono"
        t = np.arange(int(rate * seconds)) / rate
        pcm = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(pcm, format="fltp", layout="mono")
        frame.sample_rate = rate
        for pkt in s.encode(frame):
            out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return p


def ends_mid_gop(d: Path, keep_packets: int = 7) -> Path:
    """An H.264 stream with B-frames (GOP 50) cut after ``keep_packets`` packets: ends inside a GOP."""
    full = encode(d / "gop_full.mkv", face_frames(20), "libx264", options={"g": "50", "bf": "3"})
    dst = d / "mid_gop.mkv"
    with av.open(str(full)) as inp, av.open(str(dst), "w", options=DETERMINISTIC_CONTAINER_OPTIONS) as out:
        src = inp.streams.video[0]
        dst_stream = out.add_stream_from_template(src)
        for i, pkt in enumerate(inp.demux(src)):
            if pkt.size == 0 or i >= keep_packets:
                continue
            pkt.stream = dst_stream
            out.mux(pkt)
    return dst


# --- network misbehaviour -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A loopback port with nothing listening (connection refused)."""
    return free_port()


@contextlib.contextmanager
def stalling_server(payload: bytes = b"", http: bool = False) -> Iterator[int]:
    """A loopback TCP server that accepts, optionally answers an HTTP 200 with ``payload``, then says nothing.

    Yields the port. Connections are held open until the context exits.
    """
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except (TimeoutError, OSError):
                continue
            conns.append(c)
            if http:
                try:
                    c.settimeout(2)
                    c.recv(65536)  # the request
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n\r\n" + payload)
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join(2)
        for c in conns:
            with contextlib.suppress(OSError):
                c.close()
        srv.close()


@contextlib.contextmanager
def stalling_fifo(path: Path, payload: bytes) -> Iterator[Path]:
    """A named pipe whose writer sends ``payload`` and then nothing (the reader's read() blocks for good).

    FFmpeg's file protocol does not poll the interrupt callback inside read(), so only a watchdog
    outside the blocking call notices this stall. Closing the writer at exit unblocks the reader.
    """
    os.mkfifo(path)
    done = threading.Event()
    holder: list[int] = []

    def write() -> None:
        fd = os.open(path, os.O_WRONLY)  # blocks until the reader opens the pipe
        holder.append(fd)
        with contextlib.suppress(OSError):
            os.write(fd, payload)
        done.wait()

    t = threading.Thread(target=write, daemon=True)
    t.start()
    try:
        yield path
    finally:
        done.set()
        if not holder:  # nobody opened the pipe: unblock our writer by opening it for reading
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        t.join(2)
        for fd in holder:
            with contextlib.suppress(OSError):
                os.close(fd)


def to_mpegts(src: Path, dst: Path) -> Path:
    """Remux ``src`` (H.264) into MPEG-TS (what live HTTP streams carry)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mpegts", options=DETERMINISTIC_CONTAINER_OPTIONS) as out:
        s = inp.streams.video[0]
        o = out.add_stream_from_template(s)
        for pkt in inp.demux(s):
            if pkt.size == 0:
                continue
            pkt.stream = o
            out.mux(pkt)
    return dst


# --- live serving with the ffmpeg CLI --------------------------------------------------------------------


def ffmpeg_bin() -> str | None:
    return shutil.which("ffmpeg")


def serve_http_ts(clip: Path, port: int, loops: int = 0) -> subprocess.Popen:
    """Start ``ffmpeg -re`` serving ``clip`` as live MPEG-TS on http://127.0.0.1:port/live.ts (one client)."""
    exe = ffmpeg_bin()
    assert exe, "ffmpeg CLI not installed"
    cmd = [exe, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", str(loops), "-i", str(clip),
           "-c", "copy", "-f", "mpegts", "-listen", "1", f"http://127.0.0.1:{port}/live.ts"]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_listening(port: int, timeout: float = 10.0) -> bool:
    """Poll until something accepts on 127.0.0.1:port. NB: connecting consumes ffmpeg's single -listen client,
    so use this only for servers that accept many clients."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
        time.sleep(0.1)
    return False


def kill(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """Terminate a child process (then kill it) and reap it."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def env_without_proxies() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
