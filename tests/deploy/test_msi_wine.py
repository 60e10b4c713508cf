"""The Windows agent's MSI, built with wixl and run for real under Wine (Debian's wine64).

The slow test installs the MSI as an administrator would (`msiexec /i ... /qn SITE=...`) into a
fresh Wine prefix, with the machine's identity in the registry as a GPO would leave it, and
follows the agent as a real collector on 127.0.0.1 sees it: reports from `os="windows"` with the
registry's site and group, the goodbye when the service stops, an upgrade that keeps the config,
an uninstall that removes the service. Booting a prefix takes a few seconds, so the steps share
one prefix and run in order in one test.

Wine is not Windows; where it lacks an API the test expects what the product does on any
system that lacks it, nothing made for Wine:
- file ACLs: SetNamedSecurityInfo succeeds but nothing is kept, so the MSI refuses to install a
  push token it cannot protect (the install fails and rolls back);
- SERVICE_CONFIG_FAILURE_ACTIONS_FLAG: refused with ERROR_INVALID_LEVEL, logged in install.log;
- WTSEnumerateSessionsExW, PDH counters (swap, load): the sessions and load collectors are
  marked failed, memory is reported without swap, everything else is in the report.
Every Wine process runs with standard handles on /dev/null: services.exe and the services it
starts inherit them, a pipe would stay open, and Python cannot start on a redirected file under
Wine ("can't initialize sys standard streams").
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import requests

from tests.conftest import ROOT, CollectorProcess, require_tool, wait_until

SERVICE = "vdiwatch-agent"
REGISTRY_SITE, REGISTRY_GROUP = "Registry Site", "Registry Group"


def build_msi_module() -> Any:
    spec = importlib.util.spec_from_file_location("build_msi", ROOT / "scripts" / "build_msi.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the build script's pure parts -------------------------------------------------------------

@pytest.mark.parametrize("member, target", [
    ("agent/cli.py", "agent/cli.py"),
    ("psutil/_psutil_windows.pyd", "psutil/_psutil_windows.pyd"),
    ("pywin32-312.data/scripts/pywin32_postinstall.py", None),
    ("foo-1.0.data/purelib/foo/bar.py", "foo/bar.py"),
    ("foo-1.0.data/headers/foo.h", None),
    ("win32/lib/win32serviceutil.py", "win32/lib/win32serviceutil.py"),
    ("win32comext/shell/shell.pyd", None),
    ("pythonwin/win32ui.pyd", None),
    ("win32/Demos/service/pipeTestService.py", None),
    ("PyWin32.chm", None),
    ("agent/", None),
])
def test_wheel_members_land_in_site_packages(member: str, target: Optional[str]) -> None:
    assert build_msi_module().wheel_target(member) == target


def test_file_list_has_stable_ids_and_guids(tmp_path) -> None:
    b = build_msi_module()
    files = ["python311.dll", "python.exe", "Lib/site-packages/agent/cli.py", "Lib/site-packages/agent/config.py"]
    text = b.files_wxs(tmp_path / "stage", files)
    assert text == b.files_wxs(tmp_path / "stage", list(reversed(files)))  # an upgrade gets the same GUIDs
    assert "python.exe" not in text  # declared by the main .wxs: the custom action's interpreter
    defined = re.findall(r'<(?:Directory|Component|File) [^>]*?Id="([^"]+)"', text)
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]{0,71}", i) for i in defined)  # MSI identifiers
    assert len(defined) == len(set(defined)) == 3 + 3 * 2  # Lib, site-packages, agent; 3 x (component, file)
    components = re.findall(r'<Component [^>]*?Id="([^"]+)"', text)
    assert re.findall(r'<ComponentRef Id="([^"]+)"', text) == components


# --- under Wine ----------------------------------------------------------------------------------

class Wine:
    """wine and wineserver for one prefix; Windows paths mapped to the prefix's drive_c."""

    def __init__(self, prefix: Path) -> None:
        self.wine, self.wineserver = require_tool("wine"), require_tool("wineserver")
        self.prefix = prefix
        self.env = {**os.environ, "WINEPREFIX": str(prefix), "WINEDEBUG": "-all",
                    "WINEDLLOVERRIDES": "mscoree,mshtml=", "DISPLAY": ""}

    def __call__(self, *args: str, timeout: float = 120) -> int:
        return subprocess.run([self.wine, *args], env=self.env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout).returncode

    def output(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """For short-lived programs once services.exe runs (it would hold a pipe open)."""
        return subprocess.run([self.wine, *args], env=self.env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, errors="replace", timeout=timeout)

    def server(self, *args: str) -> int:
        return subprocess.run([self.wineserver, *args], env=self.env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60).returncode

    def c(self, windows_path: str) -> Path:
        """C:\\ProgramData\\x -> <prefix>/drive_c/ProgramData/x"""
        assert windows_path[:3].upper() == "C:\\"
        return self.prefix / "drive_c" / Path(*windows_path[3:].split("\\"))

    def running(self, image: str) -> bool:
        """Whether a process of this prefix runs `image` (seen from Linux: Wine 8 has no tasklist)."""
        for proc in Path("/proc").iterdir():
            try:
                cmdline = (proc / "cmdline").read_bytes()
                environ = (proc / "environ").read_bytes()
            except OSError:
                continue
            if image.encode() in cmdline and f"WINEPREFIX={self.prefix}\0".encode() in environ + b"\0":
                return True
        return False

    def service_state(self) -> str:
        """RUNNING, STOPPED, ... or "" when the service does not exist."""
        m = re.search(r"STATE\s*:\s*\d+\s+(\w+)", self.output("sc", "query", SERVICE).stdout)
        return m.group(1) if m else ""


def bumped(version: str) -> str:
    major, minor, patch = (version.split(".") + ["0", "0"])[:3]
    return f"{major}.{minor}.{int(patch) + 1}"


def host_view(collector: CollectorProcess) -> Optional[Dict[str, Any]]:
    """The one host the collector knows, with its last report; None before the first report."""
    hosts = requests.get(f"{collector.url}/api/v1/hosts", timeout=5).json()["hosts"]
    if not hosts:
        return None
    assert len(hosts) == 1, hosts
    return requests.get(f"{collector.url}/api/v1/hosts/{hosts[0]['host']}", timeout=5).json()


def last_state(collector: CollectorProcess) -> str:
    view = host_view(collector)
    return view["host"]["state"] if view else ""


def collector_statuses(report: Dict[str, Any]) -> Dict[str, bool]:
    return {name: status["success"] for name, status in report["collectors"].items()}


# What Wine 8 cannot answer; on Windows these collectors succeed. logons: Wine's EvtQuery knows none of
# the event log channels (its error is logged once and the report goes on without readings.logons).
WINE_LACKS = {"sessions", "load", "logons"}


def assert_degraded_gracefully(report: Dict[str, Any]) -> None:
    statuses = collector_statuses(report)
    assert {name for name, ok in statuses.items() if not ok} == WINE_LACKS, statuses
    for name in ("cpu", "memory", "filesystems", "interfaces", "system", "capacity"):
        assert report["readings"][name], name
    # Wine's PDH has none of the experience counter sets: every one is absent, said once, and the
    # collector succeeds without a section (docs/sessions.md, "Experience counters").
    assert statuses.get("experience") is True and "experience" not in report["readings"], statuses
    memory = report["readings"]["memory"]  # the paging-file counters are missing: memory without swap
    assert memory["total_bytes"] > 0 and memory["swap_total_bytes"] is None, memory


@pytest.mark.slow
def test_msi_installs_reports_says_goodbye_upgrades_and_uninstalls_under_wine(tmp_path) -> None:
    wine = Wine(tmp_path / "prefix")
    require_tool("wixl")
    b = build_msi_module()
    cache = ROOT / "build" / "msi" / "cache"  # downloads once, then offline
    msi = b.build(tmp_path / "vdiwatch-agent.msi", cache, tmp_path / "work")
    collector = CollectorProcess(tmp_path).start()
    (tmp_path / "prefix").mkdir()
    try:
        assert wine.server("-p") == 0  # persistent: Wine's services end with the wineserver
        assert wine("wineboot", "-i") == 0
        # A fresh prefix's first services.exe forgets services created while it runs (OpenService
        # answers 1060 right after CreateService): start the prefix again before installing.
        wine.server("-k")
        wine.server("-w")
        assert wine.server("-p") == 0
        for name, value in (("Site", REGISTRY_SITE), ("DeliveryGroup", REGISTRY_GROUP)):
            assert wine("reg", "add", r"HKLM\SOFTWARE\vdiwatch", "/v", name, "/t", "REG_SZ", "/d", value, "/f") == 0
        data = wine.c(r"C:\ProgramData\vdiwatch")
        program = wine.c(r"C:\Program Files\vdiwatch")
        properties = ["SITE=Msi Site", "DELIVERY_GROUP=Msi Group", f"COLLECTOR_URLS={collector.url}"]

        # 1. Installed without a token: the service starts at once and reports with the registry's
        #    identity (the MSI's SITE went into agent.toml, the image's default).
        assert wine("msiexec", "/i", str(msi), "/qn", *properties) == 0
        config = (data / "agent.toml").read_bytes()
        assert not config.startswith(b"\xef\xbb\xbf") and b'site = "Msi Site"' in config
        install_log = (data / "install.log").read_text(encoding="utf-8")
        assert f"site {REGISTRY_SITE}, delivery group {REGISTRY_GROUP}" in install_log
        assert "fFailureActionsOnNonCrashFailures" in install_log  # Wine refuses that level: logged
        view = wait_until(lambda: last_state(collector) == "up" and host_view(collector), timeout=60,
                          what="the service's first report")
        host = view["host"]
        assert (host["site"], host["delivery_group"], host["os"]) == (REGISTRY_SITE, REGISTRY_GROUP, "windows")
        assert_degraded_gracefully(view["report"])
        assert wine.service_state() == "RUNNING"
        assert (data / "agent.log").is_file()  # beside the config, not where Wine's services think ProgramData is

        # 2. Stopping the service says goodbye: the collector shows the host stopped, not down.
        assert wine("net", "stop", SERVICE) == 0
        wait_until(lambda: last_state(collector) == "stopped", timeout=30, what="the goodbye")
        assert wine.service_state() == "STOPPED"

        # 3. The embedded interpreter as an administrator runs it: one report, printed.
        once = wine.output(r"C:\Program Files\vdiwatch\python.exe", "-m", "agent", "--once", "--print",
                           "--config", r"C:\ProgramData\vdiwatch\agent.toml")
        assert once.returncode == 0, once.stderr
        report = json.loads(once.stdout)
        assert (report["agent"]["os"], report["site"], report["delivery_group"]) == (
            "windows", REGISTRY_SITE, REGISTRY_GROUP)
        assert_degraded_gracefully(report)

        # 4. An upgrade keeps the operator's config and runs the new version's service.
        (data / "agent.toml").write_bytes(config + b"# edited by the operator\n")
        newer = b.build(tmp_path / "vdiwatch-agent-newer.msi", cache, tmp_path / "work",
                        version=bumped(b.project_version()))
        assert wine("msiexec", "/i", str(newer), "/qn", "SITE=Ignored On Upgrade") == 0
        assert (data / "agent.toml").read_bytes().endswith(b"# edited by the operator\n")
        assert wine.service_state() == "RUNNING"
        wait_until(lambda: last_state(collector) == "up", timeout=60, what="reports after the upgrade")
        assert wine("msiexec", "/x", str(msi), "/qn") != 0  # the older product is gone

        # 5. Uninstalling stops the service (goodbye), removes it and the program, keeps the data.
        #    Wine's service process outlives its STOPPED report by seconds, and Wine's msiexec leaves
        #    files it could not delete (Windows schedules them for the next boot): stop it first.
        assert wine("net", "stop", SERVICE) == 0
        wait_until(lambda: last_state(collector) == "stopped", timeout=30, what="the goodbye before uninstall")
        wait_until(lambda: not wine.running("pythonservice.exe"), timeout=30, what="the service process to exit")
        assert wine("msiexec", "/x", str(newer), "/qn") == 0
        assert wine.service_state() == ""
        assert not (program / "pythonservice.exe").exists() and not (program / "python.exe").exists()
        assert (data / "agent.toml").is_file()

        # 6. A push token the system does not protect is refused: the install fails and rolls back.
        #    (Last: after a rolled-back install, Wine 8's msiexec no longer creates the service.)
        token = tmp_path / "cityhall.token"
        token.write_text("not-for-desktop-users\n")
        code = wine("msiexec", "/i", str(msi), "/qn", *properties, f"TOKEN_FILE=Z:{token}".replace("/", "\\"))
        assert code != 0
        assert "push token was not installed" in (data / "install.log").read_text(encoding="utf-8")
        assert not (data / "agent.token").exists()
        assert wine.service_state() == "" and not (program / "pythonservice.exe").exists()
    finally:
        # Shown by pytest when a step fails: what the service, the installer and the collector said.
        for name in ("agent.log", "install.log"):
            path = wine.c(r"C:\ProgramData\vdiwatch") / name
            if path.is_file():
                print(f"--- {name}", *path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:], sep="\n")
        wine.server("-k")
        collector.stop()
        log: List[str] = collector.log().splitlines()[-20:]
        print("--- collector", *log, sep="\n")
