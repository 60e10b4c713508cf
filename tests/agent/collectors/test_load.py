from __future__ import annotations

from agent.collectors.load import LoadCollector
from tests.agent import fakepsutil
from tests.agent.helpers import collected, parse_reading


def test_load_average_is_read_as_floats() -> None:
    reading = collected(LoadCollector.from_context(fakepsutil.context(fakepsutil.load("linux"))))
    assert reading == {"load1": 2.21484375, "load5": 0.77294921875, "load15": 0.3134765625}
    assert parse_reading("load", reading).load.load5 == 0.77294921875


def test_windows_emulated_load_at_start_is_zero_and_valid() -> None:
    fake = fakepsutil.load("windows", getloadavg=[0, 0, 0])
    reading = collected(LoadCollector.from_context(fakepsutil.context(fake)))
    assert reading == {"load1": 0.0, "load5": 0.0, "load15": 0.0}
    assert all(isinstance(v, float) for v in reading.values())
