"""The Makefile's variables reach the commands it runs (dry runs: `make -n` prints, runs nothing)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry_run(*args: str) -> str:
    # The venv marker is taken as up to date so that a dry run never plans an install.
    result = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_pipeline_and_eval_honour_output_dir():
    commands = dry_run("pipeline", "OUTPUT_DIR=/tmp/run2")
    assert "--model_name_or_path outputs/tiny-qwen2_5_vl-base --output_dir /tmp/run2/sft" in commands
    assert "--model_name_or_path /tmp/run2/sft --output_dir /tmp/run2/grpo" in commands
    evaluation = dry_run("eval", "OUTPUT_DIR=/tmp/run2")
    assert "generate --model /tmp/run2/sft" in evaluation and "generate --model /tmp/run2/grpo" in evaluation
    assert "--output /tmp/run2/eval/sft/predictions.jsonl" in evaluation
    assert "--max-samples 500" in evaluation  # the demo's 500 test scenes


def test_demo_defaults_and_base_model_target():
    commands = dry_run("pipeline")
    assert "--output_dir outputs/demo-sft" in commands and "--output_dir outputs/demo-grpo" in commands
    # The demo's GRPO is the expert-guided recipe (session 14); GRPO_RECIPE selects the paper's plain one.
    default = "--config recipes/tiny-qwen2.5-vl/grpo/config_demo_expert.yaml --dataset_name data/synthetic"
    assert default in dry_run("grpo")
    plain = dry_run("pipeline-grpo", "GRPO_RECIPE=recipes/tiny-qwen2.5-vl/grpo/config_demo.yaml")
    assert "--config recipes/tiny-qwen2.5-vl/grpo/config_demo.yaml" in plain and "expert" not in plain
    base = dry_run("base-model")
    assert "data_prep.synthetic --output-dir data/synthetic-captions --num-samples 5000 --seed 101 --captions" in base
    assert "recipes/tiny-qwen2.5-vl/pretrain/config_perception.yaml" in base
    assert "--output_dir outputs/tiny-qwen2_5_vl-base" in base


def test_demo_trains_on_two_cpu_ranks_then_evaluates_both_checkpoints_side_by_side():
    commands = dry_run("demo", "OUTPUT_DIR=/tmp/run3").splitlines()
    sft = next(i for i, line in enumerate(commands) if "--output_dir /tmp/run3/sft" in line)
    grpo = next(i for i, line in enumerate(commands) if "alphadrive_trl.grpo" in line)
    parallel = next(i for i, line in enumerate(commands) if "-j2 eval-grpo eval-sft-beside" in line)
    sft_eval = next(i for i, line in enumerate(commands) if "generate --model /tmp/run3/sft" in line)
    grpo_eval = next(i for i, line in enumerate(commands) if "generate --model /tmp/run3/grpo" in line)
    # SFT, then GRPO, each on 2 torchrun ranks; then the two evaluations side by side (one core each).
    assert sft < grpo < parallel < grpo_eval and parallel < sft_eval
    for line in (commands[sft], commands[grpo]):
        assert line.startswith(".venv/bin/torchrun --standalone --nproc_per_node 2 -m alphadrive_trl.")
        assert "--gradient_accumulation_steps" not in line
    assert "> /tmp/run3/eval/sft.log" in commands[sft_eval]
    assert "compare /tmp/run3/eval/sft /tmp/run3/eval/grpo" in commands[-3]
    assert commands[-2].endswith(
        "curves /tmp/run3/sft /tmp/run3/grpo --names SFT GRPO --output /tmp/run3/eval/training_curves.png"
    )


def test_one_cpu_process_accumulates_the_second_rank_batch():
    # The demo recipes' batches are per rank (2 ranks); one process accumulates two batches for the same step.
    steps = (("pipeline-sft", "alphadrive_trl.sft", "sft/config_demo.yaml"),
             ("pipeline-grpo", "alphadrive_trl.grpo", "grpo/config_demo_expert.yaml"))  # fmt: skip
    for target, module, recipe in steps:
        line = next(c for c in dry_run(target, "CPU_PROCESSES=1").splitlines() if recipe in c)
        assert line.startswith(f".venv/bin/python -m {module}") and "--gradient_accumulation_steps 2" in line
    # A recipe of the user's own runs as written, in one process or through ACCELERATE_CONFIG.
    line = dry_run("grpo", "RECIPE=recipes/Qwen2-VL-2B-Instruct/grpo/config_alphadrive.yaml").splitlines()[-1]
    assert line.startswith(".venv/bin/python -m alphadrive_trl.grpo") and "--gradient_accumulation_steps" not in line


def test_sim_demo_trains_on_rollout_seeds_and_drives_on_others():
    commands = dry_run("sim-demo", "SIM_DIR=/tmp/sim")
    assert "data_prep.highway_env --output-dir /tmp/sim/data --episodes 30 --seed 1000" in commands
    assert "--config recipes/tiny-qwen2.5-vl/sft/config_sim_demo.yaml --dataset_name /tmp/sim/data" in commands
    assert "--model_name_or_path outputs/tiny-qwen2_5_vl-base --output_dir /tmp/sim/sft" in commands
    assert "--model_name_or_path /tmp/sim/sft --output_dir /tmp/sim/grpo" in commands
    assert "generate --model /tmp/sim/grpo --dataset /tmp/sim/data --split test" in commands
    assert "compare --models expert keep random sft=/tmp/sim/sft grpo=/tmp/sim/grpo --episodes 10 --seed 0" in commands
    assert "--output-dir /tmp/sim/closed-loop" in commands
    assert "curves /tmp/sim/sft /tmp/sim/grpo --names SFT GRPO --output /tmp/sim/eval/training_curves.png" in commands
    # The rollouts carry one earlier frame (the sim recipes' max_images 2 gives it to the policies when driving).
    assert "--seed 1000 --overwrite --stride 1 --history-frames 1" in commands


def test_sim_demo_facts_runs_sim_demo_with_its_own_recipes():
    commands = dry_run("sim-demo-facts", "SIM_FACTS_DIR=/tmp/facts")
    assert "SIM_DIR=/tmp/facts" in commands
    assert "SIM_SFT_RECIPE=recipes/tiny-qwen2.5-vl/sft/config_sim_demo_facts.yaml" in commands
    assert "SIM_GRPO_RECIPE=recipes/tiny-qwen2.5-vl/grpo/config_sim_demo_facts.yaml" in commands
