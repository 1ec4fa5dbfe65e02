"""The per-image visual-token budget: one recipe setting, one hook per VLM family.

A recipe says how many visual tokens one camera image may cost (`max_image_tokens`); the `ImageBudgetHook` registered
for the processor's family (`register_image_budget`) turns it into the family's own knob, or raises an
`ImageBudgetError` naming the minimum. `docs/models.md` gives each family's rule and how to add a family.

Example:
    >>> apply_image_budget(processor, max_image_tokens=512)  # doctest: +SKIP
    >>> image_tokens_per_image(processor, width=1600, height=900)  # doctest: +SKIP
    480
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ImageBudgetError(ValueError):
    """The processor's family cannot honour the requested image budget (or has no budget hook)."""


class ImageBudgetHook:
    """How one VLM family sets and reads its per-image visual-token budget. Subclass and register one per family."""

    family: str = "unknown"

    def set_max_tokens(self, processor: Any, max_tokens: int) -> dict[str, Any]:
        """Set the processor so that no image costs more than `max_tokens` visual tokens; return what was set."""
        raise ImageBudgetError(f"{self.family} has no `max_image_tokens` hook.")

    def set_pixels(self, processor: Any, min_pixels: int | None, max_pixels: int | None) -> dict[str, Any]:
        raise ImageBudgetError(
            f"`min_pixels` / `max_pixels` are Qwen-VL settings; {self.family} ({type(processor).__name__}) takes "
            "`max_image_tokens` (visual tokens per image) instead."
        )

    def apply_to_model(self, model: Any, processor: Any) -> None:
        """Copy budget settings the model reads itself (default: none) from the processor into `model.config`."""

    def feature_token_id(self, processor: Any) -> int:
        """The token id the model replaces with image features (what `image_tokens_per_image` counts)."""
        return processor.image_token_id


_REGISTRY: dict[str, ImageBudgetHook] = {}


def register_image_budget(class_name: str, hook: ImageBudgetHook) -> None:
    """Use `hook` for processors (or image processors) whose class, or a base class, is named `class_name`."""
    _REGISTRY[class_name] = hook


def get_image_budget_hook(processor: Any) -> ImageBudgetHook:
    """The hook registered for `processor`'s class (or its image processor's class); `ImageBudgetError` if none."""
    image_processor = getattr(processor, "image_processor", None)
    for obj in (processor, image_processor):
        if obj is None:
            continue
        for cls in type(obj).__mro__:
            if cls.__name__ in _REGISTRY:
                return _REGISTRY[cls.__name__]
    raise ImageBudgetError(
        f"No image-budget hook for {type(processor).__name__}; supported: {', '.join(sorted(_REGISTRY))}. Leave "
        "`max_image_tokens` / `min_pixels` / `max_pixels` unset to keep the processor's own budget, or register a "
        "hook (`alphadrive_trl.image_budget.register_image_budget`, see docs/models.md)."
    )


def apply_image_budget(
    processor: Any,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    *,
    max_image_tokens: int | None = None,
    model: Any = None,
) -> Any:
    """Set the per-image budget on `processor` (and `model`, for families whose model reads it) in place; return it.

    `max_image_tokens` works for every registered family; `min_pixels` / `max_pixels` are Qwen-VL's own knobs (the
    paper's 401,408 pixels is 512 tokens of 28×28). All None leaves the processor unchanged. Training, evaluation and
    the closed loop call this with the values saved next to the checkpoint, so a model sees the same number of visual
    tokens everywhere.

    Example:
        >>> from transformers import Qwen2VLImageProcessor
        >>> apply_image_budget(Qwen2VLImageProcessor(), min_pixels=3136, max_pixels=12544).size["longest_edge"]
        12544
    """
    if max_image_tokens is not None and max_pixels is not None:
        raise ImageBudgetError("Set either `max_image_tokens` or `max_pixels`, not both.")
    if min_pixels is None and max_pixels is None and max_image_tokens is None:
        if model is not None:
            _apply_to_model_if_hooked(model, processor)
        return processor
    hook = get_image_budget_hook(processor)
    if min_pixels is not None or max_pixels is not None:
        hook.set_pixels(processor, min_pixels, max_pixels)
    if max_image_tokens is not None:
        if int(max_image_tokens) <= 0:
            raise ImageBudgetError(f"`max_image_tokens` must be positive, got {max_image_tokens}.")
        hook.set_max_tokens(processor, int(max_image_tokens))
    if model is not None:
        hook.apply_to_model(model, processor)
    return processor


def _apply_to_model_if_hooked(model: Any, processor: Any) -> None:
    try:
        hook = get_image_budget_hook(processor)
    except ImageBudgetError:
        return
    hook.apply_to_model(model, processor)


def image_tokens_per_image(processor: Any, width: int, height: int, num_images: int = 1) -> float:
    """Visual tokens one `width`×`height` image costs with `processor` as it is set now, counted by running it.

    Renders a user turn with `num_images` images through the processor's chat template, processes blank images of
    that size as one sample (as training does) and counts the feature tokens (the ids the model replaces with image
    features), divided by `num_images`. Exact by construction, offline. `num_images` matters for LLaVA-OneVision,
    which encodes the images of a multi-image sample as base views only (no anyres grid).
    """
    from PIL import Image

    content = [{"type": "image"} for _ in range(num_images)] + [{"type": "text", "text": "Plan."}]
    text = processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )
    images = [Image.new("RGB", (int(width), int(height)), (128, 128, 128)) for _ in range(num_images)]
    inputs = processor(text=[text], images=[images], return_tensors="pt")
    token_id = get_image_budget_hook(processor).feature_token_id(processor)
    return int((inputs["input_ids"] == token_id).sum()) / num_images


# ---------------------------------------------------------------------------------------------------------------------
# The hooks
# ---------------------------------------------------------------------------------------------------------------------


def _size_dict(size: Any) -> dict[str, Any]:
    if size is None:
        return {}
    return dict(size) if isinstance(size, Mapping) else {k: v for k, v in vars(size).items() if v is not None}


class QwenVLBudget(ImageBudgetHook):
    """Qwen2-VL / Qwen2.5-VL / Qwen3-VL: images are resized so their area falls in [min_pixels, max_pixels]; one
    visual token per (patch · merge)² pixels. transformers 5 keeps the budget in `image_processor.size =
    {"shortest_edge": min_pixels, "longest_edge": max_pixels}` (both are pixel counts despite the names)."""

    family = "qwen_vl"

    def _image_processor(self, processor: Any) -> Any:
        return getattr(processor, "image_processor", processor)

    def set_pixels(self, processor: Any, min_pixels: int | None, max_pixels: int | None) -> dict[str, Any]:
        image_processor = self._image_processor(processor)
        size = _size_dict(getattr(image_processor, "size", None))
        if "shortest_edge" not in size and "longest_edge" not in size:
            raise ImageBudgetError(
                f"{type(image_processor).__name__}.size {size} has no pixel budget (shortest/longest_edge)"
            )
        new_min = size.get("shortest_edge") if min_pixels is None else int(min_pixels)
        new_max = size.get("longest_edge") if max_pixels is None else int(max_pixels)
        if new_min is not None and new_max is not None and new_min > new_max:
            raise ImageBudgetError(f"min_pixels ({new_min}) is larger than max_pixels ({new_max})")
        size = {k: v for k, v in size.items() if k not in ("min_pixels", "max_pixels")}
        size.update({"shortest_edge": new_min, "longest_edge": new_max})
        image_processor.size = size
        # Older processors also read these attributes, which override `size` when present.
        for name, value in (("min_pixels", new_min), ("max_pixels", new_max)):
            if getattr(image_processor, name, None) is not None:
                setattr(image_processor, name, value)
        return {"min_pixels": new_min, "max_pixels": new_max}

    def set_max_tokens(self, processor: Any, max_tokens: int) -> dict[str, Any]:
        image_processor = self._image_processor(processor)
        pixels_per_token = (image_processor.patch_size * image_processor.merge_size) ** 2
        min_pixels = _size_dict(image_processor.size).get("shortest_edge")
        max_pixels = max_tokens * pixels_per_token
        if min_pixels is not None and min_pixels > max_pixels:
            min_pixels = max_pixels  # a budget below the processor's floor lowers the floor with it
        return self.set_pixels(processor, min_pixels, max_pixels)


class SmolVLMBudget(ImageBudgetHook):
    """SmolVLM / SmolVLM2 / Idefics3: an image is resized to a longest edge, cut into `tile`-sized tiles (image
    splitting) and encoded tile by tile plus one global view, `image_seq_len` tokens each. A longest edge of k tiles
    costs at most (k² + 1) · image_seq_len (a square image); without splitting one image is one view."""

    family = "smolvlm"

    def set_max_tokens(self, processor: Any, max_tokens: int) -> dict[str, Any]:
        image_processor = processor.image_processor
        tile = _size_dict(image_processor.max_image_size)["longest_edge"]
        per_view = processor.image_seq_len
        if max_tokens < per_view:
            raise ImageBudgetError(
                f"SmolVLM encodes every image as at least one {tile}px view of {per_view} tokens (`image_seq_len`); "
                f"a budget of {max_tokens} visual tokens per image cannot be met. Use max_image_tokens >= {per_view}."
            )
        k = 1
        while ((k + 1) ** 2 + 1) * per_view <= max_tokens:
            k += 1
        splitting = k >= 2
        image_processor.do_image_splitting = splitting
        image_processor.size = {"longest_edge": k * tile}
        return {"longest_edge": k * tile, "do_image_splitting": splitting}


class Gemma3Budget(ImageBudgetHook):
    """Gemma 3: every image is one fixed-size view of `image_seq_length` (256) tokens; pan-and-scan adds crops of
    wide or tall images, one view each. A budget below one view cannot be met; from 3 views on, pan-and-scan is on
    with at most `N // 256 - 1` crops (pan-and-scan makes at least 2)."""

    family = "gemma3"

    def set_max_tokens(self, processor: Any, max_tokens: int) -> dict[str, Any]:
        per_view = processor.image_seq_length
        if max_tokens < per_view:
            raise ImageBudgetError(
                f"Gemma 3 encodes every image as {per_view} tokens (`image_seq_length`, fixed by the model); a budget "
                f"of {max_tokens} visual tokens per image cannot be met. Use max_image_tokens >= {per_view}."
            )
        crops = max_tokens // per_view - 1
        settings = {"do_pan_and_scan": crops >= 2}
        if crops >= 2:
            settings["pan_and_scan_max_num_crops"] = crops
        # `Gemma3Processor.images_kwargs` (a class attribute) overrides the image processor's own pan-and-scan
        # values at call time, so both are set; the processor's copy is per instance and is not saved with it, which
        # is why every loader applies the budget again from `alphadrive_config.json`.
        processor.images_kwargs = {**getattr(processor, "images_kwargs", {}), **settings}
        for name, value in settings.items():
            setattr(processor.image_processor, name, value)
        return settings

    def feature_token_id(self, processor: Any) -> int:
        return processor.tokenizer.image_token_id  # the soft token; `processor.image_token_id` is begin-of-image


class LlavaOnevisionBudget(ImageBudgetHook):
    """LLaVA-OneVision: a base view plus an anyres grid of tiles chosen from `image_grid_pinpoints`, with one newline
    token per row. The budget keeps only the grids of at most k tiles (worst case: an image the size of the grid), in
    the processor and in the model config, which splits the features with the same grid list."""

    family = "llava_onevision"

    def _cost(self, processor: Any, pinpoints: list[list[int]]) -> int:
        saved = processor.image_processor.image_grid_pinpoints
        processor.image_processor.image_grid_pinpoints = pinpoints
        try:
            tile = _size_dict(processor.image_processor.size)
            height, width = tile.get("height", tile.get("shortest_edge")), tile.get("width", tile.get("shortest_edge"))
            return max(processor._get_number_of_features(h, w, height, width) for h, w in pinpoints)
        finally:
            processor.image_processor.image_grid_pinpoints = saved

    def set_max_tokens(self, processor: Any, max_tokens: int) -> dict[str, Any]:
        image_processor = processor.image_processor
        tile = _size_dict(image_processor.size)
        height, width = tile.get("height", tile.get("shortest_edge")), tile.get("width", tile.get("shortest_edge"))
        pinpoints = [list(p) for p in image_processor.image_grid_pinpoints]
        tiles = sorted({(h // height) * (w // width) for h, w in pinpoints}, reverse=True)
        for k in tiles:
            kept = [p for p in pinpoints if (p[0] // height) * (p[1] // width) <= k]
            if self._cost(processor, kept) <= max_tokens:
                image_processor.image_grid_pinpoints = kept
                return {"image_grid_pinpoints": kept, "max_tiles": k}
        smallest = [p for p in pinpoints if (p[0] // height) * (p[1] // width) == tiles[-1]]
        raise ImageBudgetError(
            f"LLaVA-OneVision encodes every image as a base view plus at least one anyres tile "
            f"({self._cost(processor, smallest)} tokens with the smallest grid); a budget of {max_tokens} visual tokens "
            f"per image cannot be met. Use max_image_tokens >= {self._cost(processor, smallest)}."
        )

    def apply_to_model(self, model: Any, processor: Any) -> None:
        model.config.image_grid_pinpoints = [list(p) for p in processor.image_processor.image_grid_pinpoints]


class InternVLBudget(ImageBudgetHook):
    """InternVL (transformers-native `-hf` checkpoints): an image is cut into at most `max_patches` square tiles
    (plus a thumbnail when there is more than one), `image_seq_length` tokens each. `InternVLProcessor` always crops
    (`crop_to_patches` is its class default), so `max_patches` is the knob; 1 means one tile, no thumbnail."""

    family = "internvl"

    def set_max_tokens(self, processor: Any, max_tokens: int) -> dict[str, Any]:
        per_tile = processor.image_seq_length
        if max_tokens < per_tile:
            raise ImageBudgetError(
                f"InternVL encodes every image as at least one tile of {per_tile} tokens (`image_seq_length`); a "
                f"budget of {max_tokens} visual tokens per image cannot be met. Use max_image_tokens >= {per_tile}."
            )
        k = 1
        while (k + 2) * per_tile <= max_tokens:  # k + 1 tiles plus the thumbnail
            k += 1
        image_processor = processor.image_processor
        image_processor.max_patches = k
        image_processor.min_patches = min(getattr(image_processor, "min_patches", 1) or 1, k)
        return {"max_patches": k}


_QWEN = QwenVLBudget()
for _name in ("Qwen2VLProcessor", "Qwen2_5_VLProcessor", "Qwen3VLProcessor", "Qwen2VLImageProcessor"):
    register_image_budget(_name, _QWEN)
register_image_budget("SmolVLMProcessor", SmolVLMBudget())
register_image_budget("Idefics3Processor", SmolVLMBudget())
register_image_budget("Gemma3Processor", Gemma3Budget())
register_image_budget("LlavaOnevisionProcessor", LlavaOnevisionBudget())
register_image_budget("InternVLProcessor", InternVLBudget())

__all__ = [
    "ImageBudgetError",
    "ImageBudgetHook",
    "apply_image_budget",
    "get_image_budget_hook",
    "image_tokens_per_image",
    "register_image_budget",
]
