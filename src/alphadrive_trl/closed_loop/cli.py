"""`alphadrive-drive` (`python -m alphadrive_trl.closed_loop`): run one policy, or `compare` several on the same
seeded episodes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..entrypoint import command
from ..files import atomic_write_json
from .policies import BASELINE_POLICIES, load_policy
from .report import comparison_table, evaluate_policy
from .scenarios import SCENARIOS, parse_scenarios, require_highway_env


def _frame_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"frame size must look like WIDTHxHEIGHT (e.g. 160x80), got {text!r}"
        ) from None
    if width < 16 or height < 16:
        raise argparse.ArgumentTypeError(f"frame size must be at least 16x16, got {text!r}")
    return width, height


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env",
        default="all",
        help=f"scenario(s), comma-separated: {', '.join(SCENARIOS)}, or all (default: all)",
    )
    parser.add_argument("--episodes", type=int, default=3, help="episodes per scenario (default 3)")
    parser.add_argument(
        "--seed", type=int, default=0, help="episode k uses seed SEED+k: same seeds, same traffic for every policy"
    )
    parser.add_argument("--output-dir", required=True, help="where metrics.json and the episode GIFs go")
    parser.add_argument(
        "--max-decisions", type=int, default=None, help="cap decisions per episode (default: the scenario duration)"
    )
    parser.add_argument(
        "--frame-size", type=_frame_size, default=None, help="rendered frame WIDTHxHEIGHT (default per scenario)"
    )
    parser.add_argument("--no-gif", action="store_true", help="do not write episode GIFs")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="generation length for checkpoints")
    parser.add_argument(
        "--history-frames",
        type=int,
        default=None,
        help="earlier frames given to a checkpoint (default: its saved max_images - 1, else 0)",
    )
    parser.add_argument(
        "--labeller",
        default="heading",
        choices=("senna", "heading"),
        help="labeller mode deriving the plan from a trajectory checkpoint's waypoints (default heading)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alphadrive-drive",
        description="Closed-loop driving in highway-env (optional `sim` extra). Run one policy: "
        "`alphadrive-drive --model expert|keep|random|CHECKPOINT_DIR --env highway --episodes 5 --seed 0 "
        "--output-dir DIR` (writes DIR/metrics.json and a GIF per scenario). Compare several on the same seeded "
        "episodes: `alphadrive-drive compare --models expert keep random CHECKPOINT_DIR --output-dir DIR` "
        "(prints one markdown table, writes DIR/comparison.md and DIR/<policy>/metrics.json).",
    )
    parser.add_argument(
        "--model", required=True, help="expert, keep, random or a checkpoint directory (NAME=DIR names it)"
    )
    _add_common_arguments(parser)
    return parser


def build_compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alphadrive-drive compare",
        description="Drive several policies on identical seeded episodes and print one markdown table. A missing "
        "checkpoint directory is reported in its row; the other policies still run.",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        required=True,
        help="policies: expert, keep, random and/or checkpoint directories; NAME=DIR shows a checkpoint as NAME",
    )
    _add_common_arguments(parser)
    return parser


def _vlm_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "max_new_tokens": args.max_new_tokens,
        "history_frames": args.history_frames,
        "labeller_mode": args.labeller,
    }


def _run_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    if args.episodes < 1:
        raise SystemExit("error: --episodes must be >= 1")
    try:
        scenarios = parse_scenarios(args.env)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    return {
        "scenarios": scenarios,
        "episodes": args.episodes,
        "seed": args.seed,
        "max_decisions": args.max_decisions,
        "frame_size": args.frame_size,
        "gif": not args.no_gif,
    }


def split_policy_name(spec: str) -> tuple[str | None, str]:
    """`NAME=CHECKPOINT_DIR` -> `(NAME, CHECKPOINT_DIR)`; a spec without a name -> `(None, spec)`.

    Example:
        >>> split_policy_name("grpo=outputs/sim-demo/grpo"), split_policy_name("outputs/demo-grpo")
        (('grpo', 'outputs/sim-demo/grpo'), (None, 'outputs/demo-grpo'))
    """
    name, separator, path = spec.partition("=")
    if separator and name and os.sep not in name:
        return name, path
    return None, spec


def _policy_dir_name(spec: str) -> str:
    name, path = split_policy_name(spec)
    if name:
        return name
    return os.path.basename(os.path.normpath(path)) if path not in BASELINE_POLICIES else path


@command("alphadrive-drive")
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        require_highway_env()
    except ImportError as error:
        raise SystemExit(f"error: {error}") from None
    if argv and argv[0] == "compare":
        args = build_compare_parser().parse_args(argv[1:])
        kwargs = _run_kwargs(args)
        runs: list[tuple[str, dict[str, Any] | str]] = []
        used_names: set[str] = set()
        for spec in args.models:
            name = _policy_dir_name(spec)
            while name in used_names:
                name += "_"
            used_names.add(name)
            try:
                policy = load_policy(split_policy_name(spec)[1], **_vlm_options(args))
            except (FileNotFoundError, OSError, ValueError) as error:
                print(f"warning: skipping {spec}: {error}", file=sys.stderr)
                runs.append((name, f"not run: {error}"))
                continue
            policy.name = name
            metrics = evaluate_policy(policy, output_dir=os.path.join(args.output_dir, name), **kwargs)
            runs.append((name, metrics))
        table = comparison_table(runs)
        seeds = f"seeds {args.seed}..{args.seed + args.episodes - 1} per scenario"
        report = f"Closed-loop comparison ({seeds}).\n\n{table}\n"
        os.makedirs(args.output_dir, exist_ok=True)
        atomic_write_json(
            os.path.join(args.output_dir, "comparison.json"),
            {name: (m if isinstance(m, str) else {"overall": m["overall"], "scenarios": m["scenarios"]})
             for name, m in runs},
        )  # fmt: skip
        with open(os.path.join(args.output_dir, "comparison.md"), "w") as handle:
            handle.write(report)
        print(report)
        return 0
    if argv and argv[0] == "run":
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    kwargs = _run_kwargs(args)
    name, spec = split_policy_name(args.model)
    try:
        policy = load_policy(spec, **_vlm_options(args))
    except (FileNotFoundError, OSError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    policy.name = name or policy.name
    metrics = evaluate_policy(policy, output_dir=args.output_dir, **kwargs)
    print(comparison_table([(policy.name, metrics)]))
    print(f"metrics: {os.path.join(args.output_dir, 'metrics.json')}")
    return 0
