"""The simulated farm's in-session experience: one observation per connected session per step, plausible
values, and the faults that spoil them (app_hog on input, network_degraded on round trips)."""

from __future__ import annotations

import pytest

from agent.simfarm import FAULTS, Farm
from contract.report import parse_report
from tests.sim.test_simfarm import day, report_for


def band_share(h, upper: float) -> float:
    """Share of the host's input-delay observations at most `upper` seconds (one of the bucket bounds)."""
    d = h.sample(0)["experience"].input_delay
    return dict(zip((0.05, 0.15, 0.3, 0.5, 1.0, 2.0), d.buckets))[upper] / d.count


def rtt(h):
    return h.sample(0)["experience"].protocols[0].rtt


def test_one_observation_per_connected_session_per_step_and_plausible_values() -> None:
    farm = Farm.build(6, seed=5)
    day(farm, 10)
    h = farm.hosts[0]
    before = h.sample(0)["experience"]
    farm.step(farm.last + 15)
    after = h.sample(0)["experience"]
    grown = after.input_delay.count - before.input_delay.count
    assert grown == sum(1 for s in h.sessions.values() if s.state != "disconnected") > 0
    assert after.protocols[0].rtt.count - before.protocols[0].rtt.count == grown
    assert [p.protocol for p in after.protocols] == ["ica"]
    assert band_share(h, 0.15) > 0.9  # mostly good
    r = rtt(h)
    assert 0.02 <= r.sum_seconds / r.count <= 0.06 and r.buckets[1] == r.count  # all under 100 ms
    ica = after.protocols[0]
    assert ica.sent_bytes > ica.received_bytes > 0
    report = parse_report(report_for(h, farm.last))
    assert report.experience == h.sample(farm.last)["experience"]


def test_app_hog_puts_the_hosts_input_delay_in_the_poor_band() -> None:
    farm = Farm.build(6, seed=4)
    day(farm, 10)
    h, peer = farm.hosts[0], farm.hosts[1]
    d0 = h.sample(0)["experience"].input_delay
    farm.fault(h.name, "app_hog", farm.last)
    day(farm, 10.5)
    d1 = h.sample(0)["experience"].input_delay
    n = d1.count - d0.count
    poor = (d1.buckets[5] - d1.buckets[3]) - (d0.buckets[5] - d0.buckets[3])  # 0.5 s < delay <= 2 s
    assert n > 0 and poor == n
    assert band_share(peer, 0.15) > 0.9


def test_network_degraded_on_a_whole_site() -> None:
    farm = Farm.build(12, sites=2, seed=6)
    day(farm, 10)
    site = farm.hosts[0].site
    before = {h.name: (rtt(h).sum_seconds, rtt(h).count) for h in farm.hosts}
    names = farm.fault_site(site, "network_degraded", farm.last)
    assert sorted(names) == sorted(h.name for h in farm.hosts if h.site == site) and "network_degraded" in FAULTS
    day(farm, 10.5)
    for h in farm.hosts:
        s0, n0 = before[h.name]
        r = rtt(h)
        if not r.count - n0:
            continue
        mean = (r.sum_seconds - s0) / (r.count - n0)
        if h.site == site:
            assert 0.25 <= mean <= 0.4
        else:
            assert mean < 0.06
    with pytest.raises(KeyError):
        farm.fault_site("site-nowhere", "network_degraded", farm.last)


def test_the_experience_stream_leaves_the_sessions_draws_as_they_were() -> None:
    a = Farm.build(6, seed=9)
    day(a, 10)
    b = Farm.build(6, seed=9)
    for h in b.hosts:
        h._simulate_experience = lambda *args: None  # type: ignore[method-assign]
    day(b, 10)
    assert [sorted(h.sessions) for h in a.hosts] == [sorted(h.sessions) for h in b.hosts]
    assert [h.logon_totals.reading() for h in a.hosts] == [h.logon_totals.reading() for h in b.hosts]


def test_the_command_line_puts_a_fault_on_a_whole_site(monkeypatch) -> None:
    import agent.sim

    faulted = {}

    class Stop(Exception):
        pass

    def no_run(sim, _stop):
        faulted.update({h.name: dict(h.faults) for h in sim.farm.hosts})
        sim.pool.shutdown()
        raise Stop

    monkeypatch.setattr(agent.sim.Simulation, "run", no_run)
    monkeypatch.setattr(agent.sim.signal, "signal", lambda *_args: None)  # leave the test run's handlers alone
    with pytest.raises(Stop):
        agent.sim.main(["--hosts", "6", "--sites", "2", "--site-fault", "site-2=network_degraded",
                        "--collector", "http://127.0.0.1:9"])
    sites = {h.name: h.site for h in Farm.build(6, 2, seed=1).hosts}
    assert {n for n, f in faulted.items() if "network_degraded" in f} == {n for n, s in sites.items() if s == "site-2"}
    with pytest.raises(SystemExit):
        agent.sim.main(["--hosts", "6", "--site-fault", "site-9=network_degraded"])
