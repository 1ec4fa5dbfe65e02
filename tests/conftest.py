"""Shared, session-scoped pytest fixtures (reuse them; they are built once per test session).

- `tiny_model_dir`: a saved tiny random Qwen2.5-VL model + processor (`alphadrive_trl.testing`, preset `tiny`),
  reloadable offline with `AutoModelForImageTextToText` / `AutoProcessor`. Treat it as read-only; copy it first
  (`shutil.copytree`) if a test must modify it.
- `tiny_model_dirs`: a dict arch -> saved tiny model directory for `qwen2_vl`, `qwen2_5_vl` and `qwen3_vl`.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, str]:
    from alphadrive_trl.testing import ARCHITECTURES, build_tiny_model

    root = tmp_path_factory.mktemp("tiny_models")
    dirs = {}
    for arch in ARCHITECTURES:
        dirs[arch] = str(root / arch)
        build_tiny_model(arch, dirs[arch], seed=0)
    return dirs


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model_dirs) -> str:
    return tiny_model_dirs["qwen2_5_vl"]
