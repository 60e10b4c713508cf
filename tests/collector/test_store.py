from __future__ import annotations

import json

import pytest

from collector.store import HostOwned, HostStore, StoreFull, TooFrequent
from contract.report import parse_report
from tests.conftest import FIXTURES, FakeClock


def report(name: str = "vda-win-01.json", **changes):
    doc = json.loads((FIXTURES / "reports" / name).read_text())
    doc.update(changes)
    return parse_report(doc)



def test_host_goes_stale_after_missing_three_intervals() -> None:
    clock = FakeClock()
    store = HostStore(clock=clock, monotonic=clock)
    entry = store.put(report())  # interval 15 s
    clock.now += 45
    assert store.liveness(entry).state == "up"
    clock.now += 0.5
    live = store.liveness(entry)
    assert (live.up, live.state) == (False, "stale")


def test_goodbye_means_stopped_not_down_and_shorter_expiry() -> None:
    clock = FakeClock()
    store = HostStore(clock=clock, monotonic=clock, expire_after=86400, stopped_expire_after=3600)
    store.put(report("vda-win-02-goodbye.json"))
    store.put(report(host="other-host"))
    assert store.counts_by_state() == {"up": 1, "stale": 0, "stopped": 1, "maintenance": 0}
    clock.now += 3601
    assert store.expire() == ["vda-win-02"]
    assert [e.host for e in store.entries()] == ["other-host"]
    clock.now += 86400
    assert store.expire() == ["other-host"]


def test_maintenance_state_survives_silence() -> None:
    clock = FakeClock()
    store = HostStore(clock=clock, monotonic=clock)
    entry = store.put(report("rdsh-03-maintenance.json"))
    clock.now += 600
    live = store.liveness(entry)
    assert (live.up, live.state) == (False, "maintenance")


def test_new_host_past_cap_refused_known_host_accepted() -> None:
    store = HostStore(max_hosts=1)
    store.put(report())
    with pytest.raises(StoreFull):
        store.put(report(host="second"))
    assert len(store) == 1
    store.put(report())  # a known host keeps working
    assert [e.host for e in store.entries()] == ["vda-win-01"]


def test_restore_keeps_newer_entry() -> None:
    clock = FakeClock(3000.0)
    store = HostStore(clock=clock, monotonic=clock)
    store.put(report(), received_at=2000.0)
    assert store.restore([(1000.0, report(delivery_group="older"))]) == 0
    assert store.get("vda-win-01").report.delivery_group == "Office Desktops"


def test_stopped_host_exports_no_agent_up() -> None:
    from collector.exposition import render_live
    assert render_live('host="a"', False, "stopped")[0] == b""
    assert render_live('host="a"', False, "stale")[0] == b'vdi_agent_up{host="a"} 0\n'


def test_history_records_stale_gap_and_goodbye() -> None:
    clock = FakeClock(1000.0)
    store = HostStore(clock=clock, monotonic=clock)
    for at, goodbye in ((1000.0, False), (1010.0, False), (1200.0, False), (1230.0, True)):
        clock.now = at  # interval 15: stale 45 s after 1010
        store.put(report(goodbye=goodbye))
    clock.now = 5000.0  # long after the goodbye: stopped stays stopped, never stale
    assert store.history("vda-win-01") == [(1000.0, "up"), (1055.0, "stale"), (1200.0, "up"), (1230.0, "stopped")]


def test_history_shows_current_staleness() -> None:
    clock = FakeClock(1000.0)
    store = HostStore(clock=clock, monotonic=clock)
    store.put(report())
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
        store.note_rejection(f"h{i}", "Site", "wrong_type", "x", when=float(i))
    assert store.last_rejection("h0") is None
    assert store.last_rejection("h10004") == (10004.0, "wrong_type", "x")


# -- ownership: the first site to report a host owns it -----------------------

def test_another_site_cannot_replace_a_host_and_nothing_changes() -> None:
    store = HostStore()
    mine = store.put(report())
    with pytest.raises(HostOwned) as refused:
        store.put(report(site="Harbor", goodbye=True))
    assert refused.value.site == mine.site
    assert store.get("vda-win-01") is mine
    assert store.liveness(mine).state == "up"
    assert store.history("vda-win-01") == [(mine.received_at, "up")]


def test_released_or_expired_host_may_move_to_another_site() -> None:
    clock = FakeClock()
    store = HostStore(clock=clock, monotonic=clock, expire_after=100)
    store.put(report())
    assert store.owner("vda-win-01") == report().site
    assert store.release("vda-win-01") is True
    assert store.release("vda-win-01") is False
    assert store.put(report(site="Harbor")).site == "Harbor"
    clock.now += 101
    assert store.expire() == ["vda-win-01"]
    assert store.put(report(site="City Hall")).site == "City Hall"


def test_rejection_is_never_filed_on_another_sites_host() -> None:
    store = HostStore()
    store.put(report())
    site = report().site
    assert store.note_rejection("vda-win-01", "Harbor", "wrong_type", "x") is False
    assert store.note_rejection("vda-win-01", None, "unauthenticated", "x") is False
    assert store.last_rejection("vda-win-01") is None
    assert store.note_rejection("vda-win-01", site, "wrong_type", "mine") is True
    assert store.last_rejection("vda-win-01")[1:] == ("wrong_type", "mine")
    assert store.note_rejection("new-host", None, "unauthenticated", "who?") is True


# -- rate limits on the monotonic clock ----------------------------------------

def test_min_interval_refuses_and_changes_nothing() -> None:
    clock = FakeClock()
    store = HostStore(clock=clock, monotonic=clock)
    first = store.put(report(), min_interval=5.0)
    clock.now += 1
    with pytest.raises(TooFrequent) as refused:
        store.put(report(), min_interval=5.0)
    assert refused.value.wait == 4.0
    assert store.get("vda-win-01") is first
    clock.now += 4
    store.put(report(), min_interval=5.0)


def test_alternating_goodbyes_get_one_exemption_per_interval() -> None:
    clock = FakeClock()
    store = HostStore(clock=clock, monotonic=clock)
    accepted = 0
    for i in range(200):  # 200 reports within 0.5 s, goodbye and hello in turn
        try:
            store.put(report(goodbye=bool(i % 2)), min_interval=1.0)
            accepted += 1
        except TooFrequent:
            pass
        clock.now += 0.0025
    assert accepted == 2  # the first report and one goodbye right after it


def test_goodbye_right_after_a_report_and_restart_after_a_stop_get_through() -> None:
    clock = FakeClock()
    store = HostStore(clock=clock, monotonic=clock)
    store.put(report(), min_interval=15.0)
    clock.now += 2
    assert store.put(report(goodbye=True), min_interval=15.0).report.goodbye
    clock.now += 20
    store.put(report(goodbye=True), min_interval=15.0)  # after the interval: an ordinary report
    clock.now += 1
    assert not store.put(report(), min_interval=15.0).report.goodbye  # a quick restart


def test_wall_clock_step_changes_neither_liveness_nor_rate_limit() -> None:
    wall, mono = FakeClock(10_000.0), FakeClock(50.0)
    store = HostStore(clock=wall, monotonic=mono)
    store.put(report(), min_interval=5.0)
    wall.now -= 3600  # the wall clock goes back an hour
    mono.now += 6
    store.put(report(), min_interval=5.0)  # no 429 with Retry-After: 3601
    wall.now += 7200  # and forward two
    mono.now += 1
    entry = store.get("vda-win-01")
    assert store.liveness(entry).state == "up"
    mono.now += 46  # three 15-second intervals missed, whatever the wall clock says
    assert store.liveness(entry).state == "stale"


def test_restored_times_ahead_of_the_clock_are_clamped() -> None:
    wall, mono = FakeClock(10_000.0), FakeClock(50.0)
    store = HostStore(clock=wall, monotonic=mono)
    assert store.restore([(10_000.0 + 3600, report())]) == 1  # written with the clock an hour ahead
    entry = store.get("vda-win-01")
    assert entry.received_at == 10_000.0
    mono.now += 46
    assert store.liveness(entry).state == "stale"  # a dead host does not stay "up" for an hour
    store.put(report(), min_interval=5.0)  # and its agent is not locked out


def test_restored_entry_keeps_its_age() -> None:
    wall, mono = FakeClock(10_000.0), FakeClock(50.0)
    store = HostStore(clock=wall, monotonic=mono)
    store.restore([(10_000.0 - 40, report())])
    entry = store.get("vda-win-01")
    assert store.age(entry) == 40
    assert store.liveness(entry).state == "up"
    mono.now += 6
    assert store.liveness(entry).state == "stale"
