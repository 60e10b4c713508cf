"""The collector's HTTP edge: read, check, answer; only valid reports reach the store.

`Api` holds the routes and is built from its dependencies, so that tests can
drive it with plain `Request` objects; `serve` puts it behind a threading HTTP
server. Every refusal is answered with a fitting status and a JSON body naming
the reason and each offending field, counted by reason, and logged at most once
a minute per host, so a broken agent cannot flood the log.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Union
from urllib.parse import parse_qs, unquote

from agent.report import HOST_NAME_RE, Limits, Problem, ReportError, parse_report
from collector import status
from collector.auth import AuthError, PushAuth, ScrapeAuth
from collector.exposition import blocks, family_parts
from collector.selfmetrics import (
    REASON_BAD_CONTENT_TYPE,
    REASON_BAD_ENCODING,
    REASON_BAD_JSON,
    REASON_BODY_TOO_LARGE,
    REASON_TOO_DEEP,
    REASON_TOO_FREQUENT,
    REASON_TOO_MANY_HOSTS,
    SelfMetrics,
)
from collector.store import HostStore, StoreFull

log = logging.getLogger(__name__)

EXPOSITION_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Request:
    method: str
    path: str
    headers: Dict[str, str] = field(default_factory=dict)  # names lower-cased
    body: bytes = b""

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


@dataclass
class Response:
    status: int
    body: Union[bytes, List[bytes]] = b""  # a list is written part by part, never joined
    content_type: str = "application/json"
    headers: Dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        """The whole body as one bytes object (tests and small answers)."""
        return b"".join(self.body) if isinstance(self.body, list) else self.body


@dataclass(frozen=True)
class EdgeLimits:
    max_body_bytes: int = 1 << 20
    max_decompressed_bytes: int = 8 << 20
    max_json_depth: int = 16


class Rejected(Exception):
    def __init__(self, status: int, reason: str, message: str, problems: Optional[List[Problem]] = None):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.problems = problems or [Problem("", reason, message)]


def json_response(status: int, doc: Any, headers: Optional[Dict[str, str]] = None) -> Response:
    return Response(status, json.dumps(doc, ensure_ascii=False).encode("utf-8") + b"\n",
                    headers=headers or {})


class Api:
    def __init__(self, store: HostStore, metrics: SelfMetrics, limits: Limits = Limits(),
                 edge: EdgeLimits = EdgeLimits(), clock: Callable[[], float] = time.time,
                 push_auth: Optional[PushAuth] = None, scrape_auth: Optional[ScrapeAuth] = None,
                 min_report_interval: float = 0.0):
        self.store = store
        self.metrics = metrics
        self.limits = limits
        self.edge = edge
        self.clock = clock
        self.push_auth = push_auth or PushAuth(())
        self.scrape_auth = scrape_auth or ScrapeAuth()
        self.min_report_interval = min_report_interval
        self.activity = status.Activity(clock)
        self.snapshot_at: Optional[float] = None  # set by whoever writes snapshots
        self._log_times: Dict[str, float] = {}
        self._log_lock = threading.Lock()

    def handle(self, request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        if path == "/api/v1/reports":
            if request.method != "POST":
                return json_response(405, {"error": "method not allowed: use POST"}, {"Allow": "POST"})
            return self.post_report(request)
        if request.method not in ("GET", "HEAD"):
            return json_response(405, {"error": "method not allowed"}, {"Allow": "GET, HEAD"})
        if path == "/healthz":
            return Response(200, b"ok\n", "text/plain; charset=utf-8")
        try:
            self.scrape_auth.check(request.header("authorization"))
        except AuthError as e:
            return json_response(401, {"error": e.message, "reason": e.reason},
                                 {"WWW-Authenticate": 'Basic realm="vdiwatch", charset="UTF-8"'})
        if path == "/metrics":
            return self.metrics_page(request)
        query = _query(request.path)
        if path == "/":
            return self.index_page(query)
        if path == "/api/v1/hosts":
            return self.hosts_api(query)
        for prefix, handler in (("/hosts/", self.host_page), ("/api/v1/hosts/", self.host_api)):
            if path.startswith(prefix) and len(path) > len(prefix):
                return handler(unquote(path[len(prefix):]))
        return json_response(404, {"error": f"not found: {path}"})

    # -- status page and hosts API -------------------------------------------

    def _rows(self, now: float) -> List[Dict[str, Any]]:
        return [status.summary(self.store, e, now) for e, _ in self.store.live_view(now)]

    def index_page(self, query: Dict[str, str]) -> Response:
        now = self.clock()
        rows = self._rows(now)
        info = status.health(self.store, self.activity, self.snapshot_at, now)
        return Response(200, status.render_index(rows, status.select(rows, query), info, query),
                        "text/html; charset=utf-8", {"Cache-Control": "no-store"})

    def hosts_api(self, query: Dict[str, str]) -> Response:
        now = self.clock()
        rows = status.select(self._rows(now), query)
        return json_response(200, {"collector": status.health(self.store, self.activity, self.snapshot_at, now),
                                   "hosts": rows})

    def _host(self, host: str):
        now = self.clock()
        entry = self.store.get(host)
        if entry is None or self.store.expired(entry, now):
            return None, now
        return entry, now

    def host_page(self, host: str) -> Response:
        entry, now = self._host(host)
        if entry is None:
            return Response(404, status.render_not_found(host), "text/html; charset=utf-8")
        row = status.summary(self.store, entry, now)
        return Response(200, status.render_host(row, entry.raw, self.store.history(host), now),
                        "text/html; charset=utf-8", {"Cache-Control": "no-store"})

    def host_api(self, host: str) -> Response:
        entry, now = self._host(host)
        if entry is None:
            rejection = self.store.last_rejection(host)
            return json_response(404, {"error": f"no report from host {host!r}", "last_rejection": None
                                       if rejection is None else {"timestamp_seconds": rejection[0],
                                                                  "reason": rejection[1], "message": rejection[2]}})
        try:
            report = json.loads(entry.raw)
        except ValueError:
            report = None
        return json_response(200, {
            "host": status.summary(self.store, entry, now),
            "history": [{"timestamp_seconds": t, "state": s} for t, s in self.store.history(host)],
            "report": report,
        })

    # -- ingest -------------------------------------------------------------

    def post_report(self, request: Request) -> Response:
        start = time.perf_counter()
        host_hint = ""
        headers: Dict[str, str] = {}
        try:
            try:
                scope = self.push_auth.identify(request.header("authorization"))
            except AuthError as e:
                headers["WWW-Authenticate"] = 'Bearer realm="vdiwatch"'
                raise Rejected(e.status, e.reason, e.message) from None
            raw = self._body(request)
            doc = self._decode(raw)
            if isinstance(doc, dict) and isinstance(doc.get("host"), str):
                host_hint = doc["host"][:64]
            try:
                report = parse_report(doc, self.limits)
            except ReportError as e:
                raise Rejected(400, e.reason, "the report breaks the contract", e.problems) from None
            try:
                self.push_auth.check_scope(scope, report.site, report.host)
            except AuthError as e:
                raise Rejected(e.status, e.reason, e.message,
                               [Problem("site", e.reason, e.message)]) from None
            now = self.clock()
            self._check_frequency(report, now, headers)
            try:
                self.store.put(report, raw, now)
            except StoreFull as e:
                raise Rejected(429, REASON_TOO_MANY_HOSTS, str(e),
                               [Problem("host", REASON_TOO_MANY_HOSTS, str(e))]) from None
        except Rejected as r:
            self.metrics.rejected.labels(r.reason).inc()
            self.activity.rejected(r.reason)
            if HOST_NAME_RE.match(host_hint):
                self.store.note_rejection(host_hint, r.reason, r.problems[0].message if r.problems else r.message)
            self._log_rejection(host_hint or "?", r)
            return json_response(r.status, {
                "error": r.message,
                "reason": r.reason,
                "problems": [p.as_dict() for p in r.problems],
            }, headers)
        self.metrics.accepted.inc()
        self.activity.accepted()
        self.metrics.report_duration.observe(time.perf_counter() - start)
        return json_response(200, {"status": "accepted", "host": report.host})

    def _check_frequency(self, report, now: float, headers: Dict[str, str]) -> None:
        """A host may report at most once per min_report_interval; a goodbye always gets through."""
        if report.goodbye or self.min_report_interval <= 0:
            return
        last = self.store.get(report.host)
        if last is None or last.report.goodbye:
            return
        wait = self.min_report_interval - (now - last.received_at)
        if wait > 0:
            headers["Retry-After"] = str(max(1, int(wait + 0.999)))
            message = f"host {report.host!r} reported {now - last.received_at:.3f} s ago; " \
                      f"the minimum interval is {self.min_report_interval:g} s"
            raise Rejected(429, REASON_TOO_FREQUENT, message, [Problem("host", REASON_TOO_FREQUENT, message)])

    def _body(self, request: Request) -> bytes:
        ctype = request.header("content-type").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            raise Rejected(415, REASON_BAD_CONTENT_TYPE,
                           f"Content-Type must be application/json, got {ctype or 'none'!r}")
        if len(request.body) > self.edge.max_body_bytes:
            raise Rejected(413, REASON_BODY_TOO_LARGE,
                           f"the body must be at most {self.edge.max_body_bytes} bytes")
        encoding = request.header("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            return request.body
        if encoding != "gzip":
            raise Rejected(415, REASON_BAD_ENCODING,
                           f"Content-Encoding must be gzip or identity, got {encoding!r}")
        return self._gunzip(request.body)

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

    def _log_rejection(self, host: str, r: Rejected) -> None:
        now = self.clock()
        with self._log_lock:
            last = self._log_times.get(host)
            if last is not None and now - last < 60:
                return
            if len(self._log_times) > 10_000:
                self._log_times.clear()
            self._log_times[host] = now
        first = r.problems[0]
        log.warning("refused a report from %r: %s (%s%s); further refusals for it are logged once a minute",
                    host, r.message, first.reason, f" at {first.path}" if first.path else "")

    # -- exposition ---------------------------------------------------------

    def metrics_page(self, request: Request) -> Response:
        start = time.perf_counter()
        parts = family_parts(self.store.exposition(self.clock()))
        parts.append(self.metrics.render().encode("utf-8"))
        headers = {}
        body: Union[bytes, List[bytes]] = parts
        if "gzip" in request.header("accept-encoding"):
            deflate = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            body = [deflate.compress(block) for block in blocks(parts)]
            body.append(deflate.flush())
            headers["Content-Encoding"] = "gzip"
        self.metrics.scrape_duration.set(time.perf_counter() - start)
        return Response(200, body, EXPOSITION_TYPE, headers)


def _query(target: str) -> Dict[str, str]:
    """The first value of each query parameter."""
    _, _, qs = target.partition("?")
    return {k: v[0] for k, v in parse_qs(qs, keep_blank_values=True).items()}


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
