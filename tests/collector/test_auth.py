from __future__ import annotations

import asyncio
import base64
import json
import threading
from typing import List, Optional

import pytest

from collector.answers import Request, auth_refusal
from collector.auth import (
    VERIFIED_MAX,
    VERIFIED_TTL,
    AuthError,
    PasswordChecks,
    PushAuth,
    ScrapeAuth,
    TokenScope,
    hash_password,
    hash_token,
)
from collector.selfmetrics import SelfMetrics
from collector.server import Api
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


class CountingScrapeAuth(ScrapeAuth):
    """Counts the PBKDF2 verifications and the threads they run on."""

    def __init__(self, *args, gate: Optional[threading.Event] = None, **kw):
        super().__init__(*args, **kw)
        self.verified_on: List[int] = []
        self.gate = gate

    def verify(self, authorization: str) -> bool:
        self.verified_on.append(threading.get_ident())
        if self.gate is not None:
            self.gate.wait(10)
        return super().verify(authorization)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def scrape_auth(**kw) -> CountingScrapeAuth:
    return CountingScrapeAuth(basic_user="prom", basic_password_hash=hash_password("s3cret", iterations=1000), **kw)


def test_routing_comes_before_credentials_so_an_unknown_path_costs_no_hashing() -> None:
    scrape = scrape_auth()
    a = api(scrape_auth=scrape)
    wrong = {"authorization": basic("prom", "wrong")}
    assert a.handle(Request("GET", "/nope", wrong)).status == 404
    assert a.handle(Request("POST", "/metrics", wrong)).status == 405
    assert a.handle(Request("GET", "/healthz", wrong)).status == 200
    assert scrape.verified_on == []
    assert a.handle(Request("GET", "/hosts/vda-01", wrong)).status == 401
    assert len(scrape.verified_on) == 1


def test_basic_credentials_are_verified_once_then_trusted_for_a_while() -> None:
    now = [100.0]
    scrape = scrape_auth(clock=lambda: now[0])
    good, wrong = basic("prom", "s3cret"), basic("prom", "wrong")
    assert scrape.quick(good) is None  # only a PBKDF2 can tell
    assert scrape.verify(good) is True
    assert scrape.quick(good) is True
    assert scrape.quick(wrong) is None and scrape.verify(wrong) is False and scrape.quick(wrong) is None
    assert scrape.quick(basic("root", "s3cret")) is None and scrape.verify(basic("root", "s3cret")) is False
    now[0] += VERIFIED_TTL - 1
    assert scrape.quick(good) is True  # in use: trust goes on
    now[0] += VERIFIED_TTL
    assert scrape.quick(good) is None  # unused for VERIFIED_TTL: trust expires
    for malformed in ("Basic !!!", "Basic " + base64.b64encode(b"no colon").decode(), "Basic", "Digest x"):
        assert scrape.quick(malformed) is False  # refused without hashing
    assert scrape.quick("Bearer whatever") is False
    assert len(scrape.verified_on) == 3


def test_the_trusted_set_is_bounded() -> None:
    scrape = ScrapeAuth(basic_user="prom", basic_password_hash=hash_password("s3cret", iterations=1000))
    for i in range(VERIFIED_MAX * 3):
        scrape._remember(hash_token(f"header-{i}"))
    assert len(scrape._verified) == VERIFIED_MAX
    assert scrape._recently_verified(hash_token(f"header-{VERIFIED_MAX * 3 - 1}"))
    assert not scrape._recently_verified(hash_token("header-0"))


def test_password_checks_run_off_the_event_loop_and_refuse_past_the_pending_cap() -> None:
    gate = threading.Event()
    scrape = scrape_auth(gate=gate)
    checks = PasswordChecks(workers=1, max_pending=3, max_per_client=2)

    async def scenario() -> None:
        async def check(client: str, password: str) -> int:
            try:
                await checks.check(scrape, basic("prom", password), client)
            except AuthError as e:
                return e.status
            return 200

        wrong = [asyncio.ensure_future(check("192.0.2.1", f"guess-{i}")) for i in range(2)]
        await asyncio.sleep(0)
        assert checks.pending == 2
        assert await check("192.0.2.1", "one more") == 503  # this client's share is taken
        wrong.append(asyncio.ensure_future(check("192.0.2.2", "guess")))
        await asyncio.sleep(0)
        assert checks.pending == 3
        assert await check("192.0.2.3", "one more") == 503  # all shares are taken
        gate.set()
        assert [await future for future in wrong] == [401, 401, 401]
        await checks.check(scrape, basic("prom", "s3cret"), "192.0.2.1")  # good: no exception
        await checks.check(scrape, basic("prom", "s3cret"), "192.0.2.1")  # trusted now: no thread at all
        assert checks.pending == 0 and checks._by_client == {}
        assert threading.get_ident() not in scrape.verified_on
        assert len(scrape.verified_on) == 4


    try:
        asyncio.run(scenario())
    finally:
        gate.set()
        checks.close()


def test_saturated_password_checks_answer_503_with_retry_after() -> None:
    r = auth_refusal(AuthError(503, "busy", "too many password checks in progress; retry shortly"))
    assert r.status == 503 and r.headers == {"Retry-After": "1"}
    r = auth_refusal(AuthError(401, "unauthenticated", "no"))
    assert r.status == 401 and "WWW-Authenticate" in r.headers
