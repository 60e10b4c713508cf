"""Cumulative I/O counters of the host's block devices.

On Linux, psutil lists every line of /proc/diskstats: whole disks, their
partitions and virtual devices. Loop, RAM (ram, zram) and floppy devices are
left out, and so is a partition whose whole disk is listed too (sda1 next to
sda, nvme0n1p1 next to nvme0n1), since the disk already counts its I/O.
Device-mapper and md devices are kept: they are the volumes people know. At
most `Limits.max_disks` entries are reported, the first by name.

`io_time_seconds` is the time the device was busy (Linux `busy_time`, in ms).
Windows has no busy time; there it is the sum of read and write time, which can
exceed wall-clock time when requests overlap.

Sample reading (Windows)::

    [{"device": "PhysicalDrive0", "read_bytes": 98765432100, "written_bytes": 123456789000,
      "reads_completed": 4567890, "writes_completed": 7654321, "io_time_seconds": 3456.5}]
"""

from __future__ import annotations

import logging
import re
from typing import Any, Optional, Tuple

from agent.collectors import Collector, Context, register
from agent.collectors._common import FirstN
from contract.report import DEFAULT_LIMITS, Disk, fits_label

log = logging.getLogger(__name__)

_VIRTUAL_RE = re.compile(r"^(loop|ram|zram|fd)\d+$")
# sda1 -> sda, xvdb2 -> xvdb; nvme0n1p1 -> nvme0n1, mmcblk0p2 -> mmcblk0.
_PARTITION_RES = (re.compile(r"^(.*\d)p\d+$"), re.compile(r"^([a-z]+)\d+$"))


def parent_disk(name: str) -> Optional[str]:
    """The whole disk a Linux partition name belongs to, if it looks like one."""
    for pattern in _PARTITION_RES:
        m = pattern.match(name)
        if m:
            return m.group(1)
    return None


def linux_skipped(name: str, names: Any) -> bool:
    if _VIRTUAL_RE.match(name):
        return True
    parent = parent_disk(name)
    return parent is not None and parent in names


@register("disks")
class DisksCollector(Collector):
    max_entries = DEFAULT_LIMITS.max_disks

    def __init__(self, psutil: Any, os: str):
        super().__init__(psutil)
        self.os = os
        self.first = FirstN(self.max_entries, "disks", log)

    @classmethod
    def from_context(cls, ctx: Context) -> "DisksCollector":
        return cls(ctx.psutil, ctx.os)

    def collect(self) -> Tuple[Disk, ...]:
        counters = self.psutil.disk_io_counters(perdisk=True)
        if not counters:  # None when the host has no disks psutil can read
            return ()
        linux = self.os == "linux"
        names = [n for n in sorted(counters) if not (linux and linux_skipped(n, counters)) and fits_label(n)]
        out = []
        for name in self.first(names):
            c = counters[name]
            busy_ms = getattr(c, "busy_time", None)
            if busy_ms is None:
                busy_ms = c.read_time + c.write_time
            out.append(Disk(device=name, read_bytes=int(c.read_bytes), written_bytes=int(c.write_bytes),
                            reads_completed=int(c.read_count), writes_completed=int(c.write_count),
                            io_time_seconds=busy_ms / 1000.0))
        return tuple(out)
