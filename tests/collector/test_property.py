"""Random reports never make the collector fail or break its exposition."""

from __future__ import annotations

import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from collector.answers import Request
from collector.selfmetrics import SelfMetrics
from collector.server import Api
from collector.store import HostStore
from tests.conftest import FIXTURES

BASE = json.loads((FIXTURES / "reports" / "vda-win-01.json").read_text())

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
    st.sampled_from(["", "\n", '"', "\\", "vda-01", "C:\\", "<script>", "ä", "\x00", "\u2028"]),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)


def paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from paths(v, prefix + (i,))


ALL_PATHS = [p for p in paths(BASE) if p]


@st.composite
def mutated_reports(draw):
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(ALL_PATHS))
        node = doc
        try:
            for key in path[:-1]:
                node = node[key]
            if draw(st.booleans()) and isinstance(node, dict):
                node.pop(path[-1], None)
            else:
                node[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue
    return doc


def check(api: Api, body: bytes) -> None:
    r = api.handle(Request("POST", "/api/v1/reports", {"content-type": "application/json"}, body))
    assert r.status in (200, 400, 413), r.body
    if r.status != 200:
        answer = json.loads(r.body)
        assert answer["reason"] and answer["problems"]
    text = api.handle(Request("GET", "/metrics")).payload().decode()
    families = list(text_string_to_metric_families(text))  # raises on a broken exposition
    assert families


def make_api() -> Api:
    store = HostStore()
    return Api(store, SelfMetrics(store, process_metrics=False))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_reports())
def test_mutated_reports_never_break_anything(doc) -> None:
    check(make_api(), json.dumps(doc).encode())


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_arbitrary_json_never_breaks_anything(doc) -> None:
    check(make_api(), json.dumps(doc).encode())


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_break_anything(body) -> None:
    check(make_api(), body)
