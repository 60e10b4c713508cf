"""The agent as a Windows service: `vdiwatch-agent service install|remove|start|stop|status|run`.

The service is the ordinary agent (`agent.wiring.build_agent`) hosted by the
Service Control Manager: `run` is what the SCM starts; a stop request and a
system shutdown set the agent's stop event, so it sends its goodbye and the
collector shows the desktop as stopped, not down. Logs go to a rotating file
in %ProgramData%\\vdiwatch and errors also to the Windows event log.

The layer that talks to Windows (pywin32, the `vdiwatch[windows]` extra) is
kept thin in `Win32Services` and `_service_class`; everything else is plain
Python, tested on Linux with a fake service manager. Nothing here imports
pywin32 until it is needed, so the module imports anywhere.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Protocol, Tuple

log = logging.getLogger(__name__)

SERVICE_NAME = "vdiwatch-agent"
DISPLAY_NAME = "vdiwatch agent"
DESCRIPTION = ("Reports this desktop host's sessions and resource use to the vdiwatch collector "
               "(Citrix, RDS and VDI monitoring).")
ACTIONS = ("install", "remove", "start", "stop", "status", "run")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def program_data(env: Mapping[str, str] = os.environ) -> Path:
    """%ProgramData%\\vdiwatch: config, token, logs."""
    return Path(env.get("ProgramData", r"C:\ProgramData")) / "vdiwatch"


def default_config_path(env: Mapping[str, str] = os.environ) -> Path:
    return program_data(env) / "agent.toml"


def quote_arg(arg: str) -> str:
    """Quote one argument for a Windows command line (CommandLineToArgvW rules)."""
    if arg and not any(c in arg for c in ' \t"'):
        return arg
    out, backslashes = ['"'], 0
    for c in arg:
        if c == "\\":
            backslashes += 1
            continue
        if c == '"':
            out.append("\\" * (2 * backslashes + 1) + '"')
        else:
            out.append("\\" * backslashes + c)
        backslashes = 0
    out.append("\\" * (2 * backslashes) + '"')
    return "".join(out)


# Run by the base interpreter of a virtual environment: its own site-packages left out (-S), the
# environment's added with its .pth files (pywin32's among them), then the agent's command line.
VENV_BOOTSTRAP = "import site,sys;site.addsitedir(sys.argv[1]);from agent.cli import main;sys.exit(main(sys.argv[2:]))"


def service_python(sys_module: Any = sys) -> Tuple[str, Optional[str]]:
    """The interpreter the SCM should start, and the site-packages it must add (None: its own).

    A virtual environment's python.exe on Windows is a launcher that starts the base interpreter
    as a child process (Python 3.7.2+); the SCM then waits for a service in the launcher, which
    never calls StartServiceCtrlDispatcher. So a venv's service runs the base interpreter itself.
    """
    base = getattr(sys_module, "_base_executable", None)
    if sys_module.prefix == sys_module.base_prefix or not base or base == sys_module.executable:
        return sys_module.executable, None
    return base, sysconfig.get_paths(vars={"base": sys_module.prefix, "platbase": sys_module.prefix})["purelib"]


def service_command_line(python: str, config: Path, site_dir: Optional[str] = None) -> str:
    """What the SCM runs: the interpreter, the agent package, `service run`, the config file."""
    if site_dir is None:
        args = [python, "-m", "agent", "service", "run", "--config", str(config)]
    else:
        args = [python, "-E", "-S", "-c", VENV_BOOTSTRAP, site_dir, "service", "run", "--config", str(config)]
    return " ".join(quote_arg(a) for a in args)


@dataclass(frozen=True)
class ServiceState:
    installed: bool
    running: bool = False
    detail: str = ""


class ServiceManager(Protocol):
    """What the commands need from Windows' Service Control Manager."""

    def state(self, name: str) -> ServiceState: ...
    def install(self, name: str, display: str, description: str, command_line: str) -> None: ...
    def remove(self, name: str) -> None: ...
    def start(self, name: str) -> None: ...
    def stop(self, name: str, timeout: float) -> None: ...


class ServiceError(Exception):
    """A service operation failed; the message says what to do."""


# System error codes (winerror.h) that the service commands explain in words.
ERROR_ACCESS_DENIED = 5
ERROR_SERVICE_REQUEST_TIMEOUT = 1053
ERROR_SERVICE_ALREADY_RUNNING = 1056
ERROR_SERVICE_DOES_NOT_EXIST = 1060
ERROR_SERVICE_NOT_ACTIVE = 1062
ERROR_SERVICE_MARKED_FOR_DELETE = 1072
_HINTS = {
    ERROR_ACCESS_DENIED: "run the command as Administrator",
    ERROR_SERVICE_REQUEST_TIMEOUT: "the service did not answer in time; see agent.log in %ProgramData%\\vdiwatch "
                                   "and the Application event log",
    ERROR_SERVICE_MARKED_FOR_DELETE: "close the Services console (services.msc) and any Event Viewer, then retry",
}


def windows_error(what: str, error: BaseException) -> ServiceError:
    """A ServiceError for a failed Windows call, from pywintypes.error (winerror, funcname, strerror)
    or an OSError, so that the operator reads a sentence, not a traceback.

    >>> str(windows_error("cannot start vdiwatch-agent", OSError(5, "Access is denied.")))
    'cannot start vdiwatch-agent: Access is denied. (error 5); run the command as Administrator'
    """
    code = getattr(error, "winerror", None)
    if code is None and isinstance(error, OSError):
        code = error.errno
    text = (getattr(error, "strerror", None) or str(error) or type(error).__name__).strip()
    function = getattr(error, "funcname", None)
    message = f"{what}: " + (f"{function}: " if function else "") + text
    if code is not None:
        message += f" (error {code})"
    hint = _HINTS.get(code) if isinstance(code, int) else None
    return ServiceError(message + (f"; {hint}" if hint else ""))


def service_command(argv: List[str], manager: ServiceManager, *, python: Optional[str] = None,
                    site_dir: Optional[str] = None, env: Mapping[str, str] = os.environ,
                    out: Callable[[str], None] = print, run: Optional[Callable[[Path], int]] = None) -> int:
    """`vdiwatch-agent service ACTION [--config PATH]`; returns the exit code.

    `python` (default: `service_python()`) is the interpreter the service runs, with `site_dir`.
    """
    if python is None:
        python, site_dir = service_python()
    if not argv or argv[0] not in ACTIONS:
        out(f"usage: vdiwatch-agent service {{{'|'.join(ACTIONS)}}} [--config PATH]")
        return EXIT_USAGE
    action, rest = argv[0], argv[1:]
    config = default_config_path(env)
    if rest[:1] == ["--config"] and len(rest) == 2:
        config = Path(rest[1])
    elif rest:
        out(f"unexpected arguments: {' '.join(rest)}")
        return EXIT_USAGE
    try:
        if action == "run":
            if run is None:
                raise ServiceError("`service run` is started by Windows' Service Control Manager, not by hand; "
                                   "use `vdiwatch-agent --config ...` to run the agent in a console")
            return run(config)
        state = manager.state(SERVICE_NAME)
        if action == "status":
            out(f"{SERVICE_NAME}: " + ("not installed" if not state.installed else
                                       "running" if state.running else "stopped")
                + (f" ({state.detail})" if state.detail else ""))
            return EXIT_OK if state.installed else EXIT_FAILED
        if action == "install":
            if state.installed:
                raise ServiceError(f"{SERVICE_NAME} is installed already; `service remove` first to reinstall")
            if not config.is_file():
                out(f"note: {config} does not exist yet; the agent uses its built-in defaults until it does")
            manager.install(SERVICE_NAME, DISPLAY_NAME, DESCRIPTION, service_command_line(python, config, site_dir))
            out(f"installed {SERVICE_NAME} (automatic start, restarts on failure); "
                f"start it with `vdiwatch-agent service start`")
            return EXIT_OK
        if not state.installed:
            raise ServiceError(f"{SERVICE_NAME} is not installed")
        if action == "start":
            if state.running:
                out(f"{SERVICE_NAME} is running already")
                return EXIT_OK
            manager.start(SERVICE_NAME)
            out(f"started {SERVICE_NAME}")
            return EXIT_OK
        if action == "stop":
            if not state.running:
                out(f"{SERVICE_NAME} is not running")
                return EXIT_OK
            manager.stop(SERVICE_NAME, timeout=30.0)
            out(f"stopped {SERVICE_NAME} (it said goodbye to the collector)")
            return EXIT_OK
        if state.running:  # remove
            manager.stop(SERVICE_NAME, timeout=30.0)
        manager.remove(SERVICE_NAME)
        out(f"removed {SERVICE_NAME}; its configuration and logs in {program_data(env)} are kept")
        return EXIT_OK
    except ServiceError as e:
        out(f"error: {e}")
        return EXIT_FAILED
    except (OSError, *getattr(manager, "errors", ())) as e:  # a manager that let a Windows error through
        out(f"error: {windows_error(f'service {action} failed', e)}")
        return EXIT_FAILED


def log_handlers(directory: Path, event_log: Optional[Callable[[], logging.Handler]] = None,
                 max_bytes: int = 5 << 20, backups: int = 5) -> List[logging.Handler]:
    """A rotating file in `directory` for everything, and the event log for errors."""
    directory.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    file_handler = logging.handlers.RotatingFileHandler(directory / "agent.log", maxBytes=max_bytes,
                                                        backupCount=backups, encoding="utf-8")
    file_handler.setFormatter(fmt)
    handlers: List[logging.Handler] = [file_handler]
    if event_log is not None:
        try:
            events = event_log()
        except Exception as e:  # noqa: BLE001 - no event log is no reason not to monitor
            log.warning("cannot write to the Windows event log: %s", e)
        else:
            events.setLevel(logging.ERROR)
            events.setFormatter(fmt)
            handlers.append(events)
    return handlers


class ServiceRunner:
    """The service's body, independent of pywin32: run the agent until `stop` is set."""

    def __init__(self, config: Path, build: Optional[Callable[..., Any]] = None,
                 load: Optional[Callable[[Optional[str]], Any]] = None):
        self.config = config
        self.stop = threading.Event()
        self.build = build
        self.load = load
        self.agent: Any = None  # set once built: the power notices reach it through suspend/resume

    def run(self) -> int:
        from agent.config import load_machine_config, resolve_host
        from agent.wiring import build_agent

        build = self.build or build_agent
        load = self.load or load_machine_config  # the command line's loader: same file, same identity
        path = str(self.config) if self.config.is_file() else None
        config = load(path)
        agent = self.agent = build(config, resolve_host(config.agent.host), self.stop)
        try:
            agent.run()
        finally:
            agent.pusher.close()
        return EXIT_OK

    def request_stop(self) -> None:
        """Service stop or system shutdown: the agent says goodbye and returns."""
        self.stop.set()

    def suspend(self) -> None:
        """Windows goes to sleep or hibernates (PBT_APMSUSPEND): a goodbye, then silence until resume."""
        if self.agent is not None:
            self.agent.suspend(SUSPEND_GOODBYE_SECONDS)

    def resume(self) -> None:
        """Windows woke up (PBT_APMRESUMEAUTOMATIC): report again."""
        if self.agent is not None:
            self.agent.resume()


# Service timings, in milliseconds. The goodbye takes at most agent.runner.GOODBYE_SECONDS (10 s);
# the SCM expects the next status report within the wait hint of a STOP_PENDING.
STOP_WAIT_HINT_MS = 15000
# How long Windows waits at shutdown for a service that accepts SERVICE_CONTROL_PRESHUTDOWN before
# it goes on (SERVICE_PRESHUTDOWN_INFO; 10 s by default since Windows 10 1703, too little for a
# goodbye that may retry for 10 s). Shutdown goes on as soon as the service reports STOPPED.
PRESHUTDOWN_TIMEOUT_MS = 20000
# Power notices (SERVICE_CONTROL_POWEREVENT, winsvc.h; event types from WinUser.h). Windows allows
# about two seconds to handle PBT_APMSUSPEND, so the goodbye before sleep gets 1.5 s.
PBT_APMSUSPEND = 0x4
PBT_APMRESUMESUSPEND = 0x7
PBT_APMRESUMEAUTOMATIC = 0x12
SUSPEND_GOODBYE_SECONDS = 1.5
RESTART_DELAY_MS = 10000
FAILURE_RESET_SECONDS = 86400


def configure_recovery(ws: Any, handle: Any) -> List[str]:
    """Restart on failure and time for the goodbye at shutdown; returns what Windows refused.

    Failure actions alone run only when the process dies without reporting SERVICE_STOPPED. A
    Python exception makes pywin32 report SERVICE_STOPPED with ERROR_SERVICE_SPECIFIC_ERROR, which
    counts as a failure only with fFailureActionsOnNonCrashFailures set
    (SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, see SERVICE_FAILURE_ACTIONS_FLAG in winsvc.h).
    """
    settings = (
        ("restart on failure", ws.SERVICE_CONFIG_FAILURE_ACTIONS,
         {"ResetPeriod": FAILURE_RESET_SECONDS, "RebootMsg": None, "Command": None,
          "Actions": [(ws.SC_ACTION_RESTART, RESTART_DELAY_MS)] * 3}),
        ("restart after a stop with an error (fFailureActionsOnNonCrashFailures)",
         ws.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, True),
        ("the pre-shutdown timeout for the goodbye", ws.SERVICE_CONFIG_PRESHUTDOWN_INFO, PRESHUTDOWN_TIMEOUT_MS),
    )
    problems = []
    for what, level, value in settings:
        try:
            ws.ChangeServiceConfig2(handle, level, value)
        except Exception as e:  # noqa: BLE001 - pywintypes.error; one refused setting leaves the others
            problems.append(f"cannot set {what}: {e}")
    return problems


class Win32Services:
    """The Service Control Manager through pywin32 (modules injectable, so the error handling is
    tested on Linux with fakes).

    pywin32 reports failures as pywintypes.error(winerror, funcname, strerror), which is not an
    OSError; every method here turns it into a ServiceError that says what to do.
    """

    def __init__(self, win32service: Any = None, win32serviceutil: Any = None, error: Any = None) -> None:
        if win32service is None or win32serviceutil is None or error is None:  # pragma: no cover - Windows
            try:
                import pywintypes
                import win32service
                import win32serviceutil
            except ImportError:
                raise ServiceError("the Windows service needs pywin32: pip install \"vdiwatch[windows]\"") from None
            error = pywintypes.error
        self.ws, self.wsu = win32service, win32serviceutil
        self.errors = (error, OSError)

    def state(self, name: str) -> ServiceState:
        try:
            status = self.wsu.QueryServiceStatus(name)
        except self.errors as e:
            if getattr(e, "winerror", None) == ERROR_SERVICE_DOES_NOT_EXIST:
                return ServiceState(False)
            raise windows_error(f"cannot query the state of {name}", e) from None
        return ServiceState(True, status[1] == self.ws.SERVICE_RUNNING)

    def install(self, name: str, display: str, description: str, command_line: str) -> None:
        ws = self.ws
        scm = ws.OpenSCManager(None, None, ws.SC_MANAGER_ALL_ACCESS)
        try:
            handle = ws.CreateService(scm, name, display, ws.SERVICE_ALL_ACCESS, ws.SERVICE_WIN32_OWN_PROCESS,
                                      ws.SERVICE_AUTO_START, ws.SERVICE_ERROR_NORMAL, command_line,
                                      None, 0, None, None, None)
            try:
                ws.ChangeServiceConfig2(handle, ws.SERVICE_CONFIG_DESCRIPTION, description)
                for problem in configure_recovery(ws, handle):
                    log.warning("%s: %s", name, problem)
            finally:
                ws.CloseServiceHandle(handle)
        except Exception as e:  # noqa: BLE001
            raise ServiceError(f"cannot install the service ({e}); run the command as Administrator") from None
        finally:
            ws.CloseServiceHandle(scm)

    def remove(self, name: str) -> None:
        try:
            self.wsu.RemoveService(name)
        except self.errors as e:
            raise windows_error(f"cannot remove {name}", e) from None

    def start(self, name: str) -> None:
        try:
            self.wsu.StartService(name)
            self.wsu.WaitForServiceStatus(name, self.ws.SERVICE_RUNNING, 30)
        except self.errors as e:
            if getattr(e, "winerror", None) == ERROR_SERVICE_ALREADY_RUNNING:
                return
            raise windows_error(f"cannot start {name}", e) from None

    def stop(self, name: str, timeout: float) -> None:
        try:
            self.wsu.StopService(name)
            self.wsu.WaitForServiceStatus(name, self.ws.SERVICE_STOPPED, int(timeout))
        except self.errors as e:
            if getattr(e, "winerror", None) == ERROR_SERVICE_NOT_ACTIVE:
                return
            raise windows_error(f"cannot stop {name}", e) from None


def run_as_service(config: Path) -> int:  # pragma: no cover - needs Windows and pywin32
    """Hand this process to the SCM, which calls the service class below."""
    import servicemanager

    cls = _service_class(config)
    servicemanager.Initialize(SERVICE_NAME, os.path.abspath(servicemanager.__file__))
    servicemanager.PrepareToHostSingle(cls)
    servicemanager.StartServiceCtrlDispatcher()
    return EXIT_OK


def load_service_config(path: Optional[str], load: Optional[Callable[[Optional[str]], Any]] = None,
                        logger: Optional[logging.Logger] = None) -> Any:
    """The service's config, loaded as the command line loads it, and its log_level applied:
    the service has no --log-level, so the file (or its default, info) decides."""
    if load is None:
        from agent.config import load_machine_config
        load = load_machine_config
    config = load(path)
    (logger or logging.getLogger()).setLevel(config.agent.log_level.upper())
    return config


def _service_class(config: Path, win32service: Any = None, win32serviceutil: Any = None,
                   runner: Optional[Callable[[Path], ServiceRunner]] = None,
                   handlers: Optional[Callable[[], List[logging.Handler]]] = None) -> Any:
    """The class pywin32 hosts (pythonservice.exe, or this interpreter through `run_as_service`).

    pywin32's modules, the runner and the log handlers are injectable, so that tests drive the
    class through a fake ServiceFramework on Linux.
    """
    if win32service is None or win32serviceutil is None:  # pragma: no cover - Windows
        import win32service as real_ws
        import win32serviceutil as real_wsu
        win32service, win32serviceutil = real_ws, real_wsu
    ws = win32service
    framework: Any = win32serviceutil.ServiceFramework
    make_runner = runner or (lambda path: ServiceRunner(path, load=load_service_config))
    # Logs beside the config, in the folder the installer protects (SYSTEM and Administrators),
    # wherever the service's environment says %ProgramData% is.
    make_handlers = handlers or (lambda: log_handlers(
        config.parent, lambda: logging.handlers.NTEventLogHandler(SERVICE_NAME)))

    class AgentService(framework):
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME
        _svc_description_ = DESCRIPTION

        def __init__(self, args):
            super().__init__(args)
            self.runner = make_runner(config)

        def GetAcceptedControls(self):  # noqa: N802 - pywin32's name
            # Pre-shutdown comes before the shutdown notice and waits up to the service's
            # PRESHUTDOWN_TIMEOUT_MS for it to stop: time for the goodbye at the nightly power-down.
            # Power events tell a sleep or hibernation from a crash: the agent says goodbye first.
            return (super().GetAcceptedControls() | ws.SERVICE_ACCEPT_SHUTDOWN
                    | ws.SERVICE_ACCEPT_PRESHUTDOWN | ws.SERVICE_ACCEPT_POWEREVENT)

        def ServiceCtrlHandlerEx(self, control, event_type, data):  # noqa: N802
            if control == ws.SERVICE_CONTROL_PRESHUTDOWN:  # pywin32's dispatcher passes it to SvcOtherEx
                return self.SvcShutdown()
            if control == ws.SERVICE_CONTROL_POWEREVENT:
                if event_type == PBT_APMSUSPEND:
                    self.runner.suspend()
                elif event_type in (PBT_APMRESUMEAUTOMATIC, PBT_APMRESUMESUSPEND):
                    self.runner.resume()
                return 0  # NO_ERROR: never refuses a power change
            return super().ServiceCtrlHandlerEx(control, event_type, data)

        def SvcDoRun(self):  # noqa: N802 - pywin32 has reported SERVICE_RUNNING already (SvcRun)
            root = logging.getLogger()
            root.setLevel(logging.INFO)  # until the config says otherwise (load_service_config)
            for handler in make_handlers():
                root.addHandler(handler)
            try:
                self.runner.run()
            except Exception:  # noqa: BLE001 - logged to the file and the event log, then the SCM restarts us
                log.exception("the agent stopped on an error")
                raise  # pywin32 reports SERVICE_STOPPED with an error: a failure for the recovery settings
            if not self.runner.stop.is_set():
                log.error("the agent ended without a stop request")
                raise ServiceError("the agent ended without a stop request")

        def SvcStop(self):  # noqa: N802
            self._stop_with_goodbye()

        def SvcShutdown(self):  # noqa: N802 - the shutdown and pre-shutdown notices
            self._stop_with_goodbye()

        def _stop_with_goodbye(self):
            # STOP_PENDING with a wait hint tells the SCM (and shutdown) to wait for the goodbye.
            self.ReportServiceStatus(ws.SERVICE_STOP_PENDING, waitHint=STOP_WAIT_HINT_MS)
            self.runner.request_stop()

    return AgentService
