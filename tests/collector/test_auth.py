from __future__ import annotations

import base64
import json

import pytest

from collector.auth import AuthError, PushAuth, ScrapeAuth, TokenScope, hash_password, hash_token
from collector.selfmetrics import SelfMetrics
from collector.server import Api, Request
from collector.store import HostStore
from tests.conftest import FIXTURES

SITE_A = "vdw_site-a-token"
SITE_A_VDA = "vdw_site-a-vda-only"
SITE_B = "vdw_site-b-token"
SCOPES = (
    TokenScope(hash_token(SITE_A), "City Hall"),
    TokenScope(hash_token(SITE_A_VDA), "City Hall", hosts="vda-*", name="vda pushers"),
    TokenScope(hash_token(SITE_B), "Library"),
)
GOOD = (FIXTURES / "reports" / "vda-win-01.json").read_bytes()  # site "City Hall", host vda-win-01


def api(**kw) -> Api:
    store = HostStore()
    return Api(store, SelfMetrics(store, process_metrics=False), push_auth=PushAuth(SCOPES), **kw)


def push(a: Api, body: bytes = GOOD, authorization: str = ""):
    headers = {"content-type": "application/json"}
    if authorization:
        headers["authorization"] = authorization
    return a.handle(Request("POST", "/api/v1/reports", headers, body))


def for_host(host: str) -> bytes:
    doc = json.loads(GOOD)
    doc["host"] = host
    return json.dumps(doc).encode()


@pytest.mark.parametrize("authorization,body,status,reason", [
    ("", GOOD, 401, "unauthenticated"),
    ("Bearer ", GOOD, 401, "unauthenticated"),
    ("Basic dXNlcjpwdw==", GOOD, 401, "unauthenticated"),
    ("Bearer vdw_wrong", GOOD, 401, "unauthenticated"),
    (f"Bearer {SITE_B}", GOOD, 403, "forbidden"),
    (f"Bearer {SITE_A_VDA}", for_host("rdsh-01"), 403, "forbidden"),
    (f"Bearer {SITE_A_VDA}", GOOD, 200, None),
    (f"Bearer {SITE_A}", for_host("rdsh-01"), 200, None),
    (f"bearer {SITE_A}", GOOD, 200, None),
], ids=["none", "empty bearer", "basic", "unknown", "other site", "outside host pattern",
        "host pattern", "site wide", "scheme case"])
def test_push_auth_matrix(authorization: str, body: bytes, status: int, reason) -> None:
    a = api()
    r = push(a, body, authorization)
    assert r.status == status, r.body
    if reason:
        assert json.loads(r.body)["reason"] == reason
        assert len(a.store) == 0
        assert a.metrics.rejected.labels(reason)._value.get() == 1
    else:
        assert len(a.store) == 1


def test_rejection_never_echoes_the_token() -> None:
    r = push(api(), GOOD, f"Bearer {SITE_B}")
    assert SITE_B.encode() not in r.body


def test_scrape_auth_bearer_and_basic() -> None:
    scrape = ScrapeAuth(bearer_sha256=hash_token("scrape-me"), basic_user="prom",
                        basic_password_hash=hash_password("s3cret", iterations=1000))
    a = api(scrape_auth=scrape)
    get = lambda auth: a.handle(Request("GET", "/metrics", {"authorization": auth} if auth else {}))  # noqa: E731
    assert get("").status == 401
    assert "WWW-Authenticate" in get("").headers
    assert get("Bearer nope").status == 401
    assert get("Bearer scrape-me").status == 200
    good = "Basic " + base64.b64encode(b"prom:s3cret").decode()
    bad = "Basic " + base64.b64encode(b"prom:wrong").decode()
    assert get(bad).status == 401
    assert get(good).status == 200
    assert get(good).status == 200  # cached verification still checks the header
    assert get(bad).status == 401
    assert a.handle(Request("GET", "/healthz")).status == 200


def test_identify_raises_401_without_token() -> None:
    with pytest.raises(AuthError) as e:
        PushAuth(SCOPES).identify("")
    assert e.value.status == 401
    assert PushAuth(()).identify("") is None  # no tokens configured: open


def test_min_report_interval_429_but_goodbye_passes() -> None:
    now = [1000.0]
    store = HostStore(clock=lambda: now[0], monotonic=lambda: now[0])
    a = Api(store, SelfMetrics(store, process_metrics=False), clock=lambda: now[0], min_report_interval=5.0)
    assert push(a).status == 200
    now[0] += 1
    r = push(a)
    assert r.status == 429
    assert json.loads(r.body)["reason"] == "too_frequent"
    assert r.headers["Retry-After"] == "4"
    assert store.get("vda-win-01").received_at == 1000.0
    doc = json.loads(GOOD)
    doc["goodbye"] = True
    assert push(a, json.dumps(doc).encode()).status == 200
    now[0] += 5
    assert push(a).status == 200
