"""Keep, then drop: the last good poll is served while polls fail, for broker.hold at most."""

from __future__ import annotations

from collections import Counter

from broker.odata import Machine
from broker.state import BrokerState
from tests.conftest import FakeClock

MACHINES = {"vda-02": Machine("vda-02", "Office", True, "on", True),
            "vda-04": Machine("vda-04", "Pooled", False, "off", False)}


def test_last_good_state_is_held_then_dropped(caplog) -> None:
    clock = FakeClock(1000.0)
    state = BrokerState(hold=300.0, clock=clock)
    assert state.view().machines == () and not state.view().up and state.view().last_success == 0
    state.succeeded(MACHINES, 0.2, Counter(no_name=1), Counter())
    v = state.view()
    assert v.up and [m.host for m in v.machines] == ["vda-02", "vda-04"] and v.skipped == {"no_name": 1}
    clock.advance(60)
    state.failed("timeout", 30.0)
    v = state.view()
    assert not v.up and v.held and len(v.machines) == 2 and v.failures["timeout"] == 1
    assert v.last_success == 1000.0
    clock.advance(240)  # 300 s after the last success: still held
    assert len(state.view().machines) == 2
    clock.advance(1)
    state.failed("connect", 1.0)
    v = state.view()
    assert v.machines == () and not v.held and v.failures == {**v.failures, "timeout": 1, "connect": 1}
    assert "dropping the 2 machine(s)" in caplog.text
    state.succeeded({"vda-02": MACHINES["vda-02"]}, 0.1, Counter(), Counter())
    assert [m.host for m in state.view().machines] == ["vda-02"] and state.view().up


def test_drop_happens_at_scrape_time_even_without_a_poll() -> None:
    clock = FakeClock(1000.0)
    state = BrokerState(hold=120.0, clock=clock)
    state.succeeded(MACHINES, 0.1, Counter(), Counter())
    state.failed("timeout", 1.0)
    clock.advance(500)  # the poll loop is stuck; a scrape must not show the old state
    assert state.view().machines == ()


def test_hold_zero_drops_at_the_first_failure() -> None:
    clock = FakeClock(1000.0)
    state = BrokerState(hold=0.0, clock=clock)
    state.succeeded(MACHINES, 0.1, Counter(), Counter())
    clock.advance(0.001)
    state.failed("auth", 0.1)
    assert state.view().machines == ()
