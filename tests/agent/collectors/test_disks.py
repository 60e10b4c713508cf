from __future__ import annotations

import pytest

from agent.collectors.disks import DisksCollector, parent_disk
from contract.report import DEFAULT_LIMITS
from tests.agent import fakepsutil
from tests.agent.helpers import collected, parse_reading


def collect(fixture: str, **changes):
    return collected(DisksCollector.from_context(fakepsutil.context(fakepsutil.load(fixture, **changes))))


def test_linux_skips_loop_ram_and_partitions_of_listed_disks() -> None:
    reading = collect("linux")
    # sdg3 stays: its disk sdg is not listed, so nothing else counts its I/O.
    assert [d["device"] for d in reading] == ["dm-0", "nvme0n1", "sda", "sdg3", "sr0", "vda"]
    assert len(parse_reading("disks", reading).disks) == 6


def test_linux_io_time_is_busy_time_in_seconds() -> None:
    vda = next(d for d in collect("linux") if d["device"] == "vda")
    assert vda == {"device": "vda", "read_bytes": 2073965568, "written_bytes": 1555578880,
                   "reads_completed": 90341, "writes_completed": 30217, "io_time_seconds": 10.744}


def test_windows_io_time_is_read_plus_write_time() -> None:
    reading = collect("windows")
    assert [d["device"] for d in reading] == ["PhysicalDrive0", "PhysicalDrive1"]
    assert reading[0]["io_time_seconds"] == pytest.approx((1234500 + 2222000) / 1000)  # 3456.5
    assert reading[1]["io_time_seconds"] == pytest.approx((45000 + 987000) / 1000)


def test_linux_name_rules_are_not_applied_on_windows() -> None:
    counters = {"loop0": {"read_count": 1, "write_count": 1, "read_bytes": 1, "write_bytes": 1,
                          "read_time": 1, "write_time": 1}}
    assert [d["device"] for d in collect("windows", disk_io_counters=counters)] == ["loop0"]


def test_no_disks_is_an_empty_list() -> None:
    assert collect("linux", disk_io_counters=None) == []
    assert collect("windows", disk_io_counters={}) == []


@pytest.mark.parametrize("name, parent", [
    ("sda1", "sda"), ("xvdb2", "xvdb"), ("nvme0n1p1", "nvme0n1"), ("mmcblk0p2", "mmcblk0"),
    ("sda", None), ("nvme0n1", None), ("dm-0", None),
])
def test_parent_disk(name: str, parent) -> None:
    assert parent_disk(name) == parent


def test_capped_at_the_contract_limit() -> None:
    row = {"read_count": 1, "write_count": 1, "read_bytes": 1, "write_bytes": 1, "read_time": 1,
           "write_time": 1, "busy_time": 1}
    counters = {f"dm-{i}": row for i in range(DEFAULT_LIMITS.max_disks + 10)}
    reading = collect("linux", disk_io_counters=counters)
    assert len(reading) == DEFAULT_LIMITS.max_disks
    assert reading == sorted(reading, key=lambda d: d["device"])
    parse_reading("disks", reading)
