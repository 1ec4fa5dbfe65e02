"""Trajectory mode: the waypoint answer format, its parser, L2 metrics and a plausibility check.

In trajectory mode the completion is the meta-action answer followed by the ego motion for the next 3 s:

    <think> The light ahead is red, so I brake to the stop line. </think> <answer> DECELERATE, STRAIGHT </answer>
    <trajectory> [3.8,0.0] [7.1,0.0] [9.9,0.1] [12.1,0.1] [13.8,0.1] [14.9,0.1] </trajectory>

`TRAJECTORY_HORIZON = 6` waypoints at `TRAJECTORY_DT = 0.5` s, metres, ego frame (x forward, y left), the current
position excluded. `docs/trajectory.md` gives the text format and why, the plausibility limits and the metrics
(`l2_1s`/`l2_2s`/`l2_3s` at t = 1, 2, 3 s as in UniAD/VAD, `ade`, `fde`). `parse_trajectory` is lenient and never
raises; `is_trajectory_format` is the format reward's check; `derived_answer_words` labels a predicted trajectory
with the data's labeller (`alphadrive_trl.labelling`), so the meta-action rewards and metrics also apply.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from .actions import EMPTY_ANSWER, AnswerWords, completion_to_text, parse_answer_strict
from .labelling import try_label_trajectory  # the labeller is shared with the data sources

TRAJECTORY_HORIZON = 6
TRAJECTORY_DT = 0.5
# Times (s) of the waypoints: 0.5, 1.0, ..., 3.0.
TRAJECTORY_TIMES: tuple[float, ...] = tuple(TRAJECTORY_DT * (i + 1) for i in range(TRAJECTORY_HORIZON))

# Plausibility limits. 40 m/s (144 km/h) is above any speed in nuScenes (urban) and highway-env's fastest target
# speed (30 m/s); 10 m/s^2 (about 1 g, vector acceleration: braking, throttle and cornering together) is beyond what
# tyres deliver, so a trajectory that needs more is not drivable.
DEFAULT_MAX_SPEED = 40.0
DEFAULT_MAX_ACCEL = 10.0

L2_METRIC_NAMES: tuple[str, ...] = ("l2_1s", "l2_2s", "l2_3s", "ade", "fde")

_OPEN_TRAJECTORY = re.compile(r"<trajectory>", re.IGNORECASE)
_CLOSE_TRAJECTORY = re.compile(r"</trajectory>", re.IGNORECASE)
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_PAIR = re.compile(rf"[\[(]\s*({_NUMBER})\s*[,;]\s*({_NUMBER})\s*[\])]")
# The canonical pair written by `format_trajectory`: one decimal, no spaces.
_STRICT_PAIR = r"\[-?\d+\.\d,-?\d+\.\d\]"
_STRICT_BLOCK_CONTENT = re.compile(rf"\s*{_STRICT_PAIR}(?: {_STRICT_PAIR}){{{TRAJECTORY_HORIZON - 1}}}\s*")
_COMPLETION_TAGS = ("think", "answer", "trajectory")
_TRAJECTORY_COMPLETION = re.compile(
    r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*<trajectory>(.*?)</trajectory>\s*$",
    re.DOTALL | re.IGNORECASE,
)


def _format_coordinate(value: float) -> str:
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def format_trajectory(waypoints: Any) -> str:
    """The `<trajectory> … </trajectory>` block for 6 waypoints (metres, ego frame x forward, y left).

    Raises `ValueError` when `waypoints` is not 6 finite `(x, y)` pairs: it builds training targets, where a bad
    trajectory is a data bug that must surface.

    Example:
        >>> format_trajectory([[2.04, 0.0], [4.1, 0.02], [6.2, -0.04], [8.3, 0.1], [10.4, 0.2], [12.5, 0.35]])
        '<trajectory> [2.0,0.0] [4.1,0.0] [6.2,0.0] [8.3,0.1] [10.4,0.2] [12.5,0.3] </trajectory>'
    """
    try:
        points = np.asarray(waypoints, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"Waypoints must be {TRAJECTORY_HORIZON} (x, y) pairs of numbers, got {waypoints!r}") from err
    if points.shape != (TRAJECTORY_HORIZON, 2):
        raise ValueError(f"Waypoints must have shape ({TRAJECTORY_HORIZON}, 2), got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"Waypoints must be finite, got {points.tolist()}")
    pairs = " ".join(f"[{_format_coordinate(x)},{_format_coordinate(y)}]" for x, y in points)
    return f"<trajectory> {pairs} </trajectory>"


def extract_trajectory_block(text: Any) -> str | None:
    """Content of the last `<trajectory>` block, or `None` when there is none.

    The block starts at the last opening tag and ends at the next closing tag, or at the end of the text when the
    generation was cut before the closing tag.
    """
    if not isinstance(text, str):
        return None
    opens = list(_OPEN_TRAJECTORY.finditer(text))
    if not opens:
        return None
    rest = text[opens[-1].end() :]
    close = _CLOSE_TRAJECTORY.search(rest)
    return rest[: close.start()] if close else rest


def parse_trajectory(text: Any) -> np.ndarray | None:
    """Parse the waypoints of a completion into a `(6, 2)` float array, or `None`. Never raises.

    Reads the last `<trajectory>` block (a block cut off by the generation limit is read too) and accepts `[x,y]` or
    `(x, y)` pairs with any number of decimals. Anything other than exactly 6 finite pairs gives `None`. Completions
    in TRL's conversational form are accepted as well.

    Example:
        >>> parse_trajectory("<answer> KEEP, STRAIGHT </answer> <trajectory> [2,0] [4,0] [6,0] [8,0] [10,0] [12,0.5]")
        array([[ 2. ,  0. ],
               [ 4. ,  0. ],
               [ 6. ,  0. ],
               [ 8. ,  0. ],
               [10. ,  0. ],
               [12. ,  0.5]])
        >>> parse_trajectory("<trajectory> [2.0,0.0] [4.0,0.0] </trajectory>") is None
        True
    """
    try:
        if not isinstance(text, str):
            text = completion_to_text(text)
        block = extract_trajectory_block(text)
        if block is None:
            return None
        pairs = _PAIR.findall(block)
        if len(pairs) != TRAJECTORY_HORIZON:
            return None
        points = np.array([[float(x), float(y)] for x, y in pairs], dtype=float)
    except Exception:  # any malformed input is "no trajectory"
        return None
    if not np.all(np.isfinite(points)):
        return None
    return points


def as_waypoints(value: Any) -> np.ndarray | None:
    """A dataset `trajectory` value (list of `[x, y]`, array, or None) as a finite `(6, 2)` array, else `None`."""
    if value is None:
        return None
    try:
        points = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    if points.shape != (TRAJECTORY_HORIZON, 2) or not np.all(np.isfinite(points)):
        return None
    return points


def l2_errors(pred: Any, gt: Any) -> dict[str, float]:
    """L2 errors (metres) of a predicted trajectory against the expert one, both `(6, 2)`.

    `l2_1s`/`l2_2s`/`l2_3s`: Euclidean error at the waypoint at t = 1/2/3 s (indices 1, 3, 5); `ade`: mean error
    over the 6 waypoints; `fde`: error at the last waypoint. Raises `ValueError` on shapes other than `(6, 2)` or
    non-finite values (callers count unparsable predictions separately).

    Example:
        >>> gt = [[1, 0], [2, 0], [3, 0], [4, 0], [5, 0], [6, 0]]
        >>> pred = [[1, 0], [2, 1], [3, 0], [4, 2], [5, 0], [6, 3]]
        >>> l2_errors(pred, gt)
        {'l2_1s': 1.0, 'l2_2s': 2.0, 'l2_3s': 3.0, 'ade': 1.0, 'fde': 3.0}
    """
    pred_points, gt_points = np.asarray(pred, dtype=float), np.asarray(gt, dtype=float)
    for name, points in (("pred", pred_points), ("gt", gt_points)):
        if points.shape != (TRAJECTORY_HORIZON, 2):
            raise ValueError(f"`{name}` must have shape ({TRAJECTORY_HORIZON}, 2), got {points.shape}")
        if not np.all(np.isfinite(points)):
            raise ValueError(f"`{name}` must be finite, got {points.tolist()}")
    errors = np.linalg.norm(pred_points - gt_points, axis=1)
    at = {round(t, 6): i for i, t in enumerate(TRAJECTORY_TIMES)}
    return {
        "l2_1s": float(errors[at[1.0]]),
        "l2_2s": float(errors[at[2.0]]),
        "l2_3s": float(errors[at[3.0]]),
        "ade": float(errors.mean()),
        "fde": float(errors[-1]),
    }


def is_plausible(
    waypoints: Any,
    max_speed: float = DEFAULT_MAX_SPEED,
    max_accel: float = DEFAULT_MAX_ACCEL,
    *,
    ego_speed: float | None = None,
    dt: float = TRAJECTORY_DT,
) -> bool:
    """Whether a car could drive these waypoints. Never raises: anything that is not finite `(N, 2)` is `False`.

    Positions start at the origin (0, 0) at t = 0. The speed over each 0.5 s step (distance / dt) must not exceed
    `max_speed` (m/s), and the vector acceleration from the second differences of positions,
    `|p[i+1] - 2 p[i] + p[i-1]| / dt²` (longitudinal and lateral together), must not exceed `max_accel` (m/s²).
    With `ego_speed` (m/s, heading along +x) the first step is checked too: `|p[1] / dt - (ego_speed, 0)| / (dt / 2)`
    (the mean velocity over the first step is reached at t = dt/2).

    Example:
        >>> is_plausible([[5, 0], [10, 0], [15, 0], [20, 0], [25, 0], [30, 0]])  # 10 m/s, constant
        True
        >>> is_plausible([[5, 0], [10, 0], [15, 0], [50, 0], [55, 0], [60, 0]])  # jumps 35 m in 0.5 s
        False
    """
    try:
        points = np.asarray(waypoints, dtype=float)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0 or not np.all(np.isfinite(points)):
            return False
        path = np.vstack([np.zeros((1, 2)), points])
        velocities = np.diff(path, axis=0) / dt
        if np.linalg.norm(velocities, axis=1).max() > max_speed:
            return False
        accelerations = np.diff(velocities, axis=0) / dt
        if len(accelerations) and np.linalg.norm(accelerations, axis=1).max() > max_accel:
            return False
        if ego_speed is not None:
            start_speed = float(ego_speed)
            if not math.isfinite(start_speed):
                return False
            first_accel = np.linalg.norm(velocities[0] - np.array([start_speed, 0.0])) / (dt / 2)
            if first_accel > max_accel:
                return False
    except Exception:
        return False
    return True


def derived_answer_words(
    text: Any,
    ego_speed: Any,
    mode: str = "heading",
    *,
    max_speed: float = DEFAULT_MAX_SPEED,
    max_accel: float = DEFAULT_MAX_ACCEL,
) -> AnswerWords:
    """The meta-actions the predicted waypoints imply, labelled like the data (`alphadrive_trl.labelling`).

    Empty sets on both axes when the completion has no parsable trajectory, the trajectory is implausible
    (`is_plausible`, without the ego-speed check, which the labeller already covers through its speed thresholds)
    or the ego speed is missing. Never raises.

    Example:
        >>> derived_answer_words("<trajectory> [5,0] [10,0] [15,0] [20,0] [25,0] [30,0] </trajectory>", 10.0)
        AnswerWords(speed=frozenset({'KEEP'}), path=frozenset({'STRAIGHT'}))
    """
    waypoints = parse_trajectory(text)
    if waypoints is None or not is_plausible(waypoints, max_speed=max_speed, max_accel=max_accel):
        return EMPTY_ANSWER
    try:
        speed = float(ego_speed)
        if not math.isfinite(speed):
            return EMPTY_ANSWER
        label = try_label_trajectory(waypoints, speed, mode=mode, dt=TRAJECTORY_DT)
    except Exception:
        return EMPTY_ANSWER
    if label is None:
        return EMPTY_ANSWER
    speed_action, path_action = label
    return AnswerWords(frozenset({speed_action}), frozenset({path_action}))


def is_trajectory_format(text: Any, strict: bool = False) -> bool:
    """Format check for trajectory-mode completions. Never raises.

    True when the whole completion (surrounding whitespace aside) is `<think>…</think> <answer>…</answer>
    <trajectory>…</trajectory>` and nothing else (one block of each), and the trajectory block parses to 6
    waypoints. With `strict=True`
    the answer must also hold exactly one SPEED and one PATH word and the block must be in the canonical form of
    `format_trajectory` (`[x,y]` pairs, one decimal, one space apart).

    Example:
        >>> is_trajectory_format(
        ...     "<think> clear road </think> <answer> KEEP, STRAIGHT </answer> "
        ...     "<trajectory> [5.0,0.0] [10.0,0.0] [15.0,0.0] [20.0,0.0] [25.0,0.0] [30.0,0.0] </trajectory>"
        ... )
        True
    """
    if not isinstance(text, str):
        text = completion_to_text(text)
    try:
        match = _TRAJECTORY_COMPLETION.match(text)
        if match is None or parse_trajectory(text) is None:
            return False
        # One block of each kind: the regex is non-greedy, so a repeated block would hide inside another one.
        lowered = text.lower()
        if any(lowered.count(f"<{tag}>") != 1 or lowered.count(f"</{tag}>") != 1 for tag in _COMPLETION_TAGS):
            return False
        if strict:
            return parse_answer_strict(text) is not None and bool(_STRICT_BLOCK_CONTENT.fullmatch(match.group(1)))
    except Exception:
        return False
    return True
