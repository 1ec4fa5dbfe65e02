"""Drive a policy over seeded episodes of several scenarios (`evaluate_policy`: `metrics.json`, GIFs) and tabulate
runs (`comparison_table`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from ..files import atomic_path, atomic_write_json
from .base import DrivingPolicy
from .episode import EpisodeResult, run_episode, summarize_episodes
from .scenarios import DEFAULT_SCENARIOS, POLICY_FREQUENCY, Scenario, get_scenario, make_env


def write_gif(frames: Sequence[np.ndarray], path: str, fps: float = 2 * POLICY_FREQUENCY) -> str:
    """Write frames as an animated GIF (imageio when installed, else PIL), atomically. Default: 2x real time."""
    with atomic_path(path, suffix=".gif") as tmp:
        try:
            import imageio.v2 as imageio

            imageio.mimsave(tmp, [np.asarray(f) for f in frames], duration=1.0 / fps, loop=0)
        except ImportError:
            from PIL import Image

            images = [Image.fromarray(np.asarray(f)) for f in frames]
            images[0].save(tmp, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


def evaluate_policy(
    policy: DrivingPolicy,
    scenarios: Sequence[str | Scenario] = DEFAULT_SCENARIOS,
    *,
    episodes: int = 3,
    seed: int = 0,
    output_dir: str | None = None,
    max_decisions: int | None = None,
    frame_size: tuple[int, int] | None = None,
    gif: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Drive `episodes` episodes (seeds `seed`, `seed + 1`, ...) of every scenario and return the metrics:
    `{"policy", "seed", "episodes", "overall": {...}, "scenarios": {name: {...}}, "episode_results": [...]}`.

    With `output_dir`, writes `metrics.json` there and, with `gif`, `episode_<scenario>.gif` of each scenario's
    first episode.
    """
    from tqdm.auto import tqdm

    scenarios = [get_scenario(s) for s in scenarios]
    results: list[EpisodeResult] = []
    per_scenario: dict[str, dict[str, float]] = {}
    gifs: dict[str, str] = {}
    with tqdm(
        total=episodes * len(scenarios), desc=f"drive {policy.name}", unit="episode", disable=not progress
    ) as bar:
        for scenario in scenarios:
            env = make_env(scenario, frame_size)
            try:
                scenario_results = []
                for k in range(episodes):
                    record = gif and output_dir is not None and k == 0
                    result = run_episode(
                        env, scenario, policy, seed + k, max_decisions=max_decisions, frame_size=frame_size,
                        keep_frames=record,
                    )  # fmt: skip
                    if record:
                        gifs[scenario.name] = write_gif(
                            result.frames, os.path.join(output_dir, f"episode_{scenario.name}.gif")
                        )
                        result.frames = []
                    scenario_results.append(result)
                    bar.update(1)
            finally:
                env.close()
            per_scenario[scenario.name] = summarize_episodes(scenario_results)
            results.extend(scenario_results)
    metrics = {
        "policy": policy.name,
        "seed": seed,
        "episodes_per_scenario": episodes,
        "overall": summarize_episodes(results),
        "scenarios": per_scenario,
        "gifs": gifs,
        "episode_results": [
            {k: v for k, v in asdict(r).items() if k not in ("steps", "frames")}
            | {"actions": [s.action for s in r.steps]}
            for r in results
        ],
    }
    if output_dir is not None:
        atomic_write_json(os.path.join(output_dir, "metrics.json"), metrics)
    return metrics


_TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("crash_rate", "crash rate", "{:.0%}"),
    ("route_completion", "route done", "{:.0%}"),
    ("episode_completion", "episode done", "{:.0%}"),
    ("mean_speed", "speed (m/s)", "{:.1f}"),
    ("mean_distance", "distance (m)", "{:.0f}"),
    ("lane_changes_per_episode", "lane changes", "{:.1f}"),
    ("invalid_answer_rate", "invalid", "{:.0%}"),
    ("decisions_per_second", "decisions/s", "{:.1f}"),
)


def comparison_table(runs: Sequence[tuple[str, dict[str, Any] | str]]) -> str:
    """One markdown table, a row per (policy, scenario) plus an `all` row per policy; a run given as a string is
    an error message shown in its row (e.g. a missing checkpoint)."""
    header = "| policy | scenario | " + " | ".join(title for _, title, _ in _TABLE_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(_TABLE_COLUMNS) + 2)]
    for name, metrics in runs:
        if isinstance(metrics, str):
            lines.append(f"| {name} | - | {metrics} |" + " |" * (len(_TABLE_COLUMNS) - 1))
            continue
        rows = list(metrics["scenarios"].items())
        if len(rows) > 1:
            rows.append(("all", metrics["overall"]))
        for scenario, values in rows:
            cells = [fmt.format(values[key]) for key, _, fmt in _TABLE_COLUMNS]
            lines.append(f"| {name} | {scenario} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
