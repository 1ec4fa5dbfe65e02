"""The synthetic scene generator: every rule on constructed scenes, reachability of all 20 plans, trajectory/labeller
consistency, determinism (also across worker counts), resume, the CLI, the dataset card and the preview."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image

from alphadrive_trl.actions import ALL_PLANS, parse_plan, plan_to_string
from alphadrive_trl.data import load_driving_dataset
from alphadrive_trl.labelling import label_trajectory
from alphadrive_trl.trajectory import is_plausible
from data_prep import synthetic
from data_prep.synthetic import (
    NAV_CHANGE,
    NAV_STRAIGHT,
    NAV_TURN,
    GeneratorConfig,
    Scene,
    Vehicle,
    build_dataset,
    describe_scene,
    expert_trajectory,
    generate_sample,
    label_scene,
    sample_scene,
)

LEFT_TURN_NAV, RIGHT_TURN_NAV = NAV_TURN["left"], NAV_TURN["right"]
LEFT_CHANGE_NAV, RIGHT_CHANGE_NAV = NAV_CHANGE["left"], NAV_CHANGE["right"]

# (scene, expected plan, why) — one or more per rule of the module docstring.
RULE_CASES = [
    # Rule 5: free road, cruise 12 m/s +- 3.
    (Scene(ego_speed=12.0), ("KEEP", "STRAIGHT"), "free road at cruise speed"),
    (Scene(ego_speed=5.0), ("ACCELERATE", "STRAIGHT"), "free road, slow"),
    (Scene(ego_speed=16.0), ("DECELERATE", "STRAIGHT"), "free road, fast"),
    (Scene(ego_speed=12.0, speed_limit=50 / 3.6), ("KEEP", "STRAIGHT"), "posted 50 km/h"),
    (Scene(ego_speed=12.0, speed_limit=70 / 3.6), ("ACCELERATE", "STRAIGHT"), "posted 70 km/h, 12 m/s is slow"),
    (Scene(ego_speed=12.0, speed_limit=30 / 3.6), ("DECELERATE", "STRAIGHT"), "posted 30 km/h, 12 m/s is fast"),
    # Rule 1: red light: STOP within 1.5 v, DECELERATE beyond, STOP when crawling.
    (Scene(ego_speed=10.0, junction_distance=12.0, light="red"), ("STOP", "STRAIGHT"), "red, 11 m <= 15 m"),
    (Scene(ego_speed=10.0, junction_distance=30.0, light="red"), ("DECELERATE", "STRAIGHT"), "red, 29 m > 15 m"),
    (Scene(ego_speed=2.0, junction_distance=30.0, light="red"), ("STOP", "STRAIGHT"), "red, crawling"),
    (Scene(ego_speed=0.0, junction_distance=3.0, light="red"), ("STOP", "STRAIGHT"), "standing at red"),
    (Scene(ego_speed=10.0, junction_distance=12.0, light="green"), ("KEEP", "STRAIGHT"), "green light"),
    # Rule 1: yellow: stop when the braking distance v^2/6 fits before the line, else go on.
    (Scene(ego_speed=6.0, junction_distance=8.0, light="yellow"), ("STOP", "STRAIGHT"), "yellow, 6 m <= 7 m"),
    (Scene(ego_speed=12.0, junction_distance=8.0, light="yellow"), ("KEEP", "STRAIGHT"), "yellow, 24 m > 7 m"),
    # Rule 1: pedestrian on the crossing; cones with no free lane.
    (Scene(ego_speed=8.0, crosswalk_distance=10.0, pedestrian=True), ("STOP", "STRAIGHT"), "pedestrian close"),
    (Scene(ego_speed=8.0, crosswalk_distance=40.0, pedestrian=True), ("DECELERATE", "STRAIGHT"), "pedestrian far"),
    (Scene(ego_speed=10.0, crosswalk_distance=10.0), ("KEEP", "STRAIGHT"), "empty crossing"),
    (Scene(ego_speed=8.0, num_lanes=1, cones_distance=10.0), ("STOP", "STRAIGHT"), "cones, single lane"),
    # Rule 2: lead car.
    (
        Scene(ego_speed=10.0, lead=Vehicle(gap=20.0, speed=4.0, braking=True)),
        ("DECELERATE", "STRAIGHT"),
        "braking lead at 2 s",
    ),
    (Scene(ego_speed=10.0, lead=Vehicle(gap=40.0, speed=4.0, braking=True)), ("KEEP", "STRAIGHT"), "braking at 4 s"),
    (Scene(ego_speed=3.0, lead=Vehicle(gap=5.0, speed=0.0, braking=True)), ("STOP", "STRAIGHT"), "crawling, braking"),
    (Scene(ego_speed=12.0, lead=Vehicle(gap=20.0, speed=6.0)), ("DECELERATE", "STRAIGHT"), "closing 6 m/s, 3.3 s"),
    (Scene(ego_speed=12.0, lead=Vehicle(gap=8.0, speed=12.0)), ("DECELERATE", "STRAIGHT"), "tailgating, 0.7 s"),
    (Scene(ego_speed=12.0, lead=Vehicle(gap=30.0, speed=12.0)), ("KEEP", "STRAIGHT"), "lead at a safe gap"),
    # Rule 3: turns need the navigation (text) and a close junction (picture).
    (Scene(ego_speed=6.0, navigation=LEFT_TURN_NAV, junction_distance=2.0), ("KEEP", "LEFT_TURN"), "turn left"),
    (Scene(ego_speed=6.0, navigation=RIGHT_TURN_NAV, junction_distance=2.0), ("KEEP", "RIGHT_TURN"), "turn right"),
    (Scene(ego_speed=6.0, navigation=NAV_STRAIGHT, junction_distance=2.0), ("ACCELERATE", "STRAIGHT"), "straight"),
    (Scene(ego_speed=6.0, navigation=LEFT_TURN_NAV, junction_distance=20.0), ("ACCELERATE", "STRAIGHT"), "far"),
    (Scene(ego_speed=6.0, navigation=LEFT_TURN_NAV), ("ACCELERATE", "STRAIGHT"), "no junction"),
    (Scene(ego_speed=2.0, navigation=LEFT_TURN_NAV, junction_distance=2.0), ("ACCELERATE", "LEFT_TURN"), "slow turn"),
    (Scene(ego_speed=12.0, navigation=LEFT_TURN_NAV, junction_distance=2.0), ("DECELERATE", "LEFT_TURN"), "fast"),
    (
        Scene(ego_speed=3.0, navigation=LEFT_TURN_NAV, junction_distance=3.0, light="red"),
        ("STOP", "STRAIGHT"),
        "red light before the turn",
    ),
    (
        Scene(ego_speed=6.0, navigation=RIGHT_TURN_NAV, junction_distance=1.0, branch_pedestrian="right"),
        ("STOP", "RIGHT_TURN"),
        "pedestrian on the road we turn into",
    ),
    (
        Scene(ego_speed=6.0, navigation=RIGHT_TURN_NAV, junction_distance=1.0, branch_pedestrian="left"),
        ("KEEP", "RIGHT_TURN"),
        "pedestrian on the other side",
    ),
    # Rule 4: lane changes need a lane (markings) that is free (side camera / front camera).
    (Scene(ego_speed=12.0, navigation=LEFT_CHANGE_NAV, ego_lane=1), ("KEEP", "LEFT_CHANGE"), "change left"),
    (Scene(ego_speed=12.0, navigation=RIGHT_CHANGE_NAV, ego_lane=0), ("KEEP", "RIGHT_CHANGE"), "change right"),
    (Scene(ego_speed=12.0, navigation=LEFT_CHANGE_NAV, ego_lane=0), ("KEEP", "STRAIGHT"), "no lane on the left"),
    (
        Scene(ego_speed=12.0, navigation=LEFT_CHANGE_NAV, ego_lane=1, left_vehicle=Vehicle(gap=0.0, speed=12.0)),
        ("KEEP", "STRAIGHT"),
        "car alongside (side camera)",
    ),
    (
        Scene(ego_speed=12.0, navigation=LEFT_CHANGE_NAV, ego_lane=1, left_vehicle=Vehicle(gap=10.0, speed=12.0)),
        ("KEEP", "STRAIGHT"),
        "car close ahead in the target lane",
    ),
    (
        Scene(ego_speed=12.0, navigation=LEFT_CHANGE_NAV, ego_lane=1, left_vehicle=Vehicle(gap=30.0, speed=12.0)),
        ("KEEP", "LEFT_CHANGE"),
        "car far ahead in the target lane",
    ),
    (Scene(ego_speed=5.0, navigation=LEFT_CHANGE_NAV, ego_lane=1), ("ACCELERATE", "LEFT_CHANGE"), "slow change"),
    (Scene(ego_speed=17.0, navigation=RIGHT_CHANGE_NAV), ("DECELERATE", "RIGHT_CHANGE"), "fast change"),
    (
        Scene(ego_speed=10.0, num_lanes=3, ego_lane=1, cones_distance=20.0),
        ("KEEP", "LEFT_CHANGE"),
        "cones: left preferred",
    ),
    (
        Scene(ego_speed=10.0, num_lanes=2, ego_lane=0, cones_distance=20.0),
        ("KEEP", "RIGHT_CHANGE"),
        "cones: only the right lane",
    ),
    (
        Scene(ego_speed=10.0, ego_lane=1, navigation=LEFT_CHANGE_NAV, junction_distance=13.0, light="red"),
        ("STOP", "LEFT_CHANGE"),
        "change, then stop at red",
    ),
    (
        Scene(ego_speed=10.0, ego_lane=1, navigation=LEFT_CHANGE_NAV, junction_distance=6.0, light="red"),
        ("STOP", "STRAIGHT"),
        "stop line too close to change lanes",
    ),
]


@pytest.mark.parametrize(("scene", "expected", "why"), RULE_CASES, ids=[case[2] for case in RULE_CASES])
def test_rule_gives_its_label(scene, expected, why):
    decision = label_scene(scene)
    assert decision.plan == expected, f"{why}: {decision.reasoning}"
    assert plan_to_string(*expected) in decision.feasible
    assert decision.reasoning


@pytest.mark.parametrize(("scene", "expected", "why"), RULE_CASES, ids=[case[2] for case in RULE_CASES])
def test_expert_trajectory_agrees_with_heading_labeller(scene, expected, why):
    trajectory = expert_trajectory(scene, label_scene(scene))
    assert np.asarray(trajectory).shape == (6, 2)
    assert label_trajectory(trajectory, scene.ego_speed, mode="heading") == expected, why


def test_trajectory_shapes_follow_the_label():
    keep = expert_trajectory(Scene(ego_speed=10.0), label_scene(Scene(ego_speed=10.0)))
    assert [p[0] for p in keep] == pytest.approx([5, 10, 15, 20, 25, 30]) and all(p[1] == 0 for p in keep)
    slow = Scene(ego_speed=16.0)
    spacing = np.diff([0.0] + [p[0] for p in expert_trajectory(slow, label_scene(slow))])
    assert (np.diff(spacing) < 0).all()  # decelerate: decreasing spacing
    change = Scene(ego_speed=12.0, navigation=LEFT_CHANGE_NAV, ego_lane=1)
    assert expert_trajectory(change, label_scene(change))[-1][1] == pytest.approx(3.5)
    turn = Scene(ego_speed=6.0, navigation=RIGHT_TURN_NAV, junction_distance=2.0)
    ys = [p[1] for p in expert_trajectory(turn, label_scene(turn))]
    assert ys[-1] < -3 and all(b <= a for a, b in zip(ys, ys[1:]))  # curving right


def test_feasible_actions_cover_ambiguous_scenes():
    # Behind a braking car 2.5 s ahead: slowing is the label, keeping the speed or overtaking on a free lane is fine.
    scene = Scene(ego_speed=10.0, num_lanes=2, ego_lane=1, lead=Vehicle(gap=25.0, speed=5.0, braking=True))
    decision = label_scene(scene)
    assert decision.plan == ("DECELERATE", "STRAIGHT")
    assert set(decision.feasible) == {"DECELERATE, STRAIGHT", "KEEP, STRAIGHT", "KEEP, LEFT_CHANGE"}
    # Cones with both sides free: either change.
    cones = label_scene(Scene(ego_speed=12.0, num_lanes=3, ego_lane=1, cones_distance=20.0))
    assert set(cones.feasible) == {"KEEP, LEFT_CHANGE", "KEEP, RIGHT_CHANGE"}
    # Speed at the band edge: both words.
    edge = label_scene(Scene(ego_speed=9.5))
    assert edge.plan == ("KEEP", "STRAIGHT") and set(edge.feasible) == {"ACCELERATE, STRAIGHT", "KEEP, STRAIGHT"}
    assert all(parse_plan(plan) for plan in decision.feasible + cones.feasible + edge.feasible)


@pytest.mark.parametrize("difficulty", ["easy", "hard"])
def test_every_plan_is_reachable_and_consistent(difficulty):
    cameras = {"front_left", "front_right"}
    for target in ALL_PLANS:
        for seed in range(6):
            scene, decision = sample_scene(random.Random(f"{target}{seed}"), target, difficulty, cameras, 1)
            assert decision == label_scene(scene)
            assert decision.plan == target, (target, scene, decision.reasoning)
            trajectory = expert_trajectory(scene, decision)
            assert label_trajectory(trajectory, scene.ego_speed, mode="heading") == target, (scene, trajectory)


def test_generated_rows_are_consistent_with_the_labeller():
    for difficulty in ("easy", "hard"):
        config = GeneratorConfig(num_samples=300, seed=3, difficulty=difficulty, num_history_frames=1)
        for index in range(300):
            row = generate_sample(config, index)
            plan = (row["speed_action"], row["path_action"])
            assert label_trajectory(row["trajectory"], row["ego_speed"], mode="heading") == plan, row["sample_id"]
            assert is_plausible(row["trajectory"], ego_speed=row["ego_speed"]), row["sample_id"]
            assert plan_to_string(*plan) in row["feasible_actions"]


def test_cues_only_a_missing_view_could_show_are_not_used():
    # Without side cameras a car alongside would be invisible; without history frames a lead that is slower but shows
    # no brake lights would be too. The sampler uses neither then (and does with the views).
    for views, expect_hidden in ((({"front_left", "front_right"}, 1), True), ((set(), 0), False)):
        alongside = silent_slow_lead = False
        for seed in range(300):
            for target in (("KEEP", "STRAIGHT"), ("DECELERATE", "STRAIGHT")):
                scene, _ = sample_scene(random.Random(seed), target, "hard", *views)
                sides = (scene.left_vehicle, scene.right_vehicle)
                alongside |= any(v is not None and v.gap < synthetic.ALONGSIDE for v in sides)
                lead = scene.lead
                silent_slow_lead |= lead is not None and not lead.braking and lead.speed < scene.ego_speed - 3
        assert alongside == expect_hidden and silent_slow_lead == expect_hidden


def test_same_seed_same_bytes_and_different_seed_differs():
    config = GeneratorConfig(num_samples=10, seed=7, num_history_frames=1, cameras=("front", "front_left"))
    first = [generate_sample(config, i) for i in range(10)]
    again = [generate_sample(config, i) for i in range(10)]
    assert first == again
    other = [generate_sample(GeneratorConfig(num_samples=10, seed=8), i) for i in range(10)]
    assert [r["images"][0]["bytes"] for r in first] != [r["images"][0]["bytes"] for r in other]
    assert [r["ego_speed"] for r in first] != [r["ego_speed"] for r in other]


def test_multi_image_rows():
    config = GeneratorConfig(num_samples=5, num_history_frames=2, cameras=("front", "front_left", "front_right"))
    row = next(row for row in (generate_sample(config, i) for i in range(20)) if row["ego_speed"] > 1)
    assert row["image_roles"] == ["front", "front_t-1", "front_t-2", "front_left", "front_right"]
    images = [Image.open(io.BytesIO(image["bytes"])) for image in row["images"]]
    assert all(image.size == (160, 96) and image.mode == "RGB" for image in images)
    assert len({image["bytes"] for image in row["images"]}) == 5  # every view differs


def test_png_encoder_round_trips_pixels():
    scene = Scene(ego_speed=8.0, junction_distance=15.0, light="red", lead=Vehicle(20.0, 5.0, True))
    view = synthetic.render_view(scene, 96, 64)
    decoded = Image.open(io.BytesIO(synthetic.encode_png(view)))
    assert decoded.size == (96, 64)
    assert np.array_equal(np.asarray(decoded), np.asarray(view))


def test_config_errors():
    with pytest.raises(ValueError, match="cameras must start with 'front'"):
        GeneratorConfig(cameras=("front_left", "front"))
    with pytest.raises(ValueError, match="difficulty"):
        GeneratorConfig(difficulty="medium")
    with pytest.raises(ValueError, match="num_samples"):
        GeneratorConfig(num_samples=0)


def test_build_is_identical_across_worker_counts_and_loads(tmp_path):
    config = GeneratorConfig(num_samples=60, seed=1, cameras=("front", "front_right"))
    one = build_dataset(config, tmp_path / "one", num_workers=1, chunk_size=25, progress=False)
    two = build_dataset(config, tmp_path / "two", num_workers=2, chunk_size=25, progress=False)
    assert {k: len(v) for k, v in one.items()} == {"train": 48, "validation": 6, "test": 6}
    for split in one:
        assert one[split].data.table.equals(two[split].data.table)
    loaded = load_driving_dataset(tmp_path / "one")  # validates every row
    assert loaded["test"][0]["images"][1].size == (160, 96)
    card = (tmp_path / "one" / "README.md").read_text()
    assert "| SPEED \\ PATH |" in card and "Rules" in card and "STOP_REACH_TIME" not in card
    assert "red light" in card and "front,front_right" in card
    assert not (tmp_path / "one.partial").exists()


def test_build_resumes_after_an_interruption(tmp_path, monkeypatch):
    config = GeneratorConfig(num_samples=40, seed=2)
    real_chunk = synthetic.build._generate_chunk
    calls = []

    def failing(args):
        calls.append(args[1])
        if len(calls) > 2:
            raise KeyboardInterrupt  # the job dies while building the third part
        return real_chunk(args)

    monkeypatch.setattr(synthetic.build, "_generate_chunk", failing)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(config, tmp_path / "out", chunk_size=10, progress=False)
    assert not (tmp_path / "out").exists() and (tmp_path / "out.partial" / "chunk-00001").exists()
    calls.clear()
    monkeypatch.setattr(synthetic.build, "_generate_chunk", lambda args: calls.append(args[1]) or real_chunk(args))
    resumed = build_dataset(config, tmp_path / "out", chunk_size=10, progress=False)
    assert calls == [20, 30]  # chunks 0 and 1 were reused
    fresh = build_dataset(config, tmp_path / "fresh", chunk_size=10, progress=False)
    for split in resumed:
        assert resumed[split].data.table.equals(fresh[split].data.table)
    with pytest.raises(FileExistsError, match="overwrite"):
        build_dataset(config, tmp_path / "out", chunk_size=10, progress=False)


def test_cli_writes_dataset_and_preview(tmp_path, capsys):
    out, preview = tmp_path / "data", tmp_path / "sheet.png"
    args = ["--output-dir", str(out), "--num-samples", "20", "--seed", "4", "--image-size", "64x48"]
    assert synthetic.main([*args, "--preview", str(preview), "--preview-count", "6", "--difficulty", "hard"]) == 0
    dataset = load_driving_dataset(out)
    assert dataset["train"][0]["images"][0].size == (64, 48)
    assert dataset["train"][0]["sample_id"].startswith("synthetic-hard-s4-")
    sheet = Image.open(preview)
    assert sheet.width >= 4 * 64 and sheet.height >= 2 * 48
    with pytest.raises(SystemExit):
        synthetic.main(args)  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        synthetic.main(["--output-dir", str(tmp_path / "x"), "--image-size", "big"])


@pytest.mark.parametrize(
    ("num_samples", "expected"),
    [
        (1, {"train": 1}),
        (3, {"train": 2, "test": 1}),
        (7, {"train": 6, "validation": 1}),
        (8, {"train": 6, "validation": 1, "test": 1}),
    ],
)
def test_tiny_builds_leave_out_empty_splits_and_load(num_samples, expected, tmp_path, caplog):
    """`--num-samples 1..7` raised IndexError, or wrote an empty split that `load_from_disk` could not read."""
    out = tmp_path / "tiny"
    args = ["--output-dir", str(out), "--num-samples", str(num_samples), "--image-size", "32x24"]
    with caplog.at_level("WARNING", logger="data_prep.common"):
        assert synthetic.main(args) == 0
    dataset = load_driving_dataset(out)
    assert {name: len(split) for name, split in dataset.items()} == expected
    missing = [name for name in ("train", "validation", "test") if name not in expected]
    assert caplog.messages == (
        [f"No rows for split(s) {', '.join(missing)}: left out of the dataset (too few samples for them)."]
        if missing
        else []
    )
    assert (
        "Splits: " + ", ".join(f"{name} {expected.get(name, 0)}" for name in ("train", "validation", "test"))
        in (out / "README.md").read_text()
    )


def test_save_splits_refuses_an_all_empty_dataset(tmp_path):
    from datasets import Dataset, DatasetDict

    from data_prep.common import save_splits

    empty = Dataset.from_dict({"a": [1]}).select([])
    with pytest.raises(ValueError, match=r"^every split \(train, test\) is empty; there is nothing to save$"):
        save_splits(DatasetDict({"train": empty, "test": empty}), tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "scene, cameras, history, expected",
    [
        (
            Scene(ego_speed=8.0, junction_distance=10.0, light="red"),
            (),
            0,
            "A road with two lanes; we are in the left lane. An intersection 10 m ahead with a red light.",
        ),
        (
            Scene(
                ego_speed=10.0,
                num_lanes=3,
                ego_lane=1,
                crosswalk_distance=14.4,
                pedestrian=True,
                speed_limit=50 / 3.6,
                sidewalk_pedestrian=True,
            ),
            (),
            0,
            "A road with three lanes; we are in the middle lane. A sign shows a speed limit of 50 km/h. A pedestrian "
            "is on the zebra crossing 14 m ahead. A pedestrian walks on the sidewalk.",
        ),
        (  # a closing lead without brake lights: its speed needs a history frame; a car alongside needs the camera
            Scene(
                ego_speed=12.0,
                ego_lane=1,
                lead=Vehicle(gap=20.0, speed=7.0),
                left_vehicle=Vehicle(gap=1.0, speed=12.0),
                cones_distance=25.0,
            ),
            ("front_left",),
            1,
            "A road with two lanes; we are in the right lane. Cones close our lane 25 m ahead. A car 20 m ahead in "
            "our lane with its brake lights off, 5 m/s slower than us. A car alongside us in the left lane.",
        ),
        (
            Scene(
                ego_speed=12.0,
                ego_lane=1,
                lead=Vehicle(gap=20.0, speed=7.0),
                left_vehicle=Vehicle(gap=1.0, speed=12.0),
            ),
            (),
            0,
            "A road with two lanes; we are in the right lane. A car 20 m ahead in our lane with its brake lights off.",
        ),
        (Scene(ego_speed=5.0, num_lanes=1), (), 0, "A road with one lane. Nothing else is on the road ahead."),
    ],
)
def test_describe_scene_states_what_the_views_show(scene, cameras, history, expected):
    assert describe_scene(scene, set(cameras), history) == expected


def test_captions_name_no_decision_and_build_a_loadable_dataset(tmp_path):
    config = GeneratorConfig(num_samples=40, seed=3, captions=True, cameras=("front", "front_left", "front_right"))
    rows = [generate_sample(config, index) for index in range(40)]
    vocabulary = {"KEEP", "ACCELERATE", "DECELERATE", "STOP", "STRAIGHT", "TURN", "CHANGE"}
    for row in rows:
        words = set(row["caption"].upper().replace(".", " ").replace(",", " ").replace(";", " ").split())
        assert not words & vocabulary, row["caption"]
        assert "we stop" not in row["caption"] and "slow down" not in row["caption"]
    plain = generate_sample(GeneratorConfig(num_samples=40, seed=3, cameras=config.cameras), 0)
    assert "caption" not in plain and {k: v for k, v in rows[0].items() if k != "caption"} == plain
    dataset = build_dataset(config, tmp_path / "captions", progress=False)
    assert dataset["train"][0]["caption"] == rows[0]["caption"]
    loaded = load_driving_dataset(tmp_path / "captions")  # extra columns survive validation
    assert "caption" in loaded["train"].column_names
