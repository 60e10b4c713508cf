"""Render stored reports as Prometheus text exposition, from one table of families.

`FAMILIES` is the whole of the host exposition: one row per metric family with
its name, type, help, extra label names and how to read its samples from a
contract `Report`. A new gauge or counter is one row here (and one entry in
docs/metrics.md, which a test holds to this table). Rows marked `live` depend
on the clock, not on the report: `render_live` draws them from the host's
liveness at every scrape.

Why not prometheus_client here: building metric families on every scrape costs
about 12 microseconds a series, seconds for a large farm. Instead each report is
rendered once, when it arrives, into one text chunk per family (`render_report`);
a scrape only joins chunks (`collector.renderer`, then `family_parts`).
prometheus_client stays the authority on the format: the tests parse this
output with its parser and with `promtool`.

A host's chunk for `vdi_host_load1` looks like this:

    vdi_host_load1{host="vda-01",site="City Hall",delivery_group="Office"} 2.5
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from contract.report import (
    HOST_STATES,
    INPUT_DELAY_BUCKETS,
    LOGON_DURATION_BUCKETS,
    RTT_BUCKETS,
    STALE,
    STOPPED,
    TRAFFIC_DIRECTIONS,
    Histogram,
    Report,
)

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"  # its reader gives `Suffixed` samples: _bucket{le}, _sum, _count
SUMMARY = "summary"  # likewise, _sum and _count only (no quantiles): an average is a division
SUFFIXED = (HISTOGRAM, SUMMARY)

# One sample of a family: the values of its extra labels (in the row's order) and the value; None is left out.
Sample = Tuple[Tuple[str, ...], Optional[float]]
Read = Callable[[Report, float], Iterable[Sample]]  # (report, received_at) -> samples, in exposition order
# One sample of a histogram or summary row: the suffix of its name, its own label names and values, the value.
Suffixed = Tuple[str, Tuple[str, ...], Tuple[str, ...], float]


def _none(_report: Report, _received_at: float) -> Iterable[Sample]:
    return ()


@dataclass(frozen=True)
class Family:
    """One metric family: a row of `FAMILIES`."""

    name: str
    kind: str  # GAUGE, COUNTER, HISTOGRAM or SUMMARY
    help: str
    read: Read = _none
    labels: Tuple[str, ...] = ()  # extra label names, after host, site and delivery_group (a histogram: "le")
    live: bool = False  # drawn from liveness at every scrape (`render_live`), not from the report
    # The states of a silent host (stale, or stopped after a goodbye) in which this row is still served; the
    # other rows are readings, served only while reports arrive, so that a plain sum over collector replicas
    # counts each host once (docs/metrics.md).
    kept: Tuple[str, ...] = ()


def flag(value: object) -> int:
    return 1 if value else 0


def field(section: str, attr: str, convert: Optional[Callable[[object], float]] = None) -> Read:
    """One unlabelled sample: `report.<section>.<attr>`, nothing when the section is absent."""
    def read(report: Report, _received_at: float) -> Iterable[Sample]:
        part = getattr(report, section)
        if part is None:
            return ()
        value = getattr(part, attr)
        if value is None:  # an optional field the agent could not read
            return ()
        return (((), value if convert is None else convert(value)),)
    return read


def each(section: str, attr: str, *label_attrs: str, convert: Optional[Callable[[object], float]] = None) -> Read:
    """A sample per item of the list `report.<section>`: the item's `attr`, labelled by its `label_attrs`."""
    value_of = attrgetter(attr)
    labels_of = attrgetter(*label_attrs)
    one_label = len(label_attrs) == 1

    def read(report: Report, _received_at: float) -> Iterable[Sample]:
        items = getattr(report, section)
        if not items:
            return ()
        if convert is not None:
            return [(_tuple(labels_of(item), one_label), convert(value_of(item))) for item in items]
        if one_label:
            return [((labels_of(item),), value_of(item)) for item in items]
        return [(labels_of(item), value_of(item)) for item in items]
    return read


def _tuple(values: object, one: bool) -> Tuple[str, ...]:
    return (values,) if one else values  # type: ignore[return-value]


def pairs(section: str, attr: str) -> Read:
    """A sample per (label value, value) pair of `report.<section>.<attr>` (cpu seconds by mode)."""
    def read(report: Report, _received_at: float) -> Iterable[Sample]:
        part = getattr(report, section)
        values = None if part is None else getattr(part, attr)
        if values is None:  # the section, or this optional field of it, was not sent
            return ()
        return [((key,), value) for key, value in values]
    return read


def _session_counts(report: Report, _received_at: float) -> Iterable[Sample]:
    if report.sessions is None:
        return ()
    return [((state, protocol), count) for state, protocol, count in report.sessions.counts]


def process_groups(attr: str) -> Read:
    """A sample per process class (`user`, `system`) the report has."""
    def read(report: Report, _received_at: float) -> Iterable[Sample]:
        s = report.sessions
        if s is None:
            return ()
        return [((name,), getattr(group, attr))
                for name, group in (("user", s.user_processes), ("system", s.system_processes)) if group]
    return read


def top_users(attr: str) -> Read:
    """A sample per top user, the first entry of a user that appears twice."""
    def read(report: Report, _received_at: float) -> Iterable[Sample]:
        s = report.sessions
        if s is None or not s.top_users:
            return ()
        seen = set()
        out = []
        for u in s.top_users:
            if u.user not in seen:
                seen.add(u.user)
                out.append(((u.user,), getattr(u, attr)))
        return out
    return read


def apps(attr: str) -> Read:
    """A sample per application of the sessions reading (the contract refuses an app named twice)."""
    def read(report: Report, _received_at: float) -> Iterable[Sample]:
        s = report.sessions
        if s is None or not s.apps:
            return ()
        return [((a.app,), getattr(a, attr)) for a in s.apps]
    return read


def _le(bound: float) -> str:
    return repr(float(bound))  # "5.0", as client_python writes bucket bounds


_LOGON_LE = tuple((("le",), (_le(b),)) for b in LOGON_DURATION_BUCKETS) + ((("le",), ("+Inf",)),)


def _logon_duration(report: Report, _received_at: float) -> Iterable[Suffixed]:
    r = report.logons
    if r is None:
        return ()
    out: List[Suffixed] = [("_bucket", names, values, n)
                           for (names, values), n in zip(_LOGON_LE, r.duration_buckets + (r.duration_count,))]
    out.append(("_sum", (), (), r.duration_sum_seconds))
    out.append(("_count", (), (), r.duration_count))
    return out


def _logon_phases(report: Report, _received_at: float) -> Iterable[Suffixed]:
    r = report.logons
    if r is None:
        return ()
    out: List[Suffixed] = []
    for (phase, seconds), (_, count) in zip(r.phase_sum_seconds, r.phase_count):
        out.append(("_sum", ("phase",), (phase,), seconds))
        out.append(("_count", ("phase",), (phase,), count))
    return out


_DELAY_LE = tuple(_le(b) for b in INPUT_DELAY_BUCKETS) + ("+Inf",)
_RTT_LE = tuple(_le(b) for b in RTT_BUCKETS) + ("+Inf",)


def _histogram(h: Histogram, les: Tuple[str, ...], names: Tuple[str, ...] = (),
               values: Tuple[str, ...] = ()) -> List[Suffixed]:
    """_bucket{..., le} for every bound and +Inf (the count), then _sum and _count, under `names`=`values`."""
    out: List[Suffixed] = [("_bucket", names + ("le",), values + (le,), n)
                           for le, n in zip(les, h.buckets + (h.count,))]
    out.append(("_sum", names, values, h.sum_seconds))
    out.append(("_count", names, values, h.count))
    return out


def _input_delay(report: Report, _received_at: float) -> Iterable[Suffixed]:
    r = report.experience
    if r is None or r.input_delay is None:
        return ()
    return _histogram(r.input_delay, _DELAY_LE)


def _session_rtt(report: Report, _received_at: float) -> Iterable[Suffixed]:
    r = report.experience
    if r is None:
        return ()
    out: List[Suffixed] = []
    for p in r.protocols:
        out.extend(_histogram(p.rtt, _RTT_LE, ("protocol",), (p.protocol,)))
    return out


def _session_traffic(report: Report, _received_at: float) -> Iterable[Sample]:
    r = report.experience
    if r is None:
        return ()
    return [((p.protocol, d), p.received_bytes if d == "received" else p.sent_bytes)
            for p in r.protocols for d in TRAFFIC_DIRECTIONS]


def _agent_info(report: Report, _received_at: float) -> Iterable[Sample]:
    a = report.agent
    return (((a.version, a.os, a.os_release), 1),)


def _received(_report: Report, received_at: float) -> Iterable[Sample]:
    return (((), received_at),)


def _clock_skew(report: Report, received_at: float) -> Iterable[Sample]:
    return (((), round(report.timestamp_seconds - received_at, 3)),)


# In exposition order. docs/metrics.md documents each one.
FAMILIES: Tuple[Family, ...] = (
    Family("vdi_agent_up", GAUGE, "1 while the host's agent reports, 0 once it missed 3 intervals; absent after a "
           "goodbye.", live=True),
    Family("vdi_host_state", GAUGE, "1 for the host's current state (up, stale, stopped, maintenance), 0 for the "
           "others.", labels=("state",), live=True),
    Family("vdi_agent_last_report_timestamp_seconds", GAUGE, "When the collector received the host's last report.",
           _received, kept=(STALE, STOPPED)),
    Family("vdi_agent_info", GAUGE, "Agent version and OS; always 1.", _agent_info, ("version", "os", "os_release"),
           kept=(STALE, STOPPED)),
    Family("vdi_agent_interval_seconds", GAUGE, "The agent's reporting interval.", field("agent", "interval_seconds")),
    Family("vdi_agent_start_time_seconds", GAUGE, "When the agent process started.",
           field("agent", "start_time_seconds")),
    Family("vdi_agent_clock_skew_seconds", GAUGE, "Agent clock minus collector clock when the report arrived.",
           _clock_skew),
    Family("vdi_agent_collector_success", GAUGE, "1 when the agent's collector succeeded in the last report.",
           each("collectors", "success", "name", convert=flag), ("collector",)),
    Family("vdi_agent_collector_duration_seconds", GAUGE, "How long the agent's collector took in the last report.",
           each("collectors", "duration_seconds", "name"), ("collector",)),
    Family("vdi_host_cpus", GAUGE, "Logical CPUs.", field("cpu", "count")),
    Family("vdi_host_cpu_seconds_total", COUNTER, "CPU time by mode, summed over all CPUs.",
           pairs("cpu", "seconds"), ("mode",)),
    Family("vdi_host_load1", GAUGE, "1-minute load average.", field("load", "load1")),
    Family("vdi_host_load5", GAUGE, "5-minute load average.", field("load", "load5")),
    Family("vdi_host_load15", GAUGE, "15-minute load average.", field("load", "load15")),
    Family("vdi_host_memory_total_bytes", GAUGE, "Physical memory.", field("memory", "total_bytes")),
    Family("vdi_host_memory_available_bytes", GAUGE, "Memory available to new processes without swapping.",
           field("memory", "available_bytes")),
    Family("vdi_host_swap_total_bytes", GAUGE, "Swap or page file size.", field("memory", "swap_total_bytes")),
    Family("vdi_host_swap_used_bytes", GAUGE, "Swap or page file in use.", field("memory", "swap_used_bytes")),
    Family("vdi_host_filesystem_size_bytes", GAUGE, "Filesystem size.",
           each("filesystems", "size_bytes", "mountpoint", "fstype"), ("mountpoint", "fstype")),
    Family("vdi_host_filesystem_avail_bytes", GAUGE, "Filesystem space available to unprivileged users.",
           each("filesystems", "avail_bytes", "mountpoint", "fstype"), ("mountpoint", "fstype")),
    Family("vdi_host_disk_read_bytes_total", COUNTER, "Bytes read from the disk.",
           each("disks", "read_bytes", "device"), ("device",)),
    Family("vdi_host_disk_written_bytes_total", COUNTER, "Bytes written to the disk.",
           each("disks", "written_bytes", "device"), ("device",)),
    Family("vdi_host_disk_reads_completed_total", COUNTER, "Read operations completed.",
           each("disks", "reads_completed", "device"), ("device",)),
    Family("vdi_host_disk_writes_completed_total", COUNTER, "Write operations completed.",
           each("disks", "writes_completed", "device"), ("device",)),
    Family("vdi_host_disk_io_time_seconds_total", COUNTER, "Time the disk was busy.",
           each("disks", "io_time_seconds", "device"), ("device",)),
    Family("vdi_host_network_receive_bytes_total", COUNTER, "Bytes received.",
           each("interfaces", "receive_bytes", "interface"), ("interface",)),
    Family("vdi_host_network_transmit_bytes_total", COUNTER, "Bytes sent.",
           each("interfaces", "transmit_bytes", "interface"), ("interface",)),
    Family("vdi_host_network_receive_packets_total", COUNTER, "Packets received.",
           each("interfaces", "receive_packets", "interface"), ("interface",)),
    Family("vdi_host_network_transmit_packets_total", COUNTER, "Packets sent.",
           each("interfaces", "transmit_packets", "interface"), ("interface",)),
    Family("vdi_host_network_receive_errs_total", COUNTER, "Receive errors.",
           each("interfaces", "receive_errors", "interface"), ("interface",)),
    Family("vdi_host_network_transmit_errs_total", COUNTER, "Transmit errors.",
           each("interfaces", "transmit_errors", "interface"), ("interface",)),
    Family("vdi_host_network_receive_drop_total", COUNTER, "Inbound packets dropped.",
           each("interfaces", "receive_drops", "interface"), ("interface",)),
    Family("vdi_host_network_transmit_drop_total", COUNTER, "Outbound packets dropped.",
           each("interfaces", "transmit_drops", "interface"), ("interface",)),
    Family("vdi_host_boot_time_seconds", GAUGE, "When the host booted.", field("system", "boot_time_seconds")),
    Family("vdi_host_processes", GAUGE, "Processes running.", field("system", "processes")),
    Family("vdi_sessions", GAUGE, "Sessions by state and protocol; every combination is exported.",
           _session_counts, ("state", "protocol")),
    Family("vdi_session_users", GAUGE, "Distinct users with a session.", field("sessions", "users")),
    Family("vdi_session_oldest_disconnect_timestamp_seconds", GAUGE,
           "When the longest-disconnected session was disconnected.",
           field("sessions", "oldest_disconnect_time_seconds")),
    Family("vdi_session_list_truncated", GAUGE, "1 when the host had more sessions than one report lists.",
           field("sessions", "truncated", flag)),
    Family("vdi_session_logons_total", COUNTER, "Sessions that appeared since the agent started.",
           field("sessions", "logons_total")),
    Family("vdi_session_logoffs_total", COUNTER, "Sessions that ended since the agent started.",
           field("sessions", "logoffs_total")),
    Family("vdi_session_disconnects_total", COUNTER, "Transitions into the disconnected state.",
           field("sessions", "disconnects_total")),
    Family("vdi_session_reconnects_total", COUNTER, "Transitions from disconnected back to connected.",
           field("sessions", "reconnects_total")),
    Family("vdi_session_process_cpu_seconds_total", COUNTER,
           "CPU time of processes in user sessions and outside them.",
           process_groups("cpu_seconds_total"), ("class",)),
    Family("vdi_session_process_memory_bytes", GAUGE,
           "Resident memory of processes in user sessions and outside them.",
           process_groups("memory_bytes"), ("class",)),
    Family("vdi_session_processes", GAUGE, "Processes in user sessions and outside them.",
           process_groups("processes"), ("class",)),
    Family("vdi_user_cpu_cores", GAUGE, "CPU used over the last interval by one of the top users (pseudonymized).",
           top_users("cpu_cores"), ("user",)),
    Family("vdi_user_memory_bytes", GAUGE, "Resident memory of one of the top users (pseudonymized).",
           top_users("memory_bytes"), ("user",)),
    Family("vdi_app_cpu_seconds_total", COUNTER, "CPU time of an application's processes in user sessions since the "
           "agent started; the allowlist, the top N by CPU, and \"other\".", apps("cpu_seconds_total"), ("app",)),
    Family("vdi_app_memory_bytes", GAUGE, "Resident memory of an application's processes in user sessions.",
           apps("memory_bytes"), ("app",)),
    Family("vdi_app_sessions", GAUGE, "User sessions running an application.", apps("sessions"), ("app",)),
    Family("vdi_session_input_delay_seconds", HISTOGRAM, "Longest user input delay of a session over an interval "
           "(one observation per session per interval), since the agent started.", _input_delay,
           ("le",)),  # type: ignore[arg-type]
    Family("vdi_session_rtt_seconds", HISTOGRAM, "Round trip of a session's remoting protocol (one observation per "
           "session per interval), since the agent started.", _session_rtt, ("protocol", "le")),  # type: ignore[arg-type]
    Family("vdi_session_traffic_bytes_total", COUNTER, "Bytes of the sessions' remoting protocol received from and "
           "sent to the clients, since the agent started.", _session_traffic, ("protocol", "direction")),
    Family("vdi_host_max_sessions", GAUGE, "The most sessions the host should take.",
           field("capacity", "max_sessions"), kept=(STOPPED,)),  # a powered-down desktop's slots still exist
    Family("vdi_host_accepting_sessions", GAUGE, "1 when the host takes new logons, 0 when drained.",
           field("capacity", "accepting_sessions", flag)),
    Family("vdi_host_maintenance", GAUGE, "1 when the operator put the host in maintenance.",
           field("capacity", "maintenance", flag)),
    Family("vdi_logon_duration_seconds", HISTOGRAM, "Logons from their start to the shell, since the agent started.",
           _logon_duration, ("le",)),  # type: ignore[arg-type]
    Family("vdi_logon_phase_seconds", SUMMARY, "Time in each phase of the logons that had it, since the agent "
           "started.", _logon_phases, ("phase",)),  # type: ignore[arg-type]
    Family("vdi_logon_phases_missing_total", COUNTER, "Logons whose events for a phase were missing.",
           pairs("logons", "phases_missing"), ("phase",)),
    Family("vdi_logon_failures_total", COUNTER, "Failed interactive logons by reason (Security 4625).",
           pairs("logons", "failures"), ("reason",)),
    Family("vdi_logon_events_skipped_total", COUNTER, "Logon events passed over by the agent's per-interval cap.",
           field("logons", "events_skipped")),
    Family("vdi_logon_successes_total", COUNTER, "Interactive logons that succeeded (Security 4624, logon types 2, 10 "
           "and 11, not Windows' own DWM-n and UMFD-n accounts).", field("logons", "successes")),
    Family("vdi_session_disconnect_reasons_total", COUNTER, "Session disconnects by reason (LocalSessionManager event "
           "40); a logoff is not a disconnect.", pairs("logons", "disconnect_reasons"), ("reason",)),
)


FAMILY_NAMES = tuple(f.name for f in FAMILIES)
LIVE_INDEX = tuple(i for i, f in enumerate(FAMILIES) if f.live)  # vdi_agent_up, vdi_host_state
# state of a silent host -> the rows it no longer serves
SILENCED = {state: tuple(i for i, f in enumerate(FAMILIES) if not f.live and state not in f.kept)
            for state in (STALE, STOPPED)}
_FROM_REPORT = tuple((f.name, f.labels, f.read, f.kind in SUFFIXED) for f in FAMILIES)


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


_FRAGMENTS: Dict[Tuple[Tuple[str, ...], Tuple[str, ...]], str] = {}


def _fragment(names: Tuple[str, ...], values: Tuple[str, ...]) -> str:
    key = (names, values)
    more = _FRAGMENTS.get(key)
    if more is None:
        more = ",".join(f'{k}="{escape(v)}"' for k, v in zip(names, values))
        if len(_FRAGMENTS) < 10_000:  # closed sets (state, mode, class...) hit; host-specific ones may not
            _FRAGMENTS[key] = more
    return more


def render_report(report: Report, received_at: float) -> Rendered:
    """Everything about one host that does not change until its next report: a chunk per row of FAMILIES."""
    labels = host_labels(report)
    chunks: List[bytes] = []
    known, fragment, text = _FRAGMENTS.get, _fragment, number  # locals: this loop runs for every sample
    for name, names, read, suffixed in _FROM_REPORT:
        lines = []
        if suffixed:
            for suffix, own_names, values, value in read(report, received_at):  # type: ignore[misc]
                if values:
                    more = known((own_names, values)) or fragment(own_names, values)
                    lines.append(f"{name}{suffix}{{{labels},{more}}} {text(value)}\n")
                else:
                    lines.append(f"{name}{suffix}{{{labels}}} {text(value)}\n")
            chunks.append("".join(lines).encode("utf-8") if lines else b"")
            continue
        for values, value in read(report, received_at):
            if value is None:
                continue
            if values:
                more = known((names, values)) or fragment(names, values)
                lines.append(f"{name}{{{labels},{more}}} {text(value)}\n")
            else:
                lines.append(f"{name}{{{labels}}} {text(value)}\n")
        chunks.append("".join(lines).encode("utf-8") if lines else b"")
    return Rendered(labels, tuple(chunks))


def render_live(labels: str, up: bool, state: str) -> Tuple[bytes, bytes]:
    """The clock-dependent families for one host: `vdi_agent_up` and the one-hot `vdi_host_state`.

    A host that said goodbye has no `vdi_agent_up` at all: it is not down, and a
    clean shutdown must never look like one to an alert rule.
    """
    up_line = b"" if state == STOPPED else f"vdi_agent_up{{{labels}}} {1 if up else 0}\n".encode("utf-8")
    states = "".join(f'vdi_host_state{{{labels},state="{s}"}} {1 if s == state else 0}\n' for s in HOST_STATES)
    return up_line, states.encode("utf-8")


_HEADERS = tuple(f"# HELP {f.name} {f.help}\n# TYPE {f.name} {f.kind}\n".encode("utf-8") for f in FAMILIES)


class Columns:
    """Pre-rendered chunks by family, then by host: a scrape joins each column once.

    Not thread-safe by itself: its owner (`collector.renderer.Renderer`) changes and copies it under
    its lock. Insertion order is kept, so a host stays in its place across reports.
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

    def silence(self, host: str, state: str) -> None:
        """Serve only the rows kept for a host silent in `state` (STALE or STOPPED) until its next `set`."""
        for i in SILENCED[state]:
            self._columns[i].pop(host, None)

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
