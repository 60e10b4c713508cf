"""Counters since the agent started, kept from completed logons and failed logons: the `logons` reading.

    >>> t = LogonTotals()
    >>> t.add_logon(Logon(20.0, (("profile", 8.5), ("group_policy", None), ("shell", 7.0), ("other", None))))
    >>> t.add_failure("bad_password")
    >>> r = t.reading()
    >>> r.duration_buckets[:5], r.duration_count, r.phases_missing[1], r.failures[0]
    ((0, 0, 0, 1, 1), 1, ('group_policy', 1), ('bad_password', 1))
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Dict, List

from agent.logons.matching import FAILURE_REASONS, PHASES, Logon
from contract.report import DISCONNECT_REASONS, LOGON_DURATION_BUCKETS, Logons


class LogonTotals:
    """Not thread-safe: one collector owns it. Values only grow; an agent restart starts them again at 0."""

    def __init__(self) -> None:
        self._buckets: List[int] = [0] * len(LOGON_DURATION_BUCKETS)  # per bucket, not yet cumulative
        self._sum = 0.0
        self._count = 0
        self._phase_sum: Dict[str, float] = {p: 0.0 for p in PHASES}
        self._phase_count: Dict[str, int] = {p: 0 for p in PHASES}
        self._missing: Dict[str, int] = {p: 0 for p in PHASES}
        self._failures: Dict[str, int] = {r: 0 for r in FAILURE_REASONS}
        self.events_skipped = 0
        self.successes = 0
        self._disconnects: Dict[str, int] = {r: 0 for r in DISCONNECT_REASONS}

    def add_logon(self, logon: Logon) -> None:
        i = bisect_left(LOGON_DURATION_BUCKETS, logon.total_seconds)  # le: a 5.0 s logon is in the 5 s bucket
        if i < len(self._buckets):
            self._buckets[i] += 1
        self._sum += logon.total_seconds
        self._count += 1
        for phase, seconds in logon.phases:
            if seconds is None:
                self._missing[phase] += 1
            else:
                self._phase_sum[phase] += seconds
                self._phase_count[phase] += 1

    def add_failure(self, reason: str) -> None:
        self._failures[reason if reason in self._failures else "other"] += 1

    def add_success(self) -> None:
        self.successes += 1

    def add_disconnect(self, reason: str) -> None:
        self._disconnects[reason if reason in self._disconnects else "other"] += 1

    def reading(self) -> Logons:
        cumulative, running = [], 0
        for n in self._buckets:
            running += n
            cumulative.append(running)
        return Logons(
            duration_buckets=tuple(cumulative),
            duration_sum_seconds=round(self._sum, 6),
            duration_count=self._count,
            phase_sum_seconds=tuple((p, round(self._phase_sum[p], 6)) for p in PHASES),
            phase_count=tuple((p, self._phase_count[p]) for p in PHASES),
            phases_missing=tuple((p, self._missing[p]) for p in PHASES),
            failures=tuple((r, self._failures[r]) for r in FAILURE_REASONS),
            events_skipped=self.events_skipped,
            successes=self.successes,
            disconnect_reasons=tuple((r, self._disconnects[r]) for r in DISCONNECT_REASONS),
        )
