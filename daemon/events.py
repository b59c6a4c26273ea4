"""Verdict events: the versioned JSON every sink emits (stdout, JSONL, webhook, Kafka).

Schema: ``docs/schemas/verdict-event.v1.json``. Event ids are deterministic (a hash of stream,
track, event kind, the last frame sequence the event covers and the event content), so a replay of the same frames
after a crash produces the same ids and consumers can de-duplicate.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1
EVENT_KINDS = ("start", "update", "end")
ALERT_KINDS = ("threshold", "spike", "sustained")


def event_id(stream_id: str, track_id: int, event: str, seq: int, content: str = "") -> str:
    """Deterministic id: the same event (same stream, track, kind, last frame AND the same content)
    always gets the same id, so consumers can de-duplicate replays. ``content`` is a canonical
    digest of what the event says: after a crash without a state snapshot, a replay can rebuild a
    track with less history, and that different verdict must not reuse the id of the first one."""
    h = hashlib.sha256(f"{stream_id}\x00{track_id}\x00{event}\x00{seq}\x00{content}".encode()).hexdigest()
    return h[:32]


@dataclass
class VerdictEvent:
    stream_id: str
    track_id: int
    event: str  # start | update | end
    seq_first: int
    seq_last: int
    pts_first: float
    pts_last: float
    frames: int  # observations of this track so far
    score: float  # fused fake score in [0, 1]
    verdict: str  # "fake" | "real" | "uncertain"
    alert: str | None = None  # threshold | spike | sustained | None
    scores: dict[str, float | None] = field(default_factory=dict)  # per-model evidence: frame, temporal
    models: dict[str, str] = field(default_factory=dict)  # model name -> version, runtime
    evidence: dict[str, Any] = field(default_factory=dict)  # best crop path, box, ...
    emitted_at: float = 0.0
    schema_version: int = SCHEMA_VERSION
    id: str = ""

    def __post_init__(self) -> None:
        if self.event not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.event!r}")
        if not self.id:
            content = json.dumps(
                [self.seq_first, self.frames, self.score, self.verdict, self.alert, self.scores, self.evidence],
                sort_keys=True, separators=(",", ":"), default=str,
            )
            self.id = event_id(self.stream_id, self.track_id, self.event, self.seq_last, content)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)
