"""Score a GRPO group's completions with one forward pass of their shared prompt.

GRPO samples `num_generations` completions per prompt, and TRL scores every (prompt + completion) sequence in full:
the prompt, its images included, goes through the model once per completion, three times a step (reference
log-probs, policy log-probs, and the policy's backward). In the tiny demo a prompt is ~108 tokens and an answer ~9,
so ~90 % of that work is the same prompt computed 8 times. With a real VLM the prompt is hundreds of image tokens.

`shared_prompt_logps` runs each distinct prompt once (all but its last token) and keeps its key/value cache, repeats
the cache rows for the prompt's completions, and runs the last prompt token plus the completion on top. Under causal
attention that is the same computation: the log-probabilities equal TRL's up to float rounding, and the gradient
reaches the prompt through the cache. `DrivingGRPOTrainer` checks that on its first batch and falls back to TRL's
full pass if it does not hold (`docs/grpo.md`, "Shared-prompt scoring").

Example:
    >>> import torch
    >>> first_rows, group_of_row = prompt_groups(torch.tensor([[5, 6], [5, 6], [7, 6]]), torch.ones(3, 2))
    >>> first_rows.tolist(), group_of_row.tolist()
    ([0, 2], [0, 0, 1])
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence

import torch


def prompt_groups(
    prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, images: Sequence[torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs of identical consecutive rows: `(first_rows, group_of_row)`.

    Rows are equal when their prompt ids, prompt mask and (when given) per-row image tensors are. Only neighbours are
    compared, because TRL's sampler puts a prompt's completions next to each other; a repeated prompt elsewhere in the
    batch is simply its own group.
    """
    first_rows: list[int] = []
    group_of_row: list[int] = []
    for row in range(prompt_ids.size(0)):
        same = (
            row > 0
            and torch.equal(prompt_ids[row], prompt_ids[row - 1])
            and torch.equal(prompt_mask[row], prompt_mask[row - 1])
            and (images is None or torch.equal(images[row], images[row - 1]))
        )
        if not same:
            first_rows.append(row)
        group_of_row.append(len(first_rows) - 1)
    device = prompt_ids.device
    return torch.tensor(first_rows, device=device), torch.tensor(group_of_row, device=device)


def _backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder under the LM head (what TRL's fused LM head calls `base_model`), through a PEFT wrapper."""
    if hasattr(model, "get_base_model"):  # PEFT: the LoRA layers sit inside the base model's modules
        model = model.get_base_model()
    return model.base_model


def _cache_keyword(backbone: torch.nn.Module) -> str:
    # transformers renamed `past_key_values` to `cache` in 5.x; the old name is deprecated.
    parameters = inspect.signature(type(backbone).forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _position_ids(backbone, input_ids, attention_mask, image_grid_thw, mm_token_type_ids) -> torch.Tensor:
    """Position ids of the full (prompt + completion) rows, as the model's own forward computes them."""
    if mm_token_type_ids is not None and image_grid_thw is not None and hasattr(backbone, "get_rope_index"):
        # Qwen-VL's 3-D (M-RoPE) positions: image patches by their grid, text after them. Index arithmetic only.
        position_ids, _ = backbone.get_rope_index(
            input_ids,
            mm_token_type_ids=mm_token_type_ids,
            image_grid_thw=image_grid_thw,
            attention_mask=attention_mask,
        )
        return position_ids
    # What a forward without position ids uses: 0 .. L-1 on every row, left padding included.
    return torch.arange(input_ids.size(1), device=input_ids.device).expand(input_ids.size(0), -1)


def _image_rows(pixel_values, image_grid_thw, num_images) -> list[torch.Tensor] | None:
    """Per sequence, its rows of Qwen-VL's flattened `pixel_values` (patches of all its images)."""
    if pixel_values is None:
        return None
    patches_per_row = [int(chunk.sum()) for chunk in torch.split(image_grid_thw.prod(dim=-1), num_images)]
    return list(torch.split(pixel_values, patches_per_row))


def checkpointing_supported() -> bool:
    """Whether this transformers lets a checkpointed layer keep a cache it only reads (`_can_checkpoint_with_cache`);
    without it, a checkpointed layer drops the cache and the completion pass would not see its prompt."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return hasattr(GradientCheckpointingLayer, "_can_checkpoint_with_cache")


def _checkpointed_layers(backbone: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules that gradient checkpointing currently wraps (transformers' `GradientCheckpointingLayer`s)."""
    return [module for module in backbone.modules() if getattr(module, "gradient_checkpointing", False)]


@contextlib.contextmanager
def _without_checkpointing(backbone: torch.nn.Module) -> Iterator[None]:
    """Run the prompt pass without gradient checkpointing: it writes the cache, and a checkpointed layer replays its
    forward in backward, which would write it again. It is one pass per prompt, not one per completion."""
    layers = _checkpointed_layers(backbone)
    for layer in layers:
        layer.gradient_checkpointing = False
    try:
        yield
    finally:
        for layer in layers:
            layer.gradient_checkpointing = True


@contextlib.contextmanager
def _checkpointing_keeps_cache(backbone: torch.nn.Module) -> Iterator[None]:
    """Let checkpointed layers keep the (read-only) cache during the completion pass. transformers drops a cache
    from a checkpointed layer unless its class sets `_can_checkpoint_with_cache`, which is meant for layers that only
    read it: with `_read_only` they do, so the backward replay sees the same prompt keys."""
    classes = {type(module) for module in _checkpointed_layers(backbone)}
    saved = {cls: cls.__dict__.get("_can_checkpoint_with_cache") for cls in classes}
    for cls in classes:
        cls._can_checkpoint_with_cache = True
    try:
        yield
    finally:
        for cls, value in saved.items():
            if value is None:
                del cls._can_checkpoint_with_cache
            else:
                cls._can_checkpoint_with_cache = value


def _read_only(cache) -> list[int]:
    """Make every cache layer return `past + new` keys and values without storing them, so that a layer replayed in
    backward (gradient checkpointing) reads the same prompt again; returns a one-item counter of the reads."""
    reads = [0]
    for layer in cache.layers:

        def update(key_states, value_states, *args, _layer=layer, **kwargs):
            reads[0] += 1
            return torch.cat([_layer.keys, key_states], dim=-2), torch.cat([_layer.values, value_states], dim=-2)

        layer.update = update
    return reads


def shared_prompt_logps(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    *,
    pixel_values: torch.Tensor | None = None,
    image_grid_thw: torch.Tensor | None = None,
    num_images: list[int] | None = None,
    mm_token_type_ids: torch.Tensor | None = None,
    compute_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs (and entropies) of the last `logits_to_keep` tokens, each distinct prompt run once.

    Same contract as TRL's `GRPOTrainer._get_per_token_logps_and_entropies` for models TRL patched with its fused LM
    head: `input_ids` is `[left-padded prompt | right-padded completion]`, and the result has shape
    `(batch, logits_to_keep)`. `model` may be wrapped (DDP): the completion pass goes through the wrapper, so its
    gradient hooks fire; the prompt pass runs on the unwrapped backbone inside the same autograd graph.
    Supports text-only models and Qwen-VL images (`pixel_values` + `image_grid_thw`); the caller checks the family.
    """
    completion_length = logits_to_keep
    prompt_length = input_ids.size(1) - completion_length
    unwrapped = getattr(model, "module", model)
    backbone = _backbone(unwrapped)

    position_ids = _position_ids(backbone, input_ids, attention_mask, image_grid_thw, mm_token_type_ids)
    prompt_ids, prompt_mask = input_ids[:, :prompt_length], attention_mask[:, :prompt_length]
    image_rows = _image_rows(pixel_values, image_grid_thw, num_images)
    first_rows, group_of_row = prompt_groups(prompt_ids, prompt_mask, image_rows)

    # 1. Each distinct prompt but its last token, once: its key/value cache. The last prompt token is left for step 2
    #    because its hidden state predicts the first completion token. Left padding keeps it a real token.
    head = prompt_length - 1
    prompt_inputs = {
        "input_ids": prompt_ids[first_rows, :head],
        "attention_mask": prompt_mask[first_rows, :head],
        "position_ids": position_ids.index_select(-2, first_rows)[..., :head],
        "use_cache": True,
    }
    if image_rows is not None:
        first = first_rows.tolist()
        prompt_inputs["pixel_values"] = torch.cat([image_rows[row] for row in first])
        thw_per_row = torch.split(image_grid_thw, num_images)
        prompt_inputs["image_grid_thw"] = torch.cat([thw_per_row[row] for row in first])
    if mm_token_type_ids is not None:
        prompt_inputs["mm_token_type_ids"] = mm_token_type_ids[first_rows, :head]
    with _without_checkpointing(backbone):
        prompt_outputs = backbone(**prompt_inputs)
    cache = getattr(prompt_outputs, "cache", None) or getattr(prompt_outputs, "past_key_values", None)
    if cache is None:
        raise RuntimeError(f"{type(backbone).__name__} returned no key/value cache for the prompt pass.")

    # 2. Repeat each prompt's cache rows for its completions (index_select: differentiable), then score
    #    `[last prompt token | completion]` through the (possibly DDP-wrapped) model with TRL's fused LM head.
    #    The cache is read-only from here: under gradient checkpointing the layers replay this pass in backward.
    cache.reorder_cache(group_of_row)
    reads = _read_only(cache)
    tail_ids = input_ids[:, head:]
    labels = tail_ids.masked_fill(attention_mask[:, head:] == 0, -100)
    with _checkpointing_keeps_cache(backbone):
        outputs = model(
            input_ids=tail_ids,
            attention_mask=attention_mask,
            position_ids=position_ids[..., head:],
            labels=labels,
            fused_lm_head=True,
            **{_cache_keyword(backbone): cache},
        )
    if not reads[0]:  # the layers never saw the prompt: never return log-probs of completions without their prompt
        raise RuntimeError(f"{type(backbone).__name__} did not read the prompt's key/value cache.")
    logps = outputs.log_probs[:, -completion_length:]
    entropies = outputs.entropy[:, -completion_length:] if compute_entropy else None
    return logps, entropies
