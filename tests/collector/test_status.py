"""The status page and hosts API, through the real HTTP server; hostile strings stay text."""

from __future__ import annotations

import html
import json
import re
import time

import pytest
import requests

from tests.conftest import CollectorProcess, report_fixture

pytestmark = pytest.mark.slow

HOSTILE = '<script>alert("x")</script>'


def hostile_report() -> bytes:
    """Every agent-supplied string that the page shows, made hostile (host names cannot be)."""
    doc = json.loads(report_fixture("vda-win-01.json"))
    doc["host"] = "evil-host"
    doc["site"] = HOSTILE
    doc["delivery_group"] = f"<img src=x onerror=alert(1)>{HOSTILE}"
    doc["agent"]["version"] = "<b>evil-1</b>"
    doc["agent"]["os"] = "<i>os</i>"
    doc["agent"]["os_release"] = HOSTILE
    doc["readings"]["filesystems"][0]["mountpoint"] = HOSTILE
    doc["readings"]["sessions"]["list"][0]["user"] = HOSTILE
    return json.dumps(doc).encode()


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    proc = CollectorProcess(tmp_path_factory.mktemp("status"), "[collector]\nmin_report_interval = 0\n").start()
    for name in ("vda-win-01.json", "lvda-07.json", "vda-win-02-goodbye.json", "rdsh-03-maintenance.json"):
        assert proc.post(report_fixture(name)).status_code == 200
    assert proc.post(hostile_report()).status_code == 200
    bad = json.loads(report_fixture("lvda-07.json"))
    bad["readings"]["memory"]["total_bytes"] = -5
    assert proc.post(json.dumps(bad).encode()).status_code == 400
    yield proc
    proc.stop()


def test_hosts_api_lists_hosts_with_states(collector) -> None:
    doc = requests.get(f"{collector.url}/api/v1/hosts", timeout=5).json()
    states = {h["host"]: h["state"] for h in doc["hosts"]}
    assert states["vda-win-01"] == "up"
    assert states["vda-win-02"] == "stopped"
    assert states["rdsh-03"] == "maintenance"
    assert doc["collector"]["hosts_by_state"]["stopped"] == 1
    assert doc["collector"]["rejections_last_hour"] == {"out_of_range": 1}
    lvda = next(h for h in doc["hosts"] if h["host"] == "lvda-07")
    assert lvda["last_rejection"]["reason"] == "out_of_range"
    assert lvda["sessions"] == {"active": 2, "idle": 1, "disconnected": 0, "connecting": 0, "other": 0}


def test_hosts_api_filters(collector) -> None:
    get = lambda **q: requests.get(f"{collector.url}/api/v1/hosts", params=q, timeout=5).json()["hosts"]  # noqa: E731
    assert [h["host"] for h in get(site="City Hall")] == ["vda-win-01", "vda-win-02"]
    assert [h["host"] for h in get(state="maintenance")] == ["rdsh-03"]
    assert [h["host"] for h in get(q="LVDA")] == ["lvda-07"]
    assert [h["host"] for h in get(sort="host", order="desc")][:2] == ["vda-win-02", "vda-win-01"]


def test_host_api_has_report_and_history(collector) -> None:
    doc = requests.get(f"{collector.url}/api/v1/hosts/vda-win-02", timeout=5).json()
    assert doc["report"]["goodbye"] is True
    assert doc["history"][-1]["state"] == "stopped"
    missing = requests.get(f"{collector.url}/api/v1/hosts/nope", timeout=5)
    assert missing.status_code == 404


def test_index_page_without_javascript(collector) -> None:
    r = requests.get(f"{collector.url}/?state=stopped&refresh=0", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "<script" not in r.text
    assert "http-equiv=\"refresh\"" not in r.text  # turned off
    rows = re.findall(r'<a href="/hosts/([^"]+)">', r.text)
    assert rows == ["vda-win-02"]
    assert 'http-equiv="refresh" content="15"' in requests.get(collector.url + "/", timeout=5).text


def test_every_agent_string_is_escaped(collector) -> None:
    for path in ("/", "/hosts/evil-host", "/?q=evil"):
        text = requests.get(collector.url + path, timeout=5).text
        assert "<script>alert" not in text and "<img src=x" not in text and "<b>evil-1</b>" not in text
        assert "<i>os</i>" not in text
    page = requests.get(collector.url + "/hosts/evil-host", timeout=5).text
    assert html.escape(HOSTILE) in page


def test_status_is_protected_like_metrics(tmp_path) -> None:
    from collector.auth import hash_token
    proc = CollectorProcess(tmp_path, f'[auth]\nscrape_bearer_sha256 = "{hash_token("look")}"\n').start()
    try:
        for path in ("/", "/api/v1/hosts", "/hosts/x", "/api/v1/hosts/x", "/metrics"):
            assert requests.get(proc.url + path, timeout=5).status_code == 401, path
        assert requests.get(proc.url + "/", headers={"Authorization": "Bearer look"}, timeout=5).status_code == 200
        assert requests.get(proc.url + "/healthz", timeout=5).status_code == 200
    finally:
        proc.stop()


def test_last_report_age_grows(collector) -> None:
    first = requests.get(f"{collector.url}/api/v1/hosts/lvda-07", timeout=5).json()["host"]["last_report_age_seconds"]
    time.sleep(1.1)
    later = requests.get(f"{collector.url}/api/v1/hosts/lvda-07", timeout=5).json()["host"]["last_report_age_seconds"]
    assert later >= first + 1
