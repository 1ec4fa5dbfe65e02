"""Offline evaluation of driving VLMs: generate answers, score them, write a report with plots, compare runs.

Four subcommands of `alphadrive-eval` (also `python -m alphadrive_trl.evaluation`): `generate` runs a checkpoint with
the prompts it was trained on and writes a predictions JSONL (`generate.py`), `score` turns it into `metrics.json`,
`report.md` and plots (`metrics.py`, `report.py`, `plots.py`), `compare` tabulates several scored runs, `curves`
plots training curves from `trainer_state.json` (`curves.py`). Metrics are percentages (0-100); `planning_accuracy`
parses the answer strictly, `legacy_planning_accuracy` is the AlphaDrive paper's substring check.
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

from .cli import build_parser, main
from .curves import CURVE_PANELS, load_log_history, plot_training_curves
from .generate import generate_predictions
from .metrics import (
    L2_KEYS,
    compute_metrics,
    f1_from_counts,
    legacy_match,
    meta_action_metrics,
    sampling_metrics,
    trajectory_metrics,
)
from .plots import plot_confusion, plot_distinct_plans, plot_per_class_f1, plot_trajectory_overlays, project_to_image
from .predictions import metadata_path, read_predictions
from .report import (
    HEADLINE_METRICS,
    METRICS_FILE,
    REPORT_FILE,
    SCORED_FILE,
    compare_runs,
    load_metrics,
    model_display_name,
    render_report,
    score_predictions,
    write_report,
)

__all__ = [
    "CURVE_PANELS",
    "HEADLINE_METRICS",
    "L2_KEYS",
    "METRICS_FILE",
    "REPORT_FILE",
    "SCORED_FILE",
    "build_parser",
    "compare_runs",
    "compute_metrics",
    "f1_from_counts",
    "generate_predictions",
    "legacy_match",
    "load_log_history",
    "load_metrics",
    "main",
    "meta_action_metrics",
    "metadata_path",
    "model_display_name",
    "plot_confusion",
    "plot_distinct_plans",
    "plot_per_class_f1",
    "plot_trajectory_overlays",
    "plot_training_curves",
    "project_to_image",
    "read_predictions",
    "render_report",
    "sampling_metrics",
    "score_predictions",
    "trajectory_metrics",
    "write_report",
]
