#Requires -Version 7.6
# Fleet-admin errors (issue 15): TLS failures said precisely, refused credentials, duplicate servers, stores that are not there.
# Real servers over real TLS in this session (and one in a child process for the data-path lock).
BeforeAll {
    $ModulePath = $env:TPMPROV_MODULE_PATH
    if (-not $ModulePath) { throw 'Set TPMPROV_MODULE_PATH to the built module manifest (build.ps1 Test does).' }
    Import-Module $ModulePath -Force
    $script:Work = Join-Path ([IO.Path]::GetTempPath()) ("tpmprov-pester-adminerr-" + [guid]::NewGuid())
    New-Item -ItemType Directory -Path $script:Work | Out-Null
    $script:DataA = Join-Path $script:Work 'a'
    $script:DataB = Join-Path $script:Work 'b'
    $fast = [TpmProvisioning.Kms.KmsSettings]@{ MasterKey = 'InsecureFile'; PasswordIterations = 1000 }
    $script:KmsCred = [pscredential]::new('kms-admin', (ConvertTo-SecureString 'admin-password-1' -AsPlainText -Force))
    New-KmsUser -DataPath $script:DataA -KmsSettings $fast -Credential $script:KmsCred -Role Administrator -Confirm:$false -WarningAction SilentlyContinue | Out-Null
    $script:A = Start-ProvisioningServer -Name 'adminerr-a' -Port 0 -DataPath $script:DataA -Role Registrar, Kms -KmsMasterKey InsecureFile -WarningAction SilentlyContinue
    $script:B = Start-ProvisioningServer -Name 'adminerr-b' -Port 0 -DataPath $script:DataB -Role Registrar
    $script:TenantA = $script:A | New-ProvisioningClientCertificate -Name 'tenant-a' -Confirm:$false
    $script:TenantB = $script:B | New-ProvisioningClientCertificate -Name 'tenant-b' -Confirm:$false
    $script:CaA = [Security.Cryptography.X509Certificates.X509Certificate2]::new($script:A.CaCertificatePath)
    $script:CaB = [Security.Cryptography.X509Certificates.X509Certificate2]::new($script:B.CaCertificatePath)
    # A port nothing listens on: bound once by us, then closed.
    $l = [Net.Sockets.TcpListener]::new([Net.IPAddress]::Loopback, 0); $l.Start(); $script:DeadPort = $l.LocalEndpoint.Port; $l.Stop()
    function script:Failure([scriptblock] $call) {
        $errs = @()
        try { & $call -ErrorAction SilentlyContinue -ErrorVariable +errs | Out-Null } catch { $errs += $_ }
        $errs | Select-Object -First 1
    }
}

AfterAll {
    Get-ProvisioningServer | Stop-ProvisioningServer -Confirm:$false
    Remove-Item $script:Work -Recurse -Force -ErrorAction Ignore
}

Describe 'TLS failures say which side refused what' {
    It 'a server certificate that does not chain to -CaCertificate: ServerCertificateNotTrusted with its subject, thumbprint and the CA expected' {
        $e = Failure { Get-AttestationAgent -Registrar $script:A.Urls[0] -CaCertificate $script:B.CaCertificatePath -ClientCertificate $script:TenantA }
        $e.FullyQualifiedErrorId | Should -BeLike 'ServerCertificateNotTrusted,*'
        $e.CategoryInfo.Category | Should -Be 'SecurityError'
        $e.Exception.Message | Should -Match ([regex]::Escape($script:CaB.Thumbprint))
        $e.Exception.Message | Should -Match 'thumbprint [0-9A-F]{40}'
        $e.Exception.Message | Should -Not -Match 'inner exception'
    }

    It 'the same for the KMS cmdlets and the station-backed readers' {
        $e = Failure { Get-KmsProvider -Server $script:A.Urls[0] -Credential $script:KmsCred -CaCertificate $script:B.CaCertificatePath }
        $e.FullyQualifiedErrorId | Should -BeLike 'ServerCertificateNotTrusted,*'
        $e.Exception.Message | Should -Match ([regex]::Escape($script:CaB.Thumbprint))
    }

    It 'a client certificate from another CA: ClientCertificateRefused naming that certificate' {
        $e = Failure { Get-AttestationAgent -Registrar $script:A.Urls[0] -CaCertificate $script:A.CaCertificatePath -ClientCertificate $script:TenantB }
        $e.FullyQualifiedErrorId | Should -BeLike 'ClientCertificateRefused,*'
        $e.CategoryInfo.Category | Should -Be 'AuthenticationError'
        $e.Exception.Message | Should -Match ([regex]::Escape($script:TenantB.Thumbprint))
        $e.Exception.Message | Should -Not -Match 'inner exception'
    }

    It 'a port nothing listens on: ServerUnreachable (ConnectionError), for the registrar, the verifier and the KMS' {
        $url = "https://127.0.0.1:$script:DeadPort"
        foreach ($call in @(
                { Get-AttestationAgent -Registrar $url -CaCertificate $script:A.CaCertificatePath -ClientCertificate $script:TenantA },
                { Get-AttestationAgent -Verifier $url -CaCertificate $script:A.CaCertificatePath -ClientCertificate $script:TenantA },
                { Get-KmsProvider -Server $url -Credential $script:KmsCred -SkipCertificateCheck })) {
            $e = Failure $call
            $e.FullyQualifiedErrorId | Should -BeLike 'ServerUnreachable,*' -Because "$call"
            $e.CategoryInfo.Category | Should -Be 'ConnectionError'
            $e.Exception.Message | Should -Match ([regex]::Escape("127.0.0.1:$script:DeadPort"))
            $e.Exception.Message | Should -Not -Match 'inner exception'
        }
    }

    It 'a server given without a scheme is InvalidServerUri (InvalidArgument), not .NET''s relative-URI exception' {
        foreach ($call in @(
                { Get-ProvisioningDevice -Server 'station01' },
                { Get-AttestationAgent -Registrar 'registrar01' -ClientCertificate $script:TenantA },
                { Get-KmsProvider -Server 'kms01' -Credential $script:KmsCred })) {
            $e = Failure $call
            $e.FullyQualifiedErrorId | Should -BeLike 'InvalidServerUri,*' -Because "$call"
            $e.CategoryInfo.Category | Should -Be 'InvalidArgument'
            $e.Exception.Message | Should -Match 'https://'
        }
    }

    It 'a trusted server and a good client certificate still work' {
        { Get-AttestationAgent -Registrar $script:A.Urls[0] -CaCertificate $script:A.CaCertificatePath -ClientCertificate $script:TenantA -ErrorAction Stop } | Should -Not -Throw
    }
}

Describe 'Refused credentials' {
    It 'a wrong KMS password is a non-terminating CredentialsRefused; the script goes on and nothing is created' {
        $bad = [pscredential]::new('kms-admin', (ConvertTo-SecureString 'wrong-password' -AsPlainText -Force))
        # Terminating would throw out of this block; non-terminating lets the next line run.
        [pscustomobject]@{ Name = 'k1' }, [pscustomobject]@{ Name = 'k2' } |
            New-KmsKey -Server $script:A.Urls[0] -Credential $bad -CaCertificate $script:A.CaCertificatePath -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e
        $after = 'ran'
        $after | Should -Be 'ran'
        $e.Count | Should -Be 1
        $e[0].FullyQualifiedErrorId | Should -BeLike 'CredentialsRefused,*'
        $e[0].CategoryInfo.Category | Should -Be 'AuthenticationError'
        $e[0].Exception.Message | Should -Match "refused the credentials of 'kms-admin'"
        $e[0].Exception.Message | Should -Not -Match 'wrong-password'
        Get-KmsKey -Server $script:A.Urls[0] -Credential $script:KmsCred -CaCertificate $script:A.CaCertificatePath | Should -BeNullOrEmpty
    }
}

Describe 'A mistyped -DataPath is StoreNotFound, never an empty fleet, and creates nothing' {
    It '<Reader>' -ForEach @(
        @{ Reader = 'Get-ManufacturingRecord' }, @{ Reader = 'Get-KmsProvider' }, @{ Reader = 'Get-KmsKey' }, @{ Reader = 'Get-KmsUser' },
        @{ Reader = 'Get-ProvisioningApiKey' }, @{ Reader = 'Get-ProvisioningAuditLog' }, @{ Reader = 'Get-ProvisioningDevice' },
        @{ Reader = 'Get-ProvisioningScript' }, @{ Reader = 'Get-StationToken' }) {
        $typo = Join-Path $script:Work 'plant-typo'
        $cmdlet = $Reader
        $e = Failure { & $cmdlet -DataPath $typo }
        $e.FullyQualifiedErrorId | Should -BeLike 'StoreNotFound,*'
        $e.CategoryInfo.Category | Should -Be 'ObjectNotFound'
        Test-Path $typo | Should -BeFalse
    }
}

Describe 'One server per name and per data path' {
    It 'refuses a second server with the same -Name in the session (ServerNameInUse) and starts nothing' {
        $before = @(Get-ProvisioningServer).Count
        $e = Failure { Start-ProvisioningServer -Name 'adminerr-a' -Port 0 -DataPath (Join-Path $script:Work 'other') -Role Registrar }
        $e.FullyQualifiedErrorId | Should -BeLike 'ServerNameInUse,*'
        $e.CategoryInfo.Category | Should -Be 'ResourceExists'
        @(Get-ProvisioningServer).Count | Should -Be $before
    }

    It 'refuses a second server on the same -DataPath in the session (DataPathInUse) naming the one that runs there' {
        $e = Failure { Start-ProvisioningServer -Name 'adminerr-a2' -Port 0 -DataPath $script:DataA -Role Registrar }
        $e.FullyQualifiedErrorId | Should -BeLike 'DataPathInUse,*'
        $e.Exception.Message | Should -Match "adminerr-a"
        @(Get-ProvisioningServer -Name 'adminerr-a2' -ErrorAction SilentlyContinue).Count | Should -Be 0
    }

    It 'a stopped server frees its name and data path' {
        $dir = Join-Path $script:Work 'reuse'
        Start-ProvisioningServer -Name 'adminerr-reuse' -Port 0 -DataPath $dir -Role Registrar | Stop-ProvisioningServer -Confirm:$false
        $again = Start-ProvisioningServer -Name 'adminerr-reuse' -Port 0 -DataPath $dir -Role Registrar
        $again.State | Should -Be 'Running'
        $again | Stop-ProvisioningServer -Confirm:$false
    }

    It 'refuses a data path a server of another process holds (DataPathInUse)' {
        $dir = Join-Path $script:Work 'child'
        $exe = [Environment]::ProcessPath
        $psi = [Diagnostics.ProcessStartInfo]::new($exe)
        if ([IO.Path]::GetFileNameWithoutExtension($exe) -ne 'pwsh') { $psi.ArgumentList.Add((Join-Path $PSHOME 'pwsh.dll')) }
        foreach ($a in '-NoProfile', '-NonInteractive', '-Command', "`$ErrorActionPreference='Stop'; Import-Module '$ModulePath'; `$s = Start-ProvisioningServer -Port 0 -DataPath '$dir' -Role Registrar; 'ready'; [Console]::In.ReadLine() | Out-Null; `$s | Stop-ProvisioningServer -Confirm:`$false") { $psi.ArgumentList.Add($a) }
        $psi.RedirectStandardInput = $true; $psi.RedirectStandardOutput = $true; $psi.UseShellExecute = $false
        $child = [Diagnostics.Process]::Start($psi)
        try {
            $line = $null
            while ($null -ne ($line = $child.StandardOutput.ReadLine()) -and $line -ne 'ready') { }
            $line | Should -Be 'ready'
            $e = Failure { Start-ProvisioningServer -Port 0 -DataPath $dir -Role Registrar }
            $e.FullyQualifiedErrorId | Should -BeLike 'DataPathInUse,*'
            $e.Exception.Message | Should -Match 'another process'
        }
        finally {
            $child.StandardInput.WriteLine('')
            if (-not $child.WaitForExit(60000)) { $child.Kill($true) }
            $child.Dispose()
        }
        # Once that server is gone the data path is free again.
        $s = Start-ProvisioningServer -Port 0 -DataPath $dir -Role Registrar
        $s | Stop-ProvisioningServer -Confirm:$false
    }
}

Describe 'A KMS data path remembers its master key' {
    BeforeAll {
        $script:Sim = Start-TpmSimulator -Name 'adminerr-kms' -Fast
        $script:SavedTcti = $env:TPM2TOOLS_TCTI
        $env:TPM2TOOLS_TCTI = $null
        $script:NoPlatformTpm = -not ((Test-Path /dev/tpmrm0) -or (Test-Path /dev/tpm0) -or $IsWindows)
        $script:Sealed = Join-Path $script:Work 'kms-tpm'
    }
    AfterAll {
        $env:TPM2TOOLS_TCTI = $script:SavedTcti
        $script:Sim | Stop-TpmSimulator -Confirm:$false
    }

    It 'a TPM-sealed data path set up with -MasterKeyTpm is used later without it' {
        New-KmsUser -DataPath $script:Sealed -MasterKeyTpm $script:Sim.ConnectionString -Name 'kms-admin' -Password (ConvertTo-SecureString 'admin-password-1' -AsPlainText -Force) -Role Administrator -Confirm:$false | Out-Null
        (Get-KmsUser -DataPath $script:Sealed -ErrorAction Stop).Name | Should -Be 'kms-admin'
        $k = [byte[]]::new(32); [Security.Cryptography.RandomNumberGenerator]::Fill($k)
        New-KmsProvider -DataPath $script:Sealed -Name 'p1' -KeyId 'k1' -KeyDerivationKey (ConvertTo-SecureString ([Convert]::ToBase64String($k)) -AsPlainText -Force) -Confirm:$false -ErrorAction Stop | Out-Null
        (Get-KmsProvider -DataPath $script:Sealed -ErrorAction Stop).Name | Should -Be 'p1'
    }

    It 'without a known TPM, the error names -MasterKeyTpm (KmsMasterKeyTpmRequired), for a sealed key and for a new data path' {
        if (-not $script:NoPlatformTpm) { Set-ItResult -Skipped -Because 'this machine has a platform TPM, which is the default'; return }
        Remove-Item (Join-Path $script:Sealed 'kms/master-key.settings.json')
        $e = Failure { Get-KmsProvider -DataPath $script:Sealed }
        $e.FullyQualifiedErrorId | Should -BeLike 'KmsMasterKeyTpmRequired,*'
        $e.Exception.Message | Should -Match '-MasterKeyTpm'
        $e = Failure { New-KmsUser -DataPath (Join-Path $script:Work 'kms-new') -Name 'u' -Password (ConvertTo-SecureString 'user-password-1' -AsPlainText -Force) -Confirm:$false }
        $e.FullyQualifiedErrorId | Should -BeLike 'KmsMasterKeyTpmRequired,*'
        $e.Exception.Message | Should -Match '-MasterKeyTpm'
        $e.Exception.Message | Should -Match '-MasterKey InsecureFile'
        # Given again, the TPM is remembered again.
        (Get-KmsProvider -DataPath $script:Sealed -MasterKeyTpm $script:Sim.ConnectionString -ErrorAction Stop).Name | Should -Be 'p1'
        (Get-KmsProvider -DataPath $script:Sealed -ErrorAction Stop).Name | Should -Be 'p1'
    }

    It 'an unreachable TPM is KmsMasterKeyTpmUnavailable naming -MasterKeyTpm' {
        $e = Failure { Get-KmsProvider -DataPath $script:Sealed -MasterKeyTpm "swtpm:host=127.0.0.1,port=$script:DeadPort" }
        $e.FullyQualifiedErrorId | Should -BeLike 'KmsMasterKeyTpmUnavailable,*'
        $e.Exception.Message | Should -Match '-MasterKeyTpm'
    }
}

