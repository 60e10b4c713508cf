"""The ctypes structures of agent/sessions/windows.py against Windows' own definitions.

Two checks: the x64 sizes and offsets Microsoft's headers give (pure ctypes, any 64-bit
Python), and static asserts generated from the ctypes definitions, compiled against
mingw-w64's wtsapi32.h (`x86_64-w64-mingw32-gcc -fsyntax-only`; Debian package
gcc-mingw-w64-x86-64-win32, installed by .ci/run; skipped locally without it).
"""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from agent.sessions.windows import STRUCTS, WTS_PROCESS_INFOW, WTS_SESSION_INFO_1W, WTSINFOW
from tests.conftest import require_tool

X64 = ctypes.sizeof(ctypes.c_void_p) == 8

# Sizes and offsets on x64 (wtsapi32.h: WINSTATIONNAME_LENGTH 32, DOMAIN_LENGTH 17, USERNAME_LENGTH 20).
EXPECTED: Dict[type, Dict[str, int]] = {
    WTSINFOW: {"__size__": 216, "State": 0, "SessionId": 4, "WinStationName": 32, "Domain": 96,
               "UserName": 130, "ConnectTime": 176, "DisconnectTime": 184, "LastInputTime": 192,
               "LogonTime": 200, "CurrentTime": 208},
    WTS_SESSION_INFO_1W: {"__size__": 56, "ExecEnvId": 0, "State": 4, "SessionId": 8, "pSessionName": 16,
                          "pHostName": 24, "pUserName": 32, "pDomainName": 40, "pFarmName": 48},
    WTS_PROCESS_INFOW: {"__size__": 24, "SessionId": 0, "ProcessId": 4, "pProcessName": 8, "pUserSid": 16},
}


@pytest.mark.skipif(not X64, reason="the expected numbers are x64's")
@pytest.mark.parametrize("struct", STRUCTS, ids=lambda s: s.__name__)
def test_ctypes_layout_matches_the_x64_abi(struct: type) -> None:
    expected = EXPECTED[struct]
    got = {"__size__": ctypes.sizeof(struct)}
    got.update({name: getattr(struct, name).offset for name in expected if name != "__size__"})
    assert got == expected


# mingw-w64 10 (Debian 12) has no WTS_SESSION_INFO_1W yet: declared here as Microsoft Learn's
# WTS_SESSION_INFO_1W page gives it, so the compiler still lays out the documented declaration.
DOCUMENTED = {"WTS_SESSION_INFO_1W": """typedef struct {
  DWORD ExecEnvId; WTS_CONNECTSTATE_CLASS State; DWORD SessionId; LPWSTR pSessionName;
  LPWSTR pHostName; LPWSTR pUserName; LPWSTR pDomainName; LPWSTR pFarmName;
} documented_WTS_SESSION_INFO_1W;"""}


def static_asserts(structs=STRUCTS, header: str = "") -> str:
    """C source asserting, for each struct, the size and every field offset ctypes computed; a
    struct the header lacks (`header` has no typedef of it) is taken from DOCUMENTED."""
    lines: List[str] = ["#define UNICODE", "#include <windows.h>", "#include <wtsapi32.h>", "#include <stddef.h>"]
    for struct in structs:
        name = struct.__name__
        if name in DOCUMENTED and f"}} {name}" not in header and f"}}{name}" not in header:
            lines.append(DOCUMENTED[name])
            name = f"documented_{name}"
        lines.append(f"_Static_assert(sizeof({name}) == {ctypes.sizeof(struct)}, \"sizeof {name}\");")
        for field, *_ in struct._fields_:
            offset = getattr(struct, field).offset
            lines.append(f"_Static_assert(offsetof({name}, {field}) == {offset}, \"{name}.{field}\");")
    return "\n".join(lines) + "\n"


def wtsapi32_h(gcc: str) -> str:
    """The text of the wtsapi32.h the cross-compiler includes."""
    done = subprocess.run([gcc, "-E", "-x", "c", "-"], input="#include <windows.h>\n#include <wtsapi32.h>\n",
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(not X64, reason="compiled for x86_64")
def test_ctypes_layout_compiles_against_mingw_wtsapi32_h(tmp_path: Path) -> None:
    gcc = require_tool("x86_64-w64-mingw32-gcc")
    source = tmp_path / "layouts.c"
    source.write_text(static_asserts(header=wtsapi32_h(gcc)))
    done = subprocess.run([gcc, "-fsyntax-only", "-std=c11", str(source)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"{done.stderr}\n--- {source}:\n{source.read_text()}"


@pytest.mark.skipif(not X64, reason="compiled for x86_64")
def test_the_compiler_check_catches_a_wrong_layout(tmp_path: Path) -> None:
    """The guard of the guard: a WTSINFOW with DOMAIN_LENGTH + 1 characters (the old comment's
    reading) moves UserName by 2 bytes (ConnectTime's padding hides it), and the compile must fail."""
    gcc = require_tool("x86_64-w64-mingw32-gcc")

    fields = [(name, ctypes.c_uint16 * 18 if name == "Domain" else kind) for name, kind in WTSINFOW._fields_]
    wrong = type("WTSINFOW", (ctypes.Structure,), {"_fields_": fields})  # the name the header knows
    assert wrong.UserName.offset == WTSINFOW.UserName.offset + 2
    source = tmp_path / "wrong.c"
    source.write_text(static_asserts((wrong,)))
    done = subprocess.run([gcc, "-fsyntax-only", "-std=c11", str(source)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "WTSINFOW" in done.stderr
