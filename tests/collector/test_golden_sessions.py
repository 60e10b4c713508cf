"""Golden /metrics for each session source: recorded OS data -> sessions collector -> report -> exposition.

Regenerate after a deliberate change with `make golden` (VDIWATCH_UPDATE_GOLDEN=1) and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from agent.runner import agent_info, build_report
from contract.report import CollectorStatus, parse_report, report_to_json
from tests.agent.sessions.fakes import logind_collector, utmp_collector, windows_collector
from tests.collector import rendering
from tests.conftest import GOLDEN, require_tool

SOURCES = {
    "windows": lambda tmp_path: windows_collector()[0],
    "logind": logind_collector,
    "utmp": utmp_collector,
}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_sessions_exposition_matches_golden(source: str, tmp_path: Path) -> None:
    reading = SOURCES[source](tmp_path).collect()
    assert reading.source == source
    built = build_report(host=f"{source}-host", site="City Hall", delivery_group="Office Desktops",
                         timestamp=1796083200.0,
                         agent=agent_info(interval=15.0, start_time=1796080000.0, os="windows" if source == "windows"
                                          else "linux", os_release="fixture", version="0.1.0"),
                         statuses=[CollectorStatus("sessions", True, 0.01)], readings={"sessions": reading})
    report = parse_report(json.loads(report_to_json(built)))  # as the collector receives it
    text = rendering.exposition([report], 1796083200.0)
    lines = [line for line in text.splitlines(keepends=True)
             if re.match(r"(# (HELP|TYPE) )?vdi_(session|user|app_)", line)]
    got = "".join(lines)
    golden = GOLDEN / f"sessions-{source}.prom"
    if os.environ.get("VDIWATCH_UPDATE_GOLDEN"):
        golden.write_text(got)
    assert got == golden.read_text(), "exposition changed; if deliberate, run `make golden` and review"
    promtool = require_tool("promtool")
    r = subprocess.run([promtool, "check", "metrics"], input=got.encode(), capture_output=True)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
