"""A hostile agent at the HTTP edge: another site's hosts, reports padded past the contract,
reports built to make the answer huge. Every refusal changes nothing it does not own."""

from __future__ import annotations

import gc
import gzip
import json
import logging
import tracemalloc
from typing import Optional

from collector.answers import Request
from collector.auth import PushAuth, TokenScope, hash_token
from collector.selfmetrics import SelfMetrics
from collector.server import Api
from collector.store import HostStore
from tests.conftest import FIXTURES, FakeClock

CITY_HALL = "vdw_city-hall-vda"
HARBOR = "vdw_harbor-everything"
SCOPES = (
    TokenScope(hash_token(CITY_HALL), "City Hall", hosts="vda-*", name="city hall vdas"),
    TokenScope(hash_token(HARBOR), "Harbor", hosts="*", name="harbor"),
)
GOOD = json.loads((FIXTURES / "reports" / "vda-win-01.json").read_text())  # City Hall, vda-win-01
NOW = 1_796_083_200.0



def make_api(clock: FakeClock, **store_kw) -> Api:
    store = HostStore(clock=clock, monotonic=clock, **store_kw)
    return Api(store, SelfMetrics(store, process_metrics=False), clock=clock, push_auth=PushAuth(SCOPES),
               min_report_interval=1.0)


def push(api: Api, token: str, doc: Optional[dict] = None, gz: bool = False, **changes):
    body = json.dumps(dict(GOOD if doc is None else doc, **changes)).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
    if gz:
        body = gzip.compress(body)
        headers["content-encoding"] = "gzip"
    return api.handle(Request("POST", "/api/v1/reports", headers, body))


def host_api(api: Api, host: str = "vda-win-01") -> dict:
    return json.loads(api.handle(Request("GET", f"/api/v1/hosts/{host}")).payload())


def series(api: Api) -> str:
    text = api.handle(Request("GET", "/metrics")).payload().decode()
    return "".join(line + "\n" for line in text.splitlines()
                   if line.startswith("vdi_") and not line.startswith("vdi_collector_"))


def test_another_sites_token_cannot_take_over_stop_or_annotate_a_host() -> None:
    clock = FakeClock(NOW)
    api = make_api(clock)
    assert push(api, CITY_HALL).status == 200
    before = series(api)
    clock.now += 5
    takeover = push(api, HARBOR, site="Harbor")
    assert takeover.status == 409
    answer = json.loads(takeover.payload())
    assert answer["reason"] == "host_owned"
    assert answer["problems"][0]["field"] == "site"
    assert "City Hall" in answer["error"]
    assert push(api, HARBOR, site="Harbor", goodbye=True).status == 409  # nor a goodbye
    assert push(api, HARBOR, site="Harbor", schema_version=1, agent="broken").status == 400
    assert series(api) == before
    host = host_api(api)["host"]
    assert (host["site"], host["state"], host["last_rejection"]) == ("City Hall", "up", None)
    clock.now += 1
    assert push(api, CITY_HALL).status == 200  # the owner is not locked out (no 429)


def test_owners_own_refusals_are_still_filed_for_it() -> None:
    clock = FakeClock(NOW)
    api = make_api(clock)
    assert push(api, CITY_HALL).status == 200
    clock.now += 5
    assert push(api, CITY_HALL, timestamp_seconds="soon").status == 400
    assert host_api(api)["host"]["last_rejection"]["reason"] == "wrong_type"


def test_unauthenticated_refusal_is_filed_on_no_host() -> None:
    clock = FakeClock(NOW)
    api = make_api(clock)
    assert push(api, CITY_HALL).status == 200
    assert push(api, "vdw_guessed").status == 401
    assert host_api(api)["host"]["last_rejection"] is None
    assert push(api, "vdw_guessed", host="vda-new").status == 401
    assert host_api(api, "vda-new")["last_rejection"] is None


def test_refusal_is_not_filed_under_a_cut_down_host_name() -> None:
    api = make_api(FakeClock(NOW))
    long_name = "vda-" + "x" * 300
    assert push(api, CITY_HALL, host=long_name).status == 400
    assert api.store.last_rejection(long_name[:64]) is None
    assert api.store.last_rejection(long_name) is None


def test_owning_site_releases_a_host_so_it_can_move() -> None:
    clock = FakeClock(NOW)
    api = make_api(clock)
    assert push(api, CITY_HALL).status == 200
    release = Request("DELETE", "/api/v1/hosts/vda-win-01", {"authorization": f"Bearer {HARBOR}"})
    refused = api.handle(release)
    assert refused.status == 403
    assert api.store.owner("vda-win-01") == "City Hall"
    assert api.handle(Request("DELETE", "/api/v1/hosts/vda-win-01")).status == 401
    release.headers["authorization"] = f"Bearer {CITY_HALL}"
    done = api.handle(release)
    assert done.status == 200
    assert json.loads(done.payload()) == {"status": "released", "host": "vda-win-01", "site": "City Hall"}
    assert api.handle(release).status == 404
    assert push(api, HARBOR, site="Harbor").status == 200
    assert host_api(api)["host"]["site"] == "Harbor"


def test_unknown_keys_are_neither_kept_nor_served() -> None:
    api = make_api(FakeClock(NOW))
    padded = dict(GOOD, padding="x" * 200_000)
    padded["readings"] = dict(GOOD["readings"], extra={"more": ["y" * 100_000]})
    response = api.handle(Request("POST", "/api/v1/reports", {"content-type": "application/json",
                                                               "authorization": f"Bearer {CITY_HALL}"},
                                  json.dumps(padded).encode()))
    assert response.status == 200
    served = api.handle(Request("GET", "/api/v1/hosts/vda-win-01")).payload()
    assert len(served) < 20_000
    report = json.loads(served)["report"]
    assert "padding" not in report and "extra" not in report["readings"]
    page = api.handle(Request("GET", "/hosts/vda-win-01")).payload()
    assert b"yyyy" not in page and b"xxxx" not in page


def _retained_after_push(body: bytes) -> int:
    """Bytes still allocated once a report for a new host has been stored."""
    api = make_api(FakeClock(NOW))
    headers = {"content-type": "application/json", "authorization": f"Bearer {CITY_HALL}",
               "content-encoding": "gzip"}
    warmup = gzip.compress(json.dumps(dict(GOOD, host="vda-warmup")).encode())
    assert api.handle(Request("POST", "/api/v1/reports", headers, warmup)).status == 200
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assert api.handle(Request("POST", "/api/v1/reports", headers, gzip.compress(body))).status == 200
        del body
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_padded_report_costs_no_more_memory_than_an_ordinary_one() -> None:
    ordinary = _retained_after_push(json.dumps(dict(GOOD, host="vda-02")).encode())
    padded = _retained_after_push(json.dumps(dict(GOOD, host="vda-02", padding="x" * 6_000_000)).encode())
    assert padded < ordinary + 16_384, (ordinary, padded)


def _refusal(api: Api, doc: dict) -> dict:
    response = api.handle(Request("POST", "/api/v1/reports", {"content-type": "application/json",
                                                               "authorization": f"Bearer {CITY_HALL}",
                                                               "content-encoding": "gzip"},
                                  gzip.compress(json.dumps(doc).encode())))
    assert response.status == 400
    body = response.payload()
    assert len(body) < 32_768, len(body)
    return json.loads(body)


def test_answer_to_a_report_built_to_fail_everywhere_stays_small() -> None:
    api = make_api(FakeClock(NOW))
    doc = json.loads(json.dumps(GOOD))
    doc["readings"]["sessions"]["counts"] = {f"state-{i}-" + "k" * 200: {} for i in range(30_000)}
    answer = _refusal(api, doc)
    assert answer["problems"] == [{"field": "readings.sessions.counts", "reason": "too_many_items",
                                   "message": "must have at most 5 states, got 30000"}]
    doc["readings"]["sessions"]["counts"] = {"active": {f"p{i}" + "k" * 200: 1 for i in range(30_000)}}
    doc["readings"]["filesystems"] = [{"mountpoint": "k" * 5000}] * 60
    answer = _refusal(api, doc)
    assert len(answer["problems"]) == 50
    assert answer["problems_omitted"] == 60 * 4 + 1 - 50  # four problems per file system, one for counts
    assert all(len(p["field"]) < 200 for p in answer["problems"])


def test_lone_surrogates_and_control_characters_get_a_400_not_a_500() -> None:
    api = make_api(FakeClock(NOW))
    body = json.dumps(dict(GOOD, readings={"sessions": {"counts": {"\ud800\n": {}}}})).encode()
    response = api.handle(Request("POST", "/api/v1/reports", {"content-type": "application/json",
                                                               "authorization": f"Bearer {CITY_HALL}"}, body))
    assert response.status == 400
    fields = [p["field"] for p in json.loads(response.payload())["problems"]]
    assert "readings.sessions.counts.\\ud800\\u000a" in fields
    body = json.dumps(dict(GOOD, delivery_group="Office \ud800")).encode()
    response = api.handle(Request("POST", "/api/v1/reports", {"content-type": "application/json",
                                                               "authorization": f"Bearer {CITY_HALL}"}, body))
    assert response.status == 400
    assert api.handle(Request("GET", "/hosts/vda-win-01")).status == 404
    assert api.handle(Request("GET", "/")).status == 200


def test_host_names_differing_in_case_or_a_trailing_dot_are_one_host() -> None:
    clock = FakeClock(NOW)
    api = make_api(clock)
    assert push(api, CITY_HALL, host="VDA-WIN-01.").status == 200
    clock.now += 5
    assert push(api, CITY_HALL, host="vda-win-01").status == 200
    assert [e.host for e in api.store.entries()] == ["vda-win-01"]
    assert host_api(api, "Vda-Win-01")["host"]["host"] == "vda-win-01"
    assert push(api, HARBOR, site="Harbor", host="Vda-Win-01.").status == 409


def test_refusals_under_ever_new_host_names_cannot_flood_the_log(caplog) -> None:
    clock = FakeClock(NOW)
    api = make_api(clock)
    with caplog.at_level("WARNING", logger="collector.server"):
        for i in range(500):
            assert push(api, CITY_HALL, host=f"vda-{i}", agent="broken").status == 400
    refusals = [r for r in caplog.records if "refused a report" in r.getMessage()]
    assert len(refusals) == 20  # LOG_BUDGET
    clock.now += 61
    caplog.clear()
    with caplog.at_level("WARNING", logger="collector.server"):
        assert push(api, CITY_HALL, host="vda-next", agent="broken").status == 400
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("480 more refused report(s) in the last minute were not logged")
    assert "vda-next" in messages[1]


# -- 1. ownership outlives expiry until the 60 s sweep (or a scrape) -------------------------

def test_expired_host_is_not_owned_any_more() -> None:
    clock = FakeClock(NOW)
    api = make_api(clock, expire_after=100)
    assert push(api, CITY_HALL).status == 200
    clock.now += 101  # past expire_after; no /metrics scrape and no 60 s sweep yet
    gone = api.handle(Request("GET", "/api/v1/hosts/vda-win-01"))
    assert gone.status == 404  # the hosts API already says the collector holds no report from it
    moved = push(api, HARBOR, site="Harbor")
    assert moved.status == 200, moved.payload()  # docs: "ownership ... ends when the host expires"


# -- 2. last_rejection of the old owner survives a release and shows on the new owner's host --

def test_released_host_does_not_carry_the_old_sites_rejection() -> None:
    clock = FakeClock(NOW)
    api = make_api(clock)
    assert push(api, CITY_HALL).status == 200
    clock.now += 5
    assert push(api, CITY_HALL, timestamp_seconds="city hall secret detail").status == 400
    assert host_api(api)["host"]["last_rejection"]["reason"] == "wrong_type"
    release = Request("DELETE", "/api/v1/hosts/vda-win-01", {"authorization": f"Bearer {CITY_HALL}"})
    assert api.handle(release).status == 200
    clock.now += 5
    assert push(api, HARBOR, site="Harbor").status == 200
    assert api.handle(Request("GET", "/api/v1/hosts/vda-win-01")).status == 200
    answer = host_api(api)
    assert answer["host"]["site"] == "Harbor"
    assert answer["host"]["last_rejection"] is None, answer["host"]["last_rejection"]


# -- 3. integer range messages echo up to 4,300 digits: a tiny gzip body, a huge answer --------

def test_out_of_range_integers_do_not_blow_up_the_answer() -> None:
    clock = FakeClock(NOW)
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


# -- 6. header values are echoed whole into the answer (twice) and the log ---------------------

def test_bad_content_encoding_is_not_echoed_whole(caplog) -> None:
    api = make_api(FakeClock(NOW))
    headers = {"content-type": "application/json", "authorization": f"Bearer {CITY_HALL}",
               "content-encoding": "x" * 15_000}  # fits the transport's 16 KiB head
    with caplog.at_level(logging.WARNING):
        response = api.handle(Request("POST", "/api/v1/reports", headers, json.dumps(GOOD).encode()))
    assert response.status == 415
    longest_log_line = max((len(r.getMessage()) for r in caplog.records), default=0)
    assert longest_log_line < 2_000, longest_log_line
    assert len(response.payload()) < 2_000, len(response.payload())
