"""Trajectory mode end to end: the recipes, then synthetic data -> SFT -> GRPO -> `alphadrive-eval score`.

The run uses the tiny random model and a handful of steps: it checks the plumbing of the mode (targets with
waypoints, the trajectory rewards inside `GRPOTrainer`, the L2 metrics in the evaluation), not learning. Whether the
numbers are right is checked with hand-worked values in `test_trajectory.py` and `test_evaluation.py`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from alphadrive_trl import evaluation, grpo, sft
from alphadrive_trl.configs import load_driving_config
from alphadrive_trl.rewards import REWARD_REGISTRY, get_reward_funcs

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny-qwen2.5-vl"
REAL_MODELS = ("Qwen2-VL-2B-Instruct", "Qwen2.5-VL-3B-Instruct", "Qwen2.5-VL-7B-Instruct", "Qwen3-VL-2B-Instruct")
PAIRS = [(TINY / "sft" / "config_trajectory.yaml", TINY / "grpo" / "config_trajectory.yaml")] + [
    (REPO / "recipes" / m / "sft" / "config_trajectory.yaml", REPO / "recipes" / m / "grpo" / "config_trajectory.yaml")
    for m in REAL_MODELS
]
TRAJECTORY_REWARDS = (
    "speed_planning_trajectory",
    "path_planning_trajectory",
    "trajectory_accuracy",
    "trajectory_consistency",
    "format_trajectory",
)
L2_KEYS = ("l2_1s", "l2_2s", "l2_3s", "ade", "fde")


def _cpu(argv: list[str]) -> list[str]:
    # Real recipes ask for bf16, which TrainingArguments refuses without a GPU.
    return argv if torch.cuda.is_available() else [*argv, "--use_cpu", "true", "--bf16", "false"]


@pytest.mark.parametrize(("sft_recipe", "grpo_recipe"), PAIRS, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_trajectory_recipes_are_a_consistent_pair(sft_recipe, grpo_recipe):
    sft_yaml, grpo_yaml = (yaml.safe_load(p.read_text()) for p in (sft_recipe, grpo_recipe))
    assert sft_yaml["prompt_template"] == grpo_yaml["prompt_template"] == "trajectory"
    for key in ("dataset_name", "sft_fraction", "split_seed"):
        assert sft_yaml.get(key, grpo_yaml.get(key)) == grpo_yaml.get(key), key
    assert grpo_yaml["model_name_or_path"] == sft_yaml["output_dir"]  # GRPO starts from this SFT output
    script_args, sft_args, _ = sft.make_parser().parse_args_and_config(args=_cpu(["--config", str(sft_recipe)]))
    assert script_args.prompt_template == "trajectory"
    script_args, grpo_args, _ = grpo.make_parser().parse_args_and_config(args=_cpu(["--config", str(grpo_recipe)]))
    assert list(grpo_args.reward_funcs) == list(TRAJECTORY_REWARDS)
    assert len(grpo_args.reward_weights) == len(TRAJECTORY_REWARDS)
    funcs = get_reward_funcs(grpo_args.reward_funcs, **grpo_args.reward_options())
    assert [f.__name__ for f in funcs] == list(TRAJECTORY_REWARDS)
    accuracy = funcs[TRAJECTORY_REWARDS.index("trajectory_accuracy")]
    assert accuracy.scale == grpo_yaml["trajectory_scale"] == grpo_args.trajectory_scale
    # The waypoints add ~70 tokens: the trajectory recipes leave room for them.
    assert grpo_args.max_completion_length > 128 and sft_args.eval_max_new_tokens > 128
    assert set(TRAJECTORY_REWARDS) <= set(REWARD_REGISTRY)


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> str:
    from data_prep import synthetic

    out = tmp_path_factory.mktemp("trajectory_data") / "synthetic"
    assert synthetic.main(["--output-dir", str(out), "--num-samples", "40", "--seed", "0"]) in (0, None)
    return str(out)


def _logged(output_dir: Path) -> list[dict]:
    return json.loads((output_dir / "trainer_state.json").read_text())["log_history"]


@pytest.mark.slow
def test_sft_then_grpo_then_score_in_trajectory_mode(tiny_model_dir, synthetic_dir, tmp_path):
    sft_out, grpo_out, eval_dir = tmp_path / "sft", tmp_path / "grpo", tmp_path / "eval"
    split = ("--sft_fraction", "0.25", "--split_seed", "0")
    quiet = ("--disable_tqdm", "true", "--report_to", "none", "--logging_steps", "1")

    # SFT on the trajectory targets (the tiny recipe, shrunk to a few steps).
    sft.main(
        [
            "--config", str(TINY / "sft" / "config_trajectory.yaml"),
            "--model_name_or_path", tiny_model_dir,
            "--dataset_name", synthetic_dir,
            "--output_dir", str(sft_out),
            "--stage", "sft", *split,
            "--max_steps", "3",
            "--per_device_train_batch_size", "4",
            "--eval_generation_steps", "0",
            "--save_strategy", "no",
            *quiet,
        ]
    )  # fmt: skip
    assert load_driving_config(str(sft_out))["prompt_template"] == "trajectory"
    sft_losses = [entry["loss"] for entry in _logged(sft_out) if "loss" in entry]
    assert len(sft_losses) == 3 and all(math.isfinite(v) and v > 0 for v in sft_losses)

    # GRPO from the SFT output with the five trajectory rewards of the recipe.
    grpo.main(
        [
            "--config", str(TINY / "grpo" / "config_trajectory.yaml"),
            "--model_name_or_path", str(sft_out),
            "--dataset_name", synthetic_dir,
            "--output_dir", str(grpo_out),
            "--stage", "grpo", *split,
            "--max_steps", "2",
            "--per_device_train_batch_size", "4",
            "--num_generations", "4",
            "--max_completion_length", "24",
            "--save_strategy", "no",
            *quiet,
        ]
    )  # fmt: skip
    steps = [entry for entry in _logged(grpo_out) if "loss" in entry]
    assert len(steps) == 2
    for entry in steps:
        for name in TRAJECTORY_REWARDS:
            value = entry[f"rewards/{name}/mean"]
            assert 0.0 <= value <= 1.0, (name, value)
    assert load_driving_config(str(grpo_out))["prompt_template"] == "trajectory"

    # Evaluation: generate on the test split, then score; trajectory mode is detected from the checkpoint.
    predictions = tmp_path / "predictions.jsonl"
    generate = ["generate", "--model", str(grpo_out), "--dataset", synthetic_dir, "--split", "test"]
    assert evaluation.main([*generate, "--output", str(predictions), "--max-new-tokens", "32"]) in (0, None)
    assert evaluation.main(["score", "--predictions", str(predictions), "--output-dir", str(eval_dir)]) in (0, None)
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    num_test = sum(1 for _ in predictions.open())
    assert metrics["mode"] == "trajectory"
    assert metrics["trajectory_num_samples"] == num_test > 0
    assert 0.0 <= metrics["trajectory_parse_rate"] <= 100.0
    for key in L2_KEYS:
        assert key in metrics
        # A few steps of a tiny random model rarely emit 6 waypoints; when one does, its errors are real distances.
        if metrics["trajectory_parse_rate"] > 0:
            assert math.isfinite(metrics[key]) and metrics[key] >= 0.0
        else:
            assert metrics[key] is None
    assert "trajectory" in (eval_dir / "report.md").read_text().lower()
