"""CPU time by mode, summed over all logical CPUs, as psutil reads it.

The seconds are cumulative since boot; the collector exports them as counters
and PromQL's rate() turns them into a utilisation. Guest time is left out:
Linux already counts it in user (guest) and nice (guest_nice), so a sum over
modes would count it twice.

Sample reading (Windows)::

    {"count": 8, "seconds": {"user": 51234.5, "system": 12001.25, "idle": 880021.0,
                             "interrupt": 310.5, "dpc": 95.0}}
"""

from __future__ import annotations

from agent.collectors import Collector, register
from contract.report import Cpu, cpu_times

# Modes already included in others; see the module docstring.
EXCLUDED_MODES = frozenset({"guest", "guest_nice"})


@register("cpu")
class CpuCollector(Collector):
    def collect(self) -> Cpu:
        ps = self.psutil
        count = ps.cpu_count()
        if not count:
            raise RuntimeError("psutil cannot tell the number of logical CPUs")
        times = ps.cpu_times()._asdict()
        return cpu_times(int(count),
                         {mode: float(value) for mode, value in times.items() if mode not in EXCLUDED_MODES})
