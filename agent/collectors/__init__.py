"""Host collectors: one module per source, registered by name.

A collector takes what it reads as constructor arguments (psutil, a session
source, a root folder...), so that tests build it on recorded readings;
`from_context` builds it from the agent's typed `Context` when the agent is
wired. Each interval it returns one reading of the report contract
(contract/report.py: `Memory`, `Cpu`, `Sessions`...); its name is also its key
under the report's `readings`.
`run_all` is the only place that times collectors, isolates their failures and
logs them: a failing collector costs its own section, never the report.
"""

from __future__ import annotations

import importlib
import logging
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from agent.config import COLLECTORS, AgentConfig
from contract.report import CollectorStatus

log = logging.getLogger(__name__)


def os_name() -> str:
    """"windows", "linux", "darwin", ...: the running OS, as the report's `os` names it."""
    return platform.system().lower() or "unknown"


@dataclass(frozen=True)
class Context:
    """What the registered collectors are built from when the agent is wired.

    `os` decides OS-specific behaviour (loopback names, disk filters, the session
    source); the roots the collectors read are `config.agent.proc_root`, `dev_root`
    and `run_root`. `wts_api` is the Windows session layer (None: the real one).
    """

    psutil: Any
    config: AgentConfig = field(default_factory=AgentConfig)
    clock: Callable[[], float] = time.time
    os: str = field(default_factory=os_name)
    wts_api: Any = None


class Collector:
    """Base class: subclasses set `name`, implement `collect` and, when they read more
    than psutil, `from_context`."""

    name: str = ""

    def __init__(self, psutil: Any):
        self.psutil = psutil

    @classmethod
    def from_context(cls, ctx: Context) -> "Collector":
        return cls(ctx.psutil)

    def collect(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Registration:
    name: str
    factory: Callable[[Context], Collector]
    default_enabled: bool


REGISTRY: Dict[str, Registration] = {}

# Modules that register collectors when imported, in report order (agent.config names them,
# so that `disabled_collectors` is checked when the file is read).
MODULES = COLLECTORS


def register(name: str, default_enabled: bool = True) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        cls.name = name
        REGISTRY[name] = Registration(name, cls.from_context, default_enabled)
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

    def run_all(self) -> Tuple[Dict[str, Any], Dict[str, CollectorStatus]]:
        """Every collector's reading (by name; a failed one has none) and status."""
        readings: Dict[str, Any] = {}
        statuses: Dict[str, CollectorStatus] = {}
        for outcome in map(self._run_one, self.collectors):
            statuses[outcome.name] = CollectorStatus(outcome.name, outcome.success,
                                                     round(outcome.duration_seconds, 6))
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
