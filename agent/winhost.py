"""The agent as the Windows installer (MSI) sets it up: the service pythonservice.exe hosts, and
`python -m agent.winhost configure`, the installer's last step.

The MSI ships its own Python (the official embeddable CPython) and pywin32's service host,
pythonservice.exe, next to it. That host reads the Python class to run from the registry value
HKLM\\SYSTEM\\CurrentControlSet\\Services\\vdiwatch-agent\\PythonClass (set by the MSI to
`agent.winhost.AgentService`), imports this module and runs the class, which is the same
service class as `vdiwatch-agent service run` (agent.winservice._service_class). The config
file comes from the service's command line (`--config PATH`), else the default in ProgramData.

`configure` runs as LocalSystem from the MSI (a deferred custom action) after the service is
registered and before it starts. It writes agent.toml once (an upgrade keeps the operator's
file), copies the push token where only SYSTEM and Administrators can read it, checks the
configuration with the loader the service uses, and sets the service's recovery: restart on
failure, a stop with an error included, and time at shutdown for the goodbye. Its log is
install.log in %ProgramData%\\vdiwatch, because an installer's custom action has no console.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Tuple

from agent.winservice import SERVICE_NAME, default_config_path

log = logging.getLogger(__name__)

PYTHON_CLASS = "agent.winhost.AgentService"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# Well-known SIDs, the same on every Windows in every language: LocalSystem and BUILTIN\Administrators.
SYSTEM_SID = "S-1-5-18"
ADMINISTRATORS_SID = "S-1-5-32-544"
TRUSTED_SIDS = (SYSTEM_SID, ADMINISTRATORS_SID)
# Full control for those two only, not inherited from %ProgramData% (where Users may read):
# "P" protects the DACL, OICI lets files and folders below inherit it.
FOLDER_SDDL = f"D:P(A;OICI;FA;;;{SYSTEM_SID})(A;OICI;FA;;;{ADMINISTRATORS_SID})"
FILE_SDDL = f"D:P(A;;FA;;;{SYSTEM_SID})(A;;FA;;;{ADMINISTRATORS_SID})"
ACCESS_ALLOWED_ACE_TYPE = 0
SE_DACL_PROTECTED = 0x1000


def config_from_argv(argv: Sequence[str], env: Mapping[str, str] = os.environ) -> Path:
    """The config file named on the service's command line (`--config PATH`), else the default."""
    args = list(argv)
    for i, arg in enumerate(args[:-1]):
        if arg == "--config":
            return Path(args[i + 1])
    return default_config_path(env)


_service: Any = None


def __getattr__(name: str) -> Any:
    """`AgentService`, built on first use: pythonservice.exe asks for it by name, while importing
    this module (tests, `configure`) must work without pywin32."""
    global _service
    if name != "AgentService":
        raise AttributeError(name)
    if _service is None:  # pragma: no cover - needs Windows and pywin32
        from agent.winservice import _service_class
        _service = _service_class(config_from_argv(sys.argv))
    return _service


# --- configure: what the MSI runs after registering the service --------------------------------

@dataclass(frozen=True)
class InstallSettings:
    """The MSI's public properties (SITE=..., DELIVERY_GROUP=..., COLLECTOR_URLS=..., TOKEN_FILE=...)."""

    site: str = ""
    delivery_group: str = ""
    collector_urls: Tuple[str, ...] = ()
    token_file: str = ""


def split_urls(text: str) -> Tuple[str, ...]:
    """COLLECTOR_URLS as an operator types it: separated by commas, semicolons or spaces."""
    return tuple(u for u in text.replace(";", " ").replace(",", " ").split() if u)


def toml_string(value: str) -> str:
    """A TOML basic string: quotes, backslashes (Windows paths) and control characters escaped."""
    out = ['"']
    for c in value:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def render_config(settings: InstallSettings, token_name: Optional[str]) -> str:
    """agent.toml from the install properties; keys not given keep the agent's defaults.

    >>> print(render_config(InstallSettings(site="City Hall"), None), end="")
    # vdiwatch agent, written by the installer; agent.toml.example in the program folder explains every key.
    [agent]
    site = "City Hall"
    """
    lines = ["# vdiwatch agent, written by the installer; agent.toml.example in the program folder explains every key.",
             "[agent]"]
    if settings.collector_urls:
        lines.append("collector_urls = [" + ", ".join(toml_string(u) for u in settings.collector_urls) + "]")
    if settings.site:
        lines.append(f"site = {toml_string(settings.site)}")
    if settings.delivery_group:
        lines.append(f"delivery_group = {toml_string(settings.delivery_group)}")
    if token_name:
        lines.append(f"token_file = {toml_string(token_name)}")
    return "\n".join(lines) + "\n"


def acl_problems(protected: bool, aces: Iterable[Tuple[int, str]]) -> List[str]:
    """What is wrong with a file's DACL, read back after setting it: not protected from
    inheritance, or granting anyone but SYSTEM and Administrators. `aces` are (type, SID) pairs."""
    aces = list(aces)
    problems = [] if protected else ["inherits permissions from its folder"]
    if not aces:
        problems.append("has no access entries")
    for kind, sid in aces:
        if kind == ACCESS_ALLOWED_ACE_TYPE and sid not in TRUSTED_SIDS:
            problems.append(f"grants access to {sid}")
    return problems


@dataclass
class Windows:
    """What `configure` does to the system, injected so that its logic is tested on Linux."""

    protect: Callable[[Path, bool], List[str]]  # (path, is_folder) -> problems read back
    recovery: Callable[[str], List[str]]  # service name -> settings that could not be made
    check: Callable[[Path], str]  # config -> identity summary; raises on a bad config


def configure(settings: InstallSettings, config: Path, windows: Windows) -> int:
    """Write the config (first install only), install the token, check, set the service's recovery.

    A token that cannot be protected is not left behind and fails the install: on a multi-session
    host every desktop user could read it. Recovery settings that Windows refuses are logged; the
    agent runs without them.
    """
    data = config.parent
    data.mkdir(parents=True, exist_ok=True)
    problems = windows.protect(data, True)
    if problems:
        log.warning("%s %s: the configuration folder is readable as %%ProgramData%% is",
                    data, "; ".join(problems))
    token_name = None
    if settings.token_file:
        source, token = Path(settings.token_file), data / "agent.token"
        if not source.is_file():
            log.error("TOKEN_FILE %s is not a file", source)
            return EXIT_FAILED
        shutil.copyfile(source, token)
        problems = windows.protect(token, False)
        if problems:
            token.unlink()
            log.error("the push token was not installed: %s %s, and this system did not apply the "
                      "permissions for SYSTEM and Administrators only", token, "; ".join(problems))
            return EXIT_FAILED
        token_name = token.name
        log.info("installed the push token as %s (SYSTEM and Administrators only)", token)
    if config.exists():
        log.info("kept the existing %s (install properties apply to a first install only)", config)
    else:
        staged = config.with_name(config.name + ".new")
        staged.write_bytes(render_config(settings, token_name).encode("utf-8"))  # UTF-8 without a BOM
        try:
            windows.check(staged)
        except Exception as e:  # noqa: BLE001 - ConfigError or ValueError: refuse, say why
            staged.unlink()
            log.error("the install properties do not make a valid configuration: %s", e)
            return EXIT_FAILED
        os.replace(staged, config)
        log.info("wrote %s", config)
    try:
        log.info("configuration OK: %s", windows.check(config))
    except Exception as e:  # noqa: BLE001
        log.error("%s is not valid, the service would not start: %s", config, e)
        return EXIT_FAILED
    for problem in windows.recovery(SERVICE_NAME):
        log.warning("%s: %s", SERVICE_NAME, problem)
    return EXIT_OK


def check_config(path: Path) -> str:
    """Load the config as the service will (file, then the machine's registry and environment)."""
    from agent.config import load_machine_config, resolve_host
    config = load_machine_config(str(path))
    a = config.agent
    return (f"host {resolve_host(a.host)}, site {a.site}, delivery group {a.delivery_group}, "
            f"collector {', '.join(a.urls)}")


def protect_with_acl(path: Path, folder: bool) -> List[str]:  # pragma: no cover - needs Windows
    """Set the DACL by SID with pywin32, then read it back: the answer is what Windows kept."""
    import win32security as sec

    sd = sec.ConvertStringSecurityDescriptorToSecurityDescriptor(FOLDER_SDDL if folder else FILE_SDDL,
                                                                  sec.SDDL_REVISION_1)
    sec.SetNamedSecurityInfo(str(path), sec.SE_FILE_OBJECT,
                             sec.DACL_SECURITY_INFORMATION | sec.PROTECTED_DACL_SECURITY_INFORMATION,
                             None, None, sd.GetSecurityDescriptorDacl(), None)
    kept = sec.GetNamedSecurityInfo(str(path), sec.SE_FILE_OBJECT, sec.DACL_SECURITY_INFORMATION)
    dacl = kept.GetSecurityDescriptorDacl()
    aces = [] if dacl is None else [dacl.GetAce(i) for i in range(dacl.GetAceCount())]
    return acl_problems(bool(kept.GetSecurityDescriptorControl()[0] & SE_DACL_PROTECTED),
                        [(ace[0][0], sec.ConvertSidToStringSid(ace[2])) for ace in aces])


def service_recovery(name: str) -> List[str]:  # pragma: no cover - needs Windows
    import win32service as ws

    from agent.winservice import configure_recovery

    scm = ws.OpenSCManager(None, None, ws.SC_MANAGER_CONNECT)
    try:
        handle = ws.OpenService(scm, name, ws.SERVICE_CHANGE_CONFIG | ws.SERVICE_QUERY_CONFIG)
        try:
            return configure_recovery(ws, handle)
        finally:
            ws.CloseServiceHandle(handle)
    finally:
        ws.CloseServiceHandle(scm)


def parse_args(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m agent.winhost", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("configure", help="the installer's last step (run as SYSTEM by the MSI)")
    c.add_argument("--config", type=Path, default=default_config_path())
    c.add_argument("--site", default="")
    c.add_argument("--delivery-group", default="")
    c.add_argument("--collector-urls", default="", help="separated by commas, semicolons or spaces")
    c.add_argument("--token-file", default="")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None, windows: Optional[Windows] = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    args.config.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(args.config.parent / "install.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        settings = InstallSettings(site=args.site.strip(), delivery_group=args.delivery_group.strip(),
                                   collector_urls=split_urls(args.collector_urls),
                                   token_file=args.token_file.strip())
        code = configure(settings, args.config,
                         windows or Windows(protect_with_acl, service_recovery, check_config))
    except Exception:  # noqa: BLE001 - the installer shows only an exit code: the log has the rest
        log.exception("configure failed")
        code = EXIT_FAILED
    finally:
        root.removeHandler(handler)
        handler.close()
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
