"""vdiwatch-sim: a simulated farm pushing real reports to real collectors.

Each simulated host's readings come from `agent.simfarm`; the report around
them is built by the agent's own `build_report` and pushed by the agent's own
`Pusher`, so the collector cannot tell a simulated host from a real one except
by its session source ("simulated"). Used by `make run` to show a populated
farm, by the load tests and by the alert and dashboard rehearsals.

    vdiwatch-sim --hosts 300 --collector http://127.0.0.1:9847
    vdiwatch-sim --hosts 50 --speed 60 --start-hour 7 --fault sim-0003=black_hole
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from agent import __version__
from agent.failover import Chooser, FailoverPusher
from agent.push import Pusher
from agent.runner import agent_info, build_report
from agent.simfarm import FAULTS, POWER_DOWN_ACTIONS, Farm, SimHost
from contract.report import CollectorStatus, Report, report_to_doc

log = logging.getLogger("agent.sim")


class Simulation:
    """Steps the farm on simulated time and pushes one report per reporting host per interval."""

    def __init__(self, farm: Farm, urls: Sequence[str], *, interval: float = 15.0, speed: float = 1.0,
                 start: Optional[float] = None, token: str = "", workers: int = 8,
                 clock: Callable[[], float] = time.time, skip: Optional[Tuple[float, float]] = None):
        self.farm = farm
        self.urls = list(urls)
        self.interval = interval
        self.speed = speed
        self.clock = clock
        self.real_start = clock()
        self.sim_start = self.real_start if start is None else start
        self.skip = skip
        self.token = token
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sim-push")
        self._local = threading.local()
        self._choosers: Dict[str, Chooser] = {}  # per host: which collector it prefers and which failed
        self.started: Dict[str, float] = {}  # host -> when its (simulated) agent started
        self.was_reporting: Dict[str, bool] = {}
        self.frozen: Dict[str, bool] = {}  # hosts the hypervisor suspended: their agent runs on after resume
        self.sent = 0
        self.failed = 0

    def sim_now(self) -> float:
        return simulated_time(self.clock(), self.real_start, self.sim_start, self.speed, self.skip)

    def _pusher(self, host: str) -> FailoverPusher:
        cache = getattr(self._local, "pushers", None)
        if cache is None:
            cache = self._local.pushers = {url: Pusher(url, token=self.token, timeout=5.0) for url in self.urls}
        return FailoverPusher(self.urls, host, pushers=cache, chooser_cache=self._choosers)

    def report(self, h: SimHost, sim_now: float, real_now: float, goodbye: bool = False) -> Report:
        started = self.started.setdefault(h.name, real_now)
        readings = h.sample(sim_now)
        return build_report(
            host=h.name, site=h.site, delivery_group=h.delivery_group,
            timestamp=real_now + h.clock_offset(),
            agent=agent_info(interval=self.interval, start_time=started, os="windows",
                             os_release="Windows Server 2022 (simulated)", version=__version__),
            statuses=[CollectorStatus(name, True, 0.001) for name in readings],
            readings=readings, goodbye=goodbye)

    def _pass_the_night(self, sim_now: float) -> None:
        """When the clock jumps over the skipped night, the farm lives through it a report interval at a
        time (nothing is pushed): one step of many hours would disconnect every session at once and
        turn a night of counters into one interval's rate."""
        last = self.farm.last
        if self.skip is None or last is None or not last < self.skip[0] <= sim_now:
            return
        step = max(self.interval * self.speed, 60.0)
        t = last + step
        while t < sim_now:
            self.farm.step(t)
            t += step

    def _push(self, report: Report, deadline: float):
        return self._pusher(report.host).push(report_to_doc(report), deadline)

    def tick(self) -> Tuple[int, int]:
        """One interval: step the farm, push every reporting host (and goodbyes); returns (sent, failed)."""
        sim_now, real_now = self.sim_now(), self.clock()
        self._pass_the_night(sim_now)
        self.farm.step(sim_now)
        jobs = []
        for h in self.farm.hosts:
            reporting = h.reporting()
            before = self.was_reporting.get(h.name, False)
            self.was_reporting[h.name] = reporting
            if reporting:
                if not before and not self.frozen.pop(h.name, False):
                    self.started[h.name] = real_now  # a (re)started agent
                jobs.append(self.report(h, sim_now, real_now))
            elif before and h.suspended:
                self.frozen[h.name] = True  # saved by the hypervisor: silent, no goodbye
            elif before and not h.powered:
                jobs.append(self.report(h, sim_now, real_now, goodbye=True))  # a clean power-down
                self.started.pop(h.name, None)
            elif not h.powered and self.frozen.pop(h.name, False):
                self.started.pop(h.name, None)  # saved, then powered off: it boots afresh
        deadline = time.monotonic() + self.interval * 0.8
        results = list(self.pool.map(lambda r: self._push(r, deadline), jobs))
        sent = sum(1 for r in results if r.accepted)
        self.sent += sent
        self.failed += len(results) - sent
        return sent, len(results) - sent

    def run(self, stop: threading.Event) -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            sent, failed = self.tick()
            log.debug("pushed %d report(s), %d failed", sent, failed)
            next_at += self.interval
            stop.wait(max(0.0, next_at - time.monotonic()))
        self.goodbye()

    def goodbye(self) -> None:
        """Everyone says goodbye when the simulation ends, like a farm shut down cleanly."""
        real_now = self.clock()
        jobs = [self.report(h, self.sim_now(), real_now, goodbye=True)
                for h in self.farm.hosts if self.was_reporting.get(h.name)]
        deadline = time.monotonic() + 5
        list(self.pool.map(lambda r: self._push(r, deadline), jobs))
        self.pool.shutdown()


def simulated_time(real: float, real_start: float, sim_start: float, speed: float,
                   skip: Optional[Tuple[float, float]] = None) -> float:
    """Simulated time at real time `real`: `speed` simulated seconds per real second from `sim_start`, and
    past `skip[0]` on (if given) `skip[1] - skip[0]` later: a night passed over in one step."""
    t = sim_start + (real - real_start) * speed
    if skip is not None and t >= skip[0]:
        t += skip[1] - skip[0]
    return t


def parse_fault(text: str) -> Tuple[str, str]:
    host, sep, kind = text.partition("=")
    if not sep or kind not in FAULTS:
        raise argparse.ArgumentTypeError(f"expected HOST=FAULT with FAULT one of {', '.join(FAULTS)}")
    return host, kind


def day_start(now: float, hour: float) -> float:
    """Today's `hour` (UTC) as Unix time: where simulated time begins."""
    return now - (now % 86400) + hour * 3600


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="vdiwatch-sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", type=int, default=200, help="simulated hosts (default 200)")
    p.add_argument("--sites", type=int, default=2)
    p.add_argument("--groups-per-site", type=int, default=3)
    p.add_argument("--max-sessions", type=int, default=20, help="sessions per shared host")
    p.add_argument("--collector", action="append", dest="collectors", metavar="URL",
                   help="collector URL (repeat for replicas; default http://127.0.0.1:9847)")
    p.add_argument("--token", default="", help="push token, if the collector requires one")
    p.add_argument("--interval", type=float, default=15.0, help="seconds between reports (real time)")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    p.add_argument("--start-hour", type=float, help="simulated time starts today at this hour (UTC)")
    p.add_argument("--fault", action="append", type=parse_fault, default=[], metavar="HOST=FAULT",
                   help=f"put a fault on a host: {', '.join(FAULTS)}")
    p.add_argument("--site-fault", action="append", type=parse_fault, default=[], metavar="SITE=FAULT",
                   help="put a fault on every host of a site (site-1=network_degraded: a site's network degraded)")
    p.add_argument("--power-down", choices=POWER_DOWN_ACTIONS, default="shutdown",
                   help="what power management does to pooled desktops at night: shutdown (the agent says goodbye, "
                        "the default) or suspend (saved by the hypervisor: silent)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--log-level", default="info")
    p.add_argument("--version", action="version", version=f"vdiwatch-sim {__version__}")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    farm = Farm.build(args.hosts, args.sites, args.groups_per_site, args.max_sessions, seed=args.seed,
                      power_down_action=args.power_down)
    now = time.time()
    start = None if args.start_hour is None else day_start(now, args.start_hour)
    for host, kind in args.fault:
        try:
            farm.fault(host, kind, start or now)
        except KeyError as e:
            p.error(str(e))
    for site, kind in args.site_fault:
        try:
            farm.fault_site(site, kind, start or now)
        except KeyError as e:
            p.error(str(e))
    sim = Simulation(farm, args.collectors or ["http://127.0.0.1:9847"], interval=args.interval,
                     speed=args.speed, start=start, token=args.token)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _s, _f: stop.set())
    log.info("simulating %d hosts in %d delivery groups, reporting every %g s to %s", args.hosts,
             args.sites * args.groups_per_site, args.interval, ", ".join(sim.urls))
    sim.run(stop)
    log.info("stopped after %d reports (%d not delivered)", sim.sent, sim.failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
