"""A real Alertmanager for tests, running the project's config/alertmanager.yml.

`rehearsal_config` keeps the file's routes, grouping and inhibitions as they
are and changes only what a test cannot use: every receiver becomes a webhook
to a local `Webhook` (its path is the receiver's name, so a test sees who
would have been paged), and every wait (group_wait, group_interval,
repeat_interval, resolve_timeout) is divided by the rehearsal's time factor.

    with Webhook() as hook:
        am = AlertmanagerServer(tmp_path, rehearsal_config(ALERTMANAGER_CONFIG, hook.url, 120)).start()
        prom = PrometheusServer(..., alertmanagers=[am.address])
        ...
        hook.notifications("oncall-pager")   # [{"status": "firing", "alerts": [...], ...}, ...]
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from copy import deepcopy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import yaml

from tests.conftest import ROOT, LoggedProcess, free_port, require_tool
from tests.rules_compress import compress_duration

ALERTMANAGER_CONFIG = ROOT / "config" / "alertmanager.yml"
WAITS = ("group_wait", "group_interval", "repeat_interval")


def rehearsal_config(source: Path, webhook: str, factor: float) -> Dict[str, Any]:
    """The config at `source` with every receiver a webhook to `webhook`/<name> and every wait divided."""
    config = yaml.safe_load(source.read_text())
    out = deepcopy(config)
    out["global"] = {"resolve_timeout": compress_duration(config["global"].get("resolve_timeout", "5m"), factor)}
    out["receivers"] = [{"name": r["name"], "webhook_configs": [{"url": f"{webhook}/{r['name']}",
                                                                 "send_resolved": True}]}
                        for r in config["receivers"]]

    def compress(route: Dict[str, Any]) -> None:
        for key in WAITS:
            if key in route:
                route[key] = compress_duration(str(route[key]), factor)
        for child in route.get("routes", []):
            compress(child)

    compress(out["route"])
    return out


class Webhook:
    """Takes Alertmanager's webhook POSTs on 127.0.0.1; `received` holds (time, receiver, payload)."""

    def __init__(self) -> None:
        self.received: List[Tuple[float, str, Dict[str, Any]]] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with hook.lock:
                    hook.received.append((time.time(), self.path.strip("/"), json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self) -> "Webhook":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def notifications(self, receiver: Optional[str] = None) -> List[Dict[str, Any]]:
        with self.lock:
            return [p for _, r, p in self.received if receiver is None or r == receiver]


class AlertmanagerServer(LoggedProcess):
    """An Alertmanager process on a free loopback port, without clustering, with `config`: a dict, written
    out, or the path of a config file used as it is."""

    def __init__(self, tmp: Path, config: Union[Dict[str, Any], Path]):
        self.binary = require_tool("prometheus-alertmanager")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dir = Path(tmp) / f"alertmanager-{self.port}"
        self.dir.mkdir(parents=True)
        if isinstance(config, Path):
            self.config_path = config
        else:
            self.config_path = self.dir / "alertmanager.yml"
            self.config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.log_path = self.dir / "alertmanager.log"
        self.proc: Optional[subprocess.Popen] = None

    def check(self) -> None:
        """amtool's verdict on the written config; AssertionError when it refuses it."""
        result = subprocess.run([require_tool("amtool"), "check-config", str(self.config_path)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr

    def start(self, timeout: float = 30.0) -> "AlertmanagerServer":
        self.launch([self.binary, f"--config.file={self.config_path}", f"--storage.path={self.dir / 'data'}",
                     f"--web.listen-address={self.address}", "--cluster.listen-address=", "--log.level=info"],
                    f"http://{self.address}/-/ready", "alertmanager", timeout, cwd=self.dir)
        return self
