"""Schema, validation errors, the three on-disk forms, the stage split, image selection and the image budget."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from datasets import Dataset, DatasetDict
from PIL import Image

from alphadrive_trl.data import (
    DRIVING_FEATURES,
    DrivingDataError,
    apply_image_budget,
    load_driving_dataset,
    navigation_paths,
    overrides_navigation,
    repeat_action_rows,
    select_image_roles,
    select_images,
    split_for_stages,
    validate_dataset,
    validate_row,
)
from data_prep.synthetic import GeneratorConfig, build_dataset


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "synthetic"
    build_dataset(GeneratorConfig(num_samples=30, seed=5, num_history_frames=1), out, progress=False)
    return out


def _png(color=(10, 20, 30), size=(32, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _row(**overrides):
    row = {
        "sample_id": "row-1",
        "images": [Image.new("RGB", (32, 24))],
        "image_roles": ["front"],
        "ego_speed": 5.0,
        "navigation": "go straight",
        "speed_action": "KEEP",
        "path_action": "STRAIGHT",
        "reasoning": None,
        "feasible_actions": ["KEEP, STRAIGHT"],
        "trajectory": [[2.5 * (i + 1), 0.0] for i in range(6)],
        "source": "test",
    }
    row.update(overrides)
    return row


def _comparable(row):
    """A row with images as pixel arrays (the forms store different bytes/paths for the same pixels)."""
    out = dict(row)
    out["images"] = [np.asarray(image.convert("RGB")) for image in row["images"]]
    return out


def _assert_same_rows(a, b):
    assert len(a) == len(b)
    for left, right in zip(a, b):
        left, right = _comparable(left), _comparable(right)
        for key in DRIVING_FEATURES:
            if key == "images":
                assert all(np.array_equal(x, y) for x, y in zip(left[key], right[key]))
                assert len(left[key]) == len(right[key])
            else:
                assert left[key] == right[key], key


def test_valid_row_has_no_problems():
    assert validate_row(_row()) == []
    assert validate_row(_row(reasoning="fine", feasible_actions=None, trajectory=None)) == []


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        ({"speed_action": "FAST"}, "speed_action", "unknown action 'FAST'"),
        ({"path_action": "U_TURN"}, "path_action", "unknown action 'U_TURN'"),
        ({"ego_speed": -1.0}, "ego_speed", ">= 0"),
        ({"ego_speed": float("nan")}, "ego_speed", ">= 0"),
        ({"image_roles": ["front", "front_left"]}, "image_roles", "2 roles for 1 images"),
        ({"images": []}, "images", "at least one image"),
        ({"images": ["/nonexistent/cam.png"]}, "images[0]", "image file not found: /nonexistent/cam.png"),
        ({"images": [{"bytes": b"not a png", "path": "x.png"}]}, "images[0]", "unreadable image x.png"),
        ({"trajectory": [[1.0, 0.0]] * 5}, "trajectory", "got shape (5, 2)"),
        ({"trajectory": [[1.0, 0.0, 2.0]] * 6}, "trajectory", "got shape (6, 3)"),
        ({"feasible_actions": ["KEEP, STRAIGHT", "FLY, UP"]}, "feasible_actions", "invalid plan(s) ['FLY, UP']"),
        ({"navigation": ""}, "navigation", "non-empty"),
    ],
)
def test_validation_names_row_and_field(overrides, field, text):
    problems = validate_row(_row(**overrides))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"sample_id=row-1 field={field}:")
    assert text in problems[0]


def test_validate_dataset_reports_bad_rows_and_duplicates():
    rows = [_row(sample_id="a"), _row(sample_id="b", ego_speed=-2.0), _row(sample_id="a")]
    columns = {key: [row[key] for row in rows] for key in DRIVING_FEATURES}
    dataset = Dataset.from_dict(columns, features=DRIVING_FEATURES)
    with pytest.raises(DrivingDataError) as error:
        validate_dataset(DatasetDict({"train": dataset}))
    message = str(error.value)
    assert "split 'train'" in message and "2 problem(s) in 3 rows" in message
    assert "sample_id=b field=ego_speed" in message and "sample_id=a field=sample_id: duplicated" in message


def test_three_on_disk_forms_give_the_same_rows(synthetic_dir, tmp_path):
    from_disk = load_driving_dataset(synthetic_dir)
    assert set(from_disk) == {"train", "validation", "test"}
    # parquet, one file per split (images embedded)
    parquet_dir = tmp_path / "parquet"
    for split, part in from_disk.items():
        part.to_parquet(str(parquet_dir / f"{split}.parquet"))
    from_parquet = load_driving_dataset(parquet_dir)
    # JSONL with image files referenced relative to the JSONL file
    jsonl_dir = tmp_path / "jsonl"
    (jsonl_dir / "images").mkdir(parents=True)
    for split, part in from_disk.items():
        lines = []
        for row in part:
            paths = []
            for role, image in zip(row["image_roles"], row["images"]):
                name = f"images/{row['sample_id']}_{role}.png"
                image.save(jsonl_dir / name)
                paths.append(name)
            lines.append(json.dumps({**row, "images": paths}))
        (jsonl_dir / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    from_jsonl = load_driving_dataset(jsonl_dir)
    for split in from_disk:
        _assert_same_rows(from_disk[split], from_parquet[split])
        _assert_same_rows(from_disk[split], from_jsonl[split])
    # A single file and a split argument.
    test_split = load_driving_dataset(jsonl_dir / "test.jsonl")
    _assert_same_rows(from_disk["test"], test_split)
    assert len(load_driving_dataset(synthetic_dir, split="validation")) == 3
    with pytest.raises(DrivingDataError, match="no split 'dev'"):
        load_driving_dataset(synthetic_dir, split="dev")


def test_jsonl_errors_name_row_field_and_path(tmp_path):
    good = tmp_path / "front.png"
    good.write_bytes(_png())
    (tmp_path / "broken.png").write_bytes(b"garbage")
    base = {k: v for k, v in _row().items() if k != "images"}
    rows = [
        {**base, "sample_id": "ok", "images": ["front.png"]},
        {**base, "sample_id": "missing", "images": ["gone.png"]},
        {**base, "sample_id": "broken", "images": ["broken.png"]},
        {**base, "sample_id": "word", "images": ["front.png"], "speed_action": "HURRY"},
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DrivingDataError) as error:
        load_driving_dataset(path)
    message = str(error.value)
    assert f"sample_id=missing field=images[0]: image file not found: {tmp_path / 'gone.png'}" in message
    assert "sample_id=broken field=images[0]: unreadable image" in message and "broken.png" in message
    assert "sample_id=word field=speed_action: unknown action 'HURRY'" in message
    assert "sample_id=ok" not in message
    assert len(load_driving_dataset(path, validate=False)) == 4


def test_missing_optional_columns_are_filled_and_required_ones_reported(tmp_path):
    (tmp_path / "a.png").write_bytes(_png())
    minimal = {k: v for k, v in _row().items() if k not in ("reasoning", "feasible_actions", "trajectory", "source")}
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({**minimal, "images": ["a.png"]}))
    row = load_driving_dataset(path)[0]
    assert row["reasoning"] is None and row["trajectory"] is None and row["source"] == "unknown"
    path.write_text(json.dumps({k: v for k, v in {**minimal, "images": ["a.png"]}.items() if k != "navigation"}))
    with pytest.raises(DrivingDataError, match=r"missing required column\(s\) \['navigation'\]"):
        load_driving_dataset(path)
    with pytest.raises(DrivingDataError, match=r"nothing-here does not exist; set `dataset_name` to a save_to_disk"):
        load_driving_dataset(tmp_path / "nothing-here")
    with pytest.raises(DrivingDataError, match=r"^outputs/no-data: no such local path, and loading it from the Hub"):
        load_driving_dataset("outputs/no-data")  # a relative path or a Hub name: both were tried (offline in tests)


def test_split_for_stages_is_disjoint_and_deterministic():
    dataset = Dataset.from_dict({"sample_id": [f"s{i}" for i in range(50)]})
    sft, grpo = split_for_stages(DatasetDict({"train": dataset}), sft_fraction=0.2, seed=1)
    assert len(sft) == 10 and len(grpo) == 40
    assert set(sft["sample_id"]).isdisjoint(grpo["sample_id"])
    assert set(sft["sample_id"]) | set(grpo["sample_id"]) == set(dataset["sample_id"])
    again, _ = split_for_stages(dataset, 0.2, seed=1)
    other, _ = split_for_stages(dataset, 0.2, seed=2)
    assert again["sample_id"] == sft["sample_id"] and other["sample_id"] != sft["sample_id"]
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        split_for_stages(dataset, 1.0)
    with pytest.raises(DrivingDataError, match="cannot be split"):
        split_for_stages(dataset.select([0]), 0.2)


def test_repeat_action_rows_repeats_rare_classes_in_place():
    rows = Dataset.from_dict(
        {
            "sample_id": ["a", "b", "c", "d"],
            "speed_action": ["KEEP", "DECELERATE", "STOP", "DECELERATE"],
            "path_action": ["STRAIGHT", "STRAIGHT", "LEFT_CHANGE", "RIGHT_CHANGE"],
        }
    )
    # A row matching two entries repeats the larger count (d: DECELERATE 3 vs RIGHT_CHANGE 2), not their product.
    repeated = repeat_action_rows(rows, {"DECELERATE": 3, "LEFT_CHANGE": 2, "RIGHT_CHANGE": 2})
    assert repeated["sample_id"] == ["a", "b", "b", "b", "c", "c", "d", "d", "d"]
    assert repeat_action_rows(rows, None) is rows and repeat_action_rows(rows, {}) is rows
    with pytest.raises(ValueError, match="unknown action 'SLOW'; valid: KEEP, ACCELERATE"):
        repeat_action_rows(rows, {"SLOW": 2})
    with pytest.raises(ValueError, match="DECELERATE must repeat a whole number of times >= 1, got 0"):
        repeat_action_rows(rows, {"DECELERATE": 0})


@pytest.mark.parametrize(
    ("navigation", "paths"),
    [
        ("go straight", {"STRAIGHT"}),
        ("Keep lane.", {"STRAIGHT"}),
        ("change to the left lane", {"LEFT_CHANGE"}),
        ("Change lanes to the RIGHT", {"RIGHT_CHANGE"}),
        ("turn left at the next intersection", {"LEFT_TURN", "STRAIGHT"}),
        ("turn right", {"RIGHT_TURN", "STRAIGHT"}),
        ("follow the route", None),
        ("", None),
    ],
)
def test_navigation_paths_reads_the_command_alone(navigation, paths):
    assert navigation_paths(navigation) == (None if paths is None else frozenset(paths))


def test_repeat_navigation_overrides_repeats_rows_that_depart_from_the_command():
    rows = Dataset.from_dict(
        {
            "sample_id": ["cones", "plain", "blocked", "turn_far", "turn", "odd", "stop_cones"],
            "speed_action": ["KEEP", "KEEP", "KEEP", "KEEP", "DECELERATE", "KEEP", "DECELERATE"],
            "path_action": [
                "LEFT_CHANGE",
                "STRAIGHT",
                "STRAIGHT",
                "STRAIGHT",
                "LEFT_TURN",
                "RIGHT_CHANGE",
                "RIGHT_CHANGE",
            ],
            "navigation": [
                "go straight",  # cones close the lane: the image decides -> repeated
                "go straight",
                "change to the left lane",  # the left lane is blocked: stay -> repeated
                "turn left at the next intersection",  # junction still far: straight is what the command allows
                "turn left at the next intersection",
                "drive on",  # a command not recognised never counts as an override
                "go straight",  # override (x3) and DECELERATE (x2): the larger count, not the product
            ],
        }
    )
    assert [overrides_navigation(n, p) for n, p in zip(rows["navigation"], rows["path_action"])] == [
        True,
        False,
        True,
        False,
        False,
        False,
        True,
    ]
    repeated = repeat_action_rows(rows, {"DECELERATE": 2}, navigation_overrides=3)
    assert list(repeated["sample_id"]) == [
        "cones",
        "cones",
        "cones",
        "plain",
        "blocked",
        "blocked",
        "blocked",
        "turn_far",
        "turn",
        "turn",
        "odd",
        "stop_cones",
        "stop_cones",
        "stop_cones",
    ]
    assert list(repeat_action_rows(rows, None, navigation_overrides=1)["sample_id"]) == list(rows["sample_id"])
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="`repeat_navigation_overrides` must repeat a whole number of times >= 1"):
            repeat_action_rows(rows, None, navigation_overrides=bad)


def test_repeat_actions_apply_to_this_stage_only(synthetic_dir):
    import logging

    from alphadrive_trl.configs import DrivingScriptArguments
    from alphadrive_trl.entrypoint import load_stage_splits

    def train_rows(stage, repeat=None):
        args = DrivingScriptArguments(dataset_name=str(synthetic_dir), stage=stage, repeat_actions=repeat)
        return load_stage_splits(args, False, "", logging.getLogger("test"))[0]

    sft_plain, grpo_plain = train_rows("sft"), train_rows("grpo")
    sft = train_rows("sft", '{"KEEP": 2}')  # a JSON string, as on the command line
    keep = sum(action == "KEEP" for action in sft_plain["speed_action"])
    assert keep > 0 and len(sft) == len(sft_plain) + keep
    # The copies come from the SFT part only: the GRPO part never sees one of its rows.
    assert set(sft["sample_id"]) == set(sft_plain["sample_id"])
    assert set(sft["sample_id"]).isdisjoint(grpo_plain["sample_id"])
    with pytest.raises(ValueError, match="must be a dict or a JSON object string"):
        DrivingScriptArguments(dataset_name="x", repeat_actions="{DECELERATE: 3")
    with pytest.raises(ValueError, match="`repeat_navigation_overrides` must repeat a whole number"):
        DrivingScriptArguments(dataset_name="x", repeat_navigation_overrides=0)


def test_repeat_navigation_overrides_apply_to_this_stage_only(synthetic_dir):
    import logging

    from alphadrive_trl.configs import DrivingScriptArguments
    from alphadrive_trl.entrypoint import load_stage_splits

    def train_rows(stage, times=1):
        args = DrivingScriptArguments(dataset_name=str(synthetic_dir), stage=stage, repeat_navigation_overrides=times)
        return load_stage_splits(args, False, "", logging.getLogger("test"))[0]

    plain, grpo_plain = train_rows("sft"), train_rows("grpo")
    overrides = sum(overrides_navigation(n, p) for n, p in zip(plain["navigation"], plain["path_action"]))
    repeated = train_rows("sft", 4)
    assert overrides > 0 and len(repeated) == len(plain) + 3 * overrides
    assert set(repeated["sample_id"]) == set(plain["sample_id"])
    assert set(repeated["sample_id"]).isdisjoint(grpo_plain["sample_id"])


def test_select_images_front_first_in_role_order():
    row = {"sample_id": "x", "images": ["h1", "f", "l", "r"], "image_roles": ["front_t-1", "front", "left", "right"]}
    assert select_images(row) == ["f", "h1", "l", "r"]
    assert select_images(row, max_images=2) == ["f", "h1"]
    assert select_image_roles(row, max_images=3) == ["front", "front_t-1", "left"]
    with pytest.raises(DrivingDataError, match="sample_id=x field=image_roles"):
        select_images({**row, "image_roles": ["front"]})


def _image_tokens(image_processor, image) -> int:
    grid = image_processor(images=[image], return_tensors="pt")["image_grid_thw"]
    return int(grid.prod()) // image_processor.merge_size**2


def test_image_budget_sets_visual_tokens():
    from transformers import Qwen2VLImageProcessor

    image = Image.new("RGB", (160, 96), (120, 130, 140))
    processor = Qwen2VLImageProcessor()
    # Qwen's smart_resize keeps the aspect ratio, rounds sides to multiples of 28 (patch 14 x merge 2) and scales the
    # area into [min_pixels, max_pixels]; one visual token per 28x28 cell.
    assert _image_tokens(processor, image) == 3 * 6  # default budget: 160x96 -> 168x84
    apply_image_budget(processor, max_pixels=56 * 56)  # 15360 px > 3136: shrunk to 56x28
    assert _image_tokens(processor, image) == 1 * 2
    assert processor.size["longest_edge"] == 56 * 56 and processor.size["shortest_edge"] == 56 * 56
    apply_image_budget(processor, min_pixels=28 * 28 * 40, max_pixels=28 * 28 * 60)  # enlarged to 252x140
    assert _image_tokens(processor, image) == 5 * 9
    with pytest.raises(ValueError, match="larger than max_pixels"):
        apply_image_budget(processor, min_pixels=10_000, max_pixels=100)
    assert apply_image_budget(processor) is processor  # no budget given: unchanged


def test_image_budget_on_a_full_processor_counts_image_pad_tokens(tiny_model_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    image = Image.new("RGB", (160, 96), (50, 60, 70))
    pad_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    factor = processor.image_processor.patch_size * processor.image_processor.merge_size
    text = "<|vision_start|><|image_pad|><|vision_end|>go"

    def pads():
        return int((processor(text=[text], images=[image], return_tensors="pt")["input_ids"] == pad_id).sum())

    assert factor == 28
    apply_image_budget(processor, min_pixels=factor * factor, max_pixels=factor * factor * 4)
    assert pads() == 1 * 2  # 160x96 shrunk into 4 cells at its aspect ratio: 56x28
    apply_image_budget(processor, max_pixels=factor * factor * 12)
    assert pads() == 2 * 4  # 112x56
    apply_image_budget(processor, max_pixels=factor * factor * 40)
    assert pads() == 3 * 6  # 168x84: the image fits, only rounded
