"""Every HKLM read asks for the 64-bit registry view, so a 32-bit Python reads what the operator wrote."""

from __future__ import annotations

from agent.collectors.capacity import TERMINAL_SERVER_KEY, WINLOGON_KEY, read_rds_logon_mode
from tests.windows.fakereg import FakeWinreg


def test_rds_logon_mode_is_read_from_the_64_bit_view() -> None:
    reg = FakeWinreg({TERMINAL_SERVER_KEY: {"TSServerDrainMode": (2, FakeWinreg.REG_DWORD)},
                      WINLOGON_KEY: {"WinStationsDisabled": ("1", FakeWinreg.REG_SZ)}})
    mode = read_rds_logon_mode(reg)
    assert (mode.drain_mode, mode.winstations_disabled, mode.accepting) == (2, 1, False)
    assert all(access & FakeWinreg.KEY_WOW64_64KEY for _, access in reg.opened)


def test_the_fake_redirects_like_windows_when_the_view_is_not_asked_for() -> None:
    """Guards the guard: without KEY_WOW64_64KEY, SOFTWARE keys are not found from a 32-bit process."""
    reg = FakeWinreg({WINLOGON_KEY: {"WinStationsDisabled": ("1", FakeWinreg.REG_SZ)}})
    try:
        reg.OpenKey(FakeWinreg.HKEY_LOCAL_MACHINE, WINLOGON_KEY)
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("opened a SOFTWARE key without the 64-bit view")
    with reg.OpenKey(FakeWinreg.HKEY_LOCAL_MACHINE, WINLOGON_KEY, 0,
                     FakeWinreg.KEY_READ | FakeWinreg.KEY_WOW64_64KEY) as key:
        assert reg.QueryValueEx(key, "WinStationsDisabled") == ("1", FakeWinreg.REG_SZ)
