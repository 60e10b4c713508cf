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
import math
import threading
import time
import zlib
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import parse_qs, unquote

from collector import status
from collector.auth import AuthError, PushAuth, ScrapeAuth, TokenScope
from collector.exposition import blocks, family_parts
from collector.renderer import Renderer
from collector.selfmetrics import (
    REASON_BAD_CONTENT_TYPE,
    REASON_BAD_ENCODING,
    REASON_BAD_JSON,
    REASON_BODY_TOO_LARGE,
    REASON_HOST_OWNED,
    REASON_TOO_DEEP,
    REASON_TOO_FREQUENT,
    REASON_TOO_MANY_HOSTS,
    SelfMetrics,
)
from collector.store import HostOwned, HostStore, StoreFull, TooFrequent
from contract.report import (
    CONTROL_RE,
    HOST_NAME_RE,
    Limits,
    Problem,
    ReportError,
    canonical_host,
    parse_report,
    report_to_doc,
    report_to_json,
)

log = logging.getLogger(__name__)

EXPOSITION_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HOSTS_API = "/api/v1/hosts/"
LOG_BUDGET = 20  # refusal log lines a minute, all hosts together


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
    def __init__(self, status: int, reason: str, message: str, problems: Optional[List[Problem]] = None,
                 omitted: int = 0):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.problems = problems or [Problem("", reason, message)]
        self.omitted = omitted  # problems found beyond the ones listed


def json_response(status: int, doc: Any, headers: Optional[Dict[str, str]] = None) -> Response:
    return Response(status, json.dumps(doc, ensure_ascii=False).encode("utf-8") + b"\n",
                    headers=headers or {})


@dataclass(frozen=True)
class Route:
    """Where a request goes: its answer, whether it needs scrape credentials, whether it renders in a thread."""

    answer: Callable[[], Response]
    protected: bool = False
    slow: bool = False  # rendering takes long enough to run off the event loop (every host is read)


def auth_refusal(e: AuthError) -> Response:
    """401 with a challenge; 503 with Retry-After when password checks are saturated."""
    headers = {"WWW-Authenticate": 'Basic realm="vdiwatch", charset="UTF-8"'} if e.status == 401 \
        else {"Retry-After": "1"}
    return json_response(e.status, {"error": e.message, "reason": e.reason}, headers)


class Api:
    def __init__(self, store: HostStore, metrics: SelfMetrics, limits: Limits = Limits(),
                 edge: EdgeLimits = EdgeLimits(), clock: Callable[[], float] = time.time,
                 push_auth: Optional[PushAuth] = None, scrape_auth: Optional[ScrapeAuth] = None,
                 min_report_interval: float = 0.0, renderer: Optional[Renderer] = None):
        self.store = store
        self.renderer = renderer or Renderer(store)
        self.metrics = metrics
        self.limits = limits
        self.edge = edge
        self.clock = clock
        self.push_auth = push_auth or PushAuth(())
        self.scrape_auth = scrape_auth or ScrapeAuth()
        self.min_report_interval = min_report_interval
        self.activity = status.Activity(store.monotonic)
        self.snapshot_at: Optional[float] = None  # set by whoever writes snapshots
        self._log_times: Dict[str, float] = {}
        self._log_window = float("-inf")
        self._log_lines = 0
        self._log_suppressed = 0
        self._log_lock = threading.Lock()

    def use_auth(self, push_auth: PushAuth, scrape_auth: ScrapeAuth) -> None:
        """Replace who may push and scrape (a reload); requests in flight finish with the old ones."""
        self.push_auth, self.scrape_auth = push_auth, scrape_auth

    def handle(self, request: Request) -> Response:
        """Route, check scrape credentials, answer, all in the calling thread (tests, callers off the loop).

        The transport does the same steps itself, with the password check in a worker thread.
        """
        route = self.route(request)
        if route.protected:
            try:
                self.scrape_auth.check(request.header("authorization"))
            except AuthError as e:
                return auth_refusal(e)
        return route.answer()

    def route(self, request: Request) -> Route:
        """What a request is for, decided before any credential is checked: an unknown path costs no hashing."""
        path = request.path.split("?", 1)[0]
        if path == "/api/v1/reports":
            if request.method != "POST":
                return Route(partial(json_response, 405, {"error": "method not allowed: use POST"}, {"Allow": "POST"}))
            return Route(partial(self.post_report, request))
        if request.method == "DELETE" and path.startswith(HOSTS_API) and len(path) > len(HOSTS_API):
            host = canonical_host(unquote(path[len(HOSTS_API):]))
            return Route(partial(self.release_host, request, host))  # push-token authorised
        if request.method not in ("GET", "HEAD"):
            return Route(partial(json_response, 405, {"error": "method not allowed"}, {"Allow": "GET, HEAD"}))
        if path == "/healthz":
            return Route(partial(Response, 200, b"ok\n", "text/plain; charset=utf-8"))
        if path == "/metrics":
            return Route(partial(self.metrics_page, request), protected=True, slow=True)
        query = _query(request.path)
        if path == "/":
            return Route(partial(self.index_page, query), protected=True, slow=True)
        if path == "/api/v1/hosts":
            return Route(partial(self.hosts_api, query), protected=True, slow=True)
        for prefix, handler in (("/hosts/", self.host_page), ("/api/v1/hosts/", self.host_api)):
            if path.startswith(prefix) and len(path) > len(prefix):
                return Route(partial(handler, canonical_host(unquote(path[len(prefix):]))), protected=True)
        return Route(partial(json_response, 404, {"error": f"not found: {path}"}))

    # -- status page and hosts API -------------------------------------------

    def _rows(self, now: float) -> List[Dict[str, Any]]:
        return [status.summary(self.store, e, now) for e, _ in self.store.live_view(now)]

    def _health(self, now: float) -> Dict[str, Any]:
        return status.health(self.store, self.activity, self.snapshot_at, now, self.clock())

    def index_page(self, query: Dict[str, str]) -> Response:
        now = self.store.monotonic()
        rows = self._rows(now)
        return Response(200, status.render_index(rows, status.select(rows, query), self._health(now), query),
                        "text/html; charset=utf-8", {"Cache-Control": "no-store"})

    def hosts_api(self, query: Dict[str, str]) -> Response:
        now = self.store.monotonic()
        rows = status.select(self._rows(now), query)
        return json_response(200, {"collector": self._health(now), "hosts": rows})

    def _host(self, host: str):
        now = self.store.monotonic()
        entry = self.store.get(host)
        if entry is None or self.store.expired(entry, now):
            return None, now
        return entry, now

    def host_page(self, host: str) -> Response:
        entry, now = self._host(host)
        if entry is None:
            return Response(404, status.render_not_found(host), "text/html; charset=utf-8")
        row = status.summary(self.store, entry, now)
        return Response(200, status.render_host(row, report_to_json(entry.report), self.store.history(host),
                                                  self.clock()),
                        "text/html; charset=utf-8", {"Cache-Control": "no-store"})

    def host_api(self, host: str) -> Response:
        entry, now = self._host(host)
        if entry is None:
            rejection = self.store.last_rejection(host)
            return json_response(404, {"error": f"no report from host {host!r}", "last_rejection": None
                                       if rejection is None else {"timestamp_seconds": rejection[0],
                                                                  "reason": rejection[1], "message": rejection[2]}})
        return json_response(200, {
            "host": status.summary(self.store, entry, now),
            "history": [{"timestamp_seconds": t, "state": s} for t, s in self.store.history(host)],
            "report": report_to_doc(entry.report),
        })

    def release_host(self, request: Request, host: str) -> Response:
        """DELETE /api/v1/hosts/<host>: the owning site's token frees a host to move to another site."""
        try:
            scope = self.push_auth.identify(request.header("authorization"))
        except AuthError as e:
            return json_response(e.status, {"error": e.message, "reason": e.reason},
                                 {"WWW-Authenticate": 'Bearer realm="vdiwatch"'})
        site = self.store.owner(host)
        if site is None:
            return json_response(404, {"error": f"no report from host {host!r}"})
        try:
            self.push_auth.check_scope(scope, site, host)
        except AuthError as e:
            return json_response(e.status, {"error": e.message, "reason": e.reason})
        if not self.store.release(host):
            return json_response(404, {"error": f"no report from host {host!r}"})
        log.info("released host %r from site %r (%s); any site may report it now", host, site,
                 scope.label if scope else "push authentication off")
        return json_response(200, {"status": "released", "host": host, "site": site})

    # -- ingest -------------------------------------------------------------

    def post_report(self, request: Request) -> Response:
        start = time.perf_counter()
        claim: Optional[Tuple[str, Optional[str]]] = None  # (host, site) a refused report names
        scope: Optional[TokenScope] = None
        headers: Dict[str, str] = {}
        try:
            try:
                scope = self.push_auth.identify(request.header("authorization"))
            except AuthError as e:
                headers["WWW-Authenticate"] = 'Bearer realm="vdiwatch"'
                raise Rejected(e.status, e.reason, e.message) from None
            doc = self._decode(self._body(request))
            claim = _claim(doc)
            try:
                report = parse_report(doc, self.limits)
            except ReportError as e:
                raise Rejected(400, e.reason, "the report breaks the contract", e.problems, e.omitted) from None
            try:
                self.push_auth.check_scope(scope, report.site, report.host)
            except AuthError as e:
                raise Rejected(e.status, e.reason, e.message,
                               [Problem("site", e.reason, e.message)]) from None
            try:
                entry = self.store.put(report, self.clock(), min_interval=self.min_report_interval)
            except HostOwned as e:
                raise Rejected(409, REASON_HOST_OWNED, str(e), [Problem("site", REASON_HOST_OWNED, str(e))]) from None
            except TooFrequent as e:
                headers["Retry-After"] = str(max(1, math.ceil(e.wait)))
                raise Rejected(429, REASON_TOO_FREQUENT, str(e),
                               [Problem("host", REASON_TOO_FREQUENT, str(e))]) from None
            except StoreFull as e:
                raise Rejected(429, REASON_TOO_MANY_HOSTS, str(e),
                               [Problem("host", REASON_TOO_MANY_HOSTS, str(e))]) from None
        except Rejected as r:
            self.metrics.rejected.labels(r.reason).inc()
            self.activity.rejected(r.reason)
            noted = claim is not None and self._note(claim, scope, r)
            self._log_rejection(claim[0] if noted and claim else None, r)
            answer: Dict[str, Any] = {"error": r.message, "reason": r.reason,
                                      "problems": [p.as_dict() for p in r.problems]}
            if r.omitted:
                answer["problems_omitted"] = r.omitted
            return json_response(r.status, answer, headers)
        self.renderer.stored(entry)
        self.metrics.accepted.inc()
        self.activity.accepted()
        self.metrics.report_duration.observe(time.perf_counter() - start)
        return json_response(200, {"status": "accepted", "host": report.host})

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

    # -- exposition ---------------------------------------------------------

    def metrics_page(self, request: Request) -> Response:
        start = time.perf_counter()
        parts = family_parts(self.renderer.columns())
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
