"""Shared-prompt scoring against TRL's full pass: one GRPO batch's log-probs, forward and backward.

A GRPO step scores its completions three times: reference log-probs, policy log-probs, and the policy's backward.
TRL runs each (prompt + completion) row in full, so a prompt's images and text are computed once per completion;
`alphadrive_trl.shared_prompt.shared_prompt_logps` runs each distinct prompt once and repeats its key/value cache.
This benchmark times both on the same batch (synthetic driving prompts, `--prompts` x `--num-generations` rows of
`--completion-length` random completion tokens), alternating sides, and checks that they agree.

    python benchmarks/bench_shared_prompt.py                    # tiny Qwen2.5-VL on the CPU (`make bench`)
    python benchmarks/bench_shared_prompt.py --preset qwen2_vl_2b_shape --arch qwen2_vl --image-size 896x448 \\
        --completion-length 256 --device cuda --dtype bfloat16   # the paper's model shape on a GPU

Each side's time is the median over `--repeats` of one no-grad forward (the reference pass) plus one forward and
backward (the policy pass). `run()` returns `{"name", "ours_s", "baseline_s", "ratio", "max_logp_gap", ...}`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

# `data_prep` is not installed: it is imported from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _batch(processor, prompts: int, generations: int, completion_length: int, image_size: str, device):
    """TRL's layout: left-padded prompts repeated per completion, then right-padded completions (lengths varied)."""
    import io

    import torch
    from PIL import Image

    from alphadrive_trl.prompts import build_prompt
    from data_prep.synthetic import GeneratorConfig, generate_rows

    width, height = (int(side) for side in image_size.split("x"))
    rows = generate_rows(GeneratorConfig(num_samples=prompts, seed=0, image_size=(width, height)), range(prompts))
    texts = [processor.apply_chat_template(build_prompt(row), add_generation_prompt=True) for row in rows]
    images = [[Image.open(io.BytesIO(image["bytes"])).convert("RGB") for image in row["images"]] for row in rows]
    encoded = processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt")
    repeat = torch.arange(prompts).repeat_interleave(generations)
    generator = torch.Generator().manual_seed(0)
    vocab = len(processor.tokenizer)
    completion_ids = torch.randint(10, min(vocab, 200), (len(repeat), completion_length), generator=generator)
    lengths = torch.randint(completion_length // 2, completion_length + 1, (len(repeat),), generator=generator)
    completion_mask = (torch.arange(completion_length)[None] < lengths[:, None]).long()
    patches_per_image = encoded["image_grid_thw"].prod(dim=-1)  # one image per synthetic front-camera prompt
    image_rows = torch.split(encoded["pixel_values"], patches_per_image.tolist())
    batch = {
        "input_ids": torch.cat([encoded["input_ids"][repeat], completion_ids], dim=1),
        "attention_mask": torch.cat([encoded["attention_mask"][repeat], completion_mask], dim=1),
        "pixel_values": torch.cat([image_rows[i] for i in repeat.tolist()]),
        "image_grid_thw": encoded["image_grid_thw"][repeat],
        "mm_token_type_ids": torch.cat(
            [encoded["mm_token_type_ids"][repeat], torch.zeros_like(completion_ids, dtype=torch.int)], dim=1
        ),
    }
    batch = {key: value.to(device) for key, value in batch.items()}
    batch["num_images"] = [1] * len(repeat)
    return batch, completion_mask.to(device), encoded["input_ids"].size(1)


def _trl_pass(model, batch, completion_length: int):
    """TRL's `_get_per_token_logps_and_entropies` for one chunk: every row in full through the fused LM head."""
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels[:, :-completion_length] = -100
    inputs = {key: value for key, value in batch.items() if key != "num_images"}
    return model(**inputs, labels=labels, fused_lm_head=True).log_probs[:, -completion_length:]


def _rows(batch: dict, row: int) -> dict:
    """One row of the batch (its images included), as TRL's chunking would pass it."""
    patches = batch["image_grid_thw"].prod(dim=-1)
    start = int(patches[:row].sum())
    chunk = {key: batch[key][row : row + 1] for key in ("input_ids", "attention_mask", "image_grid_thw")}
    chunk["mm_token_type_ids"] = batch["mm_token_type_ids"][row : row + 1]
    chunk["pixel_values"] = batch["pixel_values"][start : start + int(patches[row])]
    return chunk


def run(
    arch: str = "qwen2_5_vl",
    preset: str = "tiny",
    image_size: str = "160x96",
    prompts: int = 2,
    num_generations: int = 8,
    completion_length: int = 16,
    repeats: int = 5,
    device: str = "cpu",
    dtype: str = "float32",
    threads: int | None = 1,
    max_pixels: int | None = None,
) -> dict:
    import torch
    from trl.trainer.utils import add_fused_lm_head

    from alphadrive_trl.image_budget import apply_image_budget
    from alphadrive_trl.shared_prompt import shared_prompt_logps
    from alphadrive_trl.tiny_models import build_tiny_model

    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    torch_dtype = getattr(torch, dtype)
    model, processor = build_tiny_model(arch, None, seed=0, preset=preset)
    apply_image_budget(processor, max_pixels=max_pixels)  # the paper's 401,408 pixels: 512 tokens an image
    model = model.to(device=device, dtype=torch_dtype)
    batch, completion_mask, prompt_tokens = _batch(
        processor, prompts, num_generations, completion_length, image_size, device
    )
    add_fused_lm_head(model, outputs=("log_probs",))
    model.train()
    valid = completion_mask.bool()

    def synchronize():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def step(score) -> tuple[float, torch.Tensor]:
        synchronize()
        start = time.perf_counter()
        with torch.no_grad():  # the reference model's pass
            reference = score()
        logps = score()  # the policy's pass, then its backward
        (logps * completion_mask).sum().backward()
        model.zero_grad(set_to_none=True)
        synchronize()
        return time.perf_counter() - start, reference

    sides = {
        "trl": lambda: _trl_pass(model, batch, completion_length),
        "shared": lambda: shared_prompt_logps(model, logits_to_keep=completion_length, **batch)[0],
    }
    times = {name: [] for name in sides}
    peak = {}
    outputs = {}
    for repeat in range(repeats + 1):  # the first round warms up kernels and the allocator
        for name, score in sides.items():
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            seconds, outputs[name] = step(score)
            if repeat:
                times[name].append(seconds)
            if device.startswith("cuda"):
                peak[name] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    gaps = (outputs["trl"] - outputs["shared"]).abs()[valid].float()
    gap, mean_gap = gaps.max().item(), gaps.mean().item()
    # The rounding floor: TRL's own pass on the same rows, one row at a time instead of the whole batch. In bf16 a
    # matrix product's result depends on its shape, so two correct passes differ by about this much.
    with torch.no_grad():
        one_by_one = torch.cat([_trl_pass(model, _rows(batch, row), completion_length) for row in range(len(valid))])
    floors = (outputs["trl"] - one_by_one).abs()[valid].float()
    floor, mean_floor = floors.max().item(), floors.mean().item()
    ours, baseline = statistics.median(times["shared"]), statistics.median(times["trl"])
    torch.set_num_threads(previous_threads)  # `make bench` runs every benchmark in one process
    return {
        "name": "shared_prompt",
        "ours_s": round(ours, 4),
        "baseline_s": round(baseline, 4),
        "ratio": round(ours / baseline, 3),
        "max_logp_gap": gap,
        "mean_logp_gap": mean_gap,
        "trl_rounding_floor": floor,
        "trl_mean_rounding_floor": mean_floor,
        "peak_gib": peak or None,
        "note": f"reference + policy forward/backward of {prompts} prompts x {num_generations} completions "
        f"({prompt_tokens}-token prompts, {completion_length}-token completions), {arch} preset {preset}, {dtype} on "
        f"{device}; median of {repeats}; log-prob gap max {gap:.1e}, mean {mean_gap:.1e} (TRL's pass one row at a "
        f"time against the whole batch: max {floor:.1e}, mean {mean_floor:.1e})",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="qwen2_5_vl")
    parser.add_argument("--preset", default="tiny", help="tiny_models preset, e.g. qwen2_vl_2b_shape.")
    parser.add_argument("--image-size", default="160x96", help="Synthetic front camera, WIDTHxHEIGHT.")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--completion-length", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=1, help="Torch intra-op threads (0 keeps torch's default).")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="Qwen-VL pixel budget per image (401408: 512 tokens); default: the tiny processor's.",
    )
    args = parser.parse_args()
    result = run(
        args.arch,
        args.preset,
        args.image_size,
        args.prompts,
        args.num_generations,
        args.completion_length,
        args.repeats,
        args.device,
        args.dtype,
        args.threads,
        args.max_pixels,
    )
    print(
        f"shared-prompt scoring {result['ours_s']:.4f} s vs TRL's full pass {result['baseline_s']:.4f} s: ratio "
        f"{result['ratio']:.3f}, peak GiB {result['peak_gib']}; {result['note']}"
    )


if __name__ == "__main__":
    main()
