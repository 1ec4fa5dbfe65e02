"""The real recipes of the non-Qwen families: they parse, their DeepSpeed JSON resolves, SFT hands over to GRPO, and
the visual tokens per camera at each recipe's budget (the README table) come out of the real processor classes with
the checkpoints' image settings, offline (`alphadrive_trl.tiny_models.build_reference_processor`)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from deepspeed.runtime.config import DeepSpeedConfig
from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

from alphadrive_trl import grpo, sft
from alphadrive_trl.image_budget import ImageBudgetError, apply_image_budget, image_tokens_per_image
from alphadrive_trl.tiny_models import build_reference_processor

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# recipe folder -> (Hub id, max_image_tokens, tokens per 1600x900 camera: alone, each of 3, at the Hub default)
FAMILIES = {
    "SmolVLM2-2.2B-Instruct": ("HuggingFaceTB/SmolVLM2-2.2B-Instruct", 512, 405, 405, 1053),
    "gemma-3-4b-it": ("google/gemma-3-4b-it", 512, 256, 256, 256),
    "InternVL3-2B-hf": ("OpenGVLab/InternVL3-2B-hf", 512, 256, 256, 2304),
    "llava-onevision-qwen2-0.5b-ov-hf": ("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", 1536, 1149, 730, 7269),
}


def parse(parser, recipe: Path):
    return parser.parse_args_and_config(args=["--config", str(recipe), "--use_cpu", "true"])


@pytest.mark.parametrize("folder", FAMILIES)
def test_recipes_parse_and_hand_over(folder):
    model_id, budget, *_ = FAMILIES[folder]
    sft_recipe, grpo_recipe = (RECIPES / folder / stage / "config_alphadrive.yaml" for stage in ("sft", "grpo"))
    sft_script, sft_args, sft_model = parse(sft.make_parser(), sft_recipe)
    grpo_script, grpo_args, grpo_model = parse(grpo.make_parser(), grpo_recipe)
    for recipe, objects in (
        (sft_recipe, (sft_script, sft_args, sft_model)),
        (grpo_recipe, (grpo_script, grpo_args, grpo_model)),
    ):
        known = {name for obj in objects for name in vars(obj)} | {"model_revision"}
        assert set(yaml.safe_load(recipe.read_text())) <= known, recipe
    assert sft_model.model_name_or_path == model_id
    assert grpo_model.model_name_or_path == sft_args.output_dir == f"outputs/{folder}-sft"
    for script in (sft_script, grpo_script):
        assert (script.max_image_tokens, script.max_pixels, script.sft_fraction, script.split_seed) == (
            budget,
            None,
            0.2,
            42,
        )
    assert (sft_script.stage, grpo_script.stage) == ("sft", "grpo")
    # The paper's settings, as in the Qwen recipes.
    assert (
        sft_args.learning_rate,
        sft_args.per_device_train_batch_size * sft_args.gradient_accumulation_steps * 8,
    ) == (
        2e-5,
        128,
    )
    assert (grpo_args.learning_rate, grpo_args.beta, grpo_args.num_generations, grpo_args.max_completion_length) == (
        1e-6,
        0.04,
        2,
        256,
    )
    assert sft_args.max_length is None and sft_args.bf16 and grpo_args.bf16


@pytest.mark.parametrize("stage_json", ["zero2.json", "zero3.json"])
@pytest.mark.parametrize("folder", FAMILIES)
def test_deepspeed_config_resolves(folder, stage_json):
    _, training_args, _ = parse(sft.make_parser(), RECIPES / folder / "sft" / "config_alphadrive.yaml")
    hf_config = HfTrainerDeepSpeedConfig(json.loads((RECIPES / "deepspeed" / stage_json).read_text()))
    hf_config.trainer_config_process(training_args)
    hf_config.trainer_config_finalize(training_args, SimpleNamespace(config=SimpleNamespace(hidden_size=2048)), 1000)
    assert "auto" not in json.dumps(hf_config.config)
    assert DeepSpeedConfig(hf_config.config).zero_optimization_stage == int(stage_json[4])


@pytest.mark.parametrize("folder", FAMILIES)
def test_visual_tokens_per_camera_at_the_recipe_budget(folder):
    model_id, budget, alone, each_of_three, hub_default = FAMILIES[folder]
    processor = build_reference_processor(model_id)
    assert image_tokens_per_image(processor, 1600, 900) == hub_default
    apply_image_budget(processor, max_image_tokens=budget)
    assert image_tokens_per_image(processor, 1600, 900) == alone
    assert image_tokens_per_image(processor, 1600, 900, num_images=3) == each_of_three
    for width, height in ((1600, 900), (900, 1600), (1000, 1000), (640, 480)):
        assert image_tokens_per_image(processor, width, height) <= budget


def test_qwen_recipes_budget_in_either_unit():
    processor = build_reference_processor("Qwen/Qwen2-VL-2B-Instruct")
    assert image_tokens_per_image(processor, 1600, 900) == 1824  # the Hub default budget
    apply_image_budget(processor, max_pixels=401_408)  # the paper's value, in the Qwen recipes
    assert image_tokens_per_image(processor, 1600, 900) == 480
    processor = build_reference_processor("Qwen/Qwen2-VL-2B-Instruct")
    apply_image_budget(processor, max_image_tokens=512)
    assert processor.image_processor.size["longest_edge"] == 401_408


def test_llava_onevision_refuses_a_budget_below_one_tile():
    processor = build_reference_processor("llava-hf/llava-onevision-qwen2-0.5b-ov-hf")
    with pytest.raises(ImageBudgetError, match=r"\(1485 tokens with the smallest grid\).*max_image_tokens >= 1485"):
        apply_image_budget(processor, max_image_tokens=1024)
