"""Test helpers: a minimal valid report around some readings, to check them against the contract."""

from __future__ import annotations

from typing import Any, Dict

from contract.report import Report, parse_report, reading_to_doc


def report_with(readings: Dict[str, Any], **top: Any) -> Dict[str, Any]:
    doc: Dict[str, Any] = {
        "schema_version": 1, "host": "vda-test-01", "site": "Test", "delivery_group": "Pool",
        "timestamp_seconds": 1796083200.0,
        "agent": {"version": "0.1.0", "os": "linux", "os_release": "", "interval_seconds": 15,
                  "start_time_seconds": 1796080000.0},
        "collectors": {name: {"success": True, "duration_seconds": 0.001} for name in readings},
        "readings": readings,
    }
    doc.update(top)
    return doc


def parse_reading(name: str, reading: Any) -> Report:
    """The report the collector would parse from this one reading (raises ReportError if refused)."""
    return parse_report(report_with({name: reading}))


def collected(collector: Any) -> Any:
    """One reading of `collector` as the agent sends it (the JSON of contract/report.py's types)."""
    return reading_to_doc(collector.name, collector.collect())
