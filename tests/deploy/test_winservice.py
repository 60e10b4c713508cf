"""The Windows service's logic with a fake Service Control Manager (pywin32 cannot run here)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Dict, List

import pytest

from agent import winservice
from agent.config import AgentConfig, machine_overrides
from agent.winservice import ServiceRunner, ServiceState, quote_arg, service_command, service_command_line
from contract.configfile import ConfigError

ENV = {"ProgramData": r"C:\ProgramData"}


class FakeScm:
    def __init__(self) -> None:
        self.services: Dict[str, dict] = {}
        self.calls: List[str] = []

    def state(self, name: str) -> ServiceState:
        s = self.services.get(name)
        return ServiceState(s is not None, bool(s and s["running"]))

    def install(self, name, display, description, command_line) -> None:
        self.calls.append("install")
        self.services[name] = {"running": False, "command": command_line, "display": display}

    def remove(self, name) -> None:
        self.calls.append("remove")
        assert not self.services[name]["running"], "removing a running service"
        del self.services[name]

    def start(self, name) -> None:
        self.calls.append("start")
        self.services[name]["running"] = True

    def stop(self, name, timeout) -> None:
        self.calls.append("stop")
        self.services[name]["running"] = False


def run(argv, scm, **kw):
    lines: List[str] = []
    code = service_command(argv, scm, python=r"C:\Program Files\vdiwatch\python.exe", env=ENV,
                           out=lines.append, **kw)
    return code, "\n".join(lines)


def test_install_start_stop_remove_cycle() -> None:
    scm = FakeScm()
    code, text = run(["install"], scm)
    assert code == 0 and "installed vdiwatch-agent" in text
    command = scm.services["vdiwatch-agent"]["command"]
    assert command.startswith(r'"C:\Program Files\vdiwatch\python.exe" -m agent service run --config C:\ProgramData')
    assert command.endswith("agent.toml")
    assert run(["install"], scm)[0] == 1  # twice: refused, says what to do
    assert run(["start"], scm) == (0, "started vdiwatch-agent")
    assert run(["status"], scm) == (0, "vdiwatch-agent: running")
    assert run(["remove"], scm)[0] == 0  # stops first
    assert scm.calls == ["install", "start", "stop", "remove"]
    assert run(["status"], scm) == (1, "vdiwatch-agent: not installed")
    code, text = run(["stop"], scm)
    assert code == 1 and "not installed" in text


def test_usage_errors() -> None:
    assert run([], FakeScm())[0] == 2
    assert run(["explode"], FakeScm())[0] == 2
    assert run(["install", "--bogus"], FakeScm())[0] == 2


def test_custom_config_path_goes_into_the_command_line() -> None:
    scm = FakeScm()
    run(["install", "--config", r"D:\vdi\agent.toml"], scm)
    assert scm.services["vdiwatch-agent"]["command"].endswith(r"--config D:\vdi\agent.toml")


def test_run_by_hand_is_explained() -> None:
    code, text = run(["run"], FakeScm())
    assert code == 1 and "Service Control Manager" in text


def test_quote_arg_follows_windows_rules() -> None:
    assert quote_arg("plain") == "plain"
    assert quote_arg(r"C:\Program Files\x") == r'"C:\Program Files\x"'
    assert quote_arg('say "hi"') == r'"say \"hi\""'
    assert quote_arg("ends with\\") == '"ends with\\\\"'
    assert service_command_line("py", Path("a b")).endswith('--config "a b"')


def test_stop_request_makes_the_agent_say_goodbye() -> None:
    events = []

    class FakeAgent:
        def __init__(self, stop: threading.Event):
            self.stop = stop
            self.pusher = self

        def run(self) -> None:
            assert self.stop.wait(5), "never asked to stop"
            events.append("goodbye")

        def close(self) -> None:
            events.append("closed")

    runner = ServiceRunner(Path("/nonexistent/agent.toml"), build=lambda config, host, stop: FakeAgent(stop))
    t = threading.Thread(target=runner.run)
    t.start()
    runner.request_stop()  # what SvcStop and SvcShutdown do
    t.join(5)
    assert events == ["goodbye", "closed"]


def test_log_handlers_rotate_and_send_errors_to_event_log(tmp_path) -> None:
    class Events(logging.Handler):
        def __init__(self):
            super().__init__()
            self.records = []

        def emit(self, record):
            self.records.append(record)

    events = Events()
    handlers = winservice.log_handlers(tmp_path / "vdiwatch", lambda: events, max_bytes=1000, backups=2)
    logger = logging.getLogger("test.winservice")
    logger.propagate = False
    for h in handlers:
        logger.addHandler(h)
    try:
        for i in range(100):
            logger.warning("line %d with some padding to fill the file", i)
        logger.error("bad thing")
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
    files = sorted(p.name for p in (tmp_path / "vdiwatch").iterdir())
    assert files == ["agent.log", "agent.log.1", "agent.log.2"]
    assert [r.getMessage() for r in events.records] == ["bad thing"]


def test_no_event_log_still_logs_to_file(tmp_path) -> None:
    def broken():
        raise OSError("no event log here")
    handlers = winservice.log_handlers(tmp_path, broken)
    assert len(handlers) == 1
    handlers[0].close()


def test_machine_identity_from_registry_then_environment() -> None:
    base = AgentConfig()
    registry = {"Site": "City Hall", "DeliveryGroup": "Office Desktops"}.get
    c = machine_overrides(base, env={}, registry=registry)
    assert (c.agent.site, c.agent.delivery_group) == ("City Hall", "Office Desktops")
    c = machine_overrides(base, env={"VDIWATCH_DELIVERY_GROUP": "Pool B"}, registry=registry)
    assert (c.agent.site, c.agent.delivery_group) == ("City Hall", "Pool B")
    assert machine_overrides(base, env={}, registry=None) is base
    with pytest.raises(ConfigError) as e:
        machine_overrides(base, env={"VDIWATCH_SITE": "bad\nsite"})
    assert "$VDIWATCH_SITE" in str(e.value)
    with pytest.raises(ConfigError) as e:
        machine_overrides(base, env={}, registry={"Site": "x" * 300}.get)
    assert r"HKLM\SOFTWARE\vdiwatch\Site" in str(e.value)


class _ReturningAgent:
    """An agent whose loop ends at once, for tests that only look at what it was built with."""

    def __init__(self) -> None:
        self.pusher = self

    def run(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_service_reports_with_the_machine_identity_the_command_line_checks(tmp_path, monkeypatch,
                                                                               capsys) -> None:
    """An MCS/PVS clone: the image's file says one site, the machine another; the service and
    `--check-config` (what the installer runs) must both use the machine's."""
    from agent.cli import main

    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nsite = "Image Site"\ndelivery_group = "Image Group"\nhost = "vda-01"\n')
    monkeypatch.setenv("VDIWATCH_SITE", "Clone Site")
    monkeypatch.setenv("VDIWATCH_DELIVERY_GROUP", "Clone Group")
    built = []

    def build(config, host, stop):
        built.append((host, config.agent.site, config.agent.delivery_group))
        return _ReturningAgent()

    assert ServiceRunner(path, build=build).run() == 0
    assert built == [("vda-01", "Clone Site", "Clone Group")]
    assert main(["--config", str(path), "--check-config"]) == 0
    assert "site Clone Site, delivery group Clone Group" in capsys.readouterr().out


def test_the_service_takes_the_identity_from_the_registry(tmp_path) -> None:
    from agent.config import load_machine_config

    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nsite = "Image Site"\nhost = "vda-01"\n')
    registry = {"Site": "Registry Site", "DeliveryGroup": "Registry Group"}.get
    built = []
    runner = ServiceRunner(path, build=lambda c, h, s: built.append(c.agent) or _ReturningAgent(),
                           load=lambda p: load_machine_config(p, env={}, registry=registry))
    assert runner.run() == 0
    assert [(a.site, a.delivery_group) for a in built] == [("Registry Site", "Registry Group")]


def test_registry_reads_use_the_64_bit_view() -> None:
    """A 32-bit Python on 64-bit Windows is redirected to WOW6432Node unless it asks for KEY_WOW64_64KEY."""
    from agent.config import windows_registry_value
    from tests.windows.fakereg import FakeWinreg

    reg = FakeWinreg({r"SOFTWARE\vdiwatch": {"Site": ("City Hall", FakeWinreg.REG_SZ),
                                             "DeliveryGroup": (7, FakeWinreg.REG_DWORD)}})
    assert windows_registry_value("Site", winreg=reg) == "City Hall"
    assert windows_registry_value("DeliveryGroup", winreg=reg) is None  # not a string: ignored
    assert windows_registry_value("Missing", winreg=reg) is None
    assert reg.opened and all(access & FakeWinreg.KEY_WOW64_64KEY for _, access in reg.opened)


class FakePyWinError(Exception):
    """Shaped like pywintypes.error: args (winerror, funcname, strerror), not an OSError."""

    def __init__(self, winerror: int, funcname: str, strerror: str):
        super().__init__(winerror, funcname, strerror)
        self.winerror, self.funcname, self.strerror = winerror, funcname, strerror


class FakeWin32Service:
    SERVICE_RUNNING, SERVICE_STOPPED = 4, 1


class FakeWin32ServiceUtil:
    """win32serviceutil's calls that Win32Services makes; `fail` maps a call to the error it raises."""

    def __init__(self, installed: bool = True, running: bool = False):
        self.installed, self.running = installed, running
        self.fail: Dict[str, Exception] = {}

    def _maybe_fail(self, call: str) -> None:
        if call in self.fail:
            raise self.fail[call]

    def QueryServiceStatus(self, name):  # noqa: N802 - pywin32's names
        self._maybe_fail("QueryServiceStatus")
        if not self.installed:
            raise FakePyWinError(1060, "OpenService", "The specified service does not exist as an installed service.")
        return (16, 4 if self.running else 1, 0, 0, 0, 0, 0)

    def StartService(self, name):  # noqa: N802
        self._maybe_fail("StartService")
        self.running = True

    def StopService(self, name):  # noqa: N802
        self._maybe_fail("StopService")
        self.running = False

    def WaitForServiceStatus(self, name, status, wait):  # noqa: N802
        self._maybe_fail("WaitForServiceStatus")

    def RemoveService(self, name):  # noqa: N802
        self._maybe_fail("RemoveService")
        self.installed = False


def win32(util: FakeWin32ServiceUtil) -> winservice.Win32Services:
    return winservice.Win32Services(FakeWin32Service(), util, FakePyWinError)


def test_a_denied_start_is_a_message_not_a_traceback() -> None:
    util = FakeWin32ServiceUtil()
    util.fail["StartService"] = FakePyWinError(5, "StartService", "Access is denied.")
    code, text = run(["start"], win32(util))
    assert code == 1
    assert text == ("error: cannot start vdiwatch-agent: StartService: Access is denied. (error 5); "
                    "run the command as Administrator")


@pytest.mark.parametrize("action, call, error, expected", [
    ("start", "WaitForServiceStatus", FakePyWinError(1053, "QueryServiceStatus", "The service did not respond"),
     "cannot start vdiwatch-agent: QueryServiceStatus: The service did not respond (error 1053); the service "
     "did not answer in time"),
    ("stop", "StopService", FakePyWinError(1051, "ControlService", "A stop control has been sent to a service "
                                                                    "that other running services are dependent on."),
     "cannot stop vdiwatch-agent: ControlService: A stop control"),
    ("remove", "RemoveService", FakePyWinError(1072, "DeleteService", "The specified service has been marked for "
                                                                       "deletion."),
     "cannot remove vdiwatch-agent: DeleteService: The specified service has been marked for deletion. (error 1072)"),
    ("status", "QueryServiceStatus", OSError(1722, "The RPC server is unavailable"),
     "cannot query the state of vdiwatch-agent: The RPC server is unavailable (error 1722)"),
])
def test_every_service_call_reports_windows_errors_readably(action, call, error, expected) -> None:
    util = FakeWin32ServiceUtil(running=action in ("stop", "remove"))
    util.fail[call] = error
    code, text = run([action], win32(util))
    assert code == 1 and text.startswith("error: " + expected), text


def test_a_missing_service_is_not_installed_and_a_race_is_no_error() -> None:
    assert win32(FakeWin32ServiceUtil(installed=False)).state("x") == ServiceState(False)
    util = FakeWin32ServiceUtil(running=False)
    util.fail["StartService"] = FakePyWinError(1056, "StartService", "An instance of the service is already running.")
    win32(util).start("vdiwatch-agent")  # started meanwhile by someone else: the goal is reached
    util.fail["StopService"] = FakePyWinError(1062, "ControlService", "The service has not been started.")
    win32(util).stop("vdiwatch-agent", 30.0)


def test_a_manager_that_lets_a_windows_error_through_still_gets_a_message() -> None:
    class LeakyScm(FakeScm):
        errors = (FakePyWinError,)

        def start(self, name) -> None:
            raise FakePyWinError(5, "StartService", "Access is denied.")

    scm = LeakyScm()
    scm.services["vdiwatch-agent"] = {"running": False, "command": "", "display": ""}
    code, text = run(["start"], scm)
    assert (code, text) == (1, "error: service start failed: StartService: Access is denied. (error 5); "
                               "run the command as Administrator")


def test_a_venv_service_runs_the_base_interpreter_with_the_venv_packages(tmp_path) -> None:
    """A venv's python.exe is a launcher: the SCM must start the base interpreter, which then needs
    the venv's site-packages (and their .pth files) to find the agent and pywin32."""
    import subprocess
    import sys as real_sys
    from types import SimpleNamespace

    venv = SimpleNamespace(prefix=r"C:\Program Files\vdiwatch", base_prefix=r"C:\Python311",
                           executable=r"C:\Program Files\vdiwatch\Scripts\python.exe",
                           _base_executable=r"C:\Python311\python.exe")
    python, site_dir = winservice.service_python(venv)
    assert python == r"C:\Python311\python.exe"
    assert site_dir is not None and site_dir.startswith(r"C:\Program Files\vdiwatch")
    plain = SimpleNamespace(prefix=r"C:\Python311", base_prefix=r"C:\Python311",
                            executable=r"C:\Python311\python.exe", _base_executable=r"C:\Python311\python.exe")
    assert winservice.service_python(plain) == (r"C:\Python311\python.exe", None)

    scm = FakeScm()
    assert service_command(["install"], scm, python=python, site_dir=r"C:\Program Files\vdiwatch\Lib\site-packages",
                           env=ENV, out=lambda _: None) == 0
    line = scm.services["vdiwatch-agent"]["command"]
    assert line.startswith(r"C:\Python311\python.exe -E -S -c ")
    assert r'"C:\Program Files\vdiwatch\Lib\site-packages" service run --config C:\ProgramData' in line

    # The bootstrap for real, here: this venv's base interpreter finds the agent only through it.
    python, site_dir = winservice.service_python(real_sys)
    if site_dir is None:
        pytest.skip("the tests do not run in a virtual environment")
    done = subprocess.run([python, "-E", "-S", "-c", winservice.VENV_BOOTSTRAP, site_dir, "--version"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("vdiwatch-agent "), done.stderr
    without = subprocess.run([python, "-E", "-S", "-c", "import agent"], capture_output=True, cwd=tmp_path,
                             timeout=60)
    assert without.returncode != 0
