"""nuScenes converter on a fabricated dataroot with known trajectories; labels hand-computed in both modes."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from alphadrive_trl.labelling import LabellerThresholds
from data_prep.nuscenes import (
    ConverterOptions,
    NuScenesError,
    convert_nuscenes,
    navigation_from_route,
    split_by_scene,
)

CAMERAS = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "LIDAR_TOP")

# Each scene: ego-frame positions of keyframes relative to keyframe 1 (the one whose labels we check); keyframe 0 is
# 0.5 s earlier (so the ego speed is |p1 - p0| / 0.5), keyframes 2..7 are the 3 s future. Yaws of future keyframes
# follow the direction of travel. Expected labels as worked out in test_labelling.py:
#   (past, future, ego speed, senna labels, heading labels, navigation)
SCENES = {
    # 10 m/s throughout.
    "cruise": ([-5, 0], [[5, 0], [10, 0], [15, 0], [20, 0], [25, 0], [30, 0]], 10.0,
               ("KEEP", "STRAIGHT"), ("KEEP", "STRAIGHT"), "go straight"),
    # Speeds 8, 6, 4, 2, 0.4, 0: senna max 8 / change -10 -> DECELERATE; heading end 0 < 0.5 -> STOP.
    "hard_brake": ([-5, 0], [[4, 0], [7, 0], [9, 0], [10, 0], [10.2, 0], [10.2, 0]], 10.0,
                   ("DECELERATE", "STRAIGHT"), ("STOP", "STRAIGHT"), "go straight"),
    # Speeds 1 .. 0: max 1 < 2 and end 0 < 0.5 -> STOP in both.
    "stop": ([-0.5, 0], [[0.5, 0], [0.9, 0], [1.2, 0], [1.4, 0], [1.5, 0], [1.5, 0]], 1.0,
             ("STOP", "STRAIGHT"), ("STOP", "STRAIGHT"), "go straight"),
    # Speeds 10 .. 15: end - current = +5 -> ACCELERATE in both.
    "accelerate": ([-5, 0], [[5, 0], [10.5, 0], [16.5, 0], [23, 0], [30, 0], [37.5, 0]], 10.0,
                   ("ACCELERATE", "STRAIGHT"), ("ACCELERATE", "STRAIGHT"), "go straight"),
    # y ends at +/-4.2 m, end yaw 4.29 deg: a change in both modes (>= 4 m and <= 5 deg; >= 2.5 m and < 20 deg).
    "left_change": ([-4, 0], [[4, 0.1], [8, 0.5], [12, 1.5], [16, 2.8], [20, 3.9], [24, 4.2]], 8.0,
                    ("KEEP", "LEFT_CHANGE"), ("KEEP", "LEFT_CHANGE"), "go straight"),
    "right_change": ([-4, 0], [[4, -0.1], [8, -0.5], [12, -1.5], [16, -2.8], [20, -3.9], [24, -4.2]], 8.0,
                     ("KEEP", "RIGHT_CHANGE"), ("KEEP", "RIGHT_CHANGE"), "go straight"),
    # Ends 10 m to the side at 76 deg; end speed 8.25 vs 10 -> KEEP.
    "left_turn": ([-5, 0], [[5, 0], [10, 0], [14, 1], [17, 3], [19, 6], [20, 10]], 10.0,
                  ("KEEP", "LEFT_TURN"), ("KEEP", "LEFT_TURN"), "turn left at the next intersection"),
    "right_turn": ([-5, 0], [[5, 0], [10, 0], [14, -1], [17, -3], [19, -6], [20, -10]], 10.0,
                   ("KEEP", "RIGHT_TURN"), ("KEEP", "RIGHT_TURN"), "turn right at the next intersection"),
}  # fmt: skip


def _quaternion(yaw):
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def _local_track(past, future):
    """Ego-frame positions and yaws of keyframes 0..7 (keyframe 1 at the origin facing +x)."""
    points = np.array([past, [0, 0], *future], dtype=float)
    yaws = [0.0, 0.0]
    for step in range(2, len(points)):
        dx, dy = points[step] - points[step - 1]
        yaws.append(math.atan2(dy, dx) if math.hypot(dx, dy) > 0.01 else yaws[-1])
    return points, np.array(yaws)


def build_dataroot(root, version="v1.0-mini", scenes=SCENES, with_images=True):
    """Write a tiny nuScenes dataroot: one scene per trajectory, 8 keyframes each, placed at a scene-specific
    position and rotation in the world so the ego-frame transform is exercised."""
    tables = {
        name: [] for name in ("scene", "sample", "sample_data", "ego_pose", "calibrated_sensor", "sensor", "log")
    }
    for channel in CAMERAS:
        tables["sensor"].append({"token": f"sensor-{channel}", "channel": channel, "modality": "camera"})
        tables["calibrated_sensor"].append({"token": f"calib-{channel}", "sensor_token": f"sensor-{channel}"})
    tables["log"].append({"token": "log-0", "location": "boston-seaport"})
    image = Image.new("RGB", (16, 8), (90, 90, 90))
    for scene_index, (name, (past, future, *_)) in enumerate(scenes.items()):
        scene_name = f"scene-{scene_index:04d}"
        points, yaws = _local_track(past, future)
        angle = math.radians(37 * scene_index - 90)
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        world = points @ rotation.T + [100.0 * scene_index, -40.0]
        tokens = [f"{name}-{k}" for k in range(len(points))]
        tables["scene"].append(
            {"token": f"scene-token-{name}", "name": scene_name, "log_token": "log-0",
             "first_sample_token": tokens[0], "last_sample_token": tokens[-1], "nbr_samples": len(tokens)}
        )  # fmt: skip
        for k, token in enumerate(tokens):
            timestamp = 1_500_000_000_000_000 + scene_index * 100_000_000 + k * 500_000
            tables["sample"].append(
                {"token": token, "scene_token": f"scene-token-{name}", "timestamp": timestamp,
                 "prev": tokens[k - 1] if k else "", "next": tokens[k + 1] if k + 1 < len(tokens) else ""}
            )  # fmt: skip
            pose_token = f"pose-{token}"
            tables["ego_pose"].append(
                {"token": pose_token, "timestamp": timestamp, "translation": [*world[k], 0.0],
                 "rotation": _quaternion(angle + yaws[k])}
            )  # fmt: skip
            for channel in CAMERAS:
                filename = f"samples/{channel}/{token}.jpg"
                tables["sample_data"].append(
                    {"token": f"sd-{channel}-{token}", "sample_token": token, "ego_pose_token": pose_token,
                     "calibrated_sensor_token": f"calib-{channel}", "timestamp": timestamp, "filename": filename,
                     "is_key_frame": True}
                )  # fmt: skip
                if with_images and channel.startswith("CAM"):
                    (root / filename).parent.mkdir(parents=True, exist_ok=True)
                    image.save(root / filename)
            # A non-key sweep between keyframes must be ignored.
            tables["sample_data"].append(
                {"token": f"sweep-{token}", "sample_token": token, "ego_pose_token": pose_token,
                 "calibrated_sensor_token": "calib-CAM_FRONT", "timestamp": timestamp + 80_000,
                 "filename": f"sweeps/CAM_FRONT/{token}.jpg", "is_key_frame": False}
            )  # fmt: skip
    (root / version).mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (root / version / f"{name}.json").write_text(json.dumps(rows))
    return root


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory):
    return build_dataroot(tmp_path_factory.mktemp("nuscenes"))


def _rows_by_id(by_scene):
    return {row["sample_id"]: row for rows in by_scene.values() for row in rows}


@pytest.mark.parametrize("mode", ["senna", "heading"])
def test_labels_match_hand_computed_ones_in_both_modes(dataroot, mode):
    by_scene, report = convert_nuscenes(dataroot, options=ConverterOptions(labeller=mode), progress=False)
    rows = _rows_by_id(by_scene)
    # Keyframes 0 and 1 of each scene have 6 future keyframes; 2..7 do not and are counted.
    assert report.converted == 2 * len(SCENES)
    assert report.skipped == {"no full 3 s future": 6 * len(SCENES)}
    assert report.scenes == len(SCENES) and report.samples == 8 * len(SCENES)
    for name, (_past, future, speed, senna, heading, navigation) in SCENES.items():
        row = rows[f"{name}-1"]
        assert (row["speed_action"], row["path_action"]) == (senna if mode == "senna" else heading), name
        assert row["ego_speed"] == pytest.approx(speed, abs=1e-6), name
        assert row["navigation"] == navigation, name
        np.testing.assert_allclose(row["trajectory"], future, atol=1e-3, err_msg=name)
        assert row["images"] == [str(dataroot / f"samples/CAM_FRONT/{name}-1.jpg")]
        assert row["image_roles"] == ["front"]
        assert row["source"] == "nuscenes" and row["reasoning"] is None and row["feasible_actions"] is None


def test_first_keyframe_speed_uses_the_next_pose(dataroot):
    by_scene, _ = convert_nuscenes(dataroot, progress=False)
    rows = _rows_by_id(by_scene)
    assert rows["cruise-0"]["ego_speed"] == pytest.approx(10.0)  # |p1 - p0| / 0.5 s
    assert rows["stop-0"]["ego_speed"] == pytest.approx(1.0)


def test_can_bus_speed_wins_when_present(tmp_path):
    root = build_dataroot(tmp_path, scenes={"cruise": SCENES["cruise"]})
    (root / "can_bus").mkdir()
    start = 1_500_000_000_000_000
    # 20 m/s on the CAN bus at keyframe 1 (0.5 s): the end speed 10 is 10 below -> DECELERATE.
    messages = [{"utime": start + t, "vel": [20.0, 0.0, 0.0], "pos": [0, 0, 0]} for t in range(0, 4_000_000, 20_000)]
    (root / "can_bus" / "scene-0000_pose.json").write_text(json.dumps(messages))
    by_scene, report = convert_nuscenes(root, progress=False)
    row = _rows_by_id(by_scene)["cruise-1"]
    assert row["ego_speed"] == 20.0
    assert row["speed_action"] == "DECELERATE"
    assert report.speed_from_can_bus == 2


def test_multiple_cameras_and_history(dataroot):
    options = ConverterOptions(cameras=("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"), history=1)
    by_scene, report = convert_nuscenes(dataroot, options=options, progress=False)
    rows = _rows_by_id(by_scene)
    # Keyframe 0 has no previous keyframe: counted.
    assert report.skipped["fewer than 1 history keyframes"] == len(SCENES)
    row = rows["left_turn-1"]
    assert row["image_roles"] == ["front", "front_left", "front_right", "front_t-1"]
    assert row["images"] == [
        str(dataroot / "samples/CAM_FRONT/left_turn-1.jpg"),
        str(dataroot / "samples/CAM_FRONT_LEFT/left_turn-1.jpg"),
        str(dataroot / "samples/CAM_FRONT_RIGHT/left_turn-1.jpg"),
        str(dataroot / "samples/CAM_FRONT/left_turn-0.jpg"),
    ]


def test_thresholds_and_scene_selection(dataroot):
    options = ConverterOptions(thresholds=LabellerThresholds.from_overrides(["senna_lateral_offset=5"]))
    by_scene, _ = convert_nuscenes(dataroot, options=options, scenes=["scene-0004"], progress=False)
    assert list(by_scene) == ["scene-0004"]
    assert _rows_by_id(by_scene)["left_change-1"]["path_action"] == "STRAIGHT"  # 4.2 m < 5 m
    splits = split_by_scene({"scene-0": [1, 2], "scene-1": [3]}, {"scene-1"}, "test")
    assert splits == {"train": [1, 2], "test": [3]}


def test_missing_image_is_a_counted_skip(tmp_path):
    root = build_dataroot(tmp_path, scenes={"cruise": SCENES["cruise"], "stop": SCENES["stop"]})
    (root / "samples/CAM_FRONT/cruise-1.jpg").unlink()
    by_scene, report = convert_nuscenes(root, progress=False)
    assert "cruise-1" not in _rows_by_id(by_scene)
    assert report.skipped["missing image file"] == 1
    assert report.examples["missing image file"].endswith("samples/CAM_FRONT/cruise-1.jpg")
    assert report.converted == 3
    # Not checking files keeps the row.
    by_scene, _ = convert_nuscenes(root, options=ConverterOptions(check_images=False), progress=False)
    assert "cruise-1" in _rows_by_id(by_scene)


def test_bad_dataroots_give_clear_errors(tmp_path):
    with pytest.raises(NuScenesError, match="v1.0-mini/ folder"):
        convert_nuscenes(tmp_path, progress=False)
    root = build_dataroot(tmp_path, scenes={"cruise": SCENES["cruise"]}, with_images=False)
    (root / "v1.0-mini" / "ego_pose.json").unlink()
    with pytest.raises(NuScenesError, match=r"missing nuScenes table .*ego_pose.json"):
        convert_nuscenes(root, progress=False)
    with pytest.raises(NuScenesError, match="unknown camera"):
        ConverterOptions(cameras=("CAM_TOP",))
    with pytest.raises(NuScenesError, match="unknown labeller"):
        ConverterOptions(labeller="fancy")


def test_unknown_scene_is_an_error(dataroot):
    with pytest.raises(NuScenesError, match=r"unknown scene\(s\) \['scene-9999'\]"):
        convert_nuscenes(dataroot, scenes=["scene-9999"], progress=False)


def test_navigation_rule():
    assert navigation_from_route(math.radians(30)) == "turn left at the next intersection"
    assert navigation_from_route(math.radians(29.9)) == "go straight"
    assert navigation_from_route(math.radians(-45)) == "turn right at the next intersection"
    assert navigation_from_route(math.radians(350)) == "go straight"  # wraps to -10 deg
    assert navigation_from_route(math.radians(60), turn_threshold_deg=90) == "go straight"


def test_cli_writes_loadable_dataset_with_scene_splits(tmp_path):
    from alphadrive_trl.data import load_driving_dataset
    from data_prep.nuscenes import main

    root = build_dataroot(tmp_path / "root", scenes={k: SCENES[k] for k in ("cruise", "stop", "left_turn")})
    output = tmp_path / "out"
    argv = ["--dataroot", str(root), "--output-dir", str(output), "--labeller", "heading",
            "--held-out-scenes", "scene-0002", "--threshold", "heading_stop_end_speed=0.1"]  # fmt: skip
    assert main(argv) == 0
    dataset = load_driving_dataset(str(output))
    assert sorted(dataset) == ["test", "train"]
    assert dataset["test"]["sample_id"] == ["left_turn-0", "left_turn-1"]
    train = {row["sample_id"]: row for row in dataset["train"]}
    assert train["stop-1"]["speed_action"] == "STOP"  # end speed 0 < 0.1
    assert train["cruise-1"]["trajectory"][5] == pytest.approx([30.0, 0.0], abs=1e-3)
    assert train["cruise-1"]["images"][0].size == (16, 8)
    # JSONL output keeps the image paths.
    assert main([*argv, "--output-dir", str(tmp_path / "jsonl"), "--format", "jsonl"]) == 0
    first = json.loads((tmp_path / "jsonl" / "train.jsonl").read_text().splitlines()[0])
    assert first["images"] == [str(root / "samples/CAM_FRONT/cruise-0.jpg")]
    with pytest.raises(SystemExit, match="Unknown labeller threshold"):
        main([*argv, "--output-dir", str(tmp_path / "x"), "--threshold", "nope=1"])
