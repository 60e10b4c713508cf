"""The experience collector on the documented counter shapes of a server VDA, a desktop VDA and an RDS host:
literal readings after two collections, absent counter sets, the contract's round trip."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from agent.collectors import Context
from agent.collectors.experience import ExperienceCollector
from agent.experience.counters import ALL_PATHS
from contract.report import Histogram, parse_report, report_to_doc
from tests.agent.experience.fakes import FakeReader, collector, fixture
from tests.agent.logons.test_contract import BASE


def two_readings(name: str):
    c, reader = collector(name)
    first = c.collect()
    return first, c.collect(), reader


def test_server_vda_two_hdx_sessions() -> None:
    first, r, _ = two_readings("pdh_server_vda.json")
    # first collection: input delay 16 and 47 ms; ICA 38 ms, and 55 ms (the average: nothing recorded last yet)
    assert first.input_delay == Histogram((2, 2, 2, 2, 2, 2), 0.063, 2)
    assert [p.protocol for p in first.protocols] == ["ica", "rdp"]
    assert first.protocols[0].rtt == Histogram((1, 2, 2, 2), 0.093, 2)
    assert first.protocols[0].received_bytes == 0  # a rate needs two collections
    # second: 180 and 62 ms; 44 and 120 ms; 10 kbit/s in and 256 kbit/s out for 15 s
    assert r.input_delay == Histogram((2, 3, 4, 4, 4, 4), 0.305, 4)
    ica, rdp = r.protocols
    assert ica.rtt == Histogram((2, 3, 4, 4), 0.257, 4)
    assert (ica.received_bytes, ica.sent_bytes) == (18750.0, 480000.0)
    assert rdp.rtt == Histogram((0, 0, 0, 0), 0.0, 0) and rdp.received_bytes == rdp.sent_bytes == 0  # set, no session


def test_desktop_vda_console_hdx_session() -> None:
    _, r, _ = two_readings("pdh_desktop_vda.json")
    assert r.input_delay == Histogram((0, 0, 1, 1, 2, 2), 0.95, 2)  # 250 and 700 ms: acceptable, then poor
    ica = r.protocols[0]
    assert ica.rtt == Histogram((2, 2, 2, 2), 0.052, 2)  # the instance names no WinStation: still one session
    assert (ica.received_bytes, ica.sent_bytes) == (15000.0, 750000.0)


def test_rds_host_without_citrix(caplog) -> None:
    caplog.set_level(logging.INFO, logger="agent.collectors.experience")
    _, r, reader = two_readings("pdh_rds_host.json")
    assert r.input_delay == Histogram((2, 3, 3, 3, 3, 3), 2.571, 4)  # 2.4 s: bad, above every bound
    assert [p.protocol for p in r.protocols] == ["rdp"]  # no ICA Session counters: no ica at all
    rdp = r.protocols[0]
    assert rdp.rtt == Histogram((2, 3, 3, 4), 0.362, 4)  # TCP 68 and 250 ms for the first, UDP 23 and 21 ms
    assert (rdp.received_bytes, rdp.sent_bytes) == (45000.0, 900000.0)  # since the first collection only
    said = [m for m in caplog.messages if "ica is not reported" in m]
    assert len(said) == 1 and "no Citrix VDA" in said[0]
    assert not reader.closed


def test_missing_counter_sets_are_said_once_and_cost_nothing_each_interval(caplog) -> None:
    doc = fixture("pdh_rds_host.json")
    reader = FakeReader(dict(doc, missing=doc["missing"] + [r"\User Input Delay per Session(*)\Max Input Delay"]))
    c = ExperienceCollector(reader, lambda: {"rdp-tcp#0": 2, "rdp-tcp#1": 3}, clock=lambda: 0.0)
    caplog.set_level(logging.INFO, logger="agent.collectors.experience")
    first, second = c.collect(), c.collect()  # a Windows Server 2016 host: RDP only
    assert first.input_delay is None and second.input_delay is None
    assert second.protocols[0].rtt.count == 4
    assert len([m for m in caplog.messages if "input_delay is not reported" in m]) == 1


def test_a_host_with_none_of_the_counter_sets_sends_no_section() -> None:
    reader = FakeReader(dict(fixture("pdh_rds_host.json"), missing=list(ALL_PATHS)))  # Windows Server 2008 R2
    c = ExperienceCollector(reader, dict, clock=lambda: 0.0)
    assert c.collect() is None and c.collect() is None
    assert reader.closed and reader.collects == 0


def test_sessions_that_cannot_be_listed_leave_instances_as_their_own_sessions() -> None:
    doc = fixture("pdh_rds_host.json")
    reader = FakeReader(doc)

    def fails():
        raise OSError("WTSEnumerateSessionsExW failed")

    c = ExperienceCollector(reader, fails, clock=lambda: 0.0)
    r = c.collect()
    assert r.input_delay.count == 2 and r.protocols[0].rtt.count == 2


def test_what_the_collector_reads_survives_the_contract() -> None:
    _, r, _ = two_readings("pdh_server_vda.json")
    built = dataclasses.replace(parse_report(BASE), experience=r)
    assert parse_report(json.loads(json.dumps(report_to_doc(built)))) == built
    assert parse_report(BASE).experience is None  # an older agent without it stays valid


def test_not_built_off_windows() -> None:
    with pytest.raises(RuntimeError, match="Windows performance counters"):
        ExperienceCollector.from_context(Context(psutil=None, os="linux"))


def test_only_sessions_with_a_user_name_their_winstation() -> None:
    from agent.collectors.experience import wts_winstations
    from tests.agent.sessions.fakes import FakeWtsApi

    # server VDA: Services, two listeners, the console at its logon screen, two HDX sessions, one disconnected
    assert wts_winstations(FakeWtsApi("wts_server_vda.json"))() == {"ica-cgp#0": 2, "ica-cgp#1": 3}
    assert wts_winstations(FakeWtsApi("wts_desktop_vda.json"))() == {"console": 1}
