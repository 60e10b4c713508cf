"""The Windows modules type-checked as Windows sees them: `mypy --platform win32` with types-pywin32.

Code that only runs on Windows is never executed here; the type checker is what reads it against
pywin32's and the standard library's Windows stubs (winreg, ctypes.WinDLL, ...).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import List, Tuple

import pytest

from tests.conftest import ROOT

MODULES = ["agent/winservice.py", "agent/winhost.py", "agent/wiring.py", "agent/sessions/windows.py",
           "agent/sessions/processes.py", "agent/config.py", "agent/collectors/capacity.py", "agent/runner.py",
           "agent/cli.py", "agent/experience/pdh.py", "agent/collectors/experience.py", "scripts/build_msi.py"]


def mypy_errors(tmp_path) -> List[Tuple[str, int, str]]:
    pytest.importorskip("mypy", reason="mypy comes with the test extra (pip install -e '.[test]')")
    done = subprocess.run([sys.executable, "-m", "mypy", "--platform", "win32", "--ignore-missing-imports",
                           "--follow-imports=silent", "--no-error-summary", "--show-error-codes",
                           "--cache-dir", str(tmp_path / "cache"), *MODULES],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    errors = []
    for line in done.stdout.splitlines():
        found = re.match(r"(.+?):(\d+): error: (.*?)(  \[[a-z-]+\])?$", line)
        if found:
            errors.append((found.group(1), int(found.group(2)), found.group(3)))
    assert errors or done.returncode == 0, done.stdout + done.stderr
    return errors


def test_windows_modules_type_check_for_win32(tmp_path) -> None:
    assert [f"{path}:{line}: {message}" for path, line, message in mypy_errors(tmp_path)] == []


def test_pywin32_calls_are_checked_against_its_stubs(tmp_path) -> None:
    """Without types-pywin32, --ignore-missing-imports would make every pywin32 call Any, unchecked."""
    pytest.importorskip("mypy", reason="mypy comes with the test extra (pip install -e '.[test]')")
    probe = tmp_path / "probe.py"
    probe.write_text("import win32service\nreveal_type(win32service.SERVICE_RUNNING)\n")
    done = subprocess.run([sys.executable, "-m", "mypy", "--platform", "win32", "--cache-dir", str(tmp_path / "c"),
                           str(probe)], capture_output=True, text=True, timeout=600)
    if "Revealed type is \"int\"" not in done.stdout and "builtins.int" not in done.stdout:
        if os.environ.get("CI"):
            pytest.fail(f"types-pywin32 is required in CI (the test extra):\n{done.stdout}")
        pytest.skip("types-pywin32 is not installed")
