"""The real collector process over real HTTP: refusals, unchanged exposition, clean stop."""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest
import requests

from tests.conftest import CollectorProcess, report_fixture

pytestmark = pytest.mark.slow


def host_lines(text: str) -> list:
    return [line for line in text.splitlines() if line.startswith("vdi_") and not line.startswith("vdi_collector_")]


def test_malformed_report_gets_400_naming_field_and_metrics_unchanged(collector_process: CollectorProcess) -> None:
    assert collector_process.post(report_fixture("lvda-07.json")).status_code == 200
    before = host_lines(collector_process.metrics())
    doc = json.loads(report_fixture("lvda-07.json"))
    doc["readings"]["memory"]["available_bytes"] = "plenty"
    r = collector_process.post(json.dumps(doc).encode())
    assert r.status_code == 400
    assert r.json()["problems"][0]["field"] == "readings.memory.available_bytes"
    after = collector_process.metrics()
    assert host_lines(after) == before
    assert 'vdi_collector_reports_rejected_total{reason="wrong_type"} 1.0' in after


def test_oversized_body_refused_before_reading(tmp_path) -> None:
    proc = CollectorProcess(tmp_path, config="[collector]\nmax_body_bytes = 1000\n").start()
    try:
        r = proc.post(b"x" * 5000)
        assert r.status_code == 413
        assert r.json()["reason"] == "body_too_large"
    finally:
        proc.stop()


def test_missing_content_length_gets_411(collector_process: CollectorProcess) -> None:
    with socket.create_connection(("127.0.0.1", collector_process.port), timeout=5) as s:
        s.sendall(b"POST /api/v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 411")


def test_sigterm_stops_cleanly(tmp_path) -> None:
    proc = CollectorProcess(tmp_path).start()
    assert proc.stop(signal.SIGTERM) == 0
    assert "stopped" in proc.log()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{proc.url}/healthz", timeout=1)


def test_config_error_exits_2_naming_file_and_key(tmp_path) -> None:
    import subprocess
    import sys
    bad = tmp_path / "bad.toml"
    bad.write_text('[collector]\nlisten = 9847\nexpire_afterr = 5\n')
    r = subprocess.run([sys.executable, "-m", "collector", "--config", str(bad), "--check-config"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert str(bad) in r.stderr
    assert "collector.listen: must be a string" in r.stderr
    assert "collector.expire_afterr: unknown key" in r.stderr


def test_example_config_is_valid_and_matches_defaults() -> None:
    from agent.configfile import load
    from collector.config import CollectorConfig
    from tests.conftest import ROOT
    assert load(str(ROOT / "config" / "collector.toml"), CollectorConfig) == CollectorConfig()


def test_idle_and_slow_connections_do_not_block_others_and_time_out(tmp_path) -> None:
    proc = CollectorProcess(tmp_path, "[collector]\nrequest_timeout = 1.0\n").start()
    idle = []
    try:
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", proc.port), timeout=5))
        slow = idle[0]
        slow.sendall(b"POST /api/v1/reports HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        assert proc.post(report_fixture("lvda-07.json")).status_code == 200
        time.sleep(1.5)
        slow.settimeout(2)
        assert slow.recv(100) == b""  # closed by the server after request_timeout
        assert proc.post(report_fixture("vda-win-01.json")).status_code == 200
    finally:
        for s in idle:
            s.close()
        proc.stop()


def test_keep_alive_and_expect_continue(collector_process: CollectorProcess) -> None:
    body = report_fixture("lvda-07.json")
    with socket.create_connection(("127.0.0.1", collector_process.port), timeout=5) as s:
        s.sendall(b"POST /api/v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(body)
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 200") and b"Connection: keep-alive" in first
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
