"""Ingest: POST /api/v1/reports and DELETE /api/v1/hosts/<host>.

Parse, authenticate, validate, answer; only valid reports reach the store.
Every refusal, whether found here or by the transport before the body was read
(`refuse`), is answered with a fitting status and a JSON body naming the reason
and each offending field, counted by reason, and logged at most once a minute
per host, so a broken agent cannot flood the log.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

from collector import status
from collector.answers import Rejected, Request, Response, json_response
from collector.auth import Access, AuthError, TokenScope
from collector.renderer import Renderer
from collector.selfmetrics import SelfMetrics
from collector.store import HostOwned, HostStore, StoreFull, TooFrequent
from contract.configfile import shown
from contract.rejections import (
    REASON_BAD_CONTENT_TYPE,
    REASON_BAD_ENCODING,
    REASON_BAD_JSON,
    REASON_BODY_TOO_LARGE,
    REASON_HOST_OWNED,
    REASON_TOO_DEEP,
    REASON_TOO_FREQUENT,
    REASON_TOO_MANY_HOSTS,
)
from contract.report import CONTROL_RE, HOST_NAME_RE, Limits, Problem, ReportError, canonical_host, parse_report

log = logging.getLogger(__name__)

LOG_BUDGET = 20  # refusal log lines a minute, all hosts together


@dataclass(frozen=True)
class EdgeLimits:
    max_body_bytes: int = 1 << 20
    max_decompressed_bytes: int = 8 << 20
    max_json_depth: int = 16


class Ingest:
    def __init__(self, store: HostStore, renderer: Renderer, metrics: SelfMetrics, activity: status.Activity,
                 access: Access, limits: Limits = Limits(), edge: EdgeLimits = EdgeLimits(),
                 clock: Callable[[], float] = time.time, min_report_interval: float = 0.0):
        self.store = store
        self.renderer = renderer
        self.metrics = metrics
        self.activity = activity
        self.access = access
        self.limits = limits
        self.edge = edge
        self.clock = clock
        self.min_report_interval = min_report_interval
        self._log_times: Dict[str, float] = {}
        self._log_window = float("-inf")
        self._log_lines = 0
        self._log_suppressed = 0
        self._log_lock = threading.Lock()

    def post_report(self, request: Request) -> Response:
        start = time.perf_counter()
        claim: Optional[Tuple[str, Optional[str]]] = None  # (host, site) a refused report names
        scope: Optional[TokenScope] = None
        push = self.access.push
        try:
            try:
                scope = push.identify(request.header("authorization"))
            except AuthError as e:
                raise Rejected(e.status, e.reason, e.message,
                               headers={"WWW-Authenticate": 'Bearer realm="vdiwatch"'}) from None
            doc = self._decode(self._body(request))
            claim = _claim(doc)
            try:
                report = parse_report(doc, self.limits)
            except ReportError as e:
                raise Rejected(400, e.reason, "the report breaks the contract", e.problems, e.omitted) from None
            try:
                push.check_scope(scope, report.site, report.host)
            except AuthError as e:
                raise Rejected(e.status, e.reason, e.message,
                               [Problem("site", e.reason, e.message)]) from None
            try:
                entry = self.store.put(report, self.clock(), min_interval=self.min_report_interval)
            except HostOwned as e:
                raise Rejected(409, REASON_HOST_OWNED, str(e), [Problem("site", REASON_HOST_OWNED, str(e))]) from None
            except TooFrequent as e:
                raise Rejected(429, REASON_TOO_FREQUENT, str(e), [Problem("host", REASON_TOO_FREQUENT, str(e))],
                               headers={"Retry-After": str(max(1, math.ceil(e.wait)))}) from None
            except StoreFull as e:
                raise Rejected(429, REASON_TOO_MANY_HOSTS, str(e),
                               [Problem("host", REASON_TOO_MANY_HOSTS, str(e))]) from None
        except Rejected as r:
            return self.refuse(r, claim, scope)
        self.renderer.stored(entry)
        self.metrics.accepted.inc()
        self.activity.accepted()
        self.metrics.report_duration.observe(time.perf_counter() - start)
        return json_response(200, {"status": "accepted", "host": report.host})

    def refuse(self, r: Rejected, claim: Optional[Tuple[str, Optional[str]]] = None,
               scope: Optional[TokenScope] = None) -> Response:
        """Count, note and log a refused report, and answer it: the one way a report is refused,
        here or by the transport (a body too large to read, no Content-Length)."""
        self.metrics.rejected.labels(r.reason).inc()
        self.activity.rejected(r.reason)
        noted = claim is not None and self._note(claim, scope, r)
        self._log_rejection(claim[0] if noted and claim else None, r)
        return r.response()

    def release_host(self, request: Request, host: str) -> Response:
        """DELETE /api/v1/hosts/<host>: the owning site's token frees a host to move to another site."""
        push = self.access.push
        try:
            scope = push.identify(request.header("authorization"))
        except AuthError as e:
            return json_response(e.status, {"error": e.message, "reason": e.reason},
                                 {"WWW-Authenticate": 'Bearer realm="vdiwatch"'})
        site = self.store.owner(host)
        if site is None:
            return json_response(404, {"error": f"no report from host {host!r}"})
        try:
            push.check_scope(scope, site, host)
        except AuthError as e:
            return json_response(e.status, {"error": e.message, "reason": e.reason})
        if not self.store.release(host):
            return json_response(404, {"error": f"no report from host {host!r}"})
        log.info("released host %r from site %r (%s); any site may report it now", host, site,
                 scope.label if scope else "push authentication off")
        return json_response(200, {"status": "released", "host": host, "site": site})

    def _note(self, claim: Tuple[str, Optional[str]], scope: Optional[TokenScope], r: Rejected) -> bool:
        """File the refusal under the host it names, for "why is my host missing?", but only where
        the sender could have reported that host: never on a host another site or token owns.
        (An unauthenticated request is refused before its body is read, so it names no host.)"""
        host, site = claim
        if scope is not None and (site is None or not scope.allows(site, host)):
            return False
        message = r.problems[0].message if r.problems else r.message
        return self.store.note_rejection(host, site, r.reason, message)

    def _body(self, request: Request) -> bytes:
        ctype = request.header("content-type").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            raise Rejected(415, REASON_BAD_CONTENT_TYPE,
                           f"Content-Type must be application/json, got {shown(ctype or 'none')}")
        if len(request.body) > self.edge.max_body_bytes:
            raise self.body_too_large()
        encoding = request.header("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            return request.body
        if encoding != "gzip":
            raise Rejected(415, REASON_BAD_ENCODING,
                           f"Content-Encoding must be gzip or identity, got {shown(encoding)}")
        return self._gunzip(request.body)

    def body_too_large(self) -> Rejected:
        return Rejected(413, REASON_BODY_TOO_LARGE, f"the body must be at most {self.edge.max_body_bytes} bytes")

    def _gunzip(self, body: bytes) -> bytes:
        """Decompress at most max_decompressed_bytes: a gzip bomb is cut off early."""
        cap = self.edge.max_decompressed_bytes
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out = inflater.decompress(body, cap + 1)
        except zlib.error as e:
            raise Rejected(400, REASON_BAD_ENCODING, f"the body is not valid gzip: {e}") from None
        if len(out) > cap:
            raise Rejected(413, REASON_BODY_TOO_LARGE,
                           f"the decompressed body must be at most {cap} bytes")
        if not inflater.eof:
            raise Rejected(400, REASON_BAD_ENCODING, "the gzip body is truncated")
        return out

    def _decode(self, raw: bytes) -> Any:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Rejected(400, REASON_BAD_JSON, f"the body is not UTF-8: {e.reason} at byte {e.start}") from None
        too_deep = Rejected(400, REASON_TOO_DEEP,
                            f"JSON nesting must be at most {self.edge.max_json_depth} levels")
        try:
            doc = json.loads(text, parse_constant=_refuse_constant)
        except RecursionError:
            raise too_deep from None
        except ValueError as e:
            raise Rejected(400, REASON_BAD_JSON, f"the body is not valid JSON: {e}") from None
        if _depth_exceeds(doc, self.edge.max_json_depth):
            raise too_deep
        return doc

    def _log_rejection(self, host: Optional[str], r: Rejected) -> None:
        """At most one line a minute per host the refusal could be filed under, and at most
        LOG_BUDGET lines a minute in all, whatever names the refused reports claim."""
        now = self.store.monotonic()
        key = host or ""
        with self._log_lock:
            if now - self._log_window >= 60:
                if self._log_suppressed:
                    log.warning("%d more refused report(s) in the last minute were not logged "
                                "(see vdi_collector_reports_rejected_total)", self._log_suppressed)
                self._log_window, self._log_lines, self._log_suppressed = now, 0, 0
                self._log_times.clear()
            last = self._log_times.get(key)
            if (last is not None and now - last < 60) or self._log_lines >= LOG_BUDGET:
                self._log_suppressed += 1
                return
            self._log_times[key] = now
            self._log_lines += 1
        first = r.problems[0]
        log.warning("refused a report%s: %s (%s%s); further refusals for it are logged once a minute",
                    f" from {host!r}" if host else "", r.message, first.reason,
                    f" at {first.path}" if first.path else "")


def _claim(doc: Any) -> Optional[Tuple[str, Optional[str]]]:
    """The host and site a document claims, where the host is a whole, valid host name."""
    if not isinstance(doc, dict):
        return None
    host, site = doc.get("host"), doc.get("site")
    if not isinstance(host, str) or len(host) > 253 or not HOST_NAME_RE.match(host):
        return None
    host = canonical_host(host)
    if not isinstance(site, str) or len(site) > 128 or CONTROL_RE.search(site) or not site:
        site = None
    return host, site


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _depth_exceeds(doc: Any, limit: int) -> bool:
    """True when containers nest deeper than `limit`; level by level, no recursion to exhaust."""
    level = [doc] if isinstance(doc, (dict, list)) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below = []
        for node in level:
            for child in (node.values() if isinstance(node, dict) else node):
                if isinstance(child, (dict, list)):
                    below.append(child)
        level = below
    return False
