"""GRPO throughput of the demo recipe as `make demo` runs it (2 CPU ranks) against one process, in the same run.

Both sides run `recipes/tiny-qwen2.5-vl/grpo/config_demo.yaml` from the same offline tiny Qwen2.5-VL (demo preset)
on the same synthetic scenes with the same seed, for the same optimizer steps of 2 scenes x 8 samples:

- ours: `torchrun --standalone --nproc_per_node 2` (DDP over gloo, 8 completions per rank: what the Makefile runs);
- baseline: one process, `--gradient_accumulation_steps 2` (`make demo CPU_PROCESSES=1`: the same step).

Each side's time is TRL's `train_runtime` divided by the steps (start-up and saving excluded); completions/s counts
16 per step. The random model writes longer completions than a trained one, so absolute times are higher than the
demo's 0.4 s a step; the ratio is what this measures. Needs 2 free cores.

    python benchmarks/bench_demo_ranks.py [--steps 30]

`run()` returns `{"name", "ours_s", "baseline_s", "ratio", "note", ...}` with `ratio` = 2 ranks / 1 process seconds
per step (< 1: the 2 ranks are faster).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# `data_prep` is not installed: it is imported from the repository root.
sys.path.insert(0, str(ROOT))

RECIPE = "recipes/tiny-qwen2.5-vl/grpo/config_demo.yaml"
COMPLETIONS_PER_STEP = 16


def _train_seconds_per_step(launcher: list[str], extra: list[str], model: str, data: str, out: Path, steps: int):
    cmd = [*launcher, "-m", "alphadrive_trl.grpo", "--config", RECIPE, "--model_name_or_path", model,
           "--dataset_name", data, "--output_dir", str(out), "--max_steps", str(steps), "--save_strategy", "no",
           "--logging_steps", str(steps), "--disable_tqdm", "true", *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    metrics = json.loads((out / "train_results.json").read_text())
    return metrics["train_runtime"] / steps


def run(steps: int = 30) -> dict:
    from alphadrive_trl.tiny_models import build_tiny_model
    from data_prep.synthetic import GeneratorConfig, build_dataset

    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, data = str(root / "model"), str(root / "data")
        build_tiny_model("qwen2_5_vl", model, seed=0, preset="demo")
        build_dataset(GeneratorConfig(num_samples=400, seed=0), root / "data", progress=False)
        one = _train_seconds_per_step(
            [sys.executable], ["--gradient_accumulation_steps", "2"], model, data, root / "one", steps
        )
        two = _train_seconds_per_step(
            [str(bin_dir / "torchrun"), "--standalone", "--nproc_per_node", "2"], [], model, data, root / "two", steps
        )
    return {
        "name": "demo_ranks",
        "ours_s": round(two, 4),
        "baseline_s": round(one, 4),
        "ratio": round(two / one, 4),
        "completions_per_s_ours": round(COMPLETIONS_PER_STEP / two, 1),
        "completions_per_s_baseline": round(COMPLETIONS_PER_STEP / one, 1),
        "note": (
            f"s/step of the demo GRPO recipe, {steps} steps of 2 scenes x 8 samples: 2 torchrun ranks "
            f"({COMPLETIONS_PER_STEP / two:.1f} completions/s) vs 1 process with 2 accumulated batches "
            f"({COMPLETIONS_PER_STEP / one:.1f}/s); random tiny model"
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.steps), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
