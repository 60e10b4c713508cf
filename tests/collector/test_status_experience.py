"""A host's user experience and top applications on /api/v1/hosts and on its status page, from fixture reports."""

from __future__ import annotations

import json

from collector.status import _apps, _experience, experience_summary, top_apps
from contract.report import parse_report
from tests.conftest import FIXTURES


def fixture(name: str):
    return parse_report(json.loads((FIXTURES / "reports" / name).read_text()))


def test_experience_of_the_rds_fixture_host():
    # input delay buckets 40, 88, 90, 90, 90, 90 of 90 (0.05 .. 2 s): none over 0.5 s; rdp round trips 3.125 s / 90
    assert experience_summary(fixture("rdsh-03-maintenance.json").experience) == {
        "input_delay_average_seconds": round(5.375 / 90, 3), "input_delay_poor_ratio": 0.0,
        "rtt_average_seconds": {"rdp": round(3.125 / 90, 3)}}
    assert experience_summary(None) is None


def test_poor_share_counts_the_observations_over_half_a_second():
    # vda-win-01: buckets 120, 402, 431, 436, 437, 437 at 0.05, 0.15, 0.3, 0.5, 1, 2 s of 437: one over 0.5 s
    assert experience_summary(fixture("vda-win-01.json").experience)["input_delay_poor_ratio"] == 0.0023


def test_the_host_page_lines():
    line = _experience(experience_summary(fixture("rdsh-03-maintenance.json").experience))
    assert line == "input delay 0.06 s on average, 0.0 % poor or worse; round trip rdp 0.035 s since the agent started"
    assert _experience(None) == "not reported"
    assert _experience({"input_delay_average_seconds": None, "input_delay_poor_ratio": None,
                        "rtt_average_seconds": {}}) == "nothing measured yet"


def test_top_applications_by_memory_without_other():
    sessions = fixture("vda-win-01.json").sessions
    apps = top_apps(sessions)
    expected = sorted((a for a in sessions.apps if a.app != "other"), key=lambda a: -a.memory_bytes)[:3]
    assert [a["app"] for a in apps] == [a.app for a in expected]
    assert _apps(apps).startswith(f'{expected[0].app} ')
    assert top_apps(None) is None and _apps(None) == "not reported" and _apps([]) == "none"
