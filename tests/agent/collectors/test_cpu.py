from __future__ import annotations

import pytest

from agent.collectors.cpu import CpuCollector
from tests.agent import fakepsutil
from tests.agent.helpers import collected, parse_reading


def collect(fixture: str, **changes):
    return collected(CpuCollector.from_context(fakepsutil.context(fakepsutil.load(fixture, **changes))))


def test_linux_modes_exclude_guest_time_already_in_user_and_nice() -> None:
    reading = collect("linux")
    assert reading["count"] == 2
    assert reading["seconds"] == {"user": 230.26, "nice": 0.5, "system": 83.74, "idle": 37691.09,
                                  "iowait": 7.36, "irq": 0.0, "softirq": 3.02, "steal": 0.17}


def test_windows_modes_are_taken_as_psutil_names_them() -> None:
    reading = collect("windows")
    assert reading == {"count": 8, "seconds": {"user": 51234.5, "system": 12001.25, "idle": 880021.0,
                                               "interrupt": 310.5, "dpc": 95.0}}


@pytest.mark.parametrize("fixture", ["linux", "windows"])
def test_reading_passes_the_contract(fixture: str) -> None:
    cpu = parse_reading("cpu", collect(fixture)).cpu
    assert cpu is not None and cpu.count >= 1
    assert "guest" not in dict(cpu.seconds)


def test_unknown_cpu_count_is_a_failure_not_a_zero() -> None:
    with pytest.raises(RuntimeError, match="number of logical CPUs"):
        collect("linux", cpu_count=None)
