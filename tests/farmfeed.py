"""A thread that feeds a simulated farm to real collectors, one tick a second, until stopped.

Shared by the tests that run a live Prometheus over a farm (the dashboard truth test and the cookbook):
the schedule, the error capture, waiting for ticks, freezing the farm and the life of a tick (`FarmFeeder`:
the farm stepped, one agent dying, one host saying goodbye) are the same; where a host's report goes and
what else a tick posts is each test's.
"""

from __future__ import annotations

import threading
import time
from typing import Iterable, List

import requests

from agent.simfarm import Farm, SimHost


class TickingFeeder(threading.Thread):
    """Calls `tick()` once a second; `freeze` asks the ticks to stop stepping the farm (each test's `tick`
    honours it and sets `frozen` once a tick ran frozen). Errors are collected for the test, never raised."""

    def __init__(self, name: str, targets: Iterable[str]):
        super().__init__(daemon=True, name=name)
        self.sessions = {target: requests.Session() for target in targets}
        self.started = time.time()
        self.ticks = 0
        self.stopping = threading.Event()
        self.freeze = threading.Event()
        self.frozen = threading.Event()  # set once a tick ran on the frozen farm
        self.errors: List[str] = []
        self.ticked = threading.Condition()

    def tick(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stopping.is_set():
            try:
                self.tick()
            except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
                if not self.stopping.is_set():
                    self.errors.append(f"feeder: {e!r}")
            with self.ticked:
                self.ticks += 1
                self.ticked.notify_all()
            next_at += 1.0
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def wait_ticks(self, n: int, timeout: float = 60.0) -> None:
        with self.ticked:
            assert self.ticked.wait_for(lambda: self.ticks >= n, timeout), f"feeder stuck at tick {self.ticks}"

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)
        for s in self.sessions.values():
            s.close()


class FarmFeeder(TickingFeeder):
    """A tick: the farm stepped to `sim_now` (unless frozen), `dead`'s agent killed at tick 3, every host
    that reports posted by `post_host` (`goodbye` says goodbye at tick 4 and nothing after), then
    `after_hosts()`; simulated time moves on by `sim_step`, or `frozen` is set."""

    def __init__(self, name: str, targets: Iterable[str], farm: Farm, sim_start: float, sim_step: float,
                 dead: str, goodbye: str):
        super().__init__(name, targets)
        self.farm, self.sim_now, self.sim_step = farm, sim_start, sim_step
        self.dead, self.goodbye = dead, goodbye

    def post_host(self, h: SimHost, goodbye: bool) -> None:
        raise NotImplementedError

    def after_hosts(self) -> None:
        """What else a tick posts; nothing by default."""

    def tick(self) -> None:
        frozen = self.freeze.is_set()
        if not frozen:
            self.farm.step(self.sim_now)
        if self.ticks == 3:
            self.farm.fault(self.dead, "agent_dies", self.sim_now)
        for h in self.farm.hosts:
            if not h.reporting() or (h.name == self.goodbye and self.ticks > 4):
                continue
            self.post_host(h, goodbye=h.name == self.goodbye and self.ticks == 4)
        self.after_hosts()
        if frozen:
            self.frozen.set()
        else:
            self.sim_now += self.sim_step
