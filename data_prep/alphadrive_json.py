"""Import (and export) the published AlphaDrive data format.

A record of the published format looks like

    {"image": "samples/CAM_FRONT/n008-...jpg",
     "problem": "... Your current speed is 8.47m/s, the navigation command is '{'100m': 'Straight', '200m': 'Left'}', ...",
     "solution": "<answer> KEEP, STRAIGHT </answer>",
     "thinking": "<think> The road ahead is clear ... </think>"}

in a JSON list, a JSONL file, or a `datasets` directory (`save_to_disk`). Import parses the ego speed and the navigation
command out of `problem` (no `eval`: the dict-like navigation is read with a small literal parser), the plan out of
`solution` and the reasoning out of `thinking`, and writes the canonical schema. Records that do not parse are
skipped, counted and reported with their index and the reason.

    python -m data_prep.alphadrive_json --input train.json --image-root /data/nuscenes --output-dir data/alphadrive
    python -m data_prep.alphadrive_json --export data/alphadrive --output exported.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import shutil
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from alphadrive_trl.actions import format_answer, parse_answer_strict
from alphadrive_trl.entrypoint import command
from data_prep.common import OUTPUT_FORMATS, write_driving_rows

logger = logging.getLogger(__name__)

SOURCE = "alphadrive_json"

_NUMBER = r"[-+]?\d+(?:\.\d+)?"
# "Your current speed is 8.47m/s", "current speed: 30 km/h", "ego speed of 5 m/s".
_SPEED = re.compile(
    rf"\b(?:current\s+|ego\s+)?speed\s*(?:is|:|=|of)?\s*(?:about\s+)?({_NUMBER})\s*(m/s|km/h|kmh|kph|mph|m s-1)?",
    re.IGNORECASE,
)
_SPEED_UNITS = {"m/s": 1.0, "m s-1": 1.0, "km/h": 1 / 3.6, "kmh": 1 / 3.6, "kph": 1 / 3.6, "mph": 0.44704}
# "the navigation command is '...'", "navigation: turn left", "navigation instruction is ...".
_NAVIGATION_LEAD = re.compile(r"\bnavigation(?:\s+(?:command|instruction|info(?:rmation)?))?\s*(?:is|:|=)\s*", re.I)
# What may follow the closing quote of a quoted command.
_AFTER_QUOTE = re.compile(r"\s*(?:[,.;)]|\band\b|\bbased\b|$)", re.IGNORECASE)
_DICT_ITEM = re.compile(r"""\s*(['"])(.*?)\1\s*:\s*(['"])(.*?)\3\s*(,|$)""", re.DOTALL)
_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.DOTALL | re.IGNORECASE)
_THINK_TAGS = re.compile(r"</?think>", re.IGNORECASE)
# Our rendering of a dict navigation ("Straight in 100m, then Left in 200m"), parsed back on export.
_NAV_STEP = re.compile(r"^\s*(.+?) in (\S+)\s*$")


class RecordParseError(ValueError):
    """A record that cannot be converted; the message says which field and why."""


# --- parsing the problem text -----------------------------------------------------------------------------------


def parse_speed(problem: str) -> float:
    """Ego speed in m/s from the prompt text (km/h and mph are converted).

    Example:
        >>> parse_speed("Your current speed is 8.47m/s, the navigation command is 'go straight'")
        8.47
        >>> parse_speed("current speed: 36 km/h")
        10.0
    """
    match = _SPEED.search(problem)
    if match is None:
        raise RecordParseError("problem: no ego speed found (expected e.g. 'Your current speed is 8.5m/s')")
    value = float(match.group(1))
    unit = (match.group(2) or "m/s").lower()
    speed = round(value * _SPEED_UNITS[unit], 6)
    if not math.isfinite(speed) or speed < 0:
        raise RecordParseError(f"problem: ego speed {match.group(0)!r} is not a non-negative number")
    return speed


def parse_navigation_dict(text: str) -> dict[str, str]:
    """Parse a dict-like string of string keys and values, `{'100m': 'Straight', '200m': 'Left'}`, without `eval`.

    Example:
        >>> parse_navigation_dict("{'100m': 'Straight', '200m': 'Left'}")
        {'100m': 'Straight', '200m': 'Left'}
    """
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise RecordParseError(f"problem: navigation {text!r} is not a {{...}} mapping")
    body = body[1:-1].strip()
    result: dict[str, str] = {}
    position = 0
    while position < len(body):
        match = _DICT_ITEM.match(body, position)
        if match is None:
            raise RecordParseError(f"problem: cannot read navigation mapping {text!r} near {body[position:]!r}")
        result[match.group(2).strip()] = match.group(4).strip()
        position = match.end()
    if not result:
        raise RecordParseError(f"problem: navigation mapping {text!r} is empty")
    return result


def navigation_dict_to_text(steps: dict[str, str]) -> str:
    """`{'100m': 'Straight', '200m': 'Left'}` -> `'Straight in 100m, then Left in 200m'` (what the schema stores)."""
    return ", then ".join(f"{command} in {distance}" for distance, command in steps.items())


def navigation_text_to_dict(text: str) -> dict[str, str] | None:
    """Inverse of `navigation_dict_to_text`; `None` for a plain command such as `go straight`."""
    steps = {}
    for part in text.split(", then "):
        match = _NAV_STEP.match(part)
        if match is None or not re.match(r"^\d+(?:\.\d+)?\s*m$", match.group(2)):
            return None
        steps[match.group(2)] = match.group(1)
    return steps or None


def _matching_brace(text: str, start: int) -> int:
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    raise RecordParseError("problem: navigation mapping has no closing '}'")


def parse_navigation(problem: str) -> str:
    """The navigation command from the prompt text, as stored in the schema.

    A quoted command is taken verbatim; a dict-like command (distance -> direction) is rendered as text with
    `navigation_dict_to_text`.

    Example:
        >>> parse_navigation("..., the navigation command is 'turn left at the next intersection', based on ...")
        'turn left at the next intersection'
        >>> parse_navigation("the navigation command is '{'100m': 'Straight', '200m': 'Left'}', based on ...")
        'Straight in 100m, then Left in 200m'
    """
    lead = _NAVIGATION_LEAD.search(problem)
    if lead is None:
        raise RecordParseError("problem: no navigation command found (expected \"the navigation command is '...'\")")
    rest = problem[lead.end() :]
    quote = rest[:1] if rest[:1] in ("'", '"') else ""
    body = rest[len(quote) :].lstrip()
    if body.startswith("{"):
        end = _matching_brace(body, 0)
        return navigation_dict_to_text(parse_navigation_dict(body[: end + 1]))
    if quote:
        # The closing quote is the first one followed by punctuation / "and" / "based" / the end (so "don't" works).
        for index in range(len(quote), len(rest)):
            if rest[index] == quote and _AFTER_QUOTE.match(rest, index + 1):
                command = rest[len(quote) : index].strip()
                break
        else:
            raise RecordParseError(f"problem: navigation command opened with {quote} but never closed")
    else:
        command = re.split(r"[,;\n]|\.\s|\.$", rest, maxsplit=1)[0].strip()
    if not command:
        raise RecordParseError("problem: navigation command is empty")
    return command


def parse_reasoning(thinking: Any) -> str | None:
    """The text of a `<think>…</think>` block (or of untagged text); `None` when empty."""
    if thinking is None:
        return None
    if not isinstance(thinking, str):
        raise RecordParseError(f"thinking: expected a string, got {type(thinking).__name__}")
    blocks = _THINK_BLOCK.findall(thinking)
    text = blocks[-1] if blocks else _THINK_TAGS.sub("", thinking)
    text = " ".join(text.split())
    return text or None


# --- records -> rows --------------------------------------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import did: rows kept, and every skipped record with its index and reason."""

    total: int = 0
    converted: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    # (record index, id in the record or derived from its image, the unique id it was given)
    renamed: list[tuple[int, str, str]] = field(default_factory=list)

    def reasons(self) -> Counter:
        return Counter(reason.split(":", 1)[0] for _, reason in self.skipped)

    def summary(self) -> str:
        lines = [f"{self.converted} of {self.total} records converted, {len(self.skipped)} skipped"]
        for index, reason in self.skipped[:20]:
            lines.append(f"  record {index}: {reason}")
        if len(self.skipped) > 20:
            lines.append(f"  ... and {len(self.skipped) - 20} more (by field: {dict(self.reasons())})")
        if self.renamed:
            lines.append(f"{len(self.renamed)} duplicate sample id(s) renamed to keep ids unique")
            for index, original, sample_id in self.renamed[:20]:
                lines.append(f"  record {index}: {original!r} -> {sample_id!r}")
            if len(self.renamed) > 20:
                lines.append(f"  ... and {len(self.renamed) - 20} more")
        return "\n".join(lines)


def _is_embedded_image(item: Any) -> bool:
    # A `datasets` directory with an Image column yields PIL images (or {"bytes", "path"} dicts when not decoded).
    import PIL.Image

    return isinstance(item, PIL.Image.Image) or (isinstance(item, dict) and bool(item.get("bytes")))


def _check_decodes(image: Any, name: str) -> None:
    """Decode the whole image, so a truncated or garbage file is reported here and not when training loads it."""
    import io

    import PIL.Image

    try:
        if isinstance(image, PIL.Image.Image):
            image.load()
            return
        source = io.BytesIO(image["bytes"]) if isinstance(image, dict) else image
        with PIL.Image.open(source) as opened:
            opened.load()
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise RecordParseError(f"image: cannot decode {name} ({type(error).__name__}: {error})") from error


def _images(record: dict, image_root: Path, check_images: bool) -> list[Any]:
    """Image paths resolved against `image_root` (checked to exist and to decode), or embedded images kept as they
    are (checked to decode)."""
    image = record.get("image", record.get("images"))
    items = image if isinstance(image, (list, tuple)) else [image]
    if not items or not all(isinstance(item, str) or _is_embedded_image(item) for item in items):
        raise RecordParseError(f"image: expected a path, an image or a list of them, got {image!r:.80}")
    images = []
    for item in items:
        if not isinstance(item, str):
            if check_images:
                _check_decodes(item, "the embedded image")
            images.append(item)
            continue
        path = Path(item) if Path(item).is_absolute() else image_root / item
        if check_images and not path.is_file():
            raise RecordParseError(f"image: file not found: {path}")
        if check_images:
            _check_decodes(str(path), str(path))
        images.append(str(path))
    return images


def _sample_id(
    record: dict,
    images: list[Any],
    image_root: Path,
    seen: set[str],
    index: int | None,
    renamed: list[tuple[int, str, str]] | None = None,
) -> str:
    for key in ("sample_id", "id", "question_id", "token"):
        if record.get(key) not in (None, ""):
            candidate = str(record[key])
            break
    else:
        if isinstance(images[0], str):
            first = Path(images[0])
            try:
                first = first.relative_to(image_root)
            except ValueError:
                pass
            candidate = str(first.with_suffix("")).replace("/", "_").replace("\\", "_")
        else:
            candidate = f"record-{index if index is not None else len(seen)}"
    sample_id, suffix = candidate, 1
    while sample_id in seen:  # the same image may carry several questions
        suffix += 1
        sample_id = f"{candidate}-{suffix}"
    if sample_id != candidate and renamed is not None:
        renamed.append((index if index is not None else len(seen), candidate, sample_id))
    seen.add(sample_id)
    return sample_id


def record_to_row(
    record: Any,
    image_root: Path,
    *,
    check_images: bool = True,
    seen_ids: set[str] | None = None,
    index: int | None = None,
    renamed: list[tuple[int, str, str]] | None = None,
) -> dict:
    """Convert one published record into a canonical row; raises `RecordParseError` naming the field. A duplicate id
    gets a `-2`, `-3`... suffix, recorded in `renamed` when given."""
    if not isinstance(record, dict):
        raise RecordParseError(f"record: expected an object, got {type(record).__name__}")
    problem = record.get("problem")
    if not isinstance(problem, str) or not problem.strip():
        raise RecordParseError("problem: missing or empty")
    solution = record.get("solution")
    if not isinstance(solution, str):
        raise RecordParseError("solution: missing (expected '<answer> SPEED, PATH </answer>')")
    plan = parse_answer_strict(solution)
    if plan is None:
        raise RecordParseError(f"solution: {solution.strip()!r:.120} is not '<answer> SPEED, PATH </answer>'")
    thinking = record.get("thinking")
    if thinking is None and "<think>" in solution.lower():
        thinking = solution  # some releases keep the reasoning inside the solution
    images = _images(record, image_root, check_images)
    ego_speed, navigation, reasoning = parse_speed(problem), parse_navigation(problem), parse_reasoning(thinking)
    # The id is taken last, so a record that fails does not reserve one.
    sample_id = _sample_id(record, images, image_root, seen_ids if seen_ids is not None else set(), index, renamed)
    return {
        "sample_id": sample_id,
        "images": images,
        "image_roles": ["front"] + [f"view_{index}" for index in range(1, len(images))],
        "ego_speed": ego_speed,
        "navigation": navigation,
        "speed_action": plan[0],
        "path_action": plan[1],
        "reasoning": reasoning,
        "feasible_actions": None,
        "trajectory": None,
        "source": SOURCE,
    }


def read_records(path: str | Path) -> Iterator[dict]:
    """Records from a JSON list, a JSONL file or a `datasets` directory, in file order.

    JSONL lines that are not valid JSON are yielded as `{"__error__": reason}` so they are counted, not lost.
    """
    path = Path(path)
    if path.is_dir():
        import datasets

        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            for split in loaded.values():
                yield from split
        else:
            yield from loaded
        return
    if not path.is_file():
        raise FileNotFoundError(f"AlphaDrive input not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark, as some Windows editors write, is accepted
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{path}, line {line}: not UTF-8 text (byte {data[error.start]:#04x}); re-save the file as UTF-8"
        ) from error
    start = text.lstrip()[:1]
    if start == "[":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path}, line {error.lineno} column {error.colno}: not valid JSON ({error.msg})"
            ) from error
        yield from records
        return
    if start == "{":
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None  # several objects: JSONL
        if isinstance(whole, dict) and "problem" not in whole:
            lists = [key for key, value in whole.items() if isinstance(value, list)]
            where = f"; the records may be the list under {lists[0]!r}" if lists else ""
            raise ValueError(
                f"{path}: the top level must be a JSON list of records (or one record per line, JSONL), not an "
                f"object with keys {sorted(whole)}{where}"
            )
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as error:
            yield {"__error__": f"record: line {line_number} is not valid JSON ({error.msg})"}


def convert_records(
    records: Iterable[Any], image_root: str | Path, *, check_images: bool = True, progress: bool = True
) -> tuple[list[dict], ImportReport]:
    """Convert records to canonical rows; every record that fails is in the report with its index and reason."""
    image_root = Path(image_root)
    rows: list[dict] = []
    report = ImportReport()
    seen: set[str] = set()
    for index, record in enumerate(tqdm(records, desc="alphadrive_json", unit="rec", disable=not progress)):
        report.total += 1
        try:
            if isinstance(record, dict) and "__error__" in record:
                raise RecordParseError(record["__error__"])
            rows.append(
                record_to_row(
                    record, image_root, check_images=check_images, seen_ids=seen, index=index, renamed=report.renamed
                )
            )
        except RecordParseError as error:
            report.skipped.append((index, str(error)))
    report.converted = len(rows)
    return rows, report


# --- export -----------------------------------------------------------------------------------------------------

EXPORT_PROMPT = (
    "You are an expert driving assistant. Your current speed is {speed}m/s, the navigation command is "
    "'{navigation}', based on the driving scene and the navigation, decide your driving plan for the next three "
    "seconds. Write your reasoning in <think> </think> and the plan in <answer> </answer> tags. The plan is one "
    "SPEED action (KEEP, ACCELERATE, DECELERATE, STOP) and one PATH action (STRAIGHT, RIGHT_CHANGE, LEFT_CHANGE, "
    "RIGHT_TURN, LEFT_TURN), for example '<think> reasoning </think> <answer> KEEP, STRAIGHT </answer>'."
)


def _navigation_for_export(navigation: str) -> str:
    steps = navigation_text_to_dict(navigation)
    if steps is None:
        return navigation
    return "{" + ", ".join(f"'{distance}': '{command}'" for distance, command in steps.items()) + "}"


def row_to_record(row: dict, image_paths: list[str]) -> dict:
    """A canonical row as a published-format record (the inverse of `record_to_row`)."""
    speed = f"{float(row['ego_speed']):.2f}".rstrip("0").rstrip(".")
    record = {
        "id": row["sample_id"],
        "image": image_paths[0] if len(image_paths) == 1 else image_paths,
        "problem": EXPORT_PROMPT.format(speed=speed, navigation=_navigation_for_export(row["navigation"])),
        "solution": format_answer(row["speed_action"], row["path_action"]),
    }
    if row.get("reasoning"):
        record["thinking"] = f"<think> {row['reasoning']} </think>"
    return record


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def export_dataset(dataset_path: str | Path, output: str | Path, *, split: str | None = None) -> int:
    """Write a canonical dataset (directory) as a published-format JSON / JSONL file; images are copied next to it
    under `<output stem>_images/` and referenced relative to the output file's folder. Returns the record count."""
    import datasets

    from alphadrive_trl.data import load_driving_dataset

    output = Path(output)
    loaded = load_driving_dataset(str(dataset_path), split=split)
    splits = loaded.values() if isinstance(loaded, datasets.DatasetDict) else [loaded]
    image_dir = output.parent / f"{output.stem}_images"
    temporary = output.with_name(f".{output.name}.tmp")
    temporary_images = output.parent / f".{image_dir.name}.tmp"
    shutil.rmtree(temporary_images, ignore_errors=True)
    temporary_images.mkdir(parents=True)
    records = []
    for part in splits:
        part = part.cast_column("images", datasets.List(datasets.Image(decode=False)))
        for row in tqdm(part, desc="export", unit="row"):
            paths = []
            for index, image in enumerate(row["images"]):
                suffix = Path(image.get("path") or "x.png").suffix or ".png"
                name = f"{_safe_name(row['sample_id'])}_{index}{suffix}"
                if image.get("bytes"):
                    (temporary_images / name).write_bytes(image["bytes"])
                else:
                    shutil.copyfile(image["path"], temporary_images / name)
                paths.append(f"{image_dir.name}/{name}")
            records.append(row_to_record(row, paths))
    with temporary.open("w", encoding="utf-8") as handle:
        if output.suffix == ".jsonl":
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            json.dump(records, handle, ensure_ascii=False, indent=1)
    shutil.rmtree(image_dir, ignore_errors=True)
    temporary_images.rename(image_dir)
    temporary.replace(output)
    return len(records)


# --- CLI --------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.alphadrive_json",
        description=(
            "Import the published AlphaDrive format (records with image, problem, solution, thinking) into the "
            "canonical driving dataset, or export a canonical dataset back to that format with --export."
        ),
    )
    parser.add_argument("--input", help="JSON list, JSONL file or datasets directory of AlphaDrive records")
    parser.add_argument(
        "--image-root",
        default=None,
        help="folder the records' image paths are relative to (default: the input file's folder)",
    )
    parser.add_argument("--output-dir", help="where to write the canonical dataset (save_to_disk)")
    parser.add_argument("--split", default="train", help="split name of the imported records (default: train)")
    parser.add_argument("--no-check-images", action="store_true", help="do not check that image files exist")
    parser.add_argument(
        "--max-skipped-fraction",
        type=float,
        default=0.5,
        help="fail when more than this fraction of records cannot be converted (default 0.5)",
    )
    parser.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        default="disk",
        help="disk: save_to_disk with embedded images; jsonl: <split>.jsonl keeping image paths",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    parser.add_argument("--export", metavar="DATASET", help="export this canonical dataset directory instead")
    parser.add_argument("--output", help="with --export: the .json or .jsonl file to write")
    parser.add_argument("--export-split", default=None, help="with --export: only this split")
    return parser


@command("data_prep.alphadrive_json")
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    if args.export:
        if not args.output:
            raise SystemExit("--export needs --output FILE.json|FILE.jsonl")
        count = export_dataset(args.export, args.output, split=args.export_split)
        logger.info("exported %d records to %s", count, args.output)
        return 0
    if not args.input or not args.output_dir:
        raise SystemExit("import needs --input and --output-dir (or use --export DATASET --output FILE)")
    input_path = Path(args.input)
    image_root = (
        Path(args.image_root) if args.image_root else (input_path if input_path.is_dir() else input_path.parent)
    )
    rows, report = convert_records(read_records(input_path), image_root, check_images=not args.no_check_images)
    logger.info(report.summary())
    if not rows:
        raise SystemExit(f"no record of {args.input} could be converted:\n{report.summary()}")
    if report.total and len(report.skipped) / report.total > args.max_skipped_fraction:
        raise SystemExit(
            f"{len(report.skipped)} of {report.total} records could not be converted (more than "
            f"--max-skipped-fraction {args.max_skipped_fraction}); is this the AlphaDrive format?\n{report.summary()}"
        )
    write_driving_rows({args.split: rows}, args.output_dir, overwrite=args.overwrite, output_format=args.format)
    logger.info("wrote %d rows to %s", len(rows), args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
