"""The report's PNG plots (matplotlib, headless): confusion matrices, per-class F1, distinct plans, trajectories."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..actions import (
    PATH_ACTIONS,
    SPEED_ACTIONS,
)


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
