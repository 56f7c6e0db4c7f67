#!/usr/bin/env pwsh
<#
.SYNOPSIS
    Builds, tests, documents, demonstrates and benchmarks TpmProvisioning.
.DESCRIPTION
    Tasks (each idempotent, each says what it does):
      Bootstrap  install what is missing: Debian packages swtpm, swtpm-tools, tpm2-tools, softhsm2, postgresql and the Keylime
                 peer's python3-* packages (as root), Pester from NuGet
      Build      Release build; assembles out/TpmProvisioning/<version>/ with manifest, format files, assemblies and MAML help
      Docs       generate MAML help from docs/cmdlets into the built module
      Test       Bootstrap + Build, then xunit and Pester; ends with one line "N passed, N failed"
      Demo       Bootstrap + Build, then walks the chain that exists on a software TPM and SQLite, printing what happens
      Bench      Release benchmarks (BenchmarkDotNet), numbers printed and saved under out/bench
.EXAMPLE
    dotnet tool restore && dotnet pwsh ./build.ps1 Test
#>
[CmdletBinding()]
param(
    [Parameter(Position = 0)]
    [ValidateSet('Bootstrap', 'Build', 'Docs', 'Test', 'Demo', 'Bench', 'Clean')]
    [string[]] $Task = @('Build'),
    [string] $Configuration = 'Release',
    # Only run xunit tests matching this filter (dotnet test --filter syntax); Pester still runs.
    [string] $TestFilter,
    # Skip the xunit or the Pester half of Test.
    [switch] $SkipXunit,
    [switch] $SkipPester
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version 3.0
$Root = $PSScriptRoot
$Manifest = Import-PowerShellDataFile (Join-Path $Root 'module/TpmProvisioning.psd1')
$Version = $Manifest.ModuleVersion
$ModuleOut = Join-Path $Root "out/TpmProvisioning/$Version"
$PesterVersion = '6.2.0'
$env:DOTNET_NOLOGO = '1'
$env:DOTNET_CLI_TELEMETRY_OPTOUT = '1'

function Write-Step([string] $Message) { Write-Host "==> $Message" -ForegroundColor Cyan }

function Invoke-Native {
    param([Parameter(Mandatory)][string] $File, [string[]] $Arguments = @(), [switch] $AllowFailure)
    & $File @Arguments | Out-Host
    $code = $LASTEXITCODE
    if ($code -ne 0 -and -not $AllowFailure) { throw "$File $($Arguments -join ' ') failed with exit code $code" }
    return $code
}

# The running pwsh as a command line: pwsh itself, or 'dotnet <PSHOME>/pwsh.dll' under the .NET tool.
function Get-PwshCommand {
    $exe = [Environment]::ProcessPath
    if ([IO.Path]::GetFileNameWithoutExtension($exe) -eq 'pwsh') { return , @($exe) }
    return , @($exe, (Join-Path $PSHOME 'pwsh.dll'))
}

function Invoke-Pwsh([string[]] $Arguments) {
    $cmd = Get-PwshCommand
    $exe = $cmd[0]
    $prefix = @($cmd | Select-Object -Skip 1)
    & $exe @prefix @Arguments
}

function Get-NuGetPackageRoot {
    if ($env:NUGET_PACKAGES) { return $env:NUGET_PACKAGES }
    return Join-Path ([Environment]::GetFolderPath('UserProfile')) '.nuget/packages'
}

function Get-PesterPath { Join-Path (Get-NuGetPackageRoot) "pester/$PesterVersion/tools/Pester.psd1" }

function Invoke-Bootstrap {
    Write-Step 'Bootstrap: checking prerequisites'
    if ($IsLinux) {
        $wanted = [ordered]@{ swtpm = 'swtpm'; swtpm_setup = 'swtpm-tools'; tpm2_quote = 'tpm2-tools'; 'softhsm2-util' = 'softhsm2'; pg_ctlcluster = 'postgresql'; chromium = 'chromium' }
        $missing = @($wanted.Keys | Where-Object { -not (Get-Command $_ -ErrorAction Ignore) -and -not (Test-Path "/usr/bin/$_") -and -not (Test-Path "/usr/sbin/$_") } | ForEach-Object { $wanted[$_] })
        if ($missing.Count -gt 0) {
            $isRoot = (& id -u) -eq '0'
            if ($isRoot) {
                Write-Step "Bootstrap: installing Debian packages: $($missing -join ', ')"
                $env:DEBIAN_FRONTEND = 'noninteractive'
                Invoke-Native apt-get @('update', '-qq') | Out-Null
                Invoke-Native apt-get (@('install', '-y', '-qq', '--no-install-recommends') + $missing) | Out-Null
            }
            else {
                Write-Warning "Missing packages $($missing -join ', ') and not root: install them with apt-get, or TPM tests will fail."
            }
        }
        else { Write-Host '    Debian packages present: swtpm, swtpm-tools, tpm2-tools, softhsm2, postgresql, chromium' }
        Install-KeylimePeerPackages
    }
    else {
        Write-Warning 'swtpm and tpm2-tools are installed automatically only on Debian/Ubuntu; TPM tests need them.'
    }
    if (-not (Test-Path (Get-PesterPath))) {
        Write-Step "Bootstrap: downloading Pester $PesterVersion from NuGet"
        Invoke-Native dotnet @('restore', (Join-Path $Root 'tools/packages.csproj'), '--verbosity', 'quiet') | Out-Null
    }
    Write-Host "    Pester $PesterVersion at $(Get-PesterPath)"
}

# The Keylime peer (../shared/peers/keylime, Keylime 7.14.3 run by the xunit KeylimePeerTests) needs Debian's python packages;
# without them (not root, or apt fails) those tests skip and say why.
function Install-KeylimePeerPackages {
    $python = @('python3-cryptography', 'python3-tornado', 'python3-zmq', 'python3-yaml', 'python3-requests', 'python3-sqlalchemy',
        'python3-alembic', 'python3-packaging', 'python3-psutil', 'python3-lark', 'python3-pyasn1', 'python3-pyasn1-modules',
        'python3-jinja2', 'python3-gpg', 'python3-typing-extensions', 'python3-jsonschema')
    $missing = @($python | Where-Object { (& dpkg-query -W -f '${Status}' $_ 2>$null) -notmatch 'install ok installed' })
    if ($missing.Count -eq 0) { Write-Host '    Keylime peer python packages present'; return }
    if ((& id -u) -ne '0') { Write-Warning "Keylime peer: missing $($missing -join ', ') and not root: the Keylime peer tests will skip."; return }
    Write-Step "Bootstrap: installing Keylime peer python packages: $($missing -join ', ')"
    $env:DEBIAN_FRONTEND = 'noninteractive'
    $code = Invoke-Native apt-get (@('install', '-y', '-qq', '--no-install-recommends') + $missing) -AllowFailure
    if ($code -ne 0) {
        Invoke-Native apt-get @('update', '-qq') -AllowFailure | Out-Null
        $code = Invoke-Native apt-get (@('install', '-y', '-qq', '--no-install-recommends') + $missing) -AllowFailure
    }
    if ($code -ne 0) { Write-Warning "Keylime peer: apt-get could not install $($missing -join ', '): the Keylime peer tests will skip." }
}

function Invoke-Build {
    Write-Step "Build: dotnet build ($Configuration)"
    Invoke-Native dotnet @('build', (Join-Path $Root 'TpmProvisioning.sln'), '-c', $Configuration, '--nologo', '-v', 'quiet', '-clp:ErrorsOnly') | Out-Null
    Write-Step "Build: assembling module at out/TpmProvisioning/$Version"
    if (Test-Path $ModuleOut) { Remove-Item $ModuleOut -Recurse -Force }
    New-Item -ItemType Directory -Path $ModuleOut -Force | Out-Null
    Invoke-Native dotnet @('publish', (Join-Path $Root 'src/TpmProvisioning.Cmdlets/TpmProvisioning.Cmdlets.csproj'), '-c', $Configuration, '--no-build', '-o', $ModuleOut, '--nologo', '-v', 'quiet') | Out-Null
    Get-ChildItem $ModuleOut -Filter '*.pdb' | Remove-Item
    Copy-Item (Join-Path $Root 'module/*') $ModuleOut
    Invoke-Docs
    Write-Host "    module: $ModuleOut"
}

function Invoke-Docs {
    $generator = Join-Path $Root 'tools/Build-Help.ps1'
    if (-not (Test-Path $generator)) { Write-Warning "tools/Build-Help.ps1 is missing: no MAML help generated."; return }
    if (-not (Test-Path $ModuleOut)) { throw 'Build the module first (./build.ps1 Build).' }
    Write-Step 'Docs: generating MAML help from docs/cmdlets'
    $null = & $generator -DocsPath (Join-Path $Root 'docs') -OutputPath $ModuleOut -ModuleName 'TpmProvisioning'
}

function Get-TrxCounts([string] $Path) {
    [xml] $trx = Get-Content -Raw $Path
    $c = $trx.TestRun.ResultSummary.Counters
    [pscustomobject]@{ Passed = [int]$c.passed; Failed = [int]$c.failed + [int]$c.error + [int]$c.timeout + [int]$c.aborted }
}

function Invoke-Test {
    Invoke-Bootstrap
    Invoke-Build
    $results = Join-Path $Root 'out/test-results'
    if (Test-Path $results) { Remove-Item $results -Recurse -Force }
    New-Item -ItemType Directory -Path $results -Force | Out-Null
    $passed = 0; $failed = 0
    if (-not $SkipXunit) {
        foreach ($proj in Get-ChildItem (Join-Path $Root 'tests') -Recurse -Filter '*.Tests.csproj') {
            Write-Step "Test: xunit $($proj.BaseName)"
            $trx = "$($proj.BaseName).trx"
            $testArgs = @('test', $proj.FullName, '-c', $Configuration, '--no-build', '--nologo', '--logger', "trx;LogFileName=$trx", '--logger', 'console;verbosity=minimal', '--results-directory', $results)
            if ($TestFilter) { $testArgs += @('--filter', $TestFilter) }
            $code = Invoke-Native dotnet $testArgs -AllowFailure
            $trxPath = Join-Path $results $trx
            if (Test-Path $trxPath) {
                $c = Get-TrxCounts $trxPath
                $passed += $c.Passed; $failed += $c.Failed
                if ($code -ne 0 -and $c.Failed -eq 0) { Write-Warning "$($proj.BaseName): dotnet test exited $code with no failed test recorded; counting one failure."; $failed += 1 }
            }
            elseif ($code -ne 0) { Write-Warning "$($proj.BaseName): no results (exit $code); counting one failure."; $failed += 1 }
        }
    }
    if (-not $SkipPester) {
        Write-Step 'Test: Pester (fresh pwsh, built module)'
        $pesterJson = Join-Path $results 'pester.json'
        $runner = Join-Path $Root 'tests/Pester/Invoke-PesterSuite.ps1'
        Invoke-Pwsh @('-NoProfile', '-NonInteractive', '-File', $runner, '-PesterPath', (Get-PesterPath), '-ModulePath', (Join-Path $ModuleOut 'TpmProvisioning.psd1'), '-TestPath', (Join-Path $Root 'tests/Pester'), '-ResultPath', $pesterJson)
        if (Test-Path $pesterJson) {
            $p = Get-Content -Raw $pesterJson | ConvertFrom-Json
            $passed += [int]$p.Passed; $failed += [int]$p.Failed
        }
        else { Write-Warning 'Pester produced no result; counting one failure.'; $failed += 1 }
    }
    Write-Host ''
    Write-Host "$passed passed, $failed failed"
    if ($failed -gt 0) { exit 1 }
}

function Invoke-Demo {
    Invoke-Bootstrap
    Invoke-Build
    Write-Step 'Demo: running tools/Demo.ps1 in a fresh pwsh'
    Invoke-Pwsh @('-NoProfile', '-NonInteractive', '-File', (Join-Path $Root 'tools/Demo.ps1'), '-ModulePath', (Join-Path $ModuleOut 'TpmProvisioning.psd1'))
    if ($LASTEXITCODE -ne 0) { throw "Demo failed (exit $LASTEXITCODE)" }
}

function Invoke-Bench {
    Invoke-Bootstrap
    Write-Step 'Bench: BenchmarkDotNet (Release)'
    $out = Join-Path $Root 'out/bench'
    New-Item -ItemType Directory -Path $out -Force | Out-Null
    $project = Join-Path $Root 'bench/TpmProvisioning.Bench/TpmProvisioning.Bench.csproj'
    Invoke-Native dotnet @('build', $project, '-c', 'Release', '--nologo', '-v', 'quiet', '-clp:ErrorsOnly') | Out-Null
    Invoke-Native dotnet @('run', '-c', 'Release', '--no-build', '--project', $project, '--', '--artifacts', $out) | Out-Null
    Write-Step 'Bench: provisioning throughput over HTTPS (load test)'
    Invoke-Native dotnet @('run', '-c', 'Release', '--no-build', '--project', $project, '--', '--artifacts', $out, '--load', 'provisioning', '--duration', '15') | Out-Null
    Write-Step 'Bench: the verifier watching a fleet of 2000 agents over HTTPS (load test)'
    Invoke-Native dotnet @('run', '-c', 'Release', '--no-build', '--project', $project, '--', '--artifacts', $out, '--load', 'verifier', '--agents', '2000', '--duration', '20') | Out-Null
    Write-Host "    summaries: $(Join-Path $out '*.md')"
}

foreach ($t in $Task) {
    switch ($t) {
        'Bootstrap' { Invoke-Bootstrap }
        'Build' { Invoke-Build }
        'Docs' { Invoke-Docs }
        'Test' { Invoke-Test }
        'Demo' { Invoke-Demo }
        'Bench' { Invoke-Bench }
        'Clean' { Write-Step 'Clean: removing out/'; Remove-Item (Join-Path $Root 'out') -Recurse -Force -ErrorAction Ignore }
    }
}
