"""Base for every configuration model: strict (unknown keys rejected), validated by pydantic.

Each daemon module owns the config model of its part (e.g. ``FusionConfig`` in ``daemon/fusion.py``);
``daemon/config.py`` composes them into the root config loaded from YAML + environment + CLI.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
