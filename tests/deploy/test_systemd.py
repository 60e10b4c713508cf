"""The systemd units: `systemd-analyze verify` on copies that point at this checkout's programs."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_tool

UNITS = sorted((ROOT / "config" / "systemd").glob("*.service"))
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_verifies(unit: Path, tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/opt/vdiwatch/bin/", f"{BIN}/"))
    r = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True)
    problems = [line for line in (r.stdout + r.stderr).splitlines() if unit.name in line]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_is_hardened_and_runs_unprivileged(unit: Path) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(unit.read_text())
    service = parser["Service"]
    assert service["User"] == "vdiwatch"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["CapabilityBoundingSet"] == ""
    assert service["ExecStartPre"].endswith("--check-config")
    program = service["ExecStart"].split()[0]
    assert (BIN / Path(program).name).exists(), f"{program} is not a console script of this distribution"


def test_collector_unit_keeps_state_and_reloads() -> None:
    text = (ROOT / "config" / "systemd" / "vdiwatch-collector.service").read_text()
    assert "StateDirectory=vdiwatch" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text


def test_collector_unit_has_room_for_every_connection() -> None:
    """Without LimitNOFILE= systemd gives 1,024 descriptors, below the 4,096 connections allowed."""
    from collector.config import CollectorSection
    from collector.fdlimit import HEADROOM

    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string((ROOT / "config" / "systemd" / "vdiwatch-collector.service").read_text())
    assert int(parser["Service"]["LimitNOFILE"]) >= CollectorSection().max_connections + HEADROOM
