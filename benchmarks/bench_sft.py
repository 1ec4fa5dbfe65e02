"""Step time of `DrivingSFTTrainer` + `MultiImageCollator` vs vanilla `trl.SFTTrainer` (TRL's VLM collator).

Both trainers get the same tiny Qwen2.5-VL, the same synthetic driving rows (front camera + 1 history frame, prompt-completion
form from `alphadrive_trl.prompts`), the same seed and arguments, so they see the same batches; the differences are
ours: the collator's checks (images vs placeholders, vision tokens masked, the no-trainable-token guard) and the
trainer's hooks (generation metrics are off here: `eval_generation_steps` is an explicit, separate cost). Runs
alternate (baseline, ours, baseline, ours, ...) so machine load drifts hit both sides alike; a step's time is the
wall time between consecutive step ends (data loading and collation included). Step i sees the same batch on both
sides and in every repeat, so each side's figure is the mean over steps of the step's fastest repeat (other
processes' load only adds time); the first step of each run (warm-up) is not timed. `median_ratio` (plain medians)
is reported too.

    python benchmarks/bench_sft.py [--steps 8] [--repeats 3] [--threads 1]

`run()` returns `{"name", "ours_s", "baseline_s", "ratio", "median_ratio", "note"}` with `ratio` = ours / baseline
step time (goal <= 1.05).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from datasets import Dataset
from transformers import TrainerCallback

# `data_prep` is not installed: it is imported from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class StepTimer(TrainerCallback):
    """Wall time between consecutive optimizer-step ends."""

    def __init__(self):
        self.times: list[float] = []
        self._last: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._last = now


def _prepare(root: Path, num_samples: int) -> tuple[str, Dataset]:
    from alphadrive_trl.data import load_driving_dataset
    from alphadrive_trl.prompts import to_sft_example
    from alphadrive_trl.tiny_models import build_tiny_model
    from data_prep.synthetic import GeneratorConfig, build_dataset

    model_dir = str(root / "model")
    build_tiny_model("qwen2_5_vl", model_dir, seed=0)
    build_dataset(
        GeneratorConfig(num_samples=num_samples, seed=0, num_history_frames=1), root / "data", progress=False
    )
    train = load_driving_dataset(str(root / "data"), split="train")
    keep = ("images",)
    return model_dir, train.map(
        to_sft_example, remove_columns=[c for c in train.column_names if c not in keep], desc="Building SFT rows"
    )


def _train(trainer_class, model_dir: str, dataset: Dataset, output_dir: Path, steps: int) -> list[float]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from alphadrive_trl.configs import DrivingSFTConfig

    args = DrivingSFTConfig(
        output_dir=str(output_dir),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        learning_rate=1e-3,
        per_device_train_batch_size=8,
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    timer = StepTimer()
    trainer = trainer_class(
        AutoModelForImageTextToText.from_pretrained(model_dir),
        args=args,
        train_dataset=dataset,
        processing_class=AutoProcessor.from_pretrained(model_dir),
        callbacks=[timer],
    )
    trainer.train()
    return timer.times[1:]  # the first step pays one-off costs (allocations, caches)


def run(steps: int = 8, repeats: int = 3, num_samples: int = 200, threads: int | None = 1) -> dict:
    import torch
    from trl import SFTTrainer

    from alphadrive_trl.sft import DrivingSFTTrainer

    previous_threads = torch.get_num_threads()
    if threads:
        # A tiny model gains nothing from intra-op threads, and on a loaded machine their spin-waits swamp the
        # differences being measured; both sides run with the same setting.
        torch.set_num_threads(threads)
    try:
        ours, baseline = _alternate(SFTTrainer, DrivingSFTTrainer, steps, repeats, num_samples)
    finally:
        torch.set_num_threads(previous_threads)
    # Step i sees the same batch on both sides and in every repeat. Load from other processes only ever adds time,
    # so each step's fastest repeat is its cleanest measurement; the sums compare the same batches on both sides.
    ours_s = statistics.fmean(min(times) for times in zip(*ours))
    baseline_s = statistics.fmean(min(times) for times in zip(*baseline))
    return {
        "name": "sft",
        "ours_s": round(ours_s, 4),
        "baseline_s": round(baseline_s, 4),
        "ratio": round(ours_s / baseline_s, 3),
        "median_ratio": round(statistics.median(sum(ours, [])) / statistics.median(sum(baseline, [])), 3),
        "note": f"mean over {steps - 1} steps of each step's fastest of {repeats} alternating runs "
        f"(batch 8, 2 images per row, tiny Qwen2.5-VL, {threads or previous_threads} thread(s))",
    }


def _alternate(baseline_class, ours_class, steps: int, repeats: int, num_samples: int):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir, dataset = _prepare(root, num_samples)
        ours, baseline = [], []
        for repeat in range(repeats):
            baseline.append(_train(baseline_class, model_dir, dataset, root / f"baseline{repeat}", steps))
            ours.append(_train(ours_class, model_dir, dataset, root / f"ours{repeat}", steps))
    return ours, baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="Training steps per run (the first is not timed).")
    parser.add_argument("--repeats", type=int, default=3, help="Alternating runs per side.")
    parser.add_argument("--num-samples", type=int, default=200, help="Synthetic scenes generated for the rows.")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both sides (0: keep).")
    args = parser.parse_args()
    result = run(args.steps, args.repeats, args.num_samples, args.threads or None)
    print(
        f"DrivingSFTTrainer {result['ours_s']:.4f} s/step vs trl.SFTTrainer {result['baseline_s']:.4f} s/step: "
        f"ratio {result['ratio']:.3f} (goal <= 1.05; {result['note']})"
    )


if __name__ == "__main__":
    main()
