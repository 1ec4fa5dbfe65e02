"""The policy interface: `DrivingPolicy`, what it sees at a decision (`DrivingContext`) and what it returns
(`Decision`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .scenarios import Scenario


@dataclass
class DrivingContext:
    """What a policy sees at one decision."""

    env: Any  # the unwrapped highway-env environment (the expert reads the simulator state from it)
    scenario: Scenario
    frames: list[np.ndarray]  # top-down RGB frames, current first, then earlier decisions (most recent first)
    ego_speed: float
    navigation: str
    step: int


@dataclass
class Decision:
    """A policy's choice: the meta-action name, the plan it came from and the raw model text (VLM only)."""

    action: str
    plan: tuple[str, str] | None = None
    text: str | None = None
    valid: bool = True


class DrivingPolicy:
    """Base class: `reset(seed)` at the start of each episode, `decide(context)` at each decision."""

    name = "policy"
    history_frames = 0  # earlier frames the policy wants besides the current one
    needs_frames = False

    def reset(self, seed: int) -> None:  # optional hook
        pass

    def decide(self, context: DrivingContext) -> Decision:
        raise NotImplementedError
