"""What the broker last knew, and for how long it may still say so.

Thread-safety: the poll loop writes (`succeeded`, `failed`) and the HTTP thread
reads (`view`), each under one lock; a view is a copy and never changes.

The machines of the last complete poll are served while polls fail, for at
most `hold` seconds after that poll: an unreachable controller must not leave
a "maintenance" or "off" standing for ever, silencing the alerts that read it.
After `hold` the machines go (the self-metrics stay and say why).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, Tuple

from broker.fetch import FAILURE_REASONS
from broker.odata import Machine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class View:
    machines: Tuple[Machine, ...]
    up: bool
    last_success: float  # Unix time, 0 before the first
    last_duration: float
    polls: int
    failures: Dict[str, int]
    skipped: Dict[str, int]  # of the last complete poll
    values: Dict[str, int]  # unknown or unusable values of the last complete poll
    held: bool  # serving the machines of an earlier poll while polls fail


@dataclass
class BrokerState:
    hold: float
    clock: Callable[[], float] = time.time
    _machines: Tuple[Machine, ...] = ()
    _up: bool = False
    _last_success: float = 0.0
    _last_duration: float = 0.0
    _polls: int = 0
    _failures: Counter = field(default_factory=lambda: Counter({r: 0 for r in FAILURE_REASONS}))
    _skipped: Dict[str, int] = field(default_factory=dict)
    _values: Dict[str, int] = field(default_factory=dict)
    _dropped_logged: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def succeeded(self, machines: Dict[str, Machine], duration: float, skipped: Counter, values: Counter) -> None:
        with self._lock:
            self._machines = tuple(machines[h] for h in sorted(machines))
            self._up = True
            self._last_success = self.clock()
            self._last_duration = duration
            self._polls += 1
            self._skipped = dict(skipped)
            self._values = dict(values)
            self._dropped_logged = False

    def failed(self, reason: str, duration: float) -> None:
        with self._lock:
            self._up = False
            self._last_duration = duration
            self._polls += 1
            self._failures[reason] += 1
            self._expired()

    def _expired(self) -> bool:
        """Whether the held machines are past `hold`; logs the drop once, whoever notices first."""
        expired = not self._up and self.clock() - self._last_success > self.hold
        if expired and self._machines and not self._dropped_logged:
            log.warning("dropping the %d machine(s) of the last good poll: no poll has succeeded for %.0f s "
                        "(broker.hold)", len(self._machines), self.clock() - self._last_success)
            self._dropped_logged = True
        return expired

    def view(self) -> View:
        with self._lock:
            expired = self._expired()
            return View(machines=() if expired else self._machines, up=self._up,
                        last_success=self._last_success, last_duration=self._last_duration, polls=self._polls,
                        failures=dict(self._failures), skipped=dict(self._skipped), values=dict(self._values),
                        held=not self._up and not expired and bool(self._machines))
