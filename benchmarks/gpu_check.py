"""The GPU check, in one command: the demo pipeline on a GPU, and the real GRPO recipe at Qwen2-VL-2B's size.

    python benchmarks/gpu_check.py --output-dir outputs/gpu-check        # `make gpu-check`

Nothing is downloaded: both parts use random models built offline (`alphadrive_trl.tiny_models`).

1. `grpo_2b`: `recipes/Qwen2-VL-2B-Instruct/grpo/config_alphadrive.yaml`, parsed as `make grpo` parses it, on a
   random model of Qwen2-VL-2B-Instruct's exact shape (preset `qwen2_vl_2b_shape`, 2.21 B parameters) and synthetic
   scenes rendered at 896x448 = 401,408 pixels, the recipe's `max_pixels` (512 visual tokens a scene). Only the batch
   is changed, to one GPU's share of a group: 8 completions of one prompt. `DrivingGRPOTrainer` and vanilla
   `trl.GRPOTrainer` train alternately with the same arguments, model, data and rewards; each side reports the median
   wall seconds per step (CUDA synchronised; the first step of each run is not timed), completions per second and
   the peak GPU memory. Random weights never emit the end-of-turn token, so every completion runs to the recipe's
   256-token limit: the slowest case.
2. `smoke`: the tiny demo on the GPU in bf16 with short budgets (synthetic data, SFT, GRPO, evaluation through
   the same CLIs as `make demo`), with wall times. It shows that the CUDA path runs end to end; the accuracy of so
   short a run means nothing.

Writes `gpu_check.json` and `gpu_check.md` to `--output-dir` after each part, so a part that fails or runs out of
time keeps what came before. Without a GPU it runs on the CPU only with `--allow-cpu` (tests use it with tiny sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# `data_prep` is not installed: it is imported from the repository root.
sys.path.insert(0, str(REPO))

GRPO_2B_RECIPE = REPO / "recipes/Qwen2-VL-2B-Instruct/grpo/config_alphadrive.yaml"
SFT_DEMO_RECIPE = REPO / "recipes/tiny-qwen2.5-vl/sft/config_demo.yaml"
GRPO_DEMO_RECIPE = REPO / "recipes/tiny-qwen2.5-vl/grpo/config_demo.yaml"


def _device_summary() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"device": "cpu", "torch": torch.__version__}
    props = torch.cuda.get_device_properties(0)
    return {
        "device": props.name,
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


def _build_data(output_dir: Path, num_samples: int, image_size: str) -> None:
    from data_prep.synthetic.cli import main as build

    if not (output_dir / "dataset_dict.json").exists():
        build(["--output-dir", str(output_dir), "--num-samples", str(num_samples), "--image-size", image_size])


def _step_timer():
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall seconds of each optimizer step, the GPU's queued work included."""

        def __init__(self):
            self.times, self._start = [], None

        def _sync(self):
            if torch.cuda.is_available():
                torch.cuda.synchronize()

        def on_step_begin(self, args, state, control, **kwargs):
            self._sync()
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self._sync()
            self.times.append(time.perf_counter() - self._start)

    return StepTimer()


def _grpo_side(trainer_class, argv: list[str]) -> dict:
    """One GRPO run of the 2B recipe through `alphadrive_trl.grpo.train_grpo`, with `trainer_class` as the trainer."""
    import torch

    from alphadrive_trl.entrypoint import parse_recipe
    from alphadrive_trl.grpo import make_parser, train_grpo

    script_args, training_args, model_args = parse_recipe(make_parser(), argv)
    timer = _step_timer()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer = train_grpo(script_args, training_args, model_args, callbacks=[timer], trainer_class=trainer_class)
    completions = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    lengths = [e["completions/mean_length"] for e in trainer.state.log_history if "completions/mean_length" in e]
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {
        "step_s": timer.times[1:],  # the first step pays one-off costs (kernels, allocator, caches)
        "completions_per_step": completions,
        "mean_completion_tokens": statistics.mean(lengths) if lengths else None,
        "peak_gpu_gib": round(peak, 1) if peak is not None else None,
    }


def run_grpo_2b(
    work: Path,
    steps: int,
    repeats: int,
    preset: str,
    image_size: str,
    num_generations: int,
    max_completion: int,
    extra_args: Sequence[str] = (),
):
    import torch
    from trl import GRPOTrainer

    from alphadrive_trl.grpo import DrivingGRPOTrainer
    from alphadrive_trl.tiny_models import build_tiny_model

    model_dir, data_dir = work / f"model-{preset}", work / f"data-{image_size}"
    start = time.perf_counter()
    if not (model_dir / "config.json").exists():
        model, processor = build_tiny_model("qwen2_vl", None, seed=0, preset=preset)
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        model.to(dtype).save_pretrained(model_dir)  # half the bytes to write and read back
        processor.save_pretrained(model_dir)
        n_params = sum(p.numel() for p in model.parameters())
        del model
    else:
        n_params = None
    _build_data(data_dir, 200, image_size)
    build_s = time.perf_counter() - start

    on_gpu = torch.cuda.is_available()
    argv = [
        "--config",
        str(GRPO_2B_RECIPE),
        "--model_name_or_path",
        str(model_dir),
        "--dataset_name",
        str(data_dir),
        "--num_generations",
        str(num_generations),
        "--per_device_train_batch_size",
        str(num_generations),
        "--gradient_accumulation_steps",
        "1",
        "--max_completion_length",
        str(max_completion),
        "--max_steps",
        str(steps),
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        "--bf16",
        str(on_gpu).lower(),
        "--use_cpu",
        str(not on_gpu).lower(),
        *extra_args,  # e.g. --gradient_checkpointing false: both sides, after the recipe's own values
    ]
    # Alternate (baseline, ours, baseline, ours, ...) so that warm-up effects and drift hit both sides alike.
    sides = {"trl.GRPOTrainer": [], "DrivingGRPOTrainer": []}
    for repeat in range(repeats):
        for name, trainer_class in (("trl.GRPOTrainer", GRPOTrainer), ("DrivingGRPOTrainer", DrivingGRPOTrainer)):
            sides[name].append(_grpo_side(trainer_class, [*argv, "--output_dir", str(work / f"grpo-{name}-{repeat}")]))
    ours, base = (
        {
            "step_s": [t for run in runs for t in run["step_s"]],
            "completions_per_step": runs[0]["completions_per_step"],
            "mean_completion_tokens": statistics.mean(run["mean_completion_tokens"] or 0 for run in runs),
            "peak_gpu_gib": max((run["peak_gpu_gib"] or 0) for run in runs) or None,
        }
        for runs in (sides["DrivingGRPOTrainer"], sides["trl.GRPOTrainer"])
    )
    ours_s, base_s = statistics.median(ours["step_s"]), statistics.median(base["step_s"])
    return {
        "name": "grpo_2b",
        "recipe": str(GRPO_2B_RECIPE.relative_to(REPO)),
        "model": f"random {preset} ({n_params:,} parameters)" if n_params else f"random {preset}",
        "images": f"{image_size}, one front camera",
        "batch": f"{num_generations} completions of one prompt, max {max_completion} tokens",
        "ours_s": round(ours_s, 3),
        "baseline_s": round(base_s, 3),
        "ratio": round(ours_s / base_s, 3),
        "ours_completions_per_s": round(ours["completions_per_step"] / ours_s, 2),
        "baseline_completions_per_s": round(base["completions_per_step"] / base_s, 2),
        "mean_completion_tokens": ours["mean_completion_tokens"],
        "ours_peak_gpu_gib": ours["peak_gpu_gib"],
        "baseline_peak_gpu_gib": base["peak_gpu_gib"],
        "timed_steps_per_side": len(ours["step_s"]),
        "ours_step_s": [round(t, 3) for t in ours["step_s"]],
        "baseline_step_s": [round(t, 3) for t in base["step_s"]],
        "build_s": round(build_s, 1),
        "extra_args": " ".join(extra_args),
    }


def _timed(command: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(command)}\n")
        f.flush()
        done = subprocess.run(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{command[2]} failed (exit {done.returncode}); see {log}")
    return round(time.perf_counter() - start, 1)


def run_smoke(work: Path, sft_steps: int, grpo_steps: int, eval_samples: int) -> dict:
    import torch

    from alphadrive_trl.tiny_models import build_tiny_model

    on_gpu = torch.cuda.is_available()
    device_flags = ["--use_cpu", str(not on_gpu).lower(), "--bf16", str(on_gpu).lower(), "--report_to", "none"]
    data, model = work / "demo-data", work / "tiny-init"
    sft, grpo, evaluation, log = work / "demo-sft", work / "demo-grpo", work / "demo-eval", work / "smoke.log"
    times = {}
    start = time.perf_counter()
    _build_data(data, 5000, "160x96")  # the demo's data: 800 SFT scenes, 3,200 GRPO scenes
    if not (model / "config.json").exists():
        build_tiny_model("qwen2_5_vl", str(model), seed=0, preset="demo")
    times["data_and_model_s"] = round(time.perf_counter() - start, 1)
    py = [sys.executable, "-m"]
    times["sft_s"] = _timed(
        [
            *py,
            "alphadrive_trl.sft",
            "--config",
            str(SFT_DEMO_RECIPE),
            "--dataset_name",
            str(data),
            "--model_name_or_path",
            str(model),
            "--output_dir",
            str(sft),
            *device_flags,
            # one process takes both CPU ranks' batch, as the demo's step does
            "--per_device_train_batch_size",
            "16",
            *(["--max_steps", str(sft_steps)] if sft_steps else []),
        ],
        log,
    )
    times["grpo_s"] = _timed(
        [
            *py,
            "alphadrive_trl.grpo",
            "--config",
            str(GRPO_DEMO_RECIPE),
            "--dataset_name",
            str(data),
            "--model_name_or_path",
            str(sft),
            "--output_dir",
            str(grpo),
            "--max_steps",
            str(grpo_steps),
            "--per_device_train_batch_size",
            "16",
            *device_flags,
        ],
        log,
    )
    predictions = evaluation / "predictions.jsonl"
    times["eval_s"] = _timed(
        [
            *py,
            "alphadrive_trl.evaluation",
            "generate",
            "--model",
            str(grpo),
            "--dataset",
            str(data),
            "--split",
            "test",
            "--max-samples",
            str(eval_samples),
            "--num-samples",
            "4",
            "--batch-size",
            "64",
            "--max-new-tokens",
            "128",
            "--output",
            str(predictions),
        ],
        log,
    )
    _timed(
        [
            *py,
            "alphadrive_trl.evaluation",
            "score",
            "--predictions",
            str(predictions),
            "--output-dir",
            str(evaluation),
        ],
        log,
    )
    metrics = json.loads((evaluation / "metrics.json").read_text())
    state = json.loads((grpo / "trainer_state.json").read_text()) if (grpo / "trainer_state.json").exists() else {}
    step_times = [e["step_time"] for e in state.get("log_history", []) if "step_time" in e]
    return {
        "name": "smoke",
        "steps": f"SFT {sft_steps or 'recipe'} from the random init (no base model), GRPO {grpo_steps} "
        f"(16 completions a step), eval {eval_samples} test scenes",
        **times,
        "grpo_median_step_s": round(statistics.median(step_times), 3) if step_times else None,
        "planning_accuracy": metrics["planning_accuracy"],
        "parse_rate": metrics["parse_rate"],
    }


def render(device: dict, results: list[dict]) -> str:
    lines = ["# GPU check", "", "Device: " + ", ".join(f"{k} {v}" for k, v in device.items()), ""]
    for result in results:
        lines.append(f"## {result['name']}")
        lines.append("")
        lines.extend(f"- {key}: {value}" for key, value in result.items() if key != "name")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default=str(REPO / "outputs/gpu-check"))
    parser.add_argument("--parts", default="grpo_2b,smoke", help="Comma-separated: grpo_2b, smoke.")
    parser.add_argument("--steps", type=int, default=4, help="GRPO steps per side of grpo_2b (the first is untimed).")
    parser.add_argument("--repeats", type=int, default=2, help="Alternating runs per side of grpo_2b.")
    parser.add_argument("--preset", default="qwen2_vl_2b_shape", help="Model shape of grpo_2b (tests: tiny).")
    parser.add_argument("--image-size", default="896x448", help="Scene images of grpo_2b, WIDTHxHEIGHT.")
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-completion-length", type=int, default=256)
    parser.add_argument("--smoke-sft-steps", type=int, default=0, help="0: the SFT recipe as written (250 steps).")
    parser.add_argument("--smoke-grpo-steps", type=int, default=100)
    parser.add_argument("--smoke-eval-samples", type=int, default=200)
    parser.add_argument("--allow-cpu", action="store_true", help="Run without a GPU (tests, with tiny sizes).")
    parser.add_argument(
        "--grpo-args",
        default="",
        help='More recipe overrides for both sides of grpo_2b, e.g. "--gradient_checkpointing false" (shared-prompt '
        "scoring then applies to the policy too).",
    )
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("No CUDA device: the GPU check needs one (or --allow-cpu with tiny sizes).", file=sys.stderr)
        return 2
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device, results, failed = _device_summary(), [], 0
    for part in [p.strip() for p in args.parts.split(",") if p.strip()]:
        print(f"== {part} ==", flush=True)
        start = time.perf_counter()
        try:
            if part == "grpo_2b":
                result = run_grpo_2b(
                    out,
                    args.steps,
                    args.repeats,
                    args.preset,
                    args.image_size,
                    args.num_generations,
                    args.max_completion_length,
                    shlex.split(args.grpo_args),
                )
            elif part == "smoke":
                result = run_smoke(out, args.smoke_sft_steps, args.smoke_grpo_steps, args.smoke_eval_samples)
            else:
                raise ValueError(f"Unknown part {part!r}; choose grpo_2b or smoke.")
        except Exception as error:  # noqa: BLE001 - one failed part must not hide the other
            traceback.print_exc()
            failed += 1
            result = {"name": part, "error": f"{type(error).__name__}: {error}"}
        result["wall_s"] = round(time.perf_counter() - start, 1)
        results.append(result)
        (out / "gpu_check.json").write_text(json.dumps({"device": device, "results": results}, indent=2))
        (out / "gpu_check.md").write_text(render(device, results))
        print(json.dumps(result, indent=2), flush=True)
    print(render(device, results))
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
