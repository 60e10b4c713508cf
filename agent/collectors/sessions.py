"""User sessions: counts by state and protocol, lifecycle counters, a capped list, process use.

The source is chosen once: `sessions.source` in the config, or with "auto"
the WTS API on Windows, logind where <run_root>/systemd/sessions can be read,
else utmp. Tests build the collector from a ready source and process grouper
(its constructor), or from a `Context` with a fake WTS API or fixture roots.
docs/sessions.md explains every mapping; docs/report-format.md the fields.

Sample reading::

    {"source": "windows", "counts": {"active": {"ica": 9}, "disconnected": {"ica": 3}},
     "users": 12, "total": 12, "truncated": false, "oldest_disconnect_time_seconds": 1764545400.0,
     "logons_total": 41, "logoffs_total": 25, "disconnects_total": 11, "reconnects_total": 6,
     "list": [{"id": "2", "logon_time_seconds": 1764540900.0, "state": "active", "protocol": "ica",
               "user": "u-4f1c2a9e0b7d", "idle_seconds": 12.0}, ...],
     "processes": {"user": {...}, "system": {...}},
     "apps": [{"app": "outlook", "cpu_seconds_total": 5120.25, "memory_bytes": 2147483648, "sessions": 11},
              ..., {"app": "other", ...}]}
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from agent.collectors import Collector, Context, register
from agent.config import SessionsSection
from agent.sessions import logind
from agent.sessions.lifecycle import LifecycleTracker
from agent.sessions.model import Session, SessionSource
from agent.sessions.privacy import Pseudonymizer, normalize
from agent.sessions.processes import (
    AppTable,
    LinuxLocator,
    ProcessGrouper,
    ProcessSnapshot,
    ProcReader,
    no_locator,
    top_users,
    windows_locator,
)
from agent.sessions.states import DISCONNECTED, OTHER, effective_state
from agent.sessions.utmp import UtmpSource
from agent.sessions.windows import WindowsSource, WtsApi
from contract.report import (
    DEFAULT_LIMITS,
    SESSION_PROTOCOLS,
    SESSION_STATES,
    AppUsage,
    ProcessGroup,
    SessionEntry,
    Sessions,
    UserUsage,
    fits_label,
    session_counts,
)

log = logging.getLogger(__name__)

MAX_TIMESTAMP = 1e11  # the contract's bound on timestamps
MAX_IDLE = 1e9
MAX_ID_LENGTH = 64


def choose_source(ctx: Context) -> SessionSource:
    """The session source for `sessions.source` ("auto", "windows", "logind", "utmp") on `ctx.os`."""
    setting = ctx.config.sessions.source
    windows = ctx.os == "windows"
    paths = ctx.config.agent
    if setting == "windows" or (setting == "auto" and windows):
        if not windows and ctx.wts_api is None:
            raise RuntimeError("sessions.source = \"windows\" needs Windows")
        return WindowsSource(ctx.wts_api or WtsApi())
    root = os.path.join(paths.run_root, "systemd", "sessions")
    booted = os.path.join(paths.run_root, "systemd", "system")
    if setting == "logind" or (setting == "auto" and logind.usable(root, booted)):
        return logind.LogindSource(root, paths.dev_root, ctx.clock)
    return UtmpSource(ctx.psutil, paths.dev_root, ctx.clock)


def process_grouper(ctx: Context, source: SessionSource) -> ProcessGrouper:
    """Process totals for `source`'s sessions: on Linux read straight from `proc_root` (the fast
    path), elsewhere through psutil; placed by session where the source allows it."""
    if isinstance(source, WindowsSource):
        return ProcessGrouper(ctx.psutil, windows=True, locate=windows_locator(source.api), clock=ctx.clock)
    proc_root = ctx.config.agent.proc_root
    locate = LinuxLocator(proc_root) if isinstance(source, logind.LogindSource) else no_locator
    reader = ProcReader(proc_root) if ctx.os == "linux" else None
    return ProcessGrouper(ctx.psutil, windows=False, locate=locate, clock=ctx.clock, reader=reader)


@register("sessions")
class SessionsCollector(Collector):
    """Sessions of `source` under the `[sessions]` settings; process totals from `grouper`
    (None: none). `errors` are what reading processes may raise without failing the reading."""

    def __init__(self, source: SessionSource, settings: SessionsSection, *, site: str,
                 clock: Callable[[], float] = time.time, grouper: Optional[ProcessGrouper] = None,
                 errors: Tuple[type, ...] = (OSError,)):
        super().__init__(None)
        self.source = source
        self.settings = settings
        self.clock = clock
        self.grouper = grouper
        self.errors = errors
        self.tracker = LifecycleTracker()
        self.names = Pseudonymizer(settings.pseudonym_secret, site, settings.pseudonymize)
        self._processes_failing = False
        self._denied_logged = False
        self.apps = (AppTable(settings.apps, settings.top_apps, DEFAULT_LIMITS.max_apps)
                     if settings.apps or settings.top_apps > 0 else None)

    @classmethod
    def from_context(cls, ctx: Context) -> "SessionsCollector":
        source = choose_source(ctx)
        errors = tuple(e for e in (getattr(ctx.psutil, "Error", None), OSError) if isinstance(e, type))
        return cls(source, ctx.config.sessions, site=ctx.config.agent.site, clock=ctx.clock,
                   grouper=process_grouper(ctx, source), errors=errors)

    def collect(self) -> Sessions:
        now = self.clock()
        sessions = self.source.snapshot()
        self.tracker.update(sessions, now)
        cfg = self.settings
        counts: Dict[Tuple[str, str], int] = {}
        users = set()
        oldest: Optional[float] = None
        states = {}
        for s in sessions:
            state = effective_state(s.state, s.idle_seconds, cfg.idle_after)
            state = state if state in SESSION_STATES else OTHER
            protocol = s.protocol if s.protocol in SESSION_PROTOCOLS else OTHER
            states[id(s)] = (state, protocol)
            counts[state, protocol] = counts.get((state, protocol), 0) + 1
            if s.user:
                users.add(normalize(s.user))
            if state == DISCONNECTED:
                since = s.disconnect_time or self.tracker.disconnected_since(s)
                if since is not None and (oldest is None or since < oldest):
                    oldest = since
        cap = max(0, min(int(cfg.max_listed), DEFAULT_LIMITS.max_sessions_listed))  # never past the contract
        listed = sorted(sessions, key=_listing_order)[:cap]
        entries = (self._entry(s, *states[id(s)]) for s in listed)
        processes = self._processes(sessions)
        top = None
        if processes is not None and cfg.per_user_top > 0 and processes.wall_seconds:
            top = tuple(UserUsage(**u) for u in top_users(processes, cfg.per_user_top, self.names.label,
                                                         DEFAULT_LIMITS.max_top_users))
        return Sessions(
            source=self.source.name,
            counts=session_counts(counts),
            users=len(users),
            total=len(sessions),
            truncated=len(sessions) > cap,
            oldest_disconnect_time_seconds=_timestamp(oldest),
            **self.tracker.counters(),
            entries=tuple(e for e in entries if e is not None),
            user_processes=None if processes is None else _group(processes, "user"),
            system_processes=None if processes is None else _group(processes, "system"),
            top_users=top,
            apps=None if processes is None or self.apps is None or self.grouper is None else tuple(
                AppUsage(**a) for a in self.apps.entries(processes, self.grouper.app_cpu_totals())),
        )

    def _entry(self, s: Session, state: str, protocol: str) -> Optional[SessionEntry]:
        if not fits_label(s.id, MAX_ID_LENGTH):
            return None  # still counted; an id the contract refuses would cost the whole report
        idle = None if s.idle_seconds is None else round(min(max(s.idle_seconds, 0.0), MAX_IDLE), 1)
        return SessionEntry(id=s.id, logon_time_seconds=_timestamp(s.logon_time), state=state, protocol=protocol,
                            user=self.names.label(s.user), idle_seconds=idle)

    def _processes(self, sessions: List[Session]) -> Optional[ProcessSnapshot]:
        if self.grouper is None:
            return None
        try:
            snapshot = self.grouper.snapshot(sessions)
        except self.errors as e:  # sessions are worth reporting without process totals
            if not self._processes_failing:
                log.warning("cannot group processes by session, reporting sessions without them: %s", e)
                self._processes_failing = True
            return None
        if self._processes_failing:
            log.warning("grouping processes by session works again")
            self._processes_failing = False
        if snapshot.access_denied and not self._denied_logged:
            self._denied_logged = True  # once: the same processes stay unreadable
            log.warning("%d process(es) could not be read (access denied): their CPU and memory are not "
                        "counted; run the agent as root or LocalSystem", snapshot.access_denied)
        return snapshot


def _group(snapshot: ProcessSnapshot, name: str) -> ProcessGroup:
    g = snapshot.groups[name]
    return ProcessGroup(cpu_seconds_total=round(g.cpu_seconds_total, 3), memory_bytes=float(g.memory_bytes),
                        processes=g.processes)


def _listing_order(s: Session) -> Any:
    """Oldest logon first, sessions without a logon time last: a stable order for a capped list."""
    return (s.logon_time is None, s.logon_time or 0.0, s.id)


def _timestamp(value: Optional[float]) -> Optional[float]:
    return value if value is not None and 0 <= value <= MAX_TIMESTAMP else None
