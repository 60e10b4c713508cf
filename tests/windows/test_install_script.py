"""config/windows/install-agent.ps1, read as text: no PowerShell runs here (Debian has none), so these
checks pin down the lines that were wrong (a BOM in the TOML, localized account names, unchecked
exit codes). They do not prove the script runs; a Windows run would (docs/sessions.md, "verified where").
"""

from __future__ import annotations

import re
from typing import List

from tests.conftest import ROOT

SCRIPT = ROOT / "config" / "windows" / "install-agent.ps1"


def code_lines() -> List[str]:
    """The script without comments and its comment-based help."""
    text = re.sub(r"<#.*?#>", "", SCRIPT.read_text(encoding="utf-8"), flags=re.S)
    return [line.split(" #")[0].rstrip() for line in text.splitlines() if not line.strip().startswith("#")]


def test_files_are_written_without_a_byte_order_mark() -> None:
    lines = code_lines()
    writers = [line for line in lines if re.search(r"\b(Set-Content|Add-Content|Out-File)\b|>\s*\$", line)]
    assert writers == [], "Windows PowerShell 5.1 writes UTF-8 with a BOM; use [System.IO.File]::WriteAllText"
    toml = [line for line in lines if "WriteAllText($Config" in line]
    assert len(toml) == 1 and "New-Object System.Text.UTF8Encoding $false" in toml[0]


def test_acls_name_accounts_by_sid_and_drop_inheritance() -> None:
    icacls = [line for line in code_lines() if re.search(r"\bicacls\b", line)]
    assert icacls
    for line in icacls:
        granted = re.findall(r'"([^"]+):\(', line)
        assert all(re.fullmatch(r"\*S-1-5-(18|32-544)", who) for who in granted), line
        if "/grant" in line:
            assert "/inheritance:r" in line and "/grant:r" in line, line
    token = next(line for line in icacls if "$Token" in line)
    assert '"*S-1-5-18:(R)"' in token and '"*S-1-5-32-544:(F)"' in token


def test_every_native_command_has_its_exit_code_checked() -> None:
    lines = code_lines()
    native = re.compile(r"&\s*\$(Agent|Python)\b|&\s*\(Join-Path|\bicacls\b")
    unchecked = []
    for i, line in enumerate(lines):
        if not native.search(line) or "Invoke-Checked" in line:
            continue
        if i and "Invoke-Checked" in lines[i - 1] and lines[i - 1].endswith("{"):
            continue  # the block of an Invoke-Checked that starts on the line before
        if re.search(r"service status\s*\|\s*Out-Null", line) and "$LASTEXITCODE" in lines[i + 1]:
            continue  # a question, answered by the exit code on the next line
        following = " ".join(lines[i:i + 3])
        if "$LASTEXITCODE" not in following:
            unchecked.append(line.strip())
    assert unchecked == []
    assert "function Invoke-Checked" in SCRIPT.read_text(encoding="utf-8")


def test_service_install_and_start_failures_stop_the_script() -> None:
    text = "\n".join(code_lines())
    assert re.search(r'Invoke-Checked "Installing the service" \{ & \$Agent service install', text)
    assert re.search(r'Invoke-Checked "Starting the service" \{ & \$Agent service start', text)
    assert re.search(r'Invoke-Checked "Checking the configuration in \$Config" \{ & \$Agent --config \$Config '
                     r"--check-config", text)


def test_the_token_gets_its_acl_before_the_secret_is_written() -> None:
    lines = code_lines()
    acl = next(i for i, line in enumerate(lines) if "icacls $Token" in line)
    secret = next(i for i, line in enumerate(lines) if "ReadAllBytes" in line and "$TokenFile" in line)
    assert acl < secret
    assert not any("Copy-Item $TokenFile" in line for line in lines)
