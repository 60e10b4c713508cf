"""Instances to sessions, units to seconds and bytes: the pure functions, on literal inputs."""

from __future__ import annotations

import doctest
import importlib

import pytest

from agent.experience.counters import (
    ConnectionBytes,
    bandwidth_bytes,
    delay_session,
    ica_winstation,
    input_delays,
    per_session,
    rdp_winstation,
    sessions_of,
)


@pytest.mark.parametrize(("instance", "session"), [("1", 1), ("12", 12), ("Max", None), ("Average", None),
                                                   ("_Total", None), ("", None)])
def test_input_delay_instances_are_session_ids(instance: str, session) -> None:
    assert delay_session(instance) == session


@pytest.mark.parametrize(("instance", "winstation"), [
    ("RDP-Tcp 37", "rdp-tcp#37"), ("rdp-tcp 0", "rdp-tcp#0"), ("RDP-tcp 5", "rdp-tcp#5"),
    ("Win8 Enterprise VM", "win8 enterprise vm"),  # a vGPU instance (named by its VM): matches no session
])
def test_remotefx_instances_name_the_winstation(instance: str, winstation: str) -> None:
    assert rdp_winstation(instance) == winstation


@pytest.mark.parametrize(("instance", "winstation"), [
    ("ICA-CGP#3 (anna)", "ica-cgp#3"), ("ICA-TCP#12 (DOMAIN user)", "ica-tcp#12"), ("ICA-CGP#4", "ica-cgp#4"),
])
def test_ica_instances_name_the_winstation_and_the_user_is_dropped(instance: str, winstation: str) -> None:
    assert ica_winstation(instance) == winstation


def test_instances_map_to_session_ids_and_an_unknown_one_is_its_own_session() -> None:
    session, unmatched = sessions_of(["ICA-CGP#0 (anna)", "ICA-CGP#7 (zoe)"], ica_winstation,
                                     {"ica-cgp#0": 2, "console": 1})
    assert session == {"ICA-CGP#0 (anna)": 2, "ICA-CGP#7 (zoe)": "ICA-CGP#7 (zoe)"} and unmatched == 1


def test_input_delays_in_seconds_for_user_sessions_only() -> None:
    values = {"0": 5.0, "2": 16.0, "3": 180.0, "Max": 180.0, "Average": 98.0}
    assert input_delays(values, {2, 3}) == [0.016, 0.18]
    assert input_delays(values, None) == [0.005, 0.016, 0.18]  # sessions unknown: every session instance


def test_round_trips_fall_back_and_one_session_gives_one_observation() -> None:
    primary = {"a": 0.0, "b": 30.0, "c": 0.0, "d": 20.0}
    fallback = {"a": 60.0, "b": 90.0, "c": 0.0, "d": 50.0}
    assert per_session(primary, fallback, {"a": 1, "b": 2, "c": 3, "d": 2}) == [0.06, 0.03]  # d and b: session 2


def test_bandwidth_in_bits_per_second_becomes_bytes() -> None:
    assert bandwidth_bytes({"x": 8000.0, "y": 16000.0}, 15.0) == 45000.0
    assert bandwidth_bytes({"x": -1.0}, 15.0) == 0.0


def test_connection_bytes_count_increases_and_new_connections() -> None:
    c = ConnectionBytes()
    assert c.increase({"RDP-Tcp 0": 1000.0}) == 0.0  # before the agent: not counted
    assert c.increase({"RDP-Tcp 0": 1500.0, "RDP-Tcp 1": 200.0}) == 700.0  # a connection since: from 0
    assert c.increase({"RDP-Tcp 0": 100.0, "RDP-Tcp 1": 260.0}) == 160.0  # went down: a new connection


def test_a_collection_without_values_keeps_the_connections_baseline() -> None:
    # Win32Pdh.collect gives {} for a counter with no valid value this time (an error): the connections are not
    # gone, and taking them as new at the next collection would count all their bytes since they started again
    c = ConnectionBytes()
    assert c.increase({"RDP-Tcp 0": 1000.0}) == 0.0
    assert c.increase({"RDP-Tcp 0": 1500.0}) == 500.0
    assert c.increase({}) == 0.0
    assert c.increase({"RDP-Tcp 0": 1700.0}) == 200.0
    assert c.increase({"RDP-Tcp 2": 50.0}) == 50.0  # the connection ended, another began: counted from 0


@pytest.mark.parametrize("module", ["counters", "totals"])
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(f"agent.experience.{module}"))
    assert result.attempted > 0 and result.failed == 0
