"""Trajectory-mode rewards (`alphadrive_trl.trajectory`): completions end with `<trajectory> [x,y] x6 </trajectory>`.

The waypoints are scored against the expert `trajectory` column, the stated meta-actions against those the
waypoints imply (same labeller as the data), and the planning rewards run on the implied meta-actions.
Registry options: `trajectory_scale` (metres, accuracy) and `trajectory_labeller` (`heading`, the synthetic data's
rules and the default, or `senna`; use the rules that labelled the training data).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..actions import (
    AXES,
    AnswerWords,
    parse_answer,
)
from ..labelling import LABELLER_MODES
from ..trajectory import (
    DEFAULT_MAX_ACCEL,
    DEFAULT_MAX_SPEED,
    as_waypoints,
    derived_answer_words,
    is_plausible,
    is_trajectory_format,
    l2_errors,
    parse_trajectory,
)
from .base import Predictor, _Batch, _column_or_none, _DrivingReward
from .planning import PlanningReward

TRAJECTORY_LABELLER_MODES: tuple[str, ...] = LABELLER_MODES  # the labeller that labels the data


def derived_words_heading(text: str, ego_speed: Any) -> AnswerWords:
    """Meta-actions implied by the completion's waypoints, `heading` labeller (a `predict` hook for the planning
    rewards, fed the `ego_speed` column)."""
    return derived_answer_words(text, ego_speed, mode="heading")


def derived_words_senna(text: str, ego_speed: Any) -> AnswerWords:
    """As `derived_words_heading`, with the `senna` labeller."""
    return derived_answer_words(text, ego_speed, mode="senna")


# Module-level functions (not partials) so the parse cache of `_safe_predict` is shared by every reward using them.
_DERIVED_PREDICTORS: dict[str, Predictor] = {"heading": derived_words_heading, "senna": derived_words_senna}


def _derived_predictor(labeller: str) -> Predictor:
    try:
        return _DERIVED_PREDICTORS[labeller]
    except KeyError:
        raise ValueError(
            f"`trajectory_labeller` must be one of {', '.join(TRAJECTORY_LABELLER_MODES)}, got {labeller!r}."
        ) from None


def _with_ego_speed(kwargs: Mapping[str, Any], n: int) -> Mapping[str, Any]:
    """`kwargs` with an `ego_speed` column for the derived-action predictors (all None when the call has none)."""
    if kwargs.get("ego_speed") is not None:
        return kwargs
    return {**kwargs, "ego_speed": [None] * n}


def _finite_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _log_mean(kwargs: Mapping[str, Any], name: str, values: Sequence[float]) -> None:
    log_metric = kwargs.get("log_metric")
    if callable(log_metric) and values:
        log_metric(name, math.fsum(values) / len(values))


class TrajectoryAccuracyReward(_DrivingReward):
    """`exp(-ADE / scale)` between the completion's waypoints and the expert `trajectory` column, in (0, 1].

    ADE is the mean Euclidean distance (metres) over the 6 waypoints (`trajectory.l2_errors`); `scale` is the ADE
    (metres) at which the reward falls to 1/e (0.37). 0.0 when the completion has no parsable trajectory or one a car
    could not drive (`trajectory.is_plausible`, including the first step from the `ego_speed` column when present).
    A row without an expert trajectory scores 0.0 for every completion: the same value across its GRPO group, so it
    adds no advantage, and the registry's promise of finite floats holds. A call without a `trajectory` column at
    all is an error, as for the planning rewards without their ground truth. Logs `trajectory/ade` (over the parsed,
    plausible completions), `trajectory/parsed` and `trajectory/plausible` (shares of the rows with an expert
    trajectory).

    Example:
        >>> expert = [[5, 0], [10, 0], [15, 0], [20, 0], [25, 0], [30, 0]]
        >>> shifted = "<trajectory> [5,1] [10,1] [15,1] [20,1] [25,1] [30,1] </trajectory>"  # ADE 1 m
        >>> [round(r, 4) for r in trajectory_accuracy_reward(completions=[shifted], trajectory=[expert])]
        [0.6065]
    """

    def __init__(
        self,
        scale: float = 2.0,
        *,
        max_speed: float = DEFAULT_MAX_SPEED,
        max_accel: float = DEFAULT_MAX_ACCEL,
        name: str = "trajectory_accuracy",
    ):
        for option, value in (("trajectory_scale", scale), ("max_speed", max_speed), ("max_accel", max_accel)):
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"`{option}` must be a positive finite number, got {value!r}.")
        self.scale, self.max_speed, self.max_accel = float(scale), float(max_speed), float(max_accel)
        super().__init__(name)

    def __repr__(self) -> str:
        return f"<TrajectoryAccuracyReward {self.__name__} scale={self.scale}>"

    def _score(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[float | None]:
        if kwargs.get("trajectory") is None:
            raise ValueError(
                f"Reward '{self.__name__}' needs the expert waypoints: a `trajectory` column (6 [x, y] points per "
                f"row, e.g. from data_prep.synthetic or data_prep.nuscenes); the call had columns {sorted(kwargs)}."
            )
        experts = _column_or_none(kwargs, "trajectory", batch.size)
        speeds = _column_or_none(kwargs, "ego_speed", batch.size)
        rewards: list[float] = []
        ades, parsed, plausible = [], [], []
        for text, expert, speed in zip(batch.texts, experts, speeds):
            gt = as_waypoints(expert)
            if gt is None:
                rewards.append(0.0)
                continue
            pred = parse_trajectory(text)
            ok = pred is not None and is_plausible(
                pred, self.max_speed, self.max_accel, ego_speed=_finite_or_none(speed)
            )
            parsed.append(float(pred is not None))
            plausible.append(float(ok))
            if not ok:
                rewards.append(0.0)
                continue
            ade = l2_errors(pred, gt)["ade"]
            ades.append(ade)
            rewards.append(math.exp(-ade / self.scale))
        _log_mean(kwargs, "trajectory/ade", ades)
        _log_mean(kwargs, "trajectory/parsed", parsed)
        _log_mean(kwargs, "trajectory/plausible", plausible)
        return rewards


class TrajectoryConsistencyReward(_DrivingReward):
    """Do the stated meta-actions match the ones the completion's own waypoints imply?

    Per axis 1.0 when the `<answer>` names exactly the word the labeller derives from the waypoints (with the
    `ego_speed` column), else 0.0; the reward is the mean of the two axes: 1.0, 0.5 or 0.0. 0.0 when the waypoints
    are missing, unparsable or implausible (nothing to agree with). Needs no ground truth.

    Example:
        >>> text = ("<think> clear </think> <answer> KEEP, LEFT_CHANGE </answer> "
        ...         "<trajectory> [5,0] [10,0] [15,0] [20,0] [25,0] [30,0] </trajectory>")
        >>> trajectory_consistency_reward(completions=[text], ego_speed=[10.0])  # waypoints say KEEP, STRAIGHT
        [0.5]
    """

    def __init__(self, labeller: str = "heading", *, name: str = "trajectory_consistency"):
        self.labeller = labeller
        self.derive = _derived_predictor(labeller)
        super().__init__(name, predict=parse_answer)

    def _score(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[float | None]:
        stated = self._predicted(batch, kwargs)
        derived = batch.predicted(self.derive, ("ego_speed",), _with_ego_speed(kwargs, batch.size))
        rewards = []
        for said, implied in zip(stated, derived):
            agree = [float(len(implied.axis(axis)) == 1 and said.axis(axis) == implied.axis(axis)) for axis in AXES]
            rewards.append(sum(agree) / len(agree))
        return rewards


class TrajectoryFormatReward(_DrivingReward):
    """1.0 when the completion is `<think>…</think> <answer>…</answer> <trajectory>…</trajectory>`, nothing else,
    with 6 parsable waypoints (`trajectory.is_trajectory_format`), else 0.0. `strict=True` also requires one SPEED
    and one PATH word and the canonical `[x,y]` one-decimal waypoints.

    Example:
        >>> good = ("<think> clear </think> <answer> KEEP, STRAIGHT </answer> "
        ...         "<trajectory> [5.0,0.0] [10.0,0.0] [15.0,0.0] [20.0,0.0] [25.0,0.0] [30.0,0.0] </trajectory>")
        >>> format_trajectory_reward(completions=[good, "<think> clear </think> <answer> KEEP, STRAIGHT </answer>"])
        [1.0, 0.0]
    """

    def __init__(self, strict: bool = False, *, name: str | None = None):
        self.strict = strict
        super().__init__(name or ("format_trajectory_strict" if strict else "format_trajectory"))

    def _score(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[float | None]:
        return [1.0 if is_trajectory_format(text, strict=self.strict) else 0.0 for text in batch.texts]


class TrajectoryPlanningReward(PlanningReward):
    """A `PlanningReward` whose predicted words are derived from the waypoints (`predict_columns=("ego_speed",)`);
    rows without an ego speed imply no meta-actions (score 0.0) instead of failing the call."""

    def _predicted(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[AnswerWords]:
        return super()._predicted(batch, _with_ego_speed(kwargs, batch.size))


def make_trajectory_planning_reward(axis: str, *, labeller: str = "heading", **options: Any) -> PlanningReward:
    """A planning reward (`make_planning_reward`) on the meta-actions derived from the predicted waypoints instead of
    the stated answer: the labeller `labeller` reads the parsed, plausible waypoints and the `ego_speed` column.
    `options` are those of `make_planning_reward` (weighting, diversity, weights, name, ...).

    Example:
        >>> reward = make_trajectory_planning_reward("speed", diversity="none", name="speed_from_waypoints")
        >>> stop = "<trajectory> [2.2,0] [3.9,0] [5.0,0] [5.6,0] [5.8,0] [5.8,0] </trajectory>"  # brakes to rest
        >>> reward(completions=[stop], speed_action=["STOP"], ego_speed=[5.0])
        [1.0]
    """
    options.setdefault("name", f"{axis}_planning_trajectory")
    options.setdefault("metric_prefix", "trajectory_planning")
    return TrajectoryPlanningReward(
        axis, predict=_derived_predictor(labeller), predict_columns=("ego_speed",), **options
    )


trajectory_accuracy_reward = TrajectoryAccuracyReward()
trajectory_consistency_reward = TrajectoryConsistencyReward()
format_trajectory_reward = TrajectoryFormatReward(strict=False)
format_trajectory_reward_strict = TrajectoryFormatReward(strict=True)
speed_planning_trajectory_reward = make_trajectory_planning_reward("speed")
path_planning_trajectory_reward = make_trajectory_planning_reward("path")
