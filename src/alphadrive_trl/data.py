"""The canonical driving dataset: schema, validation, loading, stage split (the per-image budget lives in
`alphadrive_trl.image_budget`; `apply_image_budget` is re-exported here).

Every source in `data_prep/` writes this schema; trainers and evaluation read it through `load_driving_dataset`,
which validates rows and names the `sample_id` and field of every problem. `docs/data.md` defines every column.

Example:
    >>> from alphadrive_trl.data import load_driving_dataset, split_for_stages
    >>> dataset = load_driving_dataset("data/synthetic")  # doctest: +SKIP
    >>> sft_part, grpo_part = split_for_stages(dataset["train"], sft_fraction=0.2)  # doctest: +SKIP
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from datasets import (
    Dataset,
    DatasetDict,
    Features,
    Image,
    List,
    Value,
    concatenate_datasets,
    load_dataset,
    load_from_disk,
)

from .actions import PATH_ACTIONS, SPEED_ACTIONS, parse_plan
from .image_budget import apply_image_budget  # noqa: F401  (re-exported: the budget used to live here)
from .trajectory import TRAJECTORY_HORIZON

DRIVING_FEATURES = Features(
    {
        "sample_id": Value("string"),
        "images": List(Image()),
        "image_roles": List(Value("string")),
        "ego_speed": Value("float32"),
        "navigation": Value("string"),
        "speed_action": Value("string"),
        "path_action": Value("string"),
        "reasoning": Value("string"),
        "feasible_actions": List(Value("string")),
        "trajectory": List(List(Value("float32"))),
        "source": Value("string"),
    }
)
REQUIRED_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "images",
    "image_roles",
    "ego_speed",
    "navigation",
    "speed_action",
    "path_action",
)
# Columns a file may omit; they are filled with these values on load.
OPTIONAL_DEFAULTS: dict[str, Any] = {
    "reasoning": None,
    "feasible_actions": None,
    "trajectory": None,
    "source": "unknown",
}

_FILE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}


class DrivingDataError(ValueError):
    """A dataset does not follow the driving schema; the message names the `sample_id` and field of each problem."""


# --- validation -----------------------------------------------------------------------------------------------------


def _image_problem(image: Any, base_dir: str | None) -> str | None:
    """Return why an image entry cannot be used, or None. Accepts PIL images, arrays, `{"bytes", "path"}` dicts
    (undecoded datasets images) and path strings. Only the header is read, so this is cheap."""
    import PIL.Image

    if isinstance(image, PIL.Image.Image):
        return None
    if isinstance(image, np.ndarray):
        return None if image.ndim in (2, 3) and image.size else f"array of shape {image.shape} is not an image"
    path, data = None, None
    if isinstance(image, Mapping):
        path, data = image.get("path"), image.get("bytes")
    elif isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
    else:
        return f"unsupported image value of type {type(image).__name__}"
    if data is None and path is None:
        return "empty image (no bytes, no path)"
    try:
        if data is not None:
            with PIL.Image.open(io.BytesIO(data)) as opened:
                opened.size  # noqa: B018 - parses the header
            return None
        resolved = path if os.path.isabs(path) or base_dir is None else os.path.join(base_dir, path)
        if not os.path.isfile(resolved):
            return f"image file not found: {resolved}"
        with PIL.Image.open(resolved) as opened:
            opened.size  # noqa: B018
    except Exception as error:  # any decoding failure is reported with the path
        where = f" {path}" if path else ""
        return f"unreadable image{where}: {type(error).__name__}: {error}"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def validate_row(row: Mapping[str, Any], *, check_images: bool = True, base_dir: str | None = None) -> list[str]:
    """Check one row against the schema; return the problems (empty when the row is valid).

    Each problem reads `sample_id=<id> field=<column>: <what is wrong>`. `base_dir` resolves relative image paths.

    Example:
        >>> row = {"sample_id": "a", "images": [], "image_roles": [], "ego_speed": -1.0, "navigation": "go straight",
        ...        "speed_action": "FAST", "path_action": "STRAIGHT"}
        >>> for problem in validate_row(row): print(problem)
        sample_id=a field=images: needs at least one image
        sample_id=a field=ego_speed: must be a finite number >= 0, got -1.0
        sample_id=a field=speed_action: unknown action 'FAST' (expected one of KEEP, ACCELERATE, DECELERATE, STOP)
    """
    sample_id = row.get("sample_id")
    problems: list[str] = []

    def problem(field: str, message: str) -> None:
        problems.append(f"sample_id={sample_id} field={field}: {message}")

    for column in REQUIRED_COLUMNS:
        if column not in row:
            problem(column, "missing column")
    if problems:
        return problems
    if not isinstance(sample_id, str) or not sample_id:
        problem("sample_id", f"must be a non-empty string, got {sample_id!r}")

    images, roles = row["images"], row["image_roles"]
    if not isinstance(images, (list, tuple)) or not images:
        problem("images", "needs at least one image")
        images = []
    if not isinstance(roles, (list, tuple)) or not all(isinstance(r, str) and r for r in roles):
        problem("image_roles", f"must be a list of non-empty strings, got {roles!r}")
    elif images and len(roles) != len(images):
        problem("image_roles", f"has {len(roles)} roles for {len(images)} images (lengths must match)")
    if check_images:
        for index, image in enumerate(images):
            reason = _image_problem(image, base_dir)
            if reason:
                problem(f"images[{index}]", reason)

    speed = row["ego_speed"]
    if not _is_number(speed) or not math.isfinite(speed) or speed < 0:
        problem("ego_speed", f"must be a finite number >= 0, got {speed!r}")
    if not isinstance(row["navigation"], str) or not row["navigation"].strip():
        problem("navigation", f"must be a non-empty string, got {row['navigation']!r}")
    for field, vocabulary in (("speed_action", SPEED_ACTIONS), ("path_action", PATH_ACTIONS)):
        if row[field] not in vocabulary:
            problem(field, f"unknown action {row[field]!r} (expected one of {', '.join(vocabulary)})")

    reasoning = row.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, str):
        problem("reasoning", f"must be a string or null, got {type(reasoning).__name__}")
    feasible = row.get("feasible_actions")
    if feasible is not None:
        if not isinstance(feasible, (list, tuple)):
            problem("feasible_actions", f"must be a list of 'SPEED, PATH' strings or null, got {feasible!r}")
        else:
            bad = [plan for plan in feasible if parse_plan(plan) is None]
            if bad:
                problem("feasible_actions", f"invalid plan(s) {bad} (expected 'SPEED, PATH' from the vocabularies)")
    trajectory = row.get("trajectory")
    if trajectory is not None:
        try:
            points = np.asarray(trajectory, dtype=np.float64)
        except (TypeError, ValueError):
            points = None
        if points is None or points.shape != (TRAJECTORY_HORIZON, 2):
            shape = "ragged" if points is None else tuple(points.shape)
            problem("trajectory", f"must be {TRAJECTORY_HORIZON} [x, y] waypoints, got shape {shape}")
        elif not np.isfinite(points).all():
            problem("trajectory", "contains NaN or infinite values")
    source = row.get("source")
    if source is not None and not isinstance(source, str):
        problem("source", f"must be a string, got {source!r}")
    return problems


def _undecoded(dataset: Dataset) -> Dataset:
    """The same rows with images as `{"bytes", "path"}` dicts, so validation reads headers, not pixels."""
    feature = dataset.features.get("images")
    if isinstance(feature, List) and isinstance(feature.feature, Image) and feature.feature.decode:
        return dataset.cast_column("images", List(Image(decode=False)))
    return dataset


def validate_dataset(
    dataset: Dataset | DatasetDict, *, check_images: bool = True, max_reported: int = 20, base_dir: str | None = None
) -> None:
    """Validate every row (and unique `sample_id`s); raise `DrivingDataError` listing the first problems.

    Example:
        >>> validate_dataset(load_driving_dataset("data/synthetic", validate=False))  # doctest: +SKIP
    """
    if isinstance(dataset, DatasetDict):
        for split, part in dataset.items():
            try:
                validate_dataset(part, check_images=check_images, max_reported=max_reported, base_dir=base_dir)
            except DrivingDataError as error:
                raise DrivingDataError(f"split '{split}': {error}") from None
        return
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise DrivingDataError(
            f"dataset lacks required column(s) {missing}; the schema needs {', '.join(REQUIRED_COLUMNS)}"
        )
    problems: list[str] = []
    total = 0
    seen: set[str] = set()
    for row in _undecoded(dataset):
        row_problems = validate_row(row, check_images=check_images, base_dir=base_dir)
        sample_id = row["sample_id"]
        if sample_id in seen:
            row_problems.append(f"sample_id={sample_id} field=sample_id: duplicated")
        seen.add(sample_id)
        total += len(row_problems)
        if len(problems) < max_reported:
            problems.extend(row_problems[: max_reported - len(problems)])
    if problems:
        more = f"\n... and {total - len(problems)} more" if total > len(problems) else ""
        raise DrivingDataError(f"{total} problem(s) in {len(dataset)} rows:\n" + "\n".join(problems) + more)


# --- loading --------------------------------------------------------------------------------------------------------


def _is_save_to_disk_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in ("dataset_dict.json", "state.json"))


def _split_name(file: Path) -> str:
    # `train.parquet`, `train-00000-of-00002.parquet`, `validation.jsonl` -> train / validation.
    return file.name.split(".")[0].split("-")[0]


def _resolve_image_paths(dataset: Dataset, base_dir: str) -> Dataset:
    """Image columns read from JSON/parquet as path strings become absolute paths, relative to the file."""

    def resolve(batch):
        batch["images"] = [
            [
                image if not isinstance(image, str) or os.path.isabs(image) else os.path.join(base_dir, image)
                for image in images
            ]
            if images is not None
            else images
            for images in batch["images"]
        ]
        return batch

    return dataset.map(resolve, batched=True, desc="resolving image paths")


_DATASET_HINT = (
    "set `dataset_name` to a save_to_disk directory (`make data` writes data/synthetic), a .parquet/.jsonl file or "
    "folder, or a Hub dataset name"
)


def _conform(dataset: Dataset, base_dir: str | None, name: str) -> Dataset:
    """Add missing optional columns, resolve relative image paths and cast to `DRIVING_FEATURES`."""
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise DrivingDataError(
            f"{name}: missing required column(s) {missing}; the schema needs {', '.join(REQUIRED_COLUMNS)}. Convert "
            "the data with one of the `data_prep` builders (docs/data.md)."
        )
    for column, default in OPTIONAL_DEFAULTS.items():
        if column not in dataset.column_names:
            dataset = dataset.add_column(column, [default] * len(dataset))
    images_feature = dataset.features["images"]
    paths_as_strings = isinstance(images_feature, List) and isinstance(images_feature.feature, Value)
    if paths_as_strings and base_dir is not None:
        dataset = _resolve_image_paths(dataset, base_dir)
    extra = [c for c in dataset.column_names if c not in DRIVING_FEATURES]
    features = Features({**DRIVING_FEATURES, **{c: dataset.features[c] for c in extra}})
    dataset = dataset.select_columns(list(features))
    if dataset.features != features:
        dataset = dataset.cast(features)
    return dataset


def _load_files(files: list[Path], name: str) -> DatasetDict:
    by_split: dict[str, list[Path]] = {}
    for file in files:
        by_split.setdefault(_split_name(file), []).append(file)
    splits = {}
    for split, split_files in sorted(by_split.items()):
        parts = []
        for file in sorted(split_files):
            builder = _FILE_BUILDERS[file.suffix]
            part = load_dataset(builder, data_files=str(file), split="train")
            parts.append(_conform(part, str(file.parent), f"{name} ({file.name})"))
        splits[split] = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    return DatasetDict(splits)


def load_driving_dataset(
    path_or_name: str | os.PathLike, split: str | None = None, *, validate: bool = True
) -> DatasetDict | Dataset:
    """Load a driving dataset in the canonical schema.

    Accepts a `save_to_disk` directory, a parquet / JSONL file, a directory of such files (the split is the file name
    up to the first `.` or `-`: `train.parquet`, `test-00000-of-00001.parquet`), or a Hub dataset name. Image paths
    in files are resolved relative to the file. With `split` one `Dataset` is returned, else a `DatasetDict`. With
    `validate` every row is checked (`DrivingDataError` names the row and field).

    Example:
        >>> train = load_driving_dataset("data/synthetic", split="train")  # doctest: +SKIP
    """
    path = Path(path_or_name)
    base_dir = None
    if _is_save_to_disk_dir(path):
        loaded = load_from_disk(str(path))
        dataset = (
            DatasetDict({k: _conform(v, None, str(path)) for k, v in loaded.items()})
            if isinstance(loaded, DatasetDict)
            else DatasetDict({"train": _conform(loaded, None, str(path))})
        )
    elif path.is_file():
        if path.suffix not in _FILE_BUILDERS:
            raise DrivingDataError(f"{path}: unsupported file type {path.suffix!r}; use .parquet, .jsonl or .json")
        dataset = _load_files([path], str(path))
        # A single file is one split whatever its name.
        if split is None and len(dataset) == 1:
            return _validated(next(iter(dataset.values())), validate, base_dir)
    elif path.is_dir():
        files = [f for f in path.iterdir() if f.suffix in _FILE_BUILDERS and f.is_file()]
        if not files:
            raise DrivingDataError(f"{path}: no save_to_disk dataset and no .parquet/.jsonl/.json files inside")
        dataset = _load_files(files, str(path))
    elif os.path.exists(path) or str(path_or_name).startswith((".", "/", "~")) or str(path_or_name).count("/") > 1:
        what = (
            "is not a dataset directory or a .parquet/.jsonl/.json file" if os.path.exists(path) else "does not exist"
        )
        raise DrivingDataError(f"{path} {what}; {_DATASET_HINT}")
    else:
        try:
            hub = load_dataset(str(path_or_name))
        except Exception as err:  # offline, not found, no access: all mean the name is not usable
            raise DrivingDataError(
                f"{path_or_name}: no such local path, and loading it from the Hub failed "
                f"({type(err).__name__}: {' '.join(str(err).split())}); {_DATASET_HINT}"
            ) from err
        dataset = DatasetDict({k: _conform(v, None, str(path_or_name)) for k, v in hub.items()})
    if split is not None:
        if split not in dataset:
            raise DrivingDataError(f"{path_or_name}: no split {split!r}; available: {', '.join(dataset)}")
        return _validated(dataset[split], validate, base_dir)
    return _validated(dataset, validate, base_dir)


def _validated(dataset, validate: bool, base_dir: str | None):
    if validate:
        validate_dataset(dataset, base_dir=base_dir)
    return dataset


# --- stages, images -------------------------------------------------------------------------------------------------


def split_for_stages(
    dataset: Dataset | DatasetDict, sft_fraction: float = 0.2, seed: int = 42
) -> tuple[Dataset, Dataset]:
    """Split the training data into disjoint SFT warm-up and GRPO parts (the paper warms up on ~20-30 %).

    The assignment depends only on `seed` and the number of rows; both parts keep the original row order. A
    `DatasetDict` is split on its `train` split.

    Example:
        >>> from datasets import Dataset
        >>> sft_part, grpo_part = split_for_stages(Dataset.from_dict({"x": list(range(10))}), 0.3, seed=0)
        >>> len(sft_part), len(grpo_part)
        (3, 7)
    """
    if isinstance(dataset, DatasetDict):
        if "train" not in dataset:
            raise DrivingDataError(f"split_for_stages needs a 'train' split; available: {', '.join(dataset)}")
        dataset = dataset["train"]
    if not 0.0 < sft_fraction < 1.0:
        raise ValueError(f"sft_fraction must be strictly between 0 and 1, got {sft_fraction}")
    total = len(dataset)
    sft_size = int(round(total * sft_fraction))
    if sft_size == 0 or sft_size == total:
        raise DrivingDataError(
            f"{total} rows cannot be split {sft_fraction:.0%}/{1 - sft_fraction:.0%} into two parts"
        )
    order = np.random.default_rng(seed).permutation(total)
    return dataset.select(np.sort(order[:sft_size])), dataset.select(np.sort(order[sft_size:]))


def check_repeat_actions(repeat: Mapping[str, Any]) -> None:
    """Fail clearly on a `repeat_actions` mapping that names no meta-action or repeats a class less than once."""
    if not isinstance(repeat, Mapping):
        raise ValueError(f"`repeat_actions` must map actions to counts, got {repeat!r}.")
    for action, times in repeat.items():
        if action not in SPEED_ACTIONS and action not in PATH_ACTIONS:
            valid = ", ".join((*SPEED_ACTIONS, *PATH_ACTIONS))
            raise ValueError(f"`repeat_actions`: unknown action {action!r}; valid: {valid}.")
        check_repeat_count(times, f"`repeat_actions`: {action}")


def navigation_paths(navigation: Any) -> frozenset[str] | None:
    """The path actions a navigation command asks for by itself: what a planner that reads only the text would
    answer. A turn command allows STRAIGHT too (the ego drives on until the junction); None for a command this does
    not recognise.

    Example:
        >>> sorted(navigation_paths("turn left at the next intersection"))
        ['LEFT_TURN', 'STRAIGHT']
        >>> navigation_paths("change to the right lane"), navigation_paths("go straight")
        (frozenset({'RIGHT_CHANGE'}), frozenset({'STRAIGHT'}))
    """
    text = str(navigation).lower()
    side = "LEFT" if "left" in text else "RIGHT" if "right" in text else None
    if side and ("lane" in text or "change" in text):
        return frozenset({f"{side}_CHANGE"})
    if side and "turn" in text:
        return frozenset({f"{side}_TURN", "STRAIGHT"})
    if "straight" in text or "keep lane" in text:
        return frozenset({"STRAIGHT"})
    return None


def overrides_navigation(navigation: Any, path_action: str) -> bool:
    """Whether the labelled path departs from what the navigation command asks for: the scenes where the image, not
    the text, decides the path (cones closing the lane on a `go straight` route, a lane change into a blocked lane).

    Example:
        >>> overrides_navigation("go straight", "LEFT_CHANGE"), overrides_navigation("go straight", "STRAIGHT")
        (True, False)
    """
    paths = navigation_paths(navigation)
    return paths is not None and path_action not in paths


def check_repeat_count(times: Any, what: str) -> None:
    """Fail clearly on a repeat count that is not a whole number >= 1; `what` names the setting in the message."""
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise ValueError(f"{what} must repeat a whole number of times >= 1, got {times!r}.")


def repeat_action_rows(dataset: Dataset, repeat: Mapping[str, int] | None, navigation_overrides: int = 1) -> Dataset:
    """Repeat the rows whose speed or path action is in `repeat` that many times, and the rows whose path overrides
    the navigation command (`overrides_navigation`) `navigation_overrides` times; a row matched twice takes the larger
    count. Each copy sits next to its original; other rows appear once. Rebalances rare cases of a warm-up without
    new data.

    Example:
        >>> from datasets import Dataset
        >>> rows = Dataset.from_dict({"speed_action": ["KEEP", "DECELERATE", "STOP"],
        ...                           "path_action": ["STRAIGHT", "STRAIGHT", "LEFT_CHANGE"],
        ...                           "navigation": ["go straight"] * 3})
        >>> list(repeat_action_rows(rows, {"DECELERATE": 3, "LEFT_CHANGE": 2})["speed_action"])
        ['KEEP', 'DECELERATE', 'DECELERATE', 'DECELERATE', 'STOP', 'STOP']
        >>> list(repeat_action_rows(rows, None, navigation_overrides=3)["speed_action"])
        ['KEEP', 'DECELERATE', 'STOP', 'STOP', 'STOP']
    """
    check_repeat_count(navigation_overrides, "`repeat_navigation_overrides`")
    if not repeat and navigation_overrides == 1:
        return dataset
    repeat = repeat or {}
    check_repeat_actions(repeat)
    columns = ["speed_action", "path_action"] + (["navigation"] if navigation_overrides > 1 else [])
    labels = dataset.select_columns(columns).to_dict()  # no image is decoded
    indices = []
    for i, (speed, path) in enumerate(zip(labels["speed_action"], labels["path_action"])):
        times = max(repeat.get(speed, 1), repeat.get(path, 1))
        if navigation_overrides > 1 and overrides_navigation(labels["navigation"][i], path):
            times = max(times, navigation_overrides)
        indices.extend([i] * times)
    return dataset.select(indices)


def image_order(row: Mapping[str, Any], max_images: int | None = None) -> list[int]:
    """Indices of the images to use: `front` first, then the others in `image_roles` order, at most `max_images`."""
    roles = list(row.get("image_roles") or [])
    # A row without `images` (text-only uses such as building a tokenizer corpus) is ordered by its roles.
    count = len(row["images"]) if row.get("images") is not None else len(roles)
    if len(roles) != count:
        raise DrivingDataError(
            f"sample_id={row.get('sample_id')} field=image_roles: {len(roles)} roles for {count} images"
        )
    order = sorted(range(count), key=lambda i: roles[i] != "front")  # stable: keeps the others in order
    if max_images is not None:
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1 or None, got {max_images}")
        order = order[:max_images]
    return order


def select_images(row: Mapping[str, Any], max_images: int | None = None) -> list[Any]:
    """The row's images, front camera first, in `image_roles` order, at most `max_images`.

    Example:
        >>> select_images({"images": ["a", "b", "c"], "image_roles": ["front_t-1", "front", "front_left"]}, 2)
        ['b', 'a']
    """
    return [row["images"][i] for i in image_order(row, max_images)]


def select_image_roles(row: Mapping[str, Any], max_images: int | None = None) -> list[str]:
    """The roles of `select_images(row, max_images)`, in the same order."""
    return [row["image_roles"][i] for i in image_order(row, max_images)]
