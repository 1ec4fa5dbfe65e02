"""The format rewards: `<think>…</think> <answer>…</answer>` and nothing else; `answer_format` for answer-only completions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..actions import (
    parse_answer_strict,
)
from ..trajectory import (
    is_trajectory_format,
)
from .base import _Batch, _DrivingReward

_THINK_OPEN, _THINK_CLOSE, _ANSWER_OPEN, _ANSWER_CLOSE = "<think>", "</think>", "<answer>", "</answer>"


def is_well_formatted(text: Any, *, trajectory_mode: bool = False) -> bool:
    """True when `text` (surrounding whitespace aside) is exactly `<think>…</think>` then `<answer>…</answer>`, each
    tag once, only whitespace between the blocks: the check of `format_reward`, which evaluation's `format_rate`
    shares. With `trajectory_mode`, `trajectory.is_trajectory_format` (the same plus one `<trajectory>` block). Never
    raises."""
    if trajectory_mode:
        return is_trajectory_format(text)
    if not isinstance(text, str):
        return False
    stripped = text.strip()
    if not (stripped.startswith(_THINK_OPEN) and stripped.endswith(_ANSWER_CLOSE)):
        return False
    if any(stripped.count(tag) != 1 for tag in (_THINK_OPEN, _THINK_CLOSE, _ANSWER_OPEN, _ANSWER_CLOSE)):
        return False
    think_end, answer_start = stripped.find(_THINK_CLOSE), stripped.find(_ANSWER_OPEN)
    return think_end < answer_start and not stripped[think_end + len(_THINK_CLOSE) : answer_start].strip()


class FormatReward(_DrivingReward):
    """1.0 when the completion is `<think>…</think> <answer>…</answer>` and nothing else, else 0.0. With
    `strict=True` the answer must also hold exactly one SPEED and one PATH word (`actions.parse_answer_strict`).

    Example:
        >>> format_reward(completions=["<think> clear road </think>\\n<answer> KEEP, STRAIGHT </answer>",
        ...                            "<answer> KEEP, STRAIGHT </answer>"])
        [1.0, 0.0]
        >>> format_reward_strict(completions=["<think> ? </think> <answer> KEEP, STOP, STRAIGHT </answer>"])
        [0.0]
    """

    def __init__(self, strict: bool = False, *, name: str | None = None):
        self.strict = strict
        super().__init__(name or ("format_strict" if strict else "format"))

    def _score(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[float | None]:
        rewards = []
        for text in batch.texts:
            ok = is_well_formatted(text) and (not self.strict or parse_answer_strict(text) is not None)
            rewards.append(1.0 if ok else 0.0)
        return rewards


format_reward = FormatReward(strict=False)
format_reward_strict = FormatReward(strict=True)


class AnswerFormatReward(_DrivingReward):
    """1.0 when the whole completion is one `<answer> SPEED, PATH </answer>` block naming exactly one word per axis,
    else 0.0: the format reward of `answer_only` completions, which have no `<think>` block.

    Why it exists: planning F1 gives partial credit to an answer that names several words on an axis, and without a
    KL term (TRL's default `beta: 0.0`) GRPO learns to hedge ("KEEP, LEFT_CHANGE STRAIGHT"): measured on the demo,
    greedy planning accuracy fell from 63.8 to 38.8 % and from 61.0 to 0 % (docs/rewards.md). Add it to the planning
    rewards whenever `beta` is 0.

    Example:
        >>> answer_format_reward(completions=["<answer> KEEP, STRAIGHT </answer>",
        ...                                   "<answer> KEEP, LEFT_CHANGE STRAIGHT </answer>",
        ...                                   "sure: <answer> KEEP, STRAIGHT </answer>"])
        [1.0, 0.0, 0.0]
    """

    def __init__(self, *, name: str = "answer_format"):
        super().__init__(name)

    def _score(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[float | None]:
        return [1.0 if _is_single_plan_answer(text) else 0.0 for text in batch.texts]


def _is_single_plan_answer(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    stripped = text.strip()
    whole_block = stripped.startswith(_ANSWER_OPEN) and stripped.endswith(_ANSWER_CLOSE)
    return whole_block and stripped.count(_ANSWER_OPEN) == 1 and parse_answer_strict(stripped) is not None


answer_format_reward = AnswerFormatReward()
