"""Which Security 4624/4625 events count as one user logging on at a desktop (docs/logons.md, "Which logons
count"): literal records, then Microsoft-shaped events from tests/fixtures/logons/admin_vda_security.xml."""

from agent.logons.events import Event, event_from_values, parse_event, yes_no
from agent.logons.matching import (
    counts_as_failure,
    counts_as_success,
    is_desktop_logon_type,
    is_elevated_half,
    is_not_a_person,
)
from tests.agent.logons.fixtures import event_xmls, rendered_values

CAROL = "S-1-5-21-1004336348-1177238915-682003330-1105"


def success(logon_type=10, name="carol", domain="CORP", sid=CAROL, virtual=False, linked=0, elevated=False):
    return Event("logon_success", 1, 0.0, logon_type=logon_type, account_name=name, account_domain=domain,
                 account_sid=sid, virtual_account=virtual, linked_logon_id=linked, elevated_token=elevated)


def failure(logon_type=10, name="carol", domain="CORP", sid="S-1-0-0"):
    return Event("logon_failure", 1, 0.0, logon_type=logon_type, status=0xC000006D, sub_status=0xC000006A,
                 account_name=name, account_domain=domain, account_sid=sid)


def test_only_the_logon_types_of_a_person_arriving_at_a_desktop():
    # 2 Interactive, 10 RemoteInteractive, 11 CachedInteractive, 12 CachedRemoteInteractive
    assert [t for t in range(16) if is_desktop_logon_type(t)] == [2, 10, 11, 12]
    assert not is_desktop_logon_type(7) and not is_desktop_logon_type(13)  # Unlock, CachedUnlock
    assert not is_desktop_logon_type(3) and not is_desktop_logon_type(None)  # Network; version without the field


def test_windows_own_accounts_are_not_people():
    assert is_not_a_person("SYSTEM", "NT AUTHORITY", "S-1-5-18")
    assert is_not_a_person("LOCAL SERVICE", "NT AUTHORITY", "S-1-5-19")
    assert is_not_a_person("NETWORK SERVICE", "NT AUTHORITY", "S-1-5-20")
    assert is_not_a_person("DWM-3", "Window Manager", "S-1-5-90-0-3")
    assert is_not_a_person("UMFD-3", None, "s-1-5-96-0-3")  # the SID alone is enough, in any case
    assert is_not_a_person("DWM-3", "window manager", None)  # so is the domain
    assert is_not_a_person("VDA-SRV-07$", "CORP", "S-1-5-21-1-2-3-2101")  # a computer account
    assert is_not_a_person("svc-app", "CORP", "S-1-5-21-1-2-3-3001", virtual=True)  # 4624's VirtualAccount Yes
    assert not is_not_a_person("carol", "CORP", CAROL, virtual=False)
    assert not is_not_a_person(None, None, None)  # nothing known: a person (version 0 events have less)


def test_the_elevated_half_of_a_split_token_pair():
    assert is_elevated_half(0x5A1F3C, True)  # linked and elevated: the administrator token
    assert not is_elevated_half(0x5A1F00, False)  # its linked partner, the standard token: counted
    assert not is_elevated_half(0, True)  # the built-in Administrator: elevated, but alone
    assert not is_elevated_half(None, None)  # an event before version 2: no such fields


def test_one_success_per_user_logon():
    assert counts_as_success(success())
    assert counts_as_success(success(logon_type=12))
    assert not counts_as_success(success(logon_type=7))  # an unlock
    assert not counts_as_success(success(logon_type=3))  # a network logon
    assert not counts_as_success(success(logon_type=2, name="DWM-3", domain="Window Manager", sid="S-1-5-90-0-3"))
    assert not counts_as_success(success(linked=0x5A1F3C, elevated=True))
    assert counts_as_success(success(linked=0x5A1F00, elevated=False))
    assert counts_as_success(success(logon_type=2, name="Administrator", linked=0, elevated=True))


def test_failures_are_filtered_as_successes_are():
    assert counts_as_failure(failure())
    assert not counts_as_failure(failure(logon_type=3))  # a port scan's NTLM attempt
    assert not counts_as_failure(failure(logon_type=7))  # a mistyped password at the lock screen
    assert not counts_as_failure(failure(name="VDA-SRV-07$"))
    assert counts_as_failure(failure(logon_type=11)) and counts_as_failure(failure(logon_type=12))


def test_yes_no_fields_as_the_event_stores_them():
    assert (yes_no("%%1842"), yes_no("%%1843"), yes_no(" Yes "), yes_no("no")) == (True, False, True, False)
    assert (yes_no("-"), yes_no(""), yes_no(None), yes_no("%%1844")) == (None, None, None, None)


def test_the_split_token_pair_as_microsoft_documents_its_fields():
    pair = [parse_event(x) for x in event_xmls("admin_vda_security.xml")[:2]]
    assert [(e.logon_type, e.account_name, e.elevated_token, e.virtual_account) for e in pair] == [
        (10, "ladmin", True, False), (10, "ladmin", False, False)]
    assert (pair[0].linked_logon_id, pair[1].linked_logon_id) == (0x5A1F3C, 0x5A1F00)  # each names the other
    assert [counts_as_success(e) for e in pair] == [False, True]


def test_the_fixture_counts_the_same_rendered_as_values_or_as_xml():
    xmls = event_xmls("admin_vda_security.xml")
    for decode in (parse_event, lambda x: event_from_values(rendered_values(x))):
        records = [decode(x) for x in xmls]
        successes = [e.account_name for e in records if e.kind == "logon_success" and counts_as_success(e)]
        failures = [e.account_name for e in records if e.kind == "logon_failure" and counts_as_failure(e)]
        # ladmin's pair once, frank's cached remote logon, the built-in Administrator; not carol's unlock, her
        # share, the computer account or SYSTEM. Failures: gina's, not the port scan's nor carol's at the lock screen
        assert (successes, failures) == (["ladmin", "frank", "Administrator"], ["gina"])
