"""Every query of docs/cookbook.md against a real Prometheus scraping two collector replicas fed by a simulated farm.

Set-up (about 35 s): two collector replicas, a real Prometheus scraping both every 0.5 s (so that it sees every
report) and evaluating the project's rules as often (tests/prometheus_harness.py), and a feeder thread that posts
a report for every host of a 30-host simulated farm (agent/simfarm.py) once a second, stepping simulated time 5
minutes a tick through the morning ramp from 07:00, so that users log on all the time. Before the first report
the farm runs an hour unreported (06:00-07:00): the agents have counters from before the run, as from before the
last hour on a real farm.
Agents report with a 1 s interval, so a silent host is stale 3 s after its last report. Faults:

    sim-0001  agent_dies at tick 3 -> stale; runs agent 0.0.9
    sim-0002  not_accepting (drained, not in maintenance)
    sim-0003  runs agent 0.0.9
    sim-0004  maintenance
    sim-0005  memory_exhausted
    sim-0007  cpu_saturated
    sim-0008  says goodbye at tick 4 -> stopped
    sim-0010  THE FAILED-OVER HOST: reports to replica A with agent 0.0.9 until tick FAILOVER_TICK, then to
              replica B with agent 0.1.0 (upgraded while it moved); its old copy stays on A (stale). It is also
              cpu_saturated and memory_exhausted, so that it is in those answers, and question 20's host.
    sim-0011  disk_filling (under 10 % free from about tick 1)
    sim-0013  auth_failure (90 % of logon attempts fail)
    sim-0014  network_blip (sessions drop with reason network)
    sim-0016  slow_profile (profile phase 5-8 times longer)
    sim-0019  clock_skew (+300 s)
    sim-0021  its filesystems collector fails (no filesystems reading, as the agent's runner sends it)
    sim-0024  runs agent 0.0.9

sim-0004, sim-0010 and sim-0016 share delivery group "group-2-1", the cookbook's example group `Office`.

After RUN_TICKS ticks the farm is frozen (the same readings re-posted with fresh timestamps), and every query of
the cookbook (a fenced ```promql block under a numbered "### N." heading) is run as an instant query and compared
with what the simulated farm says, computed from the hosts' readings (SimHost), not hard-coded. The only rewrite
of a query is its example values: `Office` -> the failed-over host's group, `vda-017` -> the failed-over host.
No window is rewritten: the whole run is shorter than the shortest window a cookbook query uses (5m), so every
`[5m]` and `[1h]` window holds the whole run, and the hour before the run is outside it as an earlier hour is on
a real farm. Hence `rate(...[5m])` is the run's increase over 300 s.

Gauges must be equal. Counters go through `increase()`/`rate()`, which extrapolate: an answer must lie between
the sum of each series' own increase (a failover loses the one step between the last report to A and the first
to B) and that plus Prometheus' extrapolation, at most 1.1 scrape intervals at each end of each series
(`counter_bounds`). Ratios of counters get the bounds of their parts. A goodbye's readings are never served (the
host is stopped at once), so the last interval before a clean shutdown is not seen.

Twenty of the twenty-four checks are shown to fail on a wrong query (`WRONG`): what a failover, a silent host, a
drained host in maintenance, the hour's window or a `max` across replicas make of the obvious query. The other
four (questions 6, 10, 23, 24) compare sets of hosts and values like the rest, but no plausible wrong query gives
a different answer on this farm. `ALSO_RIGHT` holds the other right answers the cookbook names; they must pass.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import pytest

from agent.simfarm import Farm, SimHost
from contract.report import LOGON_DURATION_BUCKETS
from tests.conftest import ROOT, CollectorProcess
from tests.farmfeed import FarmFeeder
from tests.prometheus_harness import PrometheusServer, value

COOKBOOK = ROOT / "docs" / "cookbook.md"
MIDNIGHT = 1796083200 - (1796083200 % 86400)  # 2026-12-01 00:00 UTC, as tests/sim uses
PRE_ROLL = MIDNIGHT + 6 * 3600  # the farm runs unreported from here to SIM_START
SIM_START = MIDNIGHT + 7 * 3600
SIM_STEP = 300.0  # simulated seconds per tick (one real second)
RUN_TICKS = 24
FAILOVER_TICK = 10
SCRAPE = 0.5  # Prometheus' scrape and evaluation interval, seconds
EXTRAPOLATION = 1.1 * SCRAPE  # at most this much of a series' average rate is added at each end

CURRENT, OLD = "0.1.0", "0.0.9"
DEAD, DRAINED, MAINTENANCE, LOW_MEMORY, BUSY_CPU, GOODBYE = (
    "sim-0001", "sim-0002", "sim-0004", "sim-0005", "sim-0007", "sim-0008")
FAILOVER = "sim-0010"
FAILING_COLLECTOR = "sim-0021"
OLD_AGENTS = {DEAD, "sim-0003", "sim-0024"}
FAULTS = ((DRAINED, "not_accepting"), (MAINTENANCE, "maintenance"), (LOW_MEMORY, "memory_exhausted"),
          (BUSY_CPU, "cpu_saturated"), (FAILOVER, "cpu_saturated"), (FAILOVER, "memory_exhausted"),
          ("sim-0011", "disk_filling"), ("sim-0013", "auth_failure"), ("sim-0014", "network_blip"),
          ("sim-0016", "slow_profile"), ("sim-0019", "clock_skew"))


# ---------------------------------------------------------------------------
# The cookbook
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    number: int
    title: str
    query: str


def cookbook() -> Dict[int, Question]:
    """The numbered questions of docs/cookbook.md, each with its one ```promql block."""
    out: Dict[int, Question] = {}
    sections = re.split(r"^### ", COOKBOOK.read_text(), flags=re.M)[1:]
    for section in sections:
        heading = re.match(r"(\d+)\. (.+)", section)
        assert heading, f"a ### heading of the cookbook is not numbered: {section[:60]!r}"
        blocks = re.findall(r"^```promql\n(.*?)^```", section, flags=re.S | re.M)
        assert len(blocks) == 1, f"question {heading.group(1)} has {len(blocks)} promql blocks, not 1"
        n = int(heading.group(1))
        assert n not in out, f"question {n} twice"
        out[n] = Question(n, heading.group(2).strip(), blocks[0].strip())
    assert sorted(out) == list(range(1, len(out) + 1)), "questions are numbered 1, 2, 3, ..."
    return out


QUESTIONS = cookbook()


def example_values(farm_group: str, farm_host: str) -> Dict[str, str]:
    return {'"Office"': f'"{farm_group}"', '"vda-017"': f'"{farm_host}"'}


# ---------------------------------------------------------------------------
# The simulated farm and its agents
# ---------------------------------------------------------------------------


@dataclass
class Post:
    """One report the feeder posted: when, to which replica, and what it said."""

    tick: int
    at: float
    replica: str  # "a" or "b"
    doc: Dict[str, Any]


def report_for(h: SimHost, sim_now: float, started: float, version: str, goodbye: bool = False) -> dict:
    """What the agent of simulated host `h` would post now: agent/simfarm's readings plus the parts a real agent
    adds (collector statuses, process classes)."""
    readings = h.readings(sim_now)
    collectors = {name: {"success": True, "duration_seconds": 0.004}
                  for name in ("cpu", "memory", "filesystems", "sessions", "logons")}
    if h.name == FAILING_COLLECTOR:
        collectors["filesystems"]["success"] = False
        del readings["filesystems"]
    users = len({s.user for s in h.sessions.values()})
    readings["sessions"]["processes"] = {
        "user": {"cpu_seconds_total": round(h.cpu_busy * 0.7, 3), "memory_bytes": 600 * 2 ** 20 * users,
                 "processes": 25 * len(h.sessions)},
        "system": {"cpu_seconds_total": round(h.cpu_busy * 0.3, 3), "memory_bytes": 2 * 2 ** 30, "processes": 120}}
    return {"schema_version": 1, "host": h.name, "site": h.site, "delivery_group": h.delivery_group,
            "timestamp_seconds": time.time() + h.clock_offset(), "goodbye": goodbye,
            "agent": {"version": version, "os": "windows", "os_release": "Windows Server 2022",
                      "interval_seconds": 1, "start_time_seconds": started},
            "collectors": collectors, "readings": readings}


class Feeder(FarmFeeder):
    """Posts every reporting host's report once a second, stepping simulated time until frozen."""

    def __init__(self, farm: Farm, replicas: Dict[str, CollectorProcess]):
        super().__init__("cookbook-feeder", replicas, farm, SIM_START, SIM_STEP, DEAD, GOODBYE)
        self.replicas = replicas
        self.posts: Dict[str, List[Post]] = {h.name: [] for h in farm.hosts}
        self.lock = threading.Lock()  # held through a tick: `snapshot` sees whole ticks

    def replica(self, h: SimHost) -> str:
        if h.name == FAILOVER:
            return "a" if self.ticks < FAILOVER_TICK else "b"
        return "a" if int(h.name[-4:]) % 2 else "b"

    def version(self, h: SimHost) -> str:
        if h.name == FAILOVER:
            return OLD if self.ticks < FAILOVER_TICK else CURRENT
        return OLD if h.name in OLD_AGENTS else CURRENT

    def tick(self) -> None:
        with self.lock:
            super().tick()

    def post_host(self, h: SimHost, goodbye: bool) -> None:
        replica = self.replica(h)
        doc = report_for(h, self.sim_now, self.started, self.version(h), goodbye=goodbye)
        at = time.time()
        r = self.sessions[replica].post(f"{self.replicas[replica].url}/api/v1/reports", data=json.dumps(doc),
                                        headers={"Content-Type": "application/json"}, timeout=5)
        if r.status_code != 200:
            self.errors.append(f"{h.name}: {r.status_code} {r.text[:300]}")
        self.posts[h.name].append(Post(self.ticks, at, replica, doc))

    def snapshot(self) -> Dict[str, List[Post]]:
        with self.lock:
            return {h: list(p) for h, p in self.posts.items()}


# ---------------------------------------------------------------------------
# What the farm says
# ---------------------------------------------------------------------------


@dataclass
class Truth:
    """The simulated farm as its reports said it, frozen: the answers the cookbook's queries must give."""

    farm: Farm
    posts: Dict[str, List[Post]]
    last_tick: int

    # -- hosts and their state -------------------------------------------

    def last(self, host: str) -> Dict[str, Any]:
        return self.posts[host][-1].doc

    def live(self) -> List[str]:
        """Hosts reporting now (in the last tick), the goodbye excluded."""
        return [h for h, p in self.posts.items() if p and p[-1].tick == self.last_tick and not p[-1].doc["goodbye"]]

    def group(self, host: str) -> str:
        return self.farm.by_name(host).delivery_group

    def labels(self, host: str) -> Dict[str, str]:
        h = self.farm.by_name(host)
        return {"host": h.name, "site": h.site, "delivery_group": h.delivery_group}

    def state(self, host: str) -> str:
        doc = self.last(host)
        if doc["goodbye"]:
            return "stopped"
        if doc["readings"]["capacity"]["maintenance"]:
            return "maintenance"
        return "up" if host in self.live() else "stale"

    def readings(self, host: str) -> Dict[str, Any]:
        return self.last(host)["readings"]

    def sessions(self, host: str, states: Optional[Set[str]] = None) -> int:
        counts = self.readings(host)["sessions"]["counts"]
        return sum(n for state, by_protocol in counts.items() if states is None or state in states
                   for n in by_protocol.values())

    def open_for_logons(self) -> List[str]:
        return [h for h in self.live() if self.readings(h)["capacity"]["accepting_sessions"]
                and not self.readings(h)["capacity"]["maintenance"]]

    # -- counters ------------------------------------------------------------

    def counter_bounds(self, read: Callable[[Dict[str, Any]], float], hosts: Optional[List[str]] = None
                       ) -> Tuple[float, float, float]:
        """(truth, lowest, highest) `sum(increase(counter[window]))` may answer over `hosts` (all by default),
        the window holding the whole run. `read` takes a report's readings to the counter's value.

        truth: what the farm did, last report minus first report of each host. Prometheus sees a series per
        host and replica; each series' increase is last minus first of the reports it got (lowest: the step
        between a failed-over host's last report to A and its first to B is in neither), plus up to
        EXTRAPOLATION seconds of the series' average rate at each end (highest)."""
        truth = low = high = 0.0
        for host in hosts if hosts is not None else list(self.posts):
            # a goodbye's readings are not served (the host is stopped at once): its last interval is not seen
            posts = [p for p in self.posts[host] if not p.doc["goodbye"] and read(p.doc["readings"]) is not None]
            if len(posts) < 2:
                continue
            truth += read(posts[-1].doc["readings"]) - read(posts[0].doc["readings"])
            for replica in ("a", "b"):
                mine = [p for p in posts if p.replica == replica]
                if len(mine) < 2:
                    continue
                increase = read(mine[-1].doc["readings"]) - read(mine[0].doc["readings"])
                # Prometheus' first and last samples of the series lie within a scrape of these reports
                sampled = max(mine[-1].at - mine[0].at - 2 * SCRAPE, SCRAPE)
                low += increase
                high += increase * (1 + 2 * EXTRAPOLATION / sampled)
        return truth, low, high


def within(answer: float, bounds: Tuple[float, float, float], what: str, slack: float = 1e-6) -> None:
    truth, low, high = bounds
    assert low - slack <= answer <= high + slack, \
        f"{what}: {answer} is not the farm's {truth} (Prometheus may answer {low:.4f} to {high:.4f})"


def ratio_bounds(num: Tuple[float, float, float], den: Tuple[float, float, float]) -> Tuple[float, float, float]:
    """Bounds of num / den when each lies within its own bounds (den > 0)."""
    return num[0] / den[0], num[1] / den[2], num[2] / den[1]


def fraction_bounds(part: Tuple[float, float, float], rest: Tuple[float, float, float]) -> Tuple[float, float, float]:
    """Bounds of part / (part + rest), which grows with part and shrinks with rest."""
    def f(p: float, r: float) -> float:
        return p / (p + r) if p + r else float("nan")
    return f(part[0], rest[0]), f(part[1], rest[2]), f(part[2], rest[1])


def logons(r: Dict[str, Any]) -> Dict[str, Any]:
    return r["logons"]


def histogram_quantile(q: float, buckets: List[Tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) pairs ending with +Inf."""
    total = buckets[-1][1]
    if total == 0:
        return float("nan")
    rank = q * total
    i = next(i for i, (_, n) in enumerate(buckets) if n >= rank)
    if i == len(buckets) - 1:
        return buckets[-2][0]
    lower, below = (0.0, 0.0) if i == 0 else buckets[i - 1]
    upper, count = buckets[i]
    return lower + (upper - lower) * (rank - below) / (count - below)


# ---------------------------------------------------------------------------
# The set-up
# ---------------------------------------------------------------------------


@dataclass
class Env:
    farm: Farm
    feeder: Feeder
    prom: PrometheusServer
    truth: Truth
    examples: Dict[str, str]
    timings: Dict[str, float] = field(default_factory=dict)

    def ask(self, query: str) -> List[Dict[str, Any]]:
        for placeholder, actual in self.examples.items():
            query = query.replace(placeholder, actual)
        return self.prom.query(query)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    began = time.monotonic()
    tmp = tmp_path_factory.mktemp("cookbook")
    started: List[Any] = []
    try:
        replicas: Dict[str, CollectorProcess] = {}
        for name in ("a", "b"):
            replicas[name] = CollectorProcess(tmp, "[collector]\nmin_report_interval = 0.0\n").start()
            started.append(replicas[name])
        prom = PrometheusServer(tmp, [c.url[len("http://"):] for c in replicas.values()],
                                interval=f"{int(SCRAPE * 1000)}ms").start()
        started.append(prom)
        farm = Farm.build(30, seed=7)
        for host, fault in FAULTS:
            farm.fault(host, fault, PRE_ROLL)
        t = PRE_ROLL
        while t < SIM_START:  # an hour the agents ran before Prometheus saw them
            farm.step(t)
            t += SIM_STEP
        # Scraping must run before the first report, so that Prometheus sees every report from the first
        prom.wait_until(lambda: len(prom.query('up{job="vdiwatch-collector"} == 1')) == 2, message="both scraped")
        feeder = Feeder(farm, replicas)
        feeder.start()
        started.append(feeder)
        feeder.wait_ticks(RUN_TICKS)
        feeder.freeze.set()
        assert feeder.frozen.wait(10), "the feeder did not freeze"
        feeder.wait_ticks(feeder.ticks + 2)  # the frozen readings scraped and the rules evaluated on them
        time.sleep(2 * SCRAPE)
        posts = feeder.snapshot()
        truth = Truth(farm, posts, max(p[-1].tick for p in posts.values() if p))
        yield Env(farm, feeder, prom, truth, example_values(farm.by_name(FAILOVER).delivery_group, FAILOVER),
                  {"set-up": time.monotonic() - began})
    finally:
        for thing in reversed(started):
            thing.stop()


# ---------------------------------------------------------------------------
# The checks: one per question, each from the farm
# ---------------------------------------------------------------------------

Rows = List[Dict[str, Any]]


def by(rows: Rows, *labels: str, digits: int = 6) -> Dict[Any, float]:
    out: Dict[Any, float] = {}
    for r in rows:
        key = tuple(r["metric"].get(label) for label in labels)
        key = key[0] if len(key) == 1 else key
        assert key not in out, f"two rows for {key}: {rows}"
        out[key] = round(value(r), digits)
    return out


def hosts_of(rows: Rows) -> List[str]:
    return sorted(r["metric"]["host"] for r in rows)


def check_sessions_by_state(env: Env, rows: Rows, hosts: List[str]) -> None:
    t = env.truth
    expected = {s: float(sum(t.sessions(h, {s}) for h in hosts)) for s in ("active", "disconnected")}
    assert by(rows, "state") == expected


def q1(env: Env, rows: Rows) -> None:
    check_sessions_by_state(env, rows, env.truth.live())


def q2(env: Env, rows: Rows) -> None:
    t = env.truth
    check_sessions_by_state(env, rows, [h for h in t.live() if t.group(h) == t.group(FAILOVER)])


def q3(env: Env, rows: Rows) -> None:
    t = env.truth
    expected: Dict[str, float] = {}
    for h in t.live():
        site = t.labels(h)["site"]
        expected[site] = expected.get(site, 0.0) + t.sessions(h)
    assert by(rows, "site") == expected


def q4(env: Env, rows: Rows) -> None:
    t = env.truth
    expected = {s: 0.0 for s in ("up", "stale", "stopped", "maintenance")}
    for h in t.posts:
        expected[t.state(h)] += 1
    assert by(rows, "state") == expected


def q5(env: Env, rows: Rows) -> None:
    t = env.truth
    stale = [h for h in t.posts if t.state(h) == "stale"]
    assert stale == [DEAD]
    assert [r["metric"] for r in rows] == [t.labels(h) for h in stale]
    for r, h in zip(rows, stale):
        silent = float(r["value"][0]) - t.posts[h][-1].at  # query time minus when the last report was sent
        assert abs(value(r) - silent) < 0.5, f"{h} silent for {silent:.2f} s, the answer says {value(r)}"


def q6(env: Env, rows: Rows) -> None:
    t = env.truth
    assert [{k: v for k, v in r["metric"].items() if k != "__name__"} for r in rows] == [
        {**t.labels(h), "state": "maintenance"}
                                          for h in t.posts if t.state(h) == "maintenance"]
    assert [value(r) for r in rows] == [1.0]


def q7(env: Env, rows: Rows) -> None:
    t = env.truth
    expected = sorted(h for h in t.live() if not t.readings(h)["capacity"]["accepting_sessions"]
                      and not t.readings(h)["capacity"]["maintenance"])
    assert expected == [DRAINED]
    assert hosts_of(rows) == expected


def busy_share(readings_first: Dict[str, Any], readings_last: Dict[str, Any]) -> float:
    def seconds(r: Dict[str, Any], idle: bool) -> float:
        return sum(v for mode, v in r["cpu"]["seconds"].items() if not idle or mode in ("idle", "iowait"))
    total = seconds(readings_last, False) - seconds(readings_first, False)
    return 1 - (seconds(readings_last, True) - seconds(readings_first, True)) / total


def q8(env: Env, rows: Rows) -> None:
    t = env.truth
    expected = {}
    for h, posts in t.posts.items():
        if len(posts) > 1:
            share = busy_share(posts[0].doc["readings"], posts[-1].doc["readings"])
            if share > 0.9:
                expected[h] = share
    assert sorted(expected) == sorted([BUSY_CPU, FAILOVER])
    assert [r["metric"] for r in sorted(rows, key=lambda r: r["metric"]["host"])] == [t.labels(h) for h in
                                                                                     sorted(expected)]
    for r in rows:
        assert value(r) == pytest.approx(expected[r["metric"]["host"]], abs=0.01)


def q9(env: Env, rows: Rows) -> None:
    t = env.truth
    expected = {h: m["available_bytes"] / m["total_bytes"] for h in t.live()
                for m in [t.readings(h)["memory"]] if m["available_bytes"] / m["total_bytes"] < 0.1}
    assert sorted(expected) == sorted([LOW_MEMORY, FAILOVER])
    assert by(rows, "host") == {h: round(v, 6) for h, v in expected.items()}


def q10(env: Env, rows: Rows) -> None:
    t = env.truth
    expected = {(h, f["mountpoint"]): round(f["avail_bytes"] / f["size_bytes"], 6)
                for h in t.live() for f in t.readings(h).get("filesystems", ())
                if f["avail_bytes"] / f["size_bytes"] < 0.1}
    assert [h for h, _ in expected] == ["sim-0011"]
    assert by(rows, "host", "mountpoint") == expected


def q11(env: Env, rows: Rows) -> None:
    t = env.truth
    expected: Dict[str, float] = {}
    for h in t.open_for_logons():
        free = max(0, t.readings(h)["capacity"]["max_sessions"] - t.sessions(h))
        expected[t.group(h)] = expected.get(t.group(h), 0.0) + free
    assert by(rows, "delivery_group") == expected


def q12(env: Env, rows: Rows) -> None:
    t = env.truth
    used: Dict[str, float] = {}
    slots: Dict[str, float] = {}
    for h in t.open_for_logons():
        g = t.group(h)
        used[g] = used.get(g, 0.0) + t.sessions(h)
        slots[g] = slots.get(g, 0.0) + t.readings(h)["capacity"]["max_sessions"]
    assert by(rows, "delivery_group") == {g: round(used[g] / slots[g], 6) for g in slots}


def groups(env: Env) -> List[str]:
    return sorted({h.delivery_group for h in env.farm.hosts})


def members(env: Env, group: str) -> List[str]:
    return [h.name for h in env.farm.hosts if h.delivery_group == group]


def q13(env: Env, rows: Rows) -> None:
    t = env.truth
    answers = by(rows, "delivery_group")
    assert sorted(answers) == groups(env)
    for g in groups(env):
        within(answers[g], t.counter_bounds(lambda r: r["sessions"]["logons_total"], members(env, g)), g)


def bucket_bounds(t: Truth, hosts: List[str]) -> List[Tuple[float, Tuple[float, float, float]]]:
    les = list(LOGON_DURATION_BUCKETS) + [math.inf]
    return [(le, t.counter_bounds(
        lambda r, i=i: logons(r)["duration_buckets"][i] if i < len(LOGON_DURATION_BUCKETS)
        else logons(r)["duration_count"], hosts)) for i, le in enumerate(les)]


def q14(env: Env, rows: Rows) -> None:
    t = env.truth
    answers = by(rows, "delivery_group")
    assert sorted(answers) == groups(env)
    for g in groups(env):
        buckets = bucket_bounds(t, members(env, g))
        expected = histogram_quantile(0.95, [(le, b[0]) for le, b in buckets])
        # Extrapolation moves every bucket of a host by nearly the same share; the quantile stays within the
        # values it takes with every bucket at its lowest or its highest count.
        candidates = [histogram_quantile(0.95, [(le, b[k]) for le, b in buckets]) for k in (0, 1, 2)]
        low, high = min(candidates), max(candidates)
        assert low - 0.01 * expected <= answers[g] <= high + 0.01 * expected, \
            f"{g}: p95 {answers[g]} is not the farm's {expected:.3f} ({low:.3f} to {high:.3f})"
    slow = t.group("sim-0016")
    assert answers[slow] == max(answers.values()), "the group with slow profiles has the slowest logons"


def q15(env: Env, rows: Rows) -> None:
    t = env.truth
    office = members(env, t.group(FAILOVER))
    answers = by(rows, "phase")
    assert sorted(answers) == sorted(["profile", "group_policy", "shell", "other"])
    for phase, answer in answers.items():
        seconds = t.counter_bounds(lambda r, p=phase: logons(r)["phases"][p]["sum_seconds"], office)
        count = t.counter_bounds(lambda r, p=phase: logons(r)["phases"][p]["count"], office)
        within(answer, ratio_bounds(seconds, count), phase, slack=1e-3)
    assert answers["profile"] == max(answers.values()), "Office has a host with slow profiles"


REASONS = ("bad_password", "unknown_user", "locked_out", "expired", "disabled", "restricted", "other")
DISCONNECT_REASONS = ("client", "time_limit", "replaced", "network", "server", "licensing", "other")


def q16(env: Env, rows: Rows) -> None:
    answers = by(rows, "reason")
    assert sorted(answers) == sorted(REASONS)
    for reason in REASONS:
        within(answers[reason], env.truth.counter_bounds(lambda r, x=reason: logons(r)["failures"][x]), reason)
    assert answers["bad_password"] > 10 and answers["locked_out"] > 5


def q17(env: Env, rows: Rows) -> None:
    t = env.truth
    answers = by(rows, "delivery_group")
    assert sorted(answers) == groups(env)
    for g in groups(env):
        failures = t.counter_bounds(lambda r: sum(logons(r)["failures"].values()), members(env, g))
        successes = t.counter_bounds(lambda r: logons(r)["successes"], members(env, g))
        bounds = fraction_bounds(failures, successes)
        if math.isnan(bounds[0]):
            assert math.isnan(answers[g]), g
        else:
            within(answers[g], bounds, g, slack=1e-3)
    assert max(answers, key=lambda g: answers[g]) == t.group("sim-0013"), "the group with auth_failure"


def q18(env: Env, rows: Rows) -> None:
    answers = by(rows, "reason")
    assert sorted(answers) == sorted(DISCONNECT_REASONS)
    for reason in DISCONNECT_REASONS:
        bounds = env.truth.counter_bounds(lambda r, x=reason: logons(r)["disconnect_reasons"][x])
        within(answers[reason], bounds, reason)
    assert answers["network"] > answers["client"] > 0


def app_cpu(app: str) -> Callable[[Dict[str, Any]], Optional[float]]:
    def read(r: Dict[str, Any]) -> Optional[float]:
        return next((a["cpu_seconds_total"] for a in r["sessions"]["apps"] if a["app"] == app), None)
    return read


def check_top_apps(env: Env, rows: Rows, hosts: List[str]) -> None:
    t = env.truth
    apps = sorted({a["app"] for h in hosts for p in t.posts[h] for a in p.doc["readings"]["sessions"]["apps"]})
    window = 300.0  # the query's [5m]: rate() divides the increase by the window, which holds the whole run
    bounds = {app: tuple(x / window for x in t.counter_bounds(app_cpu(app), hosts)) for app in apps}
    top = sorted(apps, key=lambda app: -bounds[app][0])[:5]
    answers = by(rows, "app")
    assert sorted(answers) == sorted(top), f"top 5 {sorted(answers)}, the farm's {top}"
    for app in top:
        within(answers[app], bounds[app], app, slack=1e-4)


def q19(env: Env, rows: Rows) -> None:
    check_top_apps(env, rows, members(env, env.truth.group(FAILOVER)))


def q20(env: Env, rows: Rows) -> None:
    check_top_apps(env, rows, [FAILOVER])


def q21(env: Env, rows: Rows) -> None:
    t = env.truth
    expected: Dict[str, float] = {}
    for h in t.posts:
        v = t.last(h)["agent"]["version"]
        expected[v] = expected.get(v, 0.0) + 1
    assert by(rows, "version") == expected == {CURRENT: 27.0, OLD: 3.0}


def q22(env: Env, rows: Rows) -> None:
    t = env.truth
    expected = sorted(h for h in t.posts if t.last(h)["agent"]["version"] != CURRENT)
    assert expected == sorted(OLD_AGENTS)
    assert hosts_of(rows) == expected
    assert {r["metric"]["version"] for r in rows} == {OLD}


def q23(env: Env, rows: Rows) -> None:
    t = env.truth
    expected = {h: env.farm.by_name(h).clock_offset() for h in t.live() if abs(env.farm.by_name(h).clock_offset()) > 60}
    assert sorted(expected) == ["sim-0019"]
    answers = by(rows, "host")
    assert sorted(answers) == sorted(expected)
    for h, skew in expected.items():
        assert answers[h] == pytest.approx(skew, abs=0.5)


def q24(env: Env, rows: Rows) -> None:
    t = env.truth
    expected = sorted((h, name) for h in t.live() for name, c in t.last(h)["collectors"].items() if not c["success"])
    assert expected == [(FAILING_COLLECTOR, "filesystems")]
    assert sorted((r["metric"]["host"], r["metric"]["collector"]) for r in rows) == expected


CHECKS: Dict[int, Callable[[Env, Rows], None]] = {
    1: q1, 2: q2, 3: q3, 4: q4, 5: q5, 6: q6, 7: q7, 8: q8, 9: q9, 10: q10, 11: q11, 12: q12, 13: q13, 14: q14,
    15: q15, 16: q16, 17: q17, 18: q18, 19: q19, 20: q20, 21: q21, 22: q22, 23: q23, 24: q24}

# Wrong answers to the questions: each check must fail on them. Most are what the obvious query was before it
# was made right, or what it becomes when the detail the cookbook explains is left out.
WRONG: Dict[str, Tuple[int, str]] = {
    "count the inventory's series": (21, "count by (version) (vdi_agent_info)"),
    "count the inventory's host names per version": (
        21, "count by (version) (count by (host, version) (vdi_agent_info))"),
    "old agents without the freshest copy": (22, 'vdi_agent_info{version!="0.1.0"}'),
    "sum the raw liveness per state": (4, "sum by (state) (vdi_host_state)"),
    "down hosts from vdi_agent_up": (5, "time() - vdi_agent_last_report_timestamp_seconds and on (instance, host) "
                                        "vdi_agent_up == 0"),
    "drained hosts, maintenance included": (7, "vdi_host_accepting_sessions == 0"),
    "CPU per host and replica": (8, '1 - sum without (mode) (rate(vdi_host_cpu_seconds_total{mode=~"idle|iowait"}'
                                    '[1h])) / sum without (mode) (rate(vdi_host_cpu_seconds_total[1h])) > 0.9'),
    "logons: max of the replicas' increases per host (the capacity dashboard's)": (
        13, "sum by (delivery_group) (max by (host, delivery_group) (increase(vdi_session_logons_total[1h])))"),
    "logons: increase of the sum": (13, "sum by (delivery_group) (increase(sum by (delivery_group) "
                                        "(vdi_session_logons_total)[1h:1s]))"),
    "failed logons since the agents started": (16, "sum by (reason) (vdi_logon_failures_total)"),
    "apps on a host, per replica": (20, 'topk(5, rate(vdi_app_cpu_seconds_total{host="vda-017"}[5m]))'),
    "apps of a group: the busiest host's": (
        19, 'topk(5, max by (app) (rate(vdi_app_cpu_seconds_total{delivery_group="Office"}[5m])))'),
    "sessions per site of silent hosts and stale copies too": (3, "sum by (site) (last_over_time(vdi_sessions[1h]))"),
    "memory of silent hosts and stale copies too": (
        9, "last_over_time(vdi_host_memory_available_bytes[1h]) / last_over_time(vdi_host_memory_total_bytes[1h]) "
           "< 0.1"),
    "sessions of every group, not the one asked for": (
        2, 'sum by (state) (vdi_sessions{state=~"active|disconnected"})'),
    "capacity over every host with a maximum": (
        12, "sum by (delivery_group) (vdi_sessions) / sum by (delivery_group) (vdi_host_max_sessions)"),
    "p95: the slowest host's": (
        14, "max by (delivery_group) (histogram_quantile(0.95, rate(vdi_logon_duration_seconds_bucket[1h])))"),
    "phases: averages of the hosts' averages (NaN from a host without logons)": (
        15, 'avg by (phase) (rate(vdi_logon_phase_seconds_sum{delivery_group="Office"}[1h]) '
            '/ rate(vdi_logon_phase_seconds_count{delivery_group="Office"}[1h]))'),
    "failed-logon ratio over successes, not attempts": (
        17, "sum by (delivery_group) (increase(vdi_logon_failures_total[1h])) "
            "/ sum by (delivery_group) (increase(vdi_logon_successes_total[1h]))"),
    "disconnects since the agents started": (18, "sum by (reason) (vdi_session_disconnect_reasons_total)"),
    "free slots of every host with a maximum": (
        11, "sum by (delivery_group) (vdi_host_max_sessions) - sum by (delivery_group) (vdi_sessions)"),
    # what a plain sum counted when a replica kept serving a silent host's last readings
    "sessions of silent hosts and stale copies too": (
        1, 'sum by (state) (last_over_time(vdi_sessions{state=~"active|disconnected"}[1h]))'),
}


# Other right answers the cookbook names beside its query: each must pass the same check.
ALSO_RIGHT: Dict[str, Tuple[int, str]] = {
    "logons: the recording rule (each host's freshest copy stitched into one counter)": (
        13, "delivery_group:vdi_session_logons:increase1h"),
    "CPU: over 90 % at any moment, from the recording rule": (
        8, "max_over_time(host:vdi_host_cpu_utilization:ratio_rate5m[1h]) > 0.9"),
}


# ---------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------


def test_every_question_has_a_check() -> None:
    assert sorted(QUESTIONS) == sorted(CHECKS), "a question of docs/cookbook.md without a check here, or the reverse"
    assert len(QUESTIONS) >= 20


def test_every_name_a_query_reads_exists() -> None:
    """Metrics of docs/metrics.md (a histogram's or summary's by its base name), recording rules of the project."""
    metrics_doc = (ROOT / "docs" / "metrics.md").read_text()
    recording = (ROOT / "config" / "prometheus" / "rules" / "vdiwatch-recording.yml").read_text()
    rules = set(re.findall(r"^\s*- record: (\S+)", recording, flags=re.M))
    for q in QUESTIONS.values():
        for name in re.findall(r"\b(vdi_\w+|\w+:\w+:\w+)\b", q.query):
            if ":" in name:
                assert name in rules, f"question {q.number} reads {name}, which no recording rule records"
            else:
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert f"`{name}`" in metrics_doc or f"`{base}`" in metrics_doc, \
                    f"question {q.number} reads {name}, which docs/metrics.md does not list"


@pytest.mark.slow
@pytest.mark.needs_tool
@pytest.mark.parametrize("number", sorted(QUESTIONS))
def test_the_cookbook_answer_equals_the_farm(env: Env, number: int) -> None:
    q = QUESTIONS[number]
    rows = env.ask(q.query)
    CHECKS[number](env, rows)


@pytest.mark.slow
@pytest.mark.needs_tool
@pytest.mark.parametrize("what", sorted(WRONG))
def test_a_wrong_query_fails_the_check(env: Env, what: str) -> None:
    number, query = WRONG[what]
    try:
        rows = env.ask(query)
    except AssertionError:
        pytest.fail(f"the wrong query for question {number} does not even run: {query}")
    with pytest.raises(AssertionError) as failed:
        CHECKS[number](env, rows)
    print(f"\n{what}: {str(failed.value).splitlines()[0][:300]}")


@pytest.mark.slow
@pytest.mark.needs_tool
@pytest.mark.parametrize("what", sorted(ALSO_RIGHT))
def test_another_right_query_passes_the_check(env: Env, what: str) -> None:
    number, query = ALSO_RIGHT[what]
    CHECKS[number](env, env.ask(query))


@pytest.mark.slow
@pytest.mark.needs_tool
def test_the_failed_over_host_is_on_both_replicas(env: Env) -> None:
    """What makes the answers above a test of counting across replicas."""
    rows = env.prom.query(f'vdi_host_state{{host="{FAILOVER}"}} == 1')
    assert sorted(r["metric"]["state"] for r in rows) == ["stale", "up"]
    info = env.prom.query(f'vdi_agent_info{{host="{FAILOVER}"}}')
    assert sorted(r["metric"]["version"] for r in info) == [OLD, CURRENT]
    assert env.farm.by_name(FAILOVER).sessions, "the failed-over host has sessions"
    on_a = [p.doc["readings"]["sessions"]["logons_total"] for p in env.truth.posts[FAILOVER] if p.replica == "a"]
    on_b = [p.doc["readings"]["sessions"]["logons_total"] for p in env.truth.posts[FAILOVER] if p.replica == "b"]
    assert on_a[-1] > on_a[0] and on_b[-1] > on_b[0], "the failed-over host took logons on both replicas"


@pytest.mark.slow
@pytest.mark.needs_tool
def test_feeder_saw_no_unexpected_answers(env: Env) -> None:
    assert not env.feeder.errors, env.feeder.errors[:5]
