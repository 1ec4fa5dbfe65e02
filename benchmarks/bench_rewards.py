"""Reward throughput: `alphadrive_trl.rewards` vs a straightforward per-completion implementation.

Scores one GRPO-sized batch with the AlphaDrive reward set (`speed_planning`, `path_planning`, `format`): 100k
conversational completions, 8 per prompt (12,500 groups), prompts with an image part, ~88 % well-formed answers and
the rest hedging (several words), cut off (unclosed tag) or garbage.

The baseline is what one writes first, one completion at a time: each reward extracts and parses its completions
itself (so the speed and path rewards parse everything twice), groups by `json.dumps` of the prompt, and for each
completion scans its group's answers to count how many others chose the same word. Both produce identical rewards
(checked). Ours parses each text once per batch (a cache shared by the rewards), keys groups by a tuple of the prompt
text, and counts words once per group.

    python benchmarks/bench_rewards.py [--num-completions 100000] [--group-size 8] [--repeats 3]

`run()` returns `{"name", "ours_s", "baseline_s", "ratio", ...}`: best-of-`repeats` CPU seconds for each side, and
`ratio` = ours/baseline *throughput* (completions per CPU second), i.e. how many times faster ours is. Caches are
cleared before every timed run, so ours gets no help from earlier repeats.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections import Counter, defaultdict

from alphadrive_trl import actions, rewards
from alphadrive_trl.actions import ALL_PLANS, PATH_ACTIONS, SPEED_ACTIONS, completion_to_text, parse_answer

REWARD_NAMES = ["speed_planning", "path_planning", "format"]
_CUES = ["the light is red", "a car brakes ahead", "the road is clear", "a pedestrian waits", "the lane ends"]


def make_batch(num_completions: int, group_size: int, seed: int = 0) -> dict:
    """Prompts, completions and ground-truth columns as TRL passes them to reward functions."""
    rng = random.Random(seed)
    prompts, completions, speed_action, path_action = [], [], [], []
    for i in range(math.ceil(num_completions / group_size)):
        text = f"Ego speed {rng.uniform(0, 20):.1f} m/s. Navigation: go straight. Scene {i}."
        speed, path = rng.choice(ALL_PLANS)
        for _ in range(group_size):
            prompts.append([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}])
            speed_action.append(speed)
            path_action.append(path)
            completions.append([{"role": "assistant", "content": _completion_text(rng)}])
    n = num_completions
    return {
        "prompts": prompts[:n],
        "completions": completions[:n],
        "speed_action": speed_action[:n],
        "path_action": path_action[:n],
    }


def _completion_text(rng: random.Random) -> str:
    think = f"<think> At {rng.uniform(0, 30):.2f} m {rng.choice(_CUES)}, and {rng.choice(_CUES)}. </think>"
    kind = rng.random()
    if kind < 0.88:
        return f"{think} <answer> {rng.choice(SPEED_ACTIONS)}, {rng.choice(PATH_ACTIONS)} </answer>"
    if kind < 0.94:
        speeds = rng.sample(SPEED_ACTIONS, 2)
        return f"{think} <answer> {speeds[0]}, {speeds[1]}, {rng.choice(PATH_ACTIONS)} </answer>"
    if kind < 0.97:
        return f"{think} <answer> {rng.choice(SPEED_ACTIONS)}"
    return f"{think} I am not sure what to do here."


# --------------------------------------------------------------------------------------------------------------------
# Baseline: one completion at a time.
# --------------------------------------------------------------------------------------------------------------------


def _baseline_planning(axis, prompts, completions, truths, weights, cap=0.2):
    keys = [json.dumps(p, sort_keys=True, default=str) for p in prompts]
    predicted = [parse_answer(completion_to_text(c)).axis(axis) for c in completions]
    members = defaultdict(list)
    for i, key in enumerate(keys):
        members[key].append(i)
    out = []
    for i, words in enumerate(predicted):
        truth = actions.parse_answer(f"<answer>{truths[i]}</answer>").axis(axis)
        f1 = 2 * len(words & truth) / (len(words) + len(truth)) if words else 0.0
        weight = math.fsum(weights[w] for w in words) / len(words) if words else 0.0
        others = [j for j in members[keys[i]] if j != i]
        if words and others:
            share = math.fsum(sum(w in predicted[j] for j in others) / len(others) for w in words) / len(words)
        else:
            share = 0.0
        out.append(f1 * weight * (1 - min(cap, share)))
    return out


def _baseline_format(completions):
    pattern = "<think>((?:(?!</?think>|</?answer>).)*)</think>\\s*<answer>((?:(?!</?think>|</?answer>).)*)</answer>"
    import re

    regex = re.compile(pattern, re.DOTALL)
    return [1.0 if regex.fullmatch(completion_to_text(c).strip()) else 0.0 for c in completions]


def baseline_rewards(batch: dict) -> list[list[float]]:
    weights = {**rewards.DEFAULT_ACTION_WEIGHTS["speed"], **rewards.DEFAULT_ACTION_WEIGHTS["path"]}
    p, c = batch["prompts"], batch["completions"]
    return [
        _baseline_planning("speed", p, c, batch["speed_action"], weights),
        _baseline_planning("path", p, c, batch["path_action"], weights),
        _baseline_format(c),
    ]


def ours_rewards(batch: dict, funcs) -> list[list[float]]:
    return [func(**batch) for func in funcs]


def _clear_caches() -> None:
    rewards.base._clear_caches()
    actions.normalize_word.cache_clear()


def _best_time(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        _clear_caches()
        # CPU time of this (single-threaded) process: the work done, unaffected by other jobs on a shared machine.
        start = time.process_time()
        result = fn()
        best = min(best, time.process_time() - start)
    return best, result


def run(num_completions: int = 100_000, group_size: int = 8, repeats: int = 3) -> dict:
    batch = make_batch(num_completions, group_size)
    funcs = rewards.get_reward_funcs(REWARD_NAMES)
    ours_s, ours = _best_time(lambda: ours_rewards(batch, funcs), repeats)
    baseline_s, baseline = _best_time(lambda: baseline_rewards(batch), repeats)
    for name, a, b in zip(REWARD_NAMES, ours, baseline):
        worst = max(abs(x - y) for x, y in zip(a, b))
        if worst > 1e-12:
            raise AssertionError(f"{name}: ours and the baseline disagree by {worst}")
    counts = Counter(len(c) for c in batch["completions"])
    assert counts == Counter({1: num_completions})
    return {
        "name": "rewards",
        "ours_s": round(ours_s, 4),
        "baseline_s": round(baseline_s, 4),
        "ratio": round(baseline_s / ours_s, 2),
        "ours_per_s": round(num_completions / ours_s),
        "baseline_per_s": round(num_completions / baseline_s),
        "note": f"{num_completions} completions x {'+'.join(REWARD_NAMES)}, groups of {group_size}; `ratio` in run() = speed-up",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-completions", type=int, default=100_000)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="Best of this many timed runs for each side.")
    args = parser.parse_args(argv)
    result = run(args.num_completions, args.group_size, args.repeats)
    print(f"ours:     {result['ours_s']:.3f} CPU s  ({result['ours_per_s']:,} completions/s)")
    print(f"baseline: {result['baseline_s']:.3f} CPU s  ({result['baseline_per_s']:,} completions/s)")
    print(f"ratio (ours/baseline throughput): {result['ratio']:.2f}x")


if __name__ == "__main__":
    main()
