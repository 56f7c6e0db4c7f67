#Requires -Version 7.6
# Keylime registrar and agent through the cmdlets: real swtpm, HTTPS with mutual TLS, in this session.
BeforeAll {
    $ModulePath = $env:TPMPROV_MODULE_PATH
    if (-not $ModulePath) { throw 'Set TPMPROV_MODULE_PATH to the built module manifest (build.ps1 Test does).' }
    Import-Module $ModulePath -Force
    $script:Work = Join-Path ([IO.Path]::GetTempPath()) ("tpmprov-pester-att-" + [guid]::NewGuid())
    $script:RegData = Join-Path $script:Work 'registrar'
    $script:Sim = Start-TpmSimulator -Name 'att-a'
    $script:Reg = Start-ProvisioningServer -Name 'registrar' -Port 0 -DataPath $script:RegData -Role Registrar
    $script:Reg | Add-TpmManufacturerCa -Path $script:Sim.ManufacturerRootPath -Confirm:$false | Out-Null
    $script:Reg | Add-TpmManufacturerCa -Path $script:Sim.ManufacturerIssuerPath -Intermediate -Confirm:$false | Out-Null
    $script:Tenant = $script:Reg | New-ProvisioningClientCertificate -Name 'tenant-pester' -Confirm:$false
    $script:Common = @{ Registrar = $script:Reg.Urls[0]; CaCertificate = $script:Reg.CaCertificatePath }
}

AfterAll {
    Get-ProvisioningServer | Stop-ProvisioningServer -Confirm:$false
    Get-TpmSimulator | Stop-TpmSimulator -Confirm:$false
    Remove-Item $script:Work -Recurse -Force -ErrorAction Ignore
}

Describe 'Register-, Get-, Remove-AttestationAgent' {
    It 'issues a tenant client certificate with its key from the components CA' {
        $script:Tenant.HasPrivateKey | Should -BeTrue
        $script:Tenant.Subject | Should -Match '^CN=tenant-pester\b'
    }

    It 'registers and activates the TPM; the registrar shows it with regcount 1 and the AK that was persisted' {
        $a = Register-AttestationAgent @script:Common -Tpm $script:Sim.ConnectionString -ClientCertificate $script:Tenant -ContactIp 127.0.0.1 -ContactPort 9002 -Confirm:$false
        $a.RegCount | Should -Be 1
        $a.AgentId | Should -Match '^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$'
        $a.EkCertificate.Issuer | Should -Match 'swtpm-localca'
        $name = Join-Path $script:Work 'ak.name'
        & tpm2_readpublic -T $script:Sim.ConnectionString -c $a.AkHandle -n $name 2>&1 | Out-Null
        ([Convert]::ToHexString([IO.File]::ReadAllBytes($name))).ToLowerInvariant() | Should -Be $a.AkName
        $script:Agent = $a
    }

    It 'lists and reads agents over mutual TLS' {
        $listed = Get-AttestationAgent @script:Common -ClientCertificate $script:Tenant
        $listed.AgentId | Should -Contain $script:Agent.AgentId
        ($listed | Where-Object AgentId -EQ $script:Agent.AgentId).Ip | Should -Be '127.0.0.1'
    }

    It 'refuses the listing with a client certificate the components CA did not issue' {
        $key = [Security.Cryptography.ECDsa]::Create([Security.Cryptography.ECCurve+NamedCurves]::nistP256)
        $req = [Security.Cryptography.X509Certificates.CertificateRequest]::new('CN=intruder', $key, [Security.Cryptography.HashAlgorithmName]::SHA256)
        $self = $req.CreateSelfSigned([DateTimeOffset]::Now.AddMinutes(-5), [DateTimeOffset]::Now.AddDays(1))
        Get-AttestationAgent @script:Common -ClientCertificate $self -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -BeLike 'ClientCertificateRefused,*'
    }

    It 're-registers the same TPM with the same AK: regcount 2' {
        $a = Register-AttestationAgent @script:Common -Tpm $script:Sim.ConnectionString -AkHandle $script:Agent.AkHandle -ClientCertificate $script:Tenant -Confirm:$false
        $a.AgentId | Should -Be $script:Agent.AgentId
        $a.RegCount | Should -Be 2
    }

    It 'refuses the same id with another AK (403) and keeps the registration' {
        Register-AttestationAgent @script:Common -Tpm $script:Sim.ConnectionString -ClientCertificate $script:Tenant -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -BeLike 'RegistrarRefused403,*'
        (Get-AttestationAgent @script:Common -ClientCertificate $script:Tenant -AgentId $script:Agent.AgentId).RegCount | Should -Be 2
    }

    It 'removes an agent; -WhatIf removes nothing' {
        $script:Agent | Remove-AttestationAgent @script:Common -ClientCertificate $script:Tenant -WhatIf
        (Get-AttestationAgent @script:Common -ClientCertificate $script:Tenant).AgentId | Should -Contain $script:Agent.AgentId
        $script:Agent | Remove-AttestationAgent @script:Common -ClientCertificate $script:Tenant -Confirm:$false
        Get-AttestationAgent @script:Common -ClientCertificate $script:Tenant -AgentId $script:Agent.AgentId -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -BeLike 'RegistrarRefused404,*'
    }
}

Describe 'Start-ProvisioningServer -Role Agent' {
    It 'starts an agent that registers at start, and serves a quote over mutual TLS that Test-TpmQuote accepts' {
        $sim2 = Start-TpmSimulator -Name 'att-agent' -Fast
        $agentData = Join-Path $script:Work 'agent'
        $agent = Start-ProvisioningServer -Name 'agent' -Port 0 -DataPath $agentData -Role Agent -Tpm $sim2.ConnectionString `
            -Registrar $script:Reg.Urls[0] -RegistrarCaCertificate $script:Reg.CaCertificatePath
        $agent.AgentRegistered | Should -BeTrue -Because "$($agent.AgentRegistrationError)"
        $client = $agent | New-ProvisioningClientCertificate -Name 'verifier-pester' -Confirm:$false
        $info = Invoke-RestMethod "$($agent.Urls[0])/v2.1/agent/info" -Certificate $client -SkipCertificateCheck
        $id = $info.results.agent_uuid
        (Get-AttestationAgent @script:Common -ClientCertificate $script:Tenant -AgentId $id).RegCount | Should -Be 1
        $nonce = 'abcdefghij0123456789'
        $q = Invoke-RestMethod "$($agent.Urls[0])/v2.1/quotes/integrity?nonce=$nonce&mask=0x408000" -Certificate $client -SkipCertificateCheck
        $q.code | Should -Be 200
        $reg = Get-AttestationAgent @script:Common -ClientCertificate $script:Tenant -AgentId $id
        # The agent always adds PCR 16 (where its NK is measured), as Keylime's verifier requires.
        Test-TpmQuote -KeylimeQuote $q.results.quote -AttestationKey $reg.AikTpm -Nonce $nonce -PcrMask 0x418000 -Quiet | Should -BeTrue
        Test-TpmQuote -KeylimeQuote $q.results.quote -AttestationKey $reg.AikTpm -Nonce 'another-nonce-000000' -Quiet | Should -BeFalse
        $agent | Stop-ProvisioningServer -Confirm:$false

        # A restart reuses the AK the agent persisted: the registrar takes it again (regcount 2).
        $again = Start-ProvisioningServer -Name 'agent-again' -Port 0 -DataPath $agentData -Role Agent -Tpm $sim2.ConnectionString `
            -Registrar $script:Reg.Urls[0] -RegistrarCaCertificate $script:Reg.CaCertificatePath
        $again.AgentRegistered | Should -BeTrue
        (Get-AttestationAgent @script:Common -ClientCertificate $script:Tenant -AgentId $id).RegCount | Should -Be 2
        $again | Stop-ProvisioningServer -Confirm:$false
        $script:AgentId = $id
        $sim2 | Stop-TpmSimulator -Confirm:$false
    }

    It 'fails with AgentRegistrationFailed (403) and stops when another TPM claims a registered agent id' {
        $sim3 = Start-TpmSimulator -Name 'att-other'
        try {
            { Start-ProvisioningServer -Name 'agent-imposter' -Port 0 -DataPath (Join-Path $script:Work 'imposter') -Role Agent -Tpm $sim3.ConnectionString `
                -AgentId $script:AgentId -Registrar $script:Reg.Urls[0] -RegistrarCaCertificate $script:Reg.CaCertificatePath -ErrorAction Stop } |
                Should -Throw -ErrorId 'AgentRegistrationFailed,*' -ExpectedMessage '*403*'
            Get-ProvisioningServer -Name 'agent-imposter' -ErrorAction Ignore | Should -BeNullOrEmpty
        }
        finally { $sim3 | Stop-TpmSimulator -Confirm:$false }
    }

    It 'fails with AgentRegistrationFailed (ConnectionError) when the registrar is unreachable' {
        $sim4 = Start-TpmSimulator -Name 'att-unreach' -Fast
        try {
            $err = $null
            try { Start-ProvisioningServer -Port 0 -DataPath (Join-Path $script:Work 'unreach') -Role Agent -Tpm $sim4.ConnectionString -Registrar 'https://127.0.0.1:1' -ErrorAction Stop }
            catch { $err = $_ }
            $err.FullyQualifiedErrorId | Should -BeLike 'AgentRegistrationFailed,*'
            $err.CategoryInfo.Category | Should -Be 'ConnectionError'
        }
        finally { $sim4 | Stop-TpmSimulator -Confirm:$false }
    }

    It 'fails with AgentTpmUnavailable when the TPM cannot be opened or none is found' {
        { Start-ProvisioningServer -Port 0 -DataPath (Join-Path $script:Work 'notpm') -Role Agent -Tpm 'swtpm:host=127.0.0.1,port=1' -ErrorAction Stop } |
            Should -Throw -ErrorId 'AgentTpmUnavailable,*'
        if (-not (Test-Path /dev/tpmrm0)) {
            $saved = $env:TPM2TOOLS_TCTI
            try {
                $env:TPM2TOOLS_TCTI = $null
                { Start-ProvisioningServer -Port 0 -DataPath (Join-Path $script:Work 'notpm2') -Role Agent -ErrorAction Stop } |
                    Should -Throw -ErrorId 'AgentTpmUnavailable,*' -ExpectedMessage '*TPM2TOOLS_TCTI*'
            }
            finally { $env:TPM2TOOLS_TCTI = $saved }
        }
    }
}

Describe 'Start-ProvisioningServer -RegistrarPlainPort' {
    It 'serves registration and /version over plain HTTP and refuses the rest there' {
        $r = Start-ProvisioningServer -Name 'registrar-plain' -Port 0 -RegistrarPlainPort 0 -DataPath (Join-Path $script:Work 'registrar-plain') -Role Registrar
        try {
            $r.RegistrarPlainPort | Should -BeGreaterThan 0
            $r.RegistrarPlainUrl | Should -Be "http://127.0.0.1:$($r.RegistrarPlainPort)"
            (Invoke-RestMethod "$($r.RegistrarPlainUrl)/version").results.current_version | Should -Be '2.5'
            $resp = Invoke-WebRequest "$($r.RegistrarPlainUrl)/v2.1/agents/" -SkipHttpErrorCheck
            $resp.StatusCode | Should -Be 403
        }
        finally { $r | Stop-ProvisioningServer -Confirm:$false }
    }

    It 'needs the Registrar role' {
        { Start-ProvisioningServer -Port 0 -RegistrarPlainPort 0 -DataPath (Join-Path $script:Work 'noreg') -Role Provisioning -ErrorAction Stop } |
            Should -Throw -ErrorId 'RegistrarPlainPortWithoutRegistrar,*'
    }
}
