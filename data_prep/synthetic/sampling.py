"""Difficulty presets and scene sampling: a random scene whose rule label is a given plan."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from alphadrive_trl.trajectory import is_plausible

from .expert import expert_trajectory
from .rendering import DASH_PERIOD
from .rules import (
    ALONGSIDE,
    CHANGE_CLEAR_GAP,
    CHANGE_MIN_DISTANCE,
    CLOSE_HEADWAY,
    CLOSING_SPEED,
    CLOSING_TIME,
    CRAWL_SPEED,
    CRUISE_SPEED,
    JUNCTION_REACH,
    LEAD_HEADWAY,
    LINE_MARGIN,
    NAV_CHANGE,
    NAV_STRAIGHT,
    NAV_TURN,
    OBSTACLE_MARGIN,
    SPEED_BAND,
    STOP_REACH_TIME,
    TURN_SPEED,
    YELLOW_DECEL,
    Decision,
    Scene,
    Vehicle,
    label_scene,
)

SPEED_LIMITS_KMH = (30, 40, 50, 60, 70)


DIFFICULTIES = ("easy", "hard")


@dataclass(frozen=True)
class DifficultyPreset:
    """How scenes are drawn. The rules are the same for every preset; a preset changes which cues appear and how
    close to a decision boundary the numbers fall.

    - `margin`: m/s (and scaled metres) kept between a sampled value and a rule threshold; small = ambiguous.
    - `speed_limits`: post speed-limit signs (the target speed must be read from the picture).
    - `hidden_closing_leads`: leads that are much slower without brake lights (visible only in history frames).
    - `distractors`: probability of irrelevant extra cues (far cars, empty crossings, far green lights, ...).
    - `yellow_dilemma`: yellow lights near the stop/go boundary.
    """

    name: str
    margin: float
    speed_limits: bool
    hidden_closing_leads: bool
    distractors: float
    yellow_dilemma: bool
    description: str = ""


PRESETS: dict[str, DifficultyPreset] = {
    "easy": DifficultyPreset(
        "easy",
        margin=1.0,
        speed_limits=False,
        hidden_closing_leads=False,
        distractors=0.2,
        yellow_dilemma=False,
        description="Clear-cut scenes: sampled values stay at least 1 m/s (or the matching distance) away from every "
        "rule threshold, a slow lead always shows brake lights, the target speed is a fixed 12 m/s and few "
        "irrelevant cues appear. A ~1 M-parameter VLM learns it on CPU in about a minute.",
    ),
    "hard": DifficultyPreset(
        "hard",
        margin=0.25,
        speed_limits=True,
        hidden_closing_leads=True,
        distractors=0.6,
        yellow_dilemma=True,
        description="The benchmark configuration: the same rules, with numeric comparisons (the ego speed in the text "
        "against the number on a speed-limit sign; the braking distance against the distance to a yellow light's "
        "stop line), values within 0.25 m/s of the thresholds, slower leads without brake lights (their approach "
        "shows only across history frames), more irrelevant cues, and - with side cameras - cars alongside that "
        "only a side view shows deciding whether a lane change is possible. Ambiguous scenes list several "
        "`feasible_actions`.",
    ),
}


_CAR_COLORS = ((190, 40, 40), (40, 70, 170), (230, 230, 230), (30, 30, 30), (200, 170, 40), (60, 130, 70))


def _u(rng: random.Random, low: float, high: float) -> float:
    return rng.uniform(low, high) if high > low else low


def _speed(value: float) -> float:
    """Speeds are stored (and shown in the prompt) with one decimal; rules see the same value."""
    return round(max(value, 0.0), 1)


def _car(rng: random.Random, gap: float, speed: float, braking: bool = False) -> Vehicle:
    return Vehicle(round(gap, 1), round(max(speed, 0.0), 1), braking, rng.choice(_CAR_COLORS))


@dataclass
class _Draft:
    """Mutable scene fields while a sampler builds a scene."""

    values: dict[str, Any] = field(default_factory=dict)

    def __setitem__(self, key, value):
        self.values[key] = value

    def __getitem__(self, key):
        return self.values[key]

    def get(self, key, default=None):
        return self.values.get(key, default)


def _target_speed(draft: _Draft, turning: bool) -> float:
    if turning:
        return TURN_SPEED
    return draft.get("speed_limit") or CRUISE_SPEED


def _sample_candidate(
    rng: random.Random, target: tuple[str, str], preset: DifficultyPreset, side_cameras: set[str], history: int
):
    speed_word, path = target
    m = preset.margin
    d = _Draft()
    d["style"] = rng.getrandbits(31)
    d["num_lanes"] = rng.choice((1, 2, 2, 3, 3))
    d["ego_lane"] = rng.randrange(d["num_lanes"])
    d["navigation"] = NAV_STRAIGHT
    d["pedestrian_offset"] = _u(rng, -3.0, 3.0)
    d["sign_distance"] = _u(rng, 12.0, 30.0)
    d["dash_offset"] = _u(rng, 0.0, DASH_PERIOD)
    if preset.speed_limits and rng.random() < 0.7:
        d["speed_limit"] = round(rng.choice(SPEED_LIMITS_KMH) / 3.6, 2)
    turning = path.endswith("_TURN")
    changing = path.endswith("_CHANGE")
    side = "left" if path.startswith("LEFT") else "right"

    # -- path setup
    if changing:
        if d["num_lanes"] == 1:
            d["num_lanes"] = rng.choice((2, 3))
        d["ego_lane"] = rng.randrange(1, d["num_lanes"]) if side == "left" else rng.randrange(d["num_lanes"] - 1)
        if rng.random() < 0.4:
            d["cones_distance"] = round(_u(rng, 12.0, 35.0), 1)
            if side == "right":  # the left lane must be unusable for the rules to pick the right one
                if d["ego_lane"] > 0:
                    d["left_vehicle"] = _blocking_car(rng, side_cameras, "left")
        else:
            d["navigation"] = NAV_CHANGE[side]
        if rng.random() < 0.3:  # a car far ahead in the target lane does not block the change
            key = f"{side}_vehicle"
            d[key] = _car(rng, _u(rng, CHANGE_CLEAR_GAP + 5, 45.0), _u(rng, 8, 14))
    elif turning:
        d["navigation"] = NAV_TURN[side]
        d["junction_distance"] = round(_u(rng, 0.0, JUNCTION_REACH - m), 1)
        d["light"] = rng.choice((None, "green", "green"))
    else:
        roll = rng.random()
        if roll < 0.25:
            turn = rng.choice(("left", "right"))
            d["navigation"] = NAV_TURN[turn]
            if rng.random() < 0.5:  # a junction that is still too far to turn at
                d["junction_distance"] = round(_u(rng, JUNCTION_REACH + 2 * m + 2, 45.0), 1)
                d["light"] = rng.choice((None, "green"))
        elif roll < 0.45:
            change = rng.choice(("left", "right"))
            d["navigation"] = NAV_CHANGE[change]
            if _side_lane_exists_draft(d, change):
                d[f"{change}_vehicle"] = _blocking_car(rng, side_cameras, change)

    # -- speed setup
    v_target = _target_speed(d, turning)
    if speed_word == "KEEP":
        low, high = v_target - SPEED_BAND + m, v_target + SPEED_BAND - m
        d["ego_speed"] = _speed(_u(rng, max(low, 4.5 if changing or turning else 0.5), high))
        if not turning and not changing and preset.yellow_dilemma and rng.random() < 0.3:
            v = d["ego_speed"]
            line = _u(rng, max(1.0, 0.3 * v), v * v / (2 * YELLOW_DECEL) - m * 2)
            if line > 1:
                d["junction_distance"], d["light"] = round(line + LINE_MARGIN, 1), "yellow"
    elif speed_word == "ACCELERATE":
        high = v_target - SPEED_BAND - m
        d["ego_speed"] = _speed(_u(rng, 1.0 if turning else 0.0, high))
        if rng.random() < 0.3 and not turning:
            d["junction_distance"], d["light"] = round(_u(rng, 5.0, 40.0), 1), "green"
    elif speed_word == "DECELERATE":
        _setup_decelerate(rng, d, preset, turning, changing, v_target, history)
    else:
        _setup_stop(rng, d, preset, turning, changing, side)

    # -- distractors that do not change the label
    if rng.random() < preset.distractors:
        choice = rng.randrange(3)
        if choice == 0 and d.get("crosswalk_distance") is None and not d.get("junction_distance"):
            d["crosswalk_distance"] = round(_u(rng, 8.0, 40.0), 1)  # an empty crossing
        elif choice == 1:
            d["sidewalk_pedestrian"] = True
        elif choice == 2 and d.get("lead") is None and not turning:
            d["lead"] = _car(rng, _u(rng, max(30.0, LEAD_HEADWAY * d["ego_speed"] + 10), 60.0), d["ego_speed"] + 1)
    return Scene(**d.values)


def _side_lane_exists_draft(d: _Draft, side: str) -> bool:
    return d["ego_lane"] > 0 if side == "left" else d["ego_lane"] < d["num_lanes"] - 1


def _blocking_car(rng: random.Random, side_cameras: set[str], side: str) -> Vehicle:
    """A car that makes the adjacent lane unusable: alongside (only when the side camera can show it) or close
    ahead."""
    if f"front_{side}" in side_cameras and rng.random() < 0.6:
        return _car(rng, _u(rng, -3.0, 3.0), _u(rng, 6, 14))
    return _car(rng, _u(rng, ALONGSIDE + 2, CHANGE_CLEAR_GAP - 2), _u(rng, 6, 14))


def _setup_decelerate(
    rng, d: _Draft, preset: DifficultyPreset, turning: bool, changing: bool, v_target: float, history: int
):
    m = preset.margin
    roll = rng.random()
    if turning or changing or roll < 0.3:  # too fast for the target speed
        d["ego_speed"] = _speed(_u(rng, v_target + SPEED_BAND + m, v_target + SPEED_BAND + 5))
        return
    if roll < 0.6:  # a braking (or, hard + history, silently slower) lead within the headway
        v = _u(rng, 5.0, 16.0)
        d["ego_speed"] = _speed(v)
        if preset.hidden_closing_leads and history > 0 and rng.random() < 0.3:  # needs a frame to compare
            closing = _u(rng, CLOSING_SPEED + m, 8.0)
            gap = _u(rng, 4.0, closing * (CLOSING_TIME - m))
            d["lead"] = _car(rng, gap, v - closing, braking=False)
        else:
            gap = _u(rng, 4.0, v * (LEAD_HEADWAY - m / 4))
            d["lead"] = _car(rng, gap, _u(rng, 0.0, v - 3.0), braking=True)
        return
    if roll < 0.8:  # red light, pedestrian or closed lane beyond the 3 s stop reach
        v = _u(rng, CRAWL_SPEED + m + 1, 15.0)
        d["ego_speed"] = _speed(v)
        distance = _u(rng, STOP_REACH_TIME * v + 2 * m + 1, STOP_REACH_TIME * v + 25)
        _place_hazard(rng, d, distance, v)
        return
    v = _u(rng, 6.0, 15.0)  # tailgating
    d["ego_speed"] = _speed(v)
    d["lead"] = _car(rng, _u(rng, 2.0, v * (CLOSE_HEADWAY - m / 4)), v + _u(rng, -1, 1))


def _place_hazard(rng, d: _Draft, distance: float, v: float, kinds=("red", "pedestrian", "cones")):
    kind = rng.choice(kinds)
    if kind == "yellow" and v * v / (2 * YELLOW_DECEL) > distance:
        kind = "red"
    if kind in ("red", "yellow"):
        d["junction_distance"], d["light"] = round(distance + LINE_MARGIN, 1), kind
    elif kind == "pedestrian":
        d["crosswalk_distance"], d["pedestrian"] = round(distance + OBSTACLE_MARGIN, 1), True
        d["pedestrian_offset"] = _u(rng, -1.0, 1.0)
    else:
        d["cones_distance"] = round(distance + OBSTACLE_MARGIN, 1)
        for side in ("left", "right"):  # every adjacent lane taken: the ego must wait
            if _side_lane_exists_draft(d, side):
                d[f"{side}_vehicle"] = _car(rng, _u(rng, ALONGSIDE + 1, CHANGE_CLEAR_GAP - 2), _u(rng, 5, 12))


def _setup_stop(rng, d: _Draft, preset: DifficultyPreset, turning: bool, changing: bool, side: str):
    m = preset.margin
    if turning:  # yield to a pedestrian on the road we turn into
        v = _u(rng, 5.5, 7.0)
        d["ego_speed"] = _speed(v)
        d["junction_distance"] = round(_u(rng, 0.0, max(0.0, 1.3 * v - 5.9)), 1)
        d["branch_pedestrian"] = side
        return
    if changing:  # move over (navigation or cones) and stop at a red light beyond
        v = _u(rng, 7.0, 12.0)
        d["ego_speed"] = _speed(v)
        line = _u(rng, max(CHANGE_MIN_DISTANCE + 1, v * v / 8), STOP_REACH_TIME * v - m)
        d["junction_distance"], d["light"] = round(line + LINE_MARGIN, 1), "red"
        if d.get("cones_distance") is not None:
            d["cones_distance"] = round(_u(rng, 4.0, line), 1)
        return
    roll = rng.random()
    if roll < 0.15:  # already slow behind a braking car
        v = _u(rng, 0.5, CRAWL_SPEED - m / 2)
        d["ego_speed"] = _speed(v)
        d["lead"] = _car(rng, _u(rng, 3.0, 8.0), 0.0, braking=True)
        return
    if roll < 0.3:  # standing at a red light
        d["ego_speed"] = 0.0
        _place_hazard(rng, d, _u(rng, 0.5, 6.0), 0.0, kinds=("red", "pedestrian"))
        return
    v = _u(rng, 2.0, 13.0)
    d["ego_speed"] = _speed(v)
    low = max(0.5, v * v / 8.0)
    distance = _u(rng, low, max(low, STOP_REACH_TIME * v - m))
    kinds = ("red", "pedestrian", "cones", "yellow") if preset.yellow_dilemma else ("red", "pedestrian", "cones")
    _place_hazard(rng, d, distance, v, kinds)


def sample_scene(
    rng: random.Random,
    target: tuple[str, str],
    preset: DifficultyPreset | str = "easy",
    side_cameras: set[str] | frozenset[str] = frozenset(),
    history_frames: int = 0,
    max_tries: int = 8,
) -> tuple[Scene, Decision]:
    """Draw a scene meant to have the label `target`; the label always comes from `label_scene`, so when a draw
    misses the target (a distractor interferes) the next try is taken, and after `max_tries` the last scene is kept
    with its own (correct) label. Cues the rendered views could not show are never used: cars alongside need the
    side camera of that side, leads that are slower without brake lights need a history frame."""
    preset = PRESETS[preset] if isinstance(preset, str) else preset
    for _ in range(max_tries):
        scene = _sample_candidate(rng, target, preset, set(side_cameras), history_frames)
        decision = label_scene(scene)
        if decision.plan == target and is_plausible(expert_trajectory(scene, decision), ego_speed=scene.ego_speed):
            break
    return scene, decision
