#Requires -Version 7.6
# Station signing keys and secrets at rest through the cmdlets: a server in this session (Provisioning and Station roles,
# a key-file master key), PEM CA keys made here; local (-DataPath) and remote (-Server) alike. The HSM path is covered by
# the xunit StationSigningKeyTests (SoftHSM2 must be configured before its module is first loaded in a process).
BeforeAll {
    $ModulePath = $env:TPMPROV_MODULE_PATH
    if (-not $ModulePath) { throw 'Set TPMPROV_MODULE_PATH to the built module manifest (build.ps1 Test does).' }
    Import-Module $ModulePath -Force
    $script:Work = Join-Path ([IO.Path]::GetTempPath()) ("tpmprov-pester-keys-" + [guid]::NewGuid())
    New-Item -ItemType Directory -Path $script:Work | Out-Null
    $script:Data = Join-Path $script:Work 'data'
    $script:Server = Start-ProvisioningServer -Port 0 -DataPath $script:Data -Role Provisioning, Station -MasterKey InsecureFile -WarningAction SilentlyContinue
    $script:Token = New-StationToken -DataPath $script:Data -Name 'pester-keys' -Confirm:$false
    $script:Remote = @{ Server = $script:Server.Urls[0]; Token = $script:Token.Token; CaCertificate = $script:Server.CaCertificatePath }

    function New-TestCa([string] $Name, [scriptblock] $MakeKey, [bool] $Ca = $true) {
        $key = & $MakeKey
        $req = if ($key -is [Security.Cryptography.RSA]) {
            [Security.Cryptography.X509Certificates.CertificateRequest]::new("CN=$Name", $key, 'SHA256', [Security.Cryptography.RSASignaturePadding]::Pkcs1)
        } else {
            [Security.Cryptography.X509Certificates.CertificateRequest]::new("CN=$Name", $key, 'SHA256')
        }
        $req.CertificateExtensions.Add([Security.Cryptography.X509Certificates.X509BasicConstraintsExtension]::new($Ca, $false, 0, $true))
        $cert = $req.CreateSelfSigned([DateTimeOffset]::UtcNow.AddMinutes(-5), [DateTimeOffset]::UtcNow.AddYears(1))
        $certPath = Join-Path $script:Work "$Name.pem"
        $keyPath = Join-Path $script:Work "$Name.key.pem"
        Set-Content -Path $certPath -Value $cert.ExportCertificatePem()
        Set-Content -Path $keyPath -Value $key.ExportPkcs8PrivateKeyPem()
        [pscustomobject]@{ Cert = $certPath; Key = $keyPath; KeyPem = $key.ExportPkcs8PrivateKeyPem() }
    }
    $script:Good = New-TestCa 'plant-ca' { [Security.Cryptography.ECDsa]::Create([Security.Cryptography.ECCurve+NamedCurves]::nistP256) }
    $script:Weak = New-TestCa 'weak-ca' { [Security.Cryptography.RSA]::Create(1024) }
}

AfterAll {
    Get-ProvisioningServer | Stop-ProvisioningServer -Confirm:$false
    Remove-Item $script:Work -Recurse -Force -ErrorAction Ignore
}

Describe 'Signing keys' {
    It 'lists the built-in TPM CA as the active key, with a table view' {
        $keys = Get-ProvisioningSigningKey @script:Remote
        ($keys | Where-Object Active).Label | Should -Be 'builtin'
        $keys[0] | Should -BeOfType ([TpmProvisioning.Station.ProvisioningSigningKey])
        (Get-ProvisioningSigningKey -DataPath $script:Data | Format-Table | Out-String) | Should -Match 'builtin'
    }

    It 'adds nothing with -WhatIf, then adds a PEM key sealed with the master key' {
        Add-ProvisioningSigningKey -DataPath $script:Data -Label plant -Path $script:Good.Cert -KeyPath $script:Good.Key -WhatIf
        Get-ProvisioningSigningKey -DataPath $script:Data -Label plant -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -BeLike 'KEY_NOT_FOUND,*'
        $k = Add-ProvisioningSigningKey @script:Remote -Label plant -Path $script:Good.Cert -KeyPath $script:Good.Key -Confirm:$false
        $k.Location | Should -Be 'pem-wrapped'
        $k.WrapKeyId | Should -Match '^[0-9a-f]{16}$'
        (Get-ProvisioningSigningKey -DataPath $script:Data -Label plant).Fingerprint | Should -Be $k.Fingerprint
        ($k | Out-String) | Should -Not -Match 'PRIVATE KEY'
    }

    It 'refuses a weak key with the station''s error id, locally and remotely, and adds nothing' {
        Add-ProvisioningSigningKey -DataPath $script:Data -Label weak -Path $script:Weak.Cert -KeyPath $script:Weak.Key -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e1
        $e1[0].FullyQualifiedErrorId | Should -BeLike 'INVALID_KEY,*'
        Add-ProvisioningSigningKey @script:Remote -Label weak -Path $script:Good.Cert -KeyPath $script:Weak.Key -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e2
        $e2[0].FullyQualifiedErrorId | Should -BeLike 'INVALID_KEY,*'
        (Get-ProvisioningSigningKey -DataPath $script:Data).Label | Should -Not -Contain 'weak'
    }

    It 'activates a key, refuses to remove it while active, and removes it after switching back' {
        (Enable-ProvisioningSigningKey @script:Remote -Label plant -Confirm:$false).Active | Should -BeTrue
        (Get-ProvisioningSigningKey -DataPath $script:Data | Where-Object Active).Label | Should -Be 'plant'
        Remove-ProvisioningSigningKey -DataPath $script:Data -Label plant -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e
        $e[0].FullyQualifiedErrorId | Should -BeLike 'KEY_ACTIVE,*'
        Enable-ProvisioningSigningKey -DataPath $script:Data -Label builtin -Confirm:$false | Out-Null
        Remove-ProvisioningSigningKey @script:Remote -Label plant -WhatIf
        (Get-ProvisioningSigningKey -DataPath $script:Data).Label | Should -Contain 'plant'
        Remove-ProvisioningSigningKey @script:Remote -Label plant -Confirm:$false
        (Get-ProvisioningSigningKey -DataPath $script:Data).Label | Should -Not -Contain 'plant'
    }
}

Describe 'PKCS#11 and secrets at rest' {
    It 'refuses a module that does not exist, with no PIN stored' {
        $pin = ConvertTo-SecureString 'not-stored-1234' -AsPlainText -Force
        Set-Pkcs11Pin @script:Remote -Module '/nonexistent/libpkcs11.so' -TokenLabel t -Pin $pin -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e1
        $e1[0].FullyQualifiedErrorId | Should -BeLike 'PKCS11_MODULE_NOT_FOUND,*'
        Get-Pkcs11Status -DataPath $script:Data -Module 'relative/lib.so' -ErrorAction SilentlyContinue -ErrorVariable e2
        $e2[0].FullyQualifiedErrorId | Should -BeLike 'PKCS11_MODULE_INVALID,*'
        Get-Pkcs11Status @script:Remote | Should -BeNullOrEmpty
    }

    It 'reports no plaintext secret, wraps nothing twice, and says the same locally and remotely' {
        Add-ProvisioningSigningKey -DataPath $script:Data -Label again -Path $script:Good.Cert -KeyPath $script:Good.Key -Confirm:$false | Out-Null
        $remote = Get-ProvisioningSecretStatus @script:Remote
        $local = Get-ProvisioningSecretStatus -DataPath $script:Data
        ($remote | Where-Object Kind -eq 'signing-keys').Plaintext | Should -Be 0
        ($local | Where-Object Kind -eq 'signing-keys').WrappedBy[$remote[0].MasterKeyId] | Should -Be 1
        $local[0].MasterKeyId | Should -Be $remote[0].MasterKeyId
        ($remote | Measure-Object Plaintext -Sum).Sum | Should -Be 0
        Protect-ProvisioningSecret -DataPath $script:Data -WhatIf
        $r = Protect-ProvisioningSecret @script:Remote -Confirm:$false
        $r.TotalWrapped | Should -Be 0
        $r.AlreadyWrapped | Should -BeGreaterOrEqual 1
        ($r | Out-String) | Should -Match 'MasterKeyId'
        (Get-ProvisioningAuditLog -DataPath $script:Data -Action 'station.secrets.migrate') | Should -Not -BeNullOrEmpty
        [Text.Encoding]::ASCII.GetString([IO.File]::ReadAllBytes((Join-Path $script:Data 'tpmprovisioning.db'))).Contains(($script:Good.KeyPem -split "`n")[2].Trim()) | Should -BeFalse
    }
}
