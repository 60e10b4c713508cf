"""A thread that feeds a simulated farm to real collectors, one tick a second, until stopped.

Shared by the tests that run a live Prometheus over a farm (the dashboard truth test and the cookbook):
the schedule, the error capture, waiting for ticks and freezing the farm are the same; what a tick posts
is each test's `tick()`.
"""

from __future__ import annotations

import threading
import time
from typing import Iterable, List

import requests


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
