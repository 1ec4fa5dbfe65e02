"""Prompt templates: placeholders, text content, completions, trajectory mode, and a round trip through a Qwen chat
template and TRL's VLM SFT collator."""

from __future__ import annotations

import pytest
from PIL import Image

from alphadrive_trl.actions import PATH_ACTIONS, SPEED_ACTIONS, parse_answer_strict
from alphadrive_trl.data import DrivingDataError
from alphadrive_trl.prompts import (
    PROMPT_TEMPLATES,
    build_completion,
    build_prompt,
    describe_role,
    to_grpo_example,
    to_sft_example,
)
from alphadrive_trl.trajectory import format_trajectory, parse_trajectory

TRAJECTORY = [[4.0, 0.0], [8.0, 0.1], [12.0, 0.4], [16.0, 1.2], [20.0, 2.4], [24.0, 3.5]]


def _row(num_images=1, **overrides):
    roles = ["front", "front_t-1", "front_left", "front_right"][:num_images]
    row = {
        "sample_id": "s-1",
        "images": [Image.new("RGB", (64, 48), (10 * i, 0, 0)) for i in range(num_images)],
        "image_roles": roles,
        "ego_speed": 8.04,
        "navigation": "change to the left lane",
        "speed_action": "KEEP",
        "path_action": "LEFT_CHANGE",
        "reasoning": "The left lane is free.",
        "feasible_actions": ["KEEP, LEFT_CHANGE"],
        "trajectory": TRAJECTORY,
        "source": "synthetic",
    }
    row.update(overrides)
    return row


PLANNING_TEMPLATES = sorted(name for name, spec in PROMPT_TEMPLATES.items() if spec.target != "caption")


@pytest.mark.parametrize("template", PLANNING_TEMPLATES)
@pytest.mark.parametrize("num_images", [1, 3])
def test_prompt_layout_and_content(template, num_images):
    prompt = build_prompt(_row(num_images, scene_facts="A vehicle is 20 m ahead (close)."), template)
    assert len(prompt) == 1 and prompt[0]["role"] == "user"
    content = prompt[0]["content"]
    assert content[:num_images] == [{"type": "image"}] * num_images
    assert len(content) == num_images + 1 and content[-1]["type"] == "text"
    text = content[-1]["text"]
    assert "Speed 8.0 m/s." in text and "Navigation: change to the left lane." in text
    assert all(word in text for word in SPEED_ACTIONS + PATH_ACTIONS)
    assert ("<think>" in text and "</think>" in text) == (PROMPT_TEMPLATES[template].target == "plan")
    assert ("Scene: A vehicle is 20 m ahead (close)." in text) == PROMPT_TEMPLATES[template].with_scene_facts
    assert "<answer> SPEED, PATH </answer>" in text
    assert ("Images in order:" in text) == (num_images > 1)
    if num_images == 3:
        assert "Images in order: front camera, front camera 1 frame earlier, front-left camera." in text
    assert ("<trajectory>" in text) == (template == "trajectory")
    assert len(text) < 450  # short: tiny models train on CPU


def test_scene_facts_template_states_the_scene_after_the_navigation():
    row = _row(2, image_roles=["top_down", "top_down_t-1"], scene_facts=" My lane is clear ahead. ")
    text = build_prompt(row, "answer_only_facts")[0]["content"][-1]["text"]
    assert text == (
        "Speed 8.0 m/s. Navigation: change to the left lane. Scene: My lane is clear ahead. Images in order: "
        "top down, top down 1 frame earlier. Plan the next 3 s. SPEED: KEEP, ACCELERATE, DECELERATE, STOP. "
        "PATH: STRAIGHT, RIGHT_CHANGE, LEFT_CHANGE, RIGHT_TURN, LEFT_TURN. Reply <answer> SPEED, PATH </answer>."
    )
    assert (
        build_completion(row, "answer_only_facts")[0]["content"][0]["text"] == "<answer> KEEP, LEFT_CHANGE </answer>"
    )


@pytest.mark.parametrize("facts", [None, "", "   "])
def test_scene_facts_template_names_the_row_without_facts(facts):
    row = _row(scene_facts=facts) if facts is not None else _row()
    with pytest.raises(DrivingDataError, match=r"sample_id=s-1 field=scene_facts: .*data_prep.highway_env"):
        build_prompt(row, "answer_only_facts")


def test_prompt_orders_front_first_and_truncates():
    row = _row(3, image_roles=["front_left", "front", "front_t-1"])
    assert (
        "Images in order: front camera, front-left camera, front camera 1 frame earlier."
        in (build_prompt(row)[0]["content"][-1]["text"])
    )
    example = to_sft_example(row, "default", max_images=1)
    assert example["images"] == [row["images"][1]]
    assert example["prompt"][0]["content"][0] == {"type": "image"}
    assert "Images in order" not in example["prompt"][0]["content"][1]["text"]


def test_completion_with_and_without_reasoning():
    completion = build_completion(_row())
    assert completion == [
        {
            "role": "assistant",
            "content": [
                {
                    "type": "text",
                    "text": "<think> The left lane is free. </think> <answer> KEEP, LEFT_CHANGE </answer>",
                }
            ],
        }
    ]
    answer_only = build_completion(_row(reasoning=None))[0]["content"][0]["text"]
    assert answer_only == "<answer> KEEP, LEFT_CHANGE </answer>"


def test_answer_only_template_drops_the_reasoning():
    prompt = build_prompt(_row(), "answer_only")[0]["content"][-1]["text"]
    assert prompt.endswith("Reply <answer> SPEED, PATH </answer>.")
    completion = build_completion(_row(), "answer_only")[0]["content"][0]["text"]
    assert completion == "<answer> KEEP, LEFT_CHANGE </answer>"  # the row's reasoning is not trained on


def test_describe_template_trains_on_the_caption_and_names_no_plan():
    caption = "A road with two lanes; we are in the right lane. A car 30 m ahead in the left lane."
    row = _row(3, caption=caption)
    text = build_prompt(row, "describe")[0]["content"][-1]["text"]
    assert text == (
        "Speed 8.0 m/s. Navigation: change to the left lane. Images in order: front camera, front camera 1 frame "
        "earlier, front-left camera. Describe what matters in the scene."
    )
    assert not any(word in text for word in SPEED_ACTIONS + PATH_ACTIONS)
    assert build_completion(row, "describe")[0]["content"][0]["text"] == caption
    example = to_sft_example(row, "describe")
    assert example["completion"][0]["content"][0]["text"] == caption and len(example["images"]) == 3
    with pytest.raises(DrivingDataError, match=r"sample_id=s-1 field=caption: .*--captions"):
        build_completion(_row(), "describe")


def test_trajectory_template_appends_the_waypoints():
    text = build_completion(_row(), "trajectory")[0]["content"][0]["text"]
    assert text.endswith(format_trajectory(TRAJECTORY))
    assert parse_answer_strict(text) == ("KEEP", "LEFT_CHANGE")
    assert parse_trajectory(text).tolist() == [
        [4.0, 0.0],
        [8.0, 0.1],
        [12.0, 0.4],
        [16.0, 1.2],
        [20.0, 2.4],
        [24.0, 3.5],
    ]
    with pytest.raises(DrivingDataError, match="sample_id=s-1 field=trajectory"):
        build_completion(_row(trajectory=None), "trajectory")


def test_prompt_without_image_objects_uses_the_roles():
    row = {k: v for k, v in _row(2).items() if k != "images"}
    assert build_prompt(row)[0]["content"][:2] == [{"type": "image"}] * 2


def test_unknown_template_lists_valid_names():
    with pytest.raises(ValueError, match="default, trajectory"):
        build_prompt(_row(), "fancy")


def test_describe_role():
    assert describe_role("front") == "front camera"
    assert describe_role("front_t-3") == "front camera 3 frames earlier"
    assert describe_role("roof_cam") == "roof cam"


def test_grpo_example_keeps_ground_truth_columns():
    row = _row(2)
    example = to_grpo_example(row, "default", max_images=1)
    assert example["images"] == row["images"][:1] and example["image_roles"] == ["front"]
    for column in ("speed_action", "path_action", "feasible_actions", "trajectory", "ego_speed", "sample_id"):
        assert example[column] == row[column]
    assert example["prompt"] == build_prompt(row, max_images=1)
    assert "completion" not in example


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_round_trip_through_chat_template_and_trl_collator(tiny_model_dirs, arch):
    from transformers import AutoProcessor
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    processor = AutoProcessor.from_pretrained(tiny_model_dirs[arch])
    examples = [to_sft_example(_row(2)), to_sft_example(_row(1, reasoning=None, speed_action="STOP"))]
    rendered = processor.apply_chat_template(examples[0]["prompt"] + examples[0]["completion"], tokenize=False)
    assert rendered.count("<|vision_start|><|image_pad|><|vision_end|>") == 2
    assert rendered.index("<|vision_start|>") < rendered.index("Speed 8.0 m/s.")
    assert "<think> The left lane is free. </think> <answer> KEEP, LEFT_CHANGE </answer>" in rendered

    collator = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
    batch = collator([dict(example) for example in examples])
    assert batch["image_grid_thw"].shape[0] == 3  # 2 + 1 images
    pad_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert ((batch["input_ids"] == pad_id).sum(dim=1) > 0).all()
    for row_ids, labels, example in zip(batch["input_ids"], batch["labels"], examples):
        target = processor.tokenizer.decode(row_ids[labels != -100])
        assert target.startswith(example["completion"][0]["content"][0]["text"])  # loss on the completion only
