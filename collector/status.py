""""Is my host reporting?": the collector's own status page and hosts API.

Pure functions from the store's view to JSON-ready dicts and to HTML. The page
works without JavaScript and without any external asset (the ops network may
be closed): filters and sorting are query parameters, refresh is a meta tag.
Every string that came from an agent goes through `html.escape`.
"""

from __future__ import annotations

import html
import json
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote, urlencode

from collector import __version__
from collector.store import HostEntry, HostStore
from contract.report import INPUT_DELAY_BUCKETS, SESSION_STATES

TABLE_STATES = ("up", "stale", "stopped", "maintenance", "not accepting")
COLUMNS = (  # (key, heading)
    ("host", "Host"), ("site", "Site"), ("delivery_group", "Delivery group"), ("state", "State"),
    ("last_report_age_seconds", "Last report"), ("sessions_active", "Active"), ("sessions_idle", "Idle"),
    ("sessions_disconnected", "Disconn."), ("cpu_used_ratio", "CPU"), ("memory_used_ratio", "Memory"),
    ("agent_version", "Agent"), ("last_rejection", "Last rejection"),
)


class Activity:
    """Reports accepted and refused per minute over the last hour, for the status page."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._lock = threading.Lock()
        self._minutes: Deque[Tuple[int, int, Dict[str, int]]] = deque(maxlen=61)

    def _bucket(self) -> Tuple[int, int, Dict[str, int]]:
        minute = int(self.clock() // 60)
        if not self._minutes or self._minutes[-1][0] != minute:
            self._minutes.append((minute, 0, {}))
        return self._minutes[-1]

    def accepted(self) -> None:
        with self._lock:
            minute, n, rejected = self._bucket()
            self._minutes[-1] = (minute, n + 1, rejected)

    def rejected(self, reason: str) -> None:
        with self._lock:
            _, _, rejected = self._bucket()
            rejected[reason] = rejected.get(reason, 0) + 1

    def reports_per_second(self) -> float:
        """Average over the last complete minute and the current one."""
        now = self.clock()
        current = int(now // 60)
        with self._lock:
            recent = [(m, n) for m, n, _ in self._minutes if m >= current - 1]
        if not recent:
            return 0.0
        span = 60 + (now - current * 60)
        return round(sum(n for _, n in recent) / span, 2)

    def rejections_last_hour(self) -> Dict[str, int]:
        current = int(self.clock() // 60)
        out: Dict[str, int] = {}
        with self._lock:
            for minute, _, rejected in self._minutes:
                if minute > current - 60:
                    for reason, n in rejected.items():
                        out[reason] = out.get(reason, 0) + n
        return dict(sorted(out.items()))


def logon_summary(r: Any) -> Optional[Dict[str, Any]]:
    """A host's `readings.logons` in a few numbers: logons and failures since its agent started, their
    average and each phase's average (None for a phase no logon had); None without the section."""
    if r is None:
        return None
    phases = {p: (round(s / n, 1) if n else None)
              for (p, s), (_, n) in zip(r.phase_sum_seconds, r.phase_count)}
    return {"count": r.duration_count,
            "average_seconds": round(r.duration_sum_seconds / r.duration_count, 1) if r.duration_count else None,
            "phase_average_seconds": phases, "failures": sum(n for _, n in r.failures)}


def experience_summary(r: Any) -> Optional[Dict[str, Any]]:
    """A host's `readings.experience` since its agent started: the average input delay and the share of its
    observations in the poor band or worse (over 0.5 s), and each protocol's average round trip; None
    without the section. Averages since the start, not now: /metrics and the dashboards have the rates."""
    if r is None:
        return None
    delay = r.input_delay
    poor = None
    if delay is not None and delay.count:
        within = delay.buckets[INPUT_DELAY_BUCKETS.index(0.5)]  # observations of at most 0.5 s
        poor = round(1 - within / delay.count, 4)
    return {"input_delay_average_seconds": round(delay.sum_seconds / delay.count, 3)
            if delay is not None and delay.count else None,
            "input_delay_poor_ratio": poor,
            "rtt_average_seconds": {p.protocol: round(p.rtt.sum_seconds / p.rtt.count, 3) if p.rtt.count else None
                                    for p in r.protocols}}


def top_apps(r: Any, n: int = 3) -> Optional[List[Dict[str, Any]]]:
    """The `n` applications with the most resident memory in user sessions now (`other` left out); None when
    the agent sends no per-application use."""
    if r is None or r.apps is None:
        return None
    apps = sorted((a for a in r.apps if a.app != "other"), key=lambda a: (-a.memory_bytes, a.app))[:n]
    return [{"app": a.app, "memory_bytes": a.memory_bytes, "sessions": a.sessions} for a in apps]


def summary(store: HostStore, entry: HostEntry, now: float) -> Dict[str, Any]:
    """One host as the status page and /api/v1/hosts show it; `now` on the store's monotonic clock."""
    r = entry.report
    live = store.liveness(entry, now)
    state = live.state
    accepting = r.capacity.accepting_sessions if r.capacity else None
    if state == "up" and accepting is False:
        state = "not accepting"
    sessions = dict.fromkeys(SESSION_STATES, 0)
    if r.sessions:
        for s, _protocol, n in r.sessions.counts:
            sessions[s] += n
    memory = None
    if r.memory and r.memory.total_bytes:
        memory = round(1 - r.memory.available_bytes / r.memory.total_bytes, 4)
    rejection = store.last_rejection(entry.host)
    return {
        "host": entry.host,
        "site": r.site,
        "delivery_group": r.delivery_group,
        "state": state,
        "up": live.up,
        "last_report_timestamp_seconds": entry.received_at,
        "last_report_age_seconds": round(store.age(entry, now), 1),
        "interval_seconds": r.agent.interval_seconds,
        "sessions": sessions,
        "sessions_total": r.sessions.total if r.sessions else None,
        "max_sessions": r.capacity.max_sessions if r.capacity else None,
        "accepting_sessions": accepting,
        "maintenance": bool(r.capacity and r.capacity.maintenance),
        "cpu_used_ratio": entry.cpu_used_ratio,
        "memory_used_ratio": memory,
        "agent_version": r.agent.version,
        "os": r.agent.os,
        "clock_skew_seconds": round(r.timestamp_seconds - entry.received_at, 3),
        "logons": logon_summary(r.logons),
        "experience": experience_summary(r.experience),
        "top_apps": top_apps(r.sessions),
        "last_rejection": None if rejection is None else {
            "timestamp_seconds": rejection[0], "reason": rejection[1], "message": rejection[2]},
    }


def health(store: HostStore, activity: Activity, snapshot_at: Optional[float], now: float,
           wall: float) -> Dict[str, Any]:
    """The collector's own state; `now` on the store's monotonic clock, `snapshot_at` and `wall` wall-clock."""
    return {
        "version": __version__,
        "hosts_by_state": store.counts_by_state(now),
        "reports_per_second": activity.reports_per_second(),
        "rejections_last_hour": activity.rejections_last_hour(),
        "snapshot_age_seconds": None if snapshot_at is None else round(max(0.0, wall - snapshot_at), 1),
    }


def select(rows: List[Dict[str, Any]], query: Mapping[str, str]) -> List[Dict[str, Any]]:
    """Filter by site, delivery_group, state and free text `q`; sort by `sort` and `order`."""
    site, group, state = query.get("site", ""), query.get("delivery_group", ""), query.get("state", "")
    text = query.get("q", "").strip().lower()
    out = [r for r in rows
           if (not site or r["site"] == site)
           and (not group or r["delivery_group"] == group)
           and (not state or r["state"] == state)
           and (not text or text in f"{r['host']} {r['site']} {r['delivery_group']}".lower())]
    key = query.get("sort", "host")
    if key not in dict(COLUMNS):
        key = "host"
    descending = query.get("order") == "desc"
    out.sort(key=lambda r: _sort_key(r, key), reverse=descending)
    return out


def _sort_key(row: Dict[str, Any], key: str) -> Tuple:
    if key.startswith("sessions_"):
        value = row["sessions"][key[len("sessions_"):]]
    elif key == "last_rejection":
        value = (row["last_rejection"] or {}).get("reason")
    else:
        value = row[key]
    if value is None:
        return (1, 0, "", row["host"])
    if isinstance(value, (int, float)):
        return (0, value, "", row["host"])
    return (0, 0, str(value).lower(), row["host"])


# -- HTML --------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2330;background:#f6f7f9}
h1{font-size:1.4rem;margin:0 0 .8rem}h2{font-size:1.1rem;margin:1.2rem 0 .5rem}
.cards{display:flex;flex-wrap:wrap;gap:.6rem}.card{background:#fff;border:1px solid #d8dce3;border-radius:6px;
padding:.5rem .8rem;min-width:7rem}.card b{display:block;font-size:1.5rem}
table{border-collapse:collapse;background:#fff;width:100%;font-size:.9rem}
th,td{border-bottom:1px solid #e3e6ea;padding:.3rem .5rem;text-align:left;white-space:nowrap}
th a{color:inherit}td.n{text-align:right}form{margin:.8rem 0;display:flex;gap:.5rem;flex-wrap:wrap}
.s-up{color:#1a7f37}.s-stale{color:#cf222e;font-weight:bold}.s-stopped{color:#57606a}
.s-maintenance{color:#9a6700}.s-not-accepting{color:#bc4c00;font-weight:bold}
pre{background:#fff;border:1px solid #d8dce3;padding:.8rem;overflow:auto}
.muted{color:#57606a}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"


def _pct(ratio: Optional[float]) -> str:
    return "" if ratio is None else f"{ratio * 100:.0f} %"


def _page(title: str, body: str, refresh: Optional[int]) -> bytes:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>").encode("utf-8")


def render_index(rows: List[Dict[str, Any]], shown: List[Dict[str, Any]], info: Dict[str, Any],
                 query: Mapping[str, str]) -> bytes:
    refresh_on = query.get("refresh", "15") != "0"
    cards = "".join(f'<div class="card">{_e(state)}<b>{n}</b></div>'
                    for state, n in info["hosts_by_state"].items())
    cards += f'<div class="card">reports/s<b>{info["reports_per_second"]:g}</b></div>'
    snap = info["snapshot_age_seconds"]
    cards += f'<div class="card">snapshot<b>{_e(_age(snap) if snap is not None else "off")}</b></div>'
    rejections = info["rejections_last_hour"]
    rejected = ", ".join(f"{_e(k)}: {v}" for k, v in rejections.items()) or "none"
    sites = sorted({r["site"] for r in rows})
    groups = sorted({r["delivery_group"] for r in rows if not query.get("site") or r["site"] == query.get("site")})
    form = ('<form method="get" action="/">'
            + _select("site", "all sites", sites, query)
            + _select("delivery_group", "all delivery groups", groups, query)
            + _select("state", "all states", list(TABLE_STATES), query)
            + f'<input type="search" name="q" placeholder="search hosts" value="{_e(query.get("q", ""))}">'
            + ('<input type="hidden" name="refresh" value="0">' if not refresh_on else "")
            + '<button type="submit">Filter</button> <a href="/">reset</a></form>')
    toggle = dict(query)
    toggle["refresh"] = "15" if not refresh_on else "0"
    refresh_link = (f'<a href="/?{_e(urlencode(toggle))}">'
                    f'{"turn auto-refresh off" if refresh_on else "turn auto-refresh on (15 s)"}</a>')
    head = "".join(f"<th>{_sort_link(key, title, query)}</th>" for key, title in COLUMNS)
    body_rows = "".join(_row(r) for r in shown)
    body = (f"<h1>vdiwatch collector {_e(info['version'])}</h1>"
            f'<div class="cards">{cards}</div>'
            f'<p>Refused in the last hour: {rejected}. '
            f'<span class="muted">{len(shown)} of {len(rows)} hosts shown. {refresh_link}. '
            f'<a href="/metrics">/metrics</a> · <a href="/api/v1/hosts">/api/v1/hosts</a></span></p>'
            f"{form}<table><thead><tr>{head}</tr></thead><tbody>{body_rows}</tbody></table>")
    return _page("vdiwatch collector", body, 15 if refresh_on else None)


def _select(name: str, everything: str, options: Sequence[str], query: Mapping[str, str]) -> str:
    chosen = query.get(name, "")
    opts = f'<option value="">{_e(everything)}</option>' + "".join(
        f'<option value="{_e(o)}"{" selected" if o == chosen else ""}>{_e(o)}</option>' for o in options)
    return f'<select name="{name}" aria-label="{_e(everything)}">{opts}</select>'


def _sort_link(key: str, title: str, query: Mapping[str, str]) -> str:
    params = dict(query)
    descending = query.get("sort", "host") == key and query.get("order") != "desc"
    params["sort"], params["order"] = key, "desc" if descending else "asc"
    return f'<a href="/?{_e(urlencode(params))}">{_e(title)}</a>'


def _row(r: Dict[str, Any]) -> str:
    state_class = "s-" + r["state"].replace(" ", "-")
    rejection = r["last_rejection"]
    s = r["sessions"]
    cells = [
        f'<a href="/hosts/{_e(quote(r["host"], safe=""))}">{_e(r["host"])}</a>',
        _e(r["site"]), _e(r["delivery_group"]),
        f'<span class="{state_class}">{_e(r["state"])}</span>',
        _e(_age(r["last_report_age_seconds"])),
    ]
    numbers = [s["active"], s["idle"], s["disconnected"], _pct(r["cpu_used_ratio"]), _pct(r["memory_used_ratio"])]
    tail = [_e(r["agent_version"]),
            "" if rejection is None else f'<span title="{_e(rejection["message"])}">{_e(rejection["reason"])}</span>']
    return ("<tr>" + "".join(f"<td>{c}</td>" for c in cells)
            + "".join(f'<td class="n">{_e(n)}</td>' for n in numbers)
            + "".join(f"<td>{c}</td>" for c in tail) + "</tr>")


def render_host(row: Dict[str, Any], raw: bytes, history: List[Tuple[float, str]], now: float) -> bytes:
    try:
        pretty = json.dumps(json.loads(raw), indent=2, ensure_ascii=False, sort_keys=True)
    except ValueError:
        pretty = raw.decode("utf-8", "replace")
    rejection = row["last_rejection"]
    changes = "".join(f"<tr><td>{_e(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t)))}</td>"
                      f"<td>{_e(_age(now - t))}</td><td>{_e(state)}</td></tr>" for t, state in reversed(history))
    facts = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in (
        ("site", row["site"]), ("delivery group", row["delivery_group"]), ("state", row["state"]),
        ("last report", _age(row["last_report_age_seconds"])), ("interval", f'{row["interval_seconds"]:g} s'),
        ("agent", f'{row["agent_version"]} on {row["os"]}'), ("clock skew", f'{row["clock_skew_seconds"]:+.1f} s'),
        ("sessions", ", ".join(f"{k} {v}" for k, v in row["sessions"].items())),
        ("max sessions", row["max_sessions"]), ("accepting sessions", row["accepting_sessions"]),
        ("CPU", _pct(row["cpu_used_ratio"])), ("memory", _pct(row["memory_used_ratio"])),
        ("logons", _logons(row["logons"])), ("user experience", _experience(row["experience"])),
        ("top applications", _apps(row["top_apps"]))))
    rejected = "none" if rejection is None else (
        f'{_e(rejection["reason"])} {_e(_age(now - rejection["timestamp_seconds"]))}: {_e(rejection["message"])}')
    body = (f'<p><a href="/">&larr; all hosts</a></p><h1>{_e(row["host"])}</h1>'
            f"<table>{facts}</table><h2>Last rejection</h2><p>{rejected}</p>"
            f"<h2>State changes</h2><table><thead><tr><th>when</th><th></th><th>state</th></tr></thead>"
            f"<tbody>{changes}</tbody></table>"
            f"<h2>Last report</h2><pre>{_e(pretty)}</pre>")
    return _page(f"{row['host']} - vdiwatch", body, None)


def _logons(logons: Optional[Dict[str, Any]]) -> str:
    """'12 since the agent started, 14.2 s on average (profile 5.1 s, group_policy 3.0 s, ...); 1 failed'."""
    if logons is None:
        return "not reported"
    if not logons["count"]:
        return f'none measured since the agent started; {logons["failures"]} failed'
    phases = ", ".join(f"{p} {v:g} s" for p, v in logons["phase_average_seconds"].items() if v is not None)
    return (f'{logons["count"]} since the agent started, {logons["average_seconds"]:g} s on average'
            f' ({phases}); {logons["failures"]} failed')


def render_not_found(host: str) -> bytes:
    return _page("not found", f'<p><a href="/">&larr; all hosts</a></p><h1>No host {_e(host)}</h1>'
                              "<p>The collector has no report from this host (or it expired).</p>", None)


def _experience(e: Optional[Dict[str, Any]]) -> str:
    """'input delay 0.06 s on average, 1.0 % poor or worse; round trip ica 0.041 s' (since the agent started)."""
    if e is None:
        return "not reported"
    parts = []
    if e["input_delay_average_seconds"] is not None:
        parts.append(f'input delay {e["input_delay_average_seconds"]:g} s on average, '
                     f'{e["input_delay_poor_ratio"] * 100:.1f} % poor or worse')
    rtt = ", ".join(f"{p} {v:g} s" for p, v in e["rtt_average_seconds"].items() if v is not None)
    if rtt:
        parts.append(f"round trip {rtt}")
    return ("; ".join(parts) + " since the agent started") if parts else "nothing measured yet"


def _apps(apps: Optional[List[Dict[str, Any]]]) -> str:
    """'outlook 1.2 GiB in 6 sessions, ...' for the top applications by memory."""
    if apps is None:
        return "not reported"
    if not apps:
        return "none"
    return ", ".join(f'{a["app"]} {a["memory_bytes"] / 2**30:.1f} GiB in {a["sessions"]} sessions' for a in apps)
