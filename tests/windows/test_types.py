"""The Windows modules type-checked as Windows sees them: `mypy --platform win32` with types-pywin32.

Code that only runs on Windows is never executed here; the type checker is what reads it against
pywin32's and the standard library's Windows stubs (winreg, ctypes.WinDLL, ...).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from typing import List, Set, Tuple

import pytest

from tests.conftest import ROOT

MODULES = ["agent/winservice.py", "agent/sessions/windows.py", "agent/sessions/processes.py", "agent/config.py",
           "agent/collectors/capacity.py", "agent/runner.py", "agent/cli.py"]

# Errors in the service-hosting functions, which another change owns; listed exactly, so the test
# fails both on a new error and when one of these is fixed (then delete its line here).
KNOWN_ELSEWHERE: Set[Tuple[str, str, str]] = {
    ("agent/winservice.py", "load_service_config", '"None" not callable'),
}
HOSTING = {"agent/winservice.py": {"run_as_service", "_service_class", "install", "load_service_config"}}


def function_at(path: str, line: int) -> str:
    """The innermost function defined around `line` of `path` ("" at module level)."""
    around = [node for node in ast.walk(ast.parse((ROOT / path).read_text(encoding="utf-8")))
              if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
              and node.lineno <= line <= (node.end_lineno or node.lineno)]
    return max(around, key=lambda node: node.lineno).name if around else ""


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
    mine: List[str] = []
    elsewhere: Set[Tuple[str, str, str]] = set()
    for path, line, message in mypy_errors(tmp_path):
        function = function_at(path, line)
        if function in HOSTING.get(path, ()):
            elsewhere.add((path, function, message))
        else:
            mine.append(f"{path}:{line} ({function or 'module'}): {message}")
    assert mine == []
    assert elsewhere == KNOWN_ELSEWHERE


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
