"""Convert a nuScenes dataroot into the canonical driving dataset, reading its JSON tables directly (no devkit).

For every keyframe (`sample`) that has a full 3 s future (6 keyframes at 2 Hz) the converter takes

- the keyframe images of `--cameras` (front first), plus optionally the previous `--history K` front keyframes,
- the ego speed: from the CAN-bus expansion (`can_bus/<scene>_pose.json`, message nearest in time) when present,
  else the distance to the previous keyframe pose over the time between them (the first keyframe of a scene uses
  the next one instead);
- the future trajectory: the next 6 ego poses in the current ego frame (x forward, y left, metres);
- SPEED and PATH from `alphadrive_trl.labelling.label_trajectory` (`--labeller senna|heading`, thresholds
  overridable with `--threshold NAME=VALUE`), fed with the future poses' yaws as headings;
- a navigation command from the route ahead (`navigation_from_route`): the ego's yaw `--nav-horizon` seconds ahead
  (6 s by default, clipped to the end of the scene) relative to now; at least `--nav-turn-deg` (30°) to the left is
  `turn left at the next intersection`, to the right `turn right at the next intersection`, else `go straight`.
  Lane changes are tactical, not navigation, so the command never names them.

Samples without a full future, without the requested cameras / history or with a missing image file are skipped
and counted by reason. Example:

    python -m data_prep.nuscenes --dataroot /data/nuscenes --version v1.0-mini --output-dir data/nuscenes-mini
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from alphadrive_trl.entrypoint import command
from alphadrive_trl.labelling import (
    ANGLE_TOLERANCE_DEG,
    LABELLER_MODES,
    LabellerThresholds,
    future_waypoints,
    label_trajectory,
    wrap_angle,
    yaw_from_quaternion,
)
from data_prep.common import OUTPUT_FORMATS, write_driving_rows

logger = logging.getLogger(__name__)

SOURCE = "nuscenes"
REQUIRED_TABLES: tuple[str, ...] = ("scene", "sample", "sample_data", "ego_pose", "calibrated_sensor", "sensor")
CAMERA_CHANNELS: tuple[str, ...] = (
    "CAM_FRONT",
    "CAM_FRONT_LEFT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_BACK_RIGHT",
)
CAMERA_ROLES: dict[str, str] = {channel: channel[len("CAM_") :].lower() for channel in CAMERA_CHANNELS}
# The devkit's v1.0-mini validation scenes (nuscenes/utils/splits.py, `mini_val`).
MINI_VAL_SCENES: tuple[str, ...] = ("scene-0103", "scene-0916")

FUTURE_STEPS = 6  # 3 s at 2 Hz
KEYFRAME_INTERVAL = 0.5  # s
# A keyframe future whose 6 steps span more than this far from 3 s has dropped keyframes: skip it.
MAX_FUTURE_TIMING_ERROR = 0.5  # s
# A CAN-bus message further than this from the keyframe does not describe it.
MAX_CAN_BUS_OFFSET = 0.25  # s

NAVIGATION_COMMANDS = {
    "left": "turn left at the next intersection",
    "right": "turn right at the next intersection",
    "straight": "go straight",
}


class NuScenesError(ValueError):
    """The dataroot is not usable (missing table, unknown camera, ...); the message says what to fix."""


@dataclass(frozen=True)
class Pose:
    x: float
    y: float
    yaw: float
    timestamp: int  # microseconds


@dataclass
class ConversionReport:
    scenes: int = 0
    samples: int = 0
    converted: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # one example per skip reason
    speed_from_can_bus: int = 0

    def skip(self, reason: str, example: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, example)

    def summary(self) -> str:
        lines = [
            f"{self.scenes} scenes, {self.samples} keyframes: {self.converted} converted, "
            f"{sum(self.skipped.values())} skipped; ego speed from CAN bus for {self.speed_from_can_bus}"
        ]
        for reason, count in self.skipped.most_common():
            lines.append(f"  skipped {count}: {reason} (e.g. {self.examples[reason]})")
        return "\n".join(lines)


# --- tables -----------------------------------------------------------------------------------------------------


def load_tables(dataroot: str | Path, version: str) -> dict[str, list[dict]]:
    """Read the JSON tables the converter needs (`log` too when present)."""
    table_dir = Path(dataroot) / version
    if not table_dir.is_dir():
        raise NuScenesError(f"{table_dir} does not exist: --dataroot must hold the {version}/ folder of JSON tables")
    tables = {}
    for name in (*REQUIRED_TABLES, "log"):
        path = table_dir / f"{name}.json"
        if not path.is_file():
            if name == "log":
                continue
            raise NuScenesError(f"missing nuScenes table {path} (needed: {', '.join(REQUIRED_TABLES)})")
        try:
            with path.open(encoding="utf-8") as handle:
                tables[name] = json.load(handle)
        except json.JSONDecodeError as error:
            raise NuScenesError(f"nuScenes table {path} is not valid JSON: {error}") from error
        if not isinstance(tables[name], list):
            raise NuScenesError(f"nuScenes table {path} must be a JSON list of records")
    return tables


class NuScenesIndex:
    """The lookups the converter needs, built once from the tables."""

    def __init__(self, tables: dict[str, list[dict]]):
        try:
            channel_of_sensor = {row["token"]: row["channel"] for row in tables["sensor"]}
            channel_of_calibration = {
                row["token"]: channel_of_sensor[row["sensor_token"]] for row in tables["calibrated_sensor"]
            }
            self.samples = {row["token"]: row for row in tables["sample"]}
            self.scenes = tables["scene"]
            self.ego_poses = {row["token"]: row for row in tables["ego_pose"]}
            self.keyframes: dict[tuple[str, str], dict] = {}
            for row in tables["sample_data"]:
                if row.get("is_key_frame"):
                    channel = channel_of_calibration[row["calibrated_sensor_token"]]
                    self.keyframes[(row["sample_token"], channel)] = row
            self.locations = {row["token"]: row.get("location", "") for row in tables.get("log", [])}
        except KeyError as error:
            raise NuScenesError(f"nuScenes tables are inconsistent: missing field or token {error}") from error

    def scene_samples(self, scene: dict) -> list[dict]:
        """The keyframes of a scene in time order (following `next`)."""
        chain, token = [], scene["first_sample_token"]
        while token:
            sample = self.samples.get(token)
            if sample is None:
                raise NuScenesError(f"scene {scene.get('name')}: sample {token} is not in sample.json")
            chain.append(sample)
            token = sample.get("next", "")
        return chain

    def pose(self, sample: dict, channel: str) -> Pose | None:
        record = self.keyframes.get((sample["token"], channel))
        if record is None:
            return None
        ego = self.ego_poses.get(record["ego_pose_token"])
        if ego is None:
            raise NuScenesError(f"ego_pose {record['ego_pose_token']} of sample_data {record['token']} is missing")
        x, y = ego["translation"][:2]
        return Pose(float(x), float(y), yaw_from_quaternion(ego["rotation"]), int(ego["timestamp"]))


# --- speed and navigation ---------------------------------------------------------------------------------------


def load_can_bus_speeds(can_bus_dir: Path | None, scene_name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """`(utimes, speeds)` from `can_bus/<scene>_pose.json` (speed = |vel[:2]|, m/s), or None when absent."""
    if can_bus_dir is None:
        return None
    path = can_bus_dir / f"{scene_name}_pose.json"
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as handle:
        messages = json.load(handle)
    if not messages:
        return None
    utimes = np.array([message["utime"] for message in messages], dtype=np.int64)
    speeds = np.array([math.hypot(*message["vel"][:2]) for message in messages], dtype=np.float64)
    order = np.argsort(utimes)
    return utimes[order], speeds[order]


def can_bus_speed(can_bus: tuple[np.ndarray, np.ndarray] | None, timestamp: int) -> float | None:
    if can_bus is None:
        return None
    utimes, speeds = can_bus
    nearest = int(np.argmin(np.abs(utimes - timestamp)))
    if abs(int(utimes[nearest]) - timestamp) > MAX_CAN_BUS_OFFSET * 1e6:
        return None
    return float(speeds[nearest])


def pose_speed(poses: list[Pose], index: int) -> float:
    """Speed at keyframe `index` from the previous pose (the next one for a scene's first keyframe)."""
    other = index - 1 if index > 0 else index + 1
    first, second = sorted((index, other))
    seconds = (poses[second].timestamp - poses[first].timestamp) / 1e6
    if seconds <= 0:
        return 0.0
    return math.hypot(poses[second].x - poses[first].x, poses[second].y - poses[first].y) / seconds


def navigation_from_route(yaw_change: float, turn_threshold_deg: float = 30.0) -> str:
    """The navigation command for a route whose heading changes by `yaw_change` radians (counter-clockwise = left).

    Example:
        >>> navigation_from_route(math.radians(80))
        'turn left at the next intersection'
        >>> navigation_from_route(math.radians(-10))
        'go straight'
    """
    degrees = math.degrees(wrap_angle(yaw_change))
    if degrees >= turn_threshold_deg - ANGLE_TOLERANCE_DEG:
        return NAVIGATION_COMMANDS["left"]
    if degrees <= -turn_threshold_deg + ANGLE_TOLERANCE_DEG:
        return NAVIGATION_COMMANDS["right"]
    return NAVIGATION_COMMANDS["straight"]


# --- conversion -------------------------------------------------------------------------------------------------


@dataclass
class ConverterOptions:
    cameras: tuple[str, ...] = ("CAM_FRONT",)
    history: int = 0
    labeller: str = "senna"
    thresholds: LabellerThresholds = field(default_factory=LabellerThresholds)
    pose_channel: str = "CAM_FRONT"
    nav_horizon: float = 6.0
    nav_turn_deg: float = 30.0
    check_images: bool = True
    can_bus_dir: Path | None = None

    def __post_init__(self) -> None:
        unknown = [camera for camera in self.cameras if camera not in CAMERA_CHANNELS]
        if unknown or not self.cameras:
            raise NuScenesError(f"unknown camera(s) {unknown or '(none)'}; choose from {', '.join(CAMERA_CHANNELS)}")
        if len(set(self.cameras)) != len(self.cameras):
            raise NuScenesError(f"--cameras lists a camera twice: {','.join(self.cameras)}")
        # The schema wants the front camera first.
        self.cameras = tuple(sorted(self.cameras, key=lambda camera: camera != "CAM_FRONT"))
        if self.labeller not in LABELLER_MODES:
            raise NuScenesError(f"unknown labeller {self.labeller!r}; choose from {', '.join(LABELLER_MODES)}")
        if self.history < 0:
            raise NuScenesError(f"--history must be >= 0, got {self.history}")


def _image_path(index: NuScenesIndex, dataroot: Path, sample: dict, channel: str) -> Path | None:
    record = index.keyframes.get((sample["token"], channel))
    return None if record is None else dataroot / record["filename"]


def convert_scene(
    index: NuScenesIndex, scene: dict, dataroot: Path, options: ConverterOptions, report: ConversionReport
) -> list[dict]:
    """The rows of one scene; skipped keyframes are counted in `report`."""
    samples = index.scene_samples(scene)
    report.scenes += 1
    report.samples += len(samples)
    poses = [index.pose(sample, options.pose_channel) for sample in samples]
    if any(pose is None for pose in poses):
        report.skip(f"no {options.pose_channel} keyframe for the ego pose", scene["name"])
        return []
    positions = np.array([[pose.x, pose.y] for pose in poses])
    yaws = np.array([pose.yaw for pose in poses])
    can_bus = load_can_bus_speeds(options.can_bus_dir, scene["name"])
    nav_steps = max(1, round(options.nav_horizon / KEYFRAME_INTERVAL))
    rows = []
    for position, sample in enumerate(samples):
        future = future_waypoints(positions, yaws, position, FUTURE_STEPS)
        if future is None:
            report.skip("no full 3 s future", sample["token"])
            continue
        span = (poses[position + FUTURE_STEPS].timestamp - poses[position].timestamp) / 1e6
        if abs(span - FUTURE_STEPS * KEYFRAME_INTERVAL) > MAX_FUTURE_TIMING_ERROR:
            report.skip("future keyframes not at 2 Hz (dropped keyframes)", f"{sample['token']} spans {span:.2f} s")
            continue
        if position < options.history:
            report.skip(f"fewer than {options.history} history keyframes", sample["token"])
            continue
        images, roles = [], []
        for camera in options.cameras:
            images.append(_image_path(index, dataroot, sample, camera))
            roles.append(CAMERA_ROLES[camera])
        for step in range(1, options.history + 1):
            images.append(_image_path(index, dataroot, samples[position - step], "CAM_FRONT"))
            roles.append(f"front_t-{step}")
        if any(image is None for image in images):
            report.skip("a requested camera has no keyframe", sample["token"])
            continue
        missing = [image for image in images if options.check_images and not image.is_file()]
        if missing:
            report.skip("missing image file", str(missing[0]))
            continue
        speed = can_bus_speed(can_bus, poses[position].timestamp)
        if speed is None:
            speed = pose_speed(poses, position)
        else:
            report.speed_from_can_bus += 1
        waypoints, headings = future
        speed_action, path_action = label_trajectory(
            waypoints, speed, mode=options.labeller, thresholds=options.thresholds, headings=headings
        )
        route_end = min(position + nav_steps, len(samples) - 1)
        rows.append(
            {
                "sample_id": sample["token"],
                "images": [str(image) for image in images],
                "image_roles": roles,
                "ego_speed": round(speed, 4),
                "navigation": navigation_from_route(yaws[route_end] - yaws[position], options.nav_turn_deg),
                "speed_action": speed_action,
                "path_action": path_action,
                "reasoning": None,
                "feasible_actions": None,
                "trajectory": np.round(waypoints, 4).tolist(),
                "source": SOURCE,
            }
        )
        report.converted += 1
    return rows


def convert_nuscenes(
    dataroot: str | Path,
    version: str = "v1.0-mini",
    options: ConverterOptions | None = None,
    *,
    scenes: list[str] | None = None,
    progress: bool = True,
) -> tuple[dict[str, list[dict]], ConversionReport]:
    """Convert a dataroot: returns `{scene name: rows}` (in table order) and the report."""
    dataroot = Path(dataroot)
    options = options or ConverterOptions()
    if options.can_bus_dir is None and (dataroot / "can_bus").is_dir():
        options.can_bus_dir = dataroot / "can_bus"
    index = NuScenesIndex(load_tables(dataroot, version))
    selected = index.scenes
    if scenes:
        known = {scene["name"] for scene in index.scenes}
        unknown = sorted(set(scenes) - known)
        if unknown:
            raise NuScenesError(f"unknown scene(s) {unknown}; {version} has {len(known)} scenes")
        selected = [scene for scene in index.scenes if scene["name"] in set(scenes)]
    report = ConversionReport()
    by_scene = {}
    for scene in tqdm(selected, desc="nuscenes scenes", unit="scene", disable=not progress):
        by_scene[scene["name"]] = convert_scene(index, scene, dataroot, options, report)
    return by_scene, report


def split_by_scene(by_scene: dict[str, list[dict]], held_out: set[str], held_out_split: str) -> dict:
    """`{"train": rows, held_out_split: rows}` with whole scenes on one side (no leakage between splits)."""
    splits: dict[str, list[dict]] = {"train": []}
    for name, rows in by_scene.items():
        splits.setdefault(held_out_split if name in held_out else "train", []).extend(rows)
    return {split: rows for split, rows in splits.items() if rows}


# --- CLI --------------------------------------------------------------------------------------------------------


def _scene_list(value: str | None) -> list[str] | None:
    if not value:
        return None
    path = Path(value)
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [name.strip() for name in value.split(",") if name.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.nuscenes",
        description=(
            "Convert a nuScenes dataroot (JSON tables read directly, no devkit) into the canonical driving dataset: "
            "keyframe images, ego speed, navigation from the route ahead, the 3 s future trajectory and its "
            "SPEED/PATH meta-actions."
        ),
    )
    parser.add_argument("--dataroot", required=True, help="folder holding <version>/*.json and samples/")
    parser.add_argument("--version", default="v1.0-mini", help="table folder: v1.0-mini or v1.0-trainval")
    parser.add_argument("--output-dir", required=True, help="where to write the dataset (save_to_disk)")
    parser.add_argument(
        "--cameras",
        default="CAM_FRONT",
        help=f"comma-separated keyframe cameras, front first (any of {', '.join(CAMERA_CHANNELS)})",
    )
    parser.add_argument("--history", type=int, default=0, help="previous CAM_FRONT keyframes to add (front_t-1, ...)")
    parser.add_argument("--labeller", choices=LABELLER_MODES, default="senna", help="meta-action rules (docs/data.md)")
    parser.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a labeller threshold, e.g. senna_speed_change=2.5 (repeatable)",
    )
    parser.add_argument("--pose-channel", default="CAM_FRONT", help="sensor whose keyframe ego pose is used")
    parser.add_argument("--can-bus", default=None, help="CAN-bus expansion folder (default: <dataroot>/can_bus)")
    parser.add_argument("--nav-horizon", type=float, default=6.0, help="seconds ahead the navigation looks")
    parser.add_argument("--nav-turn-deg", type=float, default=30.0, help="route yaw change that means a turn")
    parser.add_argument("--scenes", default=None, help="only these scenes (comma list or a file of names)")
    parser.add_argument(
        "--held-out-scenes",
        default=None,
        help="scenes for the held-out split (comma list or file); default for v1.0-mini: its val "
        "scenes, otherwise none",
    )
    parser.add_argument("--held-out-split", default="test", help="name of the held-out split (default: test)")
    parser.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        default="disk",
        help="disk: save_to_disk with embedded images (self-contained, ~10 GB for trainval CAM_FRONT); "
        "jsonl: <split>.jsonl with absolute image paths into the dataroot",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    parser.add_argument("--no-check-images", action="store_true", help="do not check that image files exist")
    return parser


@command("data_prep.nuscenes")
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        options = ConverterOptions(
            cameras=tuple(camera.strip() for camera in args.cameras.split(",") if camera.strip()),
            history=args.history,
            labeller=args.labeller,
            thresholds=LabellerThresholds.from_overrides(args.threshold),
            pose_channel=args.pose_channel,
            nav_horizon=args.nav_horizon,
            nav_turn_deg=args.nav_turn_deg,
            check_images=not args.no_check_images,
            can_bus_dir=Path(args.can_bus) if args.can_bus else None,
        )
        by_scene, report = convert_nuscenes(args.dataroot, args.version, options, scenes=_scene_list(args.scenes))
    except (NuScenesError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    logger.info(report.summary())
    held_out = _scene_list(args.held_out_scenes)
    if held_out is None and args.version == "v1.0-mini":
        held_out = list(MINI_VAL_SCENES)
    splits = split_by_scene(by_scene, set(held_out or ()), args.held_out_split)
    if not splits:
        raise SystemExit(f"error: no keyframe could be converted\n{report.summary()}")
    write_driving_rows(splits, args.output_dir, overwrite=args.overwrite, output_format=args.format)
    logger.info("wrote %s to %s", {split: len(rows) for split, rows in splits.items()}, args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
