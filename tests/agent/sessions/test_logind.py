"""logind state files (tests/fixtures/sessions/logind/) to sessions."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from agent.sessions import logind
from agent.sessions.logind import LogindSource, parse_state_file, protocol_of, session_from_logind
from tests.agent.sessions.fakes import SESSION_FIXTURES, T0, Clock


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the fixture tree, so that tests may set tty access times."""
    for name in ("logind", "dev"):
        shutil.copytree(SESSION_FIXTURES / name, tmp_path / name)
    return tmp_path


def _snapshot(tree: Path, now: float = T0):
    source = LogindSource(str(tree / "logind"), str(tree / "dev"), Clock(now))
    return {s.id: s for s in source.snapshot()}


def test_parse_state_file_reads_keys_skips_comments_and_undoes_escapes_where_logind_escapes() -> None:
    text = ("# This is private data. Do not parse.\nUID=1005\nUSER=CORP\\nina\n"
            "REMOTE_HOST=client\\x2d07\nSERVICE=ctx\\150dx\nnot a field\n")
    fields = parse_state_file(text)
    assert fields == {"UID": "1005", "USER": "CORP\\nina", "REMOTE_HOST": "client-07", "SERVICE": "ctxhdx"}


def test_user_sessions_are_read_and_the_rest_skipped(tree: Path) -> None:
    sessions = _snapshot(tree)
    # c1 greeter, 9 manager (systemd --user), 10 background (cron) are not user sessions; 3.ref is a FIFO
    assert sorted(sessions) == ["2", "3", "4", "5", "6", "7", "8"]


@pytest.mark.parametrize("sid, state, protocol, user", [
    ("2", "active", "console", "anna"),       # login on tty2, seat0
    ("3", "active", "ssh", "bernd"),          # sshd, remote
    ("4", "active", "rdp", "carla"),          # xrdp-sesman, x11
    ("5", "other", "ssh", "bernd"),           # closing: logged out, processes linger
    ("6", "active", "console", "dora"),       # online: in the background of seat0
    ("7", "active", "ica", "CORP\\emil"),     # Citrix Linux VDA (ctxhdx)
    ("8", "connecting", "ssh", "fritz"),      # opening
])
def test_states_protocols_and_users(tree: Path, sid: str, state: str, protocol: str, user: str) -> None:
    s = _snapshot(tree)[sid]
    assert (s.state, s.protocol, s.user) == (state, protocol, user)


def test_times_leader_and_audit_session(tree: Path) -> None:
    s = _snapshot(tree)["3"]
    assert s.logon_time == 1764543600.5
    assert (s.leader_pid, s.audit_id, s.raw_state) == (1305, 3, "active")


def test_idle_is_the_tty_access_time_and_unknown_without_a_tty(tree: Path) -> None:
    os.utime(tree / "dev" / "pts" / "0", (T0 - 2000, T0 - 2000))
    os.utime(tree / "dev" / "tty2", (T0 - 5, T0 - 5))
    sessions = _snapshot(tree)
    assert sessions["3"].idle_seconds == pytest.approx(2000.0)
    assert sessions["2"].idle_seconds == pytest.approx(5.0)
    assert sessions["4"].idle_seconds is None  # xrdp: a display, no tty
    assert sessions["6"].idle_seconds is None  # tty3 is not in the fixture /dev


def test_a_tty_path_cannot_leave_the_dev_root(tree: Path) -> None:
    assert logind.tty_atime("../logind/2", str(tree / "dev")) is None
    assert logind.tty_atime("/dev/pts/0", str(tree / "dev")) is not None


@pytest.mark.parametrize("fields, expected", [
    ({"SERVICE": "sshd", "REMOTE": "1", "TTY": "pts/0"}, "ssh"),
    ({"SERVICE": "xrdp", "REMOTE": "1"}, "rdp"),
    ({"SERVICE": "xrdp-sesman", "REMOTE": "1"}, "rdp"),
    ({"SERVICE": "ctxlogin", "REMOTE": "1"}, "ica"),
    ({"SERVICE": "login", "REMOTE": "0", "TTY": "tty1"}, "console"),
    ({"SERVICE": "gdm-password", "REMOTE": "0", "SEAT": "seat0"}, "console"),
    ({"SERVICE": "login", "REMOTE": "1", "TTY": "pts/4"}, "other"),     # telnet-like
    ({"SERVICE": "systemd-run", "REMOTE": "0"}, "other"),               # no seat, no VT
])
def test_protocol_mapping(fields: dict, expected: str) -> None:
    assert protocol_of(fields) == expected


def test_a_state_file_without_state_falls_back_to_active_flag() -> None:
    s = session_from_logind("12", {"USER": "x", "ACTIVE": "1"}, T0)
    assert s is not None and (s.state, s.raw_state, s.logon_time, s.audit_id) == ("active", "active", None, None)
    assert session_from_logind("13", {"USER": "x", "CLASS": "greeter"}, T0) is None


def test_usable_only_for_a_readable_directory(tmp_path: Path) -> None:
    booted = str(tmp_path)  # any existing directory stands for /run/systemd/system
    assert logind.usable(str(SESSION_FIXTURES / "logind"), booted)
    assert not logind.usable(str(SESSION_FIXTURES / "logind"), str(tmp_path / "not-booted"))  # no systemd
    assert not logind.usable(str(tmp_path / "missing"), booted)
    (tmp_path / "file").write_text("")
    assert not logind.usable(str(tmp_path / "file"), booted)


def test_a_session_file_that_vanishes_is_skipped(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = open

    def flaky_open(path, *args, **kwargs):
        if str(path).endswith(os.sep + "4"):
            raise FileNotFoundError(2, "gone", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", flaky_open)
    assert "4" not in _snapshot(tree) and "3" in _snapshot(tree)
