"""Closed-loop driving in highway-env: a rule-based expert, baselines, a VLM driver, metrics and a CLI.

The AlphaDrive paper evaluates open loop only (planning accuracy against logged plans). Here a policy drives a car in
the `highway-env` simulator (optional `sim` extra: `pip install "alphadrive-trl[sim]"`) and the episode's outcome is
measured: does it crash, how fast and how far does it get, does it reach the end of its route.

- **Scenarios** (`SCENARIOS`): `highway` (highway-fast-v0), `merge` (merge-generic-v0) and `intersection`
  (intersection-v0), each with per-episode randomised traffic and routes drawn from the episode seed, so the same
  seed gives the same initial traffic for every policy. The ego decides at `POLICY_FREQUENCY` = 2 Hz (every 0.5 s,
  the waypoint spacing of the dataset's trajectories) and sees a top-down RGB frame centred on itself.
- **Policies**: `ExpertPolicy` (IDM longitudinal control, an overtaking lane-change rule, a yield rule at
  intersections), `KeepPolicy` (always `IDLE`, i.e. `KEEP, STRAIGHT`), `RandomPolicy`, and `VLMPolicy` for a trained
  checkpoint (meta-action answers; checkpoints trained with the `trajectory` prompt template drive from the meta-action
  derived from their predicted waypoints by the shared labeller).
- **Plan -> simulator action**: `plan_to_meta_action` (table in `docs/closed_loop.md`).
- **Metrics**: `summarize_episodes` (definitions in its docstring and in the README page).

CLI (`alphadrive-drive`, or `python -m alphadrive_trl.closed_loop`):

    alphadrive-drive --model expert --env highway --episodes 5 --seed 0 --output-dir outputs/drive-expert
    alphadrive-drive compare --models expert keep random outputs/demo-grpo --episodes 3 --seed 0 \\
        --output-dir outputs/closed-loop
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .actions import parse_answer_strict
from .entrypoint import command
from .files import atomic_path, atomic_write_json
from .labelling import wrap_angle
from .trajectory import derived_answer_words

# --- scenarios ------------------------------------------------------------------------------------------------------

POLICY_FREQUENCY = 2  # Hz: one decision every 0.5 s, the spacing of the dataset's waypoints.
SIMULATION_FREQUENCY = 10  # Hz: 5 simulation steps per decision (must be a multiple of POLICY_FREQUENCY).
DECISION_DT = 1.0 / POLICY_FREQUENCY
META_ACTIONS: tuple[str, ...] = ("LANE_LEFT", "IDLE", "LANE_RIGHT", "FASTER", "SLOWER")
HIGHWAY_TARGET_SPEEDS: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0)
# intersection-v0's lanes are limited to 10 m/s; a 3 m/s grid lets the ego creep, wait and go.
INTERSECTION_TARGET_SPEEDS: tuple[float, ...] = (0.0, 3.0, 6.0, 9.0)


@dataclass(frozen=True)
class Scenario:
    """A highway-env task with its configuration and per-episode randomisation.

    `randomization` maps a config key to either a `(low, high)` integer range (inclusive), a float range
    (`(low, high)` with float bounds) or a tuple of choices (given as a list); values are drawn from the episode seed.
    `goal` says what reaching the end of the route means: `time` (survive until `duration`), `merge_end` (pass the
    end of the merge section: the env terminates) or `exit` (leave the intersection on the planned exit).
    """

    name: str
    env_id: str
    config: dict[str, Any]
    randomization: dict[str, Any]
    goal: str
    duration: float  # seconds; the runner stops an episode after duration * POLICY_FREQUENCY decisions
    frame_size: tuple[int, int]  # default (width, height) of the rendered top-down frame
    scaling: float  # pixels per metre at the default frame size
    description: str

    @property
    def lateral(self) -> bool:
        """Whether lane changes are part of the action space."""
        return bool(self.config.get("action", {}).get("lateral", True))

    @property
    def crossing_traffic(self) -> bool:
        """Whether other vehicles cross the ego's path (the expert's yield rule applies)."""
        return self.goal == "exit"

    @property
    def max_decisions(self) -> int:
        return int(round(self.duration * POLICY_FREQUENCY))

    def episode_config(self, seed: int, frame_size: tuple[int, int] | None = None) -> dict[str, Any]:
        """The full highway-env config of the episode with seed `seed` (randomised values included)."""
        rng = np.random.default_rng([seed, 7919])
        config = json.loads(json.dumps(self.config))  # deep copy of plain data
        for key, spec in sorted(self.randomization.items()):
            if isinstance(spec, list):
                config[key] = spec[int(rng.integers(len(spec)))]
            elif all(isinstance(v, int) for v in spec):
                config[key] = int(rng.integers(spec[0], spec[1] + 1))
            else:
                config[key] = float(rng.uniform(spec[0], spec[1]))
        width, height = frame_size or self.frame_size
        config["screen_width"], config["screen_height"] = int(width), int(height)
        # Keep the field of view in metres when the frame is resized.
        config["scaling"] = self.scaling * width / self.frame_size[0]
        return config


def _common_config(target_speeds: Sequence[float], lateral: bool = True) -> dict[str, Any]:
    return {
        "simulation_frequency": SIMULATION_FREQUENCY,
        "policy_frequency": POLICY_FREQUENCY,
        "action": {
            "type": "DiscreteMetaAction",
            "longitudinal": True,
            "lateral": lateral,
            "target_speeds": list(target_speeds),
        },
        "render_agent": True,
        "offscreen_rendering": True,
        # Policies read the simulator state or the rendered frame, never the observation vector; highway-env's
        # default Kinematics observation (pandas) costs a third of the step time, so observe only the clock.
        "observation": {"type": "AttributesObservation", "attributes": ["time"]},
    }


SCENARIOS: dict[str, Scenario] = {
    "highway": Scenario(
        name="highway",
        env_id="highway-fast-v0",
        config={
            **_common_config(HIGHWAY_TARGET_SPEEDS),
            "lanes_count": 3,
            "vehicles_count": 20,
            "duration": 20,
            "centering_position": [0.3, 0.5],
        },
        randomization={"lanes_count": (3, 4), "vehicles_count": (15, 30), "vehicles_density": (0.8, 1.4)},
        goal="time",
        duration=20.0,
        frame_size=(320, 160),
        scaling=4.0,
        description="multi-lane highway with slower traffic to overtake; survive 20 s",
    ),
    "merge": Scenario(
        name="merge",
        env_id="merge-generic-v0",
        config={
            **_common_config(HIGHWAY_TARGET_SPEEDS),
            "lanes_count": 2,
            "vehicles_count": 5,
            "centering_position": [0.3, 0.5],
        },
        randomization={"lanes_count": (2, 3), "vehicles_count": (3, 9)},
        goal="merge_end",
        duration=25.0,
        frame_size=(320, 160),
        scaling=4.0,
        description="highway with a merging on-ramp; pass the merge section",
    ),
    "intersection": Scenario(
        name="intersection",
        env_id="intersection-v0",
        config={
            **_common_config(INTERSECTION_TARGET_SPEEDS, lateral=False),
            "destination": None,  # None: a random exit (left, straight or right) per episode
            "duration": 25,
            "centering_position": [0.5, 0.6],
        },
        randomization={"initial_vehicle_count": (6, 14), "spawn_probability": (0.3, 0.6)},
        goal="exit",
        duration=25.0,
        frame_size=(256, 256),
        scaling=3.5,
        description="unsignalised 4-way intersection with crossing traffic and a random exit",
    ),
}
DEFAULT_SCENARIOS: tuple[str, ...] = ("highway", "merge", "intersection")


def require_highway_env():
    """Import highway-env (registering its environments) or fail with the install command."""
    try:
        import gymnasium
        import highway_env  # noqa: F401 - registers the environments
    except ImportError as error:
        raise ImportError(
            "Closed-loop driving needs the optional simulator: pip install 'alphadrive-trl[sim]' "
            "(highway-env, gymnasium, pygame)."
        ) from error
    return gymnasium


def get_scenario(name: str | Scenario) -> Scenario:
    if isinstance(name, Scenario):
        return name
    if name not in SCENARIOS:
        raise ValueError(f"Unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


def parse_scenarios(value: str | Sequence[str]) -> list[Scenario]:
    """`"all"`, `"highway,merge"` or a list of names -> scenarios."""
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        names = list(DEFAULT_SCENARIOS)
    return [get_scenario(n) for n in names]


def make_env(scenario: str | Scenario, frame_size: tuple[int, int] | None = None):
    """Create the gymnasium environment of a scenario, rendering top-down RGB frames offscreen.

    The frame size is fixed for the life of the env (highway-env builds its viewer once). Never set
    `SDL_VIDEODRIVER=dummy`: the viewer then disables itself and every frame is black.
    """
    gymnasium = require_highway_env()
    scenario = get_scenario(scenario)
    _ensure_runtime_dir()
    with warnings.catch_warnings():
        # merge-generic-v0 / intersection-v0 are "out of date" for gymnasium: their v1/v2 successors switch on
        # highway-env 1.12's connected-lane neighbour search for the traffic, which changes its behaviour (and the
        # measured baselines); the v0 dynamics are the ones documented in docs/closed_loop.md.
        warnings.filterwarnings("ignore", message=".*is out of date.*")
        return gymnasium.make(
            scenario.env_id,
            render_mode="rgb_array",
            config=scenario.episode_config(0, frame_size),
            disable_env_checker=True,
        )


def _ensure_runtime_dir() -> None:
    """Give SDL (pygame's offscreen renderer) a private `XDG_RUNTIME_DIR` when the session has none (containers, cron,
    SSH without a login session): it prints `error: XDG_RUNTIME_DIR is invalid or not set` otherwise, though rendering
    works either way."""
    current = os.environ.get("XDG_RUNTIME_DIR")
    if current and os.path.isdir(current):
        return
    path = os.path.join(tempfile.gettempdir(), f"alphadrive-runtime-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = path


# highway-env's intersection sets IDMVehicle class attributes (jam distance, comfort accelerations) for its traffic
# and never restores them, which would change the traffic of every later highway/merge episode in the process.
_IDM_CLASS_ATTRIBUTES = ("DISTANCE_WANTED", "COMFORT_ACC_MAX", "COMFORT_ACC_MIN")
_IDM_DEFAULTS: dict[str, float] = {}


def _restore_idm_defaults() -> None:
    from highway_env.vehicle.behavior import IDMVehicle

    if not _IDM_DEFAULTS:
        _IDM_DEFAULTS.update({name: getattr(IDMVehicle, name) for name in _IDM_CLASS_ATTRIBUTES})
    for name, value in _IDM_DEFAULTS.items():
        setattr(IDMVehicle, name, value)


def reset_env(env, scenario: str | Scenario, seed: int, frame_size: tuple[int, int] | None = None) -> None:
    """Reset `env` to the episode with seed `seed`: same seed, same randomised config and initial traffic."""
    scenario = get_scenario(scenario)
    _restore_idm_defaults()
    env.reset(seed=int(seed), options={"config": scenario.episode_config(int(seed), frame_size)})


# --- plans -> simulator actions -------------------------------------------------------------------------------------

FALLBACK_META_ACTION = "IDLE"


def plan_to_meta_action(speed: str, path: str, *, lateral: bool = True) -> str:
    """Map a `(SPEED, PATH)` plan to a highway-env `DiscreteMetaAction` name.

    | plan | meta-action |
    |---|---|
    | PATH `LEFT_CHANGE` (lateral scenarios) | `LANE_LEFT` (target speed kept) |
    | PATH `RIGHT_CHANGE` (lateral scenarios) | `LANE_RIGHT` (target speed kept) |
    | SPEED `STOP` (any PATH) | `SLOWER` (each decision lowers the target speed one step, down to 0) |
    | SPEED `DECELERATE` | `SLOWER` |
    | SPEED `ACCELERATE` | `FASTER` |
    | SPEED `KEEP` | `IDLE` |

    `STOP` wins over a lane change (stopping is the safe reading of a contradictory plan). `LEFT_TURN`,
    `RIGHT_TURN` and `STRAIGHT` leave the choice to SPEED: in intersection-v0 the route decides the turn, and the
    highway and merge roads have no turns. In a longitudinal-only scenario lane changes also fall back to SPEED.

    Example:
        >>> plan_to_meta_action("KEEP", "LEFT_CHANGE")
        'LANE_LEFT'
        >>> plan_to_meta_action("DECELERATE", "LEFT_TURN")
        'SLOWER'
        >>> plan_to_meta_action("KEEP", "LEFT_CHANGE", lateral=False)
        'IDLE'
    """
    if speed == "STOP":
        return "SLOWER"
    if lateral and path == "LEFT_CHANGE":
        return "LANE_LEFT"
    if lateral and path == "RIGHT_CHANGE":
        return "LANE_RIGHT"
    speed_table = {"KEEP": "IDLE", "ACCELERATE": "FASTER", "DECELERATE": "SLOWER"}
    if speed not in speed_table:
        raise ValueError(f"Unknown SPEED action {speed!r}")
    return speed_table[speed]


def meta_action_index(env, name: str) -> int:
    """Index of a meta-action name in the env's action space (intersection-v0 has only SLOWER/IDLE/FASTER)."""
    indexes = env.unwrapped.action_type.actions_indexes
    if name not in indexes:
        name = FALLBACK_META_ACTION
    return int(indexes[name])


# --- navigation -----------------------------------------------------------------------------------------------------


def route_navigation(env) -> str:
    """The navigation command for the ego's planned route, in the dataset's wording.

    Highway and merge roads go straight on. At the intersection the command names the turn the route takes at the
    next intersection (from the heading change between the approach lane and the exit lane; screen coordinates have
    y down, so a negative heading change is a left turn), and becomes `go straight` once the ego is on its exit.
    """
    ego = env.unwrapped.vehicle
    route = getattr(ego, "route", None)
    network = env.unwrapped.road.network
    if not route or not ego.lane_index[0].startswith("o"):
        return "go straight"  # highway, merge, or already in / past the intersection box
    start_heading = network.get_lane(ego.lane_index).heading_at(0.0)
    exit_lanes = [index for index in route if index[0].startswith("il")]
    if not exit_lanes:
        return "go straight"
    exit_from, exit_to, exit_id = exit_lanes[-1]
    exit_heading = network.get_lane((exit_from, exit_to, exit_id or 0)).heading_at(0.0)
    change = math.degrees(wrap_angle(exit_heading - start_heading))
    if change <= -45:
        return "turn left at the next intersection"
    if change >= 45:
        return "turn right at the next intersection"
    return "go straight"


# --- policies -------------------------------------------------------------------------------------------------------


@dataclass
class DrivingContext:
    """What a policy sees at one decision."""

    env: Any  # the unwrapped highway-env environment (the expert reads the simulator state from it)
    scenario: Scenario
    frames: list[np.ndarray]  # top-down RGB frames, current first, then earlier decisions (most recent first)
    ego_speed: float
    navigation: str
    step: int


@dataclass
class Decision:
    """A policy's choice: the meta-action name, the plan it came from and the raw model text (VLM only)."""

    action: str
    plan: tuple[str, str] | None = None
    text: str | None = None
    valid: bool = True


class DrivingPolicy:
    """Base class: `reset(seed)` at the start of each episode, `decide(context)` at each decision."""

    name = "policy"
    history_frames = 0  # earlier frames the policy wants besides the current one
    needs_frames = False

    def reset(self, seed: int) -> None:  # optional hook
        pass

    def decide(self, context: DrivingContext) -> Decision:
        raise NotImplementedError


class KeepPolicy(DrivingPolicy):
    """Constant `KEEP, STRAIGHT` (`IDLE`): the baseline that shows what doing nothing costs."""

    name = "keep"

    def decide(self, context: DrivingContext) -> Decision:
        return Decision("IDLE", plan=("KEEP", "STRAIGHT"))


class RandomPolicy(DrivingPolicy):
    """A uniformly random available meta-action, seeded per episode."""

    name = "random"

    def __init__(self, seed: int = 0):
        self._base_seed = seed
        self._rng = np.random.default_rng(seed)

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng([self._base_seed, seed])

    def decide(self, context: DrivingContext) -> Decision:
        action_type = context.env.action_type
        available = sorted(action_type.get_available_actions())
        return Decision(action_type.actions[int(self._rng.choice(available))])


def frame_roles(count: int) -> list[str]:
    """`image_roles` of the simulator frames: the current top-down frame, then earlier decisions (0.5 s apart).

    Example:
        >>> frame_roles(3)
        ['top_down', 'top_down_t-1', 'top_down_t-2']
    """
    return ["top_down"] + [f"top_down_t-{k}" for k in range(1, count)]


class VLMPolicy(DrivingPolicy):
    """A trained checkpoint driving from the rendered frames.

    At each decision the model gets the current top-down frame (plus `history_frames` earlier ones) and the prompt of
    the template saved with the checkpoint (`alphadrive_config.json`: template, image budget, max images), built by
    `prompts.build_prompt` exactly as in training. It answers greedily; the plan maps to a meta-action through
    `plan_to_meta_action`. An answer that does not parse becomes `FALLBACK_META_ACTION` (`IDLE`: keep lane and target
    speed) and is counted as invalid.

    Checkpoints trained with the `trajectory` template drive from their waypoints: the plan is the meta-action pair
    the shared labeller (`labelling`, mode `labeller_mode`) derives from the predicted trajectory, the same rule
    that labels the data; without a usable trajectory the `<answer>` plan is used, and without either the answer is
    invalid.
    """

    needs_frames = True

    def __init__(
        self,
        model_dir: str,
        *,
        max_new_tokens: int = 96,
        history_frames: int | None = None,
        labeller_mode: str = "heading",
        device: str | None = None,
    ):
        import torch  # heavy: the baseline policies and the scenarios run without it

        from .modeling import load_checkpoint
        from .prompts import get_template

        if not os.path.isfile(os.path.join(model_dir, "config.json")):
            raise FileNotFoundError(f"No model checkpoint at {model_dir!r} (config.json not found)")
        checkpoint = load_checkpoint(model_dir, device=device)
        settings = checkpoint.config
        self.name = os.path.basename(os.path.normpath(model_dir)) or model_dir
        self.template = get_template(settings.get("prompt_template") or "default")
        self.max_images = settings.get("max_images")
        if history_frames is None:
            history_frames = (self.max_images - 1) if self.max_images else 0
        self.history_frames = max(0, int(history_frames))
        self.max_new_tokens = max_new_tokens
        self.labeller_mode = labeller_mode
        self._torch = torch
        self.model, self.processor, self.device = checkpoint.model, checkpoint.processor, checkpoint.device

    def reset(self, seed: int) -> None:
        self._torch.manual_seed(seed)

    def example(self, frames: Sequence[np.ndarray], ego_speed: float, navigation: str) -> dict[str, Any]:
        """The generation example (`modeling.generation_example`) of one decision: the row a dataset built from
        these frames would hold, with the current frame and `history_frames` earlier ones."""
        from PIL import Image

        from .modeling import generation_example

        images = [Image.fromarray(np.asarray(frame)) for frame in frames[: self.history_frames + 1]]
        row = {"images": images, "image_roles": frame_roles(len(images)), "ego_speed": ego_speed,
               "navigation": navigation}  # fmt: skip
        return generation_example(row, self.template, self.max_images)

    def generate(self, frames: Sequence[np.ndarray], ego_speed: float, navigation: str) -> str:
        """The model's answer for one decision."""
        from .modeling import generate_answers

        example = self.example(frames, ego_speed, navigation)
        return generate_answers(
            self.model,
            self.processor,
            [example],
            max_new_tokens=self.max_new_tokens,
            device=self.device,
            do_sample=False,
        )[0]

    def plan_from_text(self, text: str, ego_speed: float) -> tuple[str, str] | None:
        """The plan an answer states (trajectory checkpoints: the plan their waypoints imply), or `None`."""
        if self.template.with_trajectory:
            words = derived_answer_words(text, ego_speed, mode=self.labeller_mode)
            if len(words.speed) == 1 and len(words.path) == 1:
                return next(iter(words.speed)), next(iter(words.path))
        return parse_answer_strict(text)

    def decide(self, context: DrivingContext) -> Decision:
        text = self.generate(context.frames, context.ego_speed, context.navigation)
        plan = self.plan_from_text(text, context.ego_speed)
        if plan is None:
            return Decision(FALLBACK_META_ACTION, text=text, valid=False)
        return Decision(plan_to_meta_action(*plan, lateral=context.scenario.lateral), plan=plan, text=text)


BASELINE_POLICIES: dict[str, Callable[[], DrivingPolicy]] = {
    "expert": lambda: ExpertPolicy(),
    "keep": lambda: KeepPolicy(),
    "random": lambda: RandomPolicy(),
}


def load_policy(spec: str, **vlm_options: Any) -> DrivingPolicy:
    """`expert`, `keep`, `random` or a checkpoint directory (`./expert` for a folder with a baseline's name)."""
    if spec in BASELINE_POLICIES:
        return BASELINE_POLICIES[spec]()
    if not os.path.isdir(spec):
        raise FileNotFoundError(
            f"checkpoint directory {spec} not found (baselines: {', '.join(BASELINE_POLICIES)}); train one first, "
            "e.g. `make pipeline`"
        )
    return VLMPolicy(spec, **vlm_options)


class ExpertPolicy(DrivingPolicy):
    """A rule-based driver that does not crash: the data source for `data_prep/highway_env.py` and the upper
    baseline of the closed-loop table.

    - Longitudinal: the Intelligent Driver Model of an IDM "shadow" vehicle built from the ego gives the desired
      acceleration, towards the cruise speed (the top target speed) behind the nearest vehicle *along the ego's
      route* (highway-env's own neighbour search stops at the end of the current lane segment, so it misses a car
      in the intersection box or on the next segment). The meta-action whose target speed implies the acceleration
      closest to the desired one is chosen (`IDLE` on ties).
    - Lateral (highway, merge): MOBIL-like overtaking evaluated at the cruise speed with a low gain threshold
      (highway-env's MOBIL, evaluated at the current target speed with a 0.2 m/s^2 threshold, hardly ever changes
      lanes): change to an adjacent lane when the IDM acceleration there beats the current lane by
      `lane_change_gain` and neither the ego nor the new follower would brake harder than `max_braking_imposed` or
      be closer than `min_gap`. Forbidden lanes (the on-ramp) are never entered; a cooldown prevents zig-zagging.
    - Yield (intersection): every other vehicle is predicted `yield_horizon` seconds ahead along its route at
      constant speed, the ego along its route accelerating at `go_acceleration` up to the cruise speed (what "go"
      means). If any comes within `yield_distance` metres of the ego at times less than `yield_time_margin` apart
      (a vehicle driving the other way on a parallel lane excepted), the ego stops at the stop line (IDM towards a
      standing obstacle there); once inside the box it goes on to clear it. It also waits at the line while the
      road beyond the box is blocked, so that it never stops inside the box.
    """

    name = "expert"

    def __init__(
        self,
        lane_change_gain: float = 0.3,
        max_braking_imposed: float = 2.0,
        min_gap: float = 6.0,
        lane_change_cooldown: float = 2.0,
        yield_horizon: float = 4.0,
        yield_distance: float = 6.0,
        yield_time_margin: float = 1.0,
        go_acceleration: float = 2.5,
    ):
        self.lane_change_gain = lane_change_gain
        self.max_braking_imposed = max_braking_imposed
        self.min_gap = min_gap
        self.lane_change_cooldown = lane_change_cooldown
        self.yield_horizon = yield_horizon
        self.yield_distance = yield_distance
        self.yield_time_margin = yield_time_margin
        self.go_acceleration = go_acceleration
        self._last_lane_change = -math.inf

    def reset(self, seed: int) -> None:
        self._last_lane_change = -math.inf

    def decide(self, context: DrivingContext) -> Decision:
        env = context.env
        ego, road = env.vehicle, env.road
        now = context.step * DECISION_DT
        lane_change = None
        with _shadow_of(ego, road) as shadow:
            acceleration = self._idm_acceleration(shadow, ego, road)
            if context.scenario.crossing_traffic:
                acceleration = min(acceleration, self._yield_acceleration(shadow, ego, road))
            elif context.scenario.lateral and ego.lane_index == ego.target_lane_index:
                lane_change = self._lane_change(shadow, ego, road, acceleration)
        if lane_change and now - self._last_lane_change >= self.lane_change_cooldown and acceleration > -2:
            self._last_lane_change = now
            return Decision(lane_change)
        return Decision(_longitudinal_action(ego, acceleration, env.action_type))

    # Longitudinal control -------------------------------------------------------------------------------------------

    @staticmethod
    def _idm_acceleration(shadow, ego, road) -> float:
        leader, gap = _leader_along_route(ego, road)
        acceleration = _idm(shadow, leader, gap)
        if ego.target_lane_index != ego.lane_index:  # mid lane change: respect both lanes
            front, _ = road.neighbour_vehicles(shadow, ego.target_lane_index)
            acceleration = min(acceleration, shadow.acceleration(ego_vehicle=shadow, front_vehicle=front))
        return acceleration

    # Lane changes ---------------------------------------------------------------------------------------------------

    def _lane_change(self, shadow, ego, road, current_acceleration: float) -> str | None:
        network = road.network
        best, best_gain = None, self.lane_change_gain
        for lane_index in network.side_lanes(ego.lane_index):
            lane = network.get_lane(lane_index)
            if getattr(lane, "forbidden", False) or not lane.is_reachable_from(ego.position) or ego.speed < 1:
                continue
            new_front, new_rear = road.neighbour_vehicles(shadow, lane_index)
            if new_front is not None and shadow.lane_distance_to(new_front, lane) - shadow.LENGTH < self.min_gap:
                continue
            if new_rear is not None:
                if new_rear.lane_distance_to(shadow, lane) - shadow.LENGTH < self.min_gap:
                    continue
                if shadow.acceleration(ego_vehicle=new_rear, front_vehicle=shadow) < -self.max_braking_imposed:
                    continue
            new_acceleration = shadow.acceleration(ego_vehicle=shadow, front_vehicle=new_front)
            if new_acceleration < -self.max_braking_imposed:
                continue
            gain = new_acceleration - current_acceleration
            # Strictly better only: the left lane (checked first) wins ties.
            if gain > best_gain:
                best, best_gain = lane_index, gain
        if best is None:
            return None
        return "LANE_LEFT" if best[2] < ego.lane_index[2] else "LANE_RIGHT"

    # Yielding at intersections --------------------------------------------------------------------------------------

    def _yield_acceleration(self, shadow, ego, road) -> float:
        """The acceleration the yield rule allows (`inf` when it does not constrain the ego)."""
        stage = ego.lane_index[0]
        if not stage.startswith(("o", "ir")):
            return math.inf  # on the exit road nothing crosses any more
        approaching = stage.startswith("o")
        to_line = ego.lane.length - ego.lane.local_coordinates(ego.position)[0] if approaching else 0.0
        if approaching and self._exit_blocked(ego, road, to_line):
            return _stop_line_acceleration(shadow, to_line)
        times = np.arange(DECISION_DT / 2, self.yield_horizon + 1e-9, DECISION_DT / 2)
        # The ego "goes": it accelerates comfortably from its current speed up to the cruise speed.
        cruise = float(ego.target_speeds[-1])
        ego_path = _route_samples(ego, road, _accelerating_distances(ego.speed, cruise, self.go_acceleration, times))
        for other in road.vehicles:
            if other is ego or other is shadow or np.linalg.norm(other.position - ego.position) > 60:
                continue
            if _is_behind_in_same_direction(ego, other):
                continue  # followers are theirs to handle
            other_path = _poses_along_route(other, road, other.speed, times)
            if _paths_conflict(ego_path, other_path, times, self.yield_distance, self.yield_time_margin):
                if not approaching:
                    return math.inf if ego.speed > 1.0 else 0.0  # inside the box: clear it, never stop there
                return _stop_line_acceleration(shadow, to_line)
        return math.inf

    @staticmethod
    def _exit_blocked(ego, road, to_line: float) -> bool:
        """Whether a slow vehicle stands on the ego's route within the box or just beyond it."""
        route_box = [index for index in (ego.route or []) if index[0].startswith("ir")]
        box_length = road.network.get_lane((*route_box[0][:2], 0)).length if route_box else 20.0
        leader, gap = _leader_along_route(ego, road, lookahead=to_line + box_length + 12.0)
        return leader is not None and leader.speed < 3.0 and gap > to_line


class _StandingObstacle:
    """A stopped point obstacle for IDM (a stop line)."""

    velocity = np.zeros(2)
    speed = 0.0


def _idm(shadow, leader, gap: float) -> float:
    """IDM acceleration of `shadow` behind `leader` at centre-to-centre distance `gap` (free road when no leader)."""
    acceleration = float(shadow.acceleration(ego_vehicle=shadow, front_vehicle=None))
    if leader is not None:
        desired = shadow.desired_gap(shadow, leader)
        acceleration -= shadow.COMFORT_ACC_MAX * (desired / max(gap, 1e-3)) ** 2
    return acceleration


def _stop_line_acceleration(shadow, to_line: float) -> float:
    """IDM acceleration that stops the ego's front bumper at a line `to_line` metres ahead of its centre."""
    # IDM settles at the jam distance (centre to centre); put the virtual obstacle so that this lands on the line.
    return _idm(shadow, _StandingObstacle, to_line + shadow.DISTANCE_WANTED - shadow.LENGTH / 2)


def _route_ahead(vehicle, network, segments: int = 3) -> list[tuple]:
    """The lane indexes the vehicle will drive: its planned route from the current lane on, else the chain of single
    successors of its lane (highway and merge roads), same lane id when it exists."""
    lane_index = vehicle.lane_index
    route = getattr(vehicle, "route", None)
    if route:
        for i, index in enumerate(route):
            if index[:2] == lane_index[:2]:
                return [lane_index] + list(route[i + 1 :])
    chain = [lane_index]
    while len(chain) < segments:
        _from, _to, _id = chain[-1]
        successors = list(network.graph.get(_to, {}))
        if len(successors) != 1:
            break
        lanes = network.graph[_to][successors[0]]
        chain.append((_to, successors[0], _id if _id < len(lanes) else len(lanes) - 1))
    return chain


def _poses_along_route(vehicle, road, speed: float, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (T, 2) and headings (T,) of a vehicle driving its route at constant `speed`."""
    return _route_samples(vehicle, road, speed * np.asarray(times))


def _route_samples(vehicle, road, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions and headings `distances` metres ahead of the vehicle along its route."""
    route = _route_ahead(vehicle, road.network)
    longitudinal = vehicle.lane.local_coordinates(vehicle.position)[0]
    poses = [
        road.network.position_heading_along_route(route, longitudinal + d, 0.0, vehicle.lane_index) for d in distances
    ]
    return np.array([p for p, _ in poses]), np.array([h for _, h in poses])


def _leader_along_route(ego, road, lookahead: float = 60.0) -> tuple[Any, float]:
    """The nearest vehicle (or obstacle) ahead on the ego's route, heading the same way, and its distance along the
    route (centre to centre); `(None, inf)` when there is none within `lookahead` metres."""
    distances = np.arange(1.0, lookahead + 1e-9, 1.0)
    points, headings = _route_samples(ego, road, distances)
    leader, leader_gap = None, math.inf
    for other in list(road.vehicles) + list(road.objects):
        if other is ego or getattr(other, "_is_shadow", False):
            continue
        offsets = np.linalg.norm(points - other.position, axis=1)
        k = int(np.argmin(offsets))
        if offsets[k] > 2.0 or distances[k] >= leader_gap:
            continue
        if abs(math.remainder(getattr(other, "heading", headings[k]) - headings[k], 2 * math.pi)) > math.radians(60):
            continue  # crossing traffic: the yield rule's business
        leader, leader_gap = other, float(distances[k])
    return leader, leader_gap


def _accelerating_distances(speed: float, cruise: float, acceleration: float, times: np.ndarray) -> np.ndarray:
    """Distance driven after each time when accelerating at `acceleration` from `speed` up to `cruise`."""
    times = np.asarray(times, dtype=np.float64)
    speed = max(float(speed), 0.0)
    ramp = max(0.0, (cruise - speed) / acceleration)
    accelerating = speed * times + 0.5 * acceleration * times**2
    cruising = speed * ramp + 0.5 * acceleration * ramp**2 + max(cruise, speed) * (times - ramp)
    return np.where(times <= ramp, accelerating, cruising)


def _paths_conflict(ego_poses, other_poses, times, distance: float, time_margin: float) -> bool:
    """Whether two predicted paths come within `distance` metres at times less than `time_margin` seconds apart,
    ignoring a vehicle that drives the other way on a parallel lane (its centre line is one lane width away)."""
    (ego_path, ego_headings), (other_path, other_headings) = ego_poses, other_poses
    gaps = np.linalg.norm(ego_path[:, None, :] - other_path[None, :, :], axis=2)
    close_in_time = np.abs(times[:, None] - times[None, :]) <= time_margin
    for i, j in zip(*np.nonzero((gaps < distance) & close_in_time)):
        heading_gap = abs(math.remainder(other_headings[j] - ego_headings[i], 2 * math.pi))
        offset = other_path[j] - ego_path[i]
        lateral = abs(-math.sin(ego_headings[i]) * offset[0] + math.cos(ego_headings[i]) * offset[1])
        if heading_gap > math.radians(150) and lateral > 2.5:
            continue
        return True
    return False


def _is_behind_in_same_direction(ego, other) -> bool:
    heading_gap = abs(math.remainder(other.heading - ego.heading, 2 * math.pi))
    longitudinal = float(np.dot(other.position - ego.position, ego.direction))
    return heading_gap < math.radians(30) and longitudinal < 0


@contextlib.contextmanager
def _shadow_of(ego, road) -> Iterator[Any]:
    """An IDM copy of the ego that takes its place in `road.vehicles` while the expert reasons (so that highway-env's
    neighbour search, which skips only the vehicle asking, does not find the ego itself)."""
    shadow = _ExpertIDM.create_from(ego)
    speeds = getattr(ego, "target_speeds", None)
    shadow.target_speed = float(speeds[-1]) if speeds is not None else ego.target_speed
    shadow._is_shadow = True
    index = next(i for i, v in enumerate(road.vehicles) if v is ego)
    road.vehicles[index] = shadow
    try:
        yield shadow
    finally:
        road.vehicles[index] = ego


def _make_expert_idm():
    from highway_env.vehicle.behavior import IDMVehicle

    class ExpertIDM(IDMVehicle):
        """IDM with fixed parameters (highway-env's intersection mutates IDMVehicle's class attributes)."""

        COMFORT_ACC_MAX = 3.0
        COMFORT_ACC_MIN = -5.0
        DISTANCE_WANTED = 5.0 + IDMVehicle.LENGTH
        TIME_WANTED = 1.5
        DELTA = 4.0

    return ExpertIDM


class _LazyExpertIDM:
    """Defers the highway-env import until the expert first drives (the module imports without the sim extra)."""

    _cls = None

    def create_from(self, vehicle):
        if _LazyExpertIDM._cls is None:
            _LazyExpertIDM._cls = _make_expert_idm()
        return _LazyExpertIDM._cls.create_from(vehicle)


_ExpertIDM = _LazyExpertIDM()


def _longitudinal_action(ego, desired_acceleration: float, action_type, horizon: float = 1.0) -> str:
    """The longitudinal meta-action whose speed after `horizon` seconds is closest to the one the desired acceleration
    reaches. Meta-actions set a target speed that a proportional controller tracks (`v' = (target - v) / TAU_ACC`),
    so the speed after `horizon` is `target + (v - target) * exp(-horizon / TAU_ACC)`; comparing speeds a second
    ahead, rather than initial accelerations, lets the expert accelerate gently on a 5 m/s target-speed grid."""
    speeds = ego.target_speeds
    current_index = ego.speed_to_index(ego.speed)
    candidates = {"IDLE": ego.target_speed}
    if "FASTER" in action_type.actions_indexes:
        candidates["FASTER"] = speeds[min(current_index + 1, len(speeds) - 1)]
    if "SLOWER" in action_type.actions_indexes:
        candidates["SLOWER"] = speeds[max(current_index - 1, 0)]
    decay = math.exp(-horizon / ego.TAU_ACC)
    reached = {name: target + (ego.speed - target) * decay for name, target in candidates.items()}
    wanted = max(ego.speed + desired_acceleration * horizon, 0.0)
    return min(reached, key=lambda name: (abs(reached[name] - wanted), name != "IDLE"))


# --- episodes and metrics -------------------------------------------------------------------------------------------


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


# --- running policies, GIFs, reports ---------------------------------------------------------------------------------


def write_gif(frames: Sequence[np.ndarray], path: str, fps: float = 2 * POLICY_FREQUENCY) -> str:
    """Write frames as an animated GIF (imageio when installed, else PIL), atomically. Default: 2x real time."""
    with atomic_path(path, suffix=".gif") as tmp:
        try:
            import imageio.v2 as imageio

            imageio.mimsave(tmp, [np.asarray(f) for f in frames], duration=1.0 / fps, loop=0)
        except ImportError:
            from PIL import Image

            images = [Image.fromarray(np.asarray(f)) for f in frames]
            images[0].save(tmp, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


def evaluate_policy(
    policy: DrivingPolicy,
    scenarios: Sequence[str | Scenario] = DEFAULT_SCENARIOS,
    *,
    episodes: int = 3,
    seed: int = 0,
    output_dir: str | None = None,
    max_decisions: int | None = None,
    frame_size: tuple[int, int] | None = None,
    gif: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Drive `episodes` episodes (seeds `seed`, `seed + 1`, ...) of every scenario and return the metrics:
    `{"policy", "seed", "episodes", "overall": {...}, "scenarios": {name: {...}}, "episode_results": [...]}`.

    With `output_dir`, writes `metrics.json` there and, with `gif`, `episode_<scenario>.gif` of each scenario's
    first episode.
    """
    from tqdm.auto import tqdm

    scenarios = [get_scenario(s) for s in scenarios]
    results: list[EpisodeResult] = []
    per_scenario: dict[str, dict[str, float]] = {}
    gifs: dict[str, str] = {}
    with tqdm(
        total=episodes * len(scenarios), desc=f"drive {policy.name}", unit="episode", disable=not progress
    ) as bar:
        for scenario in scenarios:
            env = make_env(scenario, frame_size)
            try:
                scenario_results = []
                for k in range(episodes):
                    record = gif and output_dir is not None and k == 0
                    result = run_episode(
                        env, scenario, policy, seed + k, max_decisions=max_decisions, frame_size=frame_size,
                        keep_frames=record,
                    )  # fmt: skip
                    if record:
                        gifs[scenario.name] = write_gif(
                            result.frames, os.path.join(output_dir, f"episode_{scenario.name}.gif")
                        )
                        result.frames = []
                    scenario_results.append(result)
                    bar.update(1)
            finally:
                env.close()
            per_scenario[scenario.name] = summarize_episodes(scenario_results)
            results.extend(scenario_results)
    metrics = {
        "policy": policy.name,
        "seed": seed,
        "episodes_per_scenario": episodes,
        "overall": summarize_episodes(results),
        "scenarios": per_scenario,
        "gifs": gifs,
        "episode_results": [
            {k: v for k, v in asdict(r).items() if k not in ("steps", "frames")}
            | {"actions": [s.action for s in r.steps]}
            for r in results
        ],
    }
    if output_dir is not None:
        atomic_write_json(os.path.join(output_dir, "metrics.json"), metrics)
    return metrics


_TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("crash_rate", "crash rate", "{:.0%}"),
    ("route_completion", "route done", "{:.0%}"),
    ("episode_completion", "episode done", "{:.0%}"),
    ("mean_speed", "speed (m/s)", "{:.1f}"),
    ("mean_distance", "distance (m)", "{:.0f}"),
    ("lane_changes_per_episode", "lane changes", "{:.1f}"),
    ("invalid_answer_rate", "invalid", "{:.0%}"),
    ("decisions_per_second", "decisions/s", "{:.1f}"),
)


def comparison_table(runs: Sequence[tuple[str, dict[str, Any] | str]]) -> str:
    """One markdown table, a row per (policy, scenario) plus an `all` row per policy; a run given as a string is
    an error message shown in its row (e.g. a missing checkpoint)."""
    header = "| policy | scenario | " + " | ".join(title for _, title, _ in _TABLE_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(_TABLE_COLUMNS) + 2)]
    for name, metrics in runs:
        if isinstance(metrics, str):
            lines.append(f"| {name} | - | {metrics} |" + " |" * (len(_TABLE_COLUMNS) - 1))
            continue
        rows = list(metrics["scenarios"].items())
        if len(rows) > 1:
            rows.append(("all", metrics["overall"]))
        for scenario, values in rows:
            cells = [fmt.format(values[key]) for key, _, fmt in _TABLE_COLUMNS]
            lines.append(f"| {name} | {scenario} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- CLI ------------------------------------------------------------------------------------------------------------


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


if __name__ == "__main__":
    sys.exit(main())
