"""Step time of `DrivingGRPOTrainer` vs vanilla `trl.GRPOTrainer`, and of our trainer without shared-prompt scoring.

All sides get the same tiny Qwen2.5-VL, the same synthetic driving prompts, the same AlphaDrive rewards
(`speed_planning`, `path_planning`, `format`), the same seed and arguments, so they sample the same completions. Ours
differs by its `_calculate_rewards` hook (per-completion answer statistics, one gather, group metrics) and by
shared-prompt scoring (`alphadrive_trl.shared_prompt`, on by default); the third side, ours with
`shared_prompt_scoring=False`, isolates the metrics' cost (goal <= 1.05 against TRL).
Runs alternate (baseline, ours, baseline, ours, ...) so that machine load drifts hit both sides alike. A step is
timed in CPU seconds of this process (`time.process_time`, all threads: generation, rewards, loss, optimizer), which
other jobs on a shared machine do not inflate the way they inflate wall time; each side's time is the median over
every step except the first of each run (warm-up). TRL's wall-clock `step_time` medians are reported too. Torch runs
single-threaded by default here: with several intra-op threads on a busy machine, OpenMP spin-waiting dominates and
step times swing by 10x from run to run, hiding a few-percent difference.

    python benchmarks/bench_grpo.py [--steps 6] [--repeats 3] [--threads 1]

`run()` returns `{"name", "ours_s", "baseline_s", "ratio", "note", "ours_wall_s", "baseline_wall_s",
"metrics_only_ratio"}` with `ratio` = ours / baseline median CPU seconds per step and `metrics_only_ratio` the same
for ours without shared-prompt scoring.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from datasets import Dataset

# `data_prep` is not installed: it is imported from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REWARD_NAMES = ["speed_planning", "path_planning", "format"]


def _prepare(root: Path, num_samples: int) -> tuple[str, Dataset]:
    from alphadrive_trl.data import load_driving_dataset
    from alphadrive_trl.prompts import to_grpo_example
    from alphadrive_trl.tiny_models import build_tiny_model
    from data_prep.synthetic import GeneratorConfig, build_dataset

    model_dir = str(root / "model")
    build_tiny_model("qwen2_5_vl", model_dir, seed=0)
    build_dataset(GeneratorConfig(num_samples=num_samples, seed=0), root / "data", progress=False)
    train = load_driving_dataset(str(root / "data"), split="train")
    return model_dir, train.map(to_grpo_example, desc="Building GRPO prompts")


def _step_clock():
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        """CPU seconds of each optimizer step (generation and scoring included)."""

        def __init__(self):
            self.times, self._start = [], None

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.process_time() - self._start)

    return StepClock()


def _train(
    trainer_class, model_dir: str, dataset: Dataset, output_dir: Path, steps: int, **options
) -> tuple[list, list]:
    from transformers import PrinterCallback

    from alphadrive_trl.configs import DrivingGRPOConfig
    from alphadrive_trl.rewards import get_reward_funcs

    args = DrivingGRPOConfig(
        output_dir=str(output_dir),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        learning_rate=1e-5,
        beta=0.04,
        loss_type="grpo",
        num_generations=4,
        per_device_train_batch_size=8,
        max_completion_length=16,
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
        **options,
    )
    clock = _step_clock()
    trainer = trainer_class(
        model_dir, reward_funcs=get_reward_funcs(REWARD_NAMES), args=args, train_dataset=dataset, callbacks=[clock]
    )
    trainer.remove_callback(PrinterCallback)  # keep the benchmark output to its result line
    trainer.train()
    wall = [entry["step_time"] for entry in trainer.state.log_history if "step_time" in entry]
    return clock.times[1:], wall[1:]  # the first step pays one-off costs (allocations, caches)


def run(steps: int = 6, repeats: int = 3, num_samples: int = 200, threads: int | None = 1) -> dict:
    import torch
    from trl import GRPOTrainer

    from alphadrive_trl.grpo import DrivingGRPOTrainer

    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir, dataset = _prepare(root, num_samples)
        ours, baseline, metrics_only, ours_wall, baseline_wall = [], [], [], [], []
        for repeat in range(repeats):
            cpu, wall = _train(GRPOTrainer, model_dir, dataset, root / f"baseline{repeat}", steps)
            baseline, baseline_wall = baseline + cpu, baseline_wall + wall
            cpu, wall = _train(DrivingGRPOTrainer, model_dir, dataset, root / f"ours{repeat}", steps)
            ours, ours_wall = ours + cpu, ours_wall + wall
            cpu, _ = _train(
                DrivingGRPOTrainer, model_dir, dataset, root / f"full{repeat}", steps, shared_prompt_scoring=False
            )
            metrics_only += cpu
    torch.set_num_threads(previous_threads)
    ours_s, baseline_s = statistics.median(ours), statistics.median(baseline)
    return {
        "name": "grpo",
        "ours_s": round(ours_s, 4),
        "baseline_s": round(baseline_s, 4),
        "ratio": round(ours_s / baseline_s, 3),
        "ours_wall_s": round(statistics.median(ours_wall), 4),
        "baseline_wall_s": round(statistics.median(baseline_wall), 4),
        "metrics_only_ratio": round(statistics.median(metrics_only) / baseline_s, 3),
        "note": f"median CPU s/step, {len(ours)} steps a side, {threads or previous_threads} thread(s), 8 completions "
        f"x 16 tokens, tiny Qwen2.5-VL; without shared-prompt scoring (metrics only): ratio "
        f"{statistics.median(metrics_only) / baseline_s:.3f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="Training steps per run (the first is not timed).")
    parser.add_argument("--repeats", type=int, default=3, help="Alternating runs per side.")
    parser.add_argument("--num-samples", type=int, default=200, help="Synthetic scenes generated for the prompts.")
    parser.add_argument("--threads", type=int, default=1, help="Torch intra-op threads (0 keeps torch's default).")
    args = parser.parse_args()
    result = run(args.steps, args.repeats, args.num_samples, args.threads)
    print(
        f"DrivingGRPOTrainer {result['ours_s']:.4f} CPU s/step vs trl.GRPOTrainer {result['baseline_s']:.4f}: "
        f"ratio {result['ratio']:.3f} ({result['note']}); wall s/step {result['ours_wall_s']:.4f} vs "
        f"{result['baseline_wall_s']:.4f}"
    )


if __name__ == "__main__":
    main()
