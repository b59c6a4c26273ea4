"""The frame message contract (schema: ``docs/schemas/frame-message.v1.json``).

One Kafka record = one frame of one stream:

- key: the stream id (UTF-8); all frames of a stream land on one partition, in order;
- value: the encoded image (JPEG, PNG or WebP), at most ``max_payload_bytes``;
- headers (UTF-8 ASCII values): ``fw-schema-version`` (``1``), ``fw-stream-id`` (must equal the
  key), ``fw-seq`` (frame sequence, int >= 0), ``fw-captured-at`` (capture time, Unix seconds),
  ``fw-content-type`` (``image/jpeg|image/png|image/webp``), optional ``fw-pts`` (seconds from
  stream start; default ``seq / 25``), ``fw-width``/``fw-height`` (checked when present).

End of stream: same key and ``fw-stream-id``/``fw-schema-version`` headers, header
``fw-control: end-of-stream``, empty value.

:func:`decode` turns a record into a :class:`Frame`, an :class:`EndOfStream`, or a
:class:`DeadLetter` (reason + detail) for the dead-letter topic. It never raises for bad input.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from daemon.types import Frame

SCHEMA_VERSION = 1
H_SCHEMA = "fw-schema-version"
H_STREAM = "fw-stream-id"
H_SEQ = "fw-seq"
H_CAPTURED = "fw-captured-at"
H_CONTENT_TYPE = "fw-content-type"
H_PTS = "fw-pts"
H_WIDTH = "fw-width"
H_HEIGHT = "fw-height"
H_CONTROL = "fw-control"
CONTROL_EOS = "end-of-stream"

# dead-letter headers (added to the original record's headers)
H_DLQ_REASON = "fw-dlq-reason"
H_DLQ_DETAIL = "fw-dlq-detail"
H_DLQ_TOPIC = "fw-dlq-topic"
H_DLQ_PARTITION = "fw-dlq-partition"
H_DLQ_OFFSET = "fw-dlq-offset"

CONTENT_TYPES = ("image/jpeg", "image/png", "image/webp")
DEAD_LETTER_REASONS = (
    "empty", "oversized", "missing_header", "bad_header", "schema_version", "key_mismatch",
    "content_mismatch", "undecodable",
)
DEFAULT_FPS = 25.0


@dataclass(frozen=True)
class DeadLetter:
    reason: str  # one of DEAD_LETTER_REASONS (bounded: used as a metric label)
    detail: str
    stream_id: str | None = None


@dataclass(frozen=True)
class EndOfStream:
    stream_id: str
    seq: int


def sniff_content_type(data: bytes) -> str | None:
    """The image type the bytes really are (by magic number), or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _ext(content_type: str) -> str:
    return {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}[content_type]


def encode_image(image_rgb: np.ndarray, content_type: str = "image/jpeg", quality: int = 90) -> bytes:
    if content_type not in CONTENT_TYPES:
        raise ValueError(f"unsupported content type {content_type!r} (use one of {', '.join(CONTENT_TYPES)})")
    params: list[int] = []
    if content_type == "image/jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif content_type == "image/webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    ok, buf = cv2.imencode(_ext(content_type), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"could not encode a {image_rgb.shape} image as {content_type}")
    return buf.tobytes()


Headers = list[tuple[str, bytes]]


def frame_headers(stream_id: str, seq: int, captured_at: float, content_type: str, pts: float | None = None,
                  width: int | None = None, height: int | None = None) -> Headers:
    h: Headers = [
        (H_SCHEMA, str(SCHEMA_VERSION).encode()),
        (H_STREAM, stream_id.encode()),
        (H_SEQ, str(int(seq)).encode()),
        (H_CAPTURED, repr(float(captured_at)).encode()),
        (H_CONTENT_TYPE, content_type.encode()),
    ]
    if pts is not None:
        h.append((H_PTS, repr(float(pts)).encode()))
    if width is not None and height is not None:
        h += [(H_WIDTH, str(int(width)).encode()), (H_HEIGHT, str(int(height)).encode())]
    return h


def encode_frame(stream_id: str, seq: int, image_rgb: np.ndarray, *, captured_at: float | None = None,
                 pts: float | None = None, content_type: str = "image/jpeg",
                 quality: int = 90) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) of one frame message."""
    value = encode_image(image_rgb, content_type, quality)
    h, w = image_rgb.shape[:2]
    headers = frame_headers(stream_id, seq, time.time() if captured_at is None else captured_at, content_type,
                            pts, w, h)
    return stream_id.encode(), value, headers


def encode_end_of_stream(stream_id: str, seq: int = -1) -> tuple[bytes, bytes, Headers]:
    headers: Headers = [
        (H_SCHEMA, str(SCHEMA_VERSION).encode()),
        (H_STREAM, stream_id.encode()),
        (H_SEQ, str(int(seq)).encode()),
        (H_CONTROL, CONTROL_EOS.encode()),
    ]
    return stream_id.encode(), b"", headers


def _headers_dict(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str] | DeadLetter:
    out: dict[str, str] = {}
    for k, v in headers or ():
        try:
            out[k] = (v or b"").decode("utf-8")
        except UnicodeDecodeError:
            return DeadLetter("bad_header", f"header {k!r} is not UTF-8")
    return out


def decode(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None, *,
           max_payload_bytes: int = 1_000_000, received_at: float | None = None,
           decode_image: bool = True) -> Frame | EndOfStream | DeadLetter:
    """Validate one record against the contract and decode it (never raises for bad input)."""
    h = _headers_dict(headers)
    if isinstance(h, DeadLetter):
        return h
    try:
        key_s = key.decode("utf-8") if key is not None else None
    except UnicodeDecodeError:
        return DeadLetter("bad_header", "key is not UTF-8")
    if not h:
        return DeadLetter("missing_header", "record has no headers", key_s)
    if H_SCHEMA not in h:
        return DeadLetter("missing_header", f"missing header {H_SCHEMA}", key_s)
    if h[H_SCHEMA].strip() != str(SCHEMA_VERSION):
        return DeadLetter("schema_version", f"schema version {h[H_SCHEMA][:16]!r} is not {SCHEMA_VERSION}", key_s)
    stream_id = h.get(H_STREAM)
    if not stream_id:
        return DeadLetter("missing_header", f"missing header {H_STREAM}", key_s)
    if key_s is None or key_s != stream_id:
        return DeadLetter("key_mismatch", f"key {key_s!r} differs from {H_STREAM} {stream_id!r}", key_s)

    def _int(name: str, default: int | None = None) -> int | DeadLetter:
        if name not in h:
            if default is not None:
                return default
            return DeadLetter("missing_header", f"missing header {name}", stream_id)
        try:
            return int(h[name])
        except ValueError:
            return DeadLetter("bad_header", f"header {name}={h[name][:32]!r} is not an integer", stream_id)

    def _float(name: str) -> float | None | DeadLetter:
        if name not in h:
            return None
        try:
            x = float(h[name])
        except ValueError:
            return DeadLetter("bad_header", f"header {name}={h[name][:32]!r} is not a number", stream_id)
        if not np.isfinite(x):
            return DeadLetter("bad_header", f"header {name} is not finite", stream_id)
        return x

    control = h.get(H_CONTROL)
    if control is not None:
        if control != CONTROL_EOS:
            return DeadLetter("bad_header", f"unknown control {control[:32]!r}", stream_id)
        seq = _int(H_SEQ, -1)
        return seq if isinstance(seq, DeadLetter) else EndOfStream(stream_id, seq)

    if not value:
        return DeadLetter("empty", "empty value", stream_id)
    if len(value) > max_payload_bytes:
        return DeadLetter("oversized", f"{len(value)} bytes > max {max_payload_bytes}", stream_id)
    seq = _int(H_SEQ)
    if isinstance(seq, DeadLetter):
        return seq
    if seq < 0:
        return DeadLetter("bad_header", f"negative {H_SEQ} {seq}", stream_id)
    if H_CAPTURED not in h:
        return DeadLetter("missing_header", f"missing header {H_CAPTURED}", stream_id)
    captured = _float(H_CAPTURED)
    pts = _float(H_PTS)
    for x in (captured, pts):
        if isinstance(x, DeadLetter):
            return x
    ctype = h.get(H_CONTENT_TYPE)
    if not ctype:
        return DeadLetter("missing_header", f"missing header {H_CONTENT_TYPE}", stream_id)
    if ctype not in CONTENT_TYPES:
        return DeadLetter("bad_header", f"unsupported content type {ctype[:40]!r}", stream_id)
    real = sniff_content_type(value)
    if real != ctype:
        return DeadLetter("content_mismatch", f"{H_CONTENT_TYPE} says {ctype} but the bytes are {real or 'not an image'}",
                          stream_id)
    if not decode_image:
        image = np.zeros((0, 0, 3), np.uint8)
    else:
        bgr = cv2.imdecode(np.frombuffer(value, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None or bgr.ndim != 3 or bgr.size == 0:
            return DeadLetter("undecodable", f"{ctype} payload could not be decoded", stream_id)
        image = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if H_WIDTH in h and H_HEIGHT in h:
            w, hh = _int(H_WIDTH), _int(H_HEIGHT)
            if isinstance(w, DeadLetter):
                return w
            if isinstance(hh, DeadLetter):
                return hh
            if (hh, w) != image.shape[:2]:
                return DeadLetter("content_mismatch", f"headers say {w}x{hh}, image is {image.shape[1]}x{image.shape[0]}",
                                  stream_id)
    frame = Frame(stream_id, seq, float(pts) if pts is not None else seq / DEFAULT_FPS, image,
                  captured_at=float(captured))  # type: ignore[arg-type]
    if received_at is not None:
        frame.received_at = received_at
    return frame


def dead_letter_headers(original: Sequence[tuple[str, bytes]] | None, dl: DeadLetter, topic: str, partition: int,
                        offset: int) -> Headers:
    """Original headers (minus earlier dead-letter headers) + reason/detail/origin."""
    own = {H_DLQ_REASON, H_DLQ_DETAIL, H_DLQ_TOPIC, H_DLQ_PARTITION, H_DLQ_OFFSET}
    out: Headers = [(k, v) for k, v in (original or ()) if k not in own]
    out += [
        (H_DLQ_REASON, dl.reason.encode()),
        (H_DLQ_DETAIL, dl.detail.encode("utf-8", "replace")[:512]),
        (H_DLQ_TOPIC, topic.encode()),
        (H_DLQ_PARTITION, str(partition).encode()),
        (H_DLQ_OFFSET, str(offset).encode()),
    ]
    return out
