"""A simulated virtual-desktop farm: the pure model behind `vdiwatch-sim`.

Given a simulated wall-clock time, `Farm.step(now)` moves every host forward:
users log on and off along a working-day curve, disconnect over lunch, go idle,
and non-persistent desktops power down at night (saying goodbye) and come back
in the morning. Faults can be put on chosen hosts. Each simulated host then
reads as a real one does (`SimHost.sample()`: the report contract's readings),
so reports are built and pushed by the agent's own code.

Everything here is deterministic for a given seed: tests step it with literal times.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from agent.experience.totals import ExperienceTotals
from agent.logons.matching import Logon
from agent.logons.totals import LogonTotals
from agent.sessions.states import effective_state
from contract.report import (
    AppUsage,
    Capacity,
    Disk,
    Filesystem,
    Interface,
    Load,
    Memory,
    SessionEntry,
    Sessions,
    System,
    cpu_times,
    reading_to_doc,
    session_counts,
)

FAULTS = ("agent_dies", "cpu_saturated", "memory_exhausted", "disk_filling", "not_accepting",
          "black_hole", "clock_skew", "maintenance", "app_hog", "network_degraded")

# Applications of a simulated office desktop: (app, share of sessions running it, CPU cores per
# connected session running it, resident MiB per session running it); the rest of the users'
# processes are "other". About 0.1 cores and 570 MiB per session, inside the host's totals.
SIM_APPS = (("outlook", 0.9, 0.02, 150), ("ms-teams", 0.7, 0.04, 200), ("chrome", 0.6, 0.05, 250),
            ("winword", 0.4, 0.01, 60), ("excel", 0.3, 0.015, 80), ("explorer", 1.0, 0.005, 40))
OTHER_APP_USE = (0.01, 60)  # cores per connected session, MiB per session
HOG_APP = "acrord32"  # the application that eats its host under the app_hog fault: 90 % of every CPU

GiB = 1024 ** 3
MiB = 1024 ** 2
# Faults of logons (docs/logons.md), each on one host: slow_profile, the profile phase 5-8 times longer;
# broken_gpo, group policy 10-20 times longer; auth_failure, 90 % of logon attempts fail (bad password or
# locked out) and the users retry; network_blip, a quarter of the connected sessions drop every 15 s (network)
# and their clients reconnect, half of them within each 15 s (auto client reconnect, or the user), to drop again.
FAULTS += ("slow_profile", "broken_gpo", "auth_failure", "network_blip")
# Faults the VDA does not see, only the Delivery Controller and the users: studio_maintenance, the host in
# maintenance mode in Citrix Studio (the controller sends it no new logon; the agent still reports it open);
# logon_outage, nobody gets through to the host (StoreFront, the Gateway, the controllers or licensing down):
# no new session starts, the running ones go on. Like a drained host, such a host keeps its sessions: nobody
# logs off either while the fault lasts (Farm._balance).
FAULTS += ("studio_maintenance", "logon_outage")
POWER_DOWN_ACTIONS = ("shutdown", "suspend")
BLIP_TICK = 15.0  # seconds: network_blip's drops and reconnects are drawn per 15 s, however long the step
BLIP_DROP, BLIP_RECONNECT = 0.25, 0.5  # per BLIP_TICK: a connected session drops; a dropped one is reconnected


def demand(hour: float, weekday: bool = True) -> float:
    """Share of a group's users working at `hour` (0-24, local time): the working-day curve.

    Night 0.02, ramp 07:00-09:00, plateau 0.9 with a lunchtime dip, decline 16:00-19:00.
    """
    if not weekday:
        return 0.05
    if hour < 6.5 or hour >= 21:
        return 0.02
    if hour < 9:
        return 0.02 + 0.88 * (hour - 6.5) / 2.5
    if hour < 16:
        lunch = 0.25 * math.exp(-((hour - 12.5) ** 2) / 0.25)  # a dip around 12:30
        return 0.9 - lunch
    if hour < 19:
        return 0.9 - 0.8 * (hour - 16) / 3
    return 0.1 - 0.08 * (hour - 19) / 2


@dataclass
class SimSession:
    id: int
    user: str
    logon_time: float
    state: str = "active"  # active, idle, disconnected
    disconnect_time: Optional[float] = None
    last_input: float = 0.0
    protocol: str = "ica"
    network_dropped: bool = False  # disconnected by the network: its client tries to reconnect


@dataclass
class SimHost:
    name: str
    site: str
    delivery_group: str
    max_sessions: int
    pooled: bool  # a non-persistent desktop pool that powers down at night
    cpus: int = 8
    memory_bytes: int = 32 * GiB
    disk_bytes: int = 128 * GiB
    rng: random.Random = field(default_factory=random.Random)
    sessions: Dict[int, SimSession] = field(default_factory=dict)
    faults: Dict[str, float] = field(default_factory=dict)  # fault -> simulated time it started
    powered: bool = True
    suspended: bool = False  # saved by the hypervisor: the guest, its agent and its sessions frozen, no goodbye
    next_id: int = 1
    cpu_busy: float = 0.0
    cpu_idle: float = 0.0
    disk_used: float = 0.0
    net_bytes: float = 0.0
    boot_time: float = 0.0
    last_step: Optional[float] = None
    logons: int = 0
    logoffs: int = 0
    disconnects: int = 0
    reconnects: int = 0
    app_cpu: Dict[str, float] = field(default_factory=dict)  # app -> CPU seconds since the agent started
    logon_totals: LogonTotals = field(default_factory=LogonTotals)  # the agent's logons reading
    logon_rng: Optional[random.Random] = None  # its own stream: logons leave the sessions' draws as they were
    link_rng: Optional[random.Random] = None  # likewise for connections replaced and network blips
    experience: ExperienceTotals = field(default_factory=ExperienceTotals)  # the agent's experience reading
    experience_rng: Optional[random.Random] = None  # its own stream too

    # -- the model -----------------------------------------------------------

    def accepting(self) -> bool:
        """Open for logons as the VDA itself says (its capacity reading)."""
        return self.running() and "not_accepting" not in self.faults and "maintenance" not in self.faults

    def takes_logons(self) -> bool:
        """Gets new logons: open, and the broker routes users to it (Studio maintenance, an outage before it)."""
        return self.accepting() and "studio_maintenance" not in self.faults and "logon_outage" not in self.faults

    def running(self) -> bool:
        return self.powered and not self.suspended

    def reporting(self) -> bool:
        return self.running() and "agent_dies" not in self.faults

    def broker_view(self) -> Tuple[str, str, bool, str, bool]:
        """(host, delivery group, maintenance mode, power state, registered) as the Delivery Controller sees
        the machine: its power state "on", "off" or "suspended", registered while the VDA runs."""
        power = "suspended" if self.suspended else "on" if self.powered else "off"
        return self.name, self.delivery_group, "studio_maintenance" in self.faults, power, self.running()

    def step(self, now: float, target: int, dt: float) -> None:
        """Move sessions towards `target` for this host and advance the counters by `dt` seconds."""
        if not self.running():
            return
        if "black_hole" in self.faults:
            target = 0  # accepts logons, but every one fails: the host sits empty
        if not self.takes_logons():
            target = min(target, len(self.sessions))
        target = min(target, self.max_sessions)
        connected = [s for s in self.sessions.values() if s.state != "disconnected"]
        for _ in range(target - len(self.sessions)):
            if "auth_failure" in self.faults and self._logon_refused():
                continue  # the user tries again at the next step
            sid = self.next_id
            self.next_id += 1
            self.sessions[sid] = SimSession(sid, f"user{self.rng.randrange(100000):05d}", now, last_input=now)
            self.logons += 1
            self._simulate_logon(busy=len(self.sessions) / max(1, self.max_sessions))
        surplus = max(0, len(self.sessions) - target)  # below target when logons failed (auth_failure)
        for s in sorted(self.sessions.values(), key=lambda s: (s.state != "disconnected", s.logon_time))[:surplus]:
            del self.sessions[s.id]
            self.logoffs += 1
        hour = (now % 86400) / 3600
        for s in list(self.sessions.values()):
            if s.state == "disconnected":
                if self.rng.random() < 0.02 * dt / 15:
                    s.state, s.disconnect_time, s.last_input = "active", None, now
                    s.network_dropped = False
                    self.reconnects += 1
                continue
            lunch = 12 <= hour < 13.5
            if self.rng.random() < (0.01 if lunch else 0.0015) * dt / 15:
                s.state, s.disconnect_time = "disconnected", now
                self.disconnects += 1
                self.logon_totals.add_disconnect("client")
            elif self.rng.random() < 0.05 * dt / 15:
                s.last_input = now
        self._links(now, dt)
        connected = [s for s in self.sessions.values() if s.state != "disconnected"]
        load = 0.04 + 0.035 * len(connected) * 8 / self.cpus  # a session's share of an 8-CPU host's time
        if "cpu_saturated" in self.faults:
            load = 1.0
        if "app_hog" in self.faults:
            load = max(load, 0.95)
            self.app_cpu[HOG_APP] = self.app_cpu.get(HOG_APP, 0.0) + 0.9 * self.cpus * dt
        for app, share, cores, _mib in SIM_APPS:
            self.app_cpu[app] = self.app_cpu.get(app, 0.0) + round(share * len(connected)) * cores * dt
        self.app_cpu["other"] = self.app_cpu.get("other", 0.0) + len(connected) * OTHER_APP_USE[0] * dt
        load = min(load, 1.0)
        self.cpu_busy += load * self.cpus * dt
        self.cpu_idle += (1 - load) * self.cpus * dt
        self.net_bytes += (20_000 + 60_000 * len(connected)) * dt
        if "disk_filling" in self.faults:
            self.disk_used = min(self.disk_bytes, self.disk_used + 0.002 * self.disk_bytes * dt / 15)
        if dt > 0:
            self._simulate_experience(connected, load, dt)

    def power(self, on: bool, now: float) -> None:
        if on and not self.powered:
            self.powered, self.boot_time = True, now
            # a fresh agent: its lifecycle counters start again, as after any restart
            self.logons = self.logoffs = self.disconnects = self.reconnects = 0
            self.app_cpu = {}
            self.logon_totals = LogonTotals()
            self.experience = ExperienceTotals()
        elif not on and self.powered:
            self.logoffs += len(self.sessions)
            self.sessions.clear()
            self.powered, self.suspended = False, False

    def suspend(self, on: bool) -> None:
        """Saved (on) or resumed by the hypervisor: Windows is not told, so the agent says no goodbye and,
        once resumed, runs on with its counters and sessions as they were."""
        self.suspended = on and self.powered

    def _simulate_logon(self, busy: float) -> None:
        """One logon with plausible phases (about 14 s on an empty host); the fuller the host (`busy`, the
        share of its sessions in use: the morning ramp), the slower the profile and policy phases; now and
        then a user mistypes a password first."""
        if self.logon_rng is None:
            self.logon_rng = random.Random("logons:" + self.name)
        rng = self.logon_rng
        storm = 1.0 + 1.2 * busy
        profile = rng.lognormvariate(math.log(5.0), 0.35) * storm
        policy = rng.lognormvariate(math.log(3.0), 0.3) * storm
        shell = rng.lognormvariate(math.log(4.0), 0.3)
        other = rng.lognormvariate(math.log(1.0), 0.5)
        if "slow_profile" in self.faults:
            profile *= rng.uniform(5.0, 8.0)
        if "broken_gpo" in self.faults:
            policy *= rng.uniform(10.0, 20.0)
        total = profile + policy + shell + other
        self.logon_totals.add_logon(Logon(round(total, 3), (("profile", round(profile, 3)),
                                                          ("group_policy", round(policy, 3)),
                                                          ("shell", round(shell, 3)), ("other", round(other, 3)))))
        self.logon_totals.add_success()
        if rng.random() < 0.03:
            self.logon_totals.add_failure("bad_password")

    def _logon_refused(self) -> bool:
        """Under auth_failure: whether this logon attempt fails (90 %), counted as a failed logon."""
        if self.logon_rng is None:
            self.logon_rng = random.Random("logons:" + self.name)
        if self.logon_rng.random() >= 0.9:
            return False
        self.logon_totals.add_failure("locked_out" if self.logon_rng.random() < 0.3 else "bad_password")
        return True

    def _links(self, now: float, dt: float) -> None:
        """Connections that end without the user: now and then a user connects from another device and takes
        over the session (replaced: disconnected and reconnected at once, too fast for the session count to
        see); under network_blip sessions drop (network) and reconnect, see `_blip`."""
        if self.link_rng is None:
            self.link_rng = random.Random("links:" + self.name)
        rng = self.link_rng
        if "network_blip" in self.faults or any(s.network_dropped for s in self.sessions.values()):
            self._blip(now, dt, rng)
        for s in self.sessions.values():
            if s.state == "disconnected":
                continue
            if rng.random() < 0.00015 * dt / 15:
                self.logon_totals.add_disconnect("replaced")

    def _blip(self, now: float, dt: float, rng: random.Random) -> None:
        """A flapping network, in steps of BLIP_TICK whatever `dt` (the rehearsal steps 2 minutes at a
        time): while network_blip lasts each connected session drops with BLIP_DROP (reason network), and
        each session the network dropped is reconnected with BLIP_RECONNECT (Citrix auto client reconnect,
        or the user clicking again), then can drop again. Once the fault is gone nothing drops any more and
        the clients still waiting reconnect within a minute or so."""
        flapping = "network_blip" in self.faults
        ticks = [1.0] * int(dt // BLIP_TICK) + ([dt / BLIP_TICK % 1] if dt % BLIP_TICK else [])
        for part in ticks:  # whole ticks, then what is left of dt
            drop, reconnect = 1 - (1 - BLIP_DROP) ** part, 1 - (1 - BLIP_RECONNECT) ** part
            for s in self.sessions.values():
                if s.state == "disconnected":
                    if s.network_dropped and rng.random() < reconnect:
                        s.state, s.disconnect_time, s.last_input = "active", None, now
                        s.network_dropped = False
                        self.reconnects += 1
                elif flapping and rng.random() < drop:
                    s.state, s.disconnect_time, s.network_dropped = "disconnected", now, True
                    self.disconnects += 1
                    self.logon_totals.add_disconnect("network")

    def _simulate_experience(self, connected: List[SimSession], load: float, dt: float) -> None:
        """One input delay and one round trip per connected session for this interval, and its traffic:
        input delay mostly under 150 ms, slower on a busy host and poor (0.5-2 s) under app_hog; round
        trips about 20-60 ms, 250-400 ms under network_degraded, which also slows input somewhat."""
        if self.experience_rng is None:
            self.experience_rng = random.Random("experience:" + self.name)
        rng, totals = self.experience_rng, self.experience
        degraded = "network_degraded" in self.faults
        for s in connected:
            if "app_hog" in self.faults:
                delay = rng.uniform(0.6, 1.8)
            else:
                delay = rng.lognormvariate(math.log(0.035), 0.6) * (1.0 + 3.0 * max(0.0, load - 0.7))
            totals.add_input_delay(round(delay * (1.6 if degraded else 1.0), 4))
            rtt = rng.uniform(0.25, 0.4) if degraded else rng.uniform(0.02, 0.06)
            totals.add_rtt(s.protocol, round(rtt, 4))
            totals.add_traffic(s.protocol, round(rng.uniform(1_000, 4_000) * dt),
                               round(rng.uniform(10_000, 60_000) * dt))

    # -- what an agent would read -------------------------------------------

    def sample(self, now: float, idle_after: float = 1800.0) -> Dict[str, Any]:
        """What an agent would read now: each collector's reading of the report contract, by name."""
        counts: Dict[Tuple[str, str], int] = {}
        oldest = None
        entries = []
        for s in self.sessions.values():
            idle = round(now - s.last_input, 1)
            state = effective_state(s.state, now - s.last_input, idle_after)
            counts[state, s.protocol] = counts.get((state, s.protocol), 0) + 1
            if s.disconnect_time is not None and (oldest is None or s.disconnect_time < oldest):
                oldest = s.disconnect_time
            if len(entries) < 50:
                entries.append(SessionEntry(id=str(s.id), logon_time_seconds=s.logon_time, state=state,
                                            protocol=s.protocol, user="u-sim" + s.user[-5:], idle_seconds=idle))
        used = 2 * GiB + 600 * 1024 ** 2 * len(self.sessions)
        if "memory_exhausted" in self.faults:
            used = self.memory_bytes * 0.98
        used = min(used, self.memory_bytes)
        idle = self.cpu_idle
        return {
            "cpu": cpu_times(self.cpus, {"user": round(self.cpu_busy * 0.8, 3), "system": round(self.cpu_busy * 0.2, 3),
                                         "idle": round(idle, 3)}),
            "load": Load(round(self.cpus * self.cpu_busy / max(1.0, self.cpu_busy + idle), 2), 0.0, 0.0),
            "memory": Memory(total_bytes=self.memory_bytes, available_bytes=self.memory_bytes - used,
                             swap_total_bytes=4 * GiB, swap_used_bytes=0),
            "filesystems": (Filesystem(mountpoint="C:\\", fstype="NTFS", device="C:\\", size_bytes=self.disk_bytes,
                                       avail_bytes=max(0.0, self.disk_bytes * 0.6 - self.disk_used)),),
            "disks": (Disk(device="PhysicalDrive0", read_bytes=round(self.net_bytes * 0.3),
                           written_bytes=round(self.net_bytes * 0.2), reads_completed=round(self.net_bytes / 40960),
                           writes_completed=round(self.net_bytes / 81920),
                           io_time_seconds=round(self.cpu_busy / 10, 3)),),
            "interfaces": (Interface("Ethernet0", round(self.net_bytes), round(self.net_bytes * 3),
                                     round(self.net_bytes / 900), round(self.net_bytes / 1100), 0, 0, 0, 0),),
            "system": System(boot_time_seconds=self.boot_time, processes=120 + 25 * len(self.sessions)),
            "sessions": Sessions(
                source="simulated", counts=session_counts(counts),
                users=len({s.user for s in self.sessions.values()}), total=len(self.sessions), truncated=False,
                oldest_disconnect_time_seconds=oldest,
                logons_total=self.logons, logoffs_total=self.logoffs,
                disconnects_total=self.disconnects, reconnects_total=self.reconnects,
                entries=tuple(entries), user_processes=None, system_processes=None, top_users=None,
                apps=self._apps()),
            "capacity": Capacity(max_sessions=self.max_sessions, accepting_sessions=self.accepting(),
                                 maintenance="maintenance" in self.faults),
            "logons": self.logon_totals.reading(),
            "experience": self._experience(),
        }

    def _experience(self) -> Any:
        """The reading, with its parts present from the agent's start: a simulated VDA has the input delay
        and the ICA counter sets even before its first session."""
        self.experience.input_delay_present()
        self.experience.protocol_present("ica")
        return self.experience.reading()

    def _apps(self) -> Tuple[AppUsage, ...]:
        """The applications running now, by name, then "other", as the agent reports them."""
        n = len(self.sessions)
        out = [AppUsage(app, round(self.app_cpu.get(app, 0.0), 3), round(share * n) * mib * MiB, round(share * n))
               for app, share, _cores, mib in SIM_APPS if round(share * n)]
        if "app_hog" in self.faults:
            out.append(AppUsage(HOG_APP, round(self.app_cpu.get(HOG_APP, 0.0), 3), 1536 * MiB, min(1, n)))
        out.sort(key=lambda a: a.app)
        out.append(AppUsage("other", round(self.app_cpu.get("other", 0.0), 3), n * OTHER_APP_USE[1] * MiB, n))
        return tuple(out)

    def readings(self, now: float, idle_after: float = 1800.0) -> Dict[str, Any]:
        """`sample` as the `readings` object of the JSON report."""
        return {name: reading_to_doc(name, r) for name, r in self.sample(now, idle_after).items()}

    def clock_offset(self) -> float:
        return 300.0 if "clock_skew" in self.faults else 0.0


@dataclass
class Farm:
    hosts: List[SimHost]
    power_down: Tuple[float, float] = (20.0, 6.0)  # pooled desktops off from 20:00 to 06:00
    # what power management does to a pooled desktop at night: "shutdown" (Windows shuts down: the agent says
    # goodbye) or "suspend" (the hypervisor saves the VM: the agent falls silent, the controller says suspended)
    power_down_action: str = "shutdown"
    last: Optional[float] = None

    def __post_init__(self) -> None:
        if self.power_down_action not in POWER_DOWN_ACTIONS:
            raise ValueError(f"unknown power-down action {self.power_down_action!r}: "
                             f"one of {', '.join(POWER_DOWN_ACTIONS)}")

    @classmethod
    def build(cls, n_hosts: int, sites: int = 2, groups_per_site: int = 3, max_sessions: int = 20,
              seed: int = 1, power_down_action: str = "shutdown", cpus: int = 8) -> "Farm":
        """n hosts spread over sites and delivery groups; every third group is a pooled VDI pool."""
        rng = random.Random(seed)
        groups = [(f"site-{s + 1}", f"group-{s + 1}-{g + 1}", (s * groups_per_site + g) % 3 == 2)
                  for s in range(sites) for g in range(groups_per_site)]
        hosts = []
        for i in range(n_hosts):
            site, group, pooled = groups[i % len(groups)]
            hosts.append(SimHost(f"sim-{i + 1:04d}", site, group, 1 if pooled else max_sessions, pooled,
                                 cpus=cpus, rng=random.Random(rng.random())))
        return cls(hosts, power_down_action=power_down_action)

    def groups(self) -> Dict[Tuple[str, str], List[SimHost]]:
        out: Dict[Tuple[str, str], List[SimHost]] = {}
        for h in self.hosts:
            out.setdefault((h.site, h.delivery_group), []).append(h)
        return out

    def step(self, now: float) -> None:
        dt = 0.0 if self.last is None else max(0.0, now - self.last)
        self.last = now
        hour = (now % 86400) / 3600
        off_from, off_until = self.power_down
        night = hour >= off_from or hour < off_until
        for members in self.groups().values():
            for h in members:
                if h.pooled and self.power_down_action == "suspend":
                    h.suspend(night)
                elif h.pooled:
                    h.power(not night, now)
                if h.boot_time == 0.0:
                    h.boot_time = now - 3600
            capacity = sum(h.max_sessions for h in members if h.takes_logons())
            total = round(demand(hour) * 0.85 * sum(h.max_sessions for h in members))
            total = min(total, capacity + sum(len(h.sessions) for h in members if not h.takes_logons()))
            self._balance(members, total, now, dt)

    @staticmethod
    def _balance(members: List[SimHost], total: int, now: float, dt: float) -> None:
        """Spread the group's sessions like a broker: hosts it sends no logon to keep what they have."""
        fixed = {h.name: len(h.sessions) for h in members if not h.takes_logons()}
        remaining = max(0, total - sum(fixed.values()))
        open_hosts = [h for h in members if h.takes_logons()]
        share = {h.name: 0 for h in open_hosts}
        for k in range(remaining):
            if not open_hosts:
                break
            h = open_hosts[k % len(open_hosts)]
            share[h.name] += 1
        for h in members:
            h.step(now, fixed.get(h.name, share.get(h.name, 0)), dt)

    def fault(self, host: str, kind: str, now: float) -> None:
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}: one of {', '.join(FAULTS)}")
        self.by_name(host).faults[kind] = now

    def fault_group(self, delivery_group: str, kind: str, now: float) -> List[str]:
        """The fault on every host of a delivery group (what a broken share or policy does); their names."""
        return self._fault_each([h.name for h in self.hosts if h.delivery_group == delivery_group],
                                f"no simulated delivery group {delivery_group!r}", kind, now)

    def fault_site(self, site: str, kind: str, now: float) -> List[str]:
        """The fault on every host of `site` (a site-wide network degradation, say); the hosts' names."""
        return self._fault_each([h.name for h in self.hosts if h.site == site],
                                f"no simulated host in site {site!r}", kind, now)

    def _fault_each(self, names: List[str], none: str, kind: str, now: float) -> List[str]:
        if not names:
            raise KeyError(none)
        for name in names:
            self.fault(name, kind, now)
        return names

    def clear(self, host: str, kind: Optional[str] = None) -> None:
        h = self.by_name(host)
        if kind is None:
            h.faults.clear()
        else:
            h.faults.pop(kind, None)

    def by_name(self, host: str) -> SimHost:
        for h in self.hosts:
            if h.name == host:
                return h
        raise KeyError(f"no simulated host {host!r}")
