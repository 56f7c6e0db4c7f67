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

$sim = $null; $server = $null; $agent = $null; $verifier = $null; $kms = $null; $kmsTpm = $null
try {
    Write-DemoStep 'Start a software TPM (swtpm) with EK certificates from a local "manufacturer" CA'
    $sim = Start-TpmSimulator -Name 'demo-device'
    Write-Fact 'connection' $sim.ConnectionString
    Write-Fact 'swtpm pid' $sim.Pid
    $info = $sim | Get-TpmInfo
    Write-Fact 'manufacturer' "$($info.Manufacturer) '$($info.VendorString.Trim())' firmware $($info.FirmwareVersionString)"
    Write-Fact 'PCR banks' (($info.ActivePcrBanks | ForEach-Object { "$_".ToLowerInvariant() }) -join ', ')

    Write-DemoStep 'Read the endorsement key and check its certificate chains to the manufacturer root'
    $ek = $sim | Get-TpmEndorsementKey -EkKind Rsa2048
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

    Write-DemoStep 'Start the provisioning and Keylime registrar server in this session (HTTPS, own CA, SQLite store)'
    $server = Start-ProvisioningServer -Port 0 -DataPath $DataPath -Role Provisioning, Registrar, Station -StationHookTimeout '00:01:00'
    Write-Fact 'listening on' ($server.Urls -join ', ')
    $health = Invoke-RestMethod "$($server.Urls[0])/healthz" -SkipCertificateCheck
    Write-Check 'GET /healthz' ($health.status -eq 'ok')
    Write-Fact 'store' "$($health.store.provider) schema v$($health.store.schema)"

    Write-DemoStep 'Factory set-up: trust the TPM manufacturer, issue the plant an API key, export the TPM CA'
    $server | Add-TpmManufacturerCa -Path $sim.ManufacturerRootPath -Confirm:$false | Out-Null
    $server | Add-TpmManufacturerCa -Path $sim.ManufacturerIssuerPath -Intermediate -Confirm:$false | Out-Null
    Get-TpmManufacturerCa -DataPath $DataPath | ForEach-Object { Write-Fact "trusted $($_.Kind.ToString().ToLowerInvariant())" $_.Subject }
    $key = $server | New-ProvisioningApiKey -Name 'plant-1' -Vendor 'Contoso' -RatePerMinute 600 -Confirm:$false
    Write-Fact 'API key id' "$($key.KeyId) (secret shown once, stored hashed)"
    $tpmCaPem = Join-Path $DataPath 'tpm-ca.pem'
    $server | Export-TpmCa -Path $tpmCaPem -Confirm:$false | Out-Null
    $tpmCa = [System.Security.Cryptography.X509Certificates.X509Certificate2]::CreateFromPem((Get-Content -Raw $tpmCaPem))
    Write-Fact 'TPM CA' $tpmCa.Subject

    Write-DemoStep 'Station (spec 003): an operator token and a certificate-issued hook script that writes to the device log'
    $stationToken = New-StationToken -DataPath $DataPath -Name 'demo-operator' -Confirm:$false
    $station = @{ Server = $server.Urls[0]; Token = $stationToken.Token; CaCertificate = $server.CaCertificatePath }
    $hook = Set-ProvisioningScript @station -Name 'tpm-provisioner-certificate-issued' -Enable -Confirm:$false -Content @'
"label queued for $SERIAL ($($Device.Vendor)), AK certificate $AK_CERT_SERIAL"
'@
    Write-Fact 'token' "$($stationToken.TokenId) (secret shown once, stored hashed)"
    Write-Fact 'hook' "$($hook.Filename) enabled=$($hook.Enabled) sha256 $($hook.Sha256.Substring(0, 16))..."

    Write-DemoStep 'Station: the OS image this family gets (streamed upload, SHA-256, assignment), its options and signing keys'
    $bearer = @{ Authorization = 'Bearer ' + [System.Net.NetworkCredential]::new('', $stationToken.Token).Password }
    $imageFile = Join-Path $DataPath 'demo-os.img'
    $imageBytes = [byte[]]::new(16MB); [System.Random]::new(2026).NextBytes($imageBytes); [IO.File]::WriteAllBytes($imageFile, $imageBytes)
    $image = Add-ProvisioningImage @station -Path $imageFile -Confirm:$false
    $imageHash = Get-ProvisioningImageHash @station -Name $image.Name
    Write-Fact 'image' "$($image.Name), $($image.Size) bytes, SHA-256 $($imageHash.Sha256.Substring(0, 16))..."
    Write-Check 'image SHA-256 = Get-FileHash' ($imageHash.Sha256 -eq (Get-FileHash -Algorithm SHA256 $imageFile).Hash.ToLowerInvariant())
    $assignment = Invoke-RestMethod -Method Post "$($server.Urls[0])/images/assign" -Headers $bearer -SkipCertificateCheck -ContentType 'application/json' `
        -Body (@{ image = $image.Name; vendor = 'Contoso' } | ConvertTo-Json)
    Write-Fact 'assigned to' $assignment.family
    $traversal = Invoke-WebRequest "$($server.Urls[0])/get-image-sha256?name=..%2F..%2Fetc%2Fpasswd" -Headers $bearer -SkipCertificateCheck -SkipHttpErrorCheck
    Write-Check 'image name outside the folder refused' ($traversal.StatusCode -eq 400)
    $timeout = Set-ProvisioningOption @station -Name STATION_HOOK_TIMEOUT_SECONDS -Value 120 -Confirm:$false
    Write-Fact 'option' "$($timeout.Name): $($timeout.OldValue) -> $($timeout.NewValue) ($($timeout.Applied))"
    $badOption = Test-ProvisioningOption @station -Name STATION_HOOK_TIMEOUT_SECONDS -Value 0
    Write-Check 'out-of-range option refused' (-not $badOption.Valid)
    Write-Fact 'rule' $badOption.Message
    Get-ProvisioningSigningKey @station | ForEach-Object { Write-Fact "signing key$(if ($_.Active) { ' (active)' })" "$($_.Label) $($_.Algorithm) $($_.Location) $($_.Fingerprint.Substring(0, 16))..." }

    Write-DemoStep 'Provision the device: EK-checked AK certificate, delivered encrypted to this TPM (POST /api/tpm/tpm/provision)'
    $device = New-TpmProvisioning -Server $server.Urls[0] -ApiKey $key.Key -SkipCertificateCheck -TpmCaCertificate $tpmCaPem `
        -Tpm $sim.ConnectionString -DeviceName 'demo-sensor-01' -Serial 'SN-DEMO-0001' -Vendor 'Contoso' -Version '1.0' -Confirm:$false
    Write-Fact 'AK handle' $device.AkHandle
    Write-Fact 'AK certificate' $device.AkCertificate.Subject
    $chain2 = [System.Security.Cryptography.X509Certificates.X509Chain]::new()
    $chain2.ChainPolicy.TrustMode = 'CustomRootTrust'; $chain2.ChainPolicy.RevocationMode = 'NoCheck'
    [void]$chain2.ChainPolicy.CustomTrustStore.Add($tpmCa)
    Write-Check 'AK cert chains to TPM CA' $chain2.Build($device.AkCertificate)
    $record = Get-ManufacturingRecord -DataPath $DataPath -Serial 'SN-DEMO-0001'
    Write-Check 'manufacturing record stored' ($null -ne $record)
    $stationRecord = @(Invoke-RestMethod "$($server.Urls[0])/api/v2/manufacturing?limit=1" -Headers $bearer -SkipCertificateCheck)[0]
    Write-Check 'record names the assigned image' ($stationRecord.os_image_filename -eq $image.Name -and $stationRecord.os_image_sha256 -eq $imageHash.Sha256)
    Write-Fact 'record' "$($record.Serial) $($record.Vendor) EK $($record.EkFingerprint.Substring(0, 16))... AK cert $($record.AkCertificateSerial)"
    $wrong = ConvertTo-SecureString 'tpk_0000000000000000_not-a-key' -AsPlainText -Force
    New-TpmProvisioning -Server $server.Urls[0] -ApiKey $wrong -SkipCertificateCheck -Tpm $sim.ConnectionString -DeviceName 'demo-sensor-01' `
        -Serial 'SN-DEMO-0001' -Vendor 'Contoso' -Version '1.0' -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable refused | Out-Null
    Write-Check 'unknown API key refused' ($refused.Count -gt 0 -and $refused[0].FullyQualifiedErrorId -like 'CredentialsRefused*')

    Write-DemoStep 'Station: the device''s state history, its logs with the hook''s output, its public key, its QR label verified'
    $stationDevice = Get-ProvisioningDevice @station -Serial 'SN-DEMO-0001'
    Write-Fact 'state' $stationDevice.State
    Write-Fact 'history' (($stationDevice.History | ForEach-Object State) -join ' > ')
    Write-Check 'device PROVISIONER-FINISHED' ($stationDevice.State -eq 'PROVISIONER-FINISHED')
    $deviceLog = Get-ProvisioningDeviceLog @station -Serial 'SN-DEMO-0001'
    $deviceLog | Select-Object -Last 5 | ForEach-Object { Write-Host ('    {0:HH:mm:ss.fff} {1,-11} {2}' -f $_.Time.ToLocalTime(), $_.Log, ($_.Line.Length -gt 90 ? $_.Line.Substring(0, 90) + '...' : $_.Line)) }
    Write-Check 'hook output in the device log' (@($deviceLog.Line -like '*label queued for SN-DEMO-0001*').Count -eq 1)
    $akPem = Invoke-RestMethod "$($server.Urls[0])/devices/SN-DEMO-0001/key/public" -Headers $bearer -SkipCertificateCheck
    Write-Check 'AK public key = AK certificate key' ($akPem.Trim() -eq [System.Security.Cryptography.PemEncoding]::WriteString('PUBLIC KEY', $device.AkCertificate.PublicKey.ExportSubjectPublicKeyInfo()).Trim())
    $private = Invoke-WebRequest "$($server.Urls[0])/devices/SN-DEMO-0001/key/private" -Headers $bearer -SkipCertificateCheck -SkipHttpErrorCheck
    Write-Check 'private key route: 403' ($private.StatusCode -eq 403 -and ($private.Content | ConvertFrom-Json).error.code -eq 'PRIVATE_KEY_API_DISABLED')
    $label = Get-DeviceLabel -DataPath $DataPath -Serial 'SN-DEMO-0001' -Path (Join-Path $DataPath 'SN-DEMO-0001-label.png') -Confirm:$false
    Write-Fact 'label' "$($label.Path) ($($label.Bytes) bytes): $($label.Payload.Substring(0, 40))..."
    $scan = $label | Test-DeviceQrCode @station
    Write-Check 'QR label verified by the station' ($scan.Exists -and $scan.Serial -eq 'SN-DEMO-0001')
    $forged = Test-DeviceQrCode @station -Text ($label.Payload -replace 'ek=\w+', ('ek=' + '0' * 64))
    Write-Check 'forged label refused' (-not $forged.Exists)

    Write-DemoStep 'Quote PCRs with the provisioned AK over a verifier nonce (Keylime''s /quotes/integrity evidence) and verify it'
    $nonce = -join ((48..57) + (97..122) | Get-Random -Count 20 | ForEach-Object { [char]$_ })
    $quote = Get-IntegrityQuote -Tpm $sim.ConnectionString -AkHandle $device.AkHandle -Nonce $nonce -PcrMask '0x408001'
    Write-Fact 'nonce' $nonce
    Write-Fact 'PCRs quoted' $quote.PcrSelection
    Write-Fact 'Keylime quote string' ("{0}... ({1} chars)" -f $quote.KeylimeQuote.Substring(0, 40), $quote.KeylimeQuote.Length)
    $akFromCert = $device.AkCertificate.PublicKey.ExportSubjectPublicKeyInfo()
    $ok = $quote | Test-TpmQuote -AttestationKey $akFromCert
    Write-Check 'quote verifies (AK from cert)' $ok.IsValid
    $replay = $quote | Test-TpmQuote -AttestationKey $akFromCert -Nonce 'a-replayed-nonce'
    Write-Check 'replayed nonce refused' (-not $replay.IsValid)
    Write-Fact 'refused because' ($replay.FailedChecks -join ', ')
    $tampered = [byte[]]$quote.Attest.Clone(); $i = $tampered.Length - 5; $tampered[$i] = $tampered[$i] -bxor 1
    $bad = Test-TpmQuote -Attest $tampered -Signature $quote.Signature -PcrBlob $quote.PcrBlob -AttestationKey $akFromCert -Nonce $nonce
    Write-Check 'tampered quote refused' (-not $bad.IsValid)
    Write-Fact 'refused because' ($bad.FailedChecks -join ', ')

    Write-DemoStep 'Run the Keylime agent on the device: it registers its EK and provisioned AK with the registrar and activates'
    $agent = Start-ProvisioningServer -Name 'demo-agent' -Port 0 -DataPath (Join-Path $DataPath 'agent') -Role Agent -Tpm $sim.ConnectionString `
        -Registrar $server.Urls[0] -RegistrarCaCertificate $server.CaCertificatePath -AkHandle $device.AkHandle
    Write-Fact 'agent listening on' ($agent.Urls -join ', ')
    Write-Check 'agent registered and activated' $agent.AgentRegistered
    $tenant = $server | New-ProvisioningClientCertificate -Name 'demo-tenant' -Confirm:$false
    $registered = Get-AttestationAgent -Registrar $server.Urls[0] -CaCertificate $server.CaCertificatePath -ClientCertificate $tenant
    Write-Fact 'registrar lists (mTLS)' ("{0}, regcount {1}" -f $registered.AgentId, $registered.RegCount)
    $registeredAk = [Convert]::ToBase64String(([TpmProvisioning.Tpm.TpmPublic]::ParseTpm2B([Convert]::FromBase64String($registered.AikTpm))).ToSubjectPublicKeyInfo())
    Write-Check 'registered AK = AK certificate key' ($registeredAk -eq [Convert]::ToBase64String($akFromCert))
    # The station matches the agent to the device by its EK certificate and moves it to REGISTERED (its watch runs every 5 s).
    $deadline = (Get-Date).AddSeconds(60)
    do { Start-Sleep -Milliseconds 500; $stationDevice = Get-ProvisioningDevice @station -Serial 'SN-DEMO-0001' } while ($stationDevice.State -ne 'REGISTERED' -and (Get-Date) -lt $deadline)
    Write-Check 'station: device REGISTERED' ($stationDevice.State -eq 'REGISTERED')
    Write-Fact 'station provisioner log' (Get-ProvisioningDeviceLog @station -Serial 'SN-DEMO-0001' -Type Provisioner | Select-Object -Last 1).Line

    Write-DemoStep 'Attest as a Keylime verifier would: GET /v2.1/quotes/integrity from the agent over mutual TLS, verify with the registered AK'
    $verifierCert = $agent | New-ProvisioningClientCertificate -Name 'demo-verifier' -Confirm:$false
    $nonce2 = -join ((48..57) + (65..90) | Get-Random -Count 20 | ForEach-Object { [char]$_ })
    $answer = Invoke-RestMethod "$($agent.Urls[0])/v2.1/quotes/integrity?nonce=$nonce2&mask=0x408001" -Certificate $verifierCert -SkipCertificateCheck
    Write-Fact 'agent answered' ("code {0}, {1}, hash {2}" -f $answer.code, $answer.status, $answer.results.hash_alg)
    # The agent always adds PCR 16 (the NK binding Keylime's verifier requires), so the quote covers 0, 15, 16 and 22.
    $verdict = Test-TpmQuote -KeylimeQuote $answer.results.quote -AttestationKey $registered.AikTpm -Nonce $nonce2 -PcrMask '0x418001'
    Write-Check 'agent quote verifies' $verdict.IsValid

    Write-DemoStep 'Start the Keylime verifier on its own data path, sharing the registrar''s server-components CA (exported with its key, imported)'
    $caPassword = ConvertTo-SecureString ([guid]::NewGuid().ToString()) -AsPlainText -Force
    $caPfx = Join-Path $DataPath 'components-ca.pfx'
    Export-ProvisioningCertificate -DataPath $DataPath -Kind ComponentCa -Path $caPfx -IncludePrivateKey -Password $caPassword -Confirm:$false | Out-Null
    $verifierData = Join-Path $DataPath 'verifier'
    Import-ProvisioningCertificate -DataPath $verifierData -Kind ComponentCa -Path $caPfx -Password $caPassword -Confirm:$false | Out-Null
    $verifier = Start-ProvisioningServer -Name 'demo-verifier' -Port 0 -DataPath $verifierData -Role Verifier -QuoteInterval '00:00:01' `
        -VerifierClientCertificate $verifierCert
    Write-Fact 'verifier listening on' ($verifier.Urls -join ', ')
    $tenantCommon = @{ CaCertificate = $server.CaCertificatePath; ClientCertificate = $tenant }

    Write-DemoStep 'Pin PCR 15 to its current value and hand the agent to the verifier, with a payload only an attested device can open'
    $policy = New-AttestationPolicy -Tpm $sim.ConnectionString -Pcr 15
    Write-Fact 'tpm_policy' $policy.TpmPolicy
    $payloadDir = Join-Path $DataPath 'payload'; New-Item -ItemType Directory $payloadDir | Out-Null
    Set-Content (Join-Path $payloadDir 'device-secret.txt') 'wifi-psk: correct horse battery staple'
    $payloadZip = Join-Path $DataPath 'payload.zip'
    Compress-Archive -Path (Join-Path $payloadDir 'device-secret.txt') -DestinationPath $payloadZip
    $watched = $registered | Start-AgentAttestation -Verifier $verifier.Urls[0] @tenantCommon -Policy $policy -Payload $payloadZip `
        -AgentCertificate $verifierCert -Confirm:$false
    Write-Check 'payload key derived (keys/verify)' ([bool]$watched.PayloadVerified)
    $opened = Get-ChildItem -Recurse -File -Path $agent.DataPath -Filter 'device-secret.txt' | Select-Object -First 1
    Write-Check 'payload decrypted on the device' ($null -ne $opened -and (Get-Content $opened.FullName) -match 'wifi-psk')
    $deadline = [DateTime]::UtcNow.AddSeconds(20)
    do { Start-Sleep -Milliseconds 300; $state = Get-AttestationAgent -Verifier $verifier.Urls[0] @tenantCommon } until ($state.AttestationCount -ge 3 -or [DateTime]::UtcNow -gt $deadline)
    Write-Fact 'verifier state' ("{0} ({1}), {2} quotes judged" -f $state.State, $state.StateCode, $state.AttestationCount)
    $test = Get-AttestationAgent -Verifier $verifier.Urls[0] @tenantCommon | Test-AgentAttestation @tenantCommon
    Write-Check 'Test-AgentAttestation passes' $test.Passed

    Write-DemoStep 'Start the KMS: master key sealed to the server''s own TPM, key release gated by the verifier and the registrar'
    $kmsTpm = Start-TpmSimulator -Name 'demo-kms-tpm' -Fast
    $kmsData = Join-Path $DataPath 'kms'
    Import-ProvisioningCertificate -DataPath $kmsData -Kind ComponentCa -Path $caPfx -Password $caPassword -Confirm:$false | Out-Null
    Remove-Item $caPfx
    $kmsAdmin = [pscredential]::new('kms-admin', (ConvertTo-SecureString ([guid]::NewGuid().ToString()) -AsPlainText -Force))
    New-KmsUser -DataPath $kmsData -MasterKey Tpm -MasterKeyTpm $kmsTpm.ConnectionString -Credential $kmsAdmin -Role Administrator -Confirm:$false | Out-Null
    $kms = Start-ProvisioningServer -Name 'demo-kms' -Port 0 -DataPath $kmsData -Role Kms -KmsMasterKey Tpm -KmsMasterKeyTpm $kmsTpm.ConnectionString `
        -KmsVerifier $verifier.Urls[0] -KmsRegistrar $server.Urls[0] -KmsMaxAttestationAge '00:00:30'
    Write-Fact 'KMS listening on' ($kms.Urls -join ', ')
    $kdkBytes = [byte[]]::new(32); [Security.Cryptography.RandomNumberGenerator]::Fill($kdkBytes)
    $kdk = ConvertTo-SecureString ([Convert]::ToBase64String($kdkBytes)) -AsPlainText -Force
    $provider = New-KmsProvider -Server $kms.Urls[0] -Credential $kmsAdmin -CaCertificate $server.CaCertificatePath -Name 'fleet-disks' -ProviderKeyId 'kid-2026' -KeyDerivationKey $kdk -Confirm:$false
    Write-Fact 'provider (vSphere API)' ("{0}, key id {1}" -f $provider.Name, $provider.KeyId)
    $db = Get-Content -Raw -AsByteStream (Join-Path $kmsData 'tpmprovisioning.db')
    $needle = [Text.Encoding]::ASCII.GetBytes([Convert]::ToBase64String($kdkBytes))
    Write-Check 'no derivation key in the database file' (-not ([Convert]::ToHexString($db).Contains([Convert]::ToHexString($kdkBytes))) -and -not ([Convert]::ToHexString($db).Contains([Convert]::ToHexString($needle))))

    Write-DemoStep 'The attested device asks the KMS for its disk key with its own TLS certificate'
    $deviceCert = [Security.Cryptography.X509Certificates.X509CertificateLoader]::LoadPkcs12FromFile((Join-Path $agent.DataPath 'tls/server.pfx'), $null)
    $dataKey = Get-KmsDataKey -Server $kms.Urls[0] -CaCertificate $server.CaCertificatePath -Certificate $deviceCert -AgentId $registered.AgentId -Provider 'fleet-disks' -KeyIdentifier 'disk-0' -AsPlainBytes
    Write-Check 'key released to the attested device' ($dataKey.KeyBytes.Length -eq 32)
    Write-Fact 'key fingerprint (SHA-256)' ([Convert]::ToHexString([Security.Cryptography.SHA256]::HashData($dataKey.KeyBytes)).Substring(0, 16) + '...')

    Write-DemoStep 'Tamper: extend PCR 15 with tpm2_pcrextend while the verifier watches'
    & tpm2_pcrextend -T $sim.ConnectionString ('15:sha256=' + ('ab' * 32)) 2>&1 | Out-Null
    $deadline = [DateTime]::UtcNow.AddSeconds(10)
    do { Start-Sleep -Milliseconds 200; $state = Get-AttestationAgent -Verifier $verifier.Urls[0] @tenantCommon } until ($state.StateCode -eq 9 -or [DateTime]::UtcNow -gt $deadline)
    Write-Fact 'verifier state' ("{0} ({1}), last event {2}" -f $state.State, $state.StateCode, $state.LastEventId)
    $test = Get-AttestationAgent -Verifier $verifier.Urls[0] @tenantCommon | Test-AgentAttestation @tenantCommon
    Write-Check 'attestation now fails' (-not $test.Passed)
    Write-Fact 'failure' (($test.Failures | ForEach-Object ToString) -join '; ')
    $refused = Get-KmsDataKey -Server $kms.Urls[0] -CaCertificate $server.CaCertificatePath -Certificate $deviceCert -AgentId $registered.AgentId `
        -Provider 'fleet-disks' -KeyIdentifier 'disk-0' -ErrorAction SilentlyContinue -ErrorVariable kmsError
    Write-Check 'KMS refuses the key now' ($null -eq $refused -and "$($kmsError[0].FullyQualifiedErrorId)" -like 'KmsReleaseRefused*')
    Write-Fact 'KMS said' $kmsError[0].Exception.Message
}
finally {
    Write-DemoStep 'Stop everything and show the audit trail'
    if ($kms) {
        $kms | Stop-ProvisioningServer -Confirm:$false
        Get-ProvisioningAuditLog -DataPath $kms.DataPath | Where-Object Action -Like 'kms.release' | Sort-Object Id | ForEach-Object {
            Write-Host ('    {0:HH:mm:ss}  {1,-18} {2,-26} {3,-8} {4}' -f $_.Time.ToLocalTime(), $_.Actor, $_.Action, $_.Outcome, $_.Detail)
        }
    }
    if ($kmsTpm) { $kmsTpm | Stop-TpmSimulator -Confirm:$false }
    if ($verifier) {
        $verifier | Stop-ProvisioningServer -Confirm:$false
        Get-ProvisioningAuditLog -DataPath $verifier.DataPath | Where-Object Action -Like 'verifier.*' | Sort-Object Id | ForEach-Object {
            Write-Host ('    {0:HH:mm:ss}  {1,-18} {2,-26} {3,-8} {4}' -f $_.Time.ToLocalTime(), $_.Actor, $_.Action, $_.Outcome, $_.Detail)
        }
    }
    if ($agent) { $agent | Stop-ProvisioningServer -Confirm:$false }
    if ($server) {
        $server | Stop-ProvisioningServer -Confirm:$false
        Get-ProvisioningAuditLog -DataPath $DataPath | Select-Object -First 16 | Sort-Object Id | ForEach-Object {
            $t = if ($_.Target) { $_.Target } else { '' }
            Write-Host ('    {0:HH:mm:ss}  {1,-18} {2,-26} {3,-8} {4}' -f $_.Time.ToLocalTime(), $_.Actor, $_.Action, $_.Outcome, ($t.Length -gt 40 ? $t.Substring(0, 40) + '...' : $t))
        }
    }
    if ($sim) { $sim | Stop-TpmSimulator -Confirm:$false }
    if (-not $KeepData) { Remove-Item $DataPath -Recurse -Force -ErrorAction Ignore }
}
Write-Host ''
Write-Host 'Demo complete.' -ForegroundColor Green
