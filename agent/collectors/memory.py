"""Physical memory and swap (the page file on Windows), in bytes.

`available_bytes` is what new processes can get without swapping (Linux
MemAvailable, Windows available physical memory): the number to alert on, not
"free", which excludes reclaimable cache.

Sample reading::

    {"total_bytes": 34359738368, "available_bytes": 12884901888,
     "swap_total_bytes": 8589934592, "swap_used_bytes": 1073741824}
"""

from __future__ import annotations

from agent.collectors import Collector, register
from contract.report import Memory


@register("memory")
class MemoryCollector(Collector):
    def collect(self) -> Memory:
        ps = self.psutil
        memory = ps.virtual_memory()
        swap = ps.swap_memory()
        return Memory(total_bytes=int(memory.total), available_bytes=int(memory.available),
                      swap_total_bytes=int(swap.total), swap_used_bytes=int(swap.used))
