from __future__ import annotations

import pytest

from agent.collectors.system import SystemCollector
from tests.agent import fakepsutil
from tests.agent.helpers import collected, parse_reading


@pytest.mark.parametrize("fixture, boot, processes", [("linux", 1796067574.0, 72), ("windows", 1764460800.0, 412)])
def test_boot_time_and_process_count(fixture: str, boot: float, processes: int) -> None:
    reading = collected(SystemCollector.from_context(fakepsutil.context(fakepsutil.load(fixture))))
    assert reading == {"boot_time_seconds": boot, "processes": processes}
    assert parse_reading("system", reading).system.processes == processes
