"""The store's hosts as exposition columns: rendered once per report, joined per scrape.

The store owns the data and liveness; this module owns what is rendered from
them, under a lock of its own, so neither waits for the other longer than a
dictionary copy.

- `stored(entry)` renders a new entry right after the store took it, so the
  cost of rendering falls on ingest, spread over the interval, not on scrapes.
- `columns(now)` makes one scrape's columns: it drops expired hosts from the
  store, renders any entry it has not seen (a restored snapshot, a report that
  raced a scrape), forgets hosts the store no longer holds, and adds the
  clock-dependent families (`vdi_agent_up`, `vdi_host_state`) from liveness.
  A host that is not fresh (stale, or stopped after its goodbye) keeps only
  the rows kept for that state (`Family.kept`: its liveness, and a stopped
  host's slots): its readings are history, and a copy left on a replica the
  host failed over from must not be summed with the fresh one. Its next
  report serves them again.
  `scrape(now)` does the same and also returns the hosts counted by state from
  that one pass, for `vdi_collector_hosts`: liveness is computed once a scrape.
  What it serves therefore always matches the store, whatever order calls
  come in; `stored` is only the fast path.
- Entries are compared by identity: the store replaces an entry whole on every
  report, so an entry it still holds never needs rendering twice.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from collector.exposition import LIVE_INDEX, Columns, Rendered, render_live, render_report
from collector.store import HostEntry, HostStore
from contract.report import HOST_STATES, STALE, STOPPED


@dataclass(frozen=True)
class Scrape:
    columns: List[List[bytes]]  # chunks by family (FAMILIES order), then by host
    hosts_by_state: Dict[str, int]  # every state of HOST_STATES, 0 included


class Renderer:
    def __init__(self, store: HostStore):
        self.store = store
        self._lock = threading.Lock()
        self._rendered: Dict[str, Tuple[HostEntry, Rendered]] = {}
        self._columns = Columns()
        self._live: Dict[Tuple[str, bool, str], Tuple[bytes, bytes]] = {}
        self._silent: Dict[str, str] = {}  # host -> the state it was silenced in (STALE or STOPPED)

    def stored(self, entry: HostEntry) -> None:
        """Render an entry the store just took (outside any lock), then keep it unless a newer one won."""
        rendered = render_report(entry.report, entry.received_at)
        with self._lock:
            self._keep(entry, rendered)

    def _keep(self, entry: HostEntry, rendered: Rendered) -> None:
        current = self._rendered.get(entry.host)
        if current is not None and current[0].seq > entry.seq:
            return
        self._rendered[entry.host] = (entry, rendered)
        self._columns.set(entry.host, rendered)
        self._silent.pop(entry.host, None)

    def columns(self, now: Optional[float] = None) -> List[List[bytes]]:
        """Columns of chunks for one scrape, live families included; expired hosts are dropped first."""
        return self.scrape(now).columns

    def scrape(self, now: Optional[float] = None) -> Scrape:
        """One scrape's columns, and its hosts counted by state from the same liveness."""
        now = self.store.monotonic() if now is None else now
        self.store.expire(now)
        entries = self.store.entries()
        with self._lock:
            for entry in entries:
                current = self._rendered.get(entry.host)
                if current is None or current[0] is not entry:
                    self._keep(entry, render_report(entry.report, entry.received_at))
            if len(self._rendered) != len(entries):
                held = {e.host for e in entries}
                for host in [h for h in self._rendered if h not in held]:
                    del self._rendered[host]
                    self._columns.remove(host)
                    self._silent.pop(host, None)
            # Judged by the entry served: a report stored since `entries` was copied is newer than its entry.
            lives = [self.store.liveness(self._rendered[entry.host][0], now) for entry in entries]
            for entry, live in zip(entries, lives):
                silent = None if live.up else STOPPED if live.state == STOPPED else STALE
                if silent == self._silent.get(entry.host):
                    continue
                self._columns.set(entry.host, self._rendered[entry.host][1])
                if silent is None:  # fresh again without a new entry: a clock step
                    del self._silent[entry.host]
                else:
                    self._columns.silence(entry.host, silent)
                    self._silent[entry.host] = silent
            columns = self._columns.copy()
            ups, states = [], []
            counts = dict.fromkeys(HOST_STATES, 0)
            for entry, live in zip(entries, lives):
                counts[live.state] += 1
                labels = self._rendered[entry.host][1].labels
                key = (labels, live.up, live.state)
                chunks = self._live.get(key)
                if chunks is None:
                    chunks = self._live[key] = render_live(labels, live.up, live.state)
                ups.append(chunks[0])
                states.append(chunks[1])
            if len(self._live) > 4 * len(entries) + 1024:
                self._live.clear()  # labels of hosts long gone; rebuilt on the next scrape
        columns[LIVE_INDEX[0]], columns[LIVE_INDEX[1]] = ups, states
        return Scrape(columns, counts)
