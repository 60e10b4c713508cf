from agent.logons.events import Event, parse_event
from agent.logons.matching import FAILURE_REASONS, PHASES, Logon, LogonMatcher, failure_reason
from tests.agent.logons.fixtures import event_xmls

LATER = 1764576000.0 + 86400  # a day after the fixtures: every logon has settled


def events(name):
    return [parse_event(x) for x in event_xmls(name)]


def test_failure_reasons_from_status_and_substatus():
    assert failure_reason(0xC000006D, 0xC000006A) == "bad_password"
    assert failure_reason(0xC000006D, 0xC0000064) == "unknown_user"
    assert failure_reason(0xC0000234, 0x0) == "locked_out"  # Microsoft's example event
    assert failure_reason(0xC000006E, 0xC0000071) == "expired"
    assert failure_reason(0xC000006E, 0xC0000193) == "expired"
    assert failure_reason(0xC000006E, 0xC0000072) == "disabled"
    assert failure_reason(0xC000006E, 0xC000006F) == "restricted"
    assert failure_reason(0xC000006E, 0xC0000070) == "restricted"
    assert failure_reason(0xC000005E, 0x0) == "other"  # no logon servers
    assert failure_reason(0xC000006E, 0x0) == "other"
    assert failure_reason(None, None) == "other"
    assert set(FAILURE_REASONS) >= {failure_reason(s, 0) for s in range(0xC0000000, 0xC0000300)}


def test_server_vda_logons_with_every_phase():
    m = LogonMatcher()
    logons = m.add(events("server_vda.xml"), now=LATER)
    assert logons == [
        Logon(20.0, (("profile", 8.5), ("group_policy", 4.0), ("shell", 7.0), ("other", 0.5))),
        Logon(101.0, (("profile", 95.0), ("group_policy", 2.0), ("shell", 3.0), ("other", 1.0))),
    ]
    assert m.unmatched_shell_starts == 0


def test_desktop_vda_missing_group_policy_is_missing_not_guessed():
    (logon,) = LogonMatcher().add(events("desktop_vda.xml"), now=LATER)
    assert logon == Logon(12.0, (("profile", 4.0), ("group_policy", None), ("shell", 8.0), ("other", None)))


def test_shell_start_without_its_logon_is_counted_not_measured():
    m = LogonMatcher()
    assert m.add(events("rds_host.xml"), now=LATER) == []
    assert m.unmatched_shell_starts == 1


def test_a_logon_split_across_intervals_completes_once_settled():
    evs = sorted(events("server_vda.xml"), key=lambda e: e.record_id)
    m = LogonMatcher(settle_seconds=60)
    shell = next(e for e in evs if e.kind == "shell_start")
    first = [e for e in evs if e.kind in ("session_logon", "shell_start") and e.session_id == 3]
    rest = [e for e in evs if e not in first]
    assert m.add(first, now=shell.time_seconds + 1) == []  # not settled: other channels may follow
    done = m.add(rest, now=shell.time_seconds + 61)
    assert done == [Logon(20.0, (("profile", 8.5), ("group_policy", 4.0), ("shell", 7.0), ("other", 0.5)))]
    (later,) = m.add([], now=LATER)  # session 4's shell start settles later
    assert later.total_seconds == 101.0
    assert m.add([], now=LATER) == []  # nothing counted twice


def test_events_without_a_shell_start_are_forgotten_after_the_window():
    e = Event(kind="session_logon", record_id=1, time_seconds=1000.0, session_id=2, user="u")
    m = LogonMatcher(window_seconds=900)
    m.add([e], now=1001.0)
    m.add([], now=1901.0 + 1)
    late_shell = Event(kind="shell_start", record_id=2, time_seconds=1950.0, session_id=2)
    assert m.add([late_shell], now=5000.0) == []
    assert m.unmatched_shell_starts == 1


def test_phases_are_the_closed_list():
    assert PHASES == ("profile", "group_policy", "shell", "other")
