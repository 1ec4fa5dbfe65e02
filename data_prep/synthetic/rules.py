"""The scene types and the labelling rules: a scene's meta-action label, the cues it cites, the feasible plans.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from alphadrive_trl.actions import ALL_PLANS, plan_to_string

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


# A place where the ego must stand still: (metres ahead, the reason cited for it).
Hazard = tuple[float, str]


def _light_hazard(scene: Scene, reasons: list[str]) -> Hazard | None:
    """Rule 1, traffic light: red, or yellow while the ego can still stop comfortably before the line."""
    d_j, v = scene.junction_distance, scene.ego_speed
    if d_j is None or scene.light not in ("red", "yellow"):
        return None
    line = d_j - LINE_MARGIN
    if scene.light == "red":
        return (line, f"The light at the stop line {d_j:.0f} m ahead is red.")
    if v * v / (2 * YELLOW_DECEL) <= line:
        return (line, f"The light {d_j:.0f} m ahead turned yellow and we can still stop before the line.")
    reasons.append(f"The light {d_j:.0f} m ahead is yellow but we are too close to stop, so we go on.")
    return None


def _crossing_hazard(scene: Scene) -> Hazard | None:
    """Rule 1, a pedestrian on the zebra crossing ahead."""
    if not scene.pedestrian or scene.crosswalk_distance is None:
        return None
    distance = scene.crosswalk_distance
    return (distance - OBSTACLE_MARGIN, f"A pedestrian is on the crossing {distance:.0f} m ahead.")


def _navigation_side(commands: dict[str, str], navigation: str) -> str | None:
    return next((side for side, text in commands.items() if navigation == text), None)


def _turn(scene: Scene, first_hazard: float, reasons: list[str]) -> tuple[str, Hazard | None]:
    """Rule 3: the turn navigation asks for once the junction is within reach, unless a hazard stops the ego before
    it; with the pedestrian crossing the road it turns into, if any."""
    turn_side = _navigation_side(NAV_TURN, scene.navigation)
    d_j = scene.junction_distance
    if turn_side is None:
        return "STRAIGHT", None
    if d_j is None:
        reasons.append(f"Navigation says turn {turn_side}, but no intersection is in sight yet.")
        return "STRAIGHT", None
    if d_j > JUNCTION_REACH:
        reasons.append(f"Navigation says turn {turn_side}; the intersection is still {d_j:.0f} m ahead.")
        return "STRAIGHT", None
    if first_hazard <= d_j:
        reasons.append(f"Navigation says turn {turn_side}, but we must wait before the intersection.")
        return "STRAIGHT", None
    reasons.append(f"The intersection is right ahead and navigation says turn {turn_side}.")
    branch_hazard = None
    if scene.branch_pedestrian == turn_side:
        stop_point = d_j + LINE_MARGIN + TURN_RADIUS * BRANCH_STOP_ANGLE
        branch_hazard = (stop_point, f"A pedestrian is crossing the road on the {turn_side} we turn into.")
    return f"{turn_side.upper()}_TURN", branch_hazard


def _lane_change(
    scene: Scene, first_hazard: float, hazards: list[Hazard], reasons: list[str], feasible: set[tuple[str, str]]
) -> str:
    """Rule 4: the lane navigation asks for, or a free side when cones close the lane; when the cones leave no free
    lane they become a hazard to stop before."""
    change_side = _navigation_side(NAV_CHANGE, scene.navigation)
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
        reasons.append(f"The {chosen} lane is free, so we move over.")
        if scene.cones_distance is not None:
            for side in ("left", "right"):
                if side != chosen and _lane_block_reason(scene, side) is None:
                    feasible.add(("?", f"{side.upper()}_CHANGE"))
        return f"{chosen.upper()}_CHANGE"
    if scene.cones_distance is not None:
        hazards.append((scene.cones_distance - OBSTACLE_MARGIN, "No lane is free, so we must wait before the cones."))
    return "STRAIGHT"


def _speed_for_hazard(v: float, distance: float) -> str:
    return "STOP" if distance <= STOP_REACH_TIME * v or v < CRAWL_SPEED else "DECELERATE"


def _hazard_speed(
    scene: Scene,
    path: str,
    hazards: list[Hazard],
    light_hazard: Hazard | None,
    reasons: list[str],
    feasible: set[tuple[str, str]],
) -> tuple[str, float]:
    """Rule 1: STOP or DECELERATE for the nearest hazard; returns the speed word and where the ego stands still."""
    v = scene.ego_speed
    distance, why = min(hazards)
    reasons.append(why)
    speed = _speed_for_hazard(v, distance)
    if speed == "STOP":
        reasons.append(f"At {v:.1f} m/s we stop before it.")
    else:
        reasons.append(f"At {v:.1f} m/s it is beyond a 3 s stop, so we start braking.")
        if distance <= STOP_REACH_TIME * v + 3 and light_hazard is not None:
            feasible.add(("STOP", path))
    return speed, max(distance, 0.0)


def _lead_speed(scene: Scene, reasons: list[str], feasible: set[tuple[str, str]]) -> str | None:
    """Rule 2: slow down behind a braking, fast-closing or too-close lead car in the ego lane; None when none."""
    lead, v = scene.lead, scene.ego_speed
    if lead is None or not v > 0:
        return None
    headway = lead.gap / v
    closing = v - lead.speed
    if lead.braking and headway < LEAD_HEADWAY:
        speed = "STOP" if v < CRAWL_SPEED else "DECELERATE"
        reasons.append(f"The car {lead.gap:.0f} m ahead is braking, under {LEAD_HEADWAY:.0f} s away.")
        if headway >= LEAD_HEADWAY - 1 and speed == "DECELERATE":
            feasible.add(("KEEP", "STRAIGHT"))
        overtaking = speed == "DECELERATE" and scene.cones_distance is None
        overtaking = overtaking and _navigation_side(NAV_CHANGE, scene.navigation) is None
        for side in ("left", "right"):
            if overtaking and _lane_block_reason(scene, side) is None:
                feasible.add(("KEEP", f"{side.upper()}_CHANGE"))
        return speed
    if closing >= CLOSING_SPEED and lead.gap / closing < CLOSING_TIME:
        reasons.append(f"We close in on the car {lead.gap:.0f} m ahead by {closing:.0f} m/s.")
        return "STOP" if v < CRAWL_SPEED else "DECELERATE"
    if headway < CLOSE_HEADWAY and v >= CRAWL_SPEED:
        reasons.append(f"The car ahead is only {lead.gap:.0f} m away, under 1 s at our speed.")
        return "DECELERATE"
    return None


def _free_road_speed(v: float, target: float) -> str:
    if v < target - SPEED_BAND:
        return "ACCELERATE"
    if v > target + SPEED_BAND:
        return "DECELERATE"
    return "KEEP"


def _speed_towards_target(scene: Scene, path: str, reasons: list[str], feasible: set[tuple[str, str]]) -> str:
    """Rule 5: ACCELERATE, KEEP or DECELERATE towards the turning speed, the posted limit or the cruise speed."""
    v = scene.ego_speed
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
    for edge, other in ((target - SPEED_BAND, ("ACCELERATE", "KEEP")), (target + SPEED_BAND, ("KEEP", "DECELERATE"))):
        if abs(v - edge) <= FEASIBLE_SPEED_MARGIN and speed in other:
            feasible.add((other[0] if speed == other[1] else other[1], path))
    return speed


def label_scene(scene: Scene) -> Decision:
    """Apply the rules of the module docstring to a scene: `(speed, path)`, the cited cues and the feasible plans.

    Example:
        >>> label_scene(Scene(ego_speed=8.0, junction_distance=10.0, light="red")).plan
        ('STOP', 'STRAIGHT')
        >>> label_scene(Scene(ego_speed=6.0, navigation=NAV_TURN["left"], junction_distance=2.0, light="green")).plan
        ('KEEP', 'LEFT_TURN')
    """
    reasons: list[str] = []
    feasible: set[tuple[str, str]] = set()  # extra plans; "?" stands for the label's speed word
    light_hazard = _light_hazard(scene, reasons)
    hazards = [hazard for hazard in (light_hazard, _crossing_hazard(scene)) if hazard]
    first_hazard = min(hazards)[0] if hazards else math.inf

    path, branch_hazard = _turn(scene, first_hazard, reasons)
    wants_change = _navigation_side(NAV_CHANGE, scene.navigation) or scene.cones_distance is not None
    if path == "STRAIGHT" and wants_change:
        path = _lane_change(scene, first_hazard, hazards, reasons, feasible)
    if path.endswith("_TURN"):  # past the stop line: only a pedestrian on the new road still counts
        hazards = [branch_hazard] if branch_hazard else []

    speed, stop_distance = None, None
    if hazards:
        speed, stop_distance = _hazard_speed(scene, path, hazards, light_hazard, reasons, feasible)
    elif path == "STRAIGHT":
        speed = _lead_speed(scene, reasons, feasible)
    if speed is None:
        speed = _speed_towards_target(scene, path, reasons, feasible)

    plans = {(speed, path)}
    for plan_speed, plan_path in feasible:
        plans.add((speed if plan_speed == "?" else plan_speed, plan_path))
    ordered = tuple(plan_to_string(s, p) for s, p in ALL_PLANS if (s, p) in plans)
    return Decision(speed, path, tuple(reasons), ordered, stop_distance)
