"""The reader attacked over real HTTP through each authentication it has: every hostile
answer ends the poll within odata.poll_timeout, with bounded memory and one reason.

Each case measures the poll's wall time and its peak of Python allocations (tracemalloc,
the fake server's threads included, so a little noise). Run with `-s` to see the numbers:
`.venv/bin/python -m pytest -s -p no:cacheprovider tests/broker/test_attacks.py`.

`basic` is not a method the broker has (docs/broker.md); `negotiate` needs a KDC or a
Windows domain, so a stand-in with requests-gssapi's handling of the 401 (read its body,
answer on the same connection) plays it.
"""

from __future__ import annotations

import logging
import time
import tracemalloc
from typing import Any, Optional, Tuple

import pytest
import requests
from requests.auth import AuthBase

from broker.auth import CitrixCloudAuth, bounded_ntlm
from broker.config import ODataSection
from broker.fetch import Poller, PollError, bounded_session
from broker.odata import Options
from tests.broker.fakeodata import FakeOData

POLL_TIMEOUT = 2.0
SOCKET_TIMEOUT = 1.5  # a drip of a byte every 0.5 s never trips it
MAX_PEAK = 8 * 1024 * 1024
try:
    import requests_ntlm as ntlm  # the test extra installs it
except ImportError:  # pragma: no cover
    ntlm = None


class StandInNegotiate(AuthBase):
    """What requests-gssapi (and requests-negotiate-sspi) do with a 401: `response.content` to
    free the connection, then the token on the same connection through `connection.send`."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.register_hook("response", self.handle)
        return r

    def handle(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        if response.status_code != 401 or "negotiate" not in response.headers.get("www-authenticate", "").lower():
            return response
        response.content  # noqa: B018 - what the libraries do
        response.raw.release_conn()
        request = response.request.copy()
        request.headers["Authorization"] = "Negotiate dG9rZW4="
        again = response.connection.send(request, **kwargs)  # type: ignore[attr-defined]
        again.history.append(response)
        return again


@pytest.fixture
def fake(monkeypatch, tmp_path):
    users = tmp_path / "ntlm-users"
    users.write_text("CORP:reader:pw\n", encoding="utf-8")
    monkeypatch.setenv("NTLM_USER_FILE", str(users))
    with FakeOData() as server:
        yield server


@pytest.fixture
def other():
    """Another host (as far as the reader can tell: another port)."""
    with FakeOData() as server:
        yield server


def auth_for(method: str, fake: FakeOData, session: requests.Session) -> Optional[AuthBase]:
    if method == "ntlm":
        if ntlm is None:
            pytest.skip("requests-ntlm is not installed (pip install -e '.[test]')")
        return bounded_ntlm(ntlm)("CORP\\reader", "pw")
    if method == "negotiate":
        return StandInNegotiate()
    if method == "citrix_cloud":
        return CitrixCloudAuth(f"http://127.0.0.1:{fake.port}/cctrustoauth2/acme/tokens/clients", "acme",
                               "client-id", "s3cret", timeout=SOCKET_TIMEOUT, session=session)
    return None


def attack(fake: FakeOData, method: str, **odata: Any) -> Tuple[Optional[PollError], float, int]:
    """One poll: its error (None when it succeeded), wall time, and peak allocation."""
    settings = {"url": fake.url, "timeout": SOCKET_TIMEOUT, "poll_timeout": POLL_TIMEOUT}
    settings.update(odata)
    session = bounded_session()
    poller = Poller(ODataSection(**settings), Options(), auth=auth_for(method, fake, session), session=session)
    tracemalloc.start()
    started = time.monotonic()
    error = None
    try:
        poller.poll()
    except PollError as e:
        error = e
    finally:
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    shown = f"{error.reason}: {error}" if error else "ok"
    print(f"\n  [{method}] {elapsed:.2f} s, peak {peak / 1048576:.1f} MiB, {shown}")
    return error, elapsed, peak


def assert_bounded(error: Optional[PollError], elapsed: float, peak: int, reasons: Tuple[str, ...]) -> None:
    assert error is not None and error.reason in reasons, error
    assert elapsed < POLL_TIMEOUT + 0.75
    assert peak < MAX_PEAK


WWW = {"ntlm": "NTLM", "negotiate": "Negotiate", "none": "NTLM"}


def challenge(fake: FakeOData, method: str, leg1):
    """Behaviour whose first answer (no credentials) is `leg1`."""
    if method == "ntlm":
        return fake.ntlm(leg1=leg1)
    if method == "negotiate":
        return fake.negotiate(leg1)
    return leg1


# --- the 401 ------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("method", ["none", "ntlm", "negotiate"])
def test_an_endless_401_body_is_cut_off(fake: FakeOData, method: str) -> None:
    fake.behaviour = challenge(fake, method, fake.endless_answer(401, {"WWW-Authenticate": WWW[method]}))
    error, elapsed, peak = attack(fake, method)
    assert_bounded(error, elapsed, peak, ("auth", "too_large"))
    if method != "none":
        assert error.reason == "too_large" and "HTTP 401 answer is larger than the 65536 bytes" in str(error)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["none", "ntlm", "negotiate"])
def test_a_401_dripping_a_byte_every_half_second_ends_at_the_poll_deadline(fake: FakeOData, method: str) -> None:
    fake.behaviour = challenge(fake, method, fake.drip_answer(401, {"WWW-Authenticate": WWW[method]}))
    error, elapsed, peak = attack(fake, method)
    assert_bounded(error, elapsed, peak, ("auth", "timeout"))
    if method != "none":
        assert error.reason == "timeout"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["none", "ntlm"])
def test_a_head_dripping_a_byte_every_half_second_ends_at_the_poll_deadline(fake: FakeOData, method: str) -> None:
    fake.behaviour = challenge(fake, method, fake.drip_head(401))
    error, elapsed, peak = attack(fake, method)
    assert_bounded(error, elapsed, peak, ("timeout",))


@pytest.mark.slow
def test_an_ntlm_challenge_leg_with_an_endless_body_is_cut_off(fake: FakeOData) -> None:
    fake.behaviour = fake.ntlm(leg2=fake.endless_answer(401, {"WWW-Authenticate": "NTLM TlRMTVNTUAACAAAA"}))
    error, elapsed, peak = attack(fake, "ntlm")
    assert_bounded(error, elapsed, peak, ("too_large",))


@pytest.mark.slow
def test_an_ntlm_challenge_leg_dripping_ends_at_the_poll_deadline(fake: FakeOData) -> None:
    fake.behaviour = fake.ntlm(leg2=fake.drip_answer(401, {"WWW-Authenticate": "NTLM TlRMTVNTUAACAAAA"}))
    error, elapsed, peak = attack(fake, "ntlm")
    assert_bounded(error, elapsed, peak, ("timeout",))


@pytest.mark.parametrize("value", ["NTLM", "NTLM !!!not-base64!!!", "NTLM AAAA", "Basic realm=x"])
def test_a_bad_ntlm_challenge_is_an_auth_failure_not_a_crash(fake: FakeOData, value: str) -> None:
    fake.behaviour = fake.ntlm(leg2=lambda h: fake.send(h, 401, b"", headers={"WWW-Authenticate": value}))
    error, elapsed, peak = attack(fake, "ntlm")
    assert_bounded(error, elapsed, peak, ("auth",))
    assert "pw" not in str(error).split("(")[0]


def test_ntlm_still_authenticates_through_the_bounded_reader(fake: FakeOData) -> None:
    fake.behaviour = fake.ntlm()
    error, _elapsed, _peak = attack(fake, "ntlm")
    assert error is None
    assert any(r["headers"].get("Authorization", "").startswith("NTLM ") for r in fake.requests)


@pytest.mark.parametrize("method", ["none", "ntlm"])
def test_megabytes_of_www_authenticate_are_refused(fake: FakeOData, method: str) -> None:
    # 90 lines of 60 KB: under http.client's limits (100 lines of 64 KiB), 5.4 MB in all
    fake.behaviour = fake.big_headers(401, "WWW-Authenticate", 60000, count=90)
    error, elapsed, peak = attack(fake, method)
    assert_bounded(error, elapsed, peak, ("too_large",))
    assert "head of the page is longer than the 65536 bytes" in str(error)
    fake.behaviour = fake.big_headers(401, "WWW-Authenticate", 2 * 1024 * 1024)  # one line of 2 MiB
    error, elapsed, peak = attack(fake, method)
    assert_bounded(error, elapsed, peak, ("too_large",))


# --- the Citrix Cloud token -----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("make, reason", [
    (lambda f: f.endless_answer(200, {"Content-Type": "application/json"}), "too_large"),
    (lambda f: f.endless_answer(400, {"Content-Type": "application/json"}), "too_large"),
    (lambda f: f.drip_answer(200, {"Content-Type": "application/json"}), "timeout"),
    (lambda f: f.drip_head(200), "timeout"),
])
def test_a_hostile_token_endpoint_ends_the_poll_in_time(fake: FakeOData, make, reason) -> None:
    fake.token_behaviour = make(fake)
    error, elapsed, peak = attack(fake, "citrix_cloud")
    assert_bounded(error, elapsed, peak, (reason,))
    assert "s3cret" not in str(error)
    assert not fake.requests  # no page asked for without a token


@pytest.mark.parametrize("expires_in", [-5, 0, 1e308, "abc", "\u00b2", "9" * 5000, [1], None, True])
def test_an_absurd_expires_in_renews_every_5_minutes(fake: FakeOData, caplog, expires_in) -> None:
    fake.token_behaviour = lambda h: fake.token(h, expires_in)
    session = bounded_session()
    auth = auth_for("citrix_cloud", fake, session)
    poller = Poller(ODataSection(url=fake.url, timeout=SOCKET_TIMEOUT, poll_timeout=POLL_TIMEOUT), Options(),
                    auth=auth, session=session)
    with caplog.at_level(logging.WARNING, logger="broker.auth"):
        poller.poll()
        auth.forget()
        poller.poll()
    assert len(fake.token_requests) == 2
    assert 0 < auth._expires - time.monotonic() <= 300
    warned = [r for r in caplog.records if "expires_in" in r.getMessage()]
    assert len(warned) == 1 and len(warned[0].getMessage()) < 200  # once, and never 5000 digits


def test_a_token_redirect_is_not_followed_with_the_secret(fake: FakeOData, other: FakeOData) -> None:
    fake.token_behaviour = lambda h: fake.send(h, 307, b"", headers={"Location": f"http://127.0.0.1:{other.port}/t"})
    error, elapsed, peak = attack(fake, "citrix_cloud")
    assert_bounded(error, elapsed, peak, ("auth",))
    assert "HTTP 307" in str(error) and not other.token_requests


# --- redirects and lying lengths ---------------------------------------------------------------

@pytest.mark.parametrize("method", ["none", "ntlm", "citrix_cloud"])
def test_a_redirect_to_another_host_is_not_followed(fake: FakeOData, other: FakeOData, method: str) -> None:
    to_other = lambda h: fake.send(h, 302, b"", headers={"Location": f"{other.url}/Machines"})  # noqa: E731
    fake.behaviour = fake.ntlm(then=to_other) if method == "ntlm" else to_other
    error, elapsed, peak = attack(fake, method)
    assert_bounded(error, elapsed, peak, ("http_status",))
    assert not other.requests


def test_a_redirect_loop_is_not_followed(fake: FakeOData) -> None:
    fake.behaviour = lambda h: fake.send(h, 301, b"", headers={"Location": h.path})
    error, elapsed, peak = attack(fake, "none")
    assert_bounded(error, elapsed, peak, ("http_status",))
    assert len(fake.requests) == 1


@pytest.mark.parametrize("make, reason", [
    # announces more than it sends, then hangs up: the page ended early
    (lambda f: lambda h: (FakeOData.head(h, 200, {}, length=5000, close=True), h.wfile.write(b'{"value": []}')),
     "malformed"),
    # announces less than it sends: the rest is never read as the next answer (no connection is reused)
    (lambda f: lambda h: (FakeOData.head(h, 200, {}, length=5), h.wfile.write(b'{"value": []}')), "malformed"),
    # a length that is no length: read to the end, capped as ever
    (lambda f: lambda h: (FakeOData.head(h, 200, {"Content-Length": "-1"}, close=True), h.wfile.write(b"{}")),
     "malformed"),
])
def test_a_lying_content_length_fails_the_poll_with_its_reason(fake: FakeOData, make, reason) -> None:
    fake.behaviour = make(fake)
    error, elapsed, peak = attack(fake, "none")
    assert_bounded(error, elapsed, peak, (reason,))


@pytest.mark.slow
def test_a_content_length_never_reached_on_an_open_connection_ends_at_the_deadline(fake: FakeOData) -> None:
    def answer(h) -> None:
        FakeOData.head(h, 200, {}, length=5000)
        h.wfile.write(b'{"value": [')
        h.wfile.flush()
        time.sleep(POLL_TIMEOUT + 2)
    fake.behaviour = answer
    error, elapsed, peak = attack(fake, "none", timeout=POLL_TIMEOUT)
    assert_bounded(error, elapsed, peak, ("timeout",))
