"""`ExpertPolicy`: the rule-based driver (IDM, overtaking lane changes, a yield rule at intersections) and its
route geometry helpers."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from .base import Decision, DrivingContext, DrivingPolicy
from .scenarios import DECISION_DT

# `ExpertPolicy.crossing_status`: what the yield rule sees at an intersection.
CROSSING_CLEAR, CROSSING_CONFLICT, CROSSING_EXIT_BLOCKED = "clear", "conflict", "exit blocked"


class ExpertPolicy(DrivingPolicy):
    """A rule-based driver that does not crash: the data source for `data_prep/highway_env.py` and the upper
    baseline of the closed-loop table.

    - Longitudinal: the Intelligent Driver Model of an IDM "shadow" vehicle built from the ego gives the desired
      acceleration, towards the cruise speed (the top target speed) behind the nearest vehicle *along the ego's
      route* (highway-env's own neighbour search stops at the end of the current lane segment, so it misses a car
      in the intersection box or on the next segment). The meta-action whose target speed implies the acceleration
      closest to the desired one is chosen (`IDLE` on ties).
    - Lateral (highway, merge): MOBIL-like overtaking evaluated at the cruise speed with a low gain threshold
      (highway-env's MOBIL, evaluated at the current target speed with a 0.2 m/s^2 threshold, hardly ever changes
      lanes): change to an adjacent lane when the IDM acceleration there beats the current lane by
      `lane_change_gain` and neither the ego nor the new follower would brake harder than `max_braking_imposed` or
      be closer than `min_gap`. Forbidden lanes (the on-ramp) are never entered; a cooldown prevents zig-zagging.
    - Yield (intersection): every other vehicle is predicted `yield_horizon` seconds ahead along its route at
      constant speed, the ego along its route accelerating at `go_acceleration` up to the cruise speed (what "go"
      means). If any comes within `yield_distance` metres of the ego at times less than `yield_time_margin` apart
      (a vehicle driving the other way on a parallel lane excepted), the ego stops at the stop line (IDM towards a
      standing obstacle there); once inside the box it goes on to clear it. It also waits at the line while the
      road beyond the box is blocked, so that it never stops inside the box.
    """

    name = "expert"

    def __init__(
        self,
        lane_change_gain: float = 0.3,
        max_braking_imposed: float = 2.0,
        min_gap: float = 6.0,
        lane_change_cooldown: float = 2.0,
        yield_horizon: float = 4.0,
        yield_distance: float = 6.0,
        yield_time_margin: float = 1.0,
        go_acceleration: float = 2.5,
    ):
        self.lane_change_gain = lane_change_gain
        self.max_braking_imposed = max_braking_imposed
        self.min_gap = min_gap
        self.lane_change_cooldown = lane_change_cooldown
        self.yield_horizon = yield_horizon
        self.yield_distance = yield_distance
        self.yield_time_margin = yield_time_margin
        self.go_acceleration = go_acceleration
        self._last_lane_change = -math.inf

    def reset(self, seed: int) -> None:
        self._last_lane_change = -math.inf

    def decide(self, context: DrivingContext) -> Decision:
        env = context.env
        ego, road = env.vehicle, env.road
        now = context.step * DECISION_DT
        lane_change = None
        with _shadow_of(ego, road) as shadow:
            acceleration = self._idm_acceleration(shadow, ego, road)
            if context.scenario.crossing_traffic:
                acceleration = min(acceleration, self._yield_acceleration(shadow, ego, road))
            elif context.scenario.lateral and ego.lane_index == ego.target_lane_index:
                lane_change = self._lane_change(shadow, ego, road, acceleration)
        if lane_change and now - self._last_lane_change >= self.lane_change_cooldown and acceleration > -2:
            self._last_lane_change = now
            return Decision(lane_change)
        return Decision(_longitudinal_action(ego, acceleration, env.action_type))

    # Longitudinal control -------------------------------------------------------------------------------------------

    @staticmethod
    def _idm_acceleration(shadow, ego, road) -> float:
        leader, gap = _leader_along_route(ego, road)
        acceleration = _idm(shadow, leader, gap)
        if ego.target_lane_index != ego.lane_index:  # mid lane change: respect both lanes
            front, _ = road.neighbour_vehicles(shadow, ego.target_lane_index)
            acceleration = min(acceleration, shadow.acceleration(ego_vehicle=shadow, front_vehicle=front))
        return acceleration

    # Lane changes ---------------------------------------------------------------------------------------------------

    def _lane_change(self, shadow, ego, road, current_acceleration: float) -> str | None:
        network = road.network
        best, best_gain = None, self.lane_change_gain
        for lane_index in network.side_lanes(ego.lane_index):
            lane = network.get_lane(lane_index)
            if getattr(lane, "forbidden", False) or not lane.is_reachable_from(ego.position) or ego.speed < 1:
                continue
            new_front, new_rear = road.neighbour_vehicles(shadow, lane_index)
            if new_front is not None and shadow.lane_distance_to(new_front, lane) - shadow.LENGTH < self.min_gap:
                continue
            if new_rear is not None:
                if new_rear.lane_distance_to(shadow, lane) - shadow.LENGTH < self.min_gap:
                    continue
                if shadow.acceleration(ego_vehicle=new_rear, front_vehicle=shadow) < -self.max_braking_imposed:
                    continue
            new_acceleration = shadow.acceleration(ego_vehicle=shadow, front_vehicle=new_front)
            if new_acceleration < -self.max_braking_imposed:
                continue
            gain = new_acceleration - current_acceleration
            # Strictly better only: the left lane (checked first) wins ties.
            if gain > best_gain:
                best, best_gain = lane_index, gain
        if best is None:
            return None
        return "LANE_LEFT" if best[2] < ego.lane_index[2] else "LANE_RIGHT"

    # Yielding at intersections --------------------------------------------------------------------------------------

    def crossing_status(self, ego, road, *, ignore: tuple = ()) -> str | None:
        """What the yield rule sees at an intersection: `exit blocked` (approaching, and a slow vehicle stands on the
        route within the box or just beyond it), `conflict` (a vehicle would meet the ego if it went now) or
        `clear`; None on the exit road and away from intersections, where nothing crosses. `ignore`: vehicles left
        out (the ego's IDM shadow)."""
        stage = ego.lane_index[0]
        if not stage.startswith(("o", "ir")):
            return None  # on the exit road nothing crosses any more
        approaching = stage.startswith("o")
        if approaching and self._exit_blocked(ego, road, _distance_to_line(ego)):
            return CROSSING_EXIT_BLOCKED
        times = np.arange(DECISION_DT / 2, self.yield_horizon + 1e-9, DECISION_DT / 2)
        # The ego "goes": it accelerates comfortably from its current speed up to the cruise speed.
        cruise = float(ego.target_speeds[-1])
        ego_path = _route_samples(ego, road, _accelerating_distances(ego.speed, cruise, self.go_acceleration, times))
        for other in road.vehicles:
            if other is ego or any(other is v for v in ignore) or np.linalg.norm(other.position - ego.position) > 60:
                continue
            if _is_behind_in_same_direction(ego, other):
                continue  # followers are theirs to handle
            other_path = _poses_along_route(other, road, other.speed, times)
            if _paths_conflict(ego_path, other_path, times, self.yield_distance, self.yield_time_margin):
                return CROSSING_CONFLICT
        return CROSSING_CLEAR

    def _yield_acceleration(self, shadow, ego, road) -> float:
        """The acceleration the yield rule allows (`inf` when it does not constrain the ego)."""
        status = self.crossing_status(ego, road, ignore=(shadow,))
        if status in (None, CROSSING_CLEAR):
            return math.inf
        if ego.lane_index[0].startswith("o"):  # approaching: stop at the line
            return _stop_line_acceleration(shadow, _distance_to_line(ego))
        return math.inf if ego.speed > 1.0 else 0.0  # inside the box: clear it, never stop there

    @staticmethod
    def _exit_blocked(ego, road, to_line: float) -> bool:
        """Whether a slow vehicle stands on the ego's route within the box or just beyond it."""
        route_box = [index for index in (ego.route or []) if index[0].startswith("ir")]
        box_length = road.network.get_lane((*route_box[0][:2], 0)).length if route_box else 20.0
        leader, gap = _leader_along_route(ego, road, lookahead=to_line + box_length + 12.0)
        return leader is not None and leader.speed < 3.0 and gap > to_line


def _distance_to_line(ego) -> float:
    """Metres from the ego's centre to the stop line at the end of its approach lane."""
    return ego.lane.length - ego.lane.local_coordinates(ego.position)[0]


class _StandingObstacle:
    """A stopped point obstacle for IDM (a stop line)."""

    velocity = np.zeros(2)
    speed = 0.0


def _idm(shadow, leader, gap: float) -> float:
    """IDM acceleration of `shadow` behind `leader` at centre-to-centre distance `gap` (free road when no leader)."""
    acceleration = float(shadow.acceleration(ego_vehicle=shadow, front_vehicle=None))
    if leader is not None:
        desired = shadow.desired_gap(shadow, leader)
        acceleration -= shadow.COMFORT_ACC_MAX * (desired / max(gap, 1e-3)) ** 2
    return acceleration


def _stop_line_acceleration(shadow, to_line: float) -> float:
    """IDM acceleration that stops the ego's front bumper at a line `to_line` metres ahead of its centre."""
    # IDM settles at the jam distance (centre to centre); put the virtual obstacle so that this lands on the line.
    return _idm(shadow, _StandingObstacle, to_line + shadow.DISTANCE_WANTED - shadow.LENGTH / 2)


def _route_ahead(vehicle, network, segments: int = 3) -> list[tuple]:
    """The lane indexes the vehicle will drive: its planned route from the current lane on, else the chain of single
    successors of its lane (highway and merge roads), same lane id when it exists."""
    lane_index = vehicle.lane_index
    route = getattr(vehicle, "route", None)
    if route:
        for i, index in enumerate(route):
            if index[:2] == lane_index[:2]:
                return [lane_index] + list(route[i + 1 :])
    chain = [lane_index]
    while len(chain) < segments:
        _from, _to, _id = chain[-1]
        successors = list(network.graph.get(_to, {}))
        if len(successors) != 1:
            break
        lanes = network.graph[_to][successors[0]]
        chain.append((_to, successors[0], _id if _id < len(lanes) else len(lanes) - 1))
    return chain


def _poses_along_route(vehicle, road, speed: float, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (T, 2) and headings (T,) of a vehicle driving its route at constant `speed`."""
    return _route_samples(vehicle, road, speed * np.asarray(times))


def _route_samples(vehicle, road, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions and headings `distances` metres ahead of the vehicle along its route."""
    route = _route_ahead(vehicle, road.network)
    longitudinal = vehicle.lane.local_coordinates(vehicle.position)[0]
    poses = [
        road.network.position_heading_along_route(route, longitudinal + d, 0.0, vehicle.lane_index) for d in distances
    ]
    return np.array([p for p, _ in poses]), np.array([h for _, h in poses])


def _leader_along_route(ego, road, lookahead: float = 60.0) -> tuple[Any, float]:
    """The nearest vehicle (or obstacle) ahead on the ego's route, heading the same way, and its distance along the
    route (centre to centre); `(None, inf)` when there is none within `lookahead` metres."""
    distances = np.arange(1.0, lookahead + 1e-9, 1.0)
    points, headings = _route_samples(ego, road, distances)
    leader, leader_gap = None, math.inf
    for other in list(road.vehicles) + list(road.objects):
        if other is ego or getattr(other, "_is_shadow", False):
            continue
        offsets = np.linalg.norm(points - other.position, axis=1)
        k = int(np.argmin(offsets))
        if offsets[k] > 2.0 or distances[k] >= leader_gap:
            continue
        if abs(math.remainder(getattr(other, "heading", headings[k]) - headings[k], 2 * math.pi)) > math.radians(60):
            continue  # crossing traffic: the yield rule's business
        leader, leader_gap = other, float(distances[k])
    return leader, leader_gap


def _accelerating_distances(speed: float, cruise: float, acceleration: float, times: np.ndarray) -> np.ndarray:
    """Distance driven after each time when accelerating at `acceleration` from `speed` up to `cruise`."""
    times = np.asarray(times, dtype=np.float64)
    speed = max(float(speed), 0.0)
    ramp = max(0.0, (cruise - speed) / acceleration)
    accelerating = speed * times + 0.5 * acceleration * times**2
    cruising = speed * ramp + 0.5 * acceleration * ramp**2 + max(cruise, speed) * (times - ramp)
    return np.where(times <= ramp, accelerating, cruising)


def _paths_conflict(ego_poses, other_poses, times, distance: float, time_margin: float) -> bool:
    """Whether two predicted paths come within `distance` metres at times less than `time_margin` seconds apart,
    ignoring a vehicle that drives the other way on a parallel lane (its centre line is one lane width away)."""
    (ego_path, ego_headings), (other_path, other_headings) = ego_poses, other_poses
    gaps = np.linalg.norm(ego_path[:, None, :] - other_path[None, :, :], axis=2)
    close_in_time = np.abs(times[:, None] - times[None, :]) <= time_margin
    for i, j in zip(*np.nonzero((gaps < distance) & close_in_time)):
        heading_gap = abs(math.remainder(other_headings[j] - ego_headings[i], 2 * math.pi))
        offset = other_path[j] - ego_path[i]
        lateral = abs(-math.sin(ego_headings[i]) * offset[0] + math.cos(ego_headings[i]) * offset[1])
        if heading_gap > math.radians(150) and lateral > 2.5:
            continue
        return True
    return False


def _is_behind_in_same_direction(ego, other) -> bool:
    heading_gap = abs(math.remainder(other.heading - ego.heading, 2 * math.pi))
    longitudinal = float(np.dot(other.position - ego.position, ego.direction))
    return heading_gap < math.radians(30) and longitudinal < 0


@contextlib.contextmanager
def _shadow_of(ego, road) -> Iterator[Any]:
    """An IDM copy of the ego that takes its place in `road.vehicles` while the expert reasons (so that highway-env's
    neighbour search, which skips only the vehicle asking, does not find the ego itself)."""
    shadow = _ExpertIDM.create_from(ego)
    speeds = getattr(ego, "target_speeds", None)
    shadow.target_speed = float(speeds[-1]) if speeds is not None else ego.target_speed
    shadow._is_shadow = True
    index = next(i for i, v in enumerate(road.vehicles) if v is ego)
    road.vehicles[index] = shadow
    try:
        yield shadow
    finally:
        road.vehicles[index] = ego


def _make_expert_idm():
    from highway_env.vehicle.behavior import IDMVehicle

    class ExpertIDM(IDMVehicle):
        """IDM with fixed parameters (highway-env's intersection mutates IDMVehicle's class attributes)."""

        COMFORT_ACC_MAX = 3.0
        COMFORT_ACC_MIN = -5.0
        DISTANCE_WANTED = 5.0 + IDMVehicle.LENGTH
        TIME_WANTED = 1.5
        DELTA = 4.0

    return ExpertIDM


class _LazyExpertIDM:
    """Defers the highway-env import until the expert first drives (the module imports without the sim extra)."""

    _cls = None

    def create_from(self, vehicle):
        if _LazyExpertIDM._cls is None:
            _LazyExpertIDM._cls = _make_expert_idm()
        return _LazyExpertIDM._cls.create_from(vehicle)


_ExpertIDM = _LazyExpertIDM()


def _longitudinal_action(ego, desired_acceleration: float, action_type, horizon: float = 1.0) -> str:
    """The longitudinal meta-action whose speed after `horizon` seconds is closest to the one the desired acceleration
    reaches. Meta-actions set a target speed that a proportional controller tracks (`v' = (target - v) / TAU_ACC`),
    so the speed after `horizon` is `target + (v - target) * exp(-horizon / TAU_ACC)`; comparing speeds a second
    ahead, rather than initial accelerations, lets the expert accelerate gently on a 5 m/s target-speed grid."""
    speeds = ego.target_speeds
    current_index = ego.speed_to_index(ego.speed)
    candidates = {"IDLE": ego.target_speed}
    if "FASTER" in action_type.actions_indexes:
        candidates["FASTER"] = speeds[min(current_index + 1, len(speeds) - 1)]
    if "SLOWER" in action_type.actions_indexes:
        candidates["SLOWER"] = speeds[max(current_index - 1, 0)]
    decay = math.exp(-horizon / ego.TAU_ACC)
    reached = {name: target + (ego.speed - target) * decay for name, target in candidates.items()}
    wanted = max(ego.speed + desired_acceleration * horizon, 0.0)
    return min(reached, key=lambda name: (abs(reached[name] - wanted), name != "IDLE"))
