"""Every dashboard query against a real Prometheus scraping real collectors fed by a simulated farm.

Set-up (about 40 s): two collector replicas, a real Prometheus scraping both
every second (tests/prometheus_harness.py, job "vdiwatch-collector", the
project's rules loaded), and a feeder thread that posts a report for every host
of a 30-host simulated farm (agent/simfarm.py) every second, stepping simulated
time 5 minutes per tick from 08:00 (the end of the morning ramp), so that
sessions exist and every host logs users on. Agents report with a
1 s interval, so a silent host is stale after 3 s. Faults:

    sim-0001  agent_dies        posts 3 times, then goes silent  -> stale
    sim-0002  not_accepting     drained, not in maintenance
    sim-0004  maintenance
    sim-0005  memory_exhausted
    sim-0007  cpu_saturated
    sim-0008  says goodbye at tick 4                              -> stopped
    sim-0010, sim-0011  fail over from replica A to replica B at tick 4: their
              old copies stay on A (stale, with frozen session counts)
    plus one report per tick that breaks the contract (a rejection)
    fixture-vda  a server-OS VDA whose logons are the agent's own reading of the
              documented events in tests/fixtures/logons/server_vda.xml (parsed
              and matched by agent/logons): no logon before tick 6, all of them
              from then on; it reports logons only, in sim-0001's group

Phase 1, the farm running: every target of every panel is run as an instant
query, with the dashboard variables substituted by values from the data
(site/group "All" -> ".*", the host a healthy one that has a disconnected
session), and must return at least one series without error. A panel whose
metric was renamed returns nothing and fails here. The problem-host table must
name exactly the faulty hosts.

Phase 2, the farm frozen (the same readings re-posted with fresh timestamps):
the wall's and the capacity dashboard's numbers must equal what the simulated
farm says, with the failed-over hosts counted once.

Grafana's own variables get short values: $__rate_interval 10s, $__interval 5s,
$__range 1m. The only rewrites of a query are these, so that day-long views
return data within a short test: `offset 1d` and `offset 7d` -> `offset 5s`, a subquery
`[1d:` -> `[1m:`, and subquery resolution `:5m]` -> `:5s]`.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Set

import pytest
import requests

from agent.logons.matching import LogonMatcher
from agent.logons.totals import LogonTotals
from agent.simfarm import Farm, SimHost
from contract.report import reading_to_doc
from tests.agent.logons.test_matching import events
from tests.conftest import CollectorProcess
from tests.farmfeed import FarmFeeder
from tests.grafana.test_dashboards import dashboards, label_values_selector, variable_query
from tests.prometheus_harness import PrometheusServer, value

pytestmark = pytest.mark.slow

MIDNIGHT = 1796083200 - (1796083200 % 86400)  # 2026-12-01 00:00 UTC, as tests/sim uses
SIM_START = MIDNIGHT + 8 * 3600  # the end of the morning ramp: logons in every hour of the run
SIM_STEP = 300.0  # simulated seconds per real second
RUN_TICKS = 12  # ticks before phase 1: stale hosts settled, more than 10 s of samples

DEAD, DRAINED, MAINTENANCE, LOW_MEMORY, BUSY_CPU, GOODBYE = (
    "sim-0001", "sim-0002", "sim-0004", "sim-0005", "sim-0007", "sim-0008")
FAILOVER = ("sim-0010", "sim-0011")
FAULTS = {DRAINED: "not_accepting", MAINTENANCE: "maintenance", LOW_MEMORY: "memory_exhausted",
          BUSY_CPU: "cpu_saturated"}
FULL_DISK = "sim-0009"  # its C:\ 97 % used from the start
# the host in maintenance is planned work: not a problem
EXPECTED_PROBLEMS = {("agent silent", DEAD), ("not accepting logons", DRAINED), ("memory under 10 %", LOW_MEMORY),
                     ("CPU over 90 %", BUSY_CPU), ("disk under 5 %", FULL_DISK)}
FIXTURE_VDA, FIXTURE_LOGONS_FROM = "fixture-vda", 6


def fixture_logons() -> LogonTotals:
    """What the agent on the fixture VDA counts from its event log: its documented logons, matched."""
    totals = LogonTotals()
    for logon in LogonMatcher().add(events("server_vda.xml"), now=1796083200.0):
        totals.add_logon(logon)
    return totals


GRAFANA_INTERVALS = {"__rate_interval": "10s", "__interval": "5s", "__range": "1m"}
REWRITES = ((r"offset 1d\b", "offset 5s"), (r"offset 7d\b", "offset 5s"), (r"\[1d:", "[1m:"), (r":5m\]", ":5s]"))


# Grafana's variable syntax: $name, ${name}, ${name:format}, [[name]], [[name:format]]. A name that starts with a
# digit is no variable: "$1" in label_replace is a regex reference, and Grafana, finding no variable "1", leaves
# it as it is (so does this function). Formats are refused: the dashboards' queries use none.
VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)(?::(\w+))?\]\]|\$(\w+)")


def substitute(expr: str, variables: Dict[str, str]) -> str:
    """Grafana's variable interpolation for one query, plus the documented rewrites. An unknown variable is an
    error: a query that Grafana would send with "$sitee" in it must fail here."""
    values = {**GRAFANA_INTERVALS, **variables}

    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(3) or m.group(5)
        if name[0].isdigit():
            return m.group(0)
        if m.group(2) or m.group(4):
            raise ValueError(f"variable format in {m.group(0)} not supported by this test: {expr}")
        if name not in values:
            raise KeyError(f"unknown variable ${name} in {expr}")
        return values[name]

    out = VARIABLE.sub(one, expr)
    for pattern, replacement in REWRITES:
        out = re.sub(pattern, replacement, out)
    return out


# ---------------------------------------------------------------------------
# The simulated farm and its agents
# ---------------------------------------------------------------------------


def report_for(h: SimHost, sim_now: float, started: float, goodbye: bool = False) -> dict:
    """What the agent of simulated host `h` would post now: agent/simfarm's readings plus the parts a
    real agent adds (collector statuses, per-user top, process classes)."""
    readings = h.readings(sim_now)
    sessions = readings["sessions"]
    users = sorted({s.user for s in h.sessions.values()})
    sessions["top_users"] = [{"user": f"u-{u[-5:]}", "cpu_cores": round(0.05 + 0.01 * i, 2),
                              "memory_bytes": 300_000_000 + 1_000_000 * i} for i, u in enumerate(users[:5])]
    sessions["processes"] = {
        "user": {"cpu_seconds_total": round(h.cpu_busy * 0.7, 3), "memory_bytes": 600 * 2 ** 20 * len(users),
                 "processes": 25 * len(h.sessions)},
        "system": {"cpu_seconds_total": round(h.cpu_busy * 0.3, 3), "memory_bytes": 2 * 2 ** 30,
                   "processes": 120}}
    return {"schema_version": 1, "host": h.name, "site": h.site, "delivery_group": h.delivery_group,
            "timestamp_seconds": time.time(), "goodbye": goodbye,
            "agent": {"version": "0.9.0", "os": "windows", "os_release": "Windows Server 2022",
                      "interval_seconds": 1, "start_time_seconds": started},
            "collectors": {name: {"success": True, "duration_seconds": 0.004}
                           for name in ("cpu", "memory", "filesystems", "sessions")},
            "readings": readings}


class Feeder(FarmFeeder):
    """Posts every reporting host's report once a second, stepping simulated time until frozen; each tick
    also the fixture VDA's logons and one broken report."""

    def __init__(self, farm: Farm, a: CollectorProcess, b: CollectorProcess):
        super().__init__("farm-feeder", (a.url, b.url), farm, SIM_START, SIM_STEP, DEAD, GOODBYE)
        self.a, self.b = a, b
        self.rejected_reasons: Set[str] = set()

    def replica(self, h: SimHost) -> CollectorProcess:
        if h.name in FAILOVER:
            return self.a if self.ticks < 4 else self.b
        return self.a if int(h.name[-4:]) % 2 else self.b

    def post(self, collector: CollectorProcess, doc: dict) -> requests.Response:
        return self.sessions[collector.url].post(f"{collector.url}/api/v1/reports", data=json.dumps(doc),
                                                 headers={"Content-Type": "application/json"}, timeout=5)

    def post_host(self, h: SimHost, goodbye: bool) -> None:
        r = self.post(self.replica(h), report_for(h, self.sim_now, self.started, goodbye=goodbye))
        if r.status_code != 200:
            self.errors.append(f"{h.name}: {r.status_code} {r.text[:300]}")

    def after_hosts(self) -> None:
        vda = self.farm.by_name(DEAD)
        logons = fixture_logons() if self.ticks >= FIXTURE_LOGONS_FROM else LogonTotals()
        r = self.post(self.a, {
            "schema_version": 1, "host": FIXTURE_VDA, "site": vda.site, "delivery_group": vda.delivery_group,
            "timestamp_seconds": time.time(),
            # a 5 s interval: a late tick on a busy machine must not make it stale (its readings would go)
            "agent": {"version": "0.9.0", "os": "windows", "os_release": "Windows Server 2022",
                      "interval_seconds": 5, "start_time_seconds": self.started},
            "collectors": {"logons": {"success": True, "duration_seconds": 0.003}},
            "readings": {"logons": reading_to_doc("logons", logons.reading())}})
        if r.status_code != 200:
            self.errors.append(f"{FIXTURE_VDA}: {r.status_code} {r.text[:300]}")
        bad = self.post(self.a, {"schema_version": 1, "host": "sim-broken", "site": "site-1"})
        if bad.status_code == 400:
            self.rejected_reasons.add(bad.json()["reason"])
        else:
            self.errors.append(f"a broken report got {bad.status_code}")


# ---------------------------------------------------------------------------
# Running a dashboard's queries
# ---------------------------------------------------------------------------


@dataclass
class Result:
    dashboard: str
    panel: str
    ref: str
    expr: str
    rows: List[Dict[str, Any]] = field(default_factory=list)
    error: Optional[str] = None


def run_queries(prom: PrometheusServer, name: str, variables: Dict[str, str]) -> List[Result]:
    out = []
    for p in dashboards()[name]["panels"]:
        for t in p.get("targets", ()):
            expr = substitute(t["expr"], variables)
            result = Result(name, p["title"], t["refId"], expr)
            try:
                result.rows = prom.query(expr)
            except AssertionError as e:
                result.error = str(e)[:500]
            out.append(result)
    return out


def panel_query(name: str, title: str, ref: str = "A") -> str:
    p = next(p for p in dashboards()[name]["panels"] if p["title"] == title)
    return next(t["expr"] for t in p["targets"] if t["refId"] == ref)


def label_values(prom: PrometheusServer, query: str, variables: Dict[str, str]) -> List[str]:
    """Grafana's label_values(selector, label), the way it asks Prometheus."""
    label = re.fullmatch(r".*,\s*(\w+)\s*\)\s*", query).group(1)
    selector = substitute(label_values_selector(query), variables)
    r = requests.get(f"{prom.url}/api/v1/label/{label}/values", params={"match[]": selector}, timeout=10)
    r.raise_for_status()
    return r.json()["data"]


# ---------------------------------------------------------------------------
# The set-up, shared by the tests of this module
# ---------------------------------------------------------------------------


@dataclass
class Env:
    farm: Farm
    feeder: Feeder
    prom: PrometheusServer
    host: Dict[str, str]  # the healthy host picked for the drill-down: host, site, delivery_group
    running: List[Result]  # phase 1: every target of every dashboard
    variables: Dict[str, Dict[str, List[str]]]  # dashboard -> variable -> values Prometheus lists

    def query(self, name: str, title: str, ref: str = "A", **variables: str) -> List[Dict[str, Any]]:
        return self.prom.query(substitute(panel_query(name, title, ref), {**ALL, **variables}))


ALL = {"site": ".*", "delivery_group": ".*", "instance": ".*"}


def pick_host(prom: PrometheusServer) -> Dict[str, str]:
    """A healthy host from the data: up, open for logons, with a disconnected session (for every panel)."""
    faulty = "|".join((DEAD, DRAINED, MAINTENANCE, LOW_MEMORY, BUSY_CPU, GOODBYE, FULL_DISK) + FAILOVER)
    rows = prom.query(f'vdi_session_oldest_disconnect_timestamp_seconds{{host!~"{faulty}"}} '
                      'and on (host) vdi_agent_up == 1 and on (host) vdi_host_max_sessions > 1')
    assert rows, "no healthy host with a disconnected session"
    m = min(rows, key=lambda r: r["metric"]["host"])["metric"]
    return {k: m[k] for k in ("host", "site", "delivery_group")}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("dashboards-truth")
    started: List[Any] = []
    try:
        replicas = []
        for name in ("a", "b"):
            config = (f"[collector]\nmin_report_interval = 0.0\nsnapshot_file = '{tmp / (name + '.snapshot')}'\n"
                      "snapshot_interval = 1.0\n")
            replicas.append(CollectorProcess(tmp, config).start())
            started.append(replicas[-1])
        a, b = replicas
        prom = PrometheusServer(tmp, [c.url[len("http://"):] for c in replicas]).start()
        started.append(prom)
        farm = Farm.build(30, seed=7)
        for host, fault in FAULTS.items():
            farm.fault(host, fault, SIM_START)
        full = farm.by_name(FULL_DISK)
        full.disk_used = 0.97 * full.disk_bytes
        feeder = Feeder(farm, a, b)
        feeder.start()
        started.append(feeder)
        feeder.wait_ticks(RUN_TICKS)
        prom.wait_until(lambda: len(prom.query('up{job="vdiwatch-collector"} == 1')) == 2, message="both scraped")
        # the wall's week-ago line reads a recording rule `offset 7d` (here 5s): the rule's own history, which
        # starts at its first evaluation, later than the scrapes on a busy machine
        prom.wait_until(lambda: prom.query("count(site_delivery_group:vdi_sessions:sum offset 5s)"), timeout=15,
                        message="5 s of recorded sessions")

        host = pick_host(prom)
        variables = {"wall.json": ALL, "capacity.json": ALL, "collector.json": ALL,
                     "group.json": {"site": ".*", "delivery_group": host["delivery_group"]},
                     "host.json": {"site": host["site"], "delivery_group": host["delivery_group"],
                                   "host": host["host"]}}
        running = [r for name, v in variables.items() for r in run_queries(prom, name, v)]
        listed = {name: {v["name"]: label_values(prom, variable_query(v), variables[name])
                         for v in d["templating"]["list"] if v["type"] == "query"}
                  for name, d in dashboards().items()}

        feeder.freeze.set()
        assert feeder.frozen.wait(10), "the feeder did not freeze"
        yield Env(farm, feeder, prom, host, running, listed)
    finally:
        for thing in reversed(started):
            thing.stop()


# ---------------------------------------------------------------------------
# Phase 1: the farm running
# ---------------------------------------------------------------------------


def test_substitute_fills_in_variables_and_leaves_regex_references_alone() -> None:
    """Literal input, no Prometheus: Grafana's three variable syntaxes are filled in, "$1" and "${1}" of a
    label_replace stay (Grafana has no variable "1"), and an unknown variable or a format is an error."""
    expr = ('label_replace(rate(x{site=~"$site", group=~"${delivery_group}", host="[[host]]"}[$__rate_interval]), '
            '"where", "$1", "host", "(.+)") or label_replace(y offset 7d, "a", "${1}-$2", "b", "(.)(.)")')
    assert substitute(expr, {"site": ".*", "delivery_group": "Office", "host": "vda-01"}) == (
        'label_replace(rate(x{site=~".*", group=~"Office", host="vda-01"}[10s]), '
        '"where", "$1", "host", "(.+)") or label_replace(y offset 5s, "a", "${1}-$2", "b", "(.)(.)")')
    with pytest.raises(KeyError, match=r"\$sitee"):
        substitute('x{site=~"$sitee"}', {"site": ".*"})
    with pytest.raises(KeyError, match=r"\$host"):
        substitute('x{host="[[host]]"}', {})
    with pytest.raises(ValueError, match="format"):
        substitute('x{site=~"${site:regex}"}', {"site": ".*"})


def test_every_query_of_every_panel_returns_data(env: Env) -> None:
    assert {r.dashboard for r in env.running} == {"wall.json", "host.json", "group.json", "capacity.json",
                                                  "collector.json"}
    assert len(env.running) > 60
    failed = [f"{r.dashboard} / {r.panel} / {r.ref}: {r.error or 'no series'}\n    {r.expr[:300]}"
              for r in env.running if r.error or not r.rows]
    assert not failed, "\n".join(failed)


def test_the_check_fails_a_panel_whose_metric_was_renamed(env: Env) -> None:
    expr = panel_query("wall.json", "Sessions active")
    assert env.prom.query(substitute(expr, ALL)), "the real query has data"
    renamed = expr.replace("vdi_sessions:sum{", "vdi_session_count:sum{")
    assert renamed != expr
    assert env.prom.query(substitute(renamed, ALL)) == [], "a renamed metric must leave the panel empty"


def test_variables_list_the_farm(env: Env) -> None:
    sites = sorted({h.site for h in env.farm.hosts})
    groups = sorted({h.delivery_group for h in env.farm.hosts})
    for name in ("wall.json", "capacity.json"):
        assert env.variables[name]["site"] == sites
        assert env.variables[name]["delivery_group"] == groups
    host_vars = env.variables["host.json"]
    assert env.host["host"] in host_vars["host"]
    group = [h.name for h in env.farm.hosts if h.delivery_group == env.host["delivery_group"]]
    if env.farm.by_name(DEAD).delivery_group == env.host["delivery_group"]:
        group.append(FIXTURE_VDA)
    assert host_vars["host"] == sorted(group)
    assert len(env.variables["collector.json"]["instance"]) == 2


def test_problem_hosts_table_names_exactly_the_faulty_hosts(env: Env) -> None:
    result = next(r for r in env.running if r.panel == "Problem hosts")
    found = {(row["metric"]["problem"], row["metric"]["host"]) for row in result.rows}
    assert found == EXPECTED_PROBLEMS
    assert all({"site", "delivery_group"} <= set(row["metric"]) for row in result.rows)


def test_wall_counts_the_stale_agent_and_leaves_out_the_clean_shutdown(env: Env) -> None:
    by_panel = {(r.panel, r.ref): r.rows for r in env.running if r.dashboard == "wall.json"}
    assert [value(x) for x in by_panel[("Stale agents", "A")]] == [1]
    assert [value(x) for x in by_panel[("Hosts up / total", "A")]] == [29]  # 30 - stale - stopped + fixture VDA
    assert [value(x) for x in by_panel[("Hosts up / total", "B")]] == [30]  # the stopped host is not expected


def test_host_drill_down_shows_the_host(env: Env) -> None:
    rows = {(r.panel, r.ref): r.rows for r in env.running if r.dashboard == "host.json"}
    assert all(row["metric"].get("host", env.host["host"]) == env.host["host"]
               for rs in rows.values() for row in rs), "another host leaked into the drill-down"
    modes = {row["metric"]["mode"] for row in rows[("CPU by mode", "A")]}
    assert modes == {"user", "system"}
    assert {row["metric"]["collector"] for row in rows[("Agent collectors", "A")]} == {
        "cpu", "memory", "filesystems", "sessions"}
    assert 0 <= value(rows[("Report age", "A")][0]) < 3
    assert abs(value(rows[("Clock skew", "A")][0])) < 1


def test_host_dashboard_shows_the_fixture_vdas_logons_with_their_phases(env: Env) -> None:
    """The agent's reading of documented VDA events, through a real collector and Prometheus, on the host
    dashboard's logon panels: each phase's average is the fixture's, and a phase no logon had is absent."""
    reading = fixture_logons().reading()
    expected = {phase: round(total / count, 6) for (phase, total), (_, count)
                in zip(reading.phase_sum_seconds, reading.phase_count) if count}
    assert expected, "the fixture has logons with phases"
    where = {"host": FIXTURE_VDA, "site": env.farm.by_name(DEAD).site,
             "delivery_group": env.farm.by_name(DEAD).delivery_group}
    phases = {r["metric"]["phase"]: round(value(r), 6) for r in env.query("host.json", "Logon phases", **where)}
    assert phases == expected
    quantiles = [value(r) for ref in ("A", "B") for r in env.query("host.json", "Logon duration", ref, **where)]
    longest = reading.duration_sum_seconds  # no quantile can exceed the sum of all durations
    assert len(quantiles) == 2 and all(0 < q <= longest for q in quantiles), quantiles
    failed = env.query("host.json", "Failed logons and dropped sessions", "A", **where)
    assert {r["metric"]["reason"] for r in failed} == {reason for reason, _ in reading.failures}


def test_collector_dashboard_shows_the_rejections_and_snapshots(env: Env) -> None:
    rows = {(r.panel, r.ref): r.rows for r in env.running if r.dashboard == "collector.json"}
    assert {row["metric"]["reason"] for row in rows[("Rejections by reason", "A")]} == env.feeder.rejected_reasons
    assert all(0 <= value(row) < 10 for row in rows[("Snapshot age", "A")])
    assert len(rows[("Snapshot age", "A")]) == 2
    assert value(rows[("Reports per second", "A")][0]) > 0


# ---------------------------------------------------------------------------
# Phase 2: the farm frozen; numbers must equal the simulation's
# ---------------------------------------------------------------------------


def live(env: Env) -> List[SimHost]:
    """Hosts whose agent reports (vdi_agent_up 1)."""
    return [h for h in env.farm.hosts if h.reporting() and h.name != GOODBYE]


def counts(env: Env, h: SimHost) -> Dict[str, int]:
    c = h.readings(env.feeder.sim_now)["sessions"]["counts"]
    return {state: sum(by_protocol.values()) for state, by_protocol in c.items()}


def open_for_logons(env: Env) -> List[SimHost]:
    return [h for h in live(env) if h.accepting() and "maintenance" not in h.faults]


def settle(env: Env, name: str, title: str, expected: Any, convert, ref: str = "A", **variables: str) -> None:
    """Wait until Prometheus scraped the frozen farm, then the panel must show `expected`."""
    env.prom.wait_until(lambda: convert(env.query(name, title, ref, **variables)) == expected, timeout=15,
                        message=f"{name} / {title} {variables or ''} shows {expected}")


def by_group(rows: List[Dict[str, Any]], digits: int = 6) -> Dict[str, float]:
    return {r["metric"]["delivery_group"]: round(value(r), digits) for r in rows}


def test_wall_session_numbers_equal_the_farm_with_failed_over_hosts_counted_once(env: Env) -> None:
    for state in ("active", "disconnected", "idle"):
        expected = sum(counts(env, h).get(state, 0) for h in live(env))
        settle(env, "wall.json", f"Sessions {state}", [expected], lambda rows: [value(r) for r in rows])
    # What makes the numbers above a dedup test: both replicas serve the failed-over hosts.
    copies = env.prom.query(f'count by (host) (vdi_agent_up{{host=~"{"|".join(FAILOVER)}"}})')
    assert {r["metric"]["host"]: value(r) for r in copies} == {h: 2 for h in FAILOVER}
    assert all(len(env.farm.by_name(h).sessions) > 0 for h in FAILOVER)


def test_wall_capacity_used_equals_the_farm_and_the_alerts_rule(env: Env) -> None:
    expected = {}
    groups = {h.delivery_group for h in live(env)}
    for g in groups:
        members = [h for h in open_for_logons(env) if h.delivery_group == g]
        slots = sum(h.max_sessions for h in members)
        if slots:  # a group with no open host has no ratio (VdiDeliveryGroupNoHostAccepting's case)
            expected[g] = round(sum(len(h.sessions) for h in members) / slots, 6)
    settle(env, "wall.json", "Capacity used per delivery group", expected, by_group)
    # what VdiDeliveryGroupCapacityHigh/Critical average, on the same data
    assert by_group(env.prom.query("delivery_group:vdi_capacity_used:ratio")) == expected


def test_group_dashboard_open_hosts_and_free_slots_equal_the_farm(env: Env) -> None:
    for g in sorted({h.delivery_group for h in env.farm.hosts}):
        members = [h for h in open_for_logons(env) if h.delivery_group == g]
        where = {"site": ".*", "delivery_group": g}
        settle(env, "group.json", "Open hosts", [len(members)], lambda rows: [value(r) for r in rows], **where)
        free = sum(max(0, h.max_sessions - len(h.sessions)) for h in members)
        settle(env, "group.json", "Free slots", [free], lambda rows: [value(r) for r in rows], **where)


def test_capacity_headroom_and_sizing_equal_the_farm(env: Env) -> None:
    expected = {}
    for g in {h.delivery_group for h in env.farm.hosts}:
        expected[g] = sum(max(0, h.max_sessions - len(h.sessions))
                          for h in open_for_logons(env) if h.delivery_group == g)
    settle(env, "capacity.json", "Headroom: free session slots", expected, by_group)

    title = "Sizing: hosts needed at the peak with a 20 % reserve"
    hosts = by_group(env.query("capacity.json", title, "B"))
    dead_group = env.farm.by_name(DEAD).delivery_group
    # Every host with a maximum that reports or shut down cleanly counts, the stopped one too; the dead one's
    # readings (its slots included) are no longer served once it is stale: it gives no capacity.
    assert hosts == {g: 4 if g == dead_group else 5 for g in expected}
    average = by_group(env.query("capacity.json", title, "C"))
    assert set(average.values()) == {20.0, 1.0}
    # a range covering the whole run, so that the peak cannot change between the two queries; the farm grew
    # until it froze, so wait until the subquery's last 5 s step has seen the frozen numbers
    sessions_now = {g: sum(counts(env, h).get(s, 0) for h in live(env) if h.delivery_group == g
                           for s in ("active", "idle", "disconnected")) for g in expected}

    def peak_with_frozen_farm() -> Optional[Dict[str, float]]:
        p = by_group(env.query("capacity.json", title, "A", __range="5m"), digits=9)
        return p if all(p.get(g, -1) >= n for g, n in sessions_now.items()) else None

    peak = env.prom.wait_until(peak_with_frozen_farm, timeout=15, message="the peak includes the frozen farm")
    needed = by_group(env.query("capacity.json", title, "D", __range="5m"))
    for g in expected:
        assert needed[g] == math.ceil(peak[g] * 1.2 / average[g])  # the same IEEE arithmetic as Go


def test_host_state_stat_decodes_every_state(env: Env) -> None:
    # FAILOVER[0]: its stale copy on replica A must not make it look stale (a plain max would say 1 + 3)
    for host, code in ((env.host["host"], 1), (FAILOVER[0], 1), (MAINTENANCE, 2), (DEAD, 3), (GOODBYE, 4)):
        rows = env.query("host.json", "State", host=host)
        assert [value(r) for r in rows] == [code], host


def test_feeder_saw_no_unexpected_answers(env: Env) -> None:
    assert not env.feeder.errors, env.feeder.errors[:5]
    assert env.feeder.rejected_reasons, "the broken report was never refused"
