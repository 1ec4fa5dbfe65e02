"""Procedural driving scenes with rule-based meta-action labels: the embedded default dataset (no download).

Each sample is a small front-camera picture of a road drawn with PIL (lanes in perspective, lead and adjacent cars,
traffic lights, stop lines, zebra crossings with pedestrians, junctions, cones closing a lane, speed-limit signs in the
hard preset), optional history frames (`front_t-1`, ...) and side cameras (`front_left`, `front_right`), an ego speed
and a navigation command. The label comes from explicit rules applied to the drawn scene *and* the text, so a model
needs both: the light colour and the distance to the stop line are in the picture, the speed and the turn direction
are in the prompt.

Rules (`label_scene`; constants below, v = ego speed in m/s, s = distance from the ego to where it must stand still):

1. Stop hazards on the ego path: a red light (s = distance to the stop line - 1 m); a yellow light when the ego can
   still stop comfortably (braking distance v^2 / (2 * 3 m/s^2) <= s), otherwise it drives on; a pedestrian on the
   zebra crossing ahead (s = distance - 2 m); cones closing the ego lane when no adjacent lane is free (s = distance
   - 2 m). The nearest hazard gives STOP when s <= 1.5 * v (the ego comes to rest within the 3 s horizon) or
   v < 3.5 m/s, else DECELERATE.
2. Lead car in the ego lane: brake lights on within a 3 s time gap, or closing at >= 3 m/s with under 4 s to contact
   (visible in history frames), or closer than a 1 s time gap -> DECELERATE (STOP when v < 3.5 m/s).
3. Turns: navigation "turn left/right at the next intersection" and the junction within 4 m -> LEFT_TURN / RIGHT_TURN,
   unless rule 1 stops the ego before the line. A pedestrian crossing the road the ego turns into -> STOP after
   turning in (DECELERATE if it is farther than 1.5 * v). A far or absent junction -> STRAIGHT.
4. Lane changes: navigation "change to the left/right lane", or cones closing the ego lane (left preferred), when
   the target lane exists (lane markings) and is free: no car alongside (side camera) and none within 15 m ahead in
   it, and any stop point is at least 8 m away. Otherwise STRAIGHT.
5. Free road (no hazard, no braking lead): target speed = 7 m/s when turning, else the posted limit (hard preset) or
   12 m/s; ACCELERATE below target - 3 m/s, DECELERATE above target + 3 m/s, else KEEP.

`feasible_actions` adds the plans a careful driver could also choose: the neighbouring speed word within 1 m/s of a
speed-band edge, KEEP behind a braking car 2-3 s ahead, overtaking (KEEP + lane change) past a braking car when the
lane is free, either free side when cones close the lane, STOP when a red-light hazard is just beyond the stop reach.

The expert `trajectory` (6 waypoints, 0.5 s, ego frame) follows the label with simple kinematics: constant
acceleration or braking profiles, a quintic 3.5 m lane change, and a turn at the junction with a radius of at least
6 m and at most 4 m/s^2 of lateral acceleration. They are chosen so that the heading labeller
(`alphadrive_trl.labelling.label_trajectory(..., mode="heading")`) gives back the same label, and every trajectory
passes `alphadrive_trl.trajectory.is_plausible`.

CLI:
    python -m data_prep.synthetic --output-dir data/synthetic --num-samples 1200 --seed 0
    python -m data_prep.synthetic --output-dir data/multi --num-samples 5000 --num-history-frames 1 \
        --cameras front,front_left,front_right --difficulty hard --preview multi.png
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import struct
import sys
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from alphadrive_trl.actions import ALL_PLANS, PATH_ACTIONS, SPEED_ACTIONS, plan_to_string
from alphadrive_trl.entrypoint import command
from alphadrive_trl.trajectory import is_plausible

logger = logging.getLogger(__name__)

# --- rule constants ---------------------------------------------------------------------------------------------------
HORIZON = 3.0  # s, the planning horizon
DT = 0.5  # s between waypoints and between history frames
LANE_WIDTH = 3.5  # m
CRUISE_SPEED = 12.0  # m/s, target speed where no limit is posted
TURN_SPEED = 7.0  # m/s, target speed through a turn
SPEED_BAND = 3.0  # m/s: ACCELERATE / DECELERATE outside target +- band
STOP_REACH_TIME = 1.5  # s: the ego can come to rest within the horizon if s <= 1.5 * v
CRAWL_SPEED = 3.5  # m/s: below this, a hazard means STOP (no room for a visible deceleration)
YELLOW_DECEL = 3.0  # m/s^2: comfortable braking used to decide whether to stop at a yellow light
LINE_MARGIN = 1.0  # m before a stop line
OBSTACLE_MARGIN = 2.0  # m before a pedestrian or cones
JUNCTION_REACH = 4.0  # m: a junction this close means the turn starts within the horizon
LEAD_HEADWAY = 3.0  # s: a braking lead within this time gap -> slow down
CLOSE_HEADWAY = 1.0  # s: any lead within this time gap -> slow down
CLOSING_SPEED = 3.0  # m/s and ...
CLOSING_TIME = 4.0  # s: a lead closing this fast with less than this to contact -> slow down
ALONGSIDE = 6.0  # m: an adjacent car with |gap| < this is alongside (seen by the side camera)
CHANGE_CLEAR_GAP = 15.0  # m: the target lane needs no car closer than this ahead
CHANGE_MIN_DISTANCE = 8.0  # m: no lane change when the stop point is closer than this
TURN_RADIUS = 6.0  # m, the tightest turn (at low speed)
TURN_LATERAL_ACCEL = 4.0  # m/s^2: faster turns get a wider radius, v^2 / this
BRANCH_STOP_ANGLE = math.pi / 4  # rad into the turn where the ego waits for a pedestrian on the new road
FEASIBLE_SPEED_MARGIN = 1.0  # m/s around a speed-band edge where both words are acceptable

NAV_STRAIGHT = "go straight"
NAV_TURN = {"left": "turn left at the next intersection", "right": "turn right at the next intersection"}
NAV_CHANGE = {"left": "change to the left lane", "right": "change to the right lane"}
NAVIGATIONS = (NAV_STRAIGHT, *NAV_TURN.values(), *NAV_CHANGE.values())
SPEED_LIMITS_KMH = (30, 40, 50, 60, 70)
CAMERA_YAW_DEG = {"front": 0.0, "front_left": 70.0, "front_right": -70.0}
DIFFICULTIES = ("easy", "hard")


# --- scene description ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vehicle:
    """Another car. `gap`: metres ahead of the ego (|gap| < 6 m is alongside); `braking`: brake lights on."""

    gap: float
    speed: float
    braking: bool = False
    color: tuple[int, int, int] = (190, 40, 40)


@dataclass(frozen=True)
class Scene:
    """Everything the rules and the renderer need. Distances are metres ahead of the ego; lanes count from the left.

    Visual-only fields (`style`, `pedestrian_offset`, `sign_distance`, `sidewalk_pedestrian`, `dash_offset`) never
    change a label.
    """

    ego_speed: float
    navigation: str = NAV_STRAIGHT
    num_lanes: int = 2
    ego_lane: int = 0
    junction_distance: float | None = None
    light: str | None = None  # "red" | "yellow" | "green" at the junction's stop line
    crosswalk_distance: float | None = None
    pedestrian: bool = False  # on the crosswalk ahead, in the ego's way
    branch_pedestrian: str | None = None  # "left" | "right": crossing the road the ego would turn into
    lead: Vehicle | None = None
    left_vehicle: Vehicle | None = None
    right_vehicle: Vehicle | None = None
    cones_distance: float | None = None
    speed_limit: float | None = None  # m/s on a posted sign (hard preset); None -> CRUISE_SPEED
    sign_distance: float = 20.0
    pedestrian_offset: float = 0.0
    sidewalk_pedestrian: bool = False
    dash_offset: float = 0.0  # m, where the lane dashes start (moves with the ego in history frames)
    style: int = 0


@dataclass(frozen=True)
class Decision:
    """The label of a scene and why. `stop_distance` is where the expert trajectory comes to rest (STOP) or the
    hazard it brakes for (DECELERATE)."""

    speed: str
    path: str
    reasons: tuple[str, ...]
    feasible: tuple[str, ...]
    stop_distance: float | None = None

    @property
    def plan(self) -> tuple[str, str]:
        return self.speed, self.path

    @property
    def reasoning(self) -> str:
        return " ".join(self.reasons)


def _side_lane_exists(scene: Scene, side: str) -> bool:
    return scene.ego_lane > 0 if side == "left" else scene.ego_lane < scene.num_lanes - 1


def _lane_block_reason(scene: Scene, side: str) -> str | None:
    """Why the adjacent lane on `side` cannot be entered now, or None when it is free."""
    if not _side_lane_exists(scene, side):
        return f"there is no lane on the {side}"
    vehicle = scene.left_vehicle if side == "left" else scene.right_vehicle
    if vehicle is not None and -ALONGSIDE < vehicle.gap < ALONGSIDE:
        return f"the {side} camera shows a car alongside in the {side} lane"
    if vehicle is not None and ALONGSIDE <= vehicle.gap < CHANGE_CLEAR_GAP:
        return f"a car is only {vehicle.gap:.0f} m ahead in the {side} lane"
    return None


def _speed_for_hazard(v: float, distance: float) -> str:
    return "STOP" if distance <= STOP_REACH_TIME * v or v < CRAWL_SPEED else "DECELERATE"


def _free_road_speed(v: float, target: float) -> str:
    if v < target - SPEED_BAND:
        return "ACCELERATE"
    if v > target + SPEED_BAND:
        return "DECELERATE"
    return "KEEP"


def label_scene(scene: Scene) -> Decision:
    """Apply the rules of the module docstring to a scene: `(speed, path)`, the cited cues and the feasible plans.

    Example:
        >>> label_scene(Scene(ego_speed=8.0, junction_distance=10.0, light="red")).plan
        ('STOP', 'STRAIGHT')
        >>> label_scene(Scene(ego_speed=6.0, navigation=NAV_TURN["left"], junction_distance=2.0, light="green")).plan
        ('KEEP', 'LEFT_TURN')
    """
    v = scene.ego_speed
    reasons: list[str] = []
    feasible: set[tuple[str, str]] = set()

    # Rule 1: stop hazards on the road ahead, nearest first.
    hazards: list[tuple[float, str]] = []
    light_hazard = None
    d_j = scene.junction_distance
    if d_j is not None and scene.light in ("red", "yellow"):
        line = d_j - LINE_MARGIN
        braking_distance = v * v / (2 * YELLOW_DECEL)
        if scene.light == "red":
            light_hazard = (line, f"The light at the stop line {d_j:.0f} m ahead is red.")
        elif braking_distance <= line:
            light_hazard = (line, f"The light {d_j:.0f} m ahead turned yellow and we can still stop before the line.")
        else:
            reasons.append(f"The light {d_j:.0f} m ahead is yellow but we are too close to stop, so we go on.")
    if light_hazard:
        hazards.append(light_hazard)
    if scene.pedestrian and scene.crosswalk_distance is not None:
        hazards.append(
            (
                scene.crosswalk_distance - OBSTACLE_MARGIN,
                f"A pedestrian is on the crossing {scene.crosswalk_distance:.0f} m ahead.",
            )
        )
    first_hazard = min(hazards)[0] if hazards else math.inf

    # Rules 3 and 4: the path.
    path = "STRAIGHT"
    turn_side = next((side for side, text in NAV_TURN.items() if scene.navigation == text), None)
    change_side = next((side for side, text in NAV_CHANGE.items() if scene.navigation == text), None)
    branch_hazard = None
    if turn_side:
        if d_j is None:
            reasons.append(f"Navigation says turn {turn_side}, but no intersection is in sight yet.")
        elif d_j > JUNCTION_REACH:
            reasons.append(f"Navigation says turn {turn_side}; the intersection is still {d_j:.0f} m ahead.")
        elif first_hazard <= d_j:
            reasons.append(f"Navigation says turn {turn_side}, but we must wait before the intersection.")
        else:
            path = f"{turn_side.upper()}_TURN"
            reasons.append(f"The intersection is right ahead and navigation says turn {turn_side}.")
            if scene.branch_pedestrian == turn_side:
                stop_point = d_j + LINE_MARGIN + TURN_RADIUS * BRANCH_STOP_ANGLE
                branch_hazard = (stop_point, f"A pedestrian is crossing the road on the {turn_side} we turn into.")
    if path == "STRAIGHT" and (change_side or scene.cones_distance is not None):
        wanted = [change_side] if change_side else []
        if scene.cones_distance is not None:
            reasons.append(f"Cones close our lane {scene.cones_distance:.0f} m ahead.")
            wanted += [side for side in ("left", "right") if side not in wanted]
        else:
            reasons.append(f"Navigation asks for the {change_side} lane.")
        chosen = None
        for side in wanted:
            block = _lane_block_reason(scene, side)
            if block is None and first_hazard < CHANGE_MIN_DISTANCE:
                block = "the stop point is too close to change lanes"
            if block is None:
                chosen = side
                break
            if side == change_side or _side_lane_exists(scene, side):
                reasons.append(f"We cannot move {side}: {block}.")
        if chosen:
            path = f"{chosen.upper()}_CHANGE"
            reasons.append(f"The {chosen} lane is free, so we move over.")
            if scene.cones_distance is not None:
                for side in ("left", "right"):
                    if side != chosen and _lane_block_reason(scene, side) is None:
                        feasible.add(("?", f"{side.upper()}_CHANGE"))
        elif scene.cones_distance is not None:
            hazards.append(
                (scene.cones_distance - OBSTACLE_MARGIN, "No lane is free, so we must wait before the cones.")
            )

    # Rules 1, 2, 5: the speed.
    speed = None
    stop_distance = None
    if path.endswith("_TURN"):
        hazards = [branch_hazard] if branch_hazard else []
    if hazards:
        distance, why = min(hazards)
        reasons.append(why)
        speed = _speed_for_hazard(v, distance)
        stop_distance = max(distance, 0.0)
        if speed == "STOP":
            reasons.append(f"At {v:.1f} m/s we stop before it.")
        else:
            reasons.append(f"At {v:.1f} m/s it is beyond a 3 s stop, so we start braking.")
            if distance <= STOP_REACH_TIME * v + 3 and light_hazard is not None:
                feasible.add(("STOP", path))
    elif path in ("STRAIGHT",) or path.endswith("_TURN"):
        lead = scene.lead if path == "STRAIGHT" else None
        if lead is not None and v > 0:
            headway = lead.gap / v
            closing = v - lead.speed
            if lead.braking and headway < LEAD_HEADWAY:
                speed = "STOP" if v < CRAWL_SPEED else "DECELERATE"
                reasons.append(f"The car {lead.gap:.0f} m ahead is braking, under {LEAD_HEADWAY:.0f} s away.")
                if headway >= LEAD_HEADWAY - 1 and speed == "DECELERATE":
                    feasible.add(("KEEP", "STRAIGHT"))
                for side in ("left", "right"):
                    if speed == "DECELERATE" and scene.cones_distance is None and change_side is None:
                        if _lane_block_reason(scene, side) is None:
                            feasible.add(("KEEP", f"{side.upper()}_CHANGE"))
            elif closing >= CLOSING_SPEED and lead.gap / closing < CLOSING_TIME:
                speed = "STOP" if v < CRAWL_SPEED else "DECELERATE"
                reasons.append(f"We close in on the car {lead.gap:.0f} m ahead by {closing:.0f} m/s.")
            elif headway < CLOSE_HEADWAY and v >= CRAWL_SPEED:
                speed = "DECELERATE"
                reasons.append(f"The car ahead is only {lead.gap:.0f} m away, under 1 s at our speed.")
    if speed is None:
        if path.endswith("_TURN"):
            target, what = TURN_SPEED, "turning speed"
        elif scene.speed_limit is not None:
            target, what = scene.speed_limit, f"posted limit of {scene.speed_limit * 3.6:.0f} km/h"
        else:
            target, what = CRUISE_SPEED, "cruise speed"
        speed = _free_road_speed(v, target)
        if not reasons and path == "STRAIGHT":
            reasons.append("The road ahead is clear.")
        comparison = {"ACCELERATE": "well below", "DECELERATE": "well above", "KEEP": "close to"}[speed]
        reasons.append(f"At {v:.1f} m/s we are {comparison} the {what} ({target:.1f} m/s).")
        for edge, other in (
            (target - SPEED_BAND, ("ACCELERATE", "KEEP")),
            (target + SPEED_BAND, ("KEEP", "DECELERATE")),
        ):
            if abs(v - edge) <= FEASIBLE_SPEED_MARGIN and speed in other:
                feasible.add((other[0] if speed == other[1] else other[1], path))

    plans = {(speed, path)}
    for plan_speed, plan_path in feasible:
        plans.add((speed if plan_speed == "?" else plan_speed, plan_path))
    ordered = tuple(plan_to_string(s, p) for s, p in ALL_PLANS if (s, p) in plans)
    return Decision(speed, path, tuple(reasons), ordered, stop_distance)


# --- scene captions (perception pre-training) ------------------------------------------------------------------------

_LANE_NAMES = {1: ("",), 2: ("left", "right"), 3: ("left", "middle", "right")}
_COUNT_WORDS = {1: "one", 2: "two", 3: "three"}


def _lane_phrase(scene: Scene) -> str:
    if scene.num_lanes == 1:
        return "A road with one lane."
    names = _LANE_NAMES.get(scene.num_lanes)
    where = f"the {names[scene.ego_lane]} lane" if names else f"lane {scene.ego_lane + 1} from the left"
    count = _COUNT_WORDS.get(scene.num_lanes, str(scene.num_lanes))
    return f"A road with {count} lanes; we are in {where}."


def describe_scene(
    scene: Scene, side_cameras: set[str] | frozenset[str] = frozenset(), history_frames: int = 0
) -> str:
    """What the views show, as plain facts and no decision: the caption target of perception pre-training.

    Only cues the rendered images carry are named (a car alongside needs that side's camera, a lead's speed needs a
    history frame); the ego speed and navigation are in the prompt, and no meta-action word or plan appears, so a
    model pre-trained on captions learns to see, not to plan.

    Example:
        >>> describe_scene(Scene(ego_speed=8.0, junction_distance=10.0, light="red"))
        'A road with two lanes; we are in the left lane. An intersection 10 m ahead with a red light.'
        >>> describe_scene(Scene(ego_speed=8.0, num_lanes=1, lead=Vehicle(gap=12.0, speed=3.0, braking=True)))
        'A road with one lane. A car 12 m ahead in our lane with its brake lights on.'
    """
    facts = [_lane_phrase(scene)]
    if scene.speed_limit is not None:
        facts.append(f"A sign shows a speed limit of {scene.speed_limit * 3.6:.0f} km/h.")
    d_j = scene.junction_distance
    if d_j is not None:
        light = f"with a {scene.light} light" if scene.light else "without a traffic light"
        facts.append(f"An intersection {d_j:.0f} m ahead {light}.")
        if scene.branch_pedestrian:
            facts.append(f"A pedestrian is crossing the road to the {scene.branch_pedestrian}.")
    if scene.crosswalk_distance is not None:
        if scene.pedestrian:
            facts.append(f"A pedestrian is on the zebra crossing {scene.crosswalk_distance:.0f} m ahead.")
        else:
            facts.append(f"An empty zebra crossing {scene.crosswalk_distance:.0f} m ahead.")
    if scene.cones_distance is not None:
        facts.append(f"Cones close our lane {scene.cones_distance:.0f} m ahead.")
    if scene.lead is not None:
        lights = "on" if scene.lead.braking else "off"
        fact = f"A car {scene.lead.gap:.0f} m ahead in our lane with its brake lights {lights}"
        closing = scene.ego_speed - scene.lead.speed
        if history_frames > 0 and closing >= 1.0:
            fact += f", {closing:.0f} m/s slower than us"
        facts.append(fact + ".")
    for side, vehicle in (("left", scene.left_vehicle), ("right", scene.right_vehicle)):
        if vehicle is None or not _side_lane_exists(scene, side):
            continue
        if vehicle.gap >= ALONGSIDE:
            facts.append(f"A car {vehicle.gap:.0f} m ahead in the {side} lane.")
        elif vehicle.gap > -ALONGSIDE and f"front_{side}" in side_cameras:
            facts.append(f"A car alongside us in the {side} lane.")
    if scene.sidewalk_pedestrian:
        facts.append("A pedestrian walks on the sidewalk.")
    if len(facts) == 1:
        facts.append("Nothing else is on the road ahead.")
    return " ".join(facts)


# --- expert trajectory ----------------------------------------------------------------------------------------------

_TIMES = tuple(DT * (i + 1) for i in range(int(round(HORIZON / DT))))
ACCELERATION = 1.2  # m/s^2 of the ACCELERATE profile (and the default DECELERATE one)
MIN_DECELERATION = 2.5 / HORIZON  # m/s^2: a DECELERATE profile loses at least 2.5 m/s
STOP_TIME = 2.6  # s: the latest time a STOP profile comes to rest (the last waypoint then shows no motion)


def _distances(scene: Scene, decision: Decision) -> list[float]:
    """Distance travelled along the path at each waypoint time."""
    v = scene.ego_speed
    if decision.speed == "KEEP":
        return [v * t for t in _TIMES]
    if decision.speed == "ACCELERATE":
        return [v * t + 0.5 * ACCELERATION * t * t for t in _TIMES]
    if decision.speed == "DECELERATE":
        wanted = v * v / (2 * decision.stop_distance) if decision.stop_distance else ACCELERATION
        decel = min(max(wanted, MIN_DECELERATION), max(v - 0.8, 0.0) / HORIZON)
        return [v * t - 0.5 * decel * t * t for t in _TIMES]
    # STOP: brake uniformly to rest at the stop point, or by STOP_TIME when the point is farther.
    if v <= 0.05:
        return [0.0 for _ in _TIMES]
    reach = decision.stop_distance if decision.stop_distance is not None else STOP_REACH_TIME * v
    stop_time = min(STOP_TIME, 2 * max(reach, 0.1) / v)
    decel = v / stop_time
    return [v * min(t, stop_time) - 0.5 * decel * min(t, stop_time) ** 2 for t in _TIMES]


def _lane_change_offset(s: float, length: float, side: float) -> float:
    u = min(max(s / length, 0.0), 1.0)
    return side * LANE_WIDTH * u * u * u * (10 - 15 * u + 6 * u * u)


def _turn_point(s: float, start: float, side: float, radius: float) -> tuple[float, float]:
    if s <= start:
        return s, 0.0
    arc = radius * math.pi / 2
    if s <= start + arc:
        angle = (s - start) / radius
        return start + radius * math.sin(angle), side * radius * (1 - math.cos(angle))
    return start + radius, side * (radius + s - start - arc)


def expert_trajectory(scene: Scene, decision: Decision) -> list[list[float]]:
    """6 waypoints (0.5 s apart, ego frame x forward / y left, metres) that carry out `decision` in `scene`."""
    distances = _distances(scene, decision)
    side = 1.0 if decision.path.startswith("LEFT") else -1.0
    if decision.path.endswith("_CHANGE"):
        # The change ends where the last moving segment starts, so the final heading is straight ahead again.
        moving = [i for i in range(len(distances)) if distances[i] - (distances[i - 1] if i else 0.0) > 0.01]
        last = moving[-1] if moving else len(distances) - 1
        length = min(45.0, max(2.0, distances[last - 1] if last > 0 else distances[last]))
        points = [(s, _lane_change_offset(s, length, side)) for s in distances]
    elif decision.path.endswith("_TURN"):
        start = (scene.junction_distance or 0.0) + LINE_MARGIN
        # The radius keeps the lateral acceleration comfortable at the fastest speed driven in the turn.
        speeds = [(b - a) / DT for a, b in zip([0.0, *distances], distances)]
        fastest = max([scene.ego_speed] + [v for v, s in zip(speeds, distances) if s > start])
        radius = max(TURN_RADIUS, fastest * fastest / TURN_LATERAL_ACCEL)
        points = [_turn_point(s, start, side, radius) for s in distances]
    else:
        points = [(s, 0.0) for s in distances]
    return [[round(x, 3), round(y, 3)] for x, y in points]


# --- difficulty presets and scene sampling --------------------------------------------------------------------------


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


# --- rendering ------------------------------------------------------------------------------------------------------

CAMERA_HEIGHT = 1.4  # m
DASH_PERIOD = 9.0  # m between the starts of two lane dashes (3 m painted)
NEAR_PLANE = 0.5  # m
FAR_LIMIT = 90.0  # m


class _Camera:
    """Pinhole camera at the ego (90 degree horizontal field of view) looking `yaw` degrees left of forward."""

    def __init__(self, width: int, height: int, yaw_deg: float):
        self.width, self.height = width, height
        self.focal = width / 2.0
        self.horizon = 0.40 * height
        yaw = math.radians(yaw_deg)
        self.cos, self.sin = math.cos(yaw), math.sin(yaw)

    def to_camera(self, x: float, y: float) -> tuple[float, float]:
        return x * self.cos + y * self.sin, -x * self.sin + y * self.cos

    def project(self, forward: float, left: float, z: float = 0.0) -> tuple[float, float]:
        return (
            self.width / 2.0 - self.focal * left / forward,
            self.horizon + self.focal * (CAMERA_HEIGHT - z) / forward,
        )

    def ground_polygon(self, points: list[tuple[float, float]]) -> list[tuple[float, float]] | None:
        """Project a ground polygon (world x, y), clipped at the near plane; None when nothing is visible."""
        camera_points = [self.to_camera(x, y) for x, y in points]
        if all(f >= NEAR_PLANE for f, _ in camera_points):
            return [self.project(fwd, lat) for fwd, lat in camera_points]
        clipped = []
        for i, (f1, l1) in enumerate(camera_points):
            f0, l0 = camera_points[i - 1]
            inside0, inside1 = f0 >= NEAR_PLANE, f1 >= NEAR_PLANE
            if inside0 != inside1:
                t = (NEAR_PLANE - f0) / (f1 - f0)
                clipped.append((NEAR_PLANE, l0 + t * (l1 - l0)))
            if inside1:
                clipped.append((f1, l1))
        if len(clipped) < 3:
            return None
        return [self.project(fwd, lat) for fwd, lat in clipped]

    def billboard(self, x: float, y: float, width: float, z0: float, z1: float, min_px: float = 1.0):
        """Screen box `(left, top, right, bottom)` of an upright object facing the camera, or None."""
        forward, left = self.to_camera(x, y)
        if forward < NEAR_PLANE or forward > FAR_LIMIT:
            return None
        u, bottom = self.project(forward, left, z0)
        _, top = self.project(forward, left, z1)
        half = max(self.focal * width / 2.0 / forward, min_px / 2.0)
        if bottom - top < min_px:
            top = bottom - min_px
        if u + half < 0 or u - half > self.width or bottom < 0 or top > self.height:
            return None
        return (u - half, top, u + half, bottom)


def _palette(style: int) -> dict[str, tuple[int, int, int]]:
    rng = random.Random(style)
    sky = rng.choice(((150, 190, 230), (175, 200, 220), (200, 205, 210), (120, 160, 210)))
    ground = rng.choice(((90, 140, 70), (110, 150, 80), (140, 135, 95), (80, 120, 75)))
    grey = rng.randrange(85, 125)
    return {"sky": sky, "ground": ground, "road": (grey, grey, grey + 4), "mark": (235, 235, 225)}


def scene_at(scene: Scene, seconds_ago: float) -> Scene:
    """The same scene `seconds_ago` earlier (for history frames): the ego was farther from every static object,
    other cars were where their relative speed puts them, the pedestrian a few steps back."""
    if seconds_ago <= 0:
        return scene
    travelled = scene.ego_speed * seconds_ago

    def farther(value):
        return None if value is None else value + travelled

    def moved(vehicle):
        if vehicle is None:
            return None
        return replace(vehicle, gap=vehicle.gap + (scene.ego_speed - vehicle.speed) * seconds_ago)

    walk = 1.2 * seconds_ago * (1 if scene.style % 2 else -1)
    return replace(
        scene,
        junction_distance=farther(scene.junction_distance),
        crosswalk_distance=farther(scene.crosswalk_distance),
        cones_distance=farther(scene.cones_distance),
        sign_distance=scene.sign_distance + travelled,
        lead=moved(scene.lead),
        left_vehicle=moved(scene.left_vehicle),
        right_vehicle=moved(scene.right_vehicle),
        pedestrian_offset=scene.pedestrian_offset + walk,
        dash_offset=(scene.dash_offset + travelled) % DASH_PERIOD,
    )


_FONT = None


def _font():
    global _FONT
    if _FONT is None:
        _FONT = ImageFont.load_default_imagefont()  # the bitmap font: identical on every machine
    return _FONT


def render_view(scene: Scene, width: int, height: int, camera: str = "front") -> Image.Image:
    """Draw one camera view of a scene."""
    cam = _Camera(width, height, CAMERA_YAW_DEG[camera])
    colors = _palette(scene.style)
    image = Image.new("RGB", (width, height), colors["ground"])
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width, int(cam.horizon)), fill=colors["sky"])

    def ground(points, color):
        polygon = cam.ground_polygon(points)
        if polygon:
            draw.polygon(polygon, fill=color)

    left_edge = (scene.ego_lane + 0.5) * LANE_WIDTH
    right_edge = left_edge - scene.num_lanes * LANE_WIDTH
    back = -15.0 if camera != "front" else 1.0
    far = 80.0
    d_j = scene.junction_distance
    ground([(back, left_edge + 2.5), (far, left_edge + 2.5), (far, right_edge - 2.5), (back, right_edge - 2.5)],
           (150, 150, 145))  # fmt: skip  # sidewalks
    if d_j is not None and d_j < far:  # the cross street's sidewalks, then both roads
        ground([(d_j - 2, 80.0), (d_j + 14, 80.0), (d_j + 14, -80.0), (d_j - 2, -80.0)], (150, 150, 145))
    ground([(back, left_edge), (far, left_edge), (far, right_edge), (back, right_edge)], colors["road"])
    if d_j is not None and d_j < far:
        ground([(d_j, 80.0), (d_j + 12, 80.0), (d_j + 12, -80.0), (d_j, -80.0)], colors["road"])
        if scene.light is not None:
            ground([(d_j - 0.6, left_edge), (d_j - 0.1, left_edge), (d_j - 0.1, right_edge), (d_j - 0.6, right_edge)],
                   colors["mark"])  # fmt: skip
    # Lane markings: dashed between lanes, solid at the edges, interrupted by the junction.
    stop = min(far, d_j) if d_j is not None else far
    for boundary in range(1, scene.num_lanes):
        y = left_edge - boundary * LANE_WIDTH
        x = back - ((back - scene.dash_offset) % DASH_PERIOD)
        while x < min(stop, 45.0):
            ground([(x, y + 0.08), (x + 3, y + 0.08), (x + 3, y - 0.08), (x, y - 0.08)], colors["mark"])
            x += DASH_PERIOD
    for y in (left_edge - 0.15, right_edge + 0.15):
        ground([(back, y + 0.1), (stop, y + 0.1), (stop, y - 0.1), (back, y - 0.1)], colors["mark"])
    if scene.crosswalk_distance is not None and scene.crosswalk_distance < far:
        x0 = scene.crosswalk_distance
        y = right_edge + 0.3
        while y < left_edge - 0.3:
            ground([(x0, y + 0.5), (x0 + 3, y + 0.5), (x0 + 3, y), (x0, y)], colors["mark"])
            y += 1.0

    objects = []  # (distance, kind, payload), drawn far to near
    if scene.pedestrian and scene.crosswalk_distance is not None:
        objects.append((scene.crosswalk_distance + 1.5, "person", scene.pedestrian_offset))
    if scene.sidewalk_pedestrian:
        objects.append((14.0 + scene.style % 20, "person", left_edge + 1.2 if scene.style % 3 else right_edge - 1.2))
    if scene.branch_pedestrian and d_j is not None:
        sign = 1.0 if scene.branch_pedestrian == "left" else -1.0
        edge = left_edge if sign > 0 else right_edge
        # A zebra across the road on that side, with the pedestrian on it (kept inside the 90-degree view).
        y = edge + sign * 1.0
        for stripe in range(6):
            x0 = d_j + 0.5 + 2.0 * stripe
            ground([(x0, y), (x0 + 1.0, y), (x0 + 1.0, y + sign * 2.5), (x0, y + sign * 2.5)], colors["mark"])
        objects.append((d_j + 8.0, "person", edge + sign * 2.2))
    for vehicle, lane_y in ((scene.lead, 0.0), (scene.left_vehicle, LANE_WIDTH), (scene.right_vehicle, -LANE_WIDTH)):
        if vehicle is not None:
            objects.append((vehicle.gap, "car", (lane_y, vehicle)))
    if scene.cones_distance is not None:  # an orange barrier across the ego lane, cones behind it
        objects.append((scene.cones_distance, "barrier", 0.0))
        for i in range(1, 5):
            objects.append((scene.cones_distance + 3.0 * i, "cone", 1.2 - 0.6 * i))
    objects.sort(key=lambda item: -item[0])
    for distance, kind, payload in objects:
        if kind == "person":
            box = cam.billboard(distance, payload, 0.6, 0.0, 1.7, min_px=2)
            if box:
                draw.rectangle(box, fill=(40, 40, 120))
                head = (box[0], box[1] - (box[3] - box[1]) * 0.2, box[2], box[1])
                draw.rectangle(head, fill=(230, 190, 160))
        elif kind == "barrier":
            box = cam.billboard(distance, payload, 2.6, 0.2, 1.2, min_px=2)
            if box:
                draw.rectangle(box, fill=(250, 120, 20))
                x0, y0, x1, y1 = box
                draw.rectangle((x0, y0 + (y1 - y0) * 0.4, x1, y0 + (y1 - y0) * 0.6), fill=(245, 245, 245))
        elif kind == "cone":
            box = cam.billboard(distance, payload, 0.5, 0.0, 0.8, min_px=2)
            if box:
                draw.polygon(
                    [(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) / 2, box[1])], fill=(250, 120, 20)
                )
        else:
            lane_y, vehicle = payload
            bearing = math.atan2(lane_y, max(distance, 0.1)) if distance > 0 else math.pi / 2
            apparent = 1.8 * abs(math.cos(bearing)) + 4.5 * abs(math.sin(bearing))
            box = cam.billboard(distance + 2.2 * (camera == "front"), lane_y, apparent, 0.25, 1.5, min_px=2)
            if box:
                x0, y0, x1, y1 = box
                draw.rectangle(box, fill=vehicle.color)
                draw.rectangle((x0 + (x1 - x0) * 0.15, y0, x1 - (x1 - x0) * 0.15, y0 + (y1 - y0) * 0.35),
                               fill=(50, 60, 70))  # fmt: skip
                if camera == "front":
                    light = (255, 30, 30) if vehicle.braking else (110, 20, 20)
                    h = max((y1 - y0) * 0.2, 1)
                    w = max((x1 - x0) * 0.2, 1)
                    draw.rectangle((x0, y1 - 2 * h, x0 + w, y1 - h), fill=light)
                    draw.rectangle((x1 - w, y1 - 2 * h, x1, y1 - h), fill=light)
                else:
                    wheel = max((y1 - y0) * 0.25, 1)
                    draw.rectangle((x0 + (x1 - x0) * 0.15, y1 - wheel, x0 + (x1 - x0) * 0.3, y1), fill=(15, 15, 15))
                    draw.rectangle((x1 - (x1 - x0) * 0.3, y1 - wheel, x1 - (x1 - x0) * 0.15, y1), fill=(15, 15, 15))
    if scene.light is not None and d_j is not None:
        # Hung over the ego lane on the far side of the junction, so it stays in view up to the stop line.
        box = cam.billboard(d_j + 12.0, 0.0, 0.9, 3.4, 5.6, min_px=7)
        if box:
            x0, y0, x1, y1 = box
            draw.rectangle((x0, y0, x1, y1), fill=(25, 25, 25))
            step = (y1 - y0) / 3
            lamps = {"red": 0, "yellow": 1, "green": 2}
            off = ((70, 20, 20), (70, 60, 15), (15, 60, 25))
            on = ((255, 40, 30), (255, 200, 0), (40, 230, 80))
            lit = lamps[scene.light]
            for i in range(3):
                color = on[i] if i == lit else off[i]
                draw.rectangle((x0 + 1, y0 + i * step + 1, x1 - 1, y0 + (i + 1) * step - 1), fill=color)
    if scene.speed_limit is not None:
        pole = cam.billboard(scene.sign_distance, right_edge - 1.5, 0.1, 0.0, 2.1, min_px=1)
        if pole:
            draw.rectangle(pole, fill=(90, 90, 90))
        box = cam.billboard(scene.sign_distance, right_edge - 1.5, 1.2, 2.0, 3.2, min_px=12)
        if box:
            draw.ellipse(box, fill=(210, 30, 30))
            x0, y0, x1, y1 = box
            inset = (x1 - x0) * 0.15
            draw.ellipse((x0 + inset, y0 + inset, x1 - inset, y1 - inset), fill=(245, 245, 245))
            text = str(int(round(scene.speed_limit * 3.6)))
            left, top, right, bottom = draw.textbbox((0, 0), text, font=_font())  # bitmap fonts ignore anchors
            origin = ((x0 + x1 - (right - left)) / 2 - left, (y0 + y1 - (bottom - top)) / 2 - top)
            draw.text(origin, text, fill=(0, 0, 0), font=_font())
    return image


def encode_png(image: Image.Image) -> bytes:
    """A minimal RGB PNG (no filter, zlib level 1). PIL's encoder has ~0.4 ms of fixed cost per call, several times
    the cost of drawing a scene; this writes the same pixels in a fraction of that, deterministically."""
    width, height = image.size
    raw = image.tobytes()
    stride = width * 3
    rows = b"".join(b"\x00" + raw[r * stride : (r + 1) * stride] for r in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b"")


# --- dataset generation -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorConfig:
    """Settings of one synthetic build (saved in the dataset card and the resume manifest)."""

    num_samples: int = 1200
    seed: int = 0
    num_history_frames: int = 0
    cameras: tuple[str, ...] = ("front",)
    image_size: tuple[int, int] = (160, 96)
    difficulty: str = "easy"
    captions: bool = False  # add a `caption` column: the scene's facts, no decision (perception pre-training)

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.num_history_frames < 0:
            raise ValueError(f"num_history_frames must be >= 0, got {self.num_history_frames}")
        unknown = [c for c in self.cameras if c not in CAMERA_YAW_DEG]
        if unknown or not self.cameras or self.cameras[0] != "front" or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(
                f"cameras must start with 'front' and name distinct cameras from {', '.join(CAMERA_YAW_DEG)}, "
                f"got {','.join(self.cameras)}"
            )
        if self.difficulty not in PRESETS:
            raise ValueError(f"difficulty must be one of {', '.join(PRESETS)}, got {self.difficulty!r}")

    @property
    def roles(self) -> list[str]:
        """`front`, history frames `front_t-1..K`, then the other cameras."""
        history = [f"front_t-{k}" for k in range(1, self.num_history_frames + 1)]
        return ["front", *history, *self.cameras[1:]]


def generate_sample(config: GeneratorConfig, index: int) -> dict[str, Any]:
    """Build row `index` of a dataset: depends only on `(config, index)`, so any worker produces identical bytes."""
    rng = random.Random(f"alphadrive-synthetic/{config.seed}/{index}")
    target = ALL_PLANS[rng.randrange(len(ALL_PLANS))]  # classes drawn uniformly: a balanced dataset
    scene, decision = sample_scene(rng, target, config.difficulty, set(config.cameras[1:]), config.num_history_frames)
    width, height = config.image_size
    images = []
    for role in config.roles:
        if role.startswith("front_t-"):
            view = render_view(scene_at(scene, DT * int(role.rsplit("-", 1)[1])), width, height, "front")
        else:
            view = render_view(scene, width, height, role)
        images.append({"bytes": encode_png(view), "path": None})
    row = {
        "sample_id": f"synthetic-{config.difficulty}-s{config.seed}-{index:07d}",
        "images": images,
        "image_roles": config.roles,
        "ego_speed": scene.ego_speed,
        "navigation": scene.navigation,
        "speed_action": decision.speed,
        "path_action": decision.path,
        "reasoning": decision.reasoning,
        "feasible_actions": list(decision.feasible),
        "trajectory": expert_trajectory(scene, decision),
        "source": "synthetic",
    }
    if config.captions:
        row["caption"] = describe_scene(scene, set(config.cameras[1:]), config.num_history_frames)
    return row


def generate_rows(config: GeneratorConfig, indices: range) -> list[dict[str, Any]]:
    return [generate_sample(config, index) for index in indices]


def rows_to_dataset(rows: list[dict[str, Any]]):
    """Rows (images as PNG bytes) -> a `Dataset` with `DRIVING_FEATURES`. Builds the Arrow table directly: the rows
    are already in storage form, so `Dataset.from_dict`'s per-value encoding would only cost time."""
    import pyarrow as pa
    from datasets import Dataset, Features, Value

    from alphadrive_trl.data import DRIVING_FEATURES

    features = DRIVING_FEATURES
    if rows and "caption" in rows[0]:
        features = Features({**DRIVING_FEATURES, "caption": Value("string")})
    columns = {name: [row[name] for row in rows] for name in features}
    return Dataset(pa.Table.from_pydict(columns, schema=features.arrow_schema))


def _generate_chunk(args: tuple[GeneratorConfig, int, int]):
    config, start, stop = args
    return rows_to_dataset(generate_rows(config, range(start, stop)))


def class_histogram(speeds: list[str], paths: list[str]) -> Counter:
    return Counter(zip(speeds, paths))


def histogram_table(histogram: Counter) -> str:
    """Markdown table SPEED x PATH with counts."""
    lines = ["| SPEED \\ PATH | " + " | ".join(PATH_ACTIONS) + " | total |", "|---" * (len(PATH_ACTIONS) + 2) + "|"]
    for speed in SPEED_ACTIONS:
        counts = [histogram.get((speed, path), 0) for path in PATH_ACTIONS]
        lines.append(f"| {speed} | " + " | ".join(str(c) for c in counts) + f" | {sum(counts)} |")
    totals = [sum(histogram.get((s, p), 0) for s in SPEED_ACTIONS) for p in PATH_ACTIONS]
    lines.append("| total | " + " | ".join(str(t) for t in totals) + f" | {sum(totals)} |")
    return "\n".join(lines)


def dataset_card(config: GeneratorConfig, split_sizes: dict[str, int], histogram: Counter) -> str:
    rules = __doc__.split("Rules (`label_scene`; constants below, ", 1)[1].split("CLI:", 1)[0]
    rules = rules.replace("stand still):", "stand still.", 1)
    preset = PRESETS[config.difficulty]
    return f"""---
pretty_name: AlphaDrive-TRL synthetic driving scenes ({config.difficulty})
license: apache-2.0
task_categories: [image-text-to-text]
---
# Synthetic driving scenes

Procedurally drawn driving scenes labelled by explicit rules (`data_prep/synthetic.py`), in the alphadrive-trl
schema. Built with:

```
python -m data_prep.synthetic --num-samples {config.num_samples} --seed {config.seed} \\
    --num-history-frames {config.num_history_frames} --cameras {",".join(config.cameras)} \\
    --image-size {config.image_size[0]}x{config.image_size[1]} --difficulty {config.difficulty}
```

Images per sample: {", ".join(config.roles)} ({config.image_size[0]}x{config.image_size[1]} PNG).
Splits: {", ".join(f"{k} {v}" for k, v in split_sizes.items())}.

## Difficulty preset `{preset.name}`

{preset.description}

Settings: {", ".join(f"{k}={v}" for k, v in asdict(preset).items() if k not in ("name", "description"))}.

## Rules

Constants are in `data_prep/synthetic.py`; {rules.rstrip()}

## Class histogram (all splits)

{histogram_table(histogram)}
"""


def contact_sheet(rows: list[dict[str, Any]], columns: int = 4) -> Image.Image:
    """A grid of samples (all their images side by side) captioned with speed, navigation and label."""
    import io

    first = [Image.open(io.BytesIO(image["bytes"])) for image in rows[0]["images"]]
    tile_w = sum(im.width for im in first) + 4
    tile_h = first[0].height + 36
    rows_count = math.ceil(len(rows) / columns)
    sheet = Image.new("RGB", (columns * tile_w, rows_count * tile_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for n, row in enumerate(rows):
        x, y = (n % columns) * tile_w, (n // columns) * tile_h
        offset = x
        for image in row["images"]:
            view = Image.open(io.BytesIO(image["bytes"])).convert("RGB")
            sheet.paste(view, (offset, y))
            offset += view.width
        navigation = row["navigation"].replace(" at the next intersection", "").replace(" lane", "")
        caption = f"{row['ego_speed']:.1f} m/s, {navigation}\n{row['speed_action']}\n{row['path_action']}"
        draw.multiline_text((x + 2, y + first[0].height + 1), caption, fill=(0, 0, 0), font=_font(), spacing=1)
    return sheet


def build_dataset(
    config: GeneratorConfig,
    output_dir: str | Path,
    *,
    num_workers: int = 1,
    splits: dict[str, float] | None = None,
    chunk_size: int = 5000,
    overwrite: bool = False,
    progress: bool = True,
):
    """Generate `config.num_samples` rows into `output_dir` (a `DatasetDict` with train/validation/test), resuming
    finished chunks of an interrupted run, and write the dataset card. Returns the `DatasetDict`; a split that gets no
    row (tiny `num_samples`) is left out of it with a warning."""
    from datasets import DatasetDict

    from data_prep.common import ChunkStore, atomic_directory, atomic_write_text, save_splits, split_ranges

    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} already exists; pass --overwrite to replace it")
    splits = splits or {"train": 0.8, "validation": 0.1, "test": 0.1}
    settings = {"config": asdict(config), "chunk_size": chunk_size, "generator": "synthetic-v1"}
    store = ChunkStore(output_dir, settings)
    num_chunks = math.ceil(config.num_samples / chunk_size)
    bounds = {i: (i * chunk_size, min(config.num_samples, (i + 1) * chunk_size)) for i in range(num_chunks)}
    todo = store.missing(num_chunks)
    done_rows = config.num_samples - sum(bounds[i][1] - bounds[i][0] for i in todo)
    # Sub-chunks keep every worker busy and the progress bar moving; a chunk is saved once all its parts are done.
    part = max(50, min(1000, chunk_size // max(1, num_workers * 4)))
    with tqdm(total=config.num_samples, initial=done_rows, desc="synthetic scenes", unit="scene",
              disable=not progress) as bar:  # fmt: skip
        executor = ProcessPoolExecutor(num_workers) if num_workers > 1 else None
        try:
            for chunk in todo:
                start, stop = bounds[chunk]
                jobs = [(config, s, min(stop, s + part)) for s in range(start, stop, part)]
                results = executor.map(_generate_chunk, jobs) if executor else map(_generate_chunk, jobs)
                pieces = []
                for job, piece in zip(jobs, results):
                    pieces.append(piece)
                    bar.update(job[2] - job[1])
                from datasets import concatenate_datasets

                store.save(chunk, concatenate_datasets(pieces) if len(pieces) > 1 else pieces[0])
        finally:
            if executor:
                executor.shutdown()
    everything = store.load_all(num_chunks)
    ranges = split_ranges(config.num_samples, splits)
    # A split too small to get a row (e.g. validation at --num-samples 3) is saved without it (`save_splits`: datasets
    # cannot reload an empty split); the card lists it with 0 rows. `select` rejects an empty range past the end.
    dataset = DatasetDict({name: everything.select(indices or []) for name, indices in ranges.items()})
    histogram = class_histogram(everything["speed_action"], everything["path_action"])
    with atomic_directory(output_dir, overwrite=overwrite) as tmp:
        save_splits(dataset, tmp)
        atomic_write_text(tmp / "README.md", dataset_card(config, {k: len(v) for k, v in dataset.items()}, histogram))
    store.cleanup()
    from datasets import load_from_disk

    return load_from_disk(str(output_dir))


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


if __name__ == "__main__":
    sys.exit(main())
