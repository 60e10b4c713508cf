from __future__ import annotations

from collections import Counter

from agent.failover import Chooser, rank
from tests.conftest import FakeClock

URLS = ["http://c1:9847", "http://c2:9847", "http://c3:9847"]


def test_rank_is_deterministic_and_spreads_evenly() -> None:
    hosts = [f"vda-{i:04d}" for i in range(3000)]
    firsts = Counter(rank(URLS, h)[0] for h in hosts)
    assert rank(URLS, "vda-0001") == rank(list(reversed(URLS)), "vda-0001")
    assert rank(URLS, "VDA-0001") == rank(URLS, "vda-0001")
    assert all(900 < n < 1100 for n in firsts.values()), firsts


def test_removing_a_collector_moves_only_its_hosts() -> None:
    hosts = [f"vda-{i:04d}" for i in range(2000)]
    before = {h: rank(URLS, h)[0] for h in hosts}
    after = {h: rank(URLS[:2], h)[0] for h in hosts}
    moved = [h for h in hosts if before[h] != after[h]]
    assert moved and all(before[h] == URLS[2] for h in moved)


def test_fails_over_and_returns_when_first_choice_is_back() -> None:
    clock = FakeClock(0.0)
    c = Chooser(URLS, "vda-0001", retry_after=30, clock=clock)
    first, second, third = c.order
    assert c.candidates() == [first, second, third]
    c.failed(first)
    assert c.candidates()[0] == second
    clock.now += 10
    assert c.candidates()[0] == second  # not yet due a retry
    clock.now += 25
    assert c.candidates()[0] == first  # due: try the first choice again
    c.succeeded(first)
    assert c.candidates() == [first, second, third]


def test_all_failed_still_offers_every_url() -> None:
    clock = FakeClock(0.0)
    c = Chooser(URLS, "h", clock=clock)
    for u in URLS:
        c.failed(u)
    assert sorted(c.candidates()) == sorted(URLS)
