"""The host store: the latest valid report of every host and its liveness.

Contract (relied on by the HTTP edge, the snapshot writer and the exposition):

- Every method may be called from any thread at any time. `put` and `expire`
  are atomic: a reader sees a host either before or after a report, never half.
- Entries are immutable. A new report replaces the host's entry as a whole, so
  readers take a list of entries under the lock and render it outside the lock;
  a scrape never blocks ingest for longer than a list copy. The pre-rendered
  exposition (`Columns`) changes under the same lock as the entries it mirrors.
- Only valid reports reach the store: validation happens at the edge. `put`
  refuses a new host past `max_hosts` (known hosts always get through) and
  changes nothing when it refuses.
- Liveness is derived from the clock at read time, never stored: a host is
  `up` until it misses `missed_intervals` of its own intervals, `stale` after,
  `stopped` once it said goodbye, `maintenance` while its last report carried
  the maintenance flag. Hosts silent past `expire_after` (`stopped_expire_after`
  after a goodbye) are dropped by `expire`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, List, Optional, Tuple

from agent.report import Report
from collector.exposition import HOST_STATES, LIVE_INDEX, Columns, Rendered, render_live, render_report

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


@dataclass(frozen=True)
class HostEntry:
    host: str
    report: Report
    received_at: float
    rendered: Rendered
    raw: bytes  # the report as received (decompressed JSON), for snapshots and the status page
    cpu_used_ratio: Optional[float] = None  # busy share of all CPUs since the previous report

    @property
    def interval(self) -> float:
        return self.report.agent.interval_seconds


@dataclass(frozen=True)
class Liveness:
    up: bool
    state: str


class HostStore:
    def __init__(self, *, clock: Callable[[], float] = time.time, missed_intervals: int = 3,
                 expire_after: float = 86400.0, stopped_expire_after: float = 3600.0,
                 max_hosts: int = 100_000):
        self.clock = clock
        self.missed_intervals = missed_intervals
        self.expire_after = expire_after
        self.stopped_expire_after = stopped_expire_after
        self.max_hosts = max_hosts
        self._lock = threading.Lock()
        self._hosts: Dict[str, HostEntry] = {}
        self._columns = Columns()
        self._live: Dict[Tuple[str, bool, str], Tuple[bytes, bytes]] = {}
        self._history: Dict[str, Deque[Tuple[float, str]]] = {}
        self._rejections: Dict[str, Tuple[float, str, str]] = {}

    def put(self, report: Report, raw: bytes, received_at: Optional[float] = None) -> HostEntry:
        """Store `report` as its host's latest; raise StoreFull for a new host past the cap."""
        received_at = self.clock() if received_at is None else received_at
        with self._lock:
            previous = self._hosts.get(report.host)
        entry = HostEntry(report.host, report, received_at, render_report(report, received_at), raw,
                          cpu_used_ratio(previous.report if previous else None, report))
        with self._lock:
            if report.host not in self._hosts and len(self._hosts) >= self.max_hosts:
                raise StoreFull(f"the collector holds its maximum of {self.max_hosts} hosts")
            self._note_change(self._hosts.get(report.host), entry)
            self._hosts[report.host] = entry
            self._columns.set(report.host, entry.rendered)
        return entry

    def _note_change(self, previous: Optional[HostEntry], entry: HostEntry) -> None:
        """Record state changes for the status page: derived states change between reports too."""
        history = self._history.get(entry.host)
        if history is None:
            history = self._history[entry.host] = deque(maxlen=HISTORY_LENGTH)
        new = self.liveness(entry, entry.received_at).state
        if previous is None:
            if not history or history[-1][1] != new:
                history.append((entry.received_at, new))
            return
        before = self.liveness(previous, entry.received_at).state
        if before == "stale":
            went_stale = previous.received_at + self.missed_intervals * previous.interval
            if not history or history[-1][1] != "stale":
                history.append((went_stale, "stale"))
        if not history or history[-1][1] != new:
            history.append((entry.received_at, new))

    def history(self, host: str) -> List[Tuple[float, str]]:
        """The host's last state changes, oldest first."""
        with self._lock:
            entry = self._hosts.get(host)
            changes = list(self._history.get(host, ()))
        if entry is not None:
            now = self.clock()
            live = self.liveness(entry, now).state
            if live == "stale" and (not changes or changes[-1][1] != "stale"):
                changes.append((entry.received_at + self.missed_intervals * entry.interval, "stale"))
        return changes

    def note_rejection(self, host: str, reason: str, message: str, when: Optional[float] = None) -> None:
        when = self.clock() if when is None else when
        with self._lock:
            self._rejections.pop(host, None)
            self._rejections[host] = (when, reason, message)
            while len(self._rejections) > MAX_REJECTIONS_KEPT:
                del self._rejections[next(iter(self._rejections))]

    def last_rejection(self, host: str) -> Optional[Tuple[float, str, str]]:
        with self._lock:
            return self._rejections.get(host)

    def restore(self, entries: List[HostEntry]) -> None:
        """Put back entries read from a snapshot (at start, before serving)."""
        with self._lock:
            for entry in entries:
                current = self._hosts.get(entry.host)
                if current is None or current.received_at < entry.received_at:
                    self._hosts[entry.host] = entry
                    self._columns.set(entry.host, entry.rendered)

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
        now = self.clock() if now is None else now
        report = entry.report
        if report.goodbye:
            return Liveness(False, "stopped")
        fresh = now - entry.received_at <= self.missed_intervals * entry.interval
        if report.capacity is not None and report.capacity.maintenance:
            return Liveness(fresh, "maintenance")
        return Liveness(fresh, "up" if fresh else "stale")

    def expired(self, entry: HostEntry, now: float) -> bool:
        limit = self.stopped_expire_after if entry.report.goodbye else self.expire_after
        return now - entry.received_at > limit

    def expire(self, now: Optional[float] = None) -> List[str]:
        """Drop hosts silent past their expiry; return their names."""
        now = self.clock() if now is None else now
        with self._lock:
            gone = [h for h, e in self._hosts.items() if self.expired(e, now)]
            for host in gone:
                del self._hosts[host]
                self._columns.remove(host)
                self._history.pop(host, None)
        return gone

    def counts_by_state(self, now: Optional[float] = None) -> Dict[str, int]:
        now = self.clock() if now is None else now
        counts = dict.fromkeys(HOST_STATES, 0)
        for entry in self.entries():
            counts[self.liveness(entry, now).state] += 1
        return counts

    def exposition(self, now: Optional[float] = None) -> List[List[bytes]]:
        """Columns of chunks for one scrape, live families included; expired hosts are dropped first."""
        now = self.clock() if now is None else now
        self.expire(now)
        with self._lock:
            columns = self._columns.copy()
            entries = list(self._hosts.values())
        cache = self._live
        ups, states = [], []
        for entry in entries:
            live = self.liveness(entry, now)
            key = (entry.rendered.labels, live.up, live.state)
            chunks = cache.get(key)
            if chunks is None:
                chunks = cache[key] = render_live(entry.rendered.labels, live.up, live.state)
            ups.append(chunks[0])
            states.append(chunks[1])
        if len(cache) > 4 * len(entries) + 1024:
            cache.clear()  # labels of hosts long gone; rebuilt on the next scrape
        columns[LIVE_INDEX[0]], columns[LIVE_INDEX[1]] = ups, states
        return columns

    def live_view(self, now: Optional[float] = None) -> List[Tuple[HostEntry, Liveness]]:
        """Entries still within their expiry, with their liveness, for one scrape."""
        now = self.clock() if now is None else now
        return [(e, self.liveness(e, now)) for e in self.entries() if not self.expired(e, now)]
