"""The interface every frame source implements, plus helpers shared by the sources.

A source reads one stream (PyAV) or many (Kafka) and hands decoded frames to the pipeline through
``emit``. It owns its state machine (``starting -> running -> (reconnecting -> running)* ->
ended | failed``), reports every change to the log and to ``fakewatch_stream_state``, and always
finishes a stream with :func:`daemon.types.end_marker` so the pipeline can end that stream's tracks.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from urllib.parse import unquote, urlsplit, urlunsplit

from daemon.metrics import Metrics
from daemon.types import Frame, StreamState

log = logging.getLogger("fakewatch.sources")

Emit = Callable[[Frame], Awaitable[bool]]

# scheme://user[:password]@host... -> credentials are whatever sits between "//" and the last "@"
# before the path; matched with a regex too so that redaction also works inside free text
# (FFmpeg error messages quote the URL they failed on).
_CRED_IN_TEXT = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<cred>[^/\s@'\"]*@)")
_SECRET_QUERY = re.compile(
    r"(?i)(?P<key>[?&;](?:password|passwd|pass|pwd|token|access_token|auth|key|secret|signature|sig)=)[^&;#\s'\"]*"
)


def redact_url(url: str) -> str:
    """``url`` with credentials replaced, safe for logs, errors and metric labels.

    ``rtsp://admin:hunter2@cam/live`` -> ``rtsp://***@cam/live``; secret-looking query parameters
    (``?token=...``, ``&password=...``) are masked as well. Plain paths pass through unchanged.
    Works on any text that may contain URLs (an FFmpeg error message), not only on a bare URL.
    """
    if not url:
        return url
    text = _CRED_IN_TEXT.sub(lambda m: f"{m.group('scheme')}***@", str(url))
    return _SECRET_QUERY.sub(lambda m: f"{m.group('key')}***", text)


def url_secrets(url: str) -> list[str]:
    """The literal secrets in ``url`` (user-info password, secret query values) to scrub from text."""
    out: list[str] = []
    try:
        parts = urlsplit(url)
    except ValueError:
        return out
    if parts.password:
        out.append(parts.password)
        if unquote(parts.password) != parts.password:
            out.append(unquote(parts.password))
    if parts.username and parts.password:
        out.append(f"{parts.username}:{parts.password}")
    for m in _SECRET_QUERY.finditer(url):
        value = url[m.end("key") :].split("&", 1)[0].split(";", 1)[0].split("#", 1)[0]
        if value:
            out.append(value)
    return out


def scrub(text: str, url: str) -> str:
    """``text`` with the URL's credentials removed, however the text quotes them."""
    text = redact_url(text)
    for secret in sorted(url_secrets(url), key=len, reverse=True):
        if len(secret) >= 1:
            text = text.replace(secret, "***")
    return text


def is_network_url(url: str) -> bool:
    """True for ``scheme://`` URLs other than ``file://`` (RTSP, RTMP, HTTP(S), HLS, SRT, UDP, TCP...)."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return False
    return len(scheme) > 1 and scheme != "file"  # one letter = a Windows drive ("C:\\...")


def strip_credentials(url: str) -> str:
    """``url`` without its user-info part (for display where '***' is not wanted)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


class SourceError(Exception):
    """A source failed with a clear, already-redacted one-line message; ``kind`` labels ``stream_errors``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return self.message


class Source(ABC):
    """A reader of one stream (or of many, for Kafka) that emits :class:`Frame` objects.

    ``stream_id``: the configured stream id (for Kafka sources frames carry their own stream ids).
    ``state``: the current :class:`StreamState`; changed only through :meth:`_set_state`.
    ``live``: True => the pipeline drops the oldest frames under backpressure; False (files) => ``emit``
    awaits and nothing is lost.
    """

    stream_id: str
    state: StreamState
    live: bool
    metrics: Metrics

    def __init__(self, stream_id: str, metrics: Metrics, live: bool):
        self.stream_id = stream_id
        self.metrics = metrics
        self.live = live
        self.state = StreamState.STARTING
        self.last_error: str | None = None
        metrics.set_stream_state(stream_id, StreamState.STARTING.value)

    def _set_state(self, state: StreamState, reason: str = "") -> None:
        """Move to ``state``: log it (with a redacted reason) and update ``fakewatch_stream_state``."""
        if state == self.state and not reason:
            return
        old, self.state = self.state, state
        self.metrics.set_stream_state(self.stream_id, state.value)
        level = logging.ERROR if state == StreamState.FAILED else logging.WARNING if (
            state == StreamState.RECONNECTING) else logging.INFO
        if old == state:
            log.log(level, "stream %s: %s (%s)", self.stream_id, state.value, reason)
        else:
            log.log(level, "stream %s: %s -> %s%s", self.stream_id, old.value, state.value,
                    f" ({reason})" if reason else "")

    def _count_error(self, kind: str) -> None:
        self.metrics.stream_errors.labels(self.metrics.stream_label(self.stream_id), kind).inc()

    @abstractmethod
    async def run(self, emit: Emit) -> None:
        """Read until the source ends, fails for good, or the task is cancelled.

        Calls ``await emit(frame)`` for every analysed frame (``emit`` returns False if the frame was
        dropped downstream). Always finishes by emitting ``end_marker(stream_id)``, also on failure.
        Bad input never raises out of ``run`` (it logs one clear line, counts the error and ends in
        state ``failed``); only :class:`asyncio.CancelledError` propagates.
        """

    @abstractmethod
    async def stop(self) -> None:
        """Ask the source to stop soon (graceful shutdown); ``run`` then ends as ``ended``."""
