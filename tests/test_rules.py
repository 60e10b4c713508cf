"""The Prometheus rules and the Alertmanager configuration, checked as code.

- `promtool check rules` (with every lint) and `promtool test rules` on every
  tests/rules/*.yaml: the `for:` boundaries, labels, annotations, and the cases
  that must never page;
- `promtool check config` on the example prometheus.yml, `amtool check-config`
  and `amtool config routes test` on config/alertmanager.yml;
- the rules' metadata: severity, summary, description, a runbook anchor that
  exists, a `for:`, a promtool case that fires and one that stays quiet;
- every `vdi_*` metric a rule reads is in docs/metrics.md, every recording rule
  an alert reads exists (a typo would otherwise be an empty series that never
  fires);
- the inhibit rules name real alerts, and a real Alertmanager applies them;
- the alerting pipeline's own rules (vdiwatch-meta.yml: the Watchdog, Prometheus
  and Alertmanager health) and their routes, the dead man's switch first.

Run: .venv/bin/python -m pytest tests/test_rules.py -q
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterator, List, Set

import pytest
import requests

from tests.alertmanager_harness import AlertmanagerServer
from tests.conftest import ROOT, require_tool

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the environment
    yaml = None

RULES_DIR = ROOT / "config" / "prometheus" / "rules"
RECORDING_FILE = RULES_DIR / "vdiwatch-recording.yml"
ALERTS_FILE = RULES_DIR / "vdiwatch-alerts.yml"
META_FILE = RULES_DIR / "vdiwatch-meta.yml"
PROMETHEUS_CONFIG = ROOT / "config" / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = ROOT / "config" / "alertmanager.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
ALERTS_DOC = ROOT / "docs" / "alerts.md"
METRICS_DOC = ROOT / "docs" / "metrics.md"
# vdiwatch-broker's metrics (optional, its own job) are documented on its own page.
BROKER_DOC = ROOT / "docs" / "broker.md"
RULE_TESTS = sorted((ROOT / "tests" / "rules").glob("*.yaml"))

SEVERITIES = {"page", "ticket"}
# The Watchdog alone: always firing, routed to the dead man's switch only.
META_SEVERITIES = SEVERITIES | {"none"}
# A metric of the contract: vdi_..., not part of a recording rule's name
# (level:vdi_metric:operations), not a longer identifier.
METRIC_RE = re.compile(r"(?<![\w:])vdi_[a-z0-9_]+(?![\w:])")
RECORDED_RE = re.compile(r"(?<![\w:])[a-z_]+:[a-z0-9_]+:[a-z0-9_]+(?![\w:])")
RECORD_NAME_RE = re.compile(r"^[a-z]+(?:_[a-z]+)*:vdi_[a-z0-9_]+:[a-z0-9_]+$")


def load_yaml(path: Path):
    if yaml is None:
        if os.environ.get("CI"):
            pytest.fail("PyYAML is required to read the rule files (setup.cfg [options.extras_require] test)")
        pytest.skip("PyYAML is not installed")
    return yaml.safe_load(path.read_text())


def rules_of(path: Path) -> List[dict]:
    return [rule for group in load_yaml(path)["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def alerts() -> Dict[str, dict]:
    found = {rule["alert"]: rule for rule in rules_of(ALERTS_FILE) if "alert" in rule}
    assert len(found) >= 17, sorted(found)
    return found


@pytest.fixture(scope="module")
def meta_alerts() -> Dict[str, dict]:
    found = {rule["alert"]: rule for rule in rules_of(META_FILE) if "alert" in rule}
    assert "Watchdog" in found, sorted(found)
    return found


@pytest.fixture(scope="module")
def records() -> Dict[str, dict]:
    return {rule["record"]: rule for rule in rules_of(RECORDING_FILE)}


@pytest.fixture(scope="module")
def rule_tests() -> Dict[str, dict]:
    return {path.name: load_yaml(path) for path in RULE_TESTS}


def run(args: List[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


# ---------------------------------------------------------------------------
# promtool and amtool


def test_promtool_check_rules_is_clean() -> None:
    promtool = require_tool("promtool")
    r = run([promtool, "check", "rules", "--lint=all", "--lint-fatal", str(RECORDING_FILE), str(ALERTS_FILE),
             str(META_FILE)])
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    for path in (RECORDING_FILE, ALERTS_FILE, META_FILE):
        count = len(re.findall(r"^\s*- (?:record|alert): ", path.read_text(), re.M))
        assert f"SUCCESS: {count} rules found" in out, (path.name, out)
    assert "warn" not in out.lower(), out


def test_there_are_rule_unit_tests() -> None:
    names = {p.name for p in RULE_TESTS}
    assert {"recording_test.yaml", "collector_alerts_test.yaml", "agent_alerts_test.yaml",
            "host_alerts_test.yaml", "group_alerts_test.yaml", "silence_alerts_test.yaml",
            "availability_alerts_test.yaml", "outage_alerts_test.yaml", "meta_alerts_test.yaml",
            "broker_alerts_test.yaml"} <= names, names


def evaluations(path: Path) -> int:
    """How many rule evaluations `promtool test rules` runs for a file: each case is evaluated every
    evaluation_interval up to its last eval_time."""
    doc = load_yaml(path)
    step = seconds(doc.get("evaluation_interval", "1m"))
    total = 0
    for case in doc.get("tests", []):
        checks = case.get("alert_rule_test", []) + case.get("promql_expr_test", [])
        total += max((seconds(c["eval_time"]) for c in checks), default=0) // step + 1
    return total


@pytest.fixture(scope="module")
def promtool_runs(request: pytest.FixtureRequest) -> Iterator[Dict[Path, "Future[subprocess.CompletedProcess]"]]:
    """`promtool test rules` of every rule test file this session runs, started together, one per core: each
    run is one single-threaded process stepping simulated time (nothing in it depends on the wall clock), and
    the longest take half a minute. The longest runs first, so that the short ones share the other cores."""
    promtool = require_tool("promtool")
    paths = [item.callspec.params["path"] for item in request.session.items
             if getattr(item, "originalname", None) == "test_promtool_unit_tests_pass"]
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        runs = {path: pool.submit(run, [promtool, "test", "rules", path.name], cwd=path.parent)
                for path in sorted(paths, key=evaluations, reverse=True)}
        yield runs
        for future in runs.values():
            future.cancel()


@pytest.mark.parametrize("path", RULE_TESTS, ids=[p.name for p in RULE_TESTS])
def test_promtool_unit_tests_pass(path: Path, promtool_runs: Dict[Path, "Future[subprocess.CompletedProcess]"]
                                  ) -> None:
    r = promtool_runs[path].result()
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_only_the_broker_files_hold_broker_series() -> None:
    """The other rule tests hold no vdiwatch-broker series: passing unchanged, they are the proof that
    without the broker every rule behaves as before; broker_alerts_test.yaml has both,
    maintenance_alerts_test.yaml has Studio's maintenance mode beside the agent's own flag, and
    free_slots_test.yaml has groups with and without broker series in one case."""
    for path in RULE_TESTS:
        text = path.read_text()
        if path.name == "broker_alerts_test.yaml":
            assert "vdi_broker_machine_power_state{" in text and "without the broker" in text
        elif path.name == "maintenance_alerts_test.yaml":
            assert "vdi_broker_machine_maintenance{" in text and 'state="maintenance"' in text
        elif path.name == "free_slots_test.yaml":
            assert "vdi_broker_machine_power_state{" in text and "no broker" in text
        else:
            assert "vdi_broker_" not in text, path.name


def test_promtool_check_config() -> None:
    promtool = require_tool("promtool")
    r = run([promtool, "check", "config", str(PROMETHEUS_CONFIG)])
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    # rule_files resolve relative to prometheus.yml, so both are checked too.
    assert "SUCCESS: 3 rule files found" in out, out
    assert "warn" not in out.lower(), out


def test_prometheus_config_scrapes_the_collector_job_and_loads_both_rule_files() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["global"]["scrape_interval"] == "15s"
    assert sorted(config["rule_files"]) == ["rules/vdiwatch-alerts.yml", "rules/vdiwatch-meta.yml",
                                            "rules/vdiwatch-recording.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for sc in jobs["vdiwatch-collector"]["static_configs"] for t in sc["targets"]]
    assert len(targets) == 2, targets
    alertmanagers = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers
    # The meta rules select these job names; every Alertmanager that gets
    # alerts is also scraped.
    assert [t for sc in jobs["prometheus"]["static_configs"] for t in sc["targets"]]
    assert set(alertmanagers) <= {t for sc in jobs["alertmanager"]["static_configs"] for t in sc["targets"]}


def test_amtool_check_config() -> None:
    amtool = require_tool("amtool")
    r = run([amtool, "check-config", str(ALERTMANAGER_CONFIG)])
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    assert "12 inhibit rules" in r.stdout, r.stdout


@pytest.mark.parametrize("labels, receivers", [
    (["severity=page", "alertname=VdiAgentDown", "site=City Hall"], "oncall-pager,ops-mailbox"),
    (["severity=ticket", "alertname=VdiHostCpuSaturated"], "ops-mailbox"),
    (["alertname=SomethingWithoutSeverity"], "ops-mailbox"),
    (["severity=none", "alertname=Watchdog"], "deadmans-switch"),
    (["severity=page", "alertname=AlertmanagerNotificationsFailing"], "oncall-pager,ops-mailbox"),
])
def test_alertmanager_routes_by_severity(labels: List[str], receivers: str) -> None:
    amtool = require_tool("amtool")
    r = run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == receivers


def test_pages_repeat_once_a_shift_and_the_watchdog_often() -> None:
    """A stale host's page used to repeat every 2 h for its 24 h: 12 pages for one desktop."""
    routes = {tuple(r["matchers"]): r for r in load_yaml(ALERTMANAGER_CONFIG)["route"]["routes"]}
    assert routes[('severity="page"',)]["repeat_interval"] == "12h"
    watchdog = routes[('alertname="Watchdog"',)]
    assert watchdog["receiver"] == "deadmans-switch" and "continue" not in watchdog
    assert list(routes)[0] == ('alertname="Watchdog"',), "the Watchdog's route must come first"


# ---------------------------------------------------------------------------
# Metadata of every alert


def runbook_anchors() -> Set[str]:
    """GitHub-style anchors of the runbook's headings."""
    anchors = set()
    for line in RUNBOOKS.read_text().splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if m:
            anchors.add(re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-"))
    return anchors


def test_every_alert_has_severity_for_and_annotations(alerts: Dict[str, dict]) -> None:
    anchors = runbook_anchors()
    for name, rule in alerts.items():
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: needs a for:"
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert annotations.get(key, "").strip(), f"{name}: no {key}"
        assert annotations["runbook_url"] == f"docs/runbooks.md#{name.lower()}", name
        assert name.lower() in anchors, f"docs/runbooks.md has no heading for {name}"


def test_every_alert_links_its_dashboard(alerts: Dict[str, dict]) -> None:
    """A Grafana path (the base URL is added by the notification template), label values URL-encoded."""
    # uid -> the slug Grafana makes of the title: a path names a dashboard that exists, the way Grafana writes it
    boards = {}
    for path in (ROOT / "grafana" / "dashboards").glob("*.json"):
        board = json.loads(path.read_text(encoding="utf-8"))
        boards[board["uid"]] = board["title"].lower().replace(" ", "-")
    for name, rule in alerts.items():
        dashboard = rule["annotations"].get("dashboard", "")
        m = re.match(r"^/d/([\w-]+)/([\w-]+)(\?|$)", dashboard)
        assert m and boards.get(m.group(1)) == m.group(2), (name, dashboard)
        for label in re.findall(r"\$labels\.(\w+)", dashboard):
            assert f"{{{{ $labels.{label} | urlquery }}}}" in dashboard, (name, label)
        if "host" in dashboard.split("?")[0] and name != "VdiwatchCollectorDown":
            assert "var-host={{ $labels.host | urlquery }}" in dashboard, name


def test_meta_alerts_have_severity_for_and_annotations(meta_alerts: Dict[str, dict]) -> None:
    anchors = runbook_anchors()
    for name, rule in meta_alerts.items():
        assert rule["labels"]["severity"] in (META_SEVERITIES if name == "Watchdog" else SEVERITIES), name
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: needs a for:"
        for key in ("summary", "description", "runbook_url"):
            assert rule["annotations"].get(key, "").strip(), f"{name}: no {key}"
        assert rule["annotations"]["runbook_url"] == f"docs/runbooks.md#{name.lower()}", name
        assert name.lower() in anchors, f"docs/runbooks.md has no heading for {name}"
        assert not name.startswith("Vdi"), f"{name}: VdiwatchCollectorDown would hold it back"
    assert meta_alerts["Watchdog"]["expr"].strip() == "vector(1)"
    assert meta_alerts["Watchdog"]["labels"]["severity"] == "none"


def test_descriptions_name_what_the_alert_is_about(alerts: Dict[str, dict]) -> None:
    """Host alerts name the host and its delivery group, group alerts the group; all show their value but flags."""
    for name, rule in alerts.items():
        text = rule["annotations"]["summary"] + rule["annotations"]["description"]
        if name.startswith(("VdiHost", "VdiAgent", "VdiBlackHole", "VdiLongDisconnected")):
            assert "$labels.host" in text and "$labels.delivery_group" in text, name
        elif name.startswith("VdiDeliveryGroup"):
            assert "$labels.delivery_group" in text, name
        elif name.startswith("VdiFarm"):
            pass  # the whole farm: no label to name
        elif name.startswith(("VdiMany", "VdiSite")):
            assert "$labels.site" in text, name
        else:
            assert "$labels.instance" in text, name
        # Their value is a 0 or 1 flag that the text already states.
        if name not in ("VdiwatchCollectorDown", "VdiwatchCollectorReplicaDown", "VdiAgentCollectorFailing",
                        "VdiHostNotAcceptingSessions", "VdiBrokerReaderDown"):
            assert "$value" in text, f"{name}: the annotations should show the value"


def test_runbook_has_a_section_for_every_alert_and_no_stray_one(alerts: Dict[str, dict],
                                                                meta_alerts: Dict[str, dict]) -> None:
    sections = {m.group(1) for m in re.finditer(r"^## (\w+)\s*$", RUNBOOKS.read_text(), re.M)}
    alert_sections = {s for s in sections if s.startswith("Vdi")}
    assert alert_sections == set(alerts), alert_sections ^ set(alerts)
    assert set(meta_alerts) <= sections, set(meta_alerts) - sections


@pytest.mark.parametrize("path", [ALERTS_FILE, META_FILE], ids=["vdiwatch", "meta"])
def test_table_matches_the_rules(path: Path) -> None:
    """The tables in the alert file and in docs/alerts.md state each rule's real for, keep and severity."""
    header = path.read_text().split("\ngroups:", 1)[0]
    alerts = {rule["alert"]: rule for rule in rules_of(path) if "alert" in rule}
    for name, rule in alerts.items():
        row = re.search(rf"^# \| {name}\s+\|(.*)$", header, re.M)
        assert row, name
        _, for_, keep, severity, _ = [c.strip() for c in row.group(1).rsplit("|", 4)]
        assert (for_, keep, severity) == (rule["for"], rule.get("keep_firing_for", "-"),
                                          rule["labels"]["severity"]), name
        doc_row = re.search(rf"^\| `{name}` \|(.*)\|$", ALERTS_DOC.read_text(), re.M)
        assert doc_row, f"{name} is missing from the table in docs/alerts.md"
        _, for_, keep, severity = [c.strip() for c in doc_row.group(1).rsplit("|", 3)]
        assert (for_, keep, severity) == (rule["for"], rule.get("keep_firing_for", "-"),
                                          rule["labels"]["severity"]), f"docs/alerts.md: {name}"


def test_every_alert_has_a_firing_and_a_quiet_promtool_case(alerts: Dict[str, dict], meta_alerts: Dict[str, dict],
                                                           rule_tests: Dict[str, dict]) -> None:
    firing: Set[str] = set()
    quiet: Set[str] = set()
    for doc in rule_tests.values():
        for case in doc.get("tests", []):
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
                for exp in check.get("exp_alerts") or []:
                    # Exact expectations: the severity label and all the annotations (promtool
                    # compares them all); the vdiwatch alerts' dashboard too.
                    assert exp["exp_labels"]["severity"] in META_SEVERITIES, check
                    expected = {"summary", "description", "runbook_url"}
                    if check["alertname"] in alerts:
                        expected.add("dashboard")
                    assert set(exp["exp_annotations"]) == expected, check
    every = set(alerts) | set(meta_alerts)
    assert every - firing == set(), "alerts never expected to fire in tests/rules"
    # The Watchdog is never quiet: that is its point.
    assert every - quiet == {"Watchdog"}, "alerts never expected to stay quiet in tests/rules"
    assert (firing | quiet) - every == set(), "tests/rules name alerts that do not exist"


def seconds(duration: str) -> int:
    """A Prometheus duration ("1h15m", "90s") in seconds."""
    parts = re.findall(r"(\d+)([smhd])", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[u] for n, u in parts)


def test_every_alert_is_pinned_at_its_boundary(alerts: Dict[str, dict], meta_alerts: Dict[str, dict],
                                              rule_tests: Dict[str, dict]) -> None:
    """Some test case expects the alert quiet one evaluation before the time it expects it firing."""
    pinned: Set[str] = set()
    for doc in rule_tests.values():
        step = seconds(doc.get("evaluation_interval", "1m"))
        for case in doc.get("tests", []):
            checks = case.get("alert_rule_test", [])
            quiet = {(c["alertname"], seconds(c["eval_time"])) for c in checks if not c.get("exp_alerts")}
            for c in checks:
                if c.get("exp_alerts") and (c["alertname"], seconds(c["eval_time"]) - step) in quiet:
                    pinned.add(c["alertname"])
    assert (set(alerts) | set(meta_alerts)) - pinned == {"Watchdog"}, "alerts whose for: boundary no test pins"


def test_alert_test_files_pin_the_group_order(rule_tests: Dict[str, dict]) -> None:
    """Without group_eval_order promtool evaluates groups in a random order: flaky `for:` boundaries."""
    for name, doc in rule_tests.items():
        groups = [g["name"] for f in doc["rule_files"] for g in load_yaml(RULES_DIR / Path(f).name)["groups"]]
        if any(case.get("alert_rule_test") for case in doc["tests"]):
            assert doc.get("group_eval_order") == groups, name


# ---------------------------------------------------------------------------
# The metric contract


def contract_metrics() -> Set[str]:
    """Metric names of docs/metrics.md's tables and of docs/broker.md's (vdiwatch-broker); a histogram row
    stands for its _bucket, _sum and _count series, a summary row for _sum and _count."""
    names = set()
    for line in METRICS_DOC.read_text().splitlines() + BROKER_DOC.read_text().splitlines():
        if line.startswith("| `vdi_"):
            cells = line.split("|")
            found = re.findall(r"`(vdi_[a-z0-9_]+)`", cells[1])
            kind = cells[2].strip()
            suffixes = (["_bucket", "_sum", "_count"] if kind.startswith("histogram")
                        else ["_sum", "_count"] if kind.startswith("summary") else [])
            names.update(found)
            names.update(name + suffix for name in found for suffix in suffixes)
    return names


def rule_texts(rule: dict) -> List[str]:
    return [rule["expr"], *rule.get("annotations", {}).values()]


def test_contract_is_parsed() -> None:
    names = contract_metrics()
    assert {"vdi_agent_up", "vdi_host_state", "vdi_sessions", "vdi_host_load15",
            "vdi_collector_reports_rejected_total", "vdi_broker_up", "vdi_broker_machine_maintenance",
            "vdi_broker_machine_power_state"} <= names, names


def test_rules_use_only_metrics_of_the_contract(alerts: Dict[str, dict], records: Dict[str, dict]) -> None:
    contract = contract_metrics()
    used: Set[str] = set()
    for rule in [*alerts.values(), *records.values()]:
        for text in rule_texts(rule):
            used.update(METRIC_RE.findall(text))
    assert used, "no metric found: the pattern is broken"
    assert used - contract == set(), "metrics not in docs/metrics.md"


def test_recording_rules_read_by_rules_exist(alerts: Dict[str, dict], records: Dict[str, dict]) -> None:
    used: Set[str] = set()
    for rule in [*alerts.values(), *records.values()]:
        for text in rule_texts(rule):
            used.update(RECORDED_RE.findall(text))
    assert "host:vdi_host_state:max" in used
    assert used - set(records) == set(), "rules read recording rules that are not defined"


def test_recording_rules_are_named_and_documented(records: Dict[str, dict]) -> None:
    for name in records:
        assert RECORD_NAME_RE.match(name), f"{name}: not level:metric:operations"
    lines = RECORDING_FILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("- record:"):
            before = next(prev for prev in reversed(lines[:i]) if prev.strip())
            assert before.strip().startswith("#"), f"{line.strip()} has no comment above it"


def test_brief_names_exist(records: Dict[str, dict]) -> None:
    """The names dashboards and people were told about."""
    assert {"site_delivery_group:vdi_sessions:sum", "delivery_group:vdi_capacity_used:ratio",
            "delivery_group:vdi_host_state:sum", "delivery_group:vdi_hosts_accepting:sum"} <= set(records)


def test_counters_are_deduplicated_before_rate(records: Dict[str, dict]) -> None:
    """rate() and increase() read the freshest copy of a host's counter (`host:...:freshest`), never the
    per-replica series: `max` over the copies' increase() counts half an hour in which a host moved."""
    # A ratio of two rates of the same copy is right whichever copy it is.
    same_copy_ratios = {"host:vdi_host_cpu_utilization:ratio_rate5m"}
    for name, rule in records.items():
        if name in same_copy_ratios:
            continue
        for window_fn in re.finditer(r"\b(?:rate|increase|irate)\(\s*([\w:]+)", rule["expr"]):
            series = window_fn.group(1)
            assert series.startswith("host:") and series.endswith(":freshest"), (name, series)
    freshest = [n for n in records if n.endswith(":freshest") and n.startswith("host:")]
    for name in freshest:
        expr = records[name]["expr"]
        assert "host_instance:vdi_agent_last_report_timestamp_seconds:freshest" in expr, name
        assert re.match(r"\s*max by \(host, site, delivery_group[\w, ]*\)", expr), name


# ---------------------------------------------------------------------------
# Alertmanager inhibitions


def matcher_values(matchers: List[str]) -> List[str]:
    out = []
    for m in matchers:
        found = re.fullmatch(r'alertname(=~|=)"(.*)"', m)
        assert found, f"unexpected matcher {m}"
        out.append(found.group(2) if found.group(1) == "=~" else re.escape(found.group(2)))
    return out


def test_inhibit_rules_name_existing_alerts(alerts: Dict[str, dict], meta_alerts: Dict[str, dict]) -> None:
    config = load_yaml(ALERTMANAGER_CONFIG)
    for rule in config["inhibit_rules"]:
        for key in ("source_matchers", "target_matchers"):
            for pattern in matcher_values(rule[key]):
                assert [a for a in alerts if re.fullmatch(pattern, a)], f"{pattern} matches no alert"
    collector_down = next(r for r in config["inhibit_rules"]
                          if r["source_matchers"] == ['alertname="VdiwatchCollectorDown"'])
    (target,) = matcher_values(collector_down["target_matchers"])
    for name in alerts:
        assert bool(re.fullmatch(target, name)) == (not name.startswith("Vdiwatch")), name
    for name in meta_alerts:
        assert not re.fullmatch(target, name), name


class Alertmanager(AlertmanagerServer):
    """The project's Alertmanager config as it is, and alerts posted by hand."""

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def post(self, *label_sets: Dict[str, str]) -> None:
        ends = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
        body = [{"labels": labels, "annotations": {"summary": "test"}, "endsAt": ends} for labels in label_sets]
        requests.post(f"{self.url}/api/v2/alerts", json=body, timeout=5).raise_for_status()

    def states(self) -> Dict[str, str]:
        """`alertname/what` (host, else delivery group, site or instance) -> active or suppressed."""
        got = requests.get(f"{self.url}/api/v2/alerts", timeout=5).json()
        out = {}
        for a in got:
            labels = a["labels"]
            what = next((labels[k] for k in ("host", "delivery_group", "site", "instance") if k in labels), "farm")
            out[f"{labels['alertname']}/{what}"] = a["status"]["state"]
        return out


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    am = Alertmanager(tmp_path, ALERTMANAGER_CONFIG).start()
    try:
        yield am
    finally:
        am.stop()


@pytest.mark.slow
def test_alertmanager_applies_the_inhibitions(alertmanager: Alertmanager) -> None:
    page = {"severity": "page"}
    alertmanager.post(
        {"alertname": "VdiManyAgentsDown", "site": "Library", **page},
        {"alertname": "VdiAgentDown", "host": "lib-01", "site": "Library", "delivery_group": "Lib", **page},
        {"alertname": "VdiAgentDown", "host": "vda-01", "site": "City Hall", "delivery_group": "Office", **page},
        {"alertname": "VdiDeliveryGroupCapacityCritical", "delivery_group": "Office", **page},
        {"alertname": "VdiDeliveryGroupCapacityHigh", "delivery_group": "Office", "severity": "ticket"},
        {"alertname": "VdiDeliveryGroupCapacityHigh", "delivery_group": "Finance", "severity": "ticket"},
        {"alertname": "VdiHostNearMaxSessions", "host": "vda-02", "site": "City Hall", "delivery_group": "Office",
         "severity": "ticket"},
        {"alertname": "VdiDeliveryGroupLogonVerySlow", "site": "City Hall", "delivery_group": "Office", **page},
        {"alertname": "VdiDeliveryGroupLogonSlow", "site": "City Hall", "delivery_group": "Office",
         "severity": "ticket"},
        {"alertname": "VdiDeliveryGroupLogonSlow", "site": "City Hall", "delivery_group": "Finance",
         "severity": "ticket"},
        {"alertname": "VdiDeliveryGroupInputDelayFastBurn", "delivery_group": "Office", **page},
        {"alertname": "VdiDeliveryGroupInputDelaySlowBurn", "delivery_group": "Office", "severity": "ticket"},
        {"alertname": "VdiDeliveryGroupInputDelayBudgetBurn", "delivery_group": "Finance", "severity": "ticket"},
        {"alertname": "VdiDeliveryGroupLogonFailures", "site": "Library", "delivery_group": "Lib", **page},
        {"alertname": "VdiHostLogonFailures", "host": "lib-02", "site": "Library", "delivery_group": "Lib",
         "severity": "ticket"},
        {"alertname": "VdiHostLogonFailures", "host": "fin-01", "site": "City Hall", "delivery_group": "Finance",
         "severity": "ticket"},
        # Issue 17.
        {"alertname": "VdiFarmLogonOutage", **page},
        {"alertname": "VdiDeliveryGroupLogonOutage", "delivery_group": "Office", **page},
        {"alertname": "VdiDeliveryGroupUnavailableFastBurn", "delivery_group": "Kiosk", **page},
        {"alertname": "VdiDeliveryGroupUnavailableSlowBurn", "delivery_group": "Kiosk", "severity": "ticket"},
        {"alertname": "VdiDeliveryGroupNoHostAccepting", "delivery_group": "Kiosk", **page},
        {"alertname": "VdiAgentDown", "host": "kiosk-01", "site": "Library", "delivery_group": "Kiosk", **page},
        {"alertname": "VdiDeliveryGroupSessionsStuckConnecting", "site": "City Hall", "delivery_group": "RDS Apps",
         **page},
        {"alertname": "VdiHostSessionsStuckConnecting", "host": "rdsh-01", "site": "City Hall",
         "delivery_group": "RDS Apps", "severity": "ticket"},
        {"alertname": "VdiHostSessionsStuckConnecting", "host": "rdsh-09", "site": "Fire Station",
         "delivery_group": "RDS Apps", "severity": "ticket"},
        {"alertname": "VdiHostOtherDiskAlmostFull", "host": "vda-03", "site": "City Hall", "delivery_group": "Office",
         "mountpoint": "D:\\", "severity": "ticket"},
        {"alertname": "VdiHostDiskFillingUp", "host": "vda-03", "site": "City Hall", "delivery_group": "Office",
         "mountpoint": "D:\\", "severity": "ticket"},
    )
    assert alertmanager.states() == {
        "VdiManyAgentsDown/Library": "active",
        "VdiAgentDown/lib-01": "suppressed",                  # the site's page covers it
        "VdiAgentDown/vda-01": "active",                      # another site
        "VdiDeliveryGroupCapacityCritical/Office": "active",
        "VdiDeliveryGroupCapacityHigh/Office": "suppressed",  # critical supersedes high
        "VdiDeliveryGroupCapacityHigh/Finance": "active",     # another group
        "VdiHostNearMaxSessions/vda-02": "suppressed",        # the group's capacity alert covers it
        "VdiDeliveryGroupLogonVerySlow/Office": "active",
        "VdiDeliveryGroupLogonSlow/Office": "suppressed",     # the page covers the ticket
        "VdiDeliveryGroupLogonSlow/Finance": "active",        # another group
        "VdiDeliveryGroupInputDelayFastBurn/Office": "active",
        "VdiDeliveryGroupInputDelaySlowBurn/Office": "suppressed",  # the fast burn covers the slow one
        "VdiDeliveryGroupInputDelayBudgetBurn/Finance": "active",   # another group
        "VdiDeliveryGroupLogonFailures/Lib": "active",
        "VdiHostLogonFailures/lib-02": "suppressed",          # its group's page covers it
        "VdiHostLogonFailures/fin-01": "active",              # another group
        "VdiFarmLogonOutage/farm": "active",
        "VdiDeliveryGroupLogonOutage/Office": "suppressed",   # the farm's page covers every group
        "VdiDeliveryGroupUnavailableFastBurn/Kiosk": "active",
        "VdiDeliveryGroupUnavailableSlowBurn/Kiosk": "suppressed",  # the fast burn covers the slow one
        "VdiDeliveryGroupNoHostAccepting/Kiosk": "suppressed",      # ... and the causes it names
        "VdiAgentDown/kiosk-01": "suppressed",
        "VdiDeliveryGroupSessionsStuckConnecting/RDS Apps": "active",
        "VdiHostSessionsStuckConnecting/rdsh-01": "suppressed",     # its group's page covers it
        "VdiHostSessionsStuckConnecting/rdsh-09": "active",         # another site
        "VdiHostOtherDiskAlmostFull/vda-03": "active",
        "VdiHostDiskFillingUp/vda-03": "suppressed",          # almost full covers filling up
    }

    alertmanager.post({"alertname": "VdiwatchCollectorDown", "job": "vdiwatch-collector", "instance": "a", **page},
                      {"alertname": "VdiwatchCollectorRejectingReports", "instance": "b", "severity": "ticket"})
    # No collector left: everything about hosts and groups is held back, the
    # collector's own alerts are not.
    states = alertmanager.states()
    assert states.pop("VdiwatchCollectorDown/a") == "active"
    assert states.pop("VdiwatchCollectorRejectingReports/b") == "active"
    assert len(states) == 27 and set(states.values()) == {"suppressed"}, states
