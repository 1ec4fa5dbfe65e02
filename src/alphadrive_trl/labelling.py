"""One meta-action labeller for every source: a future ego trajectory -> `(SPEED, PATH)`.

nuScenes, highway-env, the synthetic scenes and trajectory-mode rewards all label plans with this module, so a
predicted trajectory and an expert one are judged by the same rules. The two rule sets (`senna`, `heading`) and the
quantities they use (future speeds, speed change, lateral offset, end heading; ego frame, x forward, y left) are
defined in `docs/data.md`, "The trajectory labeller"; the thresholds are the fields of `LabellerThresholds`.

Example:
    >>> label_trajectory([[5, 0], [10, 0], [15, 0], [20, 0], [25, 0], [30, 0]], ego_speed=10.0)
    ('KEEP', 'STRAIGHT')
    >>> label_trajectory([[5, 0], [9, 0], [12, 0], [14, 0], [15, 0], [15, 0]], ego_speed=10.0, mode="heading")
    ('STOP', 'STRAIGHT')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

LABELLER_MODES: tuple[str, ...] = ("senna", "heading")
LabellerMode = Literal["senna", "heading"]

# A segment shorter than this does not define a direction (a stopped car's last step is GPS noise).
_MIN_SEGMENT_FOR_HEADING = 0.01
# Degrees <-> radians round trips are off by ~1e-14: a heading given as exactly 20 deg must count as 20 deg.
ANGLE_TOLERANCE_DEG = 1e-9


@dataclass(frozen=True)
class LabellerThresholds:
    """The constants of both labeller modes (`docs/data.md`). Override any with `LabellerThresholds(senna_speed_change=2.5)`
    or `dataclasses.replace(thresholds, ...)`; every comparison is inclusive (`>=`) except the STOP ones (`<`)."""

    # senna
    senna_stop_max_speed: float = 2.0  # m/s: STOP if the max future speed is below this
    senna_speed_change: float = 3.0  # m/s: |end speed - current speed| >= this -> ACCELERATE / DECELERATE
    senna_lateral_offset: float = 4.0  # m: |y at the end| >= this -> lane change or turn
    senna_straight_heading_deg: float = 5.0  # deg: end direction within this of straight ahead -> change, else turn
    # heading
    heading_turn_deg: float = 20.0  # deg: |end heading| >= this -> turn
    heading_lane_change_offset: float = 2.5  # m: |y at the end| >= this -> lane change
    heading_speed_change: float = 2.0  # m/s: |end speed - current speed| >= this -> ACCELERATE / DECELERATE
    heading_stop_end_speed: float = 0.5  # m/s: STOP if the end speed is below this

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"LabellerThresholds.{name} must be a finite number >= 0, got {value!r}")

    @classmethod
    def from_overrides(cls, overrides: dict[str, Any] | list[str] | None) -> LabellerThresholds:
        """Build from `{"senna_speed_change": 2.5}` or CLI-style `["senna_speed_change=2.5"]`; unknown names raise
        a `ValueError` listing the valid ones."""
        if not overrides:
            return cls()
        if isinstance(overrides, (list, tuple)):
            pairs = {}
            for item in overrides:
                if "=" not in item:
                    raise ValueError(f"Threshold override {item!r} must look like NAME=VALUE")
                name, value = item.split("=", 1)
                pairs[name.strip()] = value.strip()
            overrides = pairs
        valid = set(cls.__dataclass_fields__)
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ValueError(f"Unknown labeller threshold(s) {unknown}; valid names: {', '.join(sorted(valid))}")
        try:
            return cls(**{name: float(value) for name, value in overrides.items()})
        except (TypeError, ValueError) as error:
            raise ValueError(f"Invalid labeller threshold override {overrides}: {error}") from error


DEFAULT_THRESHOLDS = LabellerThresholds()


class TrajectoryFeatures(NamedTuple):
    """The quantities the rules look at (useful to explain a label)."""

    speeds: np.ndarray  # (N,) m/s, one per waypoint
    end_speed: float
    max_speed: float
    speed_change: float  # end speed - current speed
    lateral_offset: float  # y of the last waypoint, metres, left positive
    end_heading: float  # radians in (-pi, pi], counter-clockwise (left) positive


def _as_waypoints(waypoints: Any) -> np.ndarray:
    try:
        array = np.asarray(waypoints, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"waypoints must be an N x 2 array of numbers, got {type(waypoints).__name__}") from error
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] < 1:
        raise ValueError(f"waypoints must have shape (N, 2) with N >= 1, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("waypoints contain NaN or infinite values")
    return array


def wrap_angle(angle: Any) -> Any:
    """Wrap radians to (-pi, pi]."""
    angle = np.asarray(angle, dtype=np.float64)
    wrapped = np.mod(angle + np.pi, 2 * np.pi) - np.pi
    wrapped = np.where(wrapped == -np.pi, np.pi, wrapped)
    # Angles already in range stay bit-identical.
    wrapped = np.where((angle > -np.pi) & (angle <= np.pi), angle, wrapped)
    return float(wrapped) if np.ndim(wrapped) == 0 else wrapped


def future_speeds(waypoints: Any, dt: float = 0.5) -> np.ndarray:
    """Speed along each segment (first segment from the origin), m/s.

    Example:
        >>> future_speeds([[1, 0], [3, 0]], dt=0.5).tolist()
        [2.0, 4.0]
    """
    points = _as_waypoints(waypoints)
    if not dt > 0:
        raise ValueError(f"dt must be > 0, got {dt!r}")
    steps = np.diff(np.vstack([np.zeros((1, 2)), points]), axis=0)
    return np.linalg.norm(steps, axis=1) / dt


def _end_heading_from_segments(points: np.ndarray) -> float:
    steps = np.diff(np.vstack([np.zeros((1, 2)), points]), axis=0)
    for dx, dy in steps[::-1]:
        if math.hypot(dx, dy) > _MIN_SEGMENT_FOR_HEADING:
            return math.atan2(dy, dx)
    return 0.0


def trajectory_features(
    waypoints: Any, ego_speed: float, *, dt: float = 0.5, headings: Any = None
) -> TrajectoryFeatures:
    """Compute the quantities both rule sets use (defined in `docs/data.md`, "The trajectory labeller")."""
    points = _as_waypoints(waypoints)
    try:
        current_speed = float(ego_speed)
    except (TypeError, ValueError) as error:
        raise ValueError(f"ego_speed must be a number, got {ego_speed!r}") from error
    if not math.isfinite(current_speed):
        raise ValueError(f"ego_speed must be finite, got {ego_speed!r}")
    speeds = future_speeds(points, dt)
    if headings is not None:
        heading_array = np.asarray(headings, dtype=np.float64).reshape(-1)
        if heading_array.shape[0] != points.shape[0]:
            raise ValueError(
                f"headings must have one value per waypoint ({points.shape[0]}), got {heading_array.shape}"
            )
        if not np.isfinite(heading_array).all():
            raise ValueError("headings contain NaN or infinite values")
        end_heading = wrap_angle(heading_array[-1])
    else:
        end_heading = _end_heading_from_segments(points)
    return TrajectoryFeatures(
        speeds=speeds,
        end_speed=float(speeds[-1]),
        max_speed=float(speeds.max()),
        speed_change=float(speeds[-1] - current_speed),
        lateral_offset=float(points[-1, 1]),
        end_heading=float(end_heading),
    )


def _speed_from_change(change: float, threshold: float) -> str:
    if change >= threshold:
        return "ACCELERATE"
    if change <= -threshold:
        return "DECELERATE"
    return "KEEP"


def _label_senna(features: TrajectoryFeatures, t: LabellerThresholds) -> tuple[str, str]:
    if features.max_speed < t.senna_stop_max_speed:
        speed = "STOP"
    else:
        speed = _speed_from_change(features.speed_change, t.senna_speed_change)
    offset = features.lateral_offset
    if abs(offset) >= t.senna_lateral_offset:
        side = "LEFT" if offset > 0 else "RIGHT"
        straight_ahead = abs(math.degrees(features.end_heading)) <= t.senna_straight_heading_deg + ANGLE_TOLERANCE_DEG
        path = f"{side}_CHANGE" if straight_ahead else f"{side}_TURN"
    else:
        path = "STRAIGHT"
    return speed, path


def _label_heading(features: TrajectoryFeatures, t: LabellerThresholds) -> tuple[str, str]:
    if features.end_speed < t.heading_stop_end_speed:
        speed = "STOP"
    else:
        speed = _speed_from_change(features.speed_change, t.heading_speed_change)
    heading_deg = math.degrees(features.end_heading)
    if abs(heading_deg) >= t.heading_turn_deg - ANGLE_TOLERANCE_DEG:
        path = "LEFT_TURN" if heading_deg > 0 else "RIGHT_TURN"
    elif abs(features.lateral_offset) >= t.heading_lane_change_offset:
        path = "LEFT_CHANGE" if features.lateral_offset > 0 else "RIGHT_CHANGE"
    else:
        path = "STRAIGHT"
    return speed, path


def label_trajectory(
    waypoints: Any,
    ego_speed: float,
    *,
    mode: LabellerMode = "senna",
    dt: float = 0.5,
    thresholds: LabellerThresholds | None = None,
    headings: Any = None,
) -> tuple[str, str]:
    """Label a future ego trajectory with one SPEED and one PATH meta-action.

    Args:
        waypoints: future ego positions, shape (N, 2), metres, ego frame (x forward, y left), the current position
            (0, 0) excluded; usually 6 points at 0.5 s.
        ego_speed: the current speed, m/s.
        mode: `"senna"` or `"heading"` (rules in `docs/data.md`).
        dt: seconds between waypoints (and between the origin and the first one).
        thresholds: overrides of the `LabellerThresholds` constants.
        headings: optional ego-frame yaw (radians, counter-clockwise) of each waypoint; without it the end heading is
            the direction of the last segment.

    Raises:
        ValueError: wrong shapes, NaN, non-positive `dt` or an unknown mode (use `try_label_trajectory` for model
            output that may be garbage).

    Example:
        >>> label_trajectory([[4, 0.1], [8, 0.5], [12, 1.5], [16, 2.8], [20, 3.9], [24, 4.2]], 8.0)
        ('KEEP', 'LEFT_CHANGE')
        >>> label_trajectory([[4, 0.1], [8, 0.5], [12, 1.5], [16, 2.8], [20, 3.9], [24, 4.2]], 8.0, mode="heading")
        ('KEEP', 'LEFT_CHANGE')
    """
    if mode not in LABELLER_MODES:
        raise ValueError(f"Unknown labeller mode {mode!r}; expected one of {', '.join(LABELLER_MODES)}")
    thresholds = thresholds or DEFAULT_THRESHOLDS
    features = trajectory_features(waypoints, ego_speed, dt=dt, headings=headings)
    if mode == "senna":
        return _label_senna(features, thresholds)
    return _label_heading(features, thresholds)


def try_label_trajectory(
    waypoints: Any,
    ego_speed: Any,
    *,
    mode: LabellerMode = "senna",
    dt: float = 0.5,
    thresholds: LabellerThresholds | None = None,
    headings: Any = None,
) -> tuple[str, str] | None:
    """`label_trajectory` that returns `None` instead of raising (for model-predicted trajectories in rewards).

    Example:
        >>> try_label_trajectory([[1.0, float("nan")]], 3.0) is None
        True
    """
    try:
        return label_trajectory(waypoints, ego_speed, mode=mode, dt=dt, thresholds=thresholds, headings=headings)
    except Exception:  # garbage of any kind means "no label"
        return None


# --- frames ---------------------------------------------------------------------------------------------------------


def to_ego_frame(points_xy_world: Any, origin_xy: Any, origin_yaw: float) -> np.ndarray:
    """Express world points (M, 2) in the frame of an ego at `origin_xy` facing `origin_yaw` (radians,
    counter-clockwise from the world x axis): x forward, y left.

    The world frame must be right-handed (x east, y north, yaw counter-clockwise), as in nuScenes. Sources with a
    screen frame (y down, e.g. highway-env) flip y and negate yaw first.

    Example:
        >>> to_ego_frame([[0.0, 5.0]], [0.0, 0.0], math.pi / 2).round(6).tolist()
        [[5.0, 0.0]]
    """
    points = np.asarray(points_xy_world, dtype=np.float64).reshape(-1, 2)
    origin = np.asarray(origin_xy, dtype=np.float64).reshape(2)
    cos_yaw, sin_yaw = math.cos(origin_yaw), math.sin(origin_yaw)
    delta = points - origin
    # Rotate by -yaw.
    return np.stack([cos_yaw * delta[:, 0] + sin_yaw * delta[:, 1], -sin_yaw * delta[:, 0] + cos_yaw * delta[:, 1]], 1)


def ego_frame(positions_xy_world: Any, yaws: Any, index: int) -> tuple[np.ndarray, np.ndarray]:
    """All poses of a track expressed in the ego frame of pose `index`.

    Returns `(positions (M, 2), yaws (M,))`; pose `index` becomes `(0, 0)` with yaw 0, yaws are wrapped to (-pi, pi].
    Slice `[index + 1 : index + 1 + horizon]` for the future waypoints (see `future_waypoints`).
    """
    positions = np.asarray(positions_xy_world, dtype=np.float64).reshape(-1, 2)
    yaw_array = np.asarray(yaws, dtype=np.float64).reshape(-1)
    if yaw_array.shape[0] != positions.shape[0]:
        raise ValueError(f"positions ({positions.shape[0]}) and yaws ({yaw_array.shape[0]}) differ in length")
    if not -positions.shape[0] <= index < positions.shape[0]:
        raise IndexError(f"pose index {index} out of range for a track of {positions.shape[0]} poses")
    origin_yaw = float(yaw_array[index])
    return to_ego_frame(positions, positions[index], origin_yaw), wrap_angle(yaw_array - origin_yaw)


def future_waypoints(
    positions_xy_world: Any, yaws: Any, index: int, horizon: int = 6
) -> tuple[np.ndarray, np.ndarray] | None:
    """The next `horizon` poses after `index` in its ego frame, `(waypoints (horizon, 2), headings (horizon,))`, or
    `None` when the track ends too early (callers count those as skipped)."""
    positions = np.asarray(positions_xy_world, dtype=np.float64).reshape(-1, 2)
    if index < 0 or index + horizon >= positions.shape[0]:
        return None
    local, local_yaws = ego_frame(positions, yaws, index)
    return local[index + 1 : index + 1 + horizon], local_yaws[index + 1 : index + 1 + horizon]


def yaw_from_quaternion(quaternion: Any) -> float:
    """Yaw (rotation about z, radians) of a `(w, x, y, z)` quaternion, the order nuScenes stores."""
    w, x, y, z = (float(v) for v in quaternion)
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
