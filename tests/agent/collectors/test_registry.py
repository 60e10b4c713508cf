"""The host collectors register under their reading names, and the runner isolates a failing one."""

from __future__ import annotations

import logging

from agent import collectors
from agent.runner import agent_info, build_report
from contract.report import parse_report, report_to_doc
from tests.agent import fakepsutil

HOST_COLLECTORS = ("cpu", "load", "memory", "filesystems", "disks", "interfaces", "system")


def test_every_host_collector_registers_under_its_reading_name() -> None:
    registry = collectors.load_all()
    ctx = fakepsutil.context(fakepsutil.load("linux"))
    for name in HOST_COLLECTORS:
        assert registry[name].default_enabled
        assert registry[name].factory(ctx).name == name


def test_build_honours_disabled_collectors() -> None:
    ctx = fakepsutil.context(fakepsutil.load("linux"))
    names = [c.name for c in collectors.build(ctx, disabled=("disks", "load"))]
    assert "disks" not in names and "load" not in names
    assert {"cpu", "memory", "filesystems", "interfaces", "system"} <= set(names)


def test_a_failing_collector_costs_its_own_reading_only(caplog) -> None:
    fake = fakepsutil.load("windows")

    def broken(*_args, **_kwargs):
        raise OSError("PDH counters are corrupt")

    fake.disk_io_counters = broken
    ctx = fakepsutil.context(fake)
    runner = collectors.Runner([c for c in collectors.build(ctx) if c.name in HOST_COLLECTORS])
    with caplog.at_level(logging.WARNING, logger="agent.collectors"):
        readings, statuses = runner.run_all()
        runner.run_all()
    assert statuses["disks"].success is False
    assert all(statuses[n].success for n in HOST_COLLECTORS if n != "disks")
    assert "disks" not in readings and set(readings) == set(HOST_COLLECTORS) - {"disks"}
    report = parse_report(report_to_doc(build_report(
        host="vda-win-01", site="City Hall", delivery_group="Office", timestamp=1796083200.0,
        agent=agent_info(interval=15.0, start_time=1796080000.0, os="windows", os_release=""),
        statuses=statuses.values(), readings=readings)))
    assert report.disks is None and report.memory is not None
    assert [c.success for c in report.collectors if c.name == "disks"] == [False]
    failures = [r for r in caplog.records if "disks failed" in r.getMessage()]
    assert len(failures) == 1 and "PDH counters are corrupt" in failures[0].getMessage()


def test_first_n_keeps_the_first_and_warns_once(caplog) -> None:
    import logging

    from agent.collectors._common import FirstN
    first = FirstN(2, "disks", logging.getLogger("test.firstn"))
    with caplog.at_level(logging.WARNING):
        assert first(["a", "b", "c"]) == ["a", "b"]
        assert first(["a", "b", "c", "d"]) == ["a", "b"]
        assert first(["a"]) == ["a"]
    assert [r.getMessage() for r in caplog.records] == ["3 disks: reporting the first 2 by name"]
