"""Alert rehearsal: a simulated farm, the real collector, a real Prometheus, time-compressed rules.

What it proves, and what it does not
------------------------------------
The exact `for:` and `keep_firing_for:` boundaries are pinned by the promtool
unit tests (`tests/rules/*.yaml`, run by tests/test_rules.py), on literal
series. This rehearsal proves something else: that the real expressions, fed
by real reports (built by the agent's own `build_report` from the simulator's
hosts, pushed by the agent's own `Pusher`) through the real collector and
scraped by a real Prometheus, fire for each simulated fault the alert meant
for it, and only that one, on the right host, and resolve when the fault ends.
A quiet day fires nothing.

Time compression
----------------
The real rules wait up to 2 h (`for:`) and look back up to 6 h (`[6h]`), so the
rehearsal loads a copy of both rule files with every duration divided by
FACTOR (tests/rules_compress.py): `for: 15m` becomes 7.5 s, `[1h]` 30 s,
`offset 1h` 30 s, no range window under 4 scrape intervals (MIN_RANGE). The
simulator runs FACTOR times faster than the wall clock (Simulation speed), so
one real second is two simulated minutes and the simulated day moves as fast
as the compressed rules expect. Numbers are not compressed (the predict_linear
horizon 24 * 3600 s, the 4 h disconnect age), nor are annotations. Prometheus
scrapes and evaluates every SCRAPE seconds; the collector keeps its default of
3 missed intervals for staleness.

The agents report every AGENT_INTERVAL = 1 s of real time, the smallest
interval the report contract allows (contract/report.py): two simulated minutes
instead of the real 15 s, so a range window holds few reports and a host goes
stale 3 s (six simulated minutes) after its last report. That is what the
rehearsal measures, not the production timing.

The day
-------
30 hosts over 2 sites x 3 delivery groups (every third group a pool of
single-session desktops), seed 1; simulated time starts at 10:00. Simulated
time is always ahead of the wall clock (the next 10:00 UTC), because the
simulator stamps sessions (disconnect times) in simulated time while reports
carry real time: a simulated 10:00 in the past would make disconnects look
hours old to `time()`, and VdiLongDisconnectedSessions could fire on a quiet
day depending on when the test runs.

1. Quiet: once every host is seen up and every rule evaluated, the farm runs
   through the morning into the lunch dip for the longest compressed `for:`
   (VdiHostNotAcceptingSessions, 2 h -> 60 s) plus two evaluations; no alert
   may be pending or firing at any poll.
2. Faults, all at once, one host each, at about 12:15 simulated (see PLAN).
   Each expected alert must fire within `show + for + 2 evaluations` of the
   fault (plus SLACK for a busy 2-core machine), where `show` is the time the
   fault needs to appear in the data (per fault in `plan()`), and no earlier
   than its `for:` after it went pending (Prometheus' activeAt). Every other
   alert, pending or firing, on any host, fails the test at once, including
   VdiBlackHoleHost on the black hole's healthy peers once it is repaired and
   refills (a rule that averaged the peers' logons used to do that). The
   healthy hosts and the two
   untouched groups go through the return from lunch meanwhile: the quiet-day
   check goes on for them.
3. As soon as all alerts of a fault fire, that fault is cleared (the dead agent
   reports again, the filled disk is emptied as an operator would) and its
   alerts must be gone from /api/v1/alerts within `recover + keep_firing_for +
   2 evaluations`, and not before `keep_firing_for`. The host in maintenance
   is cleared last, once Prometheus showed it in state "maintenance" (with no
   alert for it at any poll), and must come back "up" without any alert.

Measured times go to test-artifacts/rehearsal.txt. Only the rehearsal is
marked slow; the unit tests of the compression run in the fast suite.

Not rehearsed (no simulator fault drives them; each is pinned by promtool):
VdiwatchCollector* (tests/rules/collector_alerts_test.yaml), VdiManyAgentsDown
and VdiAgentCollectorFailing (agent_alerts_test.yaml), VdiHostNearMaxSessions
(host_alerts_test.yaml), VdiDeliveryGroupCapacityHigh/Critical,
VdiDeliveryGroupNoHostAccepting and VdiLongDisconnectedSessions
(group_alerts_test.yaml). All of them are part of the quiet-day check.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
import yaml

from agent.sim import Simulation, day_start
from agent.simfarm import Farm, SimHost
from tests.conftest import ARTIFACTS, CollectorProcess, require_tool
from tests.prometheus_harness import RULE_FILES, PrometheusServer, value
from tests.rules_compress import (
    compress_duration,
    compress_expr,
    compress_rules,
    format_duration,
    parse_duration,
    write_compressed,
)

FACTOR = 120  # simulated seconds per real second; every rule duration is divided by it
SCRAPE = 0.5  # Prometheus scrape and evaluation interval, seconds
EVAL = SCRAPE
MIN_RANGE = 4 * SCRAPE  # the shortest range window of the compressed rules
AGENT_INTERVAL = 1.0  # real seconds between two reports of a simulated agent
MISSED = 3  # the collector's missed_intervals (its default)
POLL = 0.25  # how often the test reads /api/v1/alerts
SLACK = 1.0  # scheduling jitter on a busy 2-core machine: a push, a scrape or an evaluation running late
HOSTS = 30
START_HOUR = 10.0
COLLECTOR_CONFIG = "[collector]\nmin_report_interval = 0\n"

# fault -> host. Group-scoped faults (black_hole, not_accepting, maintenance,
# agent_dies) each get a delivery group of shared hosts of their own: a black
# hole is judged against its peers, a drained or dead host changes its group's
# open capacity, and a pool of 5 single-session desktops with one host gone
# would legitimately run out of room. group-2-3 stays clean.
PLAN = {
    "black_hole": "sim-0001",        # site-1 group-1-1, alone in its group
    "not_accepting": "sim-0002",     # site-1 group-1-2
    "cpu_saturated": "sim-0008",     # site-1 group-1-2
    "clock_skew": "sim-0003",        # site-1 group-1-3 (pool)
    "maintenance": "sim-0004",       # site-2 group-2-1
    "memory_exhausted": "sim-0010",  # site-2 group-2-1
    "agent_dies": "sim-0005",        # site-2 group-2-2
    "disk_filling": "sim-0011",      # site-2 group-2-2
}


def window(duration: str) -> float:
    """Seconds of a range window of the real rules, as compressed."""
    return parse_duration(compress_duration(duration, FACTOR, MIN_RANGE))


# ---------------------------------------------------------------------------
# The compression function, on literal rule snippets.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, factor, floor, expected", [
    ("15m", 60, 0, "15s"),
    ("15m", 120, 0, "7500ms"),
    ("1h30m", 60, 0, "90s"),
    ("10m", 180, 0, "3333ms"),
    ("5m", 180, 2, "2s"),          # floored: 1.67 s would hold fewer than 4 scrapes of 0.5 s
    ("6h", 120, 2, "180s"),
    ("1d", 86400, 0, "1s"),
    ("500ms", 1000, 0, "1ms"),     # never rounded down to nothing
    ("0s", 60, 0, "0s"),
    ("0", 60, 0, "0s"),
])
def test_compress_duration(text: str, factor: float, floor: float, expected: str) -> None:
    assert compress_duration(text, factor, floor) == expected


@pytest.mark.parametrize("bad", ["5", "m5", "5min", "1.5h", "5m*2", ""])
def test_parse_duration_refuses_what_prometheus_would_not_read(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_format_duration_reads_back_exactly() -> None:
    for seconds in (0.001, 0.5, 2.5, 7.5, 30, 3333.333):
        assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=0.0005)


@pytest.mark.parametrize("expr, expected", [
    ("rate(x[5m])", "rate(x[5s])"),
    ("rate(x[1m])", "rate(x[2s])"),  # the floor
    ("avg_over_time(host:vdi_host_memory_available:ratio[10m]) < 0.10",
     "avg_over_time(host:vdi_host_memory_available:ratio[10s]) < 0.10"),
    ("max_over_time(rate(x[5m])[1h:1m])", "max_over_time(rate(x[5s])[60s:1s])"),
    ("max_over_time(rate(x[5m])[1h:])", "max_over_time(rate(x[5s])[60s:])"),
    ("host:vdi_host_accepting_sessions:healthy offset 1h == 1",
     "host:vdi_host_accepting_sessions:healthy offset 60s == 1"),
    ("x OFFSET -30m", "x OFFSET -30s"),
    ("rate(x[1h] offset 1d)", "rate(x[60s] offset 1440s)"),
    # numbers, names and quoted text are not durations
    ("predict_linear(v[6h], 24 * 3600) < 0", "predict_linear(v[360s], 24 * 3600) < 0"),
    ("time() - t > 4 * 3600", "time() - t > 4 * 3600"),
    ("host:vdi_host_cpu_utilization:ratio_rate5m > 0.9", "host:vdi_host_cpu_utilization:ratio_rate5m > 0.9"),
    ('x{path=~"[5m].*", note="offset 1h"}[5m]', 'x{path=~"[5m].*", note="offset 1h"}[5s]'),
    ("x{a='it\\'s [1h]'}[1h]", "x{a='it\\'s [1h]'}[60s]"),
    ("x{data_offset=\"a\"} + my_offset", "x{data_offset=\"a\"} + my_offset"),
    ("x # [5m] in a comment\n  + y[5m]", "x # [5m] in a comment\n  + y[5s]"),
])
def test_compress_expr(expr: str, expected: str) -> None:
    assert compress_expr(expr, 60, 2.0) == expected


@pytest.mark.parametrize("expr", ["rate(x[5m * 2])", "rate(x[$window])", "rate(x[5m)"])
def test_compress_expr_refuses_what_it_cannot_compress(expr: str) -> None:
    with pytest.raises(ValueError):
        compress_expr(expr, 60, 2.0)


def test_compress_rules_touches_durations_only() -> None:
    text = """
groups:
  - name: g
    interval: 1m
    rules:
      - record: host:x:rate5m
        expr: rate(x[5m])
      - alert: Slow
        expr: |
          avg_over_time(host:x:rate5m[10m]) > 0.9
            and on (host)
          y offset 1h == 1
        for: 15m
        keep_firing_for: 1h
        labels:
          severity: ticket
        annotations:
          summary: "busy for 15m [5m]"
          description: '{{ with query "rate(x[10m])" }}{{ end }}'
"""
    out = yaml.safe_load(compress_rules(text, 60, 2.0))
    group = out["groups"][0]
    assert group["interval"] == "1s"
    record, alert = group["rules"]
    assert record == {"record": "host:x:rate5m", "expr": "rate(x[5s])"}
    assert alert["expr"] == "avg_over_time(host:x:rate5m[10s]) > 0.9\n  and on (host)\ny offset 60s == 1\n"
    assert (alert["for"], alert["keep_firing_for"]) == ("15s", "60s")
    assert alert["labels"] == {"severity": "ticket"}
    assert alert["annotations"] == {"summary": "busy for 15m [5m]",
                                    "description": '{{ with query "rate(x[10m])" }}{{ end }}'}


def alert_timing(path: Path) -> Dict[str, Tuple[float, float, str]]:
    """alert -> (for, keep_firing_for, severity) of a rule file, in seconds."""
    rules = [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"] if "alert" in r]
    return {r["alert"]: (parse_duration(str(r.get("for", "0s"))), parse_duration(str(r.get("keep_firing_for", "0s"))),
                         r["labels"]["severity"]) for r in rules}


def test_compressed_copy_of_the_real_rules(tmp_path: Path) -> None:
    """Every for:, keep_firing_for: and window of the real files is divided; nothing else changes."""
    compressed = write_compressed(RULE_FILES, tmp_path, FACTOR, MIN_RANGE)
    real, fast = alert_timing(RULE_FILES[1]), alert_timing(compressed[1])
    assert fast.keys() == real.keys()
    for name, (for_s, keep_s, severity) in real.items():
        assert fast[name] == (pytest.approx(for_s / FACTOR, abs=0.001), pytest.approx(keep_s / FACTOR, abs=0.001),
                              severity), name
    for original, copy in zip(RULE_FILES, compressed):
        before = [r for g in yaml.safe_load(original.read_text())["groups"] for r in g["rules"]]
        after = [r for g in yaml.safe_load(copy.read_text())["groups"] for r in g["rules"]]
        assert [{k: v for k, v in r.items() if k not in ("expr", "for", "keep_firing_for")} for r in before] == \
               [{k: v for k, v in r.items() if k not in ("expr", "for", "keep_firing_for")} for r in after]
        windows = [parse_duration(w) for r in after for w in re.findall(r"\[(\w+)\]", r["expr"])]
        assert windows and min(windows) >= MIN_RANGE


@pytest.mark.needs_tool
def test_compressed_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    compressed = write_compressed(RULE_FILES, tmp_path, FACTOR, MIN_RANGE)
    result = subprocess.run([promtool, "check", "rules", *map(str, compressed)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------
# The rehearsal.
# ---------------------------------------------------------------------------

class Pump(threading.Thread):
    """Ticks the simulation every AGENT_INTERVAL s; the test puts and clears faults under `lock`, between ticks."""

    def __init__(self, sim: Simulation):
        super().__init__(daemon=True, name="rehearsal-pump")
        self.sim = sim
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.errors: List[str] = []

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stopping.is_set():
            try:
                with self.lock:
                    self.sim.tick()
            except Exception as e:  # reported by the test, never swallowed
                self.errors.append(repr(e))
            next_at = max(next_at + self.sim.interval, time.monotonic())
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(10)
        self.sim.pool.shutdown(wait=True)


@dataclass
class Rehearsal:
    farm: Farm
    sim: Simulation
    pump: Pump
    prom: PrometheusServer
    timing: Dict[str, Tuple[float, float, str]]  # alert -> compressed (for, keep, severity)


def simulated_start(now: float) -> float:
    """The next START_HOUR (UTC) from now: simulated time never lags the wall clock (see the docstring)."""
    start = day_start(now, START_HOUR)
    return start if start >= now else start + 86400


@pytest.fixture
def rehearsal(tmp_path: Path) -> Iterator[Rehearsal]:
    rules = write_compressed(RULE_FILES, tmp_path / "rules", FACTOR, MIN_RANGE)
    collector = CollectorProcess(tmp_path, config=COLLECTOR_CONFIG).start()
    farm = Farm.build(HOSTS, sites=2, groups_per_site=3, seed=1)
    sim = Simulation(farm, [collector.url], interval=AGENT_INTERVAL, speed=FACTOR,
                     start=simulated_start(time.time()))
    pump = Pump(sim)
    prom = None
    try:
        pump.start()
        prom = PrometheusServer(tmp_path, [f"127.0.0.1:{collector.port}"], rule_files=rules,
                                interval=format_duration(SCRAPE)).start()
        yield Rehearsal(farm, sim, pump, prom, alert_timing(rules[1]))
    finally:
        pump.stop()
        if prom is not None:
            prom.stop()
        collector.stop()


def parse_time(text: str) -> float:
    """Unix time of an RFC 3339 timestamp as Prometheus writes it (nanoseconds, Z or an offset)."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    assert m, f"not an RFC 3339 time: {text!r}"
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    base = dt.datetime.fromisoformat(m.group(1) + zone).timestamp()
    return base + float("0." + (m.group(2) or "0"))


@dataclass
class Seen:
    """One alert (one label set) as the test saw it in /api/v1/alerts."""

    labels: Dict[str, str]
    active_at: float  # Prometheus' activeAt: when it went pending
    pending_seen: float
    firing_seen: Optional[float] = None
    gone_seen: Optional[float] = None


class AlertLog:
    """Every alert ever listed by Prometheus, with when the test saw it pending, firing and gone."""

    def __init__(self, prom: PrometheusServer):
        self.prom = prom
        self.seen: Dict[Tuple[Tuple[str, str], ...], Seen] = {}
        self.flapped: List[Seen] = []  # listed again after it had gone

    def poll(self) -> List[Seen]:
        """Read the alerts once; the active ones."""
        alerts = self.prom.alerts()
        now = time.time()
        active = []
        for a in alerts:
            key = tuple(sorted(a["labels"].items()))
            entry = self.seen.get(key)
            again = entry is not None and entry.gone_seen is not None
            if entry is None or again:
                entry = self.seen[key] = Seen(dict(a["labels"]), parse_time(a["activeAt"]), now)
            if again:
                self.flapped.append(entry)
            if a["state"] == "firing" and entry.firing_seen is None:
                entry.firing_seen = now
            active.append(entry)
        keys = {tuple(sorted(a["labels"].items())) for a in alerts}
        for key, entry in self.seen.items():
            if key not in keys and entry.gone_seen is None:
                entry.gone_seen = now
        return active


@dataclass
class Case:
    """One fault on one host, and what it must fire."""

    fault: str
    host: SimHost
    show: Dict[str, float]  # alert -> seconds the fault needs to show in the data
    recover: float  # seconds the cleared fault needs to leave the data
    why: str
    faulted_at: float = 0.0
    cleared_at: Optional[float] = None
    alerts: Dict[str, Seen] = field(default_factory=dict)


def disk_fill_seconds(free_below: float) -> float:
    """Simulated seconds `disk_filling` needs to bring a fresh host below `free_below` free (agent/simfarm.py)."""
    probe = SimHost("probe", "site", "group", 20, False)
    probe.faults["disk_filling"] = 0.0
    t, step = 0.0, 60.0
    while t < 7 * 86400:
        fs = probe.readings(t)["filesystems"][0]
        if fs["avail_bytes"] / fs["size_bytes"] < free_below:
            return t
        t += step
        probe.step(t, 0, step)
    raise AssertionError(f"disk_filling never gets below {free_below:.0%} free")


def plan(farm: Farm, fault_sim_time: float) -> List[Case]:
    """The faults, and how long each needs to show in the data (real seconds)."""
    data = AGENT_INTERVAL + SCRAPE + EVAL  # the next report, scraped, through the recording rules
    midnight = fault_sim_time - fault_sim_time % 86400
    cases = [
        Case("agent_dies", farm.by_name(PLAN["agent_dies"]),
             {"VdiAgentDown": AGENT_INTERVAL + MISSED * AGENT_INTERVAL + SCRAPE + EVAL}, data,
             "stale after 3 missed intervals"),
        Case("cpu_saturated", farm.by_name(PLAN["cpu_saturated"]),
             {"VdiHostCpuSaturated": data + window("5m")}, data + window("5m"),
             "the 5m rate window fills with busy time"),
        Case("memory_exhausted", farm.by_name(PLAN["memory_exhausted"]),
             {"VdiHostMemoryLow": data + window("10m")}, data + window("10m"),
             "the 10m average falls under 10 %"),
        Case("clock_skew", farm.by_name(PLAN["clock_skew"]),
             {"VdiAgentClockSkew": data + window("10m")}, data + window("10m"),
             "the 10m average passes 60 s (the host is 300 s ahead)"),
        Case("disk_filling", farm.by_name(PLAN["disk_filling"]),
             {"VdiHostDiskFillingUp": data + AGENT_INTERVAL + disk_fill_seconds(0.25) / FACTOR,
              "VdiHostDiskAlmostFull": data + AGENT_INTERVAL + disk_fill_seconds(0.05) / FACTOR},
             data, "the disk fills from 60 % free: under 25 %, then under 5 % (emptied on clear)"),
        Case("not_accepting", farm.by_name(PLAN["not_accepting"]),
             {"VdiHostNotAcceptingSessions": data}, data, "the next report says drained"),
        # The black-hole detector needs traffic: the host's peers must take
        # >= 10 logons in the hour, spread over at least half of them, while
        # it takes none. In this model that happens when users come back from
        # lunch, about 13:03 simulated; 13:15 leaves a margin.
        Case("black_hole", farm.by_name(PLAN["black_hole"]),
             {"VdiBlackHoleHost": max(0.0, midnight + 13.25 * 3600 - fault_sim_time) / FACTOR + SCRAPE + EVAL},
             data, "its peers take >= 10 logons after lunch while it takes none"),
        Case("maintenance", farm.by_name(PLAN["maintenance"]), {}, data, "must fire nothing"),
    ]
    assert {c.fault for c in cases} == set(PLAN)
    return cases


def clear(rehearsal: Rehearsal, case: Case) -> None:
    with rehearsal.pump.lock:
        rehearsal.farm.clear(case.host.name, case.fault)
        if case.fault == "disk_filling":
            case.host.disk_used = 0.0  # the operator frees the space: a stopped leak gives nothing back
        case.cleared_at = time.time()


def report(cases: List[Case], timing: Dict[str, Tuple[float, float, str]]) -> str:
    lines = [f"alert rehearsal: factor {FACTOR}, scrape/eval {SCRAPE} s, agent interval {AGENT_INTERVAL} s",
             f"{'fault':18} {'host':9} {'alert':28} {'for':>6} {'fired':>6} {'budget':>6} "
             f"{'pend>fire':>9} {'keep':>6} {'resolved':>8} {'budget':>6}"]
    for c in cases:
        for name, show in (c.show or {"-": 0.0}).items():
            s = c.alerts.get(name)
            for_s, keep_s, _ = timing.get(name, (0.0, 0.0, ""))
            fired = s.firing_seen - c.faulted_at if s and s.firing_seen else None
            gone = s.gone_seen - c.cleared_at if s and s.gone_seen and c.cleared_at else None
            pend = s.firing_seen - s.active_at if s and s.firing_seen else None
            lines.append(" ".join([
                f"{c.fault:18} {c.host.name:9} {name:28} {for_s:6.1f}",
                f"{fired:6.1f}" if fired is not None else f"{'-':>6}", f"{show + for_s + 2 * EVAL + SLACK:6.1f}",
                f"{pend:9.1f}" if pend is not None else f"{'-':>9}", f"{keep_s:6.1f}",
                f"{gone:8.1f}" if gone is not None else f"{'-':>8}", f"{c.recover + keep_s + 2 * EVAL + SLACK:6.1f}"]))
    return "\n".join(lines)


@pytest.mark.slow
def test_each_fault_fires_its_alert_only_and_resolves(rehearsal: Rehearsal) -> None:
    farm, sim, prom, timing = rehearsal.farm, rehearsal.sim, rehearsal.prom, rehearsal.timing

    # Warm-up: the collector is scraped, every host is up, every rule evaluated.
    prom.wait_until(lambda: prom.query('up{job="vdiwatch-collector"} == 1'), message="the collector is scraped")
    prom.wait_until(lambda: len(prom.query('host:vdi_host_state:max{state="up"} == 1')) == HOSTS,
                    message=f"all {HOSTS} hosts up in Prometheus")
    prom.wait_until(lambda: all(r["health"] == "ok" for g in prom.rules() for r in g["rules"]),
                    message="every rule evaluated without error")
    # Before the first scrape there is no `up` series at all, which is what
    # VdiwatchCollectorDown's absent() is for; with `for: 3m` compressed to
    # 1.5 s, a slow first scrape on a busy machine lets it fire at start. That
    # is the rule working, not the farm: wait until it has resolved, then watch.
    prom.wait_until(lambda: not [a for a in prom.alerts() if a["labels"]["alertname"] == "VdiwatchCollectorDown"],
                    message="start-up: no VdiwatchCollectorDown left from before the first scrape")
    log = AlertLog(prom)

    # Phase 1, a quiet day: nothing pending, nothing firing, for the longest for: (a loop, not
    # wait_until: the check is that something never happens).
    quiet = max(for_s for for_s, _, _ in timing.values()) + 2 * EVAL
    assert quiet == pytest.approx(2 * 3600 / FACTOR + 2 * EVAL)  # VdiHostNotAcceptingSessions' 2 h
    end = time.time() + quiet
    while time.time() < end:
        active = log.poll()
        assert not active, f"alerts on a quiet day: {[a.labels for a in active]}"
        time.sleep(POLL)
    sessions = sum(value(s) for s in prom.query("site_delivery_group:vdi_sessions:sum"))
    assert sessions > HOSTS, f"a quiet day, but not an empty one: {sessions} sessions"

    # Phase 2: every fault at once, one host each.
    with rehearsal.pump.lock:
        fault_sim_time = sim.sim_now()
        cases = plan(farm, fault_sim_time)
        for c in cases:
            farm.fault(c.host.name, c.fault, fault_sim_time)
        faulted_at = time.time()
    for c in cases:
        c.faulted_at = faulted_at
    hour = (fault_sim_time % 86400) / 3600
    assert 12.0 <= hour <= 12.75, f"faults at {hour:.2f} h simulated: the black hole needs them before ~12:50"
    groups = {c.fault: (c.host.site, c.host.delivery_group) for c in cases}
    for fault in ("black_hole", "not_accepting", "maintenance", "agent_dies"):
        others = [f for f, g in groups.items() if g == groups[fault] and f != fault]
        assert fault != "black_hole" or not others, f"the black hole's group must be clean: {others}"
        assert not {"black_hole", "not_accepting", "maintenance", "agent_dies"} & set(others), (fault, others)
    by_host = {c.host.name: c for c in cases}
    maintenance = by_host[PLAN["maintenance"]]
    maintenance_seen = False
    alerting = [c for c in cases if c.show]

    deadline = faulted_at + max(show + timing[a][0] + c.recover + timing[a][1] for c in alerting
                                for a, show in c.show.items()) + 8 * EVAL + 4 * SLACK + 10
    while True:
        for a in log.poll():
            name, host = a.labels["alertname"], a.labels.get("host", "")
            case = by_host.get(host)
            assert case is not None and name in case.show, (
                f"{name} for {host or a.labels} was not meant to fire\n"
                f"{report(cases, timing)}")
            case.alerts[name] = a
        flapped = [a.labels for a in log.flapped]
        assert not flapped, f"fired again after it resolved: {flapped}"
        for c in alerting:
            if c.cleared_at is None and all(c.alerts.get(n) and c.alerts[n].firing_seen for n in c.show):
                clear(rehearsal, c)
        if not maintenance_seen:
            maintenance_seen = bool(prom.query(f'host:vdi_host_state:max{{host="{maintenance.host.name}",'
                                               f'state="maintenance"}} == 1'))
        if maintenance.cleared_at is None and maintenance_seen and all(c.cleared_at for c in alerting):
            clear(rehearsal, maintenance)
        resolved = all(c.cleared_at and all(c.alerts[n].gone_seen for n in c.show) for c in alerting)
        if resolved and maintenance.cleared_at and prom.query(
                f'host:vdi_host_state:max{{host="{maintenance.host.name}",state="up"}} == 1'):
            break
        assert time.time() < deadline, \
            f"not all faults fired and resolved in time\n{report(cases, timing)}"
        time.sleep(POLL)
    # Two more evaluations after the last change: still nothing.
    time.sleep(2 * EVAL + POLL)
    still = [a.labels for a in log.poll()]
    assert still == [], still

    table = report(cases, timing)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "rehearsal.txt").write_text(table + "\n")

    for c in alerting:
        for name, show in c.show.items():
            a = c.alerts[name]
            for_s, keep_s, severity = timing[name]
            expected = {"alertname": name, "severity": severity, "host": c.host.name, "site": c.host.site,
                        "delivery_group": c.host.delivery_group}
            if name.startswith("VdiHostDisk"):
                expected.update(mountpoint="C:\\", fstype="NTFS")
            assert a.labels == expected, f"{c.fault}: {a.labels}"
            assert a.firing_seen is not None and a.gone_seen is not None and c.cleared_at is not None
            fired, pending = a.firing_seen - c.faulted_at, a.firing_seen - a.active_at
            assert fired <= show + for_s + 2 * EVAL + SLACK, f"{c.fault}: {name} late ({c.why})\n{table}"
            assert for_s - 0.05 <= pending <= for_s + 2 * EVAL + SLACK, f"{c.fault}: {name} for: not kept\n{table}"
            gone = a.gone_seen - c.cleared_at
            assert keep_s - 0.05 <= gone <= c.recover + keep_s + 2 * EVAL + SLACK, \
                f"{c.fault}: {name} resolved {gone:.1f} s after the fault ended\n{table}"
    assert maintenance_seen, "the host in maintenance never showed as such"
    assert rehearsal.pump.errors == [] and sim.failed == 0, (rehearsal.pump.errors[:3], sim.failed)
