"""The Grafana dashboards' structure, checked without Grafana.

The JSON in grafana/dashboards/ is generated; after a change of grafana/generate.py run

    .venv/bin/python grafana/generate.py

What runs the queries against a real Prometheus is test_dashboards_truth.py.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
from typing import Any, Dict, Iterator, List, Set, Tuple

import pytest

from tests.conftest import ROOT

DASHBOARDS_DIR = ROOT / "grafana" / "dashboards"
CONTRACT = ROOT / "docs" / "metrics.md"
UIDS = {"wall.json": "vdiwatch-wall", "host.json": "vdiwatch-host", "group.json": "vdiwatch-group",
        "capacity.json": "vdiwatch-capacity",
        "collector.json": "vdiwatch-collector"}
DS = {"type": "prometheus", "uid": "${datasource}"}

# Prometheus' own series, which the contract does not list.
PROMETHEUS_OWN = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds"}

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or",
                "unless", "inf", "nan"}
# Per-host metrics: everything vdiwatch serves with host/site/delivery_group labels.
PER_HOST = re.compile(r"\b(vdi_(?!collector_)\w+)\s*[{\s)]")
AGGREGATION = re.compile(r"\b(sum|min|max|avg|count|topk|bottomk|quantile|stddev|stdvar|group)\s*"
                         r"(?:(by|without)\s*\(([^()]*)\)\s*)?$")


def load_generator():
    spec = importlib.util.spec_from_file_location("vdiwatch_grafana_generate", ROOT / "grafana" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboards() -> Dict[str, Dict[str, Any]]:
    return {name: json.loads((DASHBOARDS_DIR / name).read_text(encoding="utf-8")) for name in UIDS}


def panels(dashboard: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    for p in dashboard["panels"]:
        yield p
        yield from p.get("panels", ())


def targets(dashboard: Dict[str, Any]) -> Iterator[Tuple[Dict[str, Any], Dict[str, Any]]]:
    for p in panels(dashboard):
        for t in p.get("targets", ()):
            yield p, t


def variable_query(variable: Dict[str, Any]) -> str:
    q = variable["query"]
    return q["query"] if isinstance(q, dict) else q


def label_values_selector(query: str) -> str:
    """`label_values(selector, label)` -> selector; the label is not a metric name."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
    assert m, f"unexpected variable query {query!r}"
    return m.group(1)


def metric_names(expr: str) -> Set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or label names."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label_replace arguments, matcher values)
    s = re.sub(r"\{[^{}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries, $__rate_interval included
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", s)  # label lists
    s = re.sub(r"\boffset\s+-?[\w$]+", " ", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)  # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if not call and word.lower() not in PROMQL_WORDS:
            names.add(word)
    return names


def contract() -> Tuple[Set[str], List[str]]:
    """Metric names of docs/metrics.md's metric tables (histogram series included), and `prefix_*` entries."""
    names: Set[str] = set()
    prefixes: List[str] = []
    in_metrics = False
    for line in CONTRACT.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            in_metrics = False
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "metric":
            in_metrics = True
            continue
        if not in_metrics or len(cells) < 2:
            continue
        for name in re.findall(r"`([^`]+)`", cells[0]):
            if name.endswith("*"):
                prefixes.append(name[:-1])
            else:
                names.add(name)
                if cells[1] == "histogram":
                    names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
                elif cells[1].startswith("summary"):  # "summary (`_sum`, `_count` only)"
                    names.update(f"{name}{suffix}" for suffix in ("_sum", "_count"))
    return names, prefixes


def recorded() -> Set[str]:
    """Names of the project's recording rules: a panel that must show what an alert computes reads one."""
    rules = ROOT / "config" / "prometheus" / "rules" / "vdiwatch-recording.yml"
    return set(re.findall(r"^\s*- record: (\S+)$", rules.read_text(encoding="utf-8"), flags=re.M))


def in_contract(name: str, names: Set[str], prefixes: List[str]) -> bool:
    return name in names or any(name.startswith(p) for p in prefixes)


def undeduplicated(expr: str, generator) -> List[str]:
    """Per-host selectors that something other than `max by (host, site, delivery_group, ...)` aggregates
    first, or that nothing aggregates. The freshest-copy pick itself is left out: it is the dedup."""
    for offset in ("", "1d", "7d"):
        expr = expr.replace(generator.freshest(offset), "(FRESHEST)")
    stack: List[int] = []
    enclosing: Dict[int, List[int]] = {}
    starts = {m.start(1): m.group(1) for m in PER_HOST.finditer(expr)}
    for i, ch in enumerate(expr):
        if i in starts:
            enclosing[i] = list(stack)
        if ch == "(":
            stack.append(i)
        elif ch == ")":
            stack.pop()
    bad = []
    for start, metric in starts.items():
        verdict = "not aggregated at all"
        for paren in reversed(enclosing[start]):
            m = AGGREGATION.search(expr[:paren])
            if not m:
                continue  # a function (rate, clamp_min...) or plain parentheses: look further out
            labels = [x.strip() for x in (m.group(3) or "").split(",")]
            ok = m.group(1) == "max" and m.group(2) == "by" and labels[:3] == ["host", "site", "delivery_group"]
            verdict = "" if ok else f"aggregated first by {m.group(0).strip()!r}"
            break
        if verdict:
            bad.append(f"{metric}: {verdict}")
    return bad


# ---------------------------------------------------------------------------


def test_dashboards_are_what_the_generator_writes() -> None:
    generated = load_generator().rendered()
    assert sorted(generated) == sorted(UIDS)
    assert sorted(p.name for p in DASHBOARDS_DIR.glob("*.json")) == sorted(UIDS), "stray dashboard files"
    for name, text in generated.items():
        assert (DASHBOARDS_DIR / name).read_text(encoding="utf-8") == text, (
            f"grafana/dashboards/{name} is out of date: run .venv/bin/python grafana/generate.py")


def test_generator_output_is_deterministic_sorted_and_indented() -> None:
    generator = load_generator()
    first, second = generator.rendered(), generator.rendered()
    assert first == second
    for text in first.values():
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_each_dashboard_has_its_stable_uid_a_title_and_schema_39() -> None:
    found = dashboards()
    assert {name: d["uid"] for name, d in found.items()} == UIDS
    titles = [d["title"] for d in found.values()]
    assert all(titles) and len(set(titles)) == len(titles)
    for d in found.values():
        assert d["schemaVersion"] == 39
        assert d["id"] is None, "an exported id would clash on import"
        assert "vdiwatch" in d["tags"]


@pytest.mark.parametrize("name", sorted(UIDS))
def test_panels_fit_the_grid_and_never_overlap(name: str) -> None:
    d = dashboards()[name]
    rects = []
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0, p["title"]
        assert g["x"] + g["w"] <= 24, f"{p['title']!r} runs past column 24"
        rects.append((p["title"], g))
    for (ta, a), (tb, b) in itertools.combinations(rects, 2):
        apart = (a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
                 or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"])
        assert apart, f"{ta!r} overlaps {tb!r}"
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("name", sorted(UIDS))
def test_every_panel_and_target_reads_the_datasource_variable(name: str) -> None:
    d = dashboards()[name]
    for p in panels(d):
        assert p.get("datasource") == DS, p["title"]
    for p, t in targets(d):
        assert t.get("datasource") == DS, p["title"]

    def walk(node: Any, path: str) -> Iterator[Tuple[str, Any]]:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "datasource":
                    yield path, v
                yield from walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, f"{path}[{i}]")

    hard_coded = [(path, v) for path, v in walk(d, name) if v != DS]
    assert not hard_coded, f"datasource not taken from the variable: {hard_coded}"
    ds_vars = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
    assert ds_vars == [v for v in d["templating"]["list"] if v["name"] == "datasource"]
    assert len(ds_vars) == 1 and ds_vars[0]["query"] == "prometheus"


@pytest.mark.parametrize("name", sorted(UIDS))
def test_every_panel_has_queries_and_none_is_empty(name: str) -> None:
    for p in panels(dashboards()[name]):
        if p["type"] == "row":
            continue
        assert p.get("description"), f"{p['title']!r} needs a description (the docs and the (i) tooltip)"
        ts = p.get("targets", [])
        assert ts, f"{p['title']!r} has no query"
        assert all(t.get("expr", "").strip() for t in ts), f"{p['title']!r} has an empty expr"
        assert len({t["refId"] for t in ts}) == len(ts)


def test_site_group_host_variables_chain_on_vdi_agent_info() -> None:
    found = dashboards()
    expected = {
        "site": "label_values(vdi_agent_info, site)",
        "delivery_group": 'label_values(vdi_agent_info{site=~"$site"}, delivery_group)',
        "host": 'label_values(vdi_agent_info{site=~"$site", delivery_group=~"$delivery_group"}, host)',
    }
    for name, wanted in (("wall.json", ["site", "delivery_group"]), ("host.json", ["site", "delivery_group", "host"]),
                         ("group.json", ["site", "delivery_group"]), ("capacity.json", ["site", "delivery_group"]),
                         ("collector.json", [])):
        variables = {v["name"]: v for v in found[name]["templating"]["list"] if v["type"] == "query"}
        assert [n for n in variables if n in expected] == wanted, name
        for v in wanted:
            assert variable_query(variables[v]) == expected[v]
    host_var = next(v for v in found["host.json"]["templating"]["list"] if v["name"] == "host")
    assert not host_var["multi"] and not host_var["includeAll"], "a drill-down shows one host"
    group_var = next(v for v in found["group.json"]["templating"]["list"] if v["name"] == "delivery_group")
    assert not group_var["multi"] and not group_var["includeAll"], "the group dashboard shows one group"


def test_links_between_dashboards_carry_the_variables() -> None:
    found = dashboards()
    for name, d in found.items():
        assert all(link["includeVars"] and link["keepTime"] for link in d["links"]), name
    def link_urls(panel: Dict[str, Any]) -> List[str]:
        return [link["url"] for o in panel["fieldConfig"]["overrides"]
                for prop in o["properties"] if prop["id"] == "links" for link in prop["value"]]

    wall = {p["title"]: p for p in found["wall.json"]["panels"]}
    capacity_links = link_urls(wall["Capacity used per delivery group"])
    table_links = link_urls(wall["User experience per delivery group"])
    for url, value in ((capacity_links, "${__value.raw}"), (table_links, "${__value.raw}")):  # table cells
        assert url == [f"/d/vdiwatch-group/vdiwatch-delivery-group?${{site:queryparam}}&var-delivery_group={value}"
                       "&${__url_time_range}"]
    group = {p["title"]: p for p in found["group.json"]["panels"]}
    host_links = link_urls(group["Hosts"])
    assert host_links and all(u.startswith("/d/vdiwatch-host/") and "var-host=${__value.raw}" in u for u in host_links)


def test_wall_is_readable_from_three_metres() -> None:
    wall = dashboards()["wall.json"]
    assert wall["refresh"] == "30s" and wall["time"] == {"from": "now-24h", "to": "now"}
    for v in wall["templating"]["list"]:
        assert v["hide"] == 0, f"variable {v['name']} is hidden but the wall depends on it"
        if v["name"] in ("site", "delivery_group"):
            assert v["multi"] and v["includeAll"] and v["allValue"] == ".*"
    ps = [p for p in wall["panels"]]
    assert len(ps) <= 11, "a wall display holds few panels"
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in ps)
    assert rows * 30 + (rows - 1) * 8 <= 1080, "the wall scrolls on a 1080p screen in kiosk mode"
    stats = [p for p in ps if p["type"] == "stat"]
    assert len(stats) >= 6
    for p in stats:
        assert p["options"]["colorMode"] == "background"
        assert p["options"]["text"]["valueSize"] >= 60, f"{p['title']!r}: value too small for 3 m"
        assert p["gridPos"]["h"] >= 5 and p["gridPos"]["w"] >= 4
    by_title = {p["title"]: p for p in ps}
    stale = by_title["Stale agents"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [(s["value"], s["color"]) for s in stale] == [(None, "green"), (1, "red")], "red above 0"
    capacity = by_title["Capacity used per delivery group"]
    cells = {o["matcher"]["options"]: {q["id"]: q["value"] for q in o["properties"]}
             for o in capacity["fieldConfig"]["overrides"]}
    assert capacity["type"] == "table" and capacity["options"]["cellHeight"] == "lg"
    assert cells["Used"]["unit"] == "percentunit"
    # the capacity alerts' thresholds colour the share used; the free slots are a count: neutral, red at 0
    assert [(s["value"], s["color"]) for s in cells["Used"]["thresholds"]["steps"]] == [
        (None, "transparent"), (0.85, "orange"), (0.95, "red")]
    assert [(s["value"], s["color"]) for s in cells["Free slots"]["thresholds"]["steps"]] == [
        (None, "red"), (1, "transparent")]
    alerts = by_title["Paging alerts"]["targets"][0]["expr"]
    assert alerts == 'count(ALERTS{alertstate="firing", severity="page"}) or vector(0)', "no tickets, no Watchdog"
    history = by_title["Sessions by state, today and a week ago"]["targets"]
    assert "offset 7d" not in history[0]["expr"] and "offset 7d" in history[1]["expr"], "Monday against Monday"
    counts = [p for p in stats if p["title"].startswith("Sessions ")]
    assert len(counts) == 3 and all(p["fieldConfig"]["defaults"]["thresholds"]["steps"] == [
        {"color": "blue", "value": None}] for p in counts), "counts are neutral, not coloured like statuses"
    table = by_title["Problem hosts"]
    assert table["targets"][0]["format"] == "table" and table["targets"][0]["instant"]
    assert table["targets"][0]["expr"].count('label_replace(') == 5
    assert '"in maintenance"' not in table["targets"][0]["expr"], "maintenance is planned work, not a problem"
    assert '"disk under 5 %"' in table["targets"][0]["expr"]


def test_wall_user_experience_table_colours_each_cell_by_its_bands() -> None:
    wall = dashboards()["wall.json"]
    (ux,) = [p for p in wall["panels"] if p["title"] == "User experience per delivery group"]
    assert ux["options"]["cellHeight"] == "lg", "readable from across the room"
    exprs = [t["expr"] for t in ux["targets"]]
    assert all(t["instant"] and t["format"] == "table" for t in ux["targets"])
    # the windows and thresholds of the alerts (config/prometheus/rules/vdiwatch-alerts.yml)
    for metric, window in (("vdi_logon_duration_seconds", "30m"), ("vdi_session_input_delay_seconds", "5m"),
                           ("vdi_session_rtt_seconds", "10m")):
        (expr,) = [e for e in exprs if f"{metric}_bucket" in e]
        assert expr.startswith("histogram_quantile(0.95, sum by (delivery_group, le) (") and f"[{window}]" in expr
        assert expr.endswith(" >= 0"), "a group with nothing measured shows an empty cell, not NaN"
    bands = {o["matcher"]["options"]: {q["id"]: q["value"] for q in o["properties"]}
             for o in ux["fieldConfig"]["overrides"]}
    bands = {name: props for name, props in bands.items() if "thresholds" in props}  # not the group link
    steps = {name: [(s["value"], s["color"]) for s in props["thresholds"]["steps"]] for name, props in bands.items()}
    assert steps["Input delay p95 (5 min)"] == [(None, "green"), (0.15, "yellow"), (0.5, "orange"), (2, "red")]
    assert [v for v, _ in steps["Round trip p95 (10 min)"]] == [None, 0.1, 0.3, 0.5]
    assert [v for v, _ in steps["Logon p95 (30 min)"]] == [None, 60, 180]
    assert all(props["unit"] == "s" for name, props in bands.items() if "p95" in name)
    dropped = next(e for e in exprs if "vdi_session_disconnect_reasons_total" in e)
    assert 'reason=~"network|server"' in dropped and "[1h]" in dropped


def test_host_panels_cover_the_drill_down() -> None:
    host = dashboards()["host.json"]
    exprs = " ".join(t["expr"] for _, t in targets(host))
    for needle in ("rate(vdi_host_cpu_seconds_total", "vdi_host_memory_available_bytes",
                   "vdi_host_filesystem_avail_bytes", "vdi_host_disk_read_bytes_total",
                   "vdi_host_network_receive_bytes_total", "sum by (state)", "sum by (protocol)",
                   "increase(vdi_session_logons_total", "vdi_user_cpu_cores", "vdi_user_memory_bytes",
                   "vdi_logon_duration_seconds_bucket", "vdi_logon_phase_seconds_sum", "vdi_logon_failures_total",
                   "vdi_session_disconnect_reasons_total", "vdi_session_input_delay_seconds_bucket",
                   "vdi_session_rtt_seconds_bucket", "vdi_session_traffic_bytes_total", "vdi_app_cpu_seconds_total",
                   "vdi_app_memory_bytes",
                   "vdi_agent_collector_success", "time() - max by (host, site, delivery_group) "
                   "((vdi_agent_last_report_timestamp_seconds", "vdi_agent_clock_skew_seconds", "vdi_host_state"):
        assert needle in exprs, needle
    per_user = [p for p in panels(host) if any("vdi_user_" in t["expr"] for t in p.get("targets", ()))]
    assert len(per_user) == 2
    assert all("only when per-user series are enabled" in p["description"] for p in per_user)


def test_capacity_sizing_applies_the_20_percent_reserve() -> None:
    cap = dashboards()["capacity.json"]
    exprs = [t["expr"] for _, t in targets(cap)]
    peaks = [e for e in exprs if e.startswith("max_over_time(")]
    assert any("[1d:5m]" in e for e in peaks), "peak per day"
    # every subquery reads the per-group recording rule, never per-host series: its cost must not grow with the farm
    assert peaks and all(not PER_HOST.search(e) and "site_delivery_group:vdi_sessions:sum" in e for e in peaks)
    # the freshest copy's increase, which goes on across a failover (not the max of the copies' increases)
    assert any("increase(host:vdi_session_logons_total:freshest" in e and "[1h]" in e for e in exprs), "logons per hour"
    needed = [e for e in exprs if e.startswith("ceil(")]
    assert len(needed) == 1 and " * 1.2 / avg by (delivery_group) (" in needed[0]


def test_collector_dashboard_reads_the_collector_self_metrics() -> None:
    exprs = " ".join(t["expr"] for _, t in targets(dashboards()["collector.json"]))
    for needle in ("rate(vdi_collector_reports_accepted_total", "vdi_collector_reports_rejected_total",
                   "vdi_collector_hosts", "vdi_collector_scrape_duration_seconds",
                   'scrape_duration_seconds{job="vdiwatch-collector"',
                   "time() - (vdi_collector_snapshot_last_success_timestamp_seconds", 'up{job="vdiwatch-collector"'):
        assert needle in exprs, needle


def test_metric_parser_skips_functions_keywords_labels_and_variables() -> None:
    expr = ('label_replace(sum by (host, le) (rate(vdi_a_total{mode!="idle", x=~"$site"}[$__rate_interval]))'
            ' / on (host) group_left () vdi_b offset 1d, "problem", "cpu over 90 %", "", "") > 0.9 '
            'or histogram_quantile(0.99, vdi_c_bucket[1d:5m]) * 1e3 and bool time() - ALERTS')
    assert metric_names(expr) == {"vdi_a_total", "vdi_b", "vdi_c_bucket", "ALERTS"}


def test_contract_parser_reads_the_metric_tables() -> None:
    names, prefixes = contract()
    assert {"vdi_sessions", "vdi_host_load15", "vdi_collector_report_duration_seconds_bucket",
            "vdi_logon_phase_seconds_sum", "vdi_session_rtt_seconds_bucket"} <= names
    assert "vdi_logon_phase_seconds_bucket" not in names, "a summary has no buckets"
    assert not {"host", "site", "delivery_group"} & names, "the labels table is not a metric table"
    assert "process_" in prefixes


def test_capacity_panels_read_the_rule_the_capacity_alerts_read() -> None:
    assert "delivery_group:vdi_capacity_used:ratio" in recorded()
    alerts = (ROOT / "config" / "prometheus" / "rules" / "vdiwatch-alerts.yml").read_text(encoding="utf-8")
    assert "avg_over_time(delivery_group:vdi_capacity_used:ratio[" in alerts
    for name, title in (("wall.json", "Capacity used per delivery group"), ("capacity.json", "Capacity used")):
        (p,) = [p for p in dashboards()[name]["panels"] if p["title"] == title]
        assert p["targets"][0]["expr"] == 'delivery_group:vdi_capacity_used:ratio{delivery_group=~"$delivery_group"}'
    # the free slots: one recording rule, read by the wall and the delivery-group dashboard alike
    assert "delivery_group:vdi_session_slots_free:sum" in recorded()
    (wall,) = [p for p in dashboards()["wall.json"]["panels"] if p["title"] == "Capacity used per delivery group"]
    assert len(wall["targets"]) == 2
    assert wall["targets"][1]["expr"] == 'delivery_group:vdi_session_slots_free:sum{delivery_group=~"$delivery_group"}'
    (group,) = [p for p in dashboards()["group.json"]["panels"] if p["title"] == "Free slots"]
    assert [t["expr"] for t in group["targets"]] == [
        'sum(delivery_group:vdi_session_slots_free:sum{delivery_group="$delivery_group"}) or vector(0)']


def test_wall_alert_list_mirrors_firing_alerts_pages_first() -> None:
    """The structure of the wall's alert list; tests/grafana/test_wall_alerts.py runs it on real alerts."""
    (p,) = [p for p in dashboards()["wall.json"]["panels"] if p["title"] == "Firing alerts"]
    (t,) = p["targets"]
    assert t["format"] == "table" and t["instant"]
    parts = t["expr"].split(" or sort_desc(")
    assert [re.search(r"ALERTS_FOR_STATE\{([^}]*)\}", part).group(1) for part in parts] == [
        'severity="page", alertname!="Watchdog"', 'severity="ticket", alertname!="Watchdog"',
        'severity!~"page|ticket|none", alertname!="Watchdog"']
    assert t["expr"].count('and ignoring (alertstate) ALERTS{alertstate="firing"}') == 3, "firing only"
    assert p["gridPos"]["w"] >= 12 and p["gridPos"]["h"] >= 8, "as many rows as fit"


def not_rules_or_prometheus_own(expr: str) -> Set[str]:
    """The series a query reads that are neither the project's recording rules nor Prometheus' own."""
    return metric_names(expr) - recorded() - PROMETHEUS_OWN


def test_every_wall_query_reads_recording_rules_or_prometheus_own_series_only() -> None:
    """The wall shows what the alerts read, each host's freshest copy, with queries cheap enough for a page
    refreshed every 30 s: no raw per-replica series, and every panel reads at least one series."""
    assert not_rules_or_prometheus_own('sum(vdi_sessions{state="active"}) or host:vdi_agent_up:max') == {
        "vdi_sessions"}, "the check sees a raw series next to a rule"
    checked = 0
    for p, t in targets(dashboards()["wall.json"]):
        assert metric_names(t["expr"]), f"{p['title']} {t['refId']} reads no series"
        assert not not_rules_or_prometheus_own(t["expr"]), f"{p['title']} {t['refId']}: {t['expr']}"
        checked += 1
    assert checked == sum(len(p.get("targets", ())) for p in dashboards()["wall.json"]["panels"]) >= 11


def test_every_metric_used_is_in_the_contract() -> None:
    names, prefixes = contract()
    missing = {}
    for name, d in dashboards().items():
        exprs = [t["expr"] for _, t in targets(d)]
        exprs += [label_values_selector(variable_query(v)) for v in d["templating"]["list"] if v["type"] == "query"]
        for expr in exprs:
            for metric in metric_names(expr):
                if not (in_contract(metric, names, prefixes) or metric in PROMETHEUS_OWN
                        or metric in recorded()):
                    missing.setdefault(metric, set()).add(name)
    assert not missing, f"metrics not in docs/metrics.md: {missing}"


@pytest.mark.parametrize("name", sorted(UIDS))
def test_per_host_series_are_deduplicated_across_replicas_before_anything_else(name: str) -> None:
    generator = load_generator()
    bad = {}
    for p, t in targets(dashboards()[name]):
        problems = undeduplicated(t["expr"], generator)
        if problems:
            bad[f"{p['title']} {t['refId']}"] = problems
    assert not bad, bad


def test_dedup_check_catches_a_plain_sum() -> None:
    generator = load_generator()
    assert undeduplicated('sum(vdi_sessions{state="active"})', generator) == [
        "vdi_sessions: aggregated first by 'sum'"]
    assert undeduplicated("vdi_agent_up == 0", generator) == ["vdi_agent_up: not aggregated at all"]
    assert undeduplicated(generator.gauge("vdi_agent_up", ()), generator) == []


def test_provisioning_points_at_the_dashboards_and_a_prometheus_from_the_environment() -> None:
    yaml = pytest.importorskip("yaml")
    base = ROOT / "grafana" / "provisioning"
    ds = yaml.safe_load((base / "datasources" / "vdiwatch.yaml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "${PROMETHEUS_URL}"
    provider = yaml.safe_load((base / "dashboards" / "vdiwatch.yaml").read_text())
    (files,) = provider["providers"]
    assert files["type"] == "file"
    path = files["options"]["path"]
    docs = (ROOT / "docs" / "dashboards.md").read_text()
    assert f"grafana/dashboards:{path}" in docs, "docs/dashboards.md mounts the dashboards elsewhere"
    assert f"grafana/dashboards:{path}" in (base / "dashboards" / "vdiwatch.yaml").read_text()


def test_docs_describe_every_panel_and_the_kiosk_url() -> None:
    docs = (ROOT / "docs" / "dashboards.md").read_text()
    for name, d in dashboards().items():
        for p in panels(d):
            if p["type"] != "row":
                assert p["title"] in docs, f"docs/dashboards.md does not describe {name}: {p['title']!r}"
    assert ("http://grafana:3000/d/vdiwatch-wall/vdiwatch-wall?orgId=1&kiosk&var-site=All"
            "&var-delivery_group=All&refresh=30s") in docs
    assert ".venv/bin/python grafana/generate.py" in docs
