"""The rules in a real Prometheus, scraping a real collector fed the fixture reports.

A background thread re-posts the fixture reports every second (stamped with
the current time) so that their hosts stay up; one extra host, vda-win-09,
reports once with a 1 s interval and then goes silent, so that it turns stale
within seconds. Prometheus scrapes and evaluates every second.

Checks: every rule group loads and evaluates without error; the recording
rules add up the fixtures' sessions; the silent host goes pending as
VdiAgentDown, while the host that said goodbye (vda-win-02) and the host in
maintenance (rdsh-03) do not.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from tests.conftest import FIXTURES, CollectorProcess
from tests.prometheus_harness import RULE_FILES, PrometheusServer, value

pytestmark = pytest.mark.slow

REPORTS = [json.loads(p.read_text()) for p in sorted((FIXTURES / "reports").glob("*.json"))]
STATES = ("active", "idle", "disconnected", "connecting", "other")
SILENT = "vda-win-09"
RULE_LINE = re.compile(r"^\s*- (?:record|alert): ", re.M)


def stamped(report: dict, **changes: object) -> bytes:
    return json.dumps({**report, "timestamp_seconds": time.time(), **changes}).encode()


def expected_sessions() -> Dict[Tuple[str, str, str], float]:
    """(site, delivery_group, state) -> sessions, summed over the fixtures' reporting hosts."""
    out: Dict[Tuple[str, str, str], float] = defaultdict(float)
    for r in REPORTS:
        sessions = r.get("readings", {}).get("sessions")
        if r.get("goodbye") or not sessions:
            continue
        for state in STATES:
            out[(r["site"], r["delivery_group"], state)] += sum(sessions["counts"].get(state, {}).values())
    return dict(out)


class Poster(threading.Thread):
    """Re-posts the fixture reports every second until stopped; records the answers it did not like."""

    def __init__(self, collector: CollectorProcess):
        super().__init__(daemon=True)
        self.collector = collector
        self.stopping = threading.Event()
        self.errors: List[str] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            for report in REPORTS:
                try:
                    r = self.collector.post(stamped(report))
                    if r.status_code != 200:
                        self.errors.append(f"{report['host']}: {r.status_code} {r.text}")
                except Exception as e:  # the collector is being stopped
                    self.errors.append(f"{report['host']}: {e}")
            self.stopping.wait(1.0)


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Tuple[CollectorProcess, PrometheusServer]]:
    collector = CollectorProcess(tmp_path, config="[collector]\nmin_report_interval = 0\n").start()
    poster = Poster(collector)
    prom = None
    try:
        template = next(r for r in REPORTS if r["host"] == "vda-win-01")
        r = collector.post(stamped(template, host=SILENT, delivery_group="Crash Test",
                                   agent={**template["agent"], "interval_seconds": 1}))
        assert r.status_code == 200, r.text
        poster.start()
        prom = PrometheusServer(tmp_path, [f"127.0.0.1:{collector.port}"]).start()
        yield collector, prom
        assert poster.errors == [], poster.errors[:5]
    finally:
        poster.stopping.set()
        if poster.is_alive():
            poster.join(5)
        if prom is not None:
            prom.stop()
        collector.stop()


def test_rules_load_evaluate_and_behave(farm: Tuple[CollectorProcess, PrometheusServer]) -> None:
    _, prom = farm
    prom.wait_until(lambda: prom.query('up{job="vdiwatch-collector"} == 1'), message="the collector is scraped")

    # Every group loaded, every rule evaluated at least once, none in error.
    def evaluated() -> List[dict]:
        groups = prom.rules()
        rules = [rule for g in groups for rule in g["rules"]]
        return groups if rules and all(rule["health"] == "ok" for rule in rules) else []

    groups = prom.wait_until(evaluated, message="every rule evaluated with health ok")
    assert {g["name"] for g in groups} == {"vdiwatch-recording", "vdiwatch-collector", "vdiwatch-agent",
                                           "vdiwatch-host", "vdiwatch-delivery-group", "vdiwatch-experience",
                                           "vdiwatch-availability"}
    rules = [rule for g in groups for rule in g["rules"]]
    assert len(rules) == sum(len(RULE_LINE.findall(path.read_text())) for path in RULE_FILES)
    assert [r["name"] for r in rules if r.get("lastError")] == []

    # Sessions per site and delivery group: the sum of the fixtures.
    expected = expected_sessions()
    assert expected[("City Hall", "Office Desktops", "active")] == 10  # the fixtures are what we think

    def sessions() -> Dict[Tuple[str, str, str], float]:
        got = {(s["metric"]["site"], s["metric"]["delivery_group"], s["metric"]["state"]): value(s)
               for s in prom.query("site_delivery_group:vdi_sessions:sum")}
        return got if got == expected else {}

    prom.wait_until(sessions, message=f"site_delivery_group:vdi_sessions:sum == {expected}")

    # Capacity of Office Desktops: vda-win-01's 16 sessions over its 25 slots;
    # vda-win-02 said goodbye, its last capacity numbers do not count.
    office = 'delivery_group:vdi_capacity_used:ratio{delivery_group="Office Desktops"}'
    ratio = prom.wait_until(lambda: prom.query(office))
    assert [value(s) for s in ratio] == [pytest.approx(16 / 25)]
    accepting = {s["metric"]["delivery_group"]: value(s) for s in prom.query("delivery_group:vdi_hosts_accepting:sum")}
    assert accepting["Office Desktops"] == 1 and accepting["RDS Apps"] == 0, accepting

    # The silent host goes pending as VdiAgentDown...
    def agent_down() -> Dict[str, str]:
        return {a["labels"]["host"]: a["state"] for a in prom.alerts() if a["labels"]["alertname"] == "VdiAgentDown"}

    down = prom.wait_until(lambda: agent_down().get(SILENT) and agent_down(), message=f"VdiAgentDown for {SILENT}")
    assert down == {SILENT: "pending"}, down
    (alert,) = [a for a in prom.alerts() if a["labels"]["alertname"] == "VdiAgentDown"]
    assert alert["labels"] == {"alertname": "VdiAgentDown", "severity": "page", "host": SILENT,
                               "site": "City Hall", "delivery_group": "Crash Test"}
    assert alert["annotations"]["runbook_url"] == "docs/runbooks.md#vdiagentdown"

    # ...the host that said goodbye is known to Prometheus as stopped, and is
    # not down; neither is the host in maintenance.
    stopped = prom.query('host:vdi_host_state:max{host="vda-win-02",state="stopped"}')
    assert [value(s) for s in stopped] == [1]
    maintenance = prom.query('host:vdi_host_state:max{host="rdsh-03",state="maintenance"}')
    assert [value(s) for s in maintenance] == [1]
    time.sleep(2)  # two more evaluations
    assert set(agent_down()) == {SILENT}
    assert [a for a in prom.alerts() if a["labels"].get("host") in ("vda-win-02", "rdsh-03")] == []
