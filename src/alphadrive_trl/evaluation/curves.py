"""Training curves of SFT and GRPO runs, read from the `trainer_state.json` every Trainer writes (no tracker needed).

`alphadrive-eval curves outputs/demo-sft outputs/demo-grpo --names SFT GRPO --output curves.png` draws one panel per
metric that some run logged: the SFT loss and its in-training greedy accuracy, and for GRPO the mean reward, the
planning accuracy of the sampled answers, and the KL to the reference model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .plots import _new_figure

# (logged key, panel title, factor to the plotted unit, smoothed). GRPO's `loss` is a surrogate whose value says
# little, so the loss panel shows runs without a `reward` (SFT) only. The GRPO values are means over a few noisy
# groups, so they get a running mean on top; the SFT loss is smooth already and a trailing mean would only lag it.
CURVE_PANELS: tuple[tuple[str, str, float, bool], ...] = (
    ("loss", "SFT: training loss", 1.0, False),
    ("eval_planning_accuracy", "SFT: greedy planning accuracy, validation (%)", 100.0, False),
    ("reward", "GRPO: mean reward of the sampled answers", 1.0, True),
    ("driving/plan_accuracy", "GRPO: planning accuracy of the sampled answers (%)", 100.0, True),
    ("kl", "GRPO: KL to the reference model", 1.0, True),
)


def load_log_history(run: str | Path) -> list[dict[str, Any]]:
    """The `log_history` of a run: `RUN/trainer_state.json`, else that of its latest `checkpoint-N`, or `RUN` itself
    when it is the JSON file.

    Example:
        >>> load_log_history("outputs/demo-grpo")[0]["step"]  # doctest: +SKIP
        20
    """
    path = Path(run)
    if path.is_dir():
        checkpoints = [p for p in path.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
        newest_first = sorted(checkpoints, key=lambda p: int(p.name.split("-")[1]), reverse=True)
        found = [d / "trainer_state.json" for d in (path, *newest_first) if (d / "trainer_state.json").is_file()]
        if not found:
            raise FileNotFoundError(
                f"No trainer_state.json in {path} or its checkpoint-* folders: pass an output_dir of "
                "alphadrive-sft or alphadrive-grpo (the Trainer writes it when training ends or at a checkpoint)."
            )
        path = found[0]
    elif not path.is_file():
        raise FileNotFoundError(f"Run not found: {path} (a training output_dir or a trainer_state.json).")
    try:
        history = json.loads(path.read_text())["log_history"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a Trainer state file with a `log_history` ({error}).") from None
    return [entry for entry in history if isinstance(entry, dict) and "step" in entry]


SMOOTHING_WINDOW = 5


def _running_mean(values: Sequence[float], window: int) -> list[float]:
    """Mean of each value and the up to `window - 1` before it (no look-ahead, so the last point is not diluted)."""
    return [sum(values[max(0, i - window + 1) : i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(values))]


def _points(history: Sequence[dict[str, Any]], key: str, factor: float) -> list[tuple[int, float]]:
    return [(entry["step"], factor * entry[key]) for entry in history if isinstance(entry.get(key), (int, float))]


def plot_training_curves(
    runs: Sequence[str | Path], path: str | Path, names: Sequence[str] | None = None
) -> list[str]:
    """Draw one panel per metric of `CURVE_PANELS` that at least one run logged, one line per run, into the PNG at
    `path`; return the keys of the panels drawn (in order).

    Example:
        >>> plot_training_curves(["outputs/demo-sft", "outputs/demo-grpo"], "curves.png", ["SFT", "GRPO"])  # doctest: +SKIP
        ['loss', 'eval_planning_accuracy', 'reward', 'driving/plan_accuracy', 'kl']
    """
    names = list(names) if names is not None else [Path(run).name for run in runs]
    if len(names) != len(runs):
        raise ValueError(f"--names gives {len(names)} names for {len(runs)} runs.")
    histories = [load_log_history(run) for run in runs]
    is_grpo = [any("reward" in entry for entry in history) for history in histories]

    panels = []
    for key, title, factor, smoothed in CURVE_PANELS:
        lines = [
            (name, points)
            for name, history, grpo in zip(names, histories, is_grpo)
            if not (key == "loss" and grpo) and (points := _points(history, key, factor))
        ]
        if lines:
            panels.append((key, title, smoothed, lines))
    if not panels:
        raise ValueError(
            f"No run logged any of {[panel[0] for panel in CURVE_PANELS]}: set `logging_steps` so that training logs."
        )

    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig = _new_figure(4.5 * columns, 3.2 * rows)
    for index, (_, title, smoothed, lines) in enumerate(panels):
        ax = fig.add_subplot(rows, columns, index + 1)
        for name, points in lines:
            steps, values = zip(*points)
            if not smoothed or len(points) < SMOOTHING_WINDOW * 2:
                ax.plot(steps, values, marker="o" if len(points) < 5 else None, label=name)
                continue
            (raw,) = ax.plot(steps, values, alpha=0.3, linewidth=0.8)
            ax.plot(
                steps,
                _running_mean(values, SMOOTHING_WINDOW),
                color=raw.get_color(),
                label=f"{name} (mean of {SMOOTHING_WINDOW})",
            )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return [panel[0] for panel in panels]
