"""What a driver would cite about the ego's situation in highway-env, read from the live simulator.

`SceneState` holds the few facts a driver would cite: the vehicle ahead and its gap, whether the adjacent lanes are
free, the route, where the ego is with respect to the intersection and how many vehicles cross its path.
`scene_state` reads one from a live environment at a decision; `scene_description` says it in words. The data
builder (`data_prep.highway_env`) derives a row's reasoning and feasible plans from the same state, and a checkpoint
trained with the `answer_only_facts` prompt template reads the description in its prompt (the privileged-perception
variant of `make sim-demo`: docs/closed_loop.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .expert import CROSSING_CLEAR, CROSSING_CONFLICT, CROSSING_EXIT_BLOCKED, ExpertPolicy, _leader_along_route

LANE_NONE, LANE_FREE, LANE_OCCUPIED = "none", "free", "occupied"
# Beyond this time gap the vehicle ahead does not constrain the ego (IDM's 1.5 s time headway, with a margin).
FREE_ROAD_HEADWAY = 3.0  # seconds
FREE_ROAD_MIN_GAP = 30.0  # metres: at low speed a vehicle this close still matters
LANE_CHANGE_MIN_GAP = 8.0  # metres bumper to bumper, front and rear, for a lane to count as free
CROSSING_RADIUS = 30.0  # metres: crossing vehicles nearer than this are cited at the intersection


@dataclass(frozen=True)
class SceneState:
    """The ego's situation at one decision (distances in metres, speeds in m/s).

    `lead_gap` is bumper to bumper along the ego's route (None: no vehicle ahead within sight). `left_lane` and
    `right_lane` are `none` (no drivable lane there), `free` or `occupied`. `intersection` is None on the highway
    and merge roads, else `approaching`, `inside` or `exiting`; `crossing_vehicles` counts vehicles near the box whose
    heading crosses the ego's; `crossing` is what the expert's yield rule sees before and in the box (`clear`,
    `conflict`: a vehicle would meet the ego if it went now, `exit blocked`), None where nothing crosses any more.
    """

    scenario: str
    ego_speed: float
    cruise_speed: float
    navigation: str = "go straight"
    lanes: int = 1
    lead_gap: float | None = None
    lead_speed: float | None = None
    left_lane: str = LANE_NONE
    right_lane: str = LANE_NONE
    intersection: str | None = None
    crossing_vehicles: int = 0
    crossing: str | None = None

    @property
    def lead_is_close(self) -> bool:
        """Whether the vehicle ahead constrains the ego (within the free-road headway)."""
        if self.lead_gap is None:
            return False
        return self.lead_gap < max(FREE_ROAD_MIN_GAP, FREE_ROAD_HEADWAY * self.ego_speed)

    @property
    def free_sides(self) -> tuple[str, ...]:
        """Adjacent sides (`left`, `right`) with a free lane."""
        return tuple(
            side for side, lane in (("left", self.left_lane), ("right", self.right_lane)) if lane == LANE_FREE
        )


# --- in words ---------------------------------------------------------------------------------------------------------


def _road_sentence(state: SceneState) -> str:
    if state.intersection is None:
        road = "merge section" if state.scenario == "merge" else "highway"
        return f"On a {state.lanes}-lane {road} at {state.ego_speed:.0f} m/s (cruise {state.cruise_speed:.0f} m/s)."
    where = {
        "approaching": "Approaching an unsignalised intersection",
        "inside": "Inside the intersection",
        "exiting": "Leaving the intersection",
    }[state.intersection]
    return f"{where} at {state.ego_speed:.0f} m/s; the route says {state.navigation}."


def _lead_sentence(state: SceneState) -> str:
    if state.lead_gap is None or state.lead_speed is None:
        return "My lane is clear ahead."
    relation = "slower than me" if state.lead_speed < state.ego_speed - 1 else "not slower than me"
    closeness = "close" if state.lead_is_close else "far"
    return (
        f"A vehicle is {state.lead_gap:.0f} m ahead ({closeness}) at {state.lead_speed:.0f} m/s, {relation}."
    )  # fmt: skip


def _lanes_sentence(state: SceneState) -> str:
    parts = []
    for side, lane in (("left", state.left_lane), ("right", state.right_lane)):
        parts.append(f"no lane on the {side}" if lane == LANE_NONE else f"the {side} lane is {lane}")
    return (parts[0][0].upper() + parts[0][1:]) + "; " + parts[1] + "."


_CROSSING_SENTENCES = {
    CROSSING_CLEAR: "The gap in the crossing traffic is large enough to go.",
    CROSSING_CONFLICT: "A crossing vehicle would meet me if I went now.",
    CROSSING_EXIT_BLOCKED: "The road beyond the box is blocked.",
}


def _crossing_sentence(state: SceneState) -> str:
    if state.crossing_vehicles == 0:
        sentence = "No vehicle crosses my path."
    else:
        noun = "vehicle crosses" if state.crossing_vehicles == 1 else "vehicles cross"
        sentence = f"{state.crossing_vehicles} {noun} my path near the box."
    if state.crossing is not None:
        sentence += " " + _CROSSING_SENTENCES[state.crossing]
    return sentence


def scene_description(state: SceneState) -> str:
    """The facts of `state` in words: the road and the ego's speed, the vehicle ahead, then the adjacent lanes (highway
    and merge) or the crossing traffic (intersection).

    Example:
        >>> state = SceneState("highway", 28.0, 30.0, lanes=3, lead_gap=20.0, lead_speed=21.0, left_lane="free",
        ...                    right_lane="occupied")
        >>> print(scene_description(state))
        On a 3-lane highway at 28 m/s (cruise 30 m/s). A vehicle is 20 m ahead (close) at 21 m/s, slower than me. The left lane is free; the right lane is occupied.
    """
    sentences = [_road_sentence(state), _lead_sentence(state)]
    sentences.append(_lanes_sentence(state) if state.intersection is None else _crossing_sentence(state))
    return " ".join(sentences)


# --- reading a state from the simulator ------------------------------------------------------------------------------


def scene_state(env: Any, scenario: Any, navigation: str, ego_speed: float) -> SceneState:
    """The `SceneState` of the unwrapped highway-env `env` at the current decision (`scenario`: a
    `closed_loop.Scenario`)."""
    ego, road = env.vehicle, env.road
    leader, centre_gap = _leader_along_route(ego, road)
    lead_gap = None if leader is None else max(0.0, centre_gap - ego.LENGTH)
    lead_speed = None if leader is None else float(getattr(leader, "speed", 0.0))
    speeds = getattr(ego, "target_speeds", None)
    cruise = float(speeds[-1]) if speeds is not None else float(ego.target_speed)
    state = {
        "scenario": scenario.name,
        "ego_speed": max(0.0, float(ego_speed)),
        "cruise_speed": cruise,
        "navigation": navigation,
        "lead_gap": lead_gap,
        "lead_speed": lead_speed,
    }
    if scenario.crossing_traffic:
        state["intersection"] = _intersection_stage(ego)
        state["crossing_vehicles"] = _crossing_vehicles(ego, road)
        state["crossing"] = _YIELD_RULE.crossing_status(ego, road)
    else:
        state["lanes"] = len(road.network.all_side_lanes(ego.lane_index))
        state["left_lane"] = _side_lane_status(ego, road, -1)
        state["right_lane"] = _side_lane_status(ego, road, +1)
    return SceneState(**state)


# The data's expert (default settings): its yield rule judges the gaps in the crossing traffic.
_YIELD_RULE = ExpertPolicy()


def _intersection_stage(ego) -> str:
    stage = ego.lane_index[0]
    if stage.startswith("o"):
        return "approaching"
    return "inside" if stage.startswith("ir") else "exiting"


def _crossing_vehicles(ego, road) -> int:
    count = 0
    for other in road.vehicles:
        if other is ego or math.dist(other.position, ego.position) > CROSSING_RADIUS:
            continue
        heading_gap = abs(math.remainder(other.heading - ego.heading, 2 * math.pi))
        if math.radians(30) < heading_gap < math.radians(150):
            count += 1
    return count


def _side_lane_status(ego, road, step: int) -> str:
    """`none`, `free` or `occupied` for the lane `step` (-1 left, +1 right) of the ego's lane."""
    _from, _to, lane_id = ego.lane_index
    lane_index = (_from, _to, lane_id + step)
    if lane_index not in road.network.side_lanes(ego.lane_index):
        return LANE_NONE
    lane = road.network.get_lane(lane_index)
    if getattr(lane, "forbidden", False) or not lane.is_reachable_from(ego.position):
        return LANE_NONE
    front, rear = road.neighbour_vehicles(ego, lane_index)
    for vehicle, gap in ((front, _gap(ego, front, lane)), (rear, _gap(rear, ego, lane))):
        if vehicle is not None and gap < LANE_CHANGE_MIN_GAP:
            return LANE_OCCUPIED
    return LANE_FREE


def _gap(behind, ahead, lane) -> float:
    if behind is None or ahead is None:
        return math.inf
    return behind.lane_distance_to(ahead, lane) - behind.LENGTH
