"""Fakes for the session sources, fed from tests/fixtures/sessions/, and sessions collectors built on them."""

from __future__ import annotations

import copy
import json
import shutil
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from agent.collectors import Context
from agent.collectors.sessions import SessionsCollector, choose_source
from agent.config import AgentConfig, AgentSection, SessionsSection
from agent.sessions.processes import LinuxLocator, ProcessGrouper
from agent.sessions.windows import WtsSessionEntry, WtsSessionInfo
from tests.conftest import FIXTURES, FakeClock

SESSION_FIXTURES = FIXTURES / "sessions"
T0 = 1764547200.0  # 2025-12-01T00:00:00Z, "now" in the WTS fixtures


def fixture(name: str) -> Dict[str, Any]:
    return json.loads((SESSION_FIXTURES / name).read_text(encoding="utf-8"))


class FakeWtsApi:
    """WtsApi's methods, answering from a recorded wts_*.json; `load` switches to another recording."""

    def __init__(self, name: str, session_of: Optional[Dict[int, int]] = None):
        self.load(name)
        self.session_of = session_of or {}
        self.calls: List[str] = []

    def load(self, name: str) -> None:
        self.items = {item["entry"]["session_id"]: item for item in fixture(name)["sessions"]}

    def enumerate_sessions(self) -> List[WtsSessionEntry]:
        self.calls.append("enumerate")
        return [WtsSessionEntry(**item["entry"]) for item in self.items.values()]

    def session_info(self, session_id: int) -> WtsSessionInfo:
        self.calls.append(f"info({session_id})")
        item = self.items[session_id]
        if "error" in item:
            raise OSError(7022, item["error"])
        return WtsSessionInfo(**item["info"])

    def client_protocol_type(self, session_id: int) -> int:
        return self.items[session_id]["protocol_type"]

    def process_session_id(self, pid: int) -> Optional[int]:
        return self.session_of.get(pid)


class NoSuchProcess(Exception):
    pass


class AccessDenied(Exception):
    pass


class Error(Exception):
    pass


@dataclass
class _Proc:
    info: Dict[str, Any]


_TUPLES = {"cpu_times": namedtuple("pcputimes", "user system"), "memory_info": namedtuple("pmem", "rss"),
           "uids": namedtuple("puids", "real")}


class FakeProcPsutil:
    """process_iter and users(), from processes_*.json and utmp.json; `processes` may be changed by a test."""

    NoSuchProcess = NoSuchProcess
    AccessDenied = AccessDenied
    Error = Error

    def __init__(self, processes: Iterable[Dict[str, Any]] = (), users: Iterable[Dict[str, Any]] = ()):
        self.processes = [copy.deepcopy(p) for p in processes]
        self.user_entries = list(users)
        self.attrs_asked: List[List[str]] = []
        self.fail: Optional[Exception] = None

    def process_iter(self, attrs: List[str], ad_value: Any = None) -> Iterable[_Proc]:
        self.attrs_asked.append(list(attrs))
        if self.fail is not None:
            raise self.fail
        for p in self.processes:
            info = {}
            for a in attrs:
                value = p.get(a, ad_value)
                if isinstance(value, dict) and a in _TUPLES:
                    value = _TUPLES[a](**{k: value[k] for k in _TUPLES[a]._fields})
                info[a] = value
            yield _Proc(info)

    def users(self) -> List[Any]:
        suser = namedtuple("suser", "name terminal host started pid")
        return [suser(**u) for u in self.user_entries]

    def set_cpu(self, pid: int, user: float, system: float = 0.0) -> None:
        for p in self.processes:
            if p["pid"] == pid:
                p["cpu_times"] = {"user": user, "system": system}

    def remove(self, pid: int) -> None:
        self.processes = [p for p in self.processes if p["pid"] != pid]


def linux_psutil() -> FakeProcPsutil:
    return FakeProcPsutil(fixture("processes_linux.json")["processes"], fixture("utmp.json")["users"])


def windows_api_and_psutil(name: str = "wts_farm_1.json") -> Any:
    data = fixture("processes_windows.json")
    api = FakeWtsApi(name, {int(k): v for k, v in data["session_of"].items()})
    return api, FakeProcPsutil(data["processes"])


class Clock(FakeClock):
    """The shared fake clock, at T0 unless told otherwise."""

    def __init__(self, now: float = T0):
        super().__init__(now)


SECRET = "farm-secret"


def config(*, proc_root: str = "/proc", dev_root: str = "/dev", run_root: str = "/run",
           **sessions: Any) -> AgentConfig:
    """The agent's config for a sessions test: site City Hall, the farm's pseudonym secret, `[sessions]` changes."""
    values: Dict[str, Any] = dict(pseudonym_secret=SECRET)
    values.update(sessions)
    return AgentConfig(agent=AgentSection(site="City Hall", proc_root=proc_root, dev_root=dev_root,
                                          run_root=run_root),
                       sessions=SessionsSection(**values))


def windows_collector(**sessions: Any) -> Tuple[SessionsCollector, "FakeWtsApi", "FakeProcPsutil", Clock]:
    """A sessions collector on the WTS fixture wts_farm_1.json, as the agent builds it on Windows."""
    api, ps = windows_api_and_psutil()
    clock = Clock()
    ctx = Context(psutil=ps, config=config(**sessions), clock=clock, os="windows", wts_api=api)
    return SessionsCollector.from_context(ctx), api, ps, clock


def logind_tree(tmp_path: Path) -> Path:
    """A run root with logind's fixture sessions (and systemd running) and a dev root beside it."""
    shutil.copytree(SESSION_FIXTURES / "logind", tmp_path / "run" / "systemd" / "sessions")
    (tmp_path / "run" / "systemd" / "system").mkdir()
    shutil.copytree(SESSION_FIXTURES / "dev", tmp_path / "dev")
    return tmp_path


def linux_collector(tmp_path: Path, psutil: Any, **sessions: Any) -> SessionsCollector:
    """A sessions collector choosing its source under the roots in `tmp_path` (see `logind_tree`), with
    processes from the fake `psutil` placed by the fixture /proc tree (the agent reads a real /proc)."""
    clock = Clock()
    ctx = Context(psutil=psutil, clock=clock, os="linux",
                  config=config(proc_root=str(SESSION_FIXTURES / "proc"), dev_root=str(tmp_path / "dev"),
                                run_root=str(tmp_path / "run"), **sessions))
    source = choose_source(ctx)
    locate = LinuxLocator(ctx.config.agent.proc_root) if source.name == "logind" else None
    grouper = ProcessGrouper(psutil, windows=False, clock=clock, **({"locate": locate} if locate else {}))
    return SessionsCollector(source, ctx.config.sessions, site=ctx.config.agent.site, clock=clock, grouper=grouper)


def logind_collector(tmp_path: Path, **sessions: Any) -> SessionsCollector:
    return linux_collector(logind_tree(tmp_path), linux_psutil(), **sessions)


def utmp_collector(tmp_path: Path, **sessions: Any) -> SessionsCollector:
    """No logind under `tmp_path`: the utmp fixture's sessions."""
    return linux_collector(tmp_path, FakeProcPsutil(users=fixture("utmp.json")["users"]), **sessions)
