from __future__ import annotations

import dataclasses
import json

import pytest

from agent.report import parse_report
from collector.store import HostStore, StoreFull
from tests.conftest import FIXTURES


def report(name: str = "vda-win-01.json", **changes):
    doc = json.loads((FIXTURES / "reports" / name).read_text())
    doc.update(changes)
    return parse_report(doc)


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_host_goes_stale_after_missing_three_intervals() -> None:
    clock = Clock()
    store = HostStore(clock=clock)
    entry = store.put(report(), b"{}")  # interval 15 s
    clock.now += 45
    assert store.liveness(entry).state == "up"
    clock.now += 0.5
    live = store.liveness(entry)
    assert (live.up, live.state) == (False, "stale")


def test_goodbye_means_stopped_not_down_and_shorter_expiry() -> None:
    clock = Clock()
    store = HostStore(clock=clock, expire_after=86400, stopped_expire_after=3600)
    store.put(report("vda-win-02-goodbye.json"), b"{}")
    store.put(report(host="other-host"), b"{}")
    assert store.counts_by_state() == {"up": 1, "stale": 0, "stopped": 1, "maintenance": 0}
    clock.now += 3601
    assert store.expire() == ["vda-win-02"]
    assert [e.host for e in store.entries()] == ["other-host"]
    clock.now += 86400
    assert store.expire() == ["other-host"]


def test_maintenance_state_survives_silence() -> None:
    clock = Clock()
    store = HostStore(clock=clock)
    entry = store.put(report("rdsh-03-maintenance.json"), b"{}")
    clock.now += 600
    live = store.liveness(entry)
    assert (live.up, live.state) == (False, "maintenance")


def test_new_host_past_cap_refused_known_host_accepted() -> None:
    store = HostStore(max_hosts=1)
    store.put(report(), b"{}")
    with pytest.raises(StoreFull):
        store.put(report(host="second"), b"{}")
    assert len(store) == 1
    store.put(report(), b"{}")  # a known host keeps working
    assert [e.host for e in store.entries()] == ["vda-win-01"]


def test_restore_keeps_newer_entry() -> None:
    store = HostStore()
    newer = store.put(report(), b"new", received_at=2000.0)
    old = dataclasses.replace(newer, received_at=1000.0, raw=b"old")
    store.restore([old])
    assert store.get("vda-win-01").raw == b"new"


def test_stopped_host_exports_no_agent_up() -> None:
    from collector.exposition import render_live
    assert render_live('host="a"', False, "stopped")[0] == b""
    assert render_live('host="a"', False, "stale")[0] == b'vdi_agent_up{host="a"} 0\n'


def test_history_records_stale_gap_and_goodbye() -> None:
    clock = Clock(1000.0)
    store = HostStore(clock=clock)
    store.put(report(), b"{}", received_at=1000.0)  # interval 15: stale after 1045
    store.put(report(), b"{}", received_at=1010.0)
    store.put(report(), b"{}", received_at=1200.0)
    store.put(report(goodbye=True), b"{}", received_at=1230.0)
    clock.now = 5000.0  # long after the goodbye: stopped stays stopped, never stale
    assert store.history("vda-win-01") == [(1000.0, "up"), (1055.0, "stale"), (1200.0, "up"), (1230.0, "stopped")]


def test_history_shows_current_staleness() -> None:
    clock = Clock(1000.0)
    store = HostStore(clock=clock)
    store.put(report(), b"{}", received_at=1000.0)
    clock.now = 2000.0
    assert store.history("vda-win-01") == [(1000.0, "up"), (1045.0, "stale")]


def test_cpu_used_ratio_between_reports() -> None:
    from collector.store import cpu_used_ratio
    a = report()
    doc = json.loads((FIXTURES / "reports" / "vda-win-01.json").read_text())
    doc["readings"]["cpu"]["seconds"]["user"] += 30.0
    doc["readings"]["cpu"]["seconds"]["idle"] += 90.0
    b = parse_report(doc)
    assert cpu_used_ratio(a, b) == 0.25
    assert cpu_used_ratio(b, a) is None  # counters went back: an agent restart
    assert cpu_used_ratio(None, a) is None


def test_last_rejection_is_bounded() -> None:
    store = HostStore()
    for i in range(10_005):
        store.note_rejection(f"h{i}", "wrong_type", "x", when=float(i))
    assert store.last_rejection("h0") is None
    assert store.last_rejection("h10004") == (10004.0, "wrong_type", "x")
