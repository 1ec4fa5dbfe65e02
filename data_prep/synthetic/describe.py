"""Scene captions for perception pre-training: the facts of a scene, no decision."""

from __future__ import annotations

from .rules import ALONGSIDE, Scene, _side_lane_exists

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
