"""Atomic file writes: readers see the old file or the new one, never half of one, and a failed write leaves no
temporary file behind. Used by evaluation, the closed loop and the `data_prep` builders.

Example:
    >>> atomic_write_json("runs/eval/metrics.json", {"planning_accuracy": 0.8})  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path` (with `suffix`, for writers that infer the format from it); when the
    block succeeds it is renamed onto `path` (mode 0644), when it raises it is removed and `path` is untouched."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; the result is an ordinary output file
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory and `os.replace`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, payload: Any) -> None:
    """`payload` as indented JSON plus a final newline (serialised first: a payload that cannot be written leaves
    `path` untouched)."""
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
