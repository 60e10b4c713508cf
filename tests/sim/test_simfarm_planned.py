"""Planned work and what the VDA cannot see, in the simulated farm: power management suspending pooled
desktops (no goodbye), maintenance mode set in Citrix Studio, and a logon outage before the hosts."""

from __future__ import annotations

from typing import List, Tuple

import pytest

from agent.push import ACCEPTED, PushResult
from agent.sim import Simulation, simulated_time
from agent.simfarm import Farm, SimHost
from contract.report import Report
from tests.sim.test_simfarm import HOUR, MIDNIGHT, day


def pooled(farm: Farm) -> List[SimHost]:
    return [h for h in farm.hosts if h.pooled]


def test_suspended_desktops_fall_silent_and_run_on_after_resume() -> None:
    farm = Farm.build(12, seed=3, power_down_action="suspend")
    day(farm, 20.01)  # the step at 20:00 saved them
    before = {h.name: (h.logons, h.cpu_busy, h.boot_time) for h in pooled(farm)}
    day(farm, 23)
    for h in pooled(farm):
        assert h.powered and h.suspended and not h.reporting() and not h.accepting()
        assert h.broker_view()[3:] == ("suspended", False)
        assert (h.logons, h.cpu_busy, h.boot_time) == before[h.name], "a saved VM does not run"
    day(farm, 24 + 6.1)
    for h in pooled(farm):
        assert not h.suspended and h.reporting()
        assert h.broker_view()[3:] == ("on", True)
        assert h.boot_time == before[h.name][2], "resumed, not booted: the same agent runs on"


def test_shutdown_is_still_the_default_power_down() -> None:
    farm = Farm.build(12, seed=3)
    day(farm, 23)
    assert all(not h.powered and not h.suspended for h in pooled(farm))
    assert {h.broker_view()[3] for h in pooled(farm)} == {"off"}


def test_an_unknown_power_down_action_is_refused() -> None:
    with pytest.raises(ValueError, match="hibernate"):
        Farm.build(6, power_down_action="hibernate")


def test_studio_maintenance_gets_no_new_logon_while_the_vda_says_it_is_open() -> None:
    farm = Farm.build(12, seed=3)
    day(farm, 6)
    h = next(h for h in farm.hosts if not h.pooled)
    farm.fault(h.name, "studio_maintenance", farm.last)
    logons, sessions = h.logons, len(h.sessions)
    day(farm, 10)
    assert h.logons == logons and len(h.sessions) <= sessions
    assert h.accepting() and h.sample(farm.last)["capacity"].accepting_sessions is True
    assert h.broker_view()[2] is True
    peers = [p for p in farm.hosts if p.delivery_group == h.delivery_group and p is not h]
    assert all(p.logons > 0 for p in peers), "the controller sends the users to the others"


def test_a_logon_outage_stops_every_new_session_but_keeps_the_running_ones() -> None:
    farm = Farm.build(12, seed=3)
    day(farm, 7.5)
    for site in {h.site for h in farm.hosts}:
        farm.fault_site(site, "logon_outage", farm.last)
    logons = {h.name: h.logons for h in farm.hosts}
    running = sum(len(h.sessions) for h in farm.hosts)
    day(farm, 8.5)
    assert {h.name: h.logons for h in farm.hosts} == logons
    assert sum(len(h.sessions) for h in farm.hosts) == running > 0
    assert all(h.accepting() for h in farm.hosts if not h.pooled)
    for h in farm.hosts:
        farm.clear(h.name, "logon_outage")
    day(farm, 9)
    assert sum(h.logons for h in farm.hosts) > sum(logons.values())


def test_simulated_time_skips_the_night_once() -> None:
    start, evening = 1000.0, MIDNIGHT + 20 * HOUR
    skip = (MIDNIGHT + 21 * HOUR, MIDNIGHT + 29 * HOUR)  # 21:00 -> 05:00 the next day
    assert simulated_time(1000.0, start, evening, 120, skip) == evening
    assert simulated_time(1029.0, start, evening, 120, skip) == evening + 29 * 120
    assert simulated_time(1030.0, start, evening, 120, skip) == MIDNIGHT + 29 * HOUR
    assert simulated_time(1031.0, start, evening, 120, skip) == MIDNIGHT + 29 * HOUR + 120
    assert simulated_time(1031.0, start, evening, 120) == evening + 31 * 120


class Recorder(Simulation):
    """Records the reports a tick would push instead of pushing them."""

    def __init__(self, farm: Farm, clock) -> None:
        super().__init__(farm, ["http://127.0.0.1:1"], interval=15, speed=1, start=MIDNIGHT + 19.9 * HOUR,
                         clock=clock)
        self.pushed: List[Report] = []

    def _push(self, report: Report, deadline: float):
        self.pushed.append(report)
        return PushResult(ACCEPTED, 1, 200)


def saved_desktop() -> Tuple[List[float], Farm, Recorder, SimHost, float]:
    """Three hosts, one a pooled desktop: a tick at 19:54, then one at 20:06 that saved the desktop.
    (the clock to move, the farm, the simulation, the desktop, its agent's start time)."""
    now = [0.0]
    farm = Farm.build(3, groups_per_site=1, sites=3, seed=3, power_down_action="suspend")
    sim = Recorder(farm, lambda: now[0])
    desktop = next(h for h in farm.hosts if h.pooled)
    sim.tick()
    started = sim.started[desktop.name]
    now[0] = 0.2 * HOUR  # 20:06: saved
    sim.pushed.clear()
    sim.tick()
    return now, farm, sim, desktop, started


def test_a_suspended_desktop_says_no_goodbye_and_keeps_its_agent_start() -> None:
    now, farm, sim, desktop, started = saved_desktop()
    assert desktop.name not in {r.host for r in sim.pushed}, "silent: no goodbye from a saved VM"
    sim.skip = (MIDNIGHT + 20.5 * HOUR, MIDNIGHT + 30.5 * HOUR)
    now[0] = 0.7 * HOUR  # past 20:30: 06:30 the next morning
    sim.pushed.clear()
    sim.tick()
    back = [r for r in sim.pushed if r.host == desktop.name]
    assert back and not back[0].goodbye
    assert sim.started[desktop.name] == started
    sim.pool.shutdown()


def test_the_simulator_command_refuses_an_unknown_power_down_action(capsys) -> None:
    from agent.sim import main

    with pytest.raises(SystemExit) as exit_:
        main(["--power-down", "hibernate"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--power-down" in err and "'shutdown', 'suspend'" in err


def test_the_skipped_night_is_lived_through_not_jumped() -> None:
    now = [0.0]
    farm = Farm.build(6, seed=3)
    sim = Recorder(farm, lambda: now[0])
    sim.skip = (MIDNIGHT + 20.5 * HOUR, MIDNIGHT + 28 * HOUR)  # 20:30 -> 04:00
    sim.tick()  # 19:54
    now[0] = 0.5 * HOUR
    sim.tick()  # 20:24
    connected = sum(1 for h in farm.hosts for s in h.sessions.values() if s.state != "disconnected")
    assert connected > 0
    steps = []
    original = farm.step
    farm.step = lambda t: (steps.append(t), original(t))[1]  # type: ignore[method-assign]
    now[0] = 0.7 * HOUR  # 20:36 -> 04:06 the next morning
    sim.tick()
    assert len(steps) > 100 and steps[-1] == MIDNIGHT + 28.1 * HOUR
    assert max(b - a for a, b in zip(steps, steps[1:])) <= 900, "a report interval at a time (15 s x 60 here)"
    sim.pool.shutdown()


def test_a_saved_desktop_powered_off_boots_with_a_new_agent() -> None:
    now, farm, sim, desktop, started = saved_desktop()
    desktop.power(False, farm.last)  # then turned off at the hypervisor
    now[0] = 0.3 * HOUR
    sim.tick()
    desktop.power(True, farm.last)
    desktop.suspend(False)
    farm.power_down = (23.0, 6.0)  # keep it on for the next step
    now[0] = 0.4 * HOUR
    sim.tick()
    assert sim.started[desktop.name] == now[0] != started
    sim.pool.shutdown()
