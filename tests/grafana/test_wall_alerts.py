"""The wall's "Firing alerts" list and its free slots, against a real Prometheus with real firing alerts.

Set-up (about 20 s): one real collector fed once by a small simulated farm (agent/simfarm.py: one site, three
delivery groups of two hosts; one host of group-1-1 drained, both hosts of group-1-2 drained), and a real
Prometheus scraping it every second with the project's recording, alerting and meta rules loaded (the meta
rules bring the real Watchdog, firing, and the real AlertmanagerDown, pending for want of an Alertmanager), plus
two small rule files of this test:

    early (loaded at start)    WallTestPageOld      page    for 5s  host, delivery group, site
                               WallTestTicketOld    ticket  for 5s  delivery group, site
                               WallTestPagePending  page    for 1h  stays pending
                               WallTestNone         none    for 0s  fires, severity none
    late (added by a reload    WallTestPageNew      page    for 1s  host, two mount points (two alerts)
    once the early ones fire)  WallTestTicketNew    ticket  for 1s  site only
                               WallTestNoSeverity   -       for 1s  collector instance only

The panels' queries are read out of grafana/dashboards/wall.json and run as they are (the one variable,
$delivery_group, as "All"). The real rules cannot fire a vdiwatch alert within a short test (their `for:` is
2 minutes or more), so the firing alerts are this test's own.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import requests

from agent.simfarm import Farm, SimHost
from tests.conftest import ROOT, CollectorProcess
from tests.grafana.test_dashboards import dashboards
from tests.grafana.test_dashboards_truth import SIM_START, SIM_STEP, report_for
from tests.prometheus_harness import RULE_FILES, PrometheusServer, value

pytestmark = [pytest.mark.slow, pytest.mark.needs_tool]

META_RULES = ROOT / "config" / "prometheus" / "rules" / "vdiwatch-meta.yml"
CITY_HALL, LIBRARY = "City Hall", "Library"


def alert(name: str, severity: Optional[str], for_: str, **labels: str) -> Dict[str, Any]:
    expr = labels.pop("expr", "vector(1)")
    if severity is not None:
        labels["severity"] = severity
    return {"alert": name, "expr": expr, "for": for_, "labels": labels,
            "annotations": {"summary": f"{name} (test)"}}


EARLY = [
    alert("WallTestPageOld", "page", "5s", host="vda-017", delivery_group="Office", site=CITY_HALL),
    alert("WallTestTicketOld", "ticket", "5s", delivery_group="Office", site=CITY_HALL),
    alert("WallTestPagePending", "page", "1h", host="vda-018", delivery_group="Office", site=CITY_HALL),
    alert("WallTestNone", "none", "0s", site=CITY_HALL),
]
LATE = [
    alert("WallTestPageNew", "page", "1s", host="vda-042", delivery_group="Reading room", site=LIBRARY,
          expr='label_replace(vector(1), "mountpoint", "C:", "", "") '
               'or label_replace(vector(1), "mountpoint", "D:", "", "")'),
    alert("WallTestTicketNew", "ticket", "1s", site=LIBRARY),
    alert("WallTestNoSeverity", None, "1s", instance="collector-b:9108"),
]

# (severity, alertname, where, site) in the order the wall must list them: pages before tickets even when the
# ticket is older, the oldest first within a severity, any other severity last; where: the host, else a
# collector's instance, else the delivery group, else the site; one row for the two mount points of one host.
EXPECTED = [
    ("page", "WallTestPageOld", "vda-017", CITY_HALL),
    ("page", "WallTestPageNew", "vda-042", LIBRARY),
    ("ticket", "WallTestTicketOld", "Office", CITY_HALL),
    ("ticket", "WallTestTicketNew", LIBRARY, LIBRARY),
    (None, "WallTestNoSeverity", "collector-b:9108", None),
]
COLUMNS = ("severity", "alertname", "where", "site")
NOTHING_FIRING = [("ok", "no alert firing", None, None)]

DRAINED = ("sim-0001", "sim-0002", "sim-0005")  # group-1-2 is sim-0002 and sim-0005: none of it open


def rule_file(path: Path, name: str, rules: List[Dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"groups": [{"name": name, "rules": rules}]} if rules else {"groups": []}))
    return path


def wall_query(title: str, ref: str = "A") -> str:
    panel = next(p for p in dashboards()["wall.json"]["panels"] if p["title"] == title)
    expr = next(t["expr"] for t in panel["targets"] if t["refId"] == ref)
    return expr.replace("$delivery_group", ".*")


def query_at(prom: PrometheusServer, promql: str, at: Optional[float] = None) -> List[Dict[str, Any]]:
    """An instant query, at `at` (Unix seconds) or now; the samples in the order Prometheus answered (a range
    selector's answer is a matrix: `values` instead of `value`)."""
    params = {"query": promql}
    if at is not None:
        params["time"] = f"{at:.3f}"
    r = requests.get(f"{prom.url}/api/v1/query", params=params, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", body
    return body["data"]["result"]


def rows(result: List[Dict[str, Any]]) -> List[Tuple[Optional[str], ...]]:
    return [tuple(r["metric"].get(k) for k in COLUMNS) for r in result]


def active_at(prom: PrometheusServer, alertname: str) -> float:
    (sample,) = prom.query(f'max(ALERTS_FOR_STATE{{alertname="{alertname}"}})')
    return value(sample)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("wall-alerts")
    started: List[Any] = []
    try:
        collector = CollectorProcess(tmp, "[collector]\nmin_report_interval = 0.0\n").start()
        started.append(collector)
        farm = Farm.build(6, sites=1, groups_per_site=3, seed=7)
        sim_now = SIM_START
        for _ in range(3):  # sessions on every host
            farm.step(sim_now)
            sim_now += SIM_STEP
        for name in DRAINED:
            farm.fault(name, "not_accepting", sim_now)
        started_at = time.time()
        for h in farm.hosts:
            doc = report_for(h, sim_now, started_at)
            doc["agent"]["interval_seconds"] = 120  # one report, and the host stays up for the whole test
            r = collector.post(json.dumps(doc).encode())
            assert r.status_code == 200, r.text
        early = rule_file(tmp / "wall-test-early.yml", "wall-test-early", EARLY)
        late = rule_file(tmp / "wall-test-late.yml", "wall-test-late", [])
        prom = PrometheusServer(tmp, [collector.url[len("http://"):]],
                                rule_files=[*RULE_FILES, META_RULES, early, late]).start()
        started.append(prom)
        yield {"prom": prom, "farm": farm, "late": late}
    finally:
        for thing in reversed(started):
            thing.stop()


def firing(prom: PrometheusServer) -> Dict[str, str]:
    return {a["labels"]["alertname"]: a["state"] for a in prom.alerts()}


@pytest.fixture(scope="module")
def alerts_firing(env: Dict[str, Any]) -> PrometheusServer:
    """The early alerts firing, then the late ones added by a reload (SIGHUP) and firing too."""
    prom: PrometheusServer = env["prom"]
    prom.wait_until(lambda: {"WallTestPageOld", "WallTestTicketOld"} <= {
        n for n, s in firing(prom).items() if s == "firing"}, timeout=30, message="the early alerts fire")
    rule_file(env["late"], "wall-test-late", LATE)
    os.kill(prom.proc.pid, signal.SIGHUP)
    prom.wait_until(lambda: {a["alert"] for a in LATE} <= {n for n, s in firing(prom).items() if s == "firing"},
                    timeout=30, message="the late alerts fire after the reload")
    return prom


def test_the_list_holds_the_firing_alerts_only_pages_first_then_oldest_first(alerts_firing: PrometheusServer) -> None:
    prom = alerts_firing
    state = firing(prom)
    # what makes this a test: the left-out alerts exist, pending or firing
    assert state["Watchdog"] == "firing" and state["WallTestNone"] == "firing"
    assert state["WallTestPagePending"] == "pending" and state["AlertmanagerDown"] == "pending"
    assert active_at(prom, "WallTestTicketOld") < active_at(prom, "WallTestPageNew"), "a ticket older than a page"

    result = query_at(prom, wall_query("Firing alerts"))
    assert rows(result) == EXPECTED
    for r in result:  # exactly the columns the table shows, whatever labels the alert carries (mountpoint...)
        assert set(r["metric"]) <= set(COLUMNS), r["metric"]
    since = {r["metric"]["alertname"]: value(r) for r in result}
    now = float(result[0]["value"][0])
    for name in ("WallTestPageOld", "WallTestPageNew"):  # since: how long the alert has been active
        assert since[name] == pytest.approx(now - active_at(prom, name), abs=1.0)
    assert since["WallTestPageOld"] > since["WallTestPageNew"] + 2


def test_with_nothing_firing_one_row_says_so_and_pending_and_watchdog_stay_out(
        alerts_firing: PrometheusServer) -> None:
    prom = alerts_firing
    # the last evaluation at which the early alerts were still pending (for: 5s); the Watchdog and WallTestNone
    # were firing then
    (history,) = query_at(prom, 'ALERTS{alertname="WallTestPageOld", alertstate="pending"}[5m]')
    at = float(history["values"][-1][0])
    pending = query_at(prom, 'ALERTS{alertname=~"WallTestPageOld|WallTestTicketOld"}', at)
    assert sorted(r["metric"]["alertstate"] for r in pending) == ["pending", "pending"]
    watchdog = query_at(prom, 'ALERTS{alertname="Watchdog", alertstate="firing"}', at)
    assert len(watchdog) == 1
    result = query_at(prom, wall_query("Firing alerts"), at)
    assert rows(result) == NOTHING_FIRING
    assert result[0]["value"][1] == "NaN", "no duration for the placeholder row"


def test_severity_cells_are_coloured_and_the_rest_neutral() -> None:
    (panel,) = [p for p in dashboards()["wall.json"]["panels"] if p["title"] == "Firing alerts"]
    assert panel["options"]["cellHeight"] == "lg", "readable from across the room"
    assert panel["options"]["sortBy"] == [], "the query's order (pages, then oldest first) is the table's"
    overrides = {o["matcher"]["options"]: {q["id"]: q["value"] for q in o["properties"]}
                 for o in panel["fieldConfig"]["overrides"]}
    assert set(overrides) == {"Severity", "Since"}
    mapping = overrides["Severity"]["mappings"][0]["options"]
    assert {v: (m["text"], m["color"]) for v, m in mapping.items()} == {
        "page": ("PAGE", "red"), "ticket": ("TICKET", "orange"), "ok": ("OK", "green")}
    assert overrides["Severity"]["custom.cellOptions"]["type"] == "color-background"
    assert "custom.cellOptions" not in overrides["Since"]
    assert panel["fieldConfig"]["defaults"]["custom"]["cellOptions"] == {"type": "auto"}, "neutral elsewhere"
    assert "Alertmanager" in panel["description"] and "silence" in panel["description"]


def open_hosts(farm: Farm) -> List[SimHost]:
    return [h for h in farm.hosts if h.accepting() and "maintenance" not in h.faults]


def test_free_slots_equal_the_farm_and_the_recording_rule(env: Dict[str, Any]) -> None:
    prom, farm = env["prom"], env["farm"]
    groups = sorted({h.delivery_group for h in farm.hosts})
    expected = {g: float(sum(max(0, h.max_sessions - len(h.sessions)) for h in open_hosts(farm)
                             if h.delivery_group == g)) for g in groups}
    full_group = farm.by_name(DRAINED[1]).delivery_group
    assert expected[full_group] == 0 and all(v > 0 for g, v in expected.items() if g != full_group)

    def by_group(promql: str) -> Dict[str, float]:
        return {r["metric"]["delivery_group"]: value(r) for r in prom.query(promql)}

    prom.wait_until(lambda: by_group(wall_query("Capacity used per delivery group", "B")) == expected,
                    timeout=30, message=f"the wall's free slots show {expected}")
    # the rule the wall reads, and the farm's number: the group with no open host has 0, not nothing
    assert by_group("delivery_group:vdi_session_slots_free:sum") == expected
    used = by_group("delivery_group:vdi_capacity_used:ratio")
    assert full_group not in used, "no open host: no ratio (VdiDeliveryGroupNoHostAccepting's case)"
    # the delivery-group dashboard's free slots: the same rule, the same number
    group_panel = next(p for p in dashboards()["group.json"]["panels"] if p["title"] == "Free slots")
    for g in groups:
        expr = group_panel["targets"][0]["expr"].replace("$site", ".*").replace("$delivery_group", g)
        assert [value(r) for r in prom.query(expr)] == [expected[g]], g
    assert by_group(wall_query("Capacity used per delivery group", "A")) == used
