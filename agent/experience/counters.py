"""The experience counters, and what their values mean: pure functions of what PDH returns.

Counter paths are English (`PdhAddEnglishCounter`), so they hold on a host of any language.
docs/sessions.md ("Experience counters") says where each path, unit and instance name is
documented. A value is one interval's reading of one instance; this module turns instances
into sessions and readings into observations in seconds and bytes.

    >>> delay_session("3"), delay_session("Max"), rdp_winstation("RDP-Tcp 37"), ica_winstation("ICA-CGP#3 (anna)")
    (3, None, 'rdp-tcp#37', 'ica-cgp#3')
"""

from __future__ import annotations

import re
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple, Union

# Windows Server 2019 / Windows 10 1809 and later: one instance per session id, plus "Max" and "Average"; ms.
INPUT_DELAY = r"\User Input Delay per Session(*)\Max Input Delay"
# RDP (RemoteFX Network): one instance per RDP connection, "RDP-Tcp 37"
# for the session "RDP-Tcp#37"; round trips in ms; bytes since the connection started.
RDP_TCP_RTT = r"\RemoteFX Network(*)\Current TCP RTT"
RDP_UDP_RTT = r"\RemoteFX Network(*)\Current UDP RTT"
RDP_RECEIVED = r"\RemoteFX Network(*)\Total Received Bytes"
RDP_SENT = r"\RemoteFX Network(*)\Total Sent Bytes"
# Citrix HDX (a VDA's ICA Session object): one instance per HDX session, "ICA-CGP#3 (user)"; latency in ms,
# bandwidth in bits per second.
ICA_LATENCY_LAST = r"\ICA Session(*)\Latency - Last Recorded"
ICA_LATENCY_AVERAGE = r"\ICA Session(*)\Latency - Session Average"
ICA_INPUT_BANDWIDTH = r"\ICA Session(*)\Input Session Bandwidth"
ICA_OUTPUT_BANDWIDTH = r"\ICA Session(*)\Output Session Bandwidth"

# The counter sets, each reported only when every one of its counters could be added.
COUNTER_SETS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("input_delay", (INPUT_DELAY,)),
    ("ica", (ICA_LATENCY_LAST, ICA_LATENCY_AVERAGE, ICA_INPUT_BANDWIDTH, ICA_OUTPUT_BANDWIDTH)),
    ("rdp", (RDP_TCP_RTT, RDP_UDP_RTT, RDP_RECEIVED, RDP_SENT)),
)
ALL_PATHS = tuple(p for _, paths in COUNTER_SETS for p in paths)

MS = 0.001
_RDP_INSTANCE = re.compile(r"^(.*\S) (\d+)$")
_ICA_USER = re.compile(r"^(.*?\S)\s*\([^()]*\)$")

Session = Union[int, str]  # a session id, or an instance's own name when no WinStation has it


def delay_session(instance: str) -> Optional[int]:
    """The session id of a `User Input Delay per Session` instance; None for "Max", "Average" and the like."""
    return int(instance) if instance.isdigit() else None


def rdp_winstation(instance: str) -> str:
    """The WinStation name (lower case) of a RemoteFX Network instance: "RDP-Tcp 37" -> "rdp-tcp#37"."""
    m = _RDP_INSTANCE.match(instance)
    return (f"{m.group(1)}#{m.group(2)}" if m else instance).lower()


def ica_winstation(instance: str) -> str:
    """The WinStation name (lower case) of an ICA Session instance: "ICA-CGP#3 (user)" -> "ica-cgp#3"."""
    m = _ICA_USER.match(instance)
    return (m.group(1) if m else instance).lower()


def sessions_of(instances: Iterable[str], winstation_of: Callable[[str], str],
                winstations: Mapping[str, int]) -> Tuple[Dict[str, Session], int]:
    """Each instance's session: the id of the WinStation it names (`winstations`: lower-case name -> id), or
    the instance itself when none has that name (it is still one session); and how many were not matched."""
    out: Dict[str, Session] = {}
    unmatched = 0
    for name in instances:
        sid = winstations.get(winstation_of(name))
        if sid is None:
            unmatched += 1
            out[name] = name
        else:
            out[name] = sid
    return out, unmatched


def input_delays(values: Mapping[str, float], user_sessions: Optional[Set[int]]) -> List[float]:
    """One observation in seconds per session instance (of `user_sessions` when known: the Services
    session and listeners are not a user's), the instances "Max" and "Average" left out."""
    out = []
    for name, ms in sorted(values.items()):
        sid = delay_session(name)
        if sid is None or (user_sessions is not None and sid not in user_sessions):
            continue
        out.append(max(0.0, ms) * MS)
    return out


def per_session(primary: Mapping[str, float], fallback: Mapping[str, float],
                session: Mapping[str, Session]) -> List[float]:
    """One round trip in seconds per session: an instance's `primary` value in ms when above 0, else its
    `fallback` when above 0, else none (nothing measured yet); two instances of one session give its larger."""
    best: Dict[Session, float] = {}
    for name in sorted(set(primary) | set(fallback)):
        ms = primary.get(name, 0.0)
        if not ms > 0:
            ms = fallback.get(name, 0.0)
        if not ms > 0:
            continue
        key = session.get(name, name)
        best[key] = max(best.get(key, 0.0), ms * MS)
    return [best[k] for k in sorted(best, key=str)]


def bandwidth_bytes(bits_per_second: Mapping[str, float], seconds: float) -> float:
    """Bytes moved over `seconds` at the instances' rates in bits per second: sum / 8 x seconds."""
    return sum(max(0.0, v) for v in bits_per_second.values()) / 8.0 * max(0.0, seconds)


class ConnectionBytes:
    """Bytes since each connection started (RemoteFX's Total Received/Sent Bytes) as increases between
    collections: an instance seen at the first collection is a baseline (what came before the agent is not
    counted), one that appears later is counted from 0, one whose value went down is a new connection."""

    def __init__(self) -> None:
        self._last: Optional[Dict[str, float]] = None

    def increase(self, values: Mapping[str, float]) -> float:
        if not values and self._last is not None:
            return 0.0  # no value this time (or no connection): the baseline stays, or all would count again
        first = self._last is None
        last = self._last or {}
        grown = 0.0
        for name, value in values.items():
            value = max(0.0, value)
            before = last.get(name)
            if before is None:
                grown += 0.0 if first else value
            elif value >= before:
                grown += value - before
            else:
                grown += value
        self._last = dict(values)
        return grown
