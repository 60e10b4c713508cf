"""The layering rules in .importlinter hold: the contract stands alone, the collector never
imports the agent, sources never reach the runner, the store knows nothing of rendering."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_import_contracts_hold() -> None:
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                               "sys.exit(lint_imports(no_cache=True, no_logo=True))"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout
