"""Performance counters through PDH: the thin pywin32 layer.

`Win32Pdh` is the only code that touches `win32pdh` (pywin32), and stays thin:
open one query, add counters by their English paths, collect, read each
counter's values by instance, close. Every decision (which counters, what a
missing counter set means, units, instances to sessions) is in
agent.experience.counters and agent.collectors.experience, tested on Linux with
a fake. win32pdh is imported on first use, so this module imports anywhere.

pywin32's calls (win32/src/win32pdhmodule.cpp; Microsoft Learn's pdh.h pages for the C functions):
OpenQuery(DataSource=None, userData=0) -> query handle; AddEnglishCounter(hQuery, path, userData=0) ->
counter handle (Vista and later; PdhAddEnglishCounter fails when the object or counter is not on the
machine, but not for a missing instance); CollectQueryData(hQuery); GetFormattedCounterArray(hCounter,
format) -> dict {instance name: value}, raising when PDH has no valid data (a rate counter after one
collection) or, as the binding is written, no instance; CloseQuery(hQuery). Each failure raises
pywintypes.error.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Protocol, Sequence

log = logging.getLogger(__name__)


class CounterReader(Protocol):
    """One query kept open between intervals: rates need two collections."""

    def add(self, paths: Sequence[str]) -> Dict[str, str]:
        """Add counters by English path; the paths that could not be added, with why."""

    def collect(self) -> Dict[str, Dict[str, float]]:
        """Collect once; every added path's values by instance (empty: no valid value this time)."""

    def close(self) -> None:
        """Close the query."""


class Win32Pdh:
    """The real reader, through pywin32's win32pdh (`pdh`: the module, or a fake with its functions)."""

    def __init__(self, pdh: Any = None) -> None:
        self._pdh = pdh
        self._query: Optional[Any] = None
        self._counters: Dict[str, Any] = {}

    @property
    def pdh(self) -> Any:
        if self._pdh is None:
            import win32pdh  # pywin32: Windows only

            self._pdh = win32pdh
        return self._pdh

    def add(self, paths: Sequence[str]) -> Dict[str, str]:
        if self._query is None:
            self._query = self.pdh.OpenQuery(None, 0)
        failed = {}
        for path in paths:
            try:
                self._counters[path] = self.pdh.AddEnglishCounter(self._query, path, 0)
            except Exception as err:  # noqa: BLE001 - pywintypes.error: object or counter not on this machine
                failed[path] = f"{type(err).__name__}: {err}"
        return failed

    def collect(self) -> Dict[str, Dict[str, float]]:
        if self._query is None:
            return {}
        self.pdh.CollectQueryData(self._query)
        out: Dict[str, Dict[str, float]] = {}
        fmt = self.pdh.PDH_FMT_DOUBLE
        for path, counter in self._counters.items():
            try:
                out[path] = dict(self.pdh.GetFormattedCounterArray(counter, fmt))
            except Exception as err:  # noqa: BLE001 - no valid data yet, or no instance: nothing this time
                log.debug("%s has no value this time: %s", path, err)
                out[path] = {}
        return out

    def close(self) -> None:
        if self._query is not None:
            try:
                self.pdh.CloseQuery(self._query)
            finally:
                self._query = None
                self._counters = {}
