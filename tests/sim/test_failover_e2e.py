"""Two collector replicas and a simulated fleet: one replica dies, its hosts move within one interval."""

from __future__ import annotations

import re
import signal

import pytest

from agent.sim import Simulation
from agent.simfarm import Farm
from tests.conftest import CollectorProcess

pytestmark = pytest.mark.slow

CONFIG = "[collector]\nmin_report_interval = 0\n"


def up_hosts(text: str) -> set:
    return set(re.findall(r'^vdi_agent_up\{host="([^"]+)"[^}]*\} 1$', text, re.M))


def test_hosts_fail_over_within_one_interval_and_none_is_down(tmp_path) -> None:
    a = CollectorProcess(tmp_path, CONFIG).start()
    b = CollectorProcess(tmp_path, CONFIG).start()
    farm = Farm.build(40, seed=7)
    sim = Simulation(farm, [a.url, b.url], interval=2.0, start=1796083200 - 1796083200 % 86400 + 10 * 3600)
    try:
        sent, failed = sim.tick()
        assert (sent, failed) == (40, 0)
        on_a, on_b = up_hosts(a.metrics()), up_hosts(b.metrics())
        assert on_a and on_b and not on_a & on_b  # spread over both, each host on one
        assert len(on_a | on_b) == 40
        a.stop(signal.SIGKILL)
        sent, failed = sim.tick()  # the very next interval
        assert (sent, failed) == (40, 0)
        text = b.metrics()
        assert up_hosts(text) == on_a | on_b
        assert not re.search(r'^vdi_agent_up\{[^}]*\} 0$', text, re.M)
        assert not re.search(r'state="stale"\} 1$', text, re.M)
    finally:
        sim.pool.shutdown()
        a.stop()
        b.stop()
