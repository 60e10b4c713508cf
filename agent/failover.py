"""Which collector an agent reports to when there are several.

Each agent ranks the collector URLs by rendezvous (highest-random-weight)
hashing of its own host name: the fleet spreads evenly and deterministically,
and when a collector is added or removed only the hosts that ranked it first
move. The agent reports to the first healthy URL in its ranking; after a
failure it moves down the list, and it goes back to its first choice once that
one answers again (tried again at most every `retry_after` seconds).
"""

from __future__ import annotations

import hashlib
import time
from typing import Callable, Dict, List, Sequence


def weight(url: str, host: str) -> int:
    digest = hashlib.blake2b(f"{url}\x00{host.lower()}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rank(urls: Sequence[str], host: str) -> List[str]:
    """`urls` in this host's order of preference."""
    return sorted(urls, key=lambda u: (-weight(u, host), u))


class Chooser:
    def __init__(self, urls: Sequence[str], host: str, retry_after: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        if not urls:
            raise ValueError("at least one collector URL is required")
        self.order = rank(list(dict.fromkeys(urls)), host)
        self.retry_after = retry_after
        self.clock = clock
        self._failed_at: Dict[str, float] = {}

    def candidates(self) -> List[str]:
        """URLs to try now, best first: healthy ones in rank order, then failed ones due a retry,
        then the rest, so that a report is never dropped only because every collector failed once."""
        now = self.clock()
        healthy = [u for u in self.order if u not in self._failed_at]
        due = [u for u in self.order if u in self._failed_at and now - self._failed_at[u] >= self.retry_after]
        rest = [u for u in self.order if u in self._failed_at and u not in due]
        due_first = [u for u in due if self.order.index(u) < self.order.index(healthy[0])] if healthy else due
        due_later = [u for u in due if u not in due_first]
        return due_first + healthy + due_later + rest

    def succeeded(self, url: str) -> None:
        self._failed_at.pop(url, None)

    def failed(self, url: str) -> None:
        self._failed_at[url] = self.clock()

    @property
    def preferred(self) -> str:
        return self.order[0]
