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
    if (Test-Path $Agent) { & $Agent service remove }
    Remove-Item -Recurse -Force $InstallDir -ErrorAction SilentlyContinue
    Write-Host "Removed the service and $InstallDir; configuration and logs in $DataDir are kept."
    exit 0
}

# 1. A private environment, so the agent never depends on what else is installed.
if (Test-Path $Agent) { & $Agent service stop | Out-Null }
& $Python -m venv $InstallDir
if ($LASTEXITCODE -ne 0) { throw "cannot create a Python environment with $Python" }
$Pip = @("-m", "pip", "install", "--upgrade", "--disable-pip-version-check")
if ($WheelDir) { $Pip += @("--no-index", "--find-links", $WheelDir) }
& (Join-Path $InstallDir "Scripts\python.exe") @Pip "vdiwatch[windows]"
if ($LASTEXITCODE -ne 0) { throw "pip could not install vdiwatch[windows]" }

# 2. Configuration, written once: an upgrade keeps what the operator changed.
New-Item -ItemType Directory -Force -Path $DataDir | Out-Null
$Config = Join-Path $DataDir "agent.toml"
if (-not (Test-Path $Config)) {
    function Q([string]$s) { '"' + $s.Replace('\', '\\').Replace('"', '\"') + '"' }
    $lines = @("# vdiwatch agent; see the commented example config/agent.toml in the vdiwatch sources.", "[agent]")
    if ($Collector) { $lines += "collector_url = $(Q $Collector)" }
    if ($Site) { $lines += "site = $(Q $Site)" }
    if ($DeliveryGroup) { $lines += "delivery_group = $(Q $DeliveryGroup)" }
    if ($TokenFile) { $lines += 'token_file = "agent.token"' }
    if ($CaFile) { Copy-Item $CaFile (Join-Path $DataDir "ca.pem") -Force; $lines += 'ca_file = "ca.pem"' }
    Set-Content -Path $Config -Value $lines -Encoding UTF8
}
if ($TokenFile) {
    $Token = Join-Path $DataDir "agent.token"
    Copy-Item $TokenFile $Token -Force
    icacls $Token /inheritance:r /grant:r "SYSTEM:R" "Administrators:F" | Out-Null
}
& $Agent --config $Config --check-config
if ($LASTEXITCODE -ne 0) { throw "the configuration in $Config is not valid (see above)" }

# 3. The service.
$state = & $Agent service status
if ($LASTEXITCODE -ne 0) { & $Agent service install --config $Config }
if (-not $NoStart) { & $Agent service start }
Write-Host "vdiwatch agent installed; logs in $DataDir\agent.log"
