"""A session's events put together into one logon with its phases; failed logons to a closed set of reasons.

A logon starts at the earlier of the session's profile load start (User
Profile Service 1) and its session logon (LocalSessionManager 21), and ends
when the shell start notification arrives (LocalSessionManager 22). Its phases:

- `profile`: profile load start to end (User Profile Service 1 -> 2), same session;
- `group_policy`: user logon policy processing start to end (GroupPolicy 4001 -> 8001),
  the two tied by their correlation ActivityID, the start tied to the session by
  its user name and by falling inside the logon (policy still running when the
  shell starts ran in the background: the user did not wait for it);
- `shell`: from the end of the last of those phases to the shell start;
- `other`: what remains of the total, only when the three phases above are known.

A phase whose events are missing is None (counted as missing), never guessed.
Nothing here reads a clock or a log: `LogonMatcher.add` takes events and the
time, and returns the logons it completed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

from agent.logons.events import Event
from contract.report import LOGON_FAILURE_REASONS, LOGON_PHASES

PHASES = LOGON_PHASES  # the contract's closed lists: they become label values
FAILURE_REASONS = LOGON_FAILURE_REASONS

# NTSTATUS values of 4625's Status and SubStatus, as Microsoft's "4625(F): An account failed
# to log on" lists them (its table of Windows logon status codes). docs/logons.md quotes each.
_REASON_OF_STATUS: Dict[int, str] = {
    0xC000006A: "bad_password",  # misspelled or bad password
    0xC0000064: "unknown_user",  # misspelled or bad user account
    0xC0000234: "locked_out",  # account locked
    0xC0000071: "expired",  # expired password
    0xC0000193: "expired",  # expired account
    0xC0000224: "expired",  # must change password at next logon ("the password is expired": OnLogonError)
    0xC0000072: "disabled",  # account disabled by administrator
    0xC000006F: "restricted",  # outside authorized hours
    0xC0000070: "restricted",  # from an unauthorized workstation
    0xC000015B: "restricted",  # logon type (logon right) not granted on this machine
}
# 0xC000006E is left out on purpose: the 4625 page's table calls it "unknown user name or bad
# password", other Microsoft pages an account restriction; its SubStatus says which.


def failure_reason(status: Optional[int], sub_status: Optional[int]) -> str:
    """4625's Status/SubStatus -> a reason of FAILURE_REASONS. SubStatus first: when Status is the
    generic 0xC000006D ("bad user name or authentication information"), SubStatus says which."""
    for code in (sub_status, status):
        if code is not None and code in _REASON_OF_STATUS:
            return _REASON_OF_STATUS[code]
    return "other"


# LocalSessionManager event 40's reason code: the server's disconnect reason of the RDP protocol, as
# Microsoft documents it in MS-RDPBCGR 2.2.5.1.1 (Set Error Info PDU, errorInfo) and the Remote Desktop
# ActiveX control's ExtendedDisconnectReasonCode (the same numbers). docs/logons.md quotes each one and
# says why a code is where it is.
_DISCONNECT_OF_CODE: Dict[int, str] = {
    11: "client",  # ERRINFO_RPC_INITIATED_DISCONNECT_BYUSER: from within the user's own session
    3: "time_limit",  # ERRINFO_IDLE_TIMEOUT: the idle session limit elapsed
    4: "time_limit",  # ERRINFO_LOGON_TIMEOUT: the active session limit elapsed
    5: "replaced",  # ERRINFO_DISCONNECTED_BY_OTHERCONNECTION: another connection took the session
    1: "server",  # ERRINFO_RPC_INITIATED_DISCONNECT: an administrative tool in another session
    6: "server",  # ERRINFO_OUT_OF_MEMORY
    7: "server",  # ERRINFO_SERVER_DENIED_CONNECTION
    8: "server",  # exDiscReasonServerDeniedConnectionFips
    9: "server",  # ERRINFO_SERVER_INSUFFICIENT_PRIVILEGES
    10: "server",  # ERRINFO_SERVER_FRESH_CREDENTIALS_REQUIRED
}
LOGOFF_CODES = frozenset({2, 12})  # a forced logoff (2) and the user logging off (12): an end, not a disconnect
LICENSING_CODES = range(0x100, 0x10C)  # ERRINFO_LICENSE_*: 256 internal ... 267 creating the license store denied
PROTOCOL_CODES = range(0x1000, 0x8000)  # exDiscReasonProtocolRange 4096-32767: the RDP stack's own errors


def disconnect_reason(code: Optional[int]) -> Optional[str]:
    """Event 40's reason code -> a reason of DISCONNECT_REASONS; None for a logoff (not a disconnect).

    >>> [disconnect_reason(c) for c in (11, 3, 5, 258, 4360, 0, 12)]
    ['client', 'time_limit', 'replaced', 'licensing', 'network', 'other', None]
    """
    if code in LOGOFF_CODES:
        return None
    if code is None:
        return "other"
    if code in _DISCONNECT_OF_CODE:
        return _DISCONNECT_OF_CODE[code]
    if code in LICENSING_CODES:
        return "licensing"
    if code in PROTOCOL_CODES:
        return "network"
    return "other"  # 0 (no information: the client went away), 768 (bad credentials), anything new


# Which Security 4624/4625 events are "a user logging on at a desktop" (docs/logons.md, "Which logons count").
# Logon types, as Microsoft's 4624 and 4625 pages list them: 2 Interactive ("A user logged on to this computer"),
# 10 RemoteInteractive ("... remotely using Terminal Services or Remote Desktop"), 11 CachedInteractive, 12
# CachedRemoteInteractive ("Same as RemoteInteractive"). Not counted: 7 Unlock and 13 CachedUnlock (a user back at a
# session already counted), 3 Network and 8 NetworkCleartext (a share, a port scan, NLA's check), 4 Batch, 5 Service,
# 9 NewCredentials (runas /netonly), 0 System. Successes and failures go through the same filter.
DESKTOP_LOGON_TYPES = (2, 10, 11, 12)

# Accounts Windows itself logs on as interactive (logon type 2) for every session: the Desktop Window
# Manager's Window Manager\DWM-n and the user-mode font driver's Font Driver Host\UMFD-n. Not users.
VIRTUAL_LOGON_DOMAINS = frozenset({"window manager", "font driver host"})
VIRTUAL_LOGON_SIDS = ("S-1-5-90-", "S-1-5-96-")  # their SIDs: S-1-5-90-0-n (DWM), S-1-5-96-0-n (UMFD)
# The service accounts of Windows: LocalSystem (SYSTEM), LocalService, NetworkService.
SERVICE_SIDS = frozenset({"S-1-5-18", "S-1-5-19", "S-1-5-20"})


def is_desktop_logon_type(logon_type: Optional[int]) -> bool:
    """A logon type a person at a session makes: 2, 10, 11, 12; not unlock (7, 13), network (3, 8), service...

    >>> [t for t in range(14) if is_desktop_logon_type(t)]
    [2, 10, 11, 12]
    """
    return logon_type in DESKTOP_LOGON_TYPES


def is_not_a_person(name: Optional[str], domain: Optional[str], sid: Optional[str],
                    virtual: Optional[bool] = None) -> bool:
    """Whether the account is Windows' own rather than a user's: SYSTEM, LOCAL SERVICE, NETWORK SERVICE, a
    computer account (its name ends in $), DWM-n, UMFD-n, or any account 4624 flags as virtual.

    >>> is_not_a_person("UMFD-3", "Font Driver Host", "S-1-5-96-0-3"), is_not_a_person("VDA-01$", "CORP", None)
    (True, True)
    >>> is_not_a_person("carol", "CORP", "S-1-5-21-1-2-3-1105", virtual=False)
    False
    """
    if virtual is True:
        return True
    if name is not None and name.strip().endswith("$"):
        return True
    if domain is not None and domain.strip().lower() in VIRTUAL_LOGON_DOMAINS:
        return True
    if sid is not None:
        sid = sid.strip().upper()
        return sid in SERVICE_SIDS or sid.startswith(VIRTUAL_LOGON_SIDS)
    return False


def is_elevated_half(linked_logon_id: Optional[int], elevated: Optional[bool]) -> bool:
    """Whether a 4624 is the administrator token of a UAC split-token pair: it has a linked logon session
    (TargetLinkedLogonId not 0) and its token is elevated. Its partner, the standard user token (the one the
    desktop, explorer.exe, runs with), is the one counted, so that the pair counts once. A logon that is not
    one of a pair (0x0: a standard user; the built-in Administrator, elevated but alone) is not a half."""
    return bool(linked_logon_id) and elevated is True


def counts_as_success(e: Event) -> bool:
    """A 4624 that counts as one user logging on at a desktop."""
    return (is_desktop_logon_type(e.logon_type)
            and not is_not_a_person(e.account_name, e.account_domain, e.account_sid, e.virtual_account)
            and not is_elevated_half(e.linked_logon_id, e.elevated_token))


def counts_as_failure(e: Event) -> bool:
    """A 4625 from the same population as counts_as_success: a desktop logon type, not one of Windows' accounts.
    (4625 has no VirtualAccount, ElevatedToken or linked logon: a failed logon creates no token.)"""
    return is_desktop_logon_type(e.logon_type) and not is_not_a_person(e.account_name, e.account_domain,
                                                                         e.account_sid)


@dataclass(frozen=True)
class Logon:
    """One completed logon: its total and a duration per phase of PHASES, None when missing."""

    total_seconds: float
    phases: Tuple[Tuple[str, Optional[float]], ...]

    def phase(self, name: str) -> Optional[float]:
        return dict(self.phases)[name]


def build_logon(logon: Event, shell: Event, profile: Tuple[Optional[Event], Optional[Event]],
                policy: Tuple[Optional[Event], Optional[Event]]) -> Logon:
    """One logon from its events: `logon` (21), `shell` (22), profile (1, 2) and policy (4001, 8001), any of
    the last four possibly None."""
    p_start, p_end = profile
    g_start, g_end = policy
    start = min(logon.time_seconds, p_start.time_seconds) if p_start is not None else logon.time_seconds
    end = shell.time_seconds
    total = max(0.0, end - start)
    prof = p_end.time_seconds - p_start.time_seconds if p_start is not None and p_end is not None else None
    gp = g_end.time_seconds - g_start.time_seconds if g_start is not None and g_end is not None else None
    ends = [e.time_seconds for e, d in ((p_end, prof), (g_end, gp)) if d is not None and e is not None]
    shell_phase = max(0.0, end - max(ends)) if ends else None
    other = None
    if prof is not None and gp is not None and shell_phase is not None:
        other = max(0.0, total - prof - gp - shell_phase)
    values = {"profile": prof, "group_policy": gp, "shell": shell_phase, "other": other}
    return Logon(round(total, 6), tuple((p, None if values[p] is None else round(values[p], 6)) for p in PHASES))


class LogonMatcher:
    """Holds events until their logon completes. Not thread-safe: one collector owns it.

    A shell start completes its logon once it is `settle_seconds` old, so that the events of
    the other channels, read in the same or the next interval, have arrived; events older than
    `window_seconds` without a shell start are forgotten (a logon that never reached the shell).
    """

    def __init__(self, window_seconds: float = 900.0, settle_seconds: float = 60.0) -> None:
        self.window = window_seconds
        self.settle = settle_seconds
        self._pending: List[Event] = []
        self.unmatched_shell_starts = 0  # a 22 without its 21: the logon began before what was read

    def add(self, events: Iterable[Event], now: float) -> List[Logon]:
        self._pending.extend(e for e in events if e.kind in _LOGON_KINDS)
        self._pending.sort(key=lambda e: (e.time_seconds, e.record_id))
        done: List[Logon] = []
        used: set = set()
        for shell in [e for e in self._pending if e.kind == "shell_start" and e.time_seconds <= now - self.settle]:
            logon = self._latest("session_logon", shell, shell.time_seconds - self.window, used)
            used.add(id(shell))
            if logon is None:
                self.unmatched_shell_starts += 1
                continue
            used.add(id(logon))
            p_start = self._latest("profile_start", shell, shell.time_seconds - self.window, used)
            p_end = None
            if p_start is not None:
                used.add(id(p_start))
                p_end = self._first_after("profile_end", p_start, shell.time_seconds, used)
                if p_end is not None:
                    used.add(id(p_end))
            start = min(logon.time_seconds, p_start.time_seconds) if p_start is not None else logon.time_seconds
            g_start, g_end = self._policy(logon.user, start, shell.time_seconds, used)
            done.append(build_logon(logon, shell, (p_start, p_end), (g_start, g_end)))
        horizon = now - self.window
        self._pending = [e for e in self._pending if id(e) not in used and e.time_seconds >= horizon]
        return done

    def _latest(self, kind: str, shell: Event, since: float, used: set) -> Optional[Event]:
        found = None
        for e in self._pending:
            if e.time_seconds > shell.time_seconds:
                break
            if (e.kind == kind and e.session_id == shell.session_id and e.time_seconds >= since
                    and id(e) not in used):
                found = e
        return found

    def _first_after(self, kind: str, start: Event, until: float, used: set) -> Optional[Event]:
        for e in self._pending:
            if (e.kind == kind and e.session_id == start.session_id and start.time_seconds <= e.time_seconds <= until
                    and id(e) not in used):
                return e
        return None

    def _policy(self, user: Optional[str], start: float, end: float,
                used: set) -> Tuple[Optional[Event], Optional[Event]]:
        if not user:
            return None, None
        for g in self._pending:
            if (g.kind == "group_policy_start" and id(g) not in used and start <= g.time_seconds <= end
                    and g.user is not None and g.user.lower() == user.lower()):
                used.add(id(g))
                for f in self._pending:
                    if (f.kind == "group_policy_end" and id(f) not in used and f.activity_id is not None
                            and f.activity_id == g.activity_id and g.time_seconds <= f.time_seconds <= end):
                        used.add(id(f))
                        return g, f
                return g, None
        return None, None


_LOGON_KINDS = frozenset({"session_logon", "shell_start", "profile_start", "profile_end",
                          "group_policy_start", "group_policy_end"})
