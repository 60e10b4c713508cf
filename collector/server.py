"""The collector's API: routes each request to its handler, built from their dependencies.

Handlers live apart: `collector.ingest` (reports in, hosts released),
`collector.scrape` (/metrics), `collector.pages` (the status page and hosts
API). `Api` wires them to one store, renderer and set of self-metrics, checks
scrape credentials, and is what the transport (`collector.httpserver`, an
asyncio server) talks to: it routes (`route`), refuses what the transport
found wrong before a request was whole (`refuse_edge`), and takes the changes
the command line makes while it runs (`use_auth` on a reload,
`snapshot_written` and `snapshot_failed`). Tests drive it with plain `Request`
objects (`handle`).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Callable, Dict, Optional
from urllib.parse import parse_qs, unquote

from collector import status
from collector.answers import (
    Rejected,
    Request,
    Response,
    Route,
    auth_refusal,
    json_response,
)
from collector.auth import Access, AuthError, PushAuth, ScrapeAuth
from collector.ingest import EdgeLimits, Ingest
from collector.pages import StatusPages
from collector.renderer import Renderer
from collector.scrape import MetricsPage
from collector.selfmetrics import SelfMetrics
from collector.store import HostStore
from contract.rejections import REJECTION_REASONS
from contract.report import Limits, canonical_host

__all__ = ["Api", "Request"]  # Request: callers that build requests for `handle` need no second import

REPORTS_API = "/api/v1/reports"
HOSTS_API = "/api/v1/hosts/"


class Api:
    def __init__(self, store: HostStore, metrics: SelfMetrics, limits: Limits = Limits(),
                 edge: EdgeLimits = EdgeLimits(), clock: Callable[[], float] = time.time,
                 push_auth: Optional[PushAuth] = None, scrape_auth: Optional[ScrapeAuth] = None,
                 min_report_interval: float = 0.0, renderer: Optional[Renderer] = None):
        self.store = store
        self.metrics = metrics
        self.edge = edge
        self.renderer = renderer or Renderer(store)
        self.access = Access(push_auth, scrape_auth)
        activity = status.Activity(store.monotonic)
        self.ingest = Ingest(store, self.renderer, metrics, activity, self.access, limits, edge, clock,
                             min_report_interval)
        self.pages = StatusPages(store, activity, clock)
        self.metrics_page = MetricsPage(self.renderer, metrics)

    # -- what the command line changes while the collector runs ---------------

    def use_auth(self, push_auth: PushAuth, scrape_auth: ScrapeAuth) -> None:
        """Replace who may push and scrape (a reload); requests in flight finish with the old ones."""
        self.access.use(push_auth, scrape_auth)

    @property
    def push_auth(self) -> PushAuth:
        return self.access.push

    @property
    def scrape_auth(self) -> ScrapeAuth:
        return self.access.scrape

    def snapshot_written(self, at: float) -> None:
        """The host snapshot was written at `at` (wall clock): for the status page and the metrics."""
        self.pages.snapshot_written(at)
        self.metrics.snapshot_success.set(at)

    def snapshot_failed(self) -> None:
        self.metrics.snapshot_failures.inc()

    # -- requests -------------------------------------------------------------

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
        if path == REPORTS_API:
            if request.method != "POST":
                return Route(partial(json_response, 405, {"error": "method not allowed: use POST"}, {"Allow": "POST"}))
            return Route(partial(self.ingest.post_report, request))
        if request.method == "DELETE" and path.startswith(HOSTS_API) and len(path) > len(HOSTS_API):
            host = canonical_host(unquote(path[len(HOSTS_API):]))
            return Route(partial(self.ingest.release_host, request, host))  # push-token authorised
        if request.method not in ("GET", "HEAD"):
            return Route(partial(json_response, 405, {"error": "method not allowed"}, {"Allow": "GET, HEAD"}))
        if path == "/healthz":
            return Route(partial(Response, 200, b"ok\n", "text/plain; charset=utf-8"))
        if path == "/metrics":
            return Route(partial(self.metrics_page, request), protected=True, slow=True)
        query = _query(request.path)
        if path == "/":
            return Route(partial(self.pages.index_page, query), protected=True, slow=True)
        if path == "/api/v1/hosts":
            return Route(partial(self.pages.hosts_api, query), protected=True, slow=True)
        for prefix, handler in (("/hosts/", self.pages.host_page), (HOSTS_API, self.pages.host_api)):
            if path.startswith(prefix) and len(path) > len(prefix):
                return Route(partial(handler, canonical_host(unquote(path[len(prefix):]))), protected=True)
        return Route(partial(json_response, 404, {"error": f"not found: {path}"}))

    @property
    def max_body_bytes(self) -> int:
        """The largest body the transport should read; a longer one is refused with `body_too_large`."""
        return self.edge.max_body_bytes

    def body_too_large(self) -> Response:
        """413 for a request whose Content-Length is over `max_body_bytes`, refused before its body is read."""
        return self.ingest.refuse(self.ingest.body_too_large())

    def refuse_edge(self, status: int, reason: str, message: str,
                    headers: Optional[Dict[str, str]] = None) -> Response:
        """The answer to a request the transport cannot pass on (no Content-Length, a bad head, the
        connection caps). A reason of contract/rejections.py's REJECTION_REASONS is a refused report:
        counted, logged and answered as the API refuses reports; any other is only answered."""
        refusal = Rejected(status, reason, message, headers=headers)
        if reason in REJECTION_REASONS:
            return self.ingest.refuse(refusal)
        return json_response(status, {"error": message, "reason": reason}, headers)


def _query(target: str) -> Dict[str, str]:
    """The first value of each query parameter."""
    _, _, qs = target.partition("?")
    return {k: v[0] for k, v in parse_qs(qs, keep_blank_values=True).items()}
