"""The command line: exit codes, the contract round trip on this machine, and delivery to a real collector."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from agent import __version__
from agent.cli import main
from agent.config import AgentConfig, AgentSection, resolve_host
from agent.wiring import build_agent
from collector.selfmetrics import SelfMetrics
from collector.server import Api, Request
from collector.store import HostStore
from contract.report import parse_report
from tests.agent import fakepsutil
from tests.conftest import ROOT, wait_until

HOST_COLLECTORS = {"cpu", "load", "memory", "filesystems", "disks", "interfaces", "system"}


@pytest.fixture
def collector() -> Iterator[Tuple[str, HostStore]]:
    """The collector's API and store behind a plain stdlib HTTP server on a free loopback port.

    Only `Api.handle` is the collector's: the agent is tested against the real
    edge (gzip, authentication, contract) without depending on its transport.
    """
    store = HostStore()
    api = Api(store, SelfMetrics(store, process_metrics=False))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            response = api.handle(Request("POST", self.path, headers, body))
            payload = response.payload()
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", store
    server.shutdown()
    server.server_close()


def test_once_print_on_this_machine_passes_the_contract(capsys) -> None:
    assert main(["--once", "--print"]) == 0
    doc = json.loads(capsys.readouterr().out)
    report = parse_report(doc)  # raises ReportError listing every problem
    assert report.host == resolve_host("")
    assert report.agent.version == __version__ and report.agent.interval_seconds == 15.0
    ok = {c.name for c in report.collectors if c.success}
    assert HOST_COLLECTORS <= ok, report.collectors
    assert report.cpu.count >= 1 and report.memory.total_bytes > 0 and report.system.processes > 0


def test_roots_from_the_command_line_reach_the_sessions_source(tmp_path: Path, capsys) -> None:
    """An agent in a container: logind's sessions under --run-root, terminals under --dev-root."""
    from tests.agent.sessions.fakes import logind_tree
    logind_tree(tmp_path)
    assert main(["--once", "--print", "--run-root", str(tmp_path / "run") + "/",
                 "--dev-root", str(tmp_path / "dev")]) == 0
    report = parse_report(json.loads(capsys.readouterr().out))
    assert report.sessions.source == "logind" and report.sessions.total == 7


def test_check_config_accepts_a_good_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nsite = "City Hall"\nhost = "vda-01"\n')
    assert main(["--config", str(path), "--check-config"]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_config_accepts_a_file_with_a_byte_order_mark(tmp_path: Path, capsys) -> None:
    """Windows PowerShell 5.1's `Set-Content -Encoding UTF8` and Notepad start the file with a BOM."""
    path = tmp_path / "agent.toml"
    text = '[agent]\r\nsite = "Mairie de Lyon \u00e9t\u00e9"\r\nhost = "vda-01"\r\n'
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert main(["--config", str(path), "--check-config"]) == 0
    assert "site Mairie de Lyon \u00e9t\u00e9," in capsys.readouterr().out


def test_check_config_refuses_a_bad_file_naming_file_and_key(tmp_path: Path, capsys) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\ninterval = "often"\nsitee = "x"\n')
    assert main(["--config", str(path), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert f"configuration error in {path}" in err
    assert "agent.interval: must be a number" in err and "agent.sitee: unknown key" in err


def test_config_path_from_the_environment(tmp_path: Path, monkeypatch, capsys) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[agent]\ninterval = 0\n")
    monkeypatch.setenv("VDIWATCH_AGENT_CONFIG", str(path))
    assert main(["--check-config"]) == 2
    assert str(path) in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--print"], ["--collector", "collector:9847", "--check-config"],
                                  ["--log-level", "loud"], ["--config", "/nonexistent/agent.toml"]])
def test_usage_and_config_errors_exit_2(argv, capsys) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err


def test_version_via_python_m() -> None:
    r = subprocess.run([sys.executable, "-m", "agent", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == f"vdiwatch-agent {__version__}"


def test_once_delivers_to_a_real_collector(collector, tmp_path: Path) -> None:
    url, store = collector
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nhost = "vda-cli-01"\nsite = "City Hall"\ndelivery_group = "Office"\n')
    assert main(["--config", str(path), "--collector", url, "--once", "--log-level", "error"]) == 0
    entry = store.get("vda-cli-01")
    assert entry is not None and entry.report.site == "City Hall" and not entry.report.goodbye
    assert entry.report.memory is not None


def test_once_exits_1_when_the_collector_is_unreachable(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\ninterval = 1\ntimeout = 0.5\n')
    assert main(["--config", str(path), "--collector", "http://127.0.0.1:1", "--once", "--log-level", "error"]) == 1


def test_agent_loop_with_fake_psutil_reports_and_says_goodbye(collector) -> None:
    url, store = collector
    config = AgentConfig(agent=AgentSection(collector_url=url, interval=1.0, host="vda-win-09"))
    stop = threading.Event()
    agent = build_agent(config, "vda-win-09", stop, psutil_module=fakepsutil.load("windows"))
    thread = threading.Thread(target=agent.run)
    thread.start()
    try:
        first = wait_until(lambda: store.get("vda-win-09"), timeout=5, what="the first report", poll=0.02)
        assert not first.report.goodbye
        assert [f.mountpoint for f in first.report.filesystems] == ["C:\\", "D:\\"]
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert store.get("vda-win-09").report.goodbye
    assert store.liveness(store.get("vda-win-09")).state == "stopped"


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is a POSIX signal")
def test_sigterm_sends_goodbye_and_exits_0(collector, tmp_path: Path) -> None:
    url, store = collector
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nhost = "vda-sig-01"\n')
    proc = subprocess.Popen([sys.executable, "-m", "agent", "--config", str(path), "--collector", url],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def reported() -> object:
            assert proc.poll() is None, proc.stdout.read().decode()
            return store.get("vda-sig-01")

        wait_until(reported, timeout=10, what="the agent's first report", poll=0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert store.get("vda-sig-01").report.goodbye
