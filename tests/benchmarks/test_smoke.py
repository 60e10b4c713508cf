"""Small runs of the benchmarks, so that they cannot rot. No timing is asserted here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, require_tool

pytestmark = pytest.mark.slow


def test_collector_benchmark_smoke(tmp_path) -> None:
    require_tool("prometheus-pushgateway")
    out = tmp_path / "rows.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.collector_bench", "--hosts", "200", "--scrapes", "2",
                        "--ingest-seconds", "1", "--clients", "4", "--churn-rounds", "2", "--json", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert rows[0]["hosts"] == 200 and rows[0]["series"] == 200 * 113
    for key in ("vdiwatch_scrape_s", "vdiwatch_scrape_gzip_s", "generate_latest_s", "pushgateway_scrape_s",
                "pushgateway_push_s", "ingest_reports_per_s", "memory_per_host_bytes"):
        assert rows[0][key] > 0, key
    assert "| 200 | 22,600 |" in r.stdout
    assert len(rows[1]["churn_rss_mib"]) == 2


def test_agent_benchmark_smoke(tmp_path) -> None:
    require_tool("prometheus-node-exporter")
    out = tmp_path / "agent.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.agent_bench", "--processes", "100", "--collections", "3",
                        "--json", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["agent"]["processes_seen"] >= 100 and result["agent"]["sessions_seen"] == 100
    assert result["agent"]["cpu_per_collection_s"] > 0 and result["agent"]["max_rss_bytes"] > 0
    assert result["node_exporter"]["cpu_per_scrape_s"] > 0
    assert "| vdiwatch-agent |" in r.stdout and "| node_exporter (per scrape) |" in r.stdout


def test_agent_benchmark_with_logon_events_smoke(tmp_path) -> None:
    out = tmp_path / "agent.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.agent_bench", "--processes", "50", "--collections", "3",
                        "--logon-events", "200", "--json", str(out)], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    agent = json.loads(out.read_text())["agent"]
    assert "logons" in agent["collectors"] and agent["logons_counted"] > 0
    assert 0 < agent["logons_cpu_per_collection_s"] < agent["cpu_per_collection_s"]
    assert "logons collector alone:" in r.stdout
def test_agent_benchmark_experience_side_by_side_smoke(tmp_path) -> None:
    out = tmp_path / "experience.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.agent_bench", "--processes", "100", "--collections", "3",
                        "--in-sessions", "--experience", "--rounds", "1", "--json", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    without, with_ = result["runs"]
    assert (without["experience"], with_["experience"]) == (False, True)
    assert "experience" in with_["collectors"] and "experience" not in without["collectors"]
    assert with_["input_delay_observations"] == 100 * (3 + 2)  # a session each collection, priming and last too
    assert without["input_delay_observations"] == 0 and with_["cpu_per_collection_s"] > 0
    assert "| 1 | with |" in r.stdout and "median" in r.stdout
