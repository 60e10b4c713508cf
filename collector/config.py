"""The collector's configuration: `[collector]` and `[limits]` of collector.toml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from agent.configfile import checked, load
from agent.report import Limits

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
    log_level: str = checked("info", lambda v: v.lower() in ("debug", "info", "warning", "error"),
                             "must be one of debug, info, warning, error")


@dataclass(frozen=True)
class CollectorConfig:
    collector: CollectorSection = field(default_factory=CollectorSection)
    limits: Limits = field(default_factory=Limits)


def load_collector_config(path: Optional[str]) -> CollectorConfig:
    return load(path, CollectorConfig)


def parse_listen(value: str) -> tuple:
    """'HOST:PORT' or '[v6]:PORT' -> (host, port); ValueError with a readable message."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address must be HOST:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)
