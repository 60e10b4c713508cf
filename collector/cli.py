"""vdiwatch-collector: the command line, and the only place that wires the parts together."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import List, Optional

from agent.configfile import ConfigError
from collector import __version__
from collector.config import CollectorConfig, load_collector_config, parse_listen
from collector.selfmetrics import SelfMetrics
from collector.server import Api, EdgeLimits, make_server
from collector.store import HostStore

log = logging.getLogger("collector")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vdiwatch-collector",
                                description="Take vdiwatch agents' reports and serve them to Prometheus.")
    p.add_argument("--config", default=os.environ.get("VDIWATCH_COLLECTOR_CONFIG"),
                   help="TOML config file (default: $VDIWATCH_COLLECTOR_CONFIG, else built-in defaults)")
    p.add_argument("--listen", help="HOST:PORT to listen on (overrides the config; default 127.0.0.1:9847)")
    p.add_argument("--check-config", action="store_true", help="validate the config and exit")
    p.add_argument("--log-level", help="debug, info, warning or error (overrides the config)")
    p.add_argument("--version", action="version", version=f"vdiwatch-collector {__version__}")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        config = load_collector_config(args.config)
        listen = parse_listen(args.listen or config.collector.listen)
    except ConfigError as e:
        print(e.render(), file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"{args.config or 'built-in defaults'}: OK")
        return 0
    logging.basicConfig(level=(args.log_level or config.collector.log_level).upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(config, listen)


def build_api(config: CollectorConfig) -> Api:
    c = config.collector
    store = HostStore(missed_intervals=c.missed_intervals, expire_after=c.expire_after,
                      stopped_expire_after=c.stopped_expire_after, max_hosts=c.max_hosts)
    edge = EdgeLimits(c.max_body_bytes, c.max_decompressed_bytes, c.max_json_depth)
    return Api(store, SelfMetrics(store), config.limits, edge)


def run(config: CollectorConfig, listen: tuple) -> int:
    api = build_api(config)
    try:
        server = make_server(api, listen, config.collector.request_timeout)
    except OSError as e:
        log.error("cannot listen on %s:%d: %s", listen[0], listen[1], e.strerror or e)
        return 1
    stop = threading.Event()

    def shut_down(signum: int, _frame: object) -> None:
        log.info("received %s, finishing requests in flight", signal.Signals(signum).name)
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    sweeper = threading.Thread(target=_sweep, args=(api.store, stop), daemon=True, name="expiry")
    sweeper.start()
    host, port = server.server_address[:2]
    log.info("vdiwatch-collector %s listening on http://%s:%d/ (metrics at /metrics)", __version__, host, port)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()  # joins the request threads: in-flight requests finish
    log.info("stopped")
    return 0


def _sweep(store: HostStore, stop: threading.Event, every: float = 60.0) -> None:
    """Drop expired hosts even when nobody scrapes, so memory stays flat."""
    while not stop.wait(every):
        gone = store.expire()
        if gone:
            log.info("expired %d silent host(s)", len(gone))
