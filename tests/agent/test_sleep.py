"""A host that goes to sleep says goodbye first (Windows' power notice), and reports again when it wakes.

The agent's part runs here for real: its schedule thread, and in the end-to-end case a real collector over
HTTP. Windows' part, the SCM delivering SERVICE_CONTROL_POWEREVENT to the service class, is driven through
the fake ServiceFramework of tests/deploy/test_winservice_host.py.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, List

import pytest
import requests

from agent.config import AgentConfig, AgentSection
from agent.push import ACCEPTED, PushResult
from agent.runner import Agent
from agent.wiring import build_agent
from contract.report import CollectorStatus, Load
from tests.agent import fakepsutil
from tests.conftest import CollectorProcess, wait_until


class StaticRunner:
    def run_all(self):
        return {"load": Load(1.0, 1.0, 1.0)}, {"load": CollectorStatus("load", True, 0.001)}


class ThreadedPusher:
    """Records every push; a push may be made to hang until released."""

    url = "http://collector:9847/api/v1/reports"

    def __init__(self) -> None:
        self.pushed: List[Dict[str, Any]] = []
        self.lock = threading.Lock()
        self.hang = threading.Event()  # set: the next scheduled push blocks until `release`
        self.release = threading.Event()

    def push(self, report: Dict[str, Any], deadline: float, sleep: Any = None) -> PushResult:
        if self.hang.is_set() and not report.get("goodbye"):
            self.hang.clear()
            self.release.wait(10)
        with self.lock:
            self.pushed.append(report)
        return PushResult(ACCEPTED, 1, 200)

    def kinds(self) -> List[str]:
        with self.lock:
            return ["goodbye" if r.get("goodbye") else "report" for r in self.pushed]


def running_agent(pusher: ThreadedPusher, interval: float = 0.05):
    config = AgentConfig(agent=AgentSection(interval=interval, site="City Hall", delivery_group="Office"))
    stop = threading.Event()
    agent = Agent(config=config, host="vda-win-01", runner=StaticRunner(), pusher=pusher, stop=stop, os="windows",
                  release="Windows 11")
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    return agent, stop, thread


def test_suspend_says_goodbye_then_nothing_until_resume() -> None:
    pusher = ThreadedPusher()
    agent, stop, thread = running_agent(pusher)
    try:
        wait_until(lambda: pusher.kinds().count("report") >= 2, timeout=5, what="two reports")
        result = agent.suspend(1.5)
        assert result is not None and result.accepted
        asleep = pusher.kinds()
        assert asleep[-1] == "goodbye" and asleep.count("goodbye") == 1
        time.sleep(0.3)  # six intervals asleep
        assert pusher.kinds() == asleep, "reported while asleep"
        agent.resume()
        wait_until(lambda: pusher.kinds()[len(asleep):].count("report") >= 2, timeout=5, what="reports after resume")
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
    assert pusher.kinds()[-1] == "goodbye" and pusher.kinds().count("goodbye") == 2


def test_a_push_in_flight_that_outlasts_the_notice_means_no_goodbye() -> None:
    pusher = ThreadedPusher()
    agent, stop, thread = running_agent(pusher)
    try:
        wait_until(lambda: pusher.kinds(), timeout=5, what="a first report")
        pusher.hang.set()
        wait_until(lambda: not pusher.hang.is_set(), timeout=5, what="a push hanging")
        assert agent.suspend(0.2) is None
        assert "goodbye" not in pusher.kinds()
    finally:
        pusher.release.set()
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_resume_without_suspend_changes_nothing() -> None:
    pusher = ThreadedPusher()
    agent, stop, thread = running_agent(pusher)
    try:
        agent.resume()
        wait_until(lambda: pusher.kinds().count("report") >= 3, timeout=5, what="reports")
        assert "goodbye" not in pusher.kinds()
    finally:
        stop.set()
        thread.join(5)


@pytest.mark.slow
def test_the_collector_shows_a_sleeping_host_as_stopped_and_a_woken_one_as_up(tmp_path) -> None:
    collector = CollectorProcess(tmp_path, "[collector]\nmin_report_interval = 0\n").start()
    try:
        config = AgentConfig(agent=AgentSection(collector_url=collector.url, interval=1.0, timeout=1.0,
                                                host="vda-sleep-01", disabled_collectors=("sessions",)))
        stop = threading.Event()
        agent = build_agent(config, "vda-sleep-01", stop, psutil_module=fakepsutil.load("windows"))
        thread = threading.Thread(target=agent.run, daemon=True)
        thread.start()

        def state() -> str:
            hosts = requests.get(f"{collector.url}/api/v1/hosts", timeout=5).json()["hosts"]
            return next((h["state"] for h in hosts if h["host"] == "vda-sleep-01"), "")

        wait_until(lambda: state() == "up", timeout=10, what="the host up")
        result = agent.suspend(1.5)
        assert result is not None and result.accepted
        assert state() == "stopped"
        time.sleep(4.5)  # past the collector's 3 missed intervals: asleep is not dead
        assert state() == "stopped"
        agent.resume()
        wait_until(lambda: state() == "up", timeout=10, what="the host up again after resume")
        stop.set()
        thread.join(15)
        assert not thread.is_alive()
    finally:
        collector.stop()


class GatedRunner(StaticRunner):
    """Counts collections running at once; a goodbye collection may be held until `release`."""

    def __init__(self) -> None:
        self.running = 0
        self.overlapped = False
        self.hold_next = threading.Event()
        self.holding = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()

    def run_all(self):
        with self.lock:
            self.running += 1
            self.overlapped |= self.running > 1
            hold = self.hold_next.is_set()
            self.hold_next.clear()
        try:
            if hold:
                self.holding.set()
                self.release.wait(5)
            return super().run_all()
        finally:
            with self.lock:
                self.running -= 1


def test_a_stop_during_the_sleep_goodbye_waits_for_it_rather_than_collect_at_the_same_time() -> None:
    """The collectors are not thread-safe (an open PDH query, the logons bookmarks): the goodbye of a stop
    must not run them while the sleep notice's goodbye does."""
    pusher, runner = ThreadedPusher(), GatedRunner()
    config = AgentConfig(agent=AgentSection(interval=0.05, site="City Hall", delivery_group="Office"))
    stop = threading.Event()
    agent = Agent(config=config, host="vda-win-01", runner=runner, pusher=pusher, stop=stop, os="windows",
                  release="Windows 11")
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: pusher.kinds().count("report") >= 1, timeout=5, what="a report")
        runner.hold_next.set()
        suspending = threading.Thread(target=agent.suspend, args=(1.5,), daemon=True)
        suspending.start()
        assert runner.holding.wait(5), "the sleep goodbye's collection did not start"
        stop.set()
        time.sleep(0.3)  # the run loop ends and says its own goodbye
    finally:
        runner.release.set()
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
    assert not runner.overlapped, "two collections ran at once"
    assert pusher.kinds()[-2:] == ["goodbye", "goodbye"]
