"""Shared test helpers: free ports, real collector processes, external tools."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
GOLDEN = ROOT / "tests" / "golden"
ARTIFACTS = ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_tool(name: str) -> str:
    """Path of an external program; in CI a missing one fails the test instead of skipping it."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.access(p, os.X_OK)), None)
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{name} is required in CI but not installed (.ci/run installs it)")
    pytest.skip(f"{name} is not installed")


class FakeClock:
    """A clock a test sets: call it for the time; `advance` and `sleep` move it on (sleeps are kept)."""

    def __init__(self, now: float = 1000.0):
        self.now = now
        self.sleeps: List[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    def sleep(self, seconds: float) -> None:
        if seconds > 0:  # sleep(0) is a caller asking whether it should stop
            self.sleeps.append(seconds)
            self.now += seconds


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition",
               poll: float = 0.1) -> Any:
    """Call `predicate` until it returns something truthy, and return that; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def wait_for(url: str, proc: Optional[subprocess.Popen] = None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception = RuntimeError("never tried")
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered:\n{out}")
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException as e:
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s: {last}")


def terminate(proc: subprocess.Popen, timeout: float = 10.0, sig: Optional[int] = None) -> int:
    """Stop a process politely (SIGTERM or `sig`), then for good; its exit code."""
    if proc.poll() is None:
        if sig is None:
            proc.terminate()
        else:
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class LoggedProcess:
    """A program whose output goes to `log_path`, started by `launch` and waited for on a URL; `stop()`
    ends it whatever happened. Subclasses set `log_path` and `proc = None` and build the command line."""

    log_path: Path
    proc: Optional[subprocess.Popen]

    def launch(self, args: List[str], ready_url: str, what: str, timeout: float = 15.0,
               cwd: Optional[Path] = None) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd or ROOT)
        try:
            wait_for(ready_url, self.proc, timeout=timeout)
        except Exception as e:
            self.stop()
            raise RuntimeError(f"{what} did not become ready: {e}\n{self.log()[-4000:]}") from None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        terminate(self.proc, timeout)
        self._log.close()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class CollectorProcess:
    """A real `vdiwatch-collector` on a free loopback port."""

    def __init__(self, tmp: Path, config: str = "", extra_args: Optional[List[str]] = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = tmp / f"collector-{self.port}.toml"
        self.config_path.write_text(config)
        self.log_path = tmp / f"collector-{self.port}.log"
        self.args = [sys.executable, "-m", "collector", "--config", str(self.config_path),
                     "--listen", f"127.0.0.1:{self.port}", *(extra_args or [])]
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "CollectorProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            wait_for(f"{self.url}/healthz", self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"collector did not start:\n{self.log()}") from None
        return self

    def stop(self, sig: Optional[int] = None, timeout: float = 10.0) -> int:
        if self.proc is None:
            return 0
        code = terminate(self.proc, timeout, sig)
        self._log.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> str:
        r = requests.get(f"{self.url}/metrics", timeout=10)
        r.raise_for_status()
        return r.text

    def get(self, path: str, headers: Optional[dict] = None) -> requests.Response:
        return requests.get(f"{self.url}{path}", headers=headers or {}, timeout=10)

    def post(self, body: bytes, headers: Optional[dict] = None) -> requests.Response:
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        return requests.post(f"{self.url}/api/v1/reports", data=body, headers=h, timeout=10)


@pytest.fixture
def collector_process(tmp_path: Path) -> Iterator[CollectorProcess]:
    proc = CollectorProcess(tmp_path).start()
    yield proc
    proc.stop()


def report_fixture(name: str) -> bytes:
    return (FIXTURES / "reports" / name).read_bytes()
