"""Golden /metrics for each session source: recorded OS data -> sessions collector -> report -> exposition.

Regenerate after a deliberate change with `make golden` (VDIWATCH_UPDATE_GOLDEN=1) and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.collectors import Context
from agent.collectors.sessions import SessionsCollector
from agent.runner import agent_info, build_report
from contract.report import parse_report
from tests.agent.collectors.test_sessions_collector import config
from tests.agent.sessions.fakes import (
    SESSION_FIXTURES,
    Clock,
    FakeProcPsutil,
    fixture,
    linux_psutil,
    windows_api_and_psutil,
)
from tests.collector import rendering
from tests.conftest import GOLDEN, require_tool


def windows_reading(tmp_path: Path) -> dict:
    api, ps = windows_api_and_psutil()
    ctx = Context(psutil=ps, config=config(), clock=Clock(), platform="windows", extra={"wts_api": api})
    return SessionsCollector(ctx).collect()


def logind_reading(tmp_path: Path) -> dict:
    for name in ("logind", "dev"):
        shutil.copytree(SESSION_FIXTURES / name, tmp_path / name)
    ctx = Context(psutil=linux_psutil(), config=config(), clock=Clock(), platform="linux",
                  extra={"logind_root": str(tmp_path / "logind"), "dev_root": str(tmp_path / "dev"),
                         "systemd_booted": str(tmp_path), "proc_root": str(SESSION_FIXTURES / "proc")})
    return SessionsCollector(ctx).collect()


def utmp_reading(tmp_path: Path) -> dict:
    ps = FakeProcPsutil(users=fixture("utmp.json")["users"])
    ctx = Context(psutil=ps, config=config(), clock=Clock(), platform="linux",
                  extra={"logind_root": str(tmp_path / "none"), "dev_root": str(tmp_path)})
    return SessionsCollector(ctx).collect()


SOURCES = {"windows": windows_reading, "logind": logind_reading, "utmp": utmp_reading}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_sessions_exposition_matches_golden(source: str, tmp_path: Path) -> None:
    reading = SOURCES[source](tmp_path)
    assert reading["source"] == source
    doc = build_report(host=f"{source}-host", site="City Hall", delivery_group="Office Desktops",
                       timestamp=1796083200.0,
                       agent=agent_info(interval=15.0, start_time=1796080000.0, os="windows" if source == "windows"
                                        else "linux", os_release="fixture", version="0.1.0"),
                       statuses={"sessions": {"success": True, "duration_seconds": 0.01}},
                       readings={"sessions": reading})
    report = parse_report(json.loads(json.dumps(doc)))
    text = rendering.exposition([report], 1796083200.0)
    lines = [line for line in text.splitlines(keepends=True)
             if re.match(r"(# (HELP|TYPE) )?vdi_(session|user)", line)]
    got = "".join(lines)
    golden = GOLDEN / f"sessions-{source}.prom"
    if os.environ.get("VDIWATCH_UPDATE_GOLDEN"):
        golden.write_text(got)
    assert got == golden.read_text(), "exposition changed; if deliberate, run `make golden` and review"
    promtool = require_tool("promtool")
    r = subprocess.run([promtool, "check", "metrics"], input=got.encode(), capture_output=True)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
