"""The tiny offline Qwen-VL builder: real model classes, offline reload, generation with 2 images, determinism."""

import json
import os

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from alphadrive_trl.actions import PATH_ACTIONS, SPEED_ACTIONS
from alphadrive_trl.tiny_models import ARCHITECTURES, build_tiny_model, build_tokenizer, main

EXPECTED_CLASSES = {
    "qwen2_vl": ("Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"),
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
    "qwen3_vl": ("Qwen3VLForConditionalGeneration", "Qwen3VLProcessor"),
}


def two_image_inputs(processor):
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Plan the next 3 seconds."}],
        }
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    images = [Image.new("RGB", (160, 96), (200, 30, 30)), Image.new("RGB", (64, 64), (30, 200, 30))]
    return processor(text=[text], images=images, return_tensors="pt")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_reloads_offline_and_generates_with_two_images(arch, tiny_model_dirs):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dirs[arch])
    processor = AutoProcessor.from_pretrained(tiny_model_dirs[arch])
    assert (type(model).__name__, type(processor).__name__) == EXPECTED_CLASSES[arch]
    assert model.config.model_type == arch
    assert sum(p.numel() for p in model.parameters()) < 400_000

    inputs = two_image_inputs(processor)
    # The image budget keeps every image between 2x2 and 4x4 visual tokens.
    tokens_per_image = (inputs["image_grid_thw"].prod(-1) // 4).tolist()
    assert len(tokens_per_image) == 2 and all(4 <= n <= 16 for n in tokens_per_image)
    assert (inputs["input_ids"] == model.config.image_token_id).sum().item() == sum(tokens_per_image)

    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]

    tokenizer = processor.tokenizer
    im_end, endoftext = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert model.generation_config.eos_token_id == [im_end, endoftext]
    assert model.config.tie_word_embeddings is False
    assert model.config.get_text_config().vocab_size >= len(tokenizer)
    special = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    for name, token in special.items():
        assert getattr(model.config, name) == tokenizer.convert_tokens_to_ids(token)
    with open(os.path.join(tiny_model_dirs[arch], "tiny_model.json")) as f:
        assert json.load(f)["arch"] == arch


def test_chat_template_is_trls_so_trl_detects_it(tiny_model_dirs):
    from trl.chat_template_utils import get_training_chat_template, qwen2_5_vl_chat_template, qwen3_vl_chat_template

    for arch, template in (("qwen2_5_vl", qwen2_5_vl_chat_template), ("qwen3_vl", qwen3_vl_chat_template)):
        processor = AutoProcessor.from_pretrained(tiny_model_dirs[arch])
        assert processor.chat_template == template
        assert get_training_chat_template(processor.tokenizer) is not None


def test_tags_and_action_words_are_single_tokens_and_round_trip():
    tokenizer = build_tokenizer()
    for word in ("<think>", "</think>", "<answer>", "</answer>", *SPEED_ACTIONS, *PATH_ACTIONS):
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word
    text = "<think> The light is red at 8.5 m/s. </think> <answer> STOP, RIGHT_CHANGE </answer>"
    ids = tokenizer(text + "<|im_end|>").input_ids
    assert tokenizer.decode(ids) == text + "<|im_end|>"
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_same_seed_same_weights_other_seed_other_weights():
    first, _ = build_tiny_model("qwen2_vl", seed=3)
    again, _ = build_tiny_model("qwen2_vl", seed=3)
    other, _ = build_tiny_model("qwen2_vl", seed=4)
    a, b, c = first.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_building_does_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model("qwen2_5_vl", seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_demo_preset_and_overrides():
    model, _ = build_tiny_model("qwen2_5_vl", preset="demo")
    text = model.config.get_text_config()
    assert (text.hidden_size, text.num_hidden_layers, model.config.vision_config.hidden_size) == (128, 4, 64)
    small, _ = build_tiny_model("qwen3_vl", num_hidden_layers=1)
    assert small.config.get_text_config().num_hidden_layers == 1
    with pytest.raises(TypeError, match="num_layers"):
        build_tiny_model("qwen2_vl", num_layers=1)
    with pytest.raises(ValueError, match="qwen2_vl, qwen2_5_vl, qwen3_vl"):
        build_tiny_model("llava")
    with pytest.raises(ValueError, match="preset"):
        build_tiny_model("qwen2_vl", preset="huge")


def test_cli_writes_a_reloadable_model(tmp_path, capsys):
    out = tmp_path / "cli-model"
    main(["--arch", "qwen3_vl", "--output-dir", str(out), "--preset", "tiny", "--seed", "1"])
    assert "Qwen3VLForConditionalGeneration" in capsys.readouterr().out
    model = AutoModelForImageTextToText.from_pretrained(out)
    reference, _ = build_tiny_model("qwen3_vl", seed=1)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())


def test_split_preset_cuts_tags_and_actions_like_the_real_qwen_tokenizer(split_model_dir, tiny_model_dir):
    split = AutoProcessor.from_pretrained(split_model_dir).tokenizer
    single = AutoProcessor.from_pretrained(tiny_model_dir).tokenizer
    expected = {"<think>": 3, "</think>": 3, "<answer>": 3, "</answer>": 3, "KEEP": 1, "STOP": 1}
    expected.update({word: 3 for word in ("ACCELERATE", "DECELERATE", "STRAIGHT")})
    expected.update({word: 2 for word in ("RIGHT_CHANGE", "LEFT_CHANGE", "RIGHT_TURN", "LEFT_TURN")})
    assert {word: len(split.tokenize(word)) for word in expected} == expected
    assert {word: len(single.tokenize(word)) for word in expected} == dict.fromkeys(expected, 1)
    text = "<think> Red light ahead. </think> <answer> DECELERATE, LEFT_CHANGE </answer>"
    assert split.decode(split(text)["input_ids"]) == text
    with open(os.path.join(split_model_dir, "tiny_model.json")) as f:
        assert json.load(f)["tokenizer_layout"] == "split"


def test_2b_shape_preset_has_qwen2_vl_2b_instruct_parameter_count():
    """`qwen2_vl_2b_shape` is Qwen2-VL-2B-Instruct's architecture: the Hub checkpoint's 2,208,985,600 parameters
    (tied embeddings), counted on the meta device without allocating them."""
    from alphadrive_trl.tiny_models import PRESETS, build_config

    size = PRESETS["qwen2_vl_2b_shape"]
    config = build_config("qwen2_vl", build_tokenizer(size.tokenizer_vocab_size), size)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == 2_208_985_600
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    assert config.text_config.vocab_size == 151936 and config.vision_config.depth == 32


def test_2b_shape_preset_refuses_other_architectures():
    with pytest.raises(ValueError, match="build it with arch 'qwen2_vl'"):
        build_tiny_model("qwen2_5_vl", preset="qwen2_vl_2b_shape")
