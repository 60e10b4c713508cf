"""A host's logons on /api/v1/hosts and on its status page, from the RDS fixture host's readings.logons."""

from __future__ import annotations

import json

from collector.status import _logons, logon_summary
from contract.report import parse_report
from tests.conftest import FIXTURES


def rdsh03():
    return parse_report(json.loads((FIXTURES / "reports" / "rdsh-03-maintenance.json").read_text()))


def test_logon_summary_of_the_fixture_host():
    assert logon_summary(rdsh03().logons) == {
        "count": 2, "average_seconds": 60.5,
        "phase_average_seconds": {"profile": 51.8, "group_policy": 3.0, "shell": 5.0, "other": 0.8},
        "failures": 10}
    assert logon_summary(None) is None


def test_the_host_page_line():
    assert _logons(logon_summary(rdsh03().logons)) == (
        "2 since the agent started, 60.5 s on average (profile 51.8 s, group_policy 3 s, shell 5 s, other 0.8 s);"
        " 10 failed")
    assert _logons(None) == "not reported"
    assert _logons({"count": 0, "average_seconds": None, "phase_average_seconds": {}, "failures": 2}) == (
        "none measured since the agent started; 2 failed")
