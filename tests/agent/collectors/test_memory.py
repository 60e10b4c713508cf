from __future__ import annotations

import pytest

from agent.collectors.memory import MemoryCollector
from tests.agent import fakepsutil
from tests.agent.helpers import collected, parse_reading


@pytest.mark.parametrize("fixture, expected", [
    ("linux", {"total_bytes": 25276059648, "available_bytes": 23765483520,
               "swap_total_bytes": 2147479552, "swap_used_bytes": 262144}),
    ("windows", {"total_bytes": 34359738368, "available_bytes": 12884901888,
                 "swap_total_bytes": 8589934592, "swap_used_bytes": 1073741824}),
])
def test_available_not_free_and_swap(fixture: str, expected: dict) -> None:
    reading = collected(MemoryCollector.from_context(fakepsutil.context(fakepsutil.load(fixture))))
    assert reading == expected
    assert parse_reading("memory", reading).memory.available_bytes == expected["available_bytes"]


def test_memory_is_reported_without_swap_when_only_swap_fails(caplog) -> None:
    ps = fakepsutil.load("windows")

    def broken_counters():
        raise RuntimeError("(pdh) the paging file counter is missing")

    ps.swap_memory = broken_counters
    collector = MemoryCollector.from_context(fakepsutil.context(ps))
    with caplog.at_level("WARNING"):
        reading = collected(collector)
        collected(collector)
    assert reading == {"total_bytes": 34359738368, "available_bytes": 12884901888,
                       "swap_total_bytes": None, "swap_used_bytes": None}
    memory = parse_reading("memory", reading).memory
    assert (memory.total_bytes, memory.swap_total_bytes) == (34359738368, None)
    assert caplog.text.count("cannot read swap") == 1
