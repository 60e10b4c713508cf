"""The agent's wiring: its parts built from the configuration, in one place.

The command line (agent.cli) and the Windows service host (agent.winservice,
agent.winhost) both build the agent here, so neither imports the other.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict, List, Optional
from urllib.parse import urlsplit

from agent import collectors
from agent.collectors import Context, os_name
from agent.config import AgentConfig
from agent.failover import FailoverPusher
from agent.push import Pusher
from agent.runner import Agent, schedule_phase, waiter

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def build_collectors(config: AgentConfig, psutil_module: Any, os: str) -> List[collectors.Collector]:
    """The enabled collectors, reading the OS under the configured roots (`proc_root`, ...)."""
    if os == "linux" and hasattr(psutil_module, "PROCFS_PATH"):
        psutil_module.PROCFS_PATH = config.agent.proc_root  # psutil's own reads follow the root too
    ctx = Context(psutil=psutil_module, config=config, os=os)
    return collectors.build(ctx, disabled=config.agent.disabled_collectors)


def cleartext_token_urls(config: AgentConfig) -> List[str]:
    """The collector URLs a push token would cross the network to unencrypted."""
    a = config.agent
    if not a.token:
        return []
    return [u for u in a.urls if urlsplit(u).scheme == "http" and urlsplit(u).hostname not in LOCAL_HOSTS]


def build_pusher(config: AgentConfig, host: str, stop: threading.Event) -> Any:
    """One pusher per collector URL; with several, a failover pusher over them.

    Any: Agent and FailoverPusher are typed with Pusher/object; both pushers have push() and close().
    """
    a = config.agent
    urls = a.urls
    for url in cleartext_token_urls(config):
        log.warning("the push token is sent in clear text to %s: use https:// for a collector on the network", url)
    pushers: Dict[str, Any] = {u: Pusher(u, token=a.token, timeout=a.timeout, ca_file=a.ca_file,
                                         sleep=waiter(stop)) for u in urls}
    return pushers[urls[0]] if len(urls) == 1 else FailoverPusher(urls, host, pushers=pushers)


def build_agent(config: AgentConfig, host: str, stop: threading.Event, psutil_module: Any = None,
                os: Optional[str] = None) -> Agent:
    """The agent as `vdiwatch-agent` and the Windows service run it."""
    if psutil_module is None:
        import psutil

        psutil_module = psutil
    os = os or os_name()
    runner = collectors.Runner(build_collectors(config, psutil_module, os))
    return Agent(config=config, host=host, runner=runner, pusher=build_pusher(config, host, stop), stop=stop,
                 os=os, phase=schedule_phase(host, config.agent.interval))
