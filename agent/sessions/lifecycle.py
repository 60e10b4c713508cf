"""Logons, logoffs, disconnects and reconnects, counted by comparing consecutive snapshots.

The OS keeps no such counters, so the agent counts what it sees change between
two intervals; the counters start at 0 when the agent starts, and the first
snapshot is the baseline: sessions already there are not logons. A session
that starts and ends between two snapshots is not seen at all.

Sessions are matched on (id, logon time): Windows reuses session ids, so id 3
with a new logon time is a new session (a logoff and a logon). A session first
seen without a logon time (a logon screen, a connection in progress) is the
same session when it gains one; its logon is counted then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional

from agent.sessions.model import Session
from agent.sessions.states import ACTIVE, DISCONNECTED, IDLE


@dataclass
class _Seen:
    logon_time: Optional[float]
    logged_on: bool
    was_disconnected: bool
    disconnected_since: Optional[float]


class LifecycleTracker:
    """Cumulative counters since agent start; `update` once per snapshot."""

    def __init__(self) -> None:
        self.logons = 0
        self.logoffs = 0
        self.disconnects = 0
        self.reconnects = 0
        self._seen: Dict[str, _Seen] = {}
        self._baseline = True

    def update(self, sessions: Iterable[Session], now: float) -> None:
        counting = not self._baseline
        current: Dict[str, _Seen] = {}
        for s in sessions:
            before = self._seen.get(s.id)
            same = before is not None and (before.logon_time == s.logon_time or before.logon_time is None)
            if before is not None and not same and before.logged_on and counting:
                self.logoffs += 1  # the id was reused: the old session ended
            disconnected = s.state == DISCONNECTED
            if same:
                if counting and s.logged_on and not before.logged_on:
                    self.logons += 1
                was, since = before.was_disconnected, before.disconnected_since
                if disconnected and not was:
                    if counting:
                        self.disconnects += 1
                    was, since = True, now
                elif was and s.state in (ACTIVE, IDLE):
                    if counting:
                        self.reconnects += 1  # back from disconnected, perhaps via connecting
                    was, since = False, None
                current[s.id] = _Seen(s.logon_time, s.logged_on, was, since)
            else:
                if counting and s.logged_on:
                    self.logons += 1
                if counting and disconnected:
                    self.disconnects += 1  # logged on and disconnected between two snapshots
                since = (now if counting else None) if disconnected else None
                current[s.id] = _Seen(s.logon_time, s.logged_on, disconnected, since)
        if counting:
            self.logoffs += sum(1 for sid, seen in self._seen.items() if sid not in current and seen.logged_on)
        self._seen = current
        self._baseline = False

    def disconnected_since(self, session: Session) -> Optional[float]:
        """When this agent saw the session become disconnected; None if it already was at the baseline."""
        seen = self._seen.get(session.id)
        return seen.disconnected_since if seen is not None else None

    def counters(self) -> Dict[str, int]:
        return {"logons_total": self.logons, "logoffs_total": self.logoffs,
                "disconnects_total": self.disconnects, "reconnects_total": self.reconnects}
