"""Delivery of reports to the collector: POST /api/v1/reports, gzip-compressed JSON.

A report that cannot be delivered is retried with jittered exponential backoff,
but only until a deadline, the time of the next scheduled collection: the next
report is newer and the counters in it are cumulative, so nothing is lost by
dropping an old one, while a late collection would be. Refusals (4xx other
than 429) are not retried, since the same report would be refused again.

Logging stays quiet in a steady state: an outage of the collector is logged
once when it starts and once when it ends, and each distinct refusal reason
once until a report is accepted again.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Set, Tuple

import requests

from agent import __version__

log = logging.getLogger(__name__)

REPORTS_PATH = "/api/v1/reports"

ACCEPTED = "accepted"
REJECTED = "rejected"  # the collector answered and refused: not retried
FAILED = "failed"  # no answer, or a transient one (5xx, 429) until the deadline

MIN_ATTEMPT_SECONDS = 0.2  # no attempt is started with less time left than this
_MAX_REASONS = 64  # distinct refusal reasons remembered for logging


@dataclass(frozen=True)
class PushResult:
    outcome: str  # ACCEPTED, REJECTED or FAILED
    attempts: int
    status: Optional[int] = None  # the last HTTP status, if any answer came
    reason: str = ""  # the collector's reason for a refusal, or what went wrong

    @property
    def accepted(self) -> bool:
        return self.outcome == ACCEPTED


def encode(report: Dict[str, Any]) -> bytes:
    """The request body: compact JSON, gzip-compressed (a 10 kB report becomes about 2 kB)."""
    data = json.dumps(report, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    return gzip.compress(data, compresslevel=6, mtime=0)


def backoff(attempt: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Delay before retry number `attempt` (0-based): base * 2**attempt, capped, then
    jittered to between half and all of it, so that a fleet does not retry in step."""
    delay = min(cap, base * (2 ** attempt))
    return delay * (0.5 + 0.5 * rand())


class Pusher:
    """Sends reports to one collector; owns the HTTP session (keep-alive) and the outage state.

    `clock` is monotonic and is the clock of `deadline`. `sleep(seconds)` waits
    between retries; if it returns True (as `threading.Event.wait` does once the
    agent is stopping), the retries end at once.
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
        self.session = session if session is not None else requests.Session()
        self.headers = {"Content-Type": "application/json", "Content-Encoding": "gzip",
                        "User-Agent": f"vdiwatch-agent/{__version__}"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.verify: Any = ca_file or True
        self._down_since: Optional[float] = None  # clock() when the current outage started
        self._lost = 0  # reports not delivered during the current outage
        self._reasons_logged: Set[str] = set()

    def push(self, report: Dict[str, Any], deadline: float,
             sleep: Optional[Callable[[float], Any]] = None) -> PushResult:
        """Deliver `report`, retrying transient failures until `deadline` (a `clock()` value)."""
        sleep = self.sleep if sleep is None else sleep
        try:
            body = encode(report)
        except ValueError as e:  # NaN or infinity in a reading: the collector would refuse it
            return self._refused(PushResult(REJECTED, 0, None, "not_finite"), f"the report cannot be sent: {e}")
        attempt = 0
        problem = "no time left before the next collection"
        status: Optional[int] = None
        while True:
            left = deadline - self.clock()
            if left < MIN_ATTEMPT_SECONDS:
                break
            attempt += 1
            retry_after = 0.0
            try:
                response = self.session.post(self.url, data=body, headers=self.headers,
                                             timeout=min(self.timeout, left), verify=self.verify,
                                             allow_redirects=False)
            except requests.RequestException as e:
                problem = _describe(e)
                status = None
            else:
                status = response.status_code
                if 200 <= status < 300:
                    self._answered()
                    self._reasons_logged.clear()
                    return PushResult(ACCEPTED, attempt, status)
                reason, message = _refusal(response)
                if status == 429 or status >= 500:
                    problem = f"HTTP {status}: {message}"
                    retry_after = _retry_after(response) if status == 429 else 0.0
                else:
                    self._answered()
                    return self._refused(PushResult(REJECTED, attempt, status, reason),
                                         f"HTTP {status}: {message}")
            delay = max(backoff(attempt - 1, self.base_delay, self.max_delay, self.rand), retry_after)
            if self.clock() + delay + MIN_ATTEMPT_SECONDS > deadline:
                break
            log.debug("push attempt %d failed (%s); retrying in %.2f s", attempt, problem, delay)
            if sleep(delay):
                break
        if attempt:  # no attempt at all says nothing about the collector
            self._failed(problem)
        return PushResult(FAILED, attempt, status, problem)

    def close(self) -> None:
        self.session.close()

    @property
    def down(self) -> bool:
        """Whether the collector is in an outage (the last push failed for lack of an answer)."""
        return self._down_since is not None

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


def _describe(e: requests.RequestException) -> str:
    """A one-line description of a transport error (requests nests urllib3's in long messages).

    "ConnectionError: Failed to establish a new connection: [Errno 111] Connection refused"
    """
    inner = getattr(e.args[0], "reason", None) if e.args else None
    text = str(inner if inner is not None else e)
    head, sep, tail = text.partition("): ")
    if sep and "(host=" in head:
        text = tail
    return f"{type(e).__name__}: {text[:200]}"


def _refusal(response: requests.Response) -> Tuple[str, str]:
    """(reason, message) from the collector's JSON answer; the status when it is not JSON."""
    reason = f"http_{response.status_code}"
    try:
        doc = response.json()
    except ValueError:
        return reason, (response.text or "").strip()[:200] or "no details"
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


def _retry_after(response: requests.Response) -> float:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, min(float(value), 300.0))
    except ValueError:
        return 0.0
