#Requires -Version 7.6
# The Keylime verifier through the cmdlets: a real agent on swtpm, registrar and verifier over HTTPS with mutual TLS, in this session.
BeforeAll {
    $ModulePath = $env:TPMPROV_MODULE_PATH
    if (-not $ModulePath) { throw 'Set TPMPROV_MODULE_PATH to the built module manifest (build.ps1 Test does).' }
    Import-Module $ModulePath -Force
    $script:Work = Join-Path ([IO.Path]::GetTempPath()) ("tpmprov-pester-ver-" + [guid]::NewGuid())
    $script:Sim = Start-TpmSimulator -Name 'ver-agent' -Fast
    $script:Reg = Start-ProvisioningServer -Name 'ver-registrar' -Port 0 -DataPath (Join-Path $script:Work 'registrar') -Role Registrar
    $script:Reg | Add-TpmManufacturerCa -Path $script:Sim.ManufacturerRootPath -Confirm:$false | Out-Null
    $script:Reg | Add-TpmManufacturerCa -Path $script:Sim.ManufacturerIssuerPath -Intermediate -Confirm:$false | Out-Null
    $script:RegTenant = $script:Reg | New-ProvisioningClientCertificate -Name 'tenant-reg' -Confirm:$false
    $script:Agent = Start-ProvisioningServer -Name 'ver-agent' -Port 0 -DataPath (Join-Path $script:Work 'agent') -Role Agent -Tpm $script:Sim.ConnectionString `
        -Registrar $script:Reg.Urls[0] -RegistrarCaCertificate $script:Reg.CaCertificatePath
    # The agent trusts its fleet's components CA: the verifier presents a certificate issued by it.
    $script:AgentClient = $script:Agent | New-ProvisioningClientCertificate -Name 'verifier' -Confirm:$false
    $script:Ver = Start-ProvisioningServer -Name 'verifier' -Port 0 -DataPath (Join-Path $script:Work 'verifier') -Role Verifier `
        -QuoteInterval '00:00:00.3' -VerifierClientCertificate $script:AgentClient
    $script:VerTenant = $script:Ver | New-ProvisioningClientCertificate -Name 'tenant-ver' -Confirm:$false
    $script:RegCommon = @{ Registrar = $script:Reg.Urls[0]; CaCertificate = $script:Reg.CaCertificatePath; ClientCertificate = $script:RegTenant }
    $script:VerCommon = @{ CaCertificate = $script:Ver.CaCertificatePath; ClientCertificate = $script:VerTenant }
    $script:Zero15 = '{"15": ["' + ('0' * 64) + '"], "mask": "0x8000"}'
    $script:Bad15 = '{"15": ["' + ('a' * 64) + '"], "mask": "0x8000"}'
}

AfterAll {
    Get-ProvisioningServer | Stop-ProvisioningServer -Confirm:$false
    Get-TpmSimulator | Stop-TpmSimulator -Confirm:$false
    Remove-Item $script:Work -Recurse -Force -ErrorAction Ignore
}

Describe 'Start-AgentAttestation, Get-AttestationAgent -Verifier, Test-AgentAttestation, Stop-AgentAttestation' {
    It 'the agent registered at its registrar' {
        $script:Agent.AgentRegistered | Should -BeTrue -Because "$($script:Agent.AgentRegistrationError)"
        $script:Registered = Get-AttestationAgent @script:RegCommon
        $script:Registered | Should -HaveCount 1
    }

    It 'adds the registered agent to the verifier from the pipeline; the verifier watches it and the count rises' {
        $v = $script:Registered | Start-AgentAttestation -Verifier $script:Ver.Urls[0] @script:VerCommon -Policy $script:Zero15 -Confirm:$false
        $v.AgentId | Should -Be $script:Registered.AgentId
        $deadline = [DateTime]::UtcNow.AddSeconds(30)
        do { Start-Sleep -Milliseconds 200; $s = Get-AttestationAgent -Verifier $script:Ver.Urls[0] @script:VerCommon } until ($s.AttestationCount -ge 3 -or [DateTime]::UtcNow -gt $deadline)
        $s.AttestationCount | Should -BeGreaterOrEqual 3
        $s.State | Should -Be 'GET_QUOTE'
        $s.StateCode | Should -Be 3
        "$($s.AttestationStatus)" | Should -Be 'PASS'
        $s.Verifier | Should -Not -BeNullOrEmpty
    }

    It 'Test-AgentAttestation from the verifier: one result per agent, and -Quiet gives $true' {
        $r = Get-AttestationAgent -Verifier $script:Ver.Urls[0] @script:VerCommon | Test-AgentAttestation @script:VerCommon
        $r | Should -HaveCount 1
        $r.Passed | Should -BeTrue
        $r.State | Should -Be 'GET_QUOTE'
        $r.Source | Should -Be 'verifier'
        Test-AgentAttestation -Verifier $script:Ver.Urls[0] @script:VerCommon -Quiet | Should -BeTrue
        Get-AttestationAgent -Verifier $script:Ver.Urls[0] @script:VerCommon | Test-AgentAttestation @script:VerCommon | Where-Object { -not $_.Passed } | Should -BeNullOrEmpty
    }

    It 'Test-AgentAttestation fans out with -ThrottleLimit and answers in input order with Row and one set of state names' {
        $ids = @('00000000-0000-0000-0000-00000000000a', $script:Registered.AgentId, '00000000-0000-0000-0000-00000000000b')
        $r = @(Test-AgentAttestation -Verifier $script:Ver.Urls[0] @script:VerCommon -AgentId $ids -ThrottleLimit 3 -ErrorAction SilentlyContinue -ErrorVariable e)
        $r.AgentId | Should -Be $ids
        $r.Row | Should -Be @(1, 2, 3)
        $r.State | Should -Be @('NOT_WATCHED', 'GET_QUOTE', 'NOT_WATCHED')
        $r[0].FailureSummary | Should -Match '^verifier\.unknown_agent: '
        @($e).Count | Should -Be 2
        $csv = $r | ConvertTo-Csv | Out-String
        $csv | Should -Not -Match 'System\.'
        $csv | Should -Match 'verifier\.unknown_agent'
    }

    It 'Test-AgentAttestation directly: a fresh quote judged here passes the right policy and names PCR 15 under a wrong one' {
        $ok = $script:Registered | Test-AgentAttestation -ClientCertificate $script:AgentClient -Policy $script:Zero15
        $ok.Passed | Should -BeTrue -Because (($ok.Failures | ForEach-Object ToString) -join '; ')
        $ok.Source | Should -Be 'agent'
        $bad = $script:Registered | Test-AgentAttestation -ClientCertificate $script:AgentClient -Policy $script:Bad15
        $bad.Passed | Should -BeFalse
        $bad.Failures.Pcr | Should -Contain 15
        $bad.Failures.EventId | Should -Contain 'pcr_validation.invalid_pcr_15'
        $script:Registered | Test-AgentAttestation -ClientCertificate $script:AgentClient -Policy $script:Bad15 -Quiet | Should -BeFalse
    }

    It 'an unreachable agent gives Passed $false, State FAILED and an AgentUnreachable error' {
        $l = [Net.Sockets.TcpListener]::new([Net.IPAddress]::Loopback, 0); $l.Start(); $dead = $l.LocalEndpoint.Port; $l.Stop()
        $r = $script:Registered | Test-AgentAttestation -Port $dead -ClientCertificate $script:AgentClient -ErrorAction SilentlyContinue -ErrorVariable e
        $r.Passed | Should -BeFalse
        $r.State | Should -Be 'FAILED'
        $e[0].FullyQualifiedErrorId | Should -BeLike 'AgentUnreachable,*'
    }

    It 'refuses a second add of the same agent (409) and a malformed policy (400), changing nothing' {
        $script:Registered | Start-AgentAttestation -Verifier $script:Ver.Urls[0] @script:VerCommon -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -BeLike 'VerifierRefused409,*'
        $other = [pscustomobject]@{ AgentId = [guid]::NewGuid().ToString(); Ip = '127.0.0.1'; Port = 9; AikTpm = $script:Registered.AikTpm; MtlsCertificate = $script:Registered.MtlsCertificate }
        $other | Start-AgentAttestation -Verifier $script:Ver.Urls[0] @script:VerCommon -Policy '{"15": ["xyz"]}' -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e2 | Should -BeNullOrEmpty
        $e2[0].FullyQualifiedErrorId | Should -BeLike 'VerifierRefused400,*'
        (Get-AttestationAgent -Verifier $script:Ver.Urls[0] @script:VerCommon) | Should -HaveCount 1
    }

    It 'reports a -RevocationKey file that does not exist as FileNotFound for that agent, and adds nothing' {
        $other = [pscustomobject]@{ AgentId = [guid]::NewGuid().ToString(); Ip = '127.0.0.1'; Port = 9; AikTpm = $script:Registered.AikTpm; MtlsCertificate = $script:Registered.MtlsCertificate }
        $missing = Join-Path $script:Work 'no-such-folder/revocation-key.pem'
        $other | Start-AgentAttestation -Verifier $script:Ver.Urls[0] @script:VerCommon -RevocationKey $missing -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e | Should -HaveCount 1
        $e[0].FullyQualifiedErrorId | Should -BeLike 'FileNotFound,*'
        $e[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $e[0].Exception.Message | Should -BeLike "*$missing*"
        $e[0].TargetObject | Should -Be $other.AgentId
        (Get-AttestationAgent -Verifier $script:Ver.Urls[0] @script:VerCommon) | Should -HaveCount 1
    }

    It 'Stop-AgentAttestation -WhatIf changes nothing; stop makes the attestation fail; -Remove deletes' {
        $id = $script:Registered.AgentId
        Stop-AgentAttestation -Verifier $script:Ver.Urls[0] -AgentId $id @script:VerCommon -WhatIf
        (Get-AttestationAgent -Verifier $script:Ver.Urls[0] @script:VerCommon).StateCode | Should -BeIn 3, 4, 5, 6
        Stop-AgentAttestation -Verifier $script:Ver.Urls[0] -AgentId $id @script:VerCommon -Confirm:$false
        $s = Get-AttestationAgent -Verifier $script:Ver.Urls[0] @script:VerCommon
        $s.State | Should -Be 'TENANT_FAILED'
        "$($s.AttestationStatus)" | Should -Be 'FAIL'
        Test-AgentAttestation -Verifier $script:Ver.Urls[0] @script:VerCommon -Quiet | Should -BeFalse
        # -Quiet: an agent the verifier does not know is a $false, nothing else (no error record).
        $quietErrors = $null
        $out = @(Test-AgentAttestation -Verifier $script:Ver.Urls[0] @script:VerCommon -AgentId ([guid]::NewGuid().ToString()) -Quiet -ErrorVariable quietErrors)
        $out.Count | Should -Be 1
        $out[0] | Should -BeFalse
        @($quietErrors).Count | Should -Be 0
        # Without -Quiet the same call names the agent in an error.
        $loud = $null
        $null = Test-AgentAttestation -Verifier $script:Ver.Urls[0] @script:VerCommon -AgentId ([guid]::NewGuid().ToString()) -ErrorVariable loud -ErrorAction SilentlyContinue
        @($loud).Count | Should -Be 1
        Stop-AgentAttestation -Verifier $script:Ver.Urls[0] -AgentId $id @script:VerCommon -Remove -Confirm:$false
        Get-AttestationAgent -Verifier $script:Ver.Urls[0] @script:VerCommon | Should -BeNullOrEmpty
        Get-ProvisioningAuditLog -DataPath $script:Ver.DataPath | Where-Object Action -Like 'verifier.*' | Select-Object -ExpandProperty Action | Should -Contain 'verifier.stop'
    }
}

Describe 'Server address completion' {
    It 'completes -Verifier with running verifiers and -Registrar with running registrars only' {
        $line = 'Test-AgentAttestation -Verifier '
        $v = (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText
        $v | Should -Contain $script:Ver.Urls[0]
        $v | Should -Not -Contain $script:Reg.Urls[0]
        $line = 'Get-AttestationAgent -Registrar '
        $r = (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText
        $r | Should -Contain $script:Reg.Urls[0]
        $r | Should -Not -Contain $script:Ver.Urls[0]
    }
}

Describe 'Start-AgentAttestation -Payload' {
    It 'checks the NK with an identity quote, sends U to the agent and V to the verifier; the agent derives K and decrypts the payload' {
        $zipDir = Join-Path $script:Work 'payload'; New-Item -ItemType Directory $zipDir | Out-Null
        Set-Content (Join-Path $zipDir 'secret.txt') 'database password for the device'
        $zip = Join-Path $script:Work 'payload.zip'
        Compress-Archive -Path (Join-Path $zipDir 'secret.txt') -DestinationPath $zip
        $v = $script:Registered | Start-AgentAttestation -Verifier $script:Ver.Urls[0] @script:VerCommon -AgentCertificate $script:AgentClient `
            -Policy $script:Zero15 -Payload $zip -Confirm:$false
        $v.PayloadVerified | Should -BeTrue
        $file = Get-ChildItem -Recurse -File -Path $script:Agent.DataPath -Filter 'secret.txt' | Select-Object -First 1
        $file | Should -Not -BeNullOrEmpty
        Get-Content $file.FullName | Should -Be 'database password for the device'
        Stop-AgentAttestation -Verifier $script:Ver.Urls[0] -AgentId $v.AgentId @script:VerCommon -Remove -Confirm:$false
    }
}

Describe 'New-AttestationPolicy' {
    It 'pins PCRs to a TPM''s current values, as tpm2_pcrread reads them' {
        $sim = Start-TpmSimulator -Name 'ver-policy' -Fast
        try {
            & tpm2_pcrextend -T $sim.ConnectionString ('15:sha256=' + ('ab' * 32)) 2>&1 | Out-Null
            $p = New-AttestationPolicy -Tpm $sim.ConnectionString -Pcr 0, 15
            $p.Pcr | Should -Be @(0, 15)
            $json = $p.TpmPolicy | ConvertFrom-Json
            $json.mask | Should -Be '0x8001'
            $read = (& tpm2_pcrread -T $sim.ConnectionString sha256:15 2>&1 | Select-String '0x([0-9A-F]{64})').Matches[0].Groups[1].Value.ToLowerInvariant()
            $json.'15'[0] | Should -Be $read
            $json.'15'[0] | Should -Not -Be ('0' * 64)
        }
        finally { $sim | Stop-TpmSimulator -Confirm:$false }
    }
}
