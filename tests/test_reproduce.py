"""The reproduction study's scheduler (`benchmarks/reproduce.py`); the study itself is `make reproduce`."""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "reproduce", Path(__file__).resolve().parent.parent / "benchmarks" / "reproduce.py"
)
reproduce = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reproduce)


def recorder(log: list, lock: threading.Lock, name: str, seconds: float = 0.0):
    def task():
        with lock:
            log.append(("start", name))
        time.sleep(seconds)
        with lock:
            log.append(("end", name))
        return name

    return task


def test_task_graph_respects_dependencies_and_runs_independent_tasks_together():
    log, lock = [], threading.Lock()
    tasks = {
        "a": ([], recorder(log, lock, "a", 0.2)),
        "b": ([], recorder(log, lock, "b", 0.2)),
        "a2": (["a"], recorder(log, lock, "a2")),
        "ab": (["a", "b"], recorder(log, lock, "ab")),
    }
    reproduce.run_task_graph(tasks, jobs=2)
    assert sorted(name for event, name in log if event == "end") == ["a", "a2", "ab", "b"]
    # Both roots start before either ends (two workers); dependants start only after their dependencies end.
    assert log[:2] == [("start", "a"), ("start", "b")]
    for task, deps in [("a2", ["a"]), ("ab", ["a", "b"])]:
        for dep in deps:
            assert log.index(("end", dep)) < log.index(("start", task))


def test_task_graph_with_one_worker_runs_the_first_ready_task_in_the_given_order():
    log, lock = [], threading.Lock()
    tasks = {name: (deps, recorder(log, lock, name)) for name, deps in [("x", []), ("y", ["x"]), ("z", [])]}
    reproduce.run_task_graph(tasks, jobs=1)
    assert log == [("start", "x"), ("end", "x"), ("start", "y"), ("end", "y"), ("start", "z"), ("end", "z")]


def test_task_graph_stops_on_failure_and_on_missing_dependencies():
    ran = []

    def fail():
        raise SystemExit("sft failed (exit 1)")

    with pytest.raises(SystemExit, match="sft failed"):
        reproduce.run_task_graph({"sft": ([], fail), "grpo": (["sft"], lambda: ran.append("grpo"))}, jobs=2)
    assert ran == []
    with pytest.raises(RuntimeError, match="Unsatisfiable task dependencies: {'grpo': \\['nope'\\]}"):
        reproduce.run_task_graph({"grpo": (["nope"], lambda: None)}, jobs=2)


def test_study_jobs_take_the_whole_demo_step_in_one_process(tmp_path, monkeypatch):
    # The demo recipes' batches are per CPU rank (`make` runs 2 ranks); each study job runs in one process, so it
    # passes both ranks' batch: 16 scenes an SFT step, 2 scenes x 8 generations a GRPO step, as in the demo.
    study = reproduce.Study(reproduce.parse_args(["--work-dir", str(tmp_path), "--results-dir", str(tmp_path)]))
    commands = []
    monkeypatch.setattr(study, "run", lambda name, cmd, marker: commands.append(cmd))
    study.sft("sft20", 0, tmp_path / "base", ["--stage", "sft"])
    study.grpo("sft20_grpo", 0, tmp_path / "sft20", ["--stage", "grpo"])
    study.grpo("sft20_reasoning_grpo", 0, tmp_path / "r", [], recipe=reproduce.REASONING_GRPO_RECIPE)
    study.grpo("sft20_grpo_safety", 0, tmp_path / "sft20", [], recipe=reproduce.SAFETY_GRPO_RECIPE)
    study.grpo("sft20_grpo_coverage", 0, tmp_path / "sft20", [], recipe=reproduce.COVERAGE_GRPO_RECIPE)
    study.grpo("sft20_grpo_expert", 0, tmp_path / "sft20", [], recipe=reproduce.EXPERT_GRPO_RECIPE)
    for cmd in commands:
        flags = dict(zip(cmd[3::2], cmd[4::2]))
        assert flags["--per_device_train_batch_size"] == "16", cmd


def test_navigation_overrides_add_a_warm_up_that_repeats_them_and_grpo_from_it(tmp_path, monkeypatch):
    commands = []

    def study_tasks(*flags):
        args = ["--work-dir", str(tmp_path), "--results-dir", str(tmp_path), "--base-model", "base", "--seeds", "0"]
        study = reproduce.Study(reproduce.parse_args([*args, "--skip-reasoning", *flags]))
        monkeypatch.setattr(study, "run", lambda name, cmd, marker: commands.append(cmd))
        graph = {}
        monkeypatch.setattr(reproduce, "run_task_graph", lambda tasks, jobs: graph.update(tasks))
        study.execute()
        return graph

    assert not any("nav" in key for key in study_tasks())
    tasks = study_tasks("--navigation-overrides", "3")
    commands.clear()
    tasks["0/sft20_nav"][1]()
    tasks["0/sft20_nav_grpo"][1]()
    warm_up, grpo = (dict(zip(cmd[3::2], cmd[4::2])) for cmd in commands)
    assert warm_up["--repeat_navigation_overrides"] == "3" and warm_up["--stage"] == "sft"
    assert warm_up["--output_dir"] == str(tmp_path / "seed0" / "sft20_nav")
    assert grpo["--model_name_or_path"] == warm_up["--output_dir"] and "--repeat_navigation_overrides" not in grpo
    assert tasks["0/sft20_nav_grpo"][0] == ["0/sft20_nav"] and tasks["0/sft20_nav_grpo/eval"][0] == [
        "0/sft20_nav_grpo"
    ]


def _grpo_flags(tmp_path, monkeypatch, study_flags, arms):
    """The study's task graph for seed 0 with `study_flags`, and the flags of the GRPO commands of `arms`."""
    args = ["--work-dir", str(tmp_path), "--results-dir", str(tmp_path), "--base-model", "base", "--seeds", "0"]
    study = reproduce.Study(reproduce.parse_args([*args, "--skip-reasoning", *study_flags]))
    commands, graph = [], {}
    monkeypatch.setattr(study, "run", lambda name, cmd, marker: commands.append(cmd))
    monkeypatch.setattr(reproduce, "run_task_graph", lambda tasks, jobs: graph.update(tasks))
    study.execute()
    commands.clear()  # the data builds `execute` runs up front
    for arm in arms:
        graph[f"0/{arm}"][1]()
    return graph, [dict(zip(cmd[3::2], cmd[4::2])) for cmd in commands]


def test_long_grpo_steps_add_grpo_from_the_same_warm_up_for_that_many_steps(tmp_path, monkeypatch):
    graph, (demo, long, safety) = _grpo_flags(
        tmp_path,
        monkeypatch,
        ["--long-grpo-steps", "2400", "--long-grpo-safety"],
        ["sft20_grpo", "sft20_grpo_long", "sft20_grpo_safety_long"],
    )
    assert long["--max_steps"] == safety["--max_steps"] == "2400"
    assert demo["--max_steps"] == str(reproduce.DEMO_GRPO_STEPS)
    assert long["--config"] == reproduce.GRPO_RECIPE and safety["--config"] == reproduce.SAFETY_GRPO_RECIPE
    assert safety["--output_dir"] == str(tmp_path / "seed0" / "sft20_grpo_safety_long")
    assert long["--model_name_or_path"] == demo["--model_name_or_path"] == str(tmp_path / "seed0" / "sft20")
    assert graph["0/sft20_grpo_long"][0] == ["0/sft20"]
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--long-grpo-safety"])


@pytest.mark.parametrize(
    ("flag", "arm", "recipe"),
    [
        ("--with-coverage", "sft20_grpo_coverage", reproduce.COVERAGE_GRPO_RECIPE),
        ("--with-expert", "sft20_grpo_expert", reproduce.EXPERT_GRPO_RECIPE),
    ],
)
def test_recipe_arms_run_their_recipe_from_the_same_warm_up(tmp_path, monkeypatch, flag, arm, recipe):
    graph, (demo, variant) = _grpo_flags(tmp_path, monkeypatch, [flag], ["sft20_grpo", arm])
    assert variant["--config"] == recipe and demo["--config"] == reproduce.GRPO_RECIPE
    assert variant["--max_steps"] == demo["--max_steps"] == str(reproduce.DEMO_GRPO_STEPS)
    assert variant["--model_name_or_path"] == demo["--model_name_or_path"] == str(tmp_path / "seed0" / "sft20")
    assert variant["--output_dir"] == str(tmp_path / "seed0" / arm)
    assert graph[f"0/{arm}"][0] == ["0/sft20"]


def test_sft_continue_arm_sees_as_many_grpo_split_scenes_as_grpo_draws(tmp_path, monkeypatch):
    # GRPO: 1,200 steps x 2 scenes (16 completions, 8 per scene); SFT: 16 scenes a step -> 150 steps on that split.
    assert (reproduce.GRPO_SCENES_PER_STEP, reproduce.SFT_SCENES_PER_STEP) == (2, 16)
    arms = ["sft20_grpo", "sft20_sft", "sft20_sft2", "sft20_sft_grpo_expert"]
    graph, (grpo, cont, cont2, after) = _grpo_flags(tmp_path, monkeypatch, ["--with-sft-continue"], arms)
    assert cont["--config"] == cont2["--config"] == reproduce.SFT_RECIPE and grpo["--config"] == reproduce.GRPO_RECIPE
    assert (cont["--stage"], cont["--max_steps"]) == ("grpo", "150") and grpo["--stage"] == "grpo"
    assert (cont2["--stage"], cont2["--max_steps"]) == ("grpo", "300")  # the label passes of sft20_sft -> GRPO
    sft20 = str(tmp_path / "seed0" / "sft20")
    assert cont["--model_name_or_path"] == cont2["--model_name_or_path"] == grpo["--model_name_or_path"] == sft20
    assert cont["--output_dir"] == str(tmp_path / "seed0" / "sft20_sft") and "--learning_rate" not in cont
    assert graph["0/sft20_sft"][0] == ["0/sft20"] and graph["0/sft20_sft/eval"][0] == ["0/sft20_sft"]
    # The demo's GRPO from the continued warm-up, on the same split, as many steps as the other GRPO arms.
    assert after["--config"] == reproduce.EXPERT_GRPO_RECIPE and after["--stage"] == "grpo"
    assert after["--model_name_or_path"] == str(tmp_path / "seed0" / "sft20_sft")
    assert after["--max_steps"] == grpo["--max_steps"] and graph["0/sft20_sft_grpo_expert"][0] == ["0/sft20_sft"]
    assert "0/sft20_sft" not in _grpo_flags(tmp_path, monkeypatch, [], [])[0]
