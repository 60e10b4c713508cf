from __future__ import annotations

import gzip
import json
import logging
from typing import Any, Dict, List, Optional

import pytest
import requests

from agent.push import ACCEPTED, FAILED, MIN_ATTEMPT_SECONDS, REJECTED, Pusher, _describe, backoff, encode
from tests.agent.helpers import report_with

REPORT = report_with({"load": {"load1": 0.5, "load5": 0.25, "load15": 0.125}})


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now
        self.sleeps: List[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeResponse:
    def __init__(self, status: int, doc: Any = None, text: str = "", headers: Optional[Dict[str, str]] = None):
        self.status_code = status
        self.doc = doc
        self.text = json.dumps(doc) if doc is not None else text
        self.headers = headers or {}

    def json(self) -> Any:
        if self.doc is None:
            raise ValueError("not JSON")
        return self.doc


class FakeSession:
    """Answers posts from a script: a status, a FakeResponse or an exception; each takes `cost` seconds."""

    def __init__(self, clock: FakeClock, script: List[Any], cost: float = 0.05):
        self.clock = clock
        self.script = list(script)
        self.cost = cost
        self.calls: List[Dict[str, Any]] = []
        self.closed = False

    def post(self, url: str, **kwargs: Any) -> FakeResponse:
        self.calls.append(dict(kwargs, url=url, at=self.clock.now))
        self.clock.now += self.cost
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, int):
            return FakeResponse(answer, {"status": "accepted"} if answer == 200 else {"error": "boom"})
        return answer

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
    # 5 s for the first attempt, a 1 s wait, then the 1 s that is left, not the configured 5 s.
    assert [c["timeout"] for c in session.calls] == [5.0, 1.0]
    assert clock.sleeps == [1.0]


def test_no_attempt_when_the_deadline_has_passed() -> None:
    pusher, session, clock = make([200])
    result = pusher.push(REPORT, deadline=clock.now - 1)
    assert result.outcome == FAILED and result.attempts == 0 and session.calls == []
    assert not pusher.down  # not an outage of the collector


def test_429_waits_for_retry_after() -> None:
    too_frequent = FakeResponse(429, {"error": "too frequent", "reason": "too_frequent"}, headers={"Retry-After": "3"})
    pusher, session, clock = make([too_frequent, 200], base_delay=0.5)
    result = pusher.push(REPORT, deadline=clock.now + 15)
    assert result.outcome == ACCEPTED and clock.sleeps == [3.0]


def test_a_stop_request_ends_the_retries() -> None:
    pusher, session, clock = make([503])
    waits: List[float] = []

    def stopping(seconds: float) -> bool:
        waits.append(seconds)
        return True

    result = pusher.push(REPORT, deadline=clock.now + 15, sleep=stopping)
    assert result.outcome == FAILED and len(session.calls) == 1 and len(waits) == 1


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(caplog) -> None:
    pusher, session, clock = make([requests.ConnectionError("Connection refused")])
    with caplog.at_level(logging.DEBUG, logger="agent.push"):
        for _ in range(4):
            assert pusher.push(REPORT, deadline=clock.now + 2).outcome == FAILED
            assert pusher.down
        session.script = [200]
        for _ in range(3):
            assert pusher.push(REPORT, deadline=clock.now + 2).outcome == ACCEPTED
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(messages) == 2
    assert messages[0].startswith("cannot deliver reports to http://collector:9847/api/v1/reports")
    assert "Connection refused" in messages[0]
    assert "answers again" in messages[1] and "4 report(s) were not delivered" in messages[1]
    assert not pusher.down


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
