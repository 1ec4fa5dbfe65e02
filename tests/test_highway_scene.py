"""data_prep.highway_scene: templated reasoning and feasible plans from hand-built simulator states."""

from __future__ import annotations

import dataclasses

import pytest

from alphadrive_trl.closed_loop.scene import SceneState, scene_description
from data_prep.highway_scene import feasible_plans, scene_reasoning

CLOSE_SLOWER_LEAD = SceneState(
    "highway", 28.0, 30.0, lanes=3, lead_gap=20.0, lead_speed=21.0, left_lane="free", right_lane="occupied"
)
FREE_ROAD = SceneState("highway", 20.0, 30.0, lanes=2, left_lane="occupied")
WAITING_AT_INTERSECTION = SceneState(
    "intersection", 0.5, 9.0, navigation="turn left at the next intersection", intersection="approaching",
    crossing_vehicles=2,
)  # fmt: skip


def test_reasoning_cites_lead_gap_lanes_and_plan():
    assert scene_reasoning(CLOSE_SLOWER_LEAD, "DECELERATE", "STRAIGHT") == (
        "On a 3-lane highway at 28 m/s (cruise 30 m/s). A vehicle is 20 m ahead (close) at 21 m/s, slower than me. "
        "The left lane is free; the right lane is occupied. So I slow down and stay in my lane."
    )


def test_reasoning_free_road_and_missing_lane():
    assert scene_reasoning(FREE_ROAD, "ACCELERATE", "STRAIGHT") == (
        "On a 2-lane highway at 20 m/s (cruise 30 m/s). My lane is clear ahead. "
        "The left lane is occupied; no lane on the right. So I accelerate and stay in my lane."
    )


def test_reasoning_merge_names_the_road():
    state = SceneState("merge", 25.0, 30.0, lanes=2, lead_gap=80.0, lead_speed=26.0, right_lane="free")
    assert scene_reasoning(state, "KEEP", "RIGHT_CHANGE") == (
        "On a 2-lane merge section at 25 m/s (cruise 30 m/s). A vehicle is 80 m ahead (far) at 26 m/s, not slower "
        "than me. No lane on the left; the right lane is free. So I keep my speed and change to the right lane."
    )


def test_reasoning_at_the_intersection_cites_route_and_crossing_traffic():
    assert scene_reasoning(WAITING_AT_INTERSECTION, "STOP", "STRAIGHT") == (
        "Approaching an unsignalised intersection at 0 m/s; the route says turn left at the next intersection. "
        "My lane is clear ahead. 2 vehicles cross my path near the box. So I stop and stay in my lane."
    )
    inside = SceneState("intersection", 7.0, 9.0, navigation="go straight", intersection="inside", crossing_vehicles=1)
    assert scene_reasoning(inside, "KEEP", "LEFT_TURN") == (
        "Inside the intersection at 7 m/s; the route says go straight. My lane is clear ahead. "
        "1 vehicle crosses my path near the box. So I keep my speed and turn left."
    )


def test_lead_is_close_uses_the_headway_and_a_minimum_gap():
    assert SceneState("highway", 30.0, 30.0, lead_gap=80.0, lead_speed=20.0).lead_is_close  # 80 m < 3 s x 30 m/s
    assert not SceneState("highway", 20.0, 30.0, lead_gap=70.0, lead_speed=20.0).lead_is_close
    assert SceneState("highway", 2.0, 30.0, lead_gap=25.0, lead_speed=0.0).lead_is_close  # under 30 m at any speed
    assert not FREE_ROAD.lead_is_close


@pytest.mark.parametrize(
    ("state", "plan", "expected"),
    [
        # Behind a close, slower vehicle: slowing down, or a change to the free left lane (the right one is occupied).
        (CLOSE_SLOWER_LEAD, ("DECELERATE", "STRAIGHT"), ["KEEP, LEFT_CHANGE", "DECELERATE, STRAIGHT"]),
        (CLOSE_SLOWER_LEAD, ("KEEP", "STRAIGHT"), ["KEEP, STRAIGHT", "KEEP, LEFT_CHANGE"]),
        # The expert overtakes: slowing down behind the vehicle ahead would also be safe.
        (CLOSE_SLOWER_LEAD, ("KEEP", "LEFT_CHANGE"), ["KEEP, LEFT_CHANGE", "DECELERATE, STRAIGHT"]),
        # Free road below the cruise speed: KEEP and ACCELERATE are both fine; no lane change is suggested.
        (FREE_ROAD, ("ACCELERATE", "STRAIGHT"), ["KEEP, STRAIGHT", "ACCELERATE, STRAIGHT"]),
        (FREE_ROAD, ("KEEP", "STRAIGHT"), ["KEEP, STRAIGHT", "ACCELERATE, STRAIGHT"]),
        # At the cruise speed there is nothing to accelerate to.
        (SceneState("highway", 30.0, 30.0, lanes=2), ("KEEP", "STRAIGHT"), ["KEEP, STRAIGHT"]),
        # STOP and DECELERATE near standstill lead to the same stop; no lane alternatives at the intersection.
        (WAITING_AT_INTERSECTION, ("STOP", "STRAIGHT"), ["DECELERATE, STRAIGHT", "STOP, STRAIGHT"]),
        (WAITING_AT_INTERSECTION, ("DECELERATE", "STRAIGHT"), ["DECELERATE, STRAIGHT", "STOP, STRAIGHT"]),
        (WAITING_AT_INTERSECTION, ("ACCELERATE", "STRAIGHT"), ["ACCELERATE, STRAIGHT"]),
    ],
)
def test_feasible_plans(state, plan, expected):
    assert feasible_plans(state, *plan) == expected


def test_a_lead_that_is_not_slower_offers_no_lane_change():
    state = SceneState("highway", 25.0, 30.0, lead_gap=20.0, lead_speed=26.0, left_lane="free", right_lane="free")
    assert feasible_plans(state, "KEEP", "STRAIGHT") == ["KEEP, STRAIGHT"]


def test_free_sides():
    assert CLOSE_SLOWER_LEAD.free_sides == ("left",)
    assert SceneState("merge", 1.0, 30.0, left_lane="free", right_lane="free").free_sides == ("left", "right")


def test_scene_description_is_the_reasoning_without_the_decision():
    assert scene_description(CLOSE_SLOWER_LEAD) == (
        "On a 3-lane highway at 28 m/s (cruise 30 m/s). A vehicle is 20 m ahead (close) at 21 m/s, slower than me. "
        "The left lane is free; the right lane is occupied."
    )
    assert scene_description(WAITING_AT_INTERSECTION) == (
        "Approaching an unsignalised intersection at 0 m/s; the route says turn left at the next intersection. "
        "My lane is clear ahead. 2 vehicles cross my path near the box."
    )
    # What the expert's yield rule sees, where it was read from the simulator.
    for crossing, sentence in (
        ("clear", "The gap in the crossing traffic is large enough to go."),
        ("conflict", "A crossing vehicle would meet me if I went now."),
        ("exit blocked", "The road beyond the box is blocked."),
    ):
        state = dataclasses.replace(WAITING_AT_INTERSECTION, crossing=crossing)
        assert scene_description(state) == scene_description(WAITING_AT_INTERSECTION) + " " + sentence
    for state in (CLOSE_SLOWER_LEAD, FREE_ROAD, WAITING_AT_INTERSECTION):
        for speed, path in (("KEEP", "STRAIGHT"), ("STOP", "LEFT_TURN")):
            reasoning = scene_reasoning(state, speed, path)
            assert reasoning.startswith(scene_description(state) + " So I ")
            # The description never states the decision: no plan word leaks into a privileged prompt.
            assert not any(word in scene_description(state) for word in ("So I", "slow down", "stop", "accelerate"))
