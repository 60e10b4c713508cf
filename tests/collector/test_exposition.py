from __future__ import annotations

import json
import re
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Tuple

from prometheus_client.parser import text_string_to_metric_families

from collector.exposition import (
    COUNTER,
    FAMILIES,
    GAUGE,
    HISTOGRAM,
    SUFFIXED,
    SUMMARY,
    each,
    escape,
    field,
    flag,
    number,
    render_report,
)
from contract.report import parse_report
from tests.collector import rendering
from tests.conftest import FIXTURES, ROOT

SUFFIXED_FAMILIES = {f.name for f in FAMILIES if f.kind in SUFFIXED}


def load(name: str):
    return parse_report(json.loads((FIXTURES / "reports" / name).read_text()))


def exposition(*names: str, received_at: float = 1796083200.0) -> str:
    return rendering.exposition([load(name) for name in names], received_at)


def test_escape_label_values() -> None:
    assert escape('a"b') == 'a\\"b'
    assert escape("C:\\") == "C:\\\\"
    assert escape("x\ny") == "x\\ny"
    assert escape("plain") == "plain"


def test_number_format() -> None:
    assert number(34359738368.0) == "34359738368"
    assert number(0.25) == "0.25"
    assert number(1e20) == "1e+20"
    assert number(-3.0) == "-3"


def test_exposition_parses_with_prometheus_client() -> None:
    text = exposition("vda-win-01.json", "lvda-07.json")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    cpu = families["vdi_host_cpu_seconds"]
    assert cpu.type == "counter"
    idle = [s for s in cpu.samples if s.labels["mode"] == "idle" and s.labels["host"] == "vda-win-01"]
    assert idle[0].value == 880021.0
    fs = [s for s in families["vdi_host_filesystem_avail_bytes"].samples if s.labels["host"] == "vda-win-01"]
    assert {s.labels["mountpoint"] for s in fs} == {"C:\\", "D:\\"}
    dev = [s for s in families["vdi_agent_up"].samples if s.labels["host"] == "lvda-07"][0]
    assert dev.labels["delivery_group"] == 'Linux "Dev" Desktops\\Pool'


def test_every_state_and_protocol_exported_even_when_zero() -> None:
    text = exposition("lvda-07.json")
    sessions = [line for line in text.splitlines() if line.startswith("vdi_sessions{")]
    assert len(sessions) == 5 * 5
    assert any('state="active",protocol="ssh"} 2' in line for line in sessions)
    assert any('state="disconnected",protocol="ica"} 0' in line for line in sessions)


def test_each_family_has_one_header_and_contiguous_samples() -> None:
    text = exposition("vda-win-01.json", "lvda-07.json", "rdsh-03-maintenance.json")
    seen_types = re.findall(r"^# TYPE (\S+)", text, re.M)
    assert len(seen_types) == len(set(seen_types))
    current = None
    finished = set()
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            if current:
                finished.add(current)
            current = line.split()[2]
        elif not line.startswith("#"):
            name = line.split("{")[0]
            if current in SUFFIXED_FAMILIES and name != current:  # histogram, summary
                name = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name == current, f"{name} outside its family block"
            assert name not in finished


def test_absent_sections_export_nothing() -> None:
    text = exposition("rdsh-03-maintenance.json")
    assert "vdi_host_cpu_seconds_total" not in text
    assert "vdi_host_accepting_sessions{" in text and "} 0" in text


def test_every_family_is_documented() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"`(vdi_[a-z0-9_]+)`", doc))
    for family in FAMILIES:
        assert family.name in documented, f"{family.name} is exposed but missing from docs/metrics.md"


def test_blocks_join_small_parts_without_losing_or_reordering_bytes() -> None:
    from collector.exposition import blocks
    parts = [bytes([i % 251]) * (i % 7) for i in range(5000)]
    out = list(blocks(parts, size=1000))
    assert b"".join(out) == b"".join(parts)
    assert all(len(b) >= 1000 for b in out[:-1]) and len(out) < 20
    assert list(blocks([])) == []


def test_the_table_names_each_family_once_and_counters_end_in_total() -> None:
    names = [f.name for f in FAMILIES]
    assert len(names) == len(set(names))
    for family in FAMILIES:
        assert family.kind in (COUNTER, GAUGE, HISTOGRAM, SUMMARY)
        assert family.name.endswith("_total") == (family.kind == COUNTER), family.name
        assert family.help.endswith("."), family.name
    assert [f.name for f in FAMILIES if f.live] == ["vdi_agent_up", "vdi_host_state"]


def test_every_row_reads_as_many_label_values_as_it_names_labels() -> None:
    for name in ("vda-win-01.json", "lvda-07.json", "rdsh-03-maintenance.json", "vda-win-02-goodbye.json"):
        report = load(name)
        for family in FAMILIES:
            if family.kind in SUFFIXED:  # (suffix, own label names, values, value); _sum/_count of a histogram: none
                for suffix, names, values, _value in family.read(report, 1796083200.0):
                    assert len(names) == len(values) and set(names) <= set(family.labels), (name, family.name, suffix)
                continue
            for values, _value in family.read(report, 1796083200.0):
                assert len(values) == len(family.labels), (name, family.name, values)


@dataclass(frozen=True)
class Item:
    name: str
    kind: str
    size: float
    ok: bool


@dataclass(frozen=True)
class Part:
    items: Tuple[Item, ...]
    count: int


def test_row_readers_on_literal_sections() -> None:
    items = (Item("a", "x", 1.5, True), Item("b", "y", 2.0, False))
    whole = SimpleNamespace(part=Part(items, 3), none=None, empty=())
    assert list(field("part", "count")(whole, 0.0)) == [((), 3)]
    assert list(field("none", "count")(whole, 0.0)) == []
    assert list(each("items", "size", "name")(whole.part, 0.0)) == [(("a",), 1.5), (("b",), 2.0)]
    assert list(each("items", "size", "name", "kind")(whole.part, 0.0)) == [(("a", "x"), 1.5), (("b", "y"), 2.0)]
    assert list(each("items", "ok", "name", convert=flag)(whole.part, 0.0)) == [(("a",), 1), (("b",), 0)]
    assert list(each("empty", "size", "name")(whole, 0.0)) == []


def test_a_row_renders_its_samples_into_its_own_chunk() -> None:
    report = load("vda-win-01.json")
    chunks = dict(zip((f.name for f in FAMILIES), render_report(report, 1796083200.0).chunks))
    labels = 'host="vda-win-01",site="City Hall",delivery_group="Office Desktops"'
    assert chunks["vdi_agent_last_report_timestamp_seconds"] == \
        f"vdi_agent_last_report_timestamp_seconds{{{labels}}} 1796083200\n".encode()
    assert chunks["vdi_agent_up"] == b"" and chunks["vdi_host_state"] == b""  # drawn from liveness at a scrape
    assert chunks["vdi_host_maintenance"] == f"vdi_host_maintenance{{{labels}}} 0\n".encode()


def test_memory_without_swap_has_no_swap_series() -> None:
    doc = json.loads((FIXTURES / "reports" / "vda-win-01.json").read_text())
    doc["readings"]["memory"]["swap_total_bytes"] = None
    del doc["readings"]["memory"]["swap_used_bytes"]
    text = rendering.exposition([parse_report(doc)])
    assert 'vdi_host_memory_total_bytes{host="vda-win-01"' in text
    assert "vdi_host_swap_" not in text


def test_logon_histogram_and_phase_summary_parse_as_such() -> None:
    text = exposition("rdsh-03-maintenance.json")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    duration = families["vdi_logon_duration_seconds"]
    assert duration.type == "histogram"
    buckets = [(s.labels["le"], s.value) for s in duration.samples if s.name.endswith("_bucket")]
    assert buckets[0] == ("5.0", 0) and buckets[3] == ("20.0", 1) and buckets[-1] == ("+Inf", 2)
    assert [s.value for s in duration.samples if s.name.endswith(("_sum", "_count"))] == [121, 2]
    phases = families["vdi_logon_phase_seconds"]
    assert phases.type == "summary"
    assert {(s.name, s.labels["phase"]): s.value for s in phases.samples}[("vdi_logon_phase_seconds_sum",
                                                                         "profile")] == 103.5
    assert "# TYPE vdi_logon_duration_seconds histogram\n" in text
    assert "# TYPE vdi_logon_phase_seconds summary\n" in text



def test_an_agent_without_successes_or_disconnect_reasons_has_none_of_those_series() -> None:
    """Unknown is not zero: a ratio over successes must not see 0 from an agent that does not read 4624."""
    doc = json.loads((FIXTURES / "reports" / "rdsh-03-maintenance.json").read_text())
    del doc["readings"]["logons"]["successes"], doc["readings"]["logons"]["disconnect_reasons"]
    text = rendering.exposition([parse_report(doc)])
    assert "vdi_logon_failures_total{" in text
    assert "vdi_logon_successes_total{" not in text and "vdi_session_disconnect_reasons_total{" not in text
    full = exposition("rdsh-03-maintenance.json")
    reasons = [line for line in full.splitlines() if line.startswith("vdi_session_disconnect_reasons_total{")]
    assert len(reasons) == 7 and 'reason="client"} 0' in reasons[0]  # every reason, 0 when none
