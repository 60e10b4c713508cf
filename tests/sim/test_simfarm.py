from __future__ import annotations

import json

import pytest

from agent.simfarm import Farm, demand
from contract.report import parse_report

MIDNIGHT = 1796083200 - (1796083200 % 86400)  # 2026-12-01 00:00 UTC
HOUR = 3600


def day(farm: Farm, until_hour: float, step: float = 300) -> None:
    t = MIDNIGHT if farm.last is None else farm.last
    while t <= MIDNIGHT + until_hour * HOUR:
        farm.step(t)
        t += step


def report_for(host, now: float) -> dict:
    return {"schema_version": 1, "host": host.name, "site": host.site, "delivery_group": host.delivery_group,
            "timestamp_seconds": now, "agent": {"version": "0", "os": "windows", "interval_seconds": 15,
                                                "start_time_seconds": now},
            "readings": host.readings(now)}


def test_working_day_curve_shape() -> None:
    assert demand(3) < 0.05
    assert demand(10.5) == pytest.approx(0.9, abs=0.01)
    assert demand(12.5) < demand(10.5) - 0.2  # lunchtime dip
    assert demand(22) < 0.05
    assert demand(10, weekday=False) < 0.1


def test_sessions_follow_the_day_and_pools_power_down_at_night() -> None:
    farm = Farm.build(30, seed=3)
    day(farm, 3)
    night = sum(len(h.sessions) for h in farm.hosts)
    assert not any(h.powered for h in farm.hosts if h.pooled)
    day(farm, 10.5)
    morning = sum(len(h.sessions) for h in farm.hosts)
    assert all(h.powered for h in farm.hosts)
    assert morning > 10 * max(1, night)
    assert all(len(h.sessions) <= h.max_sessions for h in farm.hosts)


def test_black_hole_host_stays_empty_while_peers_fill() -> None:
    farm = Farm.build(12, seed=5)
    victim = farm.hosts[0]
    farm.fault(victim.name, "black_hole", MIDNIGHT)
    day(farm, 11)
    peers = [h for h in farm.hosts if h.delivery_group == victim.delivery_group and h is not victim]
    assert len(victim.sessions) == 0
    assert victim.readings(farm.last)["capacity"]["accepting_sessions"] is True
    assert all(len(h.sessions) > 0 for h in peers)


def test_not_accepting_host_keeps_its_sessions_but_gets_no_new_ones() -> None:
    farm = Farm.build(12, seed=5)
    day(farm, 10)
    host = farm.hosts[0]
    before = host.logons
    farm.fault(host.name, "not_accepting", farm.last)
    day(farm, 11)
    assert host.logons == before
    assert host.readings(farm.last)["capacity"]["accepting_sessions"] is False


def test_faults_show_in_readings() -> None:
    farm = Farm.build(6, seed=2)
    day(farm, 10)
    h = farm.hosts[0]
    farm.fault(h.name, "memory_exhausted", farm.last)
    farm.fault(h.name, "disk_filling", farm.last)
    avail_before = h.readings(farm.last)["filesystems"][0]["avail_bytes"]
    day(farm, 10.5)
    r = h.readings(farm.last)
    assert r["memory"]["available_bytes"] < 0.05 * r["memory"]["total_bytes"]
    assert r["filesystems"][0]["avail_bytes"] < avail_before
    with pytest.raises(ValueError):
        farm.fault(h.name, "meteor", farm.last)


def test_every_simulated_report_passes_the_contract() -> None:
    farm = Farm.build(20, seed=9)
    for hour in (3, 9, 12.5, 15, 19):
        day(farm, hour)
        for h in farm.hosts:
            if h.reporting():
                parse_report(json.loads(json.dumps(report_for(h, farm.last))))


def test_counters_never_go_down_while_the_agent_runs() -> None:
    farm = Farm.build(6, seed=4)
    h = farm.hosts[0]
    last = None
    for hour in range(8, 18):
        day(farm, hour)
        s = h.readings(farm.last)["sessions"]
        now = (s["logons_total"], s["logoffs_total"], h.cpu_busy)
        if last:
            assert all(a >= b for a, b in zip(now, last))
        last = now


def test_applications_follow_the_sessions_and_their_counters_never_go_down() -> None:
    farm = Farm.build(6, seed=4)
    h = farm.hosts[0]
    last: dict = {}
    for hour in range(8, 18):
        day(farm, hour)
        apps = {a["app"]: a for a in h.readings(farm.last)["sessions"]["apps"]}
        assert list(apps)[-1] == "other" and len(apps) <= 11
        assert all(apps[a]["cpu_seconds_total"] >= last.get(a, 0.0) for a in apps)
        assert apps["outlook"]["sessions"] <= len(h.sessions)
        assert sum(a["memory_bytes"] for a in apps.values()) < h.memory_bytes
        last = {a: apps[a]["cpu_seconds_total"] for a in apps}


def test_an_application_that_eats_a_host() -> None:
    farm = Farm.build(6, seed=4)
    day(farm, 10)
    h, peer = farm.hosts[0], farm.hosts[1]
    farm.fault(h.name, "app_hog", farm.last)
    before = {x.name: dict(x.app_cpu) for x in (h, peer)}
    busy, t0 = h.cpu_busy, farm.last
    day(farm, 10.5)
    elapsed = farm.last - t0
    hog = {a["app"]: a for a in h.readings(farm.last)["sessions"]["apps"]}["acrord32"]
    assert hog["cpu_seconds_total"] == pytest.approx(0.9 * h.cpus * elapsed)
    assert (h.cpu_busy - busy) / elapsed >= 0.95 * h.cpus  # the host's CPU: the hog's and more
    assert "acrord32" not in {a["app"] for a in peer.readings(farm.last)["sessions"]["apps"]}
    busiest_peer_app = max((peer.app_cpu[a] - before[peer.name].get(a, 0.0)) / elapsed for a in peer.app_cpu)
    assert busiest_peer_app < 0.2 * peer.cpus  # in cores: nothing on the peer comes close
    farm.clear(h.name, "app_hog")
    day(farm, 11)
    assert "acrord32" not in {a["app"] for a in h.readings(farm.last)["sessions"]["apps"]}
