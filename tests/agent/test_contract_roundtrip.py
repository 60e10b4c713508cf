"""The JSON shape is written once: `parse_report(report_to_doc(r)) == r` for what the agent builds,
for every fixture report, and for generated reports; the runner's and the contract's examples hold."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agent.runner
import contract.report
from agent import collectors
from agent.runner import agent_info, build_report
from agent.sim import Simulation
from agent.simfarm import Farm
from contract.report import (
    DISCONNECT_REASONS,
    EXPERIENCE_PROTOCOLS,
    INPUT_DELAY_BUCKETS,
    LOGON_DURATION_BUCKETS,
    LOGON_FAILURE_REASONS,
    LOGON_PHASES,
    RTT_BUCKETS,
    SESSION_PROTOCOLS,
    SESSION_STATES,
    AppUsage,
    Capacity,
    CollectorStatus,
    Disk,
    Experience,
    Filesystem,
    Histogram,
    Interface,
    Load,
    Logons,
    Memory,
    ProcessGroup,
    ProtocolExperience,
    Report,
    SessionEntry,
    Sessions,
    System,
    UserUsage,
    cpu_times,
    parse_report,
    report_to_doc,
    session_counts,
    sorted_statuses,
)
from tests.agent import fakepsutil
from tests.agent.sessions.fakes import logind_collector, utmp_collector, windows_collector
from tests.conftest import FIXTURES

HOST_COLLECTORS = ("cpu", "load", "memory", "filesystems", "disks", "interfaces", "system")


def round_trip(report: Report) -> Report:
    return parse_report(json.loads(json.dumps(report_to_doc(report))))


def built(readings: dict) -> Report:
    return build_report(host="vda-test-01", site="City Hall", delivery_group="Office", timestamp=1796083200.0,
                        agent=agent_info(interval=15.0, start_time=1796080000.0, os="linux", os_release="x"),
                        statuses=[CollectorStatus(n, True, 0.001) for n in readings], readings=readings)


@pytest.mark.parametrize("path", sorted((FIXTURES / "reports").glob("*.json")), ids=lambda p: p.stem)
def test_every_fixture_report_survives_the_round_trip(path: Path) -> None:
    report = parse_report(json.loads(path.read_text(encoding="utf-8")))
    assert round_trip(report) == report
    assert report_to_doc(round_trip(report)) == report_to_doc(report)


@pytest.mark.parametrize("fixture", ["linux", "windows"])
def test_what_the_host_collectors_read_survives_the_round_trip(fixture: str) -> None:
    ctx = fakepsutil.context(fakepsutil.load(fixture))
    readings, statuses = collectors.Runner([c for c in collectors.build(ctx) if c.name in HOST_COLLECTORS]).run_all()
    assert set(readings) == set(HOST_COLLECTORS) and all(s.success for s in statuses.values())
    report = built(readings)
    assert round_trip(report) == report


@pytest.mark.parametrize("source", ["windows", "logind", "utmp"])
def test_what_the_sessions_collector_reads_survives_the_round_trip(source: str, tmp_path: Path) -> None:
    collector = {"windows": lambda: windows_collector(per_user_top=3)[0], "logind": lambda: logind_collector(tmp_path),
                 "utmp": lambda: utmp_collector(tmp_path)}[source]()
    for _ in range(2):  # the second reading has CPU rates, so top users
        report = built({"sessions": collector.collect()})
        assert report.sessions.source == source and round_trip(report) == report
        assert report.sessions.apps and report.sessions.apps[-1].app == "other"  # per-application use, on by default


def test_what_the_simulator_sends_survives_the_round_trip() -> None:
    farm = Farm.build(12, seed=3)
    sim = Simulation(farm, ["http://127.0.0.1:9"], start=1796083200.0 - 86400 + 10 * 3600, clock=lambda: 1796083200.0)
    try:
        farm.step(sim.sim_now())
        for h in farm.hosts:
            report = sim.report(h, sim.sim_now(), 1796083200.0)
            assert round_trip(report) == report
    finally:
        sim.pool.shutdown()


counter = st.integers(min_value=0, max_value=2**53)
seconds = st.floats(min_value=0.0, max_value=1e9, allow_nan=False)
label = st.text(st.characters(min_codepoint=32, max_codepoint=0x2000, blacklist_characters="\x7f\x85\u2028\u2029",
                              blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)
optional_time = st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e11, allow_nan=False))


@st.composite
def memory(draw) -> Memory:
    total = draw(counter)
    return Memory(total, draw(st.integers(0, total)), draw(counter), draw(counter))


def unique(items: st.SearchStrategy, key) -> st.SearchStrategy:
    return st.lists(items, max_size=4, unique_by=key).map(tuple)


@st.composite
def sessions(draw) -> Sessions:
    pairs = [(s, p) for s in SESSION_STATES for p in SESSION_PROTOCOLS]
    found = draw(st.dictionaries(st.sampled_from(pairs), st.integers(0, 10**6), max_size=6))
    group = st.one_of(st.none(), st.builds(ProcessGroup, seconds, counter, st.integers(0, 10**7)))
    return Sessions(
        source=draw(st.sampled_from(contract.report.SESSION_SOURCES)), counts=session_counts(found),
        users=draw(st.integers(0, 10**6)), total=draw(st.integers(0, 10**6)), truncated=draw(st.booleans()),
        oldest_disconnect_time_seconds=draw(optional_time), logons_total=draw(counter),
        logoffs_total=draw(counter), disconnects_total=draw(counter), reconnects_total=draw(counter),
        entries=tuple(draw(st.lists(st.builds(
            SessionEntry, st.text("0123456789abc", min_size=1, max_size=8), optional_time,
            st.sampled_from(SESSION_STATES), st.sampled_from(SESSION_PROTOCOLS), st.one_of(st.just(""), label),
            st.one_of(st.none(), seconds)), max_size=4))),
        user_processes=draw(group), system_processes=draw(group),
        top_users=draw(st.one_of(st.none(), st.lists(st.builds(
            UserUsage, label, st.floats(0.0, 65536.0), counter), max_size=3).map(tuple))),
        apps=draw(st.one_of(st.none(), unique(st.builds(AppUsage, label, seconds, counter, st.integers(0, 10**6)),
                                              key=lambda a: a.app))),
    )


@st.composite
def logons(draw) -> Logons:
    """A logons reading as an agent sends it: every phase and reason, and the newer fields present or not."""
    per_bucket = draw(st.lists(st.integers(0, 1000), min_size=len(LOGON_DURATION_BUCKETS) + 1,
                               max_size=len(LOGON_DURATION_BUCKETS) + 1))
    cumulative = tuple(sum(per_bucket[:i + 1]) for i in range(len(LOGON_DURATION_BUCKETS)))

    def counts(names):
        return tuple((n, draw(st.integers(0, 10**9))) for n in names)

    return Logons(
        duration_buckets=cumulative, duration_sum_seconds=draw(seconds), duration_count=sum(per_bucket),
        phase_sum_seconds=tuple((p, draw(seconds)) for p in LOGON_PHASES), phase_count=counts(LOGON_PHASES),
        phases_missing=counts(LOGON_PHASES), failures=counts(LOGON_FAILURE_REASONS),
        events_skipped=draw(st.integers(0, 10**9)),
        successes=draw(st.one_of(st.none(), st.integers(0, 10**9))),
        disconnect_reasons=draw(st.one_of(st.none(), st.builds(lambda: counts(DISCONNECT_REASONS)))),
    )


@st.composite
def histogram(draw, bounds) -> Histogram:
    per_bucket = draw(st.lists(st.integers(0, 10**6), min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    cumulative = tuple(sum(per_bucket[:i + 1]) for i in range(len(bounds)))
    return Histogram(cumulative, draw(seconds), sum(per_bucket))


@st.composite
def experience(draw) -> Experience:
    present = draw(st.lists(st.sampled_from(EXPERIENCE_PROTOCOLS), unique=True))
    return Experience(
        input_delay=draw(st.one_of(st.none(), histogram(INPUT_DELAY_BUCKETS))),
        protocols=tuple(ProtocolExperience(p, draw(histogram(RTT_BUCKETS)), draw(counter), draw(counter))
                        for p in EXPERIENCE_PROTOCOLS if p in present))


readings = st.fixed_dictionaries({}, optional={
    "cpu": st.builds(cpu_times, st.integers(1, 65536),
                     st.dictionaries(st.text("abcdefgh_", min_size=1, max_size=8), seconds, max_size=8)),
    "load": st.builds(Load, st.floats(0, 1e6), st.floats(0, 1e6), st.floats(0, 1e6)),
    "memory": memory(),
    "filesystems": unique(st.builds(Filesystem, label, label, st.one_of(st.just(""), label), counter, counter),
                          key=lambda f: f.mountpoint),
    "disks": unique(st.builds(Disk, label, counter, counter, counter, counter, seconds), key=lambda d: d.device),
    "interfaces": unique(st.builds(Interface, label, *[counter] * 8), key=lambda i: i.interface),
    "system": st.builds(System, seconds, st.integers(0, 10**7)),
    "sessions": sessions(),
    "capacity": st.builds(Capacity, st.one_of(st.none(), st.integers(1, 10**6)), st.booleans(), st.booleans()),
    "logons": logons(),
    "experience": experience(),
})


@settings(max_examples=150, deadline=None)
@given(readings, st.booleans(), st.lists(st.tuples(st.text("abcdefghij", min_size=1, max_size=10), st.booleans(),
                                                   st.floats(0.0, 3600.0)), max_size=5, unique_by=lambda t: t[0]))
def test_generated_reports_survive_the_round_trip(parts: dict, goodbye: bool, statuses: list) -> None:
    report = Report(schema_version=1, host="vda-01", site="City Hall", delivery_group="Office",
                    timestamp_seconds=1796083200.5, goodbye=goodbye,
                    agent=agent_info(interval=15.0, start_time=1796080000.0, os="windows", os_release=""),
                    collectors=sorted_statuses(CollectorStatus(*s) for s in statuses), **parts)
    assert round_trip(report) == report


@pytest.mark.parametrize("module", [agent.runner, contract.report])
def test_docstring_examples(module) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
