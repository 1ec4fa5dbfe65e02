"""data_prep.highway_env: screen-frame tracks labelled by the shared labeller, and the dataset builder end to end."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from data_prep.highway_env import HighwayDataConfig, episode_rows, label_episode_steps, screen_to_right_handed


def _track(xs, ys, headings=None, speed=10.0):
    positions = np.stack([np.asarray(xs, float), np.asarray(ys, float)], axis=1)
    headings = np.zeros(len(xs)) if headings is None else np.asarray(headings, float)
    return positions, headings, np.full(len(xs), speed)


def test_screen_to_right_handed_flips_y_and_heading():
    points, yaws = screen_to_right_handed([[3.0, 2.0], [-1.0, -5.0]], [0.25, -1.0])
    assert points.tolist() == [[3.0, -2.0], [-1.0, 5.0]]
    assert yaws.tolist() == [-0.25, 1.0]


@pytest.mark.parametrize(
    ("screen_dy", "expected_path"),
    [(-1.0, "LEFT_CHANGE"), (1.0, "RIGHT_CHANGE"), (0.0, "STRAIGHT")],
)
def test_lane_changes_on_screen(screen_dy, expected_path):
    # 10 m/s along +x; from the second step the ego drifts 1 m per step up (y decreasing = to its left) or down.
    xs = np.arange(8) * 5.0
    ys = np.clip(np.arange(8) - 1, 0, 4) * screen_dy
    labels = label_episode_steps(*_track(xs, ys))
    waypoints, speed, path = labels[0]
    assert (speed, path) == ("KEEP", expected_path)
    assert waypoints.shape == (6, 2)
    assert waypoints[-1].tolist() == [30.0, -4.0 * screen_dy]  # ego frame: y left
    assert labels[1] is not None and all(label is None for label in labels[2:])  # no full 3 s future


@pytest.mark.parametrize(("turn_sign", "expected_path"), [(-1.0, "LEFT_TURN"), (1.0, "RIGHT_TURN")])
def test_turns_on_screen(turn_sign, expected_path):
    # A quarter circle of radius 15 m driven at 5 m/s. On screen (y down) a left turn decreases the heading.
    radius, steps = 15.0, 8
    angles = np.linspace(0.0, math.pi / 2, steps) * turn_sign
    xs = radius * np.sin(np.abs(angles))
    ys = turn_sign * radius * (1 - np.cos(angles))
    labels = label_episode_steps(*_track(xs, ys, headings=angles, speed=5.0))
    assert labels[0][2] == expected_path


def test_stop_and_accelerate():
    stopping = label_episode_steps(*_track([0, 4, 7, 9, 10, 10, 10, 10], np.zeros(8), speed=9.0))
    assert stopping[0][1] == "STOP"
    accelerating = label_episode_steps(*_track([0, 5, 10.5, 16.5, 23, 30, 37.5, 45], np.zeros(8), speed=10.0))
    assert accelerating[0][1] == "ACCELERATE"  # end speed 15 m/s vs 10 m/s now
    senna = label_episode_steps(
        *_track([0, 5, 10.5, 16.5, 23, 30, 37.5, 45], np.zeros(8), speed=10.0), labeller="senna"
    )
    assert senna[0][1] == "ACCELERATE"


def test_crashed_expert_episode_is_dropped():
    steps = [SimpleNamespace(position=(0.0, 0.0), heading=0.0, speed=1.0)] * 3
    result = SimpleNamespace(crashed=True, steps=steps)
    rows, skipped = episode_rows(result, HighwayDataConfig())
    assert rows == [] and skipped == {"expert crashed (episode dropped)": 3}


def test_config_validation():
    with pytest.raises(ValueError, match="labeller"):
        HighwayDataConfig(labeller="fancy")
    with pytest.raises(ValueError, match="horizon"):
        HighwayDataConfig(max_decisions=6)
    with pytest.raises(ValueError, match="stride"):
        HighwayDataConfig(stride=0)


@pytest.mark.sim
def test_a_leftover_build_without_scene_facts_is_not_resumed(tmp_path):
    pytest.importorskip("highway_env")
    from dataclasses import asdict

    from datasets import Dataset

    from data_prep.common import ChunkStore
    from data_prep.highway_env import build_dataset

    config = HighwayDataConfig(scenarios=("highway",), episodes=2, seed=1000, frame_size=(64, 32), max_decisions=8)
    splits = {"train": 0.5, "validation": 0.0, "test": 0.5}
    out = tmp_path / "hw"
    # What an interrupted build of the previous version left: its settings had no column list, its rows no facts.
    old = ChunkStore(out, {"config": asdict(config), "splits": splits, "chunk_episodes": 10})
    old.save(0, Dataset.from_dict({"sample_id": ["stale"], "split": ["train"]}))
    dataset = build_dataset(config, out, splits=splits, progress=False)
    rows = [row for part in dataset.values() for row in part]
    assert rows and "stale" not in {row["sample_id"] for row in rows}
    assert all(row["scene_facts"].startswith("On a ") for row in rows)


@pytest.mark.sim
@pytest.mark.slow
def test_build_dataset_from_short_expert_episodes(tmp_path):
    pytest.importorskip("highway_env")
    from alphadrive_trl.data import load_driving_dataset
    from data_prep.highway_env import build_dataset, main

    config = HighwayDataConfig(
        scenarios=("highway", "intersection"),
        episodes=2,
        seed=1000,
        history_frames=1,
        stride=1,
        frame_size=(64, 32),
        max_decisions=10,
    )
    out = tmp_path / "hw"
    dataset = build_dataset(config, out, splits={"train": 0.5, "validation": 0.0, "test": 0.5}, progress=False)
    # 10 decisions per episode (11 poses with the final one): decisions 5..9 lack a full 3 s future and decision 0
    # lacks a history frame, so decisions 1..4 make rows: 4 per episode, 2 scenarios per split.
    assert {name: len(part) for name, part in dataset.items()} == {"train": 8, "validation": 0, "test": 8}
    reloaded = load_driving_dataset(str(out))  # validates every row against the schema
    train = reloaded["train"]
    row = train[0]
    assert row["source"] == "highway_env"
    for sample in train:  # templated from the simulator state; the label is always among the feasible plans
        assert sample["reasoning"].startswith(("On a ", "Approaching", "Inside", "Leaving"))
        assert sample["reasoning"].startswith(sample["scene_facts"] + " So I ")  # the facts, then the decision
        assert f"{sample['speed_action']}, {sample['path_action']}" in sample["feasible_actions"]
    approaching = [s["scene_facts"] for s in train if s["scene_facts"].startswith("Approaching")]
    assert len(approaching) == 4  # the intersection episode's rows, each with the yield rule's view of the crossing
    assert all(
        any(end in facts for end in ("enough to go.", "if I went now.", "is blocked.")) for facts in approaching
    )
    assert row["image_roles"] == ["top_down", "top_down_t-1"]
    assert row["images"][0].size == (64, 32)
    assert len(row["trajectory"]) == 6
    # Splits are by episode: seed 1000 trains, seed 1001 tests.
    assert {sid.split("-t")[0] for sid in train["sample_id"]} == {
        "highway_env-highway-s1000",
        "highway_env-intersection-s1000",
    }
    assert all("-s1001-" in sid for sid in reloaded["test"]["sample_id"])
    assert len(set(train["sample_id"]) | set(reloaded["test"]["sample_id"])) == 16
    # The first waypoint is 0.5 s of driving at about the current speed.
    for sample in train:
        assert abs(sample["trajectory"][0][0] - 0.5 * sample["ego_speed"]) < 2.0
    assert "| KEEP |" in (out / "README.md").read_text()
    with pytest.raises(FileExistsError):
        build_dataset(config, out, progress=False)
    with pytest.raises(SystemExit):
        main(["--output-dir", str(tmp_path / "bad"), "--env", "mars"])
