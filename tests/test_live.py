"""The real agent on this machine against the real collector, over real HTTP."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, CollectorProcess

pytestmark = pytest.mark.slow


def meminfo_total_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def agent(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_agent_once_reports_this_hosts_memory(collector_process: CollectorProcess) -> None:
    r = agent("--once", "--collector", collector_process.url)
    assert r.returncode == 0, r.stderr
    text = collector_process.metrics()
    totals = re.findall(r"^vdi_host_memory_total_bytes\{[^}]*\} (\S+)$", text, re.M)
    assert len(totals) == 1
    assert float(totals[0]) == meminfo_total_bytes()
    assert re.search(r'^vdi_agent_up\{[^}]*\} 1$', text, re.M)


def test_once_print_pushes_nothing_and_prints_a_valid_report(collector_process: CollectorProcess) -> None:
    from contract.report import parse_report
    r = agent("--once", "--print", "--collector", collector_process.url)
    assert r.returncode == 0, r.stderr
    report = parse_report(json.loads(r.stdout))
    assert report.memory.total_bytes == meminfo_total_bytes()
    assert "vdi_agent_up{" not in collector_process.metrics()


def test_agent_stopped_with_sigterm_leaves_host_stopped_not_down(tmp_path) -> None:
    proc = CollectorProcess(tmp_path, "[collector]\nmin_report_interval = 0\n").start()
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[agent]\ncollector_url = "{proc.url}"\ninterval = 1.0\n')
    running = subprocess.Popen([sys.executable, "-m", "agent", "--config", str(cfg)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while "vdi_agent_up{" not in proc.metrics():
            assert time.monotonic() < deadline and running.poll() is None, "agent never reported"
            time.sleep(0.2)
        running.send_signal(signal.SIGTERM)
        assert running.wait(15) == 0
        text = proc.metrics()
        assert re.search(r'^vdi_host_state\{[^}]*state="stopped"\} 1$', text, re.M), text
        assert "vdi_agent_up{" not in text
    finally:
        if running.poll() is None:
            running.kill()
        proc.stop()
