"""The status page and the hosts API: "is my host reporting?" (docs/api.md).

Read-only views of the store; what they show is built by `collector.status`.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from collector import status
from collector.answers import Response, json_response
from collector.store import HostEntry, HostStore
from contract.report import report_to_doc, report_to_json

HTML_TYPE = "text/html; charset=utf-8"


class StatusPages:
    def __init__(self, store: HostStore, activity: status.Activity, clock: Callable[[], float] = time.time):
        self.store = store
        self.activity = activity
        self.clock = clock
        self._snapshot_at: Optional[float] = None

    def snapshot_written(self, at: float) -> None:
        """The host snapshot was written at `at` (wall clock): the health block shows its age."""
        self._snapshot_at = at

    def _rows(self, now: float) -> List[Dict[str, Any]]:
        return [status.summary(self.store, e, now) for e, _ in self.store.live_view(now)]

    def health(self, now: float) -> Dict[str, Any]:
        return status.health(self.store, self.activity, self._snapshot_at, now, self.clock())

    def index_page(self, query: Dict[str, str]) -> Response:
        now = self.store.monotonic()
        rows = self._rows(now)
        return Response(200, status.render_index(rows, status.select(rows, query), self.health(now), query),
                        HTML_TYPE, {"Cache-Control": "no-store"})

    def hosts_api(self, query: Dict[str, str]) -> Response:
        now = self.store.monotonic()
        rows = status.select(self._rows(now), query)
        return json_response(200, {"collector": self.health(now), "hosts": rows})

    def _host(self, host: str) -> Tuple[Optional[HostEntry], float]:
        now = self.store.monotonic()
        entry = self.store.get(host)
        if entry is None or self.store.expired(entry, now):
            return None, now
        return entry, now

    def host_page(self, host: str) -> Response:
        entry, now = self._host(host)
        if entry is None:
            return Response(404, status.render_not_found(host), HTML_TYPE)
        row = status.summary(self.store, entry, now)
        return Response(200, status.render_host(row, report_to_json(entry.report), self.store.history(host),
                                                  self.clock()),
                        HTML_TYPE, {"Cache-Control": "no-store"})

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
