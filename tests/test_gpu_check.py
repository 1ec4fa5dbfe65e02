"""`benchmarks/gpu_check.py` (`make gpu-check`): its parts run end to end at tiny sizes on the CPU; on a machine
without a GPU it refuses unless told otherwise. The GPU figures themselves are in benchmarks/results/gpu_check.md."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location(
    "gpu_check", Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
)
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_refuses_without_a_gpu(tmp_path, capsys):
    assert gpu_check.main(["--output-dir", str(tmp_path)]) == 2
    assert "No CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "gpu_check.json").exists()


@pytest.mark.slow
def test_grpo_2b_part_times_both_trainers_on_the_real_recipe(tmp_path):
    """The 2B part at a tiny shape: the real Qwen2-VL-2B GRPO recipe parses and trains with both trainers, and the
    report holds each side's timed steps (all but the first of each run) and their ratio."""
    code = gpu_check.main(
        ["--output-dir", str(tmp_path), "--allow-cpu", "--parts", "grpo_2b", "--preset", "tiny",
         "--image-size", "160x96", "--steps", "2", "--repeats", "1", "--num-generations", "2",
         "--max-completion-length", "8", "--grpo-args", "--gradient_checkpointing false"]
    )  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    (result,) = report["results"]
    assert result["name"] == "grpo_2b" and "error" not in result
    assert result["recipe"] == "recipes/Qwen2-VL-2B-Instruct/grpo/config_alphadrive.yaml"
    assert result["timed_steps_per_side"] == 1
    assert result["extra_args"] == "--gradient_checkpointing false"  # passed to both sides, after the recipe
    assert len(result["ours_step_s"]) == len(result["baseline_step_s"]) == 1
    # both medians are rounded to the millisecond: at tiny step times that moves the ratio by up to a few percent
    assert result["ratio"] == pytest.approx(result["ours_s"] / result["baseline_s"], rel=0.05)
    assert result["mean_completion_tokens"] <= 8
    assert report["device"]["device"] == "cpu"
    assert "## grpo_2b" in (tmp_path / "gpu_check.md").read_text()


def test_a_failed_part_is_reported_and_the_others_still_run(tmp_path):
    assert gpu_check.main(["--output-dir", str(tmp_path), "--allow-cpu", "--parts", "nonsense"]) == 1
    (result,) = json.loads((tmp_path / "gpu_check.json").read_text())["results"]
    assert result["name"] == "nonsense" and "Unknown part 'nonsense'" in result["error"]
