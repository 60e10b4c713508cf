"""The reader against the fake Monitor Service, its /metrics served over real HTTP, read back
with prometheus_client's parser and checked with `promtool check metrics`."""

from __future__ import annotations

import re
import subprocess
from typing import Dict, Tuple

import pytest
import requests
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from broker.cli import Reader, registry_for
from broker.config import ODataSection
from broker.fetch import Poller
from broker.odata import POWER_STATES, Options
from broker.state import BrokerState
from tests.broker.fakeodata import FakeOData
from tests.conftest import require_tool

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def served():
    """A fake controller, a reader polling it, and the reader's /metrics on a free port."""
    with FakeOData() as fake:
        state = BrokerState(hold=600.0)
        reader = Reader(Poller(ODataSection(url=fake.url, timeout=2.0, poll_timeout=3.0), Options()), state)
        server, _thread = start_http_server(0, "127.0.0.1", registry=registry_for(state))
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        yield fake, reader, url
        server.shutdown()
        server.server_close()


def test_metrics_after_a_poll(served) -> None:
    fake, reader, url = served
    assert reader.poll_once()
    resp = requests.get(url, timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
    got = samples(resp.text)
    office = (("delivery_group", "Office"), ("host", "vda-02"))
    assert got[("vdi_broker_machine_maintenance", office)] == 1
    assert got[("vdi_broker_machine_maintenance", (("delivery_group", "Office"), ("host", "vda-01")))] == 0
    pooled = (("delivery_group", "Pooled Win11"), ("host", "vda-03"))
    assert got[("vdi_broker_machine_power_state", pooled + (("state", "suspended"),))] == 1
    assert sum(got[("vdi_broker_machine_power_state", pooled + (("state", s),))] for s in POWER_STATES) == 1
    assert got[("vdi_broker_machine_registered", pooled)] == 0
    assert got[("vdi_broker_machine_power_state", (("delivery_group", ""), ("host", "vda-07"),
                                                   ("state", "missing")))] == 1
    assert got[("vdi_broker_machines", ())] == 7
    assert got[("vdi_broker_up", ())] == 1
    assert got[("vdi_broker_machines_skipped", (("reason", "no_name"),))] == 1
    assert got[("vdi_broker_poll_failures_total", (("reason", "timeout"),))] == 0
    assert got[("vdi_broker_last_success_timestamp_seconds", ())] > 1.7e9
    hosts = {dict(k[1])["host"] for k in got if k[0] == "vdi_broker_machine_registered"}
    assert hosts == {"vda-01", "vda-02", "vda-03", "vda-04", "vda-05", "vda-07", "rds-01"}
    # 9 series a machine: maintenance, registered and 7 power states
    assert sum(1 for k in got if k[0].startswith("vdi_broker_machine_")) == 7 * 9


def test_a_failing_controller_shows_in_the_self_metrics_and_keeps_the_state(served) -> None:
    fake, reader, url = served
    assert reader.poll_once()
    fake.behaviour = fake.status(503)
    assert not reader.poll_once()
    got = samples(requests.get(url, timeout=5).text)
    assert got[("vdi_broker_up", ())] == 0
    assert got[("vdi_broker_holding", ())] == 1
    assert got[("vdi_broker_poll_failures_total", (("reason", "http_status"),))] == 1
    assert got[("vdi_broker_polls_total", ())] == 2
    assert got[("vdi_broker_machines", ())] == 7


def test_metrics_pass_promtool(served) -> None:
    promtool = require_tool("promtool")
    _fake, reader, url = served
    reader.poll_once()
    text = requests.get(url, timeout=5).content
    run = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert run.returncode == 0, run.stdout.decode() + run.stderr.decode()


def test_once_prints_the_metrics_of_one_poll(tmp_path, capsys) -> None:
    from broker.cli import main
    with FakeOData() as fake:
        config = tmp_path / "broker.toml"
        config.write_text(f'[odata]\nurl = "{fake.url}"\n[auth]\nmethod = "none"\n', encoding="utf-8")
        assert main(["--config", str(config), "--once"]) == 0
        got = samples(capsys.readouterr().out)
        assert got[("vdi_broker_machines", ())] == 7 and got[("vdi_broker_up", ())] == 1
        fake.behaviour = fake.status(401)
        assert main(["--config", str(config), "--once"]) == 1
        got = samples(capsys.readouterr().out)
        assert got[("vdi_broker_poll_failures_total", (("reason", "auth"),))] == 1


def test_every_family_is_documented(served) -> None:
    """docs/broker.md's metric tables and the exposition name the same families."""
    from tests.conftest import ROOT
    _fake, reader, url = served
    reader.poll_once()
    families = {f.name for f in text_string_to_metric_families(requests.get(url, timeout=5).text)
                if f.name.startswith("vdi_broker_")}
    doc = (ROOT / "docs" / "broker.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(vdi_broker_[a-z_]+)` \|", doc, re.M))
    suffixed = {f + "_total" if f in ("vdi_broker_polls", "vdi_broker_poll_failures") else f for f in families}
    assert suffixed == documented
