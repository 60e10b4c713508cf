"""When the host booted and how many processes it runs.

The boot time tells a reboot (planned nightly on non-persistent desktops, or
not) from an agent restart; the process count is a cheap leak detector on a
multi-session host.

Sample reading::

    {"boot_time_seconds": 1764460800.0, "processes": 412}
"""

from __future__ import annotations

from agent.collectors import Collector, register
from contract.report import System


@register("system")
class SystemCollector(Collector):
    def collect(self) -> System:
        ps = self.psutil
        return System(boot_time_seconds=float(ps.boot_time()), processes=len(ps.pids()))
