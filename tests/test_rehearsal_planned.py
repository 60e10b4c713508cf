"""Rehearsal of planned work and one outage, as on-call staff live it: pages, not only alerts.

A simulated farm of 30 hosts (2 sites x 3 delivery groups, every third a pool
of single-session desktops, 40 sessions and 16 CPUs a shared host) goes through an
evening, a night and a morning, with the real collector, a real
`vdiwatch-broker` reading a simulated Delivery Controller (the farm's machines
served in the Monitor Service's documented `Machines` shape), a real
Prometheus on a time-compressed copy of the rules, and a real Alertmanager
running config/alertmanager.yml, its receivers turned into local webhooks
(tests/alertmanager_harness.py). What a person would be woken by is what the
pager webhook receives.

The day (simulated time; real time is FACTOR times slower, 1 s = 4 min):
- 19:10 the farm runs; warm-up: every host and the broker seen, every rule
  evaluated (before 20:00, or the test fails).
- 20:00 power management saves the pooled desktops at the hypervisor
  (`Farm.power_down_action = "suspend"`): Windows is not told, the agents fall
  silent without a goodbye; the controller lists them suspended. They stay
  silent longer than VdiAgentDownIdleDesktop's `for:` (2 h) and the staleness
  delay, so that ticket would fire for them without the controller's word
  (checked at 05:48: silent, stale, offline for the controller, their slots
  counted as free to power on).
- 20:05 patch night on delivery group group-2-1: maintenance mode set in
  Studio on its five hosts (the VDAs still say they are open: only the
  controller knows); from 20:10 each is restarted in turn (a clean shutdown:
  goodbye, back 8 minutes later). Maintenance mode stays on into the morning.
- 20:40 -> 04:00: the night passes in one report interval of real time
  (`Simulation(skip=...)`), the farm living through it step by step.
- 06:00 the pooled desktops resume; users arrive from 06:30 (the ramp).
- 06:30-07:15 group-2-1 is still in Studio maintenance while its users would
  log on: its logons are under a tenth of the same 15 minutes a week ago with
  every VDA saying it is open, which is VdiDeliveryGroupLogonOutage's
  condition but for the controller's maintenance mode (checked): no page;
  the ticket VdiDeliveryGroupInMaintenanceDuringLogons must reach the mailbox
  (a window that overran into the morning), and resolve when maintenance
  mode is switched off at 07:15.
- 07:00-07:30 the live logons of three untouched groups are within a quarter
  of the backfilled week's (checked).
- 07:30 a farm-wide logon outage: nobody gets to any host (StoreFront, the
  Gateway, the controllers: `logon_outage` on every host), the running
  sessions go on. VdiFarmLogonOutage must fire and reach the pager within
  the time the 15-minute window, its `for:`, a report, a scrape, three
  evaluations and Alertmanager's group_wait take (plus 2 s); the per-group
  VdiDeliveryGroupLogonOutage alerts fire in Prometheus too (the outage lasts
  until one has), and Alertmanager must show every one of them suppressed,
  inhibited by the farm's page, at every poll (inhibition 10). Then the
  outage ends, group-2-2's users 6 minutes after the others: the farm's
  page, kept 10 minutes longer than the groups', must cover that group's
  late end. Everything must resolve, and nothing may reach the pager in the
  two group intervals after.

Checked: no other alert fires, or stays pending longer than BLIP, all day;
the pager receives one firing and one resolved notification, both for
VdiFarmLogonOutage; the mailbox the maintenance ticket's and a copy of the
page's, and nothing else.

A week of history: the outage alerts compare with `offset 7d` (2520 s real
here). The two series they read a week back,
delivery_group:vdi_session_logons:increase15m and
farm:vdi_session_logons:increase15m, are computed from the same farm (same
seed, same habits, no fault) stepped over the same morning, 15 simulated
minutes of logons at each step, written as OpenMetrics and turned into a TSDB
block by `promtool tsdb create-blocks-from openmetrics` in the Prometheus data
directory before it starts. That history is the simulator's count, not
Prometheus' `increase()` of scraped counters; both count the same logons.

Time compression is that of tests/test_rehearsal.py (tests/rules_compress.py)
with FACTOR 240: windows under MIN_RANGE are floored to it (the 5m rate
windows hold 8 simulated minutes), the agents report every simulated 4
minutes. Start-up: before the first scrape VdiwatchCollectorDown's absent()
may fire (a `for:` of 0.75 s); it is waited out as in the other rehearsal, and
its notifications, from before the watch began, are not counted.
"""

from __future__ import annotations

import bisect
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest
import requests

from agent.sim import Simulation, day_start
from agent.simfarm import Farm, SimHost
from broker.odata import DEFAULT_POWER_CODES, DEFAULT_REGISTERED_CODES, KNOWN_REGISTRATION_CODES
from tests.alertmanager_harness import ALERTMANAGER_CONFIG, AlertmanagerServer, Webhook, rehearsal_config
from tests.broker.fakeodata import FakeOData
from tests.conftest import ARTIFACTS, CollectorProcess, LoggedProcess, free_port, require_tool
from tests.prometheus_harness import RULE_FILES, PrometheusServer, value
from tests.rules_compress import format_duration, parse_duration, write_compressed
from tests.test_rehearsal import AlertLog, Pump, alert_timing, parse_time

FACTOR = 240
SCRAPE = 0.5
EVAL = SCRAPE
MIN_RANGE = 4 * SCRAPE
AGENT_INTERVAL = 1.0
STEP = AGENT_INTERVAL * FACTOR  # simulated seconds between two reports
POLL = 0.25
HOSTS, MAX_SESSIONS, CPUS, SEED = 30, 40, 16, 1  # a host sized for 40 sessions: 16 CPUs
WEEK = 7 * 86400 / FACTOR  # `offset 7d`, compressed
HOUR = 3600.0
START = 19 + 10 / 60  # 19:10: 12.5 s of real time before the power-down, for the warm-up (about 6.5 s)
NIGHT = (20 + 40 / 60, 24 + 4.0)  # 20:40 -> 04:00 the next morning
PATCH_GROUP = "group-2-1"
MAINTENANCE = (20 + 5 / 60, 24 + 7.25)  # Studio maintenance mode on PATCH_GROUP: 20:05 -> 07:15
REBOOTS = (20 + 10 / 60, 4 / 60, 8 / 60)  # the first restart at 20:10, then one every 4 minutes, 8 minutes each
OUTAGE = 24 + 7.5  # 07:30 the next morning
LATE_GROUP = "group-2-2"  # the group whose users come back last after the outage
LATE_BY = 6 / 60  # hours: inside the 10 minutes the farm's page outlasts the groups'
OUTAGE_ALERTS = {"VdiFarmLogonOutage", "VdiDeliveryGroupLogonOutage"}  # and only while the outage lasts
MAINTENANCE_TICKET = "VdiDeliveryGroupInMaintenanceDuringLogons"  # on PATCH_GROUP only, only in the morning
BROKER_JOB = "vdiwatch-broker"
BLIP = 2 * EVAL + 2 * POLL  # the longest an unexpected alert may be seen pending (see the test)


# ---------------------------------------------------------------------------
# The simulated Delivery Controller: the farm's machines as the Monitor Service lists them.
# ---------------------------------------------------------------------------

def machines_page(farm: Farm) -> Dict[str, object]:
    """One page of Machines in the documented shape (tests/fixtures/broker), codes as the reader reads them."""
    power = {state: DEFAULT_POWER_CODES.index(state) for state in ("on", "off", "suspended")}
    registered = DEFAULT_REGISTERED_CODES[0]
    unregistered = next(c for c in KNOWN_REGISTRATION_CODES if c not in DEFAULT_REGISTERED_CODES and c != 0)
    value_ = []
    for h in farm.hosts:
        host, group, maintenance, state, running = h.broker_view()
        value_.append({"Name": f"SIM\\{host.upper()}", "DnsName": f"{host}.sim.example",
                       "IsInMaintenanceMode": maintenance, "CurrentRegistrationState":
                       registered if running else unregistered, "CurrentPowerState": power[state],
                       "DesktopGroup": {"Name": group}})
    return {"@odata.context": "http://ddc.sim.example/Citrix/Monitor/OData/v4/Data/$metadata#Machines",
            "value": value_}


def test_the_simulated_controller_speaks_the_readers_language() -> None:
    from broker.odata import Options, parse_page

    farm = Farm.build(6, seed=SEED, power_down_action="suspend")
    day = day_start(1_800_000_000, 0)
    farm.step(day + 19 * HOUR)
    farm.fault("sim-0001", "studio_maintenance", day + 19 * HOUR)
    farm.step(day + 21 * HOUR)
    page = parse_page(json.loads(json.dumps(machines_page(farm))), Options())
    assert page.problems == []
    got = {m.host: (m.delivery_group, m.maintenance, m.power, m.registered) for m in page.machines}
    assert got["sim-0001"] == ("group-1-1", True, "on", True)
    assert got["sim-0003"] == ("group-1-3", False, "suspended", False)  # a pooled desktop, saved at 20:00
    assert got["sim-0002"] == ("group-1-2", False, "on", True)


class BrokerProcess(LoggedProcess):
    """A real `vdiwatch-broker` polling `url` every second."""

    def __init__(self, tmp: Path, url: str):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.config = tmp / "broker.toml"
        self.config.write_text(f'[broker]\nlisten = "{self.address}"\ninterval = 1.0\nhold = 5.0\n'
                               f'[odata]\nurl = "{url}"\ntimeout = 1.0\npoll_timeout = 1.0\n'
                               f'[auth]\nmethod = "none"\n', encoding="utf-8")
        self.log_path = tmp / "broker.log"
        self.proc = None

    def start(self) -> "BrokerProcess":
        self.launch([sys.executable, "-m", "broker", "--config", str(self.config)],
                    f"http://{self.address}/metrics", "vdiwatch-broker")
        return self


# ---------------------------------------------------------------------------
# The week before: the series the logon-outage alerts read `offset 7d`.
# ---------------------------------------------------------------------------

def real_time(sim: float, real_start: float, sim_start: float, skip: Tuple[float, float]) -> float:
    """The real time at which `Simulation` shows simulated time `sim` (the inverse of agent.sim.simulated_time)."""
    shifted = sim - (skip[1] - skip[0]) if sim >= skip[1] else sim
    return real_start + (shifted - sim_start) / FACTOR


def week_ago(sim_from: float, sim_to: float) -> List[Tuple[float, Dict[str, int]]]:
    """(simulated time, delivery group -> sessions started in the 15 minutes before it) of the same farm on
    an ordinary morning, one report interval apart."""
    farm = Farm.build(HOSTS, sites=2, groups_per_site=3, max_sessions=MAX_SESSIONS, seed=SEED,
                      power_down_action="suspend", cpus=CPUS)
    groups = sorted({h.delivery_group for h in farm.hosts})
    times: List[float] = []
    totals: List[Dict[str, int]] = []
    t = sim_from - HOUR  # an hour of run-in, so the first window is full
    while t <= sim_to:
        farm.step(t)
        times.append(t)
        totals.append({g: sum(h.logons for h in farm.hosts if h.delivery_group == g) for g in groups})
        t += STEP
    def total_at(t: float, group: str) -> float:
        """The group's logons by simulated time `t`, interpolated between two steps."""
        k = bisect.bisect_right(times, t) - 1
        if k + 1 >= len(times):
            return totals[k][group]
        share = (t - times[k]) / (times[k + 1] - times[k])
        return totals[k][group] + share * (totals[k + 1][group] - totals[k][group])

    return [(t, {g: round(now[g] - total_at(t - 15 * 60, g), 3) for g in groups})
            for t, now in zip(times, totals) if t >= sim_from]


def openmetrics(history: List[Tuple[float, Dict[str, int]]], when: Callable[[float], float]) -> str:
    """The history as OpenMetrics text, each sample at real time `when(simulated time)`."""
    lines = ["# TYPE delivery_group:vdi_session_logons:increase15m gauge"]
    for group in sorted(history[0][1]):
        lines += [f'delivery_group:vdi_session_logons:increase15m{{delivery_group="{group}"}} {n[group]} '
                  f"{when(t):.3f}" for t, n in history]
    lines.append("# TYPE farm:vdi_session_logons:increase15m gauge")
    lines += [f"farm:vdi_session_logons:increase15m {sum(n.values())} {when(t):.3f}" for t, n in history]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def backfill(prom: PrometheusServer, text: str) -> None:
    source = prom.dir / "last-week.om"
    source.write_text(text)
    result = subprocess.run([require_tool("promtool"), "tsdb", "create-blocks-from", "openmetrics",
                             str(source), str(prom.data)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_week_before_is_an_ordinary_morning() -> None:
    day = day_start(1_800_000_000, 0)
    history = week_ago(day + 6 * HOUR, day + 9 * HOUR)
    at = dict(history)
    ramp = at[min(at, key=lambda t: abs(t - (day + 7.5 * HOUR)))]
    assert sum(ramp.values()) >= 45, ramp  # VdiFarmLogonOutage needs >= 30 a week ago
    assert all(ramp[g] >= 12 for g in ("group-1-1", "group-1-2", "group-2-1", "group-2-2")), ramp  # >= 10
    text = openmetrics(history[:2], lambda t: t - day)
    assert text.splitlines()[:2] == [
        "# TYPE delivery_group:vdi_session_logons:increase15m gauge",
        f'delivery_group:vdi_session_logons:increase15m{{delivery_group="group-1-1"}} '
        f'{history[0][1]["group-1-1"]} {6 * HOUR:.3f}']
    assert text.endswith("# EOF\n")


# ---------------------------------------------------------------------------
# The day.
# ---------------------------------------------------------------------------

class DayPump(Pump):
    """The rehearsal's pump (a tick every AGENT_INTERVAL s, under `lock`); before a tick, the scheduled
    actions that are due (simulated time, what, action) run, and what ran is kept in `done` with its real
    time; after it, `after_tick()` gives the controller's page, served from `machines` without the lock
    (a slow tick must not stall the broker's poll)."""

    def __init__(self, sim: Simulation, schedule: List[Tuple[float, str, Callable[[], None]]],
                 after_tick: Callable[[], Dict[str, object]]):
        super().__init__(sim, name="planned-pump")
        self.schedule = sorted(schedule, key=lambda s: s[0])
        self.after_tick = after_tick
        self.machines: Optional[Dict[str, object]] = None
        self.done: Dict[str, float] = {}

    def step(self) -> None:
        now = self.sim.sim_now()
        while self.schedule and self.schedule[0][0] <= now:
            _, what, action = self.schedule.pop(0)
            action()
            self.done[what] = time.time()
        self.sim.tick()
        self.machines = self.after_tick()


def plan(farm: Farm, day: float) -> List[Tuple[float, str, Callable[[], None]]]:
    """The planned work on PATCH_GROUP and the outage, in simulated time from `day` (midnight)."""
    patch = [h for h in farm.hosts if h.delivery_group == PATCH_GROUP]
    out: List[Tuple[float, str, Callable[[], None]]] = []
    for h in patch:
        out.append((day + MAINTENANCE[0] * HOUR, f"maintenance on {h.name}",
                    lambda h=h: farm.fault(h.name, "studio_maintenance", farm.last or 0)))
        out.append((day + MAINTENANCE[1] * HOUR, f"maintenance off {h.name}",
                    lambda h=h: farm.clear(h.name, "studio_maintenance")))
    first, every, down_for = REBOOTS
    for k, h in enumerate(patch):
        down = day + (first + k * every) * HOUR
        up = down + down_for * HOUR
        out.append((down, f"restart {h.name}", lambda h=h, t=down: h.power(False, t)))
        out.append((up, f"back {h.name}", lambda h=h, t=up: h.power(True, t)))
    out.append((day + OUTAGE * HOUR, "outage", lambda: [farm.fault(h.name, "logon_outage", farm.last or 0)
                                                        for h in farm.hosts]))
    return out


@dataclass
class Day:
    farm: Farm
    sim: Simulation
    pump: DayPump
    prom: PrometheusServer
    alertmanager: AlertmanagerServer
    hook: Webhook
    day: float  # midnight before the evening, simulated
    timing: Dict[str, Tuple[float, float, str]]

    def hour(self) -> float:
        return (self.sim.sim_now() - self.day) / HOUR


@pytest.fixture
def planned_day(tmp_path: Path) -> Iterator[Day]:
    rules = write_compressed(RULE_FILES, tmp_path / "rules", FACTOR, MIN_RANGE)
    now = time.time()
    day = day_start(now, 0)
    if day + START * HOUR < now:  # simulated time never lags the wall clock (tests/test_rehearsal.py)
        day += 86400
    farm = Farm.build(HOSTS, sites=2, groups_per_site=3, max_sessions=MAX_SESSIONS, seed=SEED,
                      power_down_action="suspend", cpus=CPUS)
    skip = (day + NIGHT[0] * HOUR, day + NIGHT[1] * HOUR)
    with Webhook() as hook, FakeOData() as controller:
        collector = CollectorProcess(tmp_path, config="[collector]\nmin_report_interval = 0\n").start()
        sim = Simulation(farm, [collector.url], interval=AGENT_INTERVAL, speed=FACTOR,
                         start=day + START * HOUR, skip=skip)
        pump = DayPump(sim, plan(farm, day), after_tick=lambda: machines_page(farm))

        def serve(handler: BaseHTTPRequestHandler) -> None:
            controller.send_json(handler, pump.machines or machines_page(Farm([])))

        controller.behaviour = serve
        broker = alertmanager = prom = None
        try:
            broker = BrokerProcess(tmp_path, controller.url).start()
            alertmanager = AlertmanagerServer(tmp_path, rehearsal_config(ALERTMANAGER_CONFIG, hook.url, FACTOR))
            alertmanager.check()
            alertmanager.start()
            prom = PrometheusServer(tmp_path, [f"127.0.0.1:{collector.port}"], rule_files=rules,
                                    interval=format_duration(SCRAPE), jobs={BROKER_JOB: [broker.address]},
                                    alertmanagers=[alertmanager.address],
                                    args=["--rules.alert.resend-delay=1s"])
            when = lambda t: real_time(t, sim.real_start, sim.sim_start, skip) - WEEK  # noqa: E731
            backfill(prom, openmetrics(week_ago(day + (24 + 5) * HOUR, day + (24 + 10) * HOUR), when))
            pump.start()
            prom.start()
            yield Day(farm, sim, pump, prom, alertmanager, hook, day, alert_timing(rules[1]))
        finally:
            pump.stop()
            for proc in (prom, alertmanager, broker):
                if proc is not None:
                    proc.stop()
            collector.stop()


def pooled(farm: Farm) -> List[SimHost]:
    return [h for h in farm.hosts if h.pooled]


def hosts_regex(hosts: List[SimHost]) -> str:
    return "|".join(h.name for h in hosts)


@pytest.mark.slow
def test_planned_work_pages_nobody_and_a_logon_outage_pages_once(planned_day: Day) -> None:
    d = planned_day
    prom, farm = d.prom, d.farm
    timeline: List[str] = []

    def clock(hour: float) -> str:
        minutes = int(round(hour * 60)) % (24 * 60)
        return f"{minutes // 60:02d}:{minutes % 60:02d}"

    def hour_at(real: float) -> float:
        """The simulated hour at an earlier real time (the skipped night included)."""
        return d.hour() - (time.time() - real) * FACTOR / HOUR

    def note(text: str) -> None:
        timeline.append(f"{clock(d.hour())}  {text}")

    # Warm-up: before the power-down at 20:00, every host up, the broker read, every rule evaluated.
    prom.wait_until(lambda: len(prom.query('host:vdi_host_state:max{state="up"} == 1')) == HOSTS,
                    message=f"all {HOSTS} hosts up in Prometheus")
    prom.wait_until(lambda: len(prom.query("host:vdi_broker_machine_power_state:max")) >= HOSTS,
                    message="the controller's view of every machine")
    prom.wait_until(lambda: all(r["health"] == "ok" for g in prom.rules() for r in g["rules"]),
                    message="every rule evaluated without error")
    prom.wait_until(lambda: not [a for a in prom.alerts() if a["labels"]["alertname"] == "VdiwatchCollectorDown"],
                    message="start-up: no VdiwatchCollectorDown left from before the first scrape")
    watch_from = time.time()
    assert d.hour() < 20, f"warm-up ended at {clock(d.hour())} simulated, after the power-down"
    note("warm-up done: every host up, the controller read, every rule evaluated")

    route = rehearsal_config(ALERTMANAGER_CONFIG, "", FACTOR)["route"]
    group_wait, group_interval = parse_duration(route["group_wait"]), parse_duration(route["group_interval"])
    window_15m, farm_for = parse_duration("15m") / FACTOR, d.timing["VdiFarmLogonOutage"][0]
    # From the last logon to the page: the 15-minute window empties, 5 minutes of for:, one report, one
    # scrape, the recording rules and the alert (three evaluations), Alertmanager's group_wait, 2 s of slack.
    page_budget = window_15m + farm_for + AGENT_INTERVAL + SCRAPE + 3 * EVAL + group_wait + 2.0

    def firing_notified(receiver: str, name: str, status: str = "firing") -> Optional[float]:
        return next((t for t, r, n in list(d.hook.received) if r == receiver and n["status"] == status
                     and n["commonLabels"].get("alertname") == name), None)

    def am_group_states() -> List[Tuple[str, bool]]:
        got = requests.get(f"http://{d.alertmanager.address}/api/v2/alerts", timeout=5,
                           params={"filter": 'alertname="VdiDeliveryGroupLogonOutage"'}).json()
        return [(a["status"]["state"], bool(a["status"]["inhibitedBy"])) for a in got]

    log = AlertLog(prom)
    blips: Dict[Tuple[Tuple[str, str], ...], object] = {}
    checks: Dict[str, str] = {}
    outage_at: Optional[float] = None
    cleared: Dict[str, float] = {}  # "early" / "late" -> real time
    fired: Dict[str, float] = {}
    held_back = 0  # polls of Alertmanager that showed group outage alerts, every one suppressed
    deadline = time.time() + (OUTAGE - START - (NIGHT[1] - NIGHT[0])) * HOUR / FACTOR + 40
    while True:
        hour = d.hour()
        for a in log.poll():
            name = a.labels["alertname"]
            during_outage = outage_at is not None and a.active_at >= outage_at - 1
            in_window = (name == MAINTENANCE_TICKET and a.labels.get("delivery_group") == PATCH_GROUP
                         and 24 + 6 <= hour_at(a.active_at) < 24 + MAINTENANCE[1])
            if not ((name in OUTAGE_ALERTS and during_outage) or in_window):
                # One evaluation of pending is not a symptom: Prometheus commits a rule group's results
                # rule by rule, so an alert evaluated while the recording rules are half-way through an
                # evaluation can read old and new values at once, and the controller's view and the
                # collector's are a poll apart (a resumed desktop is "on" before its first report). `for:`
                # exists for that; what may never happen is an alert that fires, or stays pending past BLIP.
                blips.setdefault(tuple(sorted(a.labels.items())), a)
                assert not a.firing_seen and time.time() - a.pending_seen <= BLIP, \
                    f"{a.labels} went {'firing' if a.firing_seen else 'pending'} at {clock(hour)}\n" + \
                    "\n".join(timeline)
                continue
            if a.firing_seen and name not in fired:
                fired[name] = a.firing_seen
                note(f"{name} firing")
        assert not log.flapped, [a.labels for a in log.flapped]

        if "pooled_silent" not in checks and 24 + 5.8 <= hour < 24 + 6:
            # The saved desktops: silent for longer than the idle-desktop ticket's for:, explained.
            names = hosts_regex(pooled(farm))
            silent = prom.query(f'time() - host:vdi_agent_last_report_timestamp_seconds:max{{host=~"{names}"}}')
            offline = prom.query(f'host:vdi_broker_machine_offline:bool{{host=~"{names}"}} == 1')
            stale = prom.query(f'host:vdi_host_state:max{{host=~"{names}",state="stale"}} == 1')
            free = prom.query(f'host:vdi_host_max_sessions:powered_off{{host=~"{names}"}}')
            idle_for = d.timing["VdiAgentDownIdleDesktop"][0]
            assert len(silent) == len(offline) == len(stale) == len(free) == len(pooled(farm)), \
                (silent, offline, stale, free)
            # without the controller's word, the idle-desktop ticket would have fired by now
            assert min(value(s) for s in silent) > 3 * AGENT_INTERVAL + idle_for + 2 * EVAL, silent
            checks["pooled_silent"] = (f"{len(stale)} saved desktops silent {min(value(s) for s in silent):.1f} s "
                                       f"(idle ticket for: {idle_for:.1f} s), stale, offline for the controller, "
                                       f"their slots free to power on")
            note(checks["pooled_silent"])

        week = format_duration(WEEK)
        if "maintenance_quiet" not in checks and 24 + 6.6 <= hour < 24 + MAINTENANCE[1]:
            # The group in Studio maintenance: the outage alert's condition but for the controller's word.
            g = f'{{delivery_group="{PATCH_GROUP}"}}'
            stopped = prom.query(f"delivery_group:vdi_session_logons:increase15m{g} < 0.1 * "
                                 f"(delivery_group:vdi_session_logons:increase15m{g} offset {week}) and "
                                 f"delivery_group:vdi_session_logons:increase15m{g} offset {week} >= 10")
            open_ = prom.query(f'sum(host:vdi_host_accepting_sessions:max{g})')
            drained = prom.query(f'sum(host:vdi_broker_machine_maintenance:max and on (host) '
                                 f'host:vdi_host_state:max{{delivery_group="{PATCH_GROUP}",state="up"}} == 1)')
            if stopped and open_ and drained:
                assert value(open_[0]) == 5 and value(drained[0]) == 5, (open_, drained)
                checks["maintenance_quiet"] = (f"{PATCH_GROUP}: {value(stopped[0]):.1f} logons in 15 minutes "
                                               f"against >= 10 a week ago, 5 VDAs open, 5 in Studio maintenance")
                note(checks["maintenance_quiet"])

        if "history" not in checks and 24 + 7 <= hour < OUTAGE:
            # The backfilled week and the live week agree where nothing happens: the same farm, the same hour.
            live = {s["metric"]["delivery_group"]: value(s)
                    for s in prom.query("delivery_group:vdi_session_logons:increase15m")}
            then = {s["metric"]["delivery_group"]: value(s)
                    for s in prom.query(f"delivery_group:vdi_session_logons:increase15m offset {week}")}
            quiet = ["group-1-1", "group-1-2", "group-2-2"]
            if all(g in live and g in then for g in quiet):
                assert all(0.75 <= live[g] / then[g] <= 1.33 for g in quiet), (live, then)
                checks["history"] = "live and a week ago: " + ", ".join(
                    f"{g} {live[g]:.1f}/{then[g]:.1f}" for g in quiet)
                note(checks["history"])

        if outage_at is None and "outage" in d.pump.done:
            outage_at = d.pump.done["outage"]
            farm_week = prom.query(f"farm:vdi_session_logons:increase15m offset {week}")
            farm_now = prom.query("farm:vdi_session_logons:increase15m")
            note(f"farm-wide logon outage began at {clock(hour_at(outage_at))} ({value(farm_now[0]):.0f} logons "
                 f"in the last 15 minutes, {value(farm_week[0]):.0f} in the same 15 minutes a week ago)")
        if outage_at is not None and "VdiFarmLogonOutage" in fired and "late" not in cleared:
            states = am_group_states()
            assert all(state == "suppressed" and inhibited for state, inhibited in states), \
                f"a group's outage page not held back by the farm's: {states}\n" + "\n".join(timeline)
            held_back += bool(states)
        if ("early" not in cleared and firing_notified("oncall-pager", "VdiFarmLogonOutage")
                and "VdiDeliveryGroupLogonOutage" in fired):
            with d.pump.lock:
                for h in farm.hosts:
                    if h.delivery_group != LATE_GROUP:
                        farm.clear(h.name, "logon_outage")
            cleared["early"] = time.time()
            late_at = hour + LATE_BY
            note(f"the outage ends; {LATE_GROUP}'s users come back {LATE_BY * 60:.0f} minutes later")
        if "early" in cleared and "late" not in cleared and hour >= late_at:
            with d.pump.lock:
                for h in farm.hosts:
                    farm.clear(h.name, "logon_outage")
            cleared["late"] = time.time()
            note(f"{LATE_GROUP}'s users log on again")
        if ("late" in cleared and not prom.alerts()
                and firing_notified("oncall-pager", "VdiFarmLogonOutage", "resolved")):
            break
        assert time.time() < deadline, "the day did not end in time\n" + "\n".join(timeline)
        time.sleep(POLL)

    time.sleep(2 * group_interval + POLL)  # a notification held back until the farm's page resolved would come now
    late = [a.labels for a in log.poll() if a.firing_seen or time.time() - a.pending_seen > BLIP]
    assert late == [], late
    note("all quiet")

    def counted(receiver: str) -> List[Tuple[str, str]]:
        """(status, alertname) of each notification, leaving out the start-up's collector alert."""
        out = []
        for n in d.hook.notifications(receiver):
            alerts = [a for a in n["alerts"] if not (a["labels"]["alertname"] == "VdiwatchCollectorDown"
                                                     and parse_time(a["startsAt"]) < watch_from)]
            names = {a["labels"]["alertname"] for a in alerts}
            if names:
                out.append((n["status"], ",".join(sorted(names))))
        return out

    for b in blips.values():
        note(f"pending for at most {BLIP} s, never firing: {b.labels}")  # type: ignore[attr-defined]
    pages, mail = counted("oncall-pager"), counted("ops-mailbox")
    paged_at = firing_notified("oncall-pager", "VdiFarmLogonOutage")
    assert outage_at is not None and paged_at is not None
    groups = sorted({a.labels["delivery_group"] for a in log.seen.values() if a.firing_seen
                     and a.labels["alertname"] == "VdiDeliveryGroupLogonOutage"})
    note(f"pager: {pages}; mailbox: {mail}")
    note(f"the page came {paged_at - outage_at:.1f} s after the outage began (budget {page_budget:.1f} s); "
         f"VdiDeliveryGroupLogonOutage fired in Prometheus for {', '.join(groups)}, suppressed by the farm's page "
         f"at {held_back} polls of Alertmanager")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "rehearsal-planned.txt").write_text("\n".join(timeline) + "\n")
    story = "\n".join(timeline)
    assert pages == [("firing", "VdiFarmLogonOutage"), ("resolved", "VdiFarmLogonOutage")], story
    assert mail == [("firing", MAINTENANCE_TICKET), ("resolved", MAINTENANCE_TICKET), *pages], story
    assert paged_at - outage_at <= page_budget, story
    assert groups and held_back > 0, story
    assert set(checks) == {"pooled_silent", "maintenance_quiet", "history"}, story
    assert d.pump.errors == [] and d.sim.failed == 0, (d.pump.errors[:3], d.sim.failed)
    assert not d.pump.schedule, [s[1] for s in d.pump.schedule]


def test_compressed_week_is_an_exact_offset() -> None:
    assert parse_duration(format_duration(WEEK)) == pytest.approx(WEEK)
