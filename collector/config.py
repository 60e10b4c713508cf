"""The collector's configuration: `[collector]` and `[limits]` of collector.toml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

from collector.auth import TokenScope, is_valid_sha256, parse_password_hash
from contract.configfile import ConfigError, checked, load, secret
from contract.report import LOG_LEVELS, Limits

DEFAULT_LISTEN = "127.0.0.1:9847"


def _positive(value: float) -> bool:
    return value > 0


@dataclass(frozen=True)
class CollectorSection:
    listen: str = DEFAULT_LISTEN
    expire_after: float = checked(86400.0, _positive, "must be a number of seconds > 0")
    stopped_expire_after: float = checked(3600.0, _positive, "must be a number of seconds > 0")
    missed_intervals: int = checked(3, _positive, "must be an integer > 0")
    max_hosts: int = checked(100_000, _positive, "must be an integer > 0")
    max_body_bytes: int = checked(1 << 20, _positive, "must be an integer > 0")
    max_decompressed_bytes: int = checked(8 << 20, _positive, "must be an integer > 0")
    max_json_depth: int = checked(16, _positive, "must be an integer > 0")
    request_timeout: float = checked(10.0, _positive, "must be a number of seconds > 0")
    header_timeout: float = checked(5.0, _positive, "must be a number of seconds > 0")
    max_connections: int = checked(4096, _positive, "must be an integer > 0")
    max_connections_per_address: int = checked(256, _positive, "must be an integer > 0")
    min_report_interval: float = checked(1.0, lambda v: v >= 0, "must be a number of seconds >= 0")
    snapshot_file: str = ""
    snapshot_interval: float = checked(30.0, _positive, "must be a number of seconds > 0")
    log_level: str = checked("info", lambda v: v.lower() in LOG_LEVELS, f"must be one of {', '.join(LOG_LEVELS)}")


def _token_list(tokens: Tuple[TokenScope, ...]) -> bool:
    return all(is_valid_sha256(t.sha256) and t.site for t in tokens)


@dataclass(frozen=True)
class AuthSection:
    tokens: Tuple[TokenScope, ...] = checked(
        (), _token_list, "every token needs sha256 (64 hex digits, from `vdiwatch-collector token`) and site",
        sensitive=True)
    insecure: bool = False
    scrape_bearer_sha256: str = checked("", lambda v: not v or is_valid_sha256(v), "must be 64 hex digits",
                                        sensitive=True)
    scrape_basic_user: str = ""
    scrape_basic_password_hash: str = secret()


@dataclass(frozen=True)
class TlsSection:
    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""


@dataclass(frozen=True)
class CollectorConfig:
    collector: CollectorSection = field(default_factory=CollectorSection)
    limits: Limits = field(default_factory=Limits)
    auth: AuthSection = field(default_factory=AuthSection)
    tls: TlsSection = field(default_factory=TlsSection)

    def problems(self) -> list:
        """Cross-key checks that one key alone cannot make."""
        out = []
        a, t = self.auth, self.tls
        if a.scrape_basic_password_hash and parse_password_hash(a.scrape_basic_password_hash) is None:
            out.append("auth.scrape_basic_password_hash: must come from `vdiwatch-collector hash-password`")
        if bool(a.scrape_basic_user) != bool(a.scrape_basic_password_hash):
            out.append("auth.scrape_basic_user and auth.scrape_basic_password_hash go together")
        if bool(t.cert_file) != bool(t.key_file):
            out.append("tls.cert_file and tls.key_file go together")
        if t.client_ca_file and not t.cert_file:
            out.append("tls.client_ca_file needs tls.cert_file and tls.key_file")
        return out


def load_collector_config(path: Optional[str]) -> CollectorConfig:
    config = load(path, CollectorConfig)
    problems = config.problems()
    if problems:
        raise ConfigError(str(path or "built-in defaults"), problems)
    return config


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def parse_listen(value: str) -> tuple:
    """'HOST:PORT' or '[v6]:PORT' -> (host, port); ValueError with a readable message."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address must be HOST:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)
