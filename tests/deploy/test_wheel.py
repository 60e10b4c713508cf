"""The distribution as an admin meets it: a wheel and an sdist that install into a fresh venv."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_wheel_and_sdist_build_install_and_run(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    wheels = list(dist.glob("vdiwatch-*-py3-none-any.whl"))
    sdists = list(dist.glob("vdiwatch-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "contract/report.py" in names and "collector/server.py" in names and "agent/winservice.py" in names
    assert "broker/cli.py" in names
    assert not any(n.startswith("tests/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheels[0]).read(entry_points).decode()
    for script in ("vdiwatch-agent", "vdiwatch-collector", "vdiwatch-sim", "vdiwatch-broker"):
        assert script in text

    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    py = env / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "--quiet", str(wheels[0])],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for script in ("vdiwatch-agent", "vdiwatch-collector", "vdiwatch-broker"):
        r = subprocess.run([str(env / "bin" / script), "--version"], capture_output=True, text=True, timeout=60,
                           cwd=tmp_path)
        assert r.returncode == 0 and r.stdout.strip() == f"{script} 0.1.0", r.stdout + r.stderr
    r = subprocess.run([str(env / "bin" / "vdiwatch-agent"), "--once", "--print"], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert r.returncode == 0 and '"schema_version": 1' in r.stdout, r.stderr
