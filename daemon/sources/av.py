"""PyAV source: video files and network streams (RTSP, RTMP, HLS, HTTP, ...), one reader thread each.

Shape of one :class:`AvSource`::

    reader thread (blocking PyAV: open, demux, decode, sample, RGB convert)
        --call_soon_threadsafe--> asyncio.Queue --> run(): await emit(frame)
    run() also runs the watchdog (a stalled open/read is detected even if FFmpeg never returns),
    the state machine and, for live streams, the reconnect loop with capped exponential backoff.

Only the frames that are analysed are converted to RGB (sampling by pts to reach ``analysis_fps``
whatever the source's frame rate); the rest are counted as dropped with reason ``sampled_out``.
Files apply backpressure (the reader waits for the pipeline, nothing is lost); live streams never
wait: when the hand-off buffer is full the frame is dropped and counted (``queue_full``).

Every error message goes through :func:`scrub`, so credentials in URLs never reach logs, errors or
metric labels.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from daemon.config_base import StrictModel
from daemon.metrics import Metrics
from daemon.sources.base import Emit, Source, SourceError, is_network_url, redact_url, scrub
from daemon.types import Frame, StreamState, end_marker

log = logging.getLogger("fakewatch.sources.av")


class ReconnectPolicy(StrictModel):
    """Capped exponential backoff for live streams: ``min(max_s, initial_s * factor**(n-1))`` +- jitter."""

    initial_s: float = Field(0.5, gt=0, description="delay before the first reconnect attempt")
    max_s: float = Field(30.0, gt=0, description="cap of the delay")
    factor: float = Field(2.0, ge=1.0, description="growth of the delay per failed attempt")
    jitter: float = Field(0.1, ge=0.0, le=1.0, description="relative random spread (0.1 = +-10%)")
    max_attempts: int | None = Field(
        None, ge=0, description="give up (state failed) after this many attempts in a row; None = forever"
    )

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before reconnect attempt ``attempt`` (1-based)."""
        base = min(self.max_s, self.initial_s * self.factor ** max(0, attempt - 1))
        if self.jitter:
            base *= 1.0 + (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base)


class AvSourceSettings(StrictModel):
    """Settings of one PyAV stream (embedded in the per-stream config)."""

    analysis_fps: float | None = Field(
        5.0, gt=0, description="frames per second handed to the pipeline (by pts); None = every frame"
    )
    open_timeout_s: float = Field(10.0, gt=0, description="limit for opening the input (connect + probe)")
    read_timeout_s: float = Field(10.0, gt=0, description="limit for one read; longer = the stream stalled")
    live: bool | None = Field(
        None, description="None = auto: a network URL is live, a file is not. Live streams reconnect and never wait"
    )
    reconnect: ReconnectPolicy = Field(default_factory=ReconnectPolicy)
    max_width: int = Field(8192, ge=1, description="frames wider than this are rejected")
    max_height: int = Field(8192, ge=1, description="frames taller than this are rejected")
    max_pixels: int = Field(40_000_000, ge=1, description="pixel budget per frame (8K UHD = 33.2 M)")
    resize_max_side: int | None = Field(
        None, ge=16, description="downscale analysed frames so that their longer side is at most this"
    )
    loop: bool = Field(False, description="replay a file forever (demos, soak tests)")
    realtime: bool = Field(
        False, description="read a file at its native frame rate, like a camera (ffmpeg -re); with live: true it "
        "simulates a live stream (demos, bench, soak)"
    )
    apply_rotation: bool = Field(True, description="apply the display rotation metadata (upright faces)")
    buffer_frames: int = Field(4, ge=1, le=256, description="decoded frames waiting between reader and pipeline")
    av_options: dict[str, str] = Field(
        default_factory=dict, description="options for av.open, e.g. {rtsp_transport: tcp}"
    )
    format: str | None = Field(None, description="force the demuxer (FFmpeg format name); None = probe")
    max_decode_errors: int = Field(
        50, ge=1, description="consecutive undecodable packets after which the stream is treated as broken"
    )

    @model_validator(mode="after")
    def _check(self) -> AvSourceSettings:
        if self.reconnect.max_s < self.reconnect.initial_s:
            raise ValueError("reconnect.max_s must be >= reconnect.initial_s")
        return self


# --- reader thread -> event loop messages ------------------------------------------------------------


@dataclass
class _Opened:
    width: int
    height: int
    codec: str
    fps: float | None


@dataclass
class _Eof:
    frames: int


@dataclass
class _Failed:
    error: SourceError


class _Session:
    """Shared state of one open->read cycle between the reader thread and the event loop."""

    def __init__(self, capacity: int):
        self.stop = threading.Event()
        self.slots = threading.Semaphore(capacity)
        self.progress = time.monotonic()  # last sign of life of the reader (monotonic)
        self.phase = "open"  # open | read | wait (waiting for the pipeline: not a stall)
        self.frames = 0  # frames decoded in this session


class AvSource(Source):
    """A PyAV reader of one file or network stream (see the module doc)."""

    def __init__(self, stream_id: str, url: str, metrics: Metrics, settings: AvSourceSettings | None = None):
        settings = settings or AvSourceSettings()
        super().__init__(stream_id, metrics, settings.live if settings.live is not None else is_network_url(url))
        self.url = url
        self.display_url = redact_url(url)
        self.settings = settings
        self._label = metrics.stream_label(stream_id)
        self._stopping = asyncio.Event()
        self._stop_requested = False
        self._session: _Session | None = None
        self._rng = random.Random()
        # continuity across reconnects/loops: seq and pts never go backwards
        self._seq = 0
        self._pts_offset = 0.0
        self._last_pts = -math.inf
        self._next_analysis: float | None = None
        self.frames_emitted = 0
        self.reconnects = 0

    def __repr__(self) -> str:
        return f"AvSource({self.stream_id!r}, {self.display_url!r}, state={self.state.value})"

    # --- public API ------------------------------------------------------------------------------------

    async def stop(self) -> None:
        self._stop_requested = True
        self._stopping.set()
        if self._session is not None:
            self._session.stop.set()

    async def run(self, emit: Emit) -> None:
        try:
            await self._run(emit)
        except asyncio.CancelledError:
            self._abort_session()
            if self.state not in (StreamState.ENDED, StreamState.FAILED):
                self._set_state(StreamState.ENDED, "cancelled")
            await self._emit_end(emit, timeout=1.0)
            raise
        except Exception as e:  # a bug, not bad input: still never escapes run()
            self._abort_session()
            msg = scrub(f"{type(e).__name__}: {e}", self.url).splitlines()[0] if str(e) else type(e).__name__
            self._fail(SourceError("internal", f"{self.display_url}: unexpected error: {msg}"))
            trace = scrub("".join(traceback.format_exception(e)), self.url)  # no raw URL in any log
            log.debug("stream %s: internal error\n%s", self.stream_id, trace)
        await self._emit_end(emit)

    # --- main loop ---------------------------------------------------------------------------------------

    async def _run(self, emit: Emit) -> None:
        self._set_state(StreamState.STARTING, f"opening {self.display_url} ({'live' if self.live else 'file'})")
        attempt = 0  # failed reconnect attempts in a row
        while True:
            if self._stop_requested:
                self._set_state(StreamState.ENDED, "stopped")
                return
            delivered_before = self._seq
            error: SourceError | None = None
            try:
                await self._read_session(emit)
            except SourceError as e:
                error = e
            if self._stop_requested:
                self._set_state(StreamState.ENDED, "stopped")
                return
            if error is not None:
                self._count_error(error.kind)
            if self._seq > delivered_before:
                attempt = 0  # the stream worked for a while: backoff starts over
            if self.settings.loop and error is None and self._seq > delivered_before:
                log.info("stream %s: end of file, looping", self.stream_id)  # no backoff: a replay, not a fault
                continue
            if not self.live:
                if error is None and self._seq == delivered_before and not self._stop_requested:
                    error = SourceError("no_frames", f"{self.display_url}: no decodable video frames")
                    self._count_error(error.kind)
                if error is not None:
                    self._fail(error)
                    return
                self._set_state(StreamState.ENDED, f"end of file after {self._seq} frames")
                return
            # live: EOF or error -> reconnect with backoff (except errors that cannot heal)
            if error is None:
                error = SourceError("eof", f"{self.display_url}: stream ended (EOF)")
                self._count_error("eof")
            if error.kind in ("resolution", "unsupported"):  # retrying cannot heal these
                self._fail(error)
                return
            attempt += 1
            max_attempts = self.settings.reconnect.max_attempts
            if max_attempts is not None and attempt > max_attempts:
                tail = (f"gave up after {max_attempts} reconnect attempt{'s' if max_attempts != 1 else ''}"
                        if max_attempts else "reconnect disabled (reconnect.max_attempts=0)")
                self._fail(SourceError(error.kind, f"{error.message}; {tail}"))
                return
            delay = self.settings.reconnect.delay(attempt, self._rng)
            self._set_state(StreamState.RECONNECTING, f"{error.message}; retry {attempt} in {delay:.1f}s")
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            except TimeoutError:
                pass
            if self._stop_requested:
                continue
            self.reconnects += 1
            self.metrics.stream_reconnects.labels(self._label).inc()

    def _fail(self, error: SourceError) -> None:
        self.last_error = error.message
        self._set_state(StreamState.FAILED, f"{error.kind}: {error.message}")

    async def _emit_end(self, emit: Emit, timeout: float | None = None) -> None:
        try:
            if timeout is None:
                await emit(end_marker(self.stream_id, self._seq))
            else:
                await asyncio.wait_for(emit(end_marker(self.stream_id, self._seq)), timeout)
        except asyncio.CancelledError:
            raise
        except Exception:  # the pipeline is going away; nothing more to tell it
            log.debug("stream %s: end marker not delivered", self.stream_id, exc_info=True)

    def _abort_session(self) -> None:
        if self._session is not None:
            self._session.stop.set()
            self._session = None

    async def _read_session(self, emit: Emit) -> None:
        """One open -> read cycle in a reader thread. Returns at EOF (or stop), raises SourceError."""
        s = self.settings
        session = self._session = _Session(s.buffer_frames)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def post(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # loop closed: nobody listens any more
                session.stop.set()

        thread = threading.Thread(
            target=self._reader, args=(session, post), name=f"av-{self.stream_id}", daemon=True
        )
        thread.start()
        try:
            while True:
                limit = s.open_timeout_s if session.phase == "open" else s.read_timeout_s
                grace = max(2.0, 0.5 * limit)  # PyAV's own timeout should fire first
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=1.0)
                except TimeoutError:
                    if session.phase != "wait" and time.monotonic() - session.progress > limit + grace:
                        what = "opening" if session.phase == "open" else "reading"
                        raise SourceError(
                            "stall", f"{self.display_url}: stalled, no data for {limit + grace:.0f}s while {what}"
                        ) from None
                    if self._stop_requested:
                        return
                    continue
                if isinstance(item, Frame):
                    try:
                        await emit(item)
                        self.frames_emitted += 1
                    finally:
                        session.slots.release()
                elif isinstance(item, _Opened):
                    fps = f" {item.fps:.2f} fps" if item.fps else ""
                    self._set_state(
                        StreamState.RUNNING, f"{self.display_url}: {item.codec} {item.width}x{item.height}{fps}"
                    )
                elif isinstance(item, _Eof):
                    return
                elif isinstance(item, _Failed):
                    raise item.error
        finally:
            session.stop.set()  # the reader exits at its next check (or when its blocking call returns)
            if self._session is session:
                self._session = None

    # --- reader thread ---------------------------------------------------------------------------------

    def _reader(self, session: _Session, post) -> None:
        try:
            frames = self._read(session, post)
            post(_Eof(frames))
        except SourceError as e:
            post(_Failed(e))
        except Exception as e:  # noqa: BLE001 - everything becomes one clear line
            error = self._classify(e)
            if error.kind == "internal":
                log.debug("stream %s: reader error\n%s", self.stream_id,
                          scrub("".join(traceback.format_exception(e)), self.url))
            post(_Failed(error))

    def _open(self):
        import av

        s = self.settings
        url = self.url
        if not is_network_url(url):
            path = Path(url[7:] if url.startswith("file://") else url)
            if not path.exists():
                raise SourceError("not_found", f"{self.display_url}: file not found")
            if path.is_dir():
                raise SourceError("not_found", f"{self.display_url}: is a directory, not a video file")
            if path.is_file() and path.stat().st_size == 0:  # (a FIFO or device reports 0 too)
                raise SourceError("empty", f"{self.display_url}: file is empty (0 bytes)")
            url = str(path)
        return av.open(
            url,
            mode="r",
            format=s.format,
            options=dict(s.av_options),
            timeout=(s.open_timeout_s, s.read_timeout_s),
        )

    def _check_size(self, width: int, height: int) -> None:
        s = self.settings
        if width > s.max_width or height > s.max_height or width * height > s.max_pixels:
            raise SourceError(
                "resolution",
                f"{self.display_url}: resolution {width}x{height} exceeds the limit "
                f"{s.max_width}x{s.max_height} / {s.max_pixels} pixels (max_width, max_height, max_pixels)",
            )

    def _read(self, session: _Session, post) -> int:
        import av

        s = self.settings
        container = self._open()
        try:
            session.progress = time.monotonic()
            if not container.streams.video:
                kinds = sorted({st.type for st in container.streams}) or ["none"]
                raise SourceError("no_video", f"{self.display_url}: no video stream (streams: {', '.join(kinds)})")
            stream = container.streams.video[0]
            cc = stream.codec_context
            checked = (cc.width, cc.height)  # may be 0x0 until the first frame (some live streams)
            self._check_size(*checked)
            try:
                stream.thread_type = "AUTO"
            except Exception:  # noqa: BLE001 - some decoders refuse frame threading; slice/none is fine
                pass
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else None
            post(_Opened(cc.width, cc.height, cc.name, fps))
            session.phase = "read"
            frame_period = 1.0 / fps if fps else 0.04
            decode_cost = 0.0
            bad_packets = 0
            session_first_pts: float | None = None
            pace: tuple[float, float] | None = None  # (monotonic, pts) of the first frame, for realtime
            for packet in container.demux(stream):
                session.progress = time.monotonic()
                if session.stop.is_set():
                    break
                t0 = time.perf_counter()
                try:
                    decoded = packet.decode()
                    bad_packets = 0
                except av.error.FFmpegError as e:  # a damaged packet: skip it, count it
                    bad_packets += 1
                    self.metrics.drop(self.stream_id, "decode_error")
                    if bad_packets >= s.max_decode_errors:
                        raise SourceError(
                            "decode", f"{self.display_url}: {bad_packets} undecodable packets in a row ({e.strerror})"
                        ) from None
                    continue
                decode_cost += time.perf_counter() - t0
                for frame in decoded:
                    if session.stop.is_set():  # stopped, or abandoned by the watchdog
                        return session.frames
                    now_wall = time.time()
                    session.frames += 1
                    seq = self._seq
                    self._seq += 1
                    self.metrics.frames_received.labels(self._label).inc()
                    self.metrics.stream_last_frame.labels(self._label).set(now_wall)
                    if (frame.width, frame.height) != checked:  # the size can change mid-stream
                        checked = (frame.width, frame.height)
                        self._check_size(*checked)
                    # pts in seconds, continuous across reconnects and loops
                    raw = frame.time
                    if raw is None:
                        raw = session.frames * frame_period
                    if session_first_pts is None:
                        session_first_pts = raw
                        if raw + self._pts_offset <= self._last_pts:
                            self._pts_offset = self._last_pts + frame_period - raw
                    pts = raw + self._pts_offset
                    if pts < self._last_pts:  # a jump back inside a stream (broken timestamps)
                        self._pts_offset += self._last_pts - pts + frame_period
                        pts = self._last_pts + frame_period
                    self._last_pts = pts
                    if s.realtime:  # release frames at their presentation time, as a camera would
                        if pace is None:
                            pace = (time.monotonic(), pts)
                        delay = pace[0] + (pts - pace[1]) - time.monotonic()
                        if delay > 0 and session.stop.wait(delay):
                            return session.frames
                        session.progress = time.monotonic()
                    if not self._sample(pts):
                        self.metrics.drop(self.stream_id, "sampled_out")
                        continue
                    room = self._reserve_slot(session)
                    if room is None:  # stopped while waiting for the pipeline
                        return session.frames
                    if not room:  # live stream, pipeline full: drop now, before paying for the RGB conversion
                        self.metrics.drop(self.stream_id, "queue_full")
                        continue
                    t1 = time.perf_counter()
                    image = self._to_rgb(frame)
                    self.metrics.stage_latency.labels("decode").observe(decode_cost + time.perf_counter() - t1)
                    decode_cost = 0.0
                    post(Frame(
                        self.stream_id,
                        seq,
                        pts,
                        image,
                        captured_at=now_wall,
                        meta={"source_pts": raw, "source_size": (frame.width, frame.height)},
                    ))
            return session.frames
        finally:
            try:
                container.close()
            except Exception:  # noqa: BLE001
                pass

    def _sample(self, pts: float) -> bool:
        """Pick frames by pts so that about ``analysis_fps`` frames per second are analysed."""
        fps = self.settings.analysis_fps
        if fps is None:
            return True
        period = 1.0 / fps
        nxt = self._next_analysis
        if nxt is not None and pts < nxt - 1e-3:
            return False
        nxt = (pts if nxt is None else nxt) + period
        if nxt <= pts:  # a gap in the stream (or the first frame after one): restart the grid here
            nxt = pts + period
        self._next_analysis = nxt
        return True

    def _to_rgb(self, frame) -> np.ndarray:
        """(H, W, 3) uint8 RGB (whatever the pixel format: gray, 10/16-bit, alpha), upright, maybe downscaled."""
        s = self.settings
        w, h = frame.width, frame.height
        if s.resize_max_side and max(w, h) > s.resize_max_side:
            k = s.resize_max_side / max(w, h)
            w, h = max(1, round(w * k)), max(1, round(h * k))
            image = frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA")
        else:
            image = frame.to_ndarray(format="rgb24")
        if s.apply_rotation:
            rotation = getattr(frame, "rotation", 0) or 0  # degrees counter-clockwise (display matrix)
            k = round(rotation / 90.0) % 4
            if k:
                image = np.rot90(image, k)
        return np.ascontiguousarray(image)

    def _reserve_slot(self, session: _Session) -> bool | None:
        """Room for one more frame in the hand-off buffer? Files wait for it (backpressure, nothing is
        lost); live streams never wait (False = drop this frame). None = stop requested."""
        if self.live:
            return None if session.stop.is_set() else session.slots.acquire(blocking=False)
        session.phase = "wait"  # waiting for the pipeline is not a stall
        try:
            while not session.slots.acquire(timeout=0.2):
                if session.stop.is_set():
                    return None
        finally:
            session.phase = "read"
            session.progress = time.monotonic()
        if session.stop.is_set():
            session.slots.release()
            return None
        return True

    def _classify(self, e: Exception) -> SourceError:
        """Turn a PyAV/OS exception into one clear, redacted line with an error kind."""
        import av

        name = self.display_url
        detail = getattr(e, "strerror", None) or str(e) or type(e).__name__
        detail = scrub(str(detail), self.url).splitlines()[0] if detail else type(e).__name__
        if isinstance(e, av.error.FileNotFoundError) or isinstance(e, FileNotFoundError):
            return SourceError("not_found", f"{name}: not found ({detail})")
        if isinstance(e, (av.error.ConnectionRefusedError, ConnectionRefusedError)):
            return SourceError("connect", f"{name}: connection refused")
        if isinstance(e, (av.error.ExitError, av.error.TimeoutError, TimeoutError)):
            return SourceError("timeout", f"{name}: timed out (open {self.settings.open_timeout_s:g}s / "
                                          f"read {self.settings.read_timeout_s:g}s)")
        if isinstance(e, av.error.HTTPError):
            return SourceError("http", f"{name}: HTTP error ({detail})")
        if isinstance(e, av.error.InvalidDataError):
            return SourceError("invalid_data", f"{name}: not a readable video ({detail})")
        if isinstance(e, (av.error.DecoderNotFoundError, av.error.DemuxerNotFoundError)):
            return SourceError("unsupported", f"{name}: unsupported format or codec ({detail})")
        if isinstance(e, (av.error.ProtocolNotFoundError,)):
            return SourceError("unsupported", f"{name}: unsupported protocol ({detail})")
        if isinstance(e, av.error.PermissionError) or isinstance(e, PermissionError):
            return SourceError("permission", f"{name}: permission denied")
        if isinstance(e, (av.error.FFmpegError, OSError)):
            return SourceError("io", f"{name}: {detail}")
        if isinstance(e, MemoryError):
            return SourceError("resolution", f"{name}: out of memory while decoding")
        return SourceError("internal", f"{name}: {type(e).__name__}: {detail}")


def file_source(stream_id: str, path: str | os.PathLike, metrics: Metrics, **settings: Any) -> AvSource:
    """Shortcut: an :class:`AvSource` for a local file with the given settings overrides."""
    return AvSource(stream_id, str(path), metrics, AvSourceSettings(**settings))
