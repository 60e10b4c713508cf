"""Delivery of reports to the collector: POST /api/v1/reports, gzip-compressed JSON.

A report that cannot be delivered is retried with jittered exponential backoff,
but only until a deadline, the time of the next scheduled collection: the next
report is newer and the counters in it are cumulative, so nothing is lost by
dropping an old one, while a late collection would be. Refusals (4xx other
than 429) are not retried, since the same report would be refused again.

The deadline bounds the whole push, not each read: every attempt (connect,
send, answer) runs in a worker thread that the pusher gives up on at the
deadline, or at once when the agent is stopping, and whose sockets it then shuts
down. A collector that drips its answer a byte at a time (each read well within
the timeout) therefore cannot hold a push past the next collection, nor a stop.
Answers are read streamed and only their first MAX_ANSWER_BYTES, so a huge
error page costs the agent no memory.

Logging stays quiet in a steady state: an outage of the collector is logged
once when it starts and once when it ends, and each distinct refusal reason
once until a report is accepted again.
"""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import random
import socket
import threading
import time
import weakref
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Set, Tuple

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from agent import __version__

log = logging.getLogger(__name__)

REPORTS_PATH = "/api/v1/reports"

ACCEPTED = "accepted"
REJECTED = "rejected"  # the collector answered and refused: not retried
FAILED = "failed"  # no answer, or a transient one (5xx, 429) until the deadline
STOPPED = "stopped"  # the agent is stopping: given up at once, says nothing about the collector

MIN_ATTEMPT_SECONDS = 0.2  # no attempt is started with less time left than this
RETURN_MARGIN_SECONDS = 0.1  # a push returns this long before its deadline, so the caller is on time
STOP_POLL_SECONDS = 0.1  # how often an attempt in flight looks for a stop request
MAX_ANSWER_BYTES = 64 * 1024  # of any answer body, after decompression; the rest is never read
_MAX_REASONS = 64  # distinct refusal reasons remembered for logging

# What a worker's request may raise when the network or the collector fails (or its socket is shut).
_TRANSPORT_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


@dataclass(frozen=True)
class PushResult:
    outcome: str  # ACCEPTED, REJECTED, FAILED or STOPPED
    attempts: int
    status: Optional[int] = None  # the last HTTP status, if any answer came
    reason: str = ""  # the collector's reason for a refusal, or what went wrong

    @property
    def accepted(self) -> bool:
        return self.outcome == ACCEPTED


@dataclass(frozen=True)
class Answer:
    """What an attempt got back: the status, Retry-After and at most MAX_ANSWER_BYTES of body."""

    status: int
    body: bytes = b""
    retry_after: str = ""


def encode(report: Dict[str, Any]) -> bytes:
    """The request body: compact JSON, gzip-compressed (a 10 kB report becomes about 2 kB)."""
    data = json.dumps(report, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    return gzip.compress(data, compresslevel=6, mtime=0)


def backoff(attempt: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Delay before retry number `attempt` (0-based): base * 2**attempt, capped, then
    jittered to between half and all of it, so that a fleet does not retry in step."""
    delay = min(cap, base * (2 ** attempt))
    return delay * (0.5 + 0.5 * rand())


def read_body(raw: Any, encoding: str = "", limit: int = MAX_ANSWER_BYTES) -> bytes:
    """At most `limit` bytes of an answer body from `raw` (urllib3's response), decompressed
    here with the same bound: urllib3 would inflate a whole compressed chunk at once."""
    data = raw.read(limit + 1, decode_content=False) or b""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return data[:limit]
    if encoding not in ("gzip", "x-gzip", "deflate"):
        return b""  # not asked for (Accept-Encoding: identity) and not readable: no details
    try:
        return zlib.decompressobj(zlib.MAX_WBITS | 32).decompress(data, limit)  # gzip or zlib header
    except zlib.error:
        return b""


class SocketRegistry:
    """The sockets a session has opened, so that an attempt given up on can be cut off from
    another thread: shutting a socket down wakes a read blocked on it. A socket that an
    abandoned worker opens later (it was still connecting) is shut down as it registers."""

    def __init__(self) -> None:
        self._sockets: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._abandoned: "weakref.WeakSet[threading.Thread]" = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, sock: Any) -> Any:
        with self._lock:
            self._sockets.add(sock)
            abandoned = threading.current_thread() in self._abandoned
        if abandoned:
            _shut(sock)
        return sock

    def abandon(self, worker: Optional[threading.Thread] = None) -> int:
        """Shut every open socket down (the pool reconnects when next used), and any that
        `worker` opens from now on; how many were open."""
        with self._lock:
            if worker is not None:
                self._abandoned.add(worker)
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)
        return len(sockets)


def _shut(sock: Any) -> None:
    """Shut both directions of the connection down. Should a blocked read not wake at once
    (Winsock does not promise it), the collector's next byte resets the connection: data that
    arrives after SD_RECEIVE does (learn.microsoft.com, winsock2 `shutdown`, Remarks)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed, or never connected


def guarded_session(sockets: SocketRegistry) -> requests.Session:
    """A requests session whose connections register their sockets in `sockets` as soon as
    they connect, before a TLS handshake that a collector could drip too.

    What is registered is a duplicate of the socket, owned by the connection: the
    TLS layer detaches the socket it wraps, while shutting down a duplicate still
    cuts the one connection both refer to.
    """
    class Guarded:
        def _new_conn(self) -> Any:
            sock = super()._new_conn()  # type: ignore[misc]
            self._vdiwatch_guard = sockets.add(sock.dup())
            return sock

        def close(self) -> None:
            try:
                super().close()  # type: ignore[misc]
            finally:
                guard = getattr(self, "_vdiwatch_guard", None)
                self._vdiwatch_guard = None
                if guard is not None:
                    guard.close()

    class Conn(Guarded, HTTPConnection):
        pass

    class TlsConn(Guarded, HTTPSConnection):
        pass

    class Pool(HTTPConnectionPool):
        ConnectionCls = Conn

    class TlsPool(HTTPSConnectionPool):
        ConnectionCls = TlsConn

    pools = {"http": Pool, "https": TlsPool}

    def guard(manager: Any) -> Any:
        if manager.pool_classes_by_scheme is urllib3.poolmanager.pool_classes_by_scheme:  # not SOCKS
            manager.pool_classes_by_scheme = pools
        return manager

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            guard(self.poolmanager)

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            return guard(super().proxy_manager_for(proxy, **kwargs))

    session = requests.Session()
    session.mount("http://", Adapter())
    session.mount("https://", Adapter())
    return session


class Pusher:
    """Sends reports to one collector; owns the HTTP session (keep-alive) and the outage state.
    One push at a time: a pusher is not shared between threads.

    `clock` is monotonic and is the clock of `deadline`. `sleep(seconds)` waits
    between retries and behaves like `threading.Event.wait` on the agent's stop
    event (as `runner.waiter` does): once it returns True the push ends at once,
    and `sleep(0)` asks without waiting, which is how an attempt in flight learns
    of a stop. `time.sleep` (returns None) never stops a push: the goodbye.
    """

    def __init__(self, url: str, *, token: str = "", timeout: float = 5.0, ca_file: str = "",
                 session: Optional[requests.Session] = None,
                 sleep: Callable[[float], Any] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 rand: Callable[[], float] = random.random,
                 base_delay: float = 0.5, max_delay: float = 10.0):
        self.url = url.rstrip("/") + REPORTS_PATH
        self.timeout = timeout
        self.sleep = sleep
        self.clock = clock
        self.rand = rand
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sockets = SocketRegistry()
        self.session = session if session is not None else guarded_session(self.sockets)
        self.headers = {"Content-Type": "application/json", "Content-Encoding": "gzip",
                        "Accept-Encoding": "identity", "User-Agent": f"vdiwatch-agent/{__version__}"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.verify: Any = ca_file or True
        self._down_since: Optional[float] = None  # clock() when the current outage started
        self._lost = 0  # reports not delivered during the current outage
        self._reasons_logged: Set[str] = set()

    def push(self, report: Dict[str, Any], deadline: float,
             sleep: Optional[Callable[[float], Any]] = None) -> PushResult:
        """Deliver `report`, retrying transient failures; returns before `deadline` (a `clock()`
        value) whatever the collector does, and at once when `sleep` says the agent is stopping."""
        sleep = self.sleep if sleep is None else sleep
        try:
            body = encode(report)
        except ValueError as e:  # NaN or infinity in a reading: the collector would refuse it
            return self._refused(PushResult(REJECTED, 0, None, "not_finite"), f"the report cannot be sent: {e}")
        end = deadline - RETURN_MARGIN_SECONDS
        attempt = 0
        problem = "no time left before the next collection"
        status: Optional[int] = None
        while True:
            left = end - self.clock()
            if left < MIN_ATTEMPT_SECONDS:
                break
            if sleep(0):
                return PushResult(STOPPED, attempt, status, "the agent is stopping")
            attempt += 1
            retry_after = 0.0
            try:
                answer = self._attempt(body, end, sleep)
            except _Stopping:
                return PushResult(STOPPED, attempt, status, "the agent is stopping")
            except _TRANSPORT_ERRORS as e:
                problem = _describe(e)
                status = None
            else:
                status = answer.status
                if 200 <= status < 300:
                    self._answered()
                    self._reasons_logged.clear()
                    return PushResult(ACCEPTED, attempt, status)
                reason, message = refusal(status, answer.body)
                if status == 429 or status >= 500:
                    problem = f"HTTP {status}: {message}"
                    retry_after = parse_retry_after(answer.retry_after) if status == 429 else 0.0
                else:
                    self._answered()
                    return self._refused(PushResult(REJECTED, attempt, status, reason),
                                         f"HTTP {status}: {message}")
            delay = max(backoff(attempt - 1, self.base_delay, self.max_delay, self.rand), retry_after)
            if self.clock() + delay + MIN_ATTEMPT_SECONDS > end:
                break
            log.debug("push attempt %d failed (%s); retrying in %.2f s", attempt, problem, delay)
            if sleep(delay):
                return PushResult(STOPPED, attempt, status, "the agent is stopping")
        if attempt:  # no attempt at all says nothing about the collector
            self._failed(problem)
        return PushResult(FAILED, attempt, status, problem)

    def close(self) -> None:
        self.session.close()
        self.sockets.abandon()

    def _attempt(self, body: bytes, end: float, sleep: Callable[[float], Any]) -> Answer:
        """One request, in a worker thread so that it can be given up on: at `end`
        (raises `_GivenUp`) or when `sleep(0)` says the agent is stopping (raises `_Stopping`)."""
        box: Dict[str, Any] = {}
        done = threading.Event()
        given = end - self.clock()
        timeout = min(self.timeout, given)  # each read's; `end` bounds them all

        def work() -> None:
            try:
                box["answer"] = self._exchange(body, timeout)
            except BaseException as e:  # noqa: B036 - handed to the waiting thread, raised there
                box["error"] = e
            finally:
                done.set()

        worker = threading.Thread(target=work, name="vdiwatch-push", daemon=True)
        worker.start()
        while not done.wait(max(0.0, min(STOP_POLL_SECONDS, end - self.clock()))):
            if self.clock() >= end:
                self.sockets.abandon(worker)
                raise _GivenUp(f"no complete answer in the {given:.1f} s left before the next collection")
            if sleep(0):
                self.sockets.abandon(worker)
                raise _Stopping()
        if "error" in box:
            raise box["error"]
        return box["answer"]

    def _exchange(self, body: bytes, timeout: float) -> Answer:
        """The request and a bounded read of its answer (runs in the worker thread)."""
        response = self.session.post(self.url, data=body, headers=self.headers, timeout=timeout,
                                     verify=self.verify, allow_redirects=False, stream=True)
        try:
            data = read_body(response.raw, response.headers.get("Content-Encoding", ""))
            return Answer(response.status_code, data, response.headers.get("Retry-After", ""))
        finally:
            response.close()  # a body read to its end has already gone back to the pool

    def _failed(self, problem: str) -> None:
        self._lost += 1
        if self._down_since is None:
            self._down_since = self.clock()
            log.warning("cannot deliver reports to %s: %s; retrying every interval "
                        "(logged again when the collector answers)", self.url, problem)

    def _answered(self) -> None:
        if self._down_since is not None:
            log.warning("the collector at %s answers again after %.0f s; %d report(s) were not delivered",
                        self.url, self.clock() - self._down_since, self._lost)
            self._down_since = None
            self._lost = 0

    def _refused(self, result: PushResult, message: str) -> PushResult:
        if result.reason not in self._reasons_logged and len(self._reasons_logged) < _MAX_REASONS:
            self._reasons_logged.add(result.reason)
            log.error("the collector refused the report (%s): %s; this reason is logged again only "
                      "after a report is accepted", result.reason, message)
        return result


class _GivenUp(OSError):
    """An attempt still without a complete answer at the deadline (a transport failure)."""


class _Stopping(Exception):
    """An attempt given up on because the agent is stopping."""


def _describe(e: BaseException) -> str:
    """A one-line description of a transport error (requests nests urllib3's in long messages).

    "ConnectionError: Failed to establish a new connection: [Errno 111] Connection refused"
    """
    if isinstance(e, _GivenUp):
        return str(e)
    if isinstance(e, requests.exceptions.InvalidHeader):  # its message holds the header: the token
        return "InvalidHeader: the Authorization header is not valid (check the token)"
    inner = getattr(e.args[0], "reason", None) if e.args else None
    text = str(inner if inner is not None else e)
    head, sep, tail = text.partition("): ")
    if sep and "(host=" in head:
        text = tail
    return f"{type(e).__name__}: {text[:200]}"


def refusal(status: int, body: bytes) -> Tuple[str, str]:
    """(reason, message) from the collector's JSON answer; the status when it is not JSON.

    >>> refusal(403, b'{"reason": "forbidden", "error": "not your site"}')
    ('forbidden', 'not your site')
    """
    reason = f"http_{status}"
    text = body.decode("utf-8", errors="replace")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: 64 KiB of "[" from a hostile collector
        return reason, text.strip()[:200] or "no details"
    if not isinstance(doc, dict):
        return reason, str(doc)[:200]
    reason = str(doc.get("reason") or reason)[:64]
    message = str(doc.get("error") or "no details")[:200]
    problems = doc.get("problems")
    if isinstance(problems, list) and problems:
        fields = [f"{p.get('field') or '-'}: {p.get('message', '')}" for p in problems[:5] if isinstance(p, dict)]
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        message = f"{message}: " + "; ".join(fields) + more
    return reason, message


def parse_retry_after(value: str) -> float:
    """Seconds from a Retry-After header (an HTTP date counts as none), at most 300."""
    try:
        return max(0.0, min(float(value), 300.0))
    except ValueError:
        return 0.0
