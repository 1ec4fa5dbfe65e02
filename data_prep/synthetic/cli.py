"""`python -m data_prep.synthetic`: build the synthetic dataset (see the package docstring for examples)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from alphadrive_trl.entrypoint import command

from .build import GeneratorConfig, build_dataset, contact_sheet, generate_rows
from .sampling import DIFFICULTIES

logger = logging.getLogger(__name__)


@command("data_prep.synthetic")
def main(argv: list[str] | None = None) -> int:
    from data_prep.common import atomic_write_bytes, parse_image_size, parse_split_fractions

    parser = argparse.ArgumentParser(
        prog="python -m data_prep.synthetic",
        description="Generate procedural driving scenes with rule-based meta-action labels (the embedded default "
        "dataset). Writes a datasets DatasetDict (train/validation/test) plus a dataset card listing the rules and "
        "the class histogram.",
    )
    parser.add_argument("--output-dir", required=True, help="Destination directory (written atomically).")
    parser.add_argument("--num-samples", type=int, default=1200, help="Total rows over all splits (default 1200).")
    parser.add_argument("--seed", type=int, default=0, help="Same seed -> byte-identical dataset (default 0).")
    parser.add_argument("--num-history-frames", type=int, default=0,
                        help="Extra front frames 0.5 s apart before the current one (roles front_t-1, ...).")  # fmt: skip
    parser.add_argument("--cameras", default="front",
                        help="Comma-separated cameras, front first: front,front_left,front_right (default front).")  # fmt: skip
    parser.add_argument("--image-size", default="160x96", help="WIDTHxHEIGHT of every image (default 160x96).")
    parser.add_argument("--difficulty", default="easy", choices=DIFFICULTIES,
                        help="easy: clear-cut scenes; hard: speed-limit signs, yellow dilemmas, values near the "
                        "rule thresholds, more distractors and hidden slow leads (default easy).")  # fmt: skip
    parser.add_argument(
        "--splits", default="0.8,0.1,0.1", help="train,validation,test fractions (default 0.8,0.1,0.1)."
    )
    parser.add_argument("--captions", action="store_true",
                        help="Add a `caption` column (the scene's facts, no decision) for perception pre-training "
                        "(`prompt_template: describe`, `make base-model`).")  # fmt: skip
    parser.add_argument("--num-workers", type=int, default=1, help="Processes (the output does not depend on it).")
    parser.add_argument("--chunk-size", type=int, default=5000, help="Rows per resumable chunk (default 5000).")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing output directory.")
    parser.add_argument("--preview", default=None, help="Also write a contact sheet PNG of the first rows here.")
    parser.add_argument("--preview-count", type=int, default=24, help="Samples on the contact sheet (default 24).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = GeneratorConfig(
            num_samples=args.num_samples,
            seed=args.seed,
            num_history_frames=args.num_history_frames,
            cameras=tuple(c.strip() for c in args.cameras.split(",") if c.strip()),
            image_size=parse_image_size(args.image_size),
            difficulty=args.difficulty,
            captions=args.captions,
        )
        splits = parse_split_fractions(args.splits)
        if args.num_workers < 1 or args.chunk_size < 1:
            raise ValueError("--num-workers and --chunk-size must be >= 1")
        dataset = build_dataset(
            config, args.output_dir, num_workers=args.num_workers, splits=splits, chunk_size=args.chunk_size,
            overwrite=args.overwrite,
        )  # fmt: skip
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    sizes = ", ".join(f"{name} {len(part)}" for name, part in dataset.items())
    logger.info("Wrote %s (%s); dataset card: %s", args.output_dir, sizes, Path(args.output_dir) / "README.md")
    if args.preview:
        rows = generate_rows(config, range(min(args.preview_count, config.num_samples)))
        import io

        buffer = io.BytesIO()
        contact_sheet(rows).save(buffer, format="PNG")
        atomic_write_bytes(args.preview, buffer.getvalue())
        logger.info("Preview: %s", args.preview)
    return 0
