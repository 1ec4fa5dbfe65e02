"""Drawing a scene with PIL: camera views in perspective, history frames, a minimal deterministic PNG encoder."""

from __future__ import annotations

import math
import random
import struct
import zlib
from dataclasses import dataclass, replace
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .rules import LANE_WIDTH, Scene, Vehicle

CAMERA_YAW_DEG = {"front": 0.0, "front_left": 70.0, "front_right": -70.0}


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


@dataclass
class _View:
    """One camera view being drawn: its camera, canvas and palette, and the road's extent (metres, ego frame)."""

    cam: _Camera
    draw: ImageDraw.ImageDraw
    colors: dict[str, tuple[int, int, int]]
    camera: str
    left_edge: float
    right_edge: float
    back: float  # side cameras also see the road behind the ego
    far: float = 80.0

    def ground(self, points: list[tuple[float, float]], color: tuple[int, int, int]) -> None:
        polygon = self.cam.ground_polygon(points)
        if polygon:
            self.draw.polygon(polygon, fill=color)


def _draw_roads(view: _View, scene: Scene) -> None:
    """Sidewalks, the ego road, the cross street at the junction and its stop line."""
    left_edge, right_edge, back, far = view.left_edge, view.right_edge, view.back, view.far
    d_j = scene.junction_distance
    view.ground([(back, left_edge + 2.5), (far, left_edge + 2.5), (far, right_edge - 2.5), (back, right_edge - 2.5)],
                (150, 150, 145))  # fmt: skip  # sidewalks
    if d_j is not None and d_j < far:  # the cross street's sidewalks, then both roads
        view.ground([(d_j - 2, 80.0), (d_j + 14, 80.0), (d_j + 14, -80.0), (d_j - 2, -80.0)], (150, 150, 145))
    view.ground([(back, left_edge), (far, left_edge), (far, right_edge), (back, right_edge)], view.colors["road"])
    if d_j is not None and d_j < far:
        view.ground([(d_j, 80.0), (d_j + 12, 80.0), (d_j + 12, -80.0), (d_j, -80.0)], view.colors["road"])
        if scene.light is not None:
            view.ground([(d_j - 0.6, left_edge), (d_j - 0.1, left_edge), (d_j - 0.1, right_edge),
                         (d_j - 0.6, right_edge)], view.colors["mark"])  # fmt: skip


def _draw_lane_markings(view: _View, scene: Scene) -> None:
    """Dashed between lanes, solid at the edges, interrupted by the junction."""
    d_j, back, mark = scene.junction_distance, view.back, view.colors["mark"]
    stop = min(view.far, d_j) if d_j is not None else view.far
    for boundary in range(1, scene.num_lanes):
        y = view.left_edge - boundary * LANE_WIDTH
        x = back - ((back - scene.dash_offset) % DASH_PERIOD)
        while x < min(stop, 45.0):
            view.ground([(x, y + 0.08), (x + 3, y + 0.08), (x + 3, y - 0.08), (x, y - 0.08)], mark)
            x += DASH_PERIOD
    for y in (view.left_edge - 0.15, view.right_edge + 0.15):
        view.ground([(back, y + 0.1), (stop, y + 0.1), (stop, y - 0.1), (back, y - 0.1)], mark)


def _draw_crossings(view: _View, scene: Scene) -> None:
    """The zebra crossing ahead, and the one across the road a pedestrian on the turn's side walks on."""
    if scene.crosswalk_distance is not None and scene.crosswalk_distance < view.far:
        x0 = scene.crosswalk_distance
        y = view.right_edge + 0.3
        while y < view.left_edge - 0.3:
            view.ground([(x0, y + 0.5), (x0 + 3, y + 0.5), (x0 + 3, y), (x0, y)], view.colors["mark"])
            y += 1.0
    if scene.branch_pedestrian and scene.junction_distance is not None:
        sign, edge = _branch_side(view, scene)
        y = edge + sign * 1.0  # kept inside the 90-degree view
        for stripe in range(6):
            x0 = scene.junction_distance + 0.5 + 2.0 * stripe
            view.ground(
                [(x0, y), (x0 + 1.0, y), (x0 + 1.0, y + sign * 2.5), (x0, y + sign * 2.5)], view.colors["mark"]
            )


def _branch_side(view: _View, scene: Scene) -> tuple[float, float]:
    """Lateral direction (+1 left) and road edge of the side the branch pedestrian crosses on."""
    sign = 1.0 if scene.branch_pedestrian == "left" else -1.0
    return sign, view.left_edge if sign > 0 else view.right_edge


def _scene_objects(view: _View, scene: Scene) -> list[tuple[float, str, Any]]:
    """Upright objects as `(distance, kind, payload)`, far to near (the drawing order)."""
    objects = []
    if scene.pedestrian and scene.crosswalk_distance is not None:
        objects.append((scene.crosswalk_distance + 1.5, "person", scene.pedestrian_offset))
    if scene.sidewalk_pedestrian:
        side_y = view.left_edge + 1.2 if scene.style % 3 else view.right_edge - 1.2
        objects.append((14.0 + scene.style % 20, "person", side_y))
    if scene.branch_pedestrian and scene.junction_distance is not None:
        sign, edge = _branch_side(view, scene)
        objects.append((scene.junction_distance + 8.0, "person", edge + sign * 2.2))
    for vehicle, lane_y in ((scene.lead, 0.0), (scene.left_vehicle, LANE_WIDTH), (scene.right_vehicle, -LANE_WIDTH)):
        if vehicle is not None:
            objects.append((vehicle.gap, "car", (lane_y, vehicle)))
    if scene.cones_distance is not None:  # an orange barrier across the ego lane, cones behind it
        objects.append((scene.cones_distance, "barrier", 0.0))
        for i in range(1, 5):
            objects.append((scene.cones_distance + 3.0 * i, "cone", 1.2 - 0.6 * i))
    objects.sort(key=lambda item: -item[0])
    return objects


def _draw_person(view: _View, distance: float, y: float) -> None:
    box = view.cam.billboard(distance, y, 0.6, 0.0, 1.7, min_px=2)
    if box:
        view.draw.rectangle(box, fill=(40, 40, 120))
        head = (box[0], box[1] - (box[3] - box[1]) * 0.2, box[2], box[1])
        view.draw.rectangle(head, fill=(230, 190, 160))


def _draw_barrier(view: _View, distance: float, y: float) -> None:
    box = view.cam.billboard(distance, y, 2.6, 0.2, 1.2, min_px=2)
    if box:
        view.draw.rectangle(box, fill=(250, 120, 20))
        x0, y0, x1, y1 = box
        view.draw.rectangle((x0, y0 + (y1 - y0) * 0.4, x1, y0 + (y1 - y0) * 0.6), fill=(245, 245, 245))


def _draw_cone(view: _View, distance: float, y: float) -> None:
    box = view.cam.billboard(distance, y, 0.5, 0.0, 0.8, min_px=2)
    if box:
        view.draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) / 2, box[1])], fill=(250, 120, 20))


def _draw_car(view: _View, distance: float, payload: tuple[float, Vehicle]) -> None:
    """Seen from behind (brake lights) by the front camera, from the side (wheels) by the side cameras."""
    lane_y, vehicle = payload
    draw, front = view.draw, view.camera == "front"
    bearing = math.atan2(lane_y, max(distance, 0.1)) if distance > 0 else math.pi / 2
    apparent = 1.8 * abs(math.cos(bearing)) + 4.5 * abs(math.sin(bearing))
    box = view.cam.billboard(distance + 2.2 * front, lane_y, apparent, 0.25, 1.5, min_px=2)
    if not box:
        return
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=vehicle.color)
    draw.rectangle((x0 + (x1 - x0) * 0.15, y0, x1 - (x1 - x0) * 0.15, y0 + (y1 - y0) * 0.35), fill=(50, 60, 70))
    if front:
        light = (255, 30, 30) if vehicle.braking else (110, 20, 20)
        h = max((y1 - y0) * 0.2, 1)
        w = max((x1 - x0) * 0.2, 1)
        draw.rectangle((x0, y1 - 2 * h, x0 + w, y1 - h), fill=light)
        draw.rectangle((x1 - w, y1 - 2 * h, x1, y1 - h), fill=light)
    else:
        wheel = max((y1 - y0) * 0.25, 1)
        draw.rectangle((x0 + (x1 - x0) * 0.15, y1 - wheel, x0 + (x1 - x0) * 0.3, y1), fill=(15, 15, 15))
        draw.rectangle((x1 - (x1 - x0) * 0.3, y1 - wheel, x1 - (x1 - x0) * 0.15, y1), fill=(15, 15, 15))


_OBJECT_PAINTERS = {"person": _draw_person, "barrier": _draw_barrier, "cone": _draw_cone, "car": _draw_car}


def _draw_traffic_light(view: _View, scene: Scene) -> None:
    """Hung over the ego lane on the far side of the junction, so it stays in view up to the stop line."""
    if scene.light is None or scene.junction_distance is None:
        return
    box = view.cam.billboard(scene.junction_distance + 12.0, 0.0, 0.9, 3.4, 5.6, min_px=7)
    if not box:
        return
    x0, y0, x1, y1 = box
    view.draw.rectangle((x0, y0, x1, y1), fill=(25, 25, 25))
    step = (y1 - y0) / 3
    off = ((70, 20, 20), (70, 60, 15), (15, 60, 25))
    on = ((255, 40, 30), (255, 200, 0), (40, 230, 80))
    lit = {"red": 0, "yellow": 1, "green": 2}[scene.light]
    for i in range(3):
        color = on[i] if i == lit else off[i]
        view.draw.rectangle((x0 + 1, y0 + i * step + 1, x1 - 1, y0 + (i + 1) * step - 1), fill=color)


def _draw_speed_sign(view: _View, scene: Scene) -> None:
    """The posted limit (hard preset) on a pole at the right of the road."""
    if scene.speed_limit is None:
        return
    draw, y = view.draw, view.right_edge - 1.5
    pole = view.cam.billboard(scene.sign_distance, y, 0.1, 0.0, 2.1, min_px=1)
    if pole:
        draw.rectangle(pole, fill=(90, 90, 90))
    box = view.cam.billboard(scene.sign_distance, y, 1.2, 2.0, 3.2, min_px=12)
    if box:
        draw.ellipse(box, fill=(210, 30, 30))
        x0, y0, x1, y1 = box
        inset = (x1 - x0) * 0.15
        draw.ellipse((x0 + inset, y0 + inset, x1 - inset, y1 - inset), fill=(245, 245, 245))
        text = str(int(round(scene.speed_limit * 3.6)))
        left, top, right, bottom = draw.textbbox((0, 0), text, font=_font())  # bitmap fonts ignore anchors
        origin = ((x0 + x1 - (right - left)) / 2 - left, (y0 + y1 - (bottom - top)) / 2 - top)
        draw.text(origin, text, fill=(0, 0, 0), font=_font())


def render_view(scene: Scene, width: int, height: int, camera: str = "front") -> Image.Image:
    """Draw one camera view of a scene, layer by layer: sky and ground, roads, markings, crossings, the upright
    objects far to near, the traffic light, the speed sign."""
    cam = _Camera(width, height, CAMERA_YAW_DEG[camera])
    colors = _palette(scene.style)
    image = Image.new("RGB", (width, height), colors["ground"])
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width, int(cam.horizon)), fill=colors["sky"])
    left_edge = (scene.ego_lane + 0.5) * LANE_WIDTH
    view = _View(
        cam,
        draw,
        colors,
        camera,
        left_edge=left_edge,
        right_edge=left_edge - scene.num_lanes * LANE_WIDTH,
        back=-15.0 if camera != "front" else 1.0,
    )
    _draw_roads(view, scene)
    _draw_lane_markings(view, scene)
    _draw_crossings(view, scene)
    for distance, kind, payload in _scene_objects(view, scene):
        _OBJECT_PAINTERS[kind](view, distance, payload)
    _draw_traffic_light(view, scene)
    _draw_speed_sign(view, scene)
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
