# Hybrid Engine for Windows: a virtual environment under %LOCALAPPDATA%\hybrid-engine,
# the package from this checkout, and the native host registered (HKCU registry keys
# pointing to manifests under the data folder).
#
# Honest status: the registry layout and the .bat launcher are unit-tested on Linux
# against an in-memory registry (tests/unit/test_install.py); this script itself has
# not been run on a Windows machine by the team yet. Please report what you see.
#
# Usage: powershell -ExecutionPolicy Bypass -File install\install.ps1 [-Browser chrome,firefox] [-ExtensionId ID]
param(
    [string[]]$Browser = @(),
    [string[]]$ExtensionId = @()
)
$ErrorActionPreference = "Stop"
$here = Split-Path -Parent $PSScriptRoot

if ($env:HYBRID_ENGINE_HOME) { $data = $env:HYBRID_ENGINE_HOME }
else { $data = Join-Path $env:LOCALAPPDATA "hybrid-engine" }
$venv = Join-Path $data "venv"

$python = $null
foreach ($candidate in @("py -3.13", "py -3.12", "py -3.11", "python")) {
    $parts = $candidate.Split(" ")
    try {
        & $parts[0] $parts[1..($parts.Length - 1)] -c "import sys; sys.exit(sys.version_info < (3, 11))" 2>$null
        if ($LASTEXITCODE -eq 0) { $python = $parts; break }
    } catch { }
}
if (-not $python) {
    Write-Error "Hybrid Engine needs Python 3.11 or newer (python.org installer, 'Add to PATH')."
    exit 2
}

New-Item -ItemType Directory -Force -Path $data | Out-Null
if (-not (Test-Path (Join-Path $venv "Scripts\python.exe"))) {
    & $python[0] $python[1..($python.Length - 1)] -m venv $venv
}
$py = Join-Path $venv "Scripts\python.exe"
& $py -m pip install -q --upgrade pip
& $py -m pip install -q $here

$args = @("install")
foreach ($b in $Browser) { $args += @("--browser", $b) }
foreach ($id in $ExtensionId) { $args += @("--extension-id", $id) }
& (Join-Path $venv "Scripts\hybrid-engine.exe") @args

Write-Host ""
Write-Host "Installed in $venv."
Write-Host "Load the extension from $here\extension (chrome://extensions, Developer mode, Load unpacked;"
Write-Host "Firefox: about:debugging, Load Temporary Add-on, extension\manifest.json)."
Write-Host "Then: $venv\Scripts\hybrid-engine.exe keys set openai"
