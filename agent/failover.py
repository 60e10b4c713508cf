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
from typing import Callable, Dict, List, Optional, Sequence

from agent.push import FAILED, STOPPED


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


class FailoverPusher:
    """Pushes through the host's preferred collector, moving down its ranking on failures.

    Each candidate gets an equal share of the time left before the next
    collection, so a dead first choice still leaves time for the next one within
    the same interval. A refusal (4xx) is an answer, not a failure: the report is
    not sent elsewhere, since every replica checks reports the same way.
    """

    def __init__(self, urls: Sequence[str], host: str, *, pushers: Dict[str, "object"],
                 chooser: Optional[Chooser] = None, chooser_cache: Optional[Dict[str, Chooser]] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.pushers = pushers
        if chooser is None and chooser_cache is not None:
            chooser = chooser_cache.get(host)
            if chooser is None:
                chooser = chooser_cache[host] = Chooser(urls, host)
        self.chooser = chooser or Chooser(urls, host)
        self.clock = clock

    @property
    def url(self) -> str:
        return ", ".join(self.chooser.order)

    def close(self) -> None:
        for pusher in self.pushers.values():
            pusher.close()

    def push(self, report: dict, deadline: float, sleep=None):
        """Each pusher returns before its share of the time ends, so the whole push returns
        before `deadline`; a stop request ends it without trying the next collector."""
        candidates = self.chooser.candidates()
        result = None
        for i, url in enumerate(candidates):
            left = deadline - self.clock()
            if left <= 0:
                break
            share = deadline if i == len(candidates) - 1 else self.clock() + left / (len(candidates) - i)
            result = self.pushers[url].push(report, share, sleep)
            if result.outcome == STOPPED:
                return result
            if result.outcome == FAILED:
                self.chooser.failed(url)
                continue
            self.chooser.succeeded(url)
            return result
        return result
