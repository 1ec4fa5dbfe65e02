"""Perception pre-training (`make base-model`): the recipe, the caption data, determinism and a falling loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from alphadrive_trl.sft import main, make_parser
from data_prep.synthetic import GeneratorConfig, build_dataset

RECIPE = Path(__file__).resolve().parent.parent / "recipes/tiny-qwen2.5-vl/pretrain/config_perception.yaml"


def test_perception_recipe_parses_and_trains_on_captions_only():
    script_args, training_args, model_args = make_parser().parse_args_and_config(args=["--config", str(RECIPE)])
    assert script_args.prompt_template == "describe" and script_args.stage is None
    assert script_args.dataset_name == "data/synthetic-captions"
    assert model_args.model_name_or_path == "outputs/tiny-qwen2_5_vl-init"
    assert training_args.output_dir == "outputs/tiny-qwen2_5_vl-base"
    assert training_args.use_cpu and training_args.eval_generation_steps == 0
    # The demo's SFT recipes start from the base model this recipe writes.
    for recipe in ("sft/config_demo.yaml", "sft/config_demo_reasoning.yaml"):
        args = make_parser().parse_args_and_config(args=["--config", str(RECIPE.parent.parent / recipe)])
        assert args[2].model_name_or_path == training_args.output_dir


@pytest.mark.slow
def test_base_model_build_is_deterministic_and_its_loss_falls(tiny_model_dir, tmp_path):
    captions = tmp_path / "captions"
    build_dataset(GeneratorConfig(num_samples=40, seed=101, captions=True), captions, progress=False)

    def pretrain(out: Path) -> Path:
        main(["--config", str(RECIPE), "--model_name_or_path", tiny_model_dir, "--dataset_name", str(captions),
              "--output_dir", str(out), "--max_steps", "10", "--per_device_train_batch_size", "8",
              "--logging_steps", "1", "--learning_rate", "5e-3", "--disable_tqdm", "true"])  # fmt: skip
        return out

    first, second = pretrain(tmp_path / "a"), pretrain(tmp_path / "b")
    weights_a, weights_b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all((weights_a[k] == weights_b[k]).all() for k in weights_a)  # same data, seed, recipe: same bytes
    history = json.loads((first / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == 10 and sum(losses[-3:]) < 0.8 * sum(losses[:3]), losses
    saved = json.loads((first / "alphadrive_config.json").read_text())
    assert saved["prompt_template"] == "describe"
