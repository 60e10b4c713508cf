"""Cumulative traffic counters of the host's network interfaces.

Loopback is left out: it is local traffic and would dwarf the real NICs in a
"top interfaces" panel. Elsewhere than Windows that is any name starting with
`lo` (Linux `lo` and its aliases such as `lo:1`, BSD `lo0`); on Windows it is
"Loopback Pseudo-Interface 1". At most `Limits.max_interfaces` entries are
reported, the first by name.

psutil keeps these counters monotonic across 32-bit wrap-arounds (`nowrap`),
so they are exported as read.

Sample reading::

    [{"interface": "Ethernet0", "receive_bytes": 987654321000, "transmit_bytes": 123456789000,
      "receive_packets": 765432100, "transmit_packets": 234567800, "receive_errors": 0,
      "transmit_errors": 0, "receive_drops": 12, "transmit_drops": 0}]
"""

from __future__ import annotations

import logging
from typing import Any, Tuple

from agent.collectors import Collector, Context, register
from agent.collectors._common import FirstN
from contract.report import DEFAULT_LIMITS, Interface, fits_label

log = logging.getLogger(__name__)

# psutil snetio fields, in the order of `Interface`'s counters (receive_bytes, transmit_bytes, ...).
FIELDS = ("bytes_recv", "bytes_sent", "packets_recv", "packets_sent", "errin", "errout", "dropin", "dropout")


def is_loopback(name: str, os: str) -> bool:
    if os == "windows":
        return name.lower().startswith("loopback pseudo-interface")
    return name.startswith("lo")  # lo, lo:1 (Linux), lo0 (BSD, macOS)


@register("interfaces")
class InterfacesCollector(Collector):
    max_entries = DEFAULT_LIMITS.max_interfaces

    def __init__(self, psutil: Any, os: str):
        super().__init__(psutil)
        self.os = os
        self.first = FirstN(self.max_entries, "network interfaces", log)

    @classmethod
    def from_context(cls, ctx: Context) -> "InterfacesCollector":
        return cls(ctx.psutil, ctx.os)

    def collect(self) -> Tuple[Interface, ...]:
        counters = self.psutil.net_io_counters(pernic=True) or {}
        names = [n for n in sorted(counters) if not is_loopback(n, self.os) and fits_label(n)]
        return tuple(Interface(name, *(int(getattr(counters[name], f)) for f in FIELDS))
                     for name in self.first(names))
