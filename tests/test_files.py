"""`alphadrive_trl.files`: the one atomic writer evaluation, the closed loop and `data_prep` share."""

from __future__ import annotations

import os
import stat

import pytest

from alphadrive_trl.files import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text


def test_writes_replace_the_file_whole_with_ordinary_permissions(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    atomic_write_json(path, {"a": 1})
    assert path.read_text() == '{\n  "a": 1\n}\n'
    atomic_write_text(path, "é")
    assert path.read_bytes() == "é".encode()
    atomic_write_bytes(path, b"\x00")
    assert path.read_bytes() == b"\x00"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert os.listdir(path.parent) == ["metrics.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "report.md"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path, suffix=".md") as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["report.md"]
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["report.md"]


def test_a_failed_rename_removes_the_temporary_file(tmp_path):
    (tmp_path / "metrics.json").mkdir()  # `os.replace` cannot put a file over a directory
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "metrics.json", "{}")
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_data_prep_and_evaluation_use_the_same_writer():
    from alphadrive_trl.closed_loop import cli as drive_cli
    from alphadrive_trl.closed_loop import report as drive_report
    from alphadrive_trl.evaluation import report
    from data_prep import common

    assert common.atomic_write_text is atomic_write_text and common.atomic_write_bytes is atomic_write_bytes
    assert report.atomic_write_json is atomic_write_json
    assert drive_report.atomic_write_json is atomic_write_json and drive_cli.atomic_write_json is atomic_write_json
