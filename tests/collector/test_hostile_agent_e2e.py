"""The real collector against a hostile agent: another site's token, a reload that would open
the door, a snapshot written by a clock an hour ahead."""

from __future__ import annotations

import hashlib
import json
import signal
import time

import pytest

from collector.auth import hash_token
from tests.conftest import CollectorProcess, free_port, report_fixture, wait_until

pytestmark = pytest.mark.slow

CITY_HALL, HARBOR = "vdw_city-hall", "vdw_harbor"


def two_sites(extra: str = "") -> str:
    return f"""
[collector]
min_report_interval = 1.0
{extra}
[auth]
[[auth.tokens]]
sha256 = "{hash_token(CITY_HALL)}"
site = "City Hall"
hosts = "vda-*"
name = "city hall vdas"

[[auth.tokens]]
sha256 = "{hash_token(HARBOR)}"
site = "Harbor"
name = "harbor"
"""


def report(**changes) -> bytes:
    doc = json.loads(report_fixture("vda-win-01.json"))  # City Hall, vda-win-01
    doc.update(changes)
    return json.dumps(doc).encode()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_two_site_tokens_cannot_change_stop_or_annotate_each_others_hosts(tmp_path) -> None:
    proc = CollectorProcess(tmp_path, two_sites()).start()
    try:
        assert proc.post(report(), bearer(CITY_HALL)).status_code == 200
        series = [line for line in proc.metrics().splitlines() if 'host="vda-win-01"' in line]
        for body in (report(site="Harbor"), report(site="Harbor", goodbye=True)):
            r = proc.post(body, bearer(HARBOR))
            assert r.status_code == 409 and r.json()["reason"] == "host_owned", r.text
        assert proc.post(report(site="Harbor", agent=None), bearer(HARBOR)).status_code == 400
        after = [line for line in proc.metrics().splitlines() if 'host="vda-win-01"' in line]
        assert after == series
        host = proc.get("/api/v1/hosts/vda-win-01").json()["host"]
        assert (host["site"], host["state"], host["last_rejection"]) == ("City Hall", "up", None)
        time.sleep(1.1)
        assert proc.post(report(), bearer(CITY_HALL)).status_code == 200  # the owner goes on
        assert 'vdi_collector_reports_rejected_total{reason="host_owned"} 2.0' in proc.metrics()
    finally:
        proc.stop()


def test_reload_that_drops_every_token_on_an_open_address_is_refused(tmp_path) -> None:
    port = free_port()
    proc = CollectorProcess(tmp_path, two_sites(), ["--listen", f"0.0.0.0:{port}"])
    proc.port, proc.url = port, f"http://127.0.0.1:{port}"
    proc.start()
    try:
        proc.config_path.write_text("[collector]\nmin_report_interval = 1.0\n")
        proc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "keeping the running configuration" in proc.log(), 10, "the refused reload")
        line = next(x for x in proc.log().splitlines() if "keeping the running configuration" in x)
        assert " ERROR " in line and "without push authentication" in line
        assert proc.post(report()).status_code == 401  # still closed
        assert proc.post(report(), bearer(CITY_HALL)).status_code == 200

        # A reload that needs a restart says so every time until the restart, not only the first time.
        proc.config_path.write_text(two_sites("max_hosts = 5"))
        for expected in (1, 2):
            proc.proc.send_signal(signal.SIGHUP)
            wait_until(lambda n=expected: proc.log().count("take effect only after a restart") == n, 10,
                       f"restart warning {expected}")
    finally:
        proc.stop()


def _snapshot(entries) -> bytes:
    parts = [b"VDIWATCH-SNAPSHOT 1 %d %r\n" % (len(entries), time.time())]
    for received, raw in entries:
        parts += [b"%r %d\n" % (received, len(raw)), raw, b"\n"]
    body = b"".join(parts)
    return body + b"END " + hashlib.sha256(body).hexdigest().encode() + b"\n"


def test_snapshot_from_a_clock_an_hour_ahead_locks_no_host_out(tmp_path) -> None:
    snapshot = tmp_path / "hosts.snapshot"
    snapshot.write_bytes(_snapshot([(time.time() + 3600, report())]))
    proc = CollectorProcess(tmp_path, two_sites(f'snapshot_file = "{snapshot}"')).start()
    try:
        assert "restored 1 host(s)" in proc.log()
        r = proc.post(report(), bearer(CITY_HALL))
        assert r.status_code == 200, (r.status_code, r.headers.get("Retry-After"), r.text)
        age = proc.get("/api/v1/hosts/vda-win-01").json()["host"]["last_report_age_seconds"]
        assert 0 <= age < 60
    finally:
        proc.stop()
