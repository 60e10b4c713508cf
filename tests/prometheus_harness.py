"""A real Prometheus for tests, loaded with vdiwatch's rules.

`PrometheusServer` writes a prometheus.yml that scrapes the given targets
every second under job "vdiwatch-collector" and evaluates the project's rule
files every second, starts /usr/bin/prometheus on a free loopback port with a
throw-away TSDB, and waits until it is ready. Then:

    with PrometheusServer(tmp_path, [collector_address]) as prom:
        prom.wait_until(lambda: prom.query('up{job="vdiwatch-collector"} == 1'))
        rows = prom.query("site_delivery_group:vdi_sessions:sum")
        # [{"metric": {"site": "City Hall", ...}, "value": [1764547200.1, "10"]}, ...]
        value(rows[0])         # 10.0
        prom.alerts()          # pending and firing alerts, as /api/v1/alerts lists them
        prom.rules()           # rule groups with health and lastError, as /api/v1/rules lists them

Reused by the live rule test, the dashboard tests and the fleet rehearsal;
keep the API this small. The process is stopped on `stop()` / leaving the
`with` block, whatever happened; its log stays in `tmp/prometheus.log`.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar

import requests

from tests.conftest import ROOT, LoggedProcess, free_port, require_tool

RULE_FILES = (
    ROOT / "config" / "prometheus" / "rules" / "vdiwatch-recording.yml",
    ROOT / "config" / "prometheus" / "rules" / "vdiwatch-alerts.yml",
)
JOB = "vdiwatch-collector"

T = TypeVar("T")


def value(sample: Dict[str, Any]) -> float:
    """The number of one instant-vector sample of `PrometheusServer.query`."""
    return float(sample["value"][1])


class PrometheusServer(LoggedProcess):
    """A Prometheus process scraping `targets` ("host:port") as job vdiwatch-collector.

    `rule_files` defaults to the project's recording and alerting rules;
    `interval` is both the scrape and the evaluation interval; `jobs` adds
    scrape jobs (name -> targets); `alertmanagers` ("host:port") receive the
    alerts; `args` are further command-line flags. `data` is the TSDB
    directory: blocks written there before `start()` are history.
    """

    def __init__(self, tmp: Path, targets: Sequence[str], rule_files: Sequence[Path] = RULE_FILES,
                 interval: str = "1s", job: str = JOB, jobs: Optional[Dict[str, Sequence[str]]] = None,
                 alertmanagers: Sequence[str] = (), args: Sequence[str] = ()):
        self.binary = require_tool("prometheus")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tmp) / f"prometheus-{self.port}"
        self.dir.mkdir(parents=True)
        self.config_path = self.dir / "prometheus.yml"
        self.log_path = self.dir / "prometheus.log"
        self.data = self.dir / "data"
        self.args = list(args)
        scrape = {job: targets, **(jobs or {})}
        config: Dict[str, Any] = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "rule_files": [str(Path(p).resolve()) for p in rule_files],
            "scrape_configs": [{"job_name": name, "static_configs": [{"targets": list(t)}]}
                               for name, t in scrape.items()],
        }
        if alertmanagers:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]}
        # JSON is YAML: no YAML library needed, and quoting is exact.
        self.config_path.write_text(json.dumps(config, indent=2))
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 30.0) -> "PrometheusServer":
        self.launch([self.binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.data}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=info", *self.args],
                    f"{self.url}/-/ready", "prometheus", timeout, cwd=self.dir)
        return self

    def __enter__(self) -> "PrometheusServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _get(self, path: str, **params: str) -> Any:
        r = requests.get(f"{self.url}{path}", params=params, timeout=10)
        body = r.json()
        if r.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {r.status_code} {body}")
        return body["data"]

    def query(self, promql: str) -> List[Dict[str, Any]]:
        """Instant query now; the result list (`metric` labels and `value` [time, "number"])."""
        data = self._get("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", data
        return data["result"]

    def alerts(self) -> List[Dict[str, Any]]:
        """Pending and firing alerts: each with `labels`, `annotations`, `state`, `value`."""
        return self._get("/api/v1/alerts")["alerts"]

    def rules(self) -> List[Dict[str, Any]]:
        """Rule groups: each with `name`, `file` and `rules` (each with `health`, `lastError`, ...)."""
        return self._get("/api/v1/rules")["groups"]

    def wait_until(self, predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.25,
                   message: str = "") -> T:
        """Call `predicate` until it returns something truthy, and return that; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = predicate()
            except (requests.RequestException, AssertionError) as e:
                last = e
            else:
                if last:
                    return last
            if time.monotonic() >= deadline:
                raise AssertionError(f"not within {timeout} s: {message or predicate} (last: {last!r})")
            time.sleep(interval)
