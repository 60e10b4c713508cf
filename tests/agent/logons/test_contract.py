"""The `logons` reading in the contract: round trip, what is refused, and an older agent without it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from agent.logons.matching import LogonMatcher
from agent.logons.totals import LogonTotals
from contract.report import LOGON_DURATION_BUCKETS, ReportError, parse_report, report_to_doc
from tests.agent.logons.test_matching import events

BASE = {"schema_version": 1, "host": "vda-srv-01", "site": "City Hall", "delivery_group": "Office",
        "timestamp_seconds": 1764662400.0,
        "agent": {"version": "0.1.0", "os": "windows", "interval_seconds": 15, "start_time_seconds": 1764576000.0}}

LOGONS = {"duration_buckets": [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2], "duration_sum_seconds": 121.0, "duration_count": 2,
          "phases": {"profile": {"sum_seconds": 103.5, "count": 2}, "group_policy": {"sum_seconds": 6.0, "count": 2}},
          "phases_missing": {"other": 1}, "failures": {"bad_password": 3}, "events_skipped": 0}


def report(logons):
    return dict(BASE, readings={"logons": logons})


def problems(logons):
    with pytest.raises(ReportError) as err:
        parse_report(report(logons))
    return [(p.path, p.reason) for p in err.value.problems]


def test_round_trip_fills_every_phase_and_reason():
    r = parse_report(report(LOGONS))
    assert r.logons.duration_buckets == (0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2)
    assert dict(r.logons.phase_sum_seconds) == {"profile": 103.5, "group_policy": 6.0, "shell": 0.0, "other": 0.0}
    assert dict(r.logons.failures)["bad_password"] == 3 and dict(r.logons.failures)["other"] == 0
    assert parse_report(json.loads(json.dumps(report_to_doc(r)))) == r


def test_what_the_agent_builds_round_trips():
    totals = LogonTotals()
    for logon in LogonMatcher().add(events("server_vda.xml") + events("desktop_vda.xml"), now=1764662400.0):
        totals.add_logon(logon)
    totals.add_failure("locked_out")
    built = dataclasses.replace(parse_report(BASE), logons=totals.reading())
    assert parse_report(json.loads(json.dumps(report_to_doc(built)))) == built
    assert built.logons.duration_count == 3


def test_an_older_agent_without_logons_stays_valid():
    assert parse_report(BASE).logons is None


def test_an_agent_without_successes_and_disconnect_reasons_stays_valid_and_sends_none():
    r = parse_report(report(LOGONS))
    assert (r.logons.successes, r.logons.disconnect_reasons) == (None, None)  # unknown, not zero
    assert "successes" not in report_to_doc(r)["readings"]["logons"]


def test_successes_and_disconnect_reasons_round_trip_with_every_reason():
    r = parse_report(report(dict(LOGONS, successes=40, disconnect_reasons={"network": 3, "client": 2})))
    assert r.logons.successes == 40
    assert r.logons.disconnect_reasons == (("client", 2), ("time_limit", 0), ("replaced", 0), ("network", 3),
                                           ("server", 0), ("licensing", 0), ("other", 0))
    assert parse_report(json.loads(json.dumps(report_to_doc(r)))) == r


def test_bad_successes_and_disconnect_reasons_are_refused_with_their_path():
    assert problems(dict(LOGONS, successes=-1)) == [("readings.logons.successes", "out_of_range")]
    assert problems(dict(LOGONS, successes="12")) == [("readings.logons.successes", "wrong_type")]
    assert problems(dict(LOGONS, disconnect_reasons={"wifi": 1})) == [
        ("readings.logons.disconnect_reasons.wifi", "invalid_value")]
    assert problems(dict(LOGONS, disconnect_reasons={"network": -2})) == [
        ("readings.logons.disconnect_reasons.network", "out_of_range")]
    assert problems(dict(LOGONS, disconnect_reasons=[1, 2])) == [("readings.logons.disconnect_reasons",
                                                                  "wrong_type")]


def test_bad_logons_are_refused_with_their_path():
    assert problems(dict(LOGONS, duration_buckets=[1, 2])) == [("readings.logons.duration_buckets", "invalid_value")]
    assert problems(dict(LOGONS, duration_buckets=[2, 1] + [2] * (len(LOGON_DURATION_BUCKETS) - 2))) == [
        ("readings.logons.duration_buckets", "invalid_value")]
    assert problems(dict(LOGONS, duration_buckets=[3] * len(LOGON_DURATION_BUCKETS))) == [
        ("readings.logons.duration_buckets", "invalid_value")]  # more than duration_count
    assert problems(dict(LOGONS, failures={"typo": 1})) == [("readings.logons.failures.typo", "invalid_value")]
    assert problems(dict(LOGONS, phases={"login_script": {"sum_seconds": 1, "count": 1}})) == [
        ("readings.logons.phases.login_script", "invalid_value")]
    assert problems(dict(LOGONS, duration_sum_seconds=-1)) == [("readings.logons.duration_sum_seconds", "out_of_range")]
    assert ("readings.logons.duration_buckets[3]", "invalid_value") in problems(
        dict(LOGONS, duration_buckets=[0, 0, 0, "1", 1, 1, 1, 1, 2, 2, 2]))
