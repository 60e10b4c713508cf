"""Load average over 1, 5 and 15 minutes.

On Windows there is no load average; psutil emulates one from the processor
queue length, sampled by a thread it starts on the first call, so the first
reading after the agent starts is 0.

Sample reading::

    {"load1": 2.5, "load5": 2.25, "load15": 1.75}
"""

from __future__ import annotations

from agent.collectors import Collector, register
from contract.report import Load


@register("load")
class LoadCollector(Collector):
    def collect(self) -> Load:
        load1, load5, load15 = self.psutil.getloadavg()
        return Load(float(load1), float(load5), float(load15))
