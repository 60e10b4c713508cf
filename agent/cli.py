"""vdiwatch-agent: the command line (the agent's parts are wired in agent.wiring).

    vdiwatch-agent --config /etc/vdiwatch/agent.toml      # report every interval until stopped
    vdiwatch-agent --once --print                         # show the report for this machine, send nothing
    vdiwatch-agent --config agent.toml --check-config     # exit 0 when the config is usable, else 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import List, Optional

from agent import __version__
from agent.collectors import os_name
from agent.config import (
    LOG_LEVELS,
    AgentConfig,
    is_collector_url,
    load_machine_config,
    resolve_host,
)
from agent.wiring import build_agent
from contract.configfile import ConfigError, config_error_message, shown
from contract.report import report_to_doc

log = logging.getLogger("agent")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
ROOTS = ("proc_root", "dev_root", "run_root")


def _windows_default_config() -> Optional[str]:
    if os_name() != "windows":
        return None
    from agent.winservice import default_config_path
    path = default_config_path()
    return str(path) if path.is_file() else None


def service(argv: List[str]) -> int:
    """`vdiwatch-agent service ...`: the Windows service (see agent.winservice)."""
    from agent import winservice
    if os_name() != "windows":
        print("the service commands are for Windows; on Linux use config/systemd/vdiwatch-agent.service",
              file=sys.stderr)
        return EXIT_CONFIG
    try:
        manager = winservice.Win32Services()
    except winservice.ServiceError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    return winservice.service_command(argv, manager, run=winservice.run_as_service)


def _root(value: Optional[str]) -> str:
    """A root folder from the command line, without a trailing slash ("" when not given)."""
    return (value.rstrip("/") or "/") if value else ""


def parse_args(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vdiwatch-agent",
                                description="Report this host's sessions and resource use to a vdiwatch collector.")
    p.add_argument("--config", default=os.environ.get("VDIWATCH_AGENT_CONFIG") or _windows_default_config(),
                   help="TOML config file (default: $VDIWATCH_AGENT_CONFIG; on Windows "
                        "%%ProgramData%%\\vdiwatch\\agent.toml if it exists; else built-in defaults)")
    p.add_argument("--collector", metavar="URL", help="collector URL (overrides collector_url of the config)")
    p.add_argument("--once", action="store_true", help="collect and push one report, then exit")
    p.add_argument("--print", action="store_true",
                   help="with --once: print the report as JSON on standard output and push nothing")
    p.add_argument("--check-config", action="store_true", help="validate the config and exit (0: usable, 2: not)")
    p.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, help="overrides log_level of the config")
    for root in ROOTS:
        p.add_argument(f"--{root.replace('_', '-')}", metavar="DIR", dest=root,
                       help=f"overrides {root} of the config (a containerised agent: /host/...)")
    p.add_argument("--version", action="version", version=f"vdiwatch-agent {__version__}")
    args = p.parse_args(argv)
    if args.print and not args.once:
        p.error("--print needs --once")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["service"]:
        return service(argv[1:])
    try:
        args = parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors: argparse has printed them
        return e.code if isinstance(e.code, int) else EXIT_CONFIG
    try:
        config = load_machine_config(args.config)
        if args.collector:
            if not is_collector_url(args.collector):
                raise ConfigError("--collector", [f"must be an http:// or https:// URL, got {shown(args.collector)}"])
            config = dataclasses.replace(config, agent=dataclasses.replace(
                config.agent, collector_url=args.collector, collector_urls=()))
        a = config.agent
        proc_root, dev_root, run_root = (_root(getattr(args, r)) or getattr(a, r) for r in ROOTS)
        config = dataclasses.replace(config, agent=dataclasses.replace(
            a, proc_root=proc_root, dev_root=dev_root, run_root=run_root))
        host = resolve_host(config.agent.host)
    except (ConfigError, ValueError) as e:
        print(config_error_message(e), file=sys.stderr)
        return EXIT_CONFIG
    if args.check_config:
        a = config.agent
        print(f"{args.config or 'built-in defaults'}: OK (host {host}, site {a.site}, "
              f"delivery group {a.delivery_group}, collector {', '.join(a.urls)})")
        return EXIT_OK
    logging.basicConfig(level=(args.log_level or config.agent.log_level).upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(config, host, once=args.once, print_only=args.print)


def run(config: AgentConfig, host: str, *, once: bool = False, print_only: bool = False) -> int:
    stop = threading.Event()
    agent = build_agent(config, host, stop)
    try:
        if once:
            report = report_to_doc(agent.report())
            if print_only:
                json.dump(report, sys.stdout, indent=2, ensure_ascii=False)
                sys.stdout.write("\n")
                return EXIT_OK
            result = agent.pusher.push(report, time.monotonic() + config.agent.interval)
            log.info("report %s (HTTP %s, %d attempt(s))", result.outcome, result.status, result.attempts)
            return EXIT_OK if result.accepted else EXIT_FAILED
        _handle_signals(stop)
        log.info("vdiwatch-agent %s started", __version__)
        agent.run()
        return EXIT_OK
    finally:
        agent.pusher.close()


def _handle_signals(stop: threading.Event) -> None:
    """SIGTERM (service stop), SIGINT (Ctrl-C) and SIGBREAK (Ctrl-Break, Windows) end the loop
    with a goodbye; a second one stops at once."""
    def handler(signum: int, _frame: object) -> None:
        log.info("received %s, sending the goodbye report", signal.Signals(signum).name)
        stop.set()
        signal.signal(signum, signal.SIG_DFL)

    for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), handler)
