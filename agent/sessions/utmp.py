"""Sessions from utmp through psutil.users(): the fallback where logind is not there.

utmp knows terminal logins only (a user, a terminal, a remote host, a start
time): no state, so every entry is active, idle by the terminal's access time.
There is no session id either: the terminal is the id and (terminal, start
time) the identity across snapshots.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable, List, Optional, Set

from agent.sessions.logind import DEFAULT_DEV, tty_atime
from agent.sessions.model import Session
from agent.sessions.states import ACTIVE, OTHER

_LOCAL_TTY_RE = re.compile(r"^(tty\d+|console|:\d+(\.\d+)?)$")
# Terminal multiplexers write their own utmp entries with a pseudo "host".
_MULTIPLEXER_HOST_RE = re.compile(r"^(tmux|screen)\b")


def protocol_of(terminal: str, host: str) -> str:
    """ssh for a pts with a remote host; console for a VT or a local X display; else other."""
    host = host or ""
    terminal = terminal or ""
    if host and not host.startswith(":") and not _MULTIPLEXER_HOST_RE.match(host):
        return "ssh" if terminal.startswith("pts/") else OTHER
    if _LOCAL_TTY_RE.match(terminal) or host.startswith(":"):
        return "console"
    return OTHER


def session_from_utmp(entry: Any, session_id: str, now: float, atime: Optional[float] = None) -> Session:
    started = getattr(entry, "started", None)
    return Session(
        id=session_id,
        state=ACTIVE,
        protocol=protocol_of(getattr(entry, "terminal", None) or "", getattr(entry, "host", None) or ""),
        user=getattr(entry, "name", "") or "",
        logon_time=float(started) if started else None,
        idle_seconds=max(0.0, now - atime) if atime is not None else None,
        raw_state="utmp",
        leader_pid=getattr(entry, "pid", None),
    )


class UtmpSource:
    """Sessions from `psutil.users()` (psutil injected; tests pass a fake)."""

    name = "utmp"

    def __init__(self, psutil: Any, dev_root: str = DEFAULT_DEV, clock: Callable[[], float] = time.time):
        self.psutil = psutil
        self.dev_root = dev_root
        self.clock = clock

    def snapshot(self) -> List[Session]:
        now = self.clock()
        sessions = []
        used: Set[str] = set()
        for i, entry in enumerate(self.psutil.users()):
            terminal = getattr(entry, "terminal", None) or ""
            pid = getattr(entry, "pid", None)
            sid = terminal or (f"pid-{pid}" if pid else f"entry-{i}")
            if sid in used:  # a stale utmp record for the same terminal
                sid = f"{sid}#{pid if pid else i}"
            used.add(sid)
            sessions.append(session_from_utmp(entry, sid, now, tty_atime(terminal, self.dev_root)))
        return sessions
