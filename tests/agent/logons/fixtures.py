"""Read tests/fixtures/logons/*.xml: an <Events> list (`wevtutil qe /f:xml /e:Events`), one event XML each."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import List

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "logons"


def event_xmls(name: str) -> List[str]:
    root = ET.parse(FIXTURES / name).getroot()
    return [ET.tostring(child, encoding="unicode") for child in root]


ALL = ("server_vda.xml", "desktop_vda.xml", "rds_host.xml", "server_vda_sessions.xml", "desktop_vda_sessions.xml",
       "rds_host_sessions.xml", "admin_vda_security.xml")

# EVT_VARIANT_TYPE (winevt.h) of each value, as the events' manifests declare them (docs/logons.md): what
# pywin32's EvtRender(..., EvtRenderEventValues) pairs with each value.
_NULL, _STRING, _UINT16, _UINT32, _UINT64, _GUID, _FILETIME, _SID, _HEXINT32 = 0, 1, 6, 8, 10, 15, 17, 19, 20
_HEXINT64 = 21
_TYPES = {"Channel": _STRING, "EventID": _UINT16, "EventRecordID": _UINT64, "SystemTime": _FILETIME,
          "ActivityID": _GUID, "SessionID": _UINT32, "Session": _UINT32, "User": _STRING, "Reason": _UINT32,
          "PrincipalSamName": _STRING, "LogonType": _UINT32, "Status": _HEXINT32, "SubStatus": _HEXINT32,
          "TargetDomainName": _STRING, "TargetUserSid": _SID, "TargetUserName": _STRING,
          "VirtualAccount": _STRING, "ElevatedToken": _STRING, "TargetLinkedLogonId": _HEXINT64}


class _Guid:
    """Stands for pywin32's PyIID: str() gives "{...}"."""

    def __init__(self, text: str) -> None:
        self.text = "{" + text.strip("{}").upper() + "}"

    def __str__(self) -> str:
        return self.text


def _node(root: ET.Element, path: str):
    """One of VALUE_PATHS on a parsed event, namespaces ignored as the render context's paths ignore them."""
    node = root
    steps = path.split("/")[1:]
    for step in steps:
        if step.startswith("@"):
            return node.get(step[1:])
        name, _, cond = step.partition("[")
        found = None
        for child in node:
            if child.tag.rsplit("}", 1)[-1] == name and (not cond or child.get("Name") == cond.split("'")[1]):
                found = child
                break
        if found is None:
            return None
        node = found
    return node.text


def rendered_values(xml: str):
    """What EvtRender(event, EvtRenderEventValues, Context=VALUE_PATHS context) gives for this event, derived
    from the same event's XML: (value, EvtVarType) pairs, a FileTime as an aware UTC datetime (pywin32's own
    datetime type), a SID as pywin32's PySID prints ("PySID:S-1-..."), a HexInt32 as '0x...' text."""
    from datetime import datetime, timezone

    from agent.logons.events import VALUE_PATHS

    root = ET.fromstring(xml)
    out = []
    for path in VALUE_PATHS:
        text = _node(root, path)
        key = path.rsplit("/", 1)[-1].lstrip("@")
        key = key.split("'")[1] if "'" in key else key
        kind = _TYPES[key]
        if text is None or (kind == _SID and text.strip() == "-"):
            out.append((None, _NULL))
            continue
        text = text.strip()
        if kind == _FILETIME:
            whole, _, frac = text.rstrip("Z").partition(".")
            dt = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
            value = dt.replace(microsecond=int((frac + "000000")[:6]))
        elif kind in (_UINT16, _UINT32, _UINT64):
            value = int(text)
        elif kind in (_HEXINT32, _HEXINT64):
            value = hex(int(text, 16))
        elif kind == _GUID:
            value = _Guid(text)
        elif kind == _SID:
            value = "PySID:" + text
        else:
            value = text
        out.append((value, kind))
    return out
