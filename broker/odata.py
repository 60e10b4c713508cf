"""One page of the Citrix Monitor Service's `Machines` entity set, read without trust.

The documented shape (docs/broker.md cites where each name is verified):

    {"@odata.context": ".../$metadata#Machines",
     "value": [{"Name": "CORP\\\\vda-01", "DnsName": "vda-01.corp.example",
                "IsInMaintenanceMode": false, "CurrentRegistrationState": 1,
                "CurrentPowerState": 3, "DesktopGroup": {"Name": "Office"}}, ...],
     "@odata.nextLink": "https://ddc/.../Machines?$skip=100"}

`parse_page` turns one decoded page into `Machine`s, or raises `MalformedPage`
when the page itself is unusable. A machine that cannot be trusted (no usable
name, a state field of the wrong type) is skipped, never guessed, and the reason
is returned with the field it concerns; an enum code outside the known ones
keeps the machine with the state `unknown` and is returned as well. Nothing
here does I/O, so every rule is tested with literal input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from contract.report import HOST_NAME_RE, json_kind, label_problem

# The closed set of power states the broker exports (`state` label), one-hot.
POWER_STATES = ("on", "off", "suspended", "transitioning", "unmanaged", "missing", "unknown")

# Citrix Monitor PowerState by code (the list index): Unknown, Unavailable, Off, On,
# Suspended, TurningOn, TurningOff, Suspending, Resuming, Unmanaged, NotSupported,
# VirtualMachineNotFound. The numbers are NOT verified against Citrix's own table:
# Citrix's Monitor API reference (Citrix.Monitor.Model, "Enums, error codes, and
# descriptions") says CurrentPowerState takes "enum PowerStateCode" but its table has
# no PowerStateCode rows (docs/broker.md, "Verified where", lists what was searched);
# `[odata] power_state_codes` overrides them.
DEFAULT_POWER_CODES: Tuple[str, ...] = (
    "unknown", "unknown", "off", "on", "suspended", "transitioning", "transitioning",
    "transitioning", "transitioning", "unmanaged", "unknown", "missing")

# The same enum serialised by name (OData v4's default for enums), lower-cased.
POWER_NAMES: Dict[str, str] = {
    "unknown": "unknown", "unavailable": "unknown", "off": "off", "on": "on",
    "suspended": "suspended", "turningon": "transitioning", "turningoff": "transitioning",
    "suspending": "transitioning", "resuming": "transitioning", "unmanaged": "unmanaged",
    "notsupported": "unknown", "virtualmachinenotfound": "missing"}

# RegistrationState: Unknown 0, Registered 1, Unregistered 2, as Citrix documents them in
# the Monitor API reference's table "Enums, error codes, and descriptions"
# (developer-docs.citrix.com/en-us/monitor-service-odata-api/current-release/api-reference/
# monitor-model; source citrix/monitoring-api docs/api-reference/Monitor.Model.md).
# `[odata] registered_codes` still overrides it.
DEFAULT_REGISTERED_CODES: Tuple[int, ...] = (1,)
KNOWN_REGISTRATION_CODES = (0, 1, 2)
REGISTRATION_NAMES = {"unknown": False, "registered": True, "unregistered": False}

HOST_NAME_MODES = ("short", "fqdn")

# Why a machine was skipped: a closed set, exported at 0 when empty.
SKIP_REASONS = ("not_object", "no_name", "bad_name", "bad_field", "duplicate")
# Fields whose unknown or unusable values are counted (the machine is kept).
VALUE_FIELDS = ("CurrentPowerState", "CurrentRegistrationState", "DesktopGroup.Name")

_IPV4 = re.compile(r"[0-9]+(?:\.[0-9]+){3}")
MAX_LABEL_LENGTH = 128  # the contract's default for label values
_SHOWN = 60  # characters of a hostile value a log line may show


class MalformedPage(ValueError):
    """The page as a whole is unusable (not an object, no `value` list, a bad next link)."""


@dataclass(frozen=True)
class Machine:
    host: str
    delivery_group: str
    maintenance: bool
    power: str  # one of POWER_STATES
    registered: bool


@dataclass(frozen=True)
class Problem:
    """One machine's problem: `kind` is "skip" (reason in SKIP_REASONS) or "value"
    (field in VALUE_FIELDS, the machine kept); `message` names the field and is safe to log."""
    kind: str
    key: str
    message: str


@dataclass(frozen=True)
class Options:
    host_name: str = "short"
    power_codes: Tuple[str, ...] = DEFAULT_POWER_CODES
    registered_codes: Tuple[int, ...] = DEFAULT_REGISTERED_CODES


@dataclass
class Page:
    machines: List[Machine] = field(default_factory=list)
    problems: List[Problem] = field(default_factory=list)
    next_link: Optional[str] = None
    entries: int = 0  # entries in `value`, usable or not


def shown(value: Any) -> str:
    """A value from the controller as a log line may show it: short, printable, quoted."""
    if isinstance(value, str):
        text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in value[:_SHOWN])
        return repr(text) + (f"... ({len(value)} characters)" if len(value) > _SHOWN else "")
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= 24 else f"a number of {len(text)} digits"
    return json_kind(value)


def host_name(entry: Dict[str, Any], mode: str) -> Tuple[Optional[str], Optional[Problem]]:
    """The machine's host name as the agent writes it: lower-case, no trailing dot, the
    short name (mode "short") or the FQDN ("fqdn"). From `DnsName`; in short mode a
    `Name` of the form DOMAIN\\host serves when `DnsName` is empty."""
    dns = entry.get("DnsName")
    if dns is not None and not isinstance(dns, str):
        return None, Problem("skip", "bad_field", f"DnsName must be a string, got {json_kind(dns)}")
    raw = (dns or "").strip()
    source = "DnsName"
    if not raw and mode == "short":
        name = entry.get("Name")
        if name is not None and not isinstance(name, str):
            return None, Problem("skip", "bad_field", f"Name must be a string, got {json_kind(name)}")
        raw = (name or "").rsplit("\\", 1)[-1].strip()
        source = "Name"
    if not raw:
        wanted = "DnsName (host_name = \"fqdn\")" if mode == "fqdn" else "DnsName or Name"
        return None, Problem("skip", "no_name", f"no usable name: {wanted} missing or empty")
    name = raw.rstrip(".").lower()
    if _IPV4.fullmatch(name) or ":" in name:
        return None, Problem("skip", "bad_name", f"{source} {shown(raw)} is an address, not a host name")
    if mode == "short":
        name = name.split(".", 1)[0]
    if not HOST_NAME_RE.match(name):
        return None, Problem("skip", "bad_name", f"{source} {shown(raw)} is not a valid host name")
    return name, None


def power_state(value: Any, codes: Tuple[str, ...]) -> Tuple[Optional[str], Optional[Problem]]:
    """(state, problem): state None means the field is unusable and the machine is skipped."""
    where = "CurrentPowerState"
    if value is None:
        return "unknown", Problem("value", where, f"{where} is null")
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(codes):
            return codes[value], None
        return "unknown", Problem("value", where, f"{where} {shown(value)} is not a known code")
    if isinstance(value, str):
        state = POWER_NAMES.get(value.lower())
        if state is not None:
            return state, None
        return "unknown", Problem("value", where, f"{where} {shown(value)} is not a known name")
    return None, Problem("skip", "bad_field", f"{where} must be an integer or a name, got {json_kind(value)}")


def registration(value: Any, registered_codes: Tuple[int, ...]) -> Tuple[Optional[bool], Optional[Problem]]:
    where = "CurrentRegistrationState"
    if value is None:
        return False, Problem("value", where, f"{where} is null")
    if isinstance(value, int) and not isinstance(value, bool):
        problem = None if value in KNOWN_REGISTRATION_CODES or value in registered_codes else \
            Problem("value", where, f"{where} {shown(value)} is not a known code")
        return value in registered_codes, problem
    if isinstance(value, str):
        known = REGISTRATION_NAMES.get(value.lower())
        if known is not None:
            return known, None
        return False, Problem("value", where, f"{where} {shown(value)} is not a known name")
    return None, Problem("skip", "bad_field", f"{where} must be an integer or a name, got {json_kind(value)}")


def delivery_group(entry: Dict[str, Any]) -> Tuple[str, Optional[Problem]]:
    """The expanded `DesktopGroup`'s `Name`; "" when the machine has none or it is unusable."""
    group = entry.get("DesktopGroup")
    if group is None:
        return "", None
    if not isinstance(group, dict):
        return "", Problem("value", "DesktopGroup.Name", f"DesktopGroup must be an object, got {json_kind(group)}")
    name = group.get("Name")
    if name is None:
        return "", None
    if not isinstance(name, str):
        return "", Problem("value", "DesktopGroup.Name", f"DesktopGroup.Name must be a string, got {json_kind(name)}")
    problem = label_problem(name, MAX_LABEL_LENGTH)
    if problem is not None:
        return "", Problem("value", "DesktopGroup.Name", f"DesktopGroup.Name {shown(name)} {problem[1]}")
    return name, None


def parse_machine(entry: Any, options: Options) -> Tuple[Optional[Machine], List[Problem]]:
    if not isinstance(entry, dict):
        return None, [Problem("skip", "not_object", f"entry must be an object, got {json_kind(entry)}")]
    host, problem = host_name(entry, options.host_name)
    if host is None:
        return None, [problem] if problem else []
    problems: List[Problem] = []
    maintenance = entry.get("IsInMaintenanceMode")
    if not isinstance(maintenance, bool):
        got = "null" if maintenance is None else json_kind(maintenance)
        return None, [Problem("skip", "bad_field", f"{host}: IsInMaintenanceMode must be true or false, got {got}")]
    power, problem = power_state(entry.get("CurrentPowerState"), options.power_codes)
    if problem is not None:
        problems.append(Problem(problem.kind, problem.key, f"{host}: {problem.message}"))
    if power is None:
        return None, problems
    registered, problem = registration(entry.get("CurrentRegistrationState"), options.registered_codes)
    if problem is not None:
        problems.append(Problem(problem.kind, problem.key, f"{host}: {problem.message}"))
    if registered is None:
        return None, problems
    group, problem = delivery_group(entry)
    if problem is not None:
        problems.append(Problem(problem.kind, problem.key, f"{host}: {problem.message}"))
    return Machine(host, group, maintenance, power, registered), problems


def parse_page(doc: Any, options: Options) -> Page:
    """One decoded JSON page; raises MalformedPage when the page as a whole is unusable."""
    if not isinstance(doc, dict):
        raise MalformedPage(f"the answer must be a JSON object, got {json_kind(doc)}")
    values = doc.get("value")
    if not isinstance(values, list):
        raise MalformedPage(f"value must be a list, got {json_kind(values)}")
    next_link = doc.get("@odata.nextLink")
    if next_link is not None and (not isinstance(next_link, str) or not next_link):
        raise MalformedPage(f"@odata.nextLink must be a non-empty string, got {shown(next_link)}")
    page = Page(next_link=next_link, entries=len(values))
    for i, entry in enumerate(values):
        machine, problems = parse_machine(entry, options)
        page.problems += [Problem(p.kind, p.key, f"value[{i}]: {p.message}") for p in problems]
        if machine is not None:
            page.machines.append(machine)
    return page
