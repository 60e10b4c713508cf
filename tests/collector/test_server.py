"""The HTTP edge, driven in-process: every refusal names its reason and field and changes nothing."""

from __future__ import annotations

import gzip
import json

import pytest

from collector.answers import Request
from collector.ingest import EdgeLimits
from collector.selfmetrics import SelfMetrics
from collector.server import Api
from collector.store import HostStore
from tests.conftest import FIXTURES

GOOD = (FIXTURES / "reports" / "vda-win-01.json").read_bytes()


def good_doc() -> dict:
    return json.loads(GOOD)


def make_api(**edge) -> Api:
    store = HostStore(clock=lambda: 1796083200.0, monotonic=lambda: 1796083200.0)
    return Api(store, SelfMetrics(store, process_metrics=False), edge=EdgeLimits(**edge),
               clock=lambda: 1796083200.0)


def post(api: Api, body: bytes, **headers: str):
    h = {"content-type": "application/json"}
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    return api.handle(Request("POST", "/api/v1/reports", h, body))


def host_series(api: Api) -> str:
    text = api.handle(Request("GET", "/metrics")).payload().decode()
    return "".join(line + "\n" for line in text.splitlines()
                   if line.startswith("vdi_") and not line.startswith("vdi_collector_"))


def with_changes(path: str, value) -> bytes:
    doc = good_doc()
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return json.dumps(doc).encode()


def nested(depth: int) -> bytes:
    return GOOD.replace(b'"readings": {', b'"readings": {"extra": ' + b"[" * depth + b"]" * depth + b", ", 1)


def logons(**changes) -> bytes:
    """The fixture report with a readings.logons section (rdsh-03's), changed."""
    section = json.loads((FIXTURES / "reports" / "rdsh-03-maintenance.json").read_text())["readings"]["logons"]
    return with_changes("readings.logons", dict(section, **changes))


BAD = [
    ("truncated json", GOOD[:200], {}, 400, "bad_json", ""),
    ("not json", b"hello", {}, 400, "bad_json", ""),
    ("NaN literal", GOOD.replace(b'"load1": 2.5', b'"load1": NaN'), {}, 400, "bad_json", ""),
    ("Infinity literal", GOOD.replace(b'"load1": 2.5', b'"load1": Infinity'), {}, 400, "bad_json", ""),
    ("huge number", GOOD.replace(b'"load1": 2.5', b'"load1": 1e400'), {}, 400, "not_finite", "readings.load.load1"),
    ("negative bytes", with_changes("readings.memory.total_bytes", -1), {}, 400, "out_of_range",
     "readings.memory.total_bytes"),
    ("string as number", with_changes("readings.cpu.count", "8"), {}, 400, "wrong_type", "readings.cpu.count"),
    ("bool as number", with_changes("readings.system.processes", True), {}, 400, "wrong_type",
     "readings.system.processes"),
    ("unknown schema", with_changes("schema_version", 2), {}, 400, "unsupported_schema_version", "schema_version"),
    ("no schema", GOOD.replace(b'"schema_version": 1,', b""), {}, 400, "missing", "schema_version"),
    ("list at top", b"[1, 2]", {}, 400, "wrong_type", ""),
    ("host with quote", with_changes("host", 'vda"01'), {}, 400, "invalid_value", "host"),
    ("host with newline", with_changes("host", "vda\n01"), {}, 400, "invalid_value", "host"),
    ("host non-ascii", with_changes("host", "vdä-01"), {}, 400, "invalid_value", "host"),
    ("site with newline", with_changes("site", "City\nHall"), {}, 400, "invalid_value", "site"),
    ("site too long", with_changes("site", "x" * 500), {}, 400, "too_long", "site"),
    ("mountpoint control char", with_changes("readings.filesystems.0.mountpoint", "C:\x07"), {}, 400,
     "invalid_value", "readings.filesystems[0].mountpoint"),
    ("duplicate mountpoint", with_changes("readings.filesystems.1.mountpoint", "C:\\"), {}, 400, "duplicate",
     "readings.filesystems[1]"),
    ("unknown session state", with_changes("readings.sessions.counts", {"busy": {"ica": 1}}), {}, 400,
     "invalid_value", "readings.sessions.counts.busy"),
    ("too many interfaces", with_changes("readings.interfaces", [
        {"interface": f"eth{i}", "receive_bytes": 0, "transmit_bytes": 0, "receive_packets": 0,
         "transmit_packets": 0, "receive_errors": 0, "transmit_errors": 0, "receive_drops": 0,
         "transmit_drops": 0} for i in range(65)]), {}, 400, "too_many_items", "readings.interfaces"),
    ("duplicate app", with_changes("readings.sessions.apps.1.app", "chrome"), {}, 400, "duplicate",
     "readings.sessions.apps[1]"),
    ("app with newline", with_changes("readings.sessions.apps.0.app", "out\nlook"), {}, 400, "invalid_value",
     "readings.sessions.apps[0].app"),
    ("negative app CPU", with_changes("readings.sessions.apps.0.cpu_seconds_total", -1), {}, 400, "out_of_range",
     "readings.sessions.apps[0].cpu_seconds_total"),
    ("too many apps", with_changes("readings.sessions.apps", [
        {"app": f"app{i}", "cpu_seconds_total": 0, "memory_bytes": 0, "sessions": 0} for i in range(65)]), {}, 400,
     "too_many_items", "readings.sessions.apps"),
    ("logon buckets decreasing", logons(duration_buckets=[2, 1] + [2] * 9), {}, 400, "invalid_value",
     "readings.logons.duration_buckets"),
    ("logon buckets short", logons(duration_buckets=[0, 1]), {}, 400, "invalid_value",
     "readings.logons.duration_buckets"),
    ("logon bucket not a number", logons(duration_buckets=[0, 0, 0, "1", 1, 1, 1, 1, 2, 2, 2]), {}, 400,
     "invalid_value", "readings.logons.duration_buckets[3]"),
    ("unknown logon failure reason", logons(failures={"bad\npassword": 1}), {}, 400, "invalid_value",
     "readings.logons.failures.bad\\u000apassword"),  # a control character is escaped in the answer
    ("unknown logon phase", logons(phases={"scripts": {"sum_seconds": 1, "count": 1}}), {}, 400, "invalid_value",
     "readings.logons.phases.scripts"),
    ("negative logon seconds", logons(duration_sum_seconds=-1), {}, 400, "out_of_range",
     "readings.logons.duration_sum_seconds"),
    ("unknown disconnect reason", logons(disconnect_reasons={"wifi": 1}), {}, 400, "invalid_value",
     "readings.logons.disconnect_reasons.wifi"),
    ("disconnect reasons not an object", logons(disconnect_reasons=[1]), {}, 400, "wrong_type",
     "readings.logons.disconnect_reasons"),
    ("negative disconnects", logons(disconnect_reasons={"network": -1}), {}, 400, "out_of_range",
     "readings.logons.disconnect_reasons.network"),
    ("logon successes not a number", logons(successes="many"), {}, 400, "wrong_type", "readings.logons.successes"),
    ("negative logon successes", logons(successes=-5), {}, 400, "out_of_range", "readings.logons.successes"),
    ("input delay buckets short", with_changes("readings.experience.input_delay.buckets", [1, 2]), {}, 400,
     "invalid_value", "readings.experience.input_delay.buckets"),
    ("input delay buckets decreasing", with_changes("readings.experience.input_delay.buckets", [5, 4, 4, 4, 4, 4]),
     {}, 400, "invalid_value", "readings.experience.input_delay.buckets"),
    ("input delay bucket above count", with_changes("readings.experience.input_delay.buckets", [1, 2, 3, 4, 5, 999]),
     {}, 400, "invalid_value", "readings.experience.input_delay.buckets"),
    ("rtt bucket not a number", with_changes("readings.experience.protocols.ica.rtt.buckets", [350, "396", 398, 400]),
     {}, 400, "invalid_value", "readings.experience.protocols.ica.rtt.buckets[1]"),
    ("unknown experience protocol", with_changes("readings.experience.protocols.pcoip",
                                                  {"rtt": {"buckets": [0, 0, 0, 0], "sum_seconds": 0, "count": 0},
                                                   "received_bytes": 0, "sent_bytes": 0}), {}, 400, "invalid_value",
     "readings.experience.protocols.pcoip"),
    ("negative traffic", with_changes("readings.experience.protocols.rdp.sent_bytes", -5), {}, 400, "out_of_range",
     "readings.experience.protocols.rdp.sent_bytes"),
    ("rtt without its histogram", with_changes("readings.experience.protocols.ica.rtt", None), {}, 400, "missing",
     "readings.experience.protocols.ica.rtt"),
    ("negative input delay sum", with_changes("readings.experience.input_delay.sum_seconds", -0.1), {}, 400,
     "out_of_range", "readings.experience.input_delay.sum_seconds"),
    ("100000 sessions", with_changes("readings.sessions.list", [
        {"id": str(i), "state": "active", "protocol": "ica"} for i in range(100_000)]), {}, 413,
     "body_too_large", ""),
    ("deep nesting", nested(5000), {}, 400, "too_deep", ""),
    ("moderate nesting", nested(40), {}, 400, "too_deep", ""),
    ("wrong content type", GOOD, {"content_type": "text/plain"}, 415, "bad_content_type", ""),
    ("wrong encoding", GOOD, {"content_encoding": "br"}, 415, "bad_encoding", ""),
    ("gzip header but plain body", GOOD, {"content_encoding": "gzip"}, 400, "bad_encoding", ""),
    ("gzip bomb", gzip.compress(b" " * (64 << 20)), {"content_encoding": "gzip"}, 413, "body_too_large", ""),
    ("not utf-8", GOOD.replace(b"City Hall", b"City \xff Hall"), {}, 400, "bad_json", ""),
]


@pytest.mark.parametrize("body,headers,status,reason,field", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_refused_with_reason_and_nothing_changes(body, headers, status, reason, field) -> None:
    api = make_api()
    assert post(api, GOOD).status == 200
    before = host_series(api)
    response = post(api, body, **headers)
    assert response.status == status, response.body
    answer = json.loads(response.body)
    assert answer["reason"] == reason
    assert answer["error"]
    if field:
        assert field in [p["field"] for p in answer["problems"]], answer
    assert host_series(api) == before
    assert api.metrics.rejected.labels(reason)._value.get() == 1


def test_all_problems_listed_at_once() -> None:
    doc = good_doc()
    doc["site"] = 7
    doc["readings"]["memory"]["total_bytes"] = "lots"
    del doc["agent"]["version"]
    answer = json.loads(post(make_api(), json.dumps(doc).encode()).body)
    assert {p["field"] for p in answer["problems"]} == {"site", "readings.memory.total_bytes", "agent.version"}


def test_gzip_report_accepted() -> None:
    api = make_api()
    response = post(api, gzip.compress(GOOD), content_encoding="gzip")
    assert response.status == 200
    assert 'vdi_host_cpus{host="vda-win-01"' in host_series(api)


def test_unknown_keys_are_ignored() -> None:
    doc = good_doc()
    doc["future_field"] = {"x": 1}
    doc["readings"]["gpu"] = {"count": 2}
    assert post(make_api(), json.dumps(doc).encode()).status == 200


def test_metrics_gzip_when_asked() -> None:
    api = make_api()
    post(api, GOOD)
    r = api.handle(Request("GET", "/metrics", {"accept-encoding": "gzip, deflate"}))
    assert r.headers["Content-Encoding"] == "gzip"
    assert b"vdi_host_cpus" in gzip.decompress(r.payload())


def test_routes() -> None:
    api = make_api()
    assert api.handle(Request("GET", "/healthz")).status == 200
    assert api.handle(Request("GET", "/nope")).status == 404
    assert api.handle(Request("GET", "/api/v1/reports")).status == 405
    assert api.handle(Request("DELETE", "/metrics")).status == 405


def test_refusals_are_logged_once_a_minute_per_host(caplog) -> None:
    now = [1000.0]
    store = HostStore(clock=lambda: now[0], monotonic=lambda: now[0])
    api = Api(store, SelfMetrics(store, process_metrics=False), clock=lambda: now[0])
    bad = with_changes("readings.cpu.count", "eight")
    with caplog.at_level("WARNING", logger="collector.server"):
        for _ in range(50):
            post(api, bad)
        now[0] += 61
        post(api, bad)
    lines = [r for r in caplog.records if "refused a report" in r.getMessage()]
    assert len(lines) == 2
    assert "'vda-win-01'" in lines[0].getMessage() and "readings.cpu.count" in lines[0].getMessage()
    assert api.metrics.rejected.labels("wrong_type")._value.get() == 51


def test_concurrent_pushes_and_scrapes_are_safe() -> None:
    import threading

    from prometheus_client.parser import text_string_to_metric_families

    store = HostStore()
    api = Api(store, SelfMetrics(store, process_metrics=False))
    bodies = []
    for i in range(100):
        doc = good_doc()
        doc["host"] = f"vda-{i:03d}"
        bodies.append(json.dumps(doc).encode())
    errors = []

    def pusher(k: int) -> None:
        for _ in range(3):
            for body in bodies[k::4]:
                r = post(api, body)
                if r.status != 200:
                    errors.append(r.status)

    def scraper() -> None:
        for _ in range(5):
            text = api.handle(Request("GET", "/metrics")).payload().decode()
            list(text_string_to_metric_families(text))
            store.expire()

    threads = [threading.Thread(target=pusher, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=scraper) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    text = api.handle(Request("GET", "/metrics")).payload().decode()
    assert len([ln for ln in text.splitlines() if ln.startswith("vdi_host_cpus{")]) == 100


def test_snapshot_status_goes_through_methods_to_the_page_and_the_metrics() -> None:
    api = make_api()
    health = json.loads(api.handle(Request("GET", "/api/v1/hosts")).payload())["collector"]
    assert health["snapshot_age_seconds"] is None
    api.snapshot_written(1796083200.0 - 42)
    api.snapshot_failed()
    health = json.loads(api.handle(Request("GET", "/api/v1/hosts")).payload())["collector"]
    assert health["snapshot_age_seconds"] == 42.0
    text = api.handle(Request("GET", "/metrics")).payload().decode()
    assert "vdi_collector_snapshot_last_success_timestamp_seconds 1.796083158e+09" in text
    assert "vdi_collector_snapshot_failures_total 1.0" in text


def test_a_reload_swaps_both_credentials_at_once() -> None:
    from collector.auth import PushAuth, ScrapeAuth, TokenScope, hash_token
    api = make_api()
    assert api.handle(Request("GET", "/metrics")).status == 200
    api.use_auth(PushAuth([TokenScope(hash_token("t"), "City Hall")]), ScrapeAuth(bearer_sha256=hash_token("s")))
    assert api.handle(Request("GET", "/metrics")).status == 401
    assert api.handle(Request("GET", "/metrics", {"authorization": "Bearer s"})).status == 200
    assert post(api, GOOD).status == 401
    assert post(api, GOOD, authorization="Bearer t").status == 200


def test_hosts_by_state_come_from_the_scrape_that_rendered_liveness() -> None:
    api = make_api()
    assert post(api, GOOD).status == 200
    calls = []
    liveness = api.store.liveness
    api.store.liveness = lambda entry, now=None: calls.append(entry.host) or liveness(entry, now)
    text = api.handle(Request("GET", "/metrics")).payload().decode()
    assert calls == ["vda-win-01"]  # once a host a scrape: the exposition and vdi_collector_hosts share it
    assert 'vdi_collector_hosts{state="up"} 1.0' in text and 'vdi_collector_hosts{state="stale"} 0.0' in text
