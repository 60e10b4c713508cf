"""The agent's configuration: `[agent]`, `[sessions]` and `[capacity]` of agent.toml.

Every key has a default, so the agent runs with no file at all (reporting to a
collector on 127.0.0.1). Values that end up in every report (site, delivery
group, host) are checked here against the report contract, so that a typo is
a clear error at start, not a report refused by the collector every interval.

The host name is deliberately not resolved when the file is read: with `host`
unset, `resolve_host` asks the OS at every start, so that a master image
(Citrix MCS/PVS, a VDI template) never carries one machine's name to its clones.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from contract.configfile import ConfigError, checked, load, secret
from contract.report import DEFAULT_LIMITS, HOST_NAME_RE, LOG_LEVELS, READINGS, fits_label

# What an HTTP header can carry as a bearer token: printable ASCII, no spaces (RFC 6750's b64token and more).
TOKEN_RE = re.compile(r"[\x21-\x7e]+")

DEFAULT_COLLECTOR_URL = "http://127.0.0.1:9847"

SESSION_SOURCES = ("auto", "windows", "logind", "utmp")
# The collectors, in report order: one per reading of the contract (agent/collectors/<name>.py).
COLLECTORS = READINGS


def is_collector_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query and not parts.fragment


def is_host_name(value: str) -> bool:
    return bool(HOST_NAME_RE.match(value))


def is_label(value: str) -> bool:
    """A value the collector accepts as a label: 1-128 characters, no control characters."""
    return fits_label(value)


MAX_ALLOWED_APPS = 32
MAX_TOP_APPS = DEFAULT_LIMITS.max_apps - 1 - MAX_ALLOWED_APPS  # allowlist + top + "other" fit the contract's cap


# What agent.sessions.processes.app_name writes (tests hold the two together); "other" is taken.
APP_RE = re.compile(r"[a-z0-9+-](?:[a-z0-9._+-]{0,30}[a-z0-9+-])?")


def _is_app(value: str) -> bool:
    return bool(APP_RE.fullmatch(value)) and value != "other"


def _collector_names(names: Tuple[str, ...]) -> bool:
    return all(n in COLLECTORS for n in names)


def _is_root(value: str) -> bool:
    return bool(value) and not value.endswith(("/", "\\")) or value == "/"


@dataclass(frozen=True)
class AgentSection:
    collector_url: str = checked(DEFAULT_COLLECTOR_URL, is_collector_url,
                                 "must be an http:// or https:// URL such as http://collector:9847")
    collector_urls: Tuple[str, ...] = checked(
        (), lambda urls: all(is_collector_url(u) for u in urls),
        "must list http:// or https:// URLs; with several, each host picks one by rendezvous hashing "
        "and fails over to the next")
    interval: float = checked(15.0, lambda v: 1.0 <= v <= 86400.0, "must be a number of seconds from 1 to 86400")
    host: str = checked("", lambda v: not v or is_host_name(v),
                        "must be empty (the OS's host name) or a host name: letters, digits, '.', '-', '_'")
    site: str = checked("default", is_label, "must be 1 to 128 characters without control characters")
    delivery_group: str = checked("default", is_label, "must be 1 to 128 characters without control characters")
    timeout: float = checked(5.0, lambda v: 0 < v <= 300, "must be a number of seconds from 0 to 300")
    token: str = secret()
    ca_file: str = ""
    disabled_collectors: Tuple[str, ...] = checked((), _collector_names,
                                                   f"must list collector names ({', '.join(COLLECTORS)})")
    log_level: str = checked("info", lambda v: v.lower() in LOG_LEVELS, f"must be one of {', '.join(LOG_LEVELS)}")
    # Where the Linux collectors read the OS, as node_exporter's --path.procfs: a containerised
    # agent points them at the host's folders mounted elsewhere (/host/proc, /host/run).
    proc_root: str = checked("/proc", _is_root, "must be a folder, without a trailing slash")
    dev_root: str = checked("/dev", _is_root, "must be a folder, without a trailing slash")
    run_root: str = checked("/run", _is_root, "must be a folder, without a trailing slash (logind's "
                            "sessions are read under <run_root>/systemd/sessions)")

    @property
    def urls(self) -> Tuple[str, ...]:
        """The collectors this agent reports to, in configured order: `collector_urls`, else `collector_url`."""
        return self.collector_urls or (self.collector_url,)


@dataclass(frozen=True)
class SessionsSection:
    source: str = checked("auto", lambda v: v in SESSION_SOURCES, f"must be one of {', '.join(SESSION_SOURCES)}")
    idle_after: float = checked(1800.0, lambda v: v > 0, "must be a number of seconds > 0")
    max_listed: int = checked(500, lambda v: 0 <= v <= DEFAULT_LIMITS.max_sessions_listed,
                              f"must be an integer from 0 to {DEFAULT_LIMITS.max_sessions_listed}")
    per_user_top: int = checked(0, lambda v: 0 <= v <= DEFAULT_LIMITS.max_top_users,
                                f"must be an integer from 0 (off) to {DEFAULT_LIMITS.max_top_users}")
    pseudonymize: bool = True
    pseudonym_secret: str = secret()
    # Per-application use: these apps always, plus the top N by CPU, the rest as "other" (both off: none).
    apps: Tuple[str, ...] = checked((), lambda v: len(v) <= MAX_ALLOWED_APPS and all(_is_app(a) for a in v),
                                    f"must list at most {MAX_ALLOWED_APPS} application names as the agent writes "
                                    "them: lower case, without .exe, only a-z 0-9 . _ + - (\"outlook\", \"winword\")")
    top_apps: int = checked(10, lambda v: 0 <= v <= MAX_TOP_APPS, f"must be an integer from 0 (off) to {MAX_TOP_APPS}")


@dataclass(frozen=True)
class CapacitySection:
    max_sessions: int = checked(0, lambda v: 0 <= v <= 10**6, "must be an integer from 0 (unset) to 1000000")
    accepting: bool = True
    drain_file: str = ""
    maintenance: bool = False
    maintenance_file: str = ""


@dataclass(frozen=True)
class AgentConfig:
    agent: AgentSection = field(default_factory=AgentSection)
    sessions: SessionsSection = field(default_factory=SessionsSection)
    capacity: CapacitySection = field(default_factory=CapacitySection)

    def problems(self) -> List[str]:
        """Checks that need more than one key, or the file system."""
        out = []
        a = self.agent
        if a.token and not TOKEN_RE.fullmatch(a.token):  # never shown: it may hold two tokens, or a password
            out.append(f"agent.token (or token_file, token_env): must be one token of printable ASCII without "
                       f"spaces or line breaks; got {len(a.token)} characters"
                       + (" on more than one line" if "\n" in a.token or "\r" in a.token else ""))
        if a.ca_file and not os.path.isfile(a.ca_file):
            out.append(f"agent.ca_file: {a.ca_file} is not a file")
        return out


def load_agent_config(path: Optional[str], env: Optional[dict] = None) -> AgentConfig:
    """Read agent.toml (None: the built-in defaults); ConfigError names every bad key.

    Relative paths in the file (ca_file, drain_file, maintenance_file) are taken
    relative to the file's folder, as token_file is: a service's working folder
    is rarely the one the operator had in mind.
    """
    config = load(path, AgentConfig, env=env)
    if path is not None:
        base = Path(path).parent
        a, c = config.agent, config.capacity
        config = dataclasses.replace(
            config,
            agent=dataclasses.replace(a, ca_file=_under(base, a.ca_file)),
            capacity=dataclasses.replace(c, drain_file=_under(base, c.drain_file),
                                         maintenance_file=_under(base, c.maintenance_file)))
    problems = config.problems()
    if problems:
        raise ConfigError(str(path or "built-in defaults"), problems)
    return config


def _under(base: Path, value: str) -> str:
    return str(base / value) if value and not Path(value).is_absolute() else value


def resolve_host(configured: str, gethostname: Callable[[], str] = socket.gethostname) -> str:
    """The host name reports carry: the configured one, else the OS's short name, lower-cased.

    "VDA-WIN-01.corp.example" becomes "vda-win-01": Windows and DNS disagree on
    case, and the domain adds nothing to a label. Raises ValueError when the OS
    name is not a valid host name for the contract (set `host` then).
    """
    if configured:
        return configured
    name = gethostname().split(".", 1)[0].strip().lower()
    if not is_host_name(name):
        raise ValueError(f"the OS host name {name!r} cannot be used in reports; set host in [agent]")
    return name


# Per-machine identity, for master images (Citrix MCS/PVS, VDI templates): the
# config file is baked into the image and the same on every clone, so the site
# and delivery group of a machine catalog come from outside the file.
ENV_SITE = "VDIWATCH_SITE"
ENV_DELIVERY_GROUP = "VDIWATCH_DELIVERY_GROUP"
REGISTRY_KEY = r"SOFTWARE\vdiwatch"  # under HKEY_LOCAL_MACHINE; values Site and DeliveryGroup


def machine_overrides(config: AgentConfig, env: Optional[Mapping[str, str]] = None,
                      registry: Optional[Callable[[str], Optional[str]]] = None) -> AgentConfig:
    """Site and delivery group from the machine: the registry (Windows, e.g. set by a GPO per
    machine catalog's OU), then the environment, each overriding what came before."""
    env = os.environ if env is None else env
    changes: Dict[str, Any] = {}
    for key, value_name, variable in (("site", "Site", ENV_SITE),
                                      ("delivery_group", "DeliveryGroup", ENV_DELIVERY_GROUP)):
        value = registry(value_name) if registry is not None else None
        source = f"HKLM\\{REGISTRY_KEY}\\{value_name}"
        if env.get(variable):
            value, source = env[variable], f"${variable}"
        if value is None:
            continue
        value = value.strip()
        if not is_label(value):
            raise ConfigError(source, [f"must be 1 to 128 characters without control characters, got {value!r}"])
        changes[key] = value
    if not changes:
        return config
    return dataclasses.replace(config, agent=dataclasses.replace(config.agent, **changes))


def windows_registry_value(name: str, winreg: Any = None) -> Optional[str]:
    """A string value under HKLM\\SOFTWARE\\vdiwatch, or None (also on systems without a registry).

    Read from the 64-bit view (KEY_WOW64_64KEY): a 32-bit Python would otherwise be
    redirected to SOFTWARE\\WOW6432Node\\vdiwatch, where a GPO or `reg add` did not write.
    """
    if winreg is None:
        try:
            import winreg
        except ImportError:
            return None
    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, REGISTRY_KEY, 0,
                            winreg.KEY_READ | winreg.KEY_WOW64_64KEY) as key:
            value, kind = winreg.QueryValueEx(key, name)
    except OSError:
        return None
    return value if kind in (winreg.REG_SZ, winreg.REG_EXPAND_SZ) and isinstance(value, str) else None


def load_machine_config(path: Optional[str], env: Optional[Mapping[str, str]] = None,
                        registry: Callable[[str], Optional[str]] = windows_registry_value) -> AgentConfig:
    """The agent's configuration as this machine runs it: the file (None: built-in defaults),
    then the per-machine site and delivery group (registry, environment).

    The only way the command line, `--check-config` and the Windows service load their
    config, so that the installer's check sees the identity the service reports with.
    """
    env = os.environ if env is None else env
    return machine_overrides(load_agent_config(path, env=dict(env)), env=env, registry=registry)
