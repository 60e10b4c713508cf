"""One user session as every source reports it, and the interface of a source.

A source maps its OS's view to the report contract's states and protocols
(contract/report.py: SESSION_STATES, SESSION_PROTOCOLS) but never decides `idle`:
that needs the operator's `idle_after`, applied by states.effective_state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Protocol, Tuple


@dataclass(frozen=True)
class Session:
    """A session on this host.

    `state` is one of active, disconnected, connecting, other (never idle: see
    states.effective_state); `raw_state` is the source's own word for it, kept
    for debugging. `user` is raw (may be "DOMAIN\\user", may be empty): only
    the collector pseudonymizes. Times are Unix seconds, None when unknown.
    """

    id: str
    state: str
    protocol: str
    user: str = ""
    logon_time: Optional[float] = None
    idle_seconds: Optional[float] = None  # since the last user input, when the source knows
    disconnect_time: Optional[float] = None
    raw_state: str = ""
    leader_pid: Optional[int] = None
    audit_id: Optional[int] = None  # Linux audit session (logind AUDIT=), matched to /proc/<pid>/sessionid

    @property
    def key(self) -> Tuple[str, Optional[float]]:
        """Identity across snapshots: Windows reuses session ids, a logon time does not repeat."""
        return (self.id, self.logon_time)

    @property
    def logged_on(self) -> bool:
        """Whether a user is logged on, as opposed to a logon screen or a connection in progress."""
        return bool(self.user) or self.logon_time is not None


class SessionSource(Protocol):
    """What the sessions collector reads: a name (the report's `source`) and a snapshot.

    `snapshot` returns the sessions as they are now; it may raise OSError when
    the OS cannot be asked at all (the collector then fails for this interval),
    but must skip, not raise on, a session that ends while being read.
    """

    name: str

    def snapshot(self) -> List[Session]:  # pragma: no cover - interface
        ...
