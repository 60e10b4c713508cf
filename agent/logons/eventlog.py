"""Reading new events from Windows event log channels: the thin pywin32 layer and the bookmark file.

`Win32EventLogReader` is the only code that touches `win32evtlog` (pywin32), and
stays thin: query, seek after the bookmark, render each event, render the new bookmark.
Events are rendered as the few values used (`EvtRenderEventValues` with a render
context of agent.logons.events.VALUE_PATHS) rather than as XML that would then be
parsed: XML and its parsing cost about 50 microseconds an event (docs/performance.md).
pywin32's EvtCreateRenderContext takes no value paths (it passes none: "EvtRenderContextValues
not currently supported"), so that one call is made through ctypes and its handle given
to pywin32's EvtRender, which accepts a plain integer handle. If it cannot be made, the
reader renders XML, as before, and says so once.
Every decision (which channels and event ids, the cap, what a first start
reads) is in agent.collectors.logons and tested on Linux with a fake reader.
win32evtlog is imported on first use, so this module imports anywhere.

pywin32's calls, as its stubs (types-pywin32) declare them: EvtQuery(Path, Flags, Query),
EvtNext(ResultSet, Count, Timeout) -> tuple of handles (empty at the end),
EvtSeek(ResultSet, Position, Flags, Bookmark), EvtRender(Event, Flags),
EvtCreateBookmark(xml or None), EvtUpdateBookmark(Bookmark, Event); EvtRender(Event, EvtRenderEventValues,
Context=handle) returns a list of (value, EvtVarType) pairs in the context's order (pywin32's win32evtlog.i).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple

from agent.logons.events import VALUE_PATHS, Event, event_from_values, parse_event
from contract.atomicfile import replace_file

log = logging.getLogger(__name__)
EVT_RENDER_CONTEXT_VALUES = 0  # EVT_RENDER_CONTEXT_FLAGS.EvtRenderContextValues (winevt.h)

FROM_START = ""  # a bookmark meaning "from the channel's first event" (the channel was empty when first seen)


def xpath(event_ids: Sequence[int]) -> str:
    """The structured-query filter for these event ids: `*[System[(EventID=21 or EventID=22)]]`."""
    return "*[System[(" + " or ".join(f"EventID={i}" for i in event_ids) + ")]]"


class EventLogReader(Protocol):
    def newest(self, channel: str, query: str) -> Optional[str]:
        """A bookmark at the newest event matching `query`, None when there is none."""

    def read(self, channel: str, query: str, bookmark: Optional[str], limit: int) -> Tuple[List[Any], str, int]:
        """Events after `bookmark` (from the first when None): up to `limit` rendered (as XML unless the reader
        has a `decode` for what it renders), the bookmark after the last event read or passed over, and how many
        were passed over beyond `limit`."""


def values_context() -> int:
    """A render context of VALUE_PATHS, through wevtapi itself (pywin32 cannot pass value paths)."""
    import ctypes

    wevtapi = ctypes.WinDLL("wevtapi.dll", use_last_error=True)  # type: ignore[attr-defined]
    create = wevtapi.EvtCreateRenderContext
    create.restype = ctypes.c_void_p
    create.argtypes = (ctypes.c_uint32, ctypes.POINTER(ctypes.c_wchar_p), ctypes.c_uint32)
    paths = (ctypes.c_wchar_p * len(VALUE_PATHS))(*VALUE_PATHS)
    handle = create(len(VALUE_PATHS), paths, EVT_RENDER_CONTEXT_VALUES)
    if not handle:
        raise ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined]
    return int(handle)


class Win32EventLogReader:
    """The real reader, through pywin32's win32evtlog (Windows Vista and later's wevtapi).

    `decode` turns what `read` returns into an Event: event_from_values while events are rendered as values,
    parse_event once the reader has fallen back to XML.
    """

    def __init__(self, evt: Any = None, values: bool = True,
                 make_context: Callable[[], int] = values_context) -> None:
        self._evt = evt
        self._values = values
        self._make_context = make_context
        self._context: Optional[int] = None
        self.decode: Callable[[Any], Optional[Event]] = event_from_values if values else parse_event

    def _render(self, handle: Any) -> Any:
        e = self.evt
        if self._values and self._context is None:
            try:
                self._context = self._make_context()
            except Exception as err:  # noqa: BLE001 - no wevtapi context: XML still works, only slower
                log.warning("logons: events cannot be rendered as values (%s): rendering XML instead", err)
                self._values = False
                self.decode = parse_event
        if self._values:
            return e.EvtRender(handle, e.EvtRenderEventValues, Context=self._context)
        return e.EvtRender(handle, e.EvtRenderEventXml)

    @property
    def evt(self) -> Any:
        if self._evt is None:
            import win32evtlog  # pywin32: Windows only

            self._evt = win32evtlog
        return self._evt

    def newest(self, channel: str, query: str) -> Optional[str]:
        e = self.evt
        q = e.EvtQuery(channel, e.EvtQueryChannelPath | e.EvtQueryReverseDirection, query)
        handles = e.EvtNext(q, 1, 0)
        if not handles:
            return None
        bookmark = e.EvtCreateBookmark(None)
        e.EvtUpdateBookmark(bookmark, handles[0])
        return e.EvtRender(bookmark, e.EvtRenderBookmark)

    def read(self, channel: str, query: str, bookmark: Optional[str], limit: int) -> Tuple[List[str], str, int]:
        e = self.evt
        q = e.EvtQuery(channel, e.EvtQueryChannelPath | e.EvtQueryForwardDirection, query)
        mark = e.EvtCreateBookmark(bookmark or None)
        if bookmark:
            try:
                e.EvtSeek(q, 1, e.EvtSeekRelativeToBookmark, mark)
            except Exception as err:  # noqa: BLE001 - the bookmarked event is gone (log cleared or wrapped)
                log.warning("%s: bookmark no longer in the log (%s); reading from its first event", channel, err)
                q = e.EvtQuery(channel, e.EvtQueryChannelPath | e.EvtQueryForwardDirection, query)
        xmls: List[Any] = []
        skipped = 0
        moved = False
        while True:
            handles = e.EvtNext(q, 64, 0)
            if not handles:
                break
            for h in handles:
                if len(xmls) < limit:
                    xmls.append(self._render(h))
                else:
                    skipped += 1
                e.EvtUpdateBookmark(mark, h)
                moved = True
        return xmls, e.EvtRender(mark, e.EvtRenderBookmark) if moved else (bookmark or FROM_START), skipped


class BookmarkStore:
    """Bookmarks by channel in one JSON file, replaced whole (a temporary file, then a rename)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> Dict[str, str]:
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            log.warning("logon bookmarks in %s cannot be read (%s): starting from the newest events", self.path, err)
            return {}
        if not isinstance(doc, dict):
            return {}
        return {k: v for k, v in doc.items() if isinstance(k, str) and isinstance(v, str)}

    def save(self, bookmarks: Dict[str, str]) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        replace_file(self.path, json.dumps(bookmarks, sort_keys=True).encode("utf-8"))


def default_bookmark_path() -> str:
    """%ProgramData%\\vdiwatch\\logon-bookmarks.json: the service's own data folder."""
    return os.path.join(os.environ.get("ProgramData", r"C:\ProgramData"), "vdiwatch", "logon-bookmarks.json")
