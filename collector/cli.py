"""vdiwatch-collector: the command line, and the only place that wires the parts together."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import signal
import ssl
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from collector import __version__, snapshot
from collector.auth import PushAuth, ScrapeAuth, hash_password, hash_token, new_token
from collector.config import AuthSection, CollectorConfig, is_loopback, load_collector_config, parse_listen
from collector.httpserver import HttpServer
from collector.ingest import EdgeLimits
from collector.selfmetrics import SelfMetrics
from collector.server import Api
from collector.store import HostStore
from contract.configfile import ConfigError, config_error_message

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


def token_command(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="vdiwatch-collector token",
                                description="Create a push token and print the lines for collector.toml.")
    p.add_argument("--site", required=True, help="the site the token may push for")
    p.add_argument("--hosts", default="*", help="host-name pattern the token may push for (default *)")
    p.add_argument("--name", default="", help="a note to recognise the token by in logs")
    args = p.parse_args(argv)
    token = new_token()
    print(f"# Token (give it to the agents, e.g. token_file in agent.toml; it is not shown again):\n{token}\n")
    print("# Paste into collector.toml:")
    print("[[auth.tokens]]")
    print(f"sha256 = {_toml_string(hash_token(token))}")
    print(f"site = {_toml_string(args.site)}")
    if args.hosts != "*":
        print(f"hosts = {_toml_string(args.hosts)}")
    if args.name:
        print(f"name = {_toml_string(args.name)}")
    return 0


def _toml_string(value: str) -> str:
    """A TOML basic string: its escapes are JSON's."""
    return json.dumps(value, ensure_ascii=False)


def hash_password_command(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="vdiwatch-collector hash-password",
                                description="Hash a password for auth.scrape_basic_password_hash.")
    p.add_argument("--stdin", action="store_true", help="read the password from standard input")
    args = p.parse_args(argv)
    password = sys.stdin.readline().rstrip("\n") if args.stdin else getpass.getpass("password: ")
    if not password:
        print("the password must not be empty", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["token"]:
        return token_command(argv[1:])
    if argv[:1] == ["hash-password"]:
        return hash_password_command(argv[1:])
    args = parse_args(argv)
    try:
        config = load_collector_config(args.config)
        listen = parse_listen(args.listen or config.collector.listen)
    except (ConfigError, ValueError) as e:
        print(config_error_message(e), file=sys.stderr)
        return 2
    refusal = insecure_listen_refusal(config, listen[0])
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    if args.check_config:
        print(f"{args.config or 'built-in defaults'}: OK")
        return 0
    logging.basicConfig(level=(args.log_level or config.collector.log_level).upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not config.auth.tokens and not is_loopback(listen[0]):
        log.warning("INSECURE: listening on %s without push authentication (auth.insecure = true): "
                    "anyone who reaches this port can report as any host", listen[0])
    return run(config, listen, args.config)


def build_api(config: CollectorConfig) -> Api:
    c, a = config.collector, config.auth
    store = HostStore(missed_intervals=c.missed_intervals, expire_after=c.expire_after,
                      stopped_expire_after=c.stopped_expire_after, max_hosts=c.max_hosts)
    edge = EdgeLimits(c.max_body_bytes, c.max_decompressed_bytes, c.max_json_depth)
    return Api(store, SelfMetrics(store), config.limits, edge,
               push_auth=PushAuth(a.tokens), scrape_auth=scrape_auth_from(a),
               min_report_interval=c.min_report_interval)


def tls_context(config: CollectorConfig) -> Optional[ssl.SSLContext]:
    t = config.tls
    if not t.cert_file:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(t.cert_file, t.key_file)
    if t.client_ca_file:
        ctx.load_verify_locations(t.client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def run(config: CollectorConfig, listen: tuple, config_path: Optional[str] = None) -> int:
    api = build_api(config)
    snapshot_path = Path(config.collector.snapshot_file) if config.collector.snapshot_file else None
    if snapshot_path is not None:
        restored = snapshot.restore(snapshot_path, api.store, config.limits)
        if restored:
            log.info("restored %d host(s) from %s", restored, snapshot_path)
    try:
        tls = tls_context(config)
    except (OSError, ssl.SSLError) as e:
        log.error("cannot load the TLS certificate or key: %s", getattr(e, "strerror", None) or e)
        return 1
    c = config.collector
    server = HttpServer(api, listen[0], listen[1], request_timeout=c.request_timeout, header_timeout=c.header_timeout,
                        tls=tls, max_connections=c.max_connections, max_per_address=c.max_connections_per_address)
    api.metrics.watch_connections(lambda: {"evicted": server.evicted, "refused": server.refused})
    try:
        return asyncio.run(_serve(api, server, config, config_path, snapshot_path, tls is not None))
    finally:
        if snapshot_path is not None:
            _write_snapshot(api, snapshot_path)
        log.info("stopped")


async def _serve(api: Api, server: HttpServer, config: CollectorConfig, config_path: Optional[str],
                 snapshot_path: Optional[Path], tls: bool) -> int:
    try:
        host, port = await server.start()
    except OSError as e:
        log.error("cannot listen on %s:%d: %s", server.host, server.port, e.strerror or e)
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    configs = {"started": config, "running": config}

    def shut_down(name: str) -> None:
        log.info("received %s, finishing requests in flight", name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        _on_signal(loop, sig, lambda s=sig: shut_down(signal.Signals(s).name))
    if hasattr(signal, "SIGHUP"):
        _on_signal(loop, signal.SIGHUP,
                   lambda: loop.run_in_executor(None, _reload, api, config_path, configs, server.host))
    background = [asyncio.ensure_future(_every(60.0, stop, lambda: _expire(api)))]
    if snapshot_path is not None:
        background.append(asyncio.ensure_future(
            _every(config.collector.snapshot_interval, stop,
                   lambda: loop.run_in_executor(None, _write_snapshot, api, snapshot_path))))
    log.info("vdiwatch-collector %s listening on %s://%s:%d/ (metrics at /metrics)", __version__,
             "https" if tls else "http", host, port)
    await stop.wait()
    await server.stop()
    for task in background:
        task.cancel()
    return 0


def _on_signal(loop: asyncio.AbstractEventLoop, sig: int, callback) -> None:
    try:
        loop.add_signal_handler(sig, callback)
    except (NotImplementedError, RuntimeError):  # Windows: plain handlers, called between bytecodes
        signal.signal(sig, lambda _s, _f: loop.call_soon_threadsafe(callback))


async def _every(seconds: float, stop: asyncio.Event, action) -> None:
    while True:
        try:
            await asyncio.wait_for(stop.wait(), seconds)
            return
        except asyncio.TimeoutError:
            result = action()
            if asyncio.isfuture(result):
                await result


def _expire(api: Api) -> None:
    """Drop expired hosts even when nobody scrapes, so memory stays flat."""
    gone = api.store.expire()
    if gone:
        log.info("expired %d silent host(s)", len(gone))


def scrape_auth_from(a: AuthSection) -> ScrapeAuth:
    return ScrapeAuth(a.scrape_bearer_sha256, a.scrape_basic_user, a.scrape_basic_password_hash)


def insecure_listen_refusal(config: CollectorConfig, listen_host: str) -> Optional[str]:
    """Why `config` must not serve on `listen_host`, or None: the check at start and at every reload."""
    if not config.auth.tokens and not is_loopback(listen_host) and not config.auth.insecure:
        return (f"refusing to listen on {listen_host} without push authentication: add [[auth.tokens]] "
                "(see `vdiwatch-collector token`), or set insecure = true in [auth] to accept "
                "reports from anyone who can reach the port")
    return None


def reload_refusal(running: CollectorConfig, new: CollectorConfig, listen_host: str) -> Optional[str]:
    """Why a reload to `new` is refused, or None. A reload may change who may push and scrape,
    never open the door: turning push or scrape authentication off takes a restart."""
    insecure = insecure_listen_refusal(new, listen_host)
    if insecure:
        return insecure
    if running.auth.tokens and not new.auth.tokens:
        return "the new configuration has no push tokens: turning push authentication off takes a restart"
    if scrape_auth_from(running.auth).enabled and not scrape_auth_from(new.auth).enabled:
        return "the new configuration has no scrape authentication: turning it off takes a restart"
    return None


def restart_needed(started: CollectorConfig, new: CollectorConfig) -> List[str]:
    """Sections of `new` that differ from what the process started with (a reload applies only [auth])."""
    return [name for name in ("collector", "limits", "tls") if getattr(started, name) != getattr(new, name)]


def _reload(api: Api, path: Optional[str], configs: Dict[str, CollectorConfig], listen_host: str) -> None:
    """Re-read the config and apply [auth]; keep everything as it was if the file is bad or the
    change would weaken security. `configs` holds the one the process started with and the running one."""
    if path is None:
        log.warning("SIGHUP: no config file to reload (running on built-in defaults)")
        return
    try:
        new = load_collector_config(path)
    except ConfigError as e:
        log.error("SIGHUP: %s; keeping the running configuration", e.render().replace("\n", " "))
        return
    refusal = reload_refusal(configs["running"], new, listen_host)
    if refusal:
        log.error("SIGHUP: %s: %s; keeping the running configuration", path, refusal)
        return
    a = new.auth
    api.use_auth(PushAuth(a.tokens), scrape_auth_from(a))
    configs["running"] = new
    log.info("SIGHUP: reloaded %s: %d push token(s), scrape authentication %s", path, len(a.tokens),
             "on" if api.scrape_auth.enabled else "off")
    pending = restart_needed(configs["started"], new)
    if pending:
        log.warning("SIGHUP: changes to [%s] take effect only after a restart", "], [".join(pending))


def _write_snapshot(api: Api, path: Path) -> None:
    try:
        snapshot.write(path, api.store)
    except OSError as e:
        api.snapshot_failed()
        log.error("cannot write snapshot %s: %s", path, e.strerror or e)
        return
    api.snapshot_written(time.time())


