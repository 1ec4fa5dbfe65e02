"""Loading a driving model and generating its answers: the one place that builds generation inputs.

Evaluation (`evaluation.generate_predictions`), the closed loop (`closed_loop.VLMPolicy`) and the SFT trainer's
in-training metrics (`sft.DrivingSFTTrainer.generation_metrics`) all go through `generation_inputs`, so all three
see the same prompts that training built (`prompts.build_prompt`, the images of `data.select_images`), tokenised the
way TRL's GRPO trainer tokenises prompts (`processor.apply_chat_template(..., tokenize=True)`).

Example:
    >>> checkpoint = load_checkpoint("runs/sft")  # model, processor with the saved image budget, saved settings
    >>> example = generation_example(row, checkpoint.config.get("prompt_template") or "default")
    >>> generate_answers(checkpoint.model, checkpoint.processor, [example], max_new_tokens=64, do_sample=False)
    ['<think> ... </think> <answer> KEEP, STRAIGHT </answer>']
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import PartialState
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import ModelConfig, get_quantization_config
from trl.data_utils import prepare_multimodal_messages

from .configs import DrivingScriptArguments, DrivingSFTConfig, load_driving_config, save_driving_config
from .data import select_images
from .image_budget import apply_image_budget
from .prompts import PromptTemplate, build_prompt

IMAGE_BUDGET_KEYS: tuple[str, ...] = ("min_pixels", "max_pixels", "max_image_tokens")


def load_model(model_args: ModelConfig, training_args: DrivingSFTConfig):
    """`AutoModelForImageTextToText` with the dtype, attention and optional 4/8-bit quantization of `ModelConfig`."""
    quantization_config = get_quantization_config(model_args)
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    model_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": dtype,
        **(training_args.model_init_kwargs or {}),
    }
    if quantization_config is not None:
        # bitsandbytes places the quantized weights itself: the whole model on this process's device.
        model_kwargs["quantization_config"] = quantization_config
        on_cpu = training_args.use_cpu or not torch.cuda.is_available()
        model_kwargs["device_map"] = {"": "cpu" if on_cpu else PartialState().local_process_index}
    return AutoModelForImageTextToText.from_pretrained(model_args.model_name_or_path, **model_kwargs)


# Where each family keeps its vision encoder under `model.model` (transformers 5): Qwen-VL `visual`; LLaVA-OneVision,
# Gemma 3 and InternVL `vision_tower`; SmolVLM / Idefics3 `vision_model`.
VISION_MODULE_NAMES: tuple[str, ...] = ("visual", "vision_tower", "vision_model")


def freeze_vision_modules(model) -> int:
    """Stop gradients into `model`'s vision encoder (`freeze_vision_modules: true`); returns how many parameters were
    frozen. The encoder still runs forward on every image. Raises when the model has no known vision encoder."""
    inner = getattr(model, "model", model)
    for name in VISION_MODULE_NAMES:
        module = getattr(inner, name, None)
        if isinstance(module, torch.nn.Module):
            frozen = 0
            for parameter in module.parameters():
                if parameter.requires_grad:
                    parameter.requires_grad_(False)
                    frozen += parameter.numel()
            return frozen
    raise ValueError(
        f"`freeze_vision_modules`: {type(model).__name__} has no vision encoder under "
        f"{' / '.join('model.' + n for n in VISION_MODULE_NAMES)}; drop the option for this model."
    )


class SaveDrivingConfigCallback(TrainerCallback):
    """Write `alphadrive_config.json` (prompt template, image budget, starting model) into every checkpoint, next to
    the processor the Trainer saves there, so any checkpoint is evaluated with the prompts it was trained on.

    It is written when the Trainer decides to save (`control.should_save` after the step or epoch), before the
    Trainer writes anything there, so the Trainer's `trainer_state.json` stays the last file of a checkpoint and a
    checkpoint that has it is complete (`entrypoint.incomplete_reason`); `on_save` writes it again as a fallback.
    """

    def __init__(self, script_args: DrivingScriptArguments, model_name_or_path: str | None = None):
        self.script_args = script_args
        self.model_name_or_path = model_name_or_path

    def _write(self, args, state, create: bool) -> None:
        if not state.is_world_process_zero:
            return
        checkpoint_dir = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if create or os.path.isdir(checkpoint_dir):
            save_driving_config(checkpoint_dir, self.script_args, self.model_name_or_path)

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            self._write(args, state, create=True)
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if control.should_save:
            self._write(args, state, create=True)
        return control

    def on_save(self, args, state, control, **kwargs):
        self._write(args, state, create=False)
        return control


@dataclass
class Checkpoint:
    """A model ready to answer: the model (eval mode, on `device`), its processor with the image budget applied, and
    the settings saved with it (`configs.load_driving_config`; `{}` for a Hub model)."""

    model: Any
    processor: Any
    config: dict[str, Any]
    device: str


def load_checkpoint(
    model_path: str, *, image_budget: Mapping[str, int | None] | None = None, device: str | None = None
) -> Checkpoint:
    """Load a checkpoint for generation: processor and model, with the image budget saved next to it (or
    `image_budget`, keys `min_pixels`, `max_pixels`, `max_image_tokens`), bf16 on a GPU that has it, else float32."""
    config = load_driving_config(model_path) if os.path.isdir(model_path) else {}
    source = config if image_budget is None else image_budget
    processor = AutoProcessor.from_pretrained(model_path)
    apply_image_budget(processor, **{key: source.get(key) for key in IMAGE_BUDGET_KEYS})
    processor.tokenizer.padding_side = "left"
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=dtype).to(device).eval()
    apply_image_budget(processor, model=model)  # families whose model reads the budget too (LLaVA-OneVision)
    return Checkpoint(model, processor, config, device)


def generation_example(
    row: Mapping[str, Any], template: str | PromptTemplate = "default", max_images: int | None = None
) -> dict[str, Any]:
    """`{"prompt", "images"}` of a dataset row: the same prompt and images as `prompts.to_sft_example` and
    `prompts.to_grpo_example`."""
    return {"prompt": build_prompt(row, template, max_images=max_images), "images": select_images(row, max_images)}


def generation_inputs(processor, examples: Sequence[Mapping[str, Any]], device: Any = None):
    """Left-padded model inputs for examples with `prompt` and `images`: the same `apply_chat_template` call TRL's
    GRPO trainer uses to tokenise prompts, so the text matches training exactly."""
    conversations = [prepare_multimodal_messages(example["prompt"], images=example["images"]) for example in examples]
    inputs = processor.apply_chat_template(
        conversation=conversations,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True, "padding_side": "left"},
    )
    return inputs.to(device) if device is not None else inputs


@torch.no_grad()
def generate_from_inputs(model, processor, inputs, *, max_new_tokens: int, **generation_kwargs) -> list[str]:
    """Decode `model.generate` on `generation_inputs` (the new tokens only; `num_return_sequences` answers per prompt
    come out consecutively)."""
    generation_kwargs.setdefault("pad_token_id", processor.tokenizer.pad_token_id)
    sequences = model.generate(**inputs, max_new_tokens=max_new_tokens, **generation_kwargs)
    return processor.batch_decode(sequences[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def generate_answers(
    model,
    processor,
    examples: Sequence[Mapping[str, Any]],
    *,
    max_new_tokens: int,
    device: Any = None,
    **generation_kwargs,
) -> list[str]:
    """The model's answers to examples with `prompt` and `images` (`generation_example`, `prompts.to_sft_example`);
    `generation_kwargs` go to `model.generate` (`do_sample`, `temperature`, `synced_gpus`, ...)."""
    inputs = generation_inputs(processor, examples, device if device is not None else model.device)
    return generate_from_inputs(model, processor, inputs, max_new_tokens=max_new_tokens, **generation_kwargs)
