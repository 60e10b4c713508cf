"""The WTS mapping, fed from recorded WTS data through a fake API (no Windows needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.sessions.processes import ProcessGrouper, windows_locator
from agent.sessions.states import wts_state_name
from agent.sessions.windows import (
    FILETIME_PER_SECOND,
    WF_PROTOCOL_ICA,
    CitrixWfApi,
    WindowsSource,
    WtsApi,
    WtsSessionEntry,
    WtsSessionInfo,
    filetime_to_unix,
    idle_seconds,
    parse_wtsinfo,
    protocol_of,
    session_from_wts,
    skip_reason,
)
from tests.agent.sessions.fakes import T0, FakeProcPsutil, FakeWtsApi, fixture
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
    ("ICA-CGP#4", 2, None, "ica"),      # an HDX listener's session: the name tells, whatever the type
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
    for name in ("enumerate_sessions", "session_info", "client_protocol_type",
                 "process_session_id"):
        assert callable(getattr(WtsApi, name))


class FakeCitrix:
    """CitrixWfApi's answer per session, from a fixture's `wf_protocol` fields."""

    def __init__(self, name: str):
        self.answers = {item["entry"]["session_id"]: item["wf_protocol"]
                        for item in fixture(name)["sessions"] if "wf_protocol" in item}
        self.asked = []

    def active_protocol(self, session_id: int):
        self.asked.append(session_id)
        return self.answers.get(session_id, 0)


def test_a_desktop_os_vda_hdx_session_is_ica_through_wfapi_and_never_idle() -> None:
    """Documented, not recorded (wts_desktop_vda.json): the HDX session is the console, type 0."""
    citrix = FakeCitrix("wts_desktop_vda.json")
    (session,) = WindowsSource(FakeWtsApi("wts_desktop_vda.json"), citrix).snapshot()
    assert (session.id, session.protocol, session.state, session.user) == ("1", "ica", "active", "CORP\\dora")
    assert session.idle_seconds is None  # LastInputTime == CurrentTime: unknown, not "input just now"
    assert citrix.asked == [1]  # only sessions that say "console" are asked
    (without,) = WindowsSource(FakeWtsApi("wts_desktop_vda.json")).snapshot()
    assert without.protocol == "console"  # no Citrix VDA (no wfapi64.dll): what Windows says


@pytest.mark.parametrize("name, expected", [
    ("wts_server_vda.json", {"1": ("other", "console"), "2": ("active", "ica"), "3": ("active", "ica"),
                             "4": ("disconnected", "other")}),
    ("wts_rds_host.json", {"1": ("other", "console"), "2": ("active", "rdp"), "3": ("active", "rdp"),
                           "4": ("disconnected", "other")}),
])
def test_documented_server_vda_and_rds_host(name, expected) -> None:
    citrix = FakeCitrix(name)
    sessions = _by_id(WindowsSource(FakeWtsApi(name), citrix).snapshot())
    assert {k: (s.state, s.protocol) for k, s in sessions.items()} == expected
    assert sessions["3"].idle_seconds == (2400.0 if name == "wts_server_vda.json" else 3600.0)
    assert fixture(name)["_about"].startswith("DOCUMENTED, NOT RECORDED")


def test_idle_is_unknown_when_last_input_is_reported_as_now() -> None:
    now = 134090208000000000
    assert idle_seconds(WtsSessionInfo(0, 1, last_input_time=now, current_time=now)) is None
    assert idle_seconds(WtsSessionInfo(0, 1, last_input_time=now - 1, current_time=now)) == 1e-7
    assert idle_seconds(WtsSessionInfo(0, 1, last_input_time=now - 90 * FILETIME_PER_SECOND,
                                       current_time=now)) == 90.0


def test_citrix_wfapi_is_optional_and_loaded_once() -> None:
    loads = []

    def missing():
        loads.append("try")
        raise OSError(126, "The specified module could not be found")

    api = CitrixWfApi(loader=missing)
    assert api.active_protocol(1) is None and api.active_protocol(2) is None
    assert loads == ["try"]
    assert CitrixWfApi(loader=lambda: {3: WF_PROTOCOL_ICA}.get).active_protocol(3) == WF_PROTOCOL_ICA
    if sys.platform != "win32":
        assert CitrixWfApi().active_protocol(1) is None  # no ctypes.WinDLL here: no change, no error
    assert isinstance(WindowsSource(WtsApi()).citrix, CitrixWfApi)
    assert WindowsSource(FakeWtsApi("wts_farm_1.json")).citrix is None


def test_parse_wtsinfo_reads_the_layout_of_wtsapi32_h() -> None:
    """Bytes packed by hand from the header's field list (x64: ConnectTime at 176, 216 bytes in all)."""
    import struct

    def wchars(text: str, n: int) -> bytes:
        return text.encode("utf-16-le").ljust(2 * n, b"\0")

    raw = (struct.pack("<iI6I", 4, 7, 1, 2, 3, 4, 5, 6) + wchars("ICA-CGP#3", 32) + wchars("CORP", 17)
           + wchars("sixteen.chars.xx", 21) + b"\0" * 4 + struct.pack("<5q", 11, 12, 13, 14, 15))
    assert len(raw) == 216
    info = parse_wtsinfo(raw)
    assert info == WtsSessionInfo(state=4, session_id=7, win_station_name="ICA-CGP#3", domain="CORP",
                                  user_name="sixteen.chars.xx", connect_time=11, disconnect_time=12,
                                  last_input_time=13, logon_time=14, current_time=15)
    with pytest.raises(ValueError):
        parse_wtsinfo(raw[:200])


class ProtectedProcessApi(FakeWtsApi):
    """ProcessIdToSessionId refused for a protected process; WTSEnumerateProcessesExW tells them all."""

    def __init__(self, name: str, all_sessions, fail: bool = False):
        super().__init__(name, {pid: sid for pid, sid in all_sessions.items() if pid != 612})
        self.all_sessions, self.fail, self.listed = all_sessions, fail, 0

    def process_sessions(self):
        self.listed += 1
        if self.fail:
            raise OSError(5, "WTSEnumerateProcessesExW failed: Access is denied.")
        return dict(self.all_sessions)


def test_protected_processes_are_placed_by_enumerating_all_processes() -> None:
    places = {int(pid): sid for pid, sid in fixture("wts_desktop_vda.json")["process_sessions"].items()}
    procs = [{"pid": pid, "create_time": 1.0, "cpu_times": {"user": 1.0, "system": 0.0}, "memory_info": {"rss": 10}}
             for pid in places]
    api = ProtectedProcessApi("wts_desktop_vda.json", places)
    sessions = WindowsSource(api).snapshot()
    grouper = ProcessGrouper(FakeProcPsutil(procs), windows=True, locate=windows_locator(api))
    groups = grouper.snapshot(sessions).groups
    assert (groups["user"].processes, groups["system"].processes) == (3, 2)  # csrss (612) in session 1 is user
    grouper.snapshot(sessions)
    assert api.listed == 2  # one call per snapshot, not one per process

    failing = ProtectedProcessApi("wts_desktop_vda.json", places, fail=True)
    groups = ProcessGrouper(FakeProcPsutil(procs), windows=True,
                            locate=windows_locator(failing)).snapshot(sessions).groups
    assert (groups["user"].processes, groups["system"].processes) == (2, 3)  # one by one: csrss unknown


def test_the_recorder_keeps_the_raw_buffer_it_parsed() -> None:
    import ctypes

    from agent.sessions.windows import WTSINFOW, record

    class RecordingApi(FakeWtsApi):
        def session_info_raw(self, session_id: int) -> bytes:
            info = self.session_info(session_id)
            raw = WTSINFOW(State=info.state, SessionId=info.session_id, LogonTime=info.logon_time,
                           LastInputTime=info.last_input_time, CurrentTime=info.current_time)
            for i, ch in enumerate(info.win_station_name):
                raw.WinStationName[i] = ord(ch)
            return ctypes.string_at(ctypes.addressof(raw), ctypes.sizeof(raw))

        def process_sessions(self):
            return {4: 0, 612: 1}

    doc = record(RecordingApi("wts_rds_host.json"))
    assert doc["_about"].startswith("recorded on ") and doc["process_sessions"] == {"4": 0, "612": 1}
    item = next(i for i in doc["sessions"] if i["entry"]["session_id"] == 2)
    assert parse_wtsinfo(bytes.fromhex(item["raw"]["wtsinfo"])) == WtsSessionInfo(**item["info"])
    assert item["info"]["win_station_name"] == "RDP-Tcp#0" and item["protocol_type"] == 2
    assert "wf_protocol" not in item or sys.platform == "win32"  # no WFAPI here
