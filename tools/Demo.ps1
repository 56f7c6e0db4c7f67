<#
.SYNOPSIS
    Walks the chain that exists today on a software TPM and an embedded SQLite store, and prints what happened.
.DESCRIPTION
    Run by `build.ps1 Demo` in a fresh pwsh against the built module. Everything it starts (swtpm, the server)
    listens on 127.0.0.1 only and is stopped at the end; its data lives in a temporary folder that is removed.
#>
param(
    [Parameter(Mandatory)][string] $ModulePath,
    [string] $DataPath = (Join-Path ([IO.Path]::GetTempPath()) ("tpmprov-demo-" + [guid]::NewGuid().ToString('n').Substring(0, 8))),
    [switch] $KeepData
)
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest
Import-Module (Resolve-Path -LiteralPath $ModulePath).Path -Force

$script:Step = 0
function Write-DemoStep([string] $Title) { $script:Step++; Write-Host ''; Write-Host ("[{0}] {1}" -f $script:Step, $Title) -ForegroundColor Cyan }
function Write-Fact([string] $Label, $Value) { Write-Host ("    {0,-30} {1}" -f $Label, $Value) }
function Write-Check([string] $Label, [bool] $Ok) {
    $mark = if ($Ok) { 'PASS' } else { 'FAIL' }
    Write-Host ("    {0,-30} {1}" -f $Label, $mark) -ForegroundColor ($Ok ? 'Green' : 'Red')
    if (-not $Ok) { throw "Demo check failed: $Label" }
}

$sim = $null; $server = $null
try {
    Write-DemoStep 'Start a software TPM (swtpm) with EK certificates from a local "manufacturer" CA'
    $sim = Start-TpmSimulator -Name 'demo-device'
    Write-Fact 'connection' $sim.ConnectionString
    Write-Fact 'swtpm pid' $sim.Pid
    $info = $sim | Get-TpmInfo
    Write-Fact 'manufacturer' "$($info.Manufacturer) '$($info.VendorString.Trim())' firmware $($info.FirmwareVersionString)"
    Write-Fact 'PCR banks' (($info.ActivePcrBanks | ForEach-Object { "$_".ToLowerInvariant() }) -join ', ')

    Write-DemoStep 'Read the endorsement key and check its certificate chains to the manufacturer root'
    $ek = $sim | Get-TpmEndorsementKey -Kind Rsa2048
    Write-Fact 'EK' "$($ek.Algorithm), Name $($ek.Name.Substring(0, 20))..."
    Write-Fact 'EK certificate issuer' $ek.Issuer
    $chain = [System.Security.Cryptography.X509Certificates.X509Chain]::new()
    $chain.ChainPolicy.TrustMode = 'CustomRootTrust'
    $chain.ChainPolicy.RevocationMode = 'NoCheck'
    $chain.ChainPolicy.VerificationFlags = 'IgnoreWrongUsage'
    [void]$chain.ChainPolicy.CustomTrustStore.Add([System.Security.Cryptography.X509Certificates.X509Certificate2]::CreateFromPem((Get-Content -Raw $sim.ManufacturerRootPath)))
    [void]$chain.ChainPolicy.ExtraStore.Add([System.Security.Cryptography.X509Certificates.X509Certificate2]::CreateFromPem((Get-Content -Raw $sim.ManufacturerIssuerPath)))
    $chained = $chain.Build($ek.Certificate)
    Write-Check 'EK cert carries the EK' ([bool]$ek.CertificateMatchesKey)
    Write-Check 'EK cert chains to root' $chained

    Write-DemoStep 'Create a restricted signing attestation key (AK) and persist it in the TPM'
    $ak = $sim | New-TpmAttestationKey -Algorithm Rsa -Confirm:$false
    Write-Fact 'AK' "$($ak.Algorithm) at $($ak.HandleHex)"
    Write-Fact 'AK Name' $ak.Name

    Write-DemoStep 'Quote PCRs over a verifier nonce (Keylime''s /quotes/integrity evidence) and verify it'
    $nonce = -join ((48..57) + (97..122) | Get-Random -Count 20 | ForEach-Object { [char]$_ })
    $quote = $ak | Get-IntegrityQuote -Nonce $nonce -PcrMask '0x408001'
    Write-Fact 'nonce' $nonce
    Write-Fact 'PCRs quoted' $quote.PcrSelection
    Write-Fact 'Keylime quote string' ("{0}... ({1} chars)" -f $quote.KeylimeQuote.Substring(0, 40), $quote.KeylimeQuote.Length)
    $ok = $quote | Test-TpmQuote -AttestationKey $ak
    Write-Check 'quote verifies' $ok.IsValid
    $replay = $quote | Test-TpmQuote -AttestationKey $ak -Nonce 'a-replayed-nonce'
    Write-Check 'replay with old nonce refused' (-not $replay.IsValid)
    Write-Fact 'refused because' ($replay.FailedChecks -join ', ')
    $tampered = [byte[]]$quote.Attest.Clone(); $i = $tampered.Length - 5; $tampered[$i] = $tampered[$i] -bxor 1
    $bad = Test-TpmQuote -Attest $tampered -Signature $quote.Signature -PcrBlob $quote.PcrBlob -AttestationKey $ak -Nonce $nonce
    Write-Check 'tampered quote refused' (-not $bad.IsValid)
    Write-Fact 'refused because' ($bad.FailedChecks -join ', ')

    Write-DemoStep 'Start the provisioning server in this session (HTTPS, own CA, SQLite store)'
    $server = Start-ProvisioningServer -Port 0 -DataPath $DataPath
    Write-Fact 'listening on' ($server.Urls -join ', ')
    Write-Fact 'roles' $server.Roles
    $health = Invoke-RestMethod "$($server.Urls[0])/healthz" -SkipCertificateCheck
    Write-Check 'GET /healthz' ($health.status -eq 'ok')
    Write-Fact 'store' "$($health.store.provider) schema v$($health.store.schema)"
}
finally {
    Write-DemoStep 'Stop everything and show the audit trail'
    if ($server) {
        $server | Stop-ProvisioningServer -Confirm:$false
        Get-ProvisioningAuditLog -DataPath $DataPath | Select-Object -First 5 | Format-Table -AutoSize | Out-String | Write-Host
    }
    if ($sim) { $sim | Stop-TpmSimulator -Confirm:$false }
    if (-not $KeepData) { Remove-Item $DataPath -Recurse -Force -ErrorAction Ignore }
}
Write-Host ''
Write-Host 'Demo complete.' -ForegroundColor Green
