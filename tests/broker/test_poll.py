"""The poller against a fake Monitor Service over real HTTP on 127.0.0.1: server-driven and
$skip paging, Citrix Cloud's token, and every hostile answer failing the poll with its reason."""

from __future__ import annotations

import json
import time
from urllib.parse import unquote

import pytest

from broker.auth import CitrixCloudAuth
from broker.config import ODataSection
from broker.fetch import Poller, PollError
from broker.odata import Options
from tests.broker.fakeodata import FakeOData, fixture_page


@pytest.fixture
def fake():
    with FakeOData() as server:
        yield server


def poller(fake: FakeOData, auth=None, **odata) -> Poller:
    settings = {"url": fake.url, "timeout": 2.0, "poll_timeout": 3.0, "max_response_bytes": 256 * 1024}
    settings.update(odata)
    return Poller(ODataSection(**settings), Options(), auth=auth)


def test_every_page_is_read_by_following_the_next_link(fake: FakeOData) -> None:
    result = poller(fake).poll()
    assert sorted(result.machines) == ["rds-01", "vda-01", "vda-02", "vda-03", "vda-04", "vda-05", "vda-07"]
    assert result.pages == 2
    assert dict(result.counts("skip")) == {"no_name": 1}
    first = unquote(fake.requests[0]["path"])
    assert first.startswith("/Citrix/Monitor/OData/v4/Data/Machines?$select=Id,Name,DnsName,IsInMaintenanceMode,")
    assert "$filter=LifecycleState eq 0" in first and "$expand=DesktopGroup($select=Name)" in first
    assert fake.requests[1]["path"].endswith("/Machines?$skiptoken=2")
    assert fake.requests[0]["headers"]["Accept"] == "application/json"


def test_client_driven_paging_with_top_and_skip(fake: FakeOData) -> None:
    one, two = fixture_page(1), fixture_page(2)

    def answer(handler):
        path = unquote(handler.path)
        assert "$top=4" in path and "$orderby=Id" in path
        doc = two if "$skip=4" in path else {"value": []} if "$skip=8" in path else one
        fake.send_json(handler, doc)
    fake.behaviour = answer
    result = poller(fake, page_size=4).poll()
    assert len(result.machines) == 7 and result.pages == 3


def test_a_chunked_answer_is_read(fake: FakeOData) -> None:
    fake.behaviour = fake.chunked
    assert sorted(poller(fake).poll().machines) == ["rds-01", "vda-05", "vda-07"]
    assert fake.requests[0]["headers"]["Accept-Encoding"] == "identity"


def test_a_machine_listed_twice_is_kept_once_and_counted(fake: FakeOData) -> None:
    fake.behaviour = fake.pages([fixture_page(1), fixture_page(1)])
    result = poller(fake).poll()
    assert len(result.machines) == 4 and result.counts("skip")["duplicate"] == 4


@pytest.mark.parametrize("make, reason, message", [
    (lambda f: f.status(401), "auth", "HTTP 401"),
    (lambda f: f.status(403), "auth", "HTTP 403"),
    (lambda f: f.status(429), "rate_limited", "HTTP 429"),
    (lambda f: f.status(500), "http_status", "HTTP 500"),
    (lambda f: f.status(302), "http_status", "HTTP 302"),
    (lambda f: f.raw(b'{"value": ['), "malformed", "not JSON"),
    (lambda f: f.raw(b'{"value": [], "x": NaN}'), "malformed", "NaN is not JSON"),
    (lambda f: f.raw(b"[" * 100000 + b"]" * 100000), "malformed", "nests too deeply"),
    (lambda f: f.raw(b'"just a string"'), "malformed", "must be a JSON object"),
    (lambda f: f.raw(b'{"value": 7}'), "malformed", "value must be a list, got number"),
    (lambda f: f.raw(b"{}", length=10 ** 9), "too_large", "announces 1000000000 bytes"),
    (lambda f: f.endless(), "too_large", "larger than the 262144 bytes"),
    (lambda f: f.raw(b"\x1f\x8b\x08\x00", headers={"Content-Encoding": "gzip"}), "malformed", "is compressed"),
])
def test_a_hostile_answer_fails_the_poll_with_its_reason(fake: FakeOData, make, reason, message) -> None:
    fake.behaviour = make(fake)
    with pytest.raises(PollError, match=message) as e:
        poller(fake).poll()
    assert e.value.reason == reason


def test_a_slow_answer_is_cut_off_at_the_poll_deadline(fake: FakeOData) -> None:
    fake.behaviour = fake.drip(0.01)  # about 10 s for the page; each byte well within the socket timeout
    started = time.monotonic()
    with pytest.raises(PollError) as e:
        poller(fake, timeout=1.0, poll_timeout=1.0).poll()
    assert e.value.reason == "timeout"
    assert time.monotonic() - started < 2.5


def test_an_unreachable_controller_is_a_connect_failure() -> None:
    fake = FakeOData()  # bound but never serving: close it to free the port
    url = fake.url
    fake.server.server_close()
    with pytest.raises(PollError) as e:
        Poller(ODataSection(url=url, timeout=1.0, poll_timeout=1.0), Options()).poll()
    assert e.value.reason == "connect"


def test_a_next_link_to_another_host_is_never_followed(fake: FakeOData) -> None:
    doc = fixture_page(1)
    doc["@odata.nextLink"] = "http://attacker.example/Citrix/Monitor/OData/v4/Data/Machines?$skiptoken=2"
    fake.behaviour = lambda h: fake.send_json(h, doc)
    with pytest.raises(PollError, match="leaves http://127.0.0.1") as e:
        poller(fake).poll()
    assert e.value.reason == "bad_next_link" and len(fake.requests) == 1
    for link in (f"https://127.0.0.1:{fake.port}/x", f"http://user@127.0.0.1:{fake.port}/x",
                 f"http://127.0.0.1:{fake.port + 1}/x", "http://127.0.0.1:99999999/x"):
        doc["@odata.nextLink"] = link
        with pytest.raises(PollError) as e:
            poller(fake).poll()
        assert e.value.reason == "bad_next_link", link


def test_a_relative_or_default_port_next_link_is_followed(fake: FakeOData) -> None:
    doc = fixture_page(1)
    doc["@odata.nextLink"] = "Machines?$skiptoken=2"  # relative to the page's URL
    fake.behaviour = lambda h: fake.send_json(h, doc) if "skiptoken" not in h.path else \
        fake.send_json(h, fixture_page(2))
    assert len(poller(fake).poll().machines) == 7
    assert fake.requests[1]["path"] == "/Citrix/Monitor/OData/v4/Data/Machines?$skiptoken=2"


def test_a_next_link_loop_stops(fake: FakeOData) -> None:
    doc = fixture_page(1)
    doc["@odata.nextLink"] = f"{fake.url}/Machines?$skiptoken=1"
    fake.behaviour = lambda h: fake.send_json(h, doc)
    with pytest.raises(PollError, match="repeats a page") as e:
        poller(fake).poll()
    assert e.value.reason == "bad_next_link"


def test_pages_and_machines_are_capped(fake: FakeOData) -> None:
    fake.behaviour = fake.pages([fixture_page(1)] * 5)
    with pytest.raises(PollError) as e:
        poller(fake, max_pages=3).poll()
    assert e.value.reason == "too_many_pages"
    with pytest.raises(PollError) as e:
        poller(fake, max_machines=6).poll()
    assert e.value.reason == "too_many_machines"


def test_citrix_cloud_token_is_fetched_once_and_sent_with_the_customer(fake: FakeOData) -> None:
    auth = CitrixCloudAuth(f"http://127.0.0.1:{fake.port}/cctrustoauth2/acme/tokens/clients", "acme",
                           "client-id", "s3cret")
    p = poller(fake, auth=auth)
    p.poll()
    p.poll()
    assert len(fake.token_requests) == 1
    assert b"grant_type=client_credentials" in fake.token_requests[0]
    headers = fake.requests[-1]["headers"]
    assert headers["Authorization"] == "CWSAuth bearer=tok-123" and headers["Citrix-CustomerId"] == "acme"
    assert "s3cret" not in repr(auth)
    fake.behaviour = fake.status(401)  # an expired or revoked token: asked for again next time
    with pytest.raises(PollError):
        p.poll()
    fake.behaviour = fake.paged
    p.poll()
    assert len(fake.token_requests) == 2


def test_a_failed_token_request_is_an_auth_failure(fake: FakeOData) -> None:
    auth = CitrixCloudAuth(f"http://127.0.0.1:{fake.port}/nowhere", "acme", "id", "secret", timeout=1.0)
    fake.server.RequestHandlerClass.do_POST = lambda h: fake.send(h, 200, json.dumps({"token": 5}).encode())
    with pytest.raises(PollError, match="no usable access_token") as e:
        poller(fake, auth=auth).poll()
    assert e.value.reason == "auth" and "secret" not in str(e.value)


def test_proxied_connections_end_with_the_poll_like_direct_ones() -> None:
    """HTTP(S)_PROXY from the environment: the proxy's pool is emptied when the poll's window closes."""
    import time as _time

    from broker.fetch import BoundedAdapter

    adapter = BoundedAdapter()
    manager = adapter.proxy_manager_for("http://proxy.example:3128")
    manager.connection_from_url("http://ddc.example/Citrix/Monitor/OData/v4/Data/Machines")
    direct = adapter.poolmanager.connection_from_url("http://ddc.example/")
    assert len(manager.pools) == 1 and len(adapter.poolmanager.pools) == 1 and direct is not None
    with adapter.until(_time.monotonic() + 5):
        pass
    assert len(manager.pools) == 0 and len(adapter.poolmanager.pools) == 0


def by_name(fake: FakeOData) -> str:
    """The fake's URL with a name instead of an address, so that the poll looks the name up."""
    return fake.url.replace("127.0.0.1", "ddc.corp.example")


def test_a_name_is_looked_up_within_the_poll_and_each_address_tried_in_turn(fake: FakeOData, monkeypatch) -> None:
    import socket

    real = socket.getaddrinfo
    asked = []

    def lookup(host, port, *args, **kwargs):
        if host != "ddc.corp.example":
            return real(host, port, *args, **kwargs)  # the addresses urllib3 then connects to
        asked.append(host)
        # an address nothing listens on first, then the controller's, as a resolver with two records answers
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port)),
                *real("127.0.0.1", port, type=socket.SOCK_STREAM)]

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    fake.behaviour = lambda handler: fake.send_json(handler, fixture_page(1))  # one page: its links name 127.0.0.1
    result = poller(fake, url=by_name(fake)).poll()
    assert sorted(result.machines) == ["vda-01", "vda-02", "vda-03", "vda-04"]
    assert asked == ["ddc.corp.example"]
    assert fake.requests[0]["headers"]["Host"].startswith("ddc.corp.example")


def test_a_hanging_name_lookup_ends_at_the_poll_deadline_and_says_so(fake: FakeOData, monkeypatch) -> None:
    import socket

    def hanging(*args, **kwargs):
        time.sleep(6)
        raise socket.gaierror("no answer")

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    started = time.monotonic()
    with pytest.raises(PollError) as e:
        poller(fake, url=by_name(fake), timeout=1.0, poll_timeout=1.0).poll()
    assert time.monotonic() - started < 2.0
    assert e.value.reason == "connect" and "name lookup of 'ddc.corp.example'" in str(e.value)


def test_a_failed_name_lookup_is_a_connect_failure_naming_the_name(fake: FakeOData, monkeypatch) -> None:
    import socket

    def unknown(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    with pytest.raises(PollError) as e:
        poller(fake, url=by_name(fake)).poll()
    assert e.value.reason == "connect" and "ddc.corp.example" in str(e.value) and "gaierror" in str(e.value)
