"""contract.atomicfile: the one way the agent and the collector replace a file."""

from __future__ import annotations

import os

import pytest

from contract.atomicfile import replace_file


@pytest.mark.parametrize("sync", [True, False])
def test_replaces_the_content_and_leaves_nothing_beside_it(tmp_path, sync) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    replace_file(str(path), b"new", sync=sync)
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_own(tmp_path, monkeypatch) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"old")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        replace_file(str(path), b"new" * 1000)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_temporary_file_left_by_a_crash_is_replaced_not_added_to(tmp_path) -> None:
    path = tmp_path / "state.json"
    (tmp_path / "state.json.tmp").write_bytes(b"half a write before a crash")
    replace_file(str(path), b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_the_file_gets_the_umask_permissions_as_any_other(tmp_path) -> None:
    path = tmp_path / "state.json"
    replace_file(str(path), b"x")
    other = tmp_path / "other"
    other.write_bytes(b"x")
    assert path.stat().st_mode == other.stat().st_mode


def test_a_relative_path_is_written_in_its_own_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    replace_file("state.json", b"x")
    assert (tmp_path / "state.json").read_bytes() == b"x"
