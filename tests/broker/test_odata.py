"""The page parser on literal input: host names as the agent writes them, the enums, and
every hostile entry skipped or defaulted with the field named."""

from __future__ import annotations

import pytest

from broker.odata import Machine, MalformedPage, Options, parse_machine, parse_page
from tests.broker.fakeodata import fixture_page

SHORT = Options()
FQDN = Options(host_name="fqdn")


def entry(**fields):
    base = {"Name": "CORP\\VDA-01", "DnsName": "vda-01.corp.example", "IsInMaintenanceMode": False,
            "CurrentRegistrationState": 1, "CurrentPowerState": 3, "DesktopGroup": {"Name": "Office"}}
    base.update(fields)
    return base


def test_fixture_pages_read_as_documented() -> None:
    first, second = parse_page(fixture_page(1), SHORT), parse_page(fixture_page(2), SHORT)
    assert first.machines == [
        Machine("vda-01", "Office", False, "on", True),
        Machine("vda-02", "Office", True, "on", True),
        Machine("vda-03", "Pooled Win11", False, "suspended", False),
        Machine("vda-04", "Pooled Win11", False, "off", False),
    ]
    assert second.machines == [
        Machine("vda-05", "Pooled Win11", False, "transitioning", True),
        Machine("vda-07", "", False, "missing", False),
        Machine("rds-01", "RDS Servers", False, "unmanaged", True),
    ]
    assert [(p.kind, p.key) for p in second.problems] == [("skip", "no_name")]
    assert second.entries == 4


@pytest.mark.parametrize("fields, short, fqdn", [
    ({"DnsName": "VDA-01.Corp.Example."}, "vda-01", "vda-01.corp.example"),
    ({"DnsName": "", "Name": "CORP\\VDA-09"}, "vda-09", None),  # no FQDN to be had
    ({"DnsName": None, "Name": "vda-10"}, "vda-10", None),
    ({"DnsName": "  vda-11.corp.example  "}, "vda-11", "vda-11.corp.example"),
])
def test_host_name_is_normalised_like_the_agents(fields, short, fqdn) -> None:
    for options, expected in ((SHORT, short), (FQDN, fqdn)):
        machine, problems = parse_machine(entry(**fields), options)
        assert (machine.host if machine else None) == expected, problems


@pytest.mark.parametrize("fields, reason, named", [
    ({"DnsName": None, "Name": None}, "no_name", "DnsName or Name"),
    ({"DnsName": "vda 01.corp"}, "bad_name", "DnsName 'vda 01.corp'"),
    ({"DnsName": "10.1.2.3"}, "bad_name", "is an address"),
    ({"DnsName": "fe80::1"}, "bad_name", "is an address"),
    ({"DnsName": "-x\u202e.corp"}, "bad_name", "DnsName"),
    ({"DnsName": 42}, "bad_field", "DnsName must be a string, got number"),
    ({"IsInMaintenanceMode": "yes"}, "bad_field", "IsInMaintenanceMode must be true or false, got string"),
    ({"IsInMaintenanceMode": None}, "bad_field", "IsInMaintenanceMode must be true or false, got null"),
    ({"CurrentPowerState": [3]}, "bad_field", "CurrentPowerState must be an integer or a name, got list"),
    ({"CurrentPowerState": True}, "bad_field", "CurrentPowerState"),
    ({"CurrentRegistrationState": {"x": 1}}, "bad_field", "CurrentRegistrationState must be"),
])
def test_a_machine_that_cannot_be_trusted_is_skipped_naming_the_field(fields, reason, named) -> None:
    machine, problems = parse_machine(entry(**fields), SHORT)
    assert machine is None
    assert [(p.kind, p.key) for p in problems][-1] == ("skip", reason)
    assert named in problems[-1].message


@pytest.mark.parametrize("fields, power, registered, field", [
    ({"CurrentPowerState": 99}, "unknown", True, "CurrentPowerState"),
    ({"CurrentPowerState": -1}, "unknown", True, "CurrentPowerState"),
    ({"CurrentPowerState": "Hibernating"}, "unknown", True, "CurrentPowerState"),
    ({"CurrentPowerState": None}, "unknown", True, "CurrentPowerState"),
    ({"CurrentRegistrationState": 7}, "on", False, "CurrentRegistrationState"),
    ({"CurrentRegistrationState": "AgentError"}, "on", False, "CurrentRegistrationState"),
    ({"DesktopGroup": {"Name": "x" * 200}}, "on", True, "DesktopGroup.Name"),
    ({"DesktopGroup": {"Name": "a\nb"}}, "on", True, "DesktopGroup.Name"),
    ({"DesktopGroup": "Office"}, "on", True, "DesktopGroup.Name"),
])
def test_an_unknown_value_keeps_the_machine_with_a_safe_default(fields, power, registered, field) -> None:
    machine, problems = parse_machine(entry(**fields), SHORT)
    assert machine is not None and machine.power == power and machine.registered == registered
    assert [(p.kind, p.key) for p in problems] == [("value", field)]
    if field == "DesktopGroup.Name":
        assert machine.delivery_group == ""


@pytest.mark.parametrize("code, registered", [(0, False), (1, True), (2, False)])
def test_registration_codes_are_citrix_documented_ones(code, registered) -> None:
    # Citrix Monitor API reference, "Enums, error codes, and descriptions", RegistrationState:
    # 0 Unknown, 1 Registered, 2 Unregistered (docs/broker.md, "Verified where").
    machine, problems = parse_machine(entry(CurrentRegistrationState=code), SHORT)
    assert (machine.registered, problems) == (registered, [])


def test_enums_by_name_and_configured_codes() -> None:
    machine, _ = parse_machine(entry(CurrentPowerState="Suspended", CurrentRegistrationState="Registered"), SHORT)
    assert (machine.power, machine.registered) == ("suspended", True)
    other = Options(power_codes=("off", "on"), registered_codes=(2,))
    machine, problems = parse_machine(entry(CurrentPowerState=1, CurrentRegistrationState=2), other)
    assert (machine.power, machine.registered, problems) == ("on", True, [])


def test_a_long_hostile_value_is_cut_in_the_message() -> None:
    _, problems = parse_machine(entry(DnsName="a b" * 10000), SHORT)
    assert len(problems[0].message) < 200 and "30000 characters" in problems[0].message


@pytest.mark.parametrize("doc, message", [
    ([], "must be a JSON object, got list"),
    ({"value": {}}, "value must be a list, got object"),
    ({}, "value must be a list, got null"),
    ({"value": [], "@odata.nextLink": 5}, "@odata.nextLink must be a non-empty string"),
])
def test_an_unusable_page_is_refused_whole(doc, message) -> None:
    with pytest.raises(MalformedPage, match=message):
        parse_page(doc, SHORT)


def test_entries_that_are_not_objects_are_counted() -> None:
    page = parse_page({"value": [1, None, entry()]}, SHORT)
    assert len(page.machines) == 1
    assert [(p.key, p.message[:8]) for p in page.problems] == [("not_object", "value[0]"), ("not_object", "value[1]")]
