"""MultiImageCollator: exactly the completion is trained; 1-, 2- and 3-image samples in one batch; loud failures."""

import pytest
import torch
from datasets import Dataset, Features, Image, List, Value
from PIL import Image as PILImage
from transformers import AutoModelForImageTextToText, AutoProcessor

from alphadrive_trl.collator import IGNORE_INDEX, MultiImageCollator, NoTrainableTokensError

COMPLETIONS = (
    "<think> The light is red. </think> <answer> STOP, STRAIGHT </answer>",
    "<think> The lead car is close and the route turns left. </think> <answer> DECELERATE, LEFT_TURN </answer>",
    "<answer> KEEP, RIGHT_CHANGE </answer>",
)


def make_row(sample_id: str, num_images: int, completion: str) -> dict:
    # Different sizes per image so that every image yields a different number of visual tokens.
    images = [PILImage.new("RGB", (80 + 24 * i, 64 + 8 * i), (40 * i, 90, 160)) for i in range(num_images)]
    content = [{"type": "image", "text": None} for _ in range(num_images)]
    content.append({"type": "text", "text": f"Ego speed {3 * num_images} m/s. Plan the next 3 seconds."})
    return {
        "sample_id": sample_id,
        "images": images,
        "prompt": [{"role": "user", "content": content}],
        "completion": [{"role": "assistant", "content": [{"type": "text", "text": completion}]}],
    }


def rows_through_datasets(rows: list[dict]) -> list[dict]:
    """Round-trip through `datasets` as training does (adds `None` fields, decodes images)."""
    part = {"type": Value("string"), "text": Value("string")}
    features = Features(
        {
            "sample_id": Value("string"),
            "images": List(Image()),
            "prompt": List({"role": Value("string"), "content": List(part)}),
            "completion": List({"role": Value("string"), "content": List(part)}),
        }
    )
    dataset = Dataset.from_list(rows, features=features)
    return [dataset[i] for i in range(len(dataset))]


@pytest.fixture()
def mixed_rows():
    return rows_through_datasets([make_row(f"s{n}", n, text) for n, text in zip((1, 3, 2), COMPLETIONS)])


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_exactly_the_completion_is_trained_with_1_2_3_images(arch, tiny_model_dirs, mixed_rows):
    processor = AutoProcessor.from_pretrained(tiny_model_dirs[arch])
    tokenizer = processor.tokenizer
    batch = MultiImageCollator(processor)(mixed_rows)
    labels, input_ids, attention = batch["labels"], batch["input_ids"], batch["attention_mask"]

    # What is trained decodes to the completion text plus the end-of-turn the chat template closes it with.
    trained = [tokenizer.decode(row_ids[row_labels != IGNORE_INDEX]) for row_ids, row_labels in zip(input_ids, labels)]
    assert trained == [text + "<|im_end|>\n" for text in COMPLETIONS]

    # Trained tokens are one contiguous block at the end of each sequence: prompt before it, padding after it.
    for row_labels, row_mask in zip(labels, attention):
        positions = (row_labels != IGNORE_INDEX).nonzero().flatten()
        assert torch.equal(positions, torch.arange(positions[0], positions[-1] + 1))
        assert (row_labels[row_mask == 0] == IGNORE_INDEX).all()
        assert row_mask[positions].all()

    # Every image got its visual tokens, in order, and none of them is a target.
    image_token_id = processor.image_token_id
    grid = batch["image_grid_thw"]
    assert grid.shape[0] == 1 + 3 + 2
    tokens_per_image = (grid.prod(-1) // processor.image_processor.merge_size**2).tolist()
    per_sample = [sum(tokens_per_image[0:1]), sum(tokens_per_image[1:4]), sum(tokens_per_image[4:6])]
    assert (input_ids == image_token_id).sum(-1).tolist() == per_sample
    assert len(set(tokens_per_image)) > 1  # sizes differ, so the order check above is meaningful
    assert not (labels == image_token_id).any()


def test_batch_trains_the_model(tiny_model_dir, mixed_rows):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    batch = MultiImageCollator(processor)(mixed_rows)
    loss = model(**batch).loss
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert model.lm_head.weight.grad.abs().sum() > 0


def test_callers_rows_are_not_modified(tiny_model_dir, mixed_rows):
    collator = MultiImageCollator(AutoProcessor.from_pretrained(tiny_model_dir))
    first = collator(mixed_rows)
    second = collator(mixed_rows)
    assert torch.equal(first["input_ids"], second["input_ids"]) and torch.equal(first["labels"], second["labels"])


def test_no_trainable_token_fails_loudly(tiny_model_dir, mixed_rows):
    # max_length cuts every sequence inside its prompt: without the check the loss would silently be 0.
    collator = MultiImageCollator(AutoProcessor.from_pretrained(tiny_model_dir), max_length=12)
    with pytest.raises(NoTrainableTokensError, match=r"sample 's1'.*max_length` \(12\)"):
        collator(mixed_rows)


def test_image_count_mismatch_names_the_sample(tiny_model_dir):
    row = make_row("scene-042", 2, COMPLETIONS[0])
    row["images"] = row["images"][:1]
    collator = MultiImageCollator(AutoProcessor.from_pretrained(tiny_model_dir))
    with pytest.raises(ValueError, match=r"'scene-042'.*1 image\(s\).*2 .*placeholder"):
        collator([make_row("ok", 1, COMPLETIONS[1]), row])
    with pytest.raises(ValueError, match="batch index 0 has no `images`"):
        collator([{"prompt": row["prompt"], "completion": row["completion"]}])


def test_pixel_budget_sets_visual_tokens_per_image(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    row = make_row("big", 1, COMPLETIONS[0])
    row["images"] = [PILImage.new("RGB", (448, 448), (10, 20, 30))]
    # 14-pixel patches merged 2x2: one visual token per 28x28 pixels. 56x56 -> 2x2 tokens; 84x84 budget -> 3x3.
    small = MultiImageCollator(processor, min_pixels=28 * 28, max_pixels=56 * 56)([row])
    assert small["image_grid_thw"].tolist() == [[1, 4, 4]]
    large = MultiImageCollator(processor, min_pixels=28 * 28, max_pixels=84 * 84)([row])
    assert large["image_grid_thw"].tolist() == [[1, 6, 6]]
    assert (large["input_ids"] == processor.image_token_id).sum().item() == 9


def test_masking_with_the_real_tokenizer_layout(split_model_dir, mixed_rows):
    """Tags and action words in several tokens, as the real Qwen tokenizer cuts them: the trained tokens are still
    exactly the completion plus the end of turn, and the block covers every piece of every tag."""
    processor = AutoProcessor.from_pretrained(split_model_dir)
    tokenizer = processor.tokenizer
    pieces = {text: len(tokenizer(text)["input_ids"]) for text in ("<think>", "</answer>", "DECELERATE", "LEFT_TURN")}
    assert pieces == {"<think>": 3, "</answer>": 3, "DECELERATE": 3, "LEFT_TURN": 2}
    batch = MultiImageCollator(processor)(mixed_rows)
    labels, input_ids = batch["labels"], batch["input_ids"]
    trained = [tokenizer.decode(row_ids[row_labels != IGNORE_INDEX]) for row_ids, row_labels in zip(input_ids, labels)]
    assert trained == [text + "<|im_end|>\n" for text in COMPLETIONS]
    counts = (labels != IGNORE_INDEX).sum(-1).tolist()
    expected = [len(tokenizer(text + "<|im_end|>\n")["input_ids"]) for text in COMPLETIONS]
    assert counts == expected
    assert not (labels == processor.image_token_id).any()
