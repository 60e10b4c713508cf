"""The simulated farm's logons: every logon measured, plausible phases, slower in the morning storm."""

from __future__ import annotations

import pytest

from agent.simfarm import Farm
from contract.report import LOGON_PHASES, parse_report
from tests.sim.test_simfarm import HOUR, MIDNIGHT, day, report_for


def test_every_simulated_logon_is_measured_with_every_phase() -> None:
    farm = Farm.build(12, seed=5)
    day(farm, 11)
    for host in farm.hosts:
        r = host.sample(MIDNIGHT + 11 * HOUR)["logons"]
        assert r.duration_count == host.logons  # since the agent (re)started, like the session counter
        assert dict(r.phase_count) == {p: host.logons for p in LOGON_PHASES}
        assert sum(n for _, n in r.phases_missing) == 0
        assert abs(sum(s for _, s in r.phase_sum_seconds) - r.duration_sum_seconds) < 0.01 * host.logons + 0.01
        report = parse_report(report_for(host, MIDNIGHT + 11 * HOUR))
        assert report.logons == r


def test_logons_take_seconds_and_get_slower_as_hosts_fill_in_the_morning() -> None:
    farm = Farm.build(12, seed=5)

    def totals():
        rs = [h.sample(0)["logons"] for h in farm.hosts]
        return sum(r.duration_sum_seconds for r in rs), sum(r.duration_count for r in rs)

    day(farm, 7.25, step=60)
    (s0, n0) = totals()
    day(farm, 8.25, step=60)
    (s1, n1) = totals()
    day(farm, 9.25, step=60)
    (s2, n2) = totals()
    early, late = s0 / n0, (s2 - s1) / (n2 - n1)
    assert 8 < early < 25 and late > early * 1.3, (early, late)


def test_the_same_seed_gives_the_same_logons() -> None:
    a, b = Farm.build(6, seed=9), Farm.build(6, seed=9)
    day(a, 10)
    day(b, 10)
    assert [h.sample(0)["logons"] for h in a.hosts] == [h.sample(0)["logons"] for h in b.hosts]


def logons_of(host, hour: float):
    return host.sample(MIDNIGHT + hour * HOUR)["logons"]


def faulted_farm(fault, until: float = 11, start: float = 6):
    """12 hosts; `fault` on sim-0001 from `start` o'clock; its delivery group's other hosts are the peers."""
    farm = Farm.build(12, seed=5)
    day(farm, start)
    target = farm.hosts[0]
    if fault:
        farm.fault(target.name, fault, MIDNIGHT + start * HOUR)
    day(farm, until)
    peers = [h for h in farm.hosts if h.delivery_group == target.delivery_group and h is not target]
    return farm, target, peers


def average(r, phase=None):
    if phase is None:
        return r.duration_sum_seconds / r.duration_count
    return dict(r.phase_sum_seconds)[phase] / dict(r.phase_count)[phase]


def test_a_normal_day_feeds_successes_and_a_few_client_disconnects_more_at_lunch() -> None:
    farm = Farm.build(12, seed=5)
    day(farm, 11.5)
    before = {h.name: dict(logons_of(h, 11.5).disconnect_reasons)["client"] for h in farm.hosts}
    day(farm, 13.5)
    for h in farm.hosts:
        r = logons_of(h, 13.5)
        reasons = dict(r.disconnect_reasons)
        assert r.successes == r.duration_count == h.logons  # every simulated logon succeeded
        assert reasons["client"] == h.disconnects  # the sessions' own disconnects, all by the user
        assert reasons["replaced"] <= reasons["client"] and reasons["network"] == reasons["other"] == 0
    morning = sum(before.values()) / 4.5  # 07:00 to 11:30
    lunch = sum(dict(logons_of(h, 13.5).disconnect_reasons)["client"] for h in farm.hosts) - sum(before.values())
    assert lunch / 2 > 2 * morning, (morning, lunch)
    assert sum(dict(logons_of(h, 13.5).disconnect_reasons)["replaced"] for h in farm.hosts) > 0


def test_slow_profile_makes_logons_take_about_a_minute_and_more() -> None:
    _, target, peers = faulted_farm("slow_profile")
    r, p = logons_of(target, 11), logons_of(peers[0], 11)
    assert 45 < average(r) < 120 and average(p) < 25, (average(r), average(p))
    assert 4.5 < average(r, "profile") / average(p, "profile") < 9
    assert abs(average(r, "group_policy") - average(p, "group_policy")) < 2
    assert r.duration_buckets[-2] == r.duration_count  # none beyond 180 s


def test_broken_gpo_makes_group_policy_the_longest_phase() -> None:
    _, target, peers = faulted_farm("broken_gpo")
    r, p = logons_of(target, 11), logons_of(peers[0], 11)
    assert average(r, "group_policy") > 8 * average(p, "group_policy")
    assert average(r, "group_policy") > average(r, "profile") + average(r, "shell") + average(r, "other")


def test_auth_failure_is_a_spike_of_failed_logons_and_fewer_successes() -> None:
    farm, target, peers = faulted_farm(None, until=7)
    farm.fault(target.name, "auth_failure", MIDNIGHT + 7 * HOUR)
    s0 = {h.name: logons_of(h, 7).successes for h in [target] + peers}
    day(farm, 9)
    r = logons_of(target, 9)
    failed = dict(r.failures)
    assert failed["bad_password"] + failed["locked_out"] > 3 * (r.successes - s0[target.name])
    assert failed["locked_out"] > 0 and failed["bad_password"] > failed["locked_out"]
    peer_gain = sum(logons_of(h, 9).successes - s0[h.name] for h in peers) / len(peers)
    assert r.successes - s0[target.name] < 0.7 * peer_gain, (r.successes - s0[target.name], peer_gain)
    assert max(sum(dict(logons_of(h, 9).failures).values()) for h in peers) <= 3


def test_network_blip_disconnects_sessions_with_reason_network() -> None:
    farm, target, peers = faulted_farm("network_blip", until=10)
    r = dict(logons_of(target, 10).disconnect_reasons)
    assert r["network"] > 20 and all(dict(logons_of(h, 10).disconnect_reasons)["network"] == 0 for h in peers)
    assert target.disconnects >= r["network"]  # the sessions went to disconnected: the session counters see it
    # their clients reconnect, and the sessions drop again: about a third disconnected at any moment
    assert target.reconnects > r["network"] / 2
    dropped = sum(1 for s in target.sessions.values() if s.state == "disconnected")
    assert 0.1 * len(target.sessions) < dropped < 0.6 * len(target.sessions)


def test_network_blip_drops_again_and_again_at_any_step_and_ends_with_the_fault() -> None:
    """The drops are drawn per 15 s: a 2-minute step (the rehearsal's) drops as many as eight 15 s steps."""
    counts = {}
    for step in (15, 120):
        farm, target, _ = faulted_farm(None, until=9)
        farm.fault(target.name, "network_blip", farm.last)
        before = dict(logons_of(target, 9).disconnect_reasons)["network"]
        day(farm, 10, step=step)
        counts[step] = dict(logons_of(target, 10).disconnect_reasons)["network"] - before
    assert counts[15] > 100 and 0.8 < counts[120] / counts[15] < 1.25, counts
    farm.clear(target.name, "network_blip")
    after = dict(logons_of(target, 10).disconnect_reasons)["network"]
    day(farm, 10.25, step=120)
    assert dict(logons_of(target, 10.25).disconnect_reasons)["network"] == after  # the network is back
    assert not any(s.network_dropped for s in target.sessions.values())  # and every client reconnected


def test_a_fault_on_one_host_leaves_the_others_as_they_were() -> None:
    for fault in ("slow_profile", "broken_gpo", "auth_failure", "network_blip"):
        farm, _, _ = faulted_farm(fault, until=10)
        clean, _, _ = faulted_farm(None, until=10)
        assert [h.sample(0) for h in farm.hosts[1:]] == [h.sample(0) for h in clean.hosts[1:]], fault


def test_a_fault_on_a_whole_delivery_group() -> None:
    farm = Farm.build(12, seed=5)
    names = farm.fault_group("group-1-1", "broken_gpo", MIDNIGHT)
    assert names == [h.name for h in farm.hosts if h.delivery_group == "group-1-1"] and len(names) == 2
    assert all("broken_gpo" in farm.by_name(n).faults for n in names)
    assert not any(h.faults for h in farm.hosts if h.name not in names)
    with pytest.raises(KeyError):
        farm.fault_group("no-such-group", "broken_gpo", MIDNIGHT)
    with pytest.raises(ValueError):
        farm.fault_group("group-1-1", "slow_network", MIDNIGHT)
