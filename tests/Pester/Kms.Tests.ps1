#Requires -Version 7.6
# The KMS cmdlets against a real server in this session (HTTPS, SQLite, insecure-file master key for the lab):
# local (engine on the data path) and remote (-Server, vSphere sessions and CCKM tokens) give the same objects.
BeforeAll {
    $ModulePath = $env:TPMPROV_MODULE_PATH
    if (-not $ModulePath) { throw 'Set TPMPROV_MODULE_PATH to the built module manifest (build.ps1 Test does).' }
    Import-Module $ModulePath -Force
    $script:Work = Join-Path ([IO.Path]::GetTempPath()) ("tpmprov-pester-kms-" + [guid]::NewGuid())
    New-Item -ItemType Directory -Path $script:Work | Out-Null
    $script:Data = Join-Path $script:Work 'data'
    $fast = [TpmProvisioning.Kms.KmsSettings]@{ MasterKey = 'InsecureFile'; PasswordIterations = 1000 }
    function script:Cred([string] $u, [string] $p) { [pscredential]::new($u, (ConvertTo-SecureString $p -AsPlainText -Force)) }
    $script:AdminCred = Cred 'kms-admin' 'admin-password-1'
    $script:ReaderCred = Cred 'kms-reader' 'reader-password-1'
    $script:Admin = New-KmsUser -DataPath $script:Data -KmsSettings $fast -Credential $script:AdminCred -Role Administrator -Confirm:$false -WarningAction SilentlyContinue
    New-KmsUser -DataPath $script:Data -KmsSettings $fast -Name 'kms-reader' -Password $script:ReaderCred.Password -Confirm:$false -WarningAction SilentlyContinue | Out-Null
    $script:Server = Start-ProvisioningServer -Role Kms -Port 0 -DataPath $script:Data -KmsMasterKey InsecureFile -WarningAction SilentlyContinue
    $script:Url = $script:Server.Urls[0]
    $script:Local = @{ DataPath = $script:Data; WarningAction = 'SilentlyContinue' }
    $script:Remote = @{ Server = $script:Url; Credential = $script:AdminCred; SkipCertificateCheck = $true }
    $script:Reader = @{ Server = $script:Url; Credential = $script:ReaderCred; SkipCertificateCheck = $true }
    # Every key derivation key used here, to show none comes back in any output or log.
    $script:Kdks = [Collections.Generic.List[string]]::new()
    function script:New-Kdk([int] $bytes = 32) {
        $b = [byte[]]::new($bytes); [Security.Cryptography.RandomNumberGenerator]::Fill($b)
        $t = [Convert]::ToBase64String($b); $script:Kdks.Add($t)
        ConvertTo-SecureString $t -AsPlainText -Force
    }
    # Every object a cmdlet returned, as JSON.
    $script:Outputs = [Text.StringBuilder]::new()
    function script:Keep { process { [void]$script:Outputs.AppendLine(($_ | ConvertTo-Json -Depth 4 -WarningAction Ignore)); $_ } }
    # Local and remote objects are the same but for where they came from (DataPath or Server).
    function script:Json($o) { $o | Select-Object * -ExcludeProperty DataPath, Server | ConvertTo-Json -Depth 4 -WarningAction Ignore }
    function script:ErrorId([scriptblock] $call) {
        $ErrorActionPreference = 'Stop'
        try { & $call | Out-Null } catch { return $_.FullyQualifiedErrorId.Split(',')[0] }
        '<none>'
    }
}

AfterAll {
    Get-ProvisioningServer | Stop-ProvisioningServer -Confirm:$false
    Remove-Item $script:Work -Recurse -Force -ErrorAction Ignore
}

Describe 'KMS users' {
    It 'creates users with a role and never returns the password' {
        $script:Admin.Name | Should -Be 'kms-admin'
        $script:Admin.Role | Should -Be 'Administrator'
        $script:Admin | Should -BeOfType ([TpmProvisioning.Cmdlets.KmsUser])
        (Json $script:Admin) | Should -Not -Match 'admin-password-1'
    }

    It 'refuses a taken name with KmsUserExists and a short password with KmsInvalidArgument' {
        ErrorId { New-KmsUser @script:Local -Credential $script:AdminCred -Confirm:$false } | Should -Be 'KmsUserExists'
        ErrorId { New-KmsUser @script:Local -Credential (Cred 'shorty' 'short') -Confirm:$false } | Should -Be 'KmsInvalidArgument'
    }

    It 'lists users with their roles (wildcards) and never a password hash' {
        $all = Get-KmsUser @script:Local
        $all.Name | Should -Contain 'kms-admin'
        $all.Name | Should -Contain 'kms-reader'
        (Get-KmsUser @script:Local -Name 'kms-r*').Name | Should -Be 'kms-reader'
        ($all | Where-Object Name -EQ 'kms-admin').Role | Should -Be 'Administrator'
        ($all | ConvertTo-Json -Depth 4) | Should -Not -Match '(?i)hash|salt|password'
    }

    It 'removes a user: -WhatIf keeps it, then its login is refused; an unknown name gives KmsUserNotFound' {
        New-KmsUser @script:Local -Credential (Cred 'kms-temp' 'temp-password-1') -Confirm:$false | Out-Null
        $tempCred = Cred 'kms-temp' 'temp-password-1'
        (Get-KmsProvider -Server $script:Url -Credential $tempCred -SkipCertificateCheck -ErrorAction Stop) | Out-Null
        Get-KmsUser @script:Local -Name 'kms-temp' | Remove-KmsUser @script:Local -WhatIf
        (Get-KmsUser @script:Local -Name 'kms-temp').Name | Should -Be 'kms-temp'
        Get-KmsUser @script:Local -Name 'kms-temp' | Remove-KmsUser @script:Local -Confirm:$false
        Get-KmsUser @script:Local -Name 'kms-temp' | Should -BeNullOrEmpty
        ErrorId { Get-KmsProvider -Server $script:Url -Credential $tempCred -SkipCertificateCheck } | Should -Be 'CredentialsRefused'
        ErrorId { Remove-KmsUser @script:Local -Name 'nobody' -Confirm:$false } | Should -Be 'KmsUserNotFound'
    }
}

Describe 'KMS providers' {
    It 'creates a provider locally and remotely, and both ways read the same objects' {
        $a = New-KmsProvider @script:Local -Name 'prov-local' -KeyId 'kid-1' -KeyDerivationKey (New-Kdk) -Confirm:$false | Keep
        $b = New-KmsProvider @script:Remote -Name 'prov-remote' -KeyId 'kid-2' -KeyDerivationKey (New-Kdk) -Confirm:$false | Keep
        $a | Should -BeOfType ([TpmProvisioning.Cmdlets.KmsProvider])
        $b | Should -BeOfType ([TpmProvisioning.Cmdlets.KmsProvider])
        $a.KeyId | Should -Be 'kid-1'; $a.Type | Should -Be 'NATIVE'
        $local = Get-KmsProvider @script:Local | Keep | Sort-Object Name
        $remote = Get-KmsProvider @script:Remote | Keep | Sort-Object Name
        $local.Name | Should -Be @('prov-local', 'prov-remote')
        (Json $remote) | Should -Be (Json $local)
        (Json (Get-KmsProvider @script:Remote -Name 'prov-l*')) | Should -Be (Json (Get-KmsProvider @script:Local -Name 'prov-l*'))
        ($local[0] | Get-Member -MemberType Property).Name | Should -Not -Contain 'KeyDerivationKey'
    }

    It '-WhatIf changes nothing, locally and remotely' {
        New-KmsProvider @script:Local -Name 'whatif-1' -KeyId 'k' -KeyDerivationKey (New-Kdk) -WhatIf
        New-KmsProvider @script:Remote -Name 'whatif-2' -KeyId 'k' -KeyDerivationKey (New-Kdk) -WhatIf
        Set-KmsProvider @script:Remote -Name 'prov-local' -KeyId 'changed' -WhatIf
        Remove-KmsProvider @script:Local -Name 'prov-local' -WhatIf
        Remove-KmsProvider @script:Remote -Name 'prov-remote' -WhatIf
        (Get-KmsProvider @script:Local).Name | Sort-Object | Should -Be @('prov-local', 'prov-remote')
        (Get-KmsProvider @script:Local -Name 'prov-local').KeyId | Should -Be 'kid-1'
    }

    It '-WhatIf on a fresh data path creates no master key and no store' {
        $fresh = Join-Path $script:Work 'fresh'
        New-KmsProvider -DataPath $fresh -MasterKey InsecureFile -Name 'p' -KeyId 'k' -KeyDerivationKey (New-Kdk) -WhatIf
        New-KmsKey -DataPath $fresh -MasterKey InsecureFile -Name 'k' -WhatIf
        # No store there yet: reading says so (StoreNotFound) rather than answering with an empty KMS.
        { Get-KmsProvider -DataPath $fresh -ErrorAction Stop } | Should -Throw -ErrorId 'StoreNotFound,*'
        Test-Path (Join-Path $fresh 'kms') | Should -BeFalse
        Test-Path (Join-Path $fresh 'tpmprovisioning.db') | Should -BeFalse
    }

    It 'gives stable ErrorIds, the same locally and remotely, and changes nothing' {
        foreach ($where in @($script:Local, $script:Remote)) {
            ErrorId { New-KmsProvider @where -Name 'prov-local' -KeyId 'x' -KeyDerivationKey (New-Kdk) -Confirm:$false } | Should -Be 'KmsProviderExists'
            ErrorId { New-KmsProvider @where -Name '-bad name' -KeyId 'x' -KeyDerivationKey (New-Kdk) -Confirm:$false } | Should -Be 'KmsInvalidArgument'
            ErrorId { New-KmsProvider @where -Name 'short-kdk' -KeyId 'x' -KeyDerivationKey (New-Kdk 16) -Confirm:$false } | Should -Be 'KmsInvalidArgument'
            ErrorId { New-KmsProvider @where -Name 'not-b64' -KeyId 'x' -KeyDerivationKey (ConvertTo-SecureString 'not base64!' -AsPlainText -Force) -Confirm:$false } | Should -Be 'KmsInvalidArgument'
            ErrorId { Get-KmsProvider @where -Name 'nope' } | Should -Be 'KmsProviderNotFound'
            ErrorId { Set-KmsProvider @where -Name 'nope' -KeyId 'x' -Confirm:$false } | Should -Be 'KmsProviderNotFound'
            ErrorId { Remove-KmsProvider @where -Name 'nope' -Confirm:$false } | Should -Be 'KmsProviderNotFound'
        }
        (Get-KmsProvider @script:Local).Name | Sort-Object | Should -Be @('prov-local', 'prov-remote')
        (Get-KmsProvider @script:Local -Name 'prov-local').KeyId | Should -Be 'kid-1'
    }

    It 'refuses bad credentials (CredentialsRefused) and a read-only user''s changes (KmsUnauthorized)' {
        $bad = @{ Server = $script:Url; Credential = (Cred 'kms-admin' 'wrong-password'); SkipCertificateCheck = $true }
        ErrorId { Get-KmsProvider @bad } | Should -Be 'CredentialsRefused'
        ErrorId { Get-KmsKey @bad } | Should -Be 'CredentialsRefused'
        ErrorId { New-KmsProvider @script:Reader -Name 'by-reader' -KeyId 'x' -KeyDerivationKey (New-Kdk) -Confirm:$false } | Should -Be 'KmsUnauthorized'
        ErrorId { New-KmsKey @script:Reader -Name 'by-reader' -Confirm:$false } | Should -Be 'KmsUnauthorized'
        ErrorId { Get-KmsProvider -Server $script:Url -SkipCertificateCheck } | Should -Be 'KmsCredentialRequired'
        (Get-KmsProvider @script:Reader).Count | Should -Be 2
        Get-KmsProvider @script:Local -Name 'by-reader' -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
    }

    It 'changes the key id and removes a provider, locally and remotely' {
        Set-KmsProvider @script:Remote -Name 'prov-local' -KeyId 'kid-1b' -Confirm:$false
        (Get-KmsProvider @script:Local -Name 'prov-local').KeyId | Should -Be 'kid-1b'
        (Set-KmsProvider @script:Local -Name 'prov-local' -KeyId 'kid-1c' -PassThru -Confirm:$false | Keep).KeyId | Should -Be 'kid-1c'
        New-KmsProvider @script:Local -Name 'doomed-1' -KeyId 'k' -KeyDerivationKey (New-Kdk) -Confirm:$false | Out-Null
        New-KmsProvider @script:Local -Name 'doomed-2' -KeyId 'k' -KeyDerivationKey (New-Kdk) -Confirm:$false | Out-Null
        Remove-KmsProvider @script:Remote -Name 'doomed-1' -Confirm:$false
        Get-KmsProvider @script:Local -Name 'doomed-2' | Remove-KmsProvider @script:Local -Confirm:$false
        Get-KmsProvider @script:Local -Name 'doomed*' | Should -BeNullOrEmpty
    }
}

Describe 'KMS keys and versions' {
    It 'creates keys locally and remotely; both ways read the same objects' {
        $a = New-KmsKey @script:Remote -Name 'disk-key' -Confirm:$false | Keep
        $b = New-KmsKey @script:Local -Name 'source-key' -Confirm:$false | Keep
        $a | Should -BeOfType ([TpmProvisioning.Cmdlets.KmsKey])
        $a.Algorithm | Should -Be 'AES'; $a.VersionCount | Should -Be 1
        (Json (Get-KmsKey @script:Remote | Sort-Object Name)) | Should -Be (Json (Get-KmsKey @script:Local | Sort-Object Name))
        (Json (Get-KmsKey @script:Local -Name 'disk-key')) | Should -Be (Json $a)
        ErrorId { New-KmsKey @script:Local -Name 'disk-key' -Confirm:$false } | Should -Be 'KmsKeyExists'
        ErrorId { New-KmsKey @script:Remote -Name 'disk-key' -Confirm:$false } | Should -Be 'KmsKeyExists'
        ErrorId { Get-KmsKey @script:Remote -Name 'no-such-key' } | Should -Be 'KmsKeyNotFound'
    }

    It 'rotates: Add-KmsKeyVersion -Native makes version 2 primary and Get-KmsKeyVersion lists both' {
        Add-KmsKeyVersion @script:Remote -Key 'disk-key' -Native -WhatIf
        (Get-KmsKeyVersion @script:Local -Key 'disk-key').Count | Should -Be 1
        $v2 = Get-KmsKey @script:Local -Name 'disk-key' | Add-KmsKeyVersion @script:Remote -Native -Confirm:$false | Keep
        $v2 | Should -BeOfType ([TpmProvisioning.Cmdlets.KmsKeyVersion])
        $v2.Number | Should -Be 2; $v2.IsPrimary | Should -BeTrue; $v2.Origin | Should -Be 'INTERNAL'; $v2.KeyMaterialOrigin | Should -Be 'native'
        $local = Get-KmsKeyVersion @script:Local -Key 'disk-key' | Keep
        $remote = Get-KmsKeyVersion @script:Remote -Key 'disk-key' | Keep
        $local.Number | Should -Be @(1, 2)
        $local.IsPrimary | Should -Be @($false, $true)
        (Json $remote) | Should -Be (Json $local)
        (Json (Get-KmsKeyVersion @script:Remote -Key 'disk-key' -Version 1)) | Should -Be (Json $local[0])
        (Json (Get-KmsKeyVersion @script:Local -Key 'disk-key' -Primary)) | Should -Be (Json $v2)
        (Get-KmsKey @script:Remote -Name 'disk-key').CurrentVersionId | Should -Be $v2.Id
        $v3 = Add-KmsKeyVersion @script:Local -Key 'disk-key' -Native -Confirm:$false | Keep
        $v3.Number | Should -Be 3
        (Json (Get-KmsKeyVersion @script:Remote -Key 'disk-key' -Version $v3.Id)) | Should -Be (Json $v3)
    }

    It 'uploads a version from the local tier and refuses unconfigured tiers and bad sources' {
        $up = Add-KmsKeyVersion @script:Remote -Key 'disk-key' -SourceKeyIdentifier 'source-key' -SourceKeyTier local -Confirm:$false | Keep
        $up.Origin | Should -Be 'EXTERNAL'; $up.KeyMaterialOrigin | Should -Be 'local'; $up.IsPrimary | Should -BeTrue
        $before = Json (Get-KmsKeyVersion @script:Local -Key 'disk-key')
        foreach ($where in @($script:Local, $script:Remote)) {
            ErrorId { Add-KmsKeyVersion @where -Key 'disk-key' -SourceKeyIdentifier 'any' -SourceKeyTier hsm-luna -Confirm:$false } | Should -Be 'KmsInvalidArgument'
            ErrorId { Add-KmsKeyVersion @where -Key 'disk-key' -SourceKeyIdentifier 'any' -SourceKeyTier dsm -Confirm:$false } | Should -Be 'KmsInvalidArgument'
            ErrorId { Add-KmsKeyVersion @where -Key 'disk-key' -SourceKeyIdentifier 'no-such-key' -Confirm:$false } | Should -Be 'KmsInvalidArgument'
            ErrorId { Add-KmsKeyVersion @where -Key 'no-such-key' -Native -Confirm:$false } | Should -Be 'KmsKeyNotFound'
            ErrorId { Get-KmsKeyVersion @where -Key 'no-such-key' } | Should -Be 'KmsKeyNotFound'
            ErrorId { Get-KmsKeyVersion @where -Key 'disk-key' -Version 99 } | Should -Be 'KmsKeyVersionNotFound'
        }
        { Add-KmsKeyVersion @script:Local -Key 'disk-key' -SourceKeyIdentifier 'x' -SourceKeyTier 'other' } | Should -Throw -ErrorId 'ParameterArgumentValidationError*'
        Json (Get-KmsKeyVersion @script:Local -Key 'disk-key') | Should -Be $before
    }
}

Describe 'Get-KmsDataKey (error paths; the attested release is tested with a real agent elsewhere)' {
    It 'needs a certificate with its private key' {
        ErrorId { Get-KmsDataKey -Server $script:Url -SkipCertificateCheck -Provider 'prov-local' -KeyIdentifier 'disk-1' } | Should -Be 'KmsCertificateRequired'
        $rsa = [Security.Cryptography.RSA]::Create(2048)
        $req = [Security.Cryptography.X509Certificates.CertificateRequest]::new('CN=agent-x', $rsa, 'SHA256', [Security.Cryptography.RSASignaturePadding]::Pkcs1)
        $script:AgentCert = $req.CreateSelfSigned([DateTimeOffset]::UtcNow.AddMinutes(-5), [DateTimeOffset]::UtcNow.AddDays(1))
        $public = [Security.Cryptography.X509Certificates.X509CertificateLoader]::LoadCertificate($script:AgentCert.RawData)
        ErrorId { Get-KmsDataKey -Server $script:Url -SkipCertificateCheck -Certificate $public -Provider 'prov-local' -KeyIdentifier 'disk-1' } | Should -Be 'KmsCertificateRequired'
    }

    It 'reports a refusal (no verifier passes this agent) as KmsReleaseRefused and returns no key' {
        $out = $null
        ErrorId { $script:out = Get-KmsDataKey -Server $script:Url -SkipCertificateCheck -Certificate $script:AgentCert -AgentId 'agent-x' -Provider 'prov-local' -KeyIdentifier 'disk-1' -AsPlainBytes } | Should -Be 'KmsReleaseRefused'
        ErrorId { Get-KmsDataKey -Server $script:Url -SkipCertificateCheck -Certificate $script:AgentCert -Key 'disk-key' -Version 1 } | Should -Be 'KmsReleaseRefused'
        $script:out | Should -BeNullOrEmpty
        $audit = Get-ProvisioningAuditLog -DataPath $script:Data -ErrorAction SilentlyContinue | Where-Object Action -EQ 'kms.release'
        @($audit).Count | Should -BeGreaterOrEqual 2
    }

    It 'reports an unreachable server as ServerUnreachable' {
        $l = [Net.Sockets.TcpListener]::new([Net.IPAddress]::Loopback, 0); $l.Start(); $port = $l.LocalEndpoint.Port; $l.Stop()
        ErrorId { Get-KmsDataKey -Server "https://127.0.0.1:$port" -SkipCertificateCheck -Certificate $script:AgentCert -Provider 'p' -KeyIdentifier 'k' } | Should -Be 'ServerUnreachable'
    }
}

Describe 'Secrets' {
    It 'no key derivation key appears in any output, the server log or the database file' {
        $script:Kdks.Count | Should -BeGreaterThan 5
        $outputs = $script:Outputs.ToString()
        $outputs.Length | Should -BeGreaterThan 1000
        $log = (Get-ProvisioningServerLog -InputObject $script:Server -Tail 100000 | ForEach-Object Message) -join "`n"
        $log.Length | Should -BeGreaterThan 0
        $files = (Get-ChildItem (Join-Path $script:Data 'logs') -File -Recurse -ErrorAction SilentlyContinue | Get-Content -Raw) -join "`n"
        $db = [Text.Encoding]::Latin1.GetString([IO.File]::ReadAllBytes((Join-Path $script:Data 'tpmprovisioning.db')))
        foreach ($k in $script:Kdks) {
            $outputs.Contains($k) | Should -BeFalse
            $log.Contains($k) | Should -BeFalse
            $files.Contains($k) | Should -BeFalse
            $db.Contains($k) | Should -BeFalse
            $db.Contains([Text.Encoding]::Latin1.GetString([Convert]::FromBase64String($k))) | Should -BeFalse
        }
    }
}
