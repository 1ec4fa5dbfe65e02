"""Trajectory mode: answer format, parser, L2 metrics, plausibility, derived meta-actions, format check."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alphadrive_trl.actions import EMPTY_ANSWER, AnswerWords
from alphadrive_trl.rewards import (
    REWARD_REGISTRY,
    format_trajectory_reward,
    format_trajectory_reward_strict,
    get_reward_funcs,
    make_trajectory_planning_reward,
    path_planning_trajectory_reward,
    speed_planning_reward,
    speed_planning_trajectory_reward,
    trajectory_accuracy_reward,
    trajectory_consistency_reward,
)
from alphadrive_trl.trajectory import (
    L2_METRIC_NAMES,
    TRAJECTORY_DT,
    TRAJECTORY_HORIZON,
    TRAJECTORY_TIMES,
    as_waypoints,
    derived_answer_words,
    format_trajectory,
    is_plausible,
    is_trajectory_format,
    l2_errors,
    parse_trajectory,
)

# 10 m/s straight ahead.
STRAIGHT = [[5.0, 0.0], [10.0, 0.0], [15.0, 0.0], [20.0, 0.0], [25.0, 0.0], [30.0, 0.0]]
STRAIGHT_BLOCK = "<trajectory> [5.0,0.0] [10.0,0.0] [15.0,0.0] [20.0,0.0] [25.0,0.0] [30.0,0.0] </trajectory>"
GOOD = f"<think> clear road </think> <answer> KEEP, STRAIGHT </answer> {STRAIGHT_BLOCK}"


def test_constants():
    assert TRAJECTORY_HORIZON == 6
    assert TRAJECTORY_DT == 0.5
    assert TRAJECTORY_TIMES == (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
    assert L2_METRIC_NAMES == ("l2_1s", "l2_2s", "l2_3s", "ade", "fde")


# --- format_trajectory -------------------------------------------------------------------------------------------


def test_format_trajectory_one_decimal_and_no_negative_zero():
    text = format_trajectory([[2.04, 0.0], [4.1, 0.02], [6.25, -0.04], [8.3, -0.1], [10.44, 0.2], [12.5, -3.36]])
    assert text == "<trajectory> [2.0,0.0] [4.1,0.0] [6.2,0.0] [8.3,-0.1] [10.4,0.2] [12.5,-3.4] </trajectory>"


def test_format_trajectory_accepts_arrays_and_tuples():
    assert format_trajectory(np.array(STRAIGHT)) == STRAIGHT_BLOCK
    assert format_trajectory(tuple(tuple(p) for p in STRAIGHT)) == STRAIGHT_BLOCK


@pytest.mark.parametrize(
    "bad",
    [
        STRAIGHT[:5],
        STRAIGHT + [[35.0, 0.0]],
        [[1.0, 2.0, 3.0]] * 6,
        [[1.0, float("nan")]] * 6,
        "abc",
        None,
        [[1, "x"]],
    ],
)
def test_format_trajectory_rejects_bad_waypoints(bad):
    with pytest.raises(ValueError, match="aypoints"):
        format_trajectory(bad)


def test_format_then_parse_round_trips_to_one_decimal():
    rng = np.random.default_rng(0)
    points = rng.uniform(-30, 30, size=(6, 2))
    assert np.allclose(parse_trajectory(format_trajectory(points)), np.round(points, 1), atol=1e-9)


# --- parse_trajectory ------------------------------------------------------------------------------------------


def test_parse_canonical_completion():
    parsed = parse_trajectory(GOOD)
    assert parsed.shape == (6, 2) and parsed.dtype == np.float64
    assert parsed.tolist() == STRAIGHT


def test_parse_last_block_wins():
    first = "<trajectory> [1,1] [2,2] [3,3] [4,4] [5,5] [6,6] </trajectory>"
    assert parse_trajectory(f"{first} then {STRAIGHT_BLOCK}").tolist() == STRAIGHT
    # A later block with the wrong count wins too (and is invalid): no fallback to the earlier one.
    assert parse_trajectory(f"{STRAIGHT_BLOCK} <trajectory> [1,1] </trajectory>") is None


def test_parse_lenient_forms():
    assert parse_trajectory(
        "<TRAJECTORY>(5, 0) (10,0)(15 ,0) [20,0] [ 25 , 0 ] [30.00,-0.]</Trajectory>"
    ).tolist() == [
        [5, 0],
        [10, 0],
        [15, 0],
        [20, 0],
        [25, 0],
        [30, 0],
    ]
    assert parse_trajectory("<trajectory> [+1.5,-.5] [2,0] [3,0] [4,0] [5,0] [6,0]")[0].tolist() == [1.5, -0.5]


def test_parse_unclosed_block_after_a_closed_one_wins():
    text = f"{STRAIGHT_BLOCK} <trajectory> [1,0] [2,0] [3,0] [4,0] [5,0] [6,0]"
    assert parse_trajectory(text)[:, 0].tolist() == [1, 2, 3, 4, 5, 6]


def test_parse_conversational_completion():
    completion = [{"role": "assistant", "content": GOOD}]
    assert parse_trajectory(completion).tolist() == STRAIGHT


@pytest.mark.parametrize(
    "junk",
    [
        None,
        42,
        "",
        "no block here [1,2] [3,4] [5,6] [7,8] [9,10] [11,12]",
        "<trajectory> [1,0] [2,0] [3,0] [4,0] [5,0] </trajectory>",
        "<trajectory> [1,0] [2,0] [3,0] [4,0] [5,0] [6,0] [7,0] </trajectory>",
        "<trajectory> [1e3,0] [2,0] [3,0] [4,0] [5,0] [6,0] </trajectory>",
        "<trajectory> [nan,0] [inf,0] [3,0] [4,0] [5,0] [6,0] </trajectory>",
        f"<trajectory> [{'9' * 400},0] [2,0] [3,0] [4,0] [5,0] [6,0] </trajectory>",
        [{"role": "assistant", "content": None}],
    ],
)
def test_parse_junk_is_none(junk):
    assert parse_trajectory(junk) is None


def test_as_waypoints():
    assert as_waypoints(STRAIGHT).tolist() == STRAIGHT
    assert as_waypoints(None) is None
    assert as_waypoints(STRAIGHT[:3]) is None
    assert as_waypoints([[1, float("inf")]] * 6) is None
    assert as_waypoints("abc") is None


# --- l2_errors --------------------------------------------------------------------------------------------------


def test_l2_errors_hand_computed():
    gt = [[2, 0], [4, 0], [6, 0], [8, 0], [10, 0], [12, 0]]
    # Errors per waypoint: 0, 5 (3-4-5) at 1 s, 0, 1 at 2 s, 0, 10 (6-8-10) at 3 s.
    pred = [[2, 0], [7, 4], [6, 0], [8, 1], [10, 0], [18, 8]]
    errors = l2_errors(pred, gt)
    assert set(errors) == set(L2_METRIC_NAMES)
    assert errors["l2_1s"] == 5.0
    assert errors["l2_2s"] == 1.0
    assert errors["l2_3s"] == 10.0
    assert errors["fde"] == 10.0
    assert errors["ade"] == pytest.approx(16 / 6)


def test_l2_errors_perfect_is_zero():
    assert l2_errors(STRAIGHT, np.array(STRAIGHT)) == {
        "l2_1s": 0.0,
        "l2_2s": 0.0,
        "l2_3s": 0.0,
        "ade": 0.0,
        "fde": 0.0,
    }


def test_l2_errors_rejects_bad_shapes():
    with pytest.raises(ValueError, match="`pred` must have shape"):
        l2_errors(STRAIGHT[:5], STRAIGHT)
    with pytest.raises(ValueError, match="`gt` must be finite"):
        l2_errors(STRAIGHT, [[1, float("nan")]] * 6)


# --- is_plausible ------------------------------------------------------------------------------------------------


def test_plausible_constant_speed_and_a_gentle_turn():
    assert is_plausible(STRAIGHT)
    assert is_plausible(STRAIGHT, ego_speed=10.0)
    turn = [[4, 0], [8, 0.3], [11.5, 1.2], [14.5, 2.7], [16.8, 4.6], [18.5, 6.8]]
    assert is_plausible(turn, ego_speed=8.0)


def test_plausible_speed_limit():
    # 20 m per step = 40 m/s: on the limit; 20.5 m per step = 41 m/s: beyond.
    assert is_plausible([[20.0 * (i + 1), 0.0] for i in range(6)])
    assert not is_plausible([[20.5 * (i + 1), 0.0] for i in range(6)])
    assert is_plausible([[20.5 * (i + 1), 0.0] for i in range(6)], max_speed=41.0)


def test_plausible_acceleration_limit():
    # Steps 5, 7.5, ... m: speed 10 -> 15 m/s in 0.5 s = 10 m/s^2 (on the limit), then constant.
    on_limit = np.cumsum([5.0, 7.5, 7.5, 7.5, 7.5, 7.5])
    assert is_plausible([[x, 0.0] for x in on_limit])
    beyond = np.cumsum([5.0, 7.6, 7.6, 7.6, 7.6, 7.6])
    assert not is_plausible([[x, 0.0] for x in beyond])
    # Lateral zig-zag at 10 m/s: second difference of y is 6 m -> 24 m/s^2.
    zigzag = [[5 * (i + 1), 1.5 if i % 2 == 0 else -1.5] for i in range(6)]
    assert not is_plausible(zigzag)


def test_plausible_first_step_needs_ego_speed():
    # Standing start to 10 m/s mean over the first step: (10 - 0) / 0.25 = 40 m/s^2.
    assert is_plausible(STRAIGHT)
    assert not is_plausible(STRAIGHT, ego_speed=0.0)
    # From 8 m/s: (10 - 8) / 0.25 = 8 m/s^2 is fine.
    assert is_plausible(STRAIGHT, ego_speed=8.0)
    assert not is_plausible(STRAIGHT, ego_speed=float("nan"))


@pytest.mark.parametrize("junk", [None, "abc", [], [[1, 2, 3]] * 6, [[float("nan"), 0]] * 6, [1, 2], object()])
def test_plausible_junk_is_false(junk):
    assert is_plausible(junk) is False


# --- derived_answer_words -----------------------------------------------------------------------------------------


def test_derived_keep_straight():
    assert derived_answer_words(GOOD, 10.0) == AnswerWords(frozenset({"KEEP"}), frozenset({"STRAIGHT"}))


def test_derived_decelerate_left_turn():
    # Last segment (1.7, 2.2): heading 52 deg -> LEFT_TURN; end speed 2.78 / 0.5 = 5.56 m/s, 2.44 below 8 m/s.
    text = "<trajectory> [4.0,0.0] [8.0,0.3] [11.5,1.2] [14.5,2.7] [16.8,4.6] [18.5,6.8] </trajectory>"
    assert derived_answer_words(text, 8.0) == AnswerWords(frozenset({"DECELERATE"}), frozenset({"LEFT_TURN"}))
    # The senna rules see a 6.8 m offset with a 52 deg end direction: also a left turn; 2.44 m/s is below 3 -> KEEP.
    assert derived_answer_words(text, 8.0, mode="senna") == AnswerWords(frozenset({"KEEP"}), frozenset({"LEFT_TURN"}))


def test_derived_stop():
    # 5 m/s braking to rest: end speed 0 -> STOP.
    text = "<trajectory> [2.2,0.0] [3.9,0.0] [5.0,0.0] [5.6,0.0] [5.8,0.0] [5.8,0.0] </trajectory>"
    assert derived_answer_words(text, 5.0) == AnswerWords(frozenset({"STOP"}), frozenset({"STRAIGHT"}))


@pytest.mark.parametrize(
    ("text", "ego_speed"),
    [
        ("<answer> KEEP, STRAIGHT </answer>", 10.0),  # no trajectory
        ("<trajectory> [5,0] [10,0] [15,0] [20,0] [25,0] </trajectory>", 10.0),  # 5 waypoints
        ("<trajectory> [5,0] [10,0] [15,0] [50,0] [55,0] [60,0] </trajectory>", 10.0),  # implausible jump
        (GOOD, None),
        (GOOD, "fast"),
        (GOOD, float("nan")),
    ],
)
def test_derived_empty_when_unusable(text, ego_speed):
    assert derived_answer_words(text, ego_speed) == EMPTY_ANSWER


# --- is_trajectory_format ------------------------------------------------------------------------------------------


def test_format_check_accepts_canonical_and_conversational():
    assert is_trajectory_format(GOOD)
    assert is_trajectory_format(f"\n  {GOOD}\n")
    assert is_trajectory_format([{"role": "assistant", "content": GOOD}])
    assert is_trajectory_format(GOOD, strict=True)


@pytest.mark.parametrize(
    "text",
    [
        f"<answer> KEEP, STRAIGHT </answer> {STRAIGHT_BLOCK}",  # no reasoning
        "<think> x </think> <answer> KEEP, STRAIGHT </answer>",  # no trajectory
        f"<think> x </think> {STRAIGHT_BLOCK} <answer> KEEP, STRAIGHT </answer>",  # wrong order
        f"{GOOD} extra words",
        f"prefix {GOOD}",
        f"{GOOD} {STRAIGHT_BLOCK}",  # two trajectory blocks
        f"<think> a </think> <think> b </think> <answer> KEEP, STRAIGHT </answer> {STRAIGHT_BLOCK}",
        f"<think> a </think> <answer> KEEP </answer> <answer> STRAIGHT </answer> {STRAIGHT_BLOCK}",
        "<think> x </think> <answer> KEEP, STRAIGHT </answer> <trajectory> [1,0] [2,0] </trajectory>",
        "<think> x </think> <answer> KEEP, STRAIGHT </answer> <trajectory> [5,0] [10,0] [15,0] [20,0] [25,0] [30,0]",
        None,
        "",
    ],
)
def test_format_check_rejects(text):
    assert not is_trajectory_format(text)
    assert not is_trajectory_format(text, strict=True)


def test_format_check_strict_needs_one_word_per_axis_and_canonical_numbers():
    hedging = GOOD.replace("KEEP, STRAIGHT", "KEEP, DECELERATE, STRAIGHT")
    assert is_trajectory_format(hedging) and not is_trajectory_format(hedging, strict=True)
    loose_numbers = "<think> x </think> <answer> KEEP, STRAIGHT </answer> <trajectory> (5, 0) [10,0] [15,0] [20,0] [25,0] [30.25,0] </trajectory>"
    assert is_trajectory_format(loose_numbers) and not is_trajectory_format(loose_numbers, strict=True)


# --- property: junk never raises --------------------------------------------------------------------------------

_FRAGMENTS = st.sampled_from(
    [
        "<think>",
        "</think>",
        "<answer>",
        "</answer>",
        "<trajectory>",
        "</trajectory>",
        "KEEP",
        "STOP",
        "LEFT_TURN",
        ", ",
        "[",
        "]",
        "(",
        ")",
        "1.5",
        "-0.0",
        "1e308",
        "nan",
        "9" * 40,
        " ",
        "\n",
    ]
)
_JUNK_TEXT = st.one_of(st.text(max_size=200), st.lists(_FRAGMENTS, max_size=40).map("".join))


@settings(max_examples=300, deadline=None)
@given(text=_JUNK_TEXT, ego_speed=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)))
def test_junk_never_raises(text, ego_speed):
    parsed = parse_trajectory(text)
    assert parsed is None or (parsed.shape == (6, 2) and np.all(np.isfinite(parsed)))
    assert isinstance(is_trajectory_format(text), bool)
    assert isinstance(is_trajectory_format(text, strict=True), bool)
    words = derived_answer_words(text, ego_speed)
    assert len(words.speed) <= 1 and len(words.path) <= 1
    if parsed is not None:
        assert isinstance(is_plausible(parsed, ego_speed=ego_speed), bool)
        assert all(math.isfinite(v) for v in l2_errors(parsed, STRAIGHT).values())


# --- rewards --------------------------------------------------------------------------------------------------------


TRAJECTORY_REWARDS = (
    "trajectory_accuracy",
    "trajectory_consistency",
    "format_trajectory",
    "format_trajectory_strict",
    "speed_planning_trajectory",
    "path_planning_trajectory",
)


def completion(speed="KEEP", path="STRAIGHT", block=STRAIGHT_BLOCK):
    return f"<think> reasoning </think> <answer> {speed}, {path} </answer> {block}"


def block_of(points):
    return format_trajectory(points)


# Lateral drift 0.2 m per waypoint: errors 0.2, 0.4, ..., 1.2 m against STRAIGHT -> ADE 0.7 m.
DRIFT = [[5.0 * (i + 1), 0.2 * (i + 1)] for i in range(6)]
# 5 m/s braking to rest (heading labeller: STOP, STRAIGHT).
STOPPING = [[2.2, 0.0], [3.9, 0.0], [5.0, 0.0], [5.6, 0.0], [5.8, 0.0], [5.8, 0.0]]
JUMP = [[5.0, 0.0], [10.0, 0.0], [15.0, 0.0], [50.0, 0.0], [55.0, 0.0], [60.0, 0.0]]


def test_trajectory_rewards_are_registered_with_their_names():
    funcs = get_reward_funcs(list(TRAJECTORY_REWARDS))
    assert [f.__name__ for f in funcs] == list(TRAJECTORY_REWARDS)
    assert set(TRAJECTORY_REWARDS) <= set(REWARD_REGISTRY)


def test_trajectory_accuracy_hand_computed():
    completions = [
        completion(),  # exact: ADE 0
        completion(block=block_of(DRIFT)),  # ADE 0.7
        completion(block=""),  # no trajectory
        completion(block=block_of(JUMP)),  # 35 m in 0.5 s: implausible
        completion(),  # row without an expert trajectory
    ]
    rewards = trajectory_accuracy_reward(
        completions=completions, trajectory=[STRAIGHT] * 4 + [None], ego_speed=[10.0] * 5
    )
    assert rewards[0] == 1.0
    assert rewards[1] == pytest.approx(math.exp(-0.7 / 2.0))  # 0.704688
    assert rewards[2:] == [0.0, 0.0, 0.0]


def test_trajectory_accuracy_scale_option_and_validation():
    (reward,) = get_reward_funcs(["trajectory_accuracy"], trajectory_scale=0.7)
    assert reward(completions=[completion(block=block_of(DRIFT))], trajectory=[STRAIGHT]) == [
        pytest.approx(math.exp(-1.0))
    ]
    for bad in (0.0, -1.0, float("nan"), "2"):
        with pytest.raises(ValueError, match="trajectory_scale"):
            get_reward_funcs(["trajectory_accuracy"], trajectory_scale=bad)


def test_trajectory_accuracy_checks_the_first_step_against_the_ego_speed():
    # The plan drives at 10 m/s from the first step; from standstill that needs 40 m/s^2.
    rewards = trajectory_accuracy_reward(completions=[completion()] * 2, trajectory=[STRAIGHT] * 2, ego_speed=[0, 9.0])
    assert rewards == [0.0, 1.0]


def test_trajectory_accuracy_logs_ade_and_shares():
    logged = {}
    trajectory_accuracy_reward(
        completions=[completion(), completion(block=block_of(DRIFT)), "junk"],
        trajectory=[STRAIGHT] * 3,
        log_metric=logged.__setitem__,
    )
    assert logged["trajectory/ade"] == pytest.approx(0.35)
    assert logged["trajectory/parsed"] == pytest.approx(2 / 3)
    assert logged["trajectory/plausible"] == pytest.approx(2 / 3)


def test_trajectory_consistency_hand_computed():
    completions = [
        completion("KEEP", "STRAIGHT"),  # waypoints at 10 m/s from 10 m/s: KEEP, STRAIGHT -> both agree
        completion("KEEP", "LEFT_CHANGE"),  # speed agrees
        completion("STOP", "LEFT_TURN"),  # neither
        completion("KEEP, STOP", "STRAIGHT"),  # hedging on speed: only the path agrees
        completion("STOP", "STRAIGHT", block=block_of(STOPPING)),
        completion("KEEP", "STRAIGHT", block=""),  # nothing to agree with
        completion("KEEP", "STRAIGHT", block=block_of(JUMP)),  # implausible
    ]
    rewards = trajectory_consistency_reward(completions=completions, ego_speed=[10.0] * 4 + [5.0, 10.0, 10.0])
    assert rewards == [1.0, 0.5, 0.0, 0.5, 1.0, 0.0, 0.0]
    # Same waypoints, faster ego: 10 m/s is 6 m/s below 16 -> DECELERATE, so the stated KEEP disagrees.
    assert trajectory_consistency_reward(completions=[completion()], ego_speed=[16.0]) == [0.5]
    # Without an ego speed the waypoints imply nothing.
    assert trajectory_consistency_reward(completions=[completion()], ego_speed=[None]) == [0.0]
    assert trajectory_consistency_reward(completions=[completion()]) == [0.0]


def test_format_trajectory_reward():
    hedging = completion("KEEP, STOP", "STRAIGHT")
    completions = [completion(), completion(block=""), hedging, [{"role": "assistant", "content": completion()}]]
    assert format_trajectory_reward(completions=completions) == [1.0, 0.0, 1.0, 1.0]
    assert format_trajectory_reward_strict(completions=completions) == [1.0, 0.0, 0.0, 1.0]


def test_planning_trajectory_rewards_use_the_waypoints_not_the_stated_answer():
    # Two completions of one prompt state STOP, LEFT_TURN but plan 10 m/s straight ahead: the derived plan is
    # KEEP, STRAIGHT. Paper diversity: both share every word -> factor 1 - min(0.2, 1) = 0.8.
    completions = [completion("STOP", "LEFT_TURN")] * 2
    columns = dict(prompts=["p", "p"], speed_action=["KEEP"] * 2, path_action=["STRAIGHT"] * 2, ego_speed=[10.0] * 2)
    assert speed_planning_trajectory_reward(completions=completions, **columns) == [pytest.approx(0.8 * 0.8)] * 2
    assert path_planning_trajectory_reward(completions=completions, **columns) == [pytest.approx(0.8 * 0.8)] * 2
    assert speed_planning_reward(completions=completions, **columns) == [0.0, 0.0]  # the stated answer is wrong


def test_planning_trajectory_rewards_hand_computed_single_rows():
    columns = dict(prompts=["a", "b", "c"], speed_action=["STOP"] * 3, path_action=["STRAIGHT"] * 3)
    completions = [
        completion(block=block_of(STOPPING)),  # derived STOP, STRAIGHT
        completion(block=block_of(JUMP)),  # implausible: no derived words
        completion(block=""),  # no trajectory
    ]
    speeds = [5.0, 5.0, 5.0]
    assert speed_planning_trajectory_reward(completions=completions, ego_speed=speeds, **columns) == [1.0, 0.0, 0.0]
    assert path_planning_trajectory_reward(completions=completions, ego_speed=speeds, **columns) == [0.8, 0.0, 0.0]
    # Without an ego speed nothing is derived.
    assert speed_planning_trajectory_reward(completions=completions, **columns) == [0.0, 0.0, 0.0]


def test_planning_trajectory_labeller_option():
    # Heading rules: end speed 5.56 m/s, 2.44 below 8 m/s -> DECELERATE; senna needs a 3 m/s change -> KEEP.
    turn = "<trajectory> [4.0,0.0] [8.0,0.3] [11.5,1.2] [14.5,2.7] [16.8,4.6] [18.5,6.8] </trajectory>"
    columns = dict(completions=[turn], speed_action=["DECELERATE"], path_action=["LEFT_TURN"], ego_speed=[8.0])
    for labeller, expected in (("heading", 1.0), ("senna", 0.0)):
        (reward,) = get_reward_funcs(["speed_planning_trajectory"], diversity="none", trajectory_labeller=labeller)
        assert reward(**columns) == [expected]
    with pytest.raises(ValueError, match="trajectory_labeller"):
        make_trajectory_planning_reward("speed", labeller="nope")


@settings(max_examples=150, deadline=None)
@given(
    texts=st.lists(_JUNK_TEXT, min_size=1, max_size=4),
    expert=st.one_of(st.none(), st.just(STRAIGHT), st.lists(st.lists(st.floats(), max_size=3), max_size=7)),
    ego_speed=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
)
def test_trajectory_rewards_never_raise_on_junk(texts, expert, ego_speed):
    n = len(texts)
    columns = dict(
        prompts=["p"] * n,
        completions=texts,
        trajectory=[expert] * n,
        ego_speed=[ego_speed] * n,
        speed_action=["KEEP"] * n,
        path_action=["STRAIGHT"] * n,
    )
    for reward in get_reward_funcs(list(TRAJECTORY_REWARDS)):
        values = reward(**columns)
        assert len(values) == n
        assert all(isinstance(v, float) and math.isfinite(v) and 0.0 <= v <= 1.0 for v in values), reward.__name__
