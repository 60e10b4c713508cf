"""The collector's own health, through prometheus_client on a registry of its own."""

from __future__ import annotations

from typing import Callable, Dict, Iterable

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
from contract import report as contract
from contract.report import HOST_STATES

# Reasons a report can be refused: the contract's plus the HTTP edge's own.
REASON_BAD_JSON = "bad_json"
REASON_TOO_DEEP = "too_deep"
REASON_BODY_TOO_LARGE = "body_too_large"
REASON_BAD_CONTENT_TYPE = "bad_content_type"
REASON_BAD_ENCODING = "bad_encoding"
REASON_LENGTH_REQUIRED = "length_required"
REASON_TOO_MANY_HOSTS = "too_many_hosts"
REASON_TOO_FREQUENT = "too_frequent"
REASON_UNAUTHENTICATED = "unauthenticated"
REASON_FORBIDDEN = "forbidden"
REASON_HOST_OWNED = "host_owned"
REJECTION_REASONS = (
    contract.REASON_MISSING, contract.REASON_TYPE, contract.REASON_RANGE, contract.REASON_NOT_FINITE,
    contract.REASON_TOO_LONG, contract.REASON_INVALID, contract.REASON_TOO_MANY, contract.REASON_DUPLICATE,
    contract.REASON_SCHEMA, REASON_BAD_JSON, REASON_TOO_DEEP, REASON_BODY_TOO_LARGE,
    REASON_BAD_CONTENT_TYPE, REASON_BAD_ENCODING, REASON_LENGTH_REQUIRED, REASON_TOO_MANY_HOSTS,
    REASON_TOO_FREQUENT, REASON_UNAUTHENTICATED, REASON_FORBIDDEN, REASON_HOST_OWNED,
)


class _HostsByState(Collector):
    def __init__(self, store: HostStore):
        self.store = store

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("vdi_collector_hosts", "Hosts known to the collector, by state.",
                                   labels=["state"])
        counts = self.store.counts_by_state()
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
        r.register(_HostsByState(store))
        self._shed = _ConnectionsShed()
        r.register(self._shed)

    def watch_connections(self, source: Callable[[], Dict[str, int]]) -> None:
        """Export the transport's counts of shed connections (`{"evicted": n, "refused": m}`)."""
        self._shed.source = source

    def render(self) -> str:
        return generate_latest(self.registry).decode("utf-8")
