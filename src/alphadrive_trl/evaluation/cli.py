"""`alphadrive-eval` (`python -m alphadrive_trl.evaluation`): the `generate`, `score`, `compare` and `curves`
subcommands."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..entrypoint import command
from ..files import atomic_write_text
from .curves import plot_training_curves
from .generate import generate_predictions
from .report import HEADLINE_METRICS, REPORT_FILE, _fmt, compare_runs, score_predictions


def _print_headline(metrics: dict[str, Any]) -> None:
    for key, unit in HEADLINE_METRICS:
        if metrics.get(key) is not None:
            print(f"  {key:<28} {_fmt(metrics[key], unit)}{'' if unit in ('%', 'count') else ' ' + unit}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alphadrive-eval",
        description="Evaluate driving VLMs: `generate` answers, `score` them into metrics + report, `compare` runs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser(
        "generate",
        help="Run a checkpoint on a dataset split and write predictions (JSONL, resumable).",
        description="Run a checkpoint on a dataset split with the prompt template and image budget saved next to "
        "the checkpoint, and append one JSON line per sample to --output. Re-running skips sample_ids already there.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    gen.add_argument("--model", required=True, help="Checkpoint directory (or Hub id in the local cache).")
    gen.add_argument("--dataset", required=True, help="Dataset: save_to_disk dir, parquet/JSONL file(s) or Hub name.")
    gen.add_argument("--split", default="test", help="Dataset split to evaluate.")
    gen.add_argument("--output", required=True, help="Predictions JSONL file (appended to when it exists).")
    gen.add_argument(
        "--num-samples",
        type=int,
        default=1,
        help="K. With K > 1 each line also holds K answers sampled at --temperature (multimodal-planning metrics).",
    )
    gen.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature of the K samples.")
    gen.add_argument("--top-p", type=float, default=1.0, help="Nucleus sampling threshold of the K samples.")
    gen.add_argument("--top-k", type=int, default=0, help="Top-k of the K samples (0: off).")
    gen.add_argument(
        "--no-greedy",
        dest="greedy",
        action="store_false",
        help="Skip the greedy answer; `completion` is then the first sample.",
    )
    gen.add_argument("--batch-size", type=int, default=8, help="Prompts per generate call.")
    gen.add_argument("--max-new-tokens", type=int, default=256, help="Generation length limit.")
    gen.add_argument("--max-samples", type=int, default=None, help="Evaluate only the first M samples of the split.")
    gen.add_argument("--prompt-template", default=None, help="Override the template saved with the checkpoint.")
    gen.add_argument("--max-images", type=int, default=None, help="Override the saved images-per-sample limit.")
    gen.add_argument("--min-pixels", type=int, default=None, help="Override the saved per-image min_pixels.")
    gen.add_argument("--max-pixels", type=int, default=None, help="Override the saved per-image max_pixels.")
    gen.add_argument(
        "--max-image-tokens", type=int, default=None, help="Override the saved visual tokens per image (any family)."
    )
    gen.add_argument("--use-vllm", action="store_true", help="Generate with vLLM (must be installed; GPU).")
    gen.add_argument("--seed", type=int, default=0, help="Random seed of the sampling.")

    score = sub.add_parser(
        "score",
        help="Compute metrics.json, report.md and plots from a predictions file.",
        description="Score a predictions file: metrics.json (percentages 0-100), report.md, scored.jsonl and PNG "
        "plots in --output-dir.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    score.add_argument("--predictions", required=True, help="Predictions JSONL written by `generate`.")
    score.add_argument("--output-dir", required=True, help="Where to write the metrics, report and plots.")
    score.add_argument(
        "--dataset",
        default=None,
        help="Dataset holding the front images for the trajectory overlay (default: the one in the .meta.json).",
    )
    score.add_argument("--split", default=None, help="Split of --dataset (default: the one in the .meta.json).")
    score.add_argument(
        "--labeller-mode",
        default="senna",
        choices=("senna", "heading"),
        help="Labeller that derives meta-actions from predicted trajectories (use the one that labelled the data).",
    )
    score.add_argument("--num-overlays", type=int, default=4, help="Samples in the trajectory overlay plot.")

    compare = sub.add_parser(
        "compare",
        help="Side-by-side markdown table of the headline metrics of several scored runs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    compare.add_argument("runs", nargs="+", help="Directories written by `score` (or their metrics.json).")
    compare.add_argument("--names", nargs="+", default=None, help="Column names, one per run.")
    compare.add_argument("--output", default=None, help="Also write the table to this markdown file.")

    curves = sub.add_parser(
        "curves",
        help="Plot the training curves of SFT/GRPO runs (from their trainer_state.json) into one PNG.",
        description="One panel per logged metric: SFT loss and in-training greedy accuracy; GRPO mean reward, "
        "planning accuracy of the sampled answers, KL to the reference. Runs are output_dirs (or a checkpoint-N).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    curves.add_argument("runs", nargs="+", help="Training output_dirs (or their trainer_state.json).")
    curves.add_argument("--names", nargs="+", default=None, help="Legend names, one per run.")
    curves.add_argument("--output", default="training_curves.png", help="The PNG to write.")
    return parser


@command("alphadrive-eval")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "generate":
            path = generate_predictions(
                args.model,
                args.dataset,
                args.output,
                split=args.split,
                num_samples=args.num_samples,
                temperature=args.temperature,
                top_p=args.top_p,
                top_k=args.top_k,
                greedy=args.greedy,
                batch_size=args.batch_size,
                max_new_tokens=args.max_new_tokens,
                max_samples=args.max_samples,
                prompt_template=args.prompt_template,
                max_images=args.max_images,
                min_pixels=args.min_pixels,
                max_pixels=args.max_pixels,
                max_image_tokens=args.max_image_tokens,
                use_vllm=args.use_vllm,
                seed=args.seed,
            )
            print(f"Predictions: {path}")
        elif args.command == "score":
            metrics = score_predictions(
                args.predictions,
                args.output_dir,
                dataset=args.dataset,
                split=args.split,
                labeller_mode=args.labeller_mode,
                num_overlays=args.num_overlays,
            )
            print(f"Report: {Path(args.output_dir) / REPORT_FILE}")
            _print_headline(metrics)
        elif args.command == "curves":
            panels = plot_training_curves(args.runs, args.output, args.names)
            print(f"Training curves ({', '.join(panels)}): {args.output}")
        else:
            table = compare_runs(args.runs, args.names)
            print(table, end="")
            if args.output:
                atomic_write_text(Path(args.output), table)
    except (ValueError, FileNotFoundError, ImportError) as err:
        parser.exit(2, f"alphadrive-eval {args.command}: error: {err}\n")
    return 0
