from agent.logons.events import KINDS, Event, event_from_values, parse_event, parse_time
from tests.agent.logons.fixtures import ALL, event_xmls, rendered_values

LSM_21 = """<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System>
<Provider Name="Microsoft-Windows-TerminalServices-LocalSessionManager" Guid="{5D896912-022D-40AA-A3A8-4FA5515C76D7}"/>
<EventID>21</EventID><TimeCreated SystemTime="2025-12-01T08:00:09.7000000Z"/><EventRecordID>201</EventRecordID>
<Correlation/><Channel>Microsoft-Windows-TerminalServices-LocalSessionManager/Operational</Channel></System>
<UserData><EventXML xmlns="Event_NS"><User>CORP\\alice</User><SessionID>3</SessionID><Address>10.1.2.3</Address>
</EventXML></UserData></Event>"""

SEC_4625 = """<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System>
<EventID>4625</EventID><TimeCreated SystemTime="2015-09-08T22:54:54.962511700Z"/><EventRecordID>229977</EventRecordID>
<Channel>Security</Channel></System><EventData><Data Name="Status">0xc0000234</Data><Data Name="SubStatus">0x0</Data>
<Data Name="LogonType">2</Data></EventData></Event>"""


def test_parse_time_keeps_microseconds_of_the_100ns_digits():
    assert parse_time("2015-09-08T22:54:54.962511700Z") == 1441752894.962511
    assert parse_time("2025-12-01T08:00:00Z") == 1764576000.0
    assert parse_time("yesterday") is None


def test_lsm_logon_from_userdata():
    assert parse_event(LSM_21) == Event(kind="session_logon", record_id=201, time_seconds=1764576009.7,
                                        session_id=3, user="CORP\\alice")


def test_failed_logon_from_eventdata():
    e = parse_event(SEC_4625)
    assert (e.kind, e.status, e.sub_status, e.logon_type) == ("logon_failure", 0xC0000234, 0, 2)


def test_unknown_malformed_and_incomplete_events_are_none():
    assert parse_event(LSM_21.replace("<EventID>21<", "<EventID>41<")) is None  # not used
    assert parse_event(LSM_21.replace("Operational</Channel>", "Admin</Channel>")) is None
    assert parse_event("<Event><System>") is None
    assert parse_event(LSM_21.replace("<EventRecordID>201</EventRecordID>", "")) is None
    assert parse_event(LSM_21.replace('SystemTime="2025', 'SystemTime="x2025')) is None


def test_every_fixture_event_parses():
    for name in ALL:
        kinds = [parse_event(x) for x in event_xmls(name)]
        assert None not in kinds, name


def test_group_policy_start_and_end_share_the_activity_id():
    events = [parse_event(x) for x in event_xmls("server_vda.xml")]
    gp = [e for e in events if e.kind.startswith("group_policy")]
    assert gp[0].activity_id == gp[1].activity_id == "6B2A1C4E-0001-4E5A-9C11-5D2E7F00A001"
    assert gp[0].user == "CORP\\alice"


def test_disconnect_reason_from_event_40():
    events = [parse_event(x) for x in event_xmls("server_vda.xml")]
    (reason,) = [e for e in events if e.kind == "disconnect_reason"]
    assert (reason.session_id, reason.reason_code) == (3, 5)


def test_rendered_values_give_the_same_record_as_the_xml():
    """The agent renders values (EvtRenderEventValues), the fixtures hold XML: both must make one record."""
    seen = set()
    for name in ALL:
        for xml in event_xmls(name):
            from_xml = parse_event(xml)
            assert event_from_values(rendered_values(xml)) == from_xml, (name, from_xml)
            seen.add(from_xml.kind)
    assert seen == set(KINDS.values())  # every kind of event the agent knows is in the fixtures


def test_values_of_a_4624_and_an_event_40():
    xml = [x for x in event_xmls("server_vda_sessions.xml") if ">7002<" in x][0]
    e = event_from_values(rendered_values(xml))
    assert (e.kind, e.logon_type, e.account_domain, e.account_sid) == ("logon_success", 2, "Window Manager",
                                                                       "S-1-5-90-0-5")
    forty = [x for x in event_xmls("rds_host_sessions.xml") if ">954<" in x][0]
    assert event_from_values(rendered_values(forty)).reason_code == 4498


def test_values_that_do_not_fit_are_none():
    values = rendered_values(event_xmls("server_vda.xml")[0])
    assert event_from_values(values[:-1]) is None  # not the context's length
    assert event_from_values([(None, 0)] * len(values)) is None  # no channel: not an event used
    unknown = list(values)
    unknown[1] = (41, 6)
    assert event_from_values(unknown) is None
    no_time = list(values)
    no_time[3] = (None, 0)
    assert event_from_values(no_time) is None
