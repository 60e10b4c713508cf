"""Physical memory and swap (the page file on Windows), in bytes.

`available_bytes` is what new processes can get without swapping (Linux
MemAvailable, Windows available physical memory): the number to alert on, not
"free", which excludes reclaimable cache. The swap reading comes from other
sources (on Windows the paging-file performance counters, which can be broken
or missing); when only it fails, memory is still reported, without swap, and
the failure is logged once.

Sample reading::

    {"total_bytes": 34359738368, "available_bytes": 12884901888,
     "swap_total_bytes": 8589934592, "swap_used_bytes": 1073741824}
"""

from __future__ import annotations

import logging

from agent.collectors import Collector, register
from contract.report import Memory

log = logging.getLogger(__name__)


@register("memory")
class MemoryCollector(Collector):
    swap_failed = False

    def collect(self) -> Memory:
        ps = self.psutil
        memory = ps.virtual_memory()
        try:
            swap = ps.swap_memory()
        except (OSError, RuntimeError) as e:
            if not self.swap_failed:
                log.warning("cannot read swap (page file) use: %s; reporting memory without it", e)
            self.swap_failed = True
            return Memory(total_bytes=int(memory.total), available_bytes=int(memory.available),
                          swap_total_bytes=None, swap_used_bytes=None)
        if self.swap_failed:
            log.warning("swap (page file) use can be read again")
            self.swap_failed = False
        return Memory(total_bytes=int(memory.total), available_bytes=int(memory.available),
                      swap_total_bytes=int(swap.total), swap_used_bytes=int(swap.used))
