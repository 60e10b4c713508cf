<#
.SYNOPSIS
    Installs or upgrades the vdiwatch agent as a Windows service, unattended.

.DESCRIPTION
    For Citrix VDAs and RDS hosts, run as Administrator by a software-distribution
    tool or while building a master image (MCS/PVS). It
      1. creates a private Python environment in C:\Program Files\vdiwatch (from
         the given Python and vdiwatch wheel, no internet needed when -WheelDir
         holds the wheels of vdiwatch and its dependencies),
      2. writes C:\ProgramData\vdiwatch\agent.toml if it does not exist yet,
         and the push token to agent.token (readable by SYSTEM and Administrators),
      3. installs and starts the "vdiwatch-agent" service (automatic start,
         restarts on failure; on stop and at shutdown it says goodbye).
    Every step that fails stops the script with a message and a non-zero exit code.
    The self-contained MSI (no Python needed on the VDA) is the recommended way for
    master images; this script is for hosts that already have a Python 3.9+.
    The host name is read at every start, never baked into the image. Site and
    delivery group can be set per machine catalog without touching the image:
    registry values HKLM\SOFTWARE\vdiwatch\Site and DeliveryGroup (e.g. by GPO),
    or the machine environment variables VDIWATCH_SITE and VDIWATCH_DELIVERY_GROUP.

.EXAMPLE
    .\install-agent.ps1 -Python "C:\Program Files\Python312\python.exe" -WheelDir \\fs01\sw\vdiwatch `
        -Collector https://collector.city.example:9847 -Site "City Hall" -DeliveryGroup "Office Desktops" `
        -TokenFile \\fs01\sw\vdiwatch\cityhall.token

.EXAMPLE
    .\install-agent.ps1 -Uninstall
#>
[CmdletBinding()]
param(
    [string]$Python = "py",
    [string]$WheelDir = "",
    [string]$Collector = "",
    [string]$Site = "",
    [string]$DeliveryGroup = "",
    [string]$TokenFile = "",
    [string]$CaFile = "",
    [string]$InstallDir = "$env:ProgramFiles\vdiwatch",
    [switch]$NoStart,
    [switch]$Uninstall
)
$ErrorActionPreference = "Stop"
$DataDir = Join-Path $env:ProgramData "vdiwatch"
$Agent = Join-Path $InstallDir "Scripts\vdiwatch-agent.exe"

function Test-Admin {
    $id = [Security.Principal.WindowsIdentity]::GetCurrent()
    (New-Object Security.Principal.WindowsPrincipal $id).IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)
}
if (-not (Test-Admin)) { throw "Run this script as Administrator." }

if ($Uninstall) {
    if (Test-Path $Agent) {
        & $Agent service status | Out-Null
        if ($LASTEXITCODE -eq 0) {
            & $Agent service remove
            if ($LASTEXITCODE -ne 0) { throw "cannot remove the service (see above); $InstallDir was kept." }
        }
    }
    Remove-Item -Recurse -Force $InstallDir -ErrorAction SilentlyContinue
    Write-Host "Removed the service and $InstallDir; configuration and logs in $DataDir are kept."
    exit 0
}

function Invoke-Checked([string]$What, [scriptblock]$Command) {
    # Native programs report failure only through $LASTEXITCODE, which "Stop" does not watch.
    & $Command
    if ($LASTEXITCODE -ne 0) { throw "$What failed (exit code $LASTEXITCODE); see the messages above." }
}

# 1. A private environment, so the agent never depends on what else is installed.
if (Test-Path $Agent) {
    # An upgrade removes the service and installs it again: its command line names the
    # interpreter, which the new environment may change. `service remove` stops it first.
    & $Agent service status | Out-Null
    if ($LASTEXITCODE -eq 0) { Invoke-Checked "Removing the service for the upgrade" { & $Agent service remove } }
}
# --clear: an upgrade to another Python must not keep wheels built for the old one.
Invoke-Checked "Creating a Python environment with $Python" { & $Python -m venv --clear $InstallDir }
$Pip = @("-m", "pip", "install", "--upgrade", "--disable-pip-version-check")
if ($WheelDir) { $Pip += @("--no-index", "--find-links", $WheelDir) }
else { Write-Warning "No -WheelDir: pip takes vdiwatch and its dependencies from the configured package index." }
Invoke-Checked "Installing vdiwatch[windows] with pip" { & (Join-Path $InstallDir "Scripts\python.exe") @Pip "vdiwatch[windows]" }

# 2. Configuration, written once: an upgrade keeps what the operator changed.
New-Item -ItemType Directory -Force -Path $DataDir | Out-Null
# Only LocalSystem and Administrators may read or write here (by SID: names are localized). The
# inherited ProgramData ACL would let any desktop user create files, e.g. plant an agent.toml
# before the first install; existing files get the folder's ACL and Administrators as owner.
Invoke-Checked "Restricting access to $DataDir" {
    icacls $DataDir /inheritance:r /grant:r "*S-1-5-18:(OI)(CI)(F)" "*S-1-5-32-544:(OI)(CI)(F)" /q }
Invoke-Checked "Making Administrators the owner of $DataDir" { icacls $DataDir /setowner "*S-1-5-32-544" /t /q }
if (Get-ChildItem -Force $DataDir) {
    Invoke-Checked "Resetting the files in $DataDir to the folder's ACL" { icacls "$DataDir\*" /reset /t /q }
}
$Config = Join-Path $DataDir "agent.toml"
if (-not (Test-Path $Config)) {
    function Q([string]$s) { '"' + $s.Replace('\', '\\').Replace('"', '\"') + '"' }
    $lines = @("# vdiwatch agent; see the commented example config/agent.toml in the vdiwatch sources.", "[agent]")
    if ($Collector) { $lines += "collector_url = $(Q $Collector)" }
    if ($Site) { $lines += "site = $(Q $Site)" }
    if ($DeliveryGroup) { $lines += "delivery_group = $(Q $DeliveryGroup)" }
    if ($TokenFile) { $lines += 'token_file = "agent.token"' }
    if ($CaFile) { Copy-Item $CaFile (Join-Path $DataDir "ca.pem") -Force; $lines += 'ca_file = "ca.pem"' }
    # UTF-8 without a byte-order mark: Windows PowerShell 5.1's "Set-Content -Encoding UTF8" writes one.
    [System.IO.File]::WriteAllText($Config, (($lines -join "`r`n") + "`r`n"), (New-Object System.Text.UTF8Encoding $false))
}
if ($TokenFile) {
    # The token is a secret on a multi-session host: read by LocalSystem (S-1-5-18, the service),
    # managed by Administrators (S-1-5-32-544), nobody else. SIDs, not names: names are translated
    # on a German or French Windows. The ACL is set on an empty file before the secret is written
    # into it, so the token is never readable under another ACL.
    $Token = Join-Path $DataDir "agent.token"
    [System.IO.File]::WriteAllBytes($Token, [byte[]]@())
    icacls $Token /inheritance:r /grant:r "*S-1-5-18:(R)" "*S-1-5-32-544:(F)" | Out-Null
    if ($LASTEXITCODE -ne 0) {
        Remove-Item -Force $Token -ErrorAction SilentlyContinue
        throw "cannot restrict access to $Token (icacls exit code $LASTEXITCODE); the token was not installed."
    }
    [System.IO.File]::WriteAllBytes($Token, [System.IO.File]::ReadAllBytes((Resolve-Path $TokenFile).Path))
}
# The same loader as the service: the file plus this machine's Site/DeliveryGroup from the registry.
Invoke-Checked "Checking the configuration in $Config" { & $Agent --config $Config --check-config }

# 3. The service.
Invoke-Checked "Installing the service" { & $Agent service install --config $Config }
if (-not $NoStart) { Invoke-Checked "Starting the service" { & $Agent service start } }
Write-Host "vdiwatch agent installed; logs in $DataDir\agent.log"
