"""Run every benchmark in one process and print one table of ratios measured in the same run.

Each `benchmarks/bench_*.py` exposes `run() -> dict` with at least `name` and either `ratio` (ours vs a baseline
measured in the same run) or a throughput figure. `make bench` runs this file; `--only rewards,sft` selects some.
Results are also written to `benchmarks/results/bench.json` (and `.md`) so the README can quote a real run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
# `data_prep` is not installed: the benchmarks import it from the repository root.
sys.path.insert(0, str(HERE.parent))


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_table(host: str, results: list[dict]) -> str:
    # One convention for every row: time ratio ours/baseline (< 1 is faster) and its inverse, the speed-up.
    header = "| benchmark | ours (s) | baseline (s) | time ratio ours/baseline | speed-up | note | wall s |"
    lines = [f"Host: {host}", "", header, "|---|---|---|---|---|---|---|"]
    for r in results:
        ours, base = r.get("ours_s"), r.get("baseline_s")
        timed = isinstance(ours, (int, float)) and isinstance(base, (int, float)) and ours > 0 and base > 0
        ratio = ours / base if timed else ""
        speedup = base / ours if timed else ""
        note = r.get("note", r.get("error", ""))
        if "scenes_per_s" in r:
            note = f"{r['scenes_per_s']:.0f} scenes/s; {note}"
        lines.append(
            f"| {r['name']} | {_format_value(ours if ours is not None else '')} | "
            f"{_format_value(base if base is not None else '')} | {_format_value(ratio)} | {_format_value(speedup)} "
            f"| {note} | {r['wall_s']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=None, help="Comma-separated benchmark names (file stems without bench_).")
    parser.add_argument("--output-dir", default=str(HERE / "results"), help="Where bench.json/bench.md go.")
    args = parser.parse_args(argv)

    files = sorted(HERE.glob("bench_*.py"))
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        files = [f for f in files if f.stem.removeprefix("bench_") in wanted]
    if not files:
        print("No benchmark selected.", file=sys.stderr)
        return 2

    results, failed = [], 0
    for path in files:
        print(f"== {path.stem} ==", flush=True)
        start = time.perf_counter()
        try:
            result = _load(path).run()
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
            traceback.print_exc()
            failed += 1
            result = {"name": path.stem.removeprefix("bench_"), "error": "failed (see traceback above)"}
        result["wall_s"] = round(time.perf_counter() - start, 1)
        results.append(result)

    host = (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    table = render_table(host, results)
    print("\n" + table)

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps({"host": host, "results": results}, indent=2) + "\n")
    (out / "bench.md").write_text(table + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
