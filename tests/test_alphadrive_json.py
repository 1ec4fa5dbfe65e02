"""Import of the published AlphaDrive format: prompt parsing, counted skips, the CLI and the export round trip."""

import json

import pytest
from PIL import Image

from data_prep.alphadrive_json import (
    RecordParseError,
    convert_records,
    navigation_dict_to_text,
    navigation_text_to_dict,
    parse_navigation,
    parse_navigation_dict,
    parse_reasoning,
    parse_speed,
    read_records,
    record_to_row,
)

PROMPT = (
    "You are an expert driving assistant. Your current speed is {speed}m/s, the navigation command is '{nav}', "
    "based on the understanding of the driving scene and the navigation information, what is your driving plan for "
    "the next three seconds? Output the planning reasoning process in <think> </think> and final planning answer in "
    "<answer> </answer> tags. For example '<think> ... </think> <answer> KEEP, LEFT_TURN </answer>'."
)


def record(speed="8.47", nav="go straight", solution="<answer> KEEP, STRAIGHT </answer>", image="img/a.jpg", **extra):
    return {"image": image, "problem": PROMPT.format(speed=speed, nav=nav), "solution": solution, **extra}


@pytest.fixture
def image_root(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("a", "b", "c"):
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "img" / f"{name}.jpg")
    return tmp_path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Your current speed is 8.47m/s, the", 8.47),
        ("Your current speed is 0m/s.", 0.0),
        ("current speed: 36 km/h", 10.0),
        ("ego speed of 10 mph", 4.4704),
        ("Your current speed is 12.5 m/s", 12.5),
    ],
)
def test_parse_speed(text, expected):
    assert parse_speed(text) == pytest.approx(expected)


def test_parse_speed_failures():
    with pytest.raises(RecordParseError, match="problem: no ego speed found"):
        parse_speed("the navigation command is 'go straight'")
    with pytest.raises(RecordParseError, match="not a non-negative number"):
        parse_speed("Your current speed is -3m/s")


@pytest.mark.parametrize(
    ("nav", "expected"),
    [
        ("go straight", "go straight"),
        ("turn left at the next intersection", "turn left at the next intersection"),
        ("don't turn, go straight", "don't turn, go straight"),
        ("{'100m': 'Straight', '200m': 'Left'}", "Straight in 100m, then Left in 200m"),
        ('{"50m": "Right"}', "Right in 50m"),
    ],
)
def test_parse_navigation(nav, expected):
    assert parse_navigation(PROMPT.format(speed=3, nav=nav)) == expected


def test_parse_navigation_variants_and_failures():
    assert parse_navigation("Speed 3 m/s. Navigation: turn right. Plan?") == "turn right"
    assert parse_navigation('the navigation command is "keep lane" and') == "keep lane"
    with pytest.raises(RecordParseError, match="no navigation command found"):
        parse_navigation("Your current speed is 3m/s.")
    with pytest.raises(RecordParseError, match="never closed"):
        parse_navigation("the navigation command is 'go straight")
    with pytest.raises(RecordParseError, match="cannot read navigation mapping"):
        parse_navigation("the navigation command is '{'100m': Straight}', based")
    with pytest.raises(RecordParseError, match="no closing"):
        parse_navigation("the navigation command is '{'100m': 'Straight''")
    with pytest.raises(RecordParseError, match="is empty"):
        parse_navigation_dict("{}")


def test_navigation_text_round_trip():
    steps = {"100m": "Straight", "200m": "Left"}
    assert navigation_text_to_dict(navigation_dict_to_text(steps)) == steps
    assert navigation_text_to_dict("go straight") is None
    assert navigation_text_to_dict("turn left in front of the school") is None  # "school" is not a distance


def test_parse_reasoning():
    assert parse_reasoning("<think> The light is red.\n Stop. </think>") == "The light is red. Stop."
    assert parse_reasoning("plain text") == "plain text"
    assert parse_reasoning("<think>  </think>") is None
    assert parse_reasoning(None) is None
    with pytest.raises(RecordParseError, match="thinking: expected a string"):
        parse_reasoning(["x"])


def test_record_to_row(image_root):
    row = record_to_row(
        record(nav="{'100m': 'Straight', '200m': 'Left'}", solution="<answer> decelerate, left_turn </answer>",
               thinking="<think> A junction ahead. </think>", id=17),
        image_root,
    )  # fmt: skip
    assert row == {
        "sample_id": "17",
        "images": [str(image_root / "img/a.jpg")],
        "image_roles": ["front"],
        "ego_speed": 8.47,
        "navigation": "Straight in 100m, then Left in 200m",
        "speed_action": "DECELERATE",
        "path_action": "LEFT_TURN",
        "reasoning": "A junction ahead.",
        "feasible_actions": None,
        "trajectory": None,
        "source": "alphadrive_json",
    }
    # Reasoning inside the solution, several images, id from the image path.
    row = record_to_row(
        record(
            image=["img/a.jpg", "img/b.jpg"], solution="<think> Clear road. </think><answer> KEEP, STRAIGHT </answer>"
        ),
        image_root,
    )
    assert row["sample_id"] == "img_a"
    assert row["image_roles"] == ["front", "view_1"]
    assert row["reasoning"] == "Clear road."


def test_bad_records_are_counted_with_index_and_reason(image_root):
    records = [
        record(),  # 0 ok
        record(solution="<answer> FAST, STRAIGHT </answer>"),  # 1 bad plan
        {"image": "img/b.jpg", "solution": "<answer> KEEP, STRAIGHT </answer>"},  # 2 no problem
        record(image="img/missing.jpg"),  # 3 missing file
        record(speed="fast"),  # 4 no speed number
        "not a record",  # 5
        record(image="img/a.jpg"),  # 6 same image again -> unique id
        {"__error__": "record: line 8 is not valid JSON (Expecting value)"},  # 7
        record(image="img/c.jpg", solution=None),  # 8
    ]
    rows, report = convert_records(records, image_root, progress=False)
    assert [row["sample_id"] for row in rows] == ["img_a", "img_a-2"]
    assert report.total == 9 and report.converted == 2
    reasons = dict(report.skipped)
    assert sorted(reasons) == [1, 2, 3, 4, 5, 7, 8]
    assert reasons[1].startswith("solution: '<answer> FAST, STRAIGHT </answer>' is not")
    assert reasons[2] == "problem: missing or empty"
    assert reasons[3] == f"image: file not found: {image_root / 'img/missing.jpg'}"
    assert reasons[4].startswith("problem: no ego speed found")
    assert reasons[5] == "record: expected an object, got str"
    assert reasons[7].startswith("record: line 8 is not valid JSON")
    assert reasons[8].startswith("solution: missing")
    assert report.reasons() == {"solution": 2, "problem": 2, "image": 1, "record": 2}
    assert "record 3: image: file not found" in report.summary()
    # Without the file check the missing image is kept.
    rows, report = convert_records(records, image_root, check_images=False, progress=False)
    assert report.converted == 3


def test_read_records_json_and_jsonl(tmp_path):
    json_file = tmp_path / "a.json"
    json_file.write_text(json.dumps([record(), record(speed=2)]))
    assert len(list(read_records(json_file))) == 2
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(json.dumps(record()) + "\n\n{broken\n" + json.dumps(record()) + "\n")
    records = list(read_records(jsonl))
    assert len(records) == 3
    assert records[1]["__error__"].startswith("record: line 3 is not valid JSON")
    with pytest.raises(FileNotFoundError, match="AlphaDrive input not found"):
        list(read_records(tmp_path / "nope.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(ValueError, match="not valid JSON"):
        list(read_records(broken))


def test_cli_import_export_round_trip(image_root, tmp_path, capsys):
    from alphadrive_trl.data import load_driving_dataset
    from data_prep.alphadrive_json import main

    records = [
        record(nav="{'100m': 'Straight', '200m': 'Left'}", solution="<answer> DECELERATE, LEFT_TURN </answer>",
               thinking="<think> Junction ahead. </think>", id="s1"),
        record(speed="12", image="img/b.jpg", id="s2"),
        record(solution="<answer> MAYBE </answer>", id="bad"),
    ]  # fmt: skip
    source = image_root / "train.json"
    source.write_text(json.dumps(records))
    output = tmp_path / "imported"
    assert main(["--input", str(source), "--output-dir", str(output)]) == 0
    dataset = load_driving_dataset(str(output), split="train")
    assert dataset["sample_id"] == ["s1", "s2"]
    assert dataset["navigation"] == ["Straight in 100m, then Left in 200m", "go straight"]
    assert dataset["ego_speed"] == pytest.approx([8.47, 12.0])
    assert dataset["reasoning"] == ["Junction ahead.", None]
    assert dataset[0]["images"][0].size == (8, 8)
    # An existing output is not replaced silently.
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["--input", str(source), "--output-dir", str(output)])
    last = capsys.readouterr().err.splitlines()[-1]  # after the progress bars
    assert exit_info.value.code == 2
    assert (
        last
        == f"data_prep.alphadrive_json: error: {output} already exists; pass overwrite=True (CLI: --overwrite) to replace it"
    )

    exported = tmp_path / "export" / "alphadrive.jsonl"
    assert main(["--export", str(output), "--output", str(exported)]) == 0
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert lines[0]["image"] == "alphadrive_images/s1_0.jpg"
    assert (exported.parent / lines[0]["image"]).is_file()
    assert lines[0]["solution"] == "<answer> DECELERATE, LEFT_TURN </answer>"
    assert lines[0]["thinking"] == "<think> Junction ahead. </think>"
    assert "the navigation command is '{'100m': 'Straight', '200m': 'Left'}'" in lines[0]["problem"]
    assert "thinking" not in lines[1]
    # Re-importing the export gives the same rows.
    rows, report = convert_records(read_records(exported), exported.parent, progress=False)
    assert report.skipped == []
    for row, original in zip(rows, dataset):
        for column in ("sample_id", "navigation", "speed_action", "path_action", "reasoning", "image_roles"):
            assert row[column] == original[column]
        assert row["ego_speed"] == pytest.approx(original["ego_speed"], abs=0.005)


def test_cli_rejects_mostly_unparsable_input(image_root, tmp_path):
    from data_prep.alphadrive_json import main

    source = image_root / "bad.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in [record(), {"problem": "hi"}, {"problem": "x"}]))
    with pytest.raises(SystemExit, match="2 of 3 records could not be converted"):
        main(["--input", str(source), "--output-dir", str(tmp_path / "out")])
    out = tmp_path / "out-jsonl"
    main(["--input", str(source), "--output-dir", str(out), "--format", "jsonl", "--max-skipped-fraction", "1"])
    lines = (out / "train.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["images"] == [str(image_root / "img/a.jpg")]


def test_datasets_directory_with_embedded_images(tmp_path, capsys):
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    from alphadrive_trl.data import load_driving_dataset
    from data_prep.alphadrive_json import main

    features = Features({"image": ImageFeature(), "problem": Value("string"), "solution": Value("string")})
    picture = Image.new("RGB", (12, 6), (200, 0, 0))
    records = [
        {"image": picture, "problem": PROMPT.format(speed=3, nav="turn right"), "solution": "<answer> STOP, RIGHT_TURN </answer>"},
        {"image": picture, "problem": "no speed here", "solution": "<answer> KEEP, STRAIGHT </answer>"},
        {"image": picture, "problem": PROMPT.format(speed=4, nav="go straight"), "solution": "<answer> KEEP, STRAIGHT </answer>"},
    ]  # fmt: skip
    Dataset.from_list(records, features=features).save_to_disk(str(tmp_path / "published"))
    rows, report = convert_records(read_records(tmp_path / "published"), tmp_path, progress=False)
    assert [row["sample_id"] for row in rows] == ["record-0", "record-2"]
    assert report.skipped == [(1, "problem: no ego speed found (expected e.g. 'Your current speed is 8.5m/s')")]
    output = tmp_path / "out"
    main(["--input", str(tmp_path / "published"), "--output-dir", str(output)])
    dataset = load_driving_dataset(str(output), split="train")
    assert dataset[0]["images"][0].size == (12, 6)
    assert (dataset[0]["speed_action"], dataset[0]["path_action"], dataset[0]["navigation"]) == (
        "STOP",
        "RIGHT_TURN",
        "turn right",
    )
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["--input", str(tmp_path / "published"), "--output-dir", str(tmp_path / "j"), "--format", "jsonl"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--format jsonl needs image paths" in err and "Traceback" not in err


# --- bad input: encodings, wrappers, broken images, duplicate ids (issue 17) --------------------------------------


def test_bom_is_accepted_and_bad_bytes_or_json_name_the_file_and_line(tmp_path):
    with_bom = tmp_path / "bom.json"
    with_bom.write_bytes(b"\xef\xbb\xbf" + json.dumps([record()]).encode())
    assert [r["problem"] for r in read_records(with_bom)] == [record()["problem"]]
    with_bom_jsonl = tmp_path / "bom.jsonl"
    with_bom_jsonl.write_bytes(b"\xef\xbb\xbf" + (json.dumps(record()) + "\n" + json.dumps(record()) + "\n").encode())
    assert len(list(read_records(with_bom_jsonl))) == 2

    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(json.dumps(record()).encode() + b'\n{"problem": "caf\xe9"}\n')
    with pytest.raises(ValueError) as error:
        list(read_records(latin1))
    assert str(error.value) == f"{latin1}, line 2: not UTF-8 text (byte 0xe9); re-save the file as UTF-8"

    malformed = tmp_path / "malformed.json"
    malformed.write_text('[\n  {"problem": "a"},\n  {"problem": }\n]')
    with pytest.raises(ValueError) as error:
        list(read_records(malformed))
    assert str(error.value) == f"{malformed}, line 3 column 15: not valid JSON (Expecting value)"


def test_an_object_wrapper_says_the_top_level_must_be_a_list(tmp_path):
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"version": 1, "data": [record(), record()]}, indent=2))
    with pytest.raises(ValueError) as error:
        list(read_records(wrapped))
    assert str(error.value) == (
        f"{wrapped}: the top level must be a JSON list of records (or one record per line, JSONL), not an object "
        "with keys ['data', 'version']; the records may be the list under 'data'"
    )
    single = tmp_path / "single.jsonl"  # one record on one line is still a record
    single.write_text(json.dumps(record()))
    assert len(list(read_records(single))) == 1


def test_broken_images_are_skipped_and_reported_at_import(image_root, tmp_path):
    from data_prep.alphadrive_json import main

    good = (image_root / "img/a.jpg").read_bytes()
    (image_root / "img/truncated.jpg").write_bytes(good[: len(good) // 2])
    (image_root / "img/garbage.jpg").write_bytes(b"not an image at all")
    records = [record(), record(image="img/truncated.jpg"), record(image="img/garbage.jpg"), record(image="img/b.jpg")]
    rows, report = convert_records(records, image_root, progress=False)
    assert [row["images"] for row in rows] == [[str(image_root / "img/a.jpg")], [str(image_root / "img/b.jpg")]]
    reasons = dict(report.skipped)
    assert sorted(reasons) == [1, 2]
    assert reasons[1].startswith(f"image: cannot decode {image_root / 'img/truncated.jpg'} (OSError: ")
    assert reasons[2].startswith(f"image: cannot decode {image_root / 'img/garbage.jpg'} (UnidentifiedImageError: ")

    # Through the CLI the dataset written holds only the good rows, and it loads.
    source = image_root / "mixed.json"
    source.write_text(json.dumps(records))
    main(["--input", str(source), "--output-dir", str(tmp_path / "out")])
    from alphadrive_trl.data import load_driving_dataset

    dataset = load_driving_dataset(str(tmp_path / "out"), split="train")
    assert len(dataset) == 2 and [image.size for row in dataset for image in row["images"]] == [(8, 8), (8, 8)]


def test_duplicate_ids_are_reported(image_root):
    records = [record(id="x"), record(id="y"), record(id="x"), record(id="x")]
    rows, report = convert_records(records, image_root, progress=False)
    assert [row["sample_id"] for row in rows] == ["x", "y", "x-2", "x-3"]
    assert report.renamed == [(2, "x", "x-2"), (3, "x", "x-3")]
    assert report.summary().splitlines()[1:] == [
        "2 duplicate sample id(s) renamed to keep ids unique",
        "  record 2: 'x' -> 'x-2'",
        "  record 3: 'x' -> 'x-3'",
    ]
