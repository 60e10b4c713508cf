"""Whether the host takes new sessions, how many it should take, and whether it is in maintenance.

A broker (Citrix, RDS) sends no new users to a drained host; the collector
shows such a host as draining rather than as under-used. The reading combines:

- `capacity.accepting = false` in the agent config, or the operator's
  `drain_file` existing (touch it before maintenance, remove it after);
- on Windows, RDS's own logon mode in the registry: TSServerDrainMode under
  HKLM\\SYSTEM\\CurrentControlSet\\Control\\Terminal Server (0 allow all
  connections; 1 `change logon /drainuntilrestart`; 2 `change logon /drain`:
  reconnections allowed, new logons refused) and WinStationsDisabled = 1
  (`change logon /disable`: no logons at all), read under
  HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Winlogon where
  chglogon writes it, and under the Terminal Server key as well.
- maintenance: `capacity.maintenance = true` or `maintenance_file` existing.

Sample reading::

    {"max_sessions": 25, "accepting_sessions": true, "maintenance": false}
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from agent.collectors import Collector, Context, register
from agent.config import CapacitySection
from contract.report import Capacity

log = logging.getLogger(__name__)

TERMINAL_SERVER_KEY = r"SYSTEM\CurrentControlSet\Control\Terminal Server"
WINLOGON_KEY = r"SOFTWARE\Microsoft\Windows NT\CurrentVersion\Winlogon"


@dataclass(frozen=True)
class RdsLogonMode:
    """RDS's logon settings: TSServerDrainMode (0, 1, 2) and WinStationsDisabled (0, 1)."""

    drain_mode: int = 0
    winstations_disabled: int = 0

    @property
    def accepting(self) -> bool:
        return self.drain_mode == 0 and self.winstations_disabled == 0


def _registry_int(value: Any) -> int:
    """REG_DWORD or REG_SZ ("1"): WinStationsDisabled under Winlogon is a string."""
    try:
        return int(str(value).strip() or 0)
    except ValueError:
        return 0


def read_rds_logon_mode(winreg: Any = None) -> RdsLogonMode:
    """The registry values through `winreg` (injectable); a missing key or value means 0 (the default)."""
    if winreg is None:  # pragma: no cover - Windows only
        import winreg

    def value(path: str, name: str) -> int:
        try:  # the 64-bit view, also from a 32-bit Python (KEY_WOW64_64KEY)
            with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, path, 0, winreg.KEY_READ | winreg.KEY_WOW64_64KEY) as key:
                return _registry_int(winreg.QueryValueEx(key, name)[0])
        except FileNotFoundError:
            return 0

    return RdsLogonMode(
        drain_mode=value(TERMINAL_SERVER_KEY, "TSServerDrainMode"),
        winstations_disabled=max(value(WINLOGON_KEY, "WinStationsDisabled"),
                                 value(TERMINAL_SERVER_KEY, "WinStationsDisabled")),
    )


def _exists(path: str) -> bool:
    return bool(path) and os.path.exists(path)


@register("capacity")
class CapacityCollector(Collector):
    """`settings` is the `[capacity]` section; `logon_mode` reads RDS's logon mode (None: not Windows)."""

    def __init__(self, settings: CapacitySection, logon_mode: Optional[Callable[[], RdsLogonMode]] = None):
        super().__init__(None)
        self.settings = settings
        self.logon_mode = logon_mode
        self._registry_failing = False

    @classmethod
    def from_context(cls, ctx: Context) -> "CapacityCollector":
        return cls(ctx.config.capacity, read_rds_logon_mode if ctx.os == "windows" else None)

    def collect(self) -> Capacity:
        cfg = self.settings
        accepting = cfg.accepting and not _exists(cfg.drain_file)
        mode = self._rds_mode()
        if mode is not None and not mode.accepting:
            accepting = False
        return Capacity(max_sessions=cfg.max_sessions or None, accepting_sessions=accepting,
                        maintenance=cfg.maintenance or _exists(cfg.maintenance_file))

    def _rds_mode(self) -> Optional[RdsLogonMode]:
        """The RDS logon mode; None when unknown (not Windows, or the registry cannot be read)."""
        if self.logon_mode is None:
            return None
        try:
            mode = self.logon_mode()
        except OSError as e:  # the operator's flags still count; log once per outage
            if not self._registry_failing:
                log.warning("cannot read the RDS logon mode from the registry: %s", e)
                self._registry_failing = True
            return None
        self._registry_failing = False
        return mode
