"""`alphadrive_trl.modeling`: one loader and one way to build generation inputs for evaluation, the closed loop and
the SFT trainer's in-training metrics."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from alphadrive_trl.closed_loop import VLMPolicy, frame_roles
from alphadrive_trl.configs import DrivingScriptArguments, save_driving_config
from alphadrive_trl.data import DrivingDataError
from alphadrive_trl.evaluation.generate import _TransformersGenerator
from alphadrive_trl.image_budget import apply_image_budget, image_tokens_per_image
from alphadrive_trl.modeling import (
    VISION_MODULE_NAMES,
    freeze_vision_modules,
    generation_example,
    generation_inputs,
    load_checkpoint,
)
from alphadrive_trl.prompts import to_sft_example
from alphadrive_trl.sft import DrivingSFTTrainer
from alphadrive_trl.tiny_models import ALL_ARCHITECTURES, build_tiny_model


class _RecordingGenerate:
    """Stands in for `model.generate`: keeps the tensors it was given and answers one token per prompt."""

    def __init__(self):
        self.inputs: list[dict[str, torch.Tensor]] = []

    def __call__(self, **kwargs):
        self.inputs.append({k: v.clone() for k, v in kwargs.items() if isinstance(v, torch.Tensor)})
        return torch.cat([kwargs["input_ids"], kwargs["input_ids"][:, -1:]], dim=1)


def _frames(count: int) -> list[np.ndarray]:
    return [np.full((64, 96, 3), 60 * k, dtype=np.uint8) for k in range(1, count + 1)]


def test_evaluation_closed_loop_and_sft_metrics_feed_the_model_the_same_inputs(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    script_args = DrivingScriptArguments(dataset_name="x", max_images=2, max_pixels=64 * 28 * 28)
    save_driving_config(str(model_dir), script_args)
    frames = _frames(3)
    row = {
        "sample_id": "s0",
        "images": [Image.fromarray(frame) for frame in frames],
        "image_roles": frame_roles(3),
        "ego_speed": 8.0,
        "navigation": "go straight",
        "speed_action": "KEEP",
        "path_action": "STRAIGHT",
    }

    # Evaluation: a dataset row, with the settings saved next to the checkpoint.
    settings = {"prompt_template": "default", "max_images": 2, **script_args.image_budget()}
    generator = _TransformersGenerator(str(model_dir), settings, {"seed": 0, "max_new_tokens": 1})
    generator.meta.update(num_samples=1, greedy=True)
    generator.model.generate = evaluation = _RecordingGenerate()
    generator([row])

    # Closed loop: the same frames, speed and navigation, straight from the simulator.
    policy = VLMPolicy(str(model_dir), max_new_tokens=1)
    policy.model.generate = closed_loop = _RecordingGenerate()
    policy.generate(frames, 8.0, "go straight")

    # SFT metrics: the training processor (the recipe's budget) and the SFT example of the row.
    processor = AutoProcessor.from_pretrained(model_dir)
    apply_image_budget(processor, **script_args.image_budget())
    trainer = SimpleNamespace(
        args=SimpleNamespace(eval_max_new_tokens=1),
        accelerator=SimpleNamespace(device=torch.device("cpu"), num_processes=1),
        is_deepspeed_enabled=False,
    )
    sft = _RecordingGenerate()
    DrivingSFTTrainer._generate(trainer, SimpleNamespace(generate=sft), processor, [to_sft_example(row, "default", 2)])

    reference = evaluation.inputs[0]
    assert reference["input_ids"].shape[0] == 1 and "pixel_values" in reference
    text = generator.processor.batch_decode(reference["input_ids"])[0]
    assert text.count("<|vision_start|>") == 2 and "Speed 8.0 m/s" in text
    for other in (closed_loop.inputs[0], sft.inputs[0]):
        assert other.keys() == reference.keys()
        for key, value in reference.items():
            assert torch.equal(other[key], value), key


def test_closed_loop_pads_the_first_decision_and_states_the_scene_facts(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    save_driving_config(str(model_dir), DrivingScriptArguments(dataset_name="x", max_images=2,
                                                               prompt_template="answer_only_facts"))  # fmt: skip
    policy = VLMPolicy(str(model_dir), max_new_tokens=1)
    assert policy.history_frames == 1
    (frame,) = _frames(1)
    # The first decision of an episode has no earlier frame: the current one stands in, so the image count is the
    # trained one (2 image placeholders, 2 images).
    example = policy.example([frame], 8.0, "go straight", scene_facts="My lane is clear ahead.")
    assert len(example["images"]) == 2
    assert all(np.array_equal(np.asarray(image), frame) for image in example["images"])
    content = example["prompt"][0]["content"]
    assert [part["type"] for part in content] == ["image", "image", "text"]
    assert "Navigation: go straight. Scene: My lane is clear ahead. Images in order:" in content[-1]["text"]
    # Later decisions keep the most recent frames only.
    frames = _frames(3)
    kept = policy.example(frames, 8.0, "go straight", scene_facts="x")["images"]
    assert [np.asarray(image)[0, 0, 0] for image in kept] == [60, 120]
    with pytest.raises(DrivingDataError, match="field=scene_facts"):
        policy.example(frames, 8.0, "go straight")


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_generation_inputs_match_the_former_sft_tokenisation(arch, tiny_model_dirs):
    # The SFT trainer used to render the chat template to text and then call the processor; the shared path
    # tokenises inside `apply_chat_template`. Both give the same tensors, so the in-training metrics did not change.
    from trl.data_utils import prepare_multimodal_messages

    processor = AutoProcessor.from_pretrained(tiny_model_dirs[arch])
    rows = [
        {"images": [Image.fromarray(f) for f in _frames(n)], "image_roles": frame_roles(n), "ego_speed": 3.0 * n,
         "navigation": "go straight"}
        for n in (1, 2)
    ]  # fmt: skip
    examples = [generation_example(row) for row in rows]
    new = generation_inputs(processor, examples)
    texts = [
        processor.apply_chat_template(
            prepare_multimodal_messages(e["prompt"], images=e["images"]), add_generation_prompt=True, tokenize=False
        )
        for e in examples
    ]
    old = processor(
        text=texts, images=[e["images"] for e in examples], padding=True, padding_side="left", return_tensors="pt"
    )
    assert new.keys() == old.keys()
    for key in old:
        assert torch.equal(new[key], old[key]), key
    assert new["input_ids"][0, 0] == processor.tokenizer.pad_token_id  # the shorter prompt is padded on the left


def test_load_checkpoint_reads_the_saved_settings_and_budget(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    save_driving_config(str(model_dir), DrivingScriptArguments(dataset_name="x", prompt_template="trajectory"))
    checkpoint = load_checkpoint(str(model_dir), device="cpu")
    assert checkpoint.config["prompt_template"] == "trajectory"
    assert not checkpoint.model.training and checkpoint.processor.tokenizer.padding_side == "left"
    assert image_tokens_per_image(checkpoint.processor, 560, 560) > 4
    budget = load_checkpoint(str(model_dir), image_budget={"max_image_tokens": 4}, device="cpu")
    assert image_tokens_per_image(budget.processor, 560, 560) <= 4


@pytest.mark.parametrize("arch", ALL_ARCHITECTURES)
def test_freeze_vision_modules_freezes_exactly_the_vision_encoder(arch):
    model, _ = build_tiny_model(arch, preset="tiny")
    encoder = next(getattr(model.model, n) for n in VISION_MODULE_NAMES if hasattr(model.model, n))
    encoder_params = {id(p) for p in encoder.parameters()}
    assert freeze_vision_modules(model) == sum(p.numel() for p in encoder.parameters())
    for parameter in model.parameters():
        assert parameter.requires_grad is (id(parameter) not in encoder_params)
    assert freeze_vision_modules(model) == 0  # already frozen: nothing more


def test_freeze_vision_modules_names_the_model_without_one():
    with pytest.raises(ValueError, match="Linear has no vision encoder under model.visual"):
        freeze_vision_modules(torch.nn.Linear(2, 2))
