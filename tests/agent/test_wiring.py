"""The agent's wiring: roots from the config reach the sources, one URL list, tokens in clear text named."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.collectors.sessions import SessionsCollector
from agent.config import AgentConfig, AgentSection, load_agent_config
from agent.failover import FailoverPusher
from agent.push import Pusher
from agent.sessions.logind import LogindSource
from agent.wiring import build_agent, build_collectors, cleartext_token_urls
from contract.configfile import ConfigError
from tests.agent import fakepsutil
from tests.agent.sessions.fakes import SESSION_FIXTURES, linux_psutil, logind_tree


def test_roots_are_configuration_with_node_exporter_like_defaults(tmp_path: Path) -> None:
    a = AgentConfig().agent
    assert (a.proc_root, a.dev_root, a.run_root) == ("/proc", "/dev", "/run")
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nproc_root = "/host/proc"\nrun_root = "/host/run"\n')
    a = load_agent_config(str(path)).agent
    assert (a.proc_root, a.dev_root, a.run_root) == ("/host/proc", "/dev", "/host/run")
    path.write_text('[agent]\nproc_root = "/host/proc/"\ndev_root = ""\n')
    with pytest.raises(ConfigError) as e:
        load_agent_config(str(path))
    assert "agent.proc_root" in e.value.render() and "agent.dev_root" in e.value.render()


def test_a_containerised_agent_reads_the_host_under_its_roots(tmp_path: Path) -> None:
    logind_tree(tmp_path)
    ps = linux_psutil()
    ps.PROCFS_PATH = "/proc"  # psutil's own setting, which the wiring follows
    config = AgentConfig(agent=AgentSection(proc_root=str(SESSION_FIXTURES / "proc"), dev_root=str(tmp_path / "dev"),
                                            run_root=str(tmp_path / "run")))
    built = {c.name: c for c in build_collectors(config, ps, "linux")}
    sessions = built["sessions"]
    assert isinstance(sessions, SessionsCollector) and isinstance(sessions.source, LogindSource)
    assert sessions.source.root == str(tmp_path / "run" / "systemd" / "sessions")
    assert sessions.source.dev_root == str(tmp_path / "dev")
    assert sessions.grouper is not None and sessions.grouper.reader.root == str(SESSION_FIXTURES / "proc")
    assert ps.PROCFS_PATH == str(SESSION_FIXTURES / "proc")


def test_one_pusher_or_a_failover_over_the_configured_urls() -> None:
    one = build_agent(AgentConfig(), "vda-01", threading.Event(), fakepsutil.load("linux"), os="linux")
    assert isinstance(one.pusher, Pusher) and one.pusher.url.startswith("http://127.0.0.1:9847")
    urls = ("https://a.example:9847", "https://b.example:9847")
    config = AgentConfig(agent=AgentSection(collector_urls=urls))
    assert config.agent.urls == urls
    two = build_agent(config, "vda-01", threading.Event(), fakepsutil.load("linux"), os="linux")
    assert isinstance(two.pusher, FailoverPusher)
    for agent in (one, two):
        agent.pusher.close()


def test_a_token_sent_in_clear_text_over_the_network_is_named() -> None:
    a = AgentSection(token="t", collector_urls=("http://127.0.0.1:9847", "http://collector:9847",
                                                 "https://collector:9847"))
    assert cleartext_token_urls(AgentConfig(agent=a)) == ["http://collector:9847"]
    assert cleartext_token_urls(AgentConfig(agent=dataclasses.replace(a, token=""))) == []


def test_psutil_without_procfs_setting_is_left_alone() -> None:
    ps = SimpleNamespace()
    build_collectors(AgentConfig(agent=AgentSection(disabled_collectors=tuple(
        n for n in ("cpu", "load", "memory", "filesystems", "disks", "interfaces", "system", "sessions", "capacity")
        if n != "capacity"))), ps, "linux")
    assert not hasattr(ps, "PROCFS_PATH")
