"""The experience families on /metrics: their series budget a host, and absence without the section."""

from __future__ import annotations

import dataclasses
import json

from collector.exposition import render_report
from contract.report import AppUsage, parse_report
from tests.conftest import FIXTURES

EXPERIENCE = ("vdi_session_input_delay_seconds", "vdi_session_rtt_seconds", "vdi_session_traffic_bytes_total")


def lines(report) -> list:
    return b"".join(render_report(report, 0.0).chunks).decode().splitlines()


def vda() -> object:
    return parse_report(json.loads((FIXTURES / "reports" / "vda-win-01.json").read_text()))


def test_both_protocols_and_the_default_top_apps_stay_within_60_series() -> None:
    report = vda()
    top = tuple(AppUsage(f"app{i:02d}", 1.0, 1.0, 1) for i in range(10)) + (AppUsage("other", 1.0, 1.0, 1),)
    report = dataclasses.replace(report, sessions=dataclasses.replace(report.sessions, apps=top))
    text = lines(report)
    experience = [x for x in text if x.startswith(EXPERIENCE)]
    apps = [x for x in text if x.startswith("vdi_app_")]
    assert [p.protocol for p in report.experience.protocols] == ["ica", "rdp"]
    assert len(experience) == 9 + 2 * 7 + 2 * 2 == 27
    assert len(apps) == 33
    assert len(experience) + len(apps) <= 60
    assert not any('user="' in x or 'session="' in x or 'instance="' in x for x in experience)


def test_absent_parts_export_nothing() -> None:
    report = vda()
    only_rdp = dataclasses.replace(report.experience, input_delay=None, protocols=report.experience.protocols[1:])
    text = lines(dataclasses.replace(report, experience=only_rdp))
    assert not [x for x in text if x.startswith("vdi_session_input_delay_seconds")]
    assert not [x for x in text if 'protocol="ica"' in x and x.startswith(EXPERIENCE)]
    assert len([x for x in text if x.startswith(EXPERIENCE)]) == 9
    assert not [x for x in lines(dataclasses.replace(report, experience=None)) if x.startswith(EXPERIENCE)]
