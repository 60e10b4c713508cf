"""Render stored reports as Prometheus text exposition.

Why not prometheus_client here: building metric families on every scrape costs
about 12 microseconds a series, seconds for a large farm. Instead each report is
rendered once, when it arrives, into one text chunk per metric family; a scrape
only joins chunks (`render_hosts`). prometheus_client stays the authority on the
format: the tests parse this output with its parser and with `promtool`.

A host's chunk for `vdi_host_load1` looks like this:

    vdi_host_load1{host="vda-01",site="City Hall",delivery_group="Office"} 2.5
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from contract.report import HOST_STATES, Report

COUNTER = "counter"
GAUGE = "gauge"

# (name, type, help) in exposition order. docs/metrics.md documents each one.
FAMILIES: Tuple[Tuple[str, str, str], ...] = (
    ("vdi_agent_up", GAUGE, "1 while the host's agent reports, 0 once it missed 3 intervals; absent after a goodbye."),
    ("vdi_host_state", GAUGE, "1 for the host's current state (up, stale, stopped, maintenance), 0 for the others."),
    ("vdi_agent_last_report_timestamp_seconds", GAUGE, "When the collector received the host's last report."),
    ("vdi_agent_info", GAUGE, "Agent version and OS; always 1."),
    ("vdi_agent_interval_seconds", GAUGE, "The agent's reporting interval."),
    ("vdi_agent_start_time_seconds", GAUGE, "When the agent process started."),
    ("vdi_agent_clock_skew_seconds", GAUGE, "Agent clock minus collector clock when the report arrived."),
    ("vdi_agent_collector_success", GAUGE, "1 when the agent's collector succeeded in the last report."),
    ("vdi_agent_collector_duration_seconds", GAUGE, "How long the agent's collector took in the last report."),
    ("vdi_host_cpus", GAUGE, "Logical CPUs."),
    ("vdi_host_cpu_seconds_total", COUNTER, "CPU time by mode, summed over all CPUs."),
    ("vdi_host_load1", GAUGE, "1-minute load average."),
    ("vdi_host_load5", GAUGE, "5-minute load average."),
    ("vdi_host_load15", GAUGE, "15-minute load average."),
    ("vdi_host_memory_total_bytes", GAUGE, "Physical memory."),
    ("vdi_host_memory_available_bytes", GAUGE, "Memory available to new processes without swapping."),
    ("vdi_host_swap_total_bytes", GAUGE, "Swap or page file size."),
    ("vdi_host_swap_used_bytes", GAUGE, "Swap or page file in use."),
    ("vdi_host_filesystem_size_bytes", GAUGE, "Filesystem size."),
    ("vdi_host_filesystem_avail_bytes", GAUGE, "Filesystem space available to unprivileged users."),
    ("vdi_host_disk_read_bytes_total", COUNTER, "Bytes read from the disk."),
    ("vdi_host_disk_written_bytes_total", COUNTER, "Bytes written to the disk."),
    ("vdi_host_disk_reads_completed_total", COUNTER, "Read operations completed."),
    ("vdi_host_disk_writes_completed_total", COUNTER, "Write operations completed."),
    ("vdi_host_disk_io_time_seconds_total", COUNTER, "Time the disk was busy."),
    ("vdi_host_network_receive_bytes_total", COUNTER, "Bytes received."),
    ("vdi_host_network_transmit_bytes_total", COUNTER, "Bytes sent."),
    ("vdi_host_network_receive_packets_total", COUNTER, "Packets received."),
    ("vdi_host_network_transmit_packets_total", COUNTER, "Packets sent."),
    ("vdi_host_network_receive_errs_total", COUNTER, "Receive errors."),
    ("vdi_host_network_transmit_errs_total", COUNTER, "Transmit errors."),
    ("vdi_host_network_receive_drop_total", COUNTER, "Inbound packets dropped."),
    ("vdi_host_network_transmit_drop_total", COUNTER, "Outbound packets dropped."),
    ("vdi_host_boot_time_seconds", GAUGE, "When the host booted."),
    ("vdi_host_processes", GAUGE, "Processes running."),
    ("vdi_sessions", GAUGE, "Sessions by state and protocol; every combination is exported."),
    ("vdi_session_users", GAUGE, "Distinct users with a session."),
    ("vdi_sessions_oldest_disconnect_timestamp_seconds", GAUGE,
     "When the longest-disconnected session was disconnected."),
    ("vdi_sessions_truncated", GAUGE, "1 when the host had more sessions than one report lists."),
    ("vdi_session_logons_total", COUNTER, "Sessions that appeared since the agent started."),
    ("vdi_session_logoffs_total", COUNTER, "Sessions that ended since the agent started."),
    ("vdi_session_disconnects_total", COUNTER, "Transitions into the disconnected state."),
    ("vdi_session_reconnects_total", COUNTER, "Transitions from disconnected back to connected."),
    ("vdi_session_process_cpu_seconds_total", COUNTER, "CPU time of processes in user sessions and outside them."),
    ("vdi_session_process_memory_bytes", GAUGE, "Resident memory of processes in user sessions and outside them."),
    ("vdi_session_processes", GAUGE, "Processes in user sessions and outside them."),
    ("vdi_user_cpu_cores", GAUGE, "CPU used over the last interval by one of the top users (pseudonymized)."),
    ("vdi_user_memory_bytes", GAUGE, "Resident memory of one of the top users (pseudonymized)."),
    ("vdi_host_max_sessions", GAUGE, "The most sessions the host should take."),
    ("vdi_host_accepting_sessions", GAUGE, "1 when the host takes new logons, 0 when drained."),
    ("vdi_host_maintenance", GAUGE, "1 when the operator put the host in maintenance."),
)
FAMILY_NAMES = tuple(f[0] for f in FAMILIES)
FAMILY_INDEX = {name: i for i, name in enumerate(FAMILY_NAMES)}

# Families rendered at scrape time because they depend on the clock, not on the report.
LIVE_FAMILIES = ("vdi_agent_up", "vdi_host_state")


def escape(value: str) -> str:
    """Escape a label value for the text format (backslash, quote, line feed)."""
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def number(value: float) -> str:
    if value != value:  # NaN never passes validation; keep the format valid regardless
        return "NaN"
    if -1e15 < value < 1e15 and value == int(value):
        return str(int(value))
    return repr(float(value))


def host_labels(report: Report) -> str:
    return (f'host="{escape(report.host)}",site="{escape(report.site)}",'
            f'delivery_group="{escape(report.delivery_group)}"')


@dataclass(frozen=True)
class Rendered:
    """One report rendered: the label prefix and a UTF-8 chunk per family, in FAMILIES order."""

    labels: str
    chunks: Tuple[bytes, ...]


_FRAGMENTS: Dict[Tuple[Tuple[str, str], ...], str] = {}


class _Chunks:
    def __init__(self, labels: str):
        self.labels = labels
        self.lines: Dict[str, List[str]] = {}

    def add(self, name: str, value: Optional[float], extra: Sequence[Tuple[str, str]] = ()) -> None:
        if value is None:
            return
        if extra:
            more = _FRAGMENTS.get(extra)
            if more is None:
                more = ",".join(f'{k}="{escape(v)}"' for k, v in extra)
                if len(_FRAGMENTS) < 10_000:  # closed sets (state, mode, class...) hit; host-specific ones may not
                    _FRAGMENTS[extra] = more
            line = f"{name}{{{self.labels},{more}}} {number(value)}\n"
        else:
            line = f"{name}{{{self.labels}}} {number(value)}\n"
        lines = self.lines.get(name)
        if lines is None:
            self.lines[name] = [line]
        else:
            lines.append(line)

    def done(self) -> Rendered:
        lines = self.lines
        return Rendered(self.labels, tuple("".join(lines[name]).encode("utf-8") if name in lines else b""
                                           for name in FAMILY_NAMES))


def render_report(report: Report, received_at: float) -> Rendered:
    """Everything about one host that does not change until its next report."""
    out = _Chunks(host_labels(report))
    add = out.add
    add("vdi_agent_last_report_timestamp_seconds", received_at)
    agent = report.agent
    add("vdi_agent_info", 1, (("version", agent.version), ("os", agent.os), ("os_release", agent.os_release)))
    add("vdi_agent_interval_seconds", agent.interval_seconds)
    add("vdi_agent_start_time_seconds", agent.start_time_seconds)
    add("vdi_agent_clock_skew_seconds", round(report.timestamp_seconds - received_at, 3))
    for status in report.collectors:
        add("vdi_agent_collector_success", 1 if status.success else 0, (("collector", status.name),))
    for status in report.collectors:
        add("vdi_agent_collector_duration_seconds", status.duration_seconds, (("collector", status.name),))
    if report.cpu:
        add("vdi_host_cpus", report.cpu.count)
        for mode, seconds in report.cpu.seconds:
            add("vdi_host_cpu_seconds_total", seconds, (("mode", mode),))
    if report.load:
        add("vdi_host_load1", report.load.load1)
        add("vdi_host_load5", report.load.load5)
        add("vdi_host_load15", report.load.load15)
    if report.memory:
        m = report.memory
        add("vdi_host_memory_total_bytes", m.total_bytes)
        add("vdi_host_memory_available_bytes", m.available_bytes)
        add("vdi_host_swap_total_bytes", m.swap_total_bytes)
        add("vdi_host_swap_used_bytes", m.swap_used_bytes)
    for fs in report.filesystems or ():
        labels = (("mountpoint", fs.mountpoint), ("fstype", fs.fstype))
        add("vdi_host_filesystem_size_bytes", fs.size_bytes, labels)
        add("vdi_host_filesystem_avail_bytes", fs.avail_bytes, labels)
    for d in report.disks or ():
        labels = (("device", d.device),)
        add("vdi_host_disk_read_bytes_total", d.read_bytes, labels)
        add("vdi_host_disk_written_bytes_total", d.written_bytes, labels)
        add("vdi_host_disk_reads_completed_total", d.reads_completed, labels)
        add("vdi_host_disk_writes_completed_total", d.writes_completed, labels)
        add("vdi_host_disk_io_time_seconds_total", d.io_time_seconds, labels)
    for i in report.interfaces or ():
        labels = (("interface", i.interface),)
        add("vdi_host_network_receive_bytes_total", i.receive_bytes, labels)
        add("vdi_host_network_transmit_bytes_total", i.transmit_bytes, labels)
        add("vdi_host_network_receive_packets_total", i.receive_packets, labels)
        add("vdi_host_network_transmit_packets_total", i.transmit_packets, labels)
        add("vdi_host_network_receive_errs_total", i.receive_errors, labels)
        add("vdi_host_network_transmit_errs_total", i.transmit_errors, labels)
        add("vdi_host_network_receive_drop_total", i.receive_drops, labels)
        add("vdi_host_network_transmit_drop_total", i.transmit_drops, labels)
    if report.system:
        add("vdi_host_boot_time_seconds", report.system.boot_time_seconds)
        add("vdi_host_processes", report.system.processes)
    if report.sessions:
        _render_sessions(report, add)
    if report.capacity:
        c = report.capacity
        add("vdi_host_max_sessions", c.max_sessions)
        add("vdi_host_accepting_sessions", 1 if c.accepting_sessions else 0)
        add("vdi_host_maintenance", 1 if c.maintenance else 0)
    return out.done()


def _render_sessions(report: Report, add) -> None:
    s = report.sessions
    for state, protocol, count in s.counts:
        add("vdi_sessions", count, (("state", state), ("protocol", protocol)))
    add("vdi_session_users", s.users)
    add("vdi_sessions_oldest_disconnect_timestamp_seconds", s.oldest_disconnect_time_seconds)
    add("vdi_sessions_truncated", 1 if s.truncated else 0)
    add("vdi_session_logons_total", s.logons_total)
    add("vdi_session_logoffs_total", s.logoffs_total)
    add("vdi_session_disconnects_total", s.disconnects_total)
    add("vdi_session_reconnects_total", s.reconnects_total)
    groups = [(name, g) for name, g in (("user", s.user_processes), ("system", s.system_processes)) if g]
    for name, g in groups:
        add("vdi_session_process_cpu_seconds_total", g.cpu_seconds_total, (("class", name),))
    for name, g in groups:
        add("vdi_session_process_memory_bytes", g.memory_bytes, (("class", name),))
    for name, g in groups:
        add("vdi_session_processes", g.processes, (("class", name),))
    seen = set()
    for u in s.top_users or ():
        if u.user in seen:
            continue
        seen.add(u.user)
        add("vdi_user_cpu_cores", u.cpu_cores, (("user", u.user),))
        add("vdi_user_memory_bytes", u.memory_bytes, (("user", u.user),))


def render_live(labels: str, up: bool, state: str) -> Tuple[bytes, bytes]:
    """The clock-dependent families for one host: `vdi_agent_up` and the one-hot `vdi_host_state`.

    A host that said goodbye has no `vdi_agent_up` at all: it is not down, and a
    clean shutdown must never look like one to an alert rule.
    """
    up_line = b"" if state == "stopped" else f"vdi_agent_up{{{labels}}} {1 if up else 0}\n".encode("utf-8")
    states = "".join(f'vdi_host_state{{{labels},state="{s}"}} {1 if s == state else 0}\n' for s in HOST_STATES)
    return up_line, states.encode("utf-8")


_HEADERS = tuple(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n".encode("utf-8")
                 for name, kind, help_text in FAMILIES)
LIVE_INDEX = tuple(FAMILY_INDEX[name] for name in LIVE_FAMILIES)


class Columns:
    """Pre-rendered chunks by family, then by host: a scrape joins each column once.

    Not thread-safe by itself: the store changes and copies it under its lock.
    Insertion order is kept, so a host stays in its place across reports.
    """

    def __init__(self) -> None:
        self._columns: List[Dict[str, bytes]] = [{} for _ in FAMILIES]

    def set(self, host: str, rendered: Rendered) -> None:
        for column, chunk in zip(self._columns, rendered.chunks):
            if chunk:
                column[host] = chunk
            else:
                column.pop(host, None)

    def remove(self, host: str) -> None:
        for column in self._columns:
            column.pop(host, None)

    def copy(self) -> List[List[bytes]]:
        return [list(column.values()) for column in self._columns]


def family_parts(columns: Sequence[Sequence[bytes]]) -> List[bytes]:
    """HELP/TYPE header and chunks of every non-empty family, ready to be written out."""
    parts: List[bytes] = []
    for header, column in zip(_HEADERS, columns):
        if any(column):
            parts.append(header)
            parts.extend(column)
    return parts


def blocks(parts: Sequence[bytes], size: int = 1 << 18) -> Iterator[bytes]:
    """Many small parts as few blocks of about `size` bytes: for the socket and for gzip,
    where a call per part (a syscall, a TCP segment, a compressor call) would cost more than the data."""
    pending: List[bytes] = []
    pending_size = 0
    for part in parts:
        pending.append(part)
        pending_size += len(part)
        if pending_size >= size:
            yield b"".join(pending)
            pending, pending_size = [], 0
    if pending:
        yield b"".join(pending)


def render_hosts(hosts: Iterable[Tuple[Rendered, Tuple[bytes, bytes]]]) -> bytes:
    """The exposition of `hosts` (each rendered report with its live chunks), in the order given."""
    hosts = list(hosts)
    columns: List[List[bytes]] = [[r.chunks[i] for r, _ in hosts] for i in range(len(FAMILIES))]
    for which, i in enumerate(LIVE_INDEX):
        columns[i] = [live[which] for _, live in hosts]
    return b"".join(family_parts(columns))
