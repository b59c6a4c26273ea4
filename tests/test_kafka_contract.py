"""Frame message contract, config validation and offset tracking (no broker needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from aiokafka import TopicPartition

from daemon.kafka import contract
from daemon.kafka.config import KafkaConfig, KafkaSecurity
from daemon.kafka.state import decode_snapshot, encode_snapshot
from daemon.sources.kafka import _Partition
from daemon.types import Frame

REPO = Path(__file__).resolve().parents[1]


def _img(h=48, w=64):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4 % 256, y * 5 % 256, (x + y) % 256], -1).astype(np.uint8)


@pytest.mark.parametrize("ctype", contract.CONTENT_TYPES)
def test_roundtrip_each_content_type(ctype):
    img = _img()
    key, value, headers = contract.encode_frame("cam-1", 7, img, captured_at=123.5, pts=0.28, content_type=ctype)
    assert key == b"cam-1" and contract.sniff_content_type(value) == ctype
    f = contract.decode(key, value, headers)
    assert isinstance(f, Frame)
    assert (f.stream_id, f.seq, f.captured_at, f.pts) == ("cam-1", 7, 123.5, 0.28)
    assert f.image.shape == img.shape
    tol = 0 if ctype == "image/png" else 40
    assert np.abs(f.image.astype(int) - img.astype(int)).mean() <= tol


def test_end_of_stream_control_message():
    key, value, headers = contract.encode_end_of_stream("cam-1", 41)
    res = contract.decode(key, value, headers)
    assert res == contract.EndOfStream("cam-1", 41)


def _bad(mutate):
    key, value, headers = contract.encode_frame("cam-1", 3, _img(), captured_at=1.0)
    h = dict(headers)
    key, value, h = mutate(key, value, h)
    return contract.decode(key, value, list(h.items()) if h is not None else None, max_payload_bytes=50_000)


@pytest.mark.parametrize(
    "reason,mutate",
    [
        ("empty", lambda k, v, h: (k, b"", h)),
        ("oversized", lambda k, v, h: (k, b"\xff\xd8\xff" + b"0" * 60_000, h)),
        ("missing_header", lambda k, v, h: (k, v, None)),
        ("missing_header", lambda k, v, h: (k, v, {a: b for a, b in h.items() if a != contract.H_SEQ})),
        ("missing_header", lambda k, v, h: (k, v, {a: b for a, b in h.items() if a != contract.H_CAPTURED})),
        ("schema_version", lambda k, v, h: (k, v, {**h, contract.H_SCHEMA: b"2"})),
        ("key_mismatch", lambda k, v, h: (b"cam-2", v, h)),
        ("key_mismatch", lambda k, v, h: (None, v, h)),
        ("content_mismatch", lambda k, v, h: (k, b"this is not a PNG at all", {**h, contract.H_CONTENT_TYPE: b"image/png"})),
        ("content_mismatch", lambda k, v, h: (k, v, {**h, contract.H_CONTENT_TYPE: b"image/webp"})),
        ("content_mismatch", lambda k, v, h: (k, v, {**h, contract.H_WIDTH: b"640"})),
        ("bad_header", lambda k, v, h: (k, v, {**h, contract.H_SEQ: b"seven"})),
        ("bad_header", lambda k, v, h: (k, v, {**h, contract.H_CAPTURED: b"nan"})),
        ("bad_header", lambda k, v, h: (k, v, {**h, contract.H_CONTENT_TYPE: b"image/gif"})),
        ("bad_header", lambda k, v, h: (k, v, {**h, contract.H_CONTROL: b"rewind"})),
        ("undecodable", lambda k, v, h: (k, v[:3] + b"\x00" * 200, h)),
    ],
)
def test_bad_messages_become_dead_letters(reason, mutate):
    res = _bad(mutate)
    assert isinstance(res, contract.DeadLetter), res
    assert res.reason == reason, res
    assert res.reason in contract.DEAD_LETTER_REASONS and res.detail


def test_dead_letter_headers_carry_origin_and_reason():
    dl = contract.DeadLetter("empty", "empty value", "cam-1")
    h = dict(contract.dead_letter_headers([(contract.H_STREAM, b"cam-1")], dl, "frames", 2, 99))
    assert h[contract.H_DLQ_REASON] == b"empty" and h[contract.H_DLQ_TOPIC] == b"frames"
    assert h[contract.H_DLQ_PARTITION] == b"2" and h[contract.H_DLQ_OFFSET] == b"99"
    assert h[contract.H_STREAM] == b"cam-1"


def test_schema_file_matches_the_contract():
    import jsonschema

    schema = json.loads((REPO / "docs" / "schemas" / "frame-message.v1.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    _, _, headers = contract.encode_frame("cam-1", 3, _img(), captured_at=1.5, pts=0.1)
    as_json = {k: v.decode() for k, v in headers}
    jsonschema.validate(as_json, schema)
    _, _, eos = contract.encode_end_of_stream("cam-1", 3)
    jsonschema.validate({k: v.decode() for k, v in eos}, schema)
    bad = dict(as_json, **{contract.H_CONTENT_TYPE: "text/plain"})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    for name in (contract.H_SCHEMA, contract.H_STREAM, contract.H_SEQ, contract.H_CAPTURED, contract.H_CONTENT_TYPE,
                 contract.H_CONTROL, contract.H_PTS, contract.H_WIDTH, contract.H_HEIGHT):
        assert name in schema["properties"], name


def test_config_validation_and_secret_hiding():
    with pytest.raises(ValueError, match="intake_low"):
        KafkaConfig(intake_high=4, intake_low=4)
    with pytest.raises(ValueError, match="sasl_username"):
        KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN")
    with pytest.raises(ValueError, match="extra|not permitted|Extra"):
        KafkaConfig(bogus=1)
    with pytest.raises(ValueError, match="both a frames topic"):
        KafkaConfig(frames_topics=["x"], verdict_topic="x")
    cfg = KafkaConfig(security={"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                                "sasl_username": "svc", "sasl_password": "hunter2"})
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg.model_dump())
    assert "hunter2" not in cfg.model_dump_json()
    assert cfg.common_kwargs()["sasl_plain_password"] == "hunter2"  # only where the client needs it
    assert KafkaConfig().auto_offset_reset == "latest"


def test_commit_offset_is_the_contiguous_done_prefix():
    p = _Partition(TopicPartition("t", 0))
    for off in range(10, 15):
        p.add(off)
    p.complete(12)
    assert p.commit_to is None and p.outstanding == 4
    p.complete(10)
    assert p.commit_to == 11
    p.complete(11)
    assert p.commit_to == 13  # 10, 11, 12 done -> commit 13
    assert not p.complete(11)  # done twice is harmless
    p.complete(14)
    p.complete(13)
    assert p.commit_to == 15 and p.outstanding == 0


def test_snapshot_roundtrip_with_numpy():
    v = encode_snapshot("s", {"ema": np.float32(0.5), "vec": np.arange(3), "n": 4})
    assert decode_snapshot(v) == {"ema": 0.5, "vec": [0, 1, 2], "n": 4}
    assert decode_snapshot(b"garbage") is None
