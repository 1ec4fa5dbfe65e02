"""Predictions files: the JSONL that `generate` writes and `score` reads, and its `.meta.json` sidecar."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..actions import (
    AXES,
    AXIS_VOCABULARY,
)
from ..files import atomic_write_text

logger = logging.getLogger(__name__)


def metadata_path(predictions_path: str | os.PathLike) -> Path:
    """The sidecar written by `generate` next to a predictions file: `preds.jsonl` -> `preds.meta.json`."""
    path = Path(predictions_path)
    return path.with_name(path.stem + ".meta.json")


def read_predictions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a predictions JSONL file and check every line has what `score` needs.

    Raises `ValueError` naming the line number (and `sample_id`) and the field on the first bad record, and on a
    `sample_id` seen twice (it would be counted twice).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Predictions file not found: {path}")
    records = []
    first_line: dict[str, int] = {}
    with open(path, "rb") as f:
        for line_number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{path}, line {line_number}: not UTF-8 text (byte {raw[err.start]:#04x}); predictions files are "
                    "UTF-8 JSONL, as `generate` writes them."
                ) from err
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {line_number}: not valid JSON ({err.msg}).") from err
            problem = _record_problem(record)
            if problem:
                sample_id = record.get("sample_id") if isinstance(record, dict) else None
                raise ValueError(f"{path}, line {line_number} (sample_id={sample_id!r}): {problem}")
            sample_id = str(record["sample_id"])
            if sample_id in first_line:
                raise ValueError(
                    f"{path}, line {line_number}: sample_id {sample_id!r} is already on line {first_line[sample_id]}; "
                    "each scene must be scored once. Remove the repeat (re-running `generate` on the file drops it)."
                )
            first_line[sample_id] = line_number
            records.append(record)
    if not records:
        raise ValueError(f"{path} holds no predictions.")
    return records


def _record_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "a record must be a JSON object."
    for field_name in ("sample_id", "completion", "speed_action", "path_action"):
        if field_name not in record:
            return f"missing field `{field_name}`."
    if not isinstance(record["completion"], str):
        return "`completion` must be a string."
    for axis in AXES:
        value = record[f"{axis}_action"]
        if value not in AXIS_VOCABULARY[axis]:
            return f"`{axis}_action` is {value!r}, expected one of {', '.join(AXIS_VOCABULARY[axis])}."
    completions = record.get("completions")
    if completions is not None and (
        not isinstance(completions, list) or not all(isinstance(c, str) for c in completions)
    ):
        return "`completions` must be a list of strings."
    feasible = record.get("feasible_actions")
    if feasible is not None and not isinstance(feasible, list):
        return "`feasible_actions` must be a list of 'SPEED, PATH' strings or null."
    return None


def _done_sample_ids(path: Path) -> set[str]:
    """Sample ids already in a predictions file, so a resumed `generate` redoes only what is missing or broken.

    Every valid line is kept wherever it is; a line a crash tore (not JSON, not UTF-8, not a complete prediction) and
    a repeated `sample_id` are dropped with a warning naming their line numbers, and the file is rewritten atomically
    without them.
    """
    if not path.is_file():
        return set()
    done: set[str] = set()
    kept: list[bytes] = []
    broken: list[int] = []
    repeated: list[int] = []
    with open(path, "rb") as f:
        raw_lines = f.read().splitlines()
    for line_number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if record is None or _record_problem(record) is not None:
            broken.append(line_number)
        elif str(record["sample_id"]) in done:
            repeated.append(line_number)
        else:
            done.add(str(record["sample_id"]))
            kept.append(raw)
    if broken or repeated:
        dropped = ", ".join(
            part
            for part in (
                f"broken line(s) {_line_list(broken)}" if broken else "",
                f"repeated sample_id line(s) {_line_list(repeated)}" if repeated else "",
            )
            if part
        )
        logger.warning("%s: dropping %s before resuming; those samples are generated again.", path, dropped)
        atomic_write_text(path, "".join(line.decode("utf-8") + "\n" for line in kept))
    return done


def _line_list(numbers: list[int], limit: int = 10) -> str:
    shown = ", ".join(map(str, numbers[:limit]))
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


def _read_metadata(predictions: str | os.PathLike) -> dict[str, Any]:
    path = metadata_path(predictions)
    if not path.is_file():
        return {}
    with open(path) as f:
        return json.load(f)
