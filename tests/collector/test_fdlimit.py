"""The open-file limit against the connection cap: pure arithmetic, and a fake `resource` module."""

from __future__ import annotations

from collector.fdlimit import HEADROOM, INFINITY, connection_cap, fit_connections, wanted_soft_limit


class FakeLimits:
    RLIMIT_NOFILE = 7

    def __init__(self, soft: int, hard: int, refuse: bool = False):
        self.limits = (soft, hard)
        self.refuse = refuse
        self.asked = []

    def getrlimit(self, which: int):
        assert which == self.RLIMIT_NOFILE
        return self.limits

    def setrlimit(self, which: int, limits) -> None:
        self.asked.append(limits)
        if self.refuse:
            raise ValueError("not allowed")
        self.limits = limits


def test_wanted_soft_limit_goes_as_far_as_the_hard_limit_and_never_down() -> None:
    assert wanted_soft_limit(1024, 524288, 4352) == 4352
    assert wanted_soft_limit(1024, 2048, 4352) == 2048
    assert wanted_soft_limit(65536, 65536, 4352) == 65536
    assert wanted_soft_limit(1024, INFINITY, 4352) == 4352
    assert wanted_soft_limit(INFINITY, INFINITY, 4352) == INFINITY


def test_connection_cap_leaves_headroom() -> None:
    assert connection_cap(4096, 65536) == 4096
    assert connection_cap(4096, 1024) == 1024 - HEADROOM
    assert connection_cap(4096, 100) == 1
    assert connection_cap(4096, INFINITY) == 4096


def test_fit_raises_the_soft_limit_and_says_nothing_when_it_suffices() -> None:
    limits = FakeLimits(1024, 524288)
    assert fit_connections(4096, limits) == (4096, "")
    assert limits.asked == [(4096 + HEADROOM, 524288)]


def test_fit_lowers_the_cap_and_says_what_to_change_when_the_hard_limit_is_short() -> None:
    limits = FakeLimits(1024, 1024)  # the systemd default without LimitNOFILE=
    cap, warning = fit_connections(4096, limits)
    assert cap == 1024 - HEADROOM
    assert limits.asked == []
    assert "open-file limit is 1024" in warning and "LimitNOFILE=" in warning and str(4096 + HEADROOM) in warning
    refusing = FakeLimits(1024, 8192, refuse=True)
    assert fit_connections(4096, refusing)[0] == 1024 - HEADROOM


def test_without_rlimits_the_cap_stands() -> None:
    assert fit_connections(4096, None) == (4096, "")
