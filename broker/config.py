"""vdiwatch-broker's configuration: broker.toml through the contract's loader.

Secrets (`password`, `client_secret`) may come from `<key>_file` or `<key>_env`
and are never shown in an error or a log line. An authentication method whose
Python package is missing is a configuration error naming the package.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import List, Optional, Tuple
from urllib.parse import urlsplit

from broker.odata import DEFAULT_POWER_CODES, DEFAULT_REGISTERED_CODES, HOST_NAME_MODES, POWER_STATES
from contract.configfile import ConfigError, checked, load, secret

LOG_LEVELS = ("debug", "info", "warning", "error")
AUTH_METHODS = ("none", "ntlm", "negotiate", "citrix_cloud")

# Which importable module each method needs, first found wins, and the extra that installs it.
AUTH_LIBRARIES = {
    "ntlm": (("requests_ntlm",), "broker-ntlm"),
    # Windows: SSPI, the service account's own logon (no password in any file);
    # elsewhere GSSAPI or Kerberos with a keytab.
    "negotiate": (("requests_negotiate_sspi", "requests_gssapi", "requests_kerberos"), "broker-negotiate"),
}
CLOUD_TOKEN_URL = "https://api-us.cloud.com/cctrustoauth2/{customer_id}/tokens/clients"


@dataclass(frozen=True)
class BrokerSection:
    listen: str = "127.0.0.1:9848"
    log_level: str = checked("info", lambda v: v.lower() in LOG_LEVELS, f"must be one of {', '.join(LOG_LEVELS)}")
    interval: float = checked(60.0, lambda v: 1.0 <= v <= 3600.0, "must be between 1 and 3600 seconds")
    hold: float = checked(900.0, lambda v: 0.0 <= v <= 86400.0, "must be between 0 and 86400 seconds")
    host_name: str = checked("short", lambda v: v in HOST_NAME_MODES, "must be \"short\" or \"fqdn\"")


@dataclass(frozen=True)
class ODataSection:
    url: str = ""
    filter: str = "LifecycleState eq 0"
    expand: str = "DesktopGroup($select=Name)"
    page_size: int = checked(0, lambda v: 0 <= v <= 10000, "must be between 0 (server-driven) and 10000")
    timeout: float = checked(30.0, lambda v: 0.1 <= v <= 600.0, "must be between 0.1 and 600 seconds")
    poll_timeout: float = checked(120.0, lambda v: 0.1 <= v <= 3600.0, "must be between 0.1 and 3600 seconds")
    max_response_bytes: int = checked(16 * 1024 * 1024, lambda v: 1024 <= v <= 1024 ** 3,
                                      "must be between 1024 and 1073741824")
    max_pages: int = checked(1000, lambda v: 1 <= v <= 100000, "must be between 1 and 100000")
    max_machines: int = checked(50000, lambda v: 1 <= v <= 1000000, "must be between 1 and 1000000")
    ca_file: str = ""
    verify_tls: bool = True
    power_state_codes: Tuple[str, ...] = checked(
        DEFAULT_POWER_CODES, lambda v: all(s in POWER_STATES for s in v), f"must be from {', '.join(POWER_STATES)}")
    registered_codes: Tuple[int, ...] = checked(
        DEFAULT_REGISTERED_CODES, lambda v: all(0 <= c <= 1000 for c in v), "must be codes from 0 to 1000")


@dataclass(frozen=True)
class AuthSection:
    method: str = checked("negotiate", lambda v: v in AUTH_METHODS, f"must be one of {', '.join(AUTH_METHODS)}")
    username: str = ""  # ntlm: DOMAIN\user
    password: str = secret()
    customer_id: str = ""  # citrix_cloud
    client_id: str = ""
    client_secret: str = secret()
    token_url: str = CLOUD_TOKEN_URL


@dataclass(frozen=True)
class BrokerConfig:
    broker: BrokerSection = BrokerSection()
    odata: ODataSection = ODataSection()
    auth: AuthSection = AuthSection()

    def problems(self) -> List[str]:
        """What is wrong across keys; each names its key, none shows a secret."""
        b, o, a = self.broker, self.odata, self.auth
        out: List[str] = []
        try:
            parse_listen(b.listen)
        except ValueError as e:
            out.append(f"broker.listen: {e}")
        # citrix_cloud sends its bearer token with every page: a credential, like the token request's secret
        url_problem = _url_problem(o.url, https_only=a.method == "citrix_cloud")
        if url_problem:
            out.append(f"odata.url: {url_problem}")
        if o.timeout > o.poll_timeout:
            out.append("odata.timeout: must not be longer than odata.poll_timeout")
        if b.hold and b.hold < b.interval:
            out.append("broker.hold: must be 0 (drop at the first failed poll) or at least broker.interval")
        if not o.power_state_codes:
            out.append("odata.power_state_codes: must not be empty")
        if a.method == "ntlm" and not (a.username and a.password):
            out.append("auth: method \"ntlm\" needs username and password (or password_file / password_env)")
        if a.method == "citrix_cloud":
            for key in ("customer_id", "client_id", "client_secret"):
                if not getattr(a, key):
                    out.append(f"auth.{key}: is required for method \"citrix_cloud\"")
            token = a.token_url.replace("{customer_id}", a.customer_id or "x")
            problem = _url_problem(token, https_only=True)
            if problem:
                out.append(f"auth.token_url: {problem}")
        library = auth_library_problem(a.method)
        if library:
            out.append(f"auth.method: {library}")
        return out


def auth_library(method: str):
    """The module the method needs, imported; None when none of its packages is installed."""
    names, _extra = AUTH_LIBRARIES.get(method, ((), ""))
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def auth_library_problem(method: str) -> Optional[str]:
    if method not in AUTH_LIBRARIES or auth_library(method) is not None:
        return None
    names, extra = AUTH_LIBRARIES[method]
    packages = " or ".join(n.replace("_", "-") for n in names)
    return (f"method \"{method}\" needs the Python package {packages}, which is not installed "
            f"(pip install 'vdiwatch[{extra}]')")


def _url_problem(url: str, https_only: bool = False) -> Optional[str]:
    if not url:
        return "is required (e.g. https://ddc01.example/Citrix/Monitor/OData/v4/Data)"
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "has a bad port"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.username or parts.password:
        return "must not carry a user or password (use [auth])"
    if parts.query or parts.fragment:
        return "must not carry a query or fragment (the broker builds the query)"
    if https_only and parts.scheme != "https" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return "must be https:// (it carries the client secret or token)"
    return None


def parse_listen(value: str) -> Tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be HOST:PORT, got {value!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)


def load_broker_config(path: Optional[str], env: Optional[dict] = None) -> BrokerConfig:
    """Read broker.toml; ConfigError names every bad key at once."""
    config = load(path, BrokerConfig, env=env)
    problems = config.problems()
    if problems:
        raise ConfigError(str(path or "built-in defaults"), problems)
    return config
