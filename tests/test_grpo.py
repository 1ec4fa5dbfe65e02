"""DrivingGRPOTrainer: driving metrics (exact values), reward wiring, LoRA + KL, saving, resume, distributed launches."""

from __future__ import annotations

import doctest
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alphadrive_trl import grpo
from alphadrive_trl.actions import ALL_PLANS, completion_to_text
from alphadrive_trl.grpo import DRIVING_METRICS, DrivingGRPOTrainer, completion_statistics, driving_metrics

REPO = Path(__file__).resolve().parents[1]
DEMO_RECIPE = REPO / "recipes" / "tiny-qwen2.5-vl" / "grpo" / "config_demo.yaml"
# The end-to-end runs use the demo's reasoning variant: the paper's `<think>` format and the full AlphaDrive rewards.
REASONING_RECIPE = REPO / "recipes" / "tiny-qwen2.5-vl" / "grpo" / "config_demo_reasoning.yaml"
CONFIGURED_REWARDS = ("speed_planning", "path_planning", "format")
# The driving rewards plus `length_reward` (below, imported by its dotted path like any user reward): a tiny random
# model rarely writes a valid answer, so the driving rewards alone would leave every group without reward variance.
WITH_SIGNAL = (
    "--reward_funcs",
    *CONFIGURED_REWARDS,
    "test_grpo.length_reward",
    "--reward_weights",
    "1",
    "1",
    "1",
    "1",
)
NAN = float("nan")


def plan_index(speed: str, path: str) -> float:
    return float(ALL_PLANS.index((speed, path)))


def assert_rows(actual: torch.Tensor, expected: list[list[float]]) -> None:
    assert actual.shape == (len(expected), 4)
    for got, want in zip(actual.tolist(), expected):
        for g, w in zip(got, want):
            assert (math.isnan(g) and math.isnan(w)) or g == w, (got, want)


def test_doctests():
    assert doctest.testmod(grpo, optionflags=doctest.ELLIPSIS).failed == 0


# --- per-completion statistics and their aggregation (hand-worked values) -------------------------------------------


def test_completion_statistics_every_form():
    truth = {"speed_action": "STOP", "path_action": "LEFT_TURN"}
    completions = [
        "<think> red light </think> <answer> STOP, LEFT_TURN </answer>",  # right, well formatted
        [{"role": "assistant", "content": "<think> x </think> <answer> KEEP, LEFT_TURN </answer>"}],  # path right only
        "<answer> STOP, LEFT_TURN </answer>",  # right answer, no <think>: format 0
        "<think> ? </think> <answer> STOP, KEEP, LEFT_TURN </answer>",  # hedging: no strict parse, wrong on both
        "STOP LEFT_TURN",  # no answer block
        "",
        "<think> a </think> <answer> left turn, stop </answer>",  # either order, normalised case
    ]
    stats = completion_statistics(completions, [truth] * len(completions))
    left_stop = plan_index("STOP", "LEFT_TURN")
    assert_rows(
        stats,
        [
            [1.0, 1.0, 1.0, left_stop],
            [0.0, 1.0, 1.0, plan_index("KEEP", "LEFT_TURN")],
            [1.0, 1.0, 0.0, left_stop],
            [0.0, 0.0, 1.0, -1.0],
            [0.0, 0.0, 0.0, -1.0],
            [0.0, 0.0, 0.0, -1.0],
            [1.0, 1.0, 1.0, left_stop],
        ],
    )


def test_completion_statistics_ground_truth_sources():
    rows = [
        {"solution": "<answer> DECELERATE, RIGHT_CHANGE </answer>"},  # the published format
        {"speed_action": "KEEP", "path_action": "STRAIGHT", "solution": "<answer> STOP, LEFT_TURN </answer>"},
        {"sample_id": "no-labels"},  # no ground truth: accuracy NaN, format and plan still counted
    ]
    completion = "<think> t </think> <answer> DECELERATE, RIGHT_CHANGE </answer>"
    stats = completion_statistics([completion] * 3, rows)
    plan = plan_index("DECELERATE", "RIGHT_CHANGE")
    assert_rows(stats, [[1.0, 1.0, 1.0, plan], [0.0, 0.0, 1.0, plan], [NAN, NAN, 1.0, plan]])


def test_driving_metrics_hand_worked():
    keep_straight, stop_straight = plan_index("KEEP", "STRAIGHT"), plan_index("STOP", "STRAIGHT")
    # Two groups of 3 (ground truth STOP, STRAIGHT for both).
    stats = torch.tensor(
        [
            [1.0, 1.0, 1.0, stop_straight],
            [0.0, 1.0, 1.0, keep_straight],
            [0.0, 0.0, 0.0, -1.0],  # unparseable: not a plan
            [1.0, 1.0, 1.0, stop_straight],
            [1.0, 1.0, 1.0, stop_straight],
            [1.0, 1.0, 0.0, stop_straight],
        ]
    )
    metrics = driving_metrics(stats, num_generations=3)
    assert set(metrics) == set(DRIVING_METRICS)
    assert metrics["driving/speed_accuracy"] == pytest.approx(4 / 6)
    assert metrics["driving/path_accuracy"] == pytest.approx(5 / 6)
    assert metrics["driving/plan_accuracy"] == pytest.approx(4 / 6)
    assert metrics["driving/answer_rate"] == pytest.approx(5 / 6)
    assert metrics["driving/format_rate"] == pytest.approx(4 / 6)
    assert metrics["driving/distinct_plans_per_group"] == 1.5  # {STOP,KEEP} then {STOP}


def test_driving_metrics_nan_ground_truth():
    stats = torch.tensor([[NAN, NAN, 1.0, 3.0], [NAN, NAN, 0.0, 3.0], [1.0, 0.0, 1.0, 4.0], [0.0, 0.0, 1.0, 5.0]])
    metrics = driving_metrics(stats, num_generations=2)
    assert metrics["driving/speed_accuracy"] == 0.5  # NaN rows are left out
    assert metrics["driving/path_accuracy"] == 0.0
    assert metrics["driving/distinct_plans_per_group"] == 1.5


# --- errors before anything loads -----------------------------------------------------------------------------------


def test_wrong_reward_name_fails_with_valid_names_before_loading(tmp_path, capsys):
    argv = [
        "--config", str(DEMO_RECIPE),
        "--model_name_or_path", str(tmp_path / "no-model"),
        "--dataset_name", str(tmp_path / "no-data"),
        "--output_dir", str(tmp_path / "out"),
        "--reward_funcs", "speed_planning", "path_planing",
        "--reward_weights", "1.0", "1.0",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        grpo.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert re.fullmatch(
        r"alphadrive-grpo: error: .*'path_planing'.*valid names: .*speed_planning, path_planning.*\n", err
    )
    assert "format" in err
    assert not (tmp_path / "out").exists()


def test_reward_weights_must_match_rewards(tmp_path, capsys):
    argv = [
        "--config", str(DEMO_RECIPE),
        "--model_name_or_path", str(tmp_path / "no-model"),
        "--output_dir", str(tmp_path / "out"),
        "--reward_weights", "1.0", "2.0",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        grpo.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert (
        err.startswith("alphadrive-grpo: error: `reward_weights` has 2 values for 3 rewards") and err.count("\n") == 1
    )


def test_trainer_needs_a_reward_source(tmp_path):
    from trl import GRPOConfig

    with pytest.raises(ValueError, match="Pass `reward_funcs`, or a `DrivingGRPOConfig`"):
        DrivingGRPOTrainer("unused", args=GRPOConfig(str(tmp_path), use_cpu=True, bf16=False))


# --- end-to-end training runs (tiny model, few steps) ---------------------------------------------------------------


def grpo_argv(model_dir: str, dataset_dir: str, output_dir: Path, *extra: str) -> list[str]:
    """The demo recipe shrunk to a few cheap steps: 1 prompt x 4 generations per step, 8 new tokens, and a learning
    rate large enough that one step visibly moves a tiny model (the demo's 1e-5 leaves the KL at 0.0 after a step)."""
    return [
        "--config", str(REASONING_RECIPE),
        "--model_name_or_path", model_dir,
        "--dataset_name", dataset_dir,
        "--output_dir", str(output_dir),
        "--per_device_train_batch_size", "4",
        "--num_generations", "4",
        "--max_completion_length", "8",
        "--max_steps", "2",
        "--learning_rate", "1e-4",
        "--logging_steps", "1",
        "--save_strategy", "no",
        "--disable_tqdm", "true",
        "--log_level", "warning",
        *extra,
    ]  # fmt: skip


def run_grpo(argv: list[str], callbacks=None) -> DrivingGRPOTrainer:
    script_args, training_args, model_args = grpo.make_parser().parse_args_and_config(args=argv)
    return grpo.train_grpo(script_args, training_args, model_args, callbacks=callbacks)


def step_logs(log_history: list[dict]) -> dict[int, dict]:
    return {entry["step"]: entry for entry in log_history if "loss" in entry}


@pytest.mark.slow
def test_main_logs_rewards_and_driving_metrics_and_saves_everything(tiny_model_dir, tiny_dataset_dir, tmp_path):
    out = tmp_path / "grpo"
    grpo.main(grpo_argv(tiny_model_dir, tiny_dataset_dir, out, "--save_strategy", "steps", "--save_steps", "1"))

    state = json.loads((out / "trainer_state.json").read_text())
    logs = step_logs(state["log_history"])
    assert sorted(logs) == [1, 2]
    for entry in logs.values():  # every logging step carries every reward and every driving metric
        for name in CONFIGURED_REWARDS:
            assert 0.0 <= entry[f"rewards/{name}/mean"] <= 1.0
        for name in DRIVING_METRICS:
            assert name in entry and entry[name] is not None
        assert 0.0 <= entry["driving/distinct_plans_per_group"] <= 4
        assert entry["kl"] is not None and entry["kl"] >= 0.0
    for directory in (out, out / "checkpoint-2"):  # checkpoints keep the processor and the driving config
        assert (directory / "model.safetensors").is_file()
        assert (directory / "processor_config.json").is_file() and (directory / "tokenizer.json").is_file()
        assert json.loads((directory / "alphadrive_config.json").read_text())["prompt_template"] == "default"
    assert "alphadrive" in (out / "README.md").read_text()


def length_reward(completions, **kwargs):
    """Signal on random text: completions differ in length, so every group has reward variance and a gradient."""
    return [len(completion_to_text(c)) / 100.0 for c in completions]


@pytest.mark.slow
def test_lora_with_kl_uses_adapter_disabled_reference(tiny_model_dir, tiny_dataset_dir, tmp_path):
    from peft import PeftModel

    lora = ("--use_peft", "true", "--lora_r", "8", "--lora_alpha", "16", "--lora_target_modules", "q_proj", "v_proj")
    trainer = run_grpo(grpo_argv(tiny_model_dir, tiny_dataset_dir, tmp_path / "lora", *lora, *WITH_SIGNAL))
    assert trainer.beta == 0.1  # the recipe's KL term (grpo/config_demo_reasoning.yaml)
    assert isinstance(trainer.model, PeftModel) and trainer.ref_model is None  # no second copy of the weights

    logs = step_logs(trainer.state.log_history)
    assert sorted(logs) == [1, 2]
    for name in (*CONFIGURED_REWARDS, "length_reward"):
        assert f"rewards/{name}/mean" in logs[2]
    assert all(name in logs[2] for name in DRIVING_METRICS)
    assert logs[1]["kl"] == 0.0  # the fresh adapter is the identity: policy == reference
    assert logs[2]["kl"] > 0.0  # after one update the adapter-disabled reference differs from the policy
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()


class StopAfter:
    """Simulates a killed run: stop right after `step` (the checkpoint of that step has been written)."""

    def __new__(cls, step: int):
        from transformers import TrainerCallback

        class _Stop(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step >= step:
                    control.should_training_stop = True
                return control

        return _Stop()


@pytest.mark.slow
def test_resume_gives_the_same_next_steps_as_an_uninterrupted_run(tiny_model_dir, tiny_dataset_dir, tmp_path):
    checkpointing = ("--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", *WITH_SIGNAL)
    full = run_grpo(grpo_argv(tiny_model_dir, tiny_dataset_dir, tmp_path / "full", *checkpointing))
    expected = step_logs(full.state.log_history)

    interrupted_dir = tmp_path / "interrupted"
    argv = grpo_argv(tiny_model_dir, tiny_dataset_dir, interrupted_dir, *checkpointing)
    run_grpo(argv, callbacks=[StopAfter(2)])
    assert sorted(p.name for p in interrupted_dir.glob("checkpoint-*")) == ["checkpoint-2"]
    # Fault injection: killed while saving checkpoint-4 after the weights and the optimizer, before trainer_state.json
    # (the GRPO crash of issue 17 was `FileNotFoundError: .../trainer_state.json` on re-running).
    partial = interrupted_dir / "checkpoint-4"
    shutil.copytree(interrupted_dir / "checkpoint-2", partial)
    (partial / "trainer_state.json").unlink()

    resumed = run_grpo(argv)  # same command again: skips checkpoint-4 and resumes checkpoint-2
    got = step_logs(resumed.state.log_history)
    assert sorted(got) == [1, 2, 3, 4]
    assert expected[3]["grad_norm"] > 0 and expected[4]["kl"] > 0  # the comparison is not between zeros
    for step in (3, 4):
        for key in ("loss", "grad_norm", "reward", "kl", "entropy", "completions/mean_length", *DRIVING_METRICS):
            assert got[step][key] == pytest.approx(expected[step][key], rel=1e-5, abs=1e-9), (step, key)
    full_weights = load_file(tmp_path / "full" / "model.safetensors")
    resumed_weights = load_file(interrupted_dir / "model.safetensors")
    assert sorted(full_weights) == sorted(resumed_weights)
    for name, tensor in full_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, rtol=1e-5, atol=1e-7, msg=name)


def _launch(command: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def assert_shared_prompt_scoring_used(output: str) -> None:
    """The run scored with shared prompts: both first-batch checks passed (DeepSpeed / DDP wrap the model, and the
    shared pass must still match TRL's), and no fallback was logged."""
    for role in ("policy", "reference"):
        assert f"Shared-prompt scoring ({role} model): matches TRL's full pass" in output, output[-3000:]
    assert "does not match TRL's full pass" not in output


def _saved_args(output_dir: Path):
    return torch.load(output_dir / "training_args.bin", weights_only=False)


@pytest.mark.slow
def test_deepspeed_zero2_single_process(tiny_model_dir, tiny_dataset_dir, tmp_path):
    ds_config = tmp_path / "zero2.json"
    ds_config.write_text(
        json.dumps(
            {
                "zero_optimization": {"stage": 2},
                "train_micro_batch_size_per_gpu": "auto",
                "gradient_accumulation_steps": "auto",
                "gradient_clipping": "auto",
                "bf16": {"enabled": False},
            }
        )
    )
    out = tmp_path / "zero2"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--use_deepspeed"]
    launcher += ["--deepspeed_config_file", str(ds_config), "--mixed_precision", "no", "-m", "alphadrive_trl.grpo"]
    # DeepSpeed runs on CPU through its own accelerator only when the trainer is not forced to use_cpu.
    argv = grpo_argv(tiny_model_dir, tiny_dataset_dir, out, "--max_steps", "1", "--use_cpu", "false")
    result = _launch(launcher + argv + ["--log_level", "info"], tmp_path)

    args = _saved_args(out)
    assert args.distributed_state.distributed_type == "DEEPSPEED" and args.deepspeed_plugin.zero_stage == 2
    assert_shared_prompt_scoring_used(result.stdout + result.stderr)
    logs = step_logs(json.loads((out / "trainer_state.json").read_text())["log_history"])
    assert all(name in logs[1] for name in DRIVING_METRICS)
    assert (out / "model.safetensors").is_file() and (out / "alphadrive_config.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("expert", [0, 1])
def test_two_process_gloo_run(tiny_model_dir, tiny_dataset_dir, tmp_path, expert):
    out = tmp_path / "ddp"
    # --standalone: a free rendezvous port, so that a second test run on the machine cannot collide with this one.
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    argv = ["-m", "alphadrive_trl.grpo", *grpo_argv(tiny_model_dir, tiny_dataset_dir, out), "--log_level", "info"]
    argv += ["--expert_samples_per_group", str(expert)]
    result = _launch(launcher + argv, tmp_path)

    args = _saved_args(out)
    assert args.world_size == 2 and args.distributed_state.distributed_type == "MULTI_CPU"
    assert_shared_prompt_scoring_used(result.stdout + result.stderr)
    state = json.loads((out / "trainer_state.json").read_text())
    logs = step_logs(state["log_history"])
    # Each step consumes one prompt group per rank: 2 of the 38 GRPO rows (48 train rows, 20 % held by SFT).
    assert logs[1]["epoch"] == pytest.approx(2 / 38)
    assert all(name in logs[1] for name in DRIVING_METRICS) and "rewards/format/mean" in logs[1]
    # Expert guidance across ranks: one of each rank's group of 4 is the expert's, the same share logged everywhere.
    assert logs[1].get("driving/expert_share") == (0.25 if expert else None)
    assert ("driving/expert_positive_share" in logs[1]) == bool(expert)  # gathered from both ranks


class WhitespaceTokenizer:
    """One token per whitespace-separated word: lengths that can be counted by hand."""

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": text.split()}


def test_completion_budget_warns_when_reference_answers_would_be_cut(caplog):
    from conftest import make_driving_rows
    from datasets import Dataset

    rows = [{key: value for key, value in row.items() if key != "images"} for row in make_driving_rows(4)]
    rows[0]["reasoning"] = None  # answer only: "<answer> S, P </answer>" = 4 words
    # "<think> The light is red at 5.3 m/s. </think> <answer> STOP, STRAIGHT </answer>": 13 words, and GRPO also
    # generates the end-of-turn token: 14 tokens against max_completion_length.
    dataset = Dataset.from_list(rows)
    with caplog.at_level("WARNING", logger="alphadrive_trl.grpo"):
        assert grpo.check_completion_budget(dataset, WhitespaceTokenizer(), 14) == 0.0
        assert not caplog.records
        assert grpo.check_completion_budget(dataset, WhitespaceTokenizer(), 13) == 0.75
    message = caplog.records[-1].getMessage()
    assert "75% of the reference completions (4 rows sampled)" in message
    assert "max_completion_length=13" in message and "max 14" in message and "at least 14" in message
    # Rows the template cannot render (no trajectory in trajectory mode) are skipped, not fatal.
    assert grpo.check_completion_budget(dataset, WhitespaceTokenizer(), 5, template="trajectory") == 0.0


def test_completion_budget_counts_what_grpo_generates_with_the_real_tokenizer_layout(split_model_dir):
    """With tags and actions in several tokens (like the real Qwen tokenizer), the length the check measures is the
    number of tokens the model generates for the reference completion: its text, then `<|im_end|>`."""
    from conftest import make_driving_rows
    from datasets import Dataset
    from transformers import AutoProcessor

    from alphadrive_trl.prompts import build_completion

    tokenizer = AutoProcessor.from_pretrained(split_model_dir).tokenizer
    row = {key: value for key, value in make_driving_rows(1)[0].items() if key != "images"}
    text = build_completion(row)[0]["content"][0]["text"]  # the reference completion, closed by the end of turn
    generated = tokenizer(text + "<|im_end|>", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(generated[-1]) == "<|im_end|>"
    dataset = Dataset.from_list([row])
    assert grpo.check_completion_budget(dataset, tokenizer, len(generated)) == 0.0
    assert grpo.check_completion_budget(dataset, tokenizer, len(generated) - 1) == 1.0


def test_grpo_datasets_share_the_stage_split_and_name_missing_splits(tiny_dataset_dir):
    from alphadrive_trl.configs import DrivingGRPOConfig, DrivingScriptArguments

    def rows(**script):
        script_args = DrivingScriptArguments(dataset_name=tiny_dataset_dir, sft_fraction=0.25, **script)
        config = DrivingGRPOConfig("unused", use_cpu=True, bf16=False, eval_strategy="steps", eval_steps=1)
        return grpo.load_grpo_datasets(script_args, config)

    train, test = rows(stage="grpo")
    assert (len(train), len(test)) == (36, 16)  # the 75 % the SFT warm-up (stage sft, 12 rows) does not see
    assert {"prompt", "images", "speed_action", "path_action"} <= set(train.column_names)
    with pytest.raises(ValueError, match=r"has no split 'training'; it has \['test', 'train'\]"):
        rows(dataset_train_split="training")
    with pytest.raises(ValueError, match=r"no split 'validation'.*or `eval_strategy: no`\.$"):
        rows(dataset_test_split="validation")
