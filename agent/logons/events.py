"""One rendered Windows event (EvtRender's XML) as a small typed record.

Only the events docs/logons.md lists are kept; anything else, or anything
malformed, is None (the caller counts it). No user name leaves this module
except for matching group policy to its session: `user` is compared, never
exported.

    >>> e = parse_event('<Event><System><EventID>4625</EventID><TimeCreated SystemTime="2015-09-08T22:54:54.9625117Z"/>'
    ...                 '<EventRecordID>229977</EventRecordID><Channel>Security</Channel></System><EventData>'
    ...                 '<Data Name="Status">0xc0000234</Data><Data Name="SubStatus">0x0</Data></EventData></Event>')
    >>> e.kind, e.record_id, e.time_seconds, hex(e.status), e.sub_status
    ('logon_failure', 229977, 1441752894.962511, '0xc0000234', 0)
"""

from __future__ import annotations

import calendar
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Dict, Optional, Sequence

LSM_CHANNEL = "Microsoft-Windows-TerminalServices-LocalSessionManager/Operational"
PROFILE_CHANNEL = "Microsoft-Windows-User Profile Service/Operational"
GROUP_POLICY_CHANNEL = "Microsoft-Windows-GroupPolicy/Operational"
SECURITY_CHANNEL = "Security"

# (channel, event id) -> kind. docs/logons.md cites where each one is documented.
KINDS: Dict[tuple, str] = {
    (LSM_CHANNEL, 21): "session_logon",
    (LSM_CHANNEL, 22): "shell_start",
    (LSM_CHANNEL, 23): "session_logoff",
    (LSM_CHANNEL, 24): "session_disconnect",
    (LSM_CHANNEL, 25): "session_reconnect",
    (LSM_CHANNEL, 40): "disconnect_reason",
    (PROFILE_CHANNEL, 1): "profile_start",
    (PROFILE_CHANNEL, 2): "profile_end",
    (GROUP_POLICY_CHANNEL, 4001): "group_policy_start",
    (GROUP_POLICY_CHANNEL, 8001): "group_policy_end",
    (SECURITY_CHANNEL, 4624): "logon_success",
    (SECURITY_CHANNEL, 4625): "logon_failure",
}

_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?Z$")


@dataclass(frozen=True)
class Event:
    """The fields of one event that logon matching needs; None where the event has no such field."""

    kind: str
    record_id: int
    time_seconds: float  # TimeCreated/@SystemTime, UTC, as Unix seconds
    session_id: Optional[int] = None  # LSM SessionID / Session; profile Session
    user: Optional[str] = None  # LSM User, group policy PrincipalSamName: matching only, never exported
    activity_id: Optional[str] = None  # System/Correlation/@ActivityID (group policy start and end share it)
    logon_type: Optional[int] = None  # Security LogonType
    status: Optional[int] = None  # Security 4625 Status
    sub_status: Optional[int] = None  # Security 4625 SubStatus
    reason_code: Optional[int] = None  # LSM 40 Reason
    account_domain: Optional[str] = None  # Security 4624 TargetDomainName ("Window Manager" for DWM-n); not exported
    account_sid: Optional[str] = None  # Security 4624 TargetUserSid ("S-1-5-90-0-3"), likewise
    account_name: Optional[str] = None  # Security 4624/4625 TargetUserName ("DWM-3", "VDA-01$"): compared, not exported
    virtual_account: Optional[bool] = None  # Security 4624 VirtualAccount (version 2): %%1842 Yes, %%1843 No
    elevated_token: Optional[bool] = None  # Security 4624 ElevatedToken (version 2), likewise
    linked_logon_id: Optional[int] = None  # Security 4624 TargetLinkedLogonId (version 2): 0 when not one of a pair


def parse_time(text: str) -> Optional[float]:
    """'2015-09-08T22:54:54.962511700Z' -> Unix seconds (the 100 ns digits kept to the microsecond)."""
    m = _TIME.match(text.strip())
    if m is None:
        return None
    y, mo, d, h, mi, s, frac = m.groups()
    whole = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s), 0, 0, 0))
    return round(whole + (float("0." + frac[:6]) if frac else 0.0), 6)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _int(text: Optional[str]) -> Optional[int]:
    """A decimal or 0x-hex field ('1', '0xc000006d'); None when absent or not a number."""
    if text is None:
        return None
    text = text.strip()
    try:
        return int(text, 16) if text[:2].lower() == "0x" else int(text)
    except ValueError:
        return None


_WANTED = frozenset({"SessionID", "Session", "User", "PrincipalSamName", "LogonType", "Status", "SubStatus", "Reason",
                     "TargetDomainName", "TargetUserSid", "TargetUserName", "VirtualAccount", "ElevatedToken",
                     "TargetLinkedLogonId"})

# 4624's Yes/No fields as the event stores them: the insertion strings %%1842 and %%1843 (Microsoft's example
# event on the 4624 page: the built-in Administrator with VirtualAccount %%1843, ElevatedToken %%1842), or the
# words themselves where a renderer has already put them in.
_YES_NO = {"%%1842": True, "%%1843": False, "yes": True, "no": False}


def yes_no(text: Optional[str]) -> Optional[bool]:
    """'%%1842' -> True, '%%1843' -> False ('Yes'/'No' likewise); None when absent ('-', empty) or unknown.

    >>> yes_no('%%1842'), yes_no('%%1843'), yes_no('No'), yes_no('-'), yes_no(None)
    (True, False, False, None, None)
    """
    if text is None:
        return None
    return _YES_NO.get(text.strip().lower())


def _fields(root: ET.Element) -> Dict[str, str]:
    """The wanted fields of EventData's <Data Name="..."> or of UserData's single element (LSM's EventXML)."""
    out: Dict[str, str] = {}
    for child in root:
        tag = child.tag
        if tag.endswith("EventData"):
            for data in child:
                key = data.get("Name")
                if key in _WANTED:
                    out[key] = (data.text or "").strip()
        elif tag.endswith("UserData"):
            for block in child:
                for data in block:
                    key = _local(data.tag)
                    if key in _WANTED:
                        out[key] = (data.text or "").strip()
    return out


def parse_event(xml: str) -> Optional[Event]:
    """One event's XML -> Event, or None for an event this module does not use or cannot read."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    ns = root.tag[:-5] if root.tag.endswith("}Event") else ""  # "{...events/event}" as EvtRender writes it
    system = root.find(ns + "System")
    if system is None:
        return None
    channel = (system.findtext(ns + "Channel") or "").strip()
    event_id = _int(system.findtext(ns + "EventID"))
    kind = KINDS.get((channel, event_id))
    if kind is None:
        return None
    created = system.find(ns + "TimeCreated")
    when = parse_time(created.get("SystemTime", "")) if created is not None else None
    record_id = _int(system.findtext(ns + "EventRecordID"))
    if when is None or record_id is None:
        return None
    correlation = system.find(ns + "Correlation")
    activity = correlation.get("ActivityID") if correlation is not None else None
    f = _fields(root)
    session = f.get("SessionID", f.get("Session"))
    user = f.get("User", f.get("PrincipalSamName"))
    return Event(
        kind=kind,
        record_id=record_id,
        time_seconds=when,
        session_id=_int(session),
        user=user or None,
        activity_id=activity.strip("{}").upper() if activity else None,
        logon_type=_int(f.get("LogonType")),
        status=_int(f.get("Status")),
        sub_status=_int(f.get("SubStatus")),
        reason_code=_int(f.get("Reason")),
        account_domain=f.get("TargetDomainName") or None,
        account_sid=f.get("TargetUserSid") or None,
        account_name=f.get("TargetUserName") or None,
        virtual_account=yes_no(f.get("VirtualAccount")),
        elevated_token=yes_no(f.get("ElevatedToken")),
        linked_logon_id=_int(f.get("TargetLinkedLogonId")),
    )


# What `EvtRender(event, EvtRenderEventValues, context)` returns for a render context created with these
# value paths (EvtCreateRenderContext with EvtRenderContextValues: Microsoft, "Rendering Events"): one value
# a path, in this order, None where the event has no such node. Only these are rendered, no XML is built.
VALUE_PATHS = (
    "Event/System/Channel",
    "Event/System/EventID",
    "Event/System/EventRecordID",
    "Event/System/TimeCreated/@SystemTime",
    "Event/System/Correlation/@ActivityID",
    "Event/UserData/EventXML/SessionID",  # LocalSessionManager 21-25
    "Event/UserData/EventXML/Session",  # LocalSessionManager 40
    "Event/UserData/EventXML/User",
    "Event/UserData/EventXML/Reason",
    "Event/EventData/Data[@Name='Session']",  # User Profile Service 1, 2
    "Event/EventData/Data[@Name='PrincipalSamName']",  # GroupPolicy 4001
    "Event/EventData/Data[@Name='LogonType']",  # Security 4624, 4625
    "Event/EventData/Data[@Name='Status']",
    "Event/EventData/Data[@Name='SubStatus']",
    "Event/EventData/Data[@Name='TargetDomainName']",
    "Event/EventData/Data[@Name='TargetUserSid']",
    "Event/EventData/Data[@Name='TargetUserName']",  # Security 4624, 4625
    "Event/EventData/Data[@Name='VirtualAccount']",  # Security 4624 version 2
    "Event/EventData/Data[@Name='ElevatedToken']",
    "Event/EventData/Data[@Name='TargetLinkedLogonId']",
)


def _value_text(value: object) -> Optional[str]:
    """A rendered value as text: pywin32 gives str, int, a GUID object ("{...}") or a PySID ("PySID:S-1-...")."""
    if value is None:
        return None
    text = value if type(value) is str else str(value)
    return text[6:] if text.startswith("PySID:") else text


def _value_int(value: object) -> Optional[int]:
    if type(value) is int:
        return value
    if value is None or isinstance(value, bool):
        return None
    return _int(_value_text(value))  # HexInt32 arrives as '0xc000006d' (pywin32 renders it in base 16)


def _value_time(value: object) -> Optional[float]:
    """FileTime arrives as a datetime (pywin32's, in UTC); a naive one is taken as UTC."""
    if isinstance(value, datetime):
        return round((value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)).timestamp(), 6)
    if isinstance(value, str):
        return parse_time(value)
    return None


def _strip(text: Optional[str]) -> Optional[str]:
    text = text.strip() if text else None
    return text or None


# The values each kind of event carries (indexes into VALUE_PATHS); the others are not converted.
_SESSION_KINDS = frozenset({"session_logon", "shell_start", "session_logoff", "session_disconnect",
                            "session_reconnect"})


def event_from_values(values: Sequence[object]) -> Optional[Event]:
    """One event's values, rendered with VALUE_PATHS (pywin32's (value, type) pairs, or bare values), -> Event;
    None for an event this module does not use or cannot read. The same record `parse_event` makes of its XML.
    Only the values the event's kind uses are converted: this runs for every event read."""
    if len(values) != _N_VALUES:
        return None
    v = values if type(values[0]) is not tuple else [x[0] for x in values]
    channel = v[0]
    kind = KINDS.get(((channel if type(channel) is str else _value_text(channel) or "").strip(), _value_int(v[1])))
    if kind is None:
        return None
    when, record_id = _value_time(v[3]), _value_int(v[2])
    if when is None or record_id is None:
        return None
    if kind in _SESSION_KINDS:
        return Event(kind, record_id, when, session_id=_value_int(v[5]), user=_strip(_value_text(v[7])))
    if kind == "disconnect_reason":
        return Event(kind, record_id, when, session_id=_value_int(v[6]), reason_code=_value_int(v[8]))
    if kind in ("profile_start", "profile_end"):
        return Event(kind, record_id, when, session_id=_value_int(v[9]))
    if kind in ("group_policy_start", "group_policy_end"):
        activity = _value_text(v[4])
        return Event(kind, record_id, when, user=_strip(_value_text(v[10])),
                     activity_id=activity.strip().strip("{}").upper() if activity else None)
    failure = kind == "logon_failure"  # the rest is Security's 4624 and 4625
    return Event(kind, record_id, when, logon_type=_value_int(v[11]),
                 status=_value_int(v[12]) if failure else None, sub_status=_value_int(v[13]) if failure else None,
                 account_domain=_strip(_value_text(v[14])), account_sid=_strip(_value_text(v[15])),
                 account_name=_strip(_value_text(v[16])),
                 virtual_account=None if failure else yes_no(_value_text(v[17])),
                 elevated_token=None if failure else yes_no(_value_text(v[18])),
                 linked_logon_id=None if failure else _value_int(v[19]))


_N_VALUES = len(VALUE_PATHS)
