"""The host store: the latest valid report of every host and its liveness.

Contract (relied on by the HTTP edge, the snapshot writer and the exposition):

- Every method may be called from any thread at any time. `put` and `expire`
  are atomic: a reader sees a host either before or after a report, never half.
- Entries are immutable. A new report replaces the host's entry as a whole, so
  readers take a list of entries under the lock and render it outside the lock;
  a scrape never blocks ingest for longer than a list copy. What is rendered
  from entries belongs to `collector.renderer`, which this module knows nothing of.
- Only valid reports reach the store: validation happens at the edge. An entry
  holds the parsed report, never the document as received, so what an agent
  adds beyond the contract is neither kept, nor snapshotted, nor served.
- `put` refuses, and changes nothing when it refuses: a new host past
  `max_hosts` (`StoreFull`); a host that another site owns (`HostOwned`: the
  first site to report a host owns it until it expires or is released); a
  report sooner than `min_interval` after the host's last one (`TooFrequent`;
  a goodbye, or the first report after one, may come sooner, once per interval).
- Time: intervals, liveness, expiry and rate limits use the `monotonic` clock,
  so a wall clock stepped back or forward changes none of them; `clock` (wall
  time) only stamps what is shown (`received_at`, history). Restored entries
  are placed on the monotonic clock by their age, clamped at zero.
- Liveness is derived from the clock at read time, never stored: a host is
  `up` until it misses `missed_intervals` of its own intervals, `stale` after,
  `stopped` once it said goodbye, `maintenance` while its last report carried
  the maintenance flag. Hosts silent past `expire_after` (`stopped_expire_after`
  after a goodbye) are dropped by `expire`. Methods taking `now` take it on
  the monotonic clock (`store.monotonic()`).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, List, Optional, Tuple

from contract.report import HOST_STATES, MAINTENANCE, STALE, STOPPED, UP, Report

HISTORY_LENGTH = 20
MAX_REJECTIONS_KEPT = 10_000
_IDLE_MODES = ("idle", "iowait")


def cpu_used_ratio(previous: Optional[Report], current: Report) -> Optional[float]:
    """Busy share of all CPUs between two reports of one agent; None across a counter reset."""
    if previous is None or previous.cpu is None or current.cpu is None:
        return None
    before, now = dict(previous.cpu.seconds), dict(current.cpu.seconds)
    total = sum(now.values()) - sum(before.values())
    idle = sum(now.get(m, 0.0) - before.get(m, 0.0) for m in _IDLE_MODES)
    if total <= 0 or idle < 0 or idle > total:
        return None
    return round(1.0 - idle / total, 4)


class StoreFull(Exception):
    """A new host was refused because the store holds `max_hosts` hosts already."""


class HostOwned(Exception):
    """The host belongs to another site; `site` is its owner."""

    def __init__(self, host: str, site: str):
        super().__init__(f"host {host!r} belongs to site {site!r}; a report for another site cannot "
                         f"replace it until it expires or the owner releases it")
        self.site = site


class TooFrequent(Exception):
    """The host reported less than the minimum interval ago; `wait` is the seconds left."""

    def __init__(self, host: str, elapsed: float, min_interval: float):
        super().__init__(f"host {host!r} reported {elapsed:.3f} s ago; the minimum interval is {min_interval:g} s")
        self.wait = min_interval - elapsed


@dataclass(frozen=True)
class HostEntry:
    host: str
    report: Report
    received_at: float  # wall clock, for display and the exposition
    seen: float  # monotonic clock: what liveness, expiry and rate limits measure from
    cpu_used_ratio: Optional[float] = None  # busy share of all CPUs since the previous report
    exempt_at: Optional[float] = None  # monotonic time of the last report let through inside the interval
    restored: bool = False  # from a snapshot: its time is an estimate, no reason to make the agent wait
    seq: int = 0  # the order the store took entries in, for whoever mirrors them

    @property
    def interval(self) -> float:
        return self.report.agent.interval_seconds

    @property
    def site(self) -> str:
        return self.report.site


@dataclass(frozen=True)
class Liveness:
    up: bool
    state: str


class HostStore:
    def __init__(self, *, clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 missed_intervals: int = 3, expire_after: float = 86400.0, stopped_expire_after: float = 3600.0,
                 max_hosts: int = 100_000):
        self.clock = clock
        self.monotonic = monotonic
        self.missed_intervals = missed_intervals
        self.expire_after = expire_after
        self.stopped_expire_after = stopped_expire_after
        self.max_hosts = max_hosts
        self._lock = threading.Lock()
        self._hosts: Dict[str, HostEntry] = {}
        self._history: Dict[str, Deque[Tuple[float, str]]] = {}
        self._rejections: Dict[str, Tuple[float, str, str]] = {}
        self._seq = itertools.count(1)

    def put(self, report: Report, received_at: Optional[float] = None, *, min_interval: float = 0.0) -> HostEntry:
        """Store `report` as its host's latest; raise StoreFull, HostOwned or TooFrequent (changing nothing).

        One locked step: the monotonic time and the sequence number are taken under the lock, so
        entries of one host are ordered the same way by `seen`, by `seq` and by the store itself.
        """
        received_at = self.clock() if received_at is None else received_at
        with self._lock:
            seen = self.monotonic()
            previous = self._live_entry(report.host, seen)
            exempt_at = self._admit(report, previous, seen, min_interval)
            if previous is None and len(self._hosts) >= self.max_hosts:
                raise StoreFull(f"the collector holds its maximum of {self.max_hosts} hosts")
            entry = HostEntry(report.host, report, received_at, seen,
                              cpu_used_ratio(previous.report if previous else None, report), exempt_at,
                              seq=next(self._seq))
            self._note_change(previous, entry)
            self._hosts[report.host] = entry
        return entry

    def _live_entry(self, host: str, now: float) -> Optional[HostEntry]:
        """The host's entry unless it has expired (then it is dropped now, not at the next sweep:
        an expired host has no owner). Called with the lock held."""
        entry = self._hosts.get(host)
        if entry is not None and self.expired(entry, now):
            self._drop(host)
            return None
        return entry

    @staticmethod
    def _admit(report: Report, previous: Optional[HostEntry], seen: float, min_interval: float) -> Optional[float]:
        """Raise if `report` may not replace `previous`; the new entry's `exempt_at` otherwise."""
        if previous is None:
            return None
        if previous.site != report.site:
            raise HostOwned(report.host, previous.site)
        elapsed = seen - previous.seen
        if min_interval <= 0 or elapsed >= min_interval or previous.restored:
            return previous.exempt_at
        # A stop right after a report, or a start right after a stop, may come sooner: once per interval,
        # so that alternating goodbyes cannot get around the limit.
        if report.goodbye != previous.report.goodbye and (
                previous.exempt_at is None or seen - previous.exempt_at >= min_interval):
            return seen
        raise TooFrequent(report.host, elapsed, min_interval)

    def owner(self, host: str) -> Optional[str]:
        """The site that owns `host`, or None when no site does."""
        with self._lock:
            entry = self._live_entry(host, self.monotonic())
        return None if entry is None else entry.site

    def release(self, host: str) -> bool:
        """Forget `host` and its owner, so that another site may report it; False when unknown."""
        with self._lock:
            if self._live_entry(host, self.monotonic()) is None:
                return False
            self._drop(host)
        return True

    def _drop(self, host: str) -> None:
        """Forget everything about `host`: a new owner starts with a clean slate."""
        del self._hosts[host]
        self._history.pop(host, None)
        self._rejections.pop(host, None)

    def _note_change(self, previous: Optional[HostEntry], entry: HostEntry) -> None:
        """Record state changes for the status page: derived states change between reports too."""
        history = self._history.get(entry.host)
        if history is None:
            history = self._history[entry.host] = deque(maxlen=HISTORY_LENGTH)
        new = self.liveness(entry, entry.seen).state
        if previous is None:
            if not history or history[-1][1] != new:
                history.append((entry.received_at, new))
            return
        before = self.liveness(previous, entry.seen).state
        if before == STALE:
            went_stale = entry.received_at - (entry.seen - self._stale_at(previous))
            if not history or history[-1][1] != STALE:
                history.append((went_stale, STALE))
        if not history or history[-1][1] != new:
            history.append((entry.received_at, new))

    def _stale_at(self, entry: HostEntry) -> float:
        return entry.seen + self.missed_intervals * entry.interval

    def history(self, host: str) -> List[Tuple[float, str]]:
        """The host's last state changes, oldest first (wall-clock times)."""
        with self._lock:
            entry = self._hosts.get(host)
            changes = list(self._history.get(host, ()))
        if entry is not None:
            live = self.liveness(entry).state
            if live == STALE and (not changes or changes[-1][1] != STALE):
                changes.append((entry.received_at + self.missed_intervals * entry.interval, STALE))
        return changes

    def note_rejection(self, host: str, site: Optional[str], reason: str, message: str,
                       when: Optional[float] = None) -> bool:
        """Remember why a report claiming `host` for `site` was refused, unless another site owns
        `host` (None: the claim is unauthenticated, so only a host nobody owns gets the note)."""
        when = self.clock() if when is None else when
        with self._lock:
            entry = self._live_entry(host, self.monotonic())
            if entry is not None and (site is None or entry.site != site):
                return False
            self._rejections.pop(host, None)
            self._rejections[host] = (when, reason, message)
            while len(self._rejections) > MAX_REJECTIONS_KEPT:
                del self._rejections[next(iter(self._rejections))]
        return True

    def last_rejection(self, host: str) -> Optional[Tuple[float, str, str]]:
        with self._lock:
            return self._rejections.get(host)

    def restore(self, reports: List[Tuple[float, Report]]) -> int:
        """Put back reports read from a snapshot (at start, before serving), each with the wall-clock
        time it arrived. A time ahead of this clock (the clock was stepped back) counts as now."""
        wall, mono = self.clock(), self.monotonic()
        restored = 0
        for received_at, report in reports:
            received_at = min(received_at, wall)
            with self._lock:
                entry = HostEntry(report.host, report, received_at, mono - (wall - received_at), restored=True,
                                  seq=next(self._seq))
                current = self._hosts.get(entry.host)
                if current is None or current.received_at < entry.received_at:
                    self._hosts[entry.host] = entry
                    restored += current is None
        return restored

    def get(self, host: str) -> Optional[HostEntry]:
        with self._lock:
            return self._hosts.get(host)

    def entries(self) -> List[HostEntry]:
        """All entries, in the order their hosts first reported (the exposition's order too)."""
        with self._lock:
            return list(self._hosts.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._hosts)

    def liveness(self, entry: HostEntry, now: Optional[float] = None) -> Liveness:
        now = self.monotonic() if now is None else now
        report = entry.report
        if report.goodbye:
            return Liveness(False, STOPPED)
        fresh = now - entry.seen <= self.missed_intervals * entry.interval
        if report.capacity is not None and report.capacity.maintenance:
            return Liveness(fresh, MAINTENANCE)
        return Liveness(fresh, UP if fresh else STALE)

    def age(self, entry: HostEntry, now: Optional[float] = None) -> float:
        """Seconds since the host's last report, on the monotonic clock."""
        return max(0.0, (self.monotonic() if now is None else now) - entry.seen)

    def expired(self, entry: HostEntry, now: Optional[float] = None) -> bool:
        limit = self.stopped_expire_after if entry.report.goodbye else self.expire_after
        return self.age(entry, now) > limit

    def expire(self, now: Optional[float] = None) -> List[str]:
        """Drop hosts silent past their expiry; return their names."""
        now = self.monotonic() if now is None else now
        with self._lock:
            gone = [h for h, e in self._hosts.items() if self.expired(e, now)]
            for host in gone:
                self._drop(host)
        return gone

    def counts_by_state(self, now: Optional[float] = None) -> Dict[str, int]:
        now = self.monotonic() if now is None else now
        counts = dict.fromkeys(HOST_STATES, 0)
        for entry in self.entries():
            counts[self.liveness(entry, now).state] += 1
        return counts

    def live_view(self, now: Optional[float] = None) -> List[Tuple[HostEntry, Liveness]]:
        """Entries still within their expiry, with their liveness, for one scrape."""
        now = self.monotonic() if now is None else now
        return [(e, self.liveness(e, now)) for e in self.entries() if not self.expired(e, now)]
