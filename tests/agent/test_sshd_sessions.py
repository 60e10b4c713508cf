"""Real sessions: OpenSSH's sshd on a loopback port, two `ssh -tt` logins, the real agent and collector.

sshd records sessions with a terminal in utmp; a bare container may have no
/var/run/utmp, so the test creates an empty one (and sshd's privilege
separation directory) when missing. Without systemd running the machine, the
agent's `auto` source is utmp; on a systemd host it is logind, which counts
the same sshd sessions.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, CollectorProcess, free_port, require_tool, wait_until

pytestmark = pytest.mark.slow


def metric(text: str, name: str, **labels: str) -> float:
    wanted = "".join(f'.*{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{") and re.match(rf"{re.escape(name)}\{{{wanted}", line):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in /metrics")


@pytest.fixture
def sshd(tmp_path: Path):
    sshd_bin, keygen = require_tool("sshd"), require_tool("ssh-keygen")
    if os.geteuid() != 0:
        pytest.skip("sshd with a loopback login as the current user needs root here")
    for path in ("/var/run/utmp",):
        if not os.path.exists(path):
            Path(path).touch(mode=0o664)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "host_key")], check=True)
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "user_key")], check=True)
    (tmp_path / "authorized_keys").write_text((tmp_path / "user_key.pub").read_text())
    (tmp_path / "authorized_keys").chmod(0o600)
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {tmp_path}/host_key
AuthorizedKeysFile {tmp_path}/authorized_keys
PidFile {tmp_path}/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
PrintLastLog no
UseDNS no
""")
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    yield {"port": port, "key": tmp_path / "user_key", "proc": proc}
    proc.terminate()
    proc.wait(10)


def open_session(ssh: str, server: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [ssh, "-tt", "-i", str(server["key"]), "-p", str(server["port"]), "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
         f"{os.environ.get('USER', 'root')}@127.0.0.1", "sleep 120"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_agent_counts_real_ssh_sessions_and_logoffs(sshd, tmp_path: Path) -> None:
    ssh = require_tool("ssh")
    collector = CollectorProcess(tmp_path, "[collector]\nmin_report_interval = 0\n").start()
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[agent]\ncollector_url = "{collector.url}"\ninterval = 1.0\nhost = "ssh-test-host"\n'
                   '[sessions]\npseudonym_secret = "test"\n')
    agent = subprocess.Popen([sys.executable, "-m", "agent", "--config", str(cfg)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sessions = []
    try:
        text = wait_until(lambda: "vdi_sessions{host=\"ssh-test-host\"" in (t := collector.metrics()) and t,
                          what="the agent's first report")
        base_ssh = metric(text, "vdi_sessions", host="ssh-test-host", state="active", protocol="ssh")
        base_logoffs = metric(text, "vdi_session_logoffs_total", host="ssh-test-host")
        sessions = [open_session(ssh, sshd), open_session(ssh, sshd)]

        def two_more():
            t = collector.metrics()
            for s in sessions:
                assert s.poll() is None, s.stderr.read().decode()
            return t if metric(t, "vdi_sessions", host="ssh-test-host", state="active",
                               protocol="ssh") == base_ssh + 2 else None

        text = wait_until(two_more, what="two active ssh sessions on /metrics")
        assert metric(text, "vdi_session_users", host="ssh-test-host") >= 1
        logons = metric(text, "vdi_session_logons_total", host="ssh-test-host")
        assert logons >= 2

        report = subprocess.run([sys.executable, "-m", "agent", "--config", str(cfg), "--once", "--print"],
                                capture_output=True, text=True, cwd=ROOT, timeout=60)
        listed = [s for s in __import__("json").loads(report.stdout)["readings"]["sessions"]["list"]
                  if s["protocol"] == "ssh"]
        assert len(listed) >= 2 and all(s["state"] == "active" for s in listed)
        assert all(s["user"].startswith("u-") for s in listed)  # pseudonymized by default

        sessions[0].terminate()
        sessions[0].wait(10)
        text = wait_until(lambda: (t := collector.metrics()) and metric(
            t, "vdi_session_logoffs_total", host="ssh-test-host") >= base_logoffs + 1 and t,
            what="a logoff on /metrics")
        assert metric(text, "vdi_session_logoffs_total", host="ssh-test-host") == base_logoffs + 1
        assert metric(text, "vdi_sessions", host="ssh-test-host", state="active", protocol="ssh") == base_ssh + 1
    finally:
        for s in sessions:
            if s.poll() is None:
                s.kill()
        agent.terminate()
        agent.wait(15)
        collector.stop()
