"""Offline evaluation of driving VLMs: generate answers, score them, write a report with plots, compare runs.

Three steps, each a subcommand of `alphadrive-eval` (also `python -m alphadrive_trl.evaluation`):

- `generate` runs a checkpoint on a dataset split with the prompt template and image budget saved next to the
  checkpoint (so evaluation prompts are byte-identical to training prompts) and appends one JSON line per sample to a
  predictions file; it resumes where a previous run stopped.
- `score` turns a predictions file into `metrics.json`, `report.md` and PNG plots.
- `compare` puts the headline metrics of several scored runs side by side in a markdown table.

Metrics are percentages (0-100) unless they are counts or metres. The AlphaDrive paper's planning accuracy is
reproduced twice: `planning_accuracy` parses the answer strictly (`actions.parse_answer_strict`), and
`legacy_planning_accuracy` is the published evaluation code's definition (both ground-truth words occur anywhere in
the completion text, case-sensitive substring search), kept so numbers can be compared with the paper's tables.
`docs/evaluation.md` defines every metric.

Example:
    >>> from alphadrive_trl.evaluation import compute_metrics
    >>> records = [
    ...     {"sample_id": "a", "completion": "<answer> STOP, STRAIGHT </answer>", "speed_action": "STOP",
    ...      "path_action": "STRAIGHT"},
    ...     {"sample_id": "b", "completion": "KEEP or STOP, STRAIGHT", "speed_action": "KEEP",
    ...      "path_action": "STRAIGHT"},
    ... ]
    >>> metrics = compute_metrics(records)
    >>> metrics["planning_accuracy"], metrics["legacy_planning_accuracy"], metrics["parse_rate"]
    (50.0, 100.0, 50.0)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .actions import (
    ALL_PLANS,
    AXES,
    AXIS_VOCABULARY,
    PATH_ACTIONS,
    SPEED_ACTIONS,
    completion_to_text,
    parse_answer_strict,
    parse_plan,
    plan_to_string,
)
from .entrypoint import command
from .files import atomic_write_json, atomic_write_text
from .labelling import try_label_trajectory
from .rewards import is_well_formatted
from .trajectory import TRAJECTORY_DT, as_waypoints, is_plausible, l2_errors, parse_trajectory

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
SCORED_FILE = "scored.jsonl"
L2_KEYS: tuple[str, ...] = ("l2_1s", "l2_2s", "l2_3s", "ade", "fde")
# Headline metrics shown by `compare` (and at the top of the report), in display order, with their unit.
HEADLINE_METRICS: tuple[tuple[str, str], ...] = (
    ("num_samples", "count"),
    ("planning_accuracy", "%"),
    ("legacy_planning_accuracy", "%"),
    ("speed_accuracy", "%"),
    ("path_accuracy", "%"),
    ("macro_f1_speed", "%"),
    ("macro_f1_path", "%"),
    ("safety_critical_error_rate", "%"),
    ("parse_rate", "%"),
    ("format_rate", "%"),
    ("mean_distinct_plans", "plans"),
    ("feasible_rate", "%"),
    ("feasible_coverage", "%"),
    ("best_of_k_accuracy", "%"),
    ("trajectory_parse_rate", "%"),
    ("trajectory_plausible_rate", "%"),
    ("l2_1s", "m"),
    ("l2_2s", "m"),
    ("l2_3s", "m"),
    ("ade", "m"),
    ("fde", "m"),
    ("derived_planning_accuracy", "%"),
)


# --------------------------------------------------------------------------------------------------------------------
# Predictions files
# --------------------------------------------------------------------------------------------------------------------


def metadata_path(predictions_path: str | os.PathLike) -> Path:
    """The sidecar written by `generate` next to a predictions file: `preds.jsonl` -> `preds.meta.json`."""
    path = Path(predictions_path)
    return path.with_name(path.stem + ".meta.json")


def read_predictions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a predictions JSONL file and check every line has what `score` needs.

    Raises `ValueError` naming the line number (and `sample_id`) and the field on the first bad record, and on a
    `sample_id` seen twice (it would be counted twice).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Predictions file not found: {path}")
    records = []
    first_line: dict[str, int] = {}
    with open(path, "rb") as f:
        for line_number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{path}, line {line_number}: not UTF-8 text (byte {raw[err.start]:#04x}); predictions files are "
                    "UTF-8 JSONL, as `generate` writes them."
                ) from err
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {line_number}: not valid JSON ({err.msg}).") from err
            problem = _record_problem(record)
            if problem:
                sample_id = record.get("sample_id") if isinstance(record, dict) else None
                raise ValueError(f"{path}, line {line_number} (sample_id={sample_id!r}): {problem}")
            sample_id = str(record["sample_id"])
            if sample_id in first_line:
                raise ValueError(
                    f"{path}, line {line_number}: sample_id {sample_id!r} is already on line {first_line[sample_id]}; "
                    "each scene must be scored once. Remove the repeat (re-running `generate` on the file drops it)."
                )
            first_line[sample_id] = line_number
            records.append(record)
    if not records:
        raise ValueError(f"{path} holds no predictions.")
    return records


def _record_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "a record must be a JSON object."
    for field_name in ("sample_id", "completion", "speed_action", "path_action"):
        if field_name not in record:
            return f"missing field `{field_name}`."
    if not isinstance(record["completion"], str):
        return "`completion` must be a string."
    for axis in AXES:
        value = record[f"{axis}_action"]
        if value not in AXIS_VOCABULARY[axis]:
            return f"`{axis}_action` is {value!r}, expected one of {', '.join(AXIS_VOCABULARY[axis])}."
    completions = record.get("completions")
    if completions is not None and (
        not isinstance(completions, list) or not all(isinstance(c, str) for c in completions)
    ):
        return "`completions` must be a list of strings."
    feasible = record.get("feasible_actions")
    if feasible is not None and not isinstance(feasible, list):
        return "`feasible_actions` must be a list of 'SPEED, PATH' strings or null."
    return None


def _done_sample_ids(path: Path) -> set[str]:
    """Sample ids already in a predictions file, so a resumed `generate` redoes only what is missing or broken.

    Every valid line is kept wherever it is; a line a crash tore (not JSON, not UTF-8, not a complete prediction) and
    a repeated `sample_id` are dropped with a warning naming their line numbers, and the file is rewritten atomically
    without them.
    """
    if not path.is_file():
        return set()
    done: set[str] = set()
    kept: list[bytes] = []
    broken: list[int] = []
    repeated: list[int] = []
    with open(path, "rb") as f:
        raw_lines = f.read().splitlines()
    for line_number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if record is None or _record_problem(record) is not None:
            broken.append(line_number)
        elif str(record["sample_id"]) in done:
            repeated.append(line_number)
        else:
            done.add(str(record["sample_id"]))
            kept.append(raw)
    if broken or repeated:
        dropped = ", ".join(
            part
            for part in (
                f"broken line(s) {_line_list(broken)}" if broken else "",
                f"repeated sample_id line(s) {_line_list(repeated)}" if repeated else "",
            )
            if part
        )
        logger.warning("%s: dropping %s before resuming; those samples are generated again.", path, dropped)
        atomic_write_text(path, "".join(line.decode("utf-8") + "\n" for line in kept))
    return done


def _line_list(numbers: list[int], limit: int = 10) -> str:
    shown = ", ".join(map(str, numbers[:limit]))
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


# --------------------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------------------


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


# The most dangerous planning error: the expert slows down or stops, the model keeps its speed or speeds up.
SAFETY_CRITICAL_SPEEDS = frozenset({"STOP", "DECELERATE"})
UNSAFE_ANSWERS = frozenset({"ACCELERATE", "KEEP"})


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
        sum(p is not None and p[0] in UNSAFE_ANSWERS for p in must_slow), len(must_slow)
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

    The feasible set of a scene is its `feasible_actions` plus the ground truth; scenes without `feasible_actions`
    are left out of the two feasible metrics (they are None when no scene has the column).
    """
    sampled = [r for r in records if isinstance(r.get("completions"), list) and len(r["completions"]) > 1]
    if not sampled:
        return {}
    distinct_counts, best_of_k_hits = [], 0
    feasible_hits = feasible_total = 0
    coverages = []
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
    return {
        "num_sampled_scenes": len(sampled),
        "samples_per_scene": sum(len(r["completions"]) for r in sampled) / len(sampled),
        "mean_distinct_plans": sum(distinct_counts) / len(sampled),
        "distinct_plans_histogram": {str(k): v for k, v in sorted(Counter(distinct_counts).items())},
        "feasible_rate": _percent(feasible_hits, feasible_total),
        "feasible_coverage": 100.0 * sum(coverages) / len(coverages) if coverages else None,
        "best_of_k_accuracy": _percent(best_of_k_hits, len(sampled)),
    }


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


# --------------------------------------------------------------------------------------------------------------------
# Report and plots
# --------------------------------------------------------------------------------------------------------------------


def _fmt(value: Any, unit: str = "%") -> str:
    if value is None:
        return "–"
    if unit == "count":
        return str(int(value))
    if unit == "m":
        return f"{value:.2f}"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _new_figure(width: float, height: float):
    # The object-oriented API draws with Agg without touching pyplot's global backend (safe in notebooks/servers).
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def plot_confusion(confusion: dict[str, dict[str, int]], title: str, path: Path) -> Path:
    """Heat map of a confusion table `{gt: {pred: count}}` (rows: ground truth, columns: prediction + UNPARSED)."""
    rows = list(confusion)
    columns = list(next(iter(confusion.values())))
    counts = [[confusion[r][c] for c in columns] for r in rows]
    fig = _new_figure(1.3 + 1.2 * len(columns), 1.2 + 0.6 * len(rows))
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues", aspect="auto")
    peak = max((max(row) for row in counts), default=0)
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    ax.set_xticks(range(len(columns)), [c.replace("_", "_\n") for c in columns], fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.savefig(path)
    return path


def plot_per_class_f1(per_class_f1: dict[str, float], support: dict[str, int], path: Path) -> Path:
    """Bar chart of the 9 per-class F1 scores, SPEED in one colour and PATH in another, support under each bar."""
    words = [*SPEED_ACTIONS, *PATH_ACTIONS]
    fig = _new_figure(9, 4)
    ax = fig.add_subplot()
    colours = ["tab:blue"] * len(SPEED_ACTIONS) + ["tab:orange"] * len(PATH_ACTIONS)
    bars = ax.bar(range(len(words)), [per_class_f1[w] for w in words], color=colours)
    for bar, word in zip(bars, words):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 1, f"{per_class_f1[word]:.1f}", ha="center")
    ax.set_xticks(range(len(words)), [f"{w}\n(n={support.get(w, 0)})" for w in words], fontsize=7)
    ax.set_ylim(0, 110)
    ax.set_ylabel("F1 (%)")
    ax.set_title("Per-class F1 (one-vs-rest per axis; blue: SPEED, orange: PATH)")
    fig.savefig(path)
    return path


def plot_distinct_plans(histogram: dict[str, int], samples_per_scene: float, path: Path) -> Path:
    """Bar chart: how many scenes got 0, 1, ..., K distinct valid plans among their K samples."""
    top = max(int(round(samples_per_scene)), *(int(k) for k in histogram))
    counts = [histogram.get(str(k), 0) for k in range(top + 1)]
    fig = _new_figure(6, 3.5)
    ax = fig.add_subplot()
    ax.bar(range(top + 1), counts, color="tab:green")
    ax.set_xticks(range(top + 1))
    ax.set_xlabel(f"distinct valid plans among the {samples_per_scene:g} samples of a scene")
    ax.set_ylabel("scenes")
    ax.set_title("Multimodal planning: distinct plans per scene")
    fig.savefig(path)
    return path


def project_to_image(
    waypoints,
    width: int,
    height: int,
    *,
    camera_height: float = 1.4,
    horizontal_fov_deg: float = 90.0,
    horizon: float = 0.4,
):
    """Project ego-frame ground points (x forward, y left, metres) into a front image with a flat-ground pinhole model.

    The camera sits `camera_height` metres above the road, looks straight ahead, has `horizontal_fov_deg` of view and
    its horizon at `horizon` × image height. The defaults are the camera of the embedded synthetic scenes (exact
    there); for other sources, without calibration, it is an approximation for visualisation only.
    Returns `(u, v)` pixel arrays; points at or behind the camera come back as NaN.
    """
    import numpy as np

    points = np.asarray(waypoints, dtype=float).reshape(-1, 2)
    focal = (width / 2) / math.tan(math.radians(horizontal_fov_deg) / 2)
    x = np.where(points[:, 0] > 0.1, points[:, 0], np.nan)
    u = width / 2 - focal * points[:, 1] / x
    v = horizon * height + focal * camera_height / x
    return u, v


def plot_trajectory_overlays(samples: Sequence[dict[str, Any]], path: Path, **projection: Any) -> Path:
    """For a few samples: predicted (red) and expert (green) waypoints on the front image, and a bird's-eye view.

    Each sample is `{"sample_id", "expert", "predicted" (array or None), "image" (PIL or None)}`.
    """
    import numpy as np

    fig = _new_figure(8, 3.2 * len(samples))
    axes = fig.subplots(len(samples), 2, squeeze=False)
    for (image_ax, bev_ax), sample in zip(axes, samples):
        expert = np.asarray(sample["expert"], dtype=float)
        predicted = sample["predicted"]
        image = sample.get("image")
        if image is not None:
            image_ax.imshow(image)
            width, height = image.size
            for points, colour, label in ((expert, "tab:green", "expert"), (predicted, "tab:red", "predicted")):
                if points is None:
                    continue
                u, v = project_to_image(points, width, height, **projection)
                image_ax.plot(u, v, "o-", color=colour, markersize=4, label=label)
            image_ax.set_xlim(0, width)
            image_ax.set_ylim(height, 0)
        else:
            image_ax.text(0.5, 0.5, "front image not available", ha="center", va="center")
        image_ax.set_axis_off()
        image_ax.set_title(sample["sample_id"], fontsize=9)
        # Bird's-eye view: x forward points up, y left points left.
        bev_ax.plot(-expert[:, 1], expert[:, 0], "o-", color="tab:green", label="expert")
        if predicted is not None:
            predicted = np.asarray(predicted, dtype=float)
            bev_ax.plot(-predicted[:, 1], predicted[:, 0], "o-", color="tab:red", label="predicted")
        else:
            bev_ax.text(0.5, 0.9, "no parsable trajectory", transform=bev_ax.transAxes, ha="center")
        bev_ax.plot([0], [0], "ks", label="ego")
        bev_ax.set_xlabel("lateral (m, right +)")
        bev_ax.set_ylabel("forward (m)")
        bev_ax.set_aspect("equal", adjustable="datalim")
        bev_ax.grid(alpha=0.3)
        bev_ax.legend(fontsize=7, loc="lower right")
    fig.savefig(path)
    return path


def _load_front_images(sample_ids: Sequence[str], dataset: str | None, split: str | None) -> dict[str, Any]:
    """Front images of a few samples from the dataset `generate` read (best effort: {} when it can't be loaded)."""
    if not dataset or not sample_ids:
        return {}
    try:
        from .data import load_driving_dataset

        data = _select_split(load_driving_dataset(dataset, split=split, validate=False), split or "test")
        wanted = set(sample_ids)
        indices = [i for i, sid in enumerate(data["sample_id"]) if sid in wanted]
        return {row["sample_id"]: row["images"][0] for row in data.select(indices)}
    except Exception as err:  # the overlay is a nicety; the metrics must still be written
        logger.warning("Could not load front images from %s (%s); plotting bird's-eye views only.", dataset, err)
        return {}


def write_report(
    metrics: dict[str, Any],
    records: Sequence[dict[str, Any]],
    output_dir: str | os.PathLike,
    *,
    dataset: str | None = None,
    split: str | None = None,
    num_overlays: int = 4,
    title: str | None = None,
) -> Path:
    """Write `metrics.json`, `report.md`, per-sample `scored.jsonl` and the PNG plots into `output_dir`.

    `dataset`/`split` locate front images for the trajectory overlay (default: what the predictions' `.meta.json`
    sidecar names, when `score` is used). Returns the report path.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output_dir / METRICS_FILE, metrics)

    plots: dict[str, str] = {}
    for axis in AXES:
        name = f"confusion_{axis}.png"
        plot_confusion(metrics["confusion"][axis], f"{axis.upper()} confusion (strict parse)", output_dir / name)
        plots[f"confusion_{axis}"] = name
    plot_per_class_f1(metrics["per_class_f1"], metrics["class_support"], output_dir / "per_class_f1.png")
    plots["per_class_f1"] = "per_class_f1.png"
    if metrics.get("distinct_plans_histogram"):
        plot_distinct_plans(
            metrics["distinct_plans_histogram"], metrics["samples_per_scene"], output_dir / "distinct_plans.png"
        )
        plots["distinct_plans"] = "distinct_plans.png"
    if metrics.get("trajectory_num_samples") and num_overlays > 0:
        overlay_samples = _overlay_samples(records, num_overlays)
        images = _load_front_images([s["sample_id"] for s in overlay_samples], dataset, split)
        for sample in overlay_samples:
            sample["image"] = images.get(sample["sample_id"])
        plot_trajectory_overlays(overlay_samples, output_dir / "trajectory_overlay.png")
        plots["trajectory_overlay"] = "trajectory_overlay.png"

    scored_lines = []
    for record in records:
        plan = parse_answer_strict(completion_to_text(record["completion"]))
        scored_lines.append(
            json.dumps(
                {
                    "sample_id": record["sample_id"],
                    "ground_truth": plan_to_string(*_ground_truth(record)),
                    "predicted": plan_to_string(*plan) if plan else None,
                    "correct": plan == _ground_truth(record),
                    "legacy_correct": legacy_match(record["completion"], *_ground_truth(record)),
                }
            )
        )
    atomic_write_text(output_dir / SCORED_FILE, "\n".join(scored_lines) + "\n")

    report_path = output_dir / REPORT_FILE
    atomic_write_text(report_path, render_report(metrics, records, plots, title=title))
    return report_path


def _overlay_samples(records: Sequence[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    samples = []
    for record in records:
        if record.get("trajectory") is None:
            continue
        samples.append(
            {
                "sample_id": str(record["sample_id"]),
                "expert": record["trajectory"],
                "predicted": parse_trajectory(record["completion"]),
            }
        )
        if len(samples) == count:
            break
    return samples


def render_report(
    metrics: dict[str, Any],
    records: Sequence[dict[str, Any]],
    plots: dict[str, str],
    *,
    title: str | None = None,
) -> str:
    """The markdown report: headline table, per-class F1, combinations, multimodal planning, trajectory, failures."""
    lines = [f"# {title or 'Driving evaluation report'}", ""]
    lines += [
        f"{metrics['num_samples']} samples. Percentages are 0-100. *Strict* metrics parse the last `<answer>` block "
        "(exactly one SPEED and one PATH word); *legacy* is the published AlphaDrive substring check. See "
        "docs/evaluation.md for every definition.",
        "",
        "## Headline",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key, unit in HEADLINE_METRICS:
        if key in metrics and metrics[key] is not None:
            suffix = "" if unit in ("%", "count") else f" ({unit})"
            lines.append(f"| {key}{suffix} | {_fmt(metrics[key], unit)} |")
    gap = (metrics["legacy_planning_accuracy"] or 0) - (metrics["planning_accuracy"] or 0)
    lines += [
        "",
        f"Legacy minus strict planning accuracy: {gap:.2f} points (answers the substring check credits although "
        "they do not parse to exactly the ground-truth pair: hedges listing several words, words in the reasoning, "
        "broken tags).",
        "",
        "## Per-class F1 (strict, one-vs-rest per axis)",
        "",
        "| axis | class | F1 | support |",
        "|---|---|---|---|",
    ]
    for axis in AXES:
        for word in AXIS_VOCABULARY[axis]:
            lines.append(
                f"| {axis} | {word} | {metrics['per_class_f1'][word]:.2f} | {metrics['class_support'][word]} |"
            )
    lines += ["", f"![per-class F1]({plots['per_class_f1']})", ""]
    lines += [
        "## Confusion matrices",
        "",
        "Rows are the ground truth, columns the strictly parsed prediction (`UNPARSED`: no valid answer).",
        "",
        f"![SPEED confusion]({plots['confusion_speed']}) ![PATH confusion]({plots['confusion_path']})",
        "",
        "## Accuracy per SPEED × PATH combination",
        "",
        "| plan | support | planning accuracy |",
        "|---|---|---|",
    ]
    for plan, support in metrics["combination_support"].items():
        if support:
            lines.append(f"| {plan} | {support} | {_fmt(metrics['combination_accuracy'][plan])} |")
    absent = [plan for plan, support in metrics["combination_support"].items() if not support]
    if absent:
        lines += ["", f"Not in the data ({len(absent)}): {'; '.join(f'`{plan}`' for plan in absent)}."]
    if "mean_distinct_plans" in metrics:
        lines += [
            "",
            "## Multimodal planning (K sampled answers per scene)",
            "",
            f"{metrics['num_sampled_scenes']} scenes × {metrics['samples_per_scene']:g} samples. "
            f"Mean distinct valid plans per scene: {metrics['mean_distinct_plans']:.2f}; feasible rate "
            f"{_fmt(metrics['feasible_rate'])} %; feasible coverage {_fmt(metrics['feasible_coverage'])} %; "
            f"best-of-K accuracy {_fmt(metrics['best_of_k_accuracy'])} %.",
            "",
            "More distinct plans with a high feasible rate means the model proposes several *acceptable* plans "
            "(the multimodal planning the paper reports after RL); more distinct plans with a falling feasible rate "
            "means it is guessing.",
            "",
            f"![distinct plans]({plots['distinct_plans']})",
        ]
    if "trajectory_num_samples" in metrics:
        lines += [
            "",
            "## Trajectory (open loop)",
            "",
            f"{metrics['trajectory_num_samples']} scenes with an expert trajectory; "
            f"{_fmt(metrics['trajectory_parse_rate'])} % of answers held a parsable trajectory (L2 averages cover "
            f"those), {_fmt(metrics['trajectory_plausible_rate'])} % of which are physically plausible.",
            "",
            "| L2 1 s (m) | L2 2 s (m) | L2 3 s (m) | ADE (m) | FDE (m) |",
            "|---|---|---|---|---|",
            "| " + " | ".join(_fmt(metrics[k], "m") for k in L2_KEYS) + " |",
            "",
            f"Meta-actions derived from the predicted waypoints (labeller `{metrics['labeller_mode']}`): planning "
            f"accuracy {_fmt(metrics['derived_planning_accuracy'])} %, speed {_fmt(metrics['derived_speed_accuracy'])}"
            f" %, path {_fmt(metrics['derived_path_accuracy'])} %, macro F1 speed "
            f"{_fmt(metrics['derived_macro_f1_speed'])} / path {_fmt(metrics['derived_macro_f1_path'])}. Stated "
            f"answer agrees with its own waypoints in {_fmt(metrics['action_consistency_rate'])} % of scenes.",
        ]
        if "trajectory_overlay" in plots:
            lines += [
                "",
                "Green: expert, red: predicted (front image: flat-ground pinhole projection, approximate; right: "
                "bird's-eye view in metres).",
                "",
                f"![trajectory overlay]({plots['trajectory_overlay']})",
            ]
    failures = []
    for record in records:
        plan = parse_answer_strict(completion_to_text(record["completion"]))
        if plan != _ground_truth(record):
            failures.append((record, plan))
    if failures:
        lines += ["", "## First failures", "", "| sample_id | ground truth | strict parse | completion (end) |"]
        lines.append("|---|---|---|---|")
        for record, plan in failures[:5]:
            tail = " ".join(record["completion"].split())[-120:].replace("|", "\\|")
            lines.append(
                f"| {record['sample_id']} | {plan_to_string(*_ground_truth(record))} | "
                f"{plan_to_string(*plan) if plan else 'UNPARSED'} | `{tail}` |"
            )
        lines += ["", f"All per-sample results: `{SCORED_FILE}`."]
    return "\n".join(lines) + "\n"


def score_predictions(
    predictions: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    dataset: str | None = None,
    split: str | None = None,
    labeller_mode: str = "heading",
    trajectory_mode: bool | None = None,
    num_overlays: int = 4,
) -> dict[str, Any]:
    """Read a predictions file, compute the metrics and write the report; returns the metrics."""
    records = read_predictions(predictions)
    meta = _read_metadata(predictions)
    if trajectory_mode is None and meta.get("prompt_template"):
        trajectory_mode = _is_trajectory_template(meta["prompt_template"])
    metrics = compute_metrics(records, labeller_mode=labeller_mode, trajectory_mode=trajectory_mode)
    write_report(
        metrics,
        records,
        output_dir,
        dataset=dataset or meta.get("dataset"),
        split=split or meta.get("split"),
        num_overlays=num_overlays,
        title=f"Driving evaluation: {model_display_name(meta['model'])}" if meta.get("model") else None,
    )
    return metrics


def _is_trajectory_template(name: str) -> bool | None:
    """Whether a prompt template asks for waypoints (None when it is unknown here: detect from the completions)."""
    try:
        from .prompts import PROMPT_TEMPLATES
    except ImportError:
        return None
    template = PROMPT_TEMPLATES.get(name)
    return None if template is None else bool(template.with_trajectory)


def model_display_name(model: str) -> str:
    """A short name for a model in report titles: the directory name of a local model (with its run directory for a
    `checkpoint-N`), or the Hub id as it is.

    Example:
        >>> model_display_name("/home/me/alphadrive/outputs/demo-grpo/checkpoint-100")
        'demo-grpo/checkpoint-100'
        >>> model_display_name("Qwen/Qwen2-VL-2B-Instruct")
        'Qwen/Qwen2-VL-2B-Instruct'
    """
    path = Path(model)
    if not path.is_absolute():
        return model
    if path.name.startswith("checkpoint-") and path.parent.name:
        return f"{path.parent.name}/{path.name}"
    return path.name or model


def _read_metadata(predictions: str | os.PathLike) -> dict[str, Any]:
    path = metadata_path(predictions)
    if not path.is_file():
        return {}
    with open(path) as f:
        return json.load(f)


# --------------------------------------------------------------------------------------------------------------------
# Compare
# --------------------------------------------------------------------------------------------------------------------


def load_metrics(run: str | os.PathLike) -> dict[str, Any]:
    """`metrics.json` of a scored run (a directory written by `score`, or the JSON file itself)."""
    path = Path(run)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No {METRICS_FILE} at {path}; run `alphadrive-eval score` first.")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as err:  # not JSON, or not UTF-8
        raise ValueError(
            f"{path}: not a valid {METRICS_FILE} ({' '.join(str(err).split())}); run `alphadrive-eval score` again to "
            "rewrite it."
        ) from err


def compare_runs(runs: Sequence[str | os.PathLike], names: Sequence[str] | None = None) -> str:
    """A markdown table with one column per run and one row per headline metric present in any run.

    With exactly two runs a last column gives the difference (second minus first).

    Example:
        `compare_runs(["outputs/demo-eval/sft", "outputs/demo-eval/grpo"], names=["SFT", "SFT+GRPO"])`
    """
    if not runs:
        raise ValueError("Give at least one scored run directory to compare.")
    names = list(names) if names else [Path(r).name or str(r) for r in runs]
    if len(names) != len(runs):
        raise ValueError(f"{len(runs)} runs but {len(names)} names; give one name per run.")
    all_metrics = [load_metrics(r) for r in runs]
    with_delta = len(runs) == 2
    header = ["metric", *names] + (["Δ"] if with_delta else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, unit in HEADLINE_METRICS:
        values = [m.get(key) for m in all_metrics]
        if all(v is None for v in values):
            continue
        label = key if unit in ("%", "count") else f"{key} ({unit})"
        cells = [label, *(_fmt(v, unit) for v in values)]
        if with_delta:
            first, second = values
            cells.append(_fmt(second - first, unit) if None not in values else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------------
# Generate
# --------------------------------------------------------------------------------------------------------------------


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _select_split(data: Any, split: str) -> Any:
    """`load_driving_dataset` returns a `Dataset` for a named split, a `DatasetDict` otherwise."""
    from datasets import DatasetDict

    if isinstance(data, DatasetDict):
        if split not in data:
            raise ValueError(f"Split {split!r} not in the dataset; available: {', '.join(data)}.")
        return data[split]
    return data


def generate_predictions(
    model: str,
    dataset: str,
    output: str | os.PathLike,
    *,
    split: str = "test",
    num_samples: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    greedy: bool = True,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    max_samples: int | None = None,
    prompt_template: str | None = None,
    max_images: int | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    max_image_tokens: int | None = None,
    use_vllm: bool = False,
    seed: int = 0,
    show_progress: bool = True,
) -> Path:
    """Run `model` on `dataset[split]` and append one prediction record per sample to `output` (JSONL).

    Prompts are built exactly as in training: `prompts.build_prompt` with the template and image budget saved next to
    the checkpoint (`configs.load_driving_config`); the keyword arguments override them. With `greedy`, `completion`
    is the greedy answer; with `num_samples` K > 1, `completions` also holds K answers sampled at `temperature`
    (without `greedy`, `completion` is the first sample). Samples whose `sample_id` is already in `output` are
    skipped, so an interrupted run resumes; every batch is flushed as soon as it is done. A `<output stem>.meta.json`
    sidecar records the settings (and `score` reads the dataset location from it for the trajectory overlay).

    Returns the predictions path.
    """
    if num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {num_samples}.")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}.")
    if not greedy and temperature <= 0:
        raise ValueError("Sampling without greedy decoding needs --temperature > 0.")
    if num_samples > 1 and temperature <= 0:
        raise ValueError(f"--num-samples {num_samples} samples answers, which needs --temperature > 0.")
    if use_vllm:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ImportError(
                "--use-vllm needs vLLM, which is not installed: `pip install 'alphadrive-trl[vllm]'` (GPU only), or "
                "drop --use-vllm to generate with transformers."
            )

    from .configs import load_driving_config
    from .data import load_driving_dataset
    from .entrypoint import check_model_path

    check_model_path(model, "--model")
    saved = load_driving_config(model) if Path(model).is_dir() else {}
    settings = {
        "prompt_template": prompt_template or saved.get("prompt_template") or "default",
        "max_images": max_images if max_images is not None else saved.get("max_images"),
        "min_pixels": min_pixels if min_pixels is not None else saved.get("min_pixels"),
        "max_pixels": max_pixels if max_pixels is not None else saved.get("max_pixels"),
        "max_image_tokens": max_image_tokens if max_image_tokens is not None else saved.get("max_image_tokens"),
    }
    output = Path(output)
    meta = {
        "model": str(Path(model).resolve()) if Path(model).exists() else model,
        "dataset": str(Path(dataset).resolve()) if Path(dataset).exists() else dataset,
        "split": split,
        **settings,
        "num_samples": num_samples,
        "greedy": greedy,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "max_new_tokens": max_new_tokens,
        "backend": "vllm" if use_vllm else "transformers",
        "seed": seed,
    }
    _check_resume_metadata(output, meta)

    data = _select_split(load_driving_dataset(dataset, split=split), split)
    if max_samples is not None:
        data = data.select(range(min(max_samples, len(data))))
    done = _done_sample_ids(output)
    todo = [i for i, sid in enumerate(data["sample_id"]) if str(sid) not in done]
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(metadata_path(output), meta)
    if not todo:
        logger.info("All %d samples already in %s; nothing to generate.", len(data), output)
        return output
    if done:
        logger.info("Resuming: %d samples done, %d to go.", len(done), len(todo))

    generator = _VLLMGenerator if use_vllm else _TransformersGenerator
    runner = generator(model, settings, meta)
    from tqdm.auto import tqdm

    progress = tqdm(total=len(todo), desc="generate", unit="sample", disable=not show_progress)
    with open(output, "a") as f:
        for batch_indices in _chunks(todo, batch_size):
            rows = [data[i] for i in batch_indices]
            greedy_texts, sampled_texts = runner(rows)
            for row, greedy_text, samples in zip(rows, greedy_texts, sampled_texts):
                f.write(json.dumps(_prediction_record(row, greedy_text, samples)) + "\n")
            f.flush()
            progress.update(len(rows))
    progress.close()
    return output


def _check_resume_metadata(output: Path, meta: dict[str, Any]) -> None:
    """Refuse to append to a predictions file made with other settings (mixing them would corrupt the metrics)."""
    previous = metadata_path(output)
    if not output.is_file() or not previous.is_file():
        return
    with open(previous) as f:
        old = json.load(f)
    keys = ("model", "dataset", "split", "prompt_template", "num_samples", "greedy", "temperature", "max_new_tokens")
    changed = [k for k in keys if k in old and old[k] != meta[k]]
    if changed:
        details = ", ".join(f"{k}: {old[k]!r} -> {meta[k]!r}" for k in changed)
        raise ValueError(
            f"{output} was generated with other settings ({details}); resuming would mix them. Use another --output "
            "or delete the file."
        )


def _prediction_record(row: dict[str, Any], greedy_text: str, samples: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "sample_id": str(row["sample_id"]),
        "completion": greedy_text if greedy_text is not None else samples[0],
    }
    if len(samples) > 1:
        record["completions"] = samples
    record["speed_action"] = row["speed_action"]
    record["path_action"] = row["path_action"]
    if "feasible_actions" in row:
        record["feasible_actions"] = row["feasible_actions"]
    # Datasets store floats as float32: round so 15.6 is written 15.6, not 15.600000381469727.
    if row.get("trajectory") is not None:
        record["trajectory"] = [[round(float(v), 4) for v in point] for point in row["trajectory"]]
    if row.get("ego_speed") is not None:
        record["ego_speed"] = round(float(row["ego_speed"]), 4)
    return record


class _TransformersGenerator:
    """Batched `model.generate` with left padding (`modeling.generate_answers`' inputs); returns (greedy texts or
    Nones, per-row lists of K samples)."""

    def __init__(self, model_path: str, settings: dict[str, Any], meta: dict[str, Any]):
        import torch  # heavy: `score` and `compare` run without it

        from .modeling import load_checkpoint

        checkpoint = load_checkpoint(model_path, image_budget=settings)
        self.model, self.processor, self.device = checkpoint.model, checkpoint.processor, checkpoint.device
        self.settings = settings
        self.meta = meta
        torch.manual_seed(meta["seed"])

    def _inputs(self, rows: list[dict[str, Any]]):
        from .modeling import generation_example, generation_inputs

        template, max_images = self.settings["prompt_template"], self.settings["max_images"]
        examples = [generation_example(row, template, max_images) for row in rows]
        return generation_inputs(self.processor, examples, self.device)

    def _generate(self, inputs, **generation_kwargs) -> list[str]:
        from .modeling import generate_from_inputs

        texts = generate_from_inputs(
            self.model, self.processor, inputs, max_new_tokens=self.meta["max_new_tokens"], **generation_kwargs
        )
        return [text.strip() for text in texts]

    def __call__(self, rows: list[dict[str, Any]]) -> tuple[list[str | None], list[list[str]]]:
        inputs = self._inputs(rows)
        k = self.meta["num_samples"]
        greedy = self._generate(inputs, do_sample=False) if self.meta["greedy"] else [None] * len(rows)
        if k == 1 and self.meta["greedy"]:
            return greedy, [[] for _ in rows]
        # Checkpoints such as Qwen2-VL-Instruct ship top_k=1/top_p=0.001, which would make "sampling" greedy: set
        # the nucleus explicitly.
        sampled = self._generate(
            inputs,
            do_sample=True,
            temperature=self.meta["temperature"],
            top_p=self.meta["top_p"],
            top_k=self.meta["top_k"] or None,
            num_return_sequences=k,
        )
        return greedy, [sampled[i * k : (i + 1) * k] for i in range(len(rows))]


class _VLLMGenerator:
    """The same prompts through vLLM (`pip install 'alphadrive-trl[vllm]'`, GPU)."""

    def __init__(self, model_path: str, settings: dict[str, Any], meta: dict[str, Any]):
        from transformers import AutoProcessor
        from vllm import LLM

        self.processor = AutoProcessor.from_pretrained(model_path)
        mm_kwargs = {k: settings[k] for k in ("min_pixels", "max_pixels") if settings[k] is not None}
        self.llm = LLM(
            model=model_path,
            seed=meta["seed"],
            limit_mm_per_prompt={"image": settings["max_images"] or 8},
            mm_processor_kwargs=mm_kwargs or None,
        )
        self.settings = settings
        self.meta = meta

    def __call__(self, rows: list[dict[str, Any]]) -> tuple[list[str | None], list[list[str]]]:
        from vllm import SamplingParams

        from .modeling import generation_example

        requests = []
        for row in rows:
            example = generation_example(row, self.settings["prompt_template"], self.settings["max_images"])
            text = self.processor.apply_chat_template(example["prompt"], add_generation_prompt=True, tokenize=False)
            requests.append({"prompt": text, "multi_modal_data": {"image": example["images"]}})
        max_tokens = self.meta["max_new_tokens"]
        greedy: list[str | None] = [None] * len(rows)
        if self.meta["greedy"]:
            outputs = self.llm.generate(requests, SamplingParams(temperature=0.0, max_tokens=max_tokens))
            greedy = [o.outputs[0].text.strip() for o in outputs]
        k = self.meta["num_samples"]
        if k == 1 and self.meta["greedy"]:
            return greedy, [[] for _ in rows]
        params = SamplingParams(
            n=k,
            temperature=self.meta["temperature"],
            top_p=self.meta["top_p"],
            top_k=self.meta["top_k"] or -1,
            max_tokens=max_tokens,
        )
        outputs = self.llm.generate(requests, params)
        return greedy, [[c.text.strip() for c in o.outputs] for o in outputs]


# --------------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------------


def _print_headline(metrics: dict[str, Any]) -> None:
    for key, unit in HEADLINE_METRICS:
        if metrics.get(key) is not None:
            print(f"  {key:<28} {_fmt(metrics[key], unit)}{'' if unit in ('%', 'count') else ' ' + unit}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alphadrive-eval",
        description="Evaluate driving VLMs: `generate` answers, `score` them into metrics + report, `compare` runs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser(
        "generate",
        help="Run a checkpoint on a dataset split and write predictions (JSONL, resumable).",
        description="Run a checkpoint on a dataset split with the prompt template and image budget saved next to "
        "the checkpoint, and append one JSON line per sample to --output. Re-running skips sample_ids already there.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    gen.add_argument("--model", required=True, help="Checkpoint directory (or Hub id in the local cache).")
    gen.add_argument("--dataset", required=True, help="Dataset: save_to_disk dir, parquet/JSONL file(s) or Hub name.")
    gen.add_argument("--split", default="test", help="Dataset split to evaluate.")
    gen.add_argument("--output", required=True, help="Predictions JSONL file (appended to when it exists).")
    gen.add_argument(
        "--num-samples",
        type=int,
        default=1,
        help="K. With K > 1 each line also holds K answers sampled at --temperature (multimodal-planning metrics).",
    )
    gen.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature of the K samples.")
    gen.add_argument("--top-p", type=float, default=1.0, help="Nucleus sampling threshold of the K samples.")
    gen.add_argument("--top-k", type=int, default=0, help="Top-k of the K samples (0: off).")
    gen.add_argument(
        "--no-greedy",
        dest="greedy",
        action="store_false",
        help="Skip the greedy answer; `completion` is then the first sample.",
    )
    gen.add_argument("--batch-size", type=int, default=8, help="Prompts per generate call.")
    gen.add_argument("--max-new-tokens", type=int, default=256, help="Generation length limit.")
    gen.add_argument("--max-samples", type=int, default=None, help="Evaluate only the first M samples of the split.")
    gen.add_argument("--prompt-template", default=None, help="Override the template saved with the checkpoint.")
    gen.add_argument("--max-images", type=int, default=None, help="Override the saved images-per-sample limit.")
    gen.add_argument("--min-pixels", type=int, default=None, help="Override the saved per-image min_pixels.")
    gen.add_argument("--max-pixels", type=int, default=None, help="Override the saved per-image max_pixels.")
    gen.add_argument(
        "--max-image-tokens", type=int, default=None, help="Override the saved visual tokens per image (any family)."
    )
    gen.add_argument("--use-vllm", action="store_true", help="Generate with vLLM (must be installed; GPU).")
    gen.add_argument("--seed", type=int, default=0, help="Random seed of the sampling.")

    score = sub.add_parser(
        "score",
        help="Compute metrics.json, report.md and plots from a predictions file.",
        description="Score a predictions file: metrics.json (percentages 0-100), report.md, scored.jsonl and PNG "
        "plots in --output-dir.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    score.add_argument("--predictions", required=True, help="Predictions JSONL written by `generate`.")
    score.add_argument("--output-dir", required=True, help="Where to write the metrics, report and plots.")
    score.add_argument(
        "--dataset",
        default=None,
        help="Dataset holding the front images for the trajectory overlay (default: the one in the .meta.json).",
    )
    score.add_argument("--split", default=None, help="Split of --dataset (default: the one in the .meta.json).")
    score.add_argument(
        "--labeller-mode",
        default="senna",
        choices=("senna", "heading"),
        help="Labeller that derives meta-actions from predicted trajectories (use the one that labelled the data).",
    )
    score.add_argument("--num-overlays", type=int, default=4, help="Samples in the trajectory overlay plot.")

    compare = sub.add_parser(
        "compare",
        help="Side-by-side markdown table of the headline metrics of several scored runs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    compare.add_argument("runs", nargs="+", help="Directories written by `score` (or their metrics.json).")
    compare.add_argument("--names", nargs="+", default=None, help="Column names, one per run.")
    compare.add_argument("--output", default=None, help="Also write the table to this markdown file.")
    return parser


@command("alphadrive-eval")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "generate":
            path = generate_predictions(
                args.model,
                args.dataset,
                args.output,
                split=args.split,
                num_samples=args.num_samples,
                temperature=args.temperature,
                top_p=args.top_p,
                top_k=args.top_k,
                greedy=args.greedy,
                batch_size=args.batch_size,
                max_new_tokens=args.max_new_tokens,
                max_samples=args.max_samples,
                prompt_template=args.prompt_template,
                max_images=args.max_images,
                min_pixels=args.min_pixels,
                max_pixels=args.max_pixels,
                max_image_tokens=args.max_image_tokens,
                use_vllm=args.use_vllm,
                seed=args.seed,
            )
            print(f"Predictions: {path}")
        elif args.command == "score":
            metrics = score_predictions(
                args.predictions,
                args.output_dir,
                dataset=args.dataset,
                split=args.split,
                labeller_mode=args.labeller_mode,
                num_overlays=args.num_overlays,
            )
            print(f"Report: {Path(args.output_dir) / REPORT_FILE}")
            _print_headline(metrics)
        else:
            table = compare_runs(args.runs, args.names)
            print(table, end="")
            if args.output:
                atomic_write_text(Path(args.output), table)
    except (ValueError, FileNotFoundError, ImportError) as err:
        parser.exit(2, f"alphadrive-eval {args.command}: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
