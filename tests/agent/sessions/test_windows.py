"""The WTS mapping, fed from recorded WTS data through a fake API (no Windows needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.sessions.states import wts_state_name
from agent.sessions.windows import (
    WindowsSource,
    WtsApi,
    WtsSessionEntry,
    filetime_to_unix,
    protocol_of,
    session_from_wts,
    skip_reason,
)
from tests.agent.sessions.fakes import T0, FakeWtsApi
from tests.conftest import ROOT

VARIANTS = ("console", "ica-legacy", "ica-hdx", "rdp", "unknown")
VARIANT_PROTOCOL = {"console": "console", "ica-legacy": "ica", "ica-hdx": "ica", "rdp": "rdp", "unknown": "other"}
STATE_MAPPED = {0: "active", 1: "connecting", 2: "connecting", 3: "active", 4: "disconnected", 5: "other",
                6: None, 7: "other", 8: "other", 9: "connecting"}


def _by_id(sessions):
    return {s.id: s for s in sessions}


def test_module_imports_anywhere_and_touches_no_windows_api_until_called() -> None:
    code = ("import sys, agent.sessions.windows as w; api = w.WtsApi(); "
            "assert api._lib is None and 'ctypes.wintypes' not in sys.modules; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    if sys.platform != "win32":
        with pytest.raises((AttributeError, OSError, ImportError, ValueError)):
            WtsApi().enumerate_sessions()


@pytest.mark.parametrize("filetime, unix", [
    (0, None), (-5, None), (116444736000000000, None),  # never / before 1970
    (116444736000000000 + 10_000_000, 1.0),
    (134090208000000000, T0),
    (134090208000000000 + 5_000_000, T0 + 0.5),
])
def test_filetime_conversion(filetime: int, unix: float) -> None:
    assert filetime_to_unix(filetime) == unix


def test_all_ten_states_with_every_protocol() -> None:
    sessions = _by_id(WindowsSource(FakeWtsApi("wts_all_states.json")).snapshot())
    seen = set()
    for state in range(10):
        for v, variant in enumerate(VARIANTS):
            sid = str(state * 5 + v + 1)
            expected_state = STATE_MAPPED[state]
            if expected_state is None:  # WTSListen: a listener, never a session
                assert sid not in sessions
                continue
            s = sessions[sid]
            if state == 1 and variant == "console":
                expected_state = "other"  # the console at its logon screen
            assert (s.state, s.protocol) == (expected_state, VARIANT_PROTOCOL[variant]), (state, variant)
            assert s.raw_state == wts_state_name(state)
            seen.add((s.state, s.protocol))
    assert len(sessions) == 45  # 50 minus the 5 in WTSListen; session 0 and the listeners skipped
    assert {"active", "connecting", "disconnected", "other"} == {st for st, _ in seen}
    assert {"console", "ica", "rdp", "other"} == {p for _, p in seen}


def test_times_users_and_idle_come_from_wtsinfo() -> None:
    sessions = _by_id(WindowsSource(FakeWtsApi("wts_all_states.json")).snapshot())
    active = sessions["1"]  # WTSActive on the console
    assert active.user == "CORP\\user01"
    assert active.logon_time == T0 - 3600 - 1
    assert active.idle_seconds == 30.0
    assert active.disconnect_time is None
    disconnected = sessions["21"]  # WTSDisconnected
    assert disconnected.state == "disconnected" and disconnected.disconnect_time == T0 - 600
    nobody = sessions["6"]  # WTSConnected on the console, nobody logged on
    assert (nobody.user, nobody.logon_time, nobody.idle_seconds) == ("", None, None)
    assert not nobody.logged_on


@pytest.mark.parametrize("entry, reason", [
    (WtsSessionEntry(0, 4, "Services"), "services session 0"),
    (WtsSessionEntry(65536, 6, "RDP-Tcp"), "listener"),
    (WtsSessionEntry(12, 6, "Custom-Listener"), "listener"),
    (WtsSessionEntry(65540, 8, "ICA-CGP"), "listener"),  # a broken listener is down, still no session
    (WtsSessionEntry(13, 8, "ICA-CGP"), "listener"),
    (WtsSessionEntry(3, 0, "RDP-Tcp#3", "alice"), None),
    (WtsSessionEntry(4, 4, "", "bob"), None),
])
def test_skip_rules(entry: WtsSessionEntry, reason: str) -> None:
    assert skip_reason(entry) == reason
    if reason is not None:
        assert session_from_wts(entry, None, 2) is None


@pytest.mark.parametrize("name, ptype, remembered, expected", [
    ("ICA-CGP#4", 2, None, "ica"),      # current VDAs: the name tells, whatever the type
    ("ICA-tcp#1", 1, None, "ica"),
    ("Citrix#1", 1, None, "ica"),       # older VDAs: WTS_PROTOCOL_TYPE_ICA
    ("RDP-Tcp#7", 2, None, "rdp"),
    ("", 2, None, "rdp"),
    ("Console", 0, None, "console"),
    ("Console", 2, None, "rdp"),        # an RDP connection to the console session
    ("", 0, "ica", "ica"),              # disconnected: the protocol seen while connected
    ("", 0, None, "other"),
    ("PCoIP#2", 0, None, "other"),
    ("RDP-Tcp#7", None, None, "rdp"),
])
def test_protocol_mapping(name: str, ptype: int, remembered: str, expected: str) -> None:
    assert protocol_of(name, ptype, remembered) == expected


def test_farm_snapshots_reused_ids_lost_names_and_vanished_sessions() -> None:
    api = FakeWtsApi("wts_farm_1.json")
    source = WindowsSource(api)
    first = _by_id(source.snapshot())
    assert sorted(first, key=int) == ["1", "2", "3", "4", "5", "6", "9"]
    assert (first["1"].state, first["1"].protocol, first["1"].user) == ("other", "console", "")
    assert (first["4"].state, first["4"].protocol) == ("active", "ica")
    # Disconnected before the agent started: no session name, never seen connected.
    assert (first["6"].state, first["6"].protocol, first["6"].user) == ("disconnected", "other", "CORP\\erin")
    assert first["3"].idle_seconds == 7200.0

    api.load("wts_farm_2.json")
    second = _by_id(source.snapshot())
    assert sorted(second, key=int) == ["1", "2", "3", "4", "5", "6", "8"]  # 7 vanished while being read
    assert "info(7)" in api.calls
    # carol disconnected: the name is gone and the type says 0, the remembered protocol stays
    assert (second["4"].state, second["4"].protocol) == ("disconnected", "ica")
    assert second["4"].disconnect_time == T0 + 10
    # id 5 reused by another logon: same id, another key
    assert second["5"].id == first["5"].id and second["5"].key != first["5"].key
    assert second["5"].user == "CORP\\grace"
    assert (second["6"].state, second["6"].protocol) == ("active", "ica")
    assert second["8"].protocol == "ica"  # an older VDA: protocol type 1 with an "ICA-tcp" name


def test_a_remembered_protocol_is_not_carried_to_a_reused_session_id() -> None:
    api = FakeWtsApi("wts_farm_1.json")
    source = WindowsSource(api)
    source.snapshot()
    # id 5 (RDP, dave) comes back disconnected without a name but with another logon time
    item = api.items[5]
    item["entry"]["session_name"] = ""
    item["entry"]["state"] = 4
    item["info"]["logon_time"] += 10_000_000
    item["protocol_type"] = 0
    again = _by_id(source.snapshot())
    assert again["5"].protocol == "other"


def test_the_wts_layer_is_a_class_with_the_documented_methods() -> None:
    for name in ("enumerate_sessions", "session_info", "client_protocol_type", "client_name",
                 "process_session_id"):
        assert callable(getattr(WtsApi, name))
