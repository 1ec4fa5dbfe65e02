"""Multi-image SFT collator: TRL's vision-language collator plus the guarantees driving SFT needs.

`MultiImageCollator` keeps TRL's `DataCollatorForVisionLanguageModeling` (any number of images per sample) and adds
completion-only loss with vision tokens masked, the recipe's per-image budget, errors that name the sample, and a
`NoTrainableTokensError` instead of a silent zero loss. `docs/sft.md` describes it.

Example:
    >>> from alphadrive_trl.collator import MultiImageCollator
    >>> collator = MultiImageCollator(processor, max_pixels=112 * 112)
    >>> batch = collator([example_with_one_image, example_with_three_images])
    >>> sorted(batch)
    ['attention_mask', 'image_grid_thw', 'input_ids', 'labels', 'mm_token_type_ids', 'pixel_values']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from .image_budget import apply_image_budget

IGNORE_INDEX = -100
# Tokens that stand for pixels or frame them; they are never a training target. Qwen's by name; other families' are
# read from the processor and tokenizer attributes below (and SmolVLM's `<row_i_col_j>` tile markers).
VISION_TOKENS: tuple[str, ...] = (
    "<|image_pad|>",
    "<|video_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
)
_VISION_TOKEN_ATTRIBUTES: tuple[str, ...] = (
    "image_token",
    "video_token",
    "boi_token",
    "eoi_token",
    "fake_image_token",
    "global_image_token",
    "start_image_token",
    "end_image_token",
    "context_image_token",
)
_TILE_MARKER = re.compile(r"^<row_\d+_col_\d+>$")


def vision_token_ids(processor: Any) -> list[int]:
    """Ids of every token that stands for pixels or frames them, for any supported VLM family."""
    tokenizer = getattr(processor, "tokenizer", processor)
    vocab = tokenizer.get_vocab()
    names = set(VISION_TOKENS)
    for obj in (processor, tokenizer):
        for attribute in _VISION_TOKEN_ATTRIBUTES:
            value = getattr(obj, attribute, None)
            if isinstance(value, str):
                names.add(value)
    names.update(token for token in vocab if _TILE_MARKER.match(token))
    return sorted({vocab[name] for name in names if name in vocab})


class NoTrainableTokensError(ValueError):
    """A batch in which every label is masked: training on it would report a loss of 0 and learn nothing."""


def _sample_name(example: dict[str, Any], index: int) -> str:
    sample_id = example.get("sample_id")
    return f"sample {sample_id!r} (batch index {index})" if sample_id is not None else f"batch index {index}"


def _count_image_placeholders(messages: Any) -> int | None:
    """Unfilled `{"type": "image"}` parts in a conversational prompt; None for plain-text prompts."""
    if not isinstance(messages, list):
        return None
    count = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            return None  # TRL inserts the placeholders itself for string content
        for part in content or []:
            if isinstance(part, dict) and part.get("type") == "image" and part.get("image") is None:
                count += 1
    return count


@dataclass
class MultiImageCollator(DataCollatorForVisionLanguageModeling):
    """Collate conversational prompt/completion rows with any number of images each; loss on the completion only.

    Args (in addition to TRL's `DataCollatorForVisionLanguageModeling`):
        min_pixels: Lower pixel budget per image, set on the processor at construction; None keeps its value.
        max_pixels: Upper pixel budget per image (bounds visual tokens per image); None keeps its value.
        max_image_tokens: Most visual tokens per image, any model family (`alphadrive_trl.image_budget`).
    """

    completion_only_loss: bool = True
    min_pixels: int | None = None
    max_pixels: int | None = None
    max_image_tokens: int | None = None

    def __post_init__(self):
        apply_image_budget(
            self.processor,
            min_pixels=self.min_pixels,
            max_pixels=self.max_pixels,
            max_image_tokens=self.max_image_tokens,
        )
        self._masked_token_ids = vision_token_ids(self.processor)

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        # Shallow copies: the parent rewrites `prompt`/`completion`/`images` keys, the caller's rows stay intact.
        examples = [dict(example) for example in examples]
        for index, example in enumerate(examples):
            self._check_images(example, index)
        batch = super().torch_call(examples)
        labels = batch["labels"]
        for token_id in self._masked_token_ids:
            labels[labels == token_id] = IGNORE_INDEX
        if not (labels != IGNORE_INDEX).any():
            names = ", ".join(_sample_name(example, i) for i, example in enumerate(examples))
            raise NoTrainableTokensError(
                f"No trainable token in this batch ({names}): every label is masked, so the loss would be 0. "
                f"Check that the completions are not empty and that `max_length` ({self.max_length}) does not cut "
                "them off (images take many tokens; use a larger `max_length` or null)."
            )
        return batch

    def _check_images(self, example: dict[str, Any], index: int) -> None:
        if "image" in example and "images" not in example:
            example["images"] = [example.pop("image")]
        images = example.get("images")
        if images is None:
            raise ValueError(f"{_sample_name(example, index)} has no `images` (or `image`) field.")
        if any(image is None for image in images):
            raise ValueError(f"{_sample_name(example, index)} has a missing (None) image in `images`.")
        placeholders = _count_image_placeholders(example.get("prompt", example.get("messages")))
        if placeholders is not None and placeholders != len(images):
            raise ValueError(
                f"{_sample_name(example, index)} has {len(images)} image(s) but its prompt has {placeholders} "
                '`{"type": "image"}` placeholder(s); build rows with `alphadrive_trl.prompts.to_sft_example`.'
            )
