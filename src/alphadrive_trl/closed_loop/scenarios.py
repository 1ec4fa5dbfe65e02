"""The highway-env scenarios (`SCENARIOS`), environment creation and reset, the plan -> meta-action table and the
navigation command of the ego's route."""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..labelling import wrap_angle

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
    _remember_idm_defaults()
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
# and never restores them, which would change the traffic of every later highway/merge episode in the process. The
# defaults are remembered before the first environment is built: building an intersection env already resets it
# once, so remembering them at the first episode instead took the intersection's values whenever it came first.
_IDM_CLASS_ATTRIBUTES = ("DISTANCE_WANTED", "COMFORT_ACC_MAX", "COMFORT_ACC_MIN")
_IDM_DEFAULTS: dict[str, float] = {}


def _remember_idm_defaults() -> None:
    from highway_env.vehicle.behavior import IDMVehicle

    if not _IDM_DEFAULTS:
        _IDM_DEFAULTS.update({name: getattr(IDMVehicle, name) for name in _IDM_CLASS_ATTRIBUTES})


def _restore_idm_defaults() -> None:
    from highway_env.vehicle.behavior import IDMVehicle

    _remember_idm_defaults()
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
