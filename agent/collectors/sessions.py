"""User sessions: counts by state and protocol, lifecycle counters, a capped list, process use.

The source is chosen once: `sessions.source` in the config, or with "auto"
the WTS API on Windows, logind where /run/systemd/sessions can be read, else
utmp. Tests inject a ready source (`ctx.extra["session_source"]`), a fake WTS
API (`"wts_api"`), or fixture roots (`"logind_root"`, `"dev_root"`, `"proc_root"`).
docs/sessions.md explains every mapping; docs/report-format.md the fields.

Sample reading::

    {"source": "windows", "counts": {"active": {"ica": 9}, "disconnected": {"ica": 3}},
     "users": 12, "total": 12, "truncated": false, "oldest_disconnect_time_seconds": 1764545400.0,
     "logons_total": 41, "logoffs_total": 25, "disconnects_total": 11, "reconnects_total": 6,
     "list": [{"id": "2", "logon_time_seconds": 1764540900.0, "state": "active", "protocol": "ica",
               "user": "u-4f1c2a9e0b7d", "idle_seconds": 12.0}, ...],
     "processes": {"user": {...}, "system": {...}}}
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

from agent.collectors import Collector, Context, register
from agent.collectors._common import fits_label, os_name
from agent.sessions import logind
from agent.sessions.lifecycle import LifecycleTracker
from agent.sessions.model import Session, SessionSource
from agent.sessions.privacy import Pseudonymizer, normalize
from agent.sessions.processes import (
    LinuxLocator,
    ProcessGrouper,
    ProcessSnapshot,
    ProcReader,
    no_locator,
    top_users,
    windows_locator,
)
from agent.sessions.settings import SESSIONS_DEFAULTS, section, site
from agent.sessions.states import DISCONNECTED, OTHER, effective_state
from agent.sessions.utmp import UtmpSource
from agent.sessions.windows import WindowsSource, WtsApi
from contract.report import DEFAULT_LIMITS, SESSION_PROTOCOLS, SESSION_STATES

log = logging.getLogger(__name__)

MAX_TIMESTAMP = 1e11  # the contract's bound on timestamps
MAX_IDLE = 1e9
MAX_ID_LENGTH = 64


def choose_source(ctx: Context, setting: str) -> SessionSource:
    """The session source for `setting` ("auto", "windows", "logind", "utmp") on this platform."""
    extra = ctx.extra
    windows = os_name(ctx) == "windows"
    dev_root = extra.get("dev_root", logind.DEFAULT_DEV)
    if setting == "windows" or (setting == "auto" and windows):
        if not windows and "wts_api" not in extra:
            raise RuntimeError("sessions.source = \"windows\" needs Windows")
        return WindowsSource(extra.get("wts_api") or WtsApi())
    root = extra.get("logind_root", logind.DEFAULT_ROOT)
    booted = extra.get("systemd_booted", logind.DEFAULT_BOOTED)
    if setting == "logind" or (setting == "auto" and logind.usable(root, booted)):
        return logind.LogindSource(root, dev_root, ctx.clock)
    return UtmpSource(ctx.psutil, dev_root, ctx.clock)


@register("sessions")
class SessionsCollector(Collector):
    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.settings = section(ctx.config, "sessions", SESSIONS_DEFAULTS)
        self.source: SessionSource = ctx.extra.get("session_source") or choose_source(ctx, self.settings.source)
        self.tracker = LifecycleTracker()
        self.names = Pseudonymizer(self.settings.pseudonym_secret, site(ctx.config), self.settings.pseudonymize)
        self.grouper = self._grouper()
        self._processes_failing = False

    def _grouper(self) -> Optional[ProcessGrouper]:
        ps = self.ctx.psutil
        if ps is None or not hasattr(ps, "process_iter"):
            return None
        if isinstance(self.source, WindowsSource):
            return ProcessGrouper(ps, windows=True, locate=windows_locator(self.source.api), clock=self.ctx.clock)
        locate = LinuxLocator(self.ctx.extra.get("proc_root", "/proc")) \
            if isinstance(self.source, logind.LogindSource) else no_locator
        reader = None
        if "proc_root" not in self.ctx.extra and getattr(ps, "LINUX", False) and os.path.exists("/proc/self/stat"):
            reader = ProcReader("/proc")  # the real host: the fast path (tests with fakes keep psutil)
        return ProcessGrouper(ps, windows=False, locate=locate, clock=self.ctx.clock, reader=reader)

    def collect(self) -> Dict[str, Any]:
        now = self.ctx.clock()
        sessions = self.source.snapshot()
        self.tracker.update(sessions, now)
        cfg = self.settings
        counts: Dict[str, Dict[str, int]] = {}
        users = set()
        oldest: Optional[float] = None
        states = {}
        for s in sessions:
            state = effective_state(s.state, s.idle_seconds, cfg.idle_after)
            state = state if state in SESSION_STATES else OTHER
            protocol = s.protocol if s.protocol in SESSION_PROTOCOLS else OTHER
            states[id(s)] = (state, protocol)
            by_protocol = counts.setdefault(state, {})
            by_protocol[protocol] = by_protocol.get(protocol, 0) + 1
            if s.user:
                users.add(normalize(s.user))
            if state == DISCONNECTED:
                since = s.disconnect_time or self.tracker.disconnected_since(s)
                if since is not None and (oldest is None or since < oldest):
                    oldest = since
        cap = max(0, min(int(cfg.max_listed), DEFAULT_LIMITS.max_sessions_listed))  # never past the contract
        listed = sorted(sessions, key=_listing_order)[:cap]
        reading: Dict[str, Any] = {
            "source": self.source.name,
            "counts": counts,
            "users": len(users),
            "total": len(sessions),
            "truncated": len(sessions) > cap,
            "oldest_disconnect_time_seconds": _timestamp(oldest),
            **self.tracker.counters(),
            "list": [row for row in (self._row(s, *states[id(s)]) for s in listed) if row is not None],
        }
        processes = self._processes(sessions)
        if processes is not None:
            reading["processes"] = processes.as_reading()
            if cfg.per_user_top > 0 and processes.wall_seconds:
                reading["top_users"] = top_users(processes, cfg.per_user_top, self.names.label,
                                                 DEFAULT_LIMITS.max_top_users)
        return reading

    def _row(self, s: Session, state: str, protocol: str) -> Optional[Dict[str, Any]]:
        if not fits_label(s.id, MAX_ID_LENGTH):
            return None  # still counted; an id the contract refuses would cost the whole report
        idle = None if s.idle_seconds is None else round(min(max(s.idle_seconds, 0.0), MAX_IDLE), 1)
        return {"id": s.id, "logon_time_seconds": _timestamp(s.logon_time), "state": state, "protocol": protocol,
                "user": self.names.label(s.user), "idle_seconds": idle}

    def _processes(self, sessions: List[Session]) -> Optional[ProcessSnapshot]:
        if self.grouper is None:
            return None
        errors = tuple(e for e in (getattr(self.ctx.psutil, "Error", None), OSError) if isinstance(e, type))
        try:
            snapshot = self.grouper.snapshot(sessions)
        except errors as e:  # sessions are worth reporting without process totals
            if not self._processes_failing:
                log.warning("cannot group processes by session, reporting sessions without them: %s", e)
                self._processes_failing = True
            return None
        if self._processes_failing:
            log.warning("grouping processes by session works again")
            self._processes_failing = False
        return snapshot


def _listing_order(s: Session) -> Any:
    """Oldest logon first, sessions without a logon time last: a stable order for a capped list."""
    return (s.logon_time is None, s.logon_time or 0.0, s.id)


def _timestamp(value: Optional[float]) -> Optional[float]:
    return value if value is not None and 0 <= value <= MAX_TIMESTAMP else None
