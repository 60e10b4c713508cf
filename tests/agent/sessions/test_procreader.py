"""The /proc fast path of process accounting agrees with psutil on this machine."""

from __future__ import annotations

import os
import sys

import psutil
import pytest

from agent.sessions.processes import ProcReader, parse_proc_stat

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_own_process_matches_psutil() -> None:
    sum(i * i for i in range(200_000))  # some CPU time to compare
    me = {p["pid"]: p for p in ProcReader()()}[os.getpid()]
    ps = psutil.Process()
    times, memory = ps.cpu_times(), ps.memory_info()
    assert me["cpu_times"].user == pytest.approx(times.user, abs=0.05)
    assert me["cpu_times"].system == pytest.approx(times.system, abs=0.05)
    assert me["memory_info"].rss == pytest.approx(memory.rss, rel=0.2)
    assert me["uids"].real == os.geteuid()
    assert me["username"] == ps.username()


def test_sees_every_process_psutil_sees() -> None:
    ours = {p["pid"] for p in ProcReader()()}
    theirs = set(psutil.pids())
    assert len(theirs - ours) <= 2  # processes that started between the two listings


def test_malformed_stat_lines_are_skipped() -> None:
    assert parse_proc_stat(b"garbage", 100, 4096) is None
    assert parse_proc_stat(b"1 (x) S 1 2 3", 100, 4096) is None
    assert parse_proc_stat(b"1 (x) S " + b"z " * 30, 100, 4096) is None


def test_missing_root_yields_nothing(tmp_path) -> None:
    assert list(ProcReader(str(tmp_path / "none"))()) == []
