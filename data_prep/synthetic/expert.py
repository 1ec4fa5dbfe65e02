"""The expert trajectory of a labelled scene.

The expert `trajectory` (6 waypoints, 0.5 s, ego frame) follows the label with simple kinematics: constant
acceleration or braking profiles, a quintic 3.5 m lane change, and a turn at the junction with a radius of at least
6 m and at most 4 m/s^2 of lateral acceleration. They are chosen so that the heading labeller
(`alphadrive_trl.labelling.label_trajectory(..., mode="heading")`) gives back the same label, and every trajectory
passes `alphadrive_trl.trajectory.is_plausible`.
"""

from __future__ import annotations

import math

from .rules import (
    DT,
    HORIZON,
    LANE_WIDTH,
    LINE_MARGIN,
    STOP_REACH_TIME,
    TURN_LATERAL_ACCEL,
    TURN_RADIUS,
    Decision,
    Scene,
)

_TIMES = tuple(DT * (i + 1) for i in range(int(round(HORIZON / DT))))
ACCELERATION = 1.2  # m/s^2 of the ACCELERATE profile (and the default DECELERATE one)
MIN_DECELERATION = 2.5 / HORIZON  # m/s^2: a DECELERATE profile loses at least 2.5 m/s
STOP_TIME = 2.6  # s: the latest time a STOP profile comes to rest (the last waypoint then shows no motion)


def _distances(scene: Scene, decision: Decision) -> list[float]:
    """Distance travelled along the path at each waypoint time."""
    v = scene.ego_speed
    if decision.speed == "KEEP":
        return [v * t for t in _TIMES]
    if decision.speed == "ACCELERATE":
        return [v * t + 0.5 * ACCELERATION * t * t for t in _TIMES]
    if decision.speed == "DECELERATE":
        wanted = v * v / (2 * decision.stop_distance) if decision.stop_distance else ACCELERATION
        decel = min(max(wanted, MIN_DECELERATION), max(v - 0.8, 0.0) / HORIZON)
        return [v * t - 0.5 * decel * t * t for t in _TIMES]
    # STOP: brake uniformly to rest at the stop point, or by STOP_TIME when the point is farther.
    if v <= 0.05:
        return [0.0 for _ in _TIMES]
    reach = decision.stop_distance if decision.stop_distance is not None else STOP_REACH_TIME * v
    stop_time = min(STOP_TIME, 2 * max(reach, 0.1) / v)
    decel = v / stop_time
    return [v * min(t, stop_time) - 0.5 * decel * min(t, stop_time) ** 2 for t in _TIMES]


def _lane_change_offset(s: float, length: float, side: float) -> float:
    u = min(max(s / length, 0.0), 1.0)
    return side * LANE_WIDTH * u * u * u * (10 - 15 * u + 6 * u * u)


def _turn_point(s: float, start: float, side: float, radius: float) -> tuple[float, float]:
    if s <= start:
        return s, 0.0
    arc = radius * math.pi / 2
    if s <= start + arc:
        angle = (s - start) / radius
        return start + radius * math.sin(angle), side * radius * (1 - math.cos(angle))
    return start + radius, side * (radius + s - start - arc)


def expert_trajectory(scene: Scene, decision: Decision) -> list[list[float]]:
    """6 waypoints (0.5 s apart, ego frame x forward / y left, metres) that carry out `decision` in `scene`."""
    distances = _distances(scene, decision)
    side = 1.0 if decision.path.startswith("LEFT") else -1.0
    if decision.path.endswith("_CHANGE"):
        # The change ends where the last moving segment starts, so the final heading is straight ahead again.
        moving = [i for i in range(len(distances)) if distances[i] - (distances[i - 1] if i else 0.0) > 0.01]
        last = moving[-1] if moving else len(distances) - 1
        length = min(45.0, max(2.0, distances[last - 1] if last > 0 else distances[last]))
        points = [(s, _lane_change_offset(s, length, side)) for s in distances]
    elif decision.path.endswith("_TURN"):
        start = (scene.junction_distance or 0.0) + LINE_MARGIN
        # The radius keeps the lateral acceleration comfortable at the fastest speed driven in the turn.
        speeds = [(b - a) / DT for a, b in zip([0.0, *distances], distances)]
        fastest = max([scene.ego_speed] + [v for v, s in zip(speeds, distances) if s > start])
        radius = max(TURN_RADIUS, fastest * fastest / TURN_LATERAL_ACCEL)
        points = [_turn_point(s, start, side, radius) for s in distances]
    else:
        points = [(s, 0.0) for s in distances]
    return [[round(x, 3), round(y, 3)] for x, y in points]
