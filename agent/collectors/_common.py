"""Small helpers shared by the host collectors (not a collector: not in MODULES)."""

from __future__ import annotations

import logging
from typing import List


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
