"""In-session experience on Windows: input delay, remoting round trips and traffic, from performance counters.

One PDH query, opened at the first collection and kept open (rate counters need two
collections), holds every counter of agent.experience.counters; each interval collects it
once. Counter sets the host lacks (no User Input Delay before Windows Server 2019 / Windows 10
1809, no ICA Session without a Citrix VDA, no RemoteFX Network counters)
are left out of the reading, said once in the log when the query is opened; a host with none
of them sends no section. Instances are matched to sessions by the WinStation names of the WTS
enumeration; names never leave the agent. Every value counts since the agent started
(agent.experience.totals): a restart reads as a counter reset.

Registered on Windows only: Linux has no such counters (docs/sessions.md).

Sample reading::

    {"input_delay": {"buckets": [1, 2, 2, 2, 2, 2], "sum_seconds": 0.156, "count": 2},
     "protocols": {"ica": {"rtt": {"buckets": [1, 2, 2, 2], "sum_seconds": 0.089, "count": 2},
                           "received_bytes": 9375.0, "sent_bytes": 240000.0}}}
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, Optional, Set

from agent.collectors import Collector, Context, os_name, register
from agent.experience.counters import (
    ALL_PATHS,
    COUNTER_SETS,
    ICA_INPUT_BANDWIDTH,
    ICA_LATENCY_AVERAGE,
    ICA_LATENCY_LAST,
    ICA_OUTPUT_BANDWIDTH,
    INPUT_DELAY,
    RDP_RECEIVED,
    RDP_SENT,
    RDP_TCP_RTT,
    RDP_UDP_RTT,
    ConnectionBytes,
    bandwidth_bytes,
    ica_winstation,
    input_delays,
    per_session,
    rdp_winstation,
    sessions_of,
)
from agent.experience.pdh import CounterReader
from agent.experience.totals import ExperienceTotals
from agent.sessions.windows import skip_reason
from contract.report import Experience

log = logging.getLogger(__name__)

WHY_MISSING = {
    "input_delay": "needs Windows Server 2019 or Windows 10 1809 and later",
    "ica": "no Citrix VDA",
    "rdp": "no RemoteFX Network counters",
}


def wts_winstations(api) -> Callable[[], Dict[str, int]]:
    """The WinStation names (lower case) and ids of the sessions someone is logged on to, from the WTS
    enumeration (not the Services session, a listener, or the console at its logon screen)."""
    def read() -> Dict[str, int]:
        return {e.session_name.lower(): e.session_id for e in api.enumerate_sessions()
                if e.session_name and e.user_name and skip_reason(e) is None}
    return read


@register("experience", default_enabled=os_name() == "windows")
class ExperienceCollector(Collector):
    def __init__(self, reader: CounterReader, winstations: Callable[[], Dict[str, int]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(None)
        self.reader = reader
        self.winstations = winstations
        self.clock = clock
        self.totals = ExperienceTotals()
        self.present: Optional[Set[str]] = None  # counter sets found when the query was opened
        self._last: Optional[float] = None
        self._rdp_received = ConnectionBytes()
        self._rdp_sent = ConnectionBytes()
        self._unmatched_logged = False

    @classmethod
    def from_context(cls, ctx: Context) -> "ExperienceCollector":
        if ctx.os != "windows":
            raise RuntimeError(f"experience counters are Windows performance counters; this host runs {ctx.os}")
        from agent.experience.pdh import Win32Pdh
        from agent.sessions.windows import WtsApi

        return cls(Win32Pdh(), wts_winstations(ctx.wts_api or WtsApi()))

    def _open(self) -> Set[str]:
        failed = self.reader.add(ALL_PATHS)
        present = set()
        for name, paths in COUNTER_SETS:
            missing = [p for p in paths if p in failed]
            if missing:
                log.info("experience: %s is not reported on this host (%s): %s cannot be added (%s)",
                         name, WHY_MISSING[name], missing[0], failed[missing[0]])
            else:
                present.add(name)
        if not present:
            self.reader.close()
        return present

    def collect(self) -> Optional[Experience]:
        if self.present is None:
            self.present = self._open()
        if not self.present:
            return None
        values = self.reader.collect()
        now = self.clock()
        elapsed = None if self._last is None else now - self._last
        self._last = now
        try:
            winstations: Optional[Dict[str, int]] = self.winstations()
        except OSError as err:  # sessions cannot be listed this time: instances are their own sessions
            log.debug("experience: no WinStation names this time: %s", err)
            winstations = None
        names = winstations or {}
        t = self.totals
        unmatched = 0
        if "input_delay" in self.present:
            t.input_delay_present()
            users = set(names.values()) if winstations is not None else None
            for seconds in input_delays(values.get(INPUT_DELAY, {}), users):
                t.add_input_delay(seconds)
        if "ica" in self.present:
            t.protocol_present("ica")
            last, average = values.get(ICA_LATENCY_LAST, {}), values.get(ICA_LATENCY_AVERAGE, {})
            session, missed = sessions_of(set(last) | set(average), ica_winstation, names)
            unmatched += missed
            for seconds in per_session(last, average, session):
                t.add_rtt("ica", seconds)
            if elapsed is not None:
                t.add_traffic("ica", bandwidth_bytes(values.get(ICA_INPUT_BANDWIDTH, {}), elapsed),
                              bandwidth_bytes(values.get(ICA_OUTPUT_BANDWIDTH, {}), elapsed))
        if "rdp" in self.present:
            t.protocol_present("rdp")
            udp, tcp = values.get(RDP_UDP_RTT, {}), values.get(RDP_TCP_RTT, {})
            session, missed = sessions_of(set(udp) | set(tcp), rdp_winstation, names)
            unmatched += missed
            for seconds in per_session(udp, tcp, session):
                t.add_rtt("rdp", seconds)
            t.add_traffic("rdp", self._rdp_received.increase(values.get(RDP_RECEIVED, {})),
                          self._rdp_sent.increase(values.get(RDP_SENT, {})))
        if unmatched and winstations is not None and not self._unmatched_logged:
            self._unmatched_logged = True
            log.info("experience: %d counter instance(s) name no WinStation of this host; each is observed as "
                     "one session (logged once)", unmatched)
        return t.reading()
