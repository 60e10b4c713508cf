"""The broker's /metrics, built fresh from a `View` on every scrape.

    vdi_broker_machine_maintenance{host="vda-01",delivery_group="Office"} 1
    vdi_broker_machine_power_state{host="vda-01",delivery_group="Office",state="on"} 1
    vdi_broker_machine_power_state{host="vda-01",delivery_group="Office",state="off"} 0
    vdi_broker_machine_registered{host="vda-01",delivery_group="Office"} 1
    vdi_broker_up 1
    vdi_broker_poll_failures_total{reason="timeout"} 0

One series set per machine the controller lists (9 a machine), plus the
reader's own health; every closed-set label value is exported, 0 when empty.
"""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker.fetch import FAILURE_REASONS
from broker.odata import POWER_STATES, SKIP_REASONS, VALUE_FIELDS
from broker.state import View
from contract import __version__


class BrokerCollector(Collector):
    def __init__(self, view: Callable[[], View]):
        self.view = view

    def collect(self) -> Iterator[Metric]:
        v = self.view()
        labels = ["host", "delivery_group"]
        maintenance = GaugeMetricFamily(
            "vdi_broker_machine_maintenance",
            "1 when the Delivery Controller has the machine in maintenance mode (IsInMaintenanceMode)", labels=labels)
        power = GaugeMetricFamily(
            "vdi_broker_machine_power_state",
            "1 for the machine's power state as the Delivery Controller knows it, 0 for the others",
            labels=labels + ["state"])
        registered = GaugeMetricFamily(
            "vdi_broker_machine_registered", "1 when the machine's VDA is registered with a Delivery Controller",
            labels=labels)
        for m in v.machines:
            key = [m.host, m.delivery_group]
            maintenance.add_metric(key, 1.0 if m.maintenance else 0.0)
            for state in POWER_STATES:
                power.add_metric(key + [state], 1.0 if m.power == state else 0.0)
            registered.add_metric(key, 1.0 if m.registered else 0.0)
        yield maintenance
        yield power
        yield registered

        yield GaugeMetricFamily("vdi_broker_up", "1 when the last poll of the controller read every page",
                                value=1.0 if v.up else 0.0)
        yield GaugeMetricFamily("vdi_broker_last_success_timestamp_seconds",
                                "when the last complete poll ended (Unix time); 0 before the first",
                                value=v.last_success)
        yield GaugeMetricFamily("vdi_broker_poll_duration_seconds", "how long the last poll took",
                                value=v.last_duration)
        yield GaugeMetricFamily("vdi_broker_machines",
                                "machines served now: those of the last complete poll, none once broker.hold "
                                "has passed without one", value=float(len(v.machines)))
        yield GaugeMetricFamily("vdi_broker_holding",
                                "1 while the last poll failed and the machines of an earlier one are served",
                                value=1.0 if v.held else 0.0)
        polls = CounterMetricFamily("vdi_broker_polls", "polls started")
        polls.add_metric([], float(v.polls))
        yield polls
        failures = CounterMetricFamily("vdi_broker_poll_failures", "polls that failed, by reason",
                                       labels=["reason"])
        for reason in FAILURE_REASONS:
            failures.add_metric([reason], float(v.failures.get(reason, 0)))
        yield failures
        skipped = GaugeMetricFamily("vdi_broker_machines_skipped",
                                    "entries of the last complete poll left out, by reason", labels=["reason"])
        for reason in SKIP_REASONS:
            skipped.add_metric([reason], float(v.skipped.get(reason, 0)))
        yield skipped
        values = GaugeMetricFamily("vdi_broker_unknown_values",
                                   "machines of the last complete poll with an unknown or unusable value, by "
                                   "field (the machine is kept: power state unknown, not registered, no group)",
                                   labels=["field"])
        for name in VALUE_FIELDS:
            values.add_metric([name], float(v.values.get(name, 0)))
        yield values
        info = GaugeMetricFamily("vdi_broker_build_info", "always 1", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info
