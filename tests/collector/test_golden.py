"""Golden end-to-end test: the real collector fed the fixture reports, /metrics diffed.

Regenerate after a deliberate change of the exposition with `make golden`
(VDIWATCH_UPDATE_GOLDEN=1), then review the diff of tests/golden/ like code.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.conftest import FIXTURES, GOLDEN, CollectorProcess, require_tool

pytestmark = pytest.mark.slow

# Lines that depend on the clock or on the machine, not on the reports.
VOLATILE = re.compile(
    r"^(?:# (?:HELP|TYPE) )?(?:process_|python_|vdi_agent_last_report_timestamp_seconds"
    r"|vdi_agent_clock_skew_seconds|vdi_collector_scrape_duration_seconds"
    r"|vdi_collector_report_duration_seconds_(?:bucket|sum))"
)
REPORTS = sorted((FIXTURES / "reports").glob("*.json"))


def stable(text: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if not VOLATILE.match(line))


@pytest.fixture(scope="module")
def exposition(tmp_path_factory) -> str:
    proc = CollectorProcess(tmp_path_factory.mktemp("golden")).start()
    try:
        for path in REPORTS:
            r = proc.post(path.read_bytes())
            assert r.status_code == 200, (path.name, r.text)
        return proc.metrics()
    finally:
        proc.stop()


def test_metrics_match_golden(exposition: str) -> None:
    golden = GOLDEN / "fixture-reports.prom"
    got = stable(exposition)
    if os.environ.get("VDIWATCH_UPDATE_GOLDEN"):
        golden.write_text(got)
    assert got == golden.read_text(), "exposition changed; if deliberate, run `make golden` and review"


def test_golden_passes_promtool(exposition: str) -> None:
    promtool = require_tool("promtool")
    for text in (exposition, (GOLDEN / "fixture-reports.prom").read_text()):
        r = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
        assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr


def test_every_fixture_host_is_exposed(exposition: str) -> None:
    for path in REPORTS:
        host = path.stem.split("-goodbye")[0].split("-maintenance")[0]
        assert f'vdi_host_state{{host="{host}"' in exposition
    assert 'vdi_agent_up{host="vda-win-02"' not in exposition  # said goodbye: stopped, not down
