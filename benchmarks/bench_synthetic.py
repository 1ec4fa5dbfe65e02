"""Synthetic scene generation throughput: render + label + trajectory + PNG + Arrow + save_to_disk, one process.

`scenes_per_s` is measured end to end through `build_dataset` (the CLI's code path, dataset card included) with one
worker, so it is the per-core rate; `scenes_per_cpu_s` divides by the CPU time of this process instead of the wall
time, which is what one core delivers even when other jobs share the machine. The target is >= 1,000 scenes/s per
core for the default configuration (front camera, 160x96, easy). Also reported: the hard preset with a history frame
and both side cameras (4 images per scene).

    python benchmarks/bench_synthetic.py [--num-samples 4000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

# `data_prep` is not installed: it is imported from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if TYPE_CHECKING:
    from data_prep.synthetic import GeneratorConfig


def _measure(config: GeneratorConfig) -> tuple[float, float]:
    from data_prep.synthetic import build_dataset, generate_sample

    with tempfile.TemporaryDirectory() as tmp:
        for index in range(20):  # warm-up: imports, font, first allocations
            generate_sample(config, index)
        wall, cpu = time.perf_counter(), time.process_time()
        build_dataset(config, Path(tmp) / "ds", num_workers=1, progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return config.num_samples / wall, config.num_samples / cpu


def run(num_samples: int = 4000) -> dict:
    from data_prep.synthetic import GeneratorConfig

    default = GeneratorConfig(num_samples=num_samples, seed=0)
    multi = GeneratorConfig(
        num_samples=max(500, num_samples // 4),
        seed=0,
        difficulty="hard",
        num_history_frames=1,
        cameras=("front", "front_left", "front_right"),
    )
    per_s, per_cpu_s = _measure(default)
    multi_per_s, multi_per_cpu_s = _measure(multi)
    return {
        "name": "synthetic",
        "scenes_per_s": round(per_s, 1),
        "scenes_per_cpu_s": round(per_cpu_s, 1),
        "multi_camera_hard_scenes_per_s": round(multi_per_s, 1),
        "multi_camera_hard_scenes_per_cpu_s": round(multi_per_cpu_s, 1),
        "num_samples": num_samples,
        "note": f"1 worker, 160x96 front, easy, end to end to disk; target >= 1000/s per core "
        f"(4 images, hard: {multi_per_s:.0f}/s)",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-samples", type=int, default=4000)
    print(json.dumps(run(parser.parse_args().num_samples), indent=2))
