"""Kafka CLI tools: ``fakewatch produce`` (a video file -> frame messages) and ``fakewatch verdicts``.

``add_parsers(subparsers)`` adds both subcommands to the daemon CLI; each sets ``func(args) -> int``.
The coroutine :func:`produce_video` is also what the tests and the load benchmark use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from daemon.kafka import contract

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def iter_video(path: str | Path, max_frames: int | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
    """(seq, pts seconds, RGB frame) of a video file, decoded with PyAV."""
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        for i, f in enumerate(c.decode(vs)):
            if max_frames is not None and i >= max_frames:
                break
            pts = float(f.time) if f.time is not None else i / float(vs.average_rate or contract.DEFAULT_FPS)
            yield i, pts, f.to_ndarray(format="rgb24")


async def produce_frames(producer: AIOKafkaProducer, topic: str, stream_id: str,
                         frames: Iterator[tuple[int, float, np.ndarray]], *, fps: float | None = None,
                         content_type: str = "image/jpeg", quality: int = 85, end_of_stream: bool = True,
                         seq_offset: int = 0) -> int:
    """Publish frames (paced at ``fps`` when given, else as fast as acks allow). Returns frames sent."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    n = 0
    futs = []
    last_seq = -1
    for seq, pts, img in frames:
        if fps:
            delay = t0 + n / fps - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        key, value, headers = await asyncio.to_thread(
            contract.encode_frame, stream_id, seq + seq_offset, img, pts=pts, content_type=content_type,
            quality=quality, captured_at=time.time(),
        )
        futs.append(await producer.send(topic, value, key=key, headers=headers))
        last_seq = seq + seq_offset
        n += 1
        if len(futs) >= 64:
            await asyncio.gather(*futs)
            futs.clear()
    if end_of_stream:
        key, value, headers = contract.encode_end_of_stream(stream_id, last_seq)
        futs.append(await producer.send(topic, value, key=key, headers=headers))
    await asyncio.gather(*futs)
    return n


async def produce_video(path: str | Path, topic: str, stream_id: str, bootstrap: str = DEFAULT_BOOTSTRAP, *,
                        fps: float | None = None, max_frames: int | None = None, content_type: str = "image/jpeg",
                        end_of_stream: bool = True, producer: AIOKafkaProducer | None = None) -> int:
    """Publish a video file as frame messages of one stream; returns the frames sent."""
    own = producer is None
    if producer is None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", client_id="fakewatch-produce",
                                    max_request_size=4 * 1024 * 1024)
        await producer.start()
    try:
        return await produce_frames(producer, topic, stream_id, iter_video(path, max_frames), fps=fps,
                                    content_type=content_type, end_of_stream=end_of_stream)
    finally:
        if own:
            await producer.stop()


async def read_verdicts(topic: str, bootstrap: str = DEFAULT_BOOTSTRAP, *, from_beginning: bool = False,
                        max_events: int | None = None, idle_timeout_s: float | None = None, out=None) -> int:
    """Print verdict events (one JSON line each) until ``max_events`` or idle; returns the count."""
    out = out or sys.stdout
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest" if from_beginning else "latest",
                         client_id="fakewatch-verdicts")
    await c.start()
    n = 0
    loop = asyncio.get_running_loop()
    last = loop.time()
    try:
        while max_events is None or n < max_events:
            batch = await c.getmany(timeout_ms=500)
            for recs in batch.values():
                for r in recs:
                    try:
                        ev = json.loads(r.value)
                    except (TypeError, ValueError):
                        ev = {"undecodable": True, "offset": r.offset}
                    out.write(json.dumps(ev, separators=(",", ":"), sort_keys=True) + "\n")
                    n += 1
                    last = loop.time()
                    if max_events is not None and n >= max_events:
                        break
            out.flush()
            if idle_timeout_s is not None and loop.time() - last > idle_timeout_s:
                break
    finally:
        await c.stop()
    return n


def _cmd_produce(args: argparse.Namespace) -> int:
    if not Path(args.video).is_file():
        print(f"error: video file not found: {args.video}", file=sys.stderr)
        return 2
    n = asyncio.run(produce_video(args.video, args.topic, args.stream_id, args.bootstrap, fps=args.fps,
                                  max_frames=args.max_frames, content_type=args.content_type,
                                  end_of_stream=not args.no_end))
    print(f"published {n} frames of stream {args.stream_id} to {args.topic}", file=sys.stderr)
    return 0


def _cmd_verdicts(args: argparse.Namespace) -> int:
    if args.db:
        return _verdicts_from_db(args)
    if not args.topic:
        print("error: give --topic (Kafka) or --db (the review store's SQLite file)", file=sys.stderr)
        return 2
    try:
        asyncio.run(read_verdicts(args.topic, args.bootstrap, from_beginning=args.from_beginning,
                                  max_events=args.max, idle_timeout_s=args.idle_timeout))
    except KeyboardInterrupt:
        pass
    return 0


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("produce", help="publish a video file to Kafka as frame messages")
    p.add_argument("video", help="video file (anything PyAV/FFmpeg reads)")
    p.add_argument("--topic", required=True, help="frames topic")
    p.add_argument("--stream-id", required=True, help="stream id (message key)")
    p.add_argument("--fps", type=float, default=None, help="pace publishing at this rate (default: as fast as possible)")
    p.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP, help=f"bootstrap servers (default {DEFAULT_BOOTSTRAP})")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--content-type", default="image/jpeg", choices=contract.CONTENT_TYPES)
    p.add_argument("--no-end", action="store_true", help="do not send the end-of-stream control message")
    p.set_defaults(func=_cmd_produce)

    v = subparsers.add_parser("verdicts", help="print verdict events from a Kafka topic or a review db as JSON lines")
    v.add_argument("--topic", help="verdict topic (Kafka)")
    v.add_argument("--db", help="read the review store's SQLite file (http.store.db) instead of Kafka, oldest first")
    v.add_argument("--stream", help="--db: only this stream")
    v.add_argument("--verdict", choices=("fake", "uncertain", "real"), help="--db: only events with this verdict")
    v.add_argument("--alerts", action="store_true", help="--db: only alert events")
    v.add_argument("--since", type=float, default=None, metavar="SECONDS", help="--db: only events of the last SECONDS")
    v.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP, help=f"bootstrap servers (default {DEFAULT_BOOTSTRAP})")
    v.add_argument("--from-beginning", action="store_true", help="start at the oldest record (default: new ones only)")
    v.add_argument("--max", type=int, default=None, help="stop after N events (--db: the newest N)")
    v.add_argument("--idle-timeout", type=float, default=None, help="stop after this many seconds without events")
    v.set_defaults(func=_cmd_verdicts)


def _verdicts_from_db(args: argparse.Namespace) -> int:
    import sqlite3

    from daemon.review.store import iter_json_lines, query_db

    try:
        events = query_db(args.db, stream=args.stream, verdict=args.verdict, alerts_only=args.alerts,
                          since_s=args.since, limit=args.max)
    except (OSError, sqlite3.Error, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for line in iter_json_lines(events):
        sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fakewatch-kafka")
    add_parsers(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
