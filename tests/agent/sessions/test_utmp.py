"""psutil.users() entries to sessions (the fallback source)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.sessions.utmp import UtmpSource, protocol_of
from tests.agent.sessions.fakes import T0, Clock, linux_psutil


def test_every_entry_is_an_active_session_keyed_by_terminal_and_start(tmp_path: Path) -> None:
    (tmp_path / "pts").mkdir()
    (tmp_path / "pts" / "0").write_text("")
    os.utime(tmp_path / "pts" / "0", (T0 - 1900, T0 - 1900))
    sessions = UtmpSource(linux_psutil(), str(tmp_path), Clock()).snapshot()
    by_id = {s.id: s for s in sessions}
    assert list(by_id) == ["tty1", "pts/0", "pts/1", ":0", "pts/0#900", "pid-4000", "ttyS0"]
    assert {s.state for s in sessions} == {"active"}
    assert by_id["pts/0"].key == ("pts/0", 1764543600.0)
    assert by_id["pts/0"].idle_seconds == pytest.approx(1900.0)
    assert by_id["tty1"].idle_seconds is None  # no such node in the test /dev
    assert by_id["pts/0"].user == "bernd" and by_id["pts/0"].leader_pid == 1305


@pytest.mark.parametrize("terminal, host, expected", [
    ("pts/0", "10.20.30.40", "ssh"),
    ("pts/1", "tmux(4242).%0", "other"),
    ("tty1", "", "console"),
    (":0", ":0", "console"),
    ("pts/3", ":0", "console"),       # a terminal on the local X display
    ("ttyS0", "", "other"),           # a serial line
    ("", "", "other"),
    ("tty2", "10.0.0.1", "other"),    # remote, but not a pseudo-terminal
])
def test_protocol_mapping(terminal: str, host: str, expected: str) -> None:
    assert protocol_of(terminal, host) == expected
