"""Logon duration with its phases, and failed logons, from the host's own Windows event logs.

Each interval it reads what is new since its bookmarks in four channels (only
the event ids it uses, at most `cap` events a channel: the rest is passed over
and counted), puts each session's events together into one logon
(agent.logons.matching) and keeps counters since the agent started
(agent.logons.totals). The bookmarks are saved before the reading is returned:
a restart neither reads an event twice nor counts the history from before the
agent's first start (a first start begins at each channel's newest event).
Logons in flight across a restart are lost, not guessed.

Registered on Windows only: Linux has no such events (docs/logons.md).

Sample reading (abridged)::

    {"duration_buckets": [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2], "duration_sum_seconds": 121.0,
     "duration_count": 2, "phases": {"profile": {"sum_seconds": 103.5, "count": 2}, ...},
     "phases_missing": {"profile": 0, ...}, "failures": {"bad_password": 0, ...}, "events_skipped": 0}
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, List, Optional, Tuple

from agent.collectors import Collector, Context, os_name, register
from agent.logons.eventlog import BookmarkStore, EventLogReader, default_bookmark_path, xpath
from agent.logons.events import GROUP_POLICY_CHANNEL, LSM_CHANNEL, PROFILE_CHANNEL, SECURITY_CHANNEL, Event, parse_event
from agent.logons.matching import (
    LogonMatcher,
    counts_as_failure,
    counts_as_success,
    disconnect_reason,
    failure_reason,
)
from agent.logons.totals import LogonTotals
from contract.report import Logons

log = logging.getLogger(__name__)

# The channels and the event ids read from each (docs/logons.md: what each means, where it is documented).
CHANNELS: Tuple[Tuple[str, Tuple[int, ...]], ...] = (
    (PROFILE_CHANNEL, (1, 2)),
    (LSM_CHANNEL, (21, 22, 40)),
    (GROUP_POLICY_CHANNEL, (4001, 8001)),
    (SECURITY_CHANNEL, (4624, 4625)),
)
DEFAULT_CAP = 2000  # events a channel per interval: a morning storm of 200 logons is about 1200 events in all


@register("logons", default_enabled=os_name() == "windows")
class LogonsCollector(Collector):
    def __init__(self, reader: EventLogReader, bookmarks: BookmarkStore, clock: Callable[[], float] = time.time,
                 cap: int = DEFAULT_CAP) -> None:
        super().__init__(None)
        self.reader = reader
        self.store = bookmarks
        self.clock = clock
        self.cap = cap
        self.matcher = LogonMatcher()
        self.totals = LogonTotals()
        self.unreadable = 0  # events of a wanted id that did not parse: a shape this code does not know
        self.failing: Dict[str, str] = {}  # channel -> its error, logged once when it starts and once when it ends
        self._bookmarks: Dict[str, str] = bookmarks.load()

    @classmethod
    def from_context(cls, ctx: Context) -> "LogonsCollector":
        if ctx.os != "windows":
            raise RuntimeError(f"logons are read from Windows event logs; this host runs {ctx.os}")
        from agent.logons.eventlog import Win32EventLogReader

        return cls(Win32EventLogReader(), BookmarkStore(default_bookmark_path()), ctx.clock)

    def collect(self) -> Logons:
        events: List[Event] = []
        bookmarks = dict(self._bookmarks)
        skipped = 0
        for channel, ids in CHANNELS:
            query = xpath(ids)
            try:
                if channel not in bookmarks:  # first sight: history before the agent is not counted
                    bookmarks[channel] = self.reader.newest(channel, query) or ""
                    xmls, passed = [], 0
                else:
                    xmls, bookmarks[channel], passed = self.reader.read(channel, query, bookmarks[channel] or None,
                                                                        self.cap)
            except Exception as err:  # noqa: BLE001 - one channel (not enabled, no right to Security) costs itself
                self._note(channel, f"{type(err).__name__}: {err}")
                continue
            self._note(channel, None)
            skipped += passed
            decode = getattr(self.reader, "decode", parse_event)  # values or XML, as the reader renders them
            for xml in xmls:
                event = decode(xml)
                if event is None:
                    self.unreadable += 1
                else:
                    events.append(event)
        if len(self.failing) == len(CHANNELS):
            raise RuntimeError("no event log channel can be read: " + "; ".join(sorted(set(self.failing.values()))))
        if bookmarks != self._bookmarks:
            self.store.save(bookmarks)  # first: if it fails, nothing is counted and the events are read again
            self._bookmarks = bookmarks
        self.totals.events_skipped += skipped
        for event in events:
            if event.kind == "logon_failure" and counts_as_failure(event):
                self.totals.add_failure(failure_reason(event.status, event.sub_status))
            elif event.kind == "logon_success" and counts_as_success(event):  # one per logon: docs/logons.md
                self.totals.add_success()
            elif event.kind == "disconnect_reason":
                reason = disconnect_reason(event.reason_code)
                if reason is not None:  # None: the session was logged off, which is not a disconnect
                    self.totals.add_disconnect(reason)
        for logon in self.matcher.add(events, now=self.clock()):
            self.totals.add_logon(logon)
        return self.totals.reading()

    def _note(self, channel: str, error: Optional[str]) -> None:
        if error is not None and channel not in self.failing:
            self.failing[channel] = error
            log.warning("logons: cannot read %s (%s): its events are missing until it can (logged again only when "
                        "it recovers)", channel, error)
        elif error is None and channel in self.failing:
            del self.failing[channel]
            log.warning("logons: %s can be read again", channel)

