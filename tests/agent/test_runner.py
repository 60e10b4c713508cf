from __future__ import annotations

import random
import threading
from typing import Any, Dict, List, Tuple

import pytest

from agent.config import AgentConfig, AgentSection
from agent.push import ACCEPTED, PushResult
from agent.runner import Agent, _linux_pretty_name, agent_info, build_report, next_tick, os_release
from contract.report import AgentInfo, CollectorStatus, Load, parse_report, report_to_doc
from tests.conftest import FakeClock as Clock

AGENT = {"version": "0.1.0", "os": "windows", "os_release": "Windows Server 2022 Datacenter 10.0.20348",
         "interval_seconds": 15.0, "start_time_seconds": 1764540000.0}
INFO = AgentInfo(**AGENT)


def test_build_report_from_literal_inputs() -> None:
    built = build_report(
        host="vda-win-01", site="City Hall", delivery_group="Office Desktops", timestamp=1764547200.2504,
        agent=INFO, statuses=[CollectorStatus("load", True, 0.0001)], readings={"load": Load(2.5, 2.25, 1.75)})
    report = report_to_doc(built)
    assert report == {
        "schema_version": 1, "host": "vda-win-01", "site": "City Hall", "delivery_group": "Office Desktops",
        "timestamp_seconds": 1764547200.25, "agent": AGENT,
        "collectors": {"load": {"success": True, "duration_seconds": 0.0001}},
        "readings": {"load": {"load1": 2.5, "load5": 2.25, "load15": 1.75}},
    }
    parsed = parse_report(report)
    assert parsed == built
    assert parsed.goodbye is False and parsed.load.load15 == 1.75 and parsed.agent.interval_seconds == 15.0


def test_goodbye_report() -> None:
    report = report_to_doc(build_report(host="vda-win-02", site="s", delivery_group="g", timestamp=1.0,
                                        agent=INFO, statuses=[], readings={}, goodbye=True))
    assert report["goodbye"] is True
    assert parse_report(report).goodbye is True


def test_agent_info() -> None:
    assert agent_info(interval=15.0, start_time=1764540000.0004, os="linux", os_release="Debian 12",
                      version="9.9") == AgentInfo(version="9.9", os="linux", os_release="Debian 12",
                                                  interval_seconds=15.0, start_time_seconds=1764540000.0)


@pytest.mark.parametrize("now, expected", [
    (100.0, 115.0), (100.001, 115.0), (114.999, 115.0), (115.0, 130.0), (146.0, 160.0), (99.0, 115.0),
])
def test_next_tick(now: float, expected: float) -> None:
    assert next_tick(100.0, 15.0, now) == expected


def test_next_tick_is_always_a_tick_after_now_and_within_one_interval() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        start = rng.uniform(0, 1e6)
        interval = rng.choice([1.0, 2.5, 15.0, 60.0, 0.1 + rng.random() * 100])
        now = start + rng.uniform(0, 1e5)
        tick = next_tick(start, interval, now)
        assert now < tick <= now + interval + 1e-6
        k = (tick - start) / interval
        assert abs(k - round(k)) < 1e-6


def test_os_release_is_a_usable_label() -> None:
    text = os_release()
    assert text and len(text) <= 128 and text.isprintable()


def test_linux_pretty_name(tmp_path) -> None:
    path = tmp_path / "os-release"
    path.write_text('NAME="Debian GNU/Linux"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n')
    assert _linux_pretty_name(str(path)) == "Debian GNU/Linux 12 (bookworm)"


class FakeRunner:
    """Collectors that take `costs[i]` seconds on the i-th run (the last cost repeats)."""

    def __init__(self, clock: Clock, costs: List[float]):
        self.clock = clock
        self.costs = costs
        self.started: List[float] = []

    def run_all(self) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        self.started.append(self.clock.now)
        self.clock.now += self.costs[min(len(self.started) - 1, len(self.costs) - 1)]
        return {"load": Load(1.0, 1.0, 1.0)}, {"load": CollectorStatus("load", True, 0.001)}


class FakePusher:
    url = "http://collector:9847/api/v1/reports"

    def __init__(self, clock: Clock, cost: float = 0.3):
        self.clock = clock
        self.cost = cost
        self.pushed: List[Tuple[Dict[str, Any], float, float]] = []  # (report, deadline, sent at)

    def push(self, report: Dict[str, Any], deadline: float, sleep: Any = None) -> PushResult:
        self.pushed.append((report, deadline, self.clock.now))
        self.clock.now += self.cost
        return PushResult(ACCEPTED, 1, 200)


def make_agent(costs: List[float], stop_after: int):
    mono = Clock(5000.0)
    wall = Clock(1796083200.0)
    stop = threading.Event()
    runner = FakeRunner(mono, costs)
    pusher = FakePusher(mono)

    def wait(seconds: float) -> bool:
        mono.now += seconds
        wall.now += seconds
        if len(runner.started) >= stop_after:
            stop.set()
        return stop.is_set()

    config = AgentConfig(agent=AgentSection(interval=15.0, site="City Hall", delivery_group="Office"))
    agent = Agent(config=config, host="vda-win-01", runner=runner, pusher=pusher, stop=stop, os="windows",
                  release="Windows Server 2022", clock=wall, monotonic=mono, wait=wait, sleep=lambda s: None)
    return agent, runner, pusher


def test_schedule_does_not_drift_with_the_work_it_does() -> None:
    agent, runner, pusher = make_agent(costs=[2.0, 0.7, 3.1, 0.05, 1.0], stop_after=6)
    agent.run()
    assert runner.started[:6] == [5000.0, 5015.0, 5030.0, 5045.0, 5060.0, 5075.0]
    # Each push may retry until the next collection, and no longer.
    assert [deadline for _r, deadline, _at in pusher.pushed[:6]] == [5015.0, 5030.0, 5045.0, 5060.0, 5075.0, 5090.0]


def test_a_tick_missed_by_slow_work_is_skipped_not_run_late(caplog) -> None:
    agent, runner, pusher = make_agent(costs=[1.0, 20.0, 1.0], stop_after=4)
    agent.run()
    # The collection at 5015 ends at 5035: the tick at 5030 is skipped, the next one is on schedule.
    assert runner.started[:4] == [5000.0, 5015.0, 5045.0, 5060.0]
    assert agent.skipped_ticks == 1
    # The slow collection's report may still be retried until the next tick ahead of it.
    assert pusher.pushed[1][1:] == (5045.0, 5035.0)
    assert len([r for r in caplog.records if "skipping 1 collection" in r.getMessage()]) == 1


def test_stop_sends_one_goodbye_with_fresh_readings() -> None:
    agent, runner, pusher = make_agent(costs=[0.5], stop_after=2)
    agent.run()
    goodbyes = [r for r, _d, _at in pusher.pushed if r.get("goodbye")]
    assert len(goodbyes) == 1 and pusher.pushed[-1][0] is goodbyes[0]
    assert len(runner.started) == 3  # two scheduled collections and the goodbye's own
    report, deadline, sent_at = pusher.pushed[-1]
    assert deadline - sent_at <= 10.0
    parsed = parse_report(report)
    assert parsed.goodbye and parsed.host == "vda-win-01" and parsed.site == "City Hall"
    assert parsed.agent.os == "windows" and parsed.agent.start_time_seconds == 1796083200.0
    assert parsed.timestamp_seconds > parsed.agent.start_time_seconds


def test_stop_before_the_first_collection_still_says_goodbye() -> None:
    agent, runner, pusher = make_agent(costs=[0.5], stop_after=0)
    agent.stop.set()
    agent.run()
    assert [r.get("goodbye") for r, _d, _at in pusher.pushed] == [True]


def test_schedule_phase_spreads_a_fleet_evenly() -> None:
    from agent.runner import schedule_phase
    phases = [schedule_phase(f"vda-{i:04d}", 15.0) for i in range(1500)]
    buckets = [0] * 5
    for p in phases:
        assert 0.0 <= p < 15.0
        buckets[int(p // 3)] += 1
    assert all(250 < b < 350 for b in buckets), buckets
    assert schedule_phase("VDA-0001", 15.0) == schedule_phase("vda-0001", 15.0)


def test_phase_sends_the_first_report_at_once_and_shifts_the_rest() -> None:
    agent, runner, _pusher = make_agent(costs=[1.0], stop_after=3)
    agent.phase = 6.0
    agent.run()
    assert runner.started[:3] == [5000.0, 5009.0, 5024.0]
