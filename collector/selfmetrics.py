"""The collector's own health, through prometheus_client on a registry of its own."""

from __future__ import annotations

import threading
from typing import Callable, Dict, Iterable, Optional

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from collector import __version__
from collector.store import HostStore
from contract.rejections import REJECTION_REASONS
from contract.report import HOST_STATES

__all__ = ["REJECTION_REASONS", "SelfMetrics"]

class _HostsByState(Collector):
    """`vdi_collector_hosts`: the counts a scrape found (`counts`), else the store's own."""

    def __init__(self, store: HostStore):
        self.store = store
        self.counts: Optional[Dict[str, int]] = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("vdi_collector_hosts", "Hosts known to the collector, by state.",
                                   labels=["state"])
        counts = self.counts if self.counts is not None else self.store.counts_by_state()
        for state in HOST_STATES:
            family.add_metric([state], counts.get(state, 0))
        yield family


CONNECTION_ACTIONS = ("evicted", "refused")


class _ConnectionsShed(Collector):
    """Connections the transport closed or refused at its caps; read from it at scrape time."""

    def __init__(self) -> None:
        self.source: Callable[[], Dict[str, int]] = lambda: {}

    def collect(self) -> Iterable[CounterMetricFamily]:
        counts = self.source()
        family = CounterMetricFamily(
            "vdi_collector_connections_shed", "Connections closed to make room (evicted) or answered 503 "
            "(refused) at the connection caps.", labels=["action"])
        for action in CONNECTION_ACTIONS:
            family.add_metric([action], counts.get(action, 0))
        yield family


class SelfMetrics:
    """Counters the HTTP edge updates, and the text they render to."""

    def __init__(self, store: HostStore, process_metrics: bool = True):
        disable_created_metrics()  # the _created series only double the exposition here
        self.registry = CollectorRegistry(auto_describe=True)
        if process_metrics:
            for c in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(c)
        r = self.registry
        Gauge("vdi_collector_build_info", "The collector's version; always 1.", ["version"],
              registry=r).labels(__version__).set(1)
        self.accepted = Counter("vdi_collector_reports_accepted", "Reports stored.", registry=r)
        self.rejected = Counter("vdi_collector_reports_rejected", "Reports refused, by reason.",
                                ["reason"], registry=r)
        for reason in REJECTION_REASONS:
            self.rejected.labels(reason)
        self.report_duration = Histogram(
            "vdi_collector_report_duration_seconds", "Time to read, check and store one report.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0), registry=r)
        self.scrape_duration = Gauge("vdi_collector_scrape_duration_seconds",
                                     "Time taken to render the previous /metrics answer.", registry=r)
        self.snapshot_success = Gauge("vdi_collector_snapshot_last_success_timestamp_seconds",
                                      "When the host snapshot was last written.", registry=r)
        self.snapshot_failures = Counter("vdi_collector_snapshot_failures",
                                         "Snapshot writes that failed.", registry=r)
        self._hosts = _HostsByState(store)
        r.register(self._hosts)
        self._render_lock = threading.Lock()
        self._shed = _ConnectionsShed()
        r.register(self._shed)

    def watch_connections(self, source: Callable[[], Dict[str, int]]) -> None:
        """Export the transport's counts of shed connections (`{"evicted": n, "refused": m}`)."""
        self._shed.source = source

    def render(self, hosts_by_state: Optional[Dict[str, int]] = None) -> str:
        """The text of every metric of the registry; `hosts_by_state` (a scrape's count of hosts by
        state) spares counting the store again."""
        with self._render_lock:  # concurrent scrapes each render their own counts
            self._hosts.counts = hosts_by_state
            try:
                return generate_latest(self.registry).decode("utf-8")
            finally:
                self._hosts.counts = None
