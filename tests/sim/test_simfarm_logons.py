"""The simulated farm's logons: every logon measured, plausible phases, slower in the morning storm."""

from __future__ import annotations

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
