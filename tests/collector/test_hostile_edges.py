"""Hostile edges of ownership, expiry, bounded answers and concurrent ingest: each test once reproduced
a defect, now fixed."""

from __future__ import annotations

import gzip
import json
import logging

from collector.answers import Request
from collector.auth import PushAuth, TokenScope, hash_token
from collector.exposition import family_parts
from collector.renderer import Renderer
from collector.selfmetrics import SelfMetrics
from collector.server import Api
from collector.store import HostStore
from contract.report import parse_report
from tests.conftest import FIXTURES

CITY_HALL = "vdw_city-hall-vda"
HARBOR = "vdw_harbor-everything"
SCOPES = (
    TokenScope(hash_token(CITY_HALL), "City Hall", hosts="vda-*", name="city hall vdas"),
    TokenScope(hash_token(HARBOR), "Harbor", hosts="*", name="harbor"),
)
GOOD = json.loads((FIXTURES / "reports" / "vda-win-01.json").read_text())  # City Hall, vda-win-01


class Clock:
    def __init__(self) -> None:
        self.now = 1_796_083_200.0

    def __call__(self) -> float:
        return self.now


def make_api(clock: Clock, **store_kw) -> Api:
    store = HostStore(clock=clock, monotonic=clock, **store_kw)
    return Api(store, SelfMetrics(store, process_metrics=False), clock=clock, push_auth=PushAuth(SCOPES),
               min_report_interval=1.0)


def push(api: Api, token: str, doc=None, gz: bool = False, **changes):
    doc = dict(GOOD if doc is None else doc, **changes)
    body = json.dumps(doc).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
    if gz:
        body = gzip.compress(body)
        headers["content-encoding"] = "gzip"
    return api.handle(Request("POST", "/api/v1/reports", headers, body))


def host_api(api: Api, host: str = "vda-win-01"):
    response = api.handle(Request("GET", f"/api/v1/hosts/{host}"))
    return response.status, json.loads(response.payload())


# -- 1. ownership outlives expiry until the 60 s sweep (or a scrape) -------------------------

def test_expired_host_is_not_owned_any_more() -> None:
    clock = Clock()
    api = make_api(clock, expire_after=100)
    assert push(api, CITY_HALL).status == 200
    clock.now += 101  # past expire_after; no /metrics scrape and no 60 s sweep yet
    status, answer = host_api(api)
    assert status == 404  # the hosts API already says the collector holds no report from it
    moved = push(api, HARBOR, site="Harbor")
    assert moved.status == 200, moved.payload()  # docs: "ownership ... ends when the host expires"


# -- 2. last_rejection of the old owner survives a release and shows on the new owner's host --

def test_released_host_does_not_carry_the_old_sites_rejection() -> None:
    clock = Clock()
    api = make_api(clock)
    assert push(api, CITY_HALL).status == 200
    clock.now += 5
    assert push(api, CITY_HALL, timestamp_seconds="city hall secret detail").status == 400
    assert host_api(api)[1]["host"]["last_rejection"]["reason"] == "wrong_type"
    release = Request("DELETE", "/api/v1/hosts/vda-win-01", {"authorization": f"Bearer {CITY_HALL}"})
    assert api.handle(release).status == 200
    clock.now += 5
    assert push(api, HARBOR, site="Harbor").status == 200
    status, answer = host_api(api)
    assert (status, answer["host"]["site"]) == (200, "Harbor")
    assert answer["host"]["last_rejection"] is None, answer["host"]["last_rejection"]


# -- 3. integer range messages echo up to 4,300 digits: a tiny gzip body, a huge answer --------

def test_out_of_range_integers_do_not_blow_up_the_answer() -> None:
    clock = Clock()
    api = make_api(clock)
    huge = int("9" * 4000)
    doc = json.loads(json.dumps(GOOD))
    sessions = doc["readings"]["sessions"]
    sessions["counts"] = {s: {p: huge for p in ("ica", "rdp", "console", "ssh", "other")}
                          for s in ("active", "idle", "disconnected", "connecting", "other")}
    sessions["users"] = sessions["total"] = huge
    body = gzip.compress(json.dumps(doc).encode())
    assert len(body) < 2_000  # what the attacker sends
    response = push(api, CITY_HALL, doc, gz=True)
    assert response.status == 400
    rejection = api.store.last_rejection("vda-win-01")
    assert len(rejection[2]) < 300, len(rejection[2])  # kept per host, up to 10,000 hosts
    assert len(response.payload()) < 32_768, len(response.payload())  # "an answer of a few kilobytes"


# -- 4. the renderer keeps the entry the store kept, whatever order ingest threads finish in ---

def test_store_and_renderer_agree_whatever_the_clock_says() -> None:
    """The renderer follows the order the store took entries in, not their clock readings: two ingest
    threads may read the clock in one order and take the store's lock in the other."""
    clock = Clock()
    store = HostStore(clock=clock, monotonic=clock)
    renderer = Renderer(store)
    doc = json.loads(json.dumps(GOOD))
    first = store.put(parse_report(dict(doc, delivery_group="Group A")))
    clock.now -= 5  # the second report's time was read before the first's
    second = store.put(parse_report(dict(doc, delivery_group="Group B")))
    assert second.seen < first.seen
    renderer.stored(first)
    renderer.stored(second)
    exposition = b"".join(family_parts(renderer.columns())).decode()
    assert store.get("vda-win-01").report.delivery_group == "Group B"
    assert 'delivery_group="Group B"' in exposition and "Group A" not in exposition


# -- 6. header values are echoed whole into the answer (twice) and the log ---------------------

def test_bad_content_encoding_is_not_echoed_whole(caplog) -> None:
    api = make_api(Clock())
    headers = {"content-type": "application/json", "authorization": f"Bearer {CITY_HALL}",
               "content-encoding": "x" * 15_000}  # fits the transport's 16 KiB head
    with caplog.at_level(logging.WARNING):
        response = api.handle(Request("POST", "/api/v1/reports", headers, json.dumps(GOOD).encode()))
    assert response.status == 415
    longest_log_line = max((len(r.getMessage()) for r in caplog.records), default=0)
    assert longest_log_line < 2_000, longest_log_line
    assert len(response.payload()) < 2_000, len(response.payload())
