"""Shared fixtures. Data-heavy checks skip cleanly when ../shared/data is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FAKEWATCH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"shared data not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_clip(tmp_path_factory) -> Path:
    """A 2 s 640x360 H.264 clip of a moving real face (scikit-image astronaut), the same bytes in every run."""
    from detectors import samples
    from tests.media_corpus import deterministic_options

    p = tmp_path_factory.mktemp("clips") / "astronaut.mp4"
    return samples.write_video(p, samples.moving_frames(samples.astronaut(), 50, (640, 360)), fps=25,
                               options=deterministic_options("libx264"))


@pytest.fixture(scope="module")
def tiny_bundle_dir(tmp_path_factory) -> Path:
    """The tiny real model bundle (tests/tiny_bundle.py), one folder per test module."""
    from tests.tiny_bundle import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A real Kafka-protocol broker (Tansu, tests/kafka_broker.py) on 127.0.0.1 per test module."""
    from tests.kafka_broker import broker_or_skip

    b = broker_or_skip(tmp_path_factory)
    yield b
    b.stop()


@pytest.fixture(scope="session")
def fakewatch_bin() -> Path:
    """The installed ``fakewatch`` console script (installs the checkout, editable, when it is missing)."""
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "fakewatch"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", str(REPO)], check=True)
    return exe
