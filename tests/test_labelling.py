"""The meta-action labeller: every class in both modes, hand-computed, plus the frame helpers and bad input."""

import math

import numpy as np
import pytest

from alphadrive_trl.labelling import (
    LabellerThresholds,
    ego_frame,
    future_speeds,
    future_waypoints,
    label_trajectory,
    to_ego_frame,
    trajectory_features,
    try_label_trajectory,
    wrap_angle,
    yaw_from_quaternion,
)


def straight(steps, y=0.0):
    """Waypoints along x with the given step lengths (metres per 0.5 s)."""
    return [[float(x), y] for x in np.cumsum(steps)]


CRUISE = straight([5, 5, 5, 5, 5, 5])  # 10 m/s throughout
# Speeds 8, 6, 4, 2, 0.4, 0: max 8, end 0.
HARD_BRAKE_TO_STOP = straight([4, 3, 2, 1, 0.2, 0])
# Speeds 10, 9, 8, 7, 6, 5: end 5.
BRAKE = straight([5, 4.5, 4, 3.5, 3, 2.5])
# Speeds 10, 11, ..., 15: end 15.
ACCELERATION = straight([5, 5.5, 6, 6.5, 7, 7.5])
# Speeds 1, 0.8, 0.6, 0.4, 0.2, 0: max 1 (< 2), end 0 (< 0.5).
CREEP_TO_STOP = straight([0.5, 0.4, 0.3, 0.2, 0.1, 0])
# Left lane change: y ends at 4.2 m, last segment (4, 0.3) -> 4.29 deg.
LEFT_CHANGE = [[4, 0.1], [8, 0.5], [12, 1.5], [16, 2.8], [20, 3.9], [24, 4.2]]
RIGHT_CHANGE = [[x, -y] for x, y in LEFT_CHANGE]
# Left turn: ends 10 m to the left, last segment (1, 4) -> 76 deg.
LEFT_TURN = [[5, 0], [10, 0], [14, 1], [17, 3], [19, 6], [20, 10]]
RIGHT_TURN = [[x, -y] for x, y in LEFT_TURN]


@pytest.mark.parametrize(
    ("waypoints", "ego_speed", "senna", "heading"),
    [
        (CRUISE, 10.0, ("KEEP", "STRAIGHT"), ("KEEP", "STRAIGHT")),
        # senna: max 8 >= 2 and end - current = -10 -> DECELERATE; heading: end speed 0 < 0.5 -> STOP.
        (HARD_BRAKE_TO_STOP, 10.0, ("DECELERATE", "STRAIGHT"), ("STOP", "STRAIGHT")),
        (BRAKE, 10.0, ("DECELERATE", "STRAIGHT"), ("DECELERATE", "STRAIGHT")),
        (ACCELERATION, 10.0, ("ACCELERATE", "STRAIGHT"), ("ACCELERATE", "STRAIGHT")),
        (CREEP_TO_STOP, 1.0, ("STOP", "STRAIGHT"), ("STOP", "STRAIGHT")),
        # End speed hypot(4, 0.3) / 0.5 = 8.02 vs 8: KEEP.
        (LEFT_CHANGE, 8.0, ("KEEP", "LEFT_CHANGE"), ("KEEP", "LEFT_CHANGE")),
        (RIGHT_CHANGE, 8.0, ("KEEP", "RIGHT_CHANGE"), ("KEEP", "RIGHT_CHANGE")),
        # End speed hypot(1, 4) / 0.5 = 8.25 vs 10: change -1.75 -> KEEP in both.
        (LEFT_TURN, 10.0, ("KEEP", "LEFT_TURN"), ("KEEP", "LEFT_TURN")),
        (RIGHT_TURN, 10.0, ("KEEP", "RIGHT_TURN"), ("KEEP", "RIGHT_TURN")),
    ],
    ids=[
        "cruise",
        "hard-brake",
        "brake",
        "accelerate",
        "stop",
        "left-change",
        "right-change",
        "left-turn",
        "right-turn",
    ],
)
def test_every_class_in_both_modes(waypoints, ego_speed, senna, heading):
    assert label_trajectory(waypoints, ego_speed, mode="senna") == senna
    assert label_trajectory(waypoints, ego_speed, mode="heading") == heading


def test_modes_differ_where_the_rules_differ():
    # 3 m to the left, straight ahead: below senna's 4 m, above heading's 2.5 m.
    offset_3m = [[5, 0], [10, 0.5], [15, 1.5], [20, 2.5], [25, 3], [30, 3]]
    assert label_trajectory(offset_3m, 10.0, mode="senna") == ("KEEP", "STRAIGHT")
    assert label_trajectory(offset_3m, 10.0, mode="heading") == ("KEEP", "LEFT_CHANGE")
    # 4.5 m left and ending at 10 deg: senna calls it a turn (> 5 deg), heading a lane change (< 20 deg).
    headings = np.radians([0, 2, 5, 8, 10, 10])
    offset_turning = [[5, 0], [10, 0.5], [15, 1.5], [20, 3], [25, 4], [30, 4.5]]
    assert label_trajectory(offset_turning, 10.0, headings=headings) == ("KEEP", "LEFT_TURN")
    assert label_trajectory(offset_turning, 10.0, mode="heading", headings=headings) == ("KEEP", "LEFT_CHANGE")
    # Tight turn at low speed: 3 m left at 45 deg -> heading LEFT_TURN, senna STRAIGHT (offset < 4 m).
    tight = [[2, 0], [4, 0.2], [5.5, 0.8], [6.5, 1.5], [7.5, 2.3], [8.2, 3.0]]
    assert label_trajectory(tight, 4.0, mode="senna")[1] == "STRAIGHT"
    assert label_trajectory(tight, 4.0, mode="heading")[1] == "LEFT_TURN"


def test_speed_thresholds_are_inclusive():
    # End speed 6.5 / 0.5 = 13 vs current 10: change exactly 3.0 -> ACCELERATE in senna.
    assert label_trajectory(straight([5, 5, 5, 5, 5, 6.5]), 10.0) == ("ACCELERATE", "STRAIGHT")
    assert label_trajectory(straight([5, 5, 5, 5, 5, 6.25]), 10.0) == ("KEEP", "STRAIGHT")  # change 2.5
    # heading: change exactly +/-2 counts.
    assert label_trajectory(straight([5, 5, 5, 5, 5, 6]), 10.0, mode="heading")[0] == "ACCELERATE"
    assert label_trajectory(straight([5, 5, 5, 5, 5, 4]), 10.0, mode="heading")[0] == "DECELERATE"
    assert label_trajectory(straight([5, 5, 5, 5, 5, 4.5]), 10.0, mode="heading")[0] == "KEEP"
    # senna STOP needs the *max* speed below 2: 1 m steps are exactly 2 m/s -> not STOP.
    assert label_trajectory(straight([1, 1, 1, 1, 1, 1]), 2.0)[0] == "KEEP"
    # heading STOP: end speed 0.25 / 0.5 = 0.5 is not below 0.5 (and 0.5 - 3 <= -2: DECELERATE).
    assert label_trajectory(straight([1, 1, 1, 1, 1, 0.25]), 3.0, mode="heading")[0] == "DECELERATE"
    assert label_trajectory(straight([1, 1, 1, 1, 1, 0.2]), 3.0, mode="heading")[0] == "STOP"


def test_features_are_what_the_docstring_says():
    features = trajectory_features(HARD_BRAKE_TO_STOP, 10.0)
    assert features.speeds.tolist() == pytest.approx([8, 6, 4, 2, 0.4, 0])
    assert features.end_speed == 0.0
    assert features.max_speed == 8.0
    assert features.speed_change == -10.0
    # A stopped car's zero-length last step does not define the heading: the last moving segment (0.2 m along x) does.
    assert features.end_heading == 0.0
    left = trajectory_features(LEFT_TURN, 10.0)
    assert left.lateral_offset == 10.0
    assert left.end_heading == pytest.approx(math.atan2(4, 1))
    assert future_speeds([[1, 0], [1, 2]], dt=0.25).tolist() == [4.0, 8.0]


def test_given_headings_override_segment_direction():
    # Geometry says 76 deg; the given end heading says 2 deg -> a lane change in senna.
    headings = np.radians([0, 0, 10, 20, 10, 2])
    assert label_trajectory(LEFT_TURN, 10.0, headings=headings) == ("KEEP", "LEFT_CHANGE")
    # Headings are wrapped: 362 deg == 2 deg.
    assert label_trajectory(LEFT_TURN, 10.0, headings=headings + 2 * math.pi) == ("KEEP", "LEFT_CHANGE")


def test_standing_still_and_single_waypoint():
    assert label_trajectory([[0, 0]] * 6, 0.0, mode="senna") == ("STOP", "STRAIGHT")
    assert label_trajectory([[0, 0]] * 6, 0.0, mode="heading") == ("STOP", "STRAIGHT")
    assert label_trajectory([[5, 0]], 10.0) == ("KEEP", "STRAIGHT")
    assert label_trajectory([[5, 0], [10, 0]], 10.0, dt=1.0) == ("DECELERATE", "STRAIGHT")  # 5 m/s vs 10


def test_thresholds_are_overridable():
    assert label_trajectory(ACCELERATION, 10.0, thresholds=LabellerThresholds(senna_speed_change=6.0))[0] == "KEEP"
    assert label_trajectory(LEFT_CHANGE, 8.0, thresholds=LabellerThresholds(senna_lateral_offset=5.0)) == (
        "KEEP",
        "STRAIGHT",
    )
    wide = LabellerThresholds.from_overrides(["heading_turn_deg=80", "heading_lane_change_offset=20"])
    assert wide.heading_turn_deg == 80.0
    assert label_trajectory(LEFT_TURN, 10.0, mode="heading", thresholds=wide) == ("KEEP", "STRAIGHT")
    assert LabellerThresholds.from_overrides({"senna_stop_max_speed": "1.5"}).senna_stop_max_speed == 1.5
    assert LabellerThresholds.from_overrides(None) == LabellerThresholds()
    with pytest.raises(ValueError, match="Unknown labeller threshold.*valid names"):
        LabellerThresholds.from_overrides(["senna_speed=2"])
    with pytest.raises(ValueError, match="NAME=VALUE"):
        LabellerThresholds.from_overrides(["senna_speed_change"])
    with pytest.raises(ValueError, match="senna_speed_change must be a finite number"):
        LabellerThresholds(senna_speed_change=float("nan"))


@pytest.mark.parametrize(
    ("waypoints", "kwargs", "message"),
    [
        ([[1, 2, 3]], {}, r"shape \(N, 2\)"),
        (np.zeros((0, 2)), {}, r"shape \(N, 2\)"),
        ([1, 2], {}, r"shape \(N, 2\)"),
        ([[1, float("nan")]], {}, "NaN"),
        ("abc", {}, "N x 2"),
        (CRUISE, {"mode": "fancy"}, "Unknown labeller mode"),
        (CRUISE, {"dt": 0}, "dt must be > 0"),
        (CRUISE, {"headings": [0, 0]}, "one value per waypoint"),
    ],
)
def test_bad_input_raises_clearly_and_try_returns_none(waypoints, kwargs, message):
    with pytest.raises(ValueError, match=message):
        label_trajectory(waypoints, 5.0, **kwargs)
    assert try_label_trajectory(waypoints, 5.0, **kwargs) is None


def test_bad_ego_speed():
    with pytest.raises(ValueError, match="ego_speed must be finite"):
        label_trajectory(CRUISE, float("inf"))
    with pytest.raises(ValueError, match="ego_speed must be a number"):
        label_trajectory(CRUISE, "fast")
    assert try_label_trajectory(CRUISE, None) is None
    assert try_label_trajectory(None, 3.0) is None
    assert try_label_trajectory(CRUISE, 10.0, mode="heading") == ("KEEP", "STRAIGHT")


def test_world_to_ego_frame():
    # A car at (10, 20) facing north: a point 5 m north is 5 m ahead; a point 5 m west is 5 m to its left.
    local = to_ego_frame([[10, 25], [5, 20], [15, 20]], [10, 20], math.pi / 2)
    np.testing.assert_allclose(local, [[5, 0], [0, 5], [0, -5]], atol=1e-12)
    positions = [[10, 20], [10, 25], [5, 30]]
    yaws = [math.pi / 2, math.pi / 2, math.pi]
    local, local_yaws = ego_frame(positions, yaws, 0)
    np.testing.assert_allclose(local, [[0, 0], [5, 0], [10, 5]], atol=1e-12)
    np.testing.assert_allclose(local_yaws, [0, 0, math.pi / 2], atol=1e-12)
    with pytest.raises(IndexError, match="out of range"):
        ego_frame(positions, yaws, 3)
    with pytest.raises(ValueError, match="differ in length"):
        ego_frame(positions, yaws[:2], 0)


def test_future_waypoints_in_a_rotated_world_gives_the_same_labels():
    # The LEFT_TURN track, placed at (100, -50) and rotated by 135 deg in the world, preceded by the current pose.
    angle = math.radians(135)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    track = np.vstack([[0, 0], LEFT_TURN]) @ rotation.T + [100, -50]
    yaws = np.full(len(track), angle)
    waypoints, headings = future_waypoints(track, yaws, 0, horizon=6)
    np.testing.assert_allclose(waypoints, LEFT_TURN, atol=1e-9)
    np.testing.assert_allclose(headings, 0, atol=1e-12)
    assert label_trajectory(waypoints, 10.0) == ("KEEP", "LEFT_TURN")
    assert future_waypoints(track, yaws, 1, horizon=6) is None  # only 5 poses after index 1


def test_angles():
    assert yaw_from_quaternion([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)]) == pytest.approx(math.pi / 2)
    assert yaw_from_quaternion([1, 0, 0, 0]) == 0.0
    assert wrap_angle(3 * math.pi / 2) == pytest.approx(-math.pi / 2)
    assert wrap_angle(-math.pi) == pytest.approx(math.pi)
    np.testing.assert_allclose(wrap_angle(np.array([2 * math.pi + 0.1, -0.1])), [0.1, -0.1])


def test_angle_thresholds_are_inclusive_despite_rounding():
    # math.degrees(math.radians(20)) is 19.999999999999996: still a turn.
    ahead = [[5, 0], [10, 0], [15, 0], [20, 0], [25, 0], [30, 0]]
    headings = [0, 0, 0, 0, 0, math.radians(20)]
    assert label_trajectory(ahead, 10.0, mode="heading", headings=headings) == ("KEEP", "LEFT_TURN")
    headings = [0, 0, 0, 0, 0, math.radians(-19.9)]
    assert label_trajectory(ahead, 10.0, mode="heading", headings=headings) == ("KEEP", "STRAIGHT")
    # senna: exactly 5 deg at a 4 m offset is still a lane change.
    offset = [[5, 0], [10, 1], [15, 2], [20, 3], [25, 4], [30, 4]]
    assert label_trajectory(offset, 10.0, headings=[0, 0, 0, 0, 0, math.radians(5)]) == ("KEEP", "LEFT_CHANGE")
    assert label_trajectory(offset, 10.0, headings=[0, 0, 0, 0, 0, math.radians(5.1)]) == ("KEEP", "LEFT_TURN")
