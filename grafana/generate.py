"""Write vdiwatch's Grafana dashboards into grafana/dashboards/.

Regenerate after changing this file (the JSON is committed, and
tests/grafana/test_dashboards.py fails when it is out of date):

    .venv/bin/python grafana/generate.py

Standard library only. Output is deterministic: sorted keys, 2-space indent.

Why a generator: the layout is computed row by row, so panels never overlap,
and every per-host query goes through one helper, `per_host`, so the replica
deduplication is the same everywhere. Queries use the metric contract
(docs/metrics.md), Prometheus' own `up`, `ALERTS` and
`scrape_duration_seconds`, and the project's recording rules: the wall reads
nothing else, and where a panel must show exactly what an alert computes
(capacity used, free slots) it reads the rule the alerts read. Those panels
need the project's rules loaded in Prometheus.

Replica deduplication. A host that failed over from one collector replica to
another is on both for a while: the old replica keeps the host's last report
(marked stale) until `expire_after`. The series are identical except for
`instance`. Gauges therefore first keep the copy of each host with the most
recent report (the same pick as config/prometheus/rules/vdiwatch-recording.yml)
and then take `max by (host, site, delivery_group, <other labels>)`; a plain
max would mix the old copy's frozen session counts with the new ones for a
day. Counters (inside rate/increase) take the plain max: the frozen copy's rate
is 0 and adds nothing. Only then are hosts summed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

OUT = Path(__file__).resolve().parent / "dashboards"

DS = {"type": "prometheus", "uid": "${datasource}"}
HOST_LABELS = ("host", "site", "delivery_group")
COLLECTOR_JOB = "vdiwatch-collector"
SCHEMA_VERSION = 39
SUBQUERY_STEP = "5m"  # resolution of the capacity subqueries: fine enough for a peak, cheap over 30 days

Panel = Dict[str, Any]

# ---------------------------------------------------------------------------
# PromQL helpers
# ---------------------------------------------------------------------------


def sel(metric: str, *matchers: str, offset: str = "") -> str:
    """`metric{m1, m2}` with an optional offset: the only way a selector is written here."""
    inner = ", ".join(m for m in matchers if m)
    text = f"{metric}{{{inner}}}" if inner else metric
    return f"{text} offset {offset}" if offset else text


def freshest(offset: str = "") -> str:
    """Per host, the replica copy (`instance`) holding the most recent report."""
    ts = sel("vdi_agent_last_report_timestamp_seconds", offset=offset)
    return f"({ts} == on (host) group_left () max by (host) ({ts}))"


def per_host(expr: str, *labels: str, offset: str = "", counter: bool = False) -> str:
    """One series per host (and per `labels`), whichever collector replicas know it.

    The replica-dedup pattern; see the module docstring. `counter=True` for a
    rate()/increase() expression, `offset` must match the offset of `expr`'s selectors.
    """
    by = ", ".join(HOST_LABELS + labels)
    if counter:
        return f"max by ({by}) ({expr})"
    return f"max by ({by}) (({expr}) and on (instance, host) {freshest(offset)})"


def gauge(metric: str, m: Sequence[str], *labels: str, extra: Sequence[str] = (), offset: str = "") -> str:
    """A per-host gauge, deduplicated."""
    return per_host(sel(metric, *m, *extra, offset=offset), *labels, offset=offset)


def rate(metric: str, m: Sequence[str], window: str, *labels: str, extra: Sequence[str] = (),
         fn: str = "rate") -> str:
    """A per-host rate (or increase) of a counter, deduplicated."""
    return per_host(f"{fn}({sel(metric, *m, *extra)}[{window}])", *labels, counter=True)


def is_(label: str, value: str) -> str:
    """A matcher `label="value"` (f-string expressions may not hold backslashes before Python 3.12)."""
    return f'{label}="{value}"'


def open_hosts(m: Sequence[str]) -> str:
    """1 for a host open for new logons (state up, i.e. reporting and not in maintenance, and
    accepting), 0 for the other hosts that report capacity. As host:vdi_host_accepting_sessions:healthy."""
    up = gauge("vdi_host_state", m, extra=[is_("state", "up")])
    return f"({gauge('vdi_host_accepting_sessions', m)} * on (host, site, delivery_group) {up})"


def host_sessions(m: Sequence[str], *labels: str, extra: Sequence[str] = (), offset: str = "") -> str:
    """Sessions per host (and per `labels` of state/protocol), summed over the other labels."""
    by = ", ".join(HOST_LABELS + labels)
    return f"sum by ({by}) ({gauge('vdi_sessions', m, 'state', 'protocol', extra=extra, offset=offset)})"


def fresh(metric: str, m: Sequence[str], window: str, extra: Sequence[str] = (), fn: str = "rate") -> str:
    """`rate` (or `increase`) of a counter's freshest copy per host, the recording rule
    `host:<metric>:freshest` the alerts read: one series per host that goes on across a failover, where the
    max of the copies' increases would drop what the old replica saw (half an hour's logons after a failover
    at half time)."""
    return f"{fn}({sel(f'host:{metric}:freshest', *m, *extra)}[{window}])"


def quantile(q: float, metric: str, m: Sequence[str], window: str, *by: str) -> str:
    """The q-quantile of a histogram (`metric` without `_bucket`) over `window`, per `by`, from the freshest
    copies' bucket rates; NaN (no observation in the window) is dropped, so an idle group shows no value."""
    return f"histogram_quantile({q}, sum by ({', '.join((*by, 'le'))}) ({fresh(metric + '_bucket', m, window)})) >= 0"


def phase_average(m: Sequence[str], window: str, *by: str) -> str:
    """Average seconds per logon phase: the rate of the phase's seconds over the rate of logons that had it."""
    labels = ", ".join((*by, "phase"))
    seconds = fresh("vdi_logon_phase_seconds_sum", m, window)
    logons = fresh("vdi_logon_phase_seconds_count", m, window)
    return f"sum by ({labels}) ({seconds}) / (sum by ({labels}) ({logons}) > 0)"


# Thresholds shared by the wall and the host dashboard, the same numbers as the alerts and the bands of
# docs/metrics.md: input delay good under 150 ms, acceptable to 500 ms, poor to 2 s, bad above.
INPUT_DELAY_STEPS = ((None, "green"), (0.15, "yellow"), (0.5, "orange"), (2, "red"))
RTT_STEPS = ((None, "green"), (0.1, "yellow"), (0.3, "orange"), (0.5, "red"))  # orange: VdiSiteRoundTripTimeHigh
LOGON_STEPS = ((None, "green"), (60, "orange"), (180, "red"))  # VdiDeliveryGroupLogonSlow, ...VerySlow
DROPPED = 'reason=~"network|server"'  # disconnects the user did not choose and no policy made


def labelled(expr: str, label: str, value: str) -> str:
    return f'label_replace({expr}, "{label}", "{value}", "", "")'


# ---------------------------------------------------------------------------
# Panels
# ---------------------------------------------------------------------------


def target(expr: str, legend: str = "", instant: bool = False, table: bool = False) -> Dict[str, Any]:
    return {"datasource": DS, "editorMode": "code", "expr": expr, "instant": instant or table,
            "range": not (instant or table), "legendFormat": legend or "__auto",
            "format": "table" if table else "time_series"}


def thresholds(*steps: Tuple[Optional[float], str]) -> Dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


def fixed(color: str) -> Dict[str, Any]:
    return thresholds((None, color))


def value_mappings(*items: Tuple[str, str, str]) -> List[Dict[str, Any]]:
    """[(value, text, colour)] -> one Grafana value mapping."""
    return [{"type": "value", "options": {v: {"text": t, "color": c, "index": i}
                                          for i, (v, t, c) in enumerate(items)}}]


def panel(kind: str, title: str, description: str, targets: Iterable[Dict[str, Any]], *,
          unit: str = "short", steps: Optional[Dict[str, Any]] = None, options: Optional[Dict[str, Any]] = None,
          custom: Optional[Dict[str, Any]] = None, overrides: Sequence[Dict[str, Any]] = (),
          mappings: Sequence[Dict[str, Any]] = (), color_mode: str = "thresholds", decimals: Optional[int] = None,
          min_value: Optional[float] = None, max_value: Optional[float] = None, interval: str = "",
          transformations: Sequence[Dict[str, Any]] = (), no_value: str = "") -> Panel:
    targets = list(targets)
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    defaults: Dict[str, Any] = {"unit": unit, "color": {"mode": color_mode},
                                "thresholds": steps or fixed("green"), "mappings": list(mappings)}
    if custom is not None:
        defaults["custom"] = custom
    for key, value in (("decimals", decimals), ("min", min_value), ("max", max_value), ("noValue", no_value)):
        if value not in (None, ""):
            defaults[key] = value
    p: Panel = {"type": kind, "title": title, "description": description, "datasource": DS, "targets": targets,
                "fieldConfig": {"defaults": defaults, "overrides": list(overrides)}, "options": options or {}}
    if interval:
        p["interval"] = interval
    if transformations:
        p["transformations"] = list(transformations)
    return p


def reduce_last() -> Dict[str, Any]:
    return {"calcs": ["lastNotNull"], "fields": "", "values": False}


def stat(title: str, description: str, targets: Iterable[Dict[str, Any]], *, big: bool = False,
         text_mode: str = "value", **kw: Any) -> Panel:
    text = {"titleSize": 30, "valueSize": 90} if big else {}
    options = {"colorMode": "background", "graphMode": "none", "justifyMode": "center", "orientation": "auto",
               "reduceOptions": reduce_last(), "textMode": text_mode, "text": text, "wideLayout": True,
               "showPercentChange": False}
    return panel("stat", title, description, targets, options=options, **kw)


def timeseries(title: str, description: str, targets: Iterable[Dict[str, Any]], *, stack: bool = False,
               bars: bool = False, width: int = 2, fill: int = 10, legend_calcs: Sequence[str] = (),
               threshold_style: str = "off", **kw: Any) -> Panel:
    """`threshold_style`: "off", "dashed" (lines at the thresholds) or "area" (shaded bands)."""
    custom = {"drawStyle": "bars" if bars else "line", "lineWidth": width, "fillOpacity": 80 if bars else fill,
              "showPoints": "never", "spanNulls": False, "lineInterpolation": "linear", "gradientMode": "none",
              "axisPlacement": "auto", "axisSoftMin": 0, "pointSize": 4,
              "stacking": {"mode": "normal" if stack else "none", "group": "A"},
              "thresholdsStyle": {"mode": threshold_style}}
    options = {"legend": {"displayMode": "table" if legend_calcs else "list", "placement": "bottom",
                          "showLegend": True, "calcs": list(legend_calcs)},
               "tooltip": {"mode": "multi", "sort": "desc"}}
    kw.setdefault("color_mode", "palette-classic")
    return panel("timeseries", title, description, targets, options=options, custom=custom, **kw)


def bargauge(title: str, description: str, targets: Iterable[Dict[str, Any]], *, big: bool = False,
             **kw: Any) -> Panel:
    options = {"displayMode": "basic", "orientation": "horizontal", "reduceOptions": reduce_last(),
               "showUnfilled": True, "valueMode": "color", "namePlacement": "auto", "sizing": "auto",
               "minVizHeight": 16, "minVizWidth": 8, "maxVizHeight": 300,
               "text": {"titleSize": 22, "valueSize": 30} if big else {}}
    return panel("bargauge", title, description, targets, options=options, **kw)


def table(title: str, description: str, targets: Iterable[Dict[str, Any]], *, columns: Sequence[str],
          rename: Optional[Dict[str, str]] = None, merge: bool = False, sort: str = "",
          big: bool = False, **kw: Any) -> Panel:
    """A table of instant queries; `columns` in display order; Time, Value, __name__, instance and job
    hidden unless listed. Overrides match the names after `rename`: Grafana applies them after transformations."""
    targets = list(targets)
    transformations: List[Dict[str, Any]] = [{"id": "merge", "options": {}}] if merge else []
    hidden = {name: True for name in ("Time", "Value", "__name__", "instance", "job") if name not in columns}
    transformations.append({"id": "organize", "options": {
        "excludeByName": hidden, "indexByName": {c: i for i, c in enumerate(columns)},
        "renameByName": dict(rename or {})}})
    options = {"showHeader": True, "cellHeight": "lg" if big else "sm",
               "footer": {"show": False, "reducer": ["sum"], "countRows": False, "fields": ""},
               "sortBy": [{"displayName": sort, "desc": False}] if sort else []}
    custom = {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False, "filterable": False}
    return panel("table", title, description, targets, options=options, custom=custom,
                 transformations=transformations, **kw)


def row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "datasource": DS, "panels": []}


def by_name(name: str, *properties: Tuple[str, Any], regex: bool = False) -> Dict[str, Any]:
    matcher = {"id": "byRegexp" if regex else "byName", "options": name}
    return {"matcher": matcher, "properties": [{"id": k, "value": v} for k, v in properties]}


def color(name: str) -> Dict[str, str]:
    return {"mode": "fixed", "fixedColor": name}


# ---------------------------------------------------------------------------
# Layout and dashboard
# ---------------------------------------------------------------------------


class Grid:
    """Places panels in rows on Grafana's 24-column grid, top to bottom; nothing can overlap."""

    WIDTH = 24

    def __init__(self) -> None:
        self.y = 0
        self.panels: List[Panel] = []

    def add(self, height: int, *items: Tuple[int, Panel]) -> None:
        x = 0
        for width, p in items:
            if x + width > self.WIDTH:
                raise ValueError(f"row of {p['title']!r} is wider than {self.WIDTH} columns")
            p["gridPos"] = {"h": height, "w": width, "x": x, "y": self.y}
            p["id"] = len(self.panels) + 1
            self.panels.append(p)
            x += width
        self.y += height

    def section(self, title: str) -> None:
        self.add(1, (self.WIDTH, row(title)))


def datasource_variable() -> Dict[str, Any]:
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
            "regex": "", "skipUrlSync": False}


def query_variable(name: str, label: str, query: str, *, all_: bool = True, multi: bool = True) -> Dict[str, Any]:
    v: Dict[str, Any] = {"name": name, "label": label, "type": "query", "datasource": DS, "query": query,
                         "definition": query, "current": {}, "hide": 0, "includeAll": all_, "multi": multi,
                         "options": [], "refresh": 2, "regex": "", "skipUrlSync": False, "sort": 1}
    if all_:
        v["allValue"] = ".*"
    return v


SITE_VAR = "label_values(vdi_agent_info, site)"
GROUP_VAR = 'label_values(vdi_agent_info{site=~"$site"}, delivery_group)'
HOST_VAR = 'label_values(vdi_agent_info{site=~"$site", delivery_group=~"$delivery_group"}, host)'


def site_group_variables() -> List[Dict[str, Any]]:
    return [query_variable("site", "Site", SITE_VAR), query_variable("delivery_group", "Delivery group", GROUP_VAR)]


def dashboard(uid: str, title: str, description: str, grid: Grid, variables: List[Dict[str, Any]], *,
              refresh: str, time_from: str) -> Dict[str, Any]:
    return {
        "uid": uid, "title": title, "description": description, "tags": ["vdiwatch"],
        "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": True, "graphTooltip": 1, "id": None,
        "fiscalYearStartMonth": 0, "liveNow": False, "weekStart": "", "timezone": "browser",
        "refresh": refresh, "time": {"from": time_from, "to": "now"}, "timepicker": {},
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["vdiwatch"], "title": "vdiwatch", "asDropdown": True,
                   "includeVars": True, "keepTime": True, "targetBlank": False, "icon": "external link",
                   "tooltip": "", "url": ""}],
        "templating": {"list": [datasource_variable(), *variables]},
        "panels": grid.panels,
    }


HOST_LINK = {"title": "Host drill-down", "targetBlank": False,
             "url": "/d/vdiwatch-host/vdiwatch-host?var-site=${__data.fields.site}"
                    "&var-delivery_group=${__data.fields.delivery_group}&var-host=${__value.raw}&${__url_time_range}"}

GROUP_URL = "/d/vdiwatch-group/vdiwatch-delivery-group?${{site:queryparam}}&var-delivery_group={}&${{__url_time_range}}"
GROUP_LINK = {"title": "Delivery group", "targetBlank": False,
              "url": GROUP_URL.format("${__field.labels.delivery_group}")}  # a bar: the series' label
GROUP_VALUE_LINK = {"title": "Delivery group", "targetBlank": False,
                    "url": GROUP_URL.format("${__value.raw}")}  # a table cell: its value

# ---------------------------------------------------------------------------
# Wall
# ---------------------------------------------------------------------------

WALL = ('site=~"$site"', 'delivery_group=~"$delivery_group"')

STATE_COLORS = {"active": "green", "disconnected": "purple", "idle": "yellow"}

# The wall reads recording rules and Prometheus' own series only (tests/grafana/test_dashboards.py checks it):
# the numbers the alerts read, each host's freshest copy, and cheap queries for a page refreshed every 30 s.
UP = sel("host:vdi_agent_up:max", *WALL)
REPORTING = f"({UP} == 1)"  # hosts whose agent reports now, maintenance included


def wall_sessions(*matchers: str, offset: str = "") -> str:
    """Sessions per site, group and state on the hosts that report now (a silent host's last numbers are
    history, not sessions): the recording rule site_delivery_group:vdi_sessions:sum."""
    return sel("site_delivery_group:vdi_sessions:sum", *WALL, *matchers, offset=offset)


def wall_rule(name: str, condition: str) -> str:
    """A per-host recording rule's hosts that meet `condition` and report now."""
    return f"{sel(name, *WALL)} {condition} and on (host) {REPORTING}"


# The problem hosts of the wall table: (label, colour, condition per host). A host that is silent
# shows only as silent (its readings are no longer served). Maintenance is planned work, not a problem.
PROBLEMS: Tuple[Tuple[str, str, str], ...] = (
    ("agent silent", "red", f"{UP} == 0"),
    ("not accepting logons", "orange",
     f"{sel('host:vdi_host_accepting_sessions:max', *WALL)} == 0 and on (host) "
     f"{wall_rule('host:vdi_host_maintenance:max', '== 0')}"),
    ("CPU over 90 %", "orange", wall_rule("host:vdi_host_cpu_utilization:ratio_rate5m", "> 0.9")),
    ("memory under 10 %", "orange", wall_rule("host:vdi_host_memory_available:ratio", "< 0.1")),
    ("disk under 5 %", "red", wall_rule("host:vdi_host_filesystem_avail:ratio", "< 0.05")),
)


# What the capacity alerts read (config/prometheus/rules/vdiwatch-recording.yml), so that the wall and the
# alerts cannot disagree; a delivery group spans sites, so only the group variable applies.
CAPACITY_RULE = 'delivery_group:vdi_capacity_used:ratio{delivery_group=~"$delivery_group"}'
CAPACITY_STEPS = ((None, "transparent"), (0.85, "orange"), (0.95, "red"))  # VdiDeliveryGroupCapacityHigh, ...Critical


# Free session slots per delivery group (each open host's maximum minus its sessions, never below 0, plus the
# slots of powered-off desktops power management can start; 0 when none is open): one recording rule, read by the
# wall and the delivery-group dashboard, so the two cannot disagree.
FREE_SLOTS_RULE = "delivery_group:vdi_session_slots_free:sum"


# The alert list: what Prometheus has firing now, pages first, then tickets, then any other severity; the
# Watchdog (always firing, severity none) and everything of severity none are left out.
ALERT_ORDER = ('severity="page"', 'severity="ticket"', 'severity!~"page|ticket|none"')
ALERT_SEVERITIES = (("page", "PAGE", "red"), ("ticket", "TICKET", "orange"), ("ok", "OK", "green"))
ALERT_COLUMNS = ("severity", "alertname", "where", "site")
# The place an alert names, most precise last: each label_replace below overwrites `where` when its label is set,
# so `where` is the host, else the collector's instance (a collector alert has no host), else the delivery group,
# else the site.
WHERE_LABELS = ("site", "delivery_group", "instance", "host")


def where(expr: str) -> str:
    """`expr` with a `where` label: the most precise place it names (WHERE_LABELS). "(.+)" does not match an
    empty or missing label, which leaves the series as it was. Grafana leaves "$1" alone: it is no variable."""
    for label in WHERE_LABELS:
        expr = f'label_replace({expr}, "where", "$1", "{label}", "(.+)")'
    return expr


def firing_alerts(severity: str) -> str:
    """Seconds since each firing alert of `severity` went active (ALERTS_FOR_STATE holds when it went
    pending), one row per alert name and place (the oldest instance), oldest first."""
    since = (f'time() - (ALERTS_FOR_STATE{{{severity}, alertname!="Watchdog"}} '
             f'and ignoring (alertstate) ALERTS{{alertstate="firing"}})')
    return f'sort_desc(max by ({", ".join(ALERT_COLUMNS)}) ({where(since)}))'


def alert_list() -> str:
    """The firing alerts in wall order; with nothing firing, one row that says so (so an empty answer is never
    mistaken for a working one). Prometheus keeps the order of sort_desc through `or` in an instant query."""
    nothing = labelled(labelled("vector(NaN)", "severity", "ok"), "alertname", "no alert firing")
    return " or ".join(firing_alerts(s) for s in ALERT_ORDER) + f" or on () {nothing}"


def user_experience_table() -> Panel:
    """What users feel, one row per delivery group: logon time, input delay and round-trip time at the 95th
    percentile, failed logons and dropped sessions in the last hour, each cell coloured by its bands."""
    by = "delivery_group"
    cells = (
        ("Logon p95 (30 min)", quantile(0.95, "vdi_logon_duration_seconds", WALL, "30m", by), "s", 0, LOGON_STEPS),
        ("Input delay p95 (5 min)", quantile(0.95, "vdi_session_input_delay_seconds", WALL, "5m", by), "s", 2,
         INPUT_DELAY_STEPS),
        ("Round trip p95 (10 min)", quantile(0.95, "vdi_session_rtt_seconds", WALL, "10m", by), "s", 2, RTT_STEPS),
        ("Failed logons (1 h)",
         f"sum by ({by}) ({fresh('vdi_logon_failures_total', WALL, '1h', fn='increase')})", "short", 0,
         ((None, "green"), (5, "orange"), (20, "red"))),
        ("Dropped sessions (1 h)",
         f"sum by ({by}) ({fresh('vdi_session_disconnect_reasons_total', WALL, '1h', [DROPPED], fn='increase')})",
         "short", 0, ((None, "green"), (3, "orange"), (10, "red"))),
    )
    values = [f"Value #{chr(ord('A') + i)}" for i in range(len(cells))]
    overrides = [by_name(title, ("unit", unit), ("decimals", decimals), ("thresholds", thresholds(*steps)),
                         ("color", {"mode": "thresholds"}),
                         ("custom.cellOptions", {"type": "color-background", "mode": "basic"}))
                 for title, _, unit, decimals, steps in cells]
    return table(
        "User experience per delivery group",
        "What users feel, per delivery group, over the windows the alerts use: logon time (from the profile load "
        "or session logon to the shell) at the 95th percentile over 30 minutes, input delay over 5 minutes and "
        "protocol round trip over 10 minutes at the 95th percentile, failed logons and sessions dropped by the "
        "network or the server in the last hour. Colours: logon orange from 60 s (the slow-logon ticket), red "
        "from 180 s (the page); input delay yellow from 150 ms (acceptable), orange from 500 ms (poor), red from "
        "2 s (bad); round trip yellow from 100 ms, orange from 300 ms (the round-trip ticket), red from 500 ms. "
        "An empty cell: nothing measured in the window (no logon, no session, or no counter on those hosts).",
        [target(expr, table=True) for _, expr, _, _, _ in cells],
        columns=["delivery_group", *values],
        rename={"delivery_group": "Delivery group", **{v: c[0] for v, c in zip(values, cells)}},
        merge=True, sort="Delivery group", big=True, no_value="no measurements",
        overrides=[*overrides, by_name("Delivery group", ("links", [GROUP_VALUE_LINK]))])


def wall() -> Dict[str, Any]:
    g = Grid()
    stats = []
    for state in ("active", "disconnected", "idle"):
        stats.append(stat(
            f"Sessions {state}", f"Sessions in state {state} on the hosts that report now, all protocols.",
            [target(f"sum({wall_sessions(is_('state', state))})", state, instant=True)],
            big=True, steps=fixed("blue"), decimals=0))  # a count, not a status: neutral
    stats.append(stat(
        "Hosts up / total",
        "up: hosts whose agent reports (maintenance included). total: every host that should report, i.e. "
        "all known hosts except those that shut down cleanly (powered-down pool desktops).",
        [target(f"sum({UP})", "up", instant=True), target(f"count({UP})", "total", instant=True)],
        big=True, text_mode="value_and_name", steps=fixed("blue"), decimals=0))
    stats.append(stat(
        "Stale agents", "Hosts whose agent missed 3 of its intervals without saying goodbye. Red above 0; "
        "the table below names them.",
        [target(f"count({UP} == 0) or vector(0)", "stale", instant=True)],
        big=True, steps=thresholds((None, "green"), (1, "red")), decimals=0))
    stats.append(stat(
        "Paging alerts", "Alerts of severity page firing now in Prometheus, all of vdiwatch (not filtered by "
        "site): tickets and the always-firing Watchdog are left out. Silences live in Alertmanager, which this "
        "panel cannot see: a silenced page still counts here.",
        [target('count(ALERTS{alertstate="firing", severity="page"}) or vector(0)', "paging", instant=True)],
        big=True, steps=thresholds((None, "green"), (1, "red")), decimals=0))
    g.add(5, *((4, s) for s in stats))

    alerts = table(
        "Firing alerts",
        "The alerts firing in Prometheus now, as the rules see them: pages (red) first, then tickets (amber), "
        "then any other severity; within each, the one active longest first. Left out: pending alerts (their "
        "for: has not passed), the always-firing Watchdog and everything of severity none. Where: the most precise "
        "place the alert names: its host, else the collector instance, else its delivery group, else its site. "
        "Site: the alert's site, to send someone there (empty for a collector alert). Since: how long the alert "
        "has been active, from when its condition began (ALERTS_FOR_STATE). One row per alert and place: two "
        "full disks of one host are one row. All of vdiwatch, not filtered by site or group. Silences and "
        "inhibitions live in Alertmanager, which Prometheus' ALERTS does not know: a silenced or inhibited alert "
        "is still listed here, though nobody was paged for it. When nothing fires, one row says so.",
        [target(alert_list(), table=True)], columns=[*ALERT_COLUMNS, "Value"],
        rename={"severity": "Severity", "alertname": "Alert", "where": "Where", "site": "Site", "Value": "Since"},
        big=True,
        overrides=[by_name("Severity", ("mappings", value_mappings(*ALERT_SEVERITIES)),
                           ("custom.cellOptions", {"type": "color-background", "mode": "basic"}),
                           ("custom.width", 130)),
                   by_name("Since", ("unit", "dtdurations"), ("custom.width", 230),
                           ("mappings", [{"type": "special", "options": {"match": "nan", "result": {
                               "text": "", "index": 0}}}]))])
    capacity = table(
        "Capacity used per delivery group",
        "Per delivery group: Used, the share of the open session slots in use, the recording rule "
        "delivery_group:vdi_capacity_used:ratio the capacity alerts read, with their colours: orange from 85 % "
        "(ticket), red from 95 % (page), neutral below. Free: the session slots free now, the recording rule "
        "delivery_group:vdi_session_slots_free:sum (on each open host its vdi_host_max_sessions minus its "
        "sessions, never below 0, plus the slots of powered-off desktops power management can start), as on the "
        "delivery-group dashboard; a count, neutral, red at 0 (the next user gets no desktop). "
        "A group with hosts that report capacity but none open shows Free 0 and no Used. Click a group for its "
        "dashboard.",
        [target(CAPACITY_RULE, table=True),
         target(sel(FREE_SLOTS_RULE, 'delivery_group=~"$delivery_group"'), table=True)],
        columns=["delivery_group", "Value #A", "Value #B"],
        rename={"delivery_group": "Delivery group", "Value #A": "Used", "Value #B": "Free slots"},
        merge=True, sort="Delivery group", big=True,
        overrides=[by_name("Used", ("unit", "percentunit"), ("decimals", 0), ("thresholds", thresholds(
                       *CAPACITY_STEPS)), ("color", {"mode": "thresholds"}),
                           ("custom.cellOptions", {"type": "color-background", "mode": "basic"})),
                   by_name("Free slots", ("unit", "short"), ("decimals", 0),
                           ("thresholds", thresholds((None, "red"), (1, "transparent"))),
                           ("color", {"mode": "thresholds"}),
                           ("custom.cellOptions", {"type": "color-background", "mode": "basic"})),
                   by_name("Delivery group", ("links", [GROUP_VALUE_LINK]))])
    g.add(10, (14, alerts), (10, capacity))

    g.add(8, (24, user_experience_table()))

    states = 'state=~"active|idle|disconnected"'
    overrides = [by_name(f"/^{s}/", ("color", color(c)), regex=True) for s, c in STATE_COLORS.items()]
    overrides.append(by_name("/last week/", ("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}),
                             ("custom.lineWidth", 2), ("custom.fillOpacity", 0), regex=True))
    sessions = timeseries(
        "Sessions by state, today and a week ago",
        "Sessions on the hosts that report, by state; dashed: the same time on the same weekday a week ago "
        "(offset 7d), so a Monday is compared with a Monday, not a Sunday.",
        [target(f"sum by (state) ({wall_sessions(states)})", "{{state}}"),
         target(f"sum by (state) ({wall_sessions(states, offset='7d')})",
                "{{state}} last week")],
        width=4, decimals=0, overrides=overrides)
    problems = " or ".join(labelled(f"({cond})", "problem", name) for name, _, cond in PROBLEMS)
    problem_colors = value_mappings(*((name, name, c) for name, c, _ in PROBLEMS))
    hosts = table(
        "Problem hosts",
        "Not alerts: hosts that need a look right now, by instant conditions that come and go with every "
        "refresh (an alert waits 15 minutes or more before it fires): agent silent (stale), not accepting "
        "logons while not in maintenance, CPU busy over 90 % (5m), memory available under 10 %, a filesystem "
        "under 5 % free. Hosts in maintenance are planned work and not listed. Click a host for its drill-down. "
        "What pages is the Firing alerts list.",
        [target(problems, table=True)], columns=["problem", "host", "delivery_group", "site"],
        sort="problem",  # no renaming: the host link reads the fields site and delivery_group by name
        overrides=[by_name("problem", ("mappings", problem_colors),
                           ("custom.cellOptions", {"type": "color-text"})),
                   by_name("host", ("links", [HOST_LINK]))],
        no_value="no problem hosts")
    g.add(5, (14, sessions), (10, hosts))
    return dashboard("vdiwatch-wall", "vdiwatch wall",
                     "The ops room wall display: sessions, hosts, what is firing, capacity and free slots at a glance.",
                     g, site_group_variables(), refresh="30s", time_from="now-24h")


# ---------------------------------------------------------------------------
# Host drill-down
# ---------------------------------------------------------------------------

HOST = ('host="$host"',)
RATE = "$__rate_interval"
HOST_STATE_CODES = (("up", 1, "green"), ("maintenance", 2, "blue"), ("stale", 3, "red"), ("stopped", 4, "text"))


def sessions_by_state(description: str, query: str) -> Dict[str, Any]:
    """The stacked "Sessions by state" chart of the host and the group dashboards, states in their colours."""
    return timeseries("Sessions by state", description, [target(query, "{{state}}")], stack=True, fill=40,
                      decimals=0, overrides=[by_name(s, ("color", color(c))) for s, c in STATE_COLORS.items()])


def host() -> Dict[str, Any]:
    g = Grid()
    g.section("Host and agent")
    state = " + ".join(f"max({gauge('vdi_host_state', HOST, extra=[is_('state', s)])}) * {code}"
                       for s, code, _ in HOST_STATE_CODES)
    g.add(4,
          (4, stat("State", "The collector's view: up, maintenance, stale (silent without goodbye) or "
                   "stopped (said goodbye).",
                   [target(state, "state", instant=True)],
                   mappings=value_mappings(*((str(code), s, c) for s, code, c in HOST_STATE_CODES)))),
          (4, stat("Accepting logons", "1 when the host takes new logons; 0 when drained.",
                   [target(gauge("vdi_host_accepting_sessions", HOST), "accepting", instant=True)],
                   mappings=value_mappings(("1", "yes", "green"), ("0", "drained", "orange")))),
          (4, stat("Report age", "Seconds since the collector received the host's last report "
                   "(time() - vdi_agent_last_report_timestamp_seconds). Orange from 30 s, red from 45 s: "
                   "2 and 3 intervals at the default 15 s.",
                   [target(f"time() - {gauge('vdi_agent_last_report_timestamp_seconds', HOST)}", "age",
                           instant=True)],
                   unit="s", decimals=0, steps=thresholds((None, "green"), (30, "orange"), (45, "red")))),
          (4, stat("Clock skew", "Agent clock minus collector clock (positive: the agent is ahead). Orange "
                   "beyond 10 s, red beyond 60 s (the clock-skew alert).",
                   [target(gauge("vdi_agent_clock_skew_seconds", HOST), "skew", instant=True)],
                   unit="s", decimals=1, steps=thresholds((None, "red"), (-60, "orange"), (-10, "green"),
                                                          (10, "orange"), (60, "red")))),
          (4, stat("Uptime", "Since the host booted.",
                   [target(f"time() - {gauge('vdi_host_boot_time_seconds', HOST)}", "uptime", instant=True)],
                   unit="s", steps=fixed("blue"))),
          (4, stat("Agent", "Agent version and operating system (vdi_agent_info).",
                   [target(gauge("vdi_agent_info", HOST, "version", "os", "os_release"),
                           "{{version}} on {{os}} {{os_release}}", instant=True)],
                   text_mode="name", steps=fixed("blue"))))
    g.add(4, (24, panel(
        "state-timeline", "State over time", "The collector's view of the host over the time range: up, "
        "maintenance, stale (silent without goodbye) or stopped (said goodbye), from the same recording rule "
        "as the alerts (host:vdi_host_state:max). A gap is a time Prometheus has no sample for.",
        [target(" + ".join(f"max({sel('host:vdi_host_state:max', *HOST, is_('state', s))}) * {code}"
                           for s, code, _ in HOST_STATE_CODES), "state")],
        mappings=value_mappings(*((str(code), s, c) for s, code, c in HOST_STATE_CODES)),
        custom={"fillOpacity": 80, "lineWidth": 0},
        options={"showValue": "never", "mergeValues": True, "rowHeight": 0.9, "alignValue": "left",
                 "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
                 "tooltip": {"mode": "single", "sort": "none"}})))
    g.add(3, (24, stat(
        "Agent collectors", "Per agent collector (cpu, memory, sessions...): OK when it succeeded in the last "
        "report, FAILED when not (its readings are then missing).",
        [target(gauge("vdi_agent_collector_success", HOST, "collector"), "{{collector}}", instant=True)],
        text_mode="value_and_name", mappings=value_mappings(("1", "OK", "green"), ("0", "FAILED", "red")))))

    g.section("Resources")
    cpus = gauge("vdi_host_cpus", HOST)
    busy_modes = rate("vdi_host_cpu_seconds_total", HOST, RATE, "mode", extra=['mode!="idle"'])
    g.add(8,
          (12, timeseries(
              "CPU by mode", "Share of all CPUs per mode, idle left out: rate of vdi_host_cpu_seconds_total "
              "divided by the CPU count.",
              [target(f"sum by (mode) ({busy_modes} / on (host, site, delivery_group) group_left () {cpus})",
                      "{{mode}}")],
              stack=True, fill=40, unit="percentunit", min_value=0, max_value=1)),
          (12, timeseries(
              "Load average", "1, 5 and 15-minute load with the CPU count for scale (on Windows psutil's "
              "emulation from the processor queue).",
              [target(gauge("vdi_host_load1", HOST), "load1"), target(gauge("vdi_host_load5", HOST), "load5"),
               target(gauge("vdi_host_load15", HOST), "load15"), target(cpus, "CPUs")],
              overrides=[by_name("CPUs", ("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}),
                                 ("color", color("red")), ("custom.fillOpacity", 0))])))
    g.add(8,
          (12, timeseries(
              "Memory", "Physical memory, memory available to new processes, swap/page file in use.",
              [target(gauge("vdi_host_memory_total_bytes", HOST), "total"),
               target(gauge("vdi_host_memory_available_bytes", HOST), "available"),
               target(gauge("vdi_host_swap_used_bytes", HOST), "swap used"),
               target(gauge("vdi_host_swap_total_bytes", HOST), "swap total")],
              unit="bytes", overrides=[by_name("total", ("custom.fillOpacity", 0), ("color", color("red")))])),
          (12, bargauge(
              "Filesystems: space available", "Space available to unprivileged users as a share of the size, "
              "per mount point. Red under 10 %, orange under 25 %.",
              [target(f"{gauge('vdi_host_filesystem_avail_bytes', HOST, 'mountpoint', 'fstype')} / "
                      f"{gauge('vdi_host_filesystem_size_bytes', HOST, 'mountpoint', 'fstype')}",
                      "{{mountpoint}} ({{fstype}})", instant=True)],
              unit="percentunit", min_value=0, max_value=1,
              steps=thresholds((None, "red"), (0.1, "orange"), (0.25, "green")))))
    g.add(8,
          (12, timeseries(
              "Disk throughput", "Bytes read and written per second, per device.",
              [target(f"sum by (device) ({rate('vdi_host_disk_read_bytes_total', HOST, RATE, 'device')})",
                      "{{device}} read"),
               target(f"sum by (device) ({rate('vdi_host_disk_written_bytes_total', HOST, RATE, 'device')})",
                      "{{device}} written"),
               ], unit="Bps")),
          (12, timeseries(
              "Disk operations and busy time", "Read and write operations per second, and the share of time "
              "the device was busy (right axis).",
              [target(f"sum by (device) ({rate('vdi_host_disk_reads_completed_total', HOST, RATE, 'device')})",
                      "{{device}} reads"),
               target(f"sum by (device) ({rate('vdi_host_disk_writes_completed_total', HOST, RATE, 'device')})",
                      "{{device}} writes"),
               target(f"sum by (device) ({rate('vdi_host_disk_io_time_seconds_total', HOST, RATE, 'device')})",
                      "{{device}} busy")],
              unit="iops", overrides=[by_name("/busy/", ("unit", "percentunit"), ("custom.axisPlacement", "right"),
                                              regex=True)])))
    net = "interface"
    g.add(8,
          (12, timeseries(
              "Network throughput", "Bytes received and sent per second, per interface (loopback not reported).",
              [target(f"sum by ({net}) ({rate('vdi_host_network_receive_bytes_total', HOST, RATE, net)})",
                      "{{interface}} received"),
               target(f"sum by ({net}) ({rate('vdi_host_network_transmit_bytes_total', HOST, RATE, net)})",
                      "{{interface}} sent")], unit="Bps")),
          (12, timeseries(
              "Network packets, errors and drops", "Packets per second, and errors and drops per second "
              "(should stay at 0).",
              [target(f"sum by ({net}) ({rate(f'vdi_host_network_{d}_packets_total', HOST, RATE, net)})",
                      f"{{{{interface}}}} {d} packets") for d in ("receive", "transmit")]
              + [target(f"sum by ({net}) ({rate(f'vdi_host_network_{d}_{k}_total', HOST, RATE, net)})",
                        f"{{{{interface}}}} {d} {k}") for d in ("receive", "transmit") for k in ("errs", "drop")],
              unit="pps", overrides=[by_name("/errs|drop/", ("color", color("red")), regex=True)])))

    g.section("Sessions")
    g.add(8,
          (8, sessions_by_state("Sessions by state, all protocols.",
                                f"sum by (state) ({host_sessions(HOST, 'state')})")),
          (8, timeseries(
              "Sessions by protocol", "Sessions by protocol (ica, rdp, console, ssh, other), all states.",
              [target(f"sum by (protocol) ({host_sessions(HOST, 'protocol')})", "{{protocol}}")],
              stack=True, fill=40, decimals=0)),
          (8, timeseries(
              "Logons, logoffs, disconnects, reconnects",
              "Lifecycle events per interval: increase of the agent's counters over the panel's interval "
              "(at least 5 minutes). An agent restart is a counter reset, not a drop.",
              [target(f"sum({rate(f'vdi_session_{k}_total', HOST, '$__interval', fn='increase')})", k)
               for k in ("logons", "logoffs", "disconnects", "reconnects")],
              bars=True, decimals=0, interval="5m")))
    g.add(8,
          (4, stat("Users", "Distinct users with a session.",
                   [target(gauge("vdi_session_users", HOST), "users", instant=True)], steps=fixed("blue"),
                   decimals=0)),
          (4, stat("Longest disconnected", "How long the longest-disconnected session has been disconnected; "
                   "empty when none is. Orange after 4 h, red after 24 h.",
                   [target(f"time() - {gauge('vdi_session_oldest_disconnect_timestamp_seconds', HOST)}",
                           "disconnected for", instant=True)],
                   unit="s", no_value="none", steps=thresholds((None, "green"), (4 * 3600, "orange"),
                                                               (86400, "red")))),
          (8, timeseries(
              "CPU: session processes vs system", "CPU cores used by processes in user sessions (user) and "
              "outside them (system: services, antivirus, updates).",
              [target(f"sum by (class) ({rate('vdi_session_process_cpu_seconds_total', HOST, RATE, 'class')})",
                      "{{class}}")], stack=True, fill=40, unit="short")),
          (8, timeseries(
              "Memory: session processes vs system", "Resident memory of processes in user sessions and "
              "outside them, and their number (right axis).",
              [target(f"sum by (class) ({gauge('vdi_session_process_memory_bytes', HOST, 'class')})",
                      "{{class}} memory"),
               target(f"sum by (class) ({gauge('vdi_session_processes', HOST, 'class')})", "{{class}} processes")],
              unit="bytes", overrides=[by_name("/processes/", ("unit", "short"), ("custom.axisPlacement", "right"),
                                               regex=True)])))
    top = ("Appears only when per-user series are enabled (agent `per_user_top` > 0); `user` is a pseudonym "
           "unless the operator opted in to plain names.")
    g.add(8,
          (12, bargauge(
              "Top users by CPU", "The 10 users using the most CPU cores over the agent's last interval. " + top,
              [target(f"topk(10, {gauge('vdi_user_cpu_cores', HOST, 'user')})", "{{user}}", instant=True)],
              unit="short", decimals=2, color_mode="continuous-BlYlRd")),
          (12, bargauge(
              "Top users by memory", "The 10 users with the most resident memory. " + top,
              [target(f"topk(10, {gauge('vdi_user_memory_bytes', HOST, 'user')})", "{{user}}", instant=True)],
              unit="bytes", color_mode="continuous-BlYlRd")))
    g.section("Logons")
    g.add(8,
          (8, timeseries(
              "Logon duration", "50th and 95th percentile of the host's logons over the last hour, from the "
              "profile load or session logon (whichever came first) to the shell start. Lines at 60 s and 180 s "
              "(the slow-logon alerts).",
              [target(quantile(q, "vdi_logon_duration_seconds", HOST, "1h", "host"), f"p{round(q * 100)}")
               for q in (0.5, 0.95)],
              unit="s", decimals=0, steps=thresholds(*LOGON_STEPS), threshold_style="dashed")),
          (8, timeseries(
              "Logon phases", "Average seconds per logon in each phase over the last hour, stacked: profile "
              "(profile load), group_policy (user policy), shell (to the desktop), other (the rest). Where the "
              "time goes when logons are slow; brokering and VM start are the Delivery Controller's and not "
              "seen here.",
              [target(phase_average(HOST, "1h"), "{{phase}}")],
              stack=True, fill=40, unit="s", decimals=1)),
          (8, timeseries(
              "Failed logons and dropped sessions", "Failed logons by reason (Security 4625) and disconnects "
              "by reason (event 40) per interval (bars, at least 5 minutes each).",
              [target(f"sum by (reason) ({fresh('vdi_logon_failures_total', HOST, '$__interval', fn='increase')})",
                      "failed: {{reason}}"),
               target(f"sum by (reason) "
                      f"({fresh('vdi_session_disconnect_reasons_total', HOST, '$__interval', fn='increase')})",
                      "disconnect: {{reason}}")],
              bars=True, decimals=0, interval="5m")))

    g.section("User experience")
    g.add(8,
          (8, timeseries(
              "Input delay", "50th and 95th percentile of the sessions' input delay (one reading per session "
              "per agent interval, over 15 minutes). Bands: good under 150 ms, acceptable to 500 ms, poor to "
              "2 s, bad above.",
              [target(quantile(q, "vdi_session_input_delay_seconds", HOST, "15m", "host"), f"p{round(q * 100)}")
               for q in (0.5, 0.95)],
              unit="s", steps=thresholds(*INPUT_DELAY_STEPS), threshold_style="area")),
          (8, timeseries(
              "Round-trip time", "95th percentile of the protocol round-trip time per protocol (ICA latency, "
              "RDP TCP/UDP RTT; one reading per session per interval, over 15 minutes).",
              [target(quantile(0.95, "vdi_session_rtt_seconds", HOST, "15m", "host", "protocol"),
                      "{{protocol}} p95")],
              unit="s", steps=thresholds(*RTT_STEPS), threshold_style="dashed")),
          (8, timeseries(
              "Protocol traffic", "Bytes per second the display protocols received from and sent to clients.",
              [target(f"sum by (protocol, direction) "
                      f"({rate('vdi_session_traffic_bytes_total', HOST, RATE, 'protocol', 'direction')})",
                      "{{protocol}} {{direction}}")], unit="Bps")))
    g.add(8,
          (12, bargauge(
              "Top applications by CPU", "CPU cores used by each application's processes in user sessions over "
              "the last 5 minutes: the agent's allowlist and top applications, the rest as other.",
              [target(f"topk(10, sum by (app) ({fresh('vdi_app_cpu_seconds_total', HOST, '5m')}))", "{{app}}",
                      instant=True)],
              unit="short", decimals=2, color_mode="continuous-BlYlRd")),
          (12, bargauge(
              "Top applications by memory", "Resident memory of each application's processes in user sessions, "
              "and in how many sessions it runs (the panel's legend).",
              [target(f"topk(10, sum by (app) ({gauge('vdi_app_memory_bytes', HOST, 'app')}))", "{{app}}",
                      instant=True)],
              unit="bytes", color_mode="continuous-BlYlRd")))
    variables = site_group_variables()
    variables.append(query_variable("host", "Host", HOST_VAR, all_=False, multi=False))
    return dashboard("vdiwatch-host", "vdiwatch host",
                     "One host in depth: resources, sessions, per-user use and agent health.",
                     g, variables, refresh="1m", time_from="now-6h")


# ---------------------------------------------------------------------------
# Delivery group
# ---------------------------------------------------------------------------

GROUP = ('site=~"$site"', 'delivery_group="$delivery_group"')


def rule(name: str, m: Sequence[str] = GROUP) -> str:
    """A recording rule's series for the dashboard's selection: what the alerts read, so the panel agrees."""
    return sel(name, *m)


def group() -> Dict[str, Any]:
    """One delivery group as on-call sees it when an alert names it: everything from the recording rules."""
    g = Grid()
    open_hosts_now = f"count({rule('host:vdi_host_accepting_sessions:healthy')} == 1) or vector(0)"
    free = f"sum({rule(FREE_SLOTS_RULE, GROUP[1:])}) or vector(0)"  # a group spans sites: no site filter
    g.add(5,
          (4, stat("Open hosts", "Hosts of the group open for logons now: reporting, accepting, not in maintenance.",
                   [target(open_hosts_now, "open", instant=True)], big=True, decimals=0,
                   steps=thresholds((None, "red"), (1, "blue")))),
          (4, stat("Free slots", "Session slots free for the next users, the number the wall shows "
                   "(delivery_group:vdi_session_slots_free:sum): on each open host its vdi_host_max_sessions minus "
                   "its sessions, never below 0, plus the slots of powered-off desktops power management can start "
                   "(vdiwatch-broker). All sites of the group. Red at 0: the next user gets no desktop.",
                   [target(free, "free", instant=True)], big=True, decimals=0,
                   steps=thresholds((None, "red"), (1, "blue")))),
          (4, stat("Capacity used", "delivery_group:vdi_capacity_used:ratio, as the capacity alerts read it. Orange "
                   "from 85 %, red from 95 %; empty when no host is open.",
                   [target(CAPACITY_RULE, "used", instant=True)], big=True, unit="percentunit", decimals=0,
                   steps=thresholds((None, "green"), (0.85, "orange"), (0.95, "red")))),
          (4, stat("Logon p95 (30 min)", "The slowest site's 95th percentile of logon time over 30 minutes, as "
                   "VdiDeliveryGroupLogonSlow reads it: orange from 60 s, red from 180 s.",
                   [target(f"max({rule('site_delivery_group:vdi_logon_duration_seconds:p95_rate30m')})", "p95",
                           instant=True)], big=True, unit="s", decimals=0, steps=thresholds(*LOGON_STEPS),
                   no_value="no logons")),
          (4, stat("Input delay poor (1 h)", "Share of session-intervals with input delay over 0.5 s in the last "
                   "hour (the input-delay SLO's error ratio; the budget is 1 %): orange from 1 %, red from 14.4 % "
                   "(the fast-burn page).",
                   [target(rule("delivery_group:vdi_session_input_delay_poor:ratio_rate1h", GROUP[1:]), "poor",
                           instant=True)], big=True, unit="percentunit", decimals=1,
                   steps=thresholds((None, "green"), (0.01, "orange"), (0.144, "red")), no_value="no sessions")),
          (4, stat("Paging alerts", "Alerts of severity page firing for this delivery group now.",
                   [target('count(ALERTS{alertstate="firing", severity="page", '
                           'delivery_group="$delivery_group"}) or vector(0)', "paging", instant=True)],
                   big=True, decimals=0, steps=thresholds((None, "green"), (1, "red")))))
    hosts = [
        ("Sessions", f"sum without (state) ({rule('host:vdi_sessions:sum')})", "short", 0),
        ("Max sessions", rule("host:vdi_host_max_sessions:max"), "short", 0),
        ("Open", rule("host:vdi_host_accepting_sessions:healthy"), "short", 0),
        ("CPU (5 min)", rule("host:vdi_host_cpu_utilization:ratio_rate5m"), "percentunit", 0),
        ("Memory available", rule("host:vdi_host_memory_available:ratio"), "percentunit", 0),
    ]
    values = [f"Value #{chr(ord('A') + i)}" for i in range(len(hosts) + 1)]
    state = f"{rule('host:vdi_host_state:max')} == 1"
    g.add(9, (24, table(
        "Hosts", "Every host of the group with its state (up, stale, stopped, maintenance), sessions and slots, "
        "whether it is open for logons (1), CPU busy over 5 minutes and memory available. A silent host has "
        "only its state. Click a host for its drill-down.",
        [target(state, table=True)] + [target(q, table=True) for _, q, _, _ in hosts],
        columns=["host", "site", "state", *values[1:]],
        rename={"host": "Host", "site": "Site", "state": "State",
                **{v: h[0] for v, h in zip(values[1:], hosts)}},
        merge=True, sort="Host",
        overrides=[by_name("Host", ("links", [HOST_LINK])),
                   by_name("State", ("mappings", value_mappings(*((s, s, c) for s, _, c in HOST_STATE_CODES))),
                           ("custom.cellOptions", {"type": "color-text"}))]
        + [by_name(h[0], ("unit", h[2]), ("decimals", h[3])) for h in hosts])))
    g.section("Logons")
    g.add(8,
          (8, timeseries(
              "Logon duration", "50th and 95th percentile of logon time per site over 30 minutes (the recording "
              "rules the slow-logon alerts read). Lines at 60 s and 180 s.",
              [target(rule(f"site_delivery_group:vdi_logon_duration_seconds:p{q}_rate30m"), f"{{{{site}}}} p{q}")
               for q in (50, 95)],
              unit="s", decimals=0, steps=thresholds(*LOGON_STEPS), threshold_style="dashed")),
          (8, timeseries(
              "Logon phases", "Average seconds per logon in each phase over 30 minutes: profile first for a slow "
              "profile share or FSLogix, group_policy for policies and domain controllers, shell for logon "
              "scripts and the desktop.",
              [target(f"avg by (phase) ({rule('site_delivery_group:vdi_logon_phase_seconds:avg_rate30m')})",
                      "{{phase}}")], stack=True, fill=40, unit="s", decimals=1)),
          (8, timeseries(
              "Failed logons", "Share of logon attempts that failed over 15 minutes per site (the failed-logon "
              "page fires above 20 %), and failures per minute by reason (right axis).",
              [target(rule("site_delivery_group:vdi_logon_failures:ratio_rate15m"), "{{site}} failed share"),
               target(f"sum by (reason) ({rule('site_delivery_group:vdi_logon_failures:rate15m')}) * 60",
                      "{{reason}} per minute")],
              unit="percentunit", overrides=[by_name("/per minute/", ("unit", "short"),
                                                     ("custom.axisPlacement", "right"), regex=True)])))
    g.section("User experience")
    g.add(8,
          (8, timeseries(
              "Input delay", "95th percentile of input delay over 5 minutes, on the bands: good under 150 ms, "
              "acceptable to 500 ms, poor to 2 s.",
              [target(rule("delivery_group:vdi_session_input_delay_seconds:p95_rate5m", GROUP[1:]), "p95")],
              unit="s", steps=thresholds(*INPUT_DELAY_STEPS), threshold_style="area")),
          (8, timeseries(
              "Round-trip time", "95th percentile of the protocol round trip per protocol over 10 minutes; line "
              "at 300 ms (the round-trip ticket).",
              [target(rule("delivery_group:vdi_session_rtt_seconds:p95_rate10m", GROUP[1:]), "{{protocol}} p95")],
              unit="s", steps=thresholds(*RTT_STEPS), threshold_style="dashed")),
          (8, timeseries(
              "Disconnects by reason", "Session disconnects per minute by reason over 5 minutes (event 40): "
              "network and server are the ones users did not choose.",
              [target(f"sum by (reason) ({rule('site_delivery_group:vdi_session_disconnect_reasons:rate5m')}) "
                      "* 60", "{{reason}}")], stack=True, fill=40, decimals=1)))
    g.section("Sessions and applications")
    g.add(8,
          (12, sessions_by_state("Sessions of the group by state (the hosts that report).",
                                 f"sum by (state) ({rule('site_delivery_group:vdi_sessions:sum')})")),
          (12, bargauge(
              "Top applications by CPU", "CPU cores used by each application in the group's user sessions over "
              "5 minutes (the agents' allowlist and top applications; the rest as other).",
              [target(f"topk(10, sum by (app) ({fresh('vdi_app_cpu_seconds_total', GROUP, '5m')}))", "{{app}}",
                      instant=True)], unit="short", decimals=2, color_mode="continuous-BlYlRd")))
    variables = [query_variable("site", "Site", SITE_VAR),
                 query_variable("delivery_group", "Delivery group", GROUP_VAR, all_=False, multi=False)]
    return dashboard("vdiwatch-group", "vdiwatch delivery group",
                     "One delivery group as the alerts see it: open hosts, free slots, logons, user experience, "
                     "hosts.", g, variables, refresh="1m", time_from="now-6h")


# ---------------------------------------------------------------------------
# Capacity
# ---------------------------------------------------------------------------

CAP = WALL
RESERVE = 1.2  # plan for the peak plus 20 %


def group_sessions(m: Sequence[str]) -> str:
    """Sessions per delivery group on the hosts that report, from the recording rule: a subquery over it costs
    samples per group and state, not per host, so a 14-day view does not grow with the farm."""
    return f"sum by (delivery_group) ({sel('site_delivery_group:vdi_sessions:sum', *m)})"


def capacity() -> Dict[str, Any]:
    g = Grid()
    peak_day = f"max_over_time({group_sessions(CAP)}[1d:{SUBQUERY_STEP}])"
    g.add(9,
          (12, timeseries(
              "Peak concurrent sessions per day",
              "Per delivery group, the most sessions at any one time in the day before each bar "
              f"(max_over_time of a subquery at {SUBQUERY_STEP} resolution), on hosts that reported.",
              [target(peak_day, "{{delivery_group}}")], bars=True, decimals=0, interval="1d",
              legend_calcs=["max"])),
          (12, timeseries(
              "Logons per hour", "Sessions that appeared per hour, per delivery group (increase of "
              "vdi_session_logons_total over 1 h).",
              [target(f"sum by (delivery_group) ({fresh('vdi_session_logons_total', CAP, '1h', fn='increase')})",
                      "{{delivery_group}}")], bars=True, decimals=0, interval="1h", legend_calcs=["max"])))
    slots = gauge("vdi_host_max_sessions", CAP)
    headroom = f'{FREE_SLOTS_RULE}{{delivery_group=~"$delivery_group"}}'
    g.add(9,
          (12, timeseries(
              "Headroom: free session slots", "Per delivery group, all its sites, the free slots the wall and the "
              "group dashboard show (delivery_group:vdi_session_slots_free:sum): on each host open for logons "
              "(reporting, accepting, not in maintenance) vdi_host_max_sessions minus its sessions, never below "
              "0, plus the slots of powered-off desktops power management can start (vdiwatch-broker). Hosts "
              "without a configured maximum do not count. Red at 0.",
              [target(headroom, "{{delivery_group}}")], decimals=0, legend_calcs=["min", "lastNotNull"],
              steps=thresholds((None, "red"), (1, "transparent")), threshold_style="area")),
          (12, timeseries(
              "Capacity used", "Sessions on open hosts over their slots, per delivery group (as on the wall). "
              "Lines at 85 % and 95 %.",
              [target(CAPACITY_RULE, "{{delivery_group}}")], unit="percentunit", min_value=0,
              max_value=1, steps=thresholds((None, "transparent"), (0.85, "orange"), (0.95, "red")),
              threshold_style="dashed")))
    peak = f"max_over_time({group_sessions(CAP)}[$__range:{SUBQUERY_STEP}])"
    avg_slots = f"avg by (delivery_group) ({slots})"
    hosts = f"count by (delivery_group) ({slots})"
    needed = f"ceil({peak} * {RESERVE} / {avg_slots})"
    g.add(9, (24, table(
        "Sizing: hosts needed at the peak with a 20 % reserve",
        "Per delivery group over the selected time range: the peak of concurrent sessions, the hosts with a "
        "configured maximum that report or shut down cleanly (a silent host gives no capacity), their average "
        "vdi_host_max_sessions, the hosts needed "
        f"= ceil(peak x {RESERVE} / average maximum), and the spare hosts (known minus needed; red below 0).",
        [target(peak, table=True), target(hosts, table=True), target(avg_slots, table=True),
         target(needed, table=True), target(f"{hosts} - {needed}", table=True)],
        columns=["delivery_group", "Value #A", "Value #B", "Value #C", "Value #D", "Value #E"],
        rename={"delivery_group": "Delivery group", "Value #A": "Peak sessions", "Value #B": "Hosts",
                "Value #C": "Average max sessions per host", "Value #D": "Hosts needed (peak + 20 %)",
                "Value #E": "Spare hosts"},
        merge=True, sort="Delivery group", decimals=0,
        overrides=[by_name("Average max sessions per host", ("decimals", 1)),
                   by_name("Spare hosts", ("custom.cellOptions", {"type": "color-background", "mode": "basic"}),
                           ("thresholds", thresholds((None, "red"), (0, "green"))),
                           ("color", {"mode": "thresholds"}))])))
    return dashboard("vdiwatch-capacity", "vdiwatch capacity",
                     "Capacity planning: daily peaks, logon rates, headroom and hosts needed per delivery group.",
                     g, site_group_variables(), refresh="5m", time_from="now-14d")


# ---------------------------------------------------------------------------
# Collector
# ---------------------------------------------------------------------------

COLL = (f'job="{COLLECTOR_JOB}"', 'instance=~"$instance"')


def collector() -> Dict[str, Any]:
    g = Grid()
    c = ", ".join(COLL)
    g.add(5,
          (4, stat("Collector replicas", "Prometheus' scrape of each replica: UP or DOWN (up).",
                   [target(f"up{{{c}}}", "{{instance}}", instant=True)], text_mode="value_and_name",
                   mappings=value_mappings(("1", "UP", "green"), ("0", "DOWN", "red")))),
          (4, stat("Reports per second", "Reports stored per second, all replicas (5m rate).",
                   [target(f"sum(rate(vdi_collector_reports_accepted_total{{{c}}}[5m]))", "accepted",
                           instant=True)], decimals=1, steps=fixed("blue"))),
          (4, stat("Rejected per second", "Reports refused per second, all replicas and reasons (5m rate). "
                   "Orange above 0.",
                   [target(f"sum(rate(vdi_collector_reports_rejected_total{{{c}}}[5m]))", "rejected",
                           instant=True)], decimals=2, steps=thresholds((None, "green"), (0.001, "orange")))),
          (4, stat("Hosts known", "Hosts a replica holds, by state, summed over replicas: a host that failed "
                   "over counts on both until the old copy expires.",
                   [target(f"sum by (state) (vdi_collector_hosts{{{c}}})", "{{state}}", instant=True)],
                   text_mode="value_and_name", steps=fixed("blue"), decimals=0)),
          (4, stat("Snapshot age", "Seconds since each replica last wrote its host snapshot. Empty when no "
                   "snapshot_file is configured. Orange from 2 min, red from 5 min (default interval 30 s).",
                   [target(f"time() - (vdi_collector_snapshot_last_success_timestamp_seconds{{{c}}} > 0)",
                           "{{instance}}", instant=True)],
                   unit="s", decimals=0, no_value="no snapshots",
                   steps=thresholds((None, "green"), (120, "orange"), (300, "red")))),
          (4, stat("Snapshot failures (1 h)", "Snapshot writes that failed in the last hour, all replicas "
                   "(disk full, permissions: the collector's log says which). Red above 0.",
                   [target(f"sum(increase(vdi_collector_snapshot_failures_total{{{c}}}[1h]))", "failures",
                           instant=True)],
                   decimals=0, steps=thresholds((None, "green"), (1, "red")))))
    g.add(8,
          (12, timeseries(
              "Ingest rate", "Reports stored per second, per replica (rate over 5m).",
              [target(f"sum by (instance) (rate(vdi_collector_reports_accepted_total{{{c}}}[5m]))",
                      "{{instance}}")], unit="reqps")),
          (12, timeseries(
              "Rejections by reason", "Reports refused per second, by reason (see docs/report-format.md); only "
              "reasons that occurred are shown.",
              [target(f"sum by (reason) (rate(vdi_collector_reports_rejected_total{{{c}}}[5m])) > 0",
                      "{{reason}}")], unit="reqps", no_value="no rejections")))
    g.add(8,
          (12, timeseries(
              "Hosts by state", "Hosts each replica holds, by liveness state (vdi_collector_hosts).",
              [target(f"vdi_collector_hosts{{{c}}}", "{{state}} on {{instance}}")], decimals=0)),
          (12, timeseries(
              "Scrape duration", "Time the collector took to render /metrics (vdi_collector_scrape_duration_seconds)"
              " and the whole scrape as Prometheus timed it (scrape_duration_seconds).",
              [target(f"vdi_collector_scrape_duration_seconds{{{c}}}", "render {{instance}}"),
               target(f"scrape_duration_seconds{{{c}}}", "scrape {{instance}}")], unit="s")))
    g.add(8,
          (12, timeseries(
              "Report processing time", "99th and 50th percentile of the time to read, check and store one "
              "report (vdi_collector_report_duration_seconds, 5m rate).",
              [target(f"histogram_quantile({q}, sum by (le, instance) "
                      f"(rate(vdi_collector_report_duration_seconds_bucket{{{c}}}[5m])))",
                      f"p{round(q * 100)} {{{{instance}}}}") for q in (0.99, 0.5)], unit="s")),
          (12, timeseries(
              "Collector process", "Resident memory and CPU (cores, right axis) of each collector process.",
              [target(f"process_resident_memory_bytes{{{c}}}", "memory {{instance}}"),
               target(f"rate(process_cpu_seconds_total{{{c}}}[5m])", "CPU {{instance}}")],
              unit="bytes", overrides=[by_name("/CPU/", ("unit", "short"), ("custom.axisPlacement", "right"),
                                               regex=True)])))
    variables = [query_variable("instance", "Collector", f'label_values(up{{job="{COLLECTOR_JOB}"}}, instance)')]
    return dashboard("vdiwatch-collector", "vdiwatch collector",
                     "The collector replicas themselves: ingest, rejections, hosts, scrape time, snapshots.",
                     g, variables, refresh="30s", time_from="now-6h")


# ---------------------------------------------------------------------------

DASHBOARDS = {"wall": wall, "host": host, "group": group, "capacity": capacity, "collector": collector}


def render(build) -> str:
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rendered() -> Dict[str, str]:
    """File name -> JSON text of every dashboard, as written to grafana/dashboards/."""
    return {f"{name}.json": render(build) for name, build in DASHBOARDS.items()}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
