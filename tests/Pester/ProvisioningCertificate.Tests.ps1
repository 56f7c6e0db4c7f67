#Requires -Version 7.6
# Export-ProvisioningCertificate / Import-ProvisioningCertificate: real data paths, a real registrar over mutual TLS.
BeforeAll {
    $ModulePath = $env:TPMPROV_MODULE_PATH
    if (-not $ModulePath) { throw 'Set TPMPROV_MODULE_PATH to the built module manifest (build.ps1 Test does).' }
    Import-Module $ModulePath -Force
    $script:Work = Join-Path ([IO.Path]::GetTempPath()) ("tpmprov-pester-cert-" + [guid]::NewGuid())
    New-Item -ItemType Directory -Path $script:Work | Out-Null
    $script:A = Join-Path $script:Work 'a'
    $script:B = Join-Path $script:Work 'b'
    # One start per data path creates its components CA and server certificate.
    Start-ProvisioningServer -Port 0 -DataPath $script:A -Role Registrar | Stop-ProvisioningServer -Confirm:$false
    Start-ProvisioningServer -Port 0 -DataPath $script:B -Role Registrar | Stop-ProvisioningServer -Confirm:$false
    $script:Pw = ConvertTo-SecureString 'correct horse battery' -AsPlainText -Force
    function Get-CertText([string] $path) { [IO.File]::ReadAllText($path) }
}

AfterAll {
    Get-ProvisioningServer | Stop-ProvisioningServer -Confirm:$false
    Remove-Item $script:Work -Recurse -Force -ErrorAction Ignore
}

Describe 'Export-ProvisioningCertificate' {
    It 'exports the components CA certificate as PEM without its key' {
        $f = Export-ProvisioningCertificate -DataPath $script:A -Kind ComponentCa -Path (Join-Path $script:Work 'ca.pem')
        $f | Should -BeOfType System.IO.FileInfo
        $text = Get-CertText $f.FullName
        $text | Should -Not -Match 'PRIVATE KEY'
        ([regex]::Matches($text, 'BEGIN CERTIFICATE')).Count | Should -Be 1
        $exported = [Security.Cryptography.X509Certificates.X509Certificate2]::CreateFromPem($text)
        $ca = [Security.Cryptography.X509Certificates.X509Certificate2]::CreateFromPem([IO.File]::ReadAllText((Join-Path $script:A 'ca/cacert.pem')))
        $exported.Thumbprint | Should -Be $ca.Thumbprint
    }

    It 'exports the server (or agent) certificate' {
        $pfx = [Security.Cryptography.X509Certificates.X509CertificateLoader]::LoadPkcs12FromFile((Join-Path $script:A 'tls/server.pfx'), $null)
        $f = Export-ProvisioningCertificate -DataPath $script:A -Kind Server -Path (Join-Path $script:Work 'server.pem')
        [Security.Cryptography.X509Certificates.X509Certificate2]::CreateFromPem([IO.File]::ReadAllText($f.FullName)).Thumbprint | Should -Be $pfx.Thumbprint
    }

    It 'exports a client certificate with its key only when asked, encrypted, owner-only' {
        $client = New-ProvisioningClientCertificate -DataPath $script:A -Name 'tenant-x' -Confirm:$false
        $path = Join-Path $script:Work 'tenant.pem'
        $client | Export-ProvisioningCertificate -Path $path -IncludePrivateKey -Password $script:Pw | Out-Null
        $text = Get-CertText $path
        $text | Should -Match 'BEGIN ENCRYPTED PRIVATE KEY'
        $text | Should -Not -Match 'BEGIN PRIVATE KEY'
        if (-not $IsWindows) { (Get-Item $path).UnixFileMode | Should -Be ([IO.UnixFileMode]'UserRead, UserWrite') }
        $back = [Security.Cryptography.X509Certificates.X509Certificate2]::CreateFromEncryptedPemFile($path, 'correct horse battery')
        $back.HasPrivateKey | Should -BeTrue
        $back.Thumbprint | Should -Be $client.Thumbprint
        { [Security.Cryptography.X509Certificates.X509Certificate2]::CreateFromEncryptedPemFile($path, 'wrong') } | Should -Throw
        # Without -IncludePrivateKey the key stays behind.
        $client | Export-ProvisioningCertificate -Path (Join-Path $script:Work 'tenant-pub.pem') | Out-Null
        Get-CertText (Join-Path $script:Work 'tenant-pub.pem') | Should -Not -Match 'PRIVATE KEY'
    }

    It 'refuses PFX without the key, a key without a password, and an existing file without -Force' {
        $pfx = Join-Path $script:Work 'nokey.pfx'
        Export-ProvisioningCertificate -DataPath $script:A -Path $pfx -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -BeLike 'PfxNeedsPrivateKey,*'
        Export-ProvisioningCertificate -DataPath $script:A -Path $pfx -IncludePrivateKey -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -BeLike 'PasswordRequired,*'
        Test-Path $pfx | Should -BeFalse
        $existing = Join-Path $script:Work 'ca.pem'
        Export-ProvisioningCertificate -DataPath $script:A -Path $existing -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -BeLike 'FileExists,*'
        Export-ProvisioningCertificate -DataPath $script:A -Path $existing -Force | Should -Not -BeNullOrEmpty
        Export-ProvisioningCertificate -DataPath (Join-Path $script:Work 'none') -Path (Join-Path $script:Work 'none.pem') -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -BeLike 'CertificateNotFound,*'
    }

    It 'writes nothing with -WhatIf' {
        $path = Join-Path $script:Work 'whatif.pfx'
        Export-ProvisioningCertificate -DataPath $script:A -Path $path -IncludePrivateKey -Password $script:Pw -WhatIf
        Test-Path $path | Should -BeFalse
    }
}

Describe 'Import-ProvisioningCertificate' {
    BeforeAll {
        $script:CaPfx = Join-Path $script:Work 'components-ca.pfx'
        Export-ProvisioningCertificate -DataPath $script:A -Kind ComponentCa -Path $script:CaPfx -IncludePrivateKey -Password $script:Pw | Out-Null
        $script:BCaBefore = Get-CertText (Join-Path $script:B 'ca/cacert.pem')
    }

    It 'refuses to replace a components CA without -Force, with a wrong password, or with -WhatIf' {
        Import-ProvisioningCertificate -DataPath $script:B -Kind ComponentCa -Path $script:CaPfx -Password $script:Pw -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -BeLike 'ComponentCaExists,*'
        $wrong = ConvertTo-SecureString 'wrong' -AsPlainText -Force
        Import-ProvisioningCertificate -DataPath $script:B -Kind ComponentCa -Path $script:CaPfx -Password $wrong -Force -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -BeLike 'CertificateUnreadable,*'
        Import-ProvisioningCertificate -DataPath $script:B -Kind ComponentCa -Path (Join-Path $script:Work 'ca.pem') -Force -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -BeLike 'CertificateUnreadable,*'
        Import-ProvisioningCertificate -DataPath $script:B -Kind ComponentCa -Path $script:CaPfx -Password $script:Pw -Force -WhatIf
        Get-CertText (Join-Path $script:B 'ca/cacert.pem') | Should -Be $script:BCaBefore
    }

    It 'refuses a client certificate as CA and a server certificate from a foreign CA' {
        $client = New-ProvisioningClientCertificate -DataPath $script:A -Name 'not-a-ca' -Confirm:$false
        $p = Join-Path $script:Work 'client.pfx'
        $client | Export-ProvisioningCertificate -Path $p -IncludePrivateKey -Password $script:Pw | Out-Null
        Import-ProvisioningCertificate -DataPath $script:B -Kind ComponentCa -Path $p -Password $script:Pw -Force -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -BeLike 'NotAComponentCa,*'
        $serverA = Join-Path $script:Work 'server-a.pfx'
        Export-ProvisioningCertificate -DataPath $script:A -Kind Server -Path $serverA -IncludePrivateKey -Password $script:Pw | Out-Null
        Import-ProvisioningCertificate -DataPath $script:B -Kind Server -Path $serverA -Password $script:Pw -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -BeLike 'ServerCertificateRejected,*'
        Get-CertText (Join-Path $script:B 'ca/cacert.pem') | Should -Be $script:BCaBefore
    }

    It 'shares one components CA: a client certificate from A is accepted by a registrar on B' {
        $ca = Import-ProvisioningCertificate -DataPath $script:B -Kind ComponentCa -Path $script:CaPfx -Password $script:Pw -Force -Confirm:$false
        $ca.HasPrivateKey | Should -BeFalse
        $ca.Thumbprint | Should -Be ([Security.Cryptography.X509Certificates.X509Certificate2]::CreateFromPem([IO.File]::ReadAllText((Join-Path $script:A 'ca/cacert.pem'))).Thumbprint)
        if (-not $IsWindows) { (Get-Item (Join-Path $script:B 'ca/cakey.pem')).UnixFileMode | Should -Be ([IO.UnixFileMode]'UserRead, UserWrite') }
        $reg = Start-ProvisioningServer -Port 0 -DataPath $script:B -Role Registrar
        try {
            $reg.CaCertificatePath | Should -Be (Join-Path $script:B 'ca/cacert.pem')
            $tenantFromA = New-ProvisioningClientCertificate -DataPath $script:A -Name 'tenant-a' -Confirm:$false
            $r = Invoke-RestMethod "$($reg.Urls[0])/v2.1/agents/" -Certificate $tenantFromA -SkipCertificateCheck
            $r.code | Should -Be 200
            Get-ProvisioningAuditLog -DataPath $script:B -Action cert.import | Should -Not -BeNullOrEmpty
        }
        finally { $reg | Stop-ProvisioningServer -Confirm:$false }
        # The server certificate was reissued from the imported CA; importing it back as Server is accepted.
        $serverB = Join-Path $script:Work 'server-b.pem'
        Export-ProvisioningCertificate -DataPath $script:B -Kind Server -Path $serverB -IncludePrivateKey -Password $script:Pw | Out-Null
        (Import-ProvisioningCertificate -DataPath $script:B -Kind Server -Path $serverB -Password $script:Pw -Confirm:$false).Subject | Should -Match 'TpmProvisioning Server'
    }
}
