"""The Windows service host and the MSI's configure step, driven through fakes of pywin32.

FakeFramework mirrors pywin32's win32serviceutil.ServiceFramework (how SvcRun reports RUNNING and
STOP_PENDING, how ServiceCtrlHandlerEx dispatches controls, how GetAcceptedControls is derived from
the methods a class has); the constants are winsvc.h's.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, List, Optional, Tuple

import pytest

from agent import winhost
from agent.config import AgentConfig, AgentSection, load_agent_config
from agent.runner import GOODBYE_SECONDS
from agent.winservice import (
    PRESHUTDOWN_TIMEOUT_MS,
    STOP_WAIT_HINT_MS,
    ServiceRunner,
    Win32Services,
    _service_class,
    configure_recovery,
)
from contract.configfile import tomllib
from tests.conftest import wait_until

# winsvc.h
SERVICE_STOPPED, SERVICE_START_PENDING, SERVICE_STOP_PENDING, SERVICE_RUNNING = 1, 2, 3, 4
SERVICE_ACCEPT_STOP, SERVICE_ACCEPT_SHUTDOWN, SERVICE_ACCEPT_PRESHUTDOWN = 0x1, 0x4, 0x100
SERVICE_ACCEPT_POWEREVENT = 0x40
SERVICE_CONTROL_STOP, SERVICE_CONTROL_INTERROGATE, SERVICE_CONTROL_SHUTDOWN = 1, 4, 5
SERVICE_CONTROL_POWEREVENT, SERVICE_CONTROL_PRESHUTDOWN = 0xD, 0xF
# WinUser.h, the dwEventType of SERVICE_CONTROL_POWEREVENT
PBT_APMQUERYSUSPEND, PBT_APMSUSPEND, PBT_APMRESUMESUSPEND, PBT_APMPOWERSTATUSCHANGE = 0x0, 0x4, 0x7, 0xA
PBT_APMRESUMEAUTOMATIC = 0x12
SERVICE_CONFIG_DESCRIPTION, SERVICE_CONFIG_FAILURE_ACTIONS = 1, 2
SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, SERVICE_CONFIG_PRESHUTDOWN_INFO = 4, 7
SC_ACTION_RESTART = 1
ERROR_INVALID_LEVEL = 124


class FakeError(Exception):
    """pywintypes.error: (winerror, funcname, strerror), not an OSError."""

    def __init__(self, winerror: int, funcname: str, strerror: str):
        super().__init__(winerror, funcname, strerror)
        self.winerror, self.funcname, self.strerror = winerror, funcname, strerror


class FakeWin32Service:
    """win32service: the constants and the calls install makes, recorded."""

    SERVICE_WIN32_OWN_PROCESS, SERVICE_AUTO_START, SERVICE_ERROR_NORMAL = 0x10, 2, 1
    SERVICE_ALL_ACCESS, SC_MANAGER_ALL_ACCESS = 0xF01FF, 0xF003F
    SERVICE_STOPPED, SERVICE_START_PENDING = SERVICE_STOPPED, SERVICE_START_PENDING
    SERVICE_STOP_PENDING, SERVICE_RUNNING = SERVICE_STOP_PENDING, SERVICE_RUNNING
    SERVICE_ACCEPT_STOP, SERVICE_ACCEPT_SHUTDOWN = SERVICE_ACCEPT_STOP, SERVICE_ACCEPT_SHUTDOWN
    SERVICE_ACCEPT_PRESHUTDOWN, SERVICE_ACCEPT_POWEREVENT = SERVICE_ACCEPT_PRESHUTDOWN, SERVICE_ACCEPT_POWEREVENT
    SERVICE_CONTROL_POWEREVENT = SERVICE_CONTROL_POWEREVENT
    SERVICE_CONTROL_STOP, SERVICE_CONTROL_SHUTDOWN = SERVICE_CONTROL_STOP, SERVICE_CONTROL_SHUTDOWN
    SERVICE_CONTROL_INTERROGATE, SERVICE_CONTROL_PRESHUTDOWN = SERVICE_CONTROL_INTERROGATE, SERVICE_CONTROL_PRESHUTDOWN
    SERVICE_CONFIG_DESCRIPTION = SERVICE_CONFIG_DESCRIPTION
    SERVICE_CONFIG_FAILURE_ACTIONS = SERVICE_CONFIG_FAILURE_ACTIONS
    SERVICE_CONFIG_FAILURE_ACTIONS_FLAG = SERVICE_CONFIG_FAILURE_ACTIONS_FLAG
    SERVICE_CONFIG_PRESHUTDOWN_INFO = SERVICE_CONFIG_PRESHUTDOWN_INFO
    SC_ACTION_RESTART = SC_ACTION_RESTART

    def __init__(self, refuse: Tuple[int, ...] = ()) -> None:
        self.refuse = refuse
        self.config2: List[Tuple[int, Any]] = []
        self.created: List[str] = []
        self.statuses: List[tuple] = []

    def OpenSCManager(self, machine, database, access):  # noqa: N802
        return "scm"

    def CreateService(self, scm, name, display, access, kind, start, error, command, *rest):  # noqa: N802
        self.created.append(command)
        return "service"

    def ChangeServiceConfig2(self, handle, level, value):  # noqa: N802
        if level in self.refuse:
            raise FakeError(ERROR_INVALID_LEVEL, "ChangeServiceConfig2", "Invalid level.")
        self.config2.append((level, value))

    def CloseServiceHandle(self, handle):  # noqa: N802
        pass

    def SetServiceStatus(self, handle, status):  # noqa: N802
        self.statuses.append(status)


def fake_pywin32(ws: FakeWin32Service) -> SimpleNamespace:
    """win32serviceutil with a ServiceFramework that behaves as pywin32's (win32serviceutil.py)."""

    class ServiceFramework:
        def __init__(self, args):
            self.ssh = "handle"  # RegisterServiceCtrlHandler
            self.checkPoint = 0

        def GetAcceptedControls(self):  # noqa: N802
            accepted = 0
            if hasattr(self, "SvcStop"):
                accepted |= SERVICE_ACCEPT_STOP
            if hasattr(self, "SvcShutdown"):
                accepted |= SERVICE_ACCEPT_SHUTDOWN
            return accepted

        def ReportServiceStatus(self, status, waitHint=5000, win32ExitCode=0, svcExitCode=0):  # noqa: N802,N803
            accepted = 0 if status == SERVICE_START_PENDING else self.GetAcceptedControls()
            ws.SetServiceStatus(self.ssh, (0x10, status, accepted, win32ExitCode, svcExitCode, 0, waitHint))

        def SvcInterrogate(self):  # noqa: N802
            self.ReportServiceStatus(SERVICE_RUNNING)

        def SvcOtherEx(self, control, event_type, data):  # noqa: N802
            return None  # pywin32 prints "Unknown control status" and does nothing else

        def ServiceCtrlHandlerEx(self, control, event_type, data):  # noqa: N802
            if control == SERVICE_CONTROL_STOP:
                return self.SvcStop()
            if control == SERVICE_CONTROL_INTERROGATE:
                return self.SvcInterrogate()
            if control == SERVICE_CONTROL_SHUTDOWN:
                return self.SvcShutdown()
            return self.SvcOtherEx(control, event_type, data)

        def SvcRun(self):  # noqa: N802 - an exception here makes pythonservice.exe report a failure
            self.ReportServiceStatus(SERVICE_RUNNING)
            self.SvcDoRun()
            self.ReportServiceStatus(SERVICE_STOP_PENDING)

    return SimpleNamespace(ServiceFramework=ServiceFramework)


# --- defect 3: a Python exception stops the service with an error; Windows must restart it -----

def install(ws: FakeWin32Service) -> None:
    Win32Services(ws, SimpleNamespace(), FakeError).install("vdiwatch-agent", "vdiwatch agent", "reports",
                                                            r'"C:\vdiwatch\python.exe" -m agent service run')


def test_install_restarts_the_service_after_a_stop_with_an_error() -> None:
    ws = FakeWin32Service()
    install(ws)
    settings = dict(ws.config2)
    actions = settings[SERVICE_CONFIG_FAILURE_ACTIONS]
    assert [a for a, _delay in actions["Actions"]] == [SC_ACTION_RESTART] * 3
    # Without this flag, failure actions run only when the process dies without reporting STOPPED.
    assert settings[SERVICE_CONFIG_FAILURE_ACTIONS_FLAG] is True
    levels = [level for level, _ in ws.config2]
    assert levels.index(SERVICE_CONFIG_FAILURE_ACTIONS) < levels.index(SERVICE_CONFIG_FAILURE_ACTIONS_FLAG)


def test_install_gives_the_goodbye_time_at_shutdown() -> None:
    ws = FakeWin32Service()
    install(ws)
    timeout_ms = dict(ws.config2)[SERVICE_CONFIG_PRESHUTDOWN_INFO]
    assert timeout_ms >= GOODBYE_SECONDS * 1000 and timeout_ms == PRESHUTDOWN_TIMEOUT_MS


def test_a_recovery_setting_windows_refuses_is_reported_and_the_others_are_made(caplog) -> None:
    ws = FakeWin32Service(refuse=(SERVICE_CONFIG_FAILURE_ACTIONS_FLAG,))  # as Wine 8 answers
    problems = configure_recovery(ws, "service")
    assert len(problems) == 1 and "fFailureActionsOnNonCrashFailures" in problems[0] and "124" in problems[0]
    assert [level for level, _ in ws.config2] == [SERVICE_CONFIG_FAILURE_ACTIONS, SERVICE_CONFIG_PRESHUTDOWN_INFO]
    with caplog.at_level(logging.WARNING, logger="agent.winservice"):
        install(FakeWin32Service(refuse=(SERVICE_CONFIG_FAILURE_ACTIONS_FLAG,)))
    assert "fFailureActionsOnNonCrashFailures" in caplog.text


# --- the service class: stop, shutdown and pre-shutdown say goodbye -----------------------------

class FakeAgent:
    """Runs until asked to stop (or at once, with `returns`), then records its goodbye."""

    def __init__(self, stop: threading.Event, events: List[str], returns: bool = False,
                 raises: Optional[Exception] = None):
        self.stop, self.events, self.returns, self.raises = stop, events, returns, raises
        self.pusher = self

    def run(self) -> None:
        self.events.append("running")
        if self.raises:
            raise self.raises
        if self.returns:
            return
        assert self.stop.wait(10), "never asked to stop"
        self.events.append("goodbye")

    def close(self) -> None:
        self.events.append("closed")

    def suspend(self, timeout: float) -> None:
        self.events.append(f"suspend within {timeout} s")

    def resume(self) -> None:
        self.events.append("resume")


def service(tmp_path: Path, events: List[str], load: Any = None, **agent: Any) -> Tuple[Any, FakeWin32Service]:
    ws = FakeWin32Service()
    config = tmp_path / "agent.toml"
    runner = lambda path: ServiceRunner(  # noqa: E731
        path, build=lambda c, host, stop: FakeAgent(stop, events, **agent),
        load=load or (lambda p: AgentConfig(agent=AgentSection(host="vda-01"))))
    cls = _service_class(config, ws, fake_pywin32(ws), runner=runner, handlers=lambda: [])
    return cls(["vdiwatch-agent"]), ws


def statuses(ws: FakeWin32Service) -> List[int]:
    return [s[1] for s in ws.statuses]


@pytest.fixture(autouse=True)
def keep_root_logger():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.mark.parametrize("control", [SERVICE_CONTROL_STOP, SERVICE_CONTROL_SHUTDOWN, SERVICE_CONTROL_PRESHUTDOWN])
def test_stop_shutdown_and_preshutdown_report_stop_pending_and_say_goodbye(tmp_path, control) -> None:
    events: List[str] = []
    svc, ws = service(tmp_path, events)
    t = threading.Thread(target=svc.SvcRun)
    t.start()
    wait_until(lambda: "running" in events, what="the agent to run")
    svc.ServiceCtrlHandlerEx(control, 0, None)
    t.join(10)
    assert not t.is_alive() and events == ["running", "goodbye", "closed"]
    # STOP_PENDING at once, with a wait hint that covers the goodbye: at shutdown Windows
    # otherwise goes on after a few seconds, before the goodbye has left.
    pending = ws.statuses[1]
    assert pending[1] == SERVICE_STOP_PENDING and pending[6] == STOP_WAIT_HINT_MS
    assert STOP_WAIT_HINT_MS >= GOODBYE_SECONDS * 1000
    assert statuses(ws) == [SERVICE_RUNNING, SERVICE_STOP_PENDING, SERVICE_STOP_PENDING]


def test_the_service_accepts_stop_shutdown_and_preshutdown(tmp_path) -> None:
    svc, _ws = service(tmp_path, [])
    accepted = svc.GetAcceptedControls()
    assert accepted & SERVICE_ACCEPT_STOP and accepted & SERVICE_ACCEPT_SHUTDOWN
    assert accepted & SERVICE_ACCEPT_PRESHUTDOWN


def test_sleep_and_wake_reach_the_agent_and_other_power_events_change_nothing(tmp_path) -> None:
    events: List[str] = []
    svc, ws = service(tmp_path, events)
    assert svc.GetAcceptedControls() & SERVICE_ACCEPT_POWEREVENT, "without it Windows sends no power event"
    t = threading.Thread(target=svc.SvcRun)
    t.start()
    wait_until(lambda: "running" in events, what="the agent to run")
    for event_type in (PBT_APMQUERYSUSPEND, PBT_APMPOWERSTATUSCHANGE, PBT_APMSUSPEND, PBT_APMRESUMEAUTOMATIC,
                       PBT_APMRESUMESUSPEND):
        # NO_ERROR: a query to suspend is never refused, the agent is not worth keeping a laptop awake
        assert svc.ServiceCtrlHandlerEx(SERVICE_CONTROL_POWEREVENT, event_type, None) == 0
    svc.ServiceCtrlHandlerEx(SERVICE_CONTROL_STOP, 0, None)
    t.join(10)
    assert events == ["running", "suspend within 1.5 s", "resume", "resume", "goodbye", "closed"]
    assert SERVICE_STOP_PENDING in statuses(ws) and statuses(ws).count(SERVICE_RUNNING) == 1


def test_a_power_event_before_the_agent_is_built_is_ignored(tmp_path) -> None:
    svc, _ws = service(tmp_path, [])
    assert svc.ServiceCtrlHandlerEx(SERVICE_CONTROL_POWEREVENT, PBT_APMSUSPEND, None) == 0


def test_an_agent_that_ends_without_a_stop_request_is_a_failure(tmp_path) -> None:
    """pythonservice.exe reports SERVICE_STOPPED with an error when SvcRun raises, which the
    recovery settings answer with a restart; a quiet return would leave the agent stopped."""
    events: List[str] = []
    svc, _ws = service(tmp_path, events, returns=True)
    with pytest.raises(Exception, match="without a stop request"):
        svc.SvcRun()
    assert events == ["running", "closed"]


def test_an_agent_error_propagates_to_the_service_host(tmp_path) -> None:
    svc, _ws = service(tmp_path, [], raises=RuntimeError("collector exploded"))
    with pytest.raises(RuntimeError, match="collector exploded"):
        svc.SvcRun()


@pytest.mark.parametrize("level", ["debug", "warning"])
def test_the_service_honours_the_configured_log_level(tmp_path, level) -> None:
    events: List[str] = []
    config = AgentConfig(agent=AgentSection(host="vda-01", log_level=level))
    svc, _ws = service(tmp_path, events, load=lambda path: _load_with_level(path, config), returns=True)
    with pytest.raises(Exception, match="without a stop request"):
        svc.SvcRun()
    assert logging.getLogger().level == getattr(logging, level.upper())


def _load_with_level(path: Optional[str], config: AgentConfig) -> AgentConfig:
    from agent.winservice import load_service_config
    return load_service_config(path, load=lambda p: config)


def test_the_default_runner_applies_the_level_from_the_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nhost = "vda-01"\nlog_level = "error"\n')
    monkeypatch.delenv("VDIWATCH_SITE", raising=False)
    monkeypatch.delenv("VDIWATCH_DELIVERY_GROUP", raising=False)
    ws = FakeWin32Service()
    built = []
    cls = _service_class(path, ws, fake_pywin32(ws), handlers=lambda: [])
    svc = cls(["vdiwatch-agent"])
    svc.runner.build = lambda c, host, stop: built.append(host) or FakeAgent(stop, [], returns=True)
    with pytest.raises(Exception, match="without a stop request"):
        svc.SvcRun()
    assert built == ["vda-01"] and logging.getLogger().level == logging.ERROR


def test_service_logs_go_beside_the_config(tmp_path) -> None:
    """Into the folder the installer protects, whatever %ProgramData% says in the service's
    environment (Wine's services see another one)."""
    ws = FakeWin32Service()
    data = tmp_path / "vdiwatch"
    data.mkdir()
    cls = _service_class(data / "agent.toml", ws, fake_pywin32(ws), runner=lambda p: ServiceRunner(
        p, build=lambda c, host, stop: FakeAgent(stop, [], returns=True),
        load=lambda p: AgentConfig(agent=AgentSection(host="vda-01"))))
    svc = cls(["vdiwatch-agent"])
    try:
        with pytest.raises(Exception, match="without a stop request"):
            svc.SvcRun()
        assert "without a stop request" in (data / "agent.log").read_text()
    finally:
        for h in logging.getLogger().handlers:
            h.close()


# --- agent.winhost: what pythonservice.exe imports, and the MSI's configure step ---------------

def test_the_service_config_comes_from_the_command_line() -> None:
    env = {"ProgramData": r"C:\ProgramData"}
    assert winhost.config_from_argv(["pythonservice.exe", "--config", r"D:\vdi\agent.toml"], env) == \
        Path(r"D:\vdi\agent.toml")
    assert winhost.config_from_argv(["pythonservice.exe"], env) == Path(r"C:\ProgramData") / "vdiwatch" / "agent.toml"
    assert winhost.config_from_argv(["pythonservice.exe", "--config"], env).name == "agent.toml"


def test_the_module_names_only_the_service_class() -> None:
    assert winhost.PYTHON_CLASS == "agent.winhost.AgentService"
    with pytest.raises(AttributeError):
        winhost.NotAService  # noqa: B018


def test_rendered_config_round_trips_tricky_values_without_a_bom(tmp_path) -> None:
    settings = winhost.InstallSettings(site='Hôtel de Ville "Nord"', delivery_group="Büro\\Pool\t2",
                                       collector_urls=("https://c1.example:9847", "https://c2.example:9847"))
    text = winhost.render_config(settings, "agent.token")
    doc = tomllib.loads(text)["agent"]
    assert doc["site"] == settings.site and doc["delivery_group"] == settings.delivery_group
    assert doc["collector_urls"] == list(settings.collector_urls) and doc["token_file"] == "agent.token"
    assert "token" not in doc
    loadable = winhost.InstallSettings(site=settings.site, delivery_group="Büro\\Pool 2")
    path = tmp_path / "agent.toml"
    path.write_bytes(winhost.render_config(loadable, None).encode("utf-8"))
    assert not path.read_bytes().startswith(b"\xef\xbb\xbf")
    loaded = load_agent_config(str(path), env={}).agent
    assert (loaded.site, loaded.delivery_group) == (settings.site, "Büro\\Pool 2")


def test_empty_properties_keep_the_defaults() -> None:
    assert tomllib.loads(winhost.render_config(winhost.InstallSettings(), None)) == {"agent": {}}


def test_collector_urls_as_operators_type_them() -> None:
    assert winhost.split_urls("https://a:9847, https://b:9847;https://c:9847  https://d") == (
        "https://a:9847", "https://b:9847", "https://c:9847", "https://d")
    assert winhost.split_urls("  ") == ()


@pytest.mark.parametrize("protected, aces, problems", [
    (True, [(0, "S-1-5-18"), (0, "S-1-5-32-544")], 0),
    (False, [(0, "S-1-5-18"), (0, "S-1-5-32-544")], 1),  # still inherits Users' read from ProgramData
    (True, [(0, "S-1-5-18"), (0, "S-1-1-0")], 1),  # Everyone
    (True, [(0, "S-1-5-18"), (1, "S-1-5-32-545")], 0),  # a deny entry for Users is no leak
    (True, [], 1),
    # What Wine 8 reads back after SetNamedSecurityInfo: nothing applied.
    (False, [(0, "S-1-5-18"), (0, "S-1-5-21-0-0-0-1000"), (0, "S-1-1-0")], 3),
])
def test_acl_read_back_is_checked(protected, aces, problems) -> None:
    assert len(winhost.acl_problems(protected, aces)) == problems


class FakeWindows:
    def __init__(self, protects: bool = True, refused: Tuple[str, ...] = ()):
        self.protects, self.refused = protects, refused
        self.protected: List[Path] = []
        self.recovered: List[str] = []

    def windows(self) -> winhost.Windows:
        return winhost.Windows(protect=self.protect, recovery=self.recovery, check=winhost.check_config)

    def protect(self, path: Path, folder: bool) -> List[str]:
        self.protected.append(path)
        return [] if self.protects else ["inherits permissions from its folder"]

    def recovery(self, name: str) -> List[str]:
        self.recovered.append(name)
        return list(self.refused)


@pytest.fixture
def machine(monkeypatch):
    """No identity from this machine's environment; the registry is Windows-only anyway."""
    monkeypatch.delenv("VDIWATCH_SITE", raising=False)
    monkeypatch.delenv("VDIWATCH_DELIVERY_GROUP", raising=False)


def test_first_install_writes_config_and_protected_token(tmp_path, machine) -> None:
    token = tmp_path / "share" / "cityhall.token"
    token.parent.mkdir()
    token.write_text("s3cret\n")
    config = tmp_path / "ProgramData" / "vdiwatch" / "agent.toml"
    fake = FakeWindows()
    settings = winhost.InstallSettings(site="City Hall", delivery_group="Office", token_file=str(token),
                                       collector_urls=("https://collector.example:9847",))
    assert winhost.configure(settings, config, fake.windows()) == 0
    assert (config.parent / "agent.token").read_text() == "s3cret\n"
    assert fake.protected == [config.parent, config.parent / "agent.token"]
    loaded = load_agent_config(str(config), env={})
    assert (loaded.agent.site, loaded.agent.token) == ("City Hall", "s3cret")
    assert fake.recovered == ["vdiwatch-agent"]


def test_an_upgrade_keeps_the_config_and_replaces_the_token(tmp_path, machine) -> None:
    config = tmp_path / "vdiwatch" / "agent.toml"
    config.parent.mkdir()
    config.write_text('[agent]\nsite = "Edited by the operator"\n')
    token = tmp_path / "new.token"
    token.write_text("rotated")
    settings = winhost.InstallSettings(site="Other", token_file=str(token))
    assert winhost.configure(settings, config, FakeWindows().windows()) == 0
    assert config.read_text() == '[agent]\nsite = "Edited by the operator"\n'
    assert (config.parent / "agent.token").read_text() == "rotated"


def test_a_token_that_cannot_be_protected_fails_the_install_and_is_removed(tmp_path, machine, caplog) -> None:
    token = tmp_path / "t"
    token.write_text("s3cret")
    config = tmp_path / "vdiwatch" / "agent.toml"
    settings = winhost.InstallSettings(site="City Hall", token_file=str(token))
    assert winhost.configure(settings, config, FakeWindows(protects=False).windows()) == 1
    assert not (config.parent / "agent.token").exists() and not config.exists()
    assert "push token was not installed" in caplog.text


def test_without_a_token_an_unprotectable_folder_is_a_warning(tmp_path, machine, caplog) -> None:
    config = tmp_path / "vdiwatch" / "agent.toml"
    assert winhost.configure(winhost.InstallSettings(site="Lab"), config, FakeWindows(protects=False).windows()) == 0
    assert "readable as %ProgramData% is" in caplog.text and config.is_file()


def test_bad_properties_fail_the_install_and_leave_no_file(tmp_path, machine, caplog) -> None:
    config = tmp_path / "vdiwatch" / "agent.toml"
    settings = winhost.InstallSettings(collector_urls=("collector.example:9847",))  # no scheme
    assert winhost.configure(settings, config, FakeWindows().windows()) == 1
    assert sorted(p.name for p in config.parent.iterdir()) == []
    assert "collector_urls" in caplog.text
    missing = winhost.InstallSettings(token_file=str(tmp_path / "nope.token"))
    assert winhost.configure(missing, config, FakeWindows().windows()) == 1


def test_recovery_settings_windows_refuses_are_logged_not_fatal(tmp_path, machine, caplog) -> None:
    config = tmp_path / "vdiwatch" / "agent.toml"
    fake = FakeWindows(refused=("cannot set restart after a stop with an error: (124, ...)",))
    assert winhost.configure(winhost.InstallSettings(), config, fake.windows()) == 0
    assert "cannot set restart after a stop with an error" in caplog.text


def test_the_identity_checked_is_the_machine_s(tmp_path, monkeypatch) -> None:
    """The install checks with the service's loader: the registry or environment overrides the file."""
    monkeypatch.setenv("VDIWATCH_SITE", "Clone Site")
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nsite = "Image Site"\nhost = "vda-01"\n')
    assert "site Clone Site" in winhost.check_config(path)


def test_main_logs_to_install_log(tmp_path, machine) -> None:
    config = tmp_path / "vdiwatch" / "agent.toml"
    code = winhost.main(["configure", "--config", str(config), "--site", " Lab ",
                         "--collector-urls", "http://127.0.0.1:9847"], windows=FakeWindows().windows())
    assert code == 0
    log_text = (config.parent / "install.log").read_text(encoding="utf-8")
    assert "wrote" in log_text and "site Lab," in log_text
    assert winhost.main(["bogus"]) == 2
