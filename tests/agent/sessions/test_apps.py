"""Per-application use: names, the walk's per-app totals, the bounded table and its counters."""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import APP_RE, MAX_ALLOWED_APPS, MAX_TOP_APPS, SessionsSection, load_agent_config
from agent.runner import agent_info, build_report
from agent.sessions.processes import (
    OTHER_APP,
    AppTable,
    AppUse,
    ProcessGrouper,
    ProcessSnapshot,
    ProcReader,
    app_name,
    choose_apps,
    windows_locator,
)
from agent.sessions.windows import WindowsSource
from contract.configfile import ConfigError
from contract.report import DEFAULT_LIMITS, CollectorStatus, ReportError, parse_report, report_to_doc
from tests.agent.sessions.fakes import Clock, windows_api_and_psutil, windows_collector


@pytest.mark.parametrize("raw, expected", [
    ("C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE", "outlook"),
    ("OUTLOOK.EXE", "outlook"),
    ("/usr/lib/firefox/firefox-bin", "firefox-bin"),
    ("Web Content", "web_content"),  # a Linux command name with a space
    ("System Idle Process", "system_idle_process"),
    ("soffice.bin", "soffice.bin"),
    ("g++", "g++"),
    ("Teams.exe ", "teams"),
    ("kworker/0:1", "0_1"),  # comm, not a path; such threads are never in a user session anyway
    ("\u00c4rzteProgramm.exe", "rzteprogramm"),
    ("a" * 40 + ".exe", "a" * 32),
    ("x_" + "y" * 29 + "_z.exe", "x_" + "y" * 29),  # cut at 32, then no trailing '_'
    ('evil"name\n.exe', "evil_name"),
    (".exe", ""),
    ("", ""),
    (None, ""),
])
def test_app_name(raw, expected) -> None:
    assert app_name(raw) == expected


@given(st.text(max_size=80))
def test_every_app_name_is_one_the_allowlist_accepts(raw: str) -> None:
    name = app_name(raw)
    assert name == "" or APP_RE.fullmatch(name)
    assert app_name(name) == name  # normalising twice changes nothing


def grouper_on_windows():
    api, ps = windows_api_and_psutil()
    clock = Clock()
    return ProcessGrouper(ps, windows=True, locate=windows_locator(api), clock=clock), ps, clock


def test_the_walk_counts_user_session_processes_by_application() -> None:
    grouper, ps, clock = grouper_on_windows()
    sessions = WindowsSource(windows_api_and_psutil()[0]).snapshot()
    first = grouper.snapshot(sessions)
    assert sorted(first.apps) == ["chrome", "csrss", "explorer", "ms-teams", "outlook", "winword"]  # no svchost
    outlook = first.apps["outlook"]
    assert (outlook.cpu_seconds_total, outlook.memory_bytes, len(outlook.sessions)) == (162.0, 1.4e9, 2)
    ps.set_cpu(2100, 150.0, 30.0)  # outlook in session 2: +30 s
    ps.remove(3100)  # outlook in session 3 exits: its total stays
    clock.now += 15
    second = grouper.snapshot(sessions)
    outlook = second.apps["outlook"]
    assert (outlook.cpu_seconds, outlook.cpu_seconds_total, len(outlook.sessions)) == (30.0, 192.0, 1)
    assert second.apps["chrome"].cpu_seconds == 0.0
    assert grouper.app_cpu_totals()["outlook"] == 192.0


def test_choose_apps_takes_the_allowlist_then_the_top_n() -> None:
    apps = {"chrome": AppUse(cpu_seconds=9.0), "teams": AppUse(cpu_seconds=4.0), "outlook": AppUse(cpu_seconds=4.0),
            "idle": AppUse(cpu_seconds=0.0), OTHER_APP: AppUse(cpu_seconds=99.0)}
    assert choose_apps(apps, (), 2, 64) == ["chrome", "outlook"]  # ties by name
    assert choose_apps(apps, ("teams", "sap"), 1, 64) == ["teams", "sap", "chrome"]
    assert choose_apps(apps, (), 10, 64) == ["chrome", "outlook", "teams"]  # an app without CPU is not "top"
    assert choose_apps(apps, ("a", "b", "c"), 10, 3) == ["a", "b"]  # the cap keeps one entry for "other"
    assert choose_apps(apps, (), 0, 64) == []


def snapshot(**apps: AppUse) -> ProcessSnapshot:
    return ProcessSnapshot(groups={}, apps=dict(apps))


def use(interval: float, total: float, memory: float = 0.0, sessions=()) -> AppUse:
    return AppUse(cpu_seconds_total=total, cpu_seconds=interval, memory_bytes=memory, sessions=set(sessions))


def test_counters_stay_monotonic_as_apps_enter_and_leave_the_top_n() -> None:
    table = AppTable((), 1, 64)
    totals = {"a": 10.0, "b": 2.0}
    first = table.entries(snapshot(a=use(10, 10, 100, "1"), b=use(2, 2, 50, "12")), totals)
    assert first == [{"app": "a", "cpu_seconds_total": 10.0, "memory_bytes": 100, "sessions": 1},
                     {"app": "other", "cpu_seconds_total": 2.0, "memory_bytes": 50, "sessions": 2}]
    totals = {"a": 11.0, "b": 7.0}  # b takes the lead
    second = table.entries(snapshot(a=use(1, 11, 100, "1"), b=use(5, 7, 50, "2")), totals)
    assert second == [{"app": "b", "cpu_seconds_total": 7.0, "memory_bytes": 50, "sessions": 1},
                      {"app": "other", "cpu_seconds_total": 3.0, "memory_bytes": 100, "sessions": 1}]
    totals = {"a": 15.0, "b": 7.5}  # a is back, with everything it used meanwhile
    third = table.entries(snapshot(a=use(4, 15), b=use(0.5, 7.5)), totals)
    assert [(e["app"], e["cpu_seconds_total"]) for e in third] == [("a", 15.0), ("other", 3.5)]


def test_an_allowlisted_app_is_always_there_even_before_it_runs() -> None:
    table = AppTable(("winword",), 0, 64)
    entries = table.entries(snapshot(chrome=use(3, 3)), {"chrome": 3.0})
    assert entries == [{"app": "winword", "cpu_seconds_total": 0.0, "memory_bytes": 0.0, "sessions": 0},
                       {"app": "other", "cpu_seconds_total": 3.0, "memory_bytes": 0.0, "sessions": 0}]


def test_the_sessions_collector_reports_the_bounded_table() -> None:
    collector, _api, ps, clock = windows_collector(apps=("winword", "sap"), top_apps=1)
    first = collector.collect().apps
    assert [a.app for a in first] == ["chrome", "sap", "winword", "other"]
    ps.set_cpu(5100, 120.0, 4.0)  # teams: +100 s, now the top app
    clock.now += 15
    second = {a.app: a for a in collector.collect().apps}
    assert sorted(second) == ["ms-teams", "other", "sap", "winword"]
    assert second["ms-teams"].cpu_seconds_total == 124.0  # its total since start, not since it entered
    assert second["other"].cpu_seconds_total >= {a.app: a for a in first}["other"].cpu_seconds_total


def test_no_apps_when_both_allowlist_and_top_n_are_off() -> None:
    collector = windows_collector(apps=(), top_apps=0)[0]
    assert collector.collect().apps is None


def load_sessions(tmp_path, lines: str) -> SessionsSection:
    path = tmp_path / "agent.toml"
    path.write_text(f"[sessions]\n{lines}\n", encoding="utf-8")
    return load_agent_config(str(path)).sessions


def test_the_config_checks_the_allowlist(tmp_path) -> None:
    assert SessionsSection().apps == () and SessionsSection().top_apps == 10
    assert MAX_ALLOWED_APPS + MAX_TOP_APPS + 1 <= DEFAULT_LIMITS.max_apps
    loaded = load_sessions(tmp_path, 'apps = ["outlook", "winword", "soffice.bin"]\ntop_apps = 0')
    assert loaded.apps == ("outlook", "winword", "soffice.bin") and loaded.top_apps == 0
    many = ", ".join(f'"app{i}"' for i in range(MAX_ALLOWED_APPS + 1))
    for bad in ('apps = ["OUTLOOK.EXE"]', 'apps = ["other"]', 'apps = [""]', 'apps = ["a b"]', f"apps = [{many}]",
                f"top_apps = {MAX_TOP_APPS + 1}", "top_apps = -1"):
        with pytest.raises(ConfigError, match="sessions.(apps|top_apps)"):
            load_sessions(tmp_path, bad)


def sessions_doc(apps) -> dict:
    collector = windows_collector()[0]
    report = build_report(host="vda-01", site="City Hall", delivery_group="Office", timestamp=1796083200.0,
                          agent=agent_info(interval=15.0, start_time=1796080000.0, os="windows", os_release=""),
                          statuses=[CollectorStatus("sessions", True, 0.01)],
                          readings={"sessions": collector.collect()})
    doc = report_to_doc(report)
    doc["readings"]["sessions"]["apps"] = apps
    return doc


def test_the_contract_refuses_a_duplicate_or_too_many_apps() -> None:
    entry = {"app": "outlook", "cpu_seconds_total": 1.0, "memory_bytes": 2.0, "sessions": 1}
    assert parse_report(sessions_doc([entry])).sessions.apps[0].app == "outlook"
    with pytest.raises(ReportError) as e:
        parse_report(sessions_doc([entry, dict(entry)]))
    assert e.value.problems[0].path == "readings.sessions.apps[1]" and e.value.reason == "duplicate"
    many = [dict(entry, app=f"app{i}") for i in range(DEFAULT_LIMITS.max_apps + 1)]
    with pytest.raises(ReportError) as e:
        parse_report(sessions_doc(many))
    assert e.value.problems[0].path == "readings.sessions.apps" and e.value.reason == "too_many_items"
    with pytest.raises(ReportError) as e:
        parse_report(sessions_doc([dict(entry, sessions=-1)]))
    assert e.value.problems[0].path == "readings.sessions.apps[0].sessions"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc")
def test_the_proc_reader_gives_the_kernel_command_name() -> None:
    with open(f"/proc/{os.getpid()}/comm", encoding="utf-8") as f:
        comm = f.read().rstrip("\n")
    mine = [p for p in ProcReader()() if p["pid"] == os.getpid()]
    assert mine and mine[0]["name"] == comm
