"""DrivingSFTTrainer and the `alphadrive-sft` entry point, end to end with tiny models on CPU."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback

from alphadrive_trl.configs import DRIVING_CONFIG_NAME, DrivingScriptArguments, DrivingSFTConfig
from alphadrive_trl.sft import GENERATION_METRICS, DrivingSFTTrainer, load_sft_datasets, main, make_parser, train_sft


def sft_argv(model_dir, dataset_dir, output_dir, *extra):
    return [
        "--model_name_or_path", model_dir,
        "--dataset_name", dataset_dir,
        "--output_dir", str(output_dir),
        "--use_cpu", "true",
        "--bf16", "false",
        "--gradient_checkpointing", "false",
        "--per_device_train_batch_size", "8",
        "--learning_rate", "5e-3",
        "--lr_scheduler_type", "constant",
        "--logging_steps", "1",
        "--report_to", "none",
        "--seed", "0",
        *extra,
    ]  # fmt: skip


def logged(output_dir, key):
    with open(os.path.join(output_dir, "trainer_state.json")) as f:
        return [entry[key] for entry in json.load(f)["log_history"] if key in entry]


@pytest.mark.slow
def test_sft_end_to_end_loss_falls_and_checkpoint_reloads(tiny_model_dir, tiny_dataset_dir, tmp_path):
    out = tmp_path / "sft"
    main(
        sft_argv(
            tiny_model_dir, tiny_dataset_dir, out,
            "--max_steps", "12",
            "--save_steps", "6",
            "--eval_generation_steps", "12",
            "--eval_generation_samples", "4",
            "--eval_max_new_tokens", "8",
            "--max_pixels", str(56 * 56),
        )
    )  # fmt: skip
    losses = logged(out, "loss")
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses

    # Generation metrics were logged through the trainer's log at step 12, each a share in [0, 1].
    for name in GENERATION_METRICS:
        values = logged(out, name)
        assert len(values) == 1 and 0.0 <= values[0] <= 1.0

    # The output dir (and every checkpoint) is a complete, loadable model: weights, processor, driving config, card.
    for directory in (out, out / "checkpoint-6"):
        model = AutoModelForImageTextToText.from_pretrained(directory)
        processor = AutoProcessor.from_pretrained(directory)
        assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
        assert processor.image_processor.size["longest_edge"] == 56 * 56
        with open(directory / DRIVING_CONFIG_NAME) as f:
            assert json.load(f) == {
                "prompt_template": "default",
                "min_pixels": None,
                "max_pixels": 3136,
                "max_image_tokens": None,
                "max_images": None,
                "model_name_or_path": tiny_model_dir,  # what a resume into this output_dir compares against
            }
    assert (out / "README.md").is_file()
    trained = AutoModelForImageTextToText.from_pretrained(out).state_dict()
    initial = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).state_dict()
    assert not torch.equal(trained["lm_head.weight"], initial["lm_head.weight"])


class StopAfter(TrainerCallback):
    """Simulates a killed run: stop right after `step` (the checkpoint of that step has been written)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def step_logs(log_history: list[dict]) -> dict[int, dict]:
    return {entry["step"]: entry for entry in log_history if "loss" in entry}


def kill_mid_save(checkpoint_done: Path, step: int) -> Path:
    """Lay out `checkpoint-{step}` as a run killed while saving it leaves it: the config and half of the weights file
    written, nothing after them (optimizer, scheduler, RNG, trainer_state.json)."""
    partial = checkpoint_done.parent / f"checkpoint-{step}"
    partial.mkdir()
    shutil.copy(checkpoint_done / "config.json", partial / "config.json")
    weights = (checkpoint_done / "model.safetensors").read_bytes()
    (partial / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    return partial


@pytest.mark.slow
def test_resume_gives_the_same_next_steps_as_an_uninterrupted_run(tiny_model_dir, tiny_dataset_dir, tmp_path, caplog):
    def run(output_dir, callbacks=None):
        argv = sft_argv(tiny_model_dir, tiny_dataset_dir, output_dir, "--max_steps", "4", "--save_steps", "2")
        return train_sft(*make_parser().parse_args_and_config(args=argv), callbacks=callbacks)

    expected = step_logs(run(tmp_path / "full").state.log_history)

    run(tmp_path / "interrupted", callbacks=[StopAfter(2)])
    assert sorted(p.name for p in (tmp_path / "interrupted").glob("checkpoint-*")) == ["checkpoint-2"]
    # Fault injection: the run went on and was killed while writing checkpoint-3 (the SFT crash of issue 17 was
    # `no file named model.safetensors` in such a directory).
    partial = kill_mid_save(tmp_path / "interrupted" / "checkpoint-2", 3)
    caplog.clear()
    resumed = run(tmp_path / "interrupted")  # same command again: skips checkpoint-3, resumes checkpoint-2
    messages = [r.getMessage() for r in caplog.records if r.name == "alphadrive_trl.sft"]
    assert f"Skipping incomplete checkpoint {partial} (no trainer_state.json; a run was stopped while saving)." in (
        messages
    )
    resume_line = f"Resuming training from {tmp_path / 'interrupted' / 'checkpoint-2'}; delete it or set another "
    assert any(m.startswith(resume_line) for m in messages)
    got = step_logs(resumed.state.log_history)
    assert sorted(got) == [1, 2, 3, 4]
    assert expected[4]["loss"] < expected[1]["loss"]  # the weights moved: resuming from the initial ones would show
    for step in (3, 4):
        for key in ("loss", "grad_norm"):
            assert got[step][key] == pytest.approx(expected[step][key], rel=1e-5), (step, key)
    # The final weights are those of the uninterrupted run.
    full = load_file(tmp_path / "full" / "model.safetensors")
    after_resume = load_file(tmp_path / "interrupted" / "model.safetensors")
    assert sorted(full) == sorted(after_resume)
    for name, tensor in full.items():
        torch.testing.assert_close(after_resume[name], tensor, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.slow
def test_lora_run_trains_only_adapters(tiny_model_dir, tiny_dataset_dir, tmp_path):
    out = tmp_path / "lora"
    main(
        sft_argv(
            tiny_model_dir, tiny_dataset_dir, out,
            "--max_steps", "6",
            "--save_strategy", "no",
            "--use_peft", "true",
            "--lora_r", "8",
            "--lora_alpha", "16",
            "--lora_target_modules", "q_proj", "v_proj",
        )
    )  # fmt: skip
    losses = logged(out, "loss")
    assert len(losses) == 6 and losses[-1] < losses[0]
    with open(out / "adapter_config.json") as f:
        adapter = json.load(f)
    assert adapter["r"] == 8 and set(adapter["target_modules"]) == {"q_proj", "v_proj"}
    assert (out / "adapter_model.safetensors").is_file()
    assert (out / DRIVING_CONFIG_NAME).is_file()
    # The adapter loads on top of the base model through transformers' PEFT integration.
    model = AutoModelForImageTextToText.from_pretrained(out)
    assert any("lora_A" in name for name, _ in model.named_parameters())


@pytest.mark.slow
def test_frozen_vision_modules_keep_their_weights_and_the_rest_trains(tiny_model_dir, tiny_dataset_dir, tmp_path):
    out = tmp_path / "frozen"
    main(
        sft_argv(
            tiny_model_dir, tiny_dataset_dir, out,
            "--max_steps", "4", "--save_strategy", "no", "--freeze_vision_modules", "true",
        )
    )  # fmt: skip
    before, after = load_file(Path(tiny_model_dir) / "model.safetensors"), load_file(out / "model.safetensors")
    # Saved in the Hub checkpoints' key layout: `visual.*` for the vision encoder, `model.layers.*` for the text model.
    vision = [name for name in before if name.startswith("visual.")]
    text = [name for name in before if name.startswith("model.layers.")]
    assert vision and text
    assert all(torch.equal(before[name], after[name]) for name in vision)
    assert sum(not torch.equal(before[name], after[name]) for name in text) > len(text) // 2


@pytest.mark.slow
def test_qlora_run_on_a_4bit_base(tiny_model_dir, tiny_dataset_dir, tmp_path):
    argv = sft_argv(tiny_model_dir, tiny_dataset_dir, tmp_path / "qlora", "--max_steps", "3", "--save_strategy", "no")
    argv += [
        "--load_in_4bit",
        "true",
        "--use_peft",
        "true",
        "--lora_r",
        "8",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
    ]
    trainer = train_sft(*make_parser().parse_args_and_config(args=argv))
    quantized = [name for name, module in trainer.model.named_modules() if type(module).__name__ == "Linear4bit"]
    assert any(name.endswith("q_proj.base_layer") for name in quantized)
    losses = logged(tmp_path / "qlora", "loss")
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert (tmp_path / "qlora" / "adapter_model.safetensors").is_file()


def sft_rows(tiny_dataset_dir, split="test", stage=None, **script):
    script_args = DrivingScriptArguments(dataset_name=tiny_dataset_dir, stage=stage, **script)
    return load_sft_datasets(script_args, DrivingSFTConfig("unused", use_cpu=True, bf16=False, eval_strategy="steps"))


def test_datasets_follow_stage_split_and_limits(tiny_dataset_dir):
    train, test = sft_rows(tiny_dataset_dir)
    assert (len(train), len(test)) == (48, 16)
    assert set(train.column_names) == {"sample_id", "images", "prompt", "completion"}
    sft_part, _ = sft_rows(tiny_dataset_dir, stage="sft", sft_fraction=0.25)
    grpo_part, _ = sft_rows(tiny_dataset_dir, stage="grpo", sft_fraction=0.25)
    assert (len(sft_part), len(grpo_part)) == (12, 36)
    assert not set(sft_part["sample_id"]) & set(grpo_part["sample_id"])
    few, few_test = sft_rows(tiny_dataset_dir, max_train_samples=5, max_eval_samples=3, max_images=1)
    assert (len(few), len(few_test)) == (5, 3)
    assert {len(images) for images in few["images"]} == {1}


def test_missing_eval_split_is_a_clear_error(tiny_dataset_dir):
    with pytest.raises(ValueError, match="no split 'validation'"):
        sft_rows(tiny_dataset_dir, dataset_test_split="validation")


@pytest.fixture(scope="module")
def trainer(tiny_model_dir, tiny_dataset_dir, tmp_path_factory):
    train, test = sft_rows(tiny_dataset_dir)
    args = DrivingSFTConfig(
        str(tmp_path_factory.mktemp("trainer")), use_cpu=True, bf16=False, report_to="none",
        per_device_eval_batch_size=3, eval_max_new_tokens=4,
    )  # fmt: skip
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    return DrivingSFTTrainer(model, args=args, train_dataset=train, eval_dataset=test, processing_class=processor)


def test_generation_metrics_score_strict_answers(trainer, monkeypatch):
    rows = trainer.eval_dataset.select(range(5))
    references = [r["completion"][0]["content"][0]["text"] for r in rows]
    truth = [text.split("<answer>")[1].split("</answer>")[0].strip().split(", ") for text in references]
    other_speed = {"STOP": "KEEP", "KEEP": "STOP", "DECELERATE": "STOP"}
    answers = [
        f"<think> ok </think> <answer> {truth[0][0]}, {truth[0][1]} </answer>",  # both right
        f"<answer> {other_speed[truth[1][0]]}, {truth[1][1]} </answer>",  # path right only
        "<answer> KEEP, STOP </answer>",  # no PATH word: not parseable
        f"<answer> {truth[3][0]}, {truth[3][1]}",  # unclosed block: not parseable
        f"<answer>{truth[4][0]},{truth[4][1]}</answer>",  # both right, tight spacing
    ]
    served = iter(answers)
    monkeypatch.setattr(trainer, "_generate", lambda model, processor, examples: [next(served) for _ in examples])
    metrics = trainer.generation_metrics(rows)
    assert metrics == {
        "eval_parse_rate": 3 / 5,
        "eval_speed_accuracy": 2 / 5,
        "eval_path_accuracy": 3 / 5,
        "eval_planning_accuracy": 2 / 5,
    }


def test_generation_metrics_with_the_real_model_and_logging(trainer):
    trainer.model.train()
    metrics = trainer.log_generation_metrics(trainer.eval_dataset.select(range(4)))
    assert set(metrics) == set(GENERATION_METRICS)
    assert all(0.0 <= value <= 1.0 for value in metrics.values())
    assert trainer.state.log_history[-1]["eval_parse_rate"] == metrics["eval_parse_rate"]
    assert trainer.model.training  # generation switched to eval mode and back


def test_generation_steps_need_an_eval_dataset(tiny_model_dir, tiny_dataset_dir, tmp_path):
    train, _ = sft_rows(tiny_dataset_dir)
    args = DrivingSFTConfig(str(tmp_path), use_cpu=True, bf16=False, eval_generation_steps=5)
    with pytest.raises(ValueError, match="eval_generation_steps"):
        DrivingSFTTrainer(tiny_model_dir, args=args, train_dataset=train)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def launch(command: list[str], log_path) -> None:
    """Run a launcher from the repository root (recipes' relative paths), one thread per rank, offline."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    with open(log_path, "w") as log:
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=900)
    if result.returncode != 0:
        with open(log_path) as f:
            pytest.fail(f"{command[0]} failed ({result.returncode}):\n{f.read()[-4000:]}")


@pytest.mark.slow
def test_deepspeed_zero2_one_process_through_accelerate_launch(tiny_model_dir, tiny_dataset_dir, tmp_path):
    out = tmp_path / "zero2"
    launch(
        [
            os.path.join(BIN, "accelerate"), "launch",
            "--config_file", "recipes/accelerate_configs/zero2.yaml",
            "--num_processes", "1",
            "-m", "alphadrive_trl.sft",
            *sft_argv(tiny_model_dir, tiny_dataset_dir, out, "--use_cpu", "false", "--per_device_train_batch_size", "4"),
            "--gradient_accumulation_steps", "2",
            "--max_steps", "3",
            "--save_steps", "3",
        ],
        tmp_path / "zero2.log",
    )  # fmt: skip
    losses = logged(out, "loss")
    assert len(losses) == 3 and losses[-1] < losses[0]
    # ZeRO-2 wrote its partitioned optimizer state: the run really went through DeepSpeed.
    assert list((out / "checkpoint-3" / "global_step3").glob("*optim_states.pt"))
    assert AutoModelForImageTextToText.from_pretrained(out) is not None
    assert (out / DRIVING_CONFIG_NAME).is_file()


@pytest.mark.slow
def test_two_process_gloo_run_through_torchrun(tiny_model_dir, tiny_dataset_dir, tmp_path):
    out = tmp_path / "ddp"
    launch(
        [
            os.path.join(BIN, "torchrun"), "--standalone", "--nproc_per_node", "2",  # a free port
            "-m", "alphadrive_trl.sft",
            *sft_argv(tiny_model_dir, tiny_dataset_dir, out, "--per_device_train_batch_size", "4"),
            "--num_train_epochs", "1",
            "--save_strategy", "no",
            "--per_device_eval_batch_size", "2",
            "--eval_generation_steps", "6",
            "--eval_generation_samples", "5",  # uneven over 2 ranks: exercises the padded, reduced counts
            "--eval_max_new_tokens", "4",
        ],
        tmp_path / "ddp.log",
    )  # fmt: skip
    with open(out / "trainer_state.json") as f:
        state = json.load(f)
    # 48 rows / (4 per rank x 2 ranks) = 6 steps: two ranks shared the epoch (one rank alone would take 12).
    assert state["max_steps"] == 6
    losses = logged(out, "loss")
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert len(logged(out, "eval_planning_accuracy")) == 1
    assert AutoProcessor.from_pretrained(out) is not None and (out / DRIVING_CONFIG_NAME).is_file()
