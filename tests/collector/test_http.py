"""The HTTP transport: strict parsing of request heads (literal inputs), connection caps and
accept errors in-process, and the real collector process over real HTTP (slow)."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import re
import signal
import socket
import threading
import time

import pytest
import requests

from collector.answers import Request, Response, Route
from collector.httpserver import (
    BadRequest,
    HttpServer,
    address_key,
    answer_headers,
    keep_alive,
    parse_head,
    response_head,
)
from collector.ingest import EdgeLimits
from collector.selfmetrics import SelfMetrics
from collector.server import Api
from collector.store import HostStore
from tests.conftest import CollectorProcess, report_fixture


def host_lines(text: str) -> list:
    return [line for line in text.splitlines() if line.startswith("vdi_") and not line.startswith("vdi_collector_")]


@pytest.mark.slow
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


@pytest.mark.slow
def test_oversized_body_refused_before_reading(tmp_path) -> None:
    proc = CollectorProcess(tmp_path, config="[collector]\nmax_body_bytes = 1000\n").start()
    try:
        r = proc.post(b"x" * 5000)
        assert r.status_code == 413
        assert r.json()["reason"] == "body_too_large"
    finally:
        proc.stop()


@pytest.mark.slow
def test_missing_content_length_gets_411(collector_process: CollectorProcess) -> None:
    with socket.create_connection(("127.0.0.1", collector_process.port), timeout=5) as s:
        s.sendall(b"POST /api/v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 411")


@pytest.mark.slow
def test_sigterm_stops_cleanly(tmp_path) -> None:
    proc = CollectorProcess(tmp_path).start()
    assert proc.stop(signal.SIGTERM) == 0
    assert "stopped" in proc.log()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{proc.url}/healthz", timeout=1)


@pytest.mark.slow
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


@pytest.mark.slow
def test_example_config_is_valid_and_matches_defaults() -> None:
    from collector.config import CollectorConfig
    from contract.configfile import load
    from tests.conftest import ROOT
    assert load(str(ROOT / "config" / "collector.toml"), CollectorConfig) == CollectorConfig()


@pytest.mark.slow
def test_idle_and_slow_connections_do_not_block_others_and_time_out(tmp_path) -> None:
    config = "[collector]\nrequest_timeout = 1.0\nmax_connections_per_address = 1000\n"
    proc = CollectorProcess(tmp_path, config).start()
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


@pytest.mark.slow
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


# -- request heads: literal inputs ---------------------------------------------

GOOD_HEAD = (b"POST /api/v1/reports?x=1 HTTP/1.1\r\nHost: collector:9847\r\nContent-Type: application/json\r\n"
             b"Content-Length: 42\r\nAccept-Encoding: gzip\r\nAccept-Encoding: identity\r\n"
             b"Authorization: Bearer vdw_x\r\n\r\n")


def test_parse_head_reads_a_good_request() -> None:
    head = parse_head(GOOD_HEAD)
    assert (head.method, head.target, head.version, head.length) == ("POST", "/api/v1/reports?x=1", "HTTP/1.1", 42)
    assert head.headers["host"] == "collector:9847"
    assert head.headers["accept-encoding"] == "gzip, identity"  # a list field's lines are one list
    assert parse_head(b"GET /metrics HTTP/1.0\r\n\r\n").length is None
    assert parse_head(b"GET / HTTP/1.1\r\nContent-Length: 0\r\ncontent-length: 0\r\n\r\n").length == 0
    assert parse_head(b"GET / HTTP/1.1\r\nX-Note:\tobs-text \xe9 ok \r\n\r\n").headers["x-note"] == "obs-text \xe9 ok"


@pytest.mark.parametrize("raw,message", [
    (b"POST / HTTP/1.1\r\nContent-Length: \xd9\xa1\xd9\xa2\r\n\r\n", "bad Content-Length"),  # Arabic-Indic digits
    ("POST / HTTP/1.1\r\nContent-Length: \u00b2\r\n\r\n".encode("utf-8"), "bad Content-Length"),
    (b"POST / HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", "bad Content-Length"),
    (b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", "bad Content-Length"),
    (b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", "bad Content-Length"),
    (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\n", "conflicting Content-Length"),
    (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding together"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "conflicting Host"),
    (b"GET / HTTP/1.1\r\nAuthorization: Bearer a\r\nauthorization: Bearer b\r\n\r\n", "conflicting"),
    (b"GET / HTTP/1.1x\r\n\r\n", "malformed request line"),
    (b"GET / HTTP/2.0\r\n\r\n", "malformed request line"),
    (b"GET / HTTP/1.1 \r\n\r\n", "malformed request line"),
    (b"GET  / HTTP/1.1\r\n\r\n", "malformed request line"),
    (b"G\x00T / HTTP/1.1\r\n\r\n", "malformed request line"),
    (b"GET /a\x00b HTTP/1.1\r\n\r\n", "malformed request line"),
    (b"GET /\xe9 HTTP/1.1\r\n\r\n", "malformed request line"),
    (b"GET http://x/ HTTP/1.1\r\n\r\n", "malformed request line"),
    (b"GET / HTTP/1.1\r\nX-A: one\x00two\r\n\r\n", "control character"),
    (b"GET / HTTP/1.1\r\nX-A: one\x1btwo\r\n\r\n", "control character"),
    (b"GET / HTTP/1.1\r\nX-A: one\ntwo\r\n\r\n", "control character"),  # a bare LF
    (b"GET / HTTP/1.1\r\nX-A: one\rtwo\r\n\r\n", "control character"),  # a bare CR
    (b"GET / HTTP/1.1\r\nX-A\x00: v\r\n\r\n", "malformed header field"),
    (b"GET / HTTP/1.1\r\nX-A : v\r\n\r\n", "malformed header field"),
    (b"GET / HTTP/1.1\r\nX-A: v\r\n folded\r\n\r\n", "malformed header field"),
    (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", "malformed header field"),
], ids=["unicode digits", "superscript digit", "5000 digits", "plus sign", "list", "two lengths",
        "length and chunked", "two hosts", "two authorizations", "HTTP/1.1x", "HTTP/2.0", "trailing space",
        "double space", "NUL in method", "NUL in target", "non-ASCII target", "absolute form", "NUL in value",
        "ESC in value", "bare LF", "bare CR", "NUL in name", "space before colon", "obs-fold", "no colon"])
def test_parse_head_refuses(raw: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as e:
        parse_head(raw)
    assert message in str(e.value)


def test_keep_alive() -> None:
    assert keep_alive("HTTP/1.1", {})
    assert not keep_alive("HTTP/1.1", {"connection": "Close"})
    assert not keep_alive("HTTP/1.0", {})
    assert keep_alive("HTTP/1.0", {"connection": "Keep-Alive, TE"})


def test_answer_headers_forbid_caching_everywhere_and_framing_scripts_on_pages() -> None:
    api = answer_headers(Response(200, b"{}\n"))
    assert api == {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    page = answer_headers(Response(200, b"<p>", "text/html; charset=utf-8", {"Cache-Control": "no-cache"}))
    assert page["Cache-Control"] == "no-cache"  # the response's own field wins
    csp = page["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
    assert page["X-Frame-Options"] == "DENY" and page["Referrer-Policy"] == "no-referrer"
    head = response_head(Response(404, b"x", "text/plain"), 1, False, "Thu, 01 Jan 1970 00:00:00 GMT")
    assert head.startswith(b"HTTP/1.1 404 Not Found\r\n") and b"\r\nCache-Control: no-store\r\n" in head
    assert head.endswith(b"\r\n\r\n") and b"Content-Security-Policy" not in head


@pytest.mark.parametrize("peer,key", [
    (("192.0.2.7", 50000), "192.0.2.7"),
    (("2001:db8:1:2:aaaa::1", 50000, 0, 0), "2001:db8:1:2::/64"),
    (("2001:db8:1:2:bbbb::9", 50001, 0, 0), "2001:db8:1:2::/64"),
    (("::ffff:192.0.2.7", 50000, 0, 0), "192.0.2.7"),
    (("fe80::1%eth0", 1, 0, 2), "fe80::/64"),
    (None, ""),
])
def test_address_key_counts_ipv6_by_its_64(peer, key: str) -> None:
    assert address_key(peer) == key


# -- connections: a real server in this process --------------------------------

class StubApi(Api):
    """Routes /wait to an answer that blocks (in a worker thread) until `release` is set; the rest to 200.
    Refusals are the real API's."""

    def __init__(self, **edge) -> None:
        store = HostStore()
        super().__init__(store, SelfMetrics(store, process_metrics=False), edge=EdgeLimits(**edge))
        self.release = threading.Event()

    def route(self, request: Request) -> Route:
        if request.path == "/wait":
            return Route(self._wait, slow=True)
        return Route(lambda: Response(200, b"ok\n", "text/plain"))

    def _wait(self) -> Response:
        self.release.wait(20)
        return Response(200, b"waited\n", "text/plain")


async def until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def served(api, **options) -> HttpServer:
    server = HttpServer(api, "127.0.0.1", 0, fit_fd_limit=lambda n: (n, ""), **options)
    server.port = (await server.start())[1]
    return server


async def connect(server: HttpServer, first: bytes = b""):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    if first:
        writer.write(first)
        await writer.drain()
    return reader, writer


async def answer(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    return head + await asyncio.wait_for(reader.readexactly(length), 10)


def test_at_the_per_address_cap_the_longest_waiting_connection_makes_room() -> None:
    async def scenario() -> None:
        server = await served(StubApi(), max_per_address=2)
        try:
            slowloris = await connect(server, b"G")  # one byte of a head, then nothing
            await until(lambda: len(server._connections) == 1, "the first connection")
            idle = await connect(server)
            await until(lambda: len(server._connections) == 2, "the second connection")
            agent = await connect(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await answer(agent[0])).startswith(b"HTTP/1.1 200 ")
            assert await asyncio.wait_for(slowloris[0].read(), 10) == b""  # closed to make room
            assert server.evicted == 1 and server.refused == 0
            idle[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # the younger one was left alone
            assert (await answer(idle[0])).startswith(b"HTTP/1.1 200 ")
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_when_every_connection_is_busy_a_new_one_gets_503_not_a_reset() -> None:
    async def scenario() -> None:
        api = StubApi()
        server = await served(api, max_connections=2)
        try:
            busy = [await connect(server, b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n") for _ in range(2)]
            await until(lambda: len(server._busy) == 2, "two requests in progress")
            reader, writer = await connect(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            refusal = await answer(reader)
            assert refusal.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1\r\n" in refusal
            assert b"Connection: close\r\n" in refusal and b'"reason": "too_many_connections"' in refusal
            assert await asyncio.wait_for(reader.read(), 10) == b""
            assert server.refused == 1 and server.evicted == 0
            api.release.set()
            for r, _ in busy:
                assert (await answer(r)).startswith(b"HTTP/1.1 200 ")
        finally:
            api.release.set()
            await server.stop()

    asyncio.run(scenario())


def test_the_head_has_its_own_deadline_for_all_of_it_and_the_body_the_request_timeout() -> None:
    async def scenario() -> None:
        server = await served(StubApi(), header_timeout=0.5, request_timeout=30.0)
        try:
            reader, writer = await connect(server)
            closed = asyncio.ensure_future(reader.read())
            drips = 0
            while not closed.done() and drips < 100:  # each byte well within the deadline, the whole head not
                writer.write(b"X")
                await asyncio.sleep(0.05)
                drips += 1
            assert await asyncio.wait_for(closed, 10) == b""
            assert drips < 100
            reader, writer = await connect(server, b"GET /healthz HTTP/1.1\r\nContent-Length: 4\r\n\r\n")
            for byte in b"body":  # the body, slower than the head's deadline, is within request_timeout
                await asyncio.sleep(0.25)
                writer.write(bytes([byte]))
            assert (await answer(reader)).startswith(b"HTTP/1.1 200 ")
        finally:
            await server.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("head", [
    b"POST /api/v1/reports HTTP/1.1\r\nContent-Length: \xd9\xa1\xd9\xa2\r\n\r\n",
    b"POST /api/v1/reports HTTP/1.1\r\nContent-Length: " + b"7" * 5000 + b"\r\n\r\n",
    b"POST /api/v1/reports HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"GET /healthz HTTP/1.1x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nX-A: \x00\r\n\r\n",
], ids=["unicode digits", "5000 digits", "two lengths", "HTTP/1.1x", "NUL"])
def test_bad_heads_get_400_and_no_traceback(head: bytes, caplog) -> None:
    async def scenario() -> bytes:
        server = await served(StubApi())
        try:
            reader, _ = await connect(server, head)
            return await answer(reader)
        finally:
            await server.stop()

    with caplog.at_level(logging.DEBUG):
        assert asyncio.run(scenario()).startswith(b"HTTP/1.1 400 ")
    assert not [r for r in caplog.records if r.exc_info]


def test_failed_accepts_are_logged_once_an_outage_without_tracebacks(caplog) -> None:
    async def scenario() -> None:
        server = await served(StubApi())
        loop = asyncio.get_running_loop()

        async def outage_then_a_connection() -> None:
            for _ in range(500):  # what asyncio reports for a full backlog at EMFILE
                loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                             "exception": OSError(errno.EMFILE, "Too many open files")})
            reader, _ = await connect(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await answer(reader)).startswith(b"HTTP/1.1 200 ")

        try:
            await outage_then_a_connection()  # within the quiet time: one outage still, flapping or not
            await outage_then_a_connection()
            server.accept_quiet_seconds = 0.0
            reader, _ = await connect(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await answer(reader)).startswith(b"HTTP/1.1 200 ")
            loop.call_exception_handler({"message": "something else"})  # still reported as before
        finally:
            await server.stop()

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    accept = [r.getMessage() for r in caplog.records if "accept" in r.getMessage()]
    assert len(accept) == 2, accept
    assert "cannot accept new connections: Too many open files" in accept[0]
    assert "accepting connections again after 1000 failed accept(s)" in accept[1]
    assert not [r for r in caplog.records if r.exc_info]
    assert any(r.name == "asyncio" and "something else" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_real_answers_are_not_cached_and_pages_are_locked_down(collector_process: CollectorProcess) -> None:
    assert collector_process.post(report_fixture("lvda-07.json")).status_code == 200
    for path in ("/metrics", "/api/v1/hosts", "/api/v1/hosts/lvda-07", "/", "/hosts/lvda-07", "/no-such-page"):
        r = requests.get(collector_process.url + path, timeout=5)
        assert r.headers["Cache-Control"] == "no-store", path
        assert r.headers["X-Content-Type-Options"] == "nosniff", path
        if r.headers["Content-Type"].startswith("text/html"):
            assert r.headers["Content-Security-Policy"].startswith("default-src 'none'"), path
            assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Referrer-Policy"] == "no-referrer", path


def rejected(api: Api, reason: str) -> float:
    return api.metrics.registry.get_sample_value("vdi_collector_reports_rejected_total", {"reason": reason})


def test_refusals_of_the_transport_are_the_apis_answered_and_counted_alike() -> None:
    async def scenario(api: StubApi) -> list:
        server = await served(api)
        answers = []
        try:
            for head in (b"POST /api/v1/reports HTTP/1.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 5000\r\n\r\n",
                         b"POST /api/v1/reports HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                         b"POST /api/v1/reports HTTP/1.1\r\nContent-Type: application/json\r\n\r\n",
                         b"GET /healthz HTTP/1.1x\r\n\r\n"):
                reader, _ = await connect(server, head)
                answers.append(await answer(reader))
        finally:
            await server.stop()
        return answers

    api = StubApi(max_body_bytes=1000)
    too_large, chunked, no_length, bad_head = asyncio.run(scenario(api))
    direct = api.ingest.post_report(Request("POST", "/api/v1/reports", {"content-type": "application/json"},
                                            b"x" * 1001))
    assert too_large.startswith(b"HTTP/1.1 413 ") and direct.status == 413
    assert json.loads(too_large.split(b"\r\n\r\n", 1)[1]) == json.loads(direct.payload()) == {
        "error": "the body must be at most 1000 bytes", "reason": "body_too_large",
        "problems": [{"field": "", "reason": "body_too_large", "message": "the body must be at most 1000 bytes"}]}
    assert rejected(api, "body_too_large") == 2
    assert chunked.startswith(b"HTTP/1.1 411 ") and no_length.startswith(b"HTTP/1.1 411 ")
    assert json.loads(chunked.split(b"\r\n\r\n", 1)[1])["reason"] == "length_required"
    assert rejected(api, "length_required") == 2
    assert bad_head.startswith(b"HTTP/1.1 400 ")
    assert json.loads(bad_head.split(b"\r\n\r\n", 1)[1]) == {"error": "malformed request line",
                                                               "reason": "bad_request"}
    assert sum(api.pages.health(api.store.monotonic())["rejections_last_hour"].values()) == 4
