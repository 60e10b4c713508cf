"""Processes grouped into user and system, with CPU counters that never go down."""

from __future__ import annotations

import pytest

from agent.sessions.logind import LogindSource
from agent.sessions.processes import (
    SYSTEM,
    USER,
    LinuxLocator,
    Place,
    ProcessGrouper,
    ProcessSnapshot,
    classify,
    parse_cgroup,
    top_users,
    windows_locator,
)
from agent.sessions.windows import WindowsSource
from tests.agent.sessions.fakes import SESSION_FIXTURES, Clock, linux_psutil, windows_api_and_psutil

PROC = str(SESSION_FIXTURES / "proc")


def linux_sessions():
    return LogindSource(str(SESSION_FIXTURES / "logind"), str(SESSION_FIXTURES / "dev"), Clock()).snapshot()


@pytest.mark.parametrize("text, expected", [
    ("0::/user.slice/user-1000.slice/session-42.scope\n", "42"),
    ("1:name=systemd:/user.slice/user-1000.slice/session-c7.scope\n0::/\n", "c7"),
    ("0::/user.slice/user-1000.slice/session-3.scope/app\n", "3"),
    ("0::/user.slice/user-1000.slice/user@1000.service/init.scope\n", None),
    ("0::/system.slice/session-cleanup.service\n", None),
])
def test_parse_cgroup(text: str, expected: str) -> None:
    assert parse_cgroup(text) == expected


def test_linux_locator_uses_the_scope_then_the_audit_session() -> None:
    locate = LinuxLocator(PROC)
    assert locate(1201) == Place(session="2")
    assert locate(1305) == Place(session="3")    # cgroup v1 lines
    assert locate(1410) == Place(audit=4)        # a user service: no scope, but its audit session
    assert locate(1700) == Place(audit=7)        # no cgroup file readable
    assert locate(1) == Place()                  # (u32)-1: no audit session
    assert locate(424242) == Place()             # gone


def test_classify_windows_by_session_id() -> None:
    common = dict(windows=True, by_session={"2": "CORP\\alice"}, by_audit={}, session_users={})
    assert classify(Place(session="0"), None, None, **common) == (SYSTEM, "")
    assert classify(Place(), None, None, **common) == (SYSTEM, "")  # ProcessIdToSessionId failed
    assert classify(Place(session="2"), None, None, **common) == (USER, "CORP\\alice")
    assert classify(Place(session="1"), None, None, **common) == (USER, "")  # logon screen


def test_linux_grouping_by_scope_audit_session_and_owner() -> None:
    grouper = ProcessGrouper(linux_psutil(), windows=False, locate=LinuxLocator(PROC), clock=Clock())
    snap = grouper.snapshot(linux_sessions())
    # user: 1201 (scope 2), 1211 (anna's systemd --user: uid >= 1000 with a session), 1305 (scope 3),
    #       1410 (audit 4), 1700 (audit 7); system: 1, 700, 2500 (uid 115), 3000 (zoe: no session), 3100
    assert snap.groups[USER].processes == 5
    assert snap.groups[SYSTEM].processes == 5
    assert snap.groups[USER].cpu_seconds_total == pytest.approx(0.5 + 2 + 6 + 5 + 50)
    assert snap.groups[SYSTEM].cpu_seconds_total == pytest.approx(30 + 2 + 150 + 2)
    assert snap.groups[USER].memory_bytes == 5e6 + 10e6 + 6e6 + 30e6 + 800e6
    assert snap.access_denied == 1
    assert snap.user_memory["CORP\\emil"] == 800e6
    assert snap.wall_seconds is None and snap.user_cpu == {}  # CPU rates need a second snapshot


def test_windows_grouping_skips_the_idle_process_and_counts_session_0_as_system() -> None:
    api, ps = windows_api_and_psutil()
    sessions = WindowsSource(api).snapshot()
    grouper = ProcessGrouper(ps, windows=True, locate=windows_locator(api), clock=Clock())
    snap = grouper.snapshot(sessions)
    assert "username" not in ps.attrs_asked[0] and "uids" not in ps.attrs_asked[0]
    # pid 0 skipped; 4 and 640 in session 0, 780 unknown (access denied): system
    assert snap.groups[SYSTEM].processes == 3
    assert snap.groups[SYSTEM].cpu_seconds_total == pytest.approx(5000 + 500)
    assert snap.groups[USER].processes == 7
    assert snap.groups[USER].cpu_seconds_total == pytest.approx(2 + 150 + 70 + 10 + 12 + 240 + 24)
    assert snap.access_denied == 1
    assert snap.user_memory["CORP\\alice"] == 850e6


def test_cpu_counter_is_monotonic_when_a_busy_process_exits() -> None:
    ps = linux_psutil()
    clock = Clock()
    grouper = ProcessGrouper(ps, windows=False, locate=LinuxLocator(PROC), clock=clock)
    sessions = linux_sessions()
    first = grouper.snapshot(sessions).groups[USER].cpu_seconds_total
    clock.advance(15)
    ps.set_cpu(1700, 70.0, 10.0)  # emil's process used 30 s more
    second = grouper.snapshot(sessions)
    assert second.groups[USER].cpu_seconds_total == pytest.approx(first + 30)
    assert second.wall_seconds == 15 and second.user_cpu["CORP\\emil"] == pytest.approx(30)
    clock.advance(15)
    ps.remove(1700)  # it exits: its 80 s must not leave the counter
    ps.set_cpu(1305, 9.0, 1.0)  # bernd used 4 s more
    third = grouper.snapshot(sessions)
    assert third.groups[USER].cpu_seconds_total == pytest.approx(first + 30 + 4)
    assert third.groups[USER].processes == 4


def test_a_new_process_adds_its_whole_cpu_time_and_a_reused_pid_is_a_new_process() -> None:
    ps = linux_psutil()
    grouper = ProcessGrouper(ps, windows=False, locate=LinuxLocator(PROC), clock=Clock())
    sessions = linux_sessions()
    before = grouper.snapshot(sessions).groups[SYSTEM].cpu_seconds_total
    for p in ps.processes:
        if p["pid"] == 2500:  # postgres restarted under the same pid, with less CPU time
            p["create_time"] += 1000
            p["cpu_times"] = {"user": 1.0, "system": 1.0}
    ps.processes.append({"pid": 2600, "create_time": 1764547000.0, "cpu_times": {"user": 3.0, "system": 0.0},
                         "memory_info": {"rss": 1}, "username": "root", "uids": {"real": 0}})
    after = grouper.snapshot(sessions).groups[SYSTEM].cpu_seconds_total
    assert after == pytest.approx(before + 2 + 3)


def test_top_users_by_cpu_and_memory_merged_and_pseudonymized() -> None:
    snap = ProcessSnapshot(groups={}, wall_seconds=10.0,
                           user_cpu={"a": 20.0, "CORP\\B": 5.0, "b": 5.0, "c": 1.0, "d": 0.0},
                           user_memory={"a": 1.0, "CORP\\B": 1.0, "b": 1.0, "c": 2.0, "d": 9.0})
    rows = top_users(snap, 1, lambda u: "p-" + u.split("\\")[-1].lower(), limit=50)
    assert rows == [{"user": "p-a", "cpu_cores": 2.0, "memory_bytes": 1.0},
                    {"user": "p-d", "cpu_cores": 0.0, "memory_bytes": 9.0}]
    rows = top_users(snap, 2, lambda u: "p-" + u.split("\\")[-1].lower(), limit=3)
    assert [r["user"] for r in rows] == ["p-a", "p-b", "p-d"]  # b's two spellings merged: 1 core
    assert rows[1]["cpu_cores"] == 1.0


def test_no_top_users_before_a_second_snapshot() -> None:
    snap = ProcessSnapshot(groups={}, user_memory={"a": 1.0})
    assert top_users(snap, 5, str, 50) == []
