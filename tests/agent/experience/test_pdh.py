"""The thin win32pdh layer: one query kept open, English paths, one collection per call, a counter without
a valid value reads as no instance; checked against a fake with pywin32's call shapes."""

from __future__ import annotations

from typing import Any, Dict, List

from agent.experience.pdh import Win32Pdh


class FakeWin32Pdh:
    PDH_FMT_DOUBLE = 0x200

    def __init__(self, values: Dict[str, Any], missing=()) -> None:
        self.values, self.missing = values, set(missing)
        self.calls: List[tuple] = []

    def OpenQuery(self, source, user_data):  # noqa: N802 - pywin32's names
        self.calls.append(("OpenQuery", source, user_data))
        return "query"

    def AddEnglishCounter(self, query, path, user_data):  # noqa: N802
        self.calls.append(("AddEnglishCounter", query, path, user_data))
        if path in self.missing:
            raise RuntimeError("(-1073738824, 'AddEnglishCounter', 'The specified object was not found')")
        return "counter:" + path

    def CollectQueryData(self, query):  # noqa: N802
        self.calls.append(("CollectQueryData", query))

    def GetFormattedCounterArray(self, counter, fmt):  # noqa: N802
        self.calls.append(("GetFormattedCounterArray", counter, fmt))
        value = self.values[counter.split(":", 1)[1]]
        if isinstance(value, Exception):
            raise value
        return value

    def CloseQuery(self, query):  # noqa: N802
        self.calls.append(("CloseQuery", query))


def test_one_query_english_paths_and_double_values() -> None:
    fake = FakeWin32Pdh({r"\A(*)\x": {"1": 16.0}, r"\B(*)\y": RuntimeError("PDH_INVALID_DATA")},
                        missing=[r"\C(*)\z"])
    pdh = Win32Pdh(fake)
    assert list(pdh.add([r"\A(*)\x", r"\B(*)\y", r"\C(*)\z"])) == [r"\C(*)\z"]
    assert pdh.collect() == {r"\A(*)\x": {"1": 16.0}, r"\B(*)\y": {}}
    assert pdh.collect() == {r"\A(*)\x": {"1": 16.0}, r"\B(*)\y": {}}
    names = [c[0] for c in fake.calls]
    assert names.count("OpenQuery") == 1 and names.count("CollectQueryData") == 2
    assert ("AddEnglishCounter", "query", r"\A(*)\x", 0) in fake.calls
    assert ("GetFormattedCounterArray", r"counter:\A(*)\x", 0x200) in fake.calls
    pdh.close()
    assert fake.calls[-1] == ("CloseQuery", "query") and pdh.collect() == {}
