"""The sessions collector: source choice, the reading's shape, caps, privacy; it passes the contract."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, List

import pytest

from agent.collectors import Context
from agent.collectors.sessions import SessionsCollector, choose_source
from agent.sessions.model import Session
from agent.sessions.privacy import pseudonym
from contract.report import SESSION_PROTOCOLS, SESSION_STATES
from tests.agent.helpers import collected, parse_reading
from tests.agent.sessions.fakes import (
    SECRET,
    T0,
    Clock,
    config,
    logind_collector,
    utmp_collector,
    windows_collector,
)


def with_source(source: Any, clock: Any = None, **sessions: Any) -> SessionsCollector:
    """A collector on a ready source, without process totals."""
    c = config(**sessions)
    return SessionsCollector(source, c.sessions, site=c.agent.site, clock=clock or Clock())


class ManySessions:
    name = "simulated"

    def __init__(self, n: int):
        self.sessions = [Session(id=str(i), state="active" if i % 3 else "disconnected", protocol="ica",
                                 user=f"user{i}", logon_time=T0 - i) for i in range(1, n + 1)]

    def snapshot(self) -> List[Session]:
        return self.sessions


def test_windows_reading_passes_the_contract_and_counts_by_state_and_protocol() -> None:
    collector, _, _, _ = windows_collector()
    reading = collected(collector)
    report = parse_reading("sessions", reading)
    assert report.sessions is not None and report.sessions.source == "windows"
    assert reading["counts"] == {"other": {"console": 1}, "active": {"ica": 2, "rdp": 2},
                                 "idle": {"ica": 1}, "disconnected": {"other": 1}}
    assert reading["total"] == 7 and reading["users"] == 6 and reading["truncated"] is False
    assert reading["oldest_disconnect_time_seconds"] == T0 - 14000  # erin, from the WTS DisconnectTime
    assert {k: reading[k] for k in ("logons_total", "logoffs_total", "disconnects_total", "reconnects_total")} \
        == {"logons_total": 0, "logoffs_total": 0, "disconnects_total": 0, "reconnects_total": 0}
    rows = {r["id"]: r for r in reading["list"]}
    assert rows["3"] == {"id": "3", "logon_time_seconds": T0 - 9000, "state": "idle", "protocol": "ica",
                         "user": pseudonym("bob.builder", SECRET), "idle_seconds": 7200.0}
    assert rows["1"]["user"] == "" and rows["1"]["logon_time_seconds"] is None
    assert [r["id"] for r in reading["list"]] == ["6", "3", "2", "4", "5", "9", "1"]  # oldest logon first
    assert reading["processes"]["system"]["processes"] == 3 and reading["processes"]["user"]["processes"] == 7
    assert "top_users" not in reading


def test_lifecycle_counters_and_top_users_on_the_second_interval() -> None:
    collector, api, ps, clock = windows_collector(per_user_top=2)
    first = collected(collector)
    assert "top_users" not in first  # no CPU rate yet
    api.load("wts_farm_2.json")
    clock.advance(15)
    ps.set_cpu(2100, 150.0, 30.0)  # alice: 30 s in 15 s = 2 cores
    second = collected(collector)
    parse_reading("sessions", second)
    assert (second["logons_total"], second["logoffs_total"], second["disconnects_total"],
            second["reconnects_total"]) == (2, 2, 1, 1)
    assert second["oldest_disconnect_time_seconds"] == T0 + 10  # carol; erin reconnected
    top = second["top_users"]
    alice = pseudonym("alice", SECRET)
    assert top[0] == {"user": alice, "cpu_cores": 2.0, "memory_bytes": 850e6}
    assert {r["user"] for r in top} == {alice, pseudonym("bob.builder", SECRET)}  # bob: most memory after alice
    assert second["processes"]["user"]["cpu_seconds_total"] > first["processes"]["user"]["cpu_seconds_total"]


def test_ten_thousand_sessions_are_counted_but_the_list_is_capped() -> None:
    reading = collected(with_source(ManySessions(10_000)))
    assert reading["total"] == 10_000 and reading["truncated"] is True
    assert len(reading["list"]) == 500
    assert sum(n for by in reading["counts"].values() for n in by.values()) == 10_000
    assert reading["users"] == 10_000
    assert "processes" not in reading  # no psutil: no process totals
    report = parse_reading("sessions", reading)
    assert report.sessions.total == 10_000 and len(report.sessions.entries) == 500


def test_max_listed_zero_lists_nothing_and_says_so() -> None:
    reading = collected(with_source(ManySessions(3), max_listed=0))
    assert reading["list"] == [] and reading["truncated"] is True and reading["total"] == 3


def test_max_listed_beyond_the_contract_is_held_to_it() -> None:
    reading = collected(with_source(ManySessions(2500), max_listed=5000))
    assert len(reading["list"]) == 2000 and reading["truncated"] is True
    parse_reading("sessions", reading)


def test_idle_after_is_applied_with_its_boundary() -> None:
    source = ManySessions(0)
    source.sessions = [Session("a", "active", "rdp", "x", T0, idle_seconds=599.9),
                       Session("b", "active", "rdp", "y", T0, idle_seconds=600.0)]
    reading = collected(with_source(source, idle_after=600.0))
    assert reading["counts"] == {"active": {"rdp": 1}, "idle": {"rdp": 1}}


def test_unlistable_ids_and_foreign_values_do_not_break_the_report() -> None:
    source = ManySessions(0)
    source.sessions = [Session("x" * 65, "active", "ssh", "u1"), Session("bad\nid", "active", "ssh", "u2"),
                       Session("ok", "weird", "telnet", "u3", -5.0, idle_seconds=-3.0)]
    reading = collected(with_source(source))
    parse_reading("sessions", reading)
    assert reading["total"] == 3 and [r["id"] for r in reading["list"]] == ["ok"]
    assert reading["list"][0] == {"id": "ok", "logon_time_seconds": None, "state": "other", "protocol": "other",
                                  "user": pseudonym("u3", SECRET), "idle_seconds": 0.0}


def test_plain_user_names_only_when_pseudonymize_is_off() -> None:
    collector, _, _, _ = windows_collector(pseudonymize=False)
    users = {r["user"] for r in collected(collector)["list"]}
    assert users == {"", "alice", "bob.builder", "carol", "dave", "erin", "frank"}


def test_oldest_disconnect_falls_back_to_when_the_agent_saw_it() -> None:
    source = ManySessions(0)
    clock = Clock()
    collector = with_source(source, clock)
    source.sessions = [Session("1", "active", "ssh", "u", 1.0)]
    assert collected(collector)["oldest_disconnect_time_seconds"] is None
    source.sessions = [Session("1", "disconnected", "ssh", "u", 1.0)]
    clock.advance(15)
    reading = collected(collector)
    assert reading["oldest_disconnect_time_seconds"] == T0 + 15 and reading["disconnects_total"] == 1


def test_a_process_listing_failure_costs_only_the_process_totals(caplog) -> None:
    collector, _, ps, _ = windows_collector()
    ps.fail = ps.Error("psutil is broken")
    with caplog.at_level(logging.WARNING, logger="agent.collectors.sessions"):
        first, second = collected(collector), collected(collector)
        ps.fail = None
        third = collected(collector)
    assert "processes" not in first and "processes" not in second and first["total"] == 7
    assert "processes" in third
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "cannot group processes" in m]) == 1
    assert len([m for m in messages if "works again" in m]) == 1


def test_auto_on_linux_reads_logind_with_process_grouping_from_proc(tmp_path: Path) -> None:
    reading = collected(logind_collector(tmp_path))
    parse_reading("sessions", reading)
    assert reading["source"] == "logind" and reading["total"] == 7
    assert reading["users"] == 6  # bernd has two sessions
    assert reading["counts"]["active"] == {"console": 2, "ssh": 1, "rdp": 1, "ica": 1}
    assert reading["processes"]["user"]["processes"] == 5


def test_auto_falls_back_to_utmp_without_logind(tmp_path: Path) -> None:
    reading = collected(utmp_collector(tmp_path))
    parse_reading("sessions", reading)
    assert reading["source"] == "utmp" and reading["total"] == 7
    assert reading["counts"]["active"] == {"console": 2, "ssh": 2, "other": 3}


@pytest.mark.parametrize("setting, os, wts_api, tree, expected", [
    ("auto", "windows", object(), "", "windows"),
    ("utmp", "windows", None, "", "utmp"),
    ("logind", "linux", None, "", "logind"),  # explicit: used even if absent now
    ("auto", "linux", None, "logind", "logind"),
    ("auto", "linux", None, "sessions-only", "utmp"),  # a session directory without systemd running it (containers)
    ("auto", "darwin", None, "", "utmp"),
])
def test_source_choice(setting: str, os: str, wts_api: Any, tree: str, expected: str, tmp_path: Path) -> None:
    if tree:
        (tmp_path / "systemd" / "sessions").mkdir(parents=True)
    if tree == "logind":
        (tmp_path / "systemd" / "system").mkdir()
    ctx = Context(psutil=None, os=os, wts_api=wts_api, config=config(source=setting, run_root=str(tmp_path)))
    assert choose_source(ctx).name == expected


def test_windows_source_off_windows_is_refused_at_start() -> None:
    with pytest.raises(RuntimeError, match="needs Windows"):
        SessionsCollector.from_context(Context(psutil=None, config=config(source="windows"), os="linux"))


def test_without_config_the_defaults_apply(caplog) -> None:
    from agent.config import SessionsSection
    with caplog.at_level(logging.WARNING):
        collector = SessionsCollector(ManySessions(600), SessionsSection(), site="default")
    reading = collected(collector)
    assert len(reading["list"]) == 500 and reading["list"][0]["user"].startswith("u-")
    assert any("pseudonym_secret is not set" in r.getMessage() for r in caplog.records)


def test_every_count_key_is_in_the_contract() -> None:
    collector, _, _, _ = windows_collector()
    reading = collected(collector)
    assert set(reading["counts"]) <= set(SESSION_STATES)
    assert {p for by in reading["counts"].values() for p in by} <= set(SESSION_PROTOCOLS)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads this Linux host")
def test_smoke_on_this_host_the_reading_passes_the_contract() -> None:
    import psutil

    collector = SessionsCollector.from_context(Context(psutil=psutil, config=config(per_user_top=3)))
    first = collected(collector)
    second = collected(collector)
    for reading in (first, second):
        report = parse_reading("sessions", reading)
        assert report.sessions.source in ("logind", "utmp")
        assert report.sessions.total == len(report.sessions.entries)
    assert second["processes"]["system"]["processes"] + second["processes"]["user"]["processes"] > 0
    for cls in ("user", "system"):
        assert second["processes"][cls]["cpu_seconds_total"] >= first["processes"][cls]["cpu_seconds_total"]
