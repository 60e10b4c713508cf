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
from typing import Any, Dict, List

from agent.collectors import Collector, register
from agent.collectors._common import FirstN, fits_label, os_name
from contract.report import DEFAULT_LIMITS

log = logging.getLogger(__name__)

# Report key <- psutil snetio field.
FIELDS = (
    ("receive_bytes", "bytes_recv"), ("transmit_bytes", "bytes_sent"),
    ("receive_packets", "packets_recv"), ("transmit_packets", "packets_sent"),
    ("receive_errors", "errin"), ("transmit_errors", "errout"),
    ("receive_drops", "dropin"), ("transmit_drops", "dropout"),
)


def is_loopback(name: str, os: str) -> bool:
    if os == "windows":
        return name.lower().startswith("loopback pseudo-interface")
    return name.startswith("lo")  # lo, lo:1 (Linux), lo0 (BSD, macOS)


@register("interfaces")
class InterfacesCollector(Collector):
    max_entries = DEFAULT_LIMITS.max_interfaces

    def __init__(self, ctx: Any):
        super().__init__(ctx)
        self.first = FirstN(self.max_entries, "network interfaces", log)

    def collect(self) -> List[Dict[str, Any]]:
        counters = self.ctx.psutil.net_io_counters(pernic=True) or {}
        os = os_name(self.ctx)
        names = [n for n in sorted(counters) if not is_loopback(n, os) and fits_label(n)]
        names = self.first(names)
        out = []
        for name in names:
            c = counters[name]
            entry: Dict[str, Any] = {"interface": name}
            entry.update((key, int(getattr(c, field))) for key, field in FIELDS)
            out.append(entry)
        return out
