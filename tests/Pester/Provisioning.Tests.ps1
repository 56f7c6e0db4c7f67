#Requires -Version 7.6
# Factory provisioning end to end through the cmdlets: a real swtpm, the server over HTTPS in this session, SQLite.
BeforeAll {
    $ModulePath = $env:TPMPROV_MODULE_PATH
    if (-not $ModulePath) { throw 'Set TPMPROV_MODULE_PATH to the built module manifest (build.ps1 Test does).' }
    Import-Module $ModulePath -Force
    $script:Work = Join-Path ([IO.Path]::GetTempPath()) ("tpmprov-pester-prov-" + [guid]::NewGuid())
    New-Item -ItemType Directory -Path $script:Work | Out-Null
    $script:Data = Join-Path $script:Work 'data'
    $script:Sim = Start-TpmSimulator -Name 'prov-a'
    $script:Server = Start-ProvisioningServer -Port 0 -DataPath $script:Data -Role Provisioning
    $script:Url = $script:Server.Urls[0]
    $script:Server | Add-TpmManufacturerCa -Path $script:Sim.ManufacturerRootPath -Confirm:$false | Out-Null
    $script:Server | Add-TpmManufacturerCa -Path $script:Sim.ManufacturerIssuerPath -Intermediate -Confirm:$false | Out-Null
    $script:Key = $script:Server | New-ProvisioningApiKey -Name 'plant-1' -Vendor 'Contoso' -Confirm:$false
    $script:TpmCaPem = Join-Path $script:Work 'tpmca.pem'
    $script:Server | Export-TpmCa -Path $script:TpmCaPem -Confirm:$false | Out-Null
    $script:Common = @{ Server = $script:Url; ApiKey = $script:Key.Key; SkipCertificateCheck = $true; TpmCaCertificate = $script:TpmCaPem; Confirm = $false }
    function script:Get-RecordCount { @(Get-ManufacturingRecord -DataPath $script:Data).Count }
}

AfterAll {
    Get-ProvisioningServer | Stop-ProvisioningServer -Confirm:$false
    Get-TpmSimulator | Stop-TpmSimulator -Confirm:$false
    Remove-Item $script:Work -Recurse -Force -ErrorAction Ignore
}

Describe 'Provisioning administration' {
    It 'creates an API key whose secret is returned once, as a SecureString, and stored only as a hash' {
        $script:Key.Key | Should -BeOfType ([securestring])
        $plain = ConvertFrom-SecureString $script:Key.Key -AsPlainText
        $plain | Should -Match '^tpk_'
        $listed = Get-ProvisioningApiKey -DataPath $script:Data -Name 'plant-1'
        $listed.KeyId | Should -Be $script:Key.KeyId
        ($listed | Get-Member -MemberType Property).Name | Should -Not -Contain 'Key'
        $db = [IO.File]::ReadAllBytes((Join-Path $script:Data 'tpmprovisioning.db'))
        [Text.Encoding]::ASCII.GetString($db).Contains($plain.Substring(20)) | Should -BeFalse
    }

    It 'lists the trusted manufacturer CAs and refuses a certificate that is not a CA' {
        $cas = Get-TpmManufacturerCa -DataPath $script:Data
        ($cas | Where-Object Kind -EQ 'Root').Count | Should -Be 1
        ($cas | Where-Object Kind -EQ 'Intermediate').Count | Should -Be 1
        $ek = $script:Sim | Get-TpmEndorsementKey
        Add-TpmManufacturerCa -DataPath $script:Data -Certificate $ek.Certificate -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -Be 'NotACaCertificate,TpmProvisioning.Cmdlets.AddTpmManufacturerCaCommand'
    }

    It 'takes CA certificates from the pipeline as objects and as files (Get-ChildItem), into the piped data path' {
        $other = Join-Path $script:Work 'pipe-data'
        $issuer = [System.Security.Cryptography.X509Certificates.X509Certificate2]::CreateFromPem((Get-Content -Raw $script:Sim.ManufacturerIssuerPath))
        $added = $issuer | Add-TpmManufacturerCa -Intermediate -DataPath $other -Confirm:$false
        $added.Kind | Should -Be 'Intermediate'
        $added.Subject | Should -Be $issuer.Subject
        $inbox = Join-Path $script:Work 'pipe-in'
        New-Item -ItemType Directory -Path $inbox -Force | Out-Null
        Copy-Item $script:Sim.ManufacturerRootPath (Join-Path $inbox 'root.pem')
        (Get-ChildItem $inbox -File | Add-TpmManufacturerCa -DataPath $other -Confirm:$false).Kind | Should -Be 'Root'
        @(Get-TpmManufacturerCa -DataPath $other).Count | Should -Be 2
        @(Get-TpmManufacturerCa -DataPath $script:Data).Count | Should -Be 2
    }

    It 'says so when a file is not a certificate, and when an export folder does not exist' {
        $before = @(Get-TpmManufacturerCa -DataPath $script:Data).Count
        $junk = Join-Path $TestDrive 'junk.pem'
        Set-Content -Path $junk -Value 'this is not a certificate'
        $garbled = Join-Path $TestDrive 'garbled.der'
        [IO.File]::WriteAllBytes($garbled, [byte[]](0x30, 0x82, 0x01, 0x00, 1, 2, 3))
        foreach ($file in $junk, $garbled) {
            $e = $null
            Add-TpmManufacturerCa -DataPath $script:Data -Path $file -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
            @($e).Count | Should -Be 1
            $e[0].FullyQualifiedErrorId | Should -Be 'NotACertificate,TpmProvisioning.Cmdlets.AddTpmManufacturerCaCommand'
            $e[0].CategoryInfo.Category | Should -Be 'InvalidData'
        }
        @(Get-TpmManufacturerCa -DataPath $script:Data).Count | Should -Be $before
        $e = $null
        Export-TpmCa -DataPath $script:Data -Path (Join-Path $TestDrive 'no/such/dir/ca.pem') -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -Be 'FolderNotFound,TpmProvisioning.Cmdlets.ExportTpmCaCommand'
        $e[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
    }

    It 'exports the TPM CA public certificate only and refuses to replace it without -Force' {
        (Get-Content -Raw $script:TpmCaPem) | Should -Match 'BEGIN CERTIFICATE'
        (Get-Content -Raw $script:TpmCaPem) | Should -Not -Match 'PRIVATE'
        New-TpmCa -DataPath $script:Data -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -Be 'TpmCaExists,TpmProvisioning.Cmdlets.NewTpmCaCommand'
    }
}

Describe 'Import-TpmCa with an encrypted key' {
    BeforeAll {
        $script:CaDir = Join-Path $script:Work 'import-ca'
        New-Item -ItemType Directory -Path $script:CaDir | Out-Null
        Push-Location $script:CaDir
        try {
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 30 -subj '/CN=Encrypted Import CA' `
                -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' 2>$null
            openssl pkey -in ca.key -aes256 -passout 'pass:right horse battery' -out ca.key.enc 2>$null
            openssl ec -in ca.key -aes256 -passout 'pass:right horse battery' -out ca.legacy.key 2>$null
            Remove-Item ca.key
        }
        finally { Pop-Location }
        $script:ImportData = Join-Path $script:Work 'import-data'
        New-Item -ItemType Directory -Path $script:ImportData | Out-Null
        $script:CaPem = Join-Path $script:CaDir 'ca.pem'
        $script:EncKey = Join-Path $script:CaDir 'ca.key.enc'
        $script:Right = ConvertTo-SecureString 'right horse battery' -AsPlainText -Force
    }

    It 'refuses an encrypted key without -KeyPassword, and with a wrong one, and imports nothing' {
        Get-Content -Raw $script:EncKey | Should -Match 'BEGIN ENCRYPTED PRIVATE KEY'
        Import-TpmCa $script:CaPem $script:EncKey -DataPath $script:ImportData -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -BeLike 'KeyPasswordRequired,*'
        $e[0].Exception.Message | Should -Match '-KeyPassword'
        $wrong = ConvertTo-SecureString 'wrong horse' -AsPlainText -Force
        Import-TpmCa $script:CaPem $script:EncKey -KeyPassword $wrong -DataPath $script:ImportData -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e2 | Should -BeNullOrEmpty
        $e2[0].FullyQualifiedErrorId | Should -BeLike 'KeyPasswordIncorrect,*'
        $e2[0].CategoryInfo.Category | Should -Be 'AuthenticationError'
        Import-TpmCa $script:CaPem (Join-Path $script:CaDir 'ca.legacy.key') -KeyPassword $script:Right -DataPath $script:ImportData -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e3 | Should -BeNullOrEmpty
        $e3[0].FullyQualifiedErrorId | Should -BeLike 'KeyFormatNotSupported,*'
        Test-Path (Join-Path $script:ImportData 'provisioning/tpm-ca') | Should -BeFalse
    }

    It 'opens the key with its password in memory and imports the CA (the key must match the certificate)' {
        $ca = Import-TpmCa $script:CaPem $script:EncKey -KeyPassword $script:Right -DataPath $script:ImportData -Confirm:$false
        $ca.Subject | Should -Be 'CN=Encrypted Import CA'
        (Export-TpmCa -DataPath $script:ImportData).Thumbprint | Should -Be $ca.Thumbprint
        # Nothing decrypted was written beside the encrypted key.
        (Get-ChildItem $script:CaDir).Name | Sort-Object | Should -Be @('ca.key.enc', 'ca.legacy.key', 'ca.pem')
    }
}

Describe 'New-TpmProvisioning' {
    It 'provisions a device on swtpm: the AK certificate chains to the TPM CA and carries the persisted AK' {
        $before = Get-RecordCount
        $r = New-TpmProvisioning @script:Common -Tpm $script:Sim.ConnectionString -DeviceName 'sensor-0001' -Serial 'SN-0001' -Vendor 'Contoso' -Version '1.0'
        $r.Serial | Should -Be 'SN-0001'
        $r.AkCertificate.Subject | Should -Match 'SN-0001'
        $ca = [Security.Cryptography.X509Certificates.X509Certificate2]::CreateFromPem((Get-Content -Raw $script:TpmCaPem))
        $chain = [Security.Cryptography.X509Certificates.X509Chain]::new()
        $chain.ChainPolicy.TrustMode = 'CustomRootTrust'; $chain.ChainPolicy.RevocationMode = 'NoCheck'
        [void]$chain.ChainPolicy.CustomTrustStore.Add($ca)
        $chain.Build($r.AkCertificate) | Should -BeTrue
        $pem = Join-Path $script:Work 'ak.pem'
        & tpm2_readpublic -T $script:Sim.ConnectionString -c $r.AkHandle -f pem -o $pem 2>&1 | Out-Null
        $LASTEXITCODE | Should -Be 0
        $akSpki = [Convert]::ToBase64String($r.AkCertificate.PublicKey.ExportSubjectPublicKeyInfo())
        (Get-Content -Raw $pem) -replace '-----[A-Z ]+-----|\s', '' | Should -Be $akSpki
        Get-RecordCount | Should -Be ($before + 1)
        (Get-ManufacturingRecord -DataPath $script:Data -Serial 'SN-0001').EkFingerprint | Should -Not -BeNullOrEmpty
    }

    It 'provisions a CSV batch on two TPMs with -ThrottleLimit, writing one result per row' {
        $simB = Start-TpmSimulator -Name 'prov-b' -Fast
        try {
            $csv = Join-Path $script:Work 'devices.csv'
            @(
                [pscustomobject]@{ Tpm = $script:Sim.ConnectionString; DeviceName = 'sensor-0002'; Serial = 'SN-0001'; Vendor = 'Contoso'; Version = '1.1' }
                [pscustomobject]@{ Tpm = $simB.ConnectionString; DeviceName = 'sensor-0003'; Serial = 'SN-0003'; Vendor = 'Contoso'; Version = '2' }
            ) | Export-Csv -Path $csv -NoTypeInformation
            $results = Import-Csv $csv | New-TpmProvisioning @script:Common -ThrottleLimit 2
            $results.Count | Should -Be 2
            ($results.Serial | Sort-Object) | Should -Be @('SN-0001', 'SN-0003')
        }
        finally { $simB | Stop-TpmSimulator -Confirm:$false }
    }

    It 'refuses a second TPM for a known serial with 409 and stores nothing' {
        $other = Start-TpmSimulator -Name 'prov-c'
        try {
            $before = Get-RecordCount
            $r = New-TpmProvisioning @script:Common -Tpm $other.ConnectionString -DeviceName 'sensor-0001' -Serial 'SN-0001' -Vendor 'Contoso' -Version '1.0' -ErrorAction SilentlyContinue -ErrorVariable e
            $r | Should -BeNullOrEmpty
            $e[0].FullyQualifiedErrorId | Should -Be 'ProvisioningRefused409,TpmProvisioning.Cmdlets.NewTpmProvisioningCommand'
            Get-RecordCount | Should -Be $before
            ((Get-TpmInfo -Tpm $other.ConnectionString).PersistentHandles | Where-Object { $_ -lt 0x81010000 }) | Should -BeNullOrEmpty
        }
        finally { $other | Stop-TpmSimulator -Confirm:$false }
    }

    It 'refuses a vendor outside the key scope (403), a disabled key (403) and a removed key (401)' {
        $args1 = @{ Tpm = $script:Sim.ConnectionString; DeviceName = 'sensor-0009'; Serial = 'SN-0009'; Version = '1' }
        New-TpmProvisioning @script:Common @args1 -Vendor 'Fabrikam' -ErrorAction SilentlyContinue -ErrorVariable e1 | Out-Null
        $e1[0].FullyQualifiedErrorId | Should -BeLike 'ProvisioningRefused403,*'

        $k2 = New-ProvisioningApiKey -DataPath $script:Data -Name 'plant-2' -Confirm:$false
        $k2 | Set-ProvisioningApiKey -DataPath $script:Data -Enabled $false -Confirm:$false
        (Get-ProvisioningApiKey -DataPath $script:Data -Name $k2.KeyId).Enabled | Should -BeFalse
        $c2 = $script:Common.Clone(); $c2.ApiKey = $k2.Key
        New-TpmProvisioning @c2 @args1 -Vendor 'Contoso' -ErrorAction SilentlyContinue -ErrorVariable e2 | Out-Null
        $e2[0].FullyQualifiedErrorId | Should -BeLike 'ProvisioningRefused403,*'

        $k2 | Remove-ProvisioningApiKey -DataPath $script:Data -Confirm:$false
        New-TpmProvisioning @c2 @args1 -Vendor 'Contoso' -ErrorAction SilentlyContinue -ErrorVariable e3 | Out-Null
        $e3[0].FullyQualifiedErrorId | Should -BeLike 'CredentialsRefused,*'
        Get-ManufacturingRecord -DataPath $script:Data -Serial 'SN-0009' | Should -BeNullOrEmpty
    }

    It 'pipes keys and manufacturer CAs between cmdlets on the store they came from, not the default one' {
        # The default store is elsewhere: a cmdlet that fell back to it would not find these keys.
        $savedDefault = $env:TPMPROV_DATA
        $env:TPMPROV_DATA = Join-Path $TestDrive 'default-store'
        try {
            $k3 = $script:Server | New-ProvisioningApiKey -Name 'plant-pipe-1' -Vendor 'Contoso' -Disabled -Confirm:$false
            $k3.DataPath | Should -Be $script:Server.DataPath
            $updated = $script:Server | Get-ProvisioningApiKey -Name 'plant-pipe-*' | Set-ProvisioningApiKey -Enabled $true -PassThru -Confirm:$false
            $updated.Enabled | Should -BeTrue
            $updated.DataPath | Should -Be $script:Server.DataPath
            (Get-ProvisioningApiKey -DataPath $script:Data -Name 'plant-pipe-1').Enabled | Should -BeTrue
            $script:Server | Get-ProvisioningApiKey -Name 'plant-pipe-*' | Remove-ProvisioningApiKey -Confirm:$false
            Get-ProvisioningApiKey -DataPath $script:Data -Name 'plant-pipe-*' | Should -BeNullOrEmpty
            $ca = Get-TpmManufacturerCa -DataPath $script:Data | Where-Object Kind -EQ 'Intermediate'
            $ca.DataPath | Should -Be $script:Data
            $ca | Remove-TpmManufacturerCa -WhatIf
            @(Get-TpmManufacturerCa -DataPath $script:Data | Where-Object Kind -EQ 'Intermediate').Count | Should -Be 1
            Test-Path (Join-Path $env:TPMPROV_DATA 'tpmprovisioning.db') | Should -BeFalse
        }
        finally { $env:TPMPROV_DATA = $savedDefault }
    }

    It 'says StoreNotFound for a mistyped -DataPath instead of answering with an empty fleet' {
        $typo = Join-Path $TestDrive 'no-such-data-path'
        $ErrorActionPreference = 'Continue'   # collect the (non-terminating) errors instead of stopping at the first
        foreach ($read in { Get-ManufacturingRecord -DataPath $typo }, { Get-ProvisioningApiKey -DataPath $typo }, { Get-ProvisioningAuditLog -DataPath $typo },
                          { Set-ProvisioningApiKey -DataPath $typo -KeyId 'x' -Enabled $true -Confirm:$false }, { Remove-ProvisioningApiKey -DataPath $typo -KeyId 'x' -Confirm:$false }) {
            $out = @(& $read 2>&1)
            $e = @($out | Where-Object { $_ -is [System.Management.Automation.ErrorRecord] })
            $out.Count | Should -Be 1
            $e.Count | Should -Be 1
            $e[0].FullyQualifiedErrorId | Should -BeLike 'StoreNotFound,*'
            $e[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        }
        { Get-KmsProvider -DataPath $typo -ErrorAction Stop } | Should -Throw -ErrorId 'StoreNotFound,*'
        Test-Path $typo | Should -BeFalse   # reading created nothing
    }

    It 'changes nothing under -WhatIf' {
        $before = Get-RecordCount
        $handles = (Get-TpmInfo -Tpm $script:Sim.ConnectionString).PersistentHandles
        New-TpmProvisioning @script:Common -Tpm $script:Sim.ConnectionString -DeviceName 'sensor-0010' -Serial 'SN-0010' -Vendor 'Contoso' -Version '1' -WhatIf | Should -BeNullOrEmpty
        Get-RecordCount | Should -Be $before
        (Get-TpmInfo -Tpm $script:Sim.ConnectionString).PersistentHandles | Should -Be $handles
    }

    It 'refuses a device name shorter than 6 characters before contacting anything' {
        { New-TpmProvisioning @script:Common -Tpm $script:Sim.ConnectionString -DeviceName 'short' -Serial 'SN-1' -Vendor 'Contoso' -Version '1' -ErrorAction Stop } |
            Should -Throw -ErrorId 'ParameterArgumentValidationError,TpmProvisioning.Cmdlets.NewTpmProvisioningCommand'
    }

    It 'audits every call with the key id as actor and never the key' {
        $audit = Get-ProvisioningAuditLog -DataPath $script:Data -Last 1000
        ($audit | Where-Object { $_.Action -like 'provision*' -and $_.Actor -eq $script:Key.KeyId }).Count | Should -BeGreaterThan 0
        $plain = ConvertFrom-SecureString $script:Key.Key -AsPlainText
        ($audit | Where-Object { "$($_.Actor) $($_.Detail) $($_.Target)".Contains($plain) }) | Should -BeNullOrEmpty
        $log = Get-ChildItem (Join-Path $script:Data 'logs') -File -ErrorAction Ignore | Get-Content -Raw
        "$log".Contains($plain) | Should -BeFalse
    }
}
