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
    """A 2 s 640x360 H.264 clip of a moving real face (scikit-image astronaut)."""
    from detectors import samples

    p = tmp_path_factory.mktemp("clips") / "astronaut.mp4"
    return samples.write_video(p, samples.moving_frames(samples.astronaut(), 50, (640, 360)), fps=25)
