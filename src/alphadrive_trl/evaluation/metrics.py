"""Evaluation metrics from prediction records: strict and legacy planning accuracy, F1, multimodal planning,
trajectory errors. Percentages are 0-100; `docs/evaluation.md` defines every metric."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..actions import (
    ALL_PLANS,
    AXES,
    AXIS_VOCABULARY,
    SAFETY_CRITICAL_SPEEDS,
    UNSAFE_SPEEDS,
    completion_to_text,
    parse_answer_strict,
    parse_plan,
    plan_to_string,
)
from ..labelling import try_label_trajectory
from ..rewards import is_well_formatted
from ..trajectory import TRAJECTORY_DT, as_waypoints, is_plausible, l2_errors, parse_trajectory
from .predictions import _record_problem

L2_KEYS: tuple[str, ...] = ("l2_1s", "l2_2s", "l2_3s", "ade", "fde")


def _percent(numerator: float, denominator: float) -> float | None:
    return 100.0 * numerator / denominator if denominator else None


def f1_from_counts(tp: int, fp: int, fn: int) -> float:
    """F1 in percent from confusion counts; 0 when undefined (no support and no prediction of the class).

    Example:
        >>> f1_from_counts(tp=1, fp=1, fn=0)
        66.66666666666667
    """
    denominator = 2 * tp + fp + fn
    return 100.0 * 2 * tp / denominator if denominator else 0.0


def legacy_match(completion: str, speed_action: str, path_action: str) -> bool:
    """The published AlphaDrive evaluation: both ground-truth words occur in the completion text.

    Plain case-sensitive substring search over the whole text, reasoning included, exactly like the released
    `eval_tools/qwen2vl_plan_cmd_eval_*.py` (`speed_plan in answer and path_plan in answer`). Consequences kept on
    purpose: an answer that lists several words on an axis still matches, a word in the reasoning counts, lower-case
    words do not, and a word inside a longer one counts (`STOP` in `STOPPED`).

    Example:
        >>> legacy_match("<think> may STOP </think> <answer> KEEP, STRAIGHT </answer>", "STOP", "STRAIGHT")
        True
    """
    text = completion.strip()
    return speed_action in text and path_action in text


def meta_action_metrics(
    ground_truth: Sequence[tuple[str, str]], predictions: Sequence[tuple[str, str] | None]
) -> dict[str, Any]:
    """Accuracy, per-class F1 and confusion counts of predicted plans against ground-truth plans.

    `predictions[i]` is a strictly parsed `(speed, path)` pair or `None` (unparsable). An unparsable answer is wrong on
    both axes and a miss (false negative) for its ground-truth class on each axis, but a false positive for no class.
    Per-class F1 is one-vs-rest within an axis, 0 for a class with no support and no prediction; the macro averages
    cover every class of the axis, so a class missing from the data pulls them down (the report shows the support).
    `safety_critical_error_rate`: of the scenes whose ground truth is STOP or DECELERATE, the share answered
    ACCELERATE or KEEP (None without such scenes).

    Example:
        >>> m = meta_action_metrics([("KEEP", "STRAIGHT"), ("STOP", "STRAIGHT")], [("KEEP", "STRAIGHT"), None])
        >>> m["planning_accuracy"], m["speed_accuracy"], m["per_class_f1"]["KEEP"], m["per_class_f1"]["STOP"]
        (50.0, 50.0, 100.0, 0.0)
    """
    if len(ground_truth) != len(predictions):
        raise ValueError(f"{len(ground_truth)} ground-truth plans but {len(predictions)} predictions.")
    total = len(ground_truth)
    axis_index = {"speed": 0, "path": 1}
    metrics: dict[str, Any] = {
        "planning_accuracy": _percent(sum(p == g for g, p in zip(ground_truth, predictions)), total),
    }
    for axis in AXES:
        i = axis_index[axis]
        metrics[f"{axis}_accuracy"] = _percent(
            sum(p is not None and p[i] == g[i] for g, p in zip(ground_truth, predictions)), total
        )
    per_class_f1: dict[str, float] = {}
    support: dict[str, int] = {}
    confusion: dict[str, dict[str, dict[str, int]]] = {}
    for axis in AXES:
        i = axis_index[axis]
        vocabulary = AXIS_VOCABULARY[axis]
        matrix = {gt: {pred: 0 for pred in (*vocabulary, "UNPARSED")} for gt in vocabulary}
        for g, p in zip(ground_truth, predictions):
            matrix[g[i]][p[i] if p is not None else "UNPARSED"] += 1
        confusion[axis] = matrix
        for word in vocabulary:
            tp = matrix[word][word]
            fp = sum(matrix[other][word] for other in vocabulary if other != word)
            fn = sum(matrix[word].values()) - tp
            per_class_f1[word] = f1_from_counts(tp, fp, fn)
            support[word] = sum(matrix[word].values())
        metrics[f"macro_f1_{axis}"] = sum(per_class_f1[w] for w in vocabulary) / len(vocabulary)
    must_slow = [p for g, p in zip(ground_truth, predictions) if g[0] in SAFETY_CRITICAL_SPEEDS]
    metrics["safety_critical_error_rate"] = _percent(
        sum(p is not None and p[0] in UNSAFE_SPEEDS for p in must_slow), len(must_slow)
    )
    metrics["per_class_f1"] = per_class_f1
    metrics["class_support"] = support
    plan_support = Counter(ground_truth)
    plan_correct = Counter(g for g, p in zip(ground_truth, predictions) if p == g)
    metrics["combination_accuracy"] = {
        plan_to_string(*plan): _percent(plan_correct[plan], plan_support[plan]) for plan in ALL_PLANS
    }
    metrics["combination_support"] = {plan_to_string(*plan): plan_support[plan] for plan in ALL_PLANS}
    metrics["confusion"] = confusion
    return metrics


def _ground_truth(record: dict[str, Any]) -> tuple[str, str]:
    return record["speed_action"], record["path_action"]


def _feasible_set(record: dict[str, Any]) -> set[tuple[str, str]] | None:
    """The acceptable plans of a scene: `feasible_actions` plus the ground truth (None when the data has none)."""
    feasible = record.get("feasible_actions")
    if feasible is None:
        return None
    plans = {parse_plan(plan) for plan in feasible}
    plans.discard(None)
    return plans | {_ground_truth(record)}


def sampling_metrics(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Multimodal-planning metrics over records that carry K > 1 sampled `completions`; `{}` when none do.

    - `mean_distinct_plans`: mean over scenes of the number of distinct strictly parsed plans among the K samples.
    - `feasible_rate`: share of all sampled answers (unparsable ones included, as misses) whose plan is feasible.
    - `feasible_coverage`: mean over scenes of the share of the scene's feasible plans found by at least one sample.
    - `best_of_k_accuracy`: share of scenes where at least one sample equals the ground-truth plan.
    - `feasible_coverage_at`: `{k: %}` for k = 1, 2, 4, ... below K: the unbiased estimate of the coverage that k
      samples would reach, from all K (`coverage_at_k`). Far less noisy than drawing k samples: generate 32 and
      read the coverage of 8.

    The feasible set of a scene is its `feasible_actions` plus the ground truth; scenes without `feasible_actions`
    are left out of the two feasible metrics (they are None when no scene has the column).
    """
    sampled = [r for r in records if isinstance(r.get("completions"), list) and len(r["completions"]) > 1]
    if not sampled:
        return {}
    distinct_counts, best_of_k_hits = [], 0
    feasible_hits = feasible_total = 0
    coverages = []
    fewest = min(len(r["completions"]) for r in sampled)  # every scene must hold k samples
    coverages_at: dict[int, list[float]] = {1 << i: [] for i in range(fewest.bit_length()) if 1 << i < fewest}
    for record in sampled:
        plans = [parse_answer_strict(c) for c in record["completions"]]
        found = {p for p in plans if p is not None}
        distinct_counts.append(len(found))
        best_of_k_hits += _ground_truth(record) in found
        feasible = _feasible_set(record)
        if feasible is not None:
            feasible_hits += sum(p in feasible for p in plans)
            feasible_total += len(plans)
            coverages.append(len(found & feasible) / len(feasible))
            for k, values in coverages_at.items():
                values.append(coverage_at_k(plans, feasible, k))
    return {
        "num_sampled_scenes": len(sampled),
        "samples_per_scene": sum(len(r["completions"]) for r in sampled) / len(sampled),
        "mean_distinct_plans": sum(distinct_counts) / len(sampled),
        "distinct_plans_histogram": {str(k): v for k, v in sorted(Counter(distinct_counts).items())},
        "feasible_rate": _percent(feasible_hits, feasible_total),
        "feasible_coverage": 100.0 * sum(coverages) / len(coverages) if coverages else None,
        "best_of_k_accuracy": _percent(best_of_k_hits, len(sampled)),
        "feasible_coverage_at": {str(k): 100.0 * sum(v) / len(v) for k, v in coverages_at.items() if v},
    }


def coverage_at_k(plans: Sequence[Any], feasible: set[tuple[str, str]], k: int) -> float:
    """Expected share of `feasible` found by k samples drawn without replacement from `plans` (n >= k samples of one
    scene): `(1/|F|) * sum over p in F of 1 - C(n - c_p, k) / C(n, k)`, c_p the number of samples that answer p. Its
    mean over draws of n samples is exactly the coverage of k samples (the pass@k estimator of Chen et al., 2021,
    for plan sets).

    Example:
        >>> coverage_at_k([("STOP", "STRAIGHT"), ("KEEP", "STRAIGHT"), None, None], {("STOP", "STRAIGHT")}, 2)
        0.5
    """
    n = len(plans)
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of samples ({n}), got {k}.")
    if not feasible:
        raise ValueError("The feasible set is empty.")
    counts = Counter(plans)
    total = math.comb(n, k)
    return math.fsum(1.0 - math.comb(n - counts[p], k) / total for p in feasible) / len(feasible)


def trajectory_metrics(records: Sequence[dict[str, Any]], *, labeller_mode: str = "heading") -> dict[str, Any]:
    """Open-loop trajectory metrics over records whose ground truth carries an expert `trajectory`; `{}` otherwise.

    The predicted waypoints are parsed from the (greedy) completion with `trajectory.parse_trajectory`. L2 at 1/2/3 s,
    ADE and FDE come from `trajectory.l2_errors` (UniAD convention: the error *at* the 1/2/3 s waypoint, not averaged
    up to it as in ST-P3) and are averaged over the scenes whose answer parsed; `trajectory_parse_rate` is the share
    that did, and `trajectory_plausible_rate` the share of parsed trajectories within the physical limits of
    `trajectory.is_plausible`. The meta-actions the predicted waypoints imply (`labelling.label_trajectory` with
    `labeller_mode`, the labeller that labels the data, given the record's `ego_speed`) are scored like stated answers
    under `derived_*`; a missing trajectory is a miss. Unlike the trajectory rewards, evaluation labels implausible
    trajectories too: it measures what the waypoints say, and plausibility is reported on its own.
    `action_consistency_rate` is the share of scenes whose strictly parsed stated answer equals the plan its own
    waypoints imply.
    """
    with_gt = [(r, as_waypoints(r.get("trajectory"))) for r in records]
    with_gt = [(r, expert) for r, expert in with_gt if expert is not None]
    if not with_gt:
        return {}
    errors: list[dict[str, float]] = []
    derived: list[tuple[str, str] | None] = []
    plausible = consistent = 0
    for record, expert in with_gt:
        predicted = parse_trajectory(record["completion"])
        plan = None
        if predicted is not None:
            errors.append(l2_errors(predicted, expert))
            plausible += is_plausible(predicted)
            if record.get("ego_speed") is not None:
                plan = try_label_trajectory(predicted, record["ego_speed"], mode=labeller_mode, dt=TRAJECTORY_DT)
        derived.append(plan)
        consistent += plan is not None and parse_answer_strict(record["completion"]) == plan
    metrics: dict[str, Any] = {
        "trajectory_num_samples": len(with_gt),
        "trajectory_parse_rate": _percent(len(errors), len(with_gt)),
        "trajectory_plausible_rate": _percent(plausible, len(errors)),
    }
    for key in L2_KEYS:
        metrics[key] = sum(e[key] for e in errors) / len(errors) if errors else None
    derived_metrics = meta_action_metrics([_ground_truth(r) for r, _ in with_gt], derived)
    for key in ("planning_accuracy", "speed_accuracy", "path_accuracy", "macro_f1_speed", "macro_f1_path"):
        metrics[f"derived_{key}"] = derived_metrics[key]
    metrics["derived_per_class_f1"] = derived_metrics["per_class_f1"]
    metrics["derived_confusion"] = derived_metrics["confusion"]
    metrics["action_consistency_rate"] = _percent(consistent, len(with_gt))
    metrics["labeller_mode"] = labeller_mode
    return metrics


def compute_metrics(
    records: Sequence[dict[str, Any]], *, labeller_mode: str = "heading", trajectory_mode: bool | None = None
) -> dict[str, Any]:
    """All evaluation metrics of a list of prediction records (the lines of a predictions file).

    A record needs `sample_id`, `completion`, `speed_action`, `path_action`; optional `completions` (K samples),
    `feasible_actions`, `trajectory` and `ego_speed` switch on the multimodal-planning and trajectory metrics.
    `trajectory_mode` says whether the model was asked for waypoints (it changes the format check and turns on the
    trajectory metrics); None detects it from the completions (any `<trajectory>` tag). Percentages are 0-100; a rate
    over an empty set is None.
    """
    if not records:
        raise ValueError("No prediction records to score.")
    for index, record in enumerate(records):
        problem = _record_problem(record)
        if problem:
            sample_id = record.get("sample_id") if isinstance(record, dict) else None
            raise ValueError(f"Record {index} (sample_id={sample_id!r}): {problem}")
    completions = [completion_to_text(r["completion"]) for r in records]
    if trajectory_mode is None:
        trajectory_mode = any("<trajectory>" in c.lower() for c in completions)
    ground_truth = [_ground_truth(r) for r in records]
    parsed = [parse_answer_strict(c) for c in completions]
    total = len(records)
    metrics: dict[str, Any] = {"num_samples": total}
    action_metrics = meta_action_metrics(ground_truth, parsed)
    metrics["planning_accuracy"] = action_metrics.pop("planning_accuracy")
    metrics["speed_accuracy"] = action_metrics.pop("speed_accuracy")
    metrics["path_accuracy"] = action_metrics.pop("path_accuracy")
    metrics["legacy_planning_accuracy"] = _percent(
        sum(legacy_match(c, *g) for c, g in zip(completions, ground_truth)), total
    )
    metrics["format_rate"] = _percent(
        sum(is_well_formatted(c, trajectory_mode=trajectory_mode) for c in completions), total
    )
    metrics["parse_rate"] = _percent(sum(p is not None for p in parsed), total)
    metrics.update(action_metrics)
    metrics["mode"] = "trajectory" if trajectory_mode else "meta_action"
    metrics.update(sampling_metrics(records))
    if trajectory_mode:
        metrics.update(trajectory_metrics(records, labeller_mode=labeller_mode))
    return metrics
