"""The state tables and the idle rule, row by row (docs/sessions.md has the same tables)."""

from __future__ import annotations

import pytest

from agent.sessions import states
from contract.report import SESSION_STATES


@pytest.mark.parametrize("code, name, mapped", [
    (0, "WTSActive", "active"), (1, "WTSConnected", "connecting"), (2, "WTSConnectQuery", "connecting"),
    (3, "WTSShadow", "active"), (4, "WTSDisconnected", "disconnected"), (5, "WTSIdle", "other"),
    (6, "WTSListen", None), (7, "WTSReset", "other"), (8, "WTSDown", "other"), (9, "WTSInit", "connecting"),
])
def test_every_wts_state_has_a_documented_mapping(code: int, name: str, mapped: str) -> None:
    assert states.wts_state_name(code) == name
    assert states.wts_state(code) == mapped


def test_wts_table_covers_exactly_the_ten_states_and_maps_into_the_contract() -> None:
    assert sorted(states.WTS_STATES) == list(range(10))
    assert {m for _, m in states.WTS_STATES.values() if m is not None} <= set(SESSION_STATES) - {"idle"}


def test_an_unknown_wts_state_is_other_not_an_error() -> None:
    assert states.wts_state(42) == "other"
    assert states.wts_state_name(42) == "WTS42"


@pytest.mark.parametrize("raw, mapped", [
    ("active", "active"), ("online", "active"), ("opening", "connecting"), ("closing", "other"),
    ("frobnicating", "other"),
])
def test_logind_states(raw: str, mapped: str) -> None:
    assert states.logind_state(raw) == mapped


def test_only_user_classes_are_sessions() -> None:
    assert "user" in states.LOGIND_USER_CLASSES
    assert not {"greeter", "lock-screen", "background", "manager"} & states.LOGIND_USER_CLASSES


@pytest.mark.parametrize("idle, expected", [
    (None, "active"), (0.0, "active"), (1799.999, "active"), (1800.0, "idle"), (86400.0, "idle"),
])
def test_idle_boundary_is_at_least_idle_after(idle: float, expected: str) -> None:
    assert states.effective_state("active", idle, 1800.0) == expected


@pytest.mark.parametrize("state", ["disconnected", "connecting", "other"])
def test_only_active_sessions_become_idle(state: str) -> None:
    assert states.effective_state(state, 10**6, 1800.0) == state
