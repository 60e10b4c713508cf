"""The experience totals are counters for the agent's whole run: one value PDH gets wrong must not stay in them."""

from __future__ import annotations

import json

from agent.experience.totals import ExperienceTotals
from contract.report import parse_report, reading_to_doc

INF, NAN = float("inf"), float("nan")


def test_an_infinite_reading_is_not_observed_and_the_reading_stays_sendable() -> None:
    # A sum that became infinite stays so for the agent's life: every report is then refused, by the push
    # (no NaN or infinity in JSON) and by the contract, and the host goes dark until the agent restarts.
    t = ExperienceTotals()
    t.add_input_delay(0.04)
    t.add_input_delay(INF)
    t.add_input_delay(NAN)  # not an observation of 0 s either
    t.add_rtt("ica", 0.03)
    t.add_rtt("ica", INF)
    t.add_rtt("ica", NAN)
    t.add_traffic("ica", INF, 100.0)
    t.add_traffic("ica", 10.0, INF)
    r = t.reading()
    assert (r.input_delay.count, r.input_delay.sum_seconds) == (1, 0.04)
    ica = r.protocols[0]
    assert (ica.rtt.count, ica.rtt.sum_seconds, ica.received_bytes, ica.sent_bytes) == (1, 0.03, 10.0, 100.0)
    doc = json.loads(json.dumps(reading_to_doc("experience", r), allow_nan=False))
    assert doc["input_delay"]["count"] == 1


def test_a_reading_that_took_an_infinite_value_still_passes_the_contract() -> None:
    from tests.conftest import FIXTURES

    t = ExperienceTotals()
    t.add_input_delay(INF)
    t.add_rtt("rdp", INF)
    t.add_traffic("rdp", INF, INF)
    report = json.loads((FIXTURES / "reports" / "vda-win-01.json").read_text())
    report["readings"]["experience"] = json.loads(json.dumps(reading_to_doc("experience", t.reading()),
                                                             allow_nan=False))
    assert parse_report(report).experience == t.reading()
