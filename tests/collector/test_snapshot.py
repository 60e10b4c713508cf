from __future__ import annotations

import json
import logging

from collector import snapshot
from collector.store import HostStore
from contract.report import Limits, parse_report
from tests.conftest import FIXTURES

NAMES = ("vda-win-01.json", "lvda-07.json", "vda-win-02-goodbye.json")


def filled_store() -> HostStore:
    store = HostStore()
    for i, name in enumerate(NAMES):
        raw = (FIXTURES / "reports" / name).read_bytes()
        store.put(parse_report(json.loads(raw)), received_at=1000.0 + i)
    return store


def test_round_trip_keeps_reports_and_arrival_times(tmp_path) -> None:
    path = tmp_path / "hosts.snapshot"
    assert snapshot.write(path, filled_store()) == 3
    restored = HostStore()
    assert snapshot.restore(path, restored, Limits()) == 3
    original = {e.host: e for e in filled_store().entries()}
    for entry in restored.entries():
        assert entry.received_at == original[entry.host].received_at
        assert entry.report == original[entry.host].report
    assert [p.name for p in tmp_path.iterdir()] == ["hosts.snapshot"]  # no temporary file left


def test_truncated_snapshot_moved_aside(tmp_path, caplog) -> None:
    path = tmp_path / "hosts.snapshot"
    snapshot.write(path, filled_store())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    store = HostStore()
    with caplog.at_level(logging.ERROR):
        assert snapshot.restore(path, store, Limits(), clock=lambda: 42) == 0
    assert len(store) == 0
    assert not path.exists()
    assert (tmp_path / "hosts.snapshot.corrupt-42").exists()
    assert "unusable" in caplog.text


def test_flipped_byte_detected(tmp_path) -> None:
    path = tmp_path / "s"
    snapshot.write(path, filled_store())
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    assert snapshot.restore(path, HostStore(), Limits(), clock=lambda: 1) == 0
    assert (tmp_path / "s.corrupt-1").exists()


def test_foreign_file_moved_aside(tmp_path) -> None:
    path = tmp_path / "s"
    path.write_text("this is somebody else's file\n")
    assert snapshot.restore(path, HostStore(), Limits(), clock=lambda: 7) == 0
    assert (tmp_path / "s.corrupt-7").read_text() == "this is somebody else's file\n"


def test_missing_snapshot_is_a_fresh_start(tmp_path) -> None:
    assert snapshot.restore(tmp_path / "none", HostStore(), Limits()) == 0


def test_report_that_no_longer_passes_is_left_out(tmp_path) -> None:
    path = tmp_path / "s"
    snapshot.write(path, filled_store())
    store = HostStore()
    assert snapshot.restore(path, store, Limits(max_cpu_modes=6)) == 2  # lvda-07 reports 8 modes
    assert store.get("lvda-07") is None
    assert store.get("vda-win-01") is not None


def test_unknown_keys_are_not_written(tmp_path) -> None:
    doc = json.loads((FIXTURES / "reports" / "vda-win-01.json").read_text())
    doc["padding"] = "x" * 100_000
    doc["readings"]["memory"]["extra"] = {"deep": ["y" * 50_000]}
    store = HostStore()
    store.put(parse_report(doc))
    path = tmp_path / "s"
    snapshot.write(path, store)
    assert path.stat().st_size < 10_000
    restored = HostStore()
    assert snapshot.restore(path, restored, Limits()) == 1
    assert restored.get("vda-win-01").report == store.get("vda-win-01").report


def _snapshot_of(entries) -> bytes:
    """A well-formed snapshot (valid checksum) holding the given raw entries."""
    import hashlib
    parts = [b"VDIWATCH-SNAPSHOT 1 %d 1000.0\n" % len(entries)]
    for received, raw in entries:
        parts += [b"%s %d\n" % (received, len(raw)), raw, b"\n"]
    body = b"".join(parts)
    return body + b"END " + hashlib.sha256(body).hexdigest().encode() + b"\n"


def test_deeply_nested_entry_is_left_out_not_a_crash(tmp_path, caplog) -> None:
    good = (FIXTURES / "reports" / "vda-win-01.json").read_bytes()
    path = tmp_path / "s"
    path.write_bytes(_snapshot_of([(b"1000.0", b"[" * 200_000 + b"]" * 200_000), (b"1001.0", good)]))
    store = HostStore()
    with caplog.at_level(logging.WARNING):
        assert snapshot.restore(path, store, Limits()) == 1
    assert store.get("vda-win-01") is not None
    assert "1 host(s) no longer pass" in caplog.text


def test_arrival_time_that_is_not_a_time_is_refused(tmp_path) -> None:
    good = (FIXTURES / "reports" / "vda-win-01.json").read_bytes()
    path = tmp_path / "s"
    path.write_bytes(_snapshot_of([(b"nan", good)]))
    assert snapshot.restore(path, HostStore(), Limits(), clock=lambda: 5) == 0
    assert (tmp_path / "s.corrupt-5").exists()


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch) -> None:
    import os

    import pytest

    path = tmp_path / "s"
    snapshot.write(path, filled_store())
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        snapshot.write(path, filled_store())
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # the half-written temporary file removed
    assert path.read_bytes() == before
