"""The agent's loop: collect, build one report, push it; on a fixed schedule, until stopped.

The schedule is drift-free: collections happen at start + k * interval on the
monotonic clock, whatever the work took, and a tick missed because collecting
and pushing took longer than an interval is skipped rather than run late, so
the collector sees evenly spaced samples. On stop the agent sends one last
report with `"goodbye": true`, so that the collector shows the host as stopped
(a planned shutdown) instead of down.

`build_report` is a pure function of its inputs that builds the contract's
`Report` (contract/report.py) from the collectors' readings; the simulated farm
builds its reports with it too, and both send `report_to_doc(report)`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import platform
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Optional

from agent import __version__
from agent.collectors import Runner, os_name
from agent.config import AgentConfig
from agent.push import Pusher, PushResult
from contract.report import (
    DEFAULT_LIMITS,
    SCHEMA_VERSION,
    AgentInfo,
    CollectorStatus,
    Report,
    fits_label,
    report_to_doc,
    sorted_statuses,
)

log = logging.getLogger(__name__)

GOODBYE_SECONDS = 10.0  # at most this long for the goodbye: service managers wait 15-20 s


def build_report(*, host: str, site: str, delivery_group: str, timestamp: float, agent: AgentInfo,
                 statuses: Iterable[CollectorStatus], readings: Mapping[str, Any],
                 goodbye: bool = False) -> Report:
    """One report, contract v1 (contract/report.py, docs/report-format.md); `readings` maps a
    collector's name (a `Report` field) to its reading.

    >>> r = build_report(host="vda-01", site="s", delivery_group="g", timestamp=1796083200.12345,
    ...                  agent=agent_info(interval=15.0, start_time=1796083100.0, os="linux", os_release=""),
    ...                  statuses=[CollectorStatus("load", True, 0.001)], readings={})
    >>> r.timestamp_seconds, r.goodbye, report_to_doc(r)["readings"]
    (1796083200.123, False, {})
    """
    return Report(schema_version=SCHEMA_VERSION, host=host, site=site, delivery_group=delivery_group,
                  timestamp_seconds=round(timestamp, 3), goodbye=goodbye, agent=agent,
                  collectors=sorted_statuses(statuses), **readings)


def agent_info(*, interval: float, start_time: float, os: str, os_release: str,
               version: str = __version__) -> AgentInfo:
    return AgentInfo(version=version, os=os, os_release=os_release, interval_seconds=interval,
                     start_time_seconds=round(start_time, 3))


def next_tick(start: float, interval: float, now: float) -> float:
    """The first scheduled time start + k * interval (k >= 1) strictly after `now`.

    >>> next_tick(100.0, 15.0, 100.0), next_tick(100.0, 15.0, 114.9), next_tick(100.0, 15.0, 146.0)
    (115.0, 115.0, 160.0)
    """
    k = max(1, math.floor((now - start) / interval) + 1)
    tick = start + k * interval
    return tick if tick > now else tick + interval  # float rounding at an exact tick


def schedule_phase(host: str, interval: float) -> float:
    """Where in the interval this host reports: spread over the fleet, the same at every start.

    >>> 0 <= schedule_phase("vda-01", 15.0) < 15.0, schedule_phase("vda-01", 15.0) == schedule_phase("vda-01", 15.0)
    (True, True)
    """
    digest = hashlib.blake2b(host.lower().encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * interval


def os_release(name: Optional[str] = None) -> str:
    """A human-readable OS release for vdi_agent_info, e.g.
    "Windows Server 2022 Datacenter 10.0.20348" or "Debian GNU/Linux 12 (bookworm) 6.1.0-28-amd64"."""
    name = name or os_name()
    text = ""
    try:
        if name == "windows":
            text = _windows_release()
        elif name == "linux":
            text = f"{_linux_pretty_name()} {platform.release()}".strip()
    except (OSError, ValueError) as e:
        log.debug("cannot read the OS release: %s", e)
    text = text or f"{platform.system()} {platform.release()}".strip()
    text = "".join(ch if ch.isprintable() else " " for ch in text)[:DEFAULT_LIMITS.max_label_length].strip()
    return text if fits_label(text) else ""


def _windows_release() -> str:  # pragma: no cover - Windows only
    import winreg

    key = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Windows NT\CurrentVersion", 0,
                         winreg.KEY_READ | winreg.KEY_WOW64_64KEY)  # not WOW6432Node from a 32-bit Python
    with key:
        product = str(winreg.QueryValueEx(key, "ProductName")[0])
    version = platform.version()  # "10.0.20348"
    build = version.rsplit(".", 1)[-1]
    # Windows 11 still calls itself "Windows 10" in the registry; the build tells them apart.
    if product.startswith("Windows 10") and build.isdigit() and int(build) >= 22000:
        product = "Windows 11" + product[len("Windows 10"):]
    return f"{product} {version}"


def _linux_pretty_name(path: str = "/etc/os-release") -> str:
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep and key == "PRETTY_NAME":
                return value.strip().strip("\"'")
    return ""


def waiter(event: threading.Event, slice_seconds: float = 1.0) -> Callable[[float], bool]:
    """`event.wait`, in slices: on Windows a blocked wait is not interrupted by Ctrl-C, and the
    signal handler that sets the event only runs between slices. True once the event is set."""
    def wait(seconds: float) -> bool:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return event.is_set()
            if event.wait(min(left, slice_seconds)):
                return True
    return wait


class Agent:
    """Collects and pushes on schedule until `stop` is set, then says goodbye.

    `monotonic` drives the schedule and the push deadlines (it must be the
    pusher's clock), `clock` stamps the reports. Between collections the agent
    waits with `wait` (default: `waiter(stop)`), which a stop request interrupts.
    """

    def __init__(self, *, config: AgentConfig, host: str, runner: Runner, pusher: Pusher,
                 stop: Optional[threading.Event] = None, os: Optional[str] = None,
                 release: Optional[str] = None, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 wait: Optional[Callable[[float], bool]] = None,
                 sleep: Callable[[float], Any] = time.sleep, phase: float = 0.0):
        self.config = config
        self.phase = phase % config.agent.interval
        self.host = host
        self.runner = runner
        self.pusher = pusher
        self.stop = stop if stop is not None else threading.Event()
        self.clock = clock
        self.monotonic = monotonic
        self.wait = wait if wait is not None else waiter(self.stop)
        self.sleep = sleep
        self.interval = config.agent.interval
        self.started = clock()
        os = os or os_name()
        self.info = agent_info(interval=self.interval, start_time=self.started, os=os,
                               os_release=os_release(os) if release is None else release)
        self.skipped_ticks = 0
        # A collection and its push hold `_busy`; while `_asleep` is set (the host announced it is going to
        # sleep, see `suspend`) the schedule runs on but nothing is collected or pushed.
        self._busy = threading.Lock()
        self._asleep = threading.Event()

    def report(self, goodbye: bool = False) -> Report:
        """Run every collector once and build the report."""
        readings, statuses = self.runner.run_all()
        a = self.config.agent
        return build_report(host=self.host, site=a.site, delivery_group=a.delivery_group, timestamp=self.clock(),
                            agent=self.info, statuses=statuses.values(), readings=readings, goodbye=goodbye)

    def run(self) -> None:
        """Collect and push every interval until `stop` is set; then send the goodbye."""
        # The first report goes out at once; the schedule is shifted by `phase`, so a
        # fleet that boots together (a morning power-on) does not report in step.
        start = self.monotonic() - self.phase
        log.info("reporting as %s to %s every %g s", self.host, self.pusher.url, self.interval)
        while not self.stop.is_set():
            tick = self.monotonic()
            planned = next_tick(start, self.interval, tick)
            with self._busy:
                if not self._asleep.is_set():
                    report = self.report()
                    # The push may retry until the next collection; after a slow collection that is
                    # the next tick still ahead, not one already missed.
                    deadline = next_tick(start, self.interval, self.monotonic())
                    # The push returns before that deadline whatever the collector does, and at once
                    # when a stop request ends `wait` (the goodbye follows, with its own deadline).
                    self.pusher.push(report_to_doc(report), deadline, sleep=self.wait)
            wake = next_tick(start, self.interval, self.monotonic())
            if wake > planned and not self._asleep.is_set():
                missed = round((wake - planned) / self.interval)
                if self.skipped_ticks == 0:
                    log.warning("collecting and pushing took %.1f s, longer than the interval of %g s; "
                                "skipping %d collection(s) (logged once)",
                                self.monotonic() - tick, self.interval, missed)
                self.skipped_ticks += missed
            if self.wait(max(0.0, wake - self.monotonic())):
                break
        self.goodbye()

    def suspend(self, timeout: float) -> Optional[PushResult]:
        """The host is about to sleep or hibernate: say goodbye within `timeout` seconds, then report
        nothing until `resume`, so that the collector shows a clean stop rather than a dead agent.

        Called from another thread (the service's control handler, which Windows gives about two
        seconds). None when a collection or push in flight did not end in time: the host then goes
        stale as it would have without the notice."""
        end = self.monotonic() + timeout
        self._asleep.set()
        if not self._busy.acquire(timeout=max(0.0, timeout / 2)):
            log.warning("going to sleep: a push in flight did not end in time, no goodbye sent")
            return None
        try:
            result = self.pusher.push(report_to_doc(self.report(goodbye=True)), end, sleep=self.sleep)
        finally:
            self._busy.release()
        log.info("going to sleep: %s", "said goodbye" if result.accepted else
                 f"the goodbye was not delivered ({result.reason or result.outcome})")
        return result

    def resume(self) -> None:
        """The host woke up: report again from the next collection on."""
        if self._asleep.is_set():
            self._asleep.clear()
            log.info("resumed from sleep; reporting again")

    def goodbye(self) -> PushResult:
        """The last report, marked goodbye; retried for a few seconds, not interruptible."""
        deadline = self.monotonic() + min(GOODBYE_SECONDS, max(self.config.agent.timeout, 1.0))
        with self._busy:  # not while a sleep notice's goodbye collects: the collectors are not thread-safe
            result = self.pusher.push(report_to_doc(self.report(goodbye=True)), deadline, sleep=self.sleep)
        if result.accepted:
            log.info("stopped; the collector shows this host as stopped")
        else:
            log.warning("stopped without delivering the goodbye (%s): the collector will show this host "
                        "as down after a few missed intervals", result.reason or result.outcome)
        return result
