"""Fakes for the session sources, fed from tests/fixtures/sessions/."""

from __future__ import annotations

import copy
import json
from collections import namedtuple
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional

from agent.sessions.windows import WtsSessionEntry, WtsSessionInfo
from tests.conftest import FIXTURES

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


class Clock:
    """A settable clock for contexts and sources."""

    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
