"""Reproduce AlphaDrive's central claim at small scale, on CPU.

Claim (AlphaDrive, Tab. 1-3): SFT warm-up on part of the data followed by GRPO with the AlphaDrive rewards plans
better than SFT alone, and RL widens the set of feasible plans the model proposes.

Like the paper, which starts from a pretrained Qwen2-VL, every setting starts from a **perception-pretrained base
model** (`make base-model`: the tiny model trained to describe scenes of their own seed, no plan labels; built once and
shared by all seeds). `--from-scratch` starts from the random model instead, as the first two studies did. Each seed
builds its own data (`--data-seed-offset`, so a result is checked on several datasets) and trains and samples with
its own seed. Settings (answer-only targets and completions, `prompt_template: answer_only`, unless named
`_reasoning`):

- `sft20`        SFT warm-up on 20 % of train (`--stage sft`, `--sft20-epochs`): the demo's SFT recipe.
- `sft20_grpo`   GRPO from `sft20` on the disjoint 80 % (`--stage grpo`, `--grpo-steps`): the paper's plain GRPO with the
  demo's settings (`grpo/config_demo.yaml`; `make demo` adds expert guidance to it: `--with-expert`).
- `sft_all`      SFT on the whole train split with the same number of sample passes as `sft20` (a fifth of the
  epochs): what the same SFT budget gives without RL.
- `sft_all_long` SFT on the whole train split for about the wall time of `sft20` + GRPO (`--sft-long-epochs`): the
  compute-matched baseline.
- `sft20_reasoning`, `sft20_reasoning_grpo`: the same two stages with `<think>` reasoning targets and completions
  (`prompt_template: default`, the four-reward set with format, 128 new tokens): the paper's reasoning claim.
- optional (`--with-grpo-only`, `--with-ablation`, first seed): GRPO from the base model alone; the reward ablation.
- optional (`--with-safety`, every seed): `sft20_grpo_safety`, the plain GRPO with a stronger `safety` penalty
  (`grpo/config_demo_safety.yaml`), from the same warm-up.
- optional (`--long-grpo-steps N`, every seed): `sft20_grpo_long`, the plain GRPO from the same warm-up for N steps
  instead of `--grpo-steps` (more RL; session 12 chose 2,400 on validation); with `--long-grpo-safety` also
  `sft20_grpo_safety_long`, the same with `grpo/config_demo_safety.yaml` (the `safety` penalty at 3).
- optional (`--with-coverage`, every seed): `sft20_grpo_coverage`, the plain GRPO with a stronger KL anchor
  (`grpo/config_demo_coverage.yaml`, beta 0.3), from the same warm-up: it keeps the K-sample coverage (session 13).
- optional (`--with-expert`, every seed): `sft20_grpo_expert`, the demo's default GRPO: one expert completion in each
  group (`grpo/config_demo_expert.yaml`, `expert_samples_per_group: 1`), from the same warm-up (session 14).
- optional (`--with-sft-continue`, every seed): `sft20_sft`, the warm-up continued by SFT on the GRPO split, on as many
  scenes as GRPO draws (`--grpo-steps` x 2 scenes), with the SFT recipe's learning rate (chosen on validation, session
  15): what the GRPO scenes' labels give without RL, the control for GRPO and most of all for expert guidance. With
  it, `sft20_sft_grpo_expert` (the demo's GRPO from `sft20_sft`, same split) and its control `sft20_sft2` (SFT for
  two such passes: the same labelled passes).
- optional (`--navigation-overrides N`, every seed): `sft20_nav`, the warm-up with the rows whose path departs from
  the navigation command shown N times (`repeat_navigation_overrides`: cones on a `go straight` route, a blocked
  lane), and `sft20_nav_grpo`, the plain GRPO from it.

Independent trainings run `--jobs` at a time (default 2, one core each), scheduled as a task graph.

Each setting is evaluated greedily and with K samples (temperature 1) on `--eval-samples` test scenes: planning
accuracy, per-class F1, the safety-critical error rate, distinct plans per scene and feasible coverage. Everything is
driven through the same commands a user runs (printed and saved to `commands.sh`), so any number in the table can be
re-run by hand. Steps whose outputs exist are skipped, so an interrupted study resumes.

    python benchmarks/reproduce.py                 # the full study (see README for its wall time)
    python benchmarks/reproduce.py --quick         # a few-minute smoke run of the same code path
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SFT_RECIPE = "recipes/tiny-qwen2.5-vl/sft/config_demo.yaml"
GRPO_RECIPE = "recipes/tiny-qwen2.5-vl/grpo/config_demo.yaml"
REASONING_SFT_RECIPE = "recipes/tiny-qwen2.5-vl/sft/config_demo_reasoning.yaml"
REASONING_GRPO_RECIPE = "recipes/tiny-qwen2.5-vl/grpo/config_demo_reasoning.yaml"
SAFETY_GRPO_RECIPE = "recipes/tiny-qwen2.5-vl/grpo/config_demo_safety.yaml"
COVERAGE_GRPO_RECIPE = "recipes/tiny-qwen2.5-vl/grpo/config_demo_coverage.yaml"
EXPERT_GRPO_RECIPE = "recipes/tiny-qwen2.5-vl/grpo/config_demo_expert.yaml"
BASE_RECIPE = "recipes/tiny-qwen2.5-vl/pretrain/config_perception.yaml"


def _recipe_value(recipe: str, key: str):
    with open(ROOT / recipe) as f:
        return yaml.safe_load(f)[key]


# The demo recipes' batch sizes are per CPU rank (`make` launches DEMO_RANKS torchrun ranks). The study runs each job
# in one process, two jobs side by side, so a job takes all ranks' batch at once: the same optimizer step.
DEMO_RANKS = 2


def _one_process_batch(recipe: str) -> list[str]:
    return ["--per_device_train_batch_size", str(DEMO_RANKS * _recipe_value(recipe, "per_device_train_batch_size"))]


# The study's defaults are the demo's: read from its recipes, so the two never drift apart.
DEMO_SFT_EPOCHS = _recipe_value(SFT_RECIPE, "num_train_epochs")
DEMO_GRPO_STEPS = _recipe_value(GRPO_RECIPE, "max_steps")
# A GRPO step draws `num_generations` completions for each of its scenes; `sft20_sft` sees as many scenes by SFT.
GRPO_SCENES_PER_STEP = (
    DEMO_RANKS
    * _recipe_value(GRPO_RECIPE, "per_device_train_batch_size")
    // _recipe_value(GRPO_RECIPE, "num_generations")
)
SFT_SCENES_PER_STEP = DEMO_RANKS * _recipe_value(SFT_RECIPE, "per_device_train_batch_size")

# The paper's reward ablation, as overrides of the GRPO recipe (the full set is the recipe itself).
UNIFORM_SPEED = '{"KEEP": 1.0, "ACCELERATE": 1.0, "DECELERATE": 1.0, "STOP": 1.0}'
UNIFORM_PATH = '{"STRAIGHT": 1.0, "RIGHT_CHANGE": 1.0, "LEFT_CHANGE": 1.0, "RIGHT_TURN": 1.0, "LEFT_TURN": 1.0}'
ABLATIONS = {
    "ablation_acc": [
        "--reward_funcs", "speed_planning", "path_planning", "--reward_weights", "1.0", "1.0",
        "--diversity_mode", "none", "--speed_action_weights", UNIFORM_SPEED, "--path_action_weights", UNIFORM_PATH,
    ],
    "ablation_acc_weight": [
        "--reward_funcs", "speed_planning", "path_planning", "--reward_weights", "1.0", "1.0",
        "--diversity_mode", "none",
    ],
    "ablation_acc_weight_div": [
        "--reward_funcs", "speed_planning", "path_planning", "--reward_weights", "1.0", "1.0",
        "--diversity_mode", "paper",
    ],
}  # fmt: skip

HEADLINE = [
    ("planning_accuracy", "planning acc"),
    ("speed_accuracy", "speed acc"),
    ("path_accuracy", "path acc"),
    ("macro_f1_speed", "macro-F1 speed"),
    ("macro_f1_path", "macro-F1 path"),
    ("safety_critical_error_rate", "safety err"),
    ("parse_rate", "parse"),
]
SAMPLED = [
    ("best_of_k_accuracy", "best-of-K"),
    ("mean_distinct_plans", "distinct plans"),
    ("feasible_rate", "feasible rate"),
    ("feasible_coverage", "feasible coverage"),
]


def run_task_graph(tasks: dict[str, tuple[list[str], Callable[[], object]]], jobs: int) -> None:
    """Run `{key: (dependencies, fn)}` on `jobs` threads, each task once all its dependencies have finished, in the
    order given otherwise. Each task runs one training or evaluation process (OMP_NUM_THREADS=1), so `jobs` is the
    number of cores used. The first failure stops the study (running tasks finish; nothing new starts)."""
    done: set[str] = set()
    running: dict[str, Future] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while len(done) < len(tasks):
            for key, (deps, fn) in tasks.items():
                if len(running) >= jobs:
                    break
                if key not in done and key not in running and all(dep in done for dep in deps):
                    running[key] = pool.submit(fn)
            if not running:
                missing = {key: deps for key, (deps, _) in tasks.items() if key not in done}
                raise RuntimeError(f"Unsatisfiable task dependencies: {missing}")
            finished, _ = wait(running.values(), return_when=FIRST_COMPLETED)
            for key in [key for key, future in running.items() if future in finished]:
                running.pop(key).result()  # re-raises the task's failure
                done.add(key)


class Study:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(args.work_dir)
        self.results = Path(args.results_dir)
        self.data = self.work / "data"
        self.commands: list[str] = []
        self.wall: dict[str, float] = {}
        self.lock = threading.Lock()  # parallel tasks share timings.json and the command list

    def say(self, message: str) -> None:
        with self.lock:  # one write per line: parallel tasks' lines never interleave
            sys.stdout.write(message + "\n")
            sys.stdout.flush()

    # -- running -------------------------------------------------------------------------------------------------
    def run(self, name: str, cmd: list[str], done_marker: Path) -> None:
        """Run a command unless its output exists; log to <work>/logs/<name>.log and record its wall time."""
        # Recorded with a plain `python` (not this venv's absolute path) so the commands file runs anywhere.
        with self.lock:
            self.commands.append(shlex.join(["python", *cmd[1:]] if cmd[0] == PY else cmd))
        if done_marker.exists():
            self.say(f"[skip] {name}: {done_marker} exists")
            return
        log_path = self.work / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.say(f"[run ] {name}: {shlex.join(cmd)}")
        start = time.perf_counter()
        env = {"OMP_NUM_THREADS": "1", **os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "PYTHONWARNINGS": "ignore"}  # fmt: skip
        with open(log_path, "w") as log:
            proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        elapsed = time.perf_counter() - start
        with self.lock:
            self.wall[name] = elapsed
            timing = self.work / "timings.json"
            saved = json.loads(timing.read_text()) if timing.exists() else {}
            saved[name] = round(elapsed, 1)
            timing.write_text(json.dumps(saved, indent=2))
        if proc.returncode != 0:
            tail = "".join(open(log_path).readlines()[-30:])
            raise SystemExit(f"{name} failed (exit {proc.returncode}); last lines of {log_path}:\n{tail}")
        self.say(f"[done] {name} in {elapsed:.0f} s")

    def timings(self) -> dict[str, float]:
        path = self.work / "timings.json"
        return json.loads(path.read_text()) if path.exists() else {}

    # -- stages --------------------------------------------------------------------------------------------------
    def data_dir(self, seed: int) -> Path:
        return self.work / f"data{self.args.data_seed_offset + seed}"

    def build_data(self, seed: int) -> Path:
        a = self.args
        out = self.data_dir(seed)
        cmd = [PY, "-m", "data_prep.synthetic", "--output-dir", str(out), "--num-samples", str(a.num_samples),
               "--seed", str(a.data_seed_offset + seed), "--difficulty", a.difficulty, "--cameras", a.cameras,
               "--image-size", a.image_size]  # fmt: skip
        if seed == a.seeds[0]:
            cmd += ["--preview", str(self.results / "reproduce_scenes.png")]
        self.run(f"data{a.data_seed_offset + seed}", cmd, out / "dataset_dict.json")
        return out

    def init_model(self, seed: int) -> Path:
        out = self.work / f"seed{seed}" / "init"
        cmd = [PY, "-m", "alphadrive_trl.tiny_models", "--arch", "qwen2_5_vl", "--preset", self.args.model_preset,
               "--seed", str(seed), "--output-dir", str(out)]  # fmt: skip
        self.run(f"seed{seed}-init", cmd, out / "config.json")
        return out

    def base_model(self) -> Path:
        """The perception-pretrained base (what `make base-model` builds), from the random model of seed 0."""
        a = self.args
        if a.base_model:
            return Path(a.base_model)
        captions, out = self.work / "captions", self.work / "base"
        cmd = [PY, "-m", "data_prep.synthetic", "--output-dir", str(captions), "--num-samples",
               str(a.caption_samples), "--seed", str(a.caption_seed), "--difficulty", a.difficulty, "--cameras",
               a.cameras, "--image-size", a.image_size, "--captions"]  # fmt: skip
        self.run("captions", cmd, captions / "dataset_dict.json")
        init = self.work / "base-init"
        cmd = [PY, "-m", "alphadrive_trl.tiny_models", "--arch", "qwen2_5_vl", "--preset", a.model_preset, "--seed", "0",
               "--output-dir", str(init)]  # fmt: skip
        self.run("base-init", cmd, init / "config.json")
        cmd = [PY, "-m", "alphadrive_trl.sft", "--config", BASE_RECIPE, "--model_name_or_path", str(init),
               "--dataset_name", str(captions), "--output_dir", str(out), "--num_train_epochs",
               str(a.base_epochs)]  # fmt: skip
        self.run("base", cmd, out / "alphadrive_config.json")
        return out

    def model_dir(self, name: str, seed: int) -> Path:
        return self.work / f"seed{seed}" / name

    def sft(self, name: str, seed: int, model: Path, extra: list[str], recipe: str = SFT_RECIPE) -> Path:
        out = self.model_dir(name, seed)
        cmd = [PY, "-m", "alphadrive_trl.sft", "--config", recipe, "--model_name_or_path", str(model),
               "--dataset_name", str(self.data_dir(seed)), "--output_dir", str(out), "--seed", str(seed),
               "--eval_generation_steps", "0", *_one_process_batch(recipe), *extra]  # fmt: skip
        self.run(f"seed{seed}-{name}", cmd, out / "alphadrive_config.json")
        return out

    def grpo(
        self, name: str, seed: int, model: Path, extra: list[str], steps: int | None = None, recipe: str = GRPO_RECIPE
    ) -> Path:
        out = self.model_dir(name, seed)
        cmd = [PY, "-m", "alphadrive_trl.grpo", "--config", recipe, "--model_name_or_path", str(model),
               "--dataset_name", str(self.data_dir(seed)), "--output_dir", str(out), "--seed", str(seed),
               "--max_steps", str(steps or self.args.grpo_steps), "--save_strategy", "no", *_one_process_batch(recipe),
               *extra]  # fmt: skip
        self.run(f"seed{seed}-{name}", cmd, out / "alphadrive_config.json")
        return out

    def evaluate(self, name: str, seed: int, model: Path) -> Path:
        a = self.args
        out = self.work / f"seed{seed}" / f"eval-{name}"
        preds = out / "predictions.jsonl"
        tokens = a.max_new_tokens_reasoning if "reasoning" in name else a.max_new_tokens
        gen = [PY, "-m", "alphadrive_trl.evaluation", "generate", "--model", str(model), "--dataset",
               str(self.data_dir(seed)), "--split", "test", "--output", str(preds), "--num-samples", str(a.k),
               "--temperature", "1.0", "--batch-size", "50", "--max-new-tokens", str(tokens), "--max-samples",
               str(a.eval_samples), "--seed", str(seed)]  # fmt: skip
        self.run(f"seed{seed}-eval-{name}-generate", gen, out / "generated.done")
        (out / "generated.done").touch()
        score = [PY, "-m", "alphadrive_trl.evaluation", "score", "--predictions", str(preds), "--output-dir", str(out)]
        self.run(f"seed{seed}-eval-{name}-score", score, out / "metrics.json")
        return out

    # -- the study -----------------------------------------------------------------------------------------------
    def execute(self) -> dict:
        """Build the task graph (train, then evaluate, every setting and seed) and run it on `--jobs` workers."""
        a = self.args
        self.results.mkdir(parents=True, exist_ok=True)
        base = None if a.from_scratch else self.base_model()
        tasks: dict[str, tuple[list[str], Callable[[], Path]]] = {}
        runs: dict[str, dict[int, Path]] = {}
        warm_up = ["--stage", "sft", "--num_train_epochs", str(a.sft20_epochs)]
        same_passes = ["--stage", "null", "--num_train_epochs", str(a.sft20_epochs * a.sft_fraction)]
        for seed in a.seeds:  # data and model inits take seconds: done up front so every chain can start at once
            self.build_data(seed)
            start = base or self.init_model(seed)
            sft20, sft20_reasoning = self.model_dir("sft20", seed), self.model_dir("sft20_reasoning", seed)
            # The reasoning chain is the longest (~1 s per GRPO step): queued first so it does not finish last.
            if not a.skip_reasoning and seed in (a.reasoning_seeds or a.seeds):
                tasks[f"{seed}/sft20_reasoning"] = ([], partial(self.sft, "sft20_reasoning", seed, start, warm_up, REASONING_SFT_RECIPE))  # fmt: skip
                tasks[f"{seed}/sft20_reasoning_grpo"] = ([f"{seed}/sft20_reasoning"], partial(self.grpo, "sft20_reasoning_grpo", seed, sft20_reasoning, ["--stage", "grpo"], a.reasoning_grpo_steps, REASONING_GRPO_RECIPE))  # fmt: skip
            tasks[f"{seed}/sft20"] = ([], partial(self.sft, "sft20", seed, start, warm_up))
            tasks[f"{seed}/sft20_grpo"] = ([f"{seed}/sft20"], partial(self.grpo, "sft20_grpo", seed, sft20, ["--stage", "grpo"]))  # fmt: skip
            tasks[f"{seed}/sft_all"] = ([], partial(self.sft, "sft_all", seed, start, same_passes))
            if a.sft_long_epochs and seed in (a.long_seeds or a.seeds):
                long = ["--stage", "null", "--num_train_epochs", str(a.sft_long_epochs)]
                tasks[f"{seed}/sft_all_long"] = ([], partial(self.sft, "sft_all_long", seed, start, long))
            if a.with_safety:  # the plain GRPO with a stronger `safety` penalty, from the same warm-up
                tasks[f"{seed}/sft20_grpo_safety"] = ([f"{seed}/sft20"], partial(self.grpo, "sft20_grpo_safety", seed, sft20, ["--stage", "grpo"], None, SAFETY_GRPO_RECIPE))  # fmt: skip
            if a.with_coverage:  # the plain GRPO with a stronger KL anchor, from the same warm-up
                tasks[f"{seed}/sft20_grpo_coverage"] = ([f"{seed}/sft20"], partial(self.grpo, "sft20_grpo_coverage", seed, sft20, ["--stage", "grpo"], None, COVERAGE_GRPO_RECIPE))  # fmt: skip
            if a.with_expert:  # the demo default: the plain GRPO with the expert's completion in every group
                tasks[f"{seed}/sft20_grpo_expert"] = ([f"{seed}/sft20"], partial(self.grpo, "sft20_grpo_expert", seed, sft20, ["--stage", "grpo"], None, EXPERT_GRPO_RECIPE))  # fmt: skip
            if a.with_sft_continue:  # the GRPO split's labels by SFT, as many scenes as GRPO draws: the no-RL control
                steps = -(-a.grpo_steps * GRPO_SCENES_PER_STEP // SFT_SCENES_PER_STEP)  # ceil
                cont = ["--stage", "grpo", "--max_steps", str(steps)]
                tasks[f"{seed}/sft20_sft"] = ([f"{seed}/sft20"], partial(self.sft, "sft20_sft", seed, sft20, cont))
                # Two passes: as many labelled scenes as `sft20_sft` and then the demo's GRPO on the same split.
                cont2 = ["--stage", "grpo", "--max_steps", str(2 * steps)]
                tasks[f"{seed}/sft20_sft2"] = ([f"{seed}/sft20"], partial(self.sft, "sft20_sft2", seed, sft20, cont2))
                sft20_sft = self.model_dir("sft20_sft", seed)
                tasks[f"{seed}/sft20_sft_grpo_expert"] = ([f"{seed}/sft20_sft"], partial(self.grpo, "sft20_sft_grpo_expert", seed, sft20_sft, ["--stage", "grpo"], None, EXPERT_GRPO_RECIPE))  # fmt: skip
            if a.long_grpo_steps:  # more RL from the same warm-up
                tasks[f"{seed}/sft20_grpo_long"] = ([f"{seed}/sft20"], partial(self.grpo, "sft20_grpo_long", seed, sft20, ["--stage", "grpo"], a.long_grpo_steps))  # fmt: skip
            if a.long_grpo_steps and a.long_grpo_safety:
                tasks[f"{seed}/sft20_grpo_safety_long"] = ([f"{seed}/sft20"], partial(self.grpo, "sft20_grpo_safety_long", seed, sft20, ["--stage", "grpo"], a.long_grpo_steps, SAFETY_GRPO_RECIPE))  # fmt: skip
            if a.navigation_overrides > 1:  # the warm-up sees the scenes where the image overrides the route N times
                nav = [*warm_up, "--repeat_navigation_overrides", str(a.navigation_overrides)]
                tasks[f"{seed}/sft20_nav"] = ([], partial(self.sft, "sft20_nav", seed, start, nav))
                tasks[f"{seed}/sft20_nav_grpo"] = ([f"{seed}/sft20_nav"], partial(self.grpo, "sft20_nav_grpo", seed, self.model_dir("sft20_nav", seed), ["--stage", "grpo"]))  # fmt: skip
            if seed == a.seeds[0] and a.with_grpo_only:  # one seed: it is the paper's weakest setting
                tasks[f"{seed}/grpo_only"] = ([], partial(self.grpo, "grpo_only", seed, start, ["--stage", "null"]))
            if seed == a.seeds[0] and a.with_ablation:
                for name, overrides in ABLATIONS.items():
                    tasks[f"{seed}/{name}"] = ([f"{seed}/sft20"], partial(self.grpo, name, seed, sft20, ["--stage", "grpo", *overrides]))  # fmt: skip
        for key in list(tasks):
            seed, name = key.split("/")
            runs.setdefault(name, {})[int(seed)] = self.model_dir(f"eval-{name}", int(seed))
            tasks[f"{key}/eval"] = ([key], partial(self.evaluate, name, int(seed), self.model_dir(name, int(seed))))
        run_task_graph(tasks, self.args.jobs)
        return runs

    # -- reporting -----------------------------------------------------------------------------------------------
    def report(self, runs: dict[str, dict[int, Path]]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        metrics = {
            name: {seed: json.loads((d / "metrics.json").read_text()) for seed, d in per_seed.items()}
            for name, per_seed in runs.items()
        }
        timings = self.timings()

        def cell(name: str, key: str) -> str:
            values = [m[key] for m in metrics[name].values() if isinstance(m.get(key), (int, float))]
            if not values:
                return "–"
            mean = statistics.fmean(values)
            if len(values) == 1:
                return f"{mean:.1f}"
            return f"{mean:.1f} ± {statistics.stdev(values):.1f}"

        def started_from(name: str) -> str | None:
            if "_grpo" in name:
                return name.split("_grpo")[0]
            return "sft20" if name.startswith(("ablation", "sft20_sft")) else None

        def train_wall(name: str) -> str:
            walls = []
            for seed in metrics[name]:
                parts, step = [], name
                while step:  # the setting's own training, plus every stage it started from
                    parts.append(f"seed{seed}-{step}")
                    step = started_from(step)
                walls.append(sum(timings.get(p, 0.0) for p in parts))
            return f"{statistics.fmean(walls):.0f}" if walls else "–"

        order = [
            n
            for n in [
                "sft20",
                "sft20_grpo",
                "sft20_grpo_long",
                "sft20_grpo_safety_long",
                "sft20_grpo_safety",
                "sft20_grpo_coverage",
                "sft20_grpo_expert",
                "sft20_sft",
                "sft20_sft2",
                "sft20_sft_grpo_expert",
                "sft20_nav",
                "sft20_nav_grpo",
                "sft_all",
                "sft_all_long",
                "sft20_reasoning",
                "sft20_reasoning_grpo",
                "grpo_only",
            ]
            if n in metrics
        ]
        order += [n for n in metrics if n.startswith("ablation")]
        header = ["setting", "seeds"] + [label for _, label in HEADLINE + SAMPLED] + ["train wall s"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name in order:
            row = [name, ",".join(str(s) for s in metrics[name])]
            row += [cell(name, key) for key, _ in HEADLINE + SAMPLED] + [train_wall(name)]
            lines.append("| " + " | ".join(row) + " |")
        table = "\n".join(lines)

        def paired(setting: str, baseline: str, key: str) -> list[float]:
            """`setting - baseline` per seed, for the seeds both have."""
            return [
                metrics[setting][s].get(key, 0.0) - metrics[baseline][s].get(key, 0.0)
                for s in metrics.get(setting, {})
                if s in metrics.get(baseline, {})
            ]

        def spread(values: list[float]) -> str:
            if not values:
                return "n/a"
            if len(values) == 1:
                return f"{values[0]:+.1f}"
            return (
                f"{statistics.fmean(values):+.1f} ± {statistics.stdev(values):.1f} (per seed: "
                + ", ".join(f"{v:+.1f}" for v in values)
                + ")"
            )

        comparisons = "\n".join(
            f"| {label} | {spread(paired(setting, baseline, 'planning_accuracy'))} | "
            f"{spread(paired(setting, baseline, 'feasible_coverage'))} | "
            f"{spread(paired(setting, baseline, 'safety_critical_error_rate'))} |"
            for label, setting, baseline in [
                ("SFT 20 % → GRPO 80 % minus its own warm-up (what GRPO adds)", "sft20_grpo", "sft20"),
                ("SFT 20 % → GRPO 80 % minus SFT-all with the same sample passes", "sft20_grpo", "sft_all"),
                ("SFT 20 % → GRPO 80 % minus SFT-all trained as long (same wall time)", "sft20_grpo", "sft_all_long"),
                ("longer GRPO: SFT 20 % → GRPO minus its own warm-up", "sft20_grpo_long", "sft20"),
                ("longer GRPO minus SFT-all with the same sample passes", "sft20_grpo_long", "sft_all"),
                ("longer GRPO minus the plain GRPO (same warm-up)", "sft20_grpo_long", "sft20_grpo"),
                ("longer GRPO, penalty 3: SFT 20 % → GRPO minus its own warm-up", "sft20_grpo_safety_long", "sft20"),
                (
                    "longer GRPO, penalty 3, minus SFT-all with the same sample passes",
                    "sft20_grpo_safety_long",
                    "sft_all",
                ),
                (
                    "longer GRPO, penalty 3, minus the plain GRPO (same warm-up)",
                    "sft20_grpo_safety_long",
                    "sft20_grpo",
                ),
                ("safety recipe (penalty 3): SFT 20 % → GRPO minus its own warm-up", "sft20_grpo_safety", "sft20"),
                ("coverage recipe (beta 0.3): SFT 20 % → GRPO minus its own warm-up", "sft20_grpo_coverage", "sft20"),
                ("coverage recipe minus the plain GRPO (beta 0.3 against 0.1)", "sft20_grpo_coverage", "sft20_grpo"),
                ("expert recipe: SFT 20 % → GRPO minus its own warm-up", "sft20_grpo_expert", "sft20"),
                ("expert recipe minus SFT-all with the same sample passes", "sft20_grpo_expert", "sft_all"),
                (
                    "expert recipe minus the plain GRPO (one expert sample per group)",
                    "sft20_grpo_expert",
                    "sft20_grpo",
                ),
                ("SFT on the GRPO split: SFT 20 % → SFT 80 % minus its own warm-up", "sft20_sft", "sft20"),
                (
                    "SFT 20 % → GRPO 80 % minus SFT 20 % → SFT 80 % (same scenes: RL against their labels)",
                    "sft20_grpo",
                    "sft20_sft",
                ),
                ("expert recipe minus SFT 20 % → SFT 80 % (same scenes)", "sft20_grpo_expert", "sft20_sft"),
                ("SFT 20 % → SFT 80 % for two passes minus its own warm-up", "sft20_sft2", "sft20"),
                (
                    "SFT 20 % → SFT 80 % → expert GRPO 80 % minus SFT 20 % → SFT 80 % (what GRPO adds after it)",
                    "sft20_sft_grpo_expert",
                    "sft20_sft",
                ),
                (
                    "SFT 20 % → SFT 80 % → expert GRPO 80 % minus two SFT passes (the same labelled passes)",
                    "sft20_sft_grpo_expert",
                    "sft20_sft2",
                ),
                (
                    "safety recipe minus the plain GRPO (penalty 3 against 2)",
                    "sft20_grpo_safety",
                    "sft20_grpo",
                ),
                (
                    "navigation overrides repeated: SFT 20 % → GRPO minus its own warm-up",
                    "sft20_nav_grpo",
                    "sft20_nav",
                ),
                (
                    "navigation overrides repeated: SFT 20 % → GRPO minus SFT-all (same data)",
                    "sft20_nav_grpo",
                    "sft_all",
                ),
                (
                    "navigation overrides repeated minus the demo chain (both after GRPO)",
                    "sft20_nav_grpo",
                    "sft20_grpo",
                ),
                ("reasoning: SFT 20 % → GRPO minus its own warm-up", "sft20_reasoning_grpo", "sft20_reasoning"),
                (
                    "SFT → GRPO with reasoning minus answer-only (the paper's reasoning claim)",
                    "sft20_reasoning_grpo",
                    "sft20_grpo",
                ),  # fmt: skip
            ]
            if setting in metrics and baseline in metrics
        )

        # Per-class F1 plot (mean over seeds).
        classes = list(next(iter(next(iter(metrics.values())).values()))["per_class_f1"])
        fig, ax = plt.subplots(figsize=(12, 4))
        width = 0.8 / max(1, len(order))
        for i, name in enumerate(order):
            vals = [statistics.fmean(m["per_class_f1"].get(c) or 0.0 for m in metrics[name].values()) for c in classes]
            ax.bar([x + i * width for x in range(len(classes))], vals, width, label=name)
        ax.set_xticks([x + width * (len(order) - 1) / 2 for x in range(len(classes))], classes, rotation=30)
        ax.set_ylabel("F1 (%)")
        ax.set_title(f"Per-class F1 on the {self.args.difficulty} synthetic test split (greedy, mean over seeds)")
        ax.legend(fontsize=7, ncols=2)
        fig.tight_layout()
        fig.savefig(self.results / "reproduce_per_class_f1.png", dpi=120)
        plt.close(fig)

        # Learning curves: SFT loss and GRPO reward per step (first seed).
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
        seed = self.args.seeds[0]
        for name in order:
            state = self.work / f"seed{seed}" / name / "trainer_state.json"
            if not state.exists():
                continue
            history = json.loads(state.read_text())["log_history"]
            if name.startswith("sft") and "_grpo" not in name:  # SFT runs: their loss
                points = [(h["step"], h["loss"]) for h in history if "loss" in h]
                ax1.plot(*zip(*points), label=name) if points else None
            else:
                # Sampled planning accuracy, not the reward: the ablations' rewards have different scales.
                points = [
                    (h["step"], 100 * h["driving/plan_accuracy"]) for h in history if "driving/plan_accuracy" in h
                ]
                ax2.plot(*zip(*points), label=name) if points else None
        ax1.set(title=f"SFT training loss (seed {seed})", xlabel="step", ylabel="loss")
        ax2.set(title=f"GRPO: planning accuracy of the sampled answers (seed {seed})", xlabel="step", ylabel="%")
        ax1.legend(fontsize=8)
        ax2.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(self.results / "reproduce_learning_curves.png", dpi=120)
        plt.close(fig)

        a = self.args
        start = "from random initialisation" if a.from_scratch else "from the perception-pretrained base model"
        long = (
            f"{a.sft_long_epochs:g} epochs on all of train (`sft_all_long`)"
            if a.sft_long_epochs
            else "no `sft_all_long`"
        )
        # The scene preview is drawn when the first seed's data is built; a study that reused built data has none.
        scenes = "; scenes: `reproduce_scenes.png`" if (self.results / "reproduce_scenes.png").exists() else ""
        long_arms = "`sft20_grpo_long`" + (" and `sft20_grpo_safety_long`" if a.long_grpo_safety else "")
        extra = f" ({a.long_grpo_steps} for {long_arms})" if a.long_grpo_steps else ""
        reasoning_seeds = ", ".join(map(str, a.reasoning_seeds or a.seeds)) if not a.skip_reasoning else "none"
        summary = f"""# Reproduction study: SFT vs SFT→GRPO, answer-only vs reasoning (small scale, CPU)

Data: synthetic `--difficulty {a.difficulty}`, cameras `{a.cameras}`, {a.num_samples} scenes per seed (80/10/10
split; seed s builds data seed {a.data_seed_offset} + s), image size {a.image_size}; evaluated on the first
{a.eval_samples} test scenes, greedy plus K = {a.k} samples at temperature 1. Model: Qwen2.5-VL architecture, preset
`{a.model_preset}` of `alphadrive_trl.tiny_models`, trained {start}. Seeds: {", ".join(map(str, a.seeds))} (data,
training and sampling). SFT: {a.sft20_epochs:g} epochs on the 20 % warm-up split, {a.sft20_epochs * a.sft_fraction:g}
epoch(s) on all of train (`sft_all`, the same sample passes), {long}; GRPO: {a.grpo_steps} steps answer-only{extra},
{a.reasoning_grpo_steps} steps with reasoning (seeds {reasoning_seeds}).
Workers: {a.jobs} (one core each; wall times are per process).
Values are percentages, mean ± standard deviation over seeds. Wall time is training only (the warm-up included for
settings that start from it), on this machine.

{table}

Paired differences (percentage points, mean ± standard deviation over seeds):

| comparison | planning accuracy (greedy) | feasible coverage (K = {a.k}) | safety-critical errors |
|---|---|---|---|
{comparisons}

Plots: `reproduce_per_class_f1.png`, `reproduce_learning_curves.png`{scenes}.
The exact commands are in `reproduce_commands.sh`.
"""
        (self.results / "reproduce.md").write_text(summary)
        (self.results / "reproduce.json").write_text(
            json.dumps({"args": vars(a), "metrics": metrics, "timings": timings}, indent=2, default=str)
        )
        (self.results / "reproduce_commands.sh").write_text(
            "#!/usr/bin/env bash\nset -e\n" + "\n".join(self.commands) + "\n"
        )
        print(summary)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--num-samples", type=int, default=5000, help="Scenes per seed (80/10/10 split).")
    p.add_argument("--data-seed-offset", type=int, default=0, help="Seed s builds data with seed offset + s.")
    p.add_argument("--difficulty", default="easy")
    p.add_argument("--cameras", default="front")
    p.add_argument("--image-size", default="160x96")
    p.add_argument("--model-preset", default="demo")
    p.add_argument("--from-scratch", action="store_true", help="Start from the random model, not the base model.")
    p.add_argument("--base-model", default=None, help="Use this base model instead of building one.")
    p.add_argument("--caption-samples", type=int, default=5000)
    p.add_argument("--caption-seed", type=int, default=101)
    p.add_argument("--base-epochs", type=float, default=3)
    p.add_argument("--sft-fraction", type=float, default=0.2, help="Must match the recipes' `sft_fraction`.")
    p.add_argument("--sft20-epochs", type=float, default=DEMO_SFT_EPOCHS)
    p.add_argument(
        "--sft-long-epochs",
        type=float,
        default=10.0,  # 10 x ~105 s per epoch on one free core, against ~1,000 s for SFT 20 % -> GRPO
        help="`sft_all_long`: SFT on all data for about the wall time of SFT 20 %% -> GRPO (0 skips it).",
    )
    p.add_argument("--long-seeds", type=int, nargs="+", default=None, help="Seeds that run `sft_all_long` (all).")
    p.add_argument("--reasoning-seeds", type=int, nargs="+", default=None, help="Seeds of the reasoning arm (all).")
    p.add_argument("--grpo-steps", type=int, default=DEMO_GRPO_STEPS)
    p.add_argument("--reasoning-grpo-steps", type=int, default=DEMO_GRPO_STEPS)
    p.add_argument("--eval-samples", type=int, default=500)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--max-new-tokens-reasoning", type=int, default=128)
    p.add_argument("--skip-reasoning", action="store_true", help="Skip the reasoning arm.")
    p.add_argument("--with-grpo-only", action="store_true", help="Add GRPO from the start model (first seed).")
    p.add_argument("--with-ablation", action="store_true", help="Add the reward ablation (first seed).")
    p.add_argument(
        "--with-safety", action="store_true", help="Add GRPO with grpo/config_demo_safety.yaml (all seeds)."
    )
    p.add_argument(
        "--with-coverage",
        action="store_true",
        help="Add GRPO with grpo/config_demo_coverage.yaml (beta 0.3: keeps the K-sample coverage; all seeds).",
    )
    p.add_argument(
        "--with-expert",
        action="store_true",
        help="Add GRPO with grpo/config_demo_expert.yaml (one expert completion per group of 8; all seeds).",
    )
    p.add_argument(
        "--with-sft-continue",
        action="store_true",
        help="Add `sft20_sft` (the warm-up continued by SFT on the GRPO split, as many scenes as GRPO draws), "
        "`sft20_sft2` (two such passes) and `sft20_sft_grpo_expert` (the demo's GRPO from `sft20_sft`); all seeds.",
    )
    p.add_argument(
        "--long-grpo-steps",
        type=int,
        default=0,
        help="Add `sft20_grpo_long`: the plain GRPO from the same warm-up for this many steps (all seeds; 0: off).",
    )
    p.add_argument(
        "--long-grpo-safety",
        action="store_true",
        help="With --long-grpo-steps, also add `sft20_grpo_safety_long` (grpo/config_demo_safety.yaml, all seeds).",
    )
    p.add_argument(
        "--navigation-overrides",
        type=int,
        default=1,
        help="Add `sft20_nav` (warm-up with `repeat_navigation_overrides` N) and GRPO from it (all seeds; 1: off).",
    )
    p.add_argument("--jobs", type=int, default=2, help="Trainings/evaluations run at once (one core each).")
    p.add_argument("--work-dir", default="outputs/reproduce")
    p.add_argument("--results-dir", default="benchmarks/results")
    p.add_argument("--quick", action="store_true", help="Smoke-test sizes (minutes); results go to the work dir.")
    args = p.parse_args(argv)
    if args.long_grpo_safety and not args.long_grpo_steps:
        p.error("--long-grpo-safety adds the safety recipe's long arm: give --long-grpo-steps too.")
    if args.quick:
        args.seeds = args.seeds[:1]
        args.num_samples, args.caption_samples, args.base_epochs = 300, 100, 1
        args.sft20_epochs, args.grpo_steps, args.reasoning_grpo_steps = 1, 4, 4
        args.sft_long_epochs = 0.5
        args.eval_samples, args.k = 16, 2
        args.work_dir = args.work_dir.rstrip("/") + "-quick"
        args.results_dir = args.work_dir + "/results"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    study = Study(args)
    start = time.perf_counter()
    runs = study.execute()
    study.report(runs)
    print(f"Study finished in {(time.perf_counter() - start) / 60:.1f} min; results in {study.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
