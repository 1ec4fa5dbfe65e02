"""`make sim-demo` end to end with tiny budgets: rollouts -> SFT -> GRPO -> open-loop eval -> closed-loop compare."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _venv_of_this_interpreter(path: Path) -> Path:
    """A stand-in for the Makefile's VENV that runs this interpreter and counts as installed (its marker is newer
    than setup.cfg), so that `install` and the nested `make base-model` never call pip."""
    (path / "bin").mkdir(parents=True)
    python = path / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    (path / "bin" / "activate").touch()
    (path / ".installed").touch()
    return path


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize(
    ("target", "dir_variable", "template"),
    [("sim-demo", "SIM_DIR", "answer_only"), ("sim-demo-facts", "SIM_FACTS_DIR", "answer_only_facts")],
)
def test_sim_demo_target_runs_every_stage(tmp_path, tiny_model_dir, target, dir_variable, template):
    pytest.importorskip("highway_env")
    sim_dir = tmp_path / "sim"
    venv = _venv_of_this_interpreter(tmp_path / "venv")
    frames = "--frame-size 64x32"
    variables = {
        "VENV": str(venv),
        "TINY_MODEL": tiny_model_dir,
        "BASE_MODEL": tiny_model_dir,
        dir_variable: str(sim_dir),
        "SIM_EPISODES": "3",
        "SIM_DATA_FLAGS": f"--env highway,intersection --max-decisions 9 --stride 2 --splits 0.4,0.3,0.3 {frames}",
        "SIM_SFT_ARGS": "--max_steps 2 --per_device_train_batch_size 2 --logging_steps 1",
        "SIM_GRPO_ARGS": "--max_steps 1 --per_device_train_batch_size 4 --num_generations 2 --max_completion_length 8 "
        "--logging_steps 1",
        "SIM_EVAL_FLAGS": "--num-samples 1 --max-samples 2 --batch-size 2 --max-new-tokens 8",
        "SIM_DRIVE_EPISODES": "1",
        "SIM_DRIVE_FLAGS": f"--env highway --max-decisions 2 --max-new-tokens 8 {frames}",
    }
    result = subprocess.run(
        ["make", "--no-print-directory", target] + [f"{name}={value}" for name, value in variables.items()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,  # ~1 min alone on 2 cores; generous for shared CI machines
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((sim_dir / "data" / "dataset_dict.json").read_text())
    assert data["splits"] == ["train", "validation", "test"]
    for stage in ("sft", "grpo"):
        assert (sim_dir / stage / "config.json").is_file()
        # The template travels with the checkpoint: the closed loop below prompts each policy as it was trained.
        assert json.loads((sim_dir / stage / "alphadrive_config.json").read_text())["prompt_template"] == template
        assert (sim_dir / "eval" / stage / "metrics.json").is_file()
    assert (sim_dir / "eval" / "comparison.md").is_file()
    assert (sim_dir / "eval" / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    closed_loop = sim_dir / "closed-loop"
    table = (closed_loop / "comparison.md").read_text()
    for policy in ("expert", "keep", "random", "sft", "grpo"):
        assert f"| {policy} |" in table
        metrics = json.loads((closed_loop / policy / "metrics.json").read_text())
        assert metrics["policy"] == policy and metrics["overall"]["episodes"] == 1
        assert (closed_loop / policy / "episode_highway.gif").is_file()
