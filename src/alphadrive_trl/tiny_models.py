"""Tiny random VLMs + processors, built fully offline, for tests, the CPU demo and CI.

Qwen-VL (`qwen2_vl`, `qwen2_5_vl`, `qwen3_vl`) and the other families TRL trains (`smolvlm`, `gemma3`,
`llava_onevision`, `internvl`): each is a real transformers model class with the family's real processor class, special
tokens and chat template, loading offline through `AutoProcessor` / `AutoModelForImageTextToText`.

The models are real instances of the transformers classes the real recipes train (`Qwen2VLForConditionalGeneration`,
`Qwen2_5_VLForConditionalGeneration`, `Qwen3VLForConditionalGeneration`), only small: a few hundred thousand
parameters, a ~750-token byte-level BPE tokenizer trained here on driving text, Qwen's special tokens, TRL's shipped
Qwen-VL chat templates, and an image budget of ~16 visual tokens per image. Everything downstream (`from_pretrained`,
`AutoProcessor`, TRL's trainers, template detection) treats them exactly like the Hub checkpoints.

Presets:

- `tiny` (tests): text hidden 64, 2 layers, vision hidden 32. Builds in well under a second.
- `tiny_split` (tests): `tiny` with the real Qwen tokenizer's layout: `<think>`, `</think>`, `<answer>`, `</answer>`
  in 3 pieces, ACCELERATE / DECELERATE / STRAIGHT in 3, the `_CHANGE` / `_TURN` actions in 2, KEEP and STOP in 1
  (the `tiny` tokenizer holds every tag and action word as one token, which hides off-by-one bugs in masking and
  length checks).
- `demo` (the CPU demo): text hidden 128, 4 layers, vision hidden 64. Large enough to learn the synthetic driving task
  from scratch on CPU in about a minute.

Example:
    >>> from alphadrive_trl.tiny_models import build_tiny_model
    >>> model, processor = build_tiny_model("qwen2_5_vl", "outputs/tiny-qwen2_5_vl", seed=0)
    >>> type(model).__name__
    'Qwen2_5_VLForConditionalGeneration'

CLI: `python -m alphadrive_trl.tiny_models --arch qwen2_5_vl --output-dir outputs/tiny-qwen2_5_vl-init --preset demo`
(also installed as `alphadrive-tiny-model`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import asdict, dataclass, fields, replace

import torch
from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import (
    AutoModelForImageTextToText,
    Gemma3Config,
    Gemma3ImageProcessor,
    Gemma3Processor,
    GenerationConfig,
    GotOcr2ImageProcessor,
    InternVLConfig,
    InternVLProcessor,
    InternVLVideoProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
    Qwen2_5_VLConfig,
    Qwen2_5_VLProcessor,
    Qwen2Tokenizer,
    Qwen2VLConfig,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
    Qwen3VLConfig,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
    SmolVLMConfig,
    SmolVLMImageProcessor,
    SmolVLMProcessor,
    SmolVLMVideoProcessor,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
from trl.chat_template_utils import (
    gemma3_chat_template,
    qwen2_5_vl_chat_template,
    qwen3_vl_chat_template,
    smolvlm_chat_template,
)

from .actions import PATH_ACTIONS, SPEED_ACTIONS
from .entrypoint import command

logger = logging.getLogger(__name__)

ARCHITECTURES: tuple[str, ...] = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
# The non-Qwen families TRL's SFT and GRPO trainers support (transformers-native classes only).
FAMILY_ARCHITECTURES: tuple[str, ...] = ("smolvlm", "gemma3", "llava_onevision", "internvl")
ALL_ARCHITECTURES: tuple[str, ...] = ARCHITECTURES + FAMILY_ARCHITECTURES

# Qwen's special tokens, in the order the real tokenizers list them after `<|endoftext|>`.
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Per family: bos/eos/pad, every special token, and the named ones processors read as tokenizer attributes
# (`tokenizer.boi_token`, `tokenizer.context_image_token`, ...), as the Hub tokenizers of each family define them.
_FAMILY_TOKENS: dict[str, dict] = {
    "qwen": {"eos": "<|im_end|>", "pad": "<|endoftext|>", "special": QWEN_SPECIAL_TOKENS, "named": {}},
    "smolvlm": {
        "bos": "<|im_start|>",
        "eos": "<end_of_utterance>",
        "pad": "<|im_end|>",
        "special": (
            "<|im_start|>",
            "<|im_end|>",
            "<end_of_utterance>",
            "<fake_token_around_image>",
            "<image>",
            "<global-img>",
            "<video>",
            *(f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)),
        ),
        "named": {
            "fake_image_token": "<fake_token_around_image>",
            "image_token": "<image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
            "video_token": "<video>",
        },
    },
    "gemma3": {
        "bos": "<bos>",
        "eos": "<eos>",
        "pad": "<pad>",
        "special": (
            "<bos>",
            "<eos>",
            "<pad>",
            "<start_of_turn>",
            "<end_of_turn>",
            "<start_of_image>",
            "<end_of_image>",
            "<image_soft_token>",
        ),
        "named": {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
    },
    "llava_onevision": {
        "eos": "<|im_end|>",
        "pad": "<|endoftext|>",
        "special": ("<|im_start|>", "<|im_end|>", "<image>", "<video>"),
        "named": {"image_token": "<image>", "video_token": "<video>"},
    },
    "internvl": {
        "eos": "<|im_end|>",
        "pad": "<|endoftext|>",
        "special": ("<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"),
        "named": {
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    },
}
# The token each family's assistant turn ends with: generation stops there (with the pad/eos token as a fallback).
END_OF_TURN: dict[str, str] = {
    "qwen": "<|im_end|>",
    "smolvlm": "<end_of_utterance>",
    "gemma3": "<end_of_turn>",
    "llava_onevision": "<|im_end|>",
    "internvl": "<|im_end|>",
}

# ChatML templates for LLaVA-OneVision and InternVL (TRL ships none for them). They follow the Hub checkpoints'
# layout (images of a turn first, `<image>` / `<IMG_CONTEXT>` placeholders the processors expand) and render an
# assistant turn exactly as the generation prompt continues, so prompt + completion tokenises as a prefix + suffix.
_CHATML_VLM_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] if part['type'] == 'image' %}{{ 'IMAGE' }}{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAVA_ONEVISION_CHAT_TEMPLATE = _CHATML_VLM_TEMPLATE.replace("IMAGE", "<image>\\n")
INTERNVL_CHAT_TEMPLATE = _CHATML_VLM_TEMPLATE.replace("IMAGE", "<IMG_CONTEXT>\\n")

# Plain (non-special) single tokens: the output tags and the action words. One token per tag/word lets a tiny model
# learn the answer format in a few steps, and decoding keeps them (they are not skipped as special tokens).
PLAIN_TOKENS: tuple[str, ...] = ("<think>", "</think>", "<answer>", "</answer>", *SPEED_ACTIONS, *PATH_ACTIONS)
# The `split` layout (preset `tiny_split`): plain tokens that cut the tags and action words where the real Qwen
# tokenizer does, piece counts included: `<think>` -> `<` `think` `>`, `</answer>` -> `</` `answer` `>`, ACCELERATE ->
# ACC ELER ATE, STRAIGHT -> STR AIG HT, LEFT_CHANGE -> LEFT _CHANGE, KEEP and STOP whole. Added tokens match before
# BPE, so the cut is the same wherever the word appears.
SPLIT_PIECES: tuple[str, ...] = (
    "</",
    "think",
    "answer",
    "ACC",
    "DEC",
    "ELER",
    "ATE",
    "STR",
    "AIG",
    "HT",
    "LEFT",
    "RIGHT",
    "_CHANGE",
    "_TURN",
    "KEEP",
    "STOP",
)
TOKENIZER_LAYOUTS: tuple[str, ...] = ("single", "split")

# A few driving sentences so the BPE merges cover the words prompts and reasoning use.
DRIVING_CORPUS: tuple[str, ...] = (
    "The ego vehicle is driving at 8.5 m/s on a two-lane road.",
    "Navigation: go straight. Navigation: turn left at the next intersection. Navigation: turn right.",
    "Navigation: change to the left lane. Navigation: change to the right lane. Navigation: keep lane.",
    "The traffic light ahead is red, so the ego vehicle must stop before the stop line.",
    "The traffic light is green and the road ahead is clear, so keep the current speed.",
    "The traffic light is yellow; decelerate and prepare to stop.",
    "A lead vehicle is close ahead in the same lane, so decelerate to keep a safe gap.",
    "The lead car is far away and the speed is below the limit, so accelerate.",
    "A pedestrian is crossing the road in front of the car; stop and yield.",
    "The junction is coming up; slow down and turn left as the route requires.",
    "The right lane is free, so change to the right lane and keep going straight.",
    "There is no vehicle nearby; maintain speed and go straight along the lane.",
    "The vehicle in front is braking; reduce speed.",
    "Front camera, previous frame, left camera, right camera.",
    "You are a driving assistant. Look at the front camera image and plan the next 3 seconds.",
    "Ego speed: 12.0 m/s. Speed options: KEEP, ACCELERATE, DECELERATE, STOP.",
    "Path options: STRAIGHT, RIGHT_CHANGE, LEFT_CHANGE, RIGHT_TURN, LEFT_TURN.",
    "Answer in the format <think> reasoning </think> <answer> SPEED, PATH </answer>.",
    "<think> The light is red. </think> <answer> STOP, STRAIGHT </answer>",
    "<think> The road is clear and the route turns left. </think> <answer> KEEP, LEFT_TURN </answer>",
    "We close in on the car 20 m ahead by 4 m/s. The car ahead is only 9 m away, under 1 s at our speed.",
    "Cones close our lane 30 m ahead. The left lane is free, so we move over. We cannot move right: a car is alongside.",
    "No lane is free, so we must wait before the cones. The car 15 m ahead is braking, under 2 s away.",
    "At 8.0 m/s we are well below the cruise speed (12.0 m/s). At 13.1 m/s we are close to the cruise speed.",
    "Navigation says turn left; the intersection is still 40 m ahead. Navigation asks for the right lane.",
    "The light at the stop line 25 m ahead is red. At 6.2 m/s we stop before it.",
    "The light 30 m ahead turned yellow and we can still stop before the line. A pedestrian is on the crossing.",
    "At 14.0 m/s it is beyond a 3 s stop, so we start braking. The intersection is right ahead.",
    "0 1 2 3 4 5 6 7 8 9 . , : ; ( ) [ ] - m/s metres seconds waypoints trajectory x forward y left",
    "You are a helpful assistant.",
)


@dataclass(frozen=True)
class TinyModelSize:
    """Sizes of a tiny Qwen-VL model. Override any field through `build_tiny_model(**overrides)`."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 16
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_depth: int = 2
    vision_num_heads: int = 2
    tokenizer_vocab_size: int = 1024
    max_position_embeddings: int = 4096
    tokenizer_layout: str = "single"  # `single`: tags and action words are one token each; `split`: SPLIT_PIECES
    # 0 sizes the embedding to the tokenizer; a real model's size (151,936 for Qwen2-VL) keeps its embedding cost.
    text_vocab_size: int = 0
    tie_word_embeddings: bool = False


PRESETS: dict[str, TinyModelSize] = {
    "tiny": TinyModelSize(),
    "tiny_split": TinyModelSize(tokenizer_layout="split"),
    "demo": TinyModelSize(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=16,
        vision_hidden_size=64,
        vision_intermediate_size=128,
        vision_depth=2,
        vision_num_heads=4,
    ),
    # Qwen2-VL-2B-Instruct's shape (2.21 B parameters) with random weights and the tiny tokenizer: GPU step time and
    # memory of the real recipes without a download (`benchmarks/gpu_check.py`). `qwen2_vl` only.
    "qwen2_vl_2b_shape": TinyModelSize(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        head_dim=128,
        vision_hidden_size=1280,
        vision_intermediate_size=5120,
        vision_depth=32,
        vision_num_heads=16,
        max_position_embeddings=32768,
        text_vocab_size=151936,
        tie_word_embeddings=True,
    ),
}


def _prompt_corpus() -> list[str]:
    """The wording of `alphadrive_trl.prompts` (when present), so its words become few tokens."""
    try:
        from . import prompts
    except ImportError:
        return []
    row = {
        "sample_id": "corpus",
        "images": [None, None],
        "image_roles": ["front", "front_t-1"],
        "ego_speed": 8.5,
        "navigation": "turn left at the next intersection",
        "speed_action": "DECELERATE",
        "path_action": "LEFT_TURN",
        "reasoning": "A lead vehicle is close ahead.",
        "feasible_actions": None,
        "trajectory": [[1.0, 0.0], [2.0, 0.1], [3.0, 0.3], [4.0, 0.6], [5.0, 1.0], [6.0, 1.5]],
        "source": "synthetic",
    }
    texts: list[str] = []
    for name in sorted(getattr(prompts, "PROMPT_TEMPLATES", {})):
        try:  # the prompts module is optional here: a template it cannot render simply adds no text
            messages = prompts.build_prompt(row, name) + prompts.build_completion(row, name)
        except Exception:
            continue
        for message in messages:
            content = message.get("content")
            parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
            texts.extend(part["text"] for part in parts if isinstance(part, dict) and part.get("text"))
    return texts


def build_tokenizer(
    vocab_size: int = 1024,
    extra_corpus: list[str] | None = None,
    *,
    layout: str = "single",
    family: str = "qwen",
) -> Qwen2Tokenizer:
    """Train a byte-level BPE tokenizer with Qwen2's pre-tokenizer and wrap it as a `Qwen2Tokenizer`.

    `layout` is `single` (tags and action words one token each) or `split` (cut like the real Qwen tokenizer, see
    `SPLIT_PIECES`); `family` picks the special tokens (`qwen` or one of `FAMILY_ARCHITECTURES`). Every family uses
    the same byte-level BPE class here: only the special tokens, their names and the chat template are the family's.
    Deterministic: the corpus and the trainer settings are fixed, so the same vocabulary comes out every time.
    """
    if layout not in TOKENIZER_LAYOUTS:
        raise ValueError(f"Unknown tokenizer layout {layout!r}; choose one of {', '.join(TOKENIZER_LAYOUTS)}.")
    spec = _FAMILY_TOKENS[family]
    plain = PLAIN_TOKENS if layout == "single" else SPLIT_PIECES
    corpus = list(DRIVING_CORPUS) + _prompt_corpus() + list(extra_corpus or []) + [" ".join(PLAIN_TOKENS)]
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=state["vocab"],
        merges=merges,
        unk_token=None,
        bos_token=spec.get("bos"),
        eos_token=spec["eos"],
        pad_token=spec["pad"],
        extra_special_tokens=dict(spec["named"]) if spec["named"] else list(spec["special"]),
        model_max_length=32768,
        padding_side="right",
    )
    if spec["named"]:  # named tokens become attributes (`tokenizer.boi_token`, ...); add them and the rest to vocab
        unnamed = [t for t in spec["special"] if t not in spec["named"].values()]
        tokens = [*spec["named"].values(), *unnamed]
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in tokens], special_tokens=True)
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in plain])
    return tokenizer


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def _mrope_section(arch: str, head_dim: int) -> list[int]:
    """Split the rotary half-dimension over (time, height, width); must sum to head_dim / 2."""
    half = head_dim // 2
    temporal = half // 2 if arch == "qwen3_vl" else half // 4
    height = (half - temporal) // 2
    return [temporal, height, half - temporal - height]


def _text_sizes(tokenizer, size: TinyModelSize) -> dict:
    """The language model's sizes, shared by every family's text config."""
    return {
        "vocab_size": size.text_vocab_size or _round_up(len(tokenizer), 64),
        "hidden_size": size.hidden_size,
        "intermediate_size": size.intermediate_size,
        "num_hidden_layers": size.num_hidden_layers,
        "num_attention_heads": size.num_attention_heads,
        "num_key_value_heads": size.num_key_value_heads,
        "max_position_embeddings": size.max_position_embeddings,
    }


def build_config(arch: str, tokenizer: Qwen2Tokenizer, size: TinyModelSize):
    """The transformers config of a tiny `arch` model whose token ids match `tokenizer`."""
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in ("<|endoftext|>", "<|im_end|>")}
    token_ids = {
        "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    }
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope_section(arch, size.head_dim)}
    text = {
        **_text_sizes(tokenizer, size),
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision = {"depth": size.vision_depth, "num_heads": size.vision_num_heads, "spatial_merge_size": 2}
    if arch == "qwen2_vl":
        if size.hidden_size != size.num_attention_heads * size.head_dim:
            raise ValueError("qwen2_vl derives head_dim from hidden_size / num_attention_heads; make them agree.")
        vision.update(
            embed_dim=size.vision_hidden_size,
            hidden_size=size.hidden_size,
            mlp_ratio=size.vision_intermediate_size // size.vision_hidden_size,
            patch_size=14,
        )
        return Qwen2VLConfig(
            text_config={**text, "rope_parameters": rope},
            vision_config=vision,
            tie_word_embeddings=size.tie_word_embeddings,
            **token_ids,
        )
    if arch == "qwen2_5_vl":
        if size.hidden_size != size.num_attention_heads * size.head_dim:
            raise ValueError("qwen2_5_vl derives head_dim from hidden_size / num_attention_heads; make them agree.")
        vision.update(
            hidden_size=size.vision_hidden_size,
            intermediate_size=size.vision_intermediate_size,
            out_hidden_size=size.hidden_size,
            fullatt_block_indexes=[size.vision_depth - 1],
            patch_size=14,
            window_size=112,
        )
        return Qwen2_5_VLConfig(text_config={**text, "rope_parameters": rope}, vision_config=vision, **token_ids)
    if arch == "qwen3_vl":
        vision.update(
            hidden_size=size.vision_hidden_size,
            intermediate_size=size.vision_intermediate_size,
            out_hidden_size=size.hidden_size,
            deepstack_visual_indexes=[0],
            num_position_embeddings=144,
            patch_size=16,
        )
        text.update(head_dim=size.head_dim, rope_parameters={**rope, "mrope_interleaved": True})
        return Qwen3VLConfig(text_config=text, vision_config=vision, **token_ids)
    raise ValueError(f"Unknown arch {arch!r}; choose one of {', '.join(ARCHITECTURES)}.")


def build_processor(arch: str, tokenizer: Qwen2Tokenizer):
    """The Qwen-VL processor of `arch` with a small image budget: 4 to 16 visual tokens per image."""
    patch = 16 if arch == "qwen3_vl" else 14
    mean, std = ([0.5] * 3, [0.5] * 3) if arch == "qwen3_vl" else (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    # One visual token covers a (2·patch)² square after the 2×2 merge: 2×2 to 4×4 tokens per image.
    budget = {"shortest_edge": (2 * 2 * patch) ** 2, "longest_edge": (4 * 2 * patch) ** 2}
    vision_kwargs = {"patch_size": patch, "merge_size": 2, "temporal_patch_size": 2, "image_mean": mean}
    vision_kwargs["image_std"] = std
    image_processor = Qwen2VLImageProcessor(size=budget, **vision_kwargs)
    if arch == "qwen3_vl":
        video_processor = Qwen3VLVideoProcessor(size=budget, **vision_kwargs)
        return Qwen3VLProcessor(image_processor, tokenizer, video_processor, chat_template=qwen3_vl_chat_template)
    video_processor = Qwen2VLVideoProcessor(size=budget, **vision_kwargs)
    processor_class = Qwen2VLProcessor if arch == "qwen2_vl" else Qwen2_5_VLProcessor
    # TRL ships one template for both Qwen2-VL and Qwen2.5-VL (the Hub checkpoints use the same text).
    return processor_class(image_processor, tokenizer, video_processor, chat_template=qwen2_5_vl_chat_template)


# Image geometry of the tiny non-Qwen models: 64-pixel views of 8-pixel patches, 16 visual tokens per view after each
# family's pooling (SmolVLM pixel shuffle 2, Gemma 3 average pool 2, InternVL downsample 0.5); LLaVA-OneVision tiles
# are 32 pixels (4x4 = 16 tokens) with an anyres grid of up to 2x2 tiles.
_VIEW, _PATCH, _LLAVA_TILE = 64, 8, 32


def _text_config(tokenizer, size: TinyModelSize, model_type: str, family: str) -> dict:
    spec = _FAMILY_TOKENS[family]
    text = {
        "model_type": model_type,
        **_text_sizes(tokenizer, size),
        "head_dim": size.head_dim,
        "eos_token_id": tokenizer.convert_tokens_to_ids(spec["eos"]),
        "pad_token_id": tokenizer.convert_tokens_to_ids(spec["pad"]),
        "tie_word_embeddings": False,
    }
    if spec.get("bos"):
        text["bos_token_id"] = tokenizer.convert_tokens_to_ids(spec["bos"])
    return text


def _vision_config(size: TinyModelSize, image_size: int, **extra) -> dict:
    return {
        "hidden_size": size.vision_hidden_size,
        "intermediate_size": size.vision_intermediate_size,
        "num_hidden_layers": size.vision_depth,
        "num_attention_heads": size.vision_num_heads,
        "image_size": image_size,
        "patch_size": _PATCH,
        **extra,
    }


def build_family_config(arch: str, tokenizer, size: TinyModelSize):
    """The transformers config of a tiny non-Qwen `arch` model (`FAMILY_ARCHITECTURES`) matching `tokenizer`."""
    ids = tokenizer.convert_tokens_to_ids
    if arch == "smolvlm":
        return SmolVLMConfig(
            text_config=_text_config(tokenizer, size, "llama", "smolvlm"),
            vision_config=_vision_config(size, _VIEW),
            scale_factor=2,
            image_token_id=ids("<image>"),
            tie_word_embeddings=False,
        )
    if arch == "gemma3":
        text = _text_config(tokenizer, size, "gemma3_text", "gemma3")
        text.update(sliding_window=64, query_pre_attn_scalar=size.head_dim)
        return Gemma3Config(
            text_config=text,
            vision_config=_vision_config(size, _VIEW, model_type="siglip_vision_model", vision_use_head=False),
            mm_tokens_per_image=(_VIEW // _PATCH // 2) ** 2,
            boi_token_index=ids("<start_of_image>"),
            eoi_token_index=ids("<end_of_image>"),
            image_token_index=ids("<image_soft_token>"),
            tie_word_embeddings=False,
        )
    if arch == "llava_onevision":
        return LlavaOnevisionConfig(
            text_config=_text_config(tokenizer, size, "qwen2", "llava_onevision"),
            vision_config=_vision_config(size, _LLAVA_TILE, model_type="siglip_vision_model", vision_use_head=False),
            image_token_index=ids("<image>"),
            video_token_index=ids("<video>"),
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
            image_grid_pinpoints=[[_LLAVA_TILE * h, _LLAVA_TILE * w] for h in (1, 2) for w in (1, 2)],
            vision_aspect_ratio="anyres_max_4",
            tie_word_embeddings=False,
        )
    if arch == "internvl":
        vision = _vision_config(size, [_VIEW, _VIEW], model_type="internvl_vision")
        vision["patch_size"] = [_PATCH, _PATCH]
        return InternVLConfig(
            text_config=_text_config(tokenizer, size, "qwen2", "internvl"),
            vision_config=vision,
            image_token_id=ids("<IMG_CONTEXT>"),
            image_seq_length=(_VIEW // _PATCH // 2) ** 2,
            downsample_ratio=0.5,
            tie_word_embeddings=False,
        )
    raise ValueError(f"Unknown arch {arch!r}; choose one of {', '.join(ALL_ARCHITECTURES)}.")


def build_family_processor(arch: str, tokenizer):
    """The real processor class of a tiny non-Qwen `arch` model, with a small image budget (16 visual tokens per view;
    tiling off except LLaVA-OneVision's anyres grid, which the model always uses) and the family's chat template."""
    tokens_per_view = (_VIEW // _PATCH // 2) ** 2
    half = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    if arch == "smolvlm":
        image_processor = SmolVLMImageProcessor(
            size={"longest_edge": _VIEW}, max_image_size={"longest_edge": _VIEW}, do_image_splitting=False, **half
        )
        video_processor = SmolVLMVideoProcessor(size={"longest_edge": _VIEW}, max_image_size={"longest_edge": _VIEW})
        return SmolVLMProcessor(
            image_processor,
            tokenizer,
            video_processor,
            image_seq_len=tokens_per_view,
            chat_template=smolvlm_chat_template,
        )
    if arch == "gemma3":
        image_processor = Gemma3ImageProcessor(
            size={"height": _VIEW, "width": _VIEW},
            do_pan_and_scan=False,
            pan_and_scan_min_crop_size=_VIEW // 2,
            pan_and_scan_max_num_crops=4,
            pan_and_scan_min_ratio_to_activate=1.2,
            **half,
        )
        return Gemma3Processor(
            image_processor, tokenizer, chat_template=gemma3_chat_template, image_seq_length=tokens_per_view
        )
    if arch == "llava_onevision":
        pinpoints = [[_LLAVA_TILE * h, _LLAVA_TILE * w] for h in (1, 2) for w in (1, 2)]
        image_processor = LlavaOnevisionImageProcessor(
            size={"height": _LLAVA_TILE, "width": _LLAVA_TILE}, image_grid_pinpoints=pinpoints, **half
        )
        video_processor = LlavaOnevisionVideoProcessor(size={"height": _LLAVA_TILE, "width": _LLAVA_TILE})
        return LlavaOnevisionProcessor(
            image_processor,
            tokenizer,
            video_processor,
            num_image_tokens=(_LLAVA_TILE // _PATCH) ** 2,
            vision_feature_select_strategy="full",
            vision_aspect_ratio="anyres_max_4",
            chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
        )
    if arch == "internvl":
        image_processor = GotOcr2ImageProcessor(
            size={"height": _VIEW, "width": _VIEW}, crop_to_patches=True, min_patches=1, max_patches=1
        )
        video_processor = InternVLVideoProcessor(size={"height": _VIEW, "width": _VIEW})
        return InternVLProcessor(
            image_processor,
            tokenizer,
            video_processor,
            image_seq_length=tokens_per_view,
            chat_template=INTERNVL_CHAT_TEMPLATE,
        )
    raise ValueError(f"Unknown arch {arch!r}; choose one of {', '.join(ALL_ARCHITECTURES)}.")


def _family(arch: str) -> str:
    return "qwen" if arch in ARCHITECTURES else arch


def build_tiny_model(
    arch: str = "qwen2_5_vl",
    output_dir: str | None = None,
    *,
    seed: int = 0,
    preset: str = "tiny",
    **overrides,
):
    """Build a tiny random `arch` model and its processor; save both to `output_dir` when given.

    Args:
        arch: `qwen2_vl`, `qwen2_5_vl`, `qwen3_vl`, or a non-Qwen family: `smolvlm`, `gemma3`, `llava_onevision`,
            `internvl`.
        output_dir: Where to `save_pretrained` model + processor (reload with `AutoModelForImageTextToText` and
            `AutoProcessor`, offline). None keeps them in memory only.
        seed: Weight initialisation seed; the same seed gives identical weights.
        preset: `tiny` (tests), `tiny_split` (tests, tags and action words in several tokens like the real Qwen
            tokenizer), `demo` (the CPU demo, learns the synthetic task) or `qwen2_vl_2b_shape` (Qwen2-VL-2B's
            2.21 B-parameter shape, random weights, `qwen2_vl` only: GPU step time and memory without a download).
        **overrides: Any `TinyModelSize` field, e.g. `num_hidden_layers=1`.

    Returns:
        `(model, processor)`.
    """
    if arch not in ALL_ARCHITECTURES:
        raise ValueError(f"Unknown arch {arch!r}; choose one of {', '.join(ALL_ARCHITECTURES)}.")
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    if preset == "qwen2_vl_2b_shape" and arch != "qwen2_vl":
        raise ValueError(
            f"Preset 'qwen2_vl_2b_shape' is Qwen2-VL-2B's shape; build it with arch 'qwen2_vl', not {arch!r}."
        )
    valid = {f.name for f in fields(TinyModelSize)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise TypeError(f"Unknown size override(s) {unknown}; valid: {sorted(valid)}.")
    size = replace(PRESETS[preset], **overrides)

    family = _family(arch)
    tokenizer = build_tokenizer(size.tokenizer_vocab_size, layout=size.tokenizer_layout, family=family)
    if family == "qwen":
        processor, config = build_processor(arch, tokenizer), build_config(arch, tokenizer, size)
    else:
        processor, config = build_family_processor(arch, tokenizer), build_family_config(arch, tokenizer, size)
    # Seed a private generator state only: building a model must not change the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    spec = _FAMILY_TOKENS[family]
    end_of_turn, pad = tokenizer.convert_tokens_to_ids([END_OF_TURN[family], spec["pad"]])
    eos = [end_of_turn] + [tokenizer.convert_tokens_to_ids(spec["eos"])] * (spec["eos"] != END_OF_TURN[family])
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids(spec.get("bos") or "<|endoftext|>"),
        eos_token_id=[*eos, pad] if family == "qwen" else eos,
        pad_token_id=pad,
        do_sample=False,
    )
    model.eval()
    if output_dir is not None:
        model.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
        with open(os.path.join(output_dir, "tiny_model.json"), "w") as f:
            json.dump({"arch": arch, "preset": preset, "seed": seed, **asdict(size)}, f, indent=2)
    return model, processor


@command("alphadrive-tiny-model")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="alphadrive-tiny-model",
        description="Build a tiny random Qwen-VL model + processor offline and save it with save_pretrained. "
        "Reload with AutoModelForImageTextToText.from_pretrained(DIR) and AutoProcessor.from_pretrained(DIR).",
    )
    parser.add_argument("--arch", choices=ALL_ARCHITECTURES, default="qwen2_5_vl", help="Model family to build.")
    parser.add_argument("--output-dir", required=True, help="Directory to write the model and processor to.")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="tiny",
        help="`tiny`: hidden 64, 2 layers (tests). `tiny_split`: `tiny` with tags and action words in several "
        "tokens, like the real Qwen tokenizer. `demo`: hidden 128, 4 layers (learns the CPU demo task).",
    )
    parser.add_argument("--seed", type=int, default=0, help="Weight initialisation seed (default 0).")
    args = parser.parse_args(argv)
    model, _ = build_tiny_model(args.arch, args.output_dir, seed=args.seed, preset=args.preset)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"Wrote {type(model).__name__} ({n_params / 1e6:.2f} M parameters, preset {args.preset}) to {args.output_dir}"
    )


if __name__ == "__main__":
    main()


# ---------------------------------------------------------------------------------------------------------------------
# Offline stand-ins for the real checkpoints' processors (visual-token arithmetic without downloading anything)
# ---------------------------------------------------------------------------------------------------------------------

# The image settings of the Hub checkpoints the real recipes train, copied from their `preprocessor_config.json` /
# `processor_config.json`. With the family's tiny tokenizer (token counts do not depend on the vocabulary) they make
# the real processor classes compute exactly the visual tokens the real checkpoints see.
_SIGLIP_HALF = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3}
REFERENCE_PROCESSORS: dict[str, dict] = {
    "Qwen/Qwen2-VL-2B-Instruct": {"arch": "qwen2_vl"},
    "HuggingFaceTB/SmolVLM2-2.2B-Instruct": {
        "arch": "smolvlm",
        "image_processor": {
            "size": {"longest_edge": 4 * 384},
            "max_image_size": {"longest_edge": 384},
            "do_image_splitting": True,
            **_SIGLIP_HALF,
        },
        "processor": {"image_seq_len": 81},  # 384 px / 14 px patches = 27², pixel shuffle 3 -> 81
    },
    "google/gemma-3-4b-it": {
        "arch": "gemma3",
        "image_processor": {"size": {"height": 896, "width": 896}, **_SIGLIP_HALF},
        "processor": {"image_seq_length": 256},
    },
    "OpenGVLab/InternVL3-2B-hf": {
        "arch": "internvl",
        "image_processor": {
            "size": {"height": 448, "width": 448},
            "crop_to_patches": False,  # as saved; InternVLProcessor crops anyway (`images_kwargs` class default)
            "min_patches": 1,
            "max_patches": 12,
            "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225],
        },
        "processor": {"image_seq_length": 256},  # 448 px / 14 px = 32², downsample 0.5 -> 256
    },
    "llava-hf/llava-onevision-qwen2-0.5b-ov-hf": {
        "arch": "llava_onevision",
        "image_processor": {
            "size": {"height": 384, "width": 384},
            "image_grid_pinpoints": [[384 * h, 384 * w] for h in range(1, 7) for w in range(1, 7)],
            **_SIGLIP_HALF,
        },
        "processor": {
            "num_image_tokens": 729,  # 384 px / 14 px patches = 27²
            "vision_feature_select_strategy": "full",
            "vision_aspect_ratio": "anyres_max_9",
        },
    },
}


def build_reference_processor(model_id: str):
    """The processor of the Hub checkpoint `model_id` (one of `REFERENCE_PROCESSORS`), built offline: the real
    processor class with the checkpoint's image settings and the family's tiny tokenizer. For visual-token counts
    (`alphadrive_trl.image_budget.image_tokens_per_image`), not for text."""
    spec = REFERENCE_PROCESSORS[model_id]
    arch = spec["arch"]
    tokenizer = build_tokenizer(256, family=_family(arch))
    if _family(arch) == "qwen":
        processor = build_processor(arch, tokenizer)
        # The Hub default budget of Qwen2-VL-2B-Instruct: 3,136 to 12,845,056 pixels, 14 px patches merged 2x2.
        processor.image_processor.size = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384}
        return processor
    processor = build_family_processor(arch, tokenizer)
    for name, value in spec["image_processor"].items():
        setattr(processor.image_processor, name, value)
    for name, value in spec["processor"].items():
        setattr(processor, name, value)
    if arch == "gemma3":  # the full image sequence is precomputed from the sequence length at construction
        return Gemma3Processor(
            processor.image_processor, tokenizer, chat_template=gemma3_chat_template, **spec["processor"]
        )
    return processor
