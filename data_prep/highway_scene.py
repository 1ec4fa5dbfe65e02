"""The dataset columns a highway-env rollout derives from what the expert saw at a decision.

Two pure functions of a `SceneState` (`alphadrive_trl.closed_loop.scene`: the vehicle ahead and its gap, the adjacent
lanes, the route, the intersection) and the expert's plan fill the dataset columns the simulator can know:

- `scene_reasoning`: a templated explanation (the SFT target of the reasoning variant);
- `feasible_plans`: the expert's plan plus the alternatives the situation allows (a lane change the gaps allow as
  well as slowing down behind the vehicle ahead; STOP and DECELERATE near standstill; KEEP and ACCELERATE on a free
  road below the cruise speed).

Both are testable with hand-built states; `alphadrive_trl.closed_loop.scene.scene_state` reads a state from a live
environment (`sim` extra), and `scene_description` (the row's `scene_facts`) says it in words.
"""

from __future__ import annotations

from alphadrive_trl.actions import ALL_PLANS, plan_to_string
from alphadrive_trl.closed_loop.scene import SceneState, scene_description
from data_prep.distill_reasoning import PATH_PHRASES

NEAR_STANDSTILL = 3.0  # m/s: below it STOP and DECELERATE lead to the same stop


# --- reasoning --------------------------------------------------------------------------------------------------------

_SPEED_PHRASES = {
    "KEEP": "keep my speed",
    "ACCELERATE": "accelerate",
    "DECELERATE": "slow down",
    "STOP": "stop",
}


def scene_reasoning(state: SceneState, speed: str, path: str) -> str:
    """A templated explanation of the plan `(speed, path)` from the facts of `state`.

    Example:
        >>> state = SceneState("highway", 28.0, 30.0, lanes=3, lead_gap=20.0, lead_speed=21.0, left_lane="free",
        ...                    right_lane="occupied")
        >>> print(scene_reasoning(state, "KEEP", "LEFT_CHANGE"))
        On a 3-lane highway at 28 m/s (cruise 30 m/s). A vehicle is 20 m ahead (close) at 21 m/s, slower than me. The left lane is free; the right lane is occupied. So I keep my speed and change to the left lane.
    """
    return f"{scene_description(state)} So I {_SPEED_PHRASES[speed]} and {PATH_PHRASES[path]}."


# --- feasible plans ---------------------------------------------------------------------------------------------------


def feasible_plans(state: SceneState, speed: str, path: str) -> list[str]:
    """The expert's plan `(speed, path)` and the alternatives `state` allows, as `"SPEED, PATH"` strings in the
    vocabulary order (the same form as the synthetic source's `feasible_actions`).

    - STOP and DECELERATE are interchangeable below `NEAR_STANDSTILL` m/s or when the expert stops (both slow the ego
      down one target speed per decision in the simulator).
    - A lane change is also acceptable as slowing down behind the vehicle ahead, and staying behind a close, slower
      vehicle is also acceptable as a change to a free adjacent lane (highway and merge only).
    - With no close vehicle ahead and below the cruise speed (not at an intersection), KEEP and ACCELERATE are both
      fine.

    Example:
        >>> state = SceneState("highway", 28.0, 30.0, lanes=3, lead_gap=20.0, lead_speed=21.0, left_lane="free")
        >>> feasible_plans(state, "DECELERATE", "STRAIGHT")
        ['KEEP, LEFT_CHANGE', 'DECELERATE, STRAIGHT']
    """
    plans = {(speed, path)}
    if speed == "STOP" or (speed == "DECELERATE" and state.ego_speed < NEAR_STANDSTILL):
        plans.add(("DECELERATE" if speed == "STOP" else "STOP", path))
    if state.intersection is None:
        plans |= _lane_alternatives(state, speed, path)
        if not state.lead_is_close and state.ego_speed < state.cruise_speed - 1 and speed in ("KEEP", "ACCELERATE"):
            plans.add(("ACCELERATE" if speed == "KEEP" else "KEEP", path))
    return [plan_to_string(s, p) for s, p in ALL_PLANS if (s, p) in plans]


def _lane_alternatives(state: SceneState, speed: str, path: str) -> set[tuple[str, str]]:
    alternatives: set[tuple[str, str]] = set()
    slower_lead = state.lead_speed is not None and state.lead_speed < state.ego_speed - 1
    if path in ("LEFT_CHANGE", "RIGHT_CHANGE") and state.lead_is_close:
        alternatives.add(("DECELERATE", "STRAIGHT"))
    if path == "STRAIGHT" and speed in ("KEEP", "DECELERATE") and state.lead_is_close and slower_lead:
        alternatives |= {("KEEP", f"{side.upper()}_CHANGE") for side in state.free_sides}
    return alternatives
