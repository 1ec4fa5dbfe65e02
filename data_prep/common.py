"""Helpers every `data_prep` builder shares: atomic writes, the validated row writer, resumable chunked generation,
small CLI parsers.

A builder writes its dataset in chunks under `<output>.partial/` (each chunk saved atomically, with a manifest of the
build settings), so an interrupted job resumes where it stopped; the final `DatasetDict` is written to a temporary
directory and renamed onto `<output>` in one step, so readers never see a half-written dataset.

Example:
    >>> from data_prep.common import ChunkStore, atomic_directory
    >>> store = ChunkStore("data/out", settings={"seed": 0, "num_samples": 100})  # doctest: +SKIP
    >>> for index in store.missing(num_chunks=4):  # doctest: +SKIP
    ...     store.save(index, build_chunk(index))
    >>> with atomic_directory("data/out", overwrite=True) as tmp:  # doctest: +SKIP
    ...     store.load_all(4).save_to_disk(tmp)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, concatenate_datasets, load_from_disk

from alphadrive_trl.data import DRIVING_FEATURES, DrivingDataError, validate_row
from alphadrive_trl.files import atomic_write_bytes, atomic_write_text  # noqa: F401  (the builders import them from here)

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory next to `path`; on success it replaces `path` in one rename.

    On an exception the temporary directory is removed and `path` is untouched. An existing `path` raises
    `FileExistsError` unless `overwrite`.
    """
    final = Path(path)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        # Move the old copy aside first so that `final` is replaced by a single rename.
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


OUTPUT_FORMATS: tuple[str, ...] = ("disk", "jsonl")


def write_driving_rows(
    splits: dict[str, list[dict]], output_dir: str | Path, *, overwrite: bool = False, output_format: str = "disk"
) -> None:
    """Validate canonical rows (image paths as strings) and write them atomically.

    `disk` saves a `DatasetDict` with `save_to_disk` (images embedded: self-contained, larger); `jsonl` writes
    `<split>.jsonl` files that keep absolute image paths (small; the images must stay where they are). Both load with
    `alphadrive_trl.data.load_driving_dataset`. Used by the converters that hold all their rows in memory (nuScenes,
    AlphaDrive JSON); the generators that build in resumable chunks write through `ChunkStore` + `atomic_directory`.
    """
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {output_format!r}; choose from {', '.join(OUTPUT_FORMATS)}")
    problems, seen = [], set()
    for rows in splits.values():
        for row in rows:
            problems.extend(validate_row(row, check_images=False))
            if row["sample_id"] in seen:
                problems.append(f"sample_id={row['sample_id']} field=sample_id: duplicated")
            seen.add(row["sample_id"])
    if problems:
        raise DrivingDataError(f"{len(problems)} problem(s) in the converted rows:\n" + "\n".join(problems[:20]))
    with atomic_directory(output_dir, overwrite=overwrite) as tmp:
        if output_format == "jsonl":
            if any(not isinstance(image, str) for rows in splits.values() for row in rows for image in row["images"]):
                raise ValueError("--format jsonl needs image paths; these records embed images: use --format disk")
            for split, rows in splits.items():
                with (tmp / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
                    for row in rows:
                        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            dataset = DatasetDict(
                {split: Dataset.from_list(rows, features=DRIVING_FEATURES) for split, rows in splits.items()}
            )
            save_splits(dataset, tmp)


def save_splits(dataset: DatasetDict, directory: str | Path) -> None:
    """`dataset.save_to_disk(directory)` without its empty splits, then check that the directory loads.

    `datasets` writes no data file for an empty split and then cannot load the directory at all (`IndexError` in
    `load_from_disk`), so an empty split is left out with a warning; training on it then fails naming the splits
    there are. Call it inside `atomic_directory`, so a directory that does not load never replaces the output.
    """
    empty = [name for name, split in dataset.items() if len(split) == 0]
    if len(empty) == len(dataset):
        raise ValueError(f"every split ({', '.join(dataset)}) is empty; there is nothing to save")
    if empty:
        logger.warning(
            "No rows for split(s) %s: left out of the dataset (too few samples for them).", ", ".join(empty)
        )
    DatasetDict({name: split for name, split in dataset.items() if name not in empty}).save_to_disk(str(directory))
    load_from_disk(str(directory))  # fails here, before the output is replaced, if it would not load later


class ChunkStore:
    """Resumable chunked output under `<output_dir>.partial/`.

    `settings` (JSON-serialisable) describes the build; a leftover work directory built with other settings is
    discarded, so a resumed job never mixes chunks of two configurations. Chunks are `datasets` directories saved
    atomically as `chunk-00000`, ... ; `cleanup()` removes the work directory after the final dataset is in place.
    """

    def __init__(self, output_dir: str | os.PathLike, settings: dict[str, Any]):
        output = Path(output_dir)
        self.work_dir = output.parent / f"{output.name}.partial"
        self.settings = json.loads(json.dumps(settings, sort_keys=True))
        manifest = self.work_dir / MANIFEST_NAME
        if self.work_dir.exists():
            try:
                previous = json.loads(manifest.read_text())
            except (OSError, ValueError):
                previous = None
            if previous != self.settings:
                shutil.rmtree(self.work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(manifest, json.dumps(self.settings, indent=2, sort_keys=True))

    def chunk_path(self, index: int) -> Path:
        return self.work_dir / f"chunk-{index:05d}"

    def done(self, index: int) -> bool:
        return (self.chunk_path(index) / "state.json").exists()

    def missing(self, num_chunks: int) -> list[int]:
        """The chunk indices still to build (all of them on a fresh start)."""
        return [index for index in range(num_chunks) if not self.done(index)]

    def save(self, index: int, dataset: Dataset) -> None:
        with atomic_directory(self.chunk_path(index), overwrite=True) as tmp:
            dataset.save_to_disk(str(tmp))

    def load_all(self, num_chunks: int) -> Dataset:
        missing = self.missing(num_chunks)
        if missing:
            raise RuntimeError(f"chunks {missing} of {self.work_dir} are not built yet")
        parts = [load_from_disk(str(self.chunk_path(index))) for index in range(num_chunks)]
        return parts[0] if len(parts) == 1 else concatenate_datasets(parts)

    def cleanup(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)


def parse_image_size(text: str) -> tuple[int, int]:
    """`"160x96"` -> `(160, 96)` (width, height); raises `ValueError` with the expected form."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"image size must look like WIDTHxHEIGHT (e.g. 160x96), got {text!r}") from None
    if width < 16 or height < 16:
        raise ValueError(f"image size must be at least 16x16, got {text!r}")
    return width, height


def parse_split_fractions(text: str) -> dict[str, float]:
    """`"0.8,0.1,0.1"` -> `{"train": 0.8, "validation": 0.1, "test": 0.1}` (must sum to 1)."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"split fractions must be three numbers like 0.8,0.1,0.1, got {text!r}") from None
    if len(values) != 3 or any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be three numbers >= 0 summing to 1, got {text!r}")
    return dict(zip(("train", "validation", "test"), values))


def split_ranges(num_samples: int, fractions: dict[str, float]) -> dict[str, range]:
    """Contiguous index ranges per split (rows are i.i.d., so contiguous ranges are a random split)."""
    ranges, start = {}, 0
    names = list(fractions)
    for position, name in enumerate(names):
        size = num_samples - start if position == len(names) - 1 else int(round(num_samples * fractions[name]))
        size = max(0, min(size, num_samples - start))
        ranges[name] = range(start, start + size)
        start += size
    return ranges
