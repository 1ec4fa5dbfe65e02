"""`score` and `compare`: metrics, `report.md`, `scored.jsonl` and plots of a predictions file; side-by-side tables."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..actions import (
    AXES,
    AXIS_VOCABULARY,
    completion_to_text,
    parse_answer_strict,
    plan_to_string,
)
from ..files import atomic_write_json, atomic_write_text
from ..trajectory import parse_trajectory
from .generate import _select_split
from .metrics import L2_KEYS, _ground_truth, compute_metrics, legacy_match
from .plots import plot_confusion, plot_distinct_plans, plot_per_class_f1, plot_trajectory_overlays
from .predictions import _read_metadata, read_predictions

logger = logging.getLogger(__name__)


METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
SCORED_FILE = "scored.jsonl"
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


def _fmt(value: Any, unit: str = "%") -> str:
    if value is None:
        return "–"
    if unit == "count":
        return str(int(value))
    if unit == "m":
        return f"{value:.2f}"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _load_front_images(sample_ids: Sequence[str], dataset: str | None, split: str | None) -> dict[str, Any]:
    """Front images of a few samples from the dataset `generate` read (best effort: {} when it can't be loaded)."""
    if not dataset or not sample_ids:
        return {}
    try:
        from ..data import load_driving_dataset

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
            f"best-of-K accuracy {_fmt(metrics['best_of_k_accuracy'])} %."
            + _coverage_at_text(metrics.get("feasible_coverage_at")),
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
        from ..prompts import PROMPT_TEMPLATES
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


def _coverage_at_text(coverage_at: dict[str, float] | None) -> str:
    """` Feasible coverage of fewer samples (unbiased, from all K): 1: 42.1 %, 2: 60.3 %.` or nothing."""
    if not coverage_at:
        return ""
    values = ", ".join(f"{k}: {_fmt(v)} %" for k, v in coverage_at.items())
    return f" Feasible coverage of fewer samples (unbiased estimate from all K): {values}."
