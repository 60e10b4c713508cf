"""CPU and memory of processes inside user sessions ("user") and outside them ("system").

On a multi-session host the question is whether the users or the machine
(agents, scanners, updates) eat the CPU. Each process is placed in a session:

- Windows: WTSEnumerateProcessesExW, every process's session in one call at
  the start of each snapshot (it opens no process, so the protected per-session
  csrss.exe is placed too); ProcessIdToSessionId for a process that started
  since. Session 0 is system, any other session user (including the
  per-session csrss, winlogon and dwm: the cost of a session).
- Linux: the logind session of the process, from its cgroup (.../session-<id>.scope)
  or its audit session id (/proc/<pid>/sessionid = the session's AUDIT=);
  failing both, a process of a uid >= 1000 whose user has a session is user
  (systemd --user services, for instance); everything else is system.

`cpu_seconds_total` is a counter that never goes down: the grouper keeps each
process's CPU time keyed by (pid, create time) and adds what it used since the
previous snapshot, so a process that exits takes nothing away (its last
interval before exiting is lost, not subtracted). The first snapshot adds the
CPU time the processes already had. pid 0 is skipped: on Windows it is the
"System Idle Process", whose CPU time is the machine's idle time.

Per application (`apps`): each user-session process is also counted under its
application, the normalised executable name (`app_name`): CPU seconds since the
agent started (kept per name by the grouper, so it never goes down while the
name is exported), resident memory and the sessions running it. `select_apps`
bounds what is reported: the operator's allowlist, the top N by CPU over the
last interval, and everything else summed as "other".

Sample output (a reading's `processes`)::

    {"user": {"cpu_seconds_total": 41000.5, "memory_bytes": 15032385536, "processes": 310},
     "system": {"cpu_seconds_total": 22500.25, "memory_bytes": 4294967296, "processes": 102}}
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from agent.sessions.model import Session

log = logging.getLogger(__name__)

USER, SYSTEM = "user", "system"
CLASSES = (USER, SYSTEM)
MIN_USER_UID = 1000  # the usual first uid of human users (login.defs UID_MIN)
NO_AUDIT_SESSION = 4294967295  # (u32)-1: the process has no audit session
_SCOPE_RE = re.compile(r"/session-([A-Za-z0-9_-]+)\.scope(?:/|$)")
OTHER_APP = "other"
MAX_APP_LENGTH = 32
MAX_APPS_TRACKED = 4096  # distinct names kept since start; past it a new name counts as "other"
_APP_UNSAFE_RE = re.compile(r"[^a-z0-9._+-]+")


@dataclass(frozen=True)
class Place:
    """Where a process runs: its session id (Windows id, logind id) and/or its audit session."""

    session: Optional[str] = None
    audit: Optional[int] = None


NOWHERE = Place()


def parse_cgroup(text: str) -> Optional[str]:
    """The logind session id in a /proc/<pid>/cgroup text, if the process is in a session scope.

    >>> parse_cgroup("0::/user.slice/user-1000.slice/session-42.scope\\n")
    '42'
    """
    for line in text.splitlines():
        found = _SCOPE_RE.search(line)
        if found:
            return found.group(1)
    return None


class LinuxLocator:
    """Finds a process's logind session under a proc root (a fixture tree in tests)."""

    def __init__(self, proc_root: str = "/proc"):
        self.proc_root = proc_root

    def __call__(self, pid: int) -> Place:
        base = os.path.join(self.proc_root, str(pid))
        try:
            with open(os.path.join(base, "cgroup"), encoding="utf-8", errors="replace") as f:
                scope = parse_cgroup(f.read())
            if scope is not None:
                return Place(session=scope)
        except OSError:
            pass
        try:
            with open(os.path.join(base, "sessionid"), encoding="ascii") as f:
                audit = int(f.read().strip())
        except (OSError, ValueError):
            return NOWHERE
        return Place(audit=audit) if 0 < audit < NO_AUDIT_SESSION else NOWHERE


class WindowsLocator:
    """Places processes by session from `api` (WtsApi or a fake).

    `begin()` (called by the grouper once per snapshot) reads every process's session with
    `api.process_sessions()`; a pid missing from it (started since) and an API without that
    call fall back to `api.process_session_id(pid)`, which Windows refuses for protected
    processes. If the one call fails, the snapshot falls back entirely (logged once).
    """

    def __init__(self, api: Any):
        self.api = api
        self._sessions: Dict[int, int] = {}
        self._failing = False

    def begin(self) -> None:
        self._sessions = {}
        if not hasattr(self.api, "process_sessions"):
            return
        try:
            self._sessions = self.api.process_sessions()
        except OSError as e:
            if not self._failing:
                log.warning("cannot list the sessions of all processes, asking one by one: %s", e)
            self._failing = True
            return
        self._failing = False

    def __call__(self, pid: int) -> Place:
        sid = self._sessions.get(pid)
        if sid is None:
            sid = self.api.process_session_id(pid)
        return Place(session=str(sid)) if sid is not None else NOWHERE


def windows_locator(api: Any) -> WindowsLocator:
    """The Windows locator for `api` (kept as a function for the collector that builds it)."""
    return WindowsLocator(api)


def no_locator(pid: int) -> Place:
    """For utmp: no session ids, so processes are placed by their owner only."""
    return NOWHERE


def classify(place: Place, uid: Optional[int], username: Optional[str], *, windows: bool,
             by_session: Mapping[str, str], by_audit: Mapping[int, str],
             session_users: Mapping[str, str]) -> Tuple[str, str]:
    """(class, raw user) of one process; the user is "" when not known."""
    if windows:
        if place.session is None or place.session == "0":
            return SYSTEM, ""
        return USER, by_session.get(place.session, "")
    if place.session is not None and place.session in by_session:
        return USER, by_session[place.session]
    if place.audit is not None and place.audit in by_audit:
        return USER, by_audit[place.audit]
    if uid is not None and uid >= MIN_USER_UID and username and username in session_users:
        return USER, session_users[username]
    return SYSTEM, ""


def app_name(raw: Optional[str], limit: int = MAX_APP_LENGTH) -> str:
    """An executable's name as an `app` label: base name, lower case, without `.exe`, only
    letters, digits and `._+-` (anything else becomes `_`), at most `limit` characters; "" when
    nothing is left. Linux gives the kernel's command name (15 characters at most).

    >>> app_name("C:\\\\Program Files\\\\Microsoft Office\\\\root\\\\Office16\\\\OUTLOOK.EXE")
    'outlook'
    >>> app_name("/usr/lib/firefox/firefox-bin"), app_name("Web Content"), app_name(".exe"), app_name(None)
    ('firefox-bin', 'web_content', '', '')
    """
    if not raw:
        return ""
    base = raw.replace("\\", "/").rsplit("/", 1)[-1].strip().lower()
    if base.endswith(".exe"):
        base = base[:-4]
    return _APP_UNSAFE_RE.sub("_", base)[:limit].strip("_.")


@dataclass
class AppUse:
    """One application in one snapshot: CPU since the agent started, CPU this interval, memory, sessions."""

    cpu_seconds_total: float = 0.0
    cpu_seconds: float = 0.0
    memory_bytes: float = 0.0
    sessions: set = field(default_factory=set)


@dataclass
class Group:
    cpu_seconds_total: float = 0.0
    memory_bytes: float = 0.0
    processes: int = 0


@dataclass
class ProcessSnapshot:
    groups: Dict[str, Group]
    user_cpu: Dict[str, float] = field(default_factory=dict)  # raw user -> CPU seconds since the previous snapshot
    user_memory: Dict[str, float] = field(default_factory=dict)
    wall_seconds: Optional[float] = None  # since the previous snapshot; None on the first
    access_denied: int = 0  # processes whose CPU or memory could not be read (logged once by the collector)
    apps: Dict[str, AppUse] = field(default_factory=dict)  # app -> use, user-session processes only


@dataclass(frozen=True)
class _Times:
    user: float
    system: float


@dataclass(frozen=True)
class _Memory:
    rss: float


@dataclass(frozen=True)
class _Uids:
    real: int


def parse_proc_stat(data: bytes, ticks: int, page: int) -> Optional[Tuple[float, float, int, float]]:
    """(user seconds, system seconds, start ticks, rss bytes) from a /proc/<pid>/stat line.

    The command name is in parentheses and may itself hold spaces and
    parentheses, so fields are counted from the last ')'.

    >>> parse_proc_stat(b"42 (my (odd) cmd) S 1 42 42 0 -1 4194560 120 0 0 0 250 130 0 0 20 0 1 0 "
    ...                 b"9001 10000000 300 18446744073709551615", 100, 4096)
    (2.5, 1.3, 9001, 1228800.0)
    """
    end = data.rfind(b")")
    if end < 0:
        return None
    fields = data[end + 2:].split()
    if len(fields) < 22:
        return None
    try:  # fields[0] is field 3 of proc(5): utime 14, stime 15, starttime 22, rss 24
        return (int(fields[11]) / ticks, int(fields[12]) / ticks, int(fields[19]), float(int(fields[21]) * page))
    except ValueError:
        return None


class ProcReader:
    """What the grouper needs, read straight from /proc: one small file and one stat() per process.

    psutil's process_iter reads three files per process and builds objects for
    each; on a host with thousands of processes that was most of the agent's CPU.
    The uid is the owner of /proc/<pid> (the effective uid, which for a user's
    processes is the user's); names are looked up once per uid.
    """

    root: str
    ticks: int
    page: int

    def __init__(self, proc_root: str = "/proc"):
        if sys.platform == "win32":  # also tells the type checker that what follows is not Windows'
            raise RuntimeError("ProcReader reads Linux's /proc")
        self.root = proc_root
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.page = os.sysconf("SC_PAGE_SIZE")
        self._names: Dict[int, Optional[str]] = {}

    def username(self, uid: int) -> Optional[str]:
        if sys.platform == "win32":
            return None
        if uid not in self._names:
            try:
                import pwd
                self._names[uid] = pwd.getpwuid(uid).pw_name
            except (KeyError, ImportError):
                self._names[uid] = None
        return self._names[uid]

    def __call__(self) -> Iterable[Dict[str, Any]]:
        try:
            entries = [e.name for e in os.scandir(self.root) if e.name.isdigit()]
        except OSError:
            return
        for name in entries:
            base = f"{self.root}/{name}"
            try:
                with open(f"{base}/stat", "rb") as f:
                    data = f.read()
                uid = os.stat(base).st_uid
            except OSError:  # exited meanwhile
                continue
            parsed = parse_proc_stat(data, self.ticks, self.page)
            if parsed is None:
                continue
            user, system, start, rss = parsed
            yield {"pid": int(name), "create_time": start, "cpu_times": _Times(user, system),
                   "memory_info": _Memory(rss), "uids": _Uids(uid), "username": self.username(uid),
                   "name": data[data.find(b"(") + 1:data.rfind(b")")].decode("utf-8", "replace")}


class ProcessGrouper:
    """Per-class process totals with monotonic CPU counters; psutil injected."""

    def __init__(self, psutil: Any, *, windows: bool, locate: Callable[[int], Place] = no_locator,
                 clock: Callable[[], float] = time.time,
                 reader: Optional[Callable[[], Iterable[Dict[str, Any]]]] = None):
        self.psutil = psutil
        self.reader = reader
        self.windows = windows
        self.locate = locate
        self.clock = clock
        self.attrs = ["pid", "create_time", "cpu_times", "memory_info", "name"]
        if not windows:  # on Windows username is slow and the session tells the user anyway
            self.attrs += ["username", "uids"]
        self._cpu: Dict[Tuple[int, Optional[float]], float] = {}
        self._totals = {c: 0.0 for c in CLASSES}
        self._last: Optional[float] = None
        self._app_cpu: Dict[str, float] = {}  # app -> CPU seconds of its user-session processes since start
        self._app_names: Dict[Optional[str], str] = {}  # raw name -> its app: a few hundred names on a host

    def app_cpu_totals(self) -> Mapping[str, float]:
        """CPU seconds per app since the agent started (every app seen, exported or not)."""
        return self._app_cpu

    def _new_app(self, raw: Optional[str]) -> str:
        """The app of a name not seen before; past MAX_APPS_TRACKED apps a new one is "other"."""
        name = app_name(raw) or OTHER_APP
        if name not in self._app_cpu and len(self._app_cpu) >= MAX_APPS_TRACKED:
            name = OTHER_APP
        if len(self._app_names) < MAX_APPS_TRACKED:
            self._app_names[raw] = name
        return name

    def snapshot(self, sessions: Iterable[Session]) -> ProcessSnapshot:
        sessions = list(sessions)
        by_session = {s.id: s.user for s in sessions}
        by_audit = {s.audit_id: s.user for s in sessions if s.audit_id is not None}
        session_users = {s.user: s.user for s in sessions if s.user}
        now = self.clock()
        first = self._last is None
        groups = {c: Group() for c in CLASSES}
        user_cpu: Dict[str, float] = {}
        user_memory: Dict[str, float] = {}
        cpu_now: Dict[Tuple[int, Optional[float]], float] = {}
        apps: Dict[str, AppUse] = {}
        app_cpu, app_names = self._app_cpu, self._app_names
        denied = 0
        begin = getattr(self.locate, "begin", None)  # a locator that reads all places at once
        if begin is not None:
            begin()
        for info in self._iter():
            pid = info.get("pid")
            if not pid:
                continue
            times, memory = info.get("cpu_times"), info.get("memory_info")
            if times is None or memory is None:
                denied += 1
            uids = info.get("uids")
            place = self.locate(pid)
            cls, user = classify(place, getattr(uids, "real", None), info.get("username"),
                                 windows=self.windows, by_session=by_session, by_audit=by_audit,
                                 session_users=session_users)
            group = groups[cls]
            group.processes += 1
            rss = float(getattr(memory, "rss", 0) or 0)
            group.memory_bytes += rss
            use = None
            if cls == USER:
                raw = info.get("name")
                app = app_names.get(raw) or self._new_app(raw)
                use = apps.get(app)
                if use is None:
                    use = apps[app] = AppUse()
                use.memory_bytes += rss
                use.sessions.add(place.session or place.audit or user)
            if times is None:
                continue
            cpu = float(times.user) + float(times.system)
            key = (pid, info.get("create_time"))
            cpu_now[key] = cpu
            previous = self._cpu.get(key)
            delta = cpu if previous is None else max(0.0, cpu - previous)
            self._totals[cls] += delta
            if use is not None:
                use.cpu_seconds += delta
            if cls == USER and user:
                user_memory[user] = user_memory.get(user, 0.0) + rss
                if not first:
                    user_cpu[user] = user_cpu.get(user, 0.0) + delta
        for cls in CLASSES:
            groups[cls].cpu_seconds_total = self._totals[cls]
        for app, use in apps.items():
            use.cpu_seconds_total = app_cpu[app] = app_cpu.get(app, 0.0) + use.cpu_seconds
        wall = None if self._last is None else max(0.0, now - self._last)
        self._cpu = cpu_now
        self._last = now
        return ProcessSnapshot(groups, user_cpu, user_memory, wall, denied, apps)

    def _iter(self) -> Iterable[Dict[str, Any]]:
        if self.reader is not None:
            yield from self.reader()
            return
        # process_iter drops processes that exit while being read (NoSuchProcess) and,
        # with ad_value=None, puts None where access is denied: counted by the caller.
        for proc in self.psutil.process_iter(self.attrs, ad_value=None):
            info = getattr(proc, "info", None)
            if info is not None:
                yield info


def top_users(snapshot: ProcessSnapshot, n: int, label: Callable[[str], str], limit: int) -> List[Dict[str, Any]]:
    """The top `n` users by CPU and the top `n` by memory, merged (at most `limit` entries).

    Users are merged by label, so two raw spellings of one person count once.
    CPU is in cores over the last interval, which needs two snapshots: before
    that there is no list at all rather than a list of misleading zeros.
    """
    if n <= 0 or not snapshot.wall_seconds:
        return []
    cpu: Dict[str, float] = {}
    memory: Dict[str, float] = {}
    for user in set(snapshot.user_cpu) | set(snapshot.user_memory):
        name = label(user)
        if not name:
            continue
        cpu[name] = cpu.get(name, 0.0) + snapshot.user_cpu.get(user, 0.0)
        memory[name] = memory.get(name, 0.0) + snapshot.user_memory.get(user, 0.0)
    # A user who used no CPU is not a "top CPU user": ranked lists hold only users with some use.
    by_cpu = sorted((u for u in cpu if cpu[u] > 0), key=lambda u: (-cpu[u], u))[:n]
    by_memory = sorted((u for u in memory if memory[u] > 0), key=lambda u: (-memory[u], u))[:n]
    chosen: List[str] = []
    padded_cpu: List[Optional[str]] = [*by_cpu, *[None] * (n - len(by_cpu))]
    padded_memory: List[Optional[str]] = [*by_memory, *[None] * (n - len(by_memory))]
    for pair in zip(padded_cpu, padded_memory):
        for candidate in pair:
            if candidate is not None and candidate not in chosen:
                chosen.append(candidate)
    chosen = chosen[:limit]
    chosen.sort(key=lambda u: (-cpu[u], -memory[u], u))
    return [{"user": u, "cpu_cores": round(cpu[u] / snapshot.wall_seconds, 4), "memory_bytes": memory[u]}
            for u in chosen]


def choose_apps(apps: Mapping[str, AppUse], allow: Iterable[str], top: int, limit: int) -> List[str]:
    """The apps reported by name: the allowlist, then the top `top` others by CPU over the last
    interval (only apps that used some), at most `limit - 1` in all (one entry is left for "other").

    >>> use = {"outlook": AppUse(cpu_seconds=1.0), "chrome": AppUse(cpu_seconds=9.0),
    ...        "teams": AppUse(cpu_seconds=4.0), "idle": AppUse(cpu_seconds=0.0)}
    >>> choose_apps(use, ["winword"], 2, 64)
    ['winword', 'chrome', 'teams']
    """
    chosen = [a for a in dict.fromkeys(allow) if a and a != OTHER_APP][:max(0, limit - 1)]
    ranked = sorted((a for a, u in apps.items() if u.cpu_seconds > 0 and a != OTHER_APP and a not in chosen),
                    key=lambda a: (-apps[a].cpu_seconds, a))
    room = max(0, min(top, limit - 1 - len(chosen)))
    return chosen + ranked[:room]


class AppTable:
    """The per-application entries of a reading, with "other" as a counter of its own.

    An app's CPU is its total since the agent started (the grouper's), so its series
    never goes down, whether it was exported all along or leaves and re-enters the top
    N. "other" adds, each interval, what the apps not named used in it: it never goes
    down either, but the named apps and "other" together may count an interval twice
    (an app's total includes the time it spent in "other"); the user class
    (`vdi_session_process_cpu_seconds_total{class="user"}`) is the exact total.
    """

    def __init__(self, allow: Iterable[str], top: int, limit: int):
        self.allow = tuple(allow)
        self.top = top
        self.limit = limit
        self._other_cpu = 0.0

    def entries(self, snapshot: ProcessSnapshot, totals: Mapping[str, float]) -> List[Dict[str, Any]]:
        """[{"app", "cpu_seconds_total", "memory_bytes", "sessions"}...] by app name, "other" last."""
        apps = snapshot.apps
        chosen = choose_apps(apps, self.allow, self.top, self.limit)
        named = set(chosen)
        out = []
        for app in sorted(chosen):
            use = apps.get(app)
            out.append({"app": app, "cpu_seconds_total": round(totals.get(app, 0.0), 3),
                        "memory_bytes": use.memory_bytes if use else 0.0,
                        "sessions": len(use.sessions) if use else 0})
        memory = 0.0
        sessions: set = set()
        for app, use in apps.items():
            if app not in named:
                self._other_cpu += use.cpu_seconds
                memory += use.memory_bytes
                sessions |= use.sessions
        out.append({"app": OTHER_APP, "cpu_seconds_total": round(self._other_cpu, 3), "memory_bytes": memory,
                    "sessions": len(sessions)})
        return out
