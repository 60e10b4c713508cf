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
