"""The status page in a real browser (headless Chromium) for a simulated farm.

The filter form submits with GET, so the filtered page is the URL the form
produces; the test reads the form from the rendered DOM, builds that URL from
the form's own field names, loads it, and checks the rows. A screenshot is
saved to test-artifacts/status-page.png for a person to look at.
"""

from __future__ import annotations

import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode

import pytest

from agent.simfarm import Farm
from tests.conftest import ARTIFACTS, CollectorProcess, require_tool

pytestmark = pytest.mark.slow

NINE_AM = 1796083200 - (1796083200 % 86400) + 9 * 3600


def chromium(*args: str, profile: Path) -> str:
    binary = require_tool("chromium")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={profile}"]
    r = subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


class FormReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.form = None
        self.fields = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.form = a
        elif tag in ("select", "input") and self.form is not None and a.get("name"):
            self.fields.append(a["name"])


def post_farm(proc: CollectorProcess, farm: Farm, now: float) -> None:
    for h in farm.hosts:
        doc = {"schema_version": 1, "host": h.name, "site": h.site, "delivery_group": h.delivery_group,
               "timestamp_seconds": now, "goodbye": not h.powered,
               "agent": {"version": "0.1.0", "os": "windows", "interval_seconds": 15, "start_time_seconds": now},
               "readings": h.readings(now)}
        assert proc.post(json.dumps(doc).encode()).status_code == 200


def test_status_page_in_chromium(tmp_path) -> None:
    farm = Farm.build(40, seed=11)
    farm.fault("sim-0003", "maintenance", NINE_AM)
    farm.fault("sim-0007", "maintenance", NINE_AM)
    farm.fault("sim-0012", "not_accepting", NINE_AM)
    farm.step(NINE_AM)
    farm.step(NINE_AM + 1800)
    proc = CollectorProcess(tmp_path, "[collector]\nmin_report_interval = 0\n").start()
    try:
        post_farm(proc, farm, NINE_AM + 1800)
        dom = chromium("--dump-dom", f"{proc.url}/", profile=tmp_path / "p1")
        assert len(re.findall(r'<a href="/hosts/sim-\d+">', dom)) == 40
        form = FormReader()
        form.feed(dom)
        assert form.form["method"] == "get" and {"site", "delivery_group", "state", "q"} <= set(form.fields)
        filtered_url = f"{proc.url}/?" + urlencode({"state": "maintenance", "refresh": "0"})
        dom = chromium("--dump-dom", filtered_url, profile=tmp_path / "p2")
        assert re.findall(r'<a href="/hosts/(sim-\d+)">', dom) == ["sim-0003", "sim-0007"]
        dom = chromium("--dump-dom", f"{proc.url}/?" + urlencode({"q": "sim-0012"}), profile=tmp_path / "p3")
        assert "not accepting" in dom
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "status-page.png"
        chromium(f"--screenshot={shot}", "--window-size=1600,1000", f"{proc.url}/?refresh=0",
                 profile=tmp_path / "p4")
        assert shot.stat().st_size > 10_000
    finally:
        proc.stop()
