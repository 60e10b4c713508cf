"""Alert rehearsal: a simulated farm, the real collector, a real Prometheus, time-compressed rules.

What it proves, and what it does not
------------------------------------
The exact `for:` and `keep_firing_for:` boundaries are pinned by the promtool
unit tests (`tests/rules/*.yaml`, run by tests/test_rules.py), on literal
series. This rehearsal proves something else: that the real expressions, fed
by real reports (built by the agent's own `build_report` from the simulator's
hosts, pushed by the agent's own `Pusher`) through the real collector and
scraped by a real Prometheus, fire for each simulated fault the alert meant
for it, and only that one, on the right host, delivery group or site, and
resolve when the fault ends. A quiet day fires nothing.

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
rehearsal measures, not the production timing. It also means 8 times fewer
observations per session than in production (one input delay and one round
trip per session per report): minimum counts of session-intervals are 8 times
harder to reach here.

The day
-------
30 hosts over 2 sites x 3 delivery groups of 5 (every third group a pool of
single-session desktops), seed 1; simulated time starts at 05:45, and the
pooled desktops power on at 06:00. Simulated time is always ahead of the
wall clock (the next 05:45 UTC), because the simulator stamps sessions
(disconnect times) in simulated time while reports carry real time: a
simulated morning in the past would make disconnects look hours old to
`time()`, and VdiLongDisconnectedSessions could fire on a quiet day
depending on when the test runs.

Why the morning: logons happen only when users arrive. In the simulator a
delivery group of 5 shared hosts takes about one logon every 2 minutes during
the morning ramp (06:30-09:00) and about 20 in all when users come back from
lunch, spread over 50 minutes: at least 10 logons in every 30 minutes (the
slow-logon alerts' minimum) for the 30 minutes of VdiDeliveryGroupLogonSlow's
`for:` happens only in the ramp. The black hole needs its peers' logons too.

1. Quiet: once every host is seen up and every rule evaluated, the farm runs
   through the first two hours of the morning ramp (the logon storm of the
   day) for the longest compressed `for:` (VdiHostNotAcceptingSessions,
   2 h -> 60 s) plus two evaluations; no alert may be pending or firing at
   any poll, with logons, logon attempts, input delay, round trips and
   applications' CPU all in the data.
2. Faults, all at once, at about 08:05 simulated (see PLAN): on a host, on a
   whole delivery group (Farm.fault_group) or on a whole site
   (Farm.fault_site). Each case expects a set of alerts with exact labels
   (alertname, severity, the scope labels host / site and delivery_group /
   delivery_group / site, plus `mountpoint`/`fstype`, `app`, `protocol`
   where the rule keeps them). An alert belongs to a case when its name is
   in the case's set and its scope labels fall inside the case's hosts; it
   must then be one of the expected label sets. Every other alert, pending or
   firing, anywhere, fails the test at once, including VdiBlackHoleHost on
   the black hole's healthy peers once it is repaired and refills (a rule
   that averaged the peers' logons used to do that), a per-host logon-failure
   ticket on a host the plan did not expect, and any input delay burn.
   Each expected alert must fire within `show + for + 2 evaluations` of the
   fault (plus SLACK for a busy 2-core machine), where `show` is the time the
   fault needs to appear in the data, and no earlier than its `for:` after it
   went pending (Prometheus' activeAt). `show` is computed, never guessed:
   from the report interval and the compressed windows where the fault shows
   at once (a dead agent, a busy CPU, round trips), and where it depends on
   the users (logons, attempts, sessions dropping, the black hole's peers,
   the input delay SLO) from a forecast: a copy of the farm at the moment of
   the faults is stepped on, a report interval at a time, after the pump's
   own record of the past, and the alert's condition (windows, minimum
   counts, histogram_quantile) is read from it; `show` is the first step from
   which it holds for the whole `for:`, plus one report, scrape and
   evaluation, plus FORECAST_MARGIN (the live farm's steps are not exactly
   120 s apart, so its users may arrive a step later). Whether
   VdiDeliveryGroupLogonVerySlow (p95 over 3 minutes, for 15 minutes) is
   expected is read from the forecast as well: with 10-20 logons in 30
   minutes the p95 is their slowest or second slowest, and under broken_gpo
   a logon over 180 s comes now and then. The untouched groups and hosts go
   through the rest of the ramp meanwhile: the quiet-day check goes on for
   them.
3. As soon as all alerts of a case fire, its fault is cleared on every host
   it is on (the dead agent reports again, the filled disk is emptied as an
   operator would, the group's logons work again, the network is back) and
   its alerts must be gone from /api/v1/alerts within `recover +
   keep_firing_for + 2 evaluations`, and not before `keep_firing_for`. The
   host in maintenance is cleared last, once Prometheus showed it in state
   "maintenance" (with no alert for it at any poll), and must come back "up"
   without any alert.

The cases (PLAN): black_hole, not_accepting, cpu_saturated, clock_skew,
maintenance, memory_exhausted, agent_dies, disk_filling on one host each, as
before; slow_profile (group-1-2) and broken_gpo (group-2-2) fire
VdiDeliveryGroupLogonSlow for their site and group; auth_failure (group-2-1)
fires VdiDeliveryGroupLogonFailures and VdiHostLogonFailures on each of its
hosts where more than half of 10 or more attempts fail (the four open ones;
the fifth is in maintenance): Prometheus lists those tickets while
Alertmanager holds them back behind the group's page (inhibition 9), and the
rehearsal checks Prometheus, so they are expected, not tolerated;
network_blip (group-1-2: sessions drop, their clients reconnect, drop again)
fires VdiSiteDisconnectStorm for site-1 while it lasts; network_degraded (all
of site-2) fires VdiSiteRoundTripTimeHigh for site-2 and protocol ica only,
its input delay (1.6 times slower) burning no budget; app_hog on a pooled
desktop (sim-0006, which holds the pool's first session) fires
VdiHostAppCpuHog (app acrord32) and VdiHostCpuSaturated, and the input delay
burn alerts of its group only where the forecast's SLO math says so: none,
since the pool (2 to 4 sessions) has 50 to 110 session-intervals in its
compressed hour, under the minimum traffic of all three (2400 in the last
hour; 600 an hour on average over 3 days).

Why the hog is on a pooled desktop: on a host of a shared group (one of five
with every session poor: 20 % of the group's session-intervals) the SLO math
of the rehearsal does not say what it says in production. The agents report
every 2 simulated minutes, not every 15 s, so a group of 5 shared hosts (50 to
75 sessions) has 1000 to 2100 session-intervals in its compressed hour, under
the fast burn's 2400: the page that production would send cannot fire here.
The 3-day budget alert would fire instead, because the rehearsal's "3 days"
hold only its own 2 simulated hours of history, and it would resolve only
once the 6 h window (180 s here) forgot the hog, past the test's time.

Measured times go to test-artifacts/rehearsal.txt. Only the rehearsal is
marked slow; the unit tests of the compression run in the fast suite.

Not rehearsed (no simulator fault drives them; each is pinned by promtool):
VdiwatchCollector* (tests/rules/collector_alerts_test.yaml), VdiManyAgentsDown
and VdiAgentCollectorFailing (agent_alerts_test.yaml), VdiHostNearMaxSessions
(host_alerts_test.yaml), VdiDeliveryGroupCapacityHigh/Critical,
VdiDeliveryGroupNoHostAccepting and VdiLongDisconnectedSessions
(group_alerts_test.yaml), and the input delay burn alerts
(experience_alerts_test.yaml): no rehearsal group reaches their minimum
traffic, as said above. All of them are part of the quiet-day check.
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
import subprocess
import threading
import time
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
import yaml

from agent.sim import Simulation, day_start
from agent.simfarm import HOG_APP, Farm, SimHost
from contract.report import INPUT_DELAY_BUCKETS, LOGON_DURATION_BUCKETS
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
START_HOUR = 5.75  # the pooled desktops power on at 06:00; users log on from 06:30 to 09:00 (agent/simfarm.py)
STEP = AGENT_INTERVAL * FACTOR  # simulated seconds between two reports of a host
FORECAST_MARGIN = 2 * AGENT_INTERVAL  # the live steps are not exactly STEP apart: users may come a step later
HORIZON = 3 * 3600.0  # simulated seconds the plan's forecast looks ahead of the faults
COLLECTOR_CONFIG = "[collector]\nmin_report_interval = 0\n"

# fault -> (scope, where): a host, a delivery group (Farm.fault_group) or a site (Farm.fault_site).
# 30 hosts: site-1 has group-1-1 (sim-0001, 0007, ...), group-1-2 (sim-0002, 0008, ...) and the pool
# group-1-3 (sim-0003, 0009, ...); site-2 has group-2-1 (sim-0004, ...), group-2-2 (sim-0005, ...) and
# the pool group-2-3 (sim-0006, ...): 5 hosts each. Group-scoped faults (black_hole, not_accepting,
# maintenance, agent_dies) each get a delivery group of shared hosts of their own: a black hole is judged
# against its peers (no other fault in its group), a drained or dead host changes its group's open
# capacity, and a pool of 5 single-session desktops with one host gone would legitimately run out of
# room. The logon faults need a group of shared hosts each (a pool takes a logon or two an hour, under
# the alerts' minimum of 10), one apiece since their alerts are per group; the three left are those of
# not_accepting, maintenance and agent_dies, whose hosts take no logon or none reported while they last.
# The flapping network is under one group of site-1, the degraded one under all of site-2: their alerts
# are per site. The application hog is on a pooled desktop: see the docstring for why.
PLAN = {
    "black_hole": ("host", "sim-0001"),               # site-1 group-1-1, alone in its group
    "not_accepting": ("host", "sim-0002"),            # site-1 group-1-2
    "cpu_saturated": ("host", "sim-0008"),            # site-1 group-1-2
    "clock_skew": ("host", "sim-0003"),               # site-1 group-1-3 (pool)
    "maintenance": ("host", "sim-0004"),              # site-2 group-2-1
    "memory_exhausted": ("host", "sim-0010"),         # site-2 group-2-1
    "agent_dies": ("host", "sim-0005"),               # site-2 group-2-2
    "disk_filling": ("host", "sim-0011"),             # site-2 group-2-2
    "app_hog": ("host", "sim-0006"),                  # site-2 group-2-3 (pool), the desktop the first user gets
    "slow_profile": ("delivery_group", "group-1-2"),
    "network_blip": ("delivery_group", "group-1-2"),
    "auth_failure": ("delivery_group", "group-2-1"),
    "broken_gpo": ("delivery_group", "group-2-2"),
    "network_degraded": ("site", "site-2"),
}
GROUP_SCOPED = ("black_hole", "not_accepting", "maintenance", "agent_dies")


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

@dataclass(frozen=True)
class Snap:
    """What the rules read of one simulated host after one step: its counters and gauges."""

    up: bool  # reporting and not in maintenance: the hosts the rules count
    reporting: bool
    accepting: bool  # up and open for logons
    sessions: int
    max_sessions: int
    session_logons: int  # vdi_session_logons_total
    logon_buckets: Tuple[int, ...]  # cumulative, at each LOGON_DURATION_BUCKETS bound, then the count
    failures: int  # failed logons, all reasons
    successes: int
    network_disconnects: int  # reasons network and server
    delay_count: int  # input delay observations (session-intervals)
    delay_poor: int  # of them above 0.5 s


def snapshot(farm: Farm) -> Tuple[float, Dict[str, Snap]]:
    """The farm after its last step, at the simulated time of that step."""
    assert farm.last is not None
    out = {}
    for h in farm.hosts:
        logons = h.logon_totals.reading()
        delay = h.experience.reading().input_delay
        reporting = h.reporting()
        up = reporting and "maintenance" not in h.faults
        poor = 0 if delay is None else delay.count - delay.buckets[INPUT_DELAY_BUCKETS.index(0.5)]
        out[h.name] = Snap(
            up=up, reporting=reporting, accepting=up and h.accepting(), sessions=len(h.sessions),
            max_sessions=h.max_sessions, session_logons=h.logons,
            logon_buckets=tuple(logons.duration_buckets) + (logons.duration_count,),
            failures=sum(n for _, n in logons.failures), successes=logons.successes or 0,
            network_disconnects=sum(n for r, n in logons.disconnect_reasons or () if r in ("network", "server")),
            delay_count=0 if delay is None else delay.count, delay_poor=poor)
    return farm.last, out


class Pump(threading.Thread):
    """Ticks the simulation every AGENT_INTERVAL s; the test puts and clears faults under `lock`, between ticks.

    After each tick it keeps a `snapshot` of the farm: the past the forecast of `plan()` starts from."""

    def __init__(self, sim: Simulation, name: str = "rehearsal-pump"):
        super().__init__(daemon=True, name=name)
        self.sim = sim
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.errors: List[str] = []
        self.history: List[Tuple[float, Dict[str, Snap]]] = []

    def step(self) -> None:
        """One report interval, under `lock`: the tick, then the snapshot."""
        self.sim.tick()
        self.history.append(snapshot(self.sim.farm))

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stopping.is_set():
            try:
                with self.lock:
                    self.step()
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


# ---------------------------------------------------------------------------
# The plan: which fault where, what it must fire and when it can.
# ---------------------------------------------------------------------------

def window(duration: str) -> float:
    """Seconds of a range window of the real rules, as compressed (real seconds)."""
    return parse_duration(compress_duration(duration, FACTOR, MIN_RANGE))


def sim_window(duration: str) -> float:
    """The same window in simulated seconds: what the compressed rules look back over in the farm's time."""
    return window(duration) * FACTOR


class Timeline:
    """The farm step by step: the pump's past, then a forecast. Increases over windows as the rules take them,
    counting only the hosts up at the time of evaluation."""

    def __init__(self, steps: List[Tuple[float, Dict[str, Snap]]]):
        self.steps = steps
        self.times = [t for t, _ in steps]

    def at(self, t: float) -> Dict[str, Snap]:
        """The farm as of the last step at or before t (the first step if none)."""
        return self.steps[max(0, bisect.bisect_right(self.times, t) - 1)][1]

    def between(self, start: float, end: float) -> List[Dict[str, Snap]]:
        return [s for t, s in self.steps if start <= t <= end]

    def increase(self, hosts: List[str], t: float, span: float, name: str) -> float:
        now, then = self.at(t), self.at(t - span)
        return sum(getattr(now[h], name) - getattr(then[h], name) for h in hosts if now[h].up)

    def increases(self, hosts: List[str], t: float, span: float, name: str) -> List[int]:
        now, then = self.at(t), self.at(t - span)
        out = [0] * len(getattr(now[hosts[0]], name))
        for h in (h for h in hosts if now[h].up):
            for i, (a, b) in enumerate(zip(getattr(now[h], name), getattr(then[h], name))):
                out[i] += a - b
        return out


def histogram_quantile(q: float, bounds: Tuple[float, ...], cumulative: List[int]) -> float:
    """Prometheus' histogram_quantile over cumulative counts at `bounds` then +Inf (linear within a bucket)."""
    total = cumulative[-1]
    if total <= 0:
        return float("nan")
    rank = q * total
    b = next(i for i, c in enumerate(cumulative) if c >= rank)
    if b == len(bounds):
        return bounds[-1]
    lower, below = (0.0, 0) if b == 0 else (bounds[b - 1], cumulative[b - 1])
    return lower + (bounds[b] - lower) * (rank - below) / (cumulative[b] - below)


def held_from(timeline: Timeline, after: float, for_s: float, condition) -> Optional[float]:
    """The first step after `after` from which `condition(t)` holds at every step for `for_s` simulated
    seconds: when the alert can go pending and stay pending; None if never within the forecast."""
    start = None
    for t in timeline.times:
        if t <= after:
            continue
        if condition(t):
            start = t if start is None else start
            if t - start >= for_s:
                return start
        else:
            start = None
    return None


def logon_p95_above(timeline: Timeline, hosts: List[str], threshold: float):
    """VdiDeliveryGroupLogon(Very)Slow's data: at least 10 logons in 30m and their p95 above threshold."""
    def condition(t: float) -> bool:
        d = timeline.increases(hosts, t, sim_window("30m"), "logon_buckets")
        return d[-1] >= 10 and histogram_quantile(0.95, LOGON_DURATION_BUCKETS, d) > threshold
    return condition


def group_logons_failing(timeline: Timeline, hosts: List[str]):
    """VdiDeliveryGroupLogonFailures' data: over 15m, > 20 % of >= 20 attempts failed, on >= 2 hosts."""
    def condition(t: float) -> bool:
        f = timeline.increase(hosts, t, sim_window("15m"), "failures")
        s = timeline.increase(hosts, t, sim_window("15m"), "successes")
        failing = sum(1 for h in hosts if timeline.increase([h], t, sim_window("15m"), "failures") > 0)
        return f + s >= 20 and f / (f + s) > 0.20 and failing >= 2
    return condition


def host_logons_failing(timeline: Timeline, host: str):
    """VdiHostLogonFailures' data: over 15m, more than half of at least 10 attempts failed."""
    def condition(t: float) -> bool:
        f = timeline.increase([host], t, sim_window("15m"), "failures")
        s = timeline.increase([host], t, sim_window("15m"), "successes")
        return f + s >= 10 and f / (f + s) > 0.50
    return condition


def site_storm(timeline: Timeline, hosts: List[str]):
    """VdiSiteDisconnectStorm's data: network and server disconnects in 5m >= 10 and >= 5 % of the site's
    sessions (of the hosts reporting now)."""
    def condition(t: float) -> bool:
        drops = timeline.increase(hosts, t, sim_window("5m"), "network_disconnects")
        sessions = sum(timeline.at(t)[h].sessions for h in hosts if timeline.at(t)[h].reporting)
        return drops >= 10 and sessions > 0 and drops / sessions >= 0.05
    return condition


def black_hole(timeline: Timeline, host: str, group: List[str]):
    """VdiBlackHoleHost's data: open the whole hour with room, far fewer sessions than the group's average, no
    logon or no session in the hour, while its peers took >= 10 logons and at least half of the other open
    hosts (two at least) took some."""
    hour = sim_window("1h")

    def condition(t: float) -> bool:
        now, peers = timeline.at(t), [h for h in group if h != host]
        logons = {h: timeline.at(t)[h].session_logons - timeline.at(t - hour)[h].session_logons for h in group}
        past = timeline.between(t - hour, t) + [timeline.at(t - hour)]
        open_hosts = [h for h in group if now[h].accepting]
        return (sum(logons[h] for h in peers) >= 10
                and sum(1 for h in peers if logons[h] > 0) >= max(2, 0.5 * (len(open_hosts) - 1))
                and (logons[host] == 0 or max(s[host].sessions for s in past) == 0)
                and all(s[host].accepting for s in past)
                and now[host].sessions < 0.5 * sum(now[h].sessions for h in open_hosts) / len(open_hosts)
                and now[host].sessions < now[host].max_sessions)
    return condition


def input_delay_burns(timeline: Timeline, hosts: List[str]) -> Dict[str, object]:
    """The input delay SLO's three alerts (docs/alerts.md) on a group's data: error ratio over each window,
    session-intervals in the last hour (minimum traffic), as the recording rules take them."""
    def ratio(t: float, span: float) -> float:
        n = timeline.increase(hosts, t, span, "delay_count")
        return timeline.increase(hosts, t, span, "delay_poor") / n if n else 0.0

    def traffic(t: float) -> float:
        return timeline.increase(hosts, t, sim_window("1h"), "delay_count")

    def average_hourly(t: float) -> float:  # 600 session-intervals an hour on average over 3 days
        past = [u for u in timeline.times if t - sim_window("3d") <= u <= t]
        return sum(traffic(u) for u in past) / len(past)

    return {
        "VdiDeliveryGroupInputDelayFastBurn": lambda t: (
            ratio(t, sim_window("1h")) > 0.144 and ratio(t, sim_window("5m")) > 0.144 and traffic(t) >= 2400),
        "VdiDeliveryGroupInputDelaySlowBurn": lambda t: (
            ratio(t, sim_window("6h")) > 0.06 and ratio(t, sim_window("30m")) > 0.06 and traffic(t) >= 2400),
        "VdiDeliveryGroupInputDelayBudgetBurn": lambda t: (
            ratio(t, sim_window("3d")) > 0.01 and ratio(t, sim_window("6h")) > 0.01 and average_hourly(t) >= 600),
    }


@dataclass
class Expect:
    """One alert a case must fire: its exact labels, and how long its fault needs to show in the data."""

    labels: Dict[str, str]
    show: float  # real seconds from the fault
    seen: Optional[Seen] = None

    @property
    def name(self) -> str:
        return self.labels["alertname"]


@dataclass
class Case:
    """One fault on a host, a delivery group or a site, and what it must fire."""

    fault: str
    scope: str  # host, delivery_group or site
    target: str  # its name
    hosts: List[SimHost]  # the hosts it faults
    expect: List[Expect]
    recover: float  # seconds the cleared fault needs to leave the data
    why: str
    faulted_at: float = 0.0
    cleared_at: Optional[float] = None

    def names(self) -> set:
        return {e.name for e in self.expect}

    def covers(self, labels: Dict[str, str]) -> bool:
        """Whether an alert's scope labels fall inside the hosts of this case."""
        if "host" in labels:
            return labels["host"] in {h.name for h in self.hosts}
        if "delivery_group" in labels and "site" in labels:
            return (labels["site"], labels["delivery_group"]) in {(h.site, h.delivery_group) for h in self.hosts}
        if "delivery_group" in labels:
            return labels["delivery_group"] in {h.delivery_group for h in self.hosts}
        if "site" in labels:
            return labels["site"] in {h.site for h in self.hosts}
        return False

    def groups(self) -> set:
        return {(h.site, h.delivery_group) for h in self.hosts}


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


def faulted_hosts(farm: Farm, fault: str) -> List[SimHost]:
    scope, target = PLAN[fault]
    if scope == "host":
        return [farm.by_name(target)]
    hosts = [h for h in farm.hosts if getattr(h, scope) == target]
    assert hosts, (fault, scope, target)
    return hosts


def put(farm: Farm, fault: str, now: float) -> None:
    scope, target = PLAN[fault]
    if scope == "host":
        farm.fault(target, fault, now)
    elif scope == "delivery_group":
        farm.fault_group(target, fault, now)
    else:
        farm.fault_site(target, fault, now)


def forecast(farm: Farm, fault_sim_time: float, past: List[Tuple[float, Dict[str, Snap]]]) -> Timeline:
    """The pump's past, then `farm` (a copy, faults on) stepped a report interval at a time for HORIZON."""
    steps = list(past)
    for k in range(1, int(HORIZON / STEP) + 1):
        farm.step(fault_sim_time + k * STEP)
        steps.append(snapshot(farm))
    return Timeline(steps)


def plan(farm: Farm, copy: Farm, fault_sim_time: float, past: List[Tuple[float, Dict[str, Snap]]],
         timing: Dict[str, Tuple[float, float, str]]) -> List[Case]:
    """The faults, what each must fire, and how long each needs to show in the data (real seconds).

    Fixed delays (a report, a window filling) are counted as before; where the data depend on the users
    (logons, sessions), `copy` (the farm at the fault, faults on) is stepped forward as the pump would and
    the alert's condition is read from it: `show` is when the condition starts to hold for the alert's
    whole `for:`, plus one report, scrape and evaluation, plus FORECAST_MARGIN."""
    data = AGENT_INTERVAL + SCRAPE + EVAL  # the next report, scraped, through the recording rules
    timeline = forecast(copy, fault_sim_time, past)

    def forecast_show(name: str, condition) -> Optional[float]:
        start = held_from(timeline, fault_sim_time, timing[name][0] * FACTOR, condition)
        return None if start is None else (start - fault_sim_time) / FACTOR + data + FORECAST_MARGIN

    def host_labels(name: str, h: SimHost, **extra: str) -> Dict[str, str]:
        return {"alertname": name, "severity": timing[name][2], "host": h.name, "site": h.site,
                "delivery_group": h.delivery_group, **extra}

    def group_labels(name: str, h: SimHost) -> Dict[str, str]:
        return {"alertname": name, "severity": timing[name][2], "site": h.site, "delivery_group": h.delivery_group}

    def host_case(fault: str, shows: Dict[str, float], recover: float, why: str, **extra: str) -> Case:
        h = farm.by_name(PLAN[fault][1])
        return Case(fault, "host", h.name, [h], [Expect(host_labels(n, h, **extra), s) for n, s in shows.items()],
                    recover, why)

    def must(name: str, show: Optional[float], fault: str) -> float:
        assert show is not None, (f"{fault}: the forecast never holds {name}'s condition for its for: "
                                  f"(faults at {(fault_sim_time % 86400) / 3600:.2f} h simulated)")
        return show

    bh = farm.by_name(PLAN["black_hole"][1])
    bh_group = [h.name for h in farm.hosts if h.delivery_group == bh.delivery_group]
    cases = [
        host_case("agent_dies", {"VdiAgentDown": AGENT_INTERVAL + MISSED * AGENT_INTERVAL + SCRAPE + EVAL}, data,
                  "stale after 3 missed intervals"),
        host_case("cpu_saturated", {"VdiHostCpuSaturated": data + window("5m")}, data + window("5m"),
                  "the 5m rate window fills with busy time"),
        host_case("memory_exhausted", {"VdiHostMemoryLow": data + window("10m")}, data + window("10m"),
                  "the 10m average falls under 10 %"),
        host_case("clock_skew", {"VdiAgentClockSkew": data + window("10m")}, data + window("10m"),
                  "the 10m average passes 60 s (the host is 300 s ahead)"),
        host_case("not_accepting", {"VdiHostNotAcceptingSessions": data}, data, "the next report says drained"),
        host_case("black_hole", {"VdiBlackHoleHost": must("VdiBlackHoleHost", forecast_show(
            "VdiBlackHoleHost", black_hole(timeline, bh.name, bh_group)), "black_hole")}, data,
            "its own logons leave the 1h window while its peers take >= 10 (the morning ramp)"),
        host_case("maintenance", {}, data, "must fire nothing"),
    ]
    disk = host_case("disk_filling", {}, data,
                     "the disk fills from 60 % free: under 25 %, then under 5 % (emptied on clear)")
    for name, free in (("VdiHostDiskFillingUp", 0.25), ("VdiHostDiskAlmostFull", 0.05)):
        disk.expect.append(Expect(host_labels(name, disk.hosts[0], mountpoint="C:\\", fstype="NTFS"),
                                  data + AGENT_INTERVAL + disk_fill_seconds(free) / FACTOR))
    cases.append(disk)
    hog = host_case("app_hog", {"VdiHostCpuSaturated": data + window("5m")}, data + window("5m"),
                    "acrord32 takes 90 % of every CPU: the 5m rate windows fill")
    hog.expect.append(Expect(host_labels("VdiHostAppCpuHog", hog.hosts[0], app=HOG_APP), data + window("5m")))
    hog_group = [h.name for h in farm.hosts if h.delivery_group == hog.hosts[0].delivery_group]
    for name, condition in input_delay_burns(timeline, hog_group).items():  # the SLO math on the group's data
        show = forecast_show(name, condition)
        if show is not None:
            hog.expect.append(Expect({"alertname": name, "severity": timing[name][2],
                                      "delivery_group": hog.hosts[0].delivery_group}, show))
    cases.append(hog)

    # Logons: a delivery group each. A slow or failing logon shows only when users log on: the morning ramp.
    for fault in ("slow_profile", "broken_gpo"):
        hosts = faulted_hosts(farm, fault)
        names = [h.name for h in hosts]
        expect = [Expect(group_labels("VdiDeliveryGroupLogonSlow", hosts[0]), must(
            "VdiDeliveryGroupLogonSlow", forecast_show("VdiDeliveryGroupLogonSlow",
                                                       logon_p95_above(timeline, names, 60)), fault))]
        very = forecast_show("VdiDeliveryGroupLogonVerySlow", logon_p95_above(timeline, names, 180))
        if very is not None:  # only if the forecast's p95 stays above 3 minutes for the page's for:
            expect.append(Expect(group_labels("VdiDeliveryGroupLogonVerySlow", hosts[0]), very))
        cases.append(Case(fault, "delivery_group", PLAN[fault][1], hosts, expect, data + window("30m"),
                          "the group's p95 logon over 30m passes 60 s with >= 10 logons"))
    hosts = faulted_hosts(farm, "auth_failure")
    names = [h.name for h in hosts]
    expect = [Expect(group_labels("VdiDeliveryGroupLogonFailures", hosts[0]), must(
        "VdiDeliveryGroupLogonFailures", forecast_show("VdiDeliveryGroupLogonFailures",
                                                       group_logons_failing(timeline, names)), "auth_failure"))]
    for h in hosts:  # the per-host tickets, on every host where more than half of >= 10 attempts fail
        show = forecast_show("VdiHostLogonFailures", host_logons_failing(timeline, h.name))
        if show is not None:
            expect.append(Expect(host_labels("VdiHostLogonFailures", h), show))
    cases.append(Case("auth_failure", "delivery_group", PLAN["auth_failure"][1], hosts, expect,
                      data + window("15m"), "90 % of the attempts fail as users come in; the 15m window"))

    # The network: a flapping link under one delivery group, a degraded one under a whole site.
    hosts = faulted_hosts(farm, "network_blip")
    site_hosts = [h.name for h in farm.hosts if h.site == hosts[0].site]
    cases.append(Case("network_blip", "delivery_group", PLAN["network_blip"][1], hosts, [Expect(
        {"alertname": "VdiSiteDisconnectStorm", "severity": timing["VdiSiteDisconnectStorm"][2],
         "site": hosts[0].site},
        must("VdiSiteDisconnectStorm", forecast_show("VdiSiteDisconnectStorm", site_storm(timeline, site_hosts)),
             "network_blip"))], data + window("5m"), "sessions drop and reconnect: >= 5 % of the site's in 5m"))
    hosts = faulted_hosts(farm, "network_degraded")
    cases.append(Case("network_degraded", "site", PLAN["network_degraded"][1], hosts, [Expect(
        {"alertname": "VdiSiteRoundTripTimeHigh", "severity": timing["VdiSiteRoundTripTimeHigh"][2],
         "site": hosts[0].site, "protocol": "ica"}, data + window("10m"))], data + window("10m"),
        "every round trip of the site 250-400 ms: the 10m window fills"))

    assert {c.fault for c in cases} == set(PLAN)
    return cases


def clear(rehearsal: Rehearsal, case: Case) -> None:
    """The fault off every host it is on (a group's, a site's), as the repair would."""
    with rehearsal.pump.lock:
        for h in case.hosts:
            rehearsal.farm.clear(h.name, case.fault)
        if case.fault == "disk_filling":
            case.hosts[0].disk_used = 0.0  # the operator frees the space: a stopped leak gives nothing back
        case.cleared_at = time.time()


def where(labels: Dict[str, str]) -> str:
    return labels.get("host") or "/".join(labels[k] for k in ("site", "delivery_group", "protocol", "app")
                                          if k in labels)


def report(cases: List[Case], timing: Dict[str, Tuple[float, float, str]], fault_sim_time: float) -> str:
    hour = (fault_sim_time % 86400) / 3600
    lines = [f"alert rehearsal: factor {FACTOR}, scrape/eval {SCRAPE} s, agent interval {AGENT_INTERVAL} s, "
             f"faults at {int(hour):02d}:{int(hour % 1 * 60):02d} simulated",
             f"{'fault':17} {'on':15} {'alert':36} {'where':22} {'for':>5} {'fired':>6} {'budget':>6} "
             f"{'pend>fire':>9} {'keep':>5} {'resolved':>8} {'budget':>6}"]
    for c in cases:
        for e in c.expect or [Expect({"alertname": "-"}, 0.0)]:
            s = e.seen
            for_s, keep_s, _ = timing.get(e.name, (0.0, 0.0, ""))
            fired = s.firing_seen - c.faulted_at if s and s.firing_seen else None
            gone = s.gone_seen - c.cleared_at if s and s.gone_seen and c.cleared_at else None
            pend = s.firing_seen - s.active_at if s and s.firing_seen else None
            lines.append(" ".join([
                f"{c.fault:17} {c.target:15} {e.name:36} {where(e.labels):22} {for_s:5.1f}",
                f"{fired:6.1f}" if fired is not None else f"{'-':>6}", f"{e.show + for_s + 2 * EVAL + SLACK:6.1f}",
                f"{pend:9.1f}" if pend is not None else f"{'-':>9}", f"{keep_s:5.1f}",
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
    for metric in ("site_delivery_group:vdi_logon_duration_seconds_count:increase30m",
                   "site_delivery_group:vdi_logon_attempts:increase15m",
                   "delivery_group:vdi_session_input_delay_intervals:increase1h",
                   "site:vdi_session_rtt_seconds_count:increase10m", "host:vdi_app_cpu:ratio_rate5m"):
        assert sum(value(s) for s in prom.query(metric)) > 0, f"a quiet day without {metric}"

    # Phase 2: every fault at once.
    with rehearsal.pump.lock:
        fault_sim_time = sim.sim_now()
        for fault in PLAN:
            put(farm, fault, fault_sim_time)
        faulted_at = time.time()
        copy, past = deepcopy(farm), list(rehearsal.pump.history)
    cases = plan(farm, copy, fault_sim_time, past, timing)
    for c in cases:
        c.faulted_at = faulted_at
    hour = (fault_sim_time % 86400) / 3600
    assert 7.75 <= hour <= 8.75, f"faults at {hour:.2f} h simulated: the logon faults need the morning ramp"
    by_fault = {c.fault: c for c in cases}
    for fault in GROUP_SCOPED:  # a black hole is judged against its peers; the others change their group's room
        others = [c.fault for c in cases if c.fault != fault and c.groups() & by_fault[fault].groups()]
        assert fault != "black_hole" or not others, f"the black hole's group must be clean: {others}"
        assert not set(GROUP_SCOPED) & set(others), (fault, others)
    logon_groups = [by_fault[f].groups() for f in ("slow_profile", "broken_gpo", "auth_failure")]
    assert all(not a & b for i, a in enumerate(logon_groups) for b in logon_groups[i + 1:]), logon_groups
    assert not {h.site for h in by_fault["network_blip"].hosts} & {h.site for h in by_fault["network_degraded"].hosts}
    maintenance = by_fault["maintenance"]
    maintenance_seen = False
    alerting = [c for c in cases if c.expect]

    deadline = faulted_at + max(e.show + timing[e.name][0] + c.recover + timing[e.name][1] for c in alerting
                                for e in c.expect) + 8 * EVAL + 4 * SLACK + 10
    while True:
        for a in log.poll():
            owners = [c for c in cases if a.labels["alertname"] in c.names() and c.covers(a.labels)]
            assert len(owners) == 1, f"{a.labels} was not meant to fire\n{report(cases, timing, fault_sim_time)}"
            match = [e for e in owners[0].expect if e.labels == a.labels]
            assert match, f"{owners[0].fault}: {a.labels} is none of {[e.labels for e in owners[0].expect]}"
            match[0].seen = a
        flapped = [a.labels for a in log.flapped]
        assert not flapped, f"fired again after it resolved: {flapped}"
        for c in alerting:
            if c.cleared_at is None and all(e.seen and e.seen.firing_seen for e in c.expect):
                clear(rehearsal, c)
        if not maintenance_seen:
            maintenance_seen = bool(prom.query(f'host:vdi_host_state:max{{host="{maintenance.target}",'
                                               f'state="maintenance"}} == 1'))
        if maintenance.cleared_at is None and maintenance_seen and all(c.cleared_at for c in alerting):
            clear(rehearsal, maintenance)
        resolved = all(c.cleared_at and all(e.seen and e.seen.gone_seen for e in c.expect) for c in alerting)
        if resolved and maintenance.cleared_at and prom.query(
                f'host:vdi_host_state:max{{host="{maintenance.target}",state="up"}} == 1'):
            break
        assert time.time() < deadline, \
            f"not all faults fired and resolved in time\n{report(cases, timing, fault_sim_time)}"
        time.sleep(POLL)
    # Two more evaluations after the last change: still nothing.
    time.sleep(2 * EVAL + POLL)
    still = [a.labels for a in log.poll()]
    assert still == [], still

    table = report(cases, timing, fault_sim_time)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "rehearsal.txt").write_text(table + "\n")

    for c in alerting:
        for e in c.expect:
            s = e.seen
            for_s, keep_s, _ = timing[e.name]
            assert s is not None and s.labels == e.labels, f"{c.fault}: {s and s.labels}"
            assert s.firing_seen is not None and s.gone_seen is not None and c.cleared_at is not None
            fired, pending = s.firing_seen - c.faulted_at, s.firing_seen - s.active_at
            assert fired <= e.show + for_s + 2 * EVAL + SLACK, f"{c.fault}: {e.name} late ({c.why})\n{table}"
            assert for_s - 0.05 <= pending <= for_s + 2 * EVAL + SLACK, f"{c.fault}: {e.name} for: not kept\n{table}"
            gone = s.gone_seen - c.cleared_at
            assert keep_s - 0.05 <= gone <= c.recover + keep_s + 2 * EVAL + SLACK, \
                f"{c.fault}: {e.name} resolved {gone:.1f} s after the fault ended\n{table}"
    assert maintenance_seen, "the host in maintenance never showed as such"
    assert rehearsal.pump.errors == [] and sim.failed == 0, (rehearsal.pump.errors[:3], sim.failed)
