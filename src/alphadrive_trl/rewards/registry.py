"""The reward registry: recipe names -> reward callables built with the recipe's options.

Each registry entry is a factory `(**options) -> reward` whose result is named after its key, which is also the name
TRL logs (`rewards/<name>/mean`). Options are those of `DrivingGRPOConfig.reward_options()`; each factory takes what it
uses and ignores the rest.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .format import AnswerFormatReward, FormatReward
from .planning import (
    ActionWeightReward,
    DiversityReward,
    FeasibleCoverageReward,
    PlanningReward,
    SafetyPenalty,
    make_planning_reward,
)
from .trajectory import (
    TrajectoryAccuracyReward,
    TrajectoryConsistencyReward,
    TrajectoryFormatReward,
    make_trajectory_planning_reward,
)


def _planning_factory(
    axis: str, name: str, fixed_diversity: str | None = None, *, from_waypoints: bool = False
) -> Callable[..., PlanningReward]:
    """A planning reward factory; `from_waypoints` scores the meta-actions the predicted trajectory implies."""

    def factory(
        *,
        diversity: str = "paper",
        diversity_cap: float = 0.2,
        diversity_weight: float = 0.4,
        speed_weights: Mapping[str, float] | None = None,
        path_weights: Mapping[str, float] | None = None,
        trajectory_labeller: str = "heading",
        **_ignored: Any,
    ) -> PlanningReward:
        options = dict(
            diversity=fixed_diversity or diversity,
            weights=speed_weights if axis == "speed" else path_weights,
            diversity_cap=diversity_cap,
            diversity_weight=diversity_weight,
            name=name,
        )
        if from_waypoints:
            return make_trajectory_planning_reward(axis, labeller=trajectory_labeller, **options)
        return make_planning_reward(axis, **options)

    factory.__name__ = f"{name}_factory"
    return factory


def _format_factory(**_ignored: Any) -> FormatReward:
    return FormatReward(strict=False, name="format")


def _format_strict_factory(**_ignored: Any) -> FormatReward:
    return FormatReward(strict=True, name="format_strict")


def _answer_format_factory(**_ignored: Any) -> AnswerFormatReward:
    return AnswerFormatReward(name="answer_format")


def _planning_accuracy_factory(**_ignored: Any) -> PlanningReward:
    return make_planning_reward("both", weighting=False, diversity="none", name="planning_accuracy")


def _action_weight_factory(
    *, speed_weights: Mapping[str, float] | None = None, path_weights: Mapping[str, float] | None = None, **_ignored
) -> ActionWeightReward:
    return ActionWeightReward({**(speed_weights or {}), **(path_weights or {})}, name="action_weight")


def _diversity_factory(
    *, diversity: str = "paper", diversity_cap: float = 0.2, diversity_weight: float = 0.4, **_ignored: Any
) -> DiversityReward:
    return DiversityReward(diversity, cap=diversity_cap, weight=diversity_weight, name="diversity")


def _safety_factory(*, safety_penalty: float = 1.0, **_ignored: Any) -> SafetyPenalty:
    return SafetyPenalty(safety_penalty, name="safety")


def _feasible_coverage_factory(*, coverage_k: int = 4, **_ignored: Any) -> FeasibleCoverageReward:
    return FeasibleCoverageReward(coverage_k, name="feasible_coverage")


def _trajectory_accuracy_factory(*, trajectory_scale: float = 2.0, **_ignored: Any) -> TrajectoryAccuracyReward:
    return TrajectoryAccuracyReward(trajectory_scale, name="trajectory_accuracy")


def _trajectory_consistency_factory(
    *, trajectory_labeller: str = "heading", **_ignored: Any
) -> TrajectoryConsistencyReward:
    return TrajectoryConsistencyReward(trajectory_labeller, name="trajectory_consistency")


def _format_trajectory_factory(**_ignored: Any) -> TrajectoryFormatReward:
    return TrajectoryFormatReward(strict=False, name="format_trajectory")


def _format_trajectory_strict_factory(**_ignored: Any) -> TrajectoryFormatReward:
    return TrajectoryFormatReward(strict=True, name="format_trajectory_strict")


REWARD_REGISTRY: dict[str, Callable[..., Callable]] = {
    "format": _format_factory,
    "format_strict": _format_strict_factory,
    "answer_format": _answer_format_factory,
    "planning_accuracy": _planning_accuracy_factory,
    "action_weight": _action_weight_factory,
    "diversity": _diversity_factory,
    "safety": _safety_factory,
    "feasible_coverage": _feasible_coverage_factory,
    "speed_planning": _planning_factory("speed", "speed_planning"),
    "path_planning": _planning_factory("path", "path_planning"),
    "speed_planning_release": _planning_factory("speed", "speed_planning_release", fixed_diversity="release"),
    "path_planning_release": _planning_factory("path", "path_planning_release", fixed_diversity="release"),
    "trajectory_accuracy": _trajectory_accuracy_factory,
    "trajectory_consistency": _trajectory_consistency_factory,
    "format_trajectory": _format_trajectory_factory,
    "format_trajectory_strict": _format_trajectory_strict_factory,
    "speed_planning_trajectory": _planning_factory("speed", "speed_planning_trajectory", from_waypoints=True),
    "path_planning_trajectory": _planning_factory("path", "path_planning_trajectory", from_waypoints=True),
}


def get_reward_funcs(names: str | Sequence[str], **options: Any) -> list[Callable]:
    """Reward callables for the registry `names`, in order, each named after its registry key (TRL logs
    `rewards/<name>/mean`). `options` are `DrivingGRPOConfig.reward_options()` (`diversity`, `diversity_cap`,
    `diversity_weight`, `speed_weights`, `path_weights`, `safety_penalty`, `coverage_k`, `trajectory_scale`,
    `trajectory_labeller`); a reward ignores
    the options it does not take, and an option no reward takes (a misspelling) is an error naming the valid ones.
    `speed_planning` / `path_planning` follow the `diversity` option; the `_release` variants always use the release
    mode.

    Example:
        >>> [f.__name__ for f in get_reward_funcs("speed_planning_release, format", diversity_weight=0.5)]
        ['speed_planning_release', 'format']
    """
    if isinstance(names, str):
        names = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in names if name not in REWARD_REGISTRY]
    if unknown:
        raise ValueError(
            f"Unknown reward name(s) {', '.join(map(repr, unknown))}; valid names: {', '.join(REWARD_REGISTRY)}."
        )
    valid = reward_option_names()
    misspelt = sorted(set(options) - valid)
    if misspelt:
        hints = [
            f"{option!r}"
            + (f" (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(option, valid, 1)) else "")
            for option in misspelt
        ]
        raise ValueError(f"Unknown reward option(s) {', '.join(hints)}; valid options: {', '.join(sorted(valid))}.")
    return [REWARD_REGISTRY[name](**options) for name in names]


def reward_option_names() -> frozenset[str]:
    """Every option some registry factory takes (its keyword-only parameters).

    Example:
        >>> sorted(reward_option_names())[:3]
        ['coverage_k', 'diversity', 'diversity_cap']
    """
    return frozenset(
        parameter.name
        for factory in REWARD_REGISTRY.values()
        for parameter in inspect.signature(factory).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    )


def resolve_reward_funcs(names: Sequence[str], **options: Any) -> list:
    """Reward callables for recipe names: `REWARD_REGISTRY` names (built with `options`, the
    recipe's `reward_options()`), or dotted import paths `package.module.function` for your own TRL-style rewards,
    as TRL's `grpo` script accepts. An unknown name fails with the list of valid ones.

    Example:
        >>> [f.__name__ for f in resolve_reward_funcs(["format", "alphadrive_trl.rewards.format_reward_strict"])]
        ['format', 'format_strict']
    """
    unknown = [name for name in names if name not in REWARD_REGISTRY and "." not in name]
    if unknown:
        get_reward_funcs(unknown)  # raises, naming every unknown name and the valid ones
    funcs = []
    for name in names:
        if name in REWARD_REGISTRY:
            funcs.extend(get_reward_funcs([name], **options))
            continue
        module_path, attribute = name.rsplit(".", 1)
        if os.getcwd() not in sys.path:  # so a reward module next to the recipe imports, as with TRL's script
            sys.path.insert(0, os.getcwd())
        try:
            func = getattr(importlib.import_module(module_path), attribute)
        except (ImportError, AttributeError) as err:
            raise ValueError(
                f"Reward {name!r} is neither a registry name ({', '.join(REWARD_REGISTRY)}) nor an importable "
                f"function: {err}"
            ) from err
        if not callable(func):
            raise ValueError(f"Reward {name!r} imports {func!r}, which is not callable.")
        funcs.append(func)
    return funcs
