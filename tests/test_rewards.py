"""The AlphaDrive rewards: exact hand-worked values for every component and mode, grouping, ground-truth sources,
robustness on arbitrary completions, the registry, and a real `trl.GRPOTrainer` run with the registry rewards."""

from __future__ import annotations

import doctest
import importlib
import math
import pickle
import pkgutil
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alphadrive_trl import rewards
from alphadrive_trl.actions import AnswerWords
from alphadrive_trl.rewards import (
    REWARD_REGISTRY,
    action_weight_reward,
    answer_format_reward,
    diversity_reward,
    format_reward,
    format_reward_strict,
    get_reward_funcs,
    make_planning_reward,
    path_planning_reward,
    planning_accuracy_reward,
    prompt_group_key,
    speed_planning_reward,
)

ABS = 1e-12


def answer(*words: str, think: str = "reasoning") -> str:
    return f"<think> {think} </think> <answer> {', '.join(words)} </answer>"


def approx(values):
    return pytest.approx(values, abs=ABS)


def call(reward, completions, *, prompts=None, speed=None, path=None, **kwargs):
    n = len(completions)
    if speed is not None:
        kwargs["speed_action"] = [speed] * n if isinstance(speed, str) else speed
    if path is not None:
        kwargs["path_action"] = [path] * n if isinstance(path, str) else path
    return reward(prompts=prompts, completions=completions, **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# Accuracy (F1)
# --------------------------------------------------------------------------------------------------------------------


def test_planning_accuracy_exact_f1_with_extra_and_missing_words():
    completions = [
        answer("KEEP", "STRAIGHT"),  # perfect: exactly 1.0
        answer("KEEP", "STOP", "STRAIGHT"),  # one extra speed word: speed F1 2/3, path 1 -> 5/6
        "<answer> STRAIGHT </answer>",  # speed missing: 0 and 1 -> 0.5
        answer("KEEP", "STOP", "ACCELERATE", "LEFT_TURN"),  # speed 2*1/(3+1) = 0.5, path 0 -> 0.25
        answer("STOP", "LEFT_TURN"),  # both wrong
        "",  # nothing
    ]
    result = call(planning_accuracy_reward, completions, speed="KEEP", path="STRAIGHT")
    assert result[0] == 1.0
    assert result == approx([1.0, 5 / 6, 0.5, 0.25, 0.0, 0.0])


def test_accuracy_is_exact_with_multi_word_ground_truth_from_solution():
    # Ground truth {KEEP, DECELERATE}: predicting one of them gives F1 = 2*1/(1+2) = 2/3 on speed.
    solution = ["<answer> KEEP, DECELERATE, LEFT_CHANGE </answer>"] * 2
    completions = [answer("KEEP", "LEFT_CHANGE"), answer("KEEP", "DECELERATE", "LEFT_CHANGE")]
    assert planning_accuracy_reward(completions=completions, solution=solution) == approx([(2 / 3 + 1) / 2, 1.0])


# --------------------------------------------------------------------------------------------------------------------
# Action weights
# --------------------------------------------------------------------------------------------------------------------


def test_action_weight_reward_means_the_weights_of_the_predicted_words():
    completions = [
        answer("STOP", "STRAIGHT"),  # (1.0 + 0.8) / 2
        answer("KEEP", "LEFT_TURN"),  # (0.8 + 1.0) / 2
        answer("ACCELERATE", "KEEP", "RIGHT_CHANGE"),  # speed (0.9 + 0.8) / 2 = 0.85, path 1.0 -> 0.925
        "<answer> DECELERATE </answer>",  # (1.0 + 0) / 2
        "no answer at all",
    ]
    assert action_weight_reward(completions=completions) == approx([0.9, 0.9, 0.925, 0.5, 0.0])


def test_planning_reward_multiplies_f1_by_weight_for_each_axis():
    completions = [answer("KEEP", "STRAIGHT"), answer("KEEP", "STOP", "STRAIGHT")]
    # Different prompts: groups of 1, diversity factor 1.
    speed = call(speed_planning_reward, completions, prompts=["a", "b"], speed="STOP")
    # STOP truth: first F1 0; second F1 2/3 * mean(0.8, 1.0) = 2/3 * 0.9 = 0.6.
    assert speed == approx([0.0, 0.6])
    path = call(path_planning_reward, completions, prompts=["a", "b"], path="STRAIGHT")
    assert path == approx([0.8, 0.8])
    turn = call(path_planning_reward, [answer("KEEP", "LEFT_TURN")], prompts=["a"], path="LEFT_TURN")
    assert turn == approx([1.0])


def test_custom_weights_override_defaults_and_bad_weights_raise():
    reward = make_planning_reward("speed", weights={"keep": 0.5}, diversity="none")
    assert call(reward, [answer("KEEP", "STRAIGHT"), answer("STOP", "STRAIGHT")], speed=["KEEP", "STOP"]) == approx(
        [0.5, 1.0]
    )
    with pytest.raises(ValueError, match="Unknown action 'FLY'"):
        make_planning_reward("speed", weights={"FLY": 1.0})
    with pytest.raises(ValueError, match="finite"):
        make_planning_reward("path", weights={"STRAIGHT": float("nan")})
    with pytest.raises(ValueError, match="`axis` must be one of"):
        make_planning_reward("lateral")
    with pytest.raises(ValueError, match="`diversity` must be one of"):
        make_planning_reward("speed", diversity="global")
    with pytest.raises(ValueError, match="diversity_cap"):
        make_planning_reward("speed", diversity_cap=1.5)


# --------------------------------------------------------------------------------------------------------------------
# Paper-mode diversity
# --------------------------------------------------------------------------------------------------------------------


def test_paper_diversity_group_of_one_has_no_penalty():
    assert call(speed_planning_reward, [answer("KEEP", "STRAIGHT")], prompts=["p"], speed="KEEP") == approx([0.8])
    assert call(speed_planning_reward, [answer("STOP", "STRAIGHT")], prompts=["p"], speed="STOP") == [1.0]


def test_paper_diversity_group_of_two():
    same = [answer("KEEP", "STRAIGHT")] * 2
    # Each sees the other choose KEEP: share 1 -> factor 1 - min(0.2, 1) = 0.8; reward 1 * 0.8 * 0.8.
    assert call(speed_planning_reward, same, prompts=["p"] * 2, speed="KEEP") == approx([0.64, 0.64])
    different = [answer("KEEP", "STRAIGHT"), answer("STOP", "STRAIGHT")]
    assert call(speed_planning_reward, different, prompts=["p"] * 2, speed="KEEP") == approx([0.8, 0.0])
    # Path: both STRAIGHT -> 0.8 * 0.8.
    assert call(path_planning_reward, different, prompts=["p"] * 2, path="STRAIGHT") == approx([0.64, 0.64])


def test_paper_diversity_group_of_four_with_larger_cap():
    completions = [answer(w, "STRAIGHT") for w in ("KEEP", "KEEP", "STOP", "ACCELERATE")]
    # KEEP: 1 of the 3 others also says KEEP, share 1/3 -> factor 2/3 (cap 0.5); reward 1 * 0.8 * 2/3.
    reward = make_planning_reward("speed", diversity_cap=0.5)
    assert call(reward, completions, prompts=["p"] * 4, speed="KEEP") == approx([0.8 * 2 / 3, 0.8 * 2 / 3, 0.0, 0.0])
    # Default cap 0.2 binds: 0.8 * 0.8.
    assert call(speed_planning_reward, completions, prompts=["p"] * 4, speed="KEEP") == approx([0.64, 0.64, 0, 0])


def test_paper_diversity_group_of_eight_with_several_words():
    speed_words = [("KEEP", "STOP"), ("KEEP",), ("KEEP",), ("KEEP",), ("STOP",), ("STOP",), ("STOP",), ("STOP",)]
    completions = [answer(*words, "STRAIGHT") for words in speed_words]
    reward = make_planning_reward("speed", diversity_cap=1.0)
    result = call(reward, completions, prompts=["p"] * 8, speed="STOP")
    # Counts in the group: KEEP 4, STOP 5; 7 others each.
    # Completion 0: share = mean((4-1)/7, (5-1)/7) = 0.5; F1 = 2/3; weight = (0.8+1.0)/2 = 0.9 -> 2/3*0.9*0.5 = 0.3.
    # A STOP completion: share 4/7 -> factor 3/7; F1 1, weight 1 -> 3/7. KEEP completions: F1 0.
    assert result == approx([0.3, 0.0, 0.0, 0.0, 3 / 7, 3 / 7, 3 / 7, 3 / 7])
    # Default cap: STOP completions 1 * 1 * 0.8; completion 0: 2/3 * 0.9 * 0.8 = 0.48.
    assert call(speed_planning_reward, completions, prompts=["p"] * 8, speed="STOP") == approx(
        [0.48, 0, 0, 0, 0.8, 0.8, 0.8, 0.8]
    )


def test_paper_diversity_group_of_eight_full_cap():
    completions = [answer("KEEP", "STRAIGHT")] + [answer("DECELERATE", "STRAIGHT")] * 7
    reward = make_planning_reward("speed", diversity_cap=1.0)
    # DECELERATE: 6 of 7 others agree -> factor 1/7.
    assert call(reward, completions, prompts=["p"] * 8, speed="DECELERATE") == approx([0.0] + [1 / 7] * 7)


def test_groups_are_formed_by_prompt_not_position():
    prompts = ["scene A", "scene B", "scene A", "scene B"]
    completions = [answer(w, "STRAIGHT") for w in ("KEEP", "KEEP", "KEEP", "STOP")]
    # Group A: two KEEPs -> 0.64 each. Group B: KEEP and STOP -> KEEP unshared 0.8, STOP wrong 0.
    assert call(speed_planning_reward, completions, prompts=prompts, speed="KEEP") == approx([0.64, 0.8, 0.64, 0.0])


def test_message_list_prompts_group_by_text_and_sample_id():
    def prompt(text):
        return [{"role": "user", "content": [{"type": "image", "image": object()}, {"type": "text", "text": text}]}]

    completions = [[{"role": "assistant", "content": answer("KEEP", "STRAIGHT")}] for _ in range(3)]
    prompts = [prompt("speed 10 m/s"), prompt("speed 10 m/s"), prompt("speed 5 m/s")]
    assert prompt_group_key(prompts[0]) == prompt_group_key(prompts[1]) != prompt_group_key(prompts[2])
    assert call(speed_planning_reward, completions, prompts=prompts, speed="KEEP") == approx([0.64, 0.64, 0.8])
    # Same wording, different scenes: `sample_id` keeps them in separate groups.
    result = call(speed_planning_reward, completions, prompts=prompts, speed="KEEP", sample_id=["s1", "s2", "s3"])
    assert result == approx([0.8, 0.8, 0.8])


def test_group_split_across_two_calls_is_scored_per_call():
    completions = [answer(w, "STRAIGHT") for w in ("KEEP", "STOP", "KEEP", "KEEP")]
    reward = make_planning_reward("speed", diversity_cap=1.0)
    # One call: KEEP shared by 2 of 3 others -> factor 1/3, reward 0.8/3.
    whole = call(reward, completions, prompts=["p"] * 4, speed="KEEP")
    assert whole == approx([0.8 / 3, 0.0, 0.8 / 3, 0.8 / 3])
    # The same group in two calls (as two processes would see it): each call only sees its own part.
    first = call(reward, completions[:2], prompts=["p"] * 2, speed="KEEP")
    second = call(reward, completions[2:], prompts=["p"] * 2, speed="KEEP")
    assert first + second == approx([0.8, 0.0, 0.0, 0.0])


def test_rewards_sharing_a_batch_recompute_when_inputs_change():
    # Rewards of one step share the parsed batch; a new or edited list must never reuse stale results.
    completions = [answer("KEEP", "STRAIGHT"), answer("KEEP", "STRAIGHT")]
    prompts = ["p", "p"]
    assert call(speed_planning_reward, completions, prompts=prompts, speed="KEEP") == approx([0.64, 0.64])
    assert call(path_planning_reward, completions, prompts=prompts, path="LEFT_TURN") == [0.0, 0.0]
    prompts[1] = "q"
    assert call(speed_planning_reward, completions, prompts=prompts, speed="KEEP") == approx([0.8, 0.8])
    completions[1] = answer("STOP", "STRAIGHT")
    assert call(speed_planning_reward, completions, prompts=["p", "p"], speed="STOP") == approx([0.0, 1.0])
    assert call(speed_planning_reward, completions, prompts=["p", "p"], speed="KEEP", sample_id=[1, 2]) == [0.8, 0.0]


def test_without_prompts_the_call_is_one_group():
    completions = [answer("KEEP", "STRAIGHT")] * 2
    assert call(speed_planning_reward, completions, speed="KEEP") == approx([0.64, 0.64])


def test_ready_made_rewards_are_named_like_their_registry_entries():
    # TRL logs `rewards/<__name__>/mean`: one name per reward, whichever way it was built.
    ready_made = {"safety": rewards.safety_penalty}
    for name in REWARD_REGISTRY:
        attribute = name.replace("_strict", "_reward_strict") if name.endswith("_strict") else f"{name}_reward"
        if hasattr(rewards, attribute):  # the `_release` variants have no ready-made instance
            ready_made[name] = getattr(rewards, attribute)
    assert len(ready_made) == len(REWARD_REGISTRY) - 2
    for name, reward in ready_made.items():
        assert reward.__name__ == name == REWARD_REGISTRY[name]().__name__


def test_diversity_none_is_f1_times_weight():
    reward = make_planning_reward("speed", diversity="none")
    assert reward.__name__ == "speed_planning_none"
    assert call(reward, [answer("KEEP", "STRAIGHT")] * 2, prompts=["p"] * 2, speed="KEEP") == approx([0.8, 0.8])
    unweighted = make_planning_reward("path", weighting=False, diversity="none")
    assert call(unweighted, [answer("KEEP", "STRAIGHT")], path="STRAIGHT") == [1.0]


def test_diversity_reward_component_paper_and_release():
    completions = [answer("KEEP", "STRAIGHT"), answer("STOP", "STRAIGHT"), "garbage"]
    # Speed: KEEP/STOP unshared -> 1.0, garbage 0. Path: STRAIGHT shared by 1 of 2 others -> share 0.5 -> 0.8.
    assert diversity_reward(prompts=["p"] * 3, completions=completions) == approx([0.9, 0.9, 0.0])
    release = get_reward_funcs(["diversity"], diversity="release", diversity_weight=0.5)[0]
    # Speed: +0.5, +0.5, +0.5 (no word). Path: +0.5, -0.5 (STRAIGHT reused), +0.5 (no word).
    assert release(prompts=["p"] * 3, completions=completions) == approx([0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match="'paper' or 'release'"):
        get_reward_funcs(["diversity"], diversity="none")


# --------------------------------------------------------------------------------------------------------------------
# Release-mode diversity (the published code's additive +/- w, per group)
# --------------------------------------------------------------------------------------------------------------------


def test_release_first_use_gets_bonus_later_reuse_gets_penalty():
    reward = get_reward_funcs(["speed_planning_release"])[0]
    completions = [answer("KEEP", "STRAIGHT")] * 2
    # F1 1 * weight 0.8, +0.4 for the first, -0.4 for the second.
    assert call(reward, completions, prompts=["p"] * 2, speed="KEEP") == approx([1.2, 0.4])


def test_release_is_order_dependent():
    reward = make_planning_reward("speed", diversity="release")
    order_a = [answer(w, "STRAIGHT") for w in ("STOP", "KEEP", "KEEP")]
    order_b = [answer(w, "STRAIGHT") for w in ("KEEP", "KEEP", "STOP")]
    # Same multiset of answers, but the KEEP that comes first is the one rewarded.
    assert call(reward, order_a, prompts=["p"] * 3, speed="KEEP") == approx([0.4, 1.2, 0.4])
    assert call(reward, order_b, prompts=["p"] * 3, speed="KEEP") == approx([1.2, 0.4, 0.4])


def test_release_empty_answers_get_the_bonus():
    reward = make_planning_reward("speed", diversity="release")
    completions = ["I cannot tell", "", answer("KEEP", "STRAIGHT")]
    # No valid word shares nothing with earlier words: +0.4 each, even twice in a row.
    assert call(reward, completions, prompts=["p"] * 3, speed="KEEP") == approx([0.4, 0.4, 1.2])


def test_release_multi_word_reuse_and_weighting_off():
    reward = make_planning_reward("speed", diversity="release")
    completions = [answer("KEEP", "STOP", "STRAIGHT"), answer("STOP", "STRAIGHT")]
    # First: F1 2/3 * weight 0.9 + 0.4 = 1.0. Second reuses STOP: 1 * 1.0 - 0.4 = 0.6.
    assert call(reward, completions, prompts=["p"] * 2, speed="STOP") == approx([1.0, 0.6])
    unweighted = make_planning_reward("speed", weighting=False, diversity="release", diversity_weight=0.25)
    assert call(unweighted, completions, prompts=["p"] * 2, speed="STOP") == approx([2 / 3 + 0.25, 0.75])


def test_release_is_scoped_per_group_not_per_call():
    reward = make_planning_reward("path", diversity="release")
    completions = [answer("KEEP", "LEFT_TURN")] * 2
    # The published code counted over the whole call (second: 0.6); here each prompt is its own group.
    assert call(reward, completions, prompts=["a", "b"], path="LEFT_TURN") == approx([1.4, 1.4])
    assert call(reward, completions, prompts=["a", "a"], path="LEFT_TURN") == approx([1.4, 0.6])


def test_registry_planning_rewards_follow_the_diversity_option():
    speed, path = get_reward_funcs(["speed_planning", "path_planning"], diversity="release", diversity_weight=0.1)
    completions = [answer("KEEP", "STRAIGHT")] * 2
    assert call(speed, completions, prompts=["p"] * 2, speed="KEEP") == approx([0.9, 0.7])
    assert call(path, completions, prompts=["p"] * 2, path="STRAIGHT") == approx([0.9, 0.7])


# --------------------------------------------------------------------------------------------------------------------
# Format
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lenient", "strict"),
    [
        ("<think> clear road </think> <answer> KEEP, STRAIGHT </answer>", 1.0, 1.0),
        ("  \n<think>a</think>\n\n<answer>STOP, LEFT_TURN</answer>\n", 1.0, 1.0),
        ("<think></think><answer> keep, straight </answer>", 1.0, 1.0),
        ("<think> hmm </think> <answer> KEEP, STOP, STRAIGHT </answer>", 1.0, 0.0),
        ("<think> hmm </think> <answer> maybe </answer>", 1.0, 0.0),
        ("<answer> KEEP, STRAIGHT </answer>", 0.0, 0.0),
        ("<think> a </think> text <answer> KEEP, STRAIGHT </answer>", 0.0, 0.0),
        ("<think> a </think> <answer> KEEP, STRAIGHT </answer> trailing", 0.0, 0.0),
        ("<think> a </think> <answer> KEEP, STRAIGHT </answer><answer> STOP, STRAIGHT </answer>", 0.0, 0.0),
        ("<think> a <think> b </think> <answer> KEEP, STRAIGHT </answer>", 0.0, 0.0),
        ("<answer> KEEP, STRAIGHT </answer> <think> a </think>", 0.0, 0.0),
        ("<think> a </think> <answer> KEEP, STRAIGHT", 0.0, 0.0),
        ("", 0.0, 0.0),
    ],
)
def test_format_rewards(text, lenient, strict):
    assert format_reward(completions=[text]) == [lenient]
    assert format_reward_strict(completions=[[{"role": "assistant", "content": text}]]) == [strict]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<answer> KEEP, STRAIGHT </answer>", 1.0),
        ("  \n<answer>stop, left_turn</answer>\n", 1.0),
        ("<answer> LEFT_TURN, DECELERATE </answer>", 1.0),  # either order, as the strict parse allows
        ("<answer> KEEP, LEFT_CHANGE STRAIGHT </answer>", 0.0),  # a hedge: two words on the path axis
        ("<answer> ACCELERATE LEFT_CHANGE LEFT_CHANGE </answer>", 0.0),
        ("<answer> KEEP </answer>", 0.0),
        ("<think> a </think> <answer> KEEP, STRAIGHT </answer>", 0.0),  # reasoning completions use `format`
        ("sure: <answer> KEEP, STRAIGHT </answer>", 0.0),
        ("<answer> KEEP, STRAIGHT </answer> trailing", 0.0),
        ("<answer> KEEP, STRAIGHT </answer><answer> KEEP, STRAIGHT </answer>", 0.0),
        ("<answer> KEEP, STRAIGHT", 0.0),
        ("", 0.0),
    ],
)
def test_answer_format_reward(text, expected):
    assert answer_format_reward(completions=[text]) == [expected]
    assert get_reward_funcs(["answer_format"])[0](completions=[[{"role": "assistant", "content": text}]]) == [expected]


def test_planning_f1_pays_a_hedge_and_answer_format_does_not():
    # Why `answer_format` exists: with ground truth STRAIGHT, naming two path words earns F1 2/3 (x the STRAIGHT
    # weight 0.8), a single wrong word earns 0. Without a KL term GRPO follows that gradient (docs/grpo.md).
    hedge, wrong = "<answer> KEEP, LEFT_CHANGE STRAIGHT </answer>", "<answer> KEEP, LEFT_CHANGE </answer>"
    kwargs = dict(completions=[hedge, wrong], path_action=["STRAIGHT"] * 2, speed_action=["KEEP"] * 2)
    accuracy = make_planning_reward("path", diversity="none", name="path_accuracy")(**kwargs)
    assert accuracy == pytest.approx([2 / 3 * 0.9, 0.0])  # action weight: mean of LEFT_CHANGE 1.0 and STRAIGHT 0.8
    assert answer_format_reward(completions=[hedge, wrong]) == [0.0, 1.0]


# --------------------------------------------------------------------------------------------------------------------
# Inputs: completion forms, ground-truth sources, extra kwargs, logging
# --------------------------------------------------------------------------------------------------------------------


def test_message_list_completions_and_trl_kwargs_are_accepted():
    text = answer("DECELERATE", "RIGHT_CHANGE")
    forms = [
        text,
        [{"role": "assistant", "content": text}],
        [{"content": text}],  # TRL's own reward examples use this form
        [{"role": "assistant", "content": [{"type": "text", "text": text}]}],
    ]
    extra = {
        "trainer_state": object(),
        "log_extra": lambda *a: None,
        "completion_ids": [[1]] * 4,
        "images": [None] * 4,
    }
    for reward in (planning_accuracy_reward, action_weight_reward):
        result = reward(
            prompts=[f"p{i}" for i in range(4)],
            completions=forms,
            speed_action=["DECELERATE"] * 4,
            path_action=["RIGHT_CHANGE"] * 4,
            navigation=["x"] * 4,
            **extra,
        )
        assert result == approx([1.0] * 4)


def test_ground_truth_from_solution_labels_and_missing_rows():
    completions = [answer("STOP", "STRAIGHT")] * 4
    prompts = [f"p{i}" for i in range(4)]
    solution = ["<answer> STOP, STRAIGHT </answer>", "<answer> KEEP, STRAIGHT </answer>", None, "garbage"]
    assert speed_planning_reward(prompts=prompts, completions=completions, solution=solution) == [1.0, 0.0, None, None]
    # Lower-case labels are normalised; a row without a usable label falls back to its `solution`.
    labels = ["stop", None, "KEEP", "NOT_A_WORD"]
    result = speed_planning_reward(prompts=prompts, completions=completions, speed_action=labels, solution=solution)
    assert result == [1.0, 0.0, 0.0, None]
    # `both` needs both axes: a missing one makes the row None.
    result = planning_accuracy_reward(completions=completions[:2], speed_action=["STOP"] * 2, path_action=[None, "X"])
    assert result == [None, None]


def test_missing_ground_truth_columns_and_misaligned_inputs_raise_clearly():
    with pytest.raises(ValueError, match="`speed_action` column or a `solution` column"):
        speed_planning_reward(prompts=["p"], completions=["x"], path_action=["STRAIGHT"])
    with pytest.raises(ValueError, match="`path_action` has 1 values for 2 completions"):
        path_planning_reward(completions=["x", "y"], path_action=["STRAIGHT"])
    with pytest.raises(ValueError, match="1 prompts for 2 completions"):
        speed_planning_reward(prompts=["p"], completions=["x", "y"], speed_action=["KEEP"] * 2)
    with pytest.raises(ValueError, match="needs `completions`"):
        format_reward(prompts=["p"])


def test_log_metric_receives_per_axis_f1_and_valid_share():
    logged = []
    completions = [answer("KEEP", "STRAIGHT"), answer("KEEP", "STOP", "LEFT_TURN"), "nothing", answer("STOP", "X")]
    kwargs = dict(
        prompts=["p"] * 4,
        completions=completions,
        speed_action=["KEEP", "KEEP", "KEEP", None],
        path_action=["STRAIGHT"] * 4,
        log_metric=lambda name, value: logged.append((name, value)),
    )
    speed_planning_reward(**kwargs)
    planning_accuracy_reward(**kwargs)
    # Speed F1 over rows with ground truth: (1 + 2/3 + 0) / 3. Path F1: (1 + 0 + 0 + 0) / 4.
    # Valid answers (exactly one word per axis): only the first of four.
    assert [name for name, _ in logged] == [
        "planning/speed_f1",
        "planning/valid_answer",
        "planning/speed_f1",
        "planning/path_f1",
        "planning/valid_answer",
    ]
    values = dict(logged)
    assert values["planning/speed_f1"] == pytest.approx(5 / 9, abs=ABS)
    assert values["planning/path_f1"] == 0.25
    assert values["planning/valid_answer"] == 0.25


def test_predict_hook_and_columns_make_variants_a_one_line_factory():
    def predict_from_column(text, forced_speed):
        return AnswerWords(frozenset({forced_speed}), frozenset())

    reward = make_planning_reward(
        "speed", predict=predict_from_column, predict_columns=("forced",), diversity="none", name="forced_speed"
    )
    result = reward(completions=["a", "b"], forced=["STOP", "KEEP"], speed_action=["STOP", "STOP"])
    assert reward.__name__ == "forced_speed"
    assert result == approx([1.0, 0.0])

    def broken(text):
        raise RuntimeError("boom")

    # A failing predictor is "no answer", never a crash.
    assert make_planning_reward("speed", predict=broken)(completions=["a"], speed_action=["KEEP"]) == [0.0]


# --------------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------------


def test_registry_names_and_unknown_names():
    required = {
        "format",
        "format_strict",
        "planning_accuracy",
        "action_weight",
        "diversity",
        "speed_planning",
        "path_planning",
        "speed_planning_release",
        "path_planning_release",
        "safety",
    }
    assert required <= set(REWARD_REGISTRY)
    funcs = get_reward_funcs(
        sorted(REWARD_REGISTRY), trajectory_scale=3.0
    )  # options a reward does not take are ignored by it
    assert [f.__name__ for f in funcs] == sorted(REWARD_REGISTRY)
    with pytest.raises(ValueError, match=r"Unknown reward name\(s\) 'acuracy'.*valid names: format, format_strict"):
        get_reward_funcs(["format", "acuracy"])


def test_safety_penalty_hand_computed():
    from alphadrive_trl.rewards import SafetyPenalty, safety_penalty

    completions = [
        "<answer> KEEP, STRAIGHT </answer>",  # GT STOP: unsafe -> -1
        "<answer> ACCELERATE, STRAIGHT </answer>",  # GT DECELERATE: unsafe -> -1
        "<answer> DECELERATE, STRAIGHT </answer>",  # GT STOP: wrong, but not unsafe -> 0
        "<answer> STOP, KEEP, STRAIGHT </answer>",  # a hedge naming KEEP where the expert stops -> -1
        "<answer> ACCELERATE, STRAIGHT </answer>",  # GT KEEP: not safety-critical -> 0
        "no answer at all",  # nothing named -> 0
        "<answer> KEEP, STRAIGHT </answer>",  # no ground truth -> None
    ]
    truth = ["STOP", "DECELERATE", "STOP", "STOP", "KEEP", "STOP", None]
    assert safety_penalty(completions=completions, speed_action=truth) == [-1.0, -1.0, 0.0, -1.0, 0.0, 0.0, None]
    # The `solution` column works too, and the size is a recipe option (`safety_penalty`).
    (safety,) = get_reward_funcs(["safety"], safety_penalty=0.5)
    assert safety.__name__ == "safety"
    assert safety(completions=completions[:2], solution=["<answer> STOP, STRAIGHT </answer>"] * 2) == [-0.5, -0.5]
    with pytest.raises(ValueError, match="safety_penalty"):
        SafetyPenalty(-1.0)
    with pytest.raises(ValueError, match="needs the ground truth"):
        safety_penalty(completions=completions)


def test_action_weights_cancel_under_group_normalisation_but_the_safety_penalty_does_not():
    """Why `safety` exists: every completion of a group shares one ground truth, so weighting the correct word only
    rescales the group's rewards, and GRPO's (r - mean) / std advantages are unchanged."""
    import statistics

    def advantages(values):
        mean, std = statistics.fmean(values), statistics.pstdev(values)
        return [round((v - mean) / std, 9) for v in values]

    group = ["<answer> STOP, STRAIGHT </answer>"] * 2 + ["<answer> KEEP, STRAIGHT </answer>"]
    group += ["<answer> DECELERATE, STRAIGHT </answer>"]
    prompts, truth = ["scene"] * 4, ["STOP"] * 4
    (weighted,) = get_reward_funcs(["speed_planning"], diversity="none")
    (heavier,) = get_reward_funcs(["speed_planning"], diversity="none", speed_weights={"STOP": 0.5})
    plain = weighted(prompts=prompts, completions=group, speed_action=truth)
    assert plain == [1.0, 1.0, 0.0, 0.0] and heavier(prompts=prompts, completions=group, speed_action=truth) == [
        0.5,
        0.5,
        0.0,
        0.0,
    ]
    assert advantages(plain) == advantages([0.5, 0.5, 0.0, 0.0])  # the weight cancels
    penalty = get_reward_funcs(["safety"])[0](prompts=prompts, completions=group, speed_action=truth)
    with_safety = [a + b for a, b in zip(plain, penalty)]
    assert with_safety == [1.0, 1.0, -1.0, 0.0]
    # Now the unsafe KEEP is pushed down harder than the merely wrong DECELERATE.
    adv = advantages(with_safety)
    assert adv[2] < adv[3] < 0 < adv[0]


# --------------------------------------------------------------------------------------------------------------------
# feasible_coverage: each completion's share of the group's expected k-sample coverage
# --------------------------------------------------------------------------------------------------------------------


def _coverage_by_enumeration(plans, feasible, k):
    """Mean coverage of the k-subsets holding each completion, by listing every subset (the definition)."""
    import itertools

    n = len(plans)
    size = min(k, n)
    credits = []
    for i in range(n):
        subsets = [s for s in itertools.combinations(range(n), size) if i in s]
        credits.append(sum(len({plans[j] for j in s} & feasible) / len(feasible) for s in subsets) / len(subsets))
    return credits


def test_feasible_coverage_hand_computed():
    from alphadrive_trl.rewards import FeasibleCoverageReward

    # F = {STOP-STRAIGHT (truth), DECELERATE-STRAIGHT}; n = 4, k = 2: each completion is paired with one of 3 others.
    # STOP: its own plan (1) + DECELERATE found by 1 of 3 partners (1/3) -> (1 + 1/3) / 2 = 2/3.
    # DECELERATE: 1 + STOP found by 2 of 3 partners -> (1 + 2/3) / 2 = 5/6. KEEP: (2/3 + 1/3) / 2 = 1/2.
    completions = [answer("STOP", "STRAIGHT"), answer("STOP", "STRAIGHT"), answer("DECELERATE", "STRAIGHT")]
    completions.append(answer("KEEP", "STRAIGHT"))

    def cover(k):
        columns = dict(speed="STOP", path="STRAIGHT", feasible_actions=[["DECELERATE, STRAIGHT"]] * 4)
        return call(FeasibleCoverageReward(k), completions, prompts=["p"] * 4, **columns)

    assert cover(2) == approx([2 / 3, 2 / 3, 5 / 6, 1 / 2])
    # The group mean is the unbiased 2-sample coverage: pairs of the 4 completions cover 4 / 6 of F on average.
    assert sum(cover(2)) / 4 == pytest.approx(2 / 3, abs=ABS)
    # k = 1: [plan in F] / |F|. k >= n: one subset, the whole group, which covers F: every completion scores 1.
    assert cover(1) == [0.5, 0.5, 0.5, 0.0]
    assert cover(8) == [1.0, 1.0, 1.0, 1.0]


def test_feasible_coverage_one_feasible_plan_is_pass_at_k():
    from alphadrive_trl.rewards import FeasibleCoverageReward

    # 1 right of 8, k = 4: a wrong completion's 3 partners miss the right one with probability C(6,3)/C(7,3) = 4/7.
    group = [answer("STOP", "STRAIGHT")] + [answer("KEEP", "STRAIGHT")] * 7
    credits = call(FeasibleCoverageReward(4), group, prompts=["p"] * 8, speed="STOP", path="STRAIGHT")
    assert credits == approx([1.0] + [3 / 7] * 7)
    assert sum(credits) / 8 == pytest.approx(1 - math.comb(7, 4) / math.comb(8, 4), abs=ABS)  # pass@4 = 1/2
    # Once 5 of 8 are right, every 4-subset holds one: all completions score 1 and the group carries no advantage.
    group = [answer("STOP", "STRAIGHT")] * 5 + [answer("KEEP", "STRAIGHT")] * 3
    assert call(FeasibleCoverageReward(4), group, prompts=["p"] * 8, speed="STOP", path="STRAIGHT") == [1.0] * 8


def test_feasible_coverage_groups_rows_and_bad_input():
    from alphadrive_trl.rewards import FeasibleCoverageReward, feasible_coverage_reward

    reward = FeasibleCoverageReward(2)
    completions = [
        answer("STOP", "STRAIGHT"),
        answer("KEEP", "STRAIGHT"),
        answer("KEEP, STOP", "STRAIGHT"),  # hedged: not a plan
        answer("LEFT_TURN", "KEEP"),  # either order is one plan
        "no answer at all",
    ]
    result = call(
        reward,
        completions,
        prompts=["a", "a", "a", "b", "b"],
        speed=["STOP", "STOP", "STOP", "KEEP", None],
        path=["STRAIGHT", "STRAIGHT", "STRAIGHT", "LEFT_TURN", "LEFT_TURN"],
        feasible_actions=[None, None, None, ["not a plan", "STOP, LEFT_TURN"], None],
    )
    # Group a (F = {STOP-STRAIGHT}): STOP 1; the two others are paired with STOP 1 time in 2. Group b: the KEEP
    # completion finds the truth and its partner finds nothing -> (1 + 0) / 2; the last row has no ground truth.
    assert result == [1.0, 0.5, 0.5, 0.5, None]
    assert feasible_coverage_reward.k == 4 and feasible_coverage_reward.__name__ == "feasible_coverage"
    (built,) = get_reward_funcs(["feasible_coverage"], coverage_k=3)
    assert built.k == 3 and built.__name__ == "feasible_coverage"
    for bad in (0, -1, 2.5, True, "4"):
        with pytest.raises(ValueError, match="coverage_k"):
            FeasibleCoverageReward(bad)
    with pytest.raises(ValueError, match="Column `feasible_actions` has 1 values for 2 completions"):
        call(reward, completions[:2], speed="STOP", path="STRAIGHT", feasible_actions=[None])
    with pytest.raises(ValueError, match="needs the ground truth"):
        reward(completions=completions[:2])
    from alphadrive_trl.configs import DrivingGRPOConfig

    with pytest.raises(ValueError, match="`coverage_k` must be an integer >= 1, got 0"):
        DrivingGRPOConfig("unused", use_cpu=True, bf16=False, coverage_k=0)


@settings(max_examples=300, deadline=None, database=None)
@given(
    plans=st.lists(
        st.sampled_from(["STOP, STRAIGHT", "KEEP, STRAIGHT", "STOP, LEFT_CHANGE", "junk"]), min_size=1, max_size=7
    ),
    extra=st.lists(st.sampled_from(["KEEP, STRAIGHT", "STOP, LEFT_CHANGE", "DECELERATE, STRAIGHT"]), max_size=3),
    k=st.integers(1, 8),
)
def test_feasible_coverage_matches_enumerating_every_subset(plans, extra, k):
    from alphadrive_trl.rewards import FeasibleCoverageReward

    completions = [f"<answer> {plan} </answer>" for plan in plans]
    n = len(plans)
    result = call(
        FeasibleCoverageReward(k),
        completions,
        prompts=["p"] * n,
        speed="STOP",
        path="STRAIGHT",
        feasible_actions=[extra] * n,
    )
    feasible = {"STOP, STRAIGHT", *extra}
    assert result == approx(_coverage_by_enumeration(plans, feasible, k))


def test_registry_accepts_driving_grpo_config_options(tmp_path):
    from alphadrive_trl.configs import DrivingGRPOConfig

    config = DrivingGRPOConfig(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", speed_action_weights='{"KEEP": 0.5}'
    )
    funcs = get_reward_funcs(config.reward_funcs, **config.reward_options())
    assert [f.__name__ for f in funcs] == ["speed_planning", "path_planning", "format"]
    assert call(funcs[0], [answer("KEEP", "STRAIGHT")], speed="KEEP") == [0.5]


def test_rewards_pickle_with_their_names():
    for reward in get_reward_funcs(list(REWARD_REGISTRY)) + [speed_planning_reward, format_reward]:
        clone = pickle.loads(pickle.dumps(reward))
        assert clone.__name__ == reward.__name__
        completions = [answer("STOP", "LEFT_TURN"), answer("STOP", "STRAIGHT")]
        kwargs = dict(prompts=["p", "p"], completions=completions, speed_action=["STOP"] * 2, path_action=["X"] * 2)
        kwargs["trajectory"] = [None, None]  # trajectory_accuracy needs the column (a missing cell scores 0.0)
        assert clone(**kwargs) == reward(**kwargs)


def test_docstring_examples():
    modules = [rewards] + [
        importlib.import_module(f"{rewards.__name__}.{m.name}") for m in pkgutil.iter_modules(rewards.__path__)
    ]
    for module in modules:
        assert doctest.testmod(module).failed == 0, module.__name__


# --------------------------------------------------------------------------------------------------------------------
# Robustness: arbitrary completions never raise and give finite floats
# --------------------------------------------------------------------------------------------------------------------

_FRAGMENTS = st.sampled_from(
    [
        "<think>",
        "</think>",
        "<answer>",
        "</answer>",
        "<ANSWER>",
        "<answer",
        "KEEP",
        "stop",
        "Left-Turn",
        "RIGHT_CHANGE",
        ",",
        ", ",
        ";",
        "\n",
        " ",
        "é",
        "\x00",
        "🚗",
        "STRAIGHT.",
    ]
)
_TAGGED = st.lists(_FRAGMENTS | st.text(max_size=5), max_size=30).map("".join)
_HUGE = st.tuples(_TAGGED, st.integers(1, 2000)).map(lambda t: t[0] * t[1])
_TEXT = st.text(max_size=60) | _TAGGED | _HUGE
_JUNK = st.none() | st.integers() | st.floats() | st.binary(max_size=10) | st.just({"weird": [1, 2]})
_CONTENT = _TEXT | _JUNK | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": _TEXT | _JUNK}))
_COMPLETION = (
    _TEXT
    | _JUNK
    | st.lists(st.fixed_dictionaries({"role": st.just("assistant"), "content": _CONTENT}), max_size=2)
    | st.lists(_JUNK | _TEXT, max_size=2)
)
_ALL_REWARDS = get_reward_funcs(list(REWARD_REGISTRY)) + [planning_accuracy_reward, action_weight_reward]


@settings(max_examples=2000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    completions=st.lists(_COMPLETION, min_size=5, max_size=6),
    prompt_ids=st.lists(st.integers(0, 2), min_size=6, max_size=6),
    odd_prompt=_COMPLETION,
)
def test_arbitrary_completions_never_raise(completions, prompt_ids, odd_prompt):
    # 2,000 calls x 5-6 completions: > 10,000 arbitrary completions per run. Prompts are message lists with an image
    # part, plus one arbitrary object (prompts only form groups; they must not make a reward raise either).
    n = len(completions)
    pool = [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "p0"}]}],
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "p1"}]}],
        odd_prompt,
    ]
    kwargs = dict(
        prompts=[pool[i] for i in prompt_ids[:n]],
        completions=completions,
        speed_action=["KEEP"] * n,
        path_action=["LEFT_TURN"] * n,
        trajectory=[None] * n,  # the canonical schema always has the column; meta-action data leaves it empty
        feasible_actions=[["KEEP, LEFT_CHANGE", "not a plan"]] * n,
        trainer_state=None,
        log_metric=lambda name, value: None,
    )
    for reward in _ALL_REWARDS:
        result = reward(**kwargs)
        assert len(result) == n
        assert all(isinstance(v, float) and math.isfinite(v) for v in result), (reward.__name__, result)


# --------------------------------------------------------------------------------------------------------------------
# A plain trl.GRPOTrainer uses the registry rewards unchanged
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_registry_rewards_plug_into_plain_grpo_trainer(tmp_path, tiny_model_dir):
    from datasets import Dataset
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    rows = [("KEEP", "STRAIGHT"), ("STOP", "STRAIGHT"), ("DECELERATE", "LEFT_TURN"), ("ACCELERATE", "RIGHT_CHANGE")]
    # VLM-style rows: one image and a text part per prompt, as the driving datasets have.
    dataset = Dataset.from_list(
        [
            {
                "images": [Image.new("RGB", (56, 56), (40 * i, 100, 200 - 20 * i))],
                "prompt": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image"},
                            {"type": "text", "text": f"Ego speed {i} m/s. Plan: <answer> SPEED, PATH </answer>"},
                        ],
                    }
                ],
                "speed_action": speed,
                "path_action": path,
                "sample_id": f"s{i}",
                "trajectory": None,  # the canonical schema's column, empty in meta-action data
            }
            for i, (speed, path) in enumerate(rows * 2)
        ]
    )
    names = list(REWARD_REGISTRY)
    group_sizes = []

    def group_probe(prompts, completions, sample_id, **kwargs):
        # Our prompt-based groups must be TRL's groups: num_generations completions of each prompt.
        group_sizes.append(sorted(Counter(rewards.base._group_ids(prompts, len(completions), sample_id)).values()))
        return [0.0] * len(completions)

    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=8,
        max_steps=2,
        logging_steps=1,
        learning_rate=1e-4,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        seed=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[*get_reward_funcs(names), group_probe],
        args=args,
        train_dataset=dataset,
        processing_class=processor,
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    assert group_sizes == [[4, 4], [4, 4]]
    for entry in logs:
        for name in names:
            assert math.isfinite(entry[f"rewards/{name}/mean"]), name
        for metric in ("planning/speed_f1", "planning/path_f1", "planning/valid_answer"):
            assert 0.0 <= entry[metric] <= 1.0


# --- faults and bad input (issue 17) -------------------------------------------------------------------------------


def test_cache_never_changes_a_result_when_messages_are_edited_in_place():
    """The per-batch cache used to compare completions by identity: re-scoring the same message objects after
    editing their content gave the old values."""
    (speed,) = rewards.get_reward_funcs(["speed_planning"], diversity="none")
    prompts = [[{"role": "user", "content": "scene"}]] * 2
    completions = [
        [{"role": "assistant", "content": "<think> a </think> <answer> STOP, STRAIGHT </answer>"}],
        [{"role": "assistant", "content": "<think> b </think> <answer> KEEP, STRAIGHT </answer>"}],
    ]
    columns = {"speed_action": ["STOP", "STOP"], "path_action": ["STRAIGHT", "STRAIGHT"]}
    assert speed(prompts=prompts, completions=completions, **columns) == [1.0, 0.0]
    completions[0][0]["content"] = "<think> a </think> <answer> KEEP, STRAIGHT </answer>"
    completions[1][0]["content"] = "<think> b </think> <answer> STOP, STRAIGHT </answer>"
    assert speed(prompts=prompts, completions=completions, **columns) == [0.0, 1.0]
    # Prompts edited in place regroup the completions (paper diversity depends on the groups).
    (diverse,) = rewards.get_reward_funcs(["speed_planning"])
    same = [[{"role": "user", "content": "scene"}], [{"role": "user", "content": "scene"}]]
    both_stop = [[{"role": "assistant", "content": "<answer> STOP, STRAIGHT </answer>"}]] * 2
    assert diverse(prompts=same, completions=both_stop, **columns) == [0.8, 0.8]  # one group: 1 - min(0.2, 1)
    same[1][0]["content"] = "another scene"
    assert diverse(prompts=same, completions=both_stop, **columns) == [1.0, 1.0]  # two groups of one


def test_cache_never_changes_a_result_with_images_in_the_prompts():
    """TRL puts the PIL images into multimodal prompts; the content check then compares texts and prompt keys."""
    from PIL import Image

    (speed,) = rewards.get_reward_funcs(["speed_planning"], diversity="none")
    image = Image.new("RGB", (4, 4))
    prompts = [[{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "go"}]}]] * 2
    completions = [
        [{"role": "assistant", "content": "<answer> STOP, STRAIGHT </answer>"}],
        [{"role": "assistant", "content": "<answer> KEEP, STRAIGHT </answer>"}],
    ]
    columns = {"speed_action": ["STOP", "STOP"], "path_action": ["STRAIGHT", "STRAIGHT"]}
    assert rewards.base._fingerprint(prompts, completions, None) is None
    assert speed(prompts=prompts, completions=completions, **columns) == [1.0, 0.0]
    completions[0][0]["content"], completions[1][0]["content"] = (
        completions[1][0]["content"],
        "<answer> STOP </answer>",
    )
    assert speed(prompts=prompts, completions=completions, **columns) == [0.0, 1.0]


def test_unknown_reward_options_are_rejected_with_the_valid_ones():
    with pytest.raises(ValueError) as error:
        rewards.get_reward_funcs(["speed_planning"], diversity_mode="foo")
    assert str(error.value) == (
        "Unknown reward option(s) 'diversity_mode' (did you mean 'diversity'?); valid options: coverage_k, "
        "diversity, diversity_cap, diversity_weight, path_weights, safety_penalty, speed_weights, trajectory_labeller, "
        "trajectory_scale."
    )
    with pytest.raises(
        ValueError, match=r"^Unknown reward option\(s\) 'colour'; valid options: coverage_k, diversity, "
    ):
        rewards.get_reward_funcs(["format"], colour="red")
    # Every option the GRPO config passes is known.
    from alphadrive_trl.configs import DrivingGRPOConfig

    options = DrivingGRPOConfig("unused", use_cpu=True, bf16=False).reward_options()
    assert set(options) == rewards.reward_option_names()
    assert [f.__name__ for f in rewards.get_reward_funcs(["speed_planning", "format"], **options)] == [
        "speed_planning",
        "format",
    ]


def test_trajectory_accuracy_without_a_trajectory_column_raises_like_the_planning_rewards():
    (accuracy,) = rewards.get_reward_funcs(["trajectory_accuracy"])
    (speed,) = rewards.get_reward_funcs(["speed_planning"])
    completion = (
        "<answer> KEEP, STRAIGHT </answer> <trajectory> [5,0] [10,0] [15,0] [20,0] [25,0] [30,0] </trajectory>"
    )
    with pytest.raises(ValueError) as error:
        accuracy(completions=[completion], ego_speed=[5.0])
    assert str(error.value) == (
        "Reward 'trajectory_accuracy' needs the expert waypoints: a `trajectory` column (6 [x, y] points per row, "
        "e.g. from data_prep.synthetic or data_prep.nuscenes); the call had columns ['ego_speed']."
    )
    with pytest.raises(ValueError, match=r"^Reward 'speed_planning' needs the ground truth"):
        speed(completions=[completion], ego_speed=[5.0])
    assert accuracy(completions=[completion], trajectory=[None], ego_speed=[5.0]) == [0.0]  # a missing cell: 0.0


# --------------------------------------------------------------------------------------------------------------------
# The real tokenizer layout: tags and action words in several tokens
# --------------------------------------------------------------------------------------------------------------------


def test_rewards_on_completions_decoded_from_the_split_tokenizer(split_model_dir):
    """GRPO decodes the generated ids into text before the rewards see it. With the tokenizer that cuts `<think>` and
    ACCELERATE into 3 pieces and LEFT_CHANGE into 2 (like the real Qwen tokenizer), the decoded text is the original
    one and every reward gives the hand-worked values."""
    from transformers import AutoProcessor

    tokenizer = AutoProcessor.from_pretrained(split_model_dir).tokenizer
    texts = [
        answer("ACCELERATE", "LEFT_CHANGE"),
        answer("DECELERATE", "STRAIGHT"),
        answer("STOP", "RIGHT_TURN") + " extra",
        "<answer> KEEP, LEFT_TURN",
    ]
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    assert [
        len(tokenizer.tokenize(word)) for word in ("<think>", "ACCELERATE", "STRAIGHT", "LEFT_CHANGE", "KEEP")
    ] == [
        3,
        3,
        3,
        2,
        1,
    ]
    decoded = [tokenizer.decode(row + [tokenizer.eos_token_id], skip_special_tokens=True) for row in ids]
    assert decoded == texts
    completions = [[{"role": "assistant", "content": text}] for text in decoded]
    prompts = ["a", "b", "c", "d"]
    speed = call(speed_planning_reward, completions, prompts=prompts, speed="ACCELERATE", completion_ids=ids)
    assert speed == approx([0.9, 0.0, 0.0, 0.0])
    path = call(path_planning_reward, completions, prompts=prompts, path="LEFT_CHANGE", completion_ids=ids)
    assert path == approx([1.0, 0.0, 0.0, 0.0])
    assert format_reward(completions=completions) == [1.0, 1.0, 0.0, 0.0]
