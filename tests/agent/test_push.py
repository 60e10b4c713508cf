from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from typing import Any, Dict, List, Optional

import pytest
import requests

from agent.push import (
    ACCEPTED,
    FAILED,
    MAX_ANSWER_BYTES,
    MIN_ATTEMPT_SECONDS,
    REJECTED,
    RETURN_MARGIN_SECONDS,
    STOPPED,
    Pusher,
    _describe,
    backoff,
    encode,
    read_body,
)
from agent.push import refusal as parse_refusal
from tests.agent.helpers import report_with
from tests.conftest import FakeClock

REPORT = report_with({"load": {"load1": 0.5, "load5": 0.25, "load15": 0.125}})


class FakeRaw:
    """urllib3's response body: counts what is read, so a test can bound it."""

    def __init__(self, body: bytes):
        self.body = body
        self.bytes_read = 0

    def read(self, amt: int, decode_content: bool = True) -> bytes:
        assert decode_content is False  # the pusher decompresses itself, with a bound
        chunk = self.body[self.bytes_read:self.bytes_read + amt]
        self.bytes_read += len(chunk)
        return chunk


class FakeResponse:
    def __init__(self, status: int, doc: Any = None, text: str = "", headers: Optional[Dict[str, str]] = None,
                 body: Optional[bytes] = None):
        self.status_code = status
        if body is None:
            body = (json.dumps(doc) if doc is not None else text).encode("utf-8")
        self.raw = FakeRaw(body)
        self.headers = headers or {}
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def replay(self) -> "FakeResponse":
        """The same answer again, unread (a script may return one answer many times)."""
        return FakeResponse(self.status_code, headers=self.headers, body=self.raw.body)


class FakeSession:
    """Answers posts from a script: a status, a FakeResponse or an exception; each takes `cost` seconds."""

    def __init__(self, clock: FakeClock, script: List[Any], cost: float = 0.05):
        self.clock = clock
        self.script = list(script)
        self.cost = cost
        self.calls: List[Dict[str, Any]] = []
        self.responses: List[FakeResponse] = []  # as handed out, to see what was read of them
        self.closed = False

    def post(self, url: str, **kwargs: Any) -> FakeResponse:
        self.calls.append(dict(kwargs, url=url, at=self.clock.now))
        self.clock.now += self.cost
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, int):
            return FakeResponse(answer, {"status": "accepted"} if answer == 200 else {"error": "boom"})
        self.responses.append(answer.replay())
        return self.responses[-1]

    def close(self) -> None:
        self.closed = True


def make(script: List[Any], **kwargs: Any):
    clock = FakeClock()
    session = FakeSession(clock, script)
    pusher = Pusher("http://collector:9847/", session=session, sleep=clock.sleep, clock=clock,
                    rand=lambda: 1.0, **kwargs)
    return pusher, session, clock


def refusal(reason: str, status: int = 400) -> FakeResponse:
    return FakeResponse(status, {"error": "the report breaks the contract", "reason": reason,
                                 "problems": [{"field": "readings.load.load1", "reason": reason,
                                               "message": "must be a number"}]})


def test_posts_gzipped_json_with_headers_and_bearer_token(tmp_path) -> None:
    pusher, session, clock = make([200], token="t0k3n", timeout=4.0, ca_file="/etc/vdiwatch/ca.pem")
    result = pusher.push(REPORT, deadline=clock.now + 15)
    assert result.outcome == ACCEPTED and result.attempts == 1 and result.status == 200
    call = session.calls[0]
    assert call["url"] == "http://collector:9847/api/v1/reports"
    assert json.loads(gzip.decompress(call["data"])) == REPORT
    assert call["headers"]["Content-Encoding"] == "gzip"
    assert call["headers"]["Content-Type"] == "application/json"
    assert call["headers"]["Authorization"] == "Bearer t0k3n"
    assert call["timeout"] == 4.0 and call["verify"] == "/etc/vdiwatch/ca.pem"
    assert call["allow_redirects"] is False


def test_no_token_no_authorization_and_system_trust_store() -> None:
    pusher, session, clock = make([200])
    pusher.push(REPORT, deadline=clock.now + 15)
    assert "Authorization" not in session.calls[0]["headers"]
    assert session.calls[0]["verify"] is True


def test_encode_is_compact_and_refuses_nan() -> None:
    assert gzip.decompress(encode({"a": [1, 2]})) == b'{"a":[1,2]}'
    with pytest.raises(ValueError):
        encode({"load1": float("nan")})


def test_a_refusal_is_not_retried_and_its_reason_logged_once(caplog) -> None:
    pusher, session, clock = make([refusal("wrong_type")])
    with caplog.at_level(logging.INFO, logger="agent.push"):
        first = pusher.push(REPORT, deadline=clock.now + 15)
        second = pusher.push(REPORT, deadline=clock.now + 15)
    assert first.outcome == second.outcome == REJECTED
    assert first.reason == "wrong_type" and first.status == 400 and first.attempts == 1
    assert len(session.calls) == 2 and clock.sleeps == []
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1
    assert "wrong_type" in logged[0] and "readings.load.load1: must be a number" in logged[0]


def test_each_distinct_reason_is_logged_and_again_after_an_acceptance(caplog) -> None:
    pusher, session, clock = make([])
    session.script = [refusal("wrong_type"), refusal("forbidden", 403), refusal("wrong_type"), 200,
                      refusal("wrong_type"), 200]
    with caplog.at_level(logging.INFO, logger="agent.push"):
        outcomes = [pusher.push(REPORT, deadline=clock.now + 15).outcome for _ in range(5)]
    assert outcomes == [REJECTED, REJECTED, REJECTED, ACCEPTED, REJECTED]
    reasons = [r.getMessage().split("(", 1)[1].split(")", 1)[0] for r in caplog.records]
    assert reasons == ["wrong_type", "forbidden", "wrong_type"]


def test_a_non_json_answer_is_named_by_its_status(caplog) -> None:
    pusher, _session, clock = make([FakeResponse(404, text="<html>Not Found</html>")])
    result = pusher.push(REPORT, deadline=clock.now + 15)
    assert (result.outcome, result.reason) == (REJECTED, "http_404")


def test_transient_failures_are_retried_with_backoff_until_accepted() -> None:
    pusher, session, clock = make([requests.ConnectionError("refused"), 503, 200], base_delay=0.5)
    result = pusher.push(REPORT, deadline=clock.now + 15)
    assert result.outcome == ACCEPTED and result.attempts == 3
    assert clock.sleeps == [0.5, 1.0]  # rand() = 1: the full delay, doubling


def test_backoff_is_jittered_doubling_and_capped() -> None:
    assert [backoff(n, 0.5, 10.0, lambda: 1.0) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert [backoff(n, 0.5, 10.0, lambda: 0.0) for n in range(3)] == [0.25, 0.5, 1.0]


def test_retries_never_run_past_the_deadline() -> None:
    pusher, session, clock = make([503], timeout=5.0, base_delay=0.5)
    start = clock.now
    deadline = start + 15.0
    result = pusher.push(REPORT, deadline=deadline)
    assert result.outcome == FAILED and result.status == 503
    assert result.attempts == len(session.calls) >= 4
    assert clock.now <= deadline
    for call in session.calls:  # every attempt starts in time and may not outlast the deadline
        assert call["at"] + call["timeout"] <= deadline + 1e-9
        assert deadline - call["at"] >= MIN_ATTEMPT_SECONDS


def test_the_last_attempt_gets_only_the_time_left() -> None:
    pusher, session, clock = make([requests.Timeout("read timed out")], timeout=5.0, base_delay=1.0)
    session.cost = 5.0  # every attempt times out after its full timeout
    deadline = clock.now + 7.0
    pusher.push(REPORT, deadline=deadline)
    # 5 s for the first attempt, a 1 s wait, then the 1 s that is left (less the margin the
    # push keeps to return before its deadline), not the configured 5 s.
    assert [c["timeout"] for c in session.calls] == pytest.approx([5.0, 1.0 - RETURN_MARGIN_SECONDS])
    assert clock.sleeps == [1.0]


def test_no_attempt_when_the_deadline_has_passed() -> None:
    pusher, session, clock = make([200])
    result = pusher.push(REPORT, deadline=clock.now - 1)
    assert result.outcome == FAILED and result.attempts == 0 and session.calls == []
    assert pusher._down_since is None  # not an outage of the collector


def test_429_waits_for_retry_after() -> None:
    too_frequent = FakeResponse(429, {"error": "too frequent", "reason": "too_frequent"}, headers={"Retry-After": "3"})
    pusher, session, clock = make([too_frequent, 200], base_delay=0.5)
    result = pusher.push(REPORT, deadline=clock.now + 15)
    assert result.outcome == ACCEPTED and clock.sleeps == [3.0]


def test_a_stop_request_ends_the_retries_and_is_not_an_outage() -> None:
    pusher, session, clock = make([503])
    waits: List[float] = []
    stop = threading.Event()

    def wait(seconds: float) -> bool:  # like runner.waiter: Event.wait that a stop interrupts
        waits.append(seconds)
        if seconds > 0:
            stop.set()  # the stop request arrives during the first backoff
        return stop.is_set()

    result = pusher.push(REPORT, deadline=clock.now + 15, sleep=wait)
    assert result.outcome == STOPPED and len(session.calls) == 1
    assert [w for w in waits if w > 0] == [0.5]
    assert pusher._down_since is None  # giving up to stop says nothing about the collector


def test_no_attempt_once_the_agent_is_stopping() -> None:
    pusher, session, clock = make([200])
    result = pusher.push(REPORT, deadline=clock.now + 15, sleep=lambda _s: True)
    assert result.outcome == STOPPED and result.attempts == 0 and session.calls == []


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(caplog) -> None:
    pusher, session, clock = make([requests.ConnectionError("Connection refused")])
    with caplog.at_level(logging.DEBUG, logger="agent.push"):
        for _ in range(4):
            assert pusher.push(REPORT, deadline=clock.now + 2).outcome == FAILED
            assert pusher._down_since is not None
        session.script = [200]
        for _ in range(3):
            assert pusher.push(REPORT, deadline=clock.now + 2).outcome == ACCEPTED
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(messages) == 2
    assert messages[0].startswith("cannot deliver reports to http://collector:9847/api/v1/reports")
    assert "Connection refused" in messages[0]
    assert "answers again" in messages[1] and "4 report(s) were not delivered" in messages[1]
    assert pusher._down_since is None


def test_describe_keeps_the_cause_not_the_connection_pool() -> None:
    try:
        requests.post("http://127.0.0.1:1/", timeout=1)
    except requests.RequestException as e:
        text = _describe(e)
    assert text.startswith("ConnectionError: ") and "HTTPConnectionPool" not in text
    assert "refused" in text.lower()


def test_close_closes_the_session() -> None:
    pusher, session, _clock = make([200])
    pusher.close()
    assert session.closed


class BlockingSession:
    """A collector that never finishes answering: each post blocks until released (like a drip,
    whose every byte arrives within the read timeout)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.posts = 0

    def post(self, url: str, **kwargs: Any) -> FakeResponse:
        self.posts += 1
        self.started.set()
        self.release.wait(30)
        raise requests.ConnectionError("released")

    def close(self) -> None:
        self.release.set()


def test_an_answer_that_never_completes_is_given_up_at_the_deadline() -> None:
    session = BlockingSession()
    pusher = Pusher("http://collector:9847", session=session, timeout=5.0)
    try:
        start = time.monotonic()
        result = pusher.push(REPORT, deadline=start + 1.0)
        elapsed = time.monotonic() - start
    finally:
        session.release.set()
    assert result.outcome == FAILED and result.attempts == 1
    assert "no complete answer" in result.reason and pusher._down_since is not None
    assert elapsed < 2 * 1.0  # before: blocked as long as the collector kept answering


def test_a_stop_request_gives_up_the_attempt_in_flight() -> None:
    session = BlockingSession()
    stop = threading.Event()
    results: List[Any] = []

    def wait(seconds: float) -> bool:
        return stop.wait(seconds)

    pusher = Pusher("http://collector:9847", session=session, timeout=5.0, sleep=wait)
    thread = threading.Thread(target=lambda: results.append(pusher.push(REPORT, deadline=time.monotonic() + 60)))
    thread.start()
    try:
        assert session.started.wait(10)
        stop.set()
        thread.join(10)  # the deadline is a minute away: only the stop request can end it sooner
        assert not thread.is_alive()
    finally:
        session.release.set()
        thread.join(10)
    assert results[0].outcome == STOPPED and pusher._down_since is None


def test_a_huge_refusal_body_is_read_only_up_to_the_bound() -> None:
    huge = b'{"error": "' + b"x" * (8 << 20) + b'"}'
    pusher, session, clock = make([FakeResponse(413, body=huge)])
    result = pusher.push(REPORT, deadline=clock.now + 15)
    assert (result.outcome, result.reason) == (REJECTED, "http_413")
    raw = session.responses[0].raw
    assert raw.bytes_read <= MAX_ANSWER_BYTES + 1  # before: all 8 MiB
    assert session.responses[0].closed  # the rest is never read: the connection is dropped


def test_a_compressed_answer_is_inflated_only_up_to_the_bound() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in about 64 kB
    raw = FakeRaw(bomb)
    assert len(read_body(raw, "gzip")) == MAX_ANSWER_BYTES
    assert raw.bytes_read <= MAX_ANSWER_BYTES + 1
    assert read_body(FakeRaw(b"\x1f\x8bnot gzip"), "gzip") == b""
    assert read_body(FakeRaw(b"whatever"), "br") == b""  # not asked for, not read
    assert read_body(FakeRaw(gzip.compress(b'{"reason": "r"}')), "GZIP") == b'{"reason": "r"}'


@pytest.mark.parametrize("status, body, expected", [
    (400, b'{"error": "bad", "reason": "wrong_type", "problems": [{"field": "a", "message": "m"}]}',
     ("wrong_type", "bad: a: m")),
    (403, b'{"reason": "forbidden"}', ("forbidden", "no details")),
    (404, b"<html>Not Found</html>", ("http_404", "<html>Not Found</html>")),
    (400, b"", ("http_400", "no details")),
    (400, b"[1, 2]", ("http_400", "[1, 2]")),
    (400, b"[" * 60000, ("http_400", "[" * 200)),  # nesting that json cannot parse
    (400, b'{"error": "\xff\xfe"}', ("http_400", "\ufffd\ufffd")),
])
def test_refusal_from_literal_answers(status: int, body: bytes, expected: Any) -> None:
    assert parse_refusal(status, body) == expected
