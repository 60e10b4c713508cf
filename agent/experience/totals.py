"""Counters since the agent started, kept from each interval's observations: the `experience` reading.

    >>> t = ExperienceTotals()
    >>> t.add_input_delay(0.04); t.add_input_delay(0.7)
    >>> t.add_rtt("ica", 0.032); t.add_traffic("ica", 1500.0, 24000.0)
    >>> r = t.reading()
    >>> r.input_delay.buckets, r.input_delay.count, r.protocols[0].rtt.buckets, r.protocols[0].sent_bytes
    ((1, 1, 1, 1, 2, 2), 2, (1, 1, 1, 1), 24000.0)
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Dict, List, Optional, Tuple

from contract.report import (
    EXPERIENCE_PROTOCOLS,
    INPUT_DELAY_BUCKETS,
    RTT_BUCKETS,
    Experience,
    Histogram,
    ProtocolExperience,
)


class _Observed:
    """One histogram's counts per bucket (not yet cumulative), sum and count."""

    def __init__(self, bounds: Tuple[float, ...]) -> None:
        self.bounds = bounds
        self.per_bucket: List[int] = [0] * len(bounds)
        self.total = 0.0
        self.count = 0

    def add(self, seconds: float) -> None:
        i = bisect_left(self.bounds, seconds)  # le: an observation of exactly 0.15 s is in the 0.15 bucket
        if i < len(self.per_bucket):
            self.per_bucket[i] += 1
        self.total += seconds
        self.count += 1

    def histogram(self) -> Histogram:
        cumulative, running = [], 0
        for n in self.per_bucket:
            running += n
            cumulative.append(running)
        return Histogram(buckets=tuple(cumulative), sum_seconds=round(self.total, 6), count=self.count)


class ExperienceTotals:
    """Not thread-safe: one collector (or one simulated host) owns it. Values only grow; a part appears
    once it is marked present (its counter set exists) and stays, so its series never vanish mid-run."""

    def __init__(self) -> None:
        self._delay: Optional[_Observed] = None
        self._rtt: Dict[str, _Observed] = {}
        self._traffic: Dict[str, List[float]] = {}  # protocol -> [received, sent]

    def input_delay_present(self) -> None:
        if self._delay is None:
            self._delay = _Observed(INPUT_DELAY_BUCKETS)

    def protocol_present(self, protocol: str) -> None:
        if protocol not in EXPERIENCE_PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}")
        if protocol not in self._rtt:
            self._rtt[protocol] = _Observed(RTT_BUCKETS)
            self._traffic[protocol] = [0.0, 0.0]

    def add_input_delay(self, seconds: float) -> None:
        self.input_delay_present()
        if math.isfinite(seconds):  # a value PDH got wrong would stay in the totals for the agent's life
            self._delay.add(max(0.0, seconds))  # type: ignore[union-attr]

    def add_rtt(self, protocol: str, seconds: float) -> None:
        self.protocol_present(protocol)
        if math.isfinite(seconds):
            self._rtt[protocol].add(max(0.0, seconds))

    def add_traffic(self, protocol: str, received: float, sent: float) -> None:
        self.protocol_present(protocol)
        t = self._traffic[protocol]
        t[0] += max(0.0, received) if math.isfinite(received) else 0.0
        t[1] += max(0.0, sent) if math.isfinite(sent) else 0.0

    def reading(self) -> Experience:
        return Experience(
            input_delay=None if self._delay is None else self._delay.histogram(),
            protocols=tuple(ProtocolExperience(p, self._rtt[p].histogram(), round(self._traffic[p][0], 3),
                                               round(self._traffic[p][1], 3))
                            for p in EXPERIENCE_PROTOCOLS if p in self._rtt),
        )
