"""The `[sessions]` and `[capacity]` settings the collectors read, with their defaults.

The collectors read only these attribute names from `ctx.config` (an
agent.config.AgentConfig, or any object with the same attributes), so that a
test can pass a types.SimpleNamespace and a context without config works.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Dict

SESSIONS_DEFAULTS: Dict[str, Any] = {
    "source": "auto", "idle_after": 1800.0, "max_listed": 500, "per_user_top": 0,
    "pseudonymize": True, "pseudonym_secret": "",
}
CAPACITY_DEFAULTS: Dict[str, Any] = {
    "max_sessions": 0, "accepting": True, "drain_file": "", "maintenance": False, "maintenance_file": "",
}


def section(config: Any, name: str, defaults: Dict[str, Any]) -> SimpleNamespace:
    """`config.<name>` as a namespace holding every key of `defaults`, missing ones defaulted."""
    found = getattr(config, name, None)
    return SimpleNamespace(**{key: getattr(found, key, default) for key, default in defaults.items()})


def site(config: Any) -> str:
    return str(getattr(getattr(config, "agent", None), "site", "default") or "default")
