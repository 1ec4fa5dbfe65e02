"""Non-Qwen VLM families: tiny offline models, and the per-image visual-token budget behind one interface."""

import json
import os

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from alphadrive_trl.collator import vision_token_ids
from alphadrive_trl.configs import DrivingScriptArguments, load_driving_config, save_driving_config
from alphadrive_trl.image_budget import (
    ImageBudgetError,
    apply_image_budget,
    get_image_budget_hook,
    image_tokens_per_image,
)
from alphadrive_trl.tiny_models import FAMILY_ARCHITECTURES, build_tiny_model

EXPECTED = {  # model class, processor class, end-of-turn token, visual tokens per image in a 3-image sample
    "smolvlm": ("SmolVLMForConditionalGeneration", "SmolVLMProcessor", "<end_of_utterance>", 16),
    "gemma3": ("Gemma3ForConditionalGeneration", "Gemma3Processor", "<end_of_turn>", 16),
    "llava_onevision": ("LlavaOnevisionForConditionalGeneration", "LlavaOnevisionProcessor", "<|im_end|>", 17),
    "internvl": ("InternVLForConditionalGeneration", "InternVLProcessor", "<|im_end|>", 16),
}


@pytest.mark.parametrize("arch", FAMILY_ARCHITECTURES)
def test_family_reloads_offline_and_generates_with_three_images(arch, family_model_dirs):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    model = AutoModelForImageTextToText.from_pretrained(family_model_dirs[arch])
    processor = AutoProcessor.from_pretrained(family_model_dirs[arch])
    model_class, processor_class, end_of_turn, per_image = EXPECTED[arch]
    assert (type(model).__name__, type(processor).__name__) == (model_class, processor_class)
    assert model.config.model_type == arch
    assert sum(p.numel() for p in model.parameters()) < 400_000

    content = [{"type": "image"}] * 3 + [{"type": "text", "text": "Plan the next 3 seconds."}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    images = [Image.new("RGB", (96, 64), (200, 30, 30)), Image.new("RGB", (64, 64)), Image.new("RGB", (160, 90))]
    inputs = processor(text=[text], images=[images], return_tensors="pt")
    feature_id = get_image_budget_hook(processor).feature_token_id(processor)
    config_id = getattr(model.config, "image_token_id", None)
    assert feature_id == (config_id if config_id is not None else model.config.image_token_index)
    assert (inputs["input_ids"] == feature_id).sum().item() == 3 * per_image
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    assert model.generation_config.eos_token_id[0] == processor.tokenizer.convert_tokens_to_ids(end_of_turn)
    assert model.config.get_text_config().vocab_size >= len(processor.tokenizer)
    # The tags stay plain text: decoding keeps them (the parsers need them), and image tokens are masked in training.
    ids = processor.tokenizer("<think> a </think> <answer> KEEP, STRAIGHT </answer>")["input_ids"]
    assert (
        processor.tokenizer.decode(ids, skip_special_tokens=True)
        == "<think> a </think> <answer> KEEP, STRAIGHT </answer>"
    )
    assert feature_id in vision_token_ids(processor)
    with open(os.path.join(family_model_dirs[arch], "tiny_model.json")) as f:
        assert json.load(f)["arch"] == arch


@pytest.fixture()
def processors(family_model_dirs, tiny_model_dir):
    """Fresh processors (the budget changes them in place)."""
    loaded = {arch: AutoProcessor.from_pretrained(path) for arch, path in family_model_dirs.items()}
    loaded["qwen2_5_vl"] = AutoProcessor.from_pretrained(tiny_model_dir)
    return loaded


def test_qwen_budget_in_tokens_is_max_pixels(processors):
    processor = processors["qwen2_5_vl"]
    apply_image_budget(processor, max_image_tokens=9)
    assert processor.image_processor.size["longest_edge"] == 9 * 28 * 28
    assert image_tokens_per_image(processor, 448, 448) == 9
    # The paper's 401,408 pixels are 512 tokens of 28x28 pixels: the same budget written in either unit.
    apply_image_budget(processor, max_pixels=401_408)
    assert processor.image_processor.size["longest_edge"] == 512 * 28 * 28
    with pytest.raises(ImageBudgetError, match="either `max_image_tokens` or `max_pixels`"):
        apply_image_budget(processor, max_pixels=1000, max_image_tokens=4)


# (arch, budget, {image size: visual tokens}, native settings the hook chose)
BUDGETS = [
    ("smolvlm", 16, {(96, 64): 16, (1024, 512): 16}, {"do_image_splitting": False, "size": {"longest_edge": 64}}),
    # Longest edge 2 tiles: 96x64 -> 128x128 -> 2x2 tiles + the global view; 1024x512 -> 2x1 + 1.
    ("smolvlm", 80, {(96, 64): 80, (1024, 512): 48}, {"do_image_splitting": True, "size": {"longest_edge": 128}}),
    ("gemma3", 16, {(96, 64): 16, (1024, 512): 16}, {"do_pan_and_scan": False}),
    # Pan-and-scan: a 2:1 image gets 2 crops + the original; 96x64 crops would be under the 256 px minimum crop.
    ("gemma3", 48, {(96, 64): 16, (1024, 512): 48}, {"do_pan_and_scan": True, "pan_and_scan_max_num_crops": 2}),
    ("internvl", 16, {(96, 64): 16, (1024, 512): 16}, {"max_patches": 1}),
    # 2 tiles + the thumbnail for a wide image; a square one still fits one tile.
    ("internvl", 48, {(1024, 512): 48, (64, 64): 16}, {"max_patches": 2}),
    # Anyres grid cut to one tile: base view (4x4) + the unpadded tile + one newline per row.
    ("llava_onevision", 40, {(64, 64): 36, (96, 64): 26}, {"image_grid_pinpoints": [[32, 32]]}),
    (
        "llava_onevision",
        60,
        {(64, 64): 36, (96, 64): 44, (64, 96): 46},
        {"image_grid_pinpoints": [[32, 32], [32, 64], [64, 32]]},
    ),
]


@pytest.mark.parametrize(("arch", "budget", "tokens", "native"), BUDGETS)
def test_budget_sets_visual_tokens_per_image(processors, arch, budget, tokens, native):
    processor = processors[arch]
    apply_image_budget(processor, max_image_tokens=budget)
    for (width, height), expected in tokens.items():
        assert image_tokens_per_image(processor, width, height) == expected, (width, height)
        assert expected <= budget
    image_processor = processor.image_processor
    for name, value in native.items():
        actual = getattr(image_processor, name)
        actual = dict(actual) if name == "size" else actual
        if name == "size":
            actual = {k: v for k, v in actual.items() if v is not None}
        assert actual == value, name


def test_llava_onevision_multi_image_samples_use_base_views(processors):
    processor = processors["llava_onevision"]
    assert image_tokens_per_image(processor, 96, 64) == 70  # one image: base view + a 2x2 anyres grid
    assert image_tokens_per_image(processor, 96, 64, num_images=3) == 17  # several: base view + newline each


def test_llava_onevision_model_config_follows_the_budget(family_model_dirs):
    model = AutoModelForImageTextToText.from_pretrained(family_model_dirs["llava_onevision"])
    processor = AutoProcessor.from_pretrained(family_model_dirs["llava_onevision"])
    apply_image_budget(processor, max_image_tokens=40, model=model)
    assert model.config.image_grid_pinpoints == [[32, 32]]
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Plan."}]}],
        add_generation_prompt=True,
    )
    inputs = processor(text=[text], images=[[Image.new("RGB", (96, 64))]], return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()  # features and image tokens agree


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        (
            "smolvlm",
            r"SmolVLM encodes every image as at least one 64px view of 16 tokens .* Use max_image_tokens >= 16",
        ),
        ("gemma3", r"Gemma 3 encodes every image as 16 tokens .* Use max_image_tokens >= 16"),
        ("internvl", r"InternVL encodes every image as at least one tile of 16 tokens .* Use max_image_tokens >= 16"),
        ("llava_onevision", r"base view plus at least one anyres tile \(36 tokens .* Use max_image_tokens >= 36"),
    ],
)
def test_a_budget_the_family_cannot_meet_fails_clearly(processors, arch, message):
    with pytest.raises(ImageBudgetError, match=message):
        apply_image_budget(processors[arch], max_image_tokens=10)


def test_pixel_budget_is_qwen_only_and_unknown_processors_fail(processors):
    with pytest.raises(ImageBudgetError, match=r"`max_pixels` are Qwen-VL settings; smolvlm \(SmolVLMProcessor\)"):
        apply_image_budget(processors["smolvlm"], max_pixels=4096)
    tokenizer = processors["smolvlm"].tokenizer
    with pytest.raises(
        ImageBudgetError, match=r"No image-budget hook for \w+; supported: Gemma3Processor, Idefics3Processor"
    ):
        apply_image_budget(tokenizer, max_image_tokens=64)
    assert apply_image_budget(tokenizer) is tokenizer  # no budget: nothing to do, for any processor


def test_budget_is_stored_with_the_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="either `max_image_tokens`"):
        DrivingScriptArguments(dataset_name="x", max_pixels=1000, max_image_tokens=16)
    args = DrivingScriptArguments(dataset_name="x", max_image_tokens=80)
    assert args.image_budget() == {"min_pixels": None, "max_pixels": None, "max_image_tokens": 80}
    save_driving_config(str(tmp_path), args)
    assert load_driving_config(str(tmp_path))["max_image_tokens"] == 80


def test_generation_applies_the_saved_budget(family_model_dirs, tmp_path):
    import shutil

    from alphadrive_trl.evaluation.generate import _TransformersGenerator

    model_dir = tmp_path / "smolvlm"
    shutil.copytree(family_model_dirs["smolvlm"], model_dir)
    save_driving_config(str(model_dir), DrivingScriptArguments(dataset_name="x", max_image_tokens=80))
    settings = {"prompt_template": "default", "max_images": None, **load_driving_config(str(model_dir))}
    generator = _TransformersGenerator(str(model_dir), settings, {"seed": 0, "max_new_tokens": 2})
    assert generator.processor.image_processor.do_image_splitting is True
    assert image_tokens_per_image(generator.processor, 96, 64) == 80


def test_build_rejects_unknown_arch():
    with pytest.raises(ValueError, match="smolvlm, gemma3, llava_onevision, internvl"):
        build_tiny_model("llava_next")


@pytest.mark.parametrize(("arch", "budget"), [("smolvlm", 80), ("llava_onevision", 40), ("gemma3", 48)])
def test_closed_loop_policy_applies_the_saved_budget(arch, budget, family_model_dirs, tmp_path):
    import shutil

    import numpy as np

    from alphadrive_trl.closed_loop import VLMPolicy

    model_dir = tmp_path / arch
    shutil.copytree(family_model_dirs[arch], model_dir)
    args = DrivingScriptArguments(dataset_name="x", max_image_tokens=budget, max_images=2)
    save_driving_config(str(model_dir), args)
    policy = VLMPolicy(str(model_dir), max_new_tokens=3)
    assert policy.history_frames == 1
    assert image_tokens_per_image(policy.processor, 96, 64) <= budget
    if arch == "llava_onevision":
        assert policy.model.config.image_grid_pinpoints == [[32, 32]]
    frames = [np.full((64, 96, 3), 90 * k, dtype=np.uint8) for k in (1, 2)]
    assert isinstance(policy.generate(frames, 8.0, "go straight"), str)
