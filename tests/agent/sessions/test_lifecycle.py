"""Logon/logoff/disconnect/reconnect counters from consecutive snapshots."""

from __future__ import annotations

from agent.sessions.lifecycle import LifecycleTracker
from agent.sessions.model import Session
from agent.sessions.windows import WindowsSource
from tests.agent.sessions.fakes import FakeWtsApi


def s(sid: str, state: str = "active", logon: float = 100.0, user: str = "u") -> Session:
    return Session(id=sid, state=state, protocol="ica", user=user, logon_time=logon)


def counts(t: LifecycleTracker) -> tuple:
    return t.logons, t.logoffs, t.disconnects, t.reconnects


def test_the_first_snapshot_is_the_baseline_and_counts_nothing() -> None:
    t = LifecycleTracker()
    t.update([s("1"), s("2", "disconnected"), s("3")], 1000.0)
    assert counts(t) == (0, 0, 0, 0)
    assert t.counters() == {"logons_total": 0, "logoffs_total": 0, "disconnects_total": 0, "reconnects_total": 0}


def test_logon_and_logoff() -> None:
    t = LifecycleTracker()
    t.update([s("1")], 0)
    t.update([s("1"), s("2", logon=200.0)], 15)
    assert counts(t) == (1, 0, 0, 0)
    t.update([s("2", logon=200.0)], 30)
    assert counts(t) == (1, 1, 0, 0)


def test_disconnect_and_reconnect_even_through_connecting() -> None:
    t = LifecycleTracker()
    t.update([s("1")], 0)
    t.update([s("1", "disconnected")], 15)
    assert counts(t) == (0, 0, 1, 0)
    assert t.disconnected_since(s("1")) == 15
    t.update([s("1", "disconnected")], 30)  # still disconnected: nothing new
    t.update([s("1", "connecting")], 45)
    assert counts(t) == (0, 0, 1, 0)
    t.update([s("1", "idle")], 60)
    assert counts(t) == (0, 0, 1, 1)
    assert t.disconnected_since(s("1")) is None


def test_a_failed_reconnect_is_not_a_second_disconnect() -> None:
    t = LifecycleTracker()
    t.update([s("1", "disconnected")], 0)
    t.update([s("1", "connecting")], 15)
    t.update([s("1", "disconnected")], 30)
    assert counts(t) == (0, 0, 0, 0)


def test_a_session_disconnected_at_the_baseline_reconnects() -> None:
    t = LifecycleTracker()
    t.update([s("1", "disconnected")], 0)
    assert t.disconnected_since(s("1")) is None  # since when is not known
    t.update([s("1")], 15)
    assert counts(t) == (0, 0, 0, 1)


def test_a_reused_id_with_a_new_logon_time_is_a_logoff_and_a_logon() -> None:
    t = LifecycleTracker()
    t.update([s("5", logon=100.0, user="dave")], 0)
    t.update([s("5", logon=205.0, user="grace")], 15)
    assert counts(t) == (1, 1, 0, 0)


def test_a_logon_screen_that_gets_a_user_is_one_logon_not_a_logoff() -> None:
    t = LifecycleTracker()
    t.update([Session("3", "connecting", "rdp")], 0)
    t.update([Session("3", "connecting", "rdp")], 15)
    assert counts(t) == (0, 0, 0, 0)
    t.update([s("3", logon=20.0)], 30)
    assert counts(t) == (1, 0, 0, 0)
    t.update([], 45)
    assert counts(t) == (1, 1, 0, 0)


def test_an_abandoned_connection_counts_neither_logon_nor_logoff() -> None:
    t = LifecycleTracker()
    t.update([], 0)
    t.update([Session("7", "connecting", "rdp")], 15)
    t.update([], 30)
    assert counts(t) == (0, 0, 0, 0)


def test_a_new_session_already_disconnected_counts_its_disconnect() -> None:
    t = LifecycleTracker()
    t.update([], 0)
    t.update([s("9", "disconnected")], 15)
    assert counts(t) == (1, 0, 1, 0)
    assert t.disconnected_since(s("9")) == 15


def test_counters_over_the_recorded_farm_snapshots() -> None:
    api = FakeWtsApi("wts_farm_1.json")
    source = WindowsSource(api)
    t = LifecycleTracker()
    t.update(source.snapshot(), 0)
    api.load("wts_farm_2.json")
    t.update(source.snapshot(), 15)
    # logons: grace (id 5 reused), ivan (8); logoffs: dave (5), frank (9); carol disconnected; erin reconnected
    assert counts(t) == (2, 2, 1, 1)
