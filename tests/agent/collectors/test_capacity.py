"""The capacity collector: config, flag files, and RDS's logon mode on Windows."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from agent.collectors import Context
from agent.collectors.capacity import (
    TERMINAL_SERVER_KEY,
    WINLOGON_KEY,
    CapacityCollector,
    RdsLogonMode,
    read_rds_logon_mode,
)
from agent.config import CapacitySection
from tests.agent.helpers import collected, parse_reading


def collector(logon_mode: Optional[Callable[[], RdsLogonMode]] = None, **capacity: Any) -> CapacityCollector:
    return CapacityCollector(CapacitySection(**capacity), logon_mode)


def test_defaults_accept_sessions_without_a_maximum() -> None:
    reading = collected(collector())
    assert reading == {"max_sessions": None, "accepting_sessions": True, "maintenance": False}
    capacity = parse_reading("capacity", reading).capacity
    assert capacity.max_sessions is None and capacity.accepting_sessions is True


def test_no_config_at_all_means_the_defaults() -> None:
    reading = collected(CapacityCollector.from_context(Context(psutil=None, os="linux")))
    assert reading == {"max_sessions": None, "accepting_sessions": True, "maintenance": False}


def test_config_values() -> None:
    reading = collected(collector(max_sessions=25, accepting=False, maintenance=True))
    assert reading == {"max_sessions": 25, "accepting_sessions": False, "maintenance": True}
    assert parse_reading("capacity", reading).capacity.max_sessions == 25


def test_flag_files_drain_and_put_in_maintenance(tmp_path: Path) -> None:
    drain, maintenance = tmp_path / "drain", tmp_path / "maintenance"
    c = collector(drain_file=str(drain), maintenance_file=str(maintenance))
    assert c.collect().accepting_sessions is True and c.collect().maintenance is False
    drain.touch()
    maintenance.touch()
    reading = c.collect()
    assert reading.accepting_sessions is False and reading.maintenance is True
    drain.unlink()
    assert c.collect().accepting_sessions is True


@pytest.mark.parametrize("mode, accepting", [
    (RdsLogonMode(0, 0), True),
    (RdsLogonMode(1, 0), False),  # change logon /drainuntilrestart
    (RdsLogonMode(2, 0), False),  # change logon /drain
    (RdsLogonMode(0, 1), False),  # change logon /disable
])
def test_rds_logon_mode_on_windows(mode: RdsLogonMode, accepting: bool) -> None:
    reading = collected(collector(lambda: mode))
    assert reading["accepting_sessions"] is accepting


def test_rds_allows_but_the_operator_drains() -> None:
    reading = collected(collector(lambda: RdsLogonMode(), accepting=False))
    assert reading["accepting_sessions"] is False


def test_an_unreadable_registry_is_logged_once_and_the_config_decides(caplog) -> None:
    def broken() -> RdsLogonMode:
        raise PermissionError(5, "Access is denied")

    c = collector(broken)
    with caplog.at_level(logging.WARNING, logger="agent.collectors.capacity"):
        readings = [collected(c) for _ in range(3)]
    assert all(r["accepting_sessions"] is True for r in readings)
    assert len([r for r in caplog.records if "RDS logon mode" in r.getMessage()]) == 1


def test_linux_never_asks_a_registry_windows_does() -> None:
    assert CapacityCollector.from_context(Context(psutil=None, os="linux")).logon_mode is None
    assert CapacityCollector.from_context(Context(psutil=None, os="windows")).logon_mode is read_rds_logon_mode


class FakeWinreg:
    HKEY_LOCAL_MACHINE = "HKLM"
    KEY_READ, KEY_WOW64_64KEY = 0x20019, 0x0100

    def __init__(self, values: dict):
        self.values = values

    class _Key:
        def __init__(self, path: str):
            self.path = path

        def __enter__(self) -> "FakeWinreg._Key":
            return self

        def __exit__(self, *exc: Any) -> None:
            return None

    def OpenKey(self, root: str, path: str, reserved: int = 0, access: int = 0) -> "_Key":  # noqa: N802
        if not any(p == path for p, _ in self.values):
            raise FileNotFoundError(2, "The system cannot find the file specified")
        return self._Key(path)

    def QueryValueEx(self, key: "_Key", name: str) -> tuple:  # noqa: N802 - winreg's name
        if (key.path, name) not in self.values:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        return self.values[(key.path, name)], 4


@pytest.mark.parametrize("values, expected", [
    ({}, RdsLogonMode(0, 0)),
    ({(TERMINAL_SERVER_KEY, "TSServerDrainMode"): 2}, RdsLogonMode(2, 0)),
    ({(WINLOGON_KEY, "WinStationsDisabled"): "1"}, RdsLogonMode(0, 1)),  # REG_SZ under Winlogon
    ({(TERMINAL_SERVER_KEY, "WinStationsDisabled"): 1, (TERMINAL_SERVER_KEY, "TSServerDrainMode"): 0},
     RdsLogonMode(0, 1)),
    ({(WINLOGON_KEY, "WinStationsDisabled"): "junk"}, RdsLogonMode(0, 0)),
])
def test_registry_reading(values: dict, expected: RdsLogonMode) -> None:
    assert read_rds_logon_mode(FakeWinreg(values)) == expected
