"""The renderer serves exactly what the store holds, whatever order ingest and scrapes come in."""

from __future__ import annotations

import json

from collector.exposition import family_parts
from collector.renderer import Renderer
from collector.store import HostStore
from contract.report import parse_report
from tests.conftest import FIXTURES, FakeClock

NOW = 1_796_083_200.0



def report(**changes):
    doc = json.loads((FIXTURES / "reports" / "vda-win-01.json").read_text())
    doc.update(changes)
    return parse_report(doc)


def text(renderer: Renderer) -> str:
    return b"".join(family_parts(renderer.columns())).decode()


def test_entries_the_renderer_was_not_told_of_are_rendered_at_the_scrape() -> None:
    clock = FakeClock(NOW)
    store = HostStore(clock=clock, monotonic=clock)
    store.restore([(clock.now - 5, report())])
    store.put(report(host="vda-win-02"))  # nobody calls stored(): the scrape still shows it
    exposition = text(Renderer(store))
    assert 'vdi_host_state{host="vda-win-01",site="City Hall"' in exposition
    assert 'vdi_host_cpus{host="vda-win-02",' in exposition


def test_a_late_render_of_an_older_entry_does_not_replace_the_newer() -> None:
    clock = FakeClock(NOW)
    store = HostStore(clock=clock, monotonic=clock)
    renderer = Renderer(store)
    old = store.put(report(delivery_group="Old Group"))
    clock.now += 20
    renderer.stored(store.put(report(delivery_group="New Group")))
    renderer.stored(old)  # a slow ingest thread finishing after a faster one
    exposition = text(renderer)
    assert 'delivery_group="New Group"' in exposition and "Old Group" not in exposition


def test_hosts_that_expire_or_are_released_leave_the_exposition() -> None:
    clock = FakeClock(NOW)
    store = HostStore(clock=clock, monotonic=clock, expire_after=100)
    renderer = Renderer(store)
    renderer.stored(store.put(report()))
    renderer.stored(store.put(report(host="vda-win-02")))
    assert "vda-win-02" in text(renderer)
    store.release("vda-win-02")
    assert "vda-win-02" not in text(renderer)
    clock.now += 101
    assert "vda-win-01" not in text(renderer)
    assert text(renderer) == ""


def test_live_families_follow_the_clock_not_the_render() -> None:
    clock = FakeClock(NOW)
    store = HostStore(clock=clock, monotonic=clock)
    renderer = Renderer(store)
    renderer.stored(store.put(report()))
    assert 'vdi_agent_up{host="vda-win-01",site="City Hall",delivery_group="Office Desktops"} 1' in text(renderer)
    clock.now += 46
    assert 'vdi_agent_up{host="vda-win-01",site="City Hall",delivery_group="Office Desktops"} 0' in text(renderer)


def test_store_and_renderer_agree_whatever_the_clock_says() -> None:
    """The renderer follows the order the store took entries in, not their clock readings: two ingest
    threads may read the clock in one order and take the store's lock in the other."""
    clock = FakeClock(NOW)
    store = HostStore(clock=clock, monotonic=clock)
    renderer = Renderer(store)
    first = store.put(report(delivery_group="Group A"))
    clock.now -= 5  # the second report's time was read before the first's
    second = store.put(report(delivery_group="Group B"))
    assert second.seen < first.seen
    renderer.stored(first)
    renderer.stored(second)
    exposition = b"".join(family_parts(renderer.columns())).decode()
    assert store.get("vda-win-01").report.delivery_group == "Group B"
    assert 'delivery_group="Group B"' in exposition and "Group A" not in exposition


def lines_of(exposition: str, host: str) -> set:
    return {line.split("{")[0] for line in exposition.splitlines() if f'host="{host}"' in line}


LIVENESS_ONLY = {"vdi_agent_up", "vdi_host_state", "vdi_agent_last_report_timestamp_seconds", "vdi_agent_info"}


def test_a_silent_host_serves_its_liveness_only_and_its_next_report_everything_again() -> None:
    clock = FakeClock(NOW)
    store = HostStore(clock=clock, monotonic=clock)
    renderer = Renderer(store)
    renderer.stored(store.put(report()))
    fresh = lines_of(text(renderer), "vda-win-01")
    assert {"vdi_sessions", "vdi_host_cpus", "vdi_host_memory_total_bytes"} <= fresh
    clock.now += 46  # three missed intervals of 15 s
    silent = text(renderer)
    assert lines_of(silent, "vda-win-01") == LIVENESS_ONLY
    assert 'vdi_agent_up{host="vda-win-01",site="City Hall",delivery_group="Office Desktops"} 0' in silent
    assert 'state="stale"} 1' in silent
    renderer.stored(store.put(report()))
    assert lines_of(text(renderer), "vda-win-01") == fresh


def test_a_host_that_said_goodbye_serves_no_readings_and_no_agent_up() -> None:
    clock = FakeClock(NOW)
    store = HostStore(clock=clock, monotonic=clock)
    renderer = Renderer(store)
    renderer.stored(store.put(report(goodbye=True)))
    # its slots stay: a powered-down pool desktop is still part of the pool's capacity
    assert lines_of(text(renderer), "vda-win-01") == LIVENESS_ONLY - {"vdi_agent_up"} | {"vdi_host_max_sessions"}


def test_a_host_found_silent_by_the_first_scrape_is_silent_there() -> None:
    """A restored snapshot's host, older than its stale limit, never served its old readings."""
    clock = FakeClock(NOW)
    store = HostStore(clock=clock, monotonic=clock)
    store.restore([(clock.now - 600, report())])
    assert lines_of(text(Renderer(store)), "vda-win-01") == LIVENESS_ONLY


def test_a_plain_sum_over_two_replicas_counts_a_failed_over_host_once() -> None:
    """The agent reported to replica A, then to B: once A's copy is stale, only B's readings are served."""
    clock = FakeClock(NOW)
    a, b = HostStore(clock=clock, monotonic=clock), HostStore(clock=clock, monotonic=clock)
    ra, rb = Renderer(a), Renderer(b)
    ra.stored(a.put(report()))
    for _ in range(4):
        clock.now += 15
        rb.stored(b.put(report()))

    def active(exposition: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines()
                   if line.startswith("vdi_sessions{") and 'state="active"' in line)

    one_copy = active(text(rb))
    assert one_copy > 0
    assert active(text(ra)) + active(text(rb)) == one_copy


def test_a_report_stored_while_a_scrape_starts_is_not_silenced_by_the_older_entry() -> None:
    """Ingest may store and render a host's new report between the scrape's copy of the store's entries and
    its lock: the scrape then holds the stale entry, the renderer the fresh one, and serves the fresh one.
    Judged by the stale entry, the fresh readings were silenced until the next scrape."""
    clock = FakeClock(NOW)
    store = HostStore(clock=clock, monotonic=clock)
    renderer = Renderer(store)
    renderer.stored(store.put(report()))
    fresh = lines_of(text(renderer), "vda-win-01")
    clock.now += 46  # stale
    assert lines_of(text(renderer), "vda-win-01") == LIVENESS_ONLY
    snapshot = store.entries

    def entries_then_a_report_arrives():
        taken = snapshot()
        renderer.stored(store.put(report()))  # another thread, before the scrape takes the renderer's lock
        return taken

    store.entries = entries_then_a_report_arrives  # type: ignore[method-assign]
    raced = text(renderer)
    store.entries = snapshot  # type: ignore[method-assign]
    assert lines_of(raced, "vda-win-01") == fresh
    assert 'vdi_agent_up{host="vda-win-01",site="City Hall",delivery_group="Office Desktops"} 1' in raced
