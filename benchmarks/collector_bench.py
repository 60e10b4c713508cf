"""Collector fast path, side by side with its peers, in one run.

    python -m benchmarks.collector_bench                  # 1,000 and 10,000 hosts
    python -m benchmarks.collector_bench --hosts 300 --scrapes 3   # smoke size

For each fleet size the same hosts and series are fed to
- the vdiwatch collector (real process, reports over HTTP),
- prometheus_client's `generate_latest` over a custom collector holding the same
  data (what a straightforward exporter would do on every scrape),
- the Prometheus Pushgateway (Debian's `prometheus-pushgateway`, real process,
  the same series as text pushes; filled in batches of 100 hosts, then timed
  with single-host pushes as an agent would make them),
and the table gives medians and the ratios between them. The machines this runs
on are shared and noisy: read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import psutil
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from collector.exposition import FAMILIES, render_report
from contract.report import parse_report

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "tests" / "fixtures" / "reports" / "vda-win-01.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PROFILES = {
    "full": "the Windows VDA fixture: host resources, sessions, applications, capacity (113 series a host; its "
            "experience section is left out, so that runs stay comparable with those before it)",
    "lean": "host resources and capacity without the sessions section (63 series a host)",
}


def make_reports(n: int, profile: str = "full") -> List[bytes]:
    """n distinct hosts over 4 sites and 24 delivery groups, from the Windows fixture."""
    base = json.loads(TEMPLATE.read_text())
    del base["readings"]["experience"]  # 29 series (27 and a collector's 2) that the recorded runs did not have
    del base["collectors"]["experience"]
    if profile == "lean":
        del base["readings"]["sessions"]
        del base["collectors"]["sessions"]
    base["timestamp_seconds"] = time.time()
    out = []
    for i in range(n):
        doc = copy.deepcopy(base)
        doc["host"] = f"vda-{i:05d}"
        doc["site"] = f"Site {i % 4}"
        doc["delivery_group"] = f"Group {i % 24}"
        doc["readings"]["cpu"]["seconds"]["user"] += i
        doc["readings"]["memory"]["available_bytes"] -= i * 4096
        out.append(json.dumps(doc).encode())
    return out


def median_time(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def get(port: int, path: str, gzip: bool = False) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", path, headers={"Accept-Encoding": "gzip"} if gzip else {})
    body = conn.getresponse().read()
    conn.close()
    return len(body)


# -- vdiwatch -----------------------------------------------------------------

class Collector:
    def __init__(self, tmp: Path, extra: str = ""):
        self.port = free_port()
        cfg = tmp / "collector.toml"
        cfg.write_text("[collector]\nmin_report_interval = 0.0\nmax_hosts = 1000000\nlog_level = \"warning\"\n"
                       + extra)
        self.proc = subprocess.Popen([sys.executable, "-m", "collector", "--config", str(cfg),
                                      "--listen", f"127.0.0.1:{self.port}"], cwd=ROOT)
        wait_http(f"http://127.0.0.1:{self.port}/healthz")

    def rss(self) -> int:
        return psutil.Process(self.proc.pid).memory_info().rss

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def post_all(port: int, bodies: List[bytes], clients: int, seconds: Optional[float] = None) -> Tuple[int, float]:
    """POST bodies from `clients` keep-alive connections; returns (reports accepted, elapsed seconds)."""
    counts = [0] * clients
    errors: List[str] = []
    stop_at = None if seconds is None else time.monotonic() + seconds

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = bodies[k::clients]
        i = 0
        while mine:
            if stop_at is None and i >= len(mine):
                break
            if stop_at is not None and time.monotonic() >= stop_at:
                break
            conn.request("POST", "/api/v1/reports", body=mine[i % len(mine)],
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                errors.append(f"{r.status}")
            else:
                counts[k] += 1
            i += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} reports refused, e.g. {errors[:3]}")
    return sum(counts), time.perf_counter() - start


def churn(n: int, rounds: int, clients: int) -> List[float]:
    """RSS (MiB) after each round of n new hosts that then expire: flat means no leak per host."""
    with tempfile.TemporaryDirectory() as tmp:
        col = Collector(Path(tmp), "expire_after = 2.0\nstopped_expire_after = 2.0\n")
        try:
            sizes = []
            for r in range(rounds):
                bodies = [b.replace(b'"host": "vda-', f'"host": "r{r}-vda-'.encode()) for b in make_reports(n)]
                post_all(col.port, bodies, clients)
                time.sleep(2.5)
                get(col.port, "/metrics")  # a scrape drops the expired hosts
                text = urllib.request.urlopen(f"http://127.0.0.1:{col.port}/metrics").read().decode()
                assert 'vdi_host_cpus{' not in text, "hosts did not expire"
                sizes.append(col.rss() / 2**20)
            return sizes
        finally:
            col.stop()


# -- generate_latest ----------------------------------------------------------

class SameDataCollector:
    """What a plain prometheus_client exporter would build on every scrape from the same samples."""

    def __init__(self, samples: Dict[str, List[Tuple[Dict[str, str], float]]]):
        self.samples = samples

    def collect(self):
        for f in FAMILIES:
            name, kind, help_text = f.name, f.kind, f.help
            rows = self.samples.get(name)
            if not rows:
                continue
            labels = list(rows[0][0])
            if kind == "counter":
                family = CounterMetricFamily(name[: -len("_total")], help_text, labels=labels)
            else:
                family = GaugeMetricFamily(name, help_text, labels=labels)
            for label_values, value in rows:
                family.add_metric([label_values[k] for k in labels], value)
            yield family


def samples_of(bodies: List[bytes]) -> Dict[str, List[Tuple[Dict[str, str], float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    text = "".join(b"".join(render_report(parse_report(json.loads(b)), time.time()).chunks).decode()
                   for b in bodies)
    out: Dict[str, List[Tuple[Dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


# -- Pushgateway --------------------------------------------------------------

class Pushgateway:
    def __init__(self, binary: str, tmp: Path):
        self.port = free_port()
        self.proc = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{self.port}",
                                      "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{self.port}/-/ready")

    def push(self, group: str, text: bytes) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        conn.request("PUT", f"/metrics/job/vdiwatch/group/{group}", body=text,
                     headers={"Content-Type": "text/plain; version=0.0.4"})
        r = conn.getresponse()
        r.read()
        conn.close()
        if r.status not in (200, 202):
            raise RuntimeError(f"pushgateway answered {r.status}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def push_text(bodies: List[bytes]) -> bytes:
    return b"".join(b"".join(render_report(parse_report(json.loads(b)), time.time()).chunks) for b in bodies)


# -- the run ------------------------------------------------------------------

def run(n: int, scrapes: int, clients: int, ingest_seconds: float, pushgateway: Optional[str],
        profile: str = "full") -> Dict[str, float]:
    bodies = make_reports(n, profile)
    row: Dict[str, float] = {"hosts": n}
    with tempfile.TemporaryDirectory() as tmp:
        col = Collector(Path(tmp))
        try:
            rss_empty = col.rss()
            post_all(col.port, bodies, clients)
            accepted, elapsed = post_all(col.port, bodies, clients, seconds=ingest_seconds)
            row["ingest_reports_per_s"] = accepted / elapsed
            text = urllib.request.urlopen(f"http://127.0.0.1:{col.port}/metrics").read().decode()
            row["series"] = sum(1 for line in text.splitlines() if line.startswith("vdi_") and
                                not line.startswith("vdi_collector_"))
            row["vdiwatch_scrape_s"] = median_time(lambda: get(col.port, "/metrics"), scrapes)
            row["vdiwatch_scrape_gzip_s"] = median_time(lambda: get(col.port, "/metrics", gzip=True), scrapes)
            row["memory_per_host_bytes"] = (col.rss() - rss_empty) / n
        finally:
            col.stop()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SameDataCollector(samples_of(bodies)))
        row["generate_latest_s"] = median_time(lambda: generate_latest(registry), max(1, min(scrapes, 3)))
        if pushgateway:
            pg = Pushgateway(pushgateway, Path(tmp))
            try:
                batch = 100
                for k in range(0, n, batch):
                    pg.push(f"batch{k // batch}", push_text(bodies[k:k + batch]))
                single = push_text(bodies[:1]).replace(b'host="vda-00000"', b'host="extra"')
                row["pushgateway_push_s"] = median_time(lambda: pg.push("extra", single), 3)
                row["pushgateway_scrape_s"] = median_time(lambda: get(pg.port, "/metrics", gzip=True),
                                                          max(1, min(scrapes, 3)))
            finally:
                pg.stop()
    return row


def table(rows: List[Dict[str, float]]) -> str:
    head = ("| hosts | series | vdiwatch /metrics | gzip | generate_latest | ratio | Pushgateway /metrics | ratio "
            "| Pushgateway push | ingest reports/s | memory/host |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        pg_scrape = r.get("pushgateway_scrape_s")
        lines.append(
            f"| {int(r['hosts']):,} | {int(r['series']):,} | {r['vdiwatch_scrape_s'] * 1000:.0f} ms "
            f"| {r['vdiwatch_scrape_gzip_s'] * 1000:.0f} ms | {r['generate_latest_s'] * 1000:.0f} ms "
            f"| {r['generate_latest_s'] / r['vdiwatch_scrape_gzip_s']:.1f}x "
            f"| {'%.0f ms' % (pg_scrape * 1000) if pg_scrape else 'n/a'} "
            f"| {'%.1fx' % (pg_scrape / r['vdiwatch_scrape_gzip_s']) if pg_scrape else 'n/a'} "
            f"| {'%.0f ms' % (r['pushgateway_push_s'] * 1000) if 'pushgateway_push_s' in r else 'n/a'} "
            f"| {r['ingest_reports_per_s']:.0f} | {r['memory_per_host_bytes'] / 1024:.0f} KiB |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--scrapes", type=int, default=5, help="scrapes per measurement (median)")
    p.add_argument("--clients", type=int, default=16, help="concurrent pushing connections")
    p.add_argument("--ingest-seconds", type=float, default=5.0)
    p.add_argument("--no-pushgateway", action="store_true")
    p.add_argument("--profile", choices=sorted(PROFILES), default="full",
                   help="; ".join(f"{k}: {v}" for k, v in PROFILES.items()))
    p.add_argument("--churn-rounds", type=int, default=0,
                   help="also measure memory over this many rounds of hosts that come and expire")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    pushgateway = None if args.no_pushgateway else (
        shutil.which("prometheus-pushgateway") or shutil.which("pushgateway"))
    if not args.no_pushgateway and not pushgateway:
        print("prometheus-pushgateway not found (Debian package prometheus-pushgateway); "
              "run with --no-pushgateway to skip it", file=sys.stderr)
        return 2
    rows = []
    for n in args.hosts:
        print(f"measuring {n} hosts ...", file=sys.stderr, flush=True)
        rows.append(run(n, args.scrapes, args.clients, args.ingest_seconds, pushgateway, args.profile))
    print(f"collector benchmark on {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"profile {args.profile}: {PROFILES[args.profile]}")
    print(table(rows))
    if args.churn_rounds:
        n = max(args.hosts)
        sizes = churn(n, args.churn_rounds, args.clients)
        print(f"\nmemory over {args.churn_rounds} rounds of {n:,} hosts that report once and expire "
              f"(RSS after each round, MiB): " + ", ".join(f"{s:.0f}" for s in sizes))
        rows.append({"churn_rss_mib": sizes})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
