"""Shared, session-scoped pytest fixtures (reuse them; they are built once per test session).

- `tiny_model_dir`: a saved tiny random Qwen2.5-VL model + processor (`alphadrive_trl.tiny_models`, preset `tiny`),
  reloadable offline with `AutoModelForImageTextToText` / `AutoProcessor`. Treat it as read-only; copy it first
  (`shutil.copytree`) if a test must modify it.
- `tiny_model_dirs`: a dict arch -> saved tiny model directory for `qwen2_vl`, `qwen2_5_vl` and `qwen3_vl`.
- `family_model_dirs`: the same for the non-Qwen families `smolvlm`, `gemma3`, `llava_onevision`, `internvl`.
- `split_model_dir`: a tiny Qwen2.5-VL whose tokenizer splits the tags and action words like the real Qwen tokenizer
  (preset `tiny_split`).
- `tiny_dataset_dir`: a `save_to_disk` `DatasetDict` in the canonical driving schema (`alphadrive_trl.data`), splits
  `train` (48 rows) and `test` (16 rows), 1 to 3 images per row (roles `front`, `front_t-1`, `front_left`). Labels
  follow the picture and the prompt: red light -> STOP, green light -> KEEP below 10 m/s else DECELERATE; the
  navigation command decides the path. Built by `make_driving_rows(n, seed)`, which tests may call directly.
"""

from __future__ import annotations

import os
import random

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One OpenMP thread: on these 2-core machines two threads made tiny-model training 13-16x slower (contention), and
# subprocesses launched by tests inherit the variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _build_tiny_models(tmp_path_factory, folder: str, architectures) -> dict[str, str]:
    from alphadrive_trl.tiny_models import build_tiny_model

    root = tmp_path_factory.mktemp(folder)
    dirs = {arch: str(root / arch) for arch in architectures}
    for arch, directory in dirs.items():
        build_tiny_model(arch, directory, seed=0)
    return dirs


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, str]:
    from alphadrive_trl.tiny_models import ARCHITECTURES

    return _build_tiny_models(tmp_path_factory, "tiny_models", ARCHITECTURES)


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model_dirs) -> str:
    return tiny_model_dirs["qwen2_5_vl"]


@pytest.fixture(scope="session")
def family_model_dirs(tmp_path_factory) -> dict[str, str]:
    from alphadrive_trl.tiny_models import FAMILY_ARCHITECTURES

    return _build_tiny_models(tmp_path_factory, "family_models", FAMILY_ARCHITECTURES)


@pytest.fixture(scope="session")
def split_model_dir(tmp_path_factory) -> str:
    from alphadrive_trl.tiny_models import build_tiny_model

    path = str(tmp_path_factory.mktemp("split_model") / "qwen2_5_vl")
    build_tiny_model("qwen2_5_vl", path, seed=0, preset="tiny_split")
    return path


_NAVIGATION = {
    "go straight": "STRAIGHT",
    "turn left at the next intersection": "LEFT_TURN",
    "turn right at the next intersection": "RIGHT_TURN",
    "change to the left lane": "LEFT_CHANGE",
}
_ROLES = ("front", "front_t-1", "front_left")


def make_driving_rows(num_rows: int, seed: int = 0) -> list[dict]:
    """Canonical-schema rows with small drawn images whose labels need both the image and the prompt."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    rows = []
    for index in range(num_rows):
        red = rng.random() < 0.5
        speed = round(rng.uniform(2.0, 18.0), 1)
        navigation = rng.choice(sorted(_NAVIGATION))
        images = []
        for view in range(1 + index % 3):
            image = Image.new("RGB", (96, 64), (90, 90, 90))
            draw = ImageDraw.Draw(image)
            draw.rectangle([0, 0, 95, 20], fill=(120, 170, 230))
            draw.ellipse([40 + 4 * view, 4, 52 + 4 * view, 16], fill=(230, 30, 30) if red else (30, 200, 60))
            images.append(image)
        speed_action = "STOP" if red else ("KEEP" if speed < 10 else "DECELERATE")
        light = "red" if red else "green"
        rows.append(
            {
                "sample_id": f"test-{seed}-{index:04d}",
                "images": images,
                "image_roles": list(_ROLES[: len(images)]),
                "ego_speed": speed,
                "navigation": navigation,
                "speed_action": speed_action,
                "path_action": _NAVIGATION[navigation],
                "reasoning": f"The light is {light} at {speed} m/s.",
                "feasible_actions": None,
                "trajectory": None,
                "source": "synthetic",
            }
        )
    return rows


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory) -> str:
    from datasets import Dataset, DatasetDict

    from alphadrive_trl.data import DRIVING_FEATURES

    path = tmp_path_factory.mktemp("tiny_dataset") / "driving"
    splits = {"train": make_driving_rows(48, seed=0), "test": make_driving_rows(16, seed=1)}
    DatasetDict(
        {name: Dataset.from_list(rows, features=DRIVING_FEATURES) for name, rows in splits.items()}
    ).save_to_disk(str(path))
    return str(path)
