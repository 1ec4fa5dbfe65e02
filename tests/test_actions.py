"""Meta-action vocabularies, lenient and strict answer parsing, formatting, completion text extraction."""

from __future__ import annotations

import doctest
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alphadrive_trl import actions
from alphadrive_trl.actions import (
    ALL_PLANS,
    AXIS_VOCABULARY,
    EMPTY_ANSWER,
    PATH_ACTIONS,
    SPEED_ACTIONS,
    AnswerWords,
    completion_to_text,
    extract_answer_block,
    format_answer,
    normalize_word,
    parse_answer,
    parse_answer_strict,
    parse_plan,
    plan_to_string,
)


def words(speed=(), path=()):
    return AnswerWords(frozenset(speed), frozenset(path))


def test_vocabularies_follow_the_spec_order():
    assert SPEED_ACTIONS == ("KEEP", "ACCELERATE", "DECELERATE", "STOP")
    assert PATH_ACTIONS == ("STRAIGHT", "RIGHT_CHANGE", "LEFT_CHANGE", "RIGHT_TURN", "LEFT_TURN")
    assert AXIS_VOCABULARY == {"speed": SPEED_ACTIONS, "path": PATH_ACTIONS}
    assert len(ALL_PLANS) == 20 and ALL_PLANS[0] == ("KEEP", "STRAIGHT") and len(set(ALL_PLANS)) == 20


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think> x </think> <answer> KEEP, STRAIGHT </answer>", words({"KEEP"}, {"STRAIGHT"})),
        ("<answer> stop , Left-Turn. </answer>", words({"STOP"}, {"LEFT_TURN"})),
        ("<answer> KEEP, DECELERATE, STRAIGHT </answer>", words({"KEEP", "DECELERATE"}, {"STRAIGHT"})),
        (
            "<answer> STOP, STRAIGHT </answer> later <answer> KEEP, RIGHT_TURN </answer>",
            words({"KEEP"}, {"RIGHT_TURN"}),
        ),
        ("<think> I could STOP </think> <answer> KEEP; right change </answer>", words({"KEEP"}, {"RIGHT_CHANGE"})),
        ("<answer> ACCELERATE, LEFT_CHANGE", words({"ACCELERATE"}, {"LEFT_CHANGE"})),  # cut by max length
        ("KEEP STRAIGHT", words({"KEEP"}, {"STRAIGHT"})),  # no tags: the whole text
        ("<answer> speed: KEEP | path: STRAIGHT </answer>", words({"KEEP"}, {"STRAIGHT"})),
        ("<ANSWER>decelerate/left_turn</ANSWER>", words({"DECELERATE"}, {"LEFT_TURN"})),
        ("<answer> keeping, straightforward </answer>", EMPTY_ANSWER),
        ("<answer></answer>", EMPTY_ANSWER),
        ("", EMPTY_ANSWER),
    ],
)
def test_parse_answer_lenient(text, expected):
    assert parse_answer(text) == expected


@pytest.mark.parametrize("value", [None, 3, b"KEEP", ["KEEP"], {"content": "KEEP"}])
def test_parse_answer_non_strings_are_empty(value):
    assert parse_answer(value) == EMPTY_ANSWER
    assert parse_answer_strict(value) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think> r </think> <answer> DECELERATE, LEFT_TURN </answer>", ("DECELERATE", "LEFT_TURN")),
        ("<answer>STRAIGHT, keep</answer>", ("KEEP", "STRAIGHT")),
        ("<answer> KEEP, DECELERATE, STRAIGHT </answer>", None),
        ("<answer> KEEP </answer>", None),
        ("<answer> KEEP STRAIGHT </answer>", None),
        ("<answer> KEEP, STRAIGHT, please </answer>", None),
        ("<answer> KEEP, STOP </answer>", None),
        ("<answer> KEEP, STRAIGHT", None),
        ("KEEP, STRAIGHT", None),
    ],
)
def test_parse_answer_strict(text, expected):
    assert parse_answer_strict(text) == expected


def test_format_answer_round_trips_through_both_parsers():
    for speed, path in ALL_PLANS:
        text = format_answer(speed, path, "  Because.  ")
        assert text == f"<think> Because. </think> <answer> {speed}, {path} </answer>"
        assert parse_answer_strict(text) == (speed, path)
        assert parse_answer(text) == words({speed}, {path})
        assert parse_plan(plan_to_string(speed, path)) == (speed, path)
    assert format_answer("KEEP", "STRAIGHT", "   ") == "<answer> KEEP, STRAIGHT </answer>"
    with pytest.raises(ValueError, match="Unknown SPEED action 'FAST'"):
        format_answer("FAST", "STRAIGHT")
    with pytest.raises(ValueError, match="Unknown PATH action 'UP'"):
        format_answer("KEEP", "UP")
    assert parse_plan("KEEP") is None and parse_plan(None) is None


def test_normalize_word():
    assert normalize_word(" right-change.") == "RIGHT_CHANGE"
    assert normalize_word("Left  Turn!") == "LEFT_TURN"
    assert normalize_word("**STOP**") == "STOP"


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("plain", "plain"),
        ([{"role": "assistant", "content": "msg"}], "msg"),
        ([{"content": "no role"}], "no role"),  # TRL's own reward examples use this form
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a1"}], "a1"),
        ([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "image"}, "b"]}], "ab"),
        ([{"type": "text", "text": "part"}], "part"),
        ({"role": "assistant", "content": "one message"}, "one message"),
        ([{"role": "assistant", "content": None}], ""),
        ([{"role": "assistant"}], ""),
        (None, ""),
        (42, ""),
        ([1, 2], ""),
    ],
)
def test_completion_to_text(completion, expected):
    assert completion_to_text(completion) == expected


_OLD_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)


@settings(max_examples=1500, deadline=None, database=None)
@given(st.lists(st.sampled_from(["<answer>", "</answer>", "<ANSWER>", "</Answer>", "<answer", "a", ",", "\n"])))
def test_extract_answer_block_matches_the_last_regex_match(pieces):
    text = "".join(pieces)
    matches = _OLD_ANSWER_BLOCK.findall(text)
    assert extract_answer_block(text) == (matches[-1] if matches else None)


def test_parsing_is_linear_on_many_unclosed_tags():
    # The regex `<answer>(.*?)</answer>` takes seconds here (it rescans to the end for every opening tag).
    text = "<answer> KEEP, " * 50_000
    start = time.perf_counter()
    assert parse_answer(text) == words({"KEEP"})
    assert parse_answer_strict(text) is None
    assert time.perf_counter() - start < 2.0


def test_docstring_examples():
    assert doctest.testmod(actions).failed == 0
