"""The real collector as an operator meets it: tokens, TLS, restarts, refusing to be exposed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import requests

from collector.auth import hash_token
from tests.conftest import CollectorProcess, report_fixture, require_tool, wait_until

pytestmark = pytest.mark.slow


def token_config(tmp_path, site_a_token: str, site_b_token: str, extra: str = "") -> str:
    return f"""
[auth]
[[auth.tokens]]
sha256 = "{hash_token(site_a_token)}"
site = "City Hall"

[[auth.tokens]]
sha256 = "{hash_token(site_b_token)}"
site = "Library"
{extra}
"""


def test_unauthenticated_refused_and_site_a_cannot_push_for_b(tmp_path) -> None:
    proc = CollectorProcess(tmp_path, token_config(tmp_path, "tok-a", "tok-b")).start()
    try:
        city_hall = report_fixture("vda-win-01.json")
        assert proc.post(city_hall).status_code == 401
        r = proc.post(city_hall, {"Authorization": "Bearer tok-b"})
        assert r.status_code == 403 and r.json()["reason"] == "forbidden"
        assert proc.post(city_hall, {"Authorization": "Bearer tok-a"}).status_code == 200
        text = proc.metrics()
        assert 'vdi_collector_reports_rejected_total{reason="unauthenticated"} 1.0' in text
        assert 'vdi_collector_reports_rejected_total{reason="forbidden"} 1.0' in text
        assert "tok-a" not in proc.log() and "tok-b" not in proc.log()
    finally:
        proc.stop()


def test_refuses_non_loopback_without_auth_unless_insecure(tmp_path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("")
    run = lambda *extra: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "collector", "--config", str(cfg), "--listen", "0.0.0.0:1", "--check-config", *extra],
        capture_output=True, text=True)
    r = run()
    assert r.returncode == 2 and "without push authentication" in r.stderr
    cfg.write_text("[auth]\ninsecure = true\n")
    assert run().returncode == 0


def test_https_with_self_made_ca_and_client_certificates(tmp_path) -> None:
    openssl = require_tool("openssl")

    def sh(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=tmp_path)

    sh("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=vdiwatch test CA",
       "-keyout", "ca.key", "-out", "ca.pem")
    for name, cn in (("server", "localhost"), ("client", "vda-win-01")):
        sh("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
           "-keyout", f"{name}.key", "-out", f"{name}.csr")
        ext = tmp_path / f"{name}.ext"
        ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n" if name == "server" else "")
        sh("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
           "-days", "2", "-out", f"{name}.pem", "-extfile", str(ext))
    config = f"""
[tls]
cert_file = "{tmp_path}/server.pem"
key_file = "{tmp_path}/server.key"
client_ca_file = "{tmp_path}/ca.pem"
"""
    proc = CollectorProcess(tmp_path, config)
    proc.url = proc.url.replace("http://", "https://")
    proc.proc = subprocess.Popen(proc.args, stdout=open(proc.log_path, "wb"), stderr=subprocess.STDOUT)
    proc._log = open(proc.log_path, "ab")
    try:
        ca = str(tmp_path / "ca.pem")
        client = (str(tmp_path / "client.pem"), str(tmp_path / "client.key"))
        deadline = time.monotonic() + 15
        while True:
            try:
                r = requests.get(f"{proc.url}/healthz", verify=ca, cert=client, timeout=2)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert r.status_code == 200
        r = requests.post(f"{proc.url}/api/v1/reports", data=report_fixture("vda-win-01.json"),
                          headers={"Content-Type": "application/json"}, verify=ca, cert=client, timeout=5)
        assert r.status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{proc.url}/healthz", timeout=5)  # server not in the system store
        with pytest.raises(requests.RequestException):
            requests.get(f"{proc.url}/healthz", verify=ca, timeout=5)  # no client certificate
    finally:
        proc.stop()


def test_survives_sigkill_with_hosts_in_last_state(tmp_path) -> None:
    config = f'[collector]\nsnapshot_file = "{tmp_path}/hosts.snapshot"\nsnapshot_interval = 0.5\n'
    proc = CollectorProcess(tmp_path, config).start()
    for name in ("vda-win-01.json", "lvda-07.json", "vda-win-02-goodbye.json"):
        assert proc.post(report_fixture(name)).status_code == 200
    before = proc.metrics()
    time.sleep(1.5)  # at least one periodic snapshot
    proc.stop(signal.SIGKILL)
    again = CollectorProcess(tmp_path, config)
    again.port, again.url = proc.port, proc.url
    again.args = proc.args
    again.start()
    try:
        after = again.metrics()
        for host, state in (("vda-win-01", "up"), ("lvda-07", "up"), ("vda-win-02", "stopped")):
            line = f'vdi_host_state{{host="{host}",'
            assert line in after
            assert any(ln.startswith(line) and f'state="{state}"}} 1' in ln for ln in after.splitlines())
        keep = lambda t: sorted(ln for ln in t.splitlines() if ln.startswith("vdi_host_"))  # noqa: E731
        assert keep(after) == keep(before)
        assert "restored 3 host(s)" in again.log()
    finally:
        again.stop()


def test_sigterm_writes_final_snapshot(tmp_path) -> None:
    config = f'[collector]\nsnapshot_file = "{tmp_path}/hosts.snapshot"\nsnapshot_interval = 3600\n'
    proc = CollectorProcess(tmp_path, config).start()
    assert proc.post(report_fixture("lvda-07.json")).status_code == 200
    assert proc.stop(signal.SIGTERM) == 0
    assert b"lvda-07" in (tmp_path / "hosts.snapshot").read_bytes()


def test_goodbye_turns_host_stopped_not_down(collector_process: CollectorProcess) -> None:
    doc = json.loads(report_fixture("lvda-07.json"))
    assert collector_process.post(json.dumps(doc).encode()).status_code == 200
    doc["goodbye"] = True
    assert collector_process.post(json.dumps(doc).encode()).status_code == 200
    text = collector_process.metrics()
    assert 'vdi_host_state{host="lvda-07",site="Library",delivery_group="Linux \\"Dev\\" Desktops\\\\Pool",' \
           'state="stopped"} 1' in text
    assert 'vdi_agent_up{host="lvda-07"' not in text  # stopped, not down


def test_sighup_reloads_tokens_without_dropping_hosts(tmp_path) -> None:
    fast = "[collector]\nmin_report_interval = 0.0\n"
    proc = CollectorProcess(tmp_path, token_config(tmp_path, "tok-a", "tok-b", fast)).start()
    try:
        assert proc.post(report_fixture("vda-win-01.json"), {"Authorization": "Bearer tok-a"}).status_code == 200
        library = report_fixture("lvda-07.json")
        assert proc.post(library, {"Authorization": "Bearer tok-new"}).status_code == 401
        proc.config_path.write_text(token_config(tmp_path, "tok-a", "tok-new", fast))
        proc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "SIGHUP: reloaded" in proc.log(), 10, "the reload in the log")
        assert proc.post(library, {"Authorization": "Bearer tok-new"}).status_code == 200
        assert proc.post(library, {"Authorization": "Bearer tok-b"}).status_code == 401  # removed token
        assert 'vdi_host_state{host="vda-win-01"' in proc.metrics()  # state kept
        proc.config_path.write_text("[auth]\ntokens = 5\n")
        proc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "keeping the running configuration" in proc.log(), 10, "the refused reload in the log")
        assert proc.post(library, {"Authorization": "Bearer tok-new"}).status_code == 200
        assert proc.proc.poll() is None
    finally:
        proc.stop()
