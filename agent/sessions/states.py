"""Mapping tables from the OS's session states to the report's, and the idle rule.

Every table here is also a table in docs/sessions.md; tests/agent/sessions
pins each row. The report's states are a closed set (they become label values):
active, idle, disconnected, connecting, other.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

ACTIVE, IDLE, DISCONNECTED, CONNECTING, OTHER = "active", "idle", "disconnected", "connecting", "other"

# WTS_CONNECTSTATE_CLASS (wtsapi32.h): value -> (name, report state). None: not a session (skipped).
WTS_STATES: Dict[int, Tuple[str, Optional[str]]] = {
    0: ("WTSActive", ACTIVE),              # a user is logged on and connected
    1: ("WTSConnected", CONNECTING),       # a client is connected, no logon yet (the console: see windows.py)
    2: ("WTSConnectQuery", CONNECTING),    # connecting
    3: ("WTSShadow", ACTIVE),              # connected and shadowing another session: someone works in it
    4: ("WTSDisconnected", DISCONNECTED),  # logged on, no client
    5: ("WTSIdle", OTHER),                 # a pre-created session waiting for a client (not our "idle")
    6: ("WTSListen", None),                # a listener (RDP-Tcp, ICA-CGP): skipped
    7: ("WTSReset", OTHER),                # being reset
    8: ("WTSDown", OTHER),                 # down because of an error
    9: ("WTSInit", CONNECTING),            # initializing
}
WTS_LISTEN = 6
WTS_CONNECTED = 1

# logind session STATE= -> report state.
LOGIND_STATES: Dict[str, str] = {
    "active": ACTIVE,      # in the foreground of its seat, or a session without a seat (ssh, xrdp, HDX)
    "online": ACTIVE,      # logged on, in the background of its seat (fast user switching)
    "opening": CONNECTING,  # being set up
    "closing": OTHER,      # logged out, processes linger (KillUserProcesses=no, a detached tmux)
}

# logind CLASS= values that are user sessions; every other class (greeter, lock-screen,
# background, background-light, manager, manager-early, none) is not reported.
LOGIND_USER_CLASSES = frozenset({"user", "user-early", "user-incomplete", "user-light"})


def wts_state(code: int) -> Optional[str]:
    """The report state for a WTS connect state; None for a listener; an unknown value is other."""
    return WTS_STATES.get(code, ("", OTHER))[1]


def wts_state_name(code: int) -> str:
    return WTS_STATES.get(code, (f"WTS{code}", None))[0]


def logind_state(state: str) -> str:
    return LOGIND_STATES.get(state, OTHER)


def effective_state(state: str, idle_seconds: Optional[float], idle_after: float) -> str:
    """The idle rule: an active session without input for at least `idle_after` seconds is idle.

    Only `active` becomes `idle`: a disconnected session has no input by
    definition and stays disconnected. Unknown idle time (None) stays active.

    >>> effective_state("active", 1799.9, 1800), effective_state("active", 1800, 1800)
    ('active', 'idle')
    """
    if state == ACTIVE and idle_seconds is not None and idle_seconds >= idle_after:
        return IDLE
    return state
