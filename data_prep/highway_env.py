"""Build a driving dataset from expert rollouts in the highway-env simulator (optional `sim` extra).

The rule-based expert of `alphadrive_trl.closed_loop` (IDM + overtaking lane changes + a yield rule at intersections)
drives seeded episodes of the `highway`, `merge` and `intersection` scenarios (randomised traffic and routes). At
every `--stride`-th decision (decisions are 0.5 s apart) a row is written:

- `images`: the top-down RGB frame centred on the ego (`top_down`), then optionally `--history-frames` earlier
  frames (`top_down_t-1`, ... 0.5 s apart);
- `ego_speed` (m/s) and `navigation` from the planned route (`go straight` on the highway and merge roads; at the
  intersection `turn left|right at the next intersection` / `go straight` until the ego is in the box);
- `trajectory`: the ego's next 6 positions (0.5 s ... 3 s) in its current frame (x forward, y left), converted from
  highway-env's screen frame (y down) by flipping y and the heading;
- `speed_action`, `path_action`: `alphadrive_trl.labelling.label_trajectory` on that trajectory (the labeller shared
  with nuScenes; `--labeller heading` by default, because highway lanes are 4 m wide and a lane change done in 3 s
  sits right at `senna`'s 4 m threshold);
- `reasoning`: a sentence template filled from the simulator state at the decision (`data_prep.highway_scene`: the
  vehicle ahead and its gap, free adjacent lanes, the route, the intersection), explaining the label; and
  `feasible_actions`: the label plus the alternatives that state allows (e.g. a lane change the gaps allow as well as
  slowing down); `scene_facts`: the same state in words without the decision (what the `answer_only_facts` prompt
  template puts in the prompt: the privileged-perception variant); `source = "highway_env"`.

Decisions without a full 3 s future (the end of an episode) or without enough history are skipped, and episodes in
which the expert crashed are dropped; both are counted in the dataset card. Splits are by episode, so no episode
contributes to two splits. The output is written atomically and resumes chunk by chunk.

Example (the default seeds start at 1000, away from the evaluation seeds 0, 1, 2, ... of `alphadrive-drive`):

    python -m data_prep.highway_env --output-dir data/highway-env --episodes 20 --env all
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from alphadrive_trl.closed_loop.scene import scene_description, scene_state
from alphadrive_trl.entrypoint import command
from alphadrive_trl.labelling import LABELLER_MODES, LabellerThresholds, future_waypoints, label_trajectory
from data_prep.highway_scene import feasible_plans, scene_reasoning

logger = logging.getLogger(__name__)

SOURCE = "highway_env"
HORIZON = 6  # waypoints: 3 s at 0.5 s
DEFAULT_SEED = 1000


@dataclass(frozen=True)
class HighwayDataConfig:
    """What to roll out and how to label it (saved in the chunk manifest, so a resumed build never mixes configs)."""

    scenarios: tuple[str, ...] = ("highway", "merge", "intersection")
    episodes: int = 10  # per scenario
    seed: int = DEFAULT_SEED  # episode k of every scenario uses seed + k
    history_frames: int = 0
    stride: int = 2  # keep every stride-th decision (2: one row per second of driving)
    labeller: str = "heading"
    thresholds: tuple[tuple[str, float], ...] = ()
    frame_size: tuple[int, int] | None = None  # None: each scenario's default
    max_decisions: int | None = None  # None: the scenario's duration

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.history_frames < 0:
            raise ValueError(f"history_frames must be >= 0, got {self.history_frames}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.labeller not in LABELLER_MODES:
            raise ValueError(f"labeller must be one of {', '.join(LABELLER_MODES)}, got {self.labeller!r}")
        if self.max_decisions is not None and self.max_decisions <= HORIZON:
            raise ValueError(f"max_decisions must exceed the {HORIZON}-step label horizon, got {self.max_decisions}")


def screen_to_right_handed(positions: Any, headings: Any) -> tuple[np.ndarray, np.ndarray]:
    """highway-env's screen frame (x right, y down, heading clockwise on screen) -> a right-handed world frame
    (y up, yaw counter-clockwise), which `alphadrive_trl.labelling` expects.

    Example:
        >>> p, h = screen_to_right_handed([[10.0, 4.0]], [0.5])
        >>> p.tolist(), h.tolist()
        ([[10.0, -4.0]], [-0.5])
    """
    points = np.asarray(positions, dtype=np.float64).reshape(-1, 2) * np.array([1.0, -1.0])
    return points, -np.asarray(headings, dtype=np.float64).reshape(-1)


def label_episode_steps(
    positions: Any,
    headings: Any,
    speeds: Any,
    *,
    labeller: str = "heading",
    thresholds: LabellerThresholds | None = None,
) -> list[tuple[np.ndarray, str, str] | None]:
    """For every decision of a track (screen-frame poses 0.5 s apart, the last one after the final decision), the
    future trajectory in the ego frame and its `(speed, path)` labels, or `None` without a full 3 s future.

    Example (driving at 10 m/s while drifting one lane, 4 m, to the *left*, i.e. up on the screen):
        >>> xs = np.arange(8) * 5.0
        >>> ys = -np.clip(np.arange(8) - 1, 0, 4) * 1.0
        >>> label_episode_steps(np.stack([xs, ys], 1), np.zeros(8), np.full(8, 10.0))[0][1:]
        ('KEEP', 'LEFT_CHANGE')
    """
    world, yaws = screen_to_right_handed(positions, headings)
    labelled: list[tuple[np.ndarray, str, str] | None] = []
    for index in range(len(world) - 1):
        future = future_waypoints(world, yaws, index, HORIZON)
        if future is None:
            labelled.append(None)
            continue
        waypoints, future_headings = future
        speed, path = label_trajectory(
            waypoints, float(speeds[index]), mode=labeller, thresholds=thresholds, headings=future_headings
        )
        labelled.append((waypoints, speed, path))
    return labelled


def episode_rows(
    result, config: HighwayDataConfig, thresholds: LabellerThresholds | None = None, states: list | None = None
):
    """Canonical rows of one expert episode (`closed_loop.run_episode(..., keep_frames=True)`) and skip reasons.

    `states` (one `closed_loop.scene.SceneState` per decision, as `SceneRecordingExpert` records them) fill `reasoning`,
    `scene_facts` and `feasible_actions`; without them all three are None."""
    from PIL import Image

    from alphadrive_trl.closed_loop import frame_roles

    skipped: Counter[str] = Counter()
    if result.crashed:
        skipped["expert crashed (episode dropped)"] += len(result.steps)
        return [], skipped
    positions = [s.position for s in result.steps] + [result.final_position]
    headings = [s.heading for s in result.steps] + [result.final_heading]
    speeds = [s.speed for s in result.steps] + [result.final_speed]
    labels = label_episode_steps(
        positions, headings, speeds, labeller=config.labeller, thresholds=thresholds
    )  # fmt: skip
    rows = []
    for index, (step, label) in enumerate(zip(result.steps, labels)):
        if index % config.stride:
            continue
        if label is None:
            skipped["no full 3 s future"] += 1
            continue
        if index < config.history_frames:
            skipped["not enough history"] += 1
            continue
        waypoints, speed_action, path_action = label
        state = states[index] if states else None
        frames = [result.frames[index - k] for k in range(config.history_frames + 1)]
        rows.append(
            {
                "sample_id": f"{SOURCE}-{result.scenario}-s{result.seed}-t{index:03d}",
                "images": [Image.fromarray(np.asarray(frame)) for frame in frames],
                "image_roles": frame_roles(len(frames)),
                "ego_speed": max(0.0, float(step.speed)),
                "navigation": step.navigation,
                "speed_action": speed_action,
                "path_action": path_action,
                "reasoning": scene_reasoning(state, speed_action, path_action) if state else None,
                "scene_facts": scene_description(state) if state else None,
                "feasible_actions": feasible_plans(state, speed_action, path_action) if state else None,
                "trajectory": np.round(waypoints, 3).tolist(),
                "source": SOURCE,
            }
        )
    return rows, skipped


def recording_expert():
    """The closed-loop expert, recording the `SceneState` it saw at each decision in `.states` (reset per episode)."""
    from alphadrive_trl.closed_loop import ExpertPolicy

    class SceneRecordingExpert(ExpertPolicy):
        def reset(self, seed: int) -> None:
            super().reset(seed)
            self.states = []

        def decide(self, context):
            self.states.append(scene_state(context.env, context.scenario, context.navigation, context.ego_speed))
            return super().decide(context)

    return SceneRecordingExpert()


def _features():
    from datasets import Features, Value

    from alphadrive_trl.data import DRIVING_FEATURES

    return Features({**DRIVING_FEATURES, "scene_facts": Value("string"), "split": Value("string")})


def build_dataset(
    config: HighwayDataConfig,
    output_dir: str | Path,
    *,
    splits: dict[str, float] | None = None,
    chunk_episodes: int = 10,
    overwrite: bool = False,
    progress: bool = True,
):
    """Roll out the expert and write a `DatasetDict` (splits by episode) to `output_dir`, atomically and resumable
    per chunk of `chunk_episodes` episodes; writes a dataset card. Returns the loaded `DatasetDict`."""
    from datasets import Dataset, DatasetDict, load_from_disk

    from alphadrive_trl.closed_loop import get_scenario, make_env, run_episode
    from data_prep.common import ChunkStore, atomic_directory, atomic_write_text, split_ranges

    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} already exists; pass --overwrite to replace it")
    scenarios = [get_scenario(name) for name in config.scenarios]
    thresholds = LabellerThresholds.from_overrides(dict(config.thresholds)) if config.thresholds else None
    splits = splits or {"train": 0.8, "validation": 0.1, "test": 0.1}
    split_of_episode = {k: name for name, indices in split_ranges(config.episodes, splits).items() for k in indices}
    jobs = [(scenario.name, k) for scenario in scenarios for k in range(config.episodes)]
    num_chunks = math.ceil(len(jobs) / chunk_episodes)
    # The columns belong to the settings: chunks left by a build of another version (say, without `scene_facts`) are
    # discarded instead of failing to concatenate with the new ones.
    settings = {
        "config": asdict(config),
        "splits": splits,
        "chunk_episodes": chunk_episodes,
        "columns": list(_features()),
    }
    store = ChunkStore(output_dir, settings)
    skipped: Counter[str] = Counter()
    envs: dict[str, Any] = {}
    todo = store.missing(num_chunks)
    done = len(jobs) - sum(len(jobs[i * chunk_episodes : (i + 1) * chunk_episodes]) for i in todo)
    try:
        with tqdm(
            total=len(jobs), initial=done, desc="highway-env episodes", unit="episode", disable=not progress
        ) as bar:
            for chunk in todo:
                rows = []
                for name, k in jobs[chunk * chunk_episodes : (chunk + 1) * chunk_episodes]:
                    if name not in envs:
                        envs[name] = make_env(name, config.frame_size)
                    expert = recording_expert()
                    result = run_episode(
                        envs[name], name, expert, config.seed + k, max_decisions=config.max_decisions,
                        frame_size=config.frame_size, keep_frames=True,
                    )  # fmt: skip
                    episode, reasons = episode_rows(result, config, thresholds, expert.states)
                    skipped.update(reasons)
                    rows.extend({**row, "split": split_of_episode[k]} for row in episode)
                    bar.update(1)
                store.save(chunk, Dataset.from_list(rows, features=_features()))
    finally:
        for env in envs.values():
            env.close()
    everything = store.load_all(num_chunks)
    if len(everything) == 0:
        raise RuntimeError(f"No rows were produced ({dict(skipped)}); use more episodes or a longer --max-decisions")
    dataset = DatasetDict(
        {
            name: everything.filter(lambda split, name=name: split == name, input_columns="split").remove_columns(
                "split"
            )
            for name in splits
        }
    )
    card = dataset_card(config, dataset, skipped)
    with atomic_directory(output_dir, overwrite=overwrite) as tmp:
        dataset.save_to_disk(str(tmp))
        atomic_write_text(tmp / "README.md", card)
    store.cleanup()
    return load_from_disk(str(output_dir))


def dataset_card(config: HighwayDataConfig, dataset, skipped: Counter[str]) -> str:
    """A short markdown card: settings, rows per split, label histogram, skip counts."""
    lines = [
        "# highway-env expert driving data",
        "",
        "Built by `python -m data_prep.highway_env` (alphadrive-trl): rule-based expert rollouts (IDM, overtaking, "
        "yield at intersections), top-down frames, labels from the next 3 s with the shared labeller "
        f"(`{config.labeller}`).",
        "",
        f"- scenarios: {', '.join(config.scenarios)}; {config.episodes} episodes each, seeds {config.seed}.."
        f"{config.seed + config.episodes - 1}",
        f"- history frames: {config.history_frames}; one row every {config.stride} decisions (0.5 s each)",
        f"- rows: {', '.join(f'{name} {len(part)}' for name, part in dataset.items())}",
        "",
        "| SPEED \\ PATH | " + " | ".join(_PATHS) + " |",
        "|---|" + "---|" * len(_PATHS),
    ]
    counts: Counter[tuple[str, str]] = Counter()
    for part in dataset.values():
        counts.update(zip(part["speed_action"], part["path_action"]))
    for speed in _SPEEDS:
        lines.append(f"| {speed} | " + " | ".join(str(counts[(speed, path)]) for path in _PATHS) + " |")
    if skipped:
        lines += ["", "Skipped decisions: " + ", ".join(f"{reason}: {n}" for reason, n in sorted(skipped.items()))]
    return "\n".join(lines) + "\n"


_SPEEDS = ("KEEP", "ACCELERATE", "DECELERATE", "STOP")
_PATHS = ("STRAIGHT", "RIGHT_CHANGE", "LEFT_CHANGE", "RIGHT_TURN", "LEFT_TURN")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.highway_env",
        description="Roll out the rule-based expert in highway-env (highway, merge, intersection) and write the "
        "canonical driving dataset: top-down frames, ego speed, navigation from the route, the expert's next 3 s "
        "as trajectory and SPEED/PATH labels (shared labeller). Needs the `sim` extra.",
    )
    parser.add_argument("--output-dir", required=True, help="destination directory (written atomically)")
    parser.add_argument(
        "--env", default="all", help="scenarios, comma-separated (highway, merge, intersection) or all"
    )
    parser.add_argument("--episodes", type=int, default=10, help="episodes per scenario (default 10)")
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"episode k uses seed SEED+k (default {DEFAULT_SEED})"
    )
    parser.add_argument("--history-frames", type=int, default=0, help="earlier frames per row, 0.5 s apart")
    parser.add_argument("--stride", type=int, default=2, help="keep every STRIDE-th decision (default 2 = 1 Hz)")
    parser.add_argument(
        "--labeller", choices=LABELLER_MODES, default="heading", help="labeller rules (default heading)"
    )
    parser.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a labeller threshold, e.g. heading_speed_change=2.5 (repeatable)",
    )
    parser.add_argument("--frame-size", default=None, help="WIDTHxHEIGHT of the frames (default per scenario)")
    parser.add_argument("--max-decisions", type=int, default=None, help="cap decisions per episode")
    parser.add_argument("--splits", default="0.8,0.1,0.1", help="train,validation,test fractions of the episodes")
    parser.add_argument("--chunk-episodes", type=int, default=10, help="episodes per resumable chunk")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    return parser


@command("data_prep.highway_env")
def main(argv: list[str] | None = None) -> int:
    from alphadrive_trl.closed_loop import parse_scenarios, require_highway_env
    from data_prep.common import parse_image_size, parse_split_fractions

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        require_highway_env()
        thresholds = LabellerThresholds.from_overrides(args.threshold)
        config = HighwayDataConfig(
            scenarios=tuple(s.name for s in parse_scenarios(args.env)),
            episodes=args.episodes,
            seed=args.seed,
            history_frames=args.history_frames,
            stride=args.stride,
            labeller=args.labeller,
            thresholds=tuple(sorted(asdict(thresholds).items())) if args.threshold else (),
            frame_size=parse_image_size(args.frame_size) if args.frame_size else None,
            max_decisions=args.max_decisions,
        )
        if args.chunk_episodes < 1:
            raise ValueError("--chunk-episodes must be >= 1")
        dataset = build_dataset(
            config, args.output_dir, splits=parse_split_fractions(args.splits), chunk_episodes=args.chunk_episodes,
            overwrite=args.overwrite,
        )  # fmt: skip
    except (ValueError, FileExistsError, ImportError) as error:
        parser.error(str(error))
    sizes = ", ".join(f"{name} {len(part)}" for name, part in dataset.items())
    logger.info("Wrote %s (%s); dataset card: %s", args.output_dir, sizes, Path(args.output_dir) / "README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
