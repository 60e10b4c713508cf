"""The pywin32 layer on a fake win32evtlog: values rendered through the context, XML when it cannot be made."""

from __future__ import annotations

from typing import Any, List

from agent.logons.eventlog import Win32EventLogReader
from agent.logons.events import event_from_values, parse_event
from tests.agent.logons.fixtures import event_xmls, rendered_values


class FakeEvt:
    """The few win32evtlog names the reader uses; events are the fixture's, rendered as EvtRender would."""

    EvtQueryChannelPath, EvtQueryForwardDirection, EvtQueryReverseDirection = 1, 0x100, 0x200
    EvtSeekRelativeToBookmark = 4
    EvtRenderEventValues, EvtRenderEventXml, EvtRenderBookmark = 0, 1, 2

    def __init__(self, xmls: List[str]) -> None:
        self.xmls = xmls
        self.renders: List[Any] = []

    def EvtQuery(self, _channel, _flags, _query):  # noqa: N802 - pywin32's names
        return iter(range(len(self.xmls)))

    def EvtNext(self, q, count, _timeout):  # noqa: N802
        return tuple(x for _, x in zip(range(count), q))

    def EvtCreateBookmark(self, _xml):  # noqa: N802
        return {"at": None}

    def EvtUpdateBookmark(self, mark, handle):  # noqa: N802
        mark["at"] = handle

    def EvtRender(self, handle, flags, Context=None):  # noqa: N802, N803
        self.renders.append((flags, Context))
        if flags == self.EvtRenderBookmark:
            return f"<BookmarkList at='{handle['at']}'/>"
        if flags == self.EvtRenderEventValues:
            assert Context == 77
            return rendered_values(self.xmls[handle])
        return self.xmls[handle]


def test_events_are_rendered_as_values_through_the_context():
    xmls = event_xmls("rds_host_sessions.xml")
    evt = FakeEvt(xmls)
    reader = Win32EventLogReader(evt, make_context=lambda: 77)
    items, mark, skipped = reader.read("Security", "*", None, 5)
    assert reader.decode is event_from_values and skipped == len(xmls) - 5 and mark == "<BookmarkList at='10'/>"
    assert [reader.decode(i) for i in items] == [parse_event(x) for x in xmls[:5]]
    assert {f for f, _ in evt.renders[:-1]} == {evt.EvtRenderEventValues}  # no XML was made


def test_without_a_context_the_reader_falls_back_to_xml_once(caplog):
    xmls = event_xmls("server_vda_sessions.xml")
    evt = FakeEvt(xmls)
    calls = []

    def broken():
        calls.append(1)
        raise OSError("wevtapi.dll not found")

    reader = Win32EventLogReader(evt, make_context=broken)
    items, _, _ = reader.read("Security", "*", None, 100)
    reader.read("Security", "*", None, 100)
    assert reader.decode is parse_event and items == xmls
    assert len(calls) == 1 and len([m for m in caplog.messages if "rendering XML instead" in m]) == 1
