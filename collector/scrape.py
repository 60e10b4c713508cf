"""GET /metrics: every host's pre-rendered chunks, then the collector's own metrics.

A scrape joins chunks the renderer keeps (`collector.renderer`); the one pass
over the hosts that adds their liveness also counts them by state, and that
count is `vdi_collector_hosts`, so liveness is computed once per host per scrape.
"""

from __future__ import annotations

import time
import zlib
from typing import List, Union

from collector.answers import Request, Response
from collector.exposition import blocks, family_parts
from collector.renderer import Renderer
from collector.selfmetrics import SelfMetrics

EXPOSITION_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsPage:
    def __init__(self, renderer: Renderer, metrics: SelfMetrics):
        self.renderer = renderer
        self.metrics = metrics

    def __call__(self, request: Request) -> Response:
        start = time.perf_counter()
        scrape = self.renderer.scrape()
        parts = family_parts(scrape.columns)
        parts.append(self.metrics.render(scrape.hosts_by_state).encode("utf-8"))
        headers = {}
        body: Union[bytes, List[bytes]] = parts
        if "gzip" in request.header("accept-encoding"):
            deflate = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            body = [deflate.compress(block) for block in blocks(parts)]
            body.append(deflate.flush())
            headers["Content-Encoding"] = "gzip"
        self.metrics.scrape_duration.set(time.perf_counter() - start)
        return Response(200, body, EXPOSITION_TYPE, headers)
