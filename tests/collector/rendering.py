"""The exposition of a few reports, through the same store and renderer the collector serves from."""

from __future__ import annotations

from typing import Sequence

from collector.exposition import family_parts
from collector.renderer import Renderer
from collector.store import HostStore
from contract.report import Report


def exposition(reports: Sequence[Report], received_at: float = 1796083200.0) -> str:
    """/metrics' host families for `reports`, all received at `received_at` and scraped at once."""
    store = HostStore(clock=lambda: received_at, monotonic=lambda: 1000.0)
    for report in reports:
        store.put(report, received_at)
    return b"".join(family_parts(Renderer(store).columns())).decode()
