"""The agent against a hostile collector on 127.0.0.1: real sockets, the real runner and process.

A collector that drips its answer one byte at a time (each byte well within the
read timeout) must not hold a push past the next collection, nor a stop; a
collector that answers a huge error body must not make the agent read it.
Every server here is bounded: it stops when the test ends, and drips or sends
only to the one agent under test.
"""

from __future__ import annotations

import gzip
import json
import select
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from agent.cli import build_agent
from agent.config import AgentConfig, AgentSection
from agent.failover import rank
from agent.push import ACCEPTED, FAILED, MAX_ANSWER_BYTES, REJECTED, Pusher
from agent.runner import Agent
from tests.agent import fakepsutil
from tests.conftest import ROOT, require_tool, terminate, wait_until

DRIP_SECONDS = 0.5  # one byte this often: well within every read timeout below


def read_request(conn: socket.socket) -> Optional[Tuple[bytes, bytes]]:
    """(head, body) of one HTTP request, or None when the client closed the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head, body


def report_of(body: bytes) -> Dict[str, Any]:
    return json.loads(gzip.decompress(body))


class Collector:
    """A TCP server on 127.0.0.1 whose `answer(conn, collector)` plays one kind of collector.

    It records every request's report and, per connection, when the agent closed it.
    """

    def __init__(self, answer: Callable[[socket.socket, "Collector"], None]):
        self.answer = answer
        self.stopping = threading.Event()
        self.reports: List[Dict[str, Any]] = []
        self.connections: List[Dict[str, Any]] = []
        self.bytes_sent = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                record = {"opened": time.monotonic(), "closed": None}
                with outer.lock:
                    outer.connections.append(record)
                try:
                    outer.answer(self.request, outer)
                except OSError:
                    pass  # the agent cut the connection
                finally:
                    record["closed"] = time.monotonic()

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self) -> "Collector":
        self.thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def record(self, body: bytes) -> None:
        with self.lock:
            self.reports.append(report_of(body))

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        with self.lock:
            self.bytes_sent += len(data)

    def closed_by_agent(self) -> int:
        return sum(1 for c in self.connections if c["closed"] is not None)


def drip(conn: socket.socket, collector: Collector, data: Iterator[bytes]) -> None:
    """Send `data` a byte at a time every DRIP_SECONDS until the agent closes the connection."""
    for byte in data:
        readable, _, _ = select.select([conn], [], [], DRIP_SECONDS)
        if readable and not _read_some(conn):
            return  # the agent closed (or shut down) its end
        if collector.stopping.is_set():
            return
        collector.send(conn, byte)


def _read_some(conn: socket.socket) -> bytes:
    try:
        return conn.recv(65536)
    except ssl.SSLError:  # a TLS connection cut without close_notify
        return b""


def endless_headers() -> Iterator[bytes]:
    """A status line and then one header line that never ends."""
    for byte in b"HTTP/1.1 200 OK\r\nX-Drip: ":
        yield bytes([byte])
    while True:
        yield b"a"


def dripping(conn: socket.socket, collector: Collector) -> None:
    request = read_request(conn)
    if request is not None:
        collector.record(request[1])
        drip(conn, collector, endless_headers())


def accepting(conn: socket.socket, collector: Collector) -> None:
    body = b'{"status": "accepted"}'
    while not collector.stopping.is_set():
        request = read_request(conn)
        if request is None:
            return
        collector.record(request[1])
        collector.send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


HUGE_BYTES = 128 << 20


def huge_refusal(conn: socket.socket, collector: Collector) -> None:
    """A 413 whose JSON body is 128 MiB long, sent as fast as the agent reads it."""
    request = read_request(conn)
    if request is None:
        return
    collector.send(conn, b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
                   b'Content-Length: %d\r\n\r\n{"error": "' % HUGE_BYTES)
    chunk = b"x" * 65536
    for _ in range(HUGE_BYTES // len(chunk)):
        if collector.stopping.is_set():
            return
        collector.send(conn, chunk)


def nested_refusal(conn: socket.socket, collector: Collector) -> None:
    """A 400 whose body nests JSON arrays deeper than Python's parser can follow."""
    body = b"[" * 60000
    if read_request(conn) is not None:
        collector.send(conn, b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


class Recording:
    """The agent's collections, as the times they started (the goodbye's last)."""

    def __init__(self, agent: Agent):
        self.times: List[float] = []
        run_all = agent.runner.run_all

        def recorded() -> Any:
            self.times.append(time.monotonic())
            return run_all()

        agent.runner.run_all = recorded  # type: ignore[method-assign]


def agent_for(urls: List[str], host: str, interval: float, timeout: float) -> Tuple[Agent, threading.Event]:
    config = AgentConfig(agent=AgentSection(collector_url=urls[0], collector_urls=tuple(urls) if len(urls) > 1
                                            else (), interval=interval, timeout=timeout, host=host,
                                            disabled_collectors=("sessions",)))
    stop = threading.Event()
    return build_agent(config, host, stop, psutil_module=fakepsutil.load("linux")), stop


def run_in_thread(agent: Agent) -> threading.Thread:
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    return thread


def assert_at_most_one_skipped(times: List[float], interval: float) -> None:
    gaps = [b - a for a, b in zip(times, times[1:])]
    # Collections happen on ticks: a gap of 2 intervals is one skipped, of 3 two skipped.
    assert all(gap < 2.5 * interval for gap in gaps), gaps


@pytest.mark.slow
def test_a_dripping_collector_costs_at_most_one_collection_per_push() -> None:
    interval, timeout = 2.0, 1.5  # the timeout bounds each read; a byte comes every 0.5 s
    with Collector(dripping) as collector:
        agent, stop = agent_for([collector.url], "vda-drip-01", interval, timeout)
        recording = Recording(agent)
        thread = run_in_thread(agent)
        try:
            # Before: the first push never ended, so there was never a second collection.
            wait_until(lambda: len(recording.times) >= 4, timeout=10 * interval, what="four collections")
        finally:
            stop.set()
            thread.join(30)
        assert not thread.is_alive()
        scheduled = recording.times[:-1]  # the last one is the goodbye's
        assert_at_most_one_skipped(scheduled, interval)
        assert agent.skipped_ticks <= len(scheduled)
        assert len(collector.reports) >= 4
        # Every push that was given up on had its connection cut, not left to drip.
        wait_until(lambda: collector.closed_by_agent() == len(collector.connections), timeout=10,
                   what="the agent to close every dripped connection")


@pytest.mark.slow
def test_a_stop_during_a_dripped_push_goes_straight_to_the_goodbye() -> None:
    interval, timeout = 60.0, 1.5  # the push's deadline is a minute away: only the stop can end it sooner
    with Collector(dripping) as collector:
        agent, stop = agent_for([collector.url], "vda-drip-02", interval, timeout)
        recording = Recording(agent)
        thread = run_in_thread(agent)
        try:
            wait_until(lambda: collector.bytes_sent >= 3, timeout=15, what="the collector to drip")
            stopped_at = time.monotonic()
            stop.set()
            wait_until(lambda: len(recording.times) >= 2, timeout=15, what="the goodbye's collection")
            thread.join(30)
        finally:
            stop.set()
            thread.join(30)
        assert not thread.is_alive()
        # The goodbye's collection starts as soon as the push is given up: not at its deadline.
        assert recording.times[1] - stopped_at < 5.0
        assert [r.get("goodbye", False) for r in collector.reports] == [False, True]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is a POSIX signal")
def test_sigterm_during_a_dripped_push_exits_after_a_short_goodbye(tmp_path: Path) -> None:
    timeout = 1.5  # the goodbye gets max(timeout, 1 s), at most 10 s
    with Collector(dripping) as collector:
        config = tmp_path / "agent.toml"
        config.write_text(f'[agent]\nhost = "vda-drip-03"\ninterval = 60\ntimeout = {timeout}\n')
        proc = subprocess.Popen([sys.executable, "-m", "agent", "--config", str(config), "--collector",
                                 collector.url], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: collector.bytes_sent >= 3 or proc.poll() is not None, timeout=20,
                       what="the collector to drip")
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
            proc.send_signal(signal.SIGTERM)
            # Before: the dripped push held the agent until the service manager killed it.
            code = proc.wait(timeout=2 * (timeout + 1.0) + 5.0)
        finally:
            terminate(proc)
        assert code == 0
        assert [r.get("goodbye", False) for r in collector.reports] == [False, True]


@pytest.mark.slow
def test_a_dripping_first_choice_fails_over_within_the_interval() -> None:
    interval, timeout = 2.0, 1.5
    with Collector(dripping) as drip_collector, Collector(accepting) as good:
        urls = [drip_collector.url, good.url]
        host = next(h for h in (f"vda-fo-{i:02d}" for i in range(100)) if rank(urls, h)[0] == drip_collector.url)
        agent, stop = agent_for(urls, host, interval, timeout)
        recording = Recording(agent)
        thread = run_in_thread(agent)
        try:
            wait_until(lambda: len(good.reports) >= 2, timeout=10 * interval, what="reports to the second choice")
        finally:
            stop.set()
            thread.join(30)
        assert not thread.is_alive()
        assert len(drip_collector.reports) >= 1  # the first choice was tried and given up on
        assert_at_most_one_skipped(recording.times[:-1], interval)


def self_signed(tmp_path: Path) -> Tuple[str, str]:
    """(certificate, key) for 127.0.0.1, made with openssl."""
    openssl = require_tool("openssl")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", "key.pem", "-out", "cert.pem"],
                   check=True, capture_output=True, cwd=tmp_path)
    return str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")


def test_a_dripping_https_collector_is_given_up_and_its_connection_cut(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def dripping_tls(conn: socket.socket, collector: Collector) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            dripping(tls, collector)

    with Collector(dripping_tls) as collector:
        pusher = Pusher(collector.url.replace("http://", "https://"), timeout=1.5, ca_file=cert)
        try:
            result = pusher.push({"host": "vda-tls-01"}, deadline=time.monotonic() + 2.0)
            assert result.outcome == FAILED and "no complete answer" in result.reason
            assert len(collector.reports) == 1  # the handshake and the request went through
            # The worker given up on ends at once: its TLS connection was shut down under it
            # (the TLS layer detaches the socket it wraps, so the pusher keeps a duplicate).
            wait_until(lambda: collector.closed_by_agent() == len(collector.connections), timeout=10,
                       what="the agent to close the dripped connection")
            wait_until(lambda: not [t for t in threading.enumerate() if t.name == "vdiwatch-push"], timeout=10,
                       what="the worker given up on to end")
        finally:
            pusher.close()


def test_a_huge_refusal_is_not_read() -> None:
    with Collector(huge_refusal) as collector:
        pusher = Pusher(collector.url, timeout=5.0)
        try:
            result = pusher.push({"host": "vda-big-01"}, deadline=time.monotonic() + 30)
        finally:
            pusher.close()
        assert (result.outcome, result.status, result.reason) == (REJECTED, 413, "http_413")
        wait_until(lambda: collector.closed_by_agent() == 1, timeout=10, what="the agent to drop the answer")
        # What the kernel's socket buffers take on top of the bounded read; before: all 128 MiB.
        assert collector.bytes_sent < MAX_ANSWER_BYTES + (32 << 20)


def test_an_accepting_collector_is_reached_on_one_kept_alive_connection() -> None:
    with Collector(accepting) as collector:
        pusher = Pusher(collector.url, timeout=5.0)
        try:
            results = [pusher.push({"host": "vda-ka-01", "n": n}, deadline=time.monotonic() + 10) for n in range(3)]
        finally:
            pusher.close()
        assert [r.outcome for r in results] == [ACCEPTED] * 3
        assert [r["n"] for r in collector.reports] == [0, 1, 2]
        assert len(collector.connections) == 1


def test_a_refusal_nested_too_deep_to_parse_is_a_refusal_not_a_crash() -> None:
    with Collector(nested_refusal) as collector:
        pusher = Pusher(collector.url, timeout=5.0)
        try:
            # Before: RecursionError out of push(), which ended the agent's loop.
            result = pusher.push({"host": "vda-deep-01"}, deadline=time.monotonic() + 30)
        finally:
            pusher.close()
        assert (result.outcome, result.status, result.reason) == (REJECTED, 400, "http_400")
