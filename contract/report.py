"""The report contract, schema version 1: the one place that says what a report is.

The agent's sources build these frozen dataclasses and the agent sends
`report_to_doc(report)`; the collector turns a decoded JSON document back into a
`Report` with `parse_report`, which checks every field and returns *all* problems
at once, each naming the field's path, so that an operator reading a 400 answer
sees everything that is wrong with the report. The JSON shape is written here
only: `parse_report(report_to_doc(r)) == r` for every report in canonical form
(`canonical_host` host, modes and collectors sorted: what the helpers below build).

docs/report-format.md is the prose version of this module; keep the two together.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, fields
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from contract.rejections import (
    REASON_DUPLICATE,
    REASON_INVALID,
    REASON_MISSING,
    REASON_NOT_FINITE,
    REASON_RANGE,
    REASON_SCHEMA,
    REASON_TOO_LONG,
    REASON_TOO_MANY,
    REASON_TYPE,
)

SCHEMA_VERSION = 1

# Session states and protocols are closed sets: they become label values.
SESSION_STATES = ("active", "idle", "disconnected", "connecting", "other")
SESSION_PROTOCOLS = ("ica", "rdp", "console", "ssh", "other")
SESSION_SOURCES = ("windows", "logind", "utmp", "simulated")
# A host's liveness as the collector derives it (the `state` label of vdi_host_state).
HOST_STATES = ("up", "stale", "stopped", "maintenance")
UP, STALE, STOPPED, MAINTENANCE = HOST_STATES
# Log levels the agent and the collector accept in their config files.
LOG_LEVELS = ("debug", "info", "warning", "error")

HOST_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252})$")
# Cumulative counters may legitimately be very large (bytes since boot on a
# busy host); beyond 2**63 something is wrong, and floats lose integer
# precision long before anyone would notice in a rate().
MAX_COUNTER = float(2**63)
# Characters no label value may hold: they would break the exposition or a log line.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# An answer to a bad report lists at most this many problems (and counts the rest),
# and a path names at most this many characters of what the agent sent: a report
# built to fail everywhere gets an answer of a few kilobytes, not a copy of itself.
MAX_PROBLEMS = 50
MAX_PATH_CHARS = 160
# What a path may not show as it is: control characters would break a log line,
# lone surrogates cannot be encoded as UTF-8 (an answer naming them would fail).
_UNPRINTABLE_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def label_problem(value: str, limit: int, allow_empty: bool = False) -> Optional[Tuple[str, str]]:
    """Why `value` cannot be a label value, as (reason, message); None when it can.

    The one rule for label text: the collector refuses a report holding a value
    it breaks, and the agent's sources leave out an entry whose name breaks it
    (`fits_label`), so that one odd mount point costs its entry, not the report.
    """
    if len(value) > limit:
        return REASON_TOO_LONG, f"must be at most {limit} characters, got {len(value)}"
    if not value and not allow_empty:
        return REASON_INVALID, "must not be empty"
    if CONTROL_RE.search(value):
        return REASON_INVALID, "must not contain control characters or line breaks"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return REASON_INVALID, "must be valid Unicode (no lone surrogates)"
    return None


def fits_label(text: str, limit: Optional[int] = None) -> bool:
    """Whether `text` passes the contract as a label value (at most `limit`, default
    `DEFAULT_LIMITS.max_label_length`, characters).

    >>> fits_label("C:\\\\"), fits_label(""), fits_label("eth0\\n"), fits_label("x" * 129)
    (True, False, False, False)
    """
    return label_problem(text, DEFAULT_LIMITS.max_label_length if limit is None else limit) is None


@dataclass(frozen=True)
class Limits:
    """Caps on what one report may carry; the collector's config can change them."""

    max_label_length: int = 128
    max_filesystems: int = 64
    max_disks: int = 64
    max_interfaces: int = 64
    max_cpu_modes: int = 16
    max_sessions_listed: int = 2000
    max_top_users: int = 50
    max_apps: int = 64  # per-application entries in a sessions reading, "other" included
    max_collectors: int = 32


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str
    message: str

    def as_dict(self) -> Dict[str, str]:
        return {"field": self.path, "reason": self.reason, "message": self.message}


class ReportError(ValueError):
    """A report that breaks the contract; `problems` lists the first MAX_PROBLEMS broken fields
    and `omitted` counts the others."""

    def __init__(self, problems: List[Problem], omitted: int = 0):
        self.problems = problems
        self.omitted = omitted
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems[:5]))

    @property
    def reason(self) -> str:
        """The reason of the first problem: one label value per rejected report."""
        return self.problems[0].reason


@dataclass(frozen=True)
class AgentInfo:
    version: str
    os: str
    os_release: str
    interval_seconds: float
    start_time_seconds: float


@dataclass(frozen=True)
class CollectorStatus:
    name: str
    success: bool
    duration_seconds: float


@dataclass(frozen=True)
class Cpu:
    count: int
    seconds: Tuple[Tuple[str, float], ...]


@dataclass(frozen=True)
class Load:
    load1: float
    load5: float
    load15: float


@dataclass(frozen=True)
class Memory:
    total_bytes: float
    available_bytes: float
    swap_total_bytes: Optional[float]  # None: the swap (page file) reading failed
    swap_used_bytes: Optional[float]


@dataclass(frozen=True)
class Filesystem:
    mountpoint: str
    fstype: str
    device: str
    size_bytes: float
    avail_bytes: float


@dataclass(frozen=True)
class Disk:
    device: str
    read_bytes: float
    written_bytes: float
    reads_completed: float
    writes_completed: float
    io_time_seconds: float


@dataclass(frozen=True)
class Interface:
    interface: str
    receive_bytes: float
    transmit_bytes: float
    receive_packets: float
    transmit_packets: float
    receive_errors: float
    transmit_errors: float
    receive_drops: float
    transmit_drops: float


@dataclass(frozen=True)
class System:
    boot_time_seconds: float
    processes: int


@dataclass(frozen=True)
class SessionEntry:
    id: str
    logon_time_seconds: Optional[float]
    state: str
    protocol: str
    user: str
    idle_seconds: Optional[float]


@dataclass(frozen=True)
class ProcessGroup:
    cpu_seconds_total: float
    memory_bytes: float
    processes: int


@dataclass(frozen=True)
class UserUsage:
    user: str
    cpu_cores: float
    memory_bytes: float


@dataclass(frozen=True)
class AppUsage:
    """One application (a normalised executable name, or "other") in user sessions."""

    app: str
    cpu_seconds_total: float
    memory_bytes: float
    sessions: int


@dataclass(frozen=True)
class Sessions:
    source: str
    counts: Tuple[Tuple[str, str, int], ...]  # (state, protocol, count), every combination
    users: int
    total: int
    truncated: bool
    oldest_disconnect_time_seconds: Optional[float]
    logons_total: float
    logoffs_total: float
    disconnects_total: float
    reconnects_total: float
    entries: Tuple[SessionEntry, ...]
    user_processes: Optional[ProcessGroup]
    system_processes: Optional[ProcessGroup]
    top_users: Optional[Tuple[UserUsage, ...]]
    apps: Optional[Tuple[AppUsage, ...]] = None  # None: not collected (an older agent, or turned off)


@dataclass(frozen=True)
class Capacity:
    max_sessions: Optional[int]
    accepting_sessions: bool
    maintenance: bool


# Logons (docs/logons.md): the closed sets that become label values, and the histogram's upper bounds.
LOGON_PHASES = ("profile", "group_policy", "shell", "other")
LOGON_FAILURE_REASONS = ("bad_password", "unknown_user", "locked_out", "expired", "disabled", "restricted", "other")
LOGON_DURATION_BUCKETS = (5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0)  # seconds; +Inf = count
# Why a session was disconnected (LocalSessionManager event 40's reason code, docs/logons.md).
DISCONNECT_REASONS = ("client", "time_limit", "replaced", "network", "server", "licensing", "other")


@dataclass(frozen=True)
class Logons:
    """Counters since the agent started (a restart reads as a counter reset), every phase and reason present."""

    duration_buckets: Tuple[int, ...]  # cumulative: logons of at most each LOGON_DURATION_BUCKETS bound
    duration_sum_seconds: float
    duration_count: int
    phase_sum_seconds: Tuple[Tuple[str, float], ...]  # (phase, seconds) for every phase of LOGON_PHASES
    phase_count: Tuple[Tuple[str, int], ...]  # (phase, logons that had it)
    phases_missing: Tuple[Tuple[str, int], ...]  # (phase, logons whose events for it were missing)
    failures: Tuple[Tuple[str, int], ...]  # (reason, failed logons) for every reason of LOGON_FAILURE_REASONS
    events_skipped: int  # events left unread by the per-interval cap
    # None: not read (an older agent); otherwise a count for every reason of DISCONNECT_REASONS
    successes: Optional[int] = None  # interactive logons that succeeded (Security 4624)
    disconnect_reasons: Optional[Tuple[Tuple[str, int], ...]] = None  # (reason, disconnects) by event 40's reason


# In-session experience (docs/sessions.md "Experience counters"): the closed sets and the histograms' upper bounds.
EXPERIENCE_PROTOCOLS = ("ica", "rdp")
TRAFFIC_DIRECTIONS = ("received", "sent")  # from the host's view: received from the client, sent to it
INPUT_DELAY_BUCKETS = (0.05, 0.15, 0.3, 0.5, 1.0, 2.0)  # seconds; +Inf = count
RTT_BUCKETS = (0.05, 0.1, 0.2, 0.5)  # seconds; +Inf = count


@dataclass(frozen=True)
class Histogram:
    """Observations since the agent started: cumulative counts at each bound of its bucket tuple, sum, count."""

    buckets: Tuple[int, ...]
    sum_seconds: float
    count: int


@dataclass(frozen=True)
class ProtocolExperience:
    """One remoting protocol whose counter set the host has: session round trips and the protocol's traffic."""

    protocol: str  # one of EXPERIENCE_PROTOCOLS
    rtt: Histogram  # one observation per session per interval, bounds RTT_BUCKETS
    received_bytes: float  # since the agent started, from the client
    sent_bytes: float  # to the client


@dataclass(frozen=True)
class Experience:
    """Counters since the agent started (a restart reads as a counter reset); a part whose counter set the
    host lacks is absent: `input_delay` None, a protocol not listed."""

    input_delay: Optional[Histogram]  # one observation per session per interval, bounds INPUT_DELAY_BUCKETS
    protocols: Tuple[ProtocolExperience, ...]  # by protocol, each at most once


@dataclass(frozen=True)
class Report:
    schema_version: int
    host: str
    site: str
    delivery_group: str
    timestamp_seconds: float
    goodbye: bool
    agent: AgentInfo
    collectors: Tuple[CollectorStatus, ...]
    cpu: Optional[Cpu] = None
    load: Optional[Load] = None
    memory: Optional[Memory] = None
    filesystems: Optional[Tuple[Filesystem, ...]] = None
    disks: Optional[Tuple[Disk, ...]] = None
    interfaces: Optional[Tuple[Interface, ...]] = None
    system: Optional[System] = None
    sessions: Optional[Sessions] = None
    capacity: Optional[Capacity] = None
    logons: Optional[Logons] = None
    experience: Optional[Experience] = None


def cpu_times(count: int, seconds: Mapping[str, float]) -> Cpu:
    """A `Cpu` from seconds by mode, in the contract's order (by mode)."""
    return Cpu(count=count, seconds=tuple(sorted(seconds.items())))


def session_counts(found: Mapping[Tuple[str, str], int]) -> Tuple[Tuple[str, str, int], ...]:
    """Every (state, protocol, count) of the contract, 0 where `found` has none: states never vanish."""
    return tuple((s, p, found.get((s, p), 0)) for s in SESSION_STATES for p in SESSION_PROTOCOLS)


def sorted_statuses(items: Iterable[CollectorStatus]) -> Tuple[CollectorStatus, ...]:
    """Collector statuses in the contract's order (by name)."""
    return tuple(sorted(items, key=lambda c: c.name))


def _plain(value: Any) -> Dict[str, Any]:
    """A flat dataclass as a JSON object; an unknown optional value is null."""
    return {f.name: getattr(value, f.name) for f in fields(value)}


def _sessions_doc(s: Sessions) -> Dict[str, Any]:
    counts: Dict[str, Dict[str, int]] = {}
    for state, protocol, n in s.counts:
        if n:  # a zero is what the parser assumes for a pair the agent does not send
            counts.setdefault(state, {})[protocol] = n
    doc: Dict[str, Any] = {
        "source": s.source, "counts": counts, "users": s.users, "total": s.total, "truncated": s.truncated,
        "oldest_disconnect_time_seconds": s.oldest_disconnect_time_seconds,
        "logons_total": s.logons_total, "logoffs_total": s.logoffs_total,
        "disconnects_total": s.disconnects_total, "reconnects_total": s.reconnects_total,
        "list": [{"id": e.id, "logon_time_seconds": e.logon_time_seconds, "state": e.state, "protocol": e.protocol,
                  "user": e.user, "idle_seconds": e.idle_seconds} for e in s.entries],
    }
    groups = {k: _plain(g) for k, g in (("user", s.user_processes), ("system", s.system_processes)) if g}
    if groups:
        doc["processes"] = groups
    if s.top_users is not None:
        doc["top_users"] = [_plain(u) for u in s.top_users]
    if s.apps is not None:
        doc["apps"] = [_plain(a) for a in s.apps]
    return doc


def reading_to_doc(name: str, reading: Any) -> Any:
    """One reading (a `Report` field under `readings`) as the JSON the agent sends for it."""
    if name == "cpu":
        return {"count": reading.count, "seconds": dict(reading.seconds)}
    if name == "sessions":
        return _sessions_doc(reading)
    if name == "logons":
        return _logons_doc(reading)
    if name == "experience":
        return _experience_doc(reading)
    if isinstance(reading, tuple):
        return [_plain(item) for item in reading]
    return _plain(reading)


READINGS = ("cpu", "load", "memory", "filesystems", "disks", "interfaces", "system", "sessions", "capacity",
            "logons", "experience")


def _histogram_doc(h: Histogram) -> Dict[str, Any]:
    return {"buckets": list(h.buckets), "sum_seconds": h.sum_seconds, "count": h.count}


def _experience_doc(r: Experience) -> Dict[str, Any]:
    doc: Dict[str, Any] = {"protocols": {p.protocol: {"rtt": _histogram_doc(p.rtt), "received_bytes": p.received_bytes,
                                                      "sent_bytes": p.sent_bytes} for p in r.protocols}}
    if r.input_delay is not None:
        doc["input_delay"] = _histogram_doc(r.input_delay)
    return doc


def _logons_doc(r: Logons) -> Dict[str, Any]:
    return {
        "duration_buckets": list(r.duration_buckets), "duration_sum_seconds": r.duration_sum_seconds,
        "duration_count": r.duration_count,
        "phases": {p: {"sum_seconds": s, "count": n} for (p, s), (_, n) in zip(r.phase_sum_seconds, r.phase_count)},
        "phases_missing": dict(r.phases_missing), "failures": dict(r.failures), "events_skipped": r.events_skipped,
        **({} if r.successes is None else {"successes": r.successes}),
        **({} if r.disconnect_reasons is None else {"disconnect_reasons": dict(r.disconnect_reasons)}),
    }


def report_to_doc(report: Report) -> Dict[str, Any]:
    """The report as the JSON document an agent sends, holding only what the contract knows.

    `parse_report(report_to_doc(r)) == r`: the collector keeps, snapshots and serves
    this form, never the document as received, so unknown keys cost it nothing.
    """
    doc: Dict[str, Any] = {
        "schema_version": report.schema_version, "host": report.host, "site": report.site,
        "delivery_group": report.delivery_group, "timestamp_seconds": report.timestamp_seconds,
        "agent": _plain(report.agent),
        "collectors": {c.name: {"success": c.success, "duration_seconds": c.duration_seconds}
                       for c in report.collectors},
        "readings": {name: reading_to_doc(name, getattr(report, name)) for name in READINGS
                     if getattr(report, name) is not None},
    }
    if report.goodbye:
        doc["goodbye"] = True
    return doc


def report_to_json(report: Report) -> bytes:
    """`report_to_doc` as compact UTF-8 JSON."""
    return json.dumps(report_to_doc(report), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class _Checker:
    """Collects problems while reading a decoded JSON document."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.problems: List[Problem] = []
        self.omitted = 0

    def fail(self, path: str, reason: str, message: str) -> None:
        if len(self.problems) >= MAX_PROBLEMS:
            self.omitted += 1
            return
        self.problems.append(Problem(printable_path(path), reason, message))

    def error(self) -> "ReportError":
        return ReportError(self.problems, self.omitted)

    @property
    def failed(self) -> int:
        """Problems found so far, listed or not: sections compare it before and after."""
        return len(self.problems) + self.omitted

    def obj(self, doc: Any, path: str) -> Optional[Mapping[str, Any]]:
        if not isinstance(doc, dict):
            self.fail(path, REASON_TYPE, f"must be an object, got {json_kind(doc)}")
            return None
        return doc

    def get(self, doc: Mapping[str, Any], key: str, path: str, required: bool = True) -> Any:
        if key in doc and doc[key] is not None:
            return doc[key]
        if required:
            self.fail(_join(path, key), REASON_MISSING, "is required")
        return None

    def number(self, doc: Mapping[str, Any], key: str, path: str, *, required: bool = True,
               minimum: Optional[float] = 0.0, maximum: float = MAX_COUNTER) -> Optional[float]:
        value = doc.get(key)
        kind = type(value)
        if kind is float or kind is int:  # the common case, kept cheap: reports carry hundreds of numbers
            if (minimum is None or value >= minimum) and value <= maximum and value == value:
                return float(value)
        elif value is None:
            if required:
                self.fail(_join(path, key), REASON_MISSING, "is required")
            return None
        where = _join(path, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, REASON_TYPE, f"must be a number, got {json_kind(value)}")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(where, REASON_NOT_FINITE, "must be a finite number")
            return None
        if minimum is not None and value < minimum:
            self.fail(where, REASON_RANGE, f"must be >= {minimum:g}, got {_short(value)}")
            return None
        self.fail(where, REASON_RANGE, f"must be <= {maximum:g}, got {_short(value)}")
        return None

    def integer(self, doc: Mapping[str, Any], key: str, path: str, *, required: bool = True,
                minimum: int = 0, maximum: int = 2**53) -> Optional[int]:
        value = self.get(doc, key, path, required)
        if value is None:
            return None
        where = _join(path, key)
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                self.fail(where, REASON_TYPE, f"must be an integer, got {json_kind(value)}")
                return None
        if value < minimum or value > maximum:
            self.fail(where, REASON_RANGE, f"must be between {minimum} and {maximum}, got {_short(value)}")
            return None
        return value

    def boolean(self, doc: Mapping[str, Any], key: str, path: str, *, required: bool = True,
                default: bool = False) -> bool:
        value = self.get(doc, key, path, required)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(_join(path, key), REASON_TYPE, f"must be true or false, got {json_kind(value)}")
            return default
        return value

    def text(self, doc: Mapping[str, Any], key: str, path: str, *, required: bool = True,
             allow_empty: bool = False, max_length: Optional[int] = None) -> Optional[str]:
        value = self.get(doc, key, path, required)
        if value is None:
            return None
        return self.text_value(value, _join(path, key), allow_empty=allow_empty, max_length=max_length)

    def text_value(self, value: Any, where: str, *, allow_empty: bool = False,
                   max_length: Optional[int] = None) -> Optional[str]:
        if not isinstance(value, str):
            self.fail(where, REASON_TYPE, f"must be a string, got {json_kind(value)}")
            return None
        problem = label_problem(value, self.limits.max_label_length if max_length is None else max_length,
                                allow_empty)
        if problem is not None:
            self.fail(where, *problem)
            return None
        return value

    def items(self, doc: Mapping[str, Any], key: str, path: str, cap: int) -> Optional[List[Any]]:
        value = self.get(doc, key, path, required=False)
        if value is None:
            return None
        where = _join(path, key)
        if not isinstance(value, list):
            self.fail(where, REASON_TYPE, f"must be a list, got {json_kind(value)}")
            return None
        if len(value) > cap:
            self.fail(where, REASON_TOO_MANY, f"must have at most {cap} entries, got {len(value)}")
            return None
        return value

    def choice(self, doc: Mapping[str, Any], key: str, path: str, allowed: Tuple[str, ...]) -> Optional[str]:
        value = self.get(doc, key, path)
        if value is None:
            return None
        if value not in allowed:
            self.fail(_join(path, key), REASON_INVALID, f"must be one of {', '.join(allowed)}")
            return None
        return value


def canonical_host(name: str) -> str:
    """Host names are case-insensitive and a trailing dot names the same host (RFC 4343, RFC 1034):
    "VDA-01." and "vda-01" are one host, one series, one owner."""
    return name.rstrip(".").lower()


def printable_path(path: str) -> str:
    """A field path as an answer or a log line may show it: escaped and cut to MAX_PATH_CHARS."""
    shown = _UNPRINTABLE_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", path[:MAX_PATH_CHARS])
    return shown if len(path) <= MAX_PATH_CHARS else f"{shown}... ({len(path)} characters)"


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _short(value: float) -> str:
    """A number for a message: huge integers are not printed in full."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text)} digits)"


def json_kind(value: Any) -> str:
    """A value's type in JSON's words, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def parse_report(doc: Any, limits: Limits = DEFAULT_LIMITS) -> Report:
    """Check a decoded JSON document against the contract and return it as a `Report`.

    Raises `ReportError` listing every problem. Unknown keys are ignored so that
    an agent of a newer minor release can add optional fields without being refused.
    """
    c = _Checker(limits)
    top = c.obj(doc, "")
    if top is None:
        raise c.error()
    version = top.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        if version is None:
            c.fail("schema_version", REASON_MISSING, "is required")
        else:
            c.fail("schema_version", REASON_SCHEMA,
                   f"must be {SCHEMA_VERSION}, got {version!r:.40}")
        raise c.error()

    host = c.text(top, "host", "", max_length=253)
    if host is not None and not HOST_NAME_RE.match(host):
        c.fail("host", REASON_INVALID,
               "must be a host name: letters, digits, '.', '-' and '_', starting with a letter or digit")
        host = None
    host = canonical_host(host) if host is not None else None
    site = c.text(top, "site", "")
    group = c.text(top, "delivery_group", "")
    timestamp = c.number(top, "timestamp_seconds", "", minimum=0.0, maximum=1e11)
    goodbye = c.boolean(top, "goodbye", "", required=False)
    agent = _agent(c, top)
    collectors = _collectors(c, top)
    readings = top.get("readings", {})
    if readings is None:
        readings = {}
    if not isinstance(readings, dict):
        c.fail("readings", REASON_TYPE, f"must be an object, got {json_kind(readings)}")
        readings = {}

    parsed = {
        "cpu": _section(c, readings, "cpu", _cpu),
        "load": _section(c, readings, "load", _load),
        "memory": _section(c, readings, "memory", _memory),
        "filesystems": _list_section(c, readings, "filesystems", limits.max_filesystems, _filesystem,
                                     key=lambda f: f.mountpoint),
        "disks": _list_section(c, readings, "disks", limits.max_disks, _disk, key=lambda d: d.device),
        "interfaces": _list_section(c, readings, "interfaces", limits.max_interfaces, _interface,
                                    key=lambda i: i.interface),
        "system": _section(c, readings, "system", _system),
        "sessions": _section(c, readings, "sessions", _sessions),
        "capacity": _section(c, readings, "capacity", _capacity),
        "logons": _section(c, readings, "logons", _logons),
        "experience": _section(c, readings, "experience", _experience),
    }
    if c.problems:
        raise c.error()
    return Report(
        schema_version=SCHEMA_VERSION, host=host, site=site, delivery_group=group,
        timestamp_seconds=timestamp, goodbye=goodbye, agent=agent, collectors=collectors,
        **parsed,
    )


def _agent(c: _Checker, top: Mapping[str, Any]) -> Optional[AgentInfo]:
    raw = c.get(top, "agent", "")
    if raw is None or c.obj(raw, "agent") is None:
        return None
    before = c.failed
    info = AgentInfo(
        version=c.text(raw, "version", "agent", max_length=64),
        os=c.text(raw, "os", "agent", max_length=32),
        os_release=c.text(raw, "os_release", "agent", required=False, allow_empty=True) or "",
        interval_seconds=c.number(raw, "interval_seconds", "agent", minimum=1.0, maximum=86400.0),
        start_time_seconds=c.number(raw, "start_time_seconds", "agent", minimum=0.0, maximum=1e11),
    )
    return info if c.failed == before else None


def _collectors(c: _Checker, top: Mapping[str, Any]) -> Tuple[CollectorStatus, ...]:
    raw = c.get(top, "collectors", "", required=False)
    if raw is None:
        return ()
    if c.obj(raw, "collectors") is None:
        return ()
    if len(raw) > c.limits.max_collectors:
        c.fail("collectors", REASON_TOO_MANY,
               f"must have at most {c.limits.max_collectors} entries, got {len(raw)}")
        return ()
    out = []
    for name in sorted(raw):
        path = _join("collectors", name)
        if c.text_value(name, path, max_length=32) is None:
            continue
        entry = c.obj(raw[name], path)
        if entry is None:
            continue
        success = c.boolean(entry, "success", path)
        duration = c.number(entry, "duration_seconds", path, maximum=3600.0)
        if duration is not None:
            out.append(CollectorStatus(name, success, duration))
    return tuple(out)


def _section(c: _Checker, readings: Mapping[str, Any], key: str, parse):
    raw = readings.get(key)
    if raw is None:
        return None
    path = _join("readings", key)
    if c.obj(raw, path) is None:
        return None
    before = c.failed
    value = parse(c, raw, path)
    return value if c.failed == before else None


def _list_section(c: _Checker, readings: Mapping[str, Any], name: str, cap: int, parse, key):
    items = c.items(readings, name, "readings", cap)
    if items is None:
        return None
    out = []
    seen = set()
    for i, raw in enumerate(items):
        path = _join(_join("readings", name), i)
        if c.obj(raw, path) is None:
            continue
        before = c.failed
        value = parse(c, raw, path)
        if c.failed != before:
            continue
        identity = key(value)
        if identity in seen:
            c.fail(path, REASON_DUPLICATE, f"duplicates {identity!r}: each entry must be unique")
            continue
        seen.add(identity)
        out.append(value)
    return tuple(out)


def _cpu(c: _Checker, raw: Mapping[str, Any], path: str) -> Cpu:
    count = c.integer(raw, "count", path, minimum=1, maximum=65536)
    seconds = c.get(raw, "seconds", path)
    modes: List[Tuple[str, float]] = []
    where = _join(path, "seconds")
    if seconds is not None and c.obj(seconds, where) is not None:
        if len(seconds) > c.limits.max_cpu_modes:
            c.fail(where, REASON_TOO_MANY, f"must have at most {c.limits.max_cpu_modes} modes")
        else:
            for mode in sorted(seconds):
                if not isinstance(mode, str) or not re.match(r"^[a-z_]{1,32}$", mode):
                    c.fail(_join(where, mode), REASON_INVALID, "mode must be lower-case letters and '_'")
                    continue
                value = c.number(seconds, mode, where)
                if value is not None:
                    modes.append((mode, value))
    return Cpu(count=count, seconds=tuple(modes))


def _load(c: _Checker, raw: Mapping[str, Any], path: str) -> Load:
    return Load(*(c.number(raw, k, path, maximum=1e6) for k in ("load1", "load5", "load15")))


def _memory(c: _Checker, raw: Mapping[str, Any], path: str) -> Memory:
    total = c.number(raw, "total_bytes", path)
    available = c.number(raw, "available_bytes", path)
    swap_total = c.number(raw, "swap_total_bytes", path, required=False)
    swap_used = c.number(raw, "swap_used_bytes", path, required=False)
    if total is not None and available is not None and available > total:
        c.fail(_join(path, "available_bytes"), REASON_RANGE, "must not exceed total_bytes")
    return Memory(total, available, swap_total, swap_used)


def _filesystem(c: _Checker, raw: Mapping[str, Any], path: str) -> Filesystem:
    size = c.number(raw, "size_bytes", path)
    avail = c.number(raw, "avail_bytes", path)
    return Filesystem(
        mountpoint=c.text(raw, "mountpoint", path),
        fstype=c.text(raw, "fstype", path, allow_empty=True),
        device=c.text(raw, "device", path, required=False, allow_empty=True) or "",
        size_bytes=size, avail_bytes=avail,
    )


_DISK_FIELDS = ("read_bytes", "written_bytes", "reads_completed", "writes_completed", "io_time_seconds")
_NET_FIELDS = ("receive_bytes", "transmit_bytes", "receive_packets", "transmit_packets",
               "receive_errors", "transmit_errors", "receive_drops", "transmit_drops")


def _disk(c: _Checker, raw: Mapping[str, Any], path: str) -> Disk:
    return Disk(c.text(raw, "device", path), *(c.number(raw, k, path) for k in _DISK_FIELDS))


def _interface(c: _Checker, raw: Mapping[str, Any], path: str) -> Interface:
    return Interface(c.text(raw, "interface", path), *(c.number(raw, k, path) for k in _NET_FIELDS))


def _system(c: _Checker, raw: Mapping[str, Any], path: str) -> System:
    return System(
        boot_time_seconds=c.number(raw, "boot_time_seconds", path, maximum=1e11),
        processes=c.integer(raw, "processes", path, maximum=10**7),
    )


def _sessions(c: _Checker, raw: Mapping[str, Any], path: str) -> Sessions:
    source = c.choice(raw, "source", path, SESSION_SOURCES)
    counts = _session_counts(c, raw, path)
    entries = _session_entries(c, raw, path)
    top_users = None
    top_raw = c.items(raw, "top_users", path, c.limits.max_top_users)
    if top_raw is not None:
        users = []
        for i, item in enumerate(top_raw):
            where = _join(_join(path, "top_users"), i)
            if c.obj(item, where) is None:
                continue
            users.append(UserUsage(
                user=c.text(item, "user", where),
                cpu_cores=c.number(item, "cpu_cores", where, maximum=65536.0),
                memory_bytes=c.number(item, "memory_bytes", where),
            ))
        top_users = tuple(users)
    return Sessions(
        source=source,
        counts=counts,
        users=c.integer(raw, "users", path, maximum=10**6),
        total=c.integer(raw, "total", path, maximum=10**6),
        truncated=c.boolean(raw, "truncated", path, required=False),
        oldest_disconnect_time_seconds=c.number(raw, "oldest_disconnect_time_seconds", path,
                                                required=False, maximum=1e11),
        logons_total=c.number(raw, "logons_total", path),
        logoffs_total=c.number(raw, "logoffs_total", path),
        disconnects_total=c.number(raw, "disconnects_total", path),
        reconnects_total=c.number(raw, "reconnects_total", path),
        entries=entries,
        user_processes=_process_group(c, raw, path, "user"),
        system_processes=_process_group(c, raw, path, "system"),
        top_users=top_users,
        apps=_apps(c, raw, path),
    )


def _apps(c: _Checker, raw: Mapping[str, Any], path: str) -> Optional[Tuple[AppUsage, ...]]:
    """Per-application use; an app named twice is refused (it would be two identical series)."""
    items = c.items(raw, "apps", path, c.limits.max_apps)
    if items is None:
        return None
    out = []
    seen = set()
    for i, item in enumerate(items):
        where = _join(_join(path, "apps"), i)
        if c.obj(item, where) is None:
            continue
        before = c.failed
        usage = AppUsage(
            app=c.text(item, "app", where, max_length=64),
            cpu_seconds_total=c.number(item, "cpu_seconds_total", where),
            memory_bytes=c.number(item, "memory_bytes", where),
            sessions=c.integer(item, "sessions", where, maximum=10**6),
        )
        if c.failed != before:
            continue
        if usage.app in seen:
            c.fail(where, REASON_DUPLICATE, f"duplicates {usage.app!r}: each entry must be unique")
            continue
        seen.add(usage.app)
        out.append(usage)
    return tuple(out)


def _session_counts(c: _Checker, raw: Mapping[str, Any], path: str) -> Tuple[Tuple[str, str, int], ...]:
    """Every (state, protocol) pair, 0 where the agent sent none: states never vanish."""
    counts = c.get(raw, "counts", path)
    where = _join(path, "counts")
    found: Dict[Tuple[str, str], int] = {}
    if counts is not None and c.obj(counts, where) is not None:
        if len(counts) > len(SESSION_STATES):
            c.fail(where, REASON_TOO_MANY, f"must have at most {len(SESSION_STATES)} states, got {len(counts)}")
            counts = {}
        for state, by_protocol in counts.items():
            state_path = _join(where, state)
            if state not in SESSION_STATES:
                c.fail(state_path, REASON_INVALID, f"state must be one of {', '.join(SESSION_STATES)}")
                continue
            if c.obj(by_protocol, state_path) is None:
                continue
            if len(by_protocol) > len(SESSION_PROTOCOLS):
                c.fail(state_path, REASON_TOO_MANY,
                       f"must have at most {len(SESSION_PROTOCOLS)} protocols, got {len(by_protocol)}")
                continue
            for protocol in by_protocol:
                if protocol not in SESSION_PROTOCOLS:
                    c.fail(_join(state_path, protocol), REASON_INVALID,
                           f"protocol must be one of {', '.join(SESSION_PROTOCOLS)}")
                    continue
                n = c.integer(by_protocol, protocol, state_path, maximum=10**6)
                if n is not None:
                    found[(state, protocol)] = n
    return tuple((s, p, found.get((s, p), 0)) for s in SESSION_STATES for p in SESSION_PROTOCOLS)


def _session_entries(c: _Checker, raw: Mapping[str, Any], path: str) -> Tuple[SessionEntry, ...]:
    items = c.items(raw, "list", path, c.limits.max_sessions_listed)
    if items is None:
        return ()
    out = []
    for i, item in enumerate(items):
        where = _join(_join(path, "list"), i)
        if c.obj(item, where) is None:
            continue
        out.append(SessionEntry(
            id=c.text(item, "id", where, max_length=64),
            logon_time_seconds=c.number(item, "logon_time_seconds", where, required=False, maximum=1e11),
            state=c.choice(item, "state", where, SESSION_STATES),
            protocol=c.choice(item, "protocol", where, SESSION_PROTOCOLS),
            user=c.text(item, "user", where, required=False, allow_empty=True) or "",
            idle_seconds=c.number(item, "idle_seconds", where, required=False, maximum=1e9),
        ))
    return tuple(out)


def _process_group(c: _Checker, raw: Mapping[str, Any], path: str, name: str) -> Optional[ProcessGroup]:
    groups = raw.get("processes")
    if groups is None:
        return None
    where = _join(path, "processes")
    if c.obj(groups, where) is None:
        return None
    group = groups.get(name)
    if group is None:
        return None
    where = _join(where, name)
    if c.obj(group, where) is None:
        return None
    return ProcessGroup(
        cpu_seconds_total=c.number(group, "cpu_seconds_total", where),
        memory_bytes=c.number(group, "memory_bytes", where),
        processes=c.integer(group, "processes", where, maximum=10**7),
    )


def _capacity(c: _Checker, raw: Mapping[str, Any], path: str) -> Capacity:
    return Capacity(
        max_sessions=c.integer(raw, "max_sessions", path, required=False, maximum=10**6),
        accepting_sessions=c.boolean(raw, "accepting_sessions", path),
        maintenance=c.boolean(raw, "maintenance", path),
    )


def _closed_counts(c: _Checker, raw: Mapping[str, Any], key: str, path: str,
                   names: Tuple[str, ...]) -> Tuple[Tuple[str, int], ...]:
    """A count for every name of a closed set, 0 where the agent sent none; an unknown name is refused."""
    counts = c.get(raw, key, path, required=False) or {}
    where = _join(path, key)
    if c.obj(counts, where) is None:
        return ()
    for name in counts:
        if name not in names:
            c.fail(_join(where, name), REASON_INVALID, f"must be one of {', '.join(names)}")
    return tuple((n, c.integer(counts, n, where, maximum=10**12) if n in counts else 0) for n in names)


def _logons(c: _Checker, raw: Mapping[str, Any], path: str) -> Logons:
    count = c.integer(raw, "duration_count", path, maximum=10**12)
    buckets = c.get(raw, "duration_buckets", path)
    where = _join(path, "duration_buckets")
    cumulative: Tuple[int, ...] = ()
    if buckets is not None:
        if not isinstance(buckets, list) or len(buckets) != len(LOGON_DURATION_BUCKETS):
            c.fail(where, REASON_INVALID, f"must be a list of {len(LOGON_DURATION_BUCKETS)} cumulative counts, "
                   f"one per bound ({', '.join(_short(b) for b in LOGON_DURATION_BUCKETS)} s)")
        else:
            out = []
            for i, n in enumerate(buckets):
                if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 10**12:
                    c.fail(_join(where, i), REASON_INVALID, f"must be an integer from 0 to 10^12, got {json_kind(n)}")
                    n = 0
                out.append(n)
            cumulative = tuple(out)
            if any(a > b for a, b in zip(cumulative, cumulative[1:])) or (count is not None and cumulative
                                                                           and cumulative[-1] > count):
                c.fail(where, REASON_INVALID, "must not decrease, and must not exceed duration_count")
    phases = c.get(raw, "phases", path, required=False) or {}
    pwhere = _join(path, "phases")
    sums: List[Tuple[str, float]] = []
    counts: List[Tuple[str, int]] = []
    if c.obj(phases, pwhere) is not None:
        for name in phases:
            if name not in LOGON_PHASES:
                c.fail(_join(pwhere, name), REASON_INVALID, f"must be one of {', '.join(LOGON_PHASES)}")
        for name in LOGON_PHASES:
            one = phases.get(name)
            if one is None:
                sums.append((name, 0.0))
                counts.append((name, 0))
                continue
            w = _join(pwhere, name)
            if c.obj(one, w) is None:
                continue
            sums.append((name, c.number(one, "sum_seconds", w) or 0.0))
            counts.append((name, c.integer(one, "count", w, maximum=10**12) or 0))
    return Logons(
        duration_buckets=cumulative,
        duration_sum_seconds=c.number(raw, "duration_sum_seconds", path),
        duration_count=count,
        phase_sum_seconds=tuple(sums),
        phase_count=tuple(counts),
        phases_missing=_closed_counts(c, raw, "phases_missing", path, LOGON_PHASES),
        failures=_closed_counts(c, raw, "failures", path, LOGON_FAILURE_REASONS),
        events_skipped=c.integer(raw, "events_skipped", path, required=False, maximum=10**12) or 0,
        successes=c.integer(raw, "successes", path, required=False, maximum=10**12),
        disconnect_reasons=(None if raw.get("disconnect_reasons") is None
                            else _closed_counts(c, raw, "disconnect_reasons", path, DISCONNECT_REASONS)),
    )


def _histogram(c: _Checker, raw: Mapping[str, Any], key: str, path: str,
               bounds: Tuple[float, ...]) -> Optional[Histogram]:
    """A histogram object: `buckets` cumulative (one count per bound, never decreasing, at most `count`)."""
    doc = c.get(raw, key, path)
    where = _join(path, key)
    if doc is None or c.obj(doc, where) is None:
        return None
    before = c.failed
    count = c.integer(doc, "count", where, maximum=10**12)
    total = c.number(doc, "sum_seconds", where)
    buckets = c.get(doc, "buckets", where)
    bwhere = _join(where, "buckets")
    cumulative: Tuple[int, ...] = ()
    if buckets is not None:
        if not isinstance(buckets, list) or len(buckets) != len(bounds):
            c.fail(bwhere, REASON_INVALID, f"must be a list of {len(bounds)} cumulative counts, one per bound "
                   f"({', '.join(_short(b) for b in bounds)} s)")
        else:
            out = []
            for i, n in enumerate(buckets):
                if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 10**12:
                    c.fail(_join(bwhere, i), REASON_INVALID, f"must be an integer from 0 to 10^12, got {json_kind(n)}")
                    n = 0
                out.append(n)
            cumulative = tuple(out)
            if any(a > b for a, b in zip(cumulative, cumulative[1:])) or (count is not None and cumulative[-1] > count):
                c.fail(bwhere, REASON_INVALID, "must not decrease, and must not exceed count")
    if c.failed != before:
        return None
    return Histogram(buckets=cumulative, sum_seconds=total, count=count)


def _experience(c: _Checker, raw: Mapping[str, Any], path: str) -> Experience:
    input_delay = None
    if raw.get("input_delay") is not None:
        input_delay = _histogram(c, raw, "input_delay", path, INPUT_DELAY_BUCKETS)
    protocols: List[ProtocolExperience] = []
    found = c.get(raw, "protocols", path, required=False) or {}
    where = _join(path, "protocols")
    if c.obj(found, where) is not None:
        for name in found:
            if name not in EXPERIENCE_PROTOCOLS:
                c.fail(_join(where, name), REASON_INVALID, f"must be one of {', '.join(EXPERIENCE_PROTOCOLS)}")
        for name in EXPERIENCE_PROTOCOLS:
            one = found.get(name)
            if one is None:
                continue
            w = _join(where, name)
            if c.obj(one, w) is None:
                continue
            rtt = _histogram(c, one, "rtt", w, RTT_BUCKETS)
            received = c.number(one, "received_bytes", w)
            sent = c.number(one, "sent_bytes", w)
            if rtt is not None and received is not None and sent is not None:
                protocols.append(ProtocolExperience(name, rtt, received, sent))
    return Experience(input_delay=input_delay, protocols=tuple(protocols))
