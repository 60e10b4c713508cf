"""The logons collector on a fake event log fed with the documented fixtures: bookmarks, restart, cap."""

from __future__ import annotations

import json
import re
from typing import Dict, List, Optional, Tuple

import pytest

from agent.collectors.logons import CHANNELS, LogonsCollector
from agent.logons.eventlog import BookmarkStore, xpath
from agent.logons.events import parse_event
from tests.agent.logons.fixtures import event_xmls

LATER = 1764576000.0 + 86400  # every fixture logon has settled


class FakeEventLog:
    """Channels as lists of (record id, xml); a bookmark is the record id as text, as opaque as the real one."""

    def __init__(self) -> None:
        self.channels: Dict[str, List[Tuple[int, str]]] = {}
        self.queries: List[Tuple[str, str]] = []

    def append(self, *names: str) -> None:
        for name in names:
            for xml in event_xmls(name):
                e = parse_event(xml)
                channel = xml.split("<ns0:Channel>", 1)[1].split("<", 1)[0]
                self.channels.setdefault(channel, []).append((e.record_id, xml))
        for events in self.channels.values():
            events.sort()

    def _matching(self, channel: str, query: str) -> List[Tuple[int, str]]:
        ids = set(re.findall(r"EventID=(\d+)", query))
        return [(r, x) for r, x in self.channels.get(channel, [])
                if re.search(r"<ns0:EventID>(\d+)<", x) is None or re.search(r"<ns0:EventID>(\d+)<", x)[1] in ids]

    def newest(self, channel: str, query: str) -> Optional[str]:
        self.queries.append((channel, query))
        events = self._matching(channel, query)
        return str(events[-1][0]) if events else None

    def read(self, channel: str, query: str, bookmark: Optional[str], limit: int) -> Tuple[List[str], str, int]:
        self.queries.append((channel, query))
        after = int(bookmark) if bookmark else -1
        new = [(r, x) for r, x in self._matching(channel, query) if r > after]
        if not new:
            return [], bookmark or "", 0
        return [x for _, x in new[:limit]], str(new[-1][0]), max(0, len(new) - limit)


def collector(log: FakeEventLog, tmp_path, cap: int = 2000) -> LogonsCollector:
    return LogonsCollector(log, BookmarkStore(str(tmp_path / "bookmarks.json")), clock=lambda: LATER, cap=cap)


def started(tmp_path, cap: int = 2000) -> Tuple[FakeEventLog, LogonsCollector]:
    """A collector that has seen every channel once while it was empty: everything appended later is new."""
    log = FakeEventLog()
    c = collector(log, tmp_path, cap)
    c.collect()
    return log, c


def test_queries_ask_only_for_the_event_ids_used(tmp_path):
    log, _ = started(tmp_path)
    assert {q for _, q in log.queries} == {xpath(ids) for _, ids in CHANNELS}
    assert xpath((21, 22)) == "*[System[(EventID=21 or EventID=22)]]"
    assert dict(CHANNELS)["Security"] == (4624, 4625)


def test_logons_and_failures_from_the_fixtures(tmp_path):
    log, c = started(tmp_path)
    log.append("server_vda.xml", "rds_host.xml")
    r = c.collect()
    assert (r.duration_count, r.duration_sum_seconds) == (2, 121.0)
    assert r.duration_buckets == (0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2)  # 20 s at le=20, 101 s at le=120
    assert dict(r.phase_sum_seconds) == {"profile": 103.5, "group_policy": 6.0, "shell": 10.0, "other": 1.5}
    assert dict(r.phase_count) == {"profile": 2, "group_policy": 2, "shell": 2, "other": 2}
    assert dict(r.failures) == {"bad_password": 1, "unknown_user": 1, "locked_out": 1, "expired": 1, "disabled": 1,
                                "restricted": 1, "other": 1}
    assert r.events_skipped == 0 and c.unreadable == 0


def test_successes_and_disconnect_reasons_from_the_session_fixtures(tmp_path):
    log, c = started(tmp_path)
    log.append("server_vda_sessions.xml", "desktop_vda_sessions.xml", "rds_host_sessions.xml")
    r = c.collect()
    # carol and dan (type 10), erin (cached, 11), hank (10); not DWM-n, UMFD-n, a network logon (3), an unlock (7)
    assert r.successes == 4
    assert dict(r.failures)["bad_password"] == 4  # the denominator's partner: 4 failed, 4 succeeded
    # a logoff's event 40 (reasons 12 and 2) is not a disconnect
    assert dict(r.disconnect_reasons) == {"client": 1, "time_limit": 2, "replaced": 1, "network": 1, "server": 1,
                                          "licensing": 1, "other": 1}
    assert c.unreadable == 0


def test_a_missing_phase_is_counted_missing(tmp_path):
    log, c = started(tmp_path)
    log.append("desktop_vda.xml")
    r = c.collect()
    assert dict(r.phases_missing) == {"profile": 0, "group_policy": 1, "shell": 0, "other": 1}
    assert dict(r.phase_count)["group_policy"] == 0


def test_a_first_start_does_not_count_history(tmp_path):
    log = FakeEventLog()
    log.append("server_vda.xml", "rds_host.xml")
    c = collector(log, tmp_path)
    assert c.collect().duration_count == 0
    assert c.collect().duration_count == 0 and sum(n for _, n in c.collect().failures) == 0


def test_a_restart_neither_loses_nor_double_counts(tmp_path):
    log, c = started(tmp_path)
    log.append("server_vda.xml")
    assert c.collect().duration_count == 2
    saved = json.loads((tmp_path / "bookmarks.json").read_text())
    assert saved["Microsoft-Windows-TerminalServices-LocalSessionManager/Operational"] == "206"  # event 40 read
    log.append("rds_host.xml", "rds_host_sessions.xml")  # written while the agent was down (later record ids)
    again = collector(log, tmp_path)  # a new process: counters from 0, bookmarks from the file
    r = again.collect()
    assert r.duration_count == 0  # the logons were counted by the previous process
    assert dict(r.disconnect_reasons)["replaced"] == 0  # and so was session 3's disconnect
    assert sum(n for _, n in r.failures) == 10  # the failures written while it was down are not lost
    assert (r.successes, sum(n for _, n in r.disconnect_reasons)) == (1, 3)  # nor the logon and disconnects


def test_the_cap_passes_over_the_rest_and_counts_it(tmp_path):
    log, c = started(tmp_path, cap=3)
    log.append("rds_host.xml")  # 7 failures and a shell start in Security and LocalSessionManager
    r = c.collect()
    assert sum(n for _, n in r.failures) == 3
    assert r.events_skipped == 4
    assert c.collect().events_skipped == 4  # passed over once, not read later


def test_a_bookmark_that_cannot_be_saved_counts_nothing_and_reads_again(tmp_path):
    log, c = started(tmp_path)
    log.append("rds_host.xml")

    def full(_bookmarks):
        raise OSError("disk full")

    c.store.save = full
    with pytest.raises(OSError):
        c.collect()
    del c.store.save
    assert sum(n for _, n in c.collect().failures) == 7


def test_an_unparsable_event_is_counted(tmp_path):
    log, c = started(tmp_path)
    log.channels["Security"] = [(1, "<Event>")]
    c.collect()
    assert c.unreadable == 1


def test_not_built_off_windows():
    from agent.collectors import Context
    from tests.agent import fakepsutil

    with pytest.raises(RuntimeError, match="Windows event logs"):
        LogonsCollector.from_context(Context(psutil=fakepsutil.load("linux"), os="linux"))


def test_a_channel_that_cannot_be_read_costs_only_its_own_events(tmp_path, caplog):
    log, c = started(tmp_path)
    log.append("server_vda.xml", "rds_host.xml")
    real = log.read

    def no_security(channel, *args):
        if channel == "Security":
            raise PermissionError("access denied")
        return real(channel, *args)

    log.read = no_security
    r = c.collect()
    c.collect()
    assert r.duration_count == 2 and sum(n for _, n in r.failures) == 0
    assert [m for m in caplog.messages if "cannot read Security" in m] != [] and len(caplog.messages) == 1
    log.read = real
    assert sum(n for _, n in c.collect().failures) == 7  # read from its own bookmark once it can be again
    assert "Security can be read again" in caplog.messages[-1]


def test_no_channel_at_all_fails_the_collector(tmp_path):
    log, c = started(tmp_path)

    def broken(*_args):
        raise OSError("EvtQuery")

    log.read = broken
    with pytest.raises(RuntimeError, match="no event log channel can be read"):
        c.collect()


def test_the_rds_fixture_report_carries_this_collectors_reading(tmp_path):
    """tests/fixtures/reports/rdsh-03-maintenance.json (golden file, status page) holds what this collector reads."""
    from contract.report import parse_report
    from tests.agent.logons.fixtures import FIXTURES

    log, c = started(tmp_path)
    log.append("server_vda.xml", "rds_host.xml", "rds_host_sessions.xml")
    doc = json.loads((FIXTURES.parent / "reports" / "rdsh-03-maintenance.json").read_text())
    assert parse_report(doc).logons == c.collect()


def test_an_administrators_split_token_pair_counts_once_and_unlocks_and_network_logons_not_at_all(tmp_path):
    log, c = started(tmp_path)
    log.append("admin_vda_security.xml")
    r = c.collect()
    assert r.successes == 3  # ladmin (two linked 4624s), frank (type 12), the built-in Administrator
    assert sum(n for _, n in r.failures) == 1 and dict(r.failures)["bad_password"] == 1  # gina's, type 10 only
    assert c.unreadable == 0
