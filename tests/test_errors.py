"""Faults and bad input in the training commands: one-line errors (no traceback, exit 2, `ALPHADRIVE_TRACEBACK=1` for
the traceback), recipe keys named, and resuming past a checkpoint a kill left half-written."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from alphadrive_trl import grpo, sft
from alphadrive_trl.entrypoint import TRACEBACK_ENV, command, end_run, incomplete_reason, last_checkpoint

REPO = Path(__file__).resolve().parents[1]
SFT_RECIPE = REPO / "recipes" / "tiny-qwen2.5-vl" / "sft" / "config_demo.yaml"
GRPO_RECIPE = REPO / "recipes" / "tiny-qwen2.5-vl" / "grpo" / "config_demo.yaml"


def one_line_error(main, argv, capsys, prog: str) -> str:
    """Run `main(argv)`, check it ends with exit status 2 and a single `PROG: error: ...` line on stderr and no
    traceback, and return the message."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0][len(f"{prog}: error: ") :]


def test_command_turns_exceptions_into_one_line(capsys, monkeypatch):
    @command("demo")
    def bad_value(argv=None):
        raise ValueError("`max_steps` must be positive,\n got 0.")

    @command("demo")
    def bug(argv=None):
        return [][1]

    @command("demo")
    def interrupted(argv=None):
        raise KeyboardInterrupt

    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    assert one_line_error(bad_value, None, capsys, "demo") == "`max_steps` must be positive, got 0."
    assert one_line_error(bug, None, capsys, "demo") == (
        f"IndexError: list index out of range (set {TRACEBACK_ENV}=1 for the full traceback)"
    )
    with pytest.raises(SystemExit) as exit_info:
        interrupted()
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "\ndemo: interrupted; re-run the same command to resume (docs/errors.md).\n"

    monkeypatch.setenv(TRACEBACK_ENV, "1")  # debugging: the exception itself comes out
    with pytest.raises(ValueError, match="must be positive"):
        bad_value()
    with pytest.raises(KeyboardInterrupt):
        interrupted()


def test_misspelt_recipe_key_and_flag_are_named_with_the_fix(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(SFT_RECIPE.read_text() + "lerning_rate: 1.0e-4\n")
    message = one_line_error(sft.main, ["--config", str(recipe), "--seeed", "3"], capsys, "alphadrive-sft")
    assert message == (
        f"unknown key `lerning_rate` in recipe {recipe} (did you mean `learning_rate`?); "
        "unknown key `seeed` on the command line (did you mean `seed`?)"
    )
    assert not (tmp_path / "outputs").exists()
    message = one_line_error(
        sft.main, ["--config", str(SFT_RECIPE), "oops", "--max_steps", "3"], capsys, "alphadrive-sft"
    )
    assert message == "unexpected argument 'oops' on the command line (values follow a `--key`)"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--diversity_mode", "foo"], "`diversity_mode` must be 'paper', 'release' or 'none', got 'foo'."),
        (["--max_completion_length", "0"], "`max_completion_length` must be at least 1 token, got 0;"),
        (["--reward_funcs", "format", "--reward_weights", "1", "2"], "`reward_weights` has 2 values for 1 rewards"),
    ],
)
def test_grpo_option_mistakes_fail_before_loading(flags, expected, tmp_path, capsys):
    argv = ["--config", str(GRPO_RECIPE), "--output_dir", str(tmp_path / "out"), *flags]
    assert one_line_error(grpo.main, argv, capsys, "alphadrive-grpo").startswith(expected)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("main, prog", [(sft.main, "alphadrive-sft"), (grpo.main, "alphadrive-grpo")])
def test_missing_model_path_says_it_does_not_exist(main, prog, tmp_path, capsys):
    recipe = SFT_RECIPE if main is sft.main else GRPO_RECIPE
    argv = ["--config", str(recipe), "--model_name_or_path", str(tmp_path / "no-model"), "--output_dir", str(tmp_path)]
    assert one_line_error(main, argv, capsys, prog) == (
        f"`model_name_or_path` '{tmp_path / 'no-model'}' does not exist; point it at a saved model directory (e.g. "
        "the output_dir of the SFT run) or a Hub model id such as Qwen/Qwen2-VL-2B-Instruct."
    )


def test_missing_dataset_and_missing_columns_are_one_line(tmp_path, capsys):
    base = ["--config", str(SFT_RECIPE), "--model_name_or_path", str(tmp_path), "--output_dir", str(tmp_path / "o")]
    message = one_line_error(sft.main, [*base, "--dataset_name", str(tmp_path / "nope")], capsys, "alphadrive-sft")
    assert message.startswith(f"{tmp_path / 'nope'} does not exist; set `dataset_name` to a save_to_disk directory")

    DatasetDict({"train": Dataset.from_dict({"text": ["a", "b"]})}).save_to_disk(str(tmp_path / "text"))
    capsys.readouterr()  # the progress bar of the save above
    message = one_line_error(sft.main, [*base, "--dataset_name", str(tmp_path / "text")], capsys, "alphadrive-sft")
    assert message.startswith(f"{tmp_path / 'text'}: missing required column(s) ['sample_id', 'images', ")
    assert message.endswith("Convert the data with one of the `data_prep` builders (docs/data.md).")


@pytest.mark.slow
def test_cli_subprocess_prints_one_line_and_the_traceback_only_on_request(tmp_path):
    """The installed command as a user runs it: the whole stderr is the one line (no bitsandbytes notice either)."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(SFT_RECIPE.read_text() + "lerning_rate: 1.0e-4\n")
    env = {k: v for k, v in os.environ.items() if k != TRACEBACK_ENV}
    command_line = [sys.executable, "-W", "ignore", "-m", "alphadrive_trl.sft", "--config", str(recipe)]
    result = subprocess.run(command_line, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr == (
        f"alphadrive-sft: error: unknown key `lerning_rate` in recipe {recipe} (did you mean `learning_rate`?)\n"
    )
    result = subprocess.run(
        command_line, cwd=tmp_path, env={**env, TRACEBACK_ENV: "1"}, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().endswith("(did you mean `learning_rate`?)")


# --- resume: complete checkpoints only, and the model they were trained from ----------------------------------------


def make_checkpoint(output_dir: Path, step: int, *, state=True, weights=True, trained_from=None) -> Path:
    checkpoint = output_dir / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")
    if weights:
        (checkpoint / "model.safetensors").write_bytes(b"weights")
    if state:
        (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}) if state is True else state)
    if trained_from is not None:
        (checkpoint / "alphadrive_config.json").write_text(json.dumps({"model_name_or_path": trained_from}))
    return checkpoint


def test_incomplete_checkpoints_are_skipped_with_a_line(tmp_path, caplog):
    from transformers import TrainingArguments

    args = TrainingArguments(str(tmp_path), use_cpu=True)
    assert last_checkpoint(args, logging.getLogger("t")) is None  # nothing to resume

    complete = make_checkpoint(tmp_path, 2)
    make_checkpoint(tmp_path, 3, state=False)  # GRPO killed after the weights: no trainer_state.json
    make_checkpoint(tmp_path, 4, weights=False, state=False)  # SFT killed before the weights
    make_checkpoint(tmp_path, 10, state='{"global_step": 1')  # killed while writing the state
    assert incomplete_reason(str(complete)) is None
    assert incomplete_reason(str(tmp_path / "checkpoint-3")) == "no trainer_state.json"
    assert incomplete_reason(str(tmp_path / "checkpoint-10")) == "trainer_state.json is cut short"
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text("{}")
    assert incomplete_reason(str(tmp_path / "checkpoint-4")) == "no model weights"

    with caplog.at_level(logging.INFO, logger="t"):
        assert last_checkpoint(args, logging.getLogger("t")) == str(complete)
    assert [r.getMessage() for r in caplog.records] == [
        f"Skipping incomplete checkpoint {tmp_path / name} ({reason}; a run was stopped while saving)."
        for name, reason in [
            ("checkpoint-10", "trainer_state.json is cut short"),
            ("checkpoint-4", "no model weights"),
            ("checkpoint-3", "no trainer_state.json"),
        ]
    ] + [f"Resuming training from {complete}; delete it or set another `output_dir` to start over."]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_resume_warns_when_the_model_changed(tmp_path, caplog):
    from transformers import TrainingArguments

    checkpoint = make_checkpoint(tmp_path, 5, trained_from="outputs/demo-sft")
    args = TrainingArguments(str(tmp_path), use_cpu=True)
    with caplog.at_level(logging.INFO, logger="t"):
        assert last_checkpoint(args, logging.getLogger("t"), "outputs/demo-sft") == str(checkpoint)
    assert len(caplog.records) == 1  # the resume line only
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="t"):
        assert last_checkpoint(args, logging.getLogger("t"), "Qwen/Qwen2-VL-2B-Instruct") == str(checkpoint)
    assert [r.getMessage() for r in caplog.records][1] == (
        f"{checkpoint} was trained from 'outputs/demo-sft', not from `model_name_or_path` "
        "'Qwen/Qwen2-VL-2B-Instruct': resuming continues the checkpoint's weights. Set another `output_dir` to train "
        "'Qwen/Qwen2-VL-2B-Instruct' from the start."
    )
    # An explicit `resume_from_checkpoint` is the recipe's choice: nothing is searched.
    explicit = TrainingArguments(str(tmp_path), use_cpu=True, resume_from_checkpoint=str(checkpoint))
    assert last_checkpoint(explicit, logging.getLogger("t"), "x") is None


def test_bitsandbytes_kernel_notice_is_silenced():
    import alphadrive_trl  # noqa: F401 - installs the filter

    notice = logging.LogRecord(
        "bitsandbytes.backends.cpu.ops",
        logging.WARNING,
        __file__,
        1,
        "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already `pip install "
        "kernels`",
        ("No module named 'kernels'",),
        None,
    )
    other = logging.LogRecord("bitsandbytes.backends.cpu.ops", logging.WARNING, __file__, 1, "other", (), None)
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    assert logger.filter(notice) is False
    assert logger.filter(other) is True


def test_driving_config_is_written_before_the_trainer_saves(tmp_path):
    """`alphadrive_config.json` goes into checkpoint-N as soon as the Trainer decides to save, so the Trainer's
    trainer_state.json stays the last file written and marks the checkpoint complete."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from alphadrive_trl.configs import DrivingScriptArguments
    from alphadrive_trl.sft import SaveDrivingConfigCallback

    callback = SaveDrivingConfigCallback(DrivingScriptArguments(prompt_template="trajectory"), "base-model")
    args = TrainingArguments(str(tmp_path), use_cpu=True)
    state = TrainerState(global_step=3)
    callback.on_step_end(args, state, TrainerControl(should_save=False))
    assert not (tmp_path / "checkpoint-3").exists()
    callback.on_step_end(args, state, TrainerControl(should_save=True))
    saved = json.loads((tmp_path / "checkpoint-3" / "alphadrive_config.json").read_text())
    assert saved["prompt_template"] == "trajectory" and saved["model_name_or_path"] == "base-model"
    assert incomplete_reason(str(tmp_path / "checkpoint-3")) == "no trainer_state.json"  # not complete until then


def test_end_run_waits_for_every_rank_before_tearing_down():
    """The process group is destroyed only after the barrier: a rank with nothing to save must not tear it down while
    rank 0 still writes the weights (that aborted a 2-process CI run once)."""
    calls = []

    class Accelerator:
        def wait_for_everyone(self):
            calls.append("barrier")

        def end_training(self):
            calls.append("end_training")

    class Trainer:
        accelerator = Accelerator()

        def end(self):
            calls.append("end")

    class OldTrainer:  # transformers < 5.18 has no Trainer.end
        accelerator = Accelerator()

    end_run(Trainer())
    assert calls == ["barrier", "end"]
    calls.clear()
    end_run(OldTrainer())
    assert calls == ["barrier", "end_training"]
