"""Dataset building: rows from `(config, index)`, chunked and resumable builds, the dataset card, a preview sheet."""

from __future__ import annotations

import math
import random
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from alphadrive_trl.actions import ALL_PLANS, PATH_ACTIONS, SPEED_ACTIONS

from . import expert
from . import rules as labelling_rules
from .describe import describe_scene
from .expert import expert_trajectory
from .rendering import CAMERA_YAW_DEG, _font, encode_png, render_view, scene_at
from .rules import DT
from .sampling import PRESETS, sample_scene


@dataclass(frozen=True)
class GeneratorConfig:
    """Settings of one synthetic build (saved in the dataset card and the resume manifest)."""

    num_samples: int = 1200
    seed: int = 0
    num_history_frames: int = 0
    cameras: tuple[str, ...] = ("front",)
    image_size: tuple[int, int] = (160, 96)
    difficulty: str = "easy"
    captions: bool = False  # add a `caption` column: the scene's facts, no decision (perception pre-training)

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.num_history_frames < 0:
            raise ValueError(f"num_history_frames must be >= 0, got {self.num_history_frames}")
        unknown = [c for c in self.cameras if c not in CAMERA_YAW_DEG]
        if unknown or not self.cameras or self.cameras[0] != "front" or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(
                f"cameras must start with 'front' and name distinct cameras from {', '.join(CAMERA_YAW_DEG)}, "
                f"got {','.join(self.cameras)}"
            )
        if self.difficulty not in PRESETS:
            raise ValueError(f"difficulty must be one of {', '.join(PRESETS)}, got {self.difficulty!r}")

    @property
    def roles(self) -> list[str]:
        """`front`, history frames `front_t-1..K`, then the other cameras."""
        history = [f"front_t-{k}" for k in range(1, self.num_history_frames + 1)]
        return ["front", *history, *self.cameras[1:]]


def generate_sample(config: GeneratorConfig, index: int) -> dict[str, Any]:
    """Build row `index` of a dataset: depends only on `(config, index)`, so any worker produces identical bytes."""
    rng = random.Random(f"alphadrive-synthetic/{config.seed}/{index}")
    target = ALL_PLANS[rng.randrange(len(ALL_PLANS))]  # classes drawn uniformly: a balanced dataset
    scene, decision = sample_scene(rng, target, config.difficulty, set(config.cameras[1:]), config.num_history_frames)
    width, height = config.image_size
    images = []
    for role in config.roles:
        if role.startswith("front_t-"):
            view = render_view(scene_at(scene, DT * int(role.rsplit("-", 1)[1])), width, height, "front")
        else:
            view = render_view(scene, width, height, role)
        images.append({"bytes": encode_png(view), "path": None})
    row = {
        "sample_id": f"synthetic-{config.difficulty}-s{config.seed}-{index:07d}",
        "images": images,
        "image_roles": config.roles,
        "ego_speed": scene.ego_speed,
        "navigation": scene.navigation,
        "speed_action": decision.speed,
        "path_action": decision.path,
        "reasoning": decision.reasoning,
        "feasible_actions": list(decision.feasible),
        "trajectory": expert_trajectory(scene, decision),
        "source": "synthetic",
    }
    if config.captions:
        row["caption"] = describe_scene(scene, set(config.cameras[1:]), config.num_history_frames)
    return row


def generate_rows(config: GeneratorConfig, indices: range) -> list[dict[str, Any]]:
    return [generate_sample(config, index) for index in indices]


def rows_to_dataset(rows: list[dict[str, Any]]):
    """Rows (images as PNG bytes) -> a `Dataset` with `DRIVING_FEATURES`. Builds the Arrow table directly: the rows
    are already in storage form, so `Dataset.from_dict`'s per-value encoding would only cost time."""
    import pyarrow as pa
    from datasets import Dataset, Features, Value

    from alphadrive_trl.data import DRIVING_FEATURES

    features = DRIVING_FEATURES
    if rows and "caption" in rows[0]:
        features = Features({**DRIVING_FEATURES, "caption": Value("string")})
    columns = {name: [row[name] for row in rows] for name in features}
    return Dataset(pa.Table.from_pydict(columns, schema=features.arrow_schema))


def _generate_chunk(args: tuple[GeneratorConfig, int, int]):
    config, start, stop = args
    return rows_to_dataset(generate_rows(config, range(start, stop)))


def class_histogram(speeds: list[str], paths: list[str]) -> Counter:
    return Counter(zip(speeds, paths))


def histogram_table(histogram: Counter) -> str:
    """Markdown table SPEED x PATH with counts."""
    lines = ["| SPEED \\ PATH | " + " | ".join(PATH_ACTIONS) + " | total |", "|---" * (len(PATH_ACTIONS) + 2) + "|"]
    for speed in SPEED_ACTIONS:
        counts = [histogram.get((speed, path), 0) for path in PATH_ACTIONS]
        lines.append(f"| {speed} | " + " | ".join(str(c) for c in counts) + f" | {sum(counts)} |")
    totals = [sum(histogram.get((s, p), 0) for s in SPEED_ACTIONS) for p in PATH_ACTIONS]
    lines.append("| total | " + " | ".join(str(t) for t in totals) + f" | {sum(totals)} |")
    return "\n".join(lines)


def dataset_card(config: GeneratorConfig, split_sizes: dict[str, int], histogram: Counter) -> str:
    # The card quotes the rules and the expert trajectory from the docstrings of the modules that implement them.
    rules = labelling_rules.__doc__.split("Rules (`label_scene`; constants below, ", 1)[1].rstrip()
    rules += "\n\n" + expert.__doc__[expert.__doc__.index("The expert `trajectory`") :]
    rules = rules.replace("stand still):", "stand still.", 1)
    preset = PRESETS[config.difficulty]
    return f"""---
pretty_name: AlphaDrive-TRL synthetic driving scenes ({config.difficulty})
license: apache-2.0
task_categories: [image-text-to-text]
---
# Synthetic driving scenes

Procedurally drawn driving scenes labelled by explicit rules (`data_prep/synthetic/`), in the alphadrive-trl
schema. Built with:

```
python -m data_prep.synthetic --num-samples {config.num_samples} --seed {config.seed} \\
    --num-history-frames {config.num_history_frames} --cameras {",".join(config.cameras)} \\
    --image-size {config.image_size[0]}x{config.image_size[1]} --difficulty {config.difficulty}
```

Images per sample: {", ".join(config.roles)} ({config.image_size[0]}x{config.image_size[1]} PNG).
Splits: {", ".join(f"{k} {v}" for k, v in split_sizes.items())}.

## Difficulty preset `{preset.name}`

{preset.description}

Settings: {", ".join(f"{k}={v}" for k, v in asdict(preset).items() if k not in ("name", "description"))}.

## Rules

Constants are in `data_prep/synthetic/rules.py`; {rules.rstrip()}

## Class histogram (all splits)

{histogram_table(histogram)}
"""


def contact_sheet(rows: list[dict[str, Any]], columns: int = 4) -> Image.Image:
    """A grid of samples (all their images side by side) captioned with speed, navigation and label."""
    import io

    first = [Image.open(io.BytesIO(image["bytes"])) for image in rows[0]["images"]]
    tile_w = sum(im.width for im in first) + 4
    tile_h = first[0].height + 36
    rows_count = math.ceil(len(rows) / columns)
    sheet = Image.new("RGB", (columns * tile_w, rows_count * tile_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for n, row in enumerate(rows):
        x, y = (n % columns) * tile_w, (n // columns) * tile_h
        offset = x
        for image in row["images"]:
            view = Image.open(io.BytesIO(image["bytes"])).convert("RGB")
            sheet.paste(view, (offset, y))
            offset += view.width
        navigation = row["navigation"].replace(" at the next intersection", "").replace(" lane", "")
        caption = f"{row['ego_speed']:.1f} m/s, {navigation}\n{row['speed_action']}\n{row['path_action']}"
        draw.multiline_text((x + 2, y + first[0].height + 1), caption, fill=(0, 0, 0), font=_font(), spacing=1)
    return sheet


def build_dataset(
    config: GeneratorConfig,
    output_dir: str | Path,
    *,
    num_workers: int = 1,
    splits: dict[str, float] | None = None,
    chunk_size: int = 5000,
    overwrite: bool = False,
    progress: bool = True,
):
    """Generate `config.num_samples` rows into `output_dir` (a `DatasetDict` with train/validation/test), resuming
    finished chunks of an interrupted run, and write the dataset card. Returns the `DatasetDict`; a split that gets no
    row (tiny `num_samples`) is left out of it with a warning."""
    from datasets import DatasetDict

    from data_prep.common import ChunkStore, atomic_directory, atomic_write_text, save_splits, split_ranges

    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} already exists; pass --overwrite to replace it")
    splits = splits or {"train": 0.8, "validation": 0.1, "test": 0.1}
    settings = {"config": asdict(config), "chunk_size": chunk_size, "generator": "synthetic-v1"}
    store = ChunkStore(output_dir, settings)
    num_chunks = math.ceil(config.num_samples / chunk_size)
    bounds = {i: (i * chunk_size, min(config.num_samples, (i + 1) * chunk_size)) for i in range(num_chunks)}
    todo = store.missing(num_chunks)
    done_rows = config.num_samples - sum(bounds[i][1] - bounds[i][0] for i in todo)
    # Sub-chunks keep every worker busy and the progress bar moving; a chunk is saved once all its parts are done.
    part = max(50, min(1000, chunk_size // max(1, num_workers * 4)))
    with tqdm(total=config.num_samples, initial=done_rows, desc="synthetic scenes", unit="scene",
              disable=not progress) as bar:  # fmt: skip
        executor = ProcessPoolExecutor(num_workers) if num_workers > 1 else None
        try:
            for chunk in todo:
                start, stop = bounds[chunk]
                jobs = [(config, s, min(stop, s + part)) for s in range(start, stop, part)]
                results = executor.map(_generate_chunk, jobs) if executor else map(_generate_chunk, jobs)
                pieces = []
                for job, piece in zip(jobs, results):
                    pieces.append(piece)
                    bar.update(job[2] - job[1])
                from datasets import concatenate_datasets

                store.save(chunk, concatenate_datasets(pieces) if len(pieces) > 1 else pieces[0])
        finally:
            if executor:
                executor.shutdown()
    everything = store.load_all(num_chunks)
    ranges = split_ranges(config.num_samples, splits)
    # A split too small to get a row (e.g. validation at --num-samples 3) is saved without it (`save_splits`: datasets
    # cannot reload an empty split); the card lists it with 0 rows. `select` rejects an empty range past the end.
    dataset = DatasetDict({name: everything.select(indices or []) for name, indices in ranges.items()})
    histogram = class_histogram(everything["speed_action"], everything["path_action"])
    with atomic_directory(output_dir, overwrite=overwrite) as tmp:
        save_splits(dataset, tmp)
        atomic_write_text(tmp / "README.md", dataset_card(config, {k: len(v) for k, v in dataset.items()}, histogram))
    store.cleanup()
    from datasets import load_from_disk

    return load_from_disk(str(output_dir))
