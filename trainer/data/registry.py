"""Name -> reader registry used by the trainer CLI (``fakewatch-train prepare --dataset ffpp --root ...``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from trainer.data.celebdf import read_celebdf
from trainer.data.deepfakebench import read_deepfakebench
from trainer.data.dfdc import read_dfdc, read_dfdc_preview
from trainer.data.fakes_dev import read_fakes_dev
from trainer.data.ffpp import read_dfd, read_faceshifter, read_ffpp
from trainer.data.generic import read_generic, read_shared_data
from trainer.data.records import VideoRecord
from trainer.data.wilddeepfake import read_wilddeepfake

Reader = Callable[..., list[VideoRecord]]

READERS: dict[str, Reader] = {
    "ffpp": read_ffpp,
    "dfd": read_dfd,
    "faceshifter": read_faceshifter,
    "celebdf": read_celebdf,
    "dfdc": read_dfdc,
    "dfdcp": read_dfdc_preview,
    "wilddeepfake": read_wilddeepfake,
    "generic": read_generic,
    "shared": read_shared_data,
    "deepfakebench": read_deepfakebench,
    "fakes_dev": read_fakes_dev,
}

ALIASES = {
    "ff++": "ffpp", "faceforensics++": "ffpp", "deepfakedetection": "dfd", "celeb-df-v2": "celebdf",
    "celebdf-v2": "celebdf", "celeb-df": "celebdf", "dfdc-preview": "dfdcp", "wdf": "wilddeepfake",
    "folder": "generic", "fakes-dev": "fakes_dev", "shared-data": "shared", "dfb": "deepfakebench",
}


def dataset_names() -> list[str]:
    return sorted(READERS)


def get_reader(name: str) -> Reader:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in READERS:
        raise KeyError(f"unknown dataset {name!r} (known: {', '.join(dataset_names())})")
    return READERS[key]


def load_records(name: str, root: str | Path, **kwargs: Any) -> list[VideoRecord]:
    """Read dataset ``name`` at ``root``; ``kwargs`` go to the reader (e.g. ``compression="c40"``, ``splits=("test",)``)."""
    return get_reader(name)(root, **kwargs)
