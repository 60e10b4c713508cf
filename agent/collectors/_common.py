"""Small helpers shared by the host collectors (not a collector: not in MODULES)."""

from __future__ import annotations

import platform
import re

from agent.collectors import Context
from agent.report import DEFAULT_LIMITS

# What agent.report refuses in a label value (control characters, line breaks).
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def os_name(ctx: Context) -> str:
    """"windows", "linux", ...: the context's platform, else the running one."""
    return ctx.platform or platform.system().lower() or "unknown"


def fits_label(text: str, limit: int = DEFAULT_LIMITS.max_label_length) -> bool:
    """Whether `text` passes the contract as a label value.

    One odd mount point or interface name must cost its own entry, not the whole
    report: the collector refuses a report with any bad label value.
    """
    if not text or len(text) > limit or _CONTROL_RE.search(text):
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from undecodable names
        return False
    return True
