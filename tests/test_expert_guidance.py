"""Expert guidance (`expert_samples_per_group`): which samples are replaced, the exact expert token ids, the
replacement of TRL's `_generate` output, metrics without the expert rows, config checks, and an end-to-end run."""

from __future__ import annotations

import doctest
import itertools

import pytest
import torch
from transformers import AutoProcessor

from alphadrive_trl import expert_guidance
from alphadrive_trl.actions import completion_to_text
from alphadrive_trl.configs import DrivingGRPOConfig
from alphadrive_trl.expert_guidance import expert_completion_ids, expert_slots, replace_with_expert
from alphadrive_trl.grpo import driving_metrics

ROW = {"speed_action": "STOP", "path_action": "STRAIGHT", "reasoning": "The light is red."}


def test_doctests():
    assert doctest.testmod(expert_guidance).failed == 0


@pytest.mark.parametrize(
    ("num_generations", "per_group", "processes", "num_local"),
    [(4, 1, 1, 8), (4, 2, 2, 4), (8, 1, 2, 4), (8, 3, 4, 6), (6, 5, 3, 4)],
)
def test_slots_are_the_last_n_of_every_group_across_processes(num_generations, per_group, processes, num_local):
    flags = list(itertools.chain(*(expert_slots(num_local, p, num_generations, per_group) for p in range(processes))))
    groups = [flags[i : i + num_generations] for i in range(0, len(flags), num_generations)]
    for group in groups:
        assert group == [False] * (num_generations - per_group) + [True] * per_group
    assert expert_slots(num_local, 0, num_generations, 0) == [False] * num_local


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoProcessor.from_pretrained(tiny_model_dir).tokenizer


def test_expert_ids_are_the_sft_target_as_the_chat_template_writes_it(tokenizer, tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for template, text in [
        ("answer_only", "<answer> STOP, STRAIGHT </answer>"),
        ("default", "<think> The light is red. </think> <answer> STOP, STRAIGHT </answer>"),
    ]:
        ids = expert_completion_ids(ROW, tokenizer, template, eos, None)
        assert tokenizer.decode(ids) == text + "<|im_end|>"
        # The same tokens the SFT stage trains on: the assistant turn of the chat template, up to its end-of-turn.
        messages = [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": text}]},
        ]
        rendered = processor.apply_chat_template(messages, tokenize=False)
        turn = rendered[rendered.rindex("<|im_start|>assistant\n") + len("<|im_start|>assistant\n") :]
        assert ids == tokenizer(turn.rstrip("\n"), add_special_tokens=False)["input_ids"]
    assert expert_completion_ids(ROW, tokenizer, "answer_only", eos, 3) == ids_prefix(tokenizer, eos, 3)


def ids_prefix(tokenizer, eos, n):
    return [*tokenizer("<answer> STOP, STRAIGHT </answer>", add_special_tokens=False)["input_ids"], eos][:n]


@pytest.mark.parametrize(
    "row",
    [
        {"speed_action": None, "path_action": "STRAIGHT"},
        {"speed_action": "STOP"},
        {},
        {"speed_action": "STOP", "path_action": "STRAIGHT", "sample_id": "a"},  # `describe` needs a caption
    ],
)
def test_rows_without_an_expert_target_keep_the_policy_sample(tokenizer, row):
    template = "describe" if "sample_id" in row else "answer_only"
    assert expert_completion_ids(row, tokenizer, template, 1, None) is None


def test_replacement_changes_only_the_marked_slots(tokenizer):
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    sampled = [[5, eos], [6, 7, eos], [8, eos], [9, eos]]
    conversational = [[{"role": "assistant", "content": f"sample {i}"}] for i in range(4)]
    rows = [ROW, ROW, ROW, {"speed_action": None, "path_action": None}]
    generated = (["p"] * 4, sampled, None, conversational, [[-1.0] * len(s) for s in sampled], {}, None, [])
    new, flags = replace_with_expert(generated, rows, [False, True, False, True], tokenizer, "answer_only", eos, 24)
    assert flags == [False, True, False, False]  # the last row has no ground truth: its sample stays
    expert = expert_completion_ids(ROW, tokenizer, "answer_only", eos, 24)
    assert new[1] == [[5, eos], expert, [8, eos], [9, eos]]
    assert new[3][1] == [{"role": "assistant", "content": "<answer> STOP, STRAIGHT </answer>"}]
    assert new[3][0] == conversational[0] and new[3][3] == conversational[3]
    assert new[4][1] == [None] * len(expert) and new[4][0] == [-1.0, -1.0]
    assert sampled[1] == [6, 7, eos]  # the input is not modified
    # Plain-text completions stay plain text; no sampling log-probs (transformers generation) stay None.
    text = (["p"], [[5, eos]], None, ["sample"], None, {}, None, [])
    new, flags = replace_with_expert(text, [ROW], [True], tokenizer, "answer_only", eos, 24)
    assert new[3] == ["<answer> STOP, STRAIGHT </answer>"] and new[4] is None and flags == [True]
    with pytest.raises(ValueError, match="tool calls"):
        replace_with_expert((["p"], [[5]], [[1]], ["s"], None, {}, None, []), [ROW], [True], tokenizer, "x", eos, 4)


def test_driving_metrics_leave_out_expert_completions():
    # Two groups of 3; the last completion of each is the expert's (plan index -2), always right.
    stats = torch.tensor(
        [
            [1.0, 1.0, 1.0, 15.0],
            [0.0, 1.0, 1.0, 0.0],
            [1.0, 1.0, 1.0, -2.0],
            [0.0, 0.0, 0.0, -1.0],
            [1.0, 0.0, 1.0, 3.0],
            [1.0, 1.0, 1.0, -2.0],
        ]
    )
    metrics = driving_metrics(stats, num_generations=3)
    assert metrics["driving/speed_accuracy"] == 0.5
    assert metrics["driving/path_accuracy"] == 0.5
    assert metrics["driving/plan_accuracy"] == 0.25
    assert metrics["driving/answer_rate"] == 0.75
    assert metrics["driving/format_rate"] == 0.75
    assert metrics["driving/distinct_plans_per_group"] == 1.5


@pytest.mark.parametrize("value", [-1, 8, 9])
def test_config_needs_own_samples_in_every_group(tmp_path, value):
    with pytest.raises(ValueError, match="expert_samples_per_group.*between 0 and num_generations - 1 \\(7\\)"):
        DrivingGRPOConfig(str(tmp_path), use_cpu=True, bf16=False, expert_samples_per_group=value, num_generations=8)
    config = DrivingGRPOConfig(str(tmp_path), use_cpu=True, bf16=False, expert_samples_per_group=7, num_generations=8)
    assert config.expert_samples_per_group == 7


SEEN: list[list] = []


def recording_reward(completions, speed_action, path_action, **kwargs):
    """Records what the rewards see (in order), with the row's ground truth; rewards text length for a gradient."""
    SEEN.append([(completion_to_text(c), s, p) for c, s, p in zip(completions, speed_action, path_action)])
    return [len(completion_to_text(c)) / 100.0 for c in completions]


@pytest.mark.slow
def test_grpo_run_puts_the_expert_completion_last_in_every_group(tiny_model_dir, tiny_dataset_dir, tmp_path):
    from test_grpo import grpo_argv, run_grpo, step_logs

    SEEN.clear()
    argv = grpo_argv(tiny_model_dir, tiny_dataset_dir, tmp_path / "grpo", "--expert_samples_per_group", "1")
    argv += ["--reward_funcs", "format", "test_expert_guidance.recording_reward", "--reward_weights", "1", "1"]
    argv += ["--prompt_template", "answer_only"]
    argv += ["--max_completion_length", "24"]
    trainer = run_grpo(argv)

    assert len(SEEN) == 2  # one generation batch per step: 1 prompt x 4 generations
    for batch in SEEN:
        assert len(batch) == 4
        text, speed, path = batch[-1]
        assert text == f"<answer> {speed}, {path} </answer>"  # the expert's plan, exactly
        assert all(t != text or i == 3 for i, (t, _, _) in enumerate(batch[:3]))  # a tiny random model never writes it
    logs = step_logs(trainer.state.log_history)
    assert logs[1]["driving/expert_share"] == 0.25
    # The reward is the text length (format gives 0 to answer-only text): the expert's advantage is positive exactly
    # when its answer is longer than its group's mean.
    for step, batch in zip((1, 2), SEEN):
        lengths = [len(text) for text, _, _ in batch]
        assert logs[step]["driving/expert_positive_share"] == float(lengths[-1] > sum(lengths) / len(lengths))
    assert logs[1]["driving/answer_rate"] == 0.0  # the policy's own 3 samples; the expert's is left out
