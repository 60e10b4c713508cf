from __future__ import annotations

import pytest

from agent.collectors.interfaces import InterfacesCollector, is_loopback
from contract.report import DEFAULT_LIMITS
from tests.agent import fakepsutil
from tests.agent.helpers import collected, parse_reading


def collect(fixture: str, **changes):
    return collected(InterfacesCollector.from_context(fakepsutil.context(fakepsutil.load(fixture, **changes))))


def test_linux_skips_loopback_and_maps_every_counter() -> None:
    reading = collect("linux")
    assert [i["interface"] for i in reading] == ["docker0", "ens192", "eth0"]
    assert reading[1] == {"interface": "ens192", "receive_bytes": 123456789012, "transmit_bytes": 987654321,
                          "receive_packets": 98765432, "transmit_packets": 4567890, "receive_errors": 3,
                          "transmit_errors": 1, "receive_drops": 250, "transmit_drops": 2}
    assert len(parse_reading("interfaces", reading).interfaces) == 3


def test_windows_skips_the_loopback_pseudo_interface() -> None:
    reading = collect("windows")
    assert [i["interface"] for i in reading] == ["Ethernet0", "Ethernet1"]
    assert reading[0]["receive_bytes"] == 987654321000 and reading[0]["receive_drops"] == 12


@pytest.mark.parametrize("name, os, expected", [
    ("lo", "linux", True), ("lo:1", "linux", True), ("lo0", "darwin", True), ("eth0", "linux", False),
    ("Loopback Pseudo-Interface 1", "windows", True), ("Local Area Connection", "windows", False),
    ("Ethernet0", "windows", False),
])
def test_is_loopback(name: str, os: str, expected: bool) -> None:
    assert is_loopback(name, os) is expected


def test_capped_at_the_contract_limit_first_by_name() -> None:
    row = {"bytes_sent": 1, "bytes_recv": 2, "packets_sent": 3, "packets_recv": 4,
           "errin": 0, "errout": 0, "dropin": 0, "dropout": 0}
    nics = {f"veth{i:03d}": row for i in reversed(range(DEFAULT_LIMITS.max_interfaces + 20))}
    nics["lo"] = row
    reading = collect("linux", net_io_counters=nics)
    assert [i["interface"] for i in reading] == [f"veth{i:03d}" for i in range(DEFAULT_LIMITS.max_interfaces)]
    parse_reading("interfaces", reading)
