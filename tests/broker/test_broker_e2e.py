"""End to end: the vdiwatch-broker process against the fake controller; when the controller
fails, the state is held for broker.hold and then dropped, and /metrics says so."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.broker.fakeodata import FakeOData
from tests.conftest import ROOT, free_port, wait_for, wait_until

pytestmark = pytest.mark.slow


def scrape(url: str) -> dict:
    text = requests.get(url, timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_broker_process_holds_then_drops(tmp_path) -> None:
    with FakeOData() as fake:
        port = free_port()
        config = tmp_path / "broker.toml"
        config.write_text(f"""
[broker]
listen = "127.0.0.1:{port}"
interval = 1.0
hold = 3.0
[odata]
url = "{fake.url}"
timeout = 1.0
poll_timeout = 1.0
[auth]
method = "none"
""", encoding="utf-8")
        check = subprocess.run([sys.executable, "-m", "broker", "--config", str(config), "--check-config"],
                               cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        proc = subprocess.Popen([sys.executable, "-m", "broker", "--config", str(config)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            wait_for(url, proc)
            wait_until(lambda: scrape(url).get(("vdi_broker_machines", ())) == 7, 10, "the first poll")
            fake.behaviour = fake.status(500)
            failed_at = time.monotonic()
            got = wait_until(lambda: (m := scrape(url)).get(("vdi_broker_up", ())) == 0 and m, 10, "a failed poll")
            assert got[("vdi_broker_machines", ())] == 7 and got[("vdi_broker_holding", ())] == 1
            got = wait_until(lambda: (m := scrape(url)).get(("vdi_broker_machines", ())) == 0 and m, 10, "the drop")
            assert time.monotonic() - failed_at >= 1.5
            assert not [k for k in got if k[0].startswith("vdi_broker_machine_")]
            assert got[("vdi_broker_poll_failures_total", (("reason", "http_status"),))] >= 2
            fake.behaviour = fake.paged
            wait_until(lambda: scrape(url).get(("vdi_broker_machines", ())) == 7, 10, "the recovery")
        finally:
            proc.terminate()
            out = proc.communicate(timeout=10)[0].decode()
        assert proc.returncode == 0, out
        assert "poll failed (http_status: the controller answered HTTP 500)" in out
        assert out.count("poll failed") == 1  # once per failure, not once per poll
        assert "dropping the 7 machine(s)" in out and "answers again after" in out
        assert "skipped: value[1]: no usable name" in out
