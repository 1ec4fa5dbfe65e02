"""The episode loop (`run_episode` -> `EpisodeResult` of `StepRecord`s) and the closed-loop metrics
(`summarize_episodes`)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .base import DrivingContext, DrivingPolicy
from .scenarios import Scenario, get_scenario, meta_action_index, reset_env, route_navigation


@dataclass
class StepRecord:
    """The ego state at one decision (before acting) and what the policy chose."""

    position: tuple[float, float]  # world (screen) coordinates, metres: x right, y down
    heading: float  # radians, screen convention (y down)
    speed: float
    lane: int
    navigation: str
    action: str
    plan: tuple[str, str] | None = None
    text: str | None = None
    valid: bool = True


@dataclass
class EpisodeResult:
    """One episode's outcome. `steps` has one record per decision; `final_*` is the state after the last one."""

    scenario: str
    seed: int
    policy: str
    decisions: int
    crashed: bool
    reached_goal: bool
    distance: float  # metres driven
    mean_speed: float  # m/s, averaged over decisions
    lane_changes: int
    invalid_answers: int
    wall_time: float  # seconds spent simulating, rendering and deciding
    completion: float  # share of the episode's decision budget driven without a crash (1.0 at goal/time limit)
    steps: list[StepRecord] = field(default_factory=list, repr=False)
    final_position: tuple[float, float] = (0.0, 0.0)
    final_heading: float = 0.0
    final_speed: float = 0.0
    frames: list[np.ndarray] = field(default_factory=list, repr=False)  # kept only when asked


def _goal_reached(env, scenario: Scenario, terminated: bool, truncated: bool, crashed: bool) -> bool:
    if crashed:
        return False
    unwrapped = env.unwrapped
    if scenario.goal == "exit":
        return bool(unwrapped.has_arrived(unwrapped.vehicle))
    if scenario.goal == "merge_end":
        return bool(terminated)
    return bool(truncated or terminated)  # "time": survived until the time limit


def run_episode(
    env,
    scenario: str | Scenario,
    policy: DrivingPolicy,
    seed: int,
    *,
    max_decisions: int | None = None,
    frame_size: tuple[int, int] | None = None,
    keep_frames: bool = False,
) -> EpisodeResult:
    """Drive one seeded episode with `policy` and measure it.

    Frames are rendered at every decision when the policy looks at them or `keep_frames` is set (GIFs, datasets);
    `result.frames[i]` is the frame the policy saw at decision `i`, plus the final frame after the last decision.
    """
    scenario = get_scenario(scenario)
    limit = scenario.max_decisions if max_decisions is None else min(int(max_decisions), scenario.max_decisions)
    reset_env(env, scenario, seed, frame_size)
    policy.reset(seed)
    unwrapped = env.unwrapped
    render = keep_frames or policy.needs_frames
    history: deque[np.ndarray] = deque(maxlen=policy.history_frames + 1)
    frames: list[np.ndarray] = []
    steps: list[StepRecord] = []
    terminated = truncated = False
    start = time.perf_counter()
    for step in range(limit):
        ego = unwrapped.vehicle
        navigation = route_navigation(env)
        if render:
            frame = env.render()
            history.appendleft(frame)
            if keep_frames:
                frames.append(frame)
        context = DrivingContext(unwrapped, scenario, list(history), float(ego.speed), navigation, step)
        decision = policy.decide(context)
        steps.append(
            StepRecord(
                position=(float(ego.position[0]), float(ego.position[1])),
                heading=float(ego.heading),
                speed=float(ego.speed),
                lane=int(ego.lane_index[2] or 0),
                navigation=navigation,
                action=decision.action,
                plan=decision.plan,
                text=decision.text,
                valid=decision.valid,
            )
        )
        _, _, terminated, truncated, _ = env.step(meta_action_index(env, decision.action))
        if terminated or truncated:
            break
    ego = unwrapped.vehicle
    if keep_frames:
        frames.append(env.render())
    wall_time = time.perf_counter() - start
    crashed = bool(ego.crashed)
    final_position = (float(ego.position[0]), float(ego.position[1]))
    positions = np.array([s.position for s in steps] + [final_position])
    distance = float(np.linalg.norm(np.diff(positions, axis=0), axis=1).sum())
    lanes = [s.lane for s in steps] + [int(ego.lane_index[2] or 0)]
    return EpisodeResult(
        scenario=scenario.name,
        seed=int(seed),
        policy=policy.name,
        decisions=len(steps),
        crashed=crashed,
        reached_goal=_goal_reached(env, scenario, terminated, truncated, crashed),
        distance=distance,
        mean_speed=float(np.mean([s.speed for s in steps])) if steps else 0.0,
        lane_changes=int(sum(a != b for a, b in zip(lanes[:-1], lanes[1:]))),
        invalid_answers=sum(not s.valid for s in steps),
        wall_time=wall_time,
        completion=len(steps) / limit if crashed else 1.0,
        steps=steps,
        final_position=final_position,
        final_heading=float(ego.heading),
        final_speed=float(ego.speed),
        frames=frames,
    )


METRIC_NAMES: tuple[str, ...] = (
    "crash_rate",
    "mean_speed",
    "mean_distance",
    "route_completion",
    "episode_completion",
    "lane_changes_per_episode",
    "invalid_answer_rate",
    "decisions_per_second",
)


def summarize_episodes(results: Sequence[EpisodeResult]) -> dict[str, float]:
    """Aggregate episodes into the closed-loop metrics.

    - `crash_rate`: share of episodes that end in a collision of the ego.
    - `mean_speed`: ego speed (m/s) averaged over every decision of every episode.
    - `mean_distance`: metres driven per episode (sum of the ego displacements between decisions).
    - `route_completion`: share of episodes that reach the scenario's goal (highway: the 20 s time limit without a
      crash; merge: past the end of the merge section; intersection: out of the box on the planned exit).
    - `episode_completion`: mean share of the decision budget driven before a crash (1.0 for an episode that reaches
      its goal or its time limit), so a late crash counts less than an early one.
    - `lane_changes_per_episode`: completed lane changes per episode (the ego's lane index changed).
    - `invalid_answer_rate`: share of decisions whose model answer did not parse and fell back to `IDLE` (0 for the
      rule-based policies).
    - `decisions_per_second`: decisions divided by the wall time of the episode loops (simulation, rendering when the
      policy needs frames, and the policy itself).

    Example:
        >>> r = EpisodeResult("highway", 0, "keep", 10, True, False, 100.0, 10.0, 1, 0, 1.0, 0.25)
        >>> s = summarize_episodes([r, EpisodeResult("highway", 1, "keep", 40, False, True, 400.0, 10.0, 0, 0, 3.0, 1.0)])
        >>> s["crash_rate"], s["mean_distance"], s["episode_completion"], s["decisions_per_second"]
        (0.5, 250.0, 0.625, 12.5)
    """
    if not results:
        raise ValueError("No episodes to summarize")
    decisions = sum(r.decisions for r in results)
    wall_time = sum(r.wall_time for r in results)
    speed_sum = sum(r.mean_speed * r.decisions for r in results)
    return {
        "episodes": len(results),
        "decisions": decisions,
        "crash_rate": float(np.mean([r.crashed for r in results])),
        "mean_speed": speed_sum / decisions if decisions else 0.0,
        "mean_distance": float(np.mean([r.distance for r in results])),
        "route_completion": float(np.mean([r.reached_goal for r in results])),
        "episode_completion": float(np.mean([r.completion for r in results])),
        "lane_changes_per_episode": float(np.mean([r.lane_changes for r in results])),
        "invalid_answer_rate": sum(r.invalid_answers for r in results) / decisions if decisions else 0.0,
        "decisions_per_second": decisions / wall_time if wall_time > 0 else 0.0,
    }
