"""Sessions on Windows (RDS, Citrix Virtual Apps and Desktops) through the WTS API.

Two layers, as in node_exporter's collectors: `WtsApi` is the only code that
touches ctypes, and stays thin (call, copy into plain records, free); all the
decisions (which sessions to skip, state and protocol, FILETIME conversion)
are pure functions of those records, tested on Linux with a fake API fed
from tests/fixtures/sessions/wts_*.json. ctypes.WinDLL is touched only on the
first call, so this module imports anywhere.

The structures are declared once, at module level, with fixed-width types
(UTF-16 code units as c_uint16, pointers as c_void_p), so that their x64
layout is the same on Linux and is checked there against Windows' own
headers (tests/windows/test_layouts.py).

To record a real host in the fixture format (then anonymize the names; the
`raw` WTSINFOW buffers hold names too):

    python -m agent.sessions.windows > wts_<name>.json
"""

from __future__ import annotations

import ctypes
import json
import logging
import sys
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from agent.sessions.model import Session
from agent.sessions.states import OTHER, WTS_CONNECTED, WTS_LISTEN, wts_state, wts_state_name

log = logging.getLogger(__name__)

# FILETIME: 100-nanosecond intervals since 1601-01-01 UTC.
FILETIME_UNIX_EPOCH = 116444736000000000
FILETIME_PER_SECOND = 10_000_000

# WTSClientProtocolType values (WTS_INFO_CLASS documentation, Microsoft Learn).
WTS_PROTOCOL_CONSOLE = 0  # also what HDX sessions of a desktop-OS (single-session) VDA report
WTS_PROTOCOL_ICA = 1  # "retained for legacy purposes"
WTS_PROTOCOL_RDP = 2

# WTS_INFO_CLASS values used here.
WTS_CLIENT_PROTOCOL_TYPE = 16
WTS_SESSION_INFO = 24
# WTS_TYPE_CLASS, for WTSFreeMemoryExW.
WTS_TYPE_PROCESS_INFO_LEVEL0 = 0
WTS_TYPE_SESSION_INFO_LEVEL1 = 2
WTS_ANY_SESSION = 0xFFFFFFFE  # ((DWORD)-2): every session, for WTSEnumerateProcessesExW

# WF_PROTOCOL, from Citrix's WFAPI.H (the VDA's wfapi64.dll / wfapi.dll).
WF_PROTOCOL_NONE, WF_PROTOCOL_ICA, WF_PROTOCOL_RDP = 0, 1, 2

SERVICES_SESSION_ID = 0
FIRST_LISTENER_ID = 65536  # listeners get ids from 65536 up

# wtsapi32.h lengths, in UTF-16 code units.
WINSTATIONNAME_LENGTH = 32
DOMAIN_LENGTH = 17
USERNAME_LENGTH = 20

_DWORD = ctypes.c_uint32
_WCHAR = ctypes.c_uint16  # one UTF-16 code unit; ctypes.c_wchar is 4 bytes on Linux
_LPWSTR = ctypes.c_void_p  # read with ctypes.wstring_at on Windows
_LARGE_INTEGER = ctypes.c_int64


class WTS_SESSION_INFO_1W(ctypes.Structure):  # noqa: N801 - wtsapi32.h's names
    _fields_ = [("ExecEnvId", _DWORD), ("State", ctypes.c_int32), ("SessionId", _DWORD),
                ("pSessionName", _LPWSTR), ("pHostName", _LPWSTR), ("pUserName", _LPWSTR),
                ("pDomainName", _LPWSTR), ("pFarmName", _LPWSTR)]


class WTSINFOW(ctypes.Structure):
    _fields_ = [("State", ctypes.c_int32), ("SessionId", _DWORD),
                ("IncomingBytes", _DWORD), ("OutgoingBytes", _DWORD),
                ("IncomingFrames", _DWORD), ("OutgoingFrames", _DWORD),
                ("IncomingCompressedBytes", _DWORD), ("OutgoingCompressedBytes", _DWORD),
                ("WinStationName", _WCHAR * WINSTATIONNAME_LENGTH),
                ("Domain", _WCHAR * DOMAIN_LENGTH),
                ("UserName", _WCHAR * (USERNAME_LENGTH + 1)),
                ("ConnectTime", _LARGE_INTEGER), ("DisconnectTime", _LARGE_INTEGER),
                ("LastInputTime", _LARGE_INTEGER), ("LogonTime", _LARGE_INTEGER),
                ("CurrentTime", _LARGE_INTEGER)]


class WTS_PROCESS_INFOW(ctypes.Structure):  # noqa: N801
    _fields_ = [("SessionId", _DWORD), ("ProcessId", _DWORD), ("pProcessName", _LPWSTR), ("pUserSid", ctypes.c_void_p)]


STRUCTS = (WTS_SESSION_INFO_1W, WTSINFOW, WTS_PROCESS_INFOW)


def utf16_field(units: Any) -> str:
    """A fixed-length WCHAR array as text, up to its first NUL.

    >>> utf16_field((ctypes.c_uint16 * 8)(*map(ord, "RDP-Tcp")))
    'RDP-Tcp'
    """
    raw = bytes(memoryview(units).cast("B"))
    return raw.decode("utf-16-le", errors="replace").split("\0", 1)[0]


@dataclass(frozen=True)
class WtsSessionEntry:
    """One WTS_SESSION_INFO_1W from WTSEnumerateSessionsExW (names are not truncated here)."""

    session_id: int
    state: int
    session_name: str = ""
    user_name: str = ""
    domain_name: str = ""
    host_name: str = ""
    farm_name: str = ""


@dataclass(frozen=True)
class WtsSessionInfo:
    """WTSINFOW from WTSQuerySessionInformationW(WTSSessionInfo); times are raw FILETIMEs, 0 = never.

    Its UserName (20 characters) and Domain (16) are truncated by the API, so the
    names come from the enumeration instead.
    """

    state: int
    session_id: int
    win_station_name: str = ""
    domain: str = ""
    user_name: str = ""
    connect_time: int = 0
    disconnect_time: int = 0
    last_input_time: int = 0
    logon_time: int = 0
    current_time: int = 0


def parse_wtsinfo(raw: bytes) -> WtsSessionInfo:
    """A WtsSessionInfo from the bytes of a WTSINFOW (what WTSQuerySessionInformationW(WTSSessionInfo)
    returns), so that the layout is exercised on any OS; ValueError when the buffer is too short."""
    if len(raw) < ctypes.sizeof(WTSINFOW):
        raise ValueError(f"a WTSINFOW is {ctypes.sizeof(WTSINFOW)} bytes, got {len(raw)}")
    i = WTSINFOW.from_buffer_copy(raw[:ctypes.sizeof(WTSINFOW)])
    return WtsSessionInfo(state=int(i.State), session_id=int(i.SessionId),
                          win_station_name=utf16_field(i.WinStationName), domain=utf16_field(i.Domain),
                          user_name=utf16_field(i.UserName), connect_time=int(i.ConnectTime),
                          disconnect_time=int(i.DisconnectTime), last_input_time=int(i.LastInputTime),
                          logon_time=int(i.LogonTime), current_time=int(i.CurrentTime))


def filetime_to_unix(filetime: int) -> Optional[float]:
    """Unix seconds for a FILETIME; None for 0 (never) or a time before 1970.

    >>> filetime_to_unix(133774560000000000)
    1732982400.0
    """
    if not filetime or filetime <= FILETIME_UNIX_EPOCH:
        return None
    return (filetime - FILETIME_UNIX_EPOCH) / FILETIME_PER_SECOND


def idle_seconds(info: WtsSessionInfo) -> Optional[float]:
    """Seconds since the last input, from the server's own CurrentTime (no clock skew with the agent).

    None (unknown) when either time is missing, or when LastInputTime equals CurrentTime to the
    100 ns: Windows reports that for the console session, which "cannot go idle", whatever its
    user does (so do desktop-OS VDAs, whose HDX session is the console). Unknown keeps such a
    session active instead of claiming input at this very instant.
    """
    if not info.last_input_time or not info.current_time or info.last_input_time == info.current_time:
        return None
    return max(0.0, (info.current_time - info.last_input_time) / FILETIME_PER_SECOND)


def is_listener_name(name: str) -> bool:
    """A listener's name: "RDP-Tcp", "ICA-CGP"; its sessions are "RDP-Tcp#12", "ICA-CGP#3"."""
    lower = name.lower()
    return "#" not in lower and (lower.startswith("rdp-") or lower.startswith("ica-"))


def skip_reason(entry: WtsSessionEntry) -> Optional[str]:
    """Why this enumerated entry is not a user session, or None when it is one."""
    if entry.session_id == SERVICES_SESSION_ID:
        return "services session 0"
    if entry.state == WTS_LISTEN or entry.session_id >= FIRST_LISTENER_ID:
        return "listener"
    if is_listener_name(entry.session_name) and not entry.user_name:
        return "listener"
    return None


def protocol_of(session_name: str, protocol_type: Optional[int], remembered: Optional[str] = None) -> str:
    """The report protocol of a WTS session, from its WinStation name and client protocol type.

    Citrix HDX sessions of a multi-session VDA are named "ICA-CGP#n"/"ICA-TCP#n";
    protocol type 1 (ICA) makes `ica` too: that is what older VDAs report, and
    what WindowsSource substitutes when Citrix's WFAPI says a "console" session
    of a desktop-OS VDA is ICA. A disconnected session loses its name; it keeps
    the protocol seen while it was connected (`remembered`), else it is `other`.
    """
    name = session_name.lower()
    if name.startswith("ica-") or protocol_type == WTS_PROTOCOL_ICA:
        return "ica"
    if name.startswith("rdp-") or protocol_type == WTS_PROTOCOL_RDP:
        return "rdp"
    if name == "console":
        return "console"
    if remembered:
        return remembered
    return OTHER


def user_of(entry: WtsSessionEntry, info: Optional[WtsSessionInfo]) -> str:
    """ "DOMAIN\\user", or just "user", or "" when nobody is logged on."""
    user = entry.user_name or (info.user_name if info else "")
    domain = entry.domain_name or (info.domain if info else "")
    if not user:
        return ""
    return f"{domain}\\{user}" if domain else user


def session_from_wts(entry: WtsSessionEntry, info: Optional[WtsSessionInfo], protocol_type: Optional[int],
                     remembered: Optional[str] = None) -> Optional[Session]:
    """The Session for one enumerated entry, or None when it is not a user session."""
    if skip_reason(entry) is not None:
        return None
    state = wts_state(entry.state)
    if state is None:
        return None
    user = user_of(entry, info)
    protocol = protocol_of(entry.session_name, protocol_type, remembered)
    if entry.state == WTS_CONNECTED and protocol == "console" and not user:
        state = OTHER  # the local console at its logon screen: always there on a VM, nobody connecting
    return Session(
        id=str(entry.session_id),
        state=state,
        protocol=protocol,
        user=user,
        logon_time=filetime_to_unix(info.logon_time) if info else None,
        idle_seconds=idle_seconds(info) if info else None,
        disconnect_time=filetime_to_unix(info.disconnect_time) if info and state == "disconnected" else None,
        raw_state=wts_state_name(entry.state),
    )


class WindowsSource:
    """Sessions from the WTS API (`api`: a WtsApi, or a fake with the same methods).

    `citrix` answers `active_protocol(session_id)` (CitrixWfApi, or a fake); it is asked only
    about sessions that report protocol type 0 (console), which is how a desktop-OS VDA shows
    its HDX session. With a real WtsApi it defaults to CitrixWfApi(), which changes nothing
    where no Citrix VDA is installed.
    """

    name = "windows"

    def __init__(self, api: Any, citrix: Optional[Any] = None):
        self.api = api
        self.citrix = citrix if citrix is not None or not isinstance(api, WtsApi) else CitrixWfApi()
        self._protocols: Dict[Tuple[str, Optional[float]], str] = {}

    def snapshot(self) -> List[Session]:
        sessions = []
        protocols: Dict[Tuple[str, Optional[float]], str] = {}
        for entry in self.api.enumerate_sessions():
            if skip_reason(entry) is not None:
                continue
            try:
                info = self.api.session_info(entry.session_id)
                protocol_type = self.api.client_protocol_type(entry.session_id)
            except OSError as e:  # the session ended between enumeration and query
                log.debug("session %s vanished while being read: %s", entry.session_id, e)
                continue
            if protocol_type == WTS_PROTOCOL_CONSOLE and self.citrix is not None \
                    and self.citrix.active_protocol(entry.session_id) == WF_PROTOCOL_ICA:
                protocol_type = WTS_PROTOCOL_ICA
            key = (str(entry.session_id), filetime_to_unix(info.logon_time))
            session = session_from_wts(entry, info, protocol_type, self._protocols.get(key))
            if session is None:
                continue
            if session.protocol != OTHER:
                protocols[session.key] = session.protocol
            sessions.append(session)
        self._protocols = protocols  # only sessions that still exist: no growth
        return sessions


class WtsApi:
    """Thin ctypes wrapper of wtsapi32 and ProcessIdToSessionId; raises OSError on failure."""

    def __init__(self) -> None:
        self._lib: Optional[Any] = None

    def _load(self) -> Any:  # pragma: no cover - Windows only
        if self._lib is not None:
            return self._lib
        from ctypes import wintypes

        windll = ctypes.WinDLL  # absent off Windows: AttributeError, as before
        wts = windll("wtsapi32", use_last_error=True)
        kernel32 = windll("kernel32", use_last_error=True)
        wts.WTSEnumerateSessionsExW.argtypes = [wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD), wintypes.DWORD,
                                                ctypes.POINTER(ctypes.POINTER(WTS_SESSION_INFO_1W)),
                                                ctypes.POINTER(wintypes.DWORD)]
        wts.WTSEnumerateSessionsExW.restype = wintypes.BOOL
        wts.WTSEnumerateProcessesExW.argtypes = [wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD), wintypes.DWORD,
                                                 ctypes.POINTER(ctypes.POINTER(WTS_PROCESS_INFOW)),
                                                 ctypes.POINTER(wintypes.DWORD)]
        wts.WTSEnumerateProcessesExW.restype = wintypes.BOOL
        wts.WTSFreeMemoryExW.argtypes = [ctypes.c_int, ctypes.c_void_p, wintypes.ULONG]
        wts.WTSFreeMemoryExW.restype = wintypes.BOOL
        wts.WTSQuerySessionInformationW.argtypes = [wintypes.HANDLE, wintypes.DWORD, ctypes.c_int,
                                                    ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(wintypes.DWORD)]
        wts.WTSQuerySessionInformationW.restype = wintypes.BOOL
        wts.WTSFreeMemory.argtypes = [ctypes.c_void_p]
        wts.WTSFreeMemory.restype = None
        kernel32.ProcessIdToSessionId.argtypes = [wintypes.DWORD, ctypes.POINTER(wintypes.DWORD)]
        kernel32.ProcessIdToSessionId.restype = wintypes.BOOL
        self._lib = (wintypes, wts, kernel32)
        return self._lib

    def _error(self, what: str) -> OSError:  # pragma: no cover - Windows only
        get_last_error = ctypes.get_last_error
        format_error = ctypes.FormatError
        err = get_last_error()
        return OSError(err, f"{what} failed: {format_error(err).strip()}")

    def enumerate_sessions(self) -> List[WtsSessionEntry]:  # pragma: no cover - Windows only
        wintypes, wts, _ = self._load()
        level = wintypes.DWORD(1)
        buffer = ctypes.POINTER(WTS_SESSION_INFO_1W)()
        count = wintypes.DWORD(0)
        if not wts.WTSEnumerateSessionsExW(None, ctypes.byref(level), 0, ctypes.byref(buffer), ctypes.byref(count)):
            raise self._error("WTSEnumerateSessionsExW")
        try:
            return [WtsSessionEntry(session_id=int(e.SessionId), state=int(e.State),
                                    session_name=_wstring(e.pSessionName), user_name=_wstring(e.pUserName),
                                    domain_name=_wstring(e.pDomainName), host_name=_wstring(e.pHostName),
                                    farm_name=_wstring(e.pFarmName))
                    for e in (buffer[i] for i in range(count.value))]
        finally:
            wts.WTSFreeMemoryExW(WTS_TYPE_SESSION_INFO_LEVEL1, buffer, count.value)

    def _query(self, session_id: int, info_class: int, convert: Callable[[Any, int], Any]) -> Any:  # pragma: no cover
        wintypes, wts, _ = self._load()
        buffer = ctypes.c_void_p()
        size = wintypes.DWORD(0)
        if not wts.WTSQuerySessionInformationW(None, session_id, info_class, ctypes.byref(buffer),
                                               ctypes.byref(size)):
            raise self._error(f"WTSQuerySessionInformationW({info_class}) for session {session_id}")
        try:
            return convert(buffer, size.value)
        finally:
            wts.WTSFreeMemory(buffer)

    def session_info_raw(self, session_id: int) -> bytes:  # pragma: no cover - Windows only
        """The WTSINFOW buffer as Windows returned it (for parse_wtsinfo, and for recordings)."""
        return self._query(session_id, WTS_SESSION_INFO, lambda buffer, size: ctypes.string_at(buffer, size))

    def session_info(self, session_id: int) -> WtsSessionInfo:  # pragma: no cover - Windows only
        try:
            return parse_wtsinfo(self.session_info_raw(session_id))
        except ValueError as e:
            raise OSError(0, f"WTSSessionInfo for session {session_id}: {e}") from None

    def client_protocol_type(self, session_id: int) -> int:  # pragma: no cover - Windows only
        ushort = ctypes.POINTER(ctypes.c_ushort)
        return self._query(session_id, WTS_CLIENT_PROTOCOL_TYPE,
                           lambda buffer, size: int(ctypes.cast(buffer, ushort).contents.value))

    def process_sessions(self) -> Dict[int, int]:  # pragma: no cover - Windows only
        """{pid: session id} for every process, in one call (WTSEnumerateProcessesExW, level 0).

        Unlike ProcessIdToSessionId it opens no process, so protected processes (each session's
        csrss.exe) are placed too; the caller must be an administrator (the service is LocalSystem).
        """
        wintypes, wts, _ = self._load()
        level = wintypes.DWORD(0)
        buffer = ctypes.POINTER(WTS_PROCESS_INFOW)()
        count = wintypes.DWORD(0)
        if not wts.WTSEnumerateProcessesExW(None, ctypes.byref(level), WTS_ANY_SESSION, ctypes.byref(buffer),
                                            ctypes.byref(count)):
            raise self._error("WTSEnumerateProcessesExW")
        try:
            return {int(p.ProcessId): int(p.SessionId) for p in (buffer[i] for i in range(count.value))}
        finally:
            wts.WTSFreeMemoryExW(WTS_TYPE_PROCESS_INFO_LEVEL0, buffer, count.value)

    def process_session_id(self, pid: int) -> Optional[int]:  # pragma: no cover - Windows only
        """The session a process runs in; None when Windows does not tell (protected or exited process)."""
        wintypes, _, kernel32 = self._load()
        session = wintypes.DWORD(0)
        if not kernel32.ProcessIdToSessionId(pid, ctypes.byref(session)):
            return None
        return int(session.value)


def _wstring(address: Optional[int]) -> str:  # pragma: no cover - Windows only (c_wchar is UTF-16 there)
    return ctypes.wstring_at(address) if address else ""


def _load_wfapi() -> Callable[[int], int]:  # pragma: no cover - Windows with a Citrix VDA only
    """WFGetActiveProtocol from the VDA's wfapi64.dll (wfapi.dll for a 32-bit process).

    WFAPI.H: `WF_PROTOCOL WINAPI WFGetActiveProtocol(IN DWORD SessionId)`.
    """
    windll = ctypes.WinDLL
    name = "wfapi64.dll" if ctypes.sizeof(ctypes.c_void_p) == 8 else "wfapi.dll"
    function = windll(name).WFGetActiveProtocol
    function.argtypes = [ctypes.c_uint32]
    function.restype = ctypes.c_int32
    return function


class CitrixWfApi:
    """Citrix's own answer to "is this session ICA?", for desktop-OS VDAs whose HDX session
    Windows reports as the console (protocol type 0). Optional: without the DLL (no Citrix VDA,
    not Windows) every answer is None and nothing changes."""

    def __init__(self, loader: Callable[[], Callable[[int], int]] = _load_wfapi):
        self._loader = loader
        self._function: Optional[Callable[[int], int]] = None
        self._loaded = False

    def active_protocol(self, session_id: int) -> Optional[int]:
        """WF_PROTOCOL of the session (0 none, 1 ICA, 2 RDP), or None when WFAPI is not there."""
        if not self._loaded:
            self._loaded = True
            try:
                self._function = self._loader()
            except (OSError, AttributeError) as e:  # no VDA, or not Windows (no ctypes.WinDLL)
                log.debug("Citrix WFAPI not available, HDX on desktop-OS VDAs counts as console: %s", e)
        if self._function is None:
            return None
        return int(self._function(session_id))


def record(api: Optional[Any] = None) -> Dict[str, Any]:
    """The running host's WTS data in the fixture format of tests/fixtures/sessions/wts_*.json."""
    import platform

    api = api or WtsApi()
    citrix = CitrixWfApi()
    out = []
    for entry in api.enumerate_sessions():
        item: Dict[str, Any] = {"entry": asdict(entry)}
        try:
            raw = api.session_info_raw(entry.session_id)
            item["info"] = asdict(parse_wtsinfo(raw))
            item["protocol_type"] = api.client_protocol_type(entry.session_id)
            item["raw"] = {"wtsinfo": raw.hex()}  # checks parse_wtsinfo against what Windows wrote
            wf = citrix.active_protocol(entry.session_id)
            if wf is not None:
                item["wf_protocol"] = wf
        except (OSError, ValueError) as e:
            item["error"] = str(e)
        out.append(item)
    return {"_about": f"recorded on {platform.platform()} (python -m agent.sessions.windows)",
            "process_sessions": {str(pid): sid for pid, sid in sorted(api.process_sessions().items())},
            "sessions": out}


if __name__ == "__main__":  # pragma: no cover
    json.dump(record(), sys.stdout, indent=2)
    sys.stdout.write("\n")
