"""Tests for `alphadrive_trl.evaluation`: hand-computed metrics, report files, compare table, end-to-end generate."""

from __future__ import annotations

import json
import os
import struct

import pytest

from alphadrive_trl.evaluation import (
    compare_runs,
    compute_metrics,
    f1_from_counts,
    legacy_match,
    main,
    meta_action_metrics,
    read_predictions,
    sampling_metrics,
    score_predictions,
    write_report,
)


def _record(sample_id, completion, speed, path, **extra):
    return {"sample_id": sample_id, "completion": completion, "speed_action": speed, "path_action": path, **extra}


# Six answers, one per failure mode. Strict parse / legacy substring / format per record:
#   a correct                                  -> (KEEP, STRAIGHT)       legacy yes  format yes
#   b wrong speed                              -> (DECELERATE, STRAIGHT) legacy no   format yes
#   c multi-word hedge (two SPEED words)       -> None                   legacy yes  format no (no <think>)
#   d no answer block                          -> None                   legacy yes  format no
#   e "STOP" only inside "STOPPED" (reasoning) -> (KEEP, LEFT_CHANGE)    legacy yes  format yes
#   f lower-case answer                        -> (KEEP, STRAIGHT)       legacy no   format yes
META_RECORDS = [
    _record("a", "<think> clear road </think> <answer> KEEP, STRAIGHT </answer>", "KEEP", "STRAIGHT"),
    _record("b", "<think> red light </think> <answer> DECELERATE, STRAIGHT </answer>", "STOP", "STRAIGHT"),
    _record("c", "<answer> KEEP, DECELERATE, LEFT_TURN </answer>", "DECELERATE", "LEFT_TURN"),
    _record("d", "I would ACCELERATE and do a RIGHT_CHANGE", "ACCELERATE", "RIGHT_CHANGE"),
    _record(
        "e",
        "<think> The STOPPED bus blocks the lane </think> <answer> KEEP, LEFT_CHANGE </answer>",
        "STOP",
        "LEFT_CHANGE",
    ),
    _record("f", "<think> ok </think> <answer> keep, straight </answer>", "KEEP", "STRAIGHT"),
]


def test_headline_metrics_hand_computed():
    m = compute_metrics(META_RECORDS)
    assert m["num_samples"] == 6
    assert m["mode"] == "meta_action"
    assert m["planning_accuracy"] == pytest.approx(100 * 2 / 6)  # a, f
    assert m["speed_accuracy"] == pytest.approx(100 * 2 / 6)  # a, f
    assert m["path_accuracy"] == pytest.approx(100 * 4 / 6)  # a, b, e, f
    assert m["legacy_planning_accuracy"] == pytest.approx(100 * 4 / 6)  # a, c, d, e
    assert m["parse_rate"] == pytest.approx(100 * 4 / 6)  # a, b, e, f
    assert m["format_rate"] == pytest.approx(100 * 4 / 6)  # a, b, e, f
    assert "mean_distinct_plans" not in m and "l2_1s" not in m


def test_per_class_f1_hand_computed():
    m = compute_metrics(META_RECORDS)
    f1 = m["per_class_f1"]
    assert set(f1) == {"KEEP", "ACCELERATE", "DECELERATE", "STOP"} | {
        "STRAIGHT",
        "RIGHT_CHANGE",
        "LEFT_CHANGE",
        "RIGHT_TURN",
        "LEFT_TURN",
    }
    # KEEP: TP a, f; FP e (GT STOP); FN none -> 2*2 / (2*2 + 1) = 0.8.
    assert f1["KEEP"] == pytest.approx(80.0)
    # STOP: FN b, e (an unparsable answer or another word is a miss); no TP -> 0.
    assert f1["STOP"] == 0.0
    # DECELERATE: FP b, FN c (the hedge is unparsable: a miss, not a hit) -> 0.
    assert f1["DECELERATE"] == 0.0
    assert f1["ACCELERATE"] == 0.0
    # STRAIGHT: TP a, b, f -> 1. LEFT_CHANGE: TP e -> 1.
    assert f1["STRAIGHT"] == 100.0 and f1["LEFT_CHANGE"] == 100.0
    assert f1["LEFT_TURN"] == 0.0 and f1["RIGHT_CHANGE"] == 0.0
    # RIGHT_TURN: no support and never predicted -> defined as 0.
    assert f1["RIGHT_TURN"] == 0.0 and m["class_support"]["RIGHT_TURN"] == 0
    assert m["macro_f1_speed"] == pytest.approx(80.0 / 4)
    assert m["macro_f1_path"] == pytest.approx(200.0 / 5)
    assert m["confusion"]["speed"]["STOP"] == {"KEEP": 1, "ACCELERATE": 0, "DECELERATE": 1, "STOP": 0, "UNPARSED": 0}
    assert m["confusion"]["path"]["LEFT_TURN"]["UNPARSED"] == 1


def test_safety_critical_error_rate_hand_computed():
    from alphadrive_trl.evaluation import meta_action_metrics

    truth = [("STOP", "STRAIGHT"), ("DECELERATE", "LEFT_TURN"), ("STOP", "STRAIGHT"), ("DECELERATE", "STRAIGHT")]
    truth += [("KEEP", "STRAIGHT")]  # not safety-critical: answering ACCELERATE here is no safety error
    predicted = [("ACCELERATE", "STRAIGHT"), ("KEEP", "LEFT_TURN"), ("DECELERATE", "STRAIGHT"), None]
    predicted += [("ACCELERATE", "STRAIGHT")]
    # 2 of the 4 STOP/DECELERATE scenes answered ACCELERATE or KEEP; the unparsable answer is not counted as one.
    assert meta_action_metrics(truth, predicted)["safety_critical_error_rate"] == 50.0
    assert meta_action_metrics([("KEEP", "STRAIGHT")], [("STOP", "STRAIGHT")])["safety_critical_error_rate"] is None
    # META_RECORDS: GT STOP/DECELERATE in b (answered DECELERATE), c (unparsable) and e (answered KEEP) -> 1 of 3.
    assert compute_metrics(META_RECORDS)["safety_critical_error_rate"] == pytest.approx(100 / 3)


def test_combination_accuracy_covers_all_20_pairs():
    m = compute_metrics(META_RECORDS)
    combos = m["combination_accuracy"]
    assert len(combos) == 20
    assert combos["KEEP, STRAIGHT"] == 100.0
    assert combos["STOP, STRAIGHT"] == 0.0
    assert combos["DECELERATE, LEFT_TURN"] == 0.0
    assert combos["STOP, LEFT_CHANGE"] == 0.0
    assert combos["ACCELERATE, LEFT_TURN"] is None  # no support: undefined, not 0
    assert m["combination_support"]["KEEP, STRAIGHT"] == 2
    assert sum(m["combination_support"].values()) == 6


def test_legacy_match_is_the_published_substring_check():
    assert legacy_match("<answer> KEEP, DECELERATE, STRAIGHT </answer>", "KEEP", "STRAIGHT")  # hedge counts
    assert legacy_match("<think> STOPPED car </think><answer> KEEP, STRAIGHT </answer>", "STOP", "STRAIGHT")
    assert not legacy_match("<answer> keep, straight </answer>", "KEEP", "STRAIGHT")  # case-sensitive
    assert not legacy_match("<answer> KEEP </answer>", "KEEP", "STRAIGHT")


def test_f1_from_counts():
    assert f1_from_counts(0, 0, 0) == 0.0
    assert f1_from_counts(1, 1, 0) == pytest.approx(200 / 3)
    assert f1_from_counts(3, 0, 0) == 100.0


def test_meta_action_metrics_rejects_misaligned_lists():
    with pytest.raises(ValueError, match="2 ground-truth plans but 1 predictions"):
        meta_action_metrics([("KEEP", "STRAIGHT")] * 2, [None])


SAMPLED_RECORDS = [
    # 3 distinct plans, 2 of 4 samples feasible, finds 2 of 3 feasible plans, GT found.
    _record(
        "s1",
        "<think> a </think> <answer> KEEP, STRAIGHT </answer>",
        "KEEP",
        "STRAIGHT",
        completions=[
            "<answer> KEEP, STRAIGHT </answer>",
            "<answer> DECELERATE, STRAIGHT </answer>",
            "<answer> STOP, STRAIGHT </answer>",
            "garbage",
        ],
        feasible_actions=["KEEP, STRAIGHT", "DECELERATE, STRAIGHT", "KEEP, LEFT_CHANGE"],
    ),
    # GT not listed in feasible_actions: the feasible set is {DECELERATE/STRAIGHT, STOP/STRAIGHT}.
    _record(
        "s2",
        "<answer> DECELERATE, STRAIGHT </answer>",
        "STOP",
        "STRAIGHT",
        completions=["<answer> DECELERATE, STRAIGHT </answer>"] * 4,
        feasible_actions=["DECELERATE, STRAIGHT"],
    ),
    # No feasible_actions: counts for distinct plans and best-of-K only.
    _record(
        "s3",
        "<answer> KEEP, RIGHT_TURN </answer>",
        "KEEP",
        "RIGHT_TURN",
        completions=[
            "<answer> KEEP, RIGHT_TURN </answer>",
            "<answer> KEEP, RIGHT_TURN </answer>",
            "<answer> KEEP, KEEP </answer>",
            "<answer> ACCELERATE, RIGHT_TURN </answer>",
        ],
        feasible_actions=None,
    ),
]


def test_sampling_metrics_hand_computed():
    m = compute_metrics(SAMPLED_RECORDS)
    assert m["num_sampled_scenes"] == 3 and m["samples_per_scene"] == 4
    assert m["mean_distinct_plans"] == pytest.approx((3 + 1 + 2) / 3)
    assert m["distinct_plans_histogram"] == {"1": 1, "2": 1, "3": 1}
    assert m["feasible_rate"] == pytest.approx(100 * (2 + 4) / 8)
    assert m["feasible_coverage"] == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)
    assert m["best_of_k_accuracy"] == pytest.approx(100 * 2 / 3)
    # Coverage of k < 4 samples, from all 4: s1 finds 2 of its 3 feasible plans once each, so one sample finds each
    # with probability 1/4 and two samples with 1 - C(3,2)/C(4,2) = 1/2: 1/6 and 1/3. s2 holds DECELERATE 4 times:
    # 1/2 of its feasible set for any k. (s3 has no feasible set.)
    assert m["feasible_coverage_at"] == pytest.approx({"1": 100 * (1 / 6 + 1 / 2) / 2, "2": 100 * (1 / 3 + 1 / 2) / 2})
    # The headline accuracy still uses `completion` (the greedy answer).
    assert m["planning_accuracy"] == pytest.approx(100 * 2 / 3)


def test_coverage_at_k_is_the_mean_over_every_k_subset():
    import itertools

    from alphadrive_trl.evaluation.metrics import coverage_at_k

    a, b, c = ("STOP", "STRAIGHT"), ("KEEP", "STRAIGHT"), ("STOP", "LEFT_CHANGE")
    plans = [a, a, b, None, c, b, a]
    feasible = {a, c, ("DECELERATE", "STRAIGHT")}
    for k in range(1, len(plans) + 1):
        subsets = list(itertools.combinations(plans, k))
        expected = sum(len(set(s) & feasible) / len(feasible) for s in subsets) / len(subsets)
        assert coverage_at_k(plans, feasible, k) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="between 1 and the number of samples"):
        coverage_at_k(plans, feasible, 8)
    with pytest.raises(ValueError, match="feasible set is empty"):
        coverage_at_k(plans, set(), 2)


def test_sampling_metrics_absent_without_samples_and_none_without_feasible_sets():
    assert sampling_metrics(META_RECORDS) == {}
    no_feasible = [{**r, "feasible_actions": None} for r in SAMPLED_RECORDS]
    m = sampling_metrics(no_feasible)
    assert m["feasible_rate"] is None and m["feasible_coverage"] is None and m["feasible_coverage_at"] == {}
    assert m["mean_distinct_plans"] == pytest.approx(2.0)


def _traj_text(points):
    return "<trajectory> " + " ".join(f"[{x},{y}]" for x, y in points) + " </trajectory>"


CRUISE = [[5, 0], [10, 0], [15, 0], [20, 0], [25, 0], [30, 0]]
TRAJECTORY_RECORDS = [
    # Every waypoint 1 m ahead of the expert; implies (KEEP, STRAIGHT) = GT = stated answer.
    _record(
        "t1",
        "<think> free road </think> <answer> KEEP, STRAIGHT </answer> "
        + _traj_text([[6, 0], [11, 0], [16, 0], [21, 0], [26, 0], [31, 0]]),
        "KEEP",
        "STRAIGHT",
        trajectory=CRUISE,
        ego_speed=10.0,
    ),
    # Expert stops; prediction cruises at 8 m/s: errors 0, 1, 3, 6, 10, 14 m; implies KEEP (stated STOP).
    _record(
        "t2",
        "<think> red light </think> <answer> STOP, STRAIGHT </answer> "
        + _traj_text([[4, 0], [8, 0], [12, 0], [16, 0], [20, 0], [24, 0]]),
        "STOP",
        "STRAIGHT",
        trajectory=[[4, 0], [7, 0], [9, 0], [10, 0], [10, 0], [10, 0]],
        ego_speed=8.0,
    ),
    # No trajectory in the answer: unparsed (out of the L2 means, a miss for the derived actions).
    _record(
        "t3",
        "<think> slow car </think> <answer> DECELERATE, STRAIGHT </answer> <trajectory> </trajectory>",
        "DECELERATE",
        "STRAIGHT",
        trajectory=[[4, 0], [8, 0], [11, 0], [14, 0], [16, 0], [18, 0]],
        ego_speed=8.0,
    ),
]


def test_trajectory_metrics_hand_computed():
    m = compute_metrics(TRAJECTORY_RECORDS)
    assert m["mode"] == "trajectory"
    assert m["trajectory_num_samples"] == 3
    assert m["trajectory_parse_rate"] == pytest.approx(100 * 2 / 3)
    assert m["trajectory_plausible_rate"] == 100.0
    assert m["l2_1s"] == pytest.approx((1 + 1) / 2)
    assert m["l2_2s"] == pytest.approx((1 + 6) / 2)
    assert m["l2_3s"] == pytest.approx((1 + 14) / 2)
    assert m["ade"] == pytest.approx((1 + 34 / 6) / 2)
    assert m["fde"] == pytest.approx((1 + 14) / 2)
    # Derived plans: t1 (KEEP, STRAIGHT) right, t2 (KEEP, STRAIGHT) wrong speed, t3 missing.
    assert m["derived_planning_accuracy"] == pytest.approx(100 / 3)
    assert m["derived_speed_accuracy"] == pytest.approx(100 / 3)
    assert m["derived_path_accuracy"] == pytest.approx(200 / 3)
    assert m["action_consistency_rate"] == pytest.approx(100 / 3)
    # Trajectory format: t1 and t2 well formed, t3's block is empty.
    assert m["format_rate"] == pytest.approx(200 / 3)
    # The stated answers are all right.
    assert m["planning_accuracy"] == 100.0


def test_implausible_trajectories_are_still_labelled_and_counted():
    jump = [[5, 0], [10, 0], [15, 0], [50, 0], [55, 0], [60, 0]]  # 35 m in 0.5 s
    record = _record(
        "j",
        "<think> x </think> <answer> KEEP, STRAIGHT </answer> " + _traj_text(jump),
        "KEEP",
        "STRAIGHT",
        trajectory=CRUISE,
        ego_speed=10.0,
    )
    no_speed = {**record, "sample_id": "k", "ego_speed": None}
    m = compute_metrics([record, no_speed])
    assert m["trajectory_parse_rate"] == 100.0 and m["trajectory_plausible_rate"] == 0.0
    assert m["ade"] == pytest.approx(3 * 30 / 6)
    # End speed 10 m/s = ego speed, no lateral motion: (KEEP, STRAIGHT); without an ego speed there is no label.
    assert m["derived_planning_accuracy"] == 50.0 and m["action_consistency_rate"] == 50.0


def test_trajectory_metrics_off_in_meta_action_mode():
    m = compute_metrics(TRAJECTORY_RECORDS, trajectory_mode=False)
    assert m["mode"] == "meta_action" and "l2_1s" not in m
    # Meta-action format: nothing may follow the answer block, so the trailing trajectory breaks it.
    assert m["format_rate"] == 0.0
    assert m["planning_accuracy"] == 100.0


def test_bad_records_name_the_line_and_field(tmp_path):
    path = tmp_path / "preds.jsonl"
    good = json.dumps(META_RECORDS[0])
    path.write_text(good + "\n" + json.dumps({**META_RECORDS[1], "speed_action": "FLY"}) + "\n")
    with pytest.raises(ValueError, match=r"line 2 \(sample_id='b'\).*speed_action.*FLY"):
        read_predictions(path)
    path.write_text(good + "\n{not json\n")
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        read_predictions(path)
    bad = dict(META_RECORDS[0])
    del bad["completion"]
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match="missing field `completion`"):
        read_predictions(path)
    with pytest.raises(FileNotFoundError):
        read_predictions(tmp_path / "missing.jsonl")


def _is_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width > 100 and height > 100


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_score_writes_metrics_report_and_plots(tmp_path):
    preds = _write_jsonl(tmp_path / "preds.jsonl", META_RECORDS + SAMPLED_RECORDS)
    out = tmp_path / "eval"
    metrics = score_predictions(preds, out)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert on_disk["num_samples"] == 9
    for name in ("confusion_speed.png", "confusion_path.png", "per_class_f1.png", "distinct_plans.png"):
        assert _is_png(out / name)
    assert not (out / "trajectory_overlay.png").exists()
    report = (out / "report.md").read_text()
    assert "| planning_accuracy |" in report and "![distinct plans](distinct_plans.png)" in report
    assert "| speed | KEEP |" in report and "## First failures" in report
    scored = [json.loads(line) for line in (out / "scored.jsonl").read_text().splitlines()]
    assert [s["sample_id"] for s in scored] == [r["sample_id"] for r in META_RECORDS + SAMPLED_RECORDS]
    assert scored[2] == {
        "sample_id": "c",
        "ground_truth": "DECELERATE, LEFT_TURN",
        "predicted": None,
        "correct": False,
        "legacy_correct": True,
    }


def test_write_report_trajectory_overlay_without_images(tmp_path):
    metrics = compute_metrics(TRAJECTORY_RECORDS)
    report = write_report(metrics, TRAJECTORY_RECORDS, tmp_path)
    assert _is_png(tmp_path / "trajectory_overlay.png")
    text = report.read_text()
    assert "## Trajectory (open loop)" in text and "| 1.00 | 3.50 | 7.50 | 3.33 | 7.50 |" in text


def test_compare_table(tmp_path):
    sft = _write_jsonl(tmp_path / "sft.jsonl", META_RECORDS)
    grpo = _write_jsonl(
        tmp_path / "grpo.jsonl", [{**r, "completion": "<answer> KEEP, STRAIGHT </answer>"} for r in META_RECORDS]
    )
    score_predictions(sft, tmp_path / "sft")
    score_predictions(grpo, tmp_path / "grpo")
    table = compare_runs([tmp_path / "sft", tmp_path / "grpo"], names=["SFT", "SFT+GRPO"])
    lines = table.splitlines()
    assert lines[0] == "| metric | SFT | SFT+GRPO | Δ |"
    # GRPO run answers KEEP, STRAIGHT everywhere: 2/6 right, like SFT; parse rate 100 vs 66.67.
    assert "| planning_accuracy | 33.33 | 33.33 | 0.00 |" in lines
    assert "| parse_rate | 66.67 | 100.00 | 33.33 |" in lines
    assert "| num_samples | 6 | 6 | 0 |" in lines
    assert not any(line.startswith("| l2_1s") for line in lines)  # absent from both runs
    with pytest.raises(ValueError, match="2 runs but 1 names"):
        compare_runs([tmp_path / "sft", tmp_path / "grpo"], names=["only"])
    with pytest.raises(FileNotFoundError, match="run `alphadrive-eval score` first"):
        compare_runs([tmp_path / "nothing"])


def test_cli_score_and_compare(tmp_path, capsys):
    preds = _write_jsonl(tmp_path / "preds.jsonl", META_RECORDS)
    assert main(["score", "--predictions", str(preds), "--output-dir", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "report.md" in out and "planning_accuracy" in out and "33.33" in out
    table_path = tmp_path / "table.md"
    assert (
        main(["compare", str(tmp_path / "a"), str(tmp_path / "a"), "--names", "X", "Y", "--output", str(table_path)])
        == 0
    )
    assert capsys.readouterr().out == table_path.read_text()
    assert "| metric | X | Y | Δ |" in table_path.read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["score", "--predictions", str(tmp_path / "nope.jsonl"), "--output-dir", str(tmp_path / "b")])
    assert exit_info.value.code == 2
    assert "Predictions file not found" in capsys.readouterr().err


def _cli_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    return err.rstrip("\n")


def test_score_names_file_and_line_of_bad_bytes_and_rejects_repeated_ids(tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    preds.write_bytes(json.dumps(META_RECORDS[0]).encode() + b'\n{"sample_id": "caf\xe9"}\n')
    assert _cli_error(["score", "--predictions", str(preds), "--output-dir", str(tmp_path / "a")], capsys) == (
        f"alphadrive-eval score: error: {preds}, line 2: not UTF-8 text (byte 0xe9); predictions files are UTF-8 "
        "JSONL, as `generate` writes them."
    )
    _write_jsonl(preds, [META_RECORDS[0], META_RECORDS[1], META_RECORDS[0]])
    assert _cli_error(["score", "--predictions", str(preds), "--output-dir", str(tmp_path / "a")], capsys) == (
        f"alphadrive-eval score: error: {preds}, line 3: sample_id 'a' is already on line 1; each scene must be "
        "scored once. Remove the repeat (re-running `generate` on the file drops it)."
    )
    assert not (tmp_path / "a").exists()


def test_generate_with_a_missing_model_path_says_it_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "outputs" / "demo-grpo"
    argv = ["generate", "--model", str(missing), "--dataset", str(tmp_path), "--output", str(tmp_path / "p.jsonl")]
    assert _cli_error(argv, capsys) == (
        f"alphadrive-eval generate: error: --model '{missing}' does not exist; point it at a saved model directory "
        "(e.g. the output_dir of the SFT run) or a Hub model id such as Qwen/Qwen2-VL-2B-Instruct."
    )


def test_compare_names_a_corrupt_metrics_file(tmp_path, capsys):
    good = tmp_path / "good"
    score_predictions(_write_jsonl(tmp_path / "preds.jsonl", META_RECORDS), good)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_text('{"planning_accuracy": 3')
    capsys.readouterr()
    message = _cli_error(["compare", str(good), str(bad)], capsys)
    assert message.startswith(f"alphadrive-eval compare: error: {bad / 'metrics.json'}: not a valid metrics.json (")
    assert message.endswith("); run `alphadrive-eval score` again to rewrite it.")


def test_report_title_is_the_model_name_and_links_the_real_docs(tmp_path):
    from pathlib import Path

    from alphadrive_trl.evaluation import metadata_path, model_display_name

    repo = Path(__file__).resolve().parents[1]
    preds = _write_jsonl(tmp_path / "preds.jsonl", META_RECORDS)
    checkpoint = tmp_path / "outputs" / "demo-grpo" / "checkpoint-100"
    metadata_path(preds).write_text(json.dumps({"model": str(checkpoint)}))
    score_predictions(preds, tmp_path / "eval")
    report = (tmp_path / "eval" / "report.md").read_text()
    assert report.splitlines()[0] == "# Driving evaluation: demo-grpo/checkpoint-100"
    assert "docs/evaluation.md" in report and (repo / "docs" / "evaluation.md").is_file()
    assert "docs/readme/" not in report
    assert model_display_name(str(tmp_path / "outputs" / "demo-sft")) == "demo-sft"
    assert model_display_name("Qwen/Qwen2-VL-2B-Instruct") == "Qwen/Qwen2-VL-2B-Instruct"


def test_use_vllm_without_vllm_is_a_clear_error(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--model", "m", "--dataset", "d", "--output", str(tmp_path / "p.jsonl"), "--use-vllm"])
    assert exit_info.value.code == 2
    assert "--use-vllm needs vLLM" in capsys.readouterr().err


def test_trajectory_overlay_reads_front_images_from_the_dataset(tmp_path):
    from datasets import Dataset, DatasetDict
    from PIL import Image

    from alphadrive_trl.data import DRIVING_FEATURES
    from alphadrive_trl.evaluation import metadata_path
    from alphadrive_trl.evaluation.report import _load_front_images

    rows = []
    for record in TRAJECTORY_RECORDS:
        rows.append(
            {
                "sample_id": record["sample_id"],
                "images": [Image.new("RGB", (64, 48), (90, 90, 90)), Image.new("RGB", (32, 24), (0, 0, 0))],
                "image_roles": ["front", "front_t-1"],
                "ego_speed": record["ego_speed"],
                "navigation": "go straight",
                "speed_action": record["speed_action"],
                "path_action": record["path_action"],
                "reasoning": None,
                "feasible_actions": None,
                "trajectory": record["trajectory"],
                "source": "synthetic",
            }
        )
    dataset_dir = tmp_path / "data"
    DatasetDict({"test": Dataset.from_list(rows, features=DRIVING_FEATURES)}).save_to_disk(str(dataset_dir))
    images = _load_front_images(["t1", "t3"], str(dataset_dir), "test")
    assert sorted(images) == ["t1", "t3"] and images["t1"].size == (64, 48)
    assert _load_front_images(["t1"], str(tmp_path / "missing"), "test") == {}  # best effort, no crash

    preds = _write_jsonl(tmp_path / "preds.jsonl", TRAJECTORY_RECORDS)
    metadata_path(preds).write_text(json.dumps({"dataset": str(dataset_dir), "split": "test"}))
    metrics = score_predictions(preds, tmp_path / "eval")
    assert metrics["mode"] == "trajectory" and metrics["ade"] == pytest.approx((1 + 34 / 6) / 2)
    assert _is_png(tmp_path / "eval" / "trajectory_overlay.png")


def test_resume_keeps_every_valid_line_around_a_torn_one(tmp_path, caplog):
    from alphadrive_trl.evaluation.predictions import _done_sample_ids

    valid = [json.dumps(r) for r in META_RECORDS]
    preds = tmp_path / "preds.jsonl"
    preds.write_bytes(
        (valid[0] + "\n" + valid[1][:25] + "\n" + valid[2] + "\n" + '{"sample_id": "x"}\n' + valid[0] + "\n").encode()
        + b"\xff\xfe\n"
        + valid[3].encode()  # the last line lost only its newline
    )
    with caplog.at_level("WARNING"):
        done = _done_sample_ids(preds)
    assert done == {META_RECORDS[i]["sample_id"] for i in (0, 2, 3)}
    assert preds.read_text().splitlines() == [valid[0], valid[2], valid[3]]
    assert caplog.messages == [
        f"{preds}: dropping broken line(s) 2, 4, 6, repeated sample_id line(s) 5 before resuming; those samples are "
        "generated again."
    ]
    caplog.clear()
    assert _done_sample_ids(preds) == done and caplog.messages == []  # clean now: nothing rewritten


def _test_split(dataset_dir):
    from alphadrive_trl.data import load_driving_dataset

    return load_driving_dataset(dataset_dir, split="test")


@pytest.mark.slow
def test_generate_end_to_end_with_resume(tiny_model_dir, tiny_dataset_dir, tmp_path, capsys):
    test_rows = _test_split(tiny_dataset_dir)
    preds = tmp_path / "preds.jsonl"
    args = ["generate", "--model", tiny_model_dir, "--dataset", tiny_dataset_dir, "--split", "test"]
    args += ["--output", str(preds), "--batch-size", "3", "--num-samples", "2", "--max-new-tokens", "6"]
    assert main([*args, "--max-samples", "4"]) == 0
    first = preds.read_text().splitlines()
    records = [json.loads(line) for line in first]
    assert [r["sample_id"] for r in records] == test_rows["sample_id"][:4]
    for record, row in zip(records, test_rows.select(range(4))):
        assert isinstance(record["completion"], str)
        assert len(record["completions"]) == 2 and all(isinstance(c, str) for c in record["completions"])
        assert (record["speed_action"], record["path_action"]) == (row["speed_action"], row["path_action"])
        assert record["feasible_actions"] is None and "trajectory" not in record
        assert record["ego_speed"] == pytest.approx(row["ego_speed"], abs=1e-4)
    meta = json.loads((tmp_path / "preds.meta.json").read_text())
    assert meta["prompt_template"] == "default" and meta["num_samples"] == 2 and meta["split"] == "test"

    # Crash mid-write: the torn last line is dropped and regenerated; the 3 complete lines are kept as they are.
    preds.write_text("\n".join(first[:3]) + "\n" + first[3][:15])
    assert main([*args, "--max-samples", "6"]) == 0
    lines = preds.read_text().splitlines()
    assert lines[:3] == first[:3]
    assert [json.loads(line)["sample_id"] for line in lines] == test_rows["sample_id"][:6]
    # Greedy decoding with left padding does not depend on the batch the row landed in.
    assert json.loads(lines[3])["completion"] == records[3]["completion"]

    # Everything done: a third run generates nothing.
    assert main([*args, "--max-samples", "6"]) == 0
    assert preds.read_text().splitlines() == lines

    # A torn line in the middle (issue 17: everything after it was dropped and sampled again): every valid line is
    # kept, only the broken scene is generated again (appended), with the same greedy answer.
    preds.write_text("\n".join([*lines[:2], lines[2][:20], *lines[3:]]) + "\n")
    assert main([*args, "--max-samples", "6"]) == 0
    resumed = preds.read_text().splitlines()
    assert resumed[:5] == [*lines[:2], *lines[3:]]
    assert json.loads(resumed[5])["sample_id"] == test_rows["sample_id"][2]
    assert json.loads(resumed[5])["completion"] == json.loads(lines[2])["completion"]
    lines = resumed
    # Other settings than the file was made with: refused, nothing appended.
    with pytest.raises(SystemExit):
        main([*args[:-1], "3", "--max-samples", "8"])
    assert "resuming would mix them" in capsys.readouterr().err
    assert preds.read_text().splitlines() == lines

    metrics = score_predictions(preds, tmp_path / "eval")
    assert metrics["num_samples"] == 6 and metrics["samples_per_scene"] == 2
    assert (tmp_path / "eval" / "report.md").is_file()


@pytest.mark.slow
def test_generate_uses_the_settings_saved_with_the_checkpoint(tiny_model_dir, tiny_dataset_dir, tmp_path):
    import shutil

    from alphadrive_trl.evaluation import generate_predictions
    from alphadrive_trl.evaluation.generate import _TransformersGenerator

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "alphadrive_config.json").write_text(json.dumps({"prompt_template": "trajectory", "max_images": 1}))
    preds = generate_predictions(
        str(model_dir), tiny_dataset_dir, tmp_path / "p.jsonl", max_samples=1, max_new_tokens=2, show_progress=False
    )
    meta = json.loads((tmp_path / "p.meta.json").read_text())
    assert meta["prompt_template"] == "trajectory" and meta["max_images"] == 1
    assert len(preds.read_text().splitlines()) == 1
    # The prompt the model saw: the trajectory instructions and a single image (row 2 of the split has 3).
    settings = {"prompt_template": "trajectory", "max_images": 1, "min_pixels": None, "max_pixels": None}
    generator = _TransformersGenerator(str(model_dir), settings, {**meta, "seed": 0})
    row = _test_split(tiny_dataset_dir)[2]
    assert len(row["images"]) == 3
    inputs = generator._inputs([row])
    text = generator.processor.batch_decode(inputs["input_ids"])[0]
    assert "waypoints" in text and text.count("<|vision_start|>") == 1
    # A CLI flag overrides the saved template.
    generate_predictions(
        str(model_dir),
        tiny_dataset_dir,
        tmp_path / "q.jsonl",
        max_samples=1,
        max_new_tokens=2,
        prompt_template="default",
        show_progress=False,
    )
    assert json.loads((tmp_path / "q.meta.json").read_text())["prompt_template"] == "default"


def test_a_failed_score_leaves_no_temporary_files(tmp_path):
    # The evaluation writers used to leave `*.tmp` files behind when a write failed.
    preds = _write_jsonl(tmp_path / "preds.jsonl", META_RECORDS)
    out = tmp_path / "eval"
    (out / "metrics.json").mkdir(parents=True)  # the rename onto it fails
    with pytest.raises(OSError):
        score_predictions(preds, out)
    assert os.listdir(out) == ["metrics.json"]


def _trainer_state(directory, history):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "trainer_state.json").write_text(json.dumps({"global_step": 4, "log_history": history}))
    return directory


SFT_HISTORY = [
    {"step": 1, "loss": 7.9, "learning_rate": 1e-3},
    {"step": 2, "loss": 3.1},
    {"step": 2, "eval_planning_accuracy": 0.5, "eval_parse_rate": 1.0},
    {"train_runtime": 3.0, "step": 2},  # the final summary has no curve key
]
GRPO_HISTORY = [
    {"step": 20, "loss": 0.001, "reward": 1.0, "driving/plan_accuracy": 0.4, "kl": 0.02},
    {"step": 40, "loss": -0.002, "reward": 1.2, "driving/plan_accuracy": 0.55, "kl": 0.03},
]


def test_training_curves_draw_one_panel_per_logged_metric(tmp_path, capsys):
    from alphadrive_trl.evaluation import load_log_history, plot_training_curves

    sft = _trainer_state(tmp_path / "sft", SFT_HISTORY)
    grpo = _trainer_state(tmp_path / "grpo", GRPO_HISTORY)
    panels = plot_training_curves([sft, grpo], tmp_path / "curves.png", ["SFT", "GRPO"])
    assert panels == ["loss", "eval_planning_accuracy", "reward", "driving/plan_accuracy", "kl"]
    assert _is_png(tmp_path / "curves.png")
    # GRPO's surrogate loss is not drawn: a GRPO run alone has no loss panel.
    assert plot_training_curves([grpo], tmp_path / "g.png") == ["reward", "driving/plan_accuracy", "kl"]
    assert load_log_history(sft)[2] == {"step": 2, "eval_planning_accuracy": 0.5, "eval_parse_rate": 1.0}

    assert main(["curves", str(sft), str(grpo), "--output", str(tmp_path / "cli" / "c.png")]) == 0
    assert _is_png(tmp_path / "cli" / "c.png")
    assert capsys.readouterr().out == (
        f"Training curves (loss, eval_planning_accuracy, reward, driving/plan_accuracy, kl): {tmp_path / 'cli' / 'c.png'}\n"
    )


def test_training_curves_running_mean_has_no_look_ahead():
    from alphadrive_trl.evaluation.curves import _running_mean

    assert _running_mean([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 12.0], 5) == [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0]


def test_training_curves_read_the_latest_checkpoint_of_an_unfinished_run(tmp_path):
    from alphadrive_trl.evaluation import load_log_history

    run = tmp_path / "grpo"
    _trainer_state(run / "checkpoint-2", GRPO_HISTORY[:1])
    _trainer_state(run / "checkpoint-10", GRPO_HISTORY)  # numerically the latest, though "10" < "2" as text
    (run / "checkpoint-3-tmp").mkdir()
    assert [entry["step"] for entry in load_log_history(run)] == [20, 40]
    assert [entry["step"] for entry in load_log_history(run / "checkpoint-2" / "trainer_state.json")] == [20]


def test_training_curves_bad_input_is_one_line(tmp_path, capsys):
    message = _cli_error(["curves", str(tmp_path)], capsys)
    assert message == (
        f"alphadrive-eval curves: error: No trainer_state.json in {tmp_path} or its checkpoint-* folders: pass an "
        "output_dir of alphadrive-sft or alphadrive-grpo (the Trainer writes it when training ends or at a checkpoint)."
    )
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "trainer_state.json").write_text('{"log_history": ')
    assert _cli_error(["curves", str(broken)], capsys).startswith(
        f"alphadrive-eval curves: error: {broken / 'trainer_state.json'} is not a Trainer state file with a `log_history`"
    )
    quiet = _trainer_state(tmp_path / "quiet", [{"step": 3, "train_runtime": 1.0}])
    assert "set `logging_steps` so that training logs" in _cli_error(["curves", str(quiet)], capsys)
    run = _trainer_state(tmp_path / "sft", SFT_HISTORY)
    assert _cli_error(["curves", str(run), "--names", "a", "b"], capsys) == (
        "alphadrive-eval curves: error: --names gives 2 names for 1 runs."
    )
