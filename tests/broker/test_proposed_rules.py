"""The PROPOSED rules of docs/broker.md load in promtool and do what the page says."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import require_tool

HERE = Path(__file__).resolve().parent


def test_proposed_rules_check_and_pass_their_unit_tests() -> None:
    promtool = require_tool("promtool")
    check = subprocess.run([promtool, "check", "rules", str(HERE / "proposed_rules.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run([promtool, "test", "rules", "proposed_rules_test.yaml"], cwd=HERE,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
