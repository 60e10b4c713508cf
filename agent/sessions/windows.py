"""Sessions on Windows (RDS, Citrix Virtual Apps and Desktops) through the WTS API.

Two layers, as in node_exporter's collectors: `WtsApi` is the only code that
touches ctypes, and stays thin (call, copy into plain records, free); all the
decisions (which sessions to skip, state and protocol, FILETIME conversion)
are pure functions of those records, tested on Linux with a fake API fed
from tests/fixtures/sessions/wts_*.json. ctypes.WinDLL is touched only on the
first call, so this module imports anywhere.

To record a real host in the fixture format (then anonymize the names):

    python -m agent.sessions.windows > wts_<name>.json
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple

from agent.sessions.model import Session
from agent.sessions.states import OTHER, WTS_CONNECTED, WTS_LISTEN, wts_state, wts_state_name

log = logging.getLogger(__name__)

# FILETIME: 100-nanosecond intervals since 1601-01-01 UTC.
FILETIME_UNIX_EPOCH = 116444736000000000
FILETIME_PER_SECOND = 10_000_000

# WTSClientProtocolType values.
WTS_PROTOCOL_CONSOLE = 0
WTS_PROTOCOL_ICA = 1  # kept by Microsoft "for legacy purposes"; older Citrix VDAs report it
WTS_PROTOCOL_RDP = 2

# WTS_INFO_CLASS values used here.
WTS_CLIENT_NAME = 10
WTS_CLIENT_PROTOCOL_TYPE = 16
WTS_SESSION_INFO = 24
WTS_TYPE_SESSION_INFO_LEVEL1 = 2  # WTS_TYPE_CLASS for WTSFreeMemoryExW

SERVICES_SESSION_ID = 0
FIRST_LISTENER_ID = 65536  # listeners get ids from 65536 up


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


def filetime_to_unix(filetime: int) -> Optional[float]:
    """Unix seconds for a FILETIME; None for 0 (never) or a time before 1970.

    >>> filetime_to_unix(133774560000000000)
    1732982400.0
    """
    if not filetime or filetime <= FILETIME_UNIX_EPOCH:
        return None
    return (filetime - FILETIME_UNIX_EPOCH) / FILETIME_PER_SECOND


def idle_seconds(info: WtsSessionInfo) -> Optional[float]:
    """Seconds since the last input, from the server's own CurrentTime (no clock skew with the agent)."""
    if not info.last_input_time or not info.current_time:
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

    Citrix HDX sessions are "ICA-CGP#n"/"ICA-TCP#n" on current VDAs (which may
    report protocol type 2) and protocol type 1 on older ones: either makes
    `ica`. A disconnected session loses its name; it keeps the protocol seen
    while it was connected (`remembered`), else it is `other`.
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
    """Sessions from the WTS API (`api`: a WtsApi, or a fake with the same methods)."""

    name = "windows"

    def __init__(self, api: Any):
        self.api = api
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
        import ctypes
        from ctypes import wintypes

        class WTS_SESSION_INFO_1W(ctypes.Structure):  # noqa: N801 - the API's name
            _fields_ = [("ExecEnvId", wintypes.DWORD), ("State", ctypes.c_int), ("SessionId", wintypes.DWORD),
                        ("pSessionName", wintypes.LPWSTR), ("pHostName", wintypes.LPWSTR),
                        ("pUserName", wintypes.LPWSTR), ("pDomainName", wintypes.LPWSTR),
                        ("pFarmName", wintypes.LPWSTR)]

        class WTSINFOW(ctypes.Structure):
            _fields_ = [("State", ctypes.c_int), ("SessionId", wintypes.DWORD),
                        ("IncomingBytes", wintypes.DWORD), ("OutgoingBytes", wintypes.DWORD),
                        ("IncomingFrames", wintypes.DWORD), ("OutgoingFrames", wintypes.DWORD),
                        ("IncomingCompressedBytes", wintypes.DWORD), ("OutgoingCompressedBytes", wintypes.DWORD),
                        ("WinStationName", wintypes.WCHAR * 32),  # WINSTATIONNAME_LENGTH
                        ("Domain", wintypes.WCHAR * 17),  # DOMAIN_LENGTH + 1
                        ("UserName", wintypes.WCHAR * 21),  # USERNAME_LENGTH + 1
                        ("ConnectTime", ctypes.c_longlong), ("DisconnectTime", ctypes.c_longlong),
                        ("LastInputTime", ctypes.c_longlong), ("LogonTime", ctypes.c_longlong),
                        ("CurrentTime", ctypes.c_longlong)]

        wts = ctypes.WinDLL("wtsapi32", use_last_error=True)
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        wts.WTSEnumerateSessionsExW.argtypes = [wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD), wintypes.DWORD,
                                                ctypes.POINTER(ctypes.POINTER(WTS_SESSION_INFO_1W)),
                                                ctypes.POINTER(wintypes.DWORD)]
        wts.WTSEnumerateSessionsExW.restype = wintypes.BOOL
        wts.WTSFreeMemoryExW.argtypes = [ctypes.c_int, ctypes.c_void_p, wintypes.ULONG]
        wts.WTSFreeMemoryExW.restype = wintypes.BOOL
        wts.WTSQuerySessionInformationW.argtypes = [wintypes.HANDLE, wintypes.DWORD, ctypes.c_int,
                                                    ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(wintypes.DWORD)]
        wts.WTSQuerySessionInformationW.restype = wintypes.BOOL
        wts.WTSFreeMemory.argtypes = [ctypes.c_void_p]
        wts.WTSFreeMemory.restype = None
        kernel32.ProcessIdToSessionId.argtypes = [wintypes.DWORD, ctypes.POINTER(wintypes.DWORD)]
        kernel32.ProcessIdToSessionId.restype = wintypes.BOOL
        self._lib = (ctypes, wintypes, wts, kernel32, WTS_SESSION_INFO_1W, WTSINFOW)
        return self._lib

    def _error(self, what: str) -> OSError:  # pragma: no cover - Windows only
        import ctypes

        err = ctypes.get_last_error()
        return OSError(err, f"{what} failed: {ctypes.FormatError(err).strip()}")

    def enumerate_sessions(self) -> List[WtsSessionEntry]:  # pragma: no cover - Windows only
        ctypes, wintypes, wts, _, info_1w, _ = self._load()
        level = wintypes.DWORD(1)
        buffer = ctypes.POINTER(info_1w)()
        count = wintypes.DWORD(0)
        if not wts.WTSEnumerateSessionsExW(None, ctypes.byref(level), 0, ctypes.byref(buffer), ctypes.byref(count)):
            raise self._error("WTSEnumerateSessionsExW")
        try:
            return [WtsSessionEntry(session_id=int(e.SessionId), state=int(e.State),
                                    session_name=e.pSessionName or "", user_name=e.pUserName or "",
                                    domain_name=e.pDomainName or "", host_name=e.pHostName or "",
                                    farm_name=e.pFarmName or "")
                    for e in (buffer[i] for i in range(count.value))]
        finally:
            wts.WTSFreeMemoryExW(WTS_TYPE_SESSION_INFO_LEVEL1, buffer, count.value)

    def _query(self, session_id: int, info_class: int, convert: Any) -> Any:  # pragma: no cover - Windows only
        ctypes, wintypes, wts, _, _, _ = self._load()
        buffer = ctypes.c_void_p()
        size = wintypes.DWORD(0)
        if not wts.WTSQuerySessionInformationW(None, session_id, info_class, ctypes.byref(buffer),
                                               ctypes.byref(size)):
            raise self._error(f"WTSQuerySessionInformationW({info_class}) for session {session_id}")
        try:
            return convert(buffer, size.value)
        finally:
            wts.WTSFreeMemory(buffer)

    def session_info(self, session_id: int) -> WtsSessionInfo:  # pragma: no cover - Windows only
        ctypes, _, _, _, _, wtsinfo = self._load()

        def convert(buffer: Any, size: int) -> WtsSessionInfo:
            if size < ctypes.sizeof(wtsinfo):
                raise OSError(0, f"WTSSessionInfo for session {session_id}: {size} bytes, too short")
            i = ctypes.cast(buffer, ctypes.POINTER(wtsinfo)).contents
            return WtsSessionInfo(state=int(i.State), session_id=int(i.SessionId),
                                  win_station_name=i.WinStationName, domain=i.Domain, user_name=i.UserName,
                                  connect_time=int(i.ConnectTime), disconnect_time=int(i.DisconnectTime),
                                  last_input_time=int(i.LastInputTime), logon_time=int(i.LogonTime),
                                  current_time=int(i.CurrentTime))
        return self._query(session_id, WTS_SESSION_INFO, convert)

    def client_protocol_type(self, session_id: int) -> int:  # pragma: no cover - Windows only
        ctypes, _, _, _, _, _ = self._load()
        ushort = ctypes.POINTER(ctypes.c_ushort)
        return self._query(session_id, WTS_CLIENT_PROTOCOL_TYPE,
                           lambda buffer, size: int(ctypes.cast(buffer, ushort).contents.value))

    def client_name(self, session_id: int) -> str:  # pragma: no cover - Windows only
        """The client device's name. Not reported: a device name often names its owner."""
        ctypes, _, _, _, _, _ = self._load()
        return self._query(session_id, WTS_CLIENT_NAME, lambda buffer, size: ctypes.wstring_at(buffer) or "")

    def process_session_id(self, pid: int) -> Optional[int]:  # pragma: no cover - Windows only
        """The session a process runs in; None when Windows does not tell (protected or exited process)."""
        ctypes, wintypes, _, kernel32, _, _ = self._load()
        session = wintypes.DWORD(0)
        if not kernel32.ProcessIdToSessionId(pid, ctypes.byref(session)):
            return None
        return int(session.value)


def record(api: Optional[Any] = None) -> Dict[str, Any]:  # pragma: no cover - a tool, run by hand on Windows
    """The running host's WTS data in the fixture format of tests/fixtures/sessions/wts_*.json."""
    import platform

    api = api or WtsApi()
    out = []
    for entry in api.enumerate_sessions():
        item: Dict[str, Any] = {"entry": asdict(entry)}
        try:
            item["info"] = asdict(api.session_info(entry.session_id))
            item["protocol_type"] = api.client_protocol_type(entry.session_id)
        except OSError as e:
            item["error"] = str(e)
        out.append(item)
    return {"_about": f"recorded on {platform.platform()}", "sessions": out}


if __name__ == "__main__":  # pragma: no cover
    json.dump(record(), sys.stdout, indent=2)
    sys.stdout.write("\n")
