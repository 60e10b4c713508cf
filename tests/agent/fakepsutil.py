"""A fake psutil module that replays readings recorded in tests/fixtures/psutil/*.json.

Collectors read only through `ctx.psutil`, so a test hands them `load("linux")`
and gets back the recorded values as psutil's own shapes: namedtuples with the
same field names (`cpu_times()._asdict()`, `virtual_memory().available`, ...).
A `disk_usage` entry of the form {"error": "PermissionError", "message": ...}
raises that exception, as psutil does for a mount the agent may not read.

To record the running machine (then add the edge cases a test needs by hand):

    .venv/bin/python -m tests.agent.fakepsutil > tests/fixtures/psutil/<name>.json
"""

from __future__ import annotations

import builtins
import copy
import json
import sys
from collections import namedtuple
from typing import Any, Dict, List

from agent.collectors import Context
from tests.conftest import FIXTURES

PSUTIL_FIXTURES = FIXTURES / "psutil"


def record_data(name: str) -> Dict[str, Any]:
    """The decoded fixture, a fresh copy that a test may change before `FakePsutil(data)`."""
    return json.loads((PSUTIL_FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def _tuple(type_name: str, values: Dict[str, Any]) -> Any:
    return namedtuple(type_name, list(values))(**values)


class FakePsutil:
    """The subset of psutil's API that the host collectors call."""

    def __init__(self, data: Dict[str, Any]):
        self.data = copy.deepcopy(data)
        self.calls: List[str] = []

    @property
    def platform(self) -> str:
        return self.data["platform"]

    def cpu_count(self, logical: bool = True) -> Any:
        self.calls.append("cpu_count")
        return self.data["cpu_count"]

    def cpu_times(self, percpu: bool = False) -> Any:
        self.calls.append("cpu_times")
        return _tuple("scputimes", self.data["cpu_times"])

    def getloadavg(self) -> Any:
        self.calls.append("getloadavg")
        return tuple(self.data["getloadavg"])

    def virtual_memory(self) -> Any:
        self.calls.append("virtual_memory")
        return _tuple("svmem", self.data["virtual_memory"])

    def swap_memory(self) -> Any:
        self.calls.append("swap_memory")
        return _tuple("sswap", self.data["swap_memory"])

    def disk_partitions(self, all: bool = False) -> List[Any]:
        self.calls.append(f"disk_partitions(all={all})")
        return [_tuple("sdiskpart", p) for p in self.data["disk_partitions"]]

    def disk_usage(self, path: str) -> Any:
        self.calls.append(f"disk_usage({path})")
        entry = self.data["disk_usage"].get(path)
        if entry is None:
            raise FileNotFoundError(2, "No such file or directory", path)
        if "error" in entry:
            raise getattr(builtins, entry["error"])(entry.get("message", ""))
        return _tuple("sdiskusage", entry)

    def disk_io_counters(self, perdisk: bool = False, nowrap: bool = True) -> Any:
        self.calls.append(f"disk_io_counters(perdisk={perdisk})")
        counters = self.data["disk_io_counters"]
        if counters is None:
            return None
        return {name: _tuple("sdiskio", values) for name, values in counters.items()}

    def net_io_counters(self, pernic: bool = False, nowrap: bool = True) -> Any:
        self.calls.append(f"net_io_counters(pernic={pernic})")
        return {name: _tuple("snetio", values) for name, values in self.data["net_io_counters"].items()}

    def boot_time(self) -> float:
        self.calls.append("boot_time")
        return self.data["boot_time"]

    def pids(self) -> List[int]:
        self.calls.append("pids")
        return list(range(1, self.data["pid_count"] + 1))


def load(name: str, **changes: Any) -> FakePsutil:
    """The fake for fixture `name` ("linux", "windows"), with top-level keys replaced by `changes`."""
    data = record_data(name)
    data.update(changes)
    return FakePsutil(data)


def context(fake: FakePsutil, **kwargs: Any) -> Context:
    """A collector context reading `fake`, on the platform the fixture was recorded on."""
    return Context(psutil=fake, os=fake.platform, **kwargs)


def record() -> Dict[str, Any]:  # pragma: no cover - a tool, run by hand on a real host
    """Read the running machine into the fixture format."""
    import platform

    import psutil

    def plain(t: Any) -> Dict[str, Any]:
        return dict(t._asdict())

    usage: Dict[str, Any] = {}
    partitions = [{k: getattr(p, k) for k in ("device", "mountpoint", "fstype", "opts")}
                  for p in psutil.disk_partitions(all=False)]
    for p in partitions:
        try:
            usage[p["mountpoint"]] = plain(psutil.disk_usage(p["mountpoint"]))
        except OSError as e:
            usage[p["mountpoint"]] = {"error": type(e).__name__, "message": str(e)}
    disks = psutil.disk_io_counters(perdisk=True)
    return {
        "_about": f"recorded with psutil {psutil.__version__} on {platform.platform()}",
        "platform": platform.system().lower(),
        "cpu_count": psutil.cpu_count(),
        "cpu_times": plain(psutil.cpu_times()),
        "getloadavg": list(psutil.getloadavg()),
        "virtual_memory": plain(psutil.virtual_memory()),
        "swap_memory": plain(psutil.swap_memory()),
        "disk_partitions": partitions,
        "disk_usage": usage,
        "disk_io_counters": None if disks is None else {k: plain(v) for k, v in disks.items()},
        "net_io_counters": {k: plain(v) for k, v in psutil.net_io_counters(pernic=True).items()},
        "boot_time": psutil.boot_time(),
        "pid_count": len(psutil.pids()),
    }


if __name__ == "__main__":  # pragma: no cover
    json.dump(record(), sys.stdout, indent=2)
    sys.stdout.write("\n")
