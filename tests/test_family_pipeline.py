"""SFT -> GRPO -> `alphadrive-eval generate/score` on every tiny VLM family, with 1 and with 3 images per sample.

The same entry points and prompts as the real recipes, shrunk to seconds: 2 SFT steps, 1 GRPO step (4 prompts x 2
completions of 8 tokens), generation on 4 test scenes. Each family runs at a small budget set through the one
processor-independent setting, `max_image_tokens`, which must come back from the checkpoint at evaluation time.
`qwen2_5_vl_split` is the tiny Qwen2.5-VL whose tokenizer cuts the tags and action words like the real one.
"""

import json
import math

import pytest
from transformers import AutoProcessor

from alphadrive_trl import evaluation, grpo, sft
from alphadrive_trl.configs import load_driving_config
from alphadrive_trl.image_budget import apply_image_budget, image_tokens_per_image

# Visual tokens per image each family runs at: its smallest setting (LLaVA-OneVision: base view + one tile).
BUDGETS = {
    "qwen2_5_vl": 16,
    "qwen2_5_vl_split": 16,
    "smolvlm": 16,
    "gemma3": 16,
    "internvl": 16,
    "llava_onevision": 40,
}
QUIET = ("--disable_tqdm", "true", "--report_to", "none", "--logging_steps", "1", "--log_level", "warning")


@pytest.fixture(scope="module")
def datasets_by_image_count(tmp_path_factory):
    """Canonical-schema datasets whose every row has exactly 1 or exactly 3 images."""
    from conftest import make_driving_rows
    from datasets import Dataset, DatasetDict

    from alphadrive_trl.data import DRIVING_FEATURES

    paths = {}
    for count in (1, 3):
        splits = {}
        for name, (num_rows, seed) in {"train": (16, 0), "test": (4, 1)}.items():
            rows = make_driving_rows(num_rows, seed)
            for row in rows:
                row["images"] = (row["images"] * 3)[:count]
                row["image_roles"] = ["front", "front_t-1", "front_left"][:count]
            splits[name] = Dataset.from_list(rows, features=DRIVING_FEATURES)
        paths[count] = str(tmp_path_factory.mktemp(f"driving_{count}img"))
        DatasetDict(splits).save_to_disk(paths[count])
    return paths


@pytest.fixture(scope="module")
def pipeline_model_dirs(tiny_model_dir, family_model_dirs, split_model_dir):
    return {"qwen2_5_vl": tiny_model_dir, "qwen2_5_vl_split": split_model_dir, **family_model_dirs}


def _logged(output_dir):
    return json.loads((output_dir / "trainer_state.json").read_text())["log_history"]


@pytest.mark.slow
@pytest.mark.parametrize("num_images", [1, 3])
@pytest.mark.parametrize("family", list(BUDGETS))
def test_sft_grpo_generate_score(family, num_images, pipeline_model_dirs, datasets_by_image_count, tmp_path):
    data = datasets_by_image_count[num_images]
    budget = str(BUDGETS[family])
    sft_out, grpo_out, eval_dir = tmp_path / "sft", tmp_path / "grpo", tmp_path / "eval"
    common = ("--dataset_name", data, "--use_cpu", "true", "--bf16", "false", "--seed", "0", "--save_strategy", "no")

    sft.main(
        [
            "--model_name_or_path", pipeline_model_dirs[family],
            "--output_dir", str(sft_out),
            *common,
            "--max_image_tokens", budget,
            "--max_steps", "2",
            "--per_device_train_batch_size", "4",
            "--learning_rate", "1e-3",
            "--gradient_checkpointing", "false",
            "--eval_strategy", "no",
            "--eval_generation_steps", "2",  # greedy answers on the test split, through the trainer's own generate
            "--eval_generation_samples", "2",
            "--eval_max_new_tokens", "4",
            *QUIET,
        ]
    )  # fmt: skip
    losses = [entry["loss"] for entry in _logged(sft_out) if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(v) and v > 0 for v in losses), losses
    assert load_driving_config(str(sft_out))["max_image_tokens"] == int(budget)
    assert 0.0 <= [entry for entry in _logged(sft_out) if "eval_parse_rate" in entry][0]["eval_parse_rate"] <= 1.0

    # GRPO from the SFT checkpoint, at the same budget (the GRPO recipes repeat it). LLaVA-OneVision with 3 images
    # needs `DrivingGRPOTrainer`'s `batch_num_images` fix, which TRL's loss forward leaves out.
    grpo.main(
        [
            "--model_name_or_path", str(sft_out),
            "--output_dir", str(grpo_out),
            *common,
            "--max_image_tokens", budget,
            "--reward_funcs", "speed_planning", "path_planning", "format",
            "--max_steps", "1",
            "--per_device_train_batch_size", "4",
            "--num_generations", "2",
            "--max_completion_length", "8",
            "--learning_rate", "1e-4",
            "--beta", "0.04",  # the real recipes' KL term: TRL loads a reference model and scores with it too
            "--gradient_checkpointing", "false",
            *QUIET,
        ]
    )  # fmt: skip
    steps = [entry for entry in _logged(grpo_out) if "loss" in entry]
    assert len(steps) == 1
    for name in ("speed_planning", "path_planning", "format"):
        assert 0.0 <= steps[0][f"rewards/{name}/mean"] <= 1.0
    assert 0.0 <= steps[0]["driving/answer_rate"] <= 1.0
    assert math.isfinite(steps[0]["kl"])

    # Evaluation reads the template and the budget from the checkpoint.
    predictions = tmp_path / "predictions.jsonl"
    generate = ["generate", "--model", str(grpo_out), "--dataset", data, "--split", "test", "--max-new-tokens", "8"]
    assert evaluation.main([*generate, "--output", str(predictions)]) in (0, None)
    meta = json.loads((tmp_path / "predictions.meta.json").read_text())
    assert meta["max_image_tokens"] == int(budget)
    assert sum(1 for _ in predictions.open()) == 4
    assert evaluation.main(["score", "--predictions", str(predictions), "--output-dir", str(eval_dir)]) in (0, None)
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["num_samples"] == 4 and 0.0 <= metrics["planning_accuracy"] <= 100.0

    # The checkpoint's processor, with the saved budget applied, costs what the budget allows per image.
    processor = AutoProcessor.from_pretrained(grpo_out)
    apply_image_budget(processor, max_image_tokens=int(budget))
    assert image_tokens_per_image(processor, 96, 64, num_images=num_images) <= int(budget)


@pytest.mark.slow
@pytest.mark.parametrize("num_images", [1, 3])
def test_grpo_reference_model_follows_the_budget(num_images, family_model_dirs, datasets_by_image_count, tmp_path):
    """GRPO with a KL term (the real recipes' beta 0.04) straight from a LLaVA-OneVision checkpoint whose grid the
    budget cuts: TRL loads the reference model from the path, with the checkpoint's full anyres grid, and forwards
    `batch_num_images` to a method that rejects it; the trainer fixes both."""
    trainer = grpo.train_grpo(
        *grpo.make_parser().parse_args_and_config(
            args=[
                "--model_name_or_path", family_model_dirs["llava_onevision"],
                "--dataset_name", datasets_by_image_count[num_images],
                "--output_dir", str(tmp_path / "grpo"),
                "--use_cpu", "true", "--bf16", "false", "--seed", "0", "--save_strategy", "no",
                "--max_image_tokens", "40",
                "--beta", "0.04",
                "--max_steps", "1",
                "--per_device_train_batch_size", "4",
                "--num_generations", "2",
                "--max_completion_length", "8",
                "--gradient_checkpointing", "false",
                *QUIET,
            ]
        )
    )  # fmt: skip
    assert trainer.ref_model.config.image_grid_pinpoints == [[32, 32]] == trainer.model.config.image_grid_pinpoints
    steps = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(steps) == 1 and math.isfinite(steps[0]["kl"])
