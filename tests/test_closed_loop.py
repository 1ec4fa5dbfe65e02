"""Closed-loop driving: the plan -> meta-action table, metrics, each policy type on short seeded episodes, the CLI.

Tests that drive the simulator need the optional `sim` extra (highway-env) and skip cleanly without it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from alphadrive_trl.actions import PATH_ACTIONS, SPEED_ACTIONS
from alphadrive_trl.closed_loop import (
    SCENARIOS,
    EpisodeResult,
    comparison_table,
    frame_roles,
    plan_to_meta_action,
    split_policy_name,
    summarize_episodes,
)

SMALL_FRAME = (64, 32)


@pytest.fixture(scope="module")
def sim():
    pytest.importorskip("highway_env")
    from alphadrive_trl import closed_loop

    return closed_loop


# --- plan -> meta-action table (no simulator) ----------------------------------------------------------------------


EXPECTED_LATERAL = {
    # speed: {path: action} on highway/merge
    "KEEP": {"STRAIGHT": "IDLE", "RIGHT_CHANGE": "LANE_RIGHT", "LEFT_CHANGE": "LANE_LEFT", "RIGHT_TURN": "IDLE",
             "LEFT_TURN": "IDLE"},
    "ACCELERATE": {"STRAIGHT": "FASTER", "RIGHT_CHANGE": "LANE_RIGHT", "LEFT_CHANGE": "LANE_LEFT",
                   "RIGHT_TURN": "FASTER", "LEFT_TURN": "FASTER"},
    "DECELERATE": {"STRAIGHT": "SLOWER", "RIGHT_CHANGE": "LANE_RIGHT", "LEFT_CHANGE": "LANE_LEFT",
                   "RIGHT_TURN": "SLOWER", "LEFT_TURN": "SLOWER"},
    "STOP": dict.fromkeys(PATH_ACTIONS, "SLOWER"),
}  # fmt: skip
EXPECTED_LONGITUDINAL = {"KEEP": "IDLE", "ACCELERATE": "FASTER", "DECELERATE": "SLOWER", "STOP": "SLOWER"}


def test_plan_to_meta_action_covers_every_plan():
    for speed in SPEED_ACTIONS:
        for path in PATH_ACTIONS:
            assert plan_to_meta_action(speed, path) == EXPECTED_LATERAL[speed][path], (speed, path)
            # intersection-v0 has no lateral actions: SPEED alone decides.
            assert plan_to_meta_action(speed, path, lateral=False) == EXPECTED_LONGITUDINAL[speed], (speed, path)


def test_plan_to_meta_action_rejects_unknown_speed():
    with pytest.raises(ValueError, match="FAST"):
        plan_to_meta_action("FAST", "STRAIGHT")


def test_frame_roles():
    assert frame_roles(1) == ["top_down"]
    assert frame_roles(3) == ["top_down", "top_down_t-1", "top_down_t-2"]


# --- metrics (no simulator) ----------------------------------------------------------------------------------------


def _result(seed, decisions, crashed, goal, distance, speed, lane_changes, invalid, wall, completion):
    return EpisodeResult("highway", seed, "p", decisions, crashed, goal, distance, speed, lane_changes, invalid, wall,
                         completion)  # fmt: skip


def test_summarize_episodes_hand_worked():
    results = [
        _result(0, 10, True, False, 100.0, 10.0, 1, 2, 1.0, 0.25),
        _result(1, 30, False, True, 600.0, 20.0, 2, 0, 3.0, 1.0),
    ]
    summary = summarize_episodes(results)
    assert summary["episodes"] == 2
    assert summary["decisions"] == 40
    assert summary["crash_rate"] == 0.5
    # Speed is averaged over decisions: (10 * 10 + 30 * 20) / 40.
    assert summary["mean_speed"] == pytest.approx(17.5)
    assert summary["mean_distance"] == 350.0
    assert summary["route_completion"] == 0.5
    assert summary["episode_completion"] == 0.625
    assert summary["lane_changes_per_episode"] == 1.5
    assert summary["invalid_answer_rate"] == 2 / 40
    assert summary["decisions_per_second"] == 10.0
    with pytest.raises(ValueError, match="No episodes"):
        summarize_episodes([])


def test_comparison_table_shows_missing_runs():
    metrics = {"overall": {}, "scenarios": {"highway": summarize_episodes([_result(0, 4, False, True, 40.0, 10.0,
                                                                                   0, 0, 2.0, 1.0)])}}  # fmt: skip
    table = comparison_table([("keep", metrics), ("ckpt", "not run: checkpoint directory ckpt not found")])
    lines = table.splitlines()
    assert lines[0].startswith("| policy | scenario | crash rate |")
    assert lines[2] == "| keep | highway | 0% | 100% | 100% | 10.0 | 40 | 0.0 | 0% | 2.0 |"
    assert "not run: checkpoint directory ckpt not found" in lines[3]


# --- simulator ------------------------------------------------------------------------------------------------------


@pytest.mark.sim
def test_meta_action_index_longitudinal_only(sim):
    env = sim.make_env("intersection", SMALL_FRAME)
    try:
        indexes = env.unwrapped.action_type.actions_indexes
        assert set(indexes) == {"SLOWER", "IDLE", "FASTER"}
        assert sim.meta_action_index(env, "LANE_LEFT") == indexes["IDLE"]
        assert sim.meta_action_index(env, "FASTER") == indexes["FASTER"]
    finally:
        env.close()


@pytest.mark.sim
@pytest.mark.parametrize(
    ("destination", "expected"), [("o1", "turn left"), ("o2", "go straight"), ("o3", "turn right")]
)
def test_route_navigation_at_the_intersection(sim, destination, expected):
    base = SCENARIOS["intersection"]
    scenario = dataclasses.replace(base, config={**base.config, "destination": destination})
    env = sim.make_env(scenario, SMALL_FRAME)
    try:
        sim.reset_env(env, scenario, 0, SMALL_FRAME)
        assert sim.route_navigation(env).startswith(expected)
    finally:
        env.close()


@pytest.mark.sim
@pytest.mark.parametrize("policy_name", ["expert", "keep", "random"])
def test_short_seeded_episode_per_baseline(sim, policy_name):
    env = sim.make_env("merge", SMALL_FRAME)
    try:
        policy = sim.load_policy(policy_name)
        result = sim.run_episode(
            env, "merge", policy, seed=3, max_decisions=4, frame_size=SMALL_FRAME, keep_frames=True
        )
    finally:
        env.close()
    assert result.decisions == 4 and len(result.steps) == 4
    assert len(result.frames) == 5 and result.frames[0].shape == (SMALL_FRAME[1], SMALL_FRAME[0], 3)
    assert result.frames[0].max() > 0  # rendered, not black
    assert all(step.action in sim.META_ACTIONS and step.valid for step in result.steps)
    if policy_name == "keep":
        assert {step.action for step in result.steps} == {"IDLE"}
    assert result.distance > 0 and result.invalid_answers == 0


@pytest.mark.sim
def test_same_seed_same_traffic_and_metrics(sim):
    highway = sim.make_env("highway", SMALL_FRAME)
    intersection = sim.make_env("intersection", SMALL_FRAME)
    try:
        first = sim.run_episode(highway, "highway", sim.ExpertPolicy(), seed=5, max_decisions=6)
        # An intersection episode in between mutates highway-env's IDM class attributes; reset_env restores them.
        sim.run_episode(intersection, "intersection", sim.KeepPolicy(), seed=5, max_decisions=2)
        second = sim.run_episode(highway, "highway", sim.ExpertPolicy(), seed=5, max_decisions=6)
        keep = sim.run_episode(highway, "highway", sim.KeepPolicy(), seed=5, max_decisions=6)
        other_seed = sim.run_episode(highway, "highway", sim.KeepPolicy(), seed=6, max_decisions=6)
    finally:
        highway.close()
        intersection.close()
    assert [dataclasses.astuple(s) for s in first.steps] == [dataclasses.astuple(s) for s in second.steps]
    assert (first.distance, first.mean_speed, first.final_position) == (
        second.distance,
        second.mean_speed,
        second.final_position,
    )
    assert keep.steps[0].position == first.steps[0].position  # the same starting traffic for every policy
    assert other_seed.steps[0].position != first.steps[0].position


@pytest.mark.sim
def test_expert_avoids_the_crashes_of_constant_keep(sim):
    # Seed 0 of both scenarios: constant KEEP crashes (rear-ends slower traffic / ignores crossing traffic).
    for name in ("highway", "intersection"):
        env = sim.make_env(name, SMALL_FRAME)
        try:
            keep = sim.run_episode(env, name, sim.KeepPolicy(), seed=0)
            expert = sim.run_episode(env, name, sim.ExpertPolicy(), seed=0)
        finally:
            env.close()
        assert keep.crashed, name
        assert not expert.crashed and expert.completion == 1.0, name


def drive(sim, scenario, policy, **kwargs):
    """One episode of `scenario` in a fresh environment, closed afterwards."""
    env = sim.make_env(scenario, SMALL_FRAME)
    try:
        return sim.run_episode(env, scenario, policy, **kwargs)
    finally:
        env.close()


@pytest.mark.sim
def test_expert_changes_lanes_behind_slow_traffic(sim):
    result = drive(sim, "highway", sim.ExpertPolicy(), seed=2, max_decisions=12)
    assert any(step.action in ("LANE_LEFT", "LANE_RIGHT") for step in result.steps)
    assert result.lane_changes >= 1 and not result.crashed


@pytest.fixture(scope="module")
def vlm_dirs(tiny_model_dir, tmp_path_factory):
    """The shared tiny model as a meta-action checkpoint and as a trajectory-template checkpoint."""
    root = tmp_path_factory.mktemp("drive_models")
    meta = shutil.copytree(tiny_model_dir, root / "tiny-meta")
    trajectory = shutil.copytree(tiny_model_dir, root / "tiny-trajectory")
    (trajectory / "alphadrive_config.json").write_text(json.dumps({"prompt_template": "trajectory", "max_images": 2}))
    return str(meta), str(trajectory)


@pytest.mark.sim
@pytest.mark.slow
def test_vlm_policy_episode_falls_back_on_invalid_answers(sim, vlm_dirs):
    policy = sim.load_policy(vlm_dirs[0], max_new_tokens=8)
    assert isinstance(policy, sim.VLMPolicy) and policy.history_frames == 0
    result = drive(sim, "highway", policy, seed=1, max_decisions=3, frame_size=SMALL_FRAME)
    assert result.decisions == 3
    assert all(isinstance(step.text, str) for step in result.steps)
    for step in result.steps:
        if step.valid:
            assert step.action == plan_to_meta_action(*step.plan)
        else:
            assert step.action == "IDLE" and step.plan is None
    assert result.invalid_answers == sum(not step.valid for step in result.steps)
    # The parser itself: a valid answer maps through the table, garbage is invalid.
    assert policy.plan_from_text("<think> slow car </think> <answer> DECELERATE, LEFT_CHANGE </answer>", 20.0) == (
        "DECELERATE",
        "LEFT_CHANGE",
    )
    assert policy.plan_from_text("KEEP KEEP", 20.0) is None


@pytest.mark.sim
@pytest.mark.slow
def test_trajectory_policy_drives_from_waypoints(sim, vlm_dirs):
    policy = sim.load_policy(vlm_dirs[1], max_new_tokens=8)
    assert policy.template.name == "trajectory" and policy.history_frames == 1
    # Waypoints 4 m to the left after 3 s at constant speed: the labeller says LEFT_CHANGE, whatever the answer says.
    text = "<answer> KEEP, STRAIGHT </answer> <trajectory> [5.0,0.0] [10.0,0.5] [15.0,1.5] [20.0,2.5] [25.0,3.5] [30.0,4.0] </trajectory>"
    assert policy.plan_from_text(text, 10.0) == ("KEEP", "LEFT_CHANGE")
    assert policy.plan_from_text("<answer> STOP, STRAIGHT </answer>", 10.0) == ("STOP", "STRAIGHT")  # no waypoints
    result = drive(sim, "intersection", policy, seed=2, max_decisions=2, frame_size=SMALL_FRAME)
    assert result.decisions == 2
    assert all(step.action in ("SLOWER", "IDLE", "FASTER") for step in result.steps)


@pytest.mark.sim
@pytest.mark.slow
def test_facts_policy_reads_the_scene_from_the_simulator(sim, tiny_model_dir, tmp_path):
    from alphadrive_trl.closed_loop.scene import scene_description, scene_state

    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "tiny-facts")
    (model_dir / "alphadrive_config.json").write_text(
        json.dumps({"prompt_template": "answer_only_facts", "max_images": 2})
    )
    policy = sim.load_policy(str(model_dir), max_new_tokens=4)
    seen, expected = [], []
    generate = policy.generate

    def recording_generate(frames, ego_speed, navigation, scene_facts=None):
        seen.append((len(frames), scene_facts))
        return generate(frames, ego_speed, navigation, scene_facts)

    def recording_decide(context):  # what the data builder would have written for this decision
        expected.append(scene_description(scene_state(context.env, context.scenario, context.navigation,
                                                      context.ego_speed)))  # fmt: skip
        return type(policy).decide(policy, context)

    policy.generate, policy.decide = recording_generate, recording_decide
    result = drive(sim, "merge", policy, seed=3, max_decisions=2, frame_size=SMALL_FRAME)
    assert result.decisions == 2
    assert [facts for _, facts in seen] == expected
    assert all(facts.startswith("On a ") and "merge section" in facts for facts in expected)
    assert [count for count, _ in seen] == [1, 2]  # the first decision's missing frame is padded in `example`


@pytest.mark.sim
def test_an_intersection_built_first_leaves_later_traffic_unchanged(sim, monkeypatch):
    from alphadrive_trl.closed_loop import scenarios

    scenarios._restore_idm_defaults()
    reference = drive(sim, "merge", sim.ExpertPolicy(), seed=1, frame_size=SMALL_FRAME)
    monkeypatch.setattr(scenarios, "_IDM_DEFAULTS", {})  # as in a fresh process...
    sim.make_env("intersection", SMALL_FRAME).close()  # ...whose first env is an intersection (built = reset once)
    again = drive(sim, "merge", sim.ExpertPolicy(), seed=1, frame_size=SMALL_FRAME)
    assert (again.distance, again.final_position) == (reference.distance, reference.final_position)


@pytest.mark.sim
def test_cli_run_writes_metrics_and_gif(sim, tmp_path):
    out = tmp_path / "keep"
    code = sim.main(["--model", "keep", "--env", "merge", "--episodes", "2", "--seed", "4", "--max-decisions", "3",
                     "--frame-size", "64x32", "--output-dir", str(out)])  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["policy"] == "keep" and metrics["episodes_per_scenario"] == 2
    assert [r["seed"] for r in metrics["episode_results"]] == [4, 5]
    assert set(metrics["overall"]) >= {"crash_rate", "mean_speed", "mean_distance", "route_completion",
                                       "episode_completion", "lane_changes_per_episode", "invalid_answer_rate",
                                       "decisions_per_second"}  # fmt: skip
    assert metrics["overall"]["invalid_answer_rate"] == 0.0
    assert (out / "episode_merge.gif").stat().st_size > 0


@pytest.mark.sim
def test_cli_compare_runs_baselines_despite_a_missing_checkpoint(sim, tmp_path, capsys):
    missing = str(tmp_path / "no-such-checkpoint")
    code = sim.main(["compare", "--models", "keep", "random", missing, "--env", "highway", "--episodes", "1",
                     "--max-decisions", "2", "--no-gif", "--output-dir", str(tmp_path / "cmp")])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert "| keep | highway |" in captured.out and "| random | highway |" in captured.out
    assert "no-such-checkpoint" in captured.out and "not found" in captured.err
    assert (tmp_path / "cmp" / "keep" / "metrics.json").exists()
    assert not os.path.exists(tmp_path / "cmp" / "keep" / "episode_highway.gif")
    assert "| keep | highway |" in (tmp_path / "cmp" / "comparison.md").read_text()


def test_split_policy_name():
    assert split_policy_name("grpo=outputs/sim-demo/grpo") == ("grpo", "outputs/sim-demo/grpo")
    assert split_policy_name("outputs/demo-grpo") == (None, "outputs/demo-grpo")
    assert split_policy_name("keep") == (None, "keep")
    assert split_policy_name("runs/a=b") == (None, "runs/a=b")  # a path holding "=" is not a name


@pytest.mark.sim
def test_cli_compare_names_a_missing_checkpoint_by_its_given_name(sim, tmp_path, capsys):
    missing = str(tmp_path / "no-such-checkpoint")
    code = sim.main(["compare", "--models", "keep", f"sft={missing}", "--env", "highway", "--episodes", "1",
                     "--max-decisions", "2", "--no-gif", "--output-dir", str(tmp_path / "cmp")])  # fmt: skip
    assert code == 0
    assert "| sft | - | not run:" in (tmp_path / "cmp" / "comparison.md").read_text()


@pytest.mark.sim
def test_cli_rejects_unknown_scenario(sim, tmp_path):
    with pytest.raises(SystemExit, match="Unknown scenario 'mars'"):
        sim.main(["--model", "keep", "--env", "mars", "--output-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="not found"):
        sim.main(["--model", str(tmp_path / "nothing"), "--env", "highway", "--output-dir", str(tmp_path)])


def test_speed_profile_of_the_yield_rule():
    from alphadrive_trl.closed_loop import _accelerating_distances

    # From rest at 2 m/s^2 up to 4 m/s (reached at t = 2 s), then cruising.
    distances = _accelerating_distances(0.0, 4.0, 2.0, np.array([1.0, 2.0, 3.0]))
    assert distances.tolist() == [1.0, 4.0, 8.0]


@pytest.mark.sim
def test_rendering_prints_no_xdg_runtime_dir_error(tmp_path):
    """SDL printed `error: XDG_RUNTIME_DIR is invalid or not set` on every run in a session without one."""
    import subprocess
    import sys

    pytest.importorskip("highway_env")
    code = (
        "from alphadrive_trl.closed_loop import make_env\n"
        "env = make_env('highway')\nenv.reset(seed=0)\nprint(env.render().shape)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(160, 320, 3)"
    assert "XDG_RUNTIME_DIR" not in result.stderr
