"""Host collectors: one module per source, registered by name.

A collector is built once from a `Context` (the sources it reads, injected so
that tests can replay recorded readings) and then asked for one JSON-ready
fragment per interval. Its name is also its key under the report's `readings`.
`run_all` is the only place that times collectors, isolates their failures and
logs them: a failing collector costs its own section, never the report.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What collectors may read. Tests pass fakes for any of these."""

    psutil: Any
    config: Any = None
    clock: Callable[[], float] = time.time
    platform: str = ""  # "windows", "linux", ...; "" means the running one
    extra: Dict[str, Any] = field(default_factory=dict)


class Collector:
    """Base class: subclasses set `name` and implement `collect`."""

    name: str = ""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def collect(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Registration:
    name: str
    factory: Callable[[Context], Collector]
    default_enabled: bool


REGISTRY: Dict[str, Registration] = {}

# Modules that register collectors when imported, in report order.
MODULES = ("cpu", "load", "memory", "filesystems", "disks", "interfaces", "system",
           "sessions", "capacity")


def register(name: str, default_enabled: bool = True) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        cls.name = name
        REGISTRY[name] = Registration(name, cls, default_enabled)
        return cls
    return wrap


def load_all() -> Dict[str, Registration]:
    """Import every collector module; one that fails to import is skipped with one log line."""
    for module in MODULES:
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ImportError as e:
            log.critical("collector module %s cannot be loaded and is disabled: %s", module, e)
    return REGISTRY


@dataclass
class Outcome:
    name: str
    success: bool
    duration_seconds: float
    reading: Any = None
    error: Optional[str] = None


class Runner:
    """Runs enabled collectors each interval; logs an outage once when it starts and once when it ends."""

    def __init__(self, collectors: List[Collector], perf_counter: Callable[[], float] = time.perf_counter):
        self.collectors = collectors
        self.perf_counter = perf_counter
        self.failing: Dict[str, str] = {}

    def run_all(self) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
        readings: Dict[str, Any] = {}
        statuses: Dict[str, Dict[str, Any]] = {}
        for outcome in map(self._run_one, self.collectors):
            statuses[outcome.name] = {"success": outcome.success,
                                      "duration_seconds": round(outcome.duration_seconds, 6)}
            if outcome.success and outcome.reading is not None:
                readings[outcome.name] = outcome.reading
            self._note(outcome)
        return readings, statuses

    def _run_one(self, collector: Collector) -> Outcome:
        start = self.perf_counter()
        try:
            reading = collector.collect()
        except Exception as e:  # noqa: BLE001 - isolation is the point
            return Outcome(collector.name, False, self.perf_counter() - start,
                           error=f"{type(e).__name__}: {e}")
        return Outcome(collector.name, True, self.perf_counter() - start, reading)

    def _note(self, outcome: Outcome) -> None:
        was_failing = outcome.name in self.failing
        if not outcome.success and not was_failing:
            self.failing[outcome.name] = outcome.error or ""
            log.error("collector %s failed: %s (logged again only when it recovers)",
                      outcome.name, outcome.error)
        elif outcome.success and was_failing:
            del self.failing[outcome.name]
            log.warning("collector %s recovered", outcome.name)


def build(ctx: Context, disabled: Tuple[str, ...] = (), enabled: Tuple[str, ...] = ()) -> List[Collector]:
    """Instantiate collectors: the default-enabled ones plus `enabled`, minus `disabled`."""
    collectors = []
    registry = load_all()  # once: a module that cannot be imported is logged once, not once per name
    for name in MODULES:
        reg = registry.get(name)
        if reg is None:
            continue
        on = (reg.default_enabled or name in enabled) and name not in disabled
        if not on:
            continue
        try:
            collectors.append(reg.factory(ctx))
        except Exception as e:  # noqa: BLE001 - a collector that cannot start is disabled, the agent goes on
            log.critical("collector %s cannot start and is disabled: %s", name, e)
    return collectors
