"""vdiwatch-broker: the command line, and the only place that wires the parts together."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from typing import Callable, List, Optional, Set, Tuple

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest, start_http_server

from broker import __version__
from broker.auth import build_auth
from broker.config import BrokerConfig, load_broker_config, parse_listen
from broker.exposition import BrokerCollector
from broker.fetch import Poller, PollError, bounded_session
from broker.odata import Options
from broker.state import BrokerState
from contract.configfile import ConfigError, config_error_message

log = logging.getLogger("broker")

MAX_LOGGED_PROBLEMS = 20  # per poll: the rest are counted, not logged


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vdiwatch-broker",
                                description="Read the Citrix Delivery Controller's machine states "
                                            "(Monitor Service OData) and serve them to Prometheus.")
    p.add_argument("--config", default=os.environ.get("VDIWATCH_BROKER_CONFIG"),
                   help="TOML config file (default: $VDIWATCH_BROKER_CONFIG)")
    p.add_argument("--listen", help="HOST:PORT to serve /metrics on (overrides the config; default 127.0.0.1:9848)")
    p.add_argument("--check-config", action="store_true", help="validate the config and exit")
    p.add_argument("--once", action="store_true", help="poll once, print /metrics and exit (1 if the poll failed)")
    p.add_argument("--log-level", help="debug, info, warning or error (overrides the config)")
    p.add_argument("--version", action="version", version=f"vdiwatch-broker {__version__}")
    return p.parse_args(argv)


class Reader:
    """One poll into the state, with the log lines an operator needs and no more: a failure
    is logged when its message changes, a recovery once, new problems of a machine once."""

    def __init__(self, poller: Poller, state: BrokerState, monotonic: Callable[[], float] = time.monotonic):
        self.poller = poller
        self.state = state
        self.monotonic = monotonic
        self.failing: Optional[str] = None
        self.failed_polls = 0
        self.first = True
        self.logged: Set[str] = set()

    def poll_once(self) -> bool:
        start = self.monotonic()
        try:
            result = self.poller.poll()
        except PollError as e:
            self.state.failed(e.reason, self.monotonic() - start)
            self.failed_polls += 1
            message = f"{e.reason}: {e}"
            if message != self.failing:
                log.error("poll failed (%s); keeping the last good state for at most broker.hold", message)
                self.failing = message
            return False
        self.state.succeeded(result.machines, self.monotonic() - start, result.counts("skip"), result.counts("value"))
        if self.failing is not None:
            log.info("the controller answers again after %d failed poll(s)", self.failed_polls)
        elif self.first:
            log.info("first poll: %d machine(s) in %d page(s)", len(result.machines), result.pages)
        self.failing, self.failed_polls, self.first = None, 0, False
        new = [p for p in result.problems if p.message not in self.logged]
        for p in new[:MAX_LOGGED_PROBLEMS]:
            log.warning("%s: %s", "skipped" if p.kind == "skip" else "kept with a default", p.message)
        if len(new) > MAX_LOGGED_PROBLEMS:
            log.warning("%d more machine problem(s) not logged (see vdi_broker_machines_skipped and "
                        "vdi_broker_unknown_values)", len(new) - MAX_LOGGED_PROBLEMS)
        if len(self.logged) < 10000:
            self.logged.update(p.message for p in new)
        return True


def build(config: BrokerConfig) -> Tuple[Reader, BrokerState]:
    o = config.odata
    options = Options(host_name=config.broker.host_name, power_codes=o.power_state_codes,
                      registered_codes=o.registered_codes)
    verify = (o.ca_file or True) if o.verify_tls else False
    session = bounded_session()  # one, so that the Cloud token request keeps to the poll's deadline
    poller = Poller(o, options, auth=build_auth(config.auth, o.timeout, verify, session=session), session=session)
    state = BrokerState(hold=config.broker.hold)
    return Reader(poller, state), state


def registry_for(state: BrokerState) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(state.view))
    ProcessCollector(registry=registry)
    return registry


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_broker_config(args.config)
        listen = parse_listen(args.listen or config.broker.listen)
        reader, state = build(config)
    except (ConfigError, ValueError) as e:
        print(config_error_message(e), file=sys.stderr)
        return 2
    if args.check_config:
        print(f"{args.config}: OK")
        return 0
    logging.basicConfig(level=(args.log_level or config.broker.log_level).upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    registry = registry_for(state)
    if args.once:
        ok = reader.poll_once()
        sys.stdout.write(generate_latest(registry).decode())
        return 0 if ok else 1
    try:
        server, _thread = start_http_server(listen[1], listen[0], registry=registry)
    except OSError as e:
        log.error("cannot listen on %s:%d: %s", listen[0], listen[1], e.strerror or e)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _f: stop.set())
    log.info("vdiwatch-broker %s: polling %s every %g s (auth %s), metrics at http://%s:%d/metrics", __version__,
             config.odata.url, config.broker.interval, config.auth.method, *server.server_address[:2])
    while not stop.is_set():
        started = time.monotonic()
        reader.poll_once()
        stop.wait(max(0.0, config.broker.interval - (time.monotonic() - started)))
    server.shutdown()
    log.info("stopped")
    return 0
