# Writes C:\ProgramData\keytally\config.toml and the secret file from the MSI properties.
# Run by keytally.msi (deferred custom action, as SYSTEM) when SERVER_URL is given; see
# installer/README.md, "Windows". An existing config.toml is replaced (the old one is kept as
# config.toml.bak); the secret file gets an ACL of SYSTEM and Administrators only.
param(
    [Parameter(Mandatory = $true)][string]$DataDir,
    [Parameter(Mandatory = $true)][string]$Server,
    [string]$ClientId = "",
    [string]$TokenUrl = "",
    [string]$ClientSecret = "",
    [string]$Token = ""
)
$ErrorActionPreference = "Stop"

# TOML literal strings ('...') keep backslashes as they are; a value with a ' cannot be one.
function Lit([string]$v) {
    if ($v.Contains("'")) { throw "a value contains a single quote, which the config cannot hold: $v" }
    return "'" + $v + "'"
}

$dir = $DataDir.TrimEnd('\')
$config = Join-Path $dir "config.toml"
$secret = Join-Path $dir "secret"
$state = Join-Path $dir "state"
New-Item -ItemType Directory -Force -Path $state | Out-Null

$lines = @(
    "# Written by the keytally installer. After a change: Restart-Service keytally, then",
    "# keytally --config `"$config`" doctor (as Administrator).",
    "state_dir = $(Lit $state)",
    "",
    "[profiles.default]",
    "server = $(Lit $Server)"
)
if ($ClientId -ne "") {
    $lines += "client_id = $(Lit $ClientId)"
    $lines += "token_url = $(Lit $TokenUrl)"
    $lines += "client_secret_file = $(Lit $secret)"
    $value = $ClientSecret
} else {
    $lines += "token_file = $(Lit $secret)"
    $value = $Token
}

if (Test-Path $config) { Copy-Item -Force $config "$config.bak" }
$utf8 = New-Object System.Text.UTF8Encoding($false)
[System.IO.File]::WriteAllText($config, (($lines -join "`r`n") + "`r`n"), $utf8)

if ($value -ne "") {
    # Create the file empty, lock it down, then write the secret into it.
    [System.IO.File]::WriteAllText($secret, "", $utf8)
    & icacls.exe $secret /inheritance:r /grant:r "*S-1-5-18:F" "*S-1-5-32-544:F" | Out-Null
    if ($LASTEXITCODE -ne 0) { throw "icacls failed on $secret" }
    [System.IO.File]::WriteAllText($secret, $value, $utf8)
}
