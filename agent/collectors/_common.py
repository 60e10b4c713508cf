"""Small helpers shared by the host collectors (not a collector: not in MODULES)."""

from __future__ import annotations

import logging
import platform
from typing import List

from agent.collectors import Context
from contract.report import CONTROL_RE, DEFAULT_LIMITS


def os_name(ctx: Context) -> str:
    """"windows", "linux", ...: the context's platform, else the running one."""
    return ctx.platform or platform.system().lower() or "unknown"


def fits_label(text: str, limit: int = DEFAULT_LIMITS.max_label_length) -> bool:
    """Whether `text` passes the contract as a label value.

    One odd mount point or interface name must cost its own entry, not the whole
    report: the collector refuses a report with any bad label value.
    """
    if not text or len(text) > limit or CONTROL_RE.search(text):
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from undecodable names
        return False
    return True


class FirstN:
    """Keeps the first `limit` names and says once, not every interval, that there were more."""

    def __init__(self, limit: int, what: str, log: logging.Logger):
        self.limit = limit
        self.what = what
        self.log = log
        self.warned = False

    def __call__(self, names: List[str]) -> List[str]:
        if len(names) <= self.limit:
            return names
        if not self.warned:
            self.warned = True
            self.log.warning("%d %s: reporting the first %d by name", len(names), self.what, self.limit)
        return names[:self.limit]
