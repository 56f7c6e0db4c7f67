#Requires -Version 7.6
# Every help example runs as written (issue 15, item 5). Each ```powershell block under "## EXAMPLES" of docs/cmdlets/*.md
# runs in a runspace of its own with the module imported, in a scratch folder, with a swtpm simulator as the default TPM
# (TPM2TOOLS_TCTI) and an unattended user: Get-Credential and Read-Host answer with fixed values instead of prompting.
#
# Conventions understood here:
#   <!-- example: not-unattended (why) -->   on the line before a code fence: the example cannot run unattended (a real
#                                            device, another machine); it is reported as skipped with that reason.
#   The fleet's conventional folders in the examples (/var/lib/tpmprov*, /etc/tpmprov, /opt/tpmprov) are mapped into the
#   scratch folder, so no example writes outside it.
#   tests/Pester/HelpExamples.pending.txt    "<Page>#<n>  reason" lines: examples that do not run yet; skipped, with the
#                                            reason (not run, to keep the suite short), so the list shows what is left.
BeforeDiscovery {
    $root = Split-Path (Split-Path $PSScriptRoot)
    $pending = @{}
    $pendingFile = Join-Path $PSScriptRoot 'HelpExamples.pending.txt'
    if (Test-Path $pendingFile) {
        foreach ($line in Get-Content $pendingFile) {
            if ($line -match '^\s*([^#\s][^#]*#\d+)\s+(.*)$') { $pending[$Matches[1].Trim()] = $Matches[2].Trim() }
        }
    }
    $script:Examples = foreach ($page in Get-ChildItem (Join-Path $root 'docs/cmdlets') -Filter '*.md' | Sort-Object Name) {
        $lines = Get-Content $page.FullName
        $inExamples = $false; $inCode = $false; $n = 0; $code = $null; $mark = $null; $prev = ''
        foreach ($line in $lines) {
            if ($line -match '^## ') { $inExamples = $line -match '^## EXAMPLES' }
            if (-not $inExamples) { $prev = $line; continue }
            if (-not $inCode -and $line -match '^```powershell') {
                $inCode = $true; $code = [Text.StringBuilder]::new(); $n++
                $mark = if ($prev -match '<!--\s*example:\s*not-unattended\s*\(([^)]*)\)\s*-->') { $Matches[1] } else { $null }
                continue
            }
            if ($inCode -and $line -match '^```') {
                $inCode = $false
                $id = "$($page.BaseName)#$n"
                @{ Id = $id; Page = $page.BaseName; Code = $code.ToString(); NotUnattended = $mark; Pending = $pending[$id] }
                $prev = $line; continue
            }
            if ($inCode) { [void]$code.AppendLine($line) } else { if ($line.Trim()) { $prev = $line } }
        }
    }
}

BeforeAll {
    $ModulePath = $env:TPMPROV_MODULE_PATH
    if (-not $ModulePath) { throw 'Set TPMPROV_MODULE_PATH to the built module manifest (build.ps1 Test does).' }
    Import-Module $ModulePath -Force
    $script:Work = Join-Path ([IO.Path]::GetTempPath()) ("tpmprov-pester-examples-" + [guid]::NewGuid())
    New-Item -ItemType Directory -Path $script:Work | Out-Null
    $script:Saved = @{ TPMPROV_DATA = $env:TPMPROV_DATA; TPM2TOOLS_TCTI = $env:TPM2TOOLS_TCTI }
    $script:Sim = Start-TpmSimulator -Name 'help-examples' -Fast
    $env:TPM2TOOLS_TCTI = $script:Sim.ConnectionString
    # The unattended user: what Get-Credential and Read-Host would have been answered with.
    $script:Scaffold = @'
function Get-Credential { param([Parameter(Position = 0)][string] $UserName = 'admin', [string] $Message, [string] $Title)
    [pscredential]::new($UserName, (ConvertTo-SecureString 'Example-Passw0rd-1' -AsPlainText -Force)) }
function Read-Host { param([Parameter(Position = 0)] $Prompt, [switch] $AsSecureString, [switch] $MaskInput)
    if ($AsSecureString) { ConvertTo-SecureString 'Example-Passw0rd-1' -AsPlainText -Force } else { 'example' } }
'@
    function script:Invoke-Example([string] $id, [string] $code) {
        $dir = Join-Path $script:Work ($id -replace '[^\w]', '-')
        New-Item -ItemType Directory -Path $dir -Force | Out-Null
        $env:TPMPROV_DATA = Join-Path $dir 'data'
        $env:TPM2TOOLS_TCTI = $script:Sim.ConnectionString
        $code = $code -replace '(?<![\w.])/(var/lib/tpmprov|etc/tpmprov|opt/tpmprov)', ($dir.TrimEnd('/') + '/$1')
        $iss = [Management.Automation.Runspaces.InitialSessionState]::CreateDefault2()
        $iss.ImportPSModule($ModulePath)
        $rs = [runspacefactory]::CreateRunspace($iss)
        $rs.Open()
        $ps = [powershell]::Create()
        $ps.Runspace = $rs
        try {
            [void]$ps.AddScript("Set-Location -LiteralPath '$dir'; `$ConfirmPreference = 'None'; `$ProgressPreference = 'SilentlyContinue'; $script:Scaffold`n$code`nGet-ProvisioningServer | Stop-ProvisioningServer -Confirm:`$false")
            $async = $ps.BeginInvoke()
            if (-not $async.AsyncWaitHandle.WaitOne([TimeSpan]::FromSeconds(180))) { $ps.Stop(); return "did not finish within 180 s" }
            try { [void]$ps.EndInvoke($async) } catch { return "terminating error: $($_.Exception.InnerException.Message ?? $_.Exception.Message)" }
            if ($ps.InvocationStateInfo.State -eq 'Failed') { return "failed: $($ps.InvocationStateInfo.Reason.Message)" }
            $errors = @($ps.Streams.Error)
            if ($errors.Count) { return "error: $($errors[0].FullyQualifiedErrorId): $($errors[0].Exception.Message)" }
            return $null
        }
        finally {
            $ps.Dispose(); $rs.Dispose()
            Get-ProvisioningServer | Where-Object DataPath -Like "$dir*" | Stop-ProvisioningServer -Confirm:$false
        }
    }
}

AfterAll {
    Get-TpmSimulator | Where-Object Name -NE 'help-examples' | Stop-TpmSimulator -Confirm:$false
    $script:Sim | Stop-TpmSimulator -Confirm:$false
    foreach ($k in $script:Saved.Keys) { Set-Item "env:$k" $script:Saved[$k] }
    Remove-Item $script:Work -Recurse -Force -ErrorAction Ignore
}

Describe 'Help examples run as written' {
    It '<Id>' -ForEach $script:Examples {
        if ($NotUnattended) { Set-ItResult -Skipped -Because "marked not-unattended in the help: $NotUnattended"; return }
        if ($Pending) { Set-ItResult -Skipped -Because "pending: $Pending"; return }
        $problem = Invoke-Example $Id $Code
        $problem | Should -BeNullOrEmpty -Because "$Id should run as written:`n$Code"
    }
}
