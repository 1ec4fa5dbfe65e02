"""The planning rewards (AlphaDrive's accuracy x action weight x diversity) and their parts as standalone rewards.

Per axis (speed, path), with P the predicted words (`actions.parse_answer`, several allowed) and G the ground truth:

1. accuracy: F1(P, G) = 2|P ∩ G| / (|P| + |G|), 0 when P is empty. Exact: a perfect answer scores 1.0.
2. action weight: mean of the per-action weights over P (safety-critical actions weigh more), 0 when P is empty.
3. diversity, within the group of completions that share a prompt:
   - `paper`: factor `1 - min(cap, share)`, where `share` is the fraction of the *other* completions of the group whose
     answer holds the same word on this axis. With several predicted words, `share` is the mean over the words (each
     word is penalised for its own popularity; a hedging answer is not penalised twice). A group of one has share 0.
   - `release`: the published code's additive term: `+w` for a completion none of whose words was used by an earlier
     completion of its group (in call order), `-w` otherwise. Reproduced on purpose, quirks included: the first of
     several identical answers gets the bonus and the others the penalty (the result depends on the order), and an
     answer without any valid word gets `+w`. Unlike the published code, which counted over the whole call, the
     count is per group.

`feasible_coverage` (not in the paper) credits each completion with its share of its group's expected k-sample
coverage of the scene's feasible plans (`FeasibleCoverageReward`).

`speed_planning_reward` / `path_planning_reward` = accuracy × weight × diversity factor (paper mode);
`make_planning_reward` builds the other combinations (release mode, no weighting, no diversity, custom weights, or a
custom `predict` hook, e.g. meta-actions derived from a predicted trajectory).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ..actions import (
    AXES,
    PATH_ACTIONS,
    SAFETY_CRITICAL_SPEEDS,
    SPEED_ACTIONS,
    UNSAFE_SPEEDS,
    AnswerWords,
    normalize_word,
    parse_answer,
    parse_plan,
)
from .base import Predictor, _Batch, _column_or_none, _DrivingReward, _ground_truth

# Safety-critical decisions weigh more (AlphaDrive, "planning action weights").
DEFAULT_ACTION_WEIGHTS: dict[str, dict[str, float]] = {
    "speed": {"KEEP": 0.8, "ACCELERATE": 0.9, "DECELERATE": 1.0, "STOP": 1.0},
    "path": {"STRAIGHT": 0.8, "RIGHT_CHANGE": 1.0, "LEFT_CHANGE": 1.0, "RIGHT_TURN": 1.0, "LEFT_TURN": 1.0},
}
DIVERSITY_MODES: tuple[str, ...] = ("paper", "release", "none")
PLANNING_AXES: tuple[str, ...] = (*AXES, "both")


def _f1(predicted: frozenset[str], truth: frozenset[str]) -> float:
    if not predicted:
        return 0.0
    return 2.0 * len(predicted & truth) / (len(predicted) + len(truth))


def _mean_weight(predicted: frozenset[str], weights: Mapping[str, float]) -> float:
    if len(predicted) == 1:
        for word in predicted:
            return weights[word]
    if not predicted:
        return 0.0
    # fsum: exact, so the value does not depend on the (hash-randomised) iteration order of the set.
    return math.fsum(weights[w] for w in predicted) / len(predicted)


def _paper_factors(words: list[frozenset[str]], groups: list[int], cap: float) -> list[float]:
    """`1 - min(cap, share)`: share = mean over the completion's words of the fraction of the *other* completions
    of its group that hold the same word. 1.0 for a completion without words or alone in its group."""
    sizes = Counter(groups)
    counts = Counter((g, word) for g, w in zip(groups, words) for word in w)
    factors = []
    for g, w in zip(groups, words):
        others = sizes[g] - 1
        if not w or others == 0:
            factors.append(1.0)
            continue
        if len(w) == 1:
            for word in w:
                share = (counts[g, word] - 1) / others
        else:
            share = math.fsum((counts[g, word] - 1) / others for word in w) / len(w)
        factors.append(1.0 - min(cap, share))
    return factors


def _release_terms(words: list[frozenset[str]], groups: list[int], weight: float) -> list[float]:
    """`+weight` when none of the completion's words was used by an earlier completion of its group, else `-weight`
    (the published AlphaDrive code, scoped to groups). No valid word: `+weight`, as there."""
    seen: dict[int, set[str]] = {}
    terms = []
    for g, w in zip(groups, words):
        used = seen.setdefault(g, set())
        terms.append(-weight if used & w else weight)
        used |= w
    return terms


def _resolve_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """The default weight table (both axes) updated with `weights`; unknown words or non-finite values raise."""
    table = {**DEFAULT_ACTION_WEIGHTS["speed"], **DEFAULT_ACTION_WEIGHTS["path"]}
    if not weights:
        return table
    if not isinstance(weights, Mapping):
        raise ValueError(f"Action weights must be a dict word -> weight, got {type(weights).__name__}: {weights!r}")
    for word, value in weights.items():
        key = normalize_word(str(word))
        if key not in table:
            raise ValueError(
                f"Unknown action {word!r} in the action weights; valid: {', '.join(SPEED_ACTIONS + PATH_ACTIONS)}."
            )
        try:
            number = float(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"Action weight of {word!r} must be a number, got {value!r}.") from err
        if not math.isfinite(number):
            raise ValueError(f"Action weight of {word!r} must be finite, got {value!r}.")
        table[key] = number
    return table


def _axes_of(axis: str) -> tuple[str, ...]:
    if axis not in PLANNING_AXES:
        raise ValueError(f"`axis` must be one of {', '.join(PLANNING_AXES)}, got {axis!r}.")
    return AXES if axis == "both" else (axis,)


def _check_diversity(mode: str, cap: Any, weight: Any) -> tuple[float, float]:
    """Validate the diversity settings; returns `(cap, weight)` as floats."""
    if mode not in DIVERSITY_MODES:
        raise ValueError(f"`diversity` must be one of {', '.join(DIVERSITY_MODES)}, got {mode!r}.")
    try:
        cap_value, weight_value = float(cap), float(weight)
    except (TypeError, ValueError) as err:
        raise ValueError(f"`diversity_cap` and `diversity_weight` must be numbers, got {cap!r}, {weight!r}.") from err
    if not 0.0 <= cap_value <= 1.0:
        raise ValueError(f"`diversity_cap` must be a number in [0, 1], got {cap!r}.")
    if not math.isfinite(weight_value):
        raise ValueError(f"`diversity_weight` must be a finite number, got {weight!r}.")
    return cap_value, weight_value


def _mean_over_axes(per_axis: list[list[float]]) -> list[float]:
    if len(per_axis) == 1:
        return per_axis[0]
    return [sum(values) / len(values) for values in zip(*per_axis)]


class PlanningReward(_DrivingReward):
    """Per-axis planning reward: F1 × action weight × paper diversity factor, or F1 × weight ± release term.

    Built by `make_planning_reward`; see the module docstring for the definitions. With `axis="both"` the value is
    the mean of the speed and path values.

    Args:
        axis: which meta-action axis is scored.
        weighting: multiply F1 by the mean action weight of the predicted words.
        diversity: `"paper"` (multiply by `1 - min(diversity_cap, share)`), `"release"` (add `±diversity_weight`
            like the published code, per group) or `"none"`.
        weights: per-action weights overriding `DEFAULT_ACTION_WEIGHTS` (words of either axis; missing ones keep
            their default).
        name: the callable's `__name__`, which TRL logs as `rewards/<name>/mean`. Default e.g.
            `speed_planning`, `path_planning_release`, `speed_planning_unweighted_none`.
        predict: text -> `AnswerWords`, the predicted words (default `actions.parse_answer`). A trajectory-mode
            reward passes a predictor that derives the meta-actions from the predicted waypoints.
        predict_columns: dataset columns passed to `predict` after the text, row by row (e.g. `("ego_speed",)`).
        metric_prefix: prefix of the metrics sent to TRL's `log_metric` (`<prefix>/speed_f1`, `<prefix>/path_f1`,
            `<prefix>/valid_answer`).
    """

    def __init__(
        self,
        axis: str,
        *,
        weighting: bool = True,
        diversity: str = "paper",
        weights: Mapping[str, float] | None = None,
        diversity_cap: float = 0.2,
        diversity_weight: float = 0.4,
        name: str | None = None,
        predict: Predictor = parse_answer,
        predict_columns: Sequence[str] = (),
        metric_prefix: str = "planning",
    ):
        self.axes = _axes_of(axis)
        self.diversity_cap, self.diversity_weight = _check_diversity(diversity, diversity_cap, diversity_weight)
        self.axis = axis
        self.weighting = weighting
        self.diversity = diversity
        self.weights = _resolve_weights(weights)
        self.metric_prefix = metric_prefix
        super().__init__(name or _default_planning_name(axis, weighting, diversity), predict, predict_columns)

    def _score(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[float | None]:
        per_axis, missing = [], [False] * batch.size
        for axis in self.axes:
            words = self._words(batch, kwargs, axis)
            truth = _ground_truth(axis, batch.size, kwargs, self.__name__)
            f1 = [_f1(p, t) if t is not None else 0.0 for p, t in zip(words, truth)]
            missing = [m or t is None for m, t in zip(missing, truth)]
            _log_f1(kwargs, f"{self.metric_prefix}/{axis}_f1", f1, truth)
            values = f1
            if self.weighting:
                values = [v * _mean_weight(p, self.weights) for v, p in zip(values, words)]
            if self.diversity == "paper":
                factors = _paper_factors(words, batch.groups, self.diversity_cap)
                values = [v * d for v, d in zip(values, factors)]
            elif self.diversity == "release":
                terms = _release_terms(words, batch.groups, self.diversity_weight)
                values = [v + d for v, d in zip(values, terms)]
            per_axis.append(values)
        _log_valid_share(kwargs, f"{self.metric_prefix}/valid_answer", self._predicted(batch, kwargs))
        return [None if m else v for v, m in zip(_mean_over_axes(per_axis), missing)]


def _default_planning_name(axis: str, weighting: bool, diversity: str) -> str:
    """Named like the registry: `speed_planning` (AlphaDrive's reward), `speed_planning_release`, ..."""
    return f"{axis}_planning{'' if weighting else '_unweighted'}{'' if diversity == 'paper' else '_' + diversity}"


def _log_f1(kwargs: Mapping[str, Any], name: str, f1: list[float], truth: list[Any]) -> None:
    log_metric = kwargs.get("log_metric")
    scored = [v for v, t in zip(f1, truth) if t is not None]
    if callable(log_metric) and scored:
        log_metric(name, sum(scored) / len(scored))


def _log_valid_share(kwargs: Mapping[str, Any], name: str, predicted: list[AnswerWords]) -> None:
    """Share of completions whose answer holds exactly one word on each axis."""
    log_metric = kwargs.get("log_metric")
    if callable(log_metric) and predicted:
        valid = sum(len(p.speed) == 1 and len(p.path) == 1 for p in predicted)
        log_metric(name, valid / len(predicted))


def make_planning_reward(axis: str, **options: Any) -> PlanningReward:
    """Build a planning reward for one axis (`"speed"`, `"path"`, or `"both"` for their mean); `options` are the
    keyword arguments of `PlanningReward` (weighting, diversity, weights, name, predict, ...).

    Example:
        >>> reward = make_planning_reward("speed", diversity="release", name="speed_release")
        >>> reward(prompts=["p", "p"], completions=["<answer> STOP, STRAIGHT </answer>"] * 2, speed_action=["STOP"] * 2)
        [1.4, 0.6]
    """
    return PlanningReward(axis, **options)


class ActionWeightReward(_DrivingReward):
    """Mean over the two axes of the mean action weight of the predicted words (0 on an axis without a valid word).

    Needs no ground truth: it rewards committing to safety-critical decisions, so use it alongside an accuracy reward.

    Example:
        >>> action_weight_reward(completions=["<answer> STOP, STRAIGHT </answer>"])
        [0.9]
    """

    def __init__(self, weights: Mapping[str, float] | None = None, *, name: str = "action_weight", **kwargs):
        self.weights = _resolve_weights(weights)
        super().__init__(name, **kwargs)

    def _score(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[float | None]:
        return _mean_over_axes(
            [[_mean_weight(p, self.weights) for p in self._words(batch, kwargs, axis)] for axis in AXES]
        )


class SafetyPenalty(_DrivingReward):
    """`-penalty` when the ground-truth speed is STOP or DECELERATE and the answer names ACCELERATE or KEEP, else 0.

    Why a penalty and not the action weights: all completions of a GRPO group share one ground truth, so a weight on
    the *correct* word scales every correct completion of that group alike, and the group normalisation of the
    advantages cancels it. A penalty on the unsafe *answer* separates it from the other wrong answers of its group.
    `None` (ignored by TRL) where the row has no speed ground truth.

    Example:
        >>> safety_penalty(completions=["<answer> KEEP, STRAIGHT </answer>", "<answer> STOP, STRAIGHT </answer>"],
        ...                speed_action=["STOP", "STOP"])
        [-1.0, 0.0]
    """

    def __init__(self, penalty: float = 1.0, *, name: str = "safety", **kwargs):
        if not isinstance(penalty, (int, float)) or not math.isfinite(penalty) or penalty < 0:
            raise ValueError(f"`safety_penalty` must be a finite number >= 0, got {penalty!r}.")
        self.penalty = float(penalty)
        super().__init__(name, **kwargs)

    def _score(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[float | None]:
        truth = _ground_truth("speed", batch.size, kwargs, self.__name__)
        words = self._words(batch, kwargs, "speed")
        return [
            None if t is None else (-self.penalty if t & SAFETY_CRITICAL_SPEEDS and p & UNSAFE_SPEEDS else 0.0)
            for p, t in zip(words, truth)
        ]


class DiversityReward(_DrivingReward):
    """The diversity term alone, mean over the two axes, within groups of completions sharing a prompt.

    `paper`: the factor `1 - min(cap, share)` for an axis with a valid word, 0 for an axis without one (as a
    standalone reward, emitting no valid word must not pay). `release`: the additive `±weight` term, unchanged
    (so an answer without any valid word gets `+weight`, as in the published code).

    Example:
        >>> diversity_reward(prompts=["p"] * 2, completions=["<answer> KEEP, STRAIGHT </answer>",
        ...                                                 "<answer> STOP, STRAIGHT </answer>"])
        [0.9, 0.9]
    """

    def __init__(
        self, mode: str = "paper", *, cap: float = 0.2, weight: float = 0.4, name: str = "diversity", **kwargs
    ):
        if mode == "none":
            raise ValueError("The diversity reward needs `diversity` 'paper' or 'release', not 'none'.")
        self.cap, self.weight = _check_diversity(mode, cap, weight)
        self.mode = mode
        super().__init__(name, **kwargs)

    def _score(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[float | None]:
        per_axis = []
        for axis in AXES:
            words = self._words(batch, kwargs, axis)
            if self.mode == "paper":
                factors = _paper_factors(words, batch.groups, self.cap)
                per_axis.append([f if w else 0.0 for f, w in zip(factors, words)])
            else:
                per_axis.append(_release_terms(words, batch.groups, self.weight))
        return _mean_over_axes(per_axis)


class FeasibleCoverageReward(_DrivingReward):
    """Each completion's share of the group's expected feasible coverage with `k` samples (pass@k, for plan sets).

    The feasible set F of a scene is its ground-truth plan plus its `feasible_actions` (when the column is there).
    The coverage of a set of samples is the share of F that at least one of them answers; this is
    `feasible_coverage` in `alphadrive-eval score`. A completion's reward is the mean coverage of the k-subsets of
    its group that contain it (exact, in closed form):

        (1 / |F|) * sum over plans p in F of: 1 if the completion answers p, else 1 - C(n-1-c_p, k-1) / C(n-1, k-1)

    with n the group size and c_p the number of completions of the group that answer p. Summed with the per-sample
    weights of the policy gradient, these credits are an unbiased estimate of the gradient of the k-sample coverage
    (the pass@k construction of Walder and Karkhanis, 2025, with coverage in place of pass): a wrong completion in a
    group that already covers F with k - 1 others loses little, and a completion that finds a plan the rest of its
    group misses gains most. With `k = 1` it is `[plan in F] / |F|`; with `k >= n` all completions of a group score
    the same (no advantage), so use `k < n`. GRPO's per-group scaling (`scale_rewards: group`) gives a group with
    two reward values the same advantages as plain accuracy; on the CPU demo this reward did not keep the coverage
    of 8 samples (docs/rewards.md).

    A plan needs exactly one word on each axis. `None` (ignored by TRL) where the row has no ground truth.

    Example:
        >>> reward = FeasibleCoverageReward(k=2)
        >>> [round(r, 4) for r in reward(prompts=["p"] * 4, completions=[
        ...     "<answer> STOP, STRAIGHT </answer>", "<answer> STOP, STRAIGHT </answer>",
        ...     "<answer> DECELERATE, STRAIGHT </answer>", "<answer> KEEP, STRAIGHT </answer>"],
        ...     speed_action=["STOP"] * 4, path_action=["STRAIGHT"] * 4,
        ...     feasible_actions=[["DECELERATE, STRAIGHT"]] * 4)]
        [0.6667, 0.6667, 0.8333, 0.5]
    """

    def __init__(self, k: int = 4, *, name: str = "feasible_coverage", **kwargs):
        self.k = check_coverage_k(k)
        super().__init__(name, **kwargs)

    def _score(self, batch: _Batch, kwargs: Mapping[str, Any]) -> list[float | None]:
        speed = _ground_truth("speed", batch.size, kwargs, self.__name__)
        path = _ground_truth("path", batch.size, kwargs, self.__name__)
        feasible = _column_or_none(kwargs, "feasible_actions", batch.size)
        plans = [_single_plan(p) for p in self._predicted(batch, kwargs)]
        counts = Counter((g, plan) for g, plan in zip(batch.groups, plans) if plan is not None)
        sizes = Counter(batch.groups)
        rewards: list[float | None] = []
        for i, (g, plan) in enumerate(zip(batch.groups, plans)):
            scene = _feasible_plans(speed[i], path[i], feasible[i])
            if not scene:
                rewards.append(None)
                continue
            others = sizes[g] - 1
            drawn = min(self.k, sizes[g]) - 1  # the other completions in a k-subset that holds this one
            total = math.comb(others, drawn)
            credits = (
                1.0 if plan == p else 1.0 - math.comb(others - counts[g, p], drawn) / total for p in sorted(scene)
            )
            rewards.append(math.fsum(credits) / len(scene))
        return rewards


def check_coverage_k(k: Any) -> int:
    """`k` when it is a whole number >= 1 (the `coverage_k` setting), else a clear `ValueError`."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"`coverage_k` must be an integer >= 1, got {k!r}.")
    return k


def _single_plan(words: AnswerWords) -> tuple[str, str] | None:
    if len(words.speed) == 1 and len(words.path) == 1:
        return next(iter(words.speed)), next(iter(words.path))
    return None


def _feasible_plans(
    speed: frozenset[str] | None, path: frozenset[str] | None, feasible: Any
) -> frozenset[tuple[str, str]]:
    """The ground-truth plan(s) plus the valid plans of `feasible_actions`; empty without a ground truth."""
    if not speed or not path:
        return frozenset()
    plans = {(s, p) for s in speed for p in path}
    if isinstance(feasible, (list, tuple)):
        plans.update(plan for plan in map(parse_plan, feasible) if plan is not None)
    return frozenset(plans)


planning_accuracy_reward = make_planning_reward("both", weighting=False, diversity="none", name="planning_accuracy")
action_weight_reward = ActionWeightReward()
diversity_reward = DiversityReward("paper")
safety_penalty = SafetyPenalty()
feasible_coverage_reward = FeasibleCoverageReward()
speed_planning_reward = make_planning_reward("speed")
path_planning_reward = make_planning_reward("path")
