"""A fake `winreg` for HKEY_LOCAL_MACHINE as a 32-bit Python on 64-bit Windows sees it.

Without KEY_WOW64_64KEY, such a process is redirected to SOFTWARE\\WOW6432Node
("Registry Redirector", Microsoft Learn), where nothing was written: the fake
then finds no key, as Windows would. Constants are winreg's (winnt.h) values.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple


class _Key:
    def __init__(self, values: Dict[str, Tuple[Any, int]]):
        self.values = values

    def __enter__(self) -> "_Key":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


class FakeWinreg:
    HKEY_LOCAL_MACHINE = 0x80000002
    KEY_READ = 0x20019
    KEY_WOW64_64KEY = 0x0100
    KEY_WOW64_32KEY = 0x0200
    REG_SZ, REG_EXPAND_SZ, REG_DWORD = 1, 2, 4

    def __init__(self, keys: Dict[str, Dict[str, Tuple[Any, int]]], native_64_bit_caller: bool = False):
        self.keys = {k.lower(): v for k, v in keys.items()}
        self.native = native_64_bit_caller
        self.opened: List[Tuple[str, int]] = []

    def OpenKey(self, hkey: int, path: str, reserved: int = 0, access: int = KEY_READ) -> _Key:  # noqa: N802
        assert hkey == self.HKEY_LOCAL_MACHINE and reserved == 0
        self.opened.append((path, access))
        if not self.native and not access & self.KEY_WOW64_64KEY and path.lower().startswith("software\\"):
            path = "SOFTWARE\\WOW6432Node\\" + path[len("software\\"):]
        try:
            return _Key(self.keys[path.lower()])
        except KeyError:
            raise FileNotFoundError(2, "The system cannot find the file specified") from None

    def QueryValueEx(self, key: _Key, name: str) -> Tuple[Any, int]:  # noqa: N802
        try:
            return key.values[name]
        except KeyError:
            raise FileNotFoundError(2, "The system cannot find the file specified") from None
