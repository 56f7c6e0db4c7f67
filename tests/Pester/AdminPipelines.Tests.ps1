#Requires -Version 7.6
# Piped objects keep their store (issue 15, item 1): every object a Get- writes carries its DataPath (or Server), and the
# Set-/Remove-/Enable-/Disable-/Add- it is piped to acts on that store. The default data path here has no store at all,
# so a silent fall-back to it fails loudly (StoreNotFound) instead of passing by luck.
BeforeAll {
    $ModulePath = $env:TPMPROV_MODULE_PATH
    if (-not $ModulePath) { throw 'Set TPMPROV_MODULE_PATH to the built module manifest (build.ps1 Test does).' }
    Import-Module $ModulePath -Force
    $script:Work = Join-Path ([IO.Path]::GetTempPath()) ("tpmprov-pester-pipes-" + [guid]::NewGuid())
    New-Item -ItemType Directory -Path $script:Work | Out-Null
    $script:SavedData = $env:TPMPROV_DATA
    $env:TPMPROV_DATA = Join-Path $script:Work 'default-has-no-store'
    $script:Plant = Join-Path $script:Work 'plant-x'
    $script:Other = Join-Path $script:Work 'plant-y'
    $fast = [TpmProvisioning.Kms.KmsSettings]@{ MasterKey = 'InsecureFile'; PasswordIterations = 1000 }
    foreach ($dp in $script:Plant, $script:Other) {
        New-KmsUser -DataPath $dp -KmsSettings $fast -Name 'kms-admin' -Password (ConvertTo-SecureString 'admin-password-1' -AsPlainText -Force) -Role Administrator -Confirm:$false -WarningAction SilentlyContinue | Out-Null
    }
    function script:Kdk { $b = [byte[]]::new(32); [Security.Cryptography.RandomNumberGenerator]::Fill($b); ConvertTo-SecureString ([Convert]::ToBase64String($b)) -AsPlainText -Force }
    function script:NewCaPem([string] $cn) {
        $key = [Security.Cryptography.ECDsa]::Create([Security.Cryptography.ECCurve+NamedCurves]::nistP256)
        $req = [Security.Cryptography.X509Certificates.CertificateRequest]::new("CN=$cn", $key, [Security.Cryptography.HashAlgorithmName]::SHA256)
        $req.CertificateExtensions.Add([Security.Cryptography.X509Certificates.X509BasicConstraintsExtension]::new($true, $false, 0, $true))
        $cert = $req.CreateSelfSigned([DateTimeOffset]::Now.AddMinutes(-5), [DateTimeOffset]::Now.AddYears(1))
        $path = Join-Path $script:Work "$cn.pem"
        Set-Content -Path $path -Value $cert.ExportCertificatePem()
        $path
    }
    $script:Quiet = @{ WarningAction = 'SilentlyContinue'; ErrorAction = 'Stop' }
}

AfterAll {
    $env:TPMPROV_DATA = $script:SavedData
    Remove-Item $script:Work -Recurse -Force -ErrorAction Ignore
}

Describe 'Objects carry their store through the pipeline' {
    It 'the default data path has no store, so a fall-back to it is an error' {
        { Get-ProvisioningApiKey -ErrorAction Stop } | Should -Throw -ErrorId 'StoreNotFound*'
    }

    It 'API keys: Get | Set and Get | Remove act on the piped store' {
        New-ProvisioningApiKey -DataPath $script:Plant -Name 'plant-1' -Confirm:$false | Out-Null
        New-ProvisioningApiKey -DataPath $script:Plant -Name 'plant-2' -Confirm:$false | Out-Null
        $keys = Get-ProvisioningApiKey -DataPath $script:Plant -Name 'plant-*'
        $keys.DataPath | Sort-Object -Unique | Should -Be $script:Plant
        $keys | Set-ProvisioningApiKey -Enabled $false -Confirm:$false @script:Quiet
        (Get-ProvisioningApiKey -DataPath $script:Plant -Name 'plant-*').Enabled | Should -Not -Contain $true
        Get-ProvisioningApiKey -DataPath $script:Plant -Name 'plant-2' | Remove-ProvisioningApiKey -Confirm:$false @script:Quiet
        (Get-ProvisioningApiKey -DataPath $script:Plant).Name | Should -Be 'plant-1'
    }

    It 'manufacturer CAs: Add | Get | Remove act on the piped store' {
        $pem = NewCaPem 'pipes-maker-root'
        $added = Add-TpmManufacturerCa -DataPath $script:Plant -Path $pem -Confirm:$false
        $added.DataPath | Should -Be $script:Plant
        Get-TpmManufacturerCa -DataPath $script:Plant | Where-Object Subject -Match 'pipes-maker-root' | Remove-TpmManufacturerCa -Confirm:$false @script:Quiet
        Get-TpmManufacturerCa -DataPath $script:Plant | Where-Object Subject -Match 'pipes-maker-root' | Should -BeNullOrEmpty
    }

    It 'KMS providers: Get | Set and Get | Remove act on the piped store' {
        New-KmsProvider -DataPath $script:Plant -Name 'prov-a' -KeyId 'k-1' -KeyDerivationKey (Kdk) -Confirm:$false @script:Quiet | Out-Null
        $p = Get-KmsProvider -DataPath $script:Plant -Name 'prov-a' @script:Quiet
        $p.DataPath | Should -Be $script:Plant
        $p | Set-KmsProvider -KeyId 'k-2' -Confirm:$false @script:Quiet
        (Get-KmsProvider -DataPath $script:Plant -Name 'prov-a' @script:Quiet).KeyId | Should -Be 'k-2'
        Get-KmsProvider -DataPath $script:Plant -Name 'prov-a' @script:Quiet | Remove-KmsProvider -Confirm:$false @script:Quiet
        Get-KmsProvider -DataPath $script:Plant @script:Quiet | Should -BeNullOrEmpty
    }

    It 'KMS providers from two stores in one pipeline each go back to their own store' {
        New-KmsProvider -DataPath $script:Plant -Name 'twin' -KeyId 'x-1' -KeyDerivationKey (Kdk) -Confirm:$false @script:Quiet | Out-Null
        New-KmsProvider -DataPath $script:Other -Name 'twin' -KeyId 'y-1' -KeyDerivationKey (Kdk) -Confirm:$false @script:Quiet | Out-Null
        @(Get-KmsProvider -DataPath $script:Plant -Name 'twin' @script:Quiet) + @(Get-KmsProvider -DataPath $script:Other -Name 'twin' @script:Quiet) |
            Set-KmsProvider -KeyId 'moved' -PassThru -Confirm:$false @script:Quiet | ForEach-Object DataPath | Should -Be @($script:Plant, $script:Other)
        (Get-KmsProvider -DataPath $script:Plant -Name 'twin' @script:Quiet).KeyId | Should -Be 'moved'
        (Get-KmsProvider -DataPath $script:Other -Name 'twin' @script:Quiet).KeyId | Should -Be 'moved'
    }

    It 'KMS keys: Get | Add-KmsKeyVersion | and Get | Get-KmsKeyVersion act on the piped store' {
        New-KmsKey -DataPath $script:Plant -Name 'disk-key' -Confirm:$false @script:Quiet | Out-Null
        $k = Get-KmsKey -DataPath $script:Plant -Name 'disk-key' @script:Quiet
        $k.DataPath | Should -Be $script:Plant
        $v = $k | Add-KmsKeyVersion -Native -Confirm:$false @script:Quiet
        $v.DataPath | Should -Be $script:Plant
        @($k | Get-KmsKeyVersion @script:Quiet).Count | Should -Be 2
    }

    It 'KMS users: Get | Remove acts on the piped store' {
        New-KmsUser -DataPath $script:Plant -Name 'reader-1' -Password (ConvertTo-SecureString 'reader-password-1' -AsPlainText -Force) -Confirm:$false @script:Quiet | Out-Null
        $u = Get-KmsUser -DataPath $script:Plant -Name 'reader-1' @script:Quiet
        $u.DataPath | Should -Be $script:Plant
        $u | Remove-KmsUser -Confirm:$false @script:Quiet
        Get-KmsUser -DataPath $script:Plant -Name 'reader-1' @script:Quiet | Should -BeNullOrEmpty
    }

    It 'station tokens: New | Remove and Get | Remove act on the piped store' {
        $t = New-StationToken -DataPath $script:Plant -Name 'line-1' -Confirm:$false @script:Quiet
        $t.DataPath | Should -Be $script:Plant
        New-StationToken -DataPath $script:Plant -Name 'line-2' -Confirm:$false @script:Quiet | Out-Null
        $t | Remove-StationToken -Confirm:$false @script:Quiet
        (Get-StationToken -DataPath $script:Plant @script:Quiet).Name | Should -Be 'line-2'
        Get-StationToken -DataPath $script:Plant @script:Quiet | Remove-StationToken -Confirm:$false @script:Quiet
        Get-StationToken -DataPath $script:Plant @script:Quiet | Should -BeNullOrEmpty
    }

    It 'station scripts: Set | Disable | Enable | Remove act on the piped store' {
        $s = Set-ProvisioningScript -DataPath $script:Plant -Name 'bootstrap' -Content "'hello'" -Confirm:$false @script:Quiet
        $s.DataPath | Should -Be $script:Plant
        Get-ProvisioningScript -DataPath $script:Plant -Name 'bootstrap' @script:Quiet | Enable-ProvisioningScript -Confirm:$false @script:Quiet
        (Get-ProvisioningScript -DataPath $script:Plant -Name 'bootstrap' @script:Quiet).Enabled | Should -BeTrue
        Get-ProvisioningScript -DataPath $script:Plant -Name 'bootstrap' @script:Quiet | Disable-ProvisioningScript -Confirm:$false @script:Quiet
        (Get-ProvisioningScript -DataPath $script:Plant -Name 'bootstrap' @script:Quiet).Enabled | Should -BeFalse
        Get-ProvisioningScript -DataPath $script:Plant -Name 'bootstrap' @script:Quiet | Remove-ProvisioningScript -Confirm:$false @script:Quiet
        Get-ProvisioningScript -DataPath $script:Plant @script:Quiet | Where-Object Name -EQ 'bootstrap' | Should -BeNullOrEmpty
    }

    It 'manufacturing records carry their store (Get-ManufacturingRecord | Get-DeviceLabel looks in the same one)' {
        $r = [pscustomobject]@{ Serial = 'SN-NONE'; DataPath = $script:Plant }
        $r | Get-DeviceLabel -Path (Join-Path $script:Work 'label.png') -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e | Out-Null
        $e[0].FullyQualifiedErrorId | Should -Not -BeLike 'StoreNotFound*'
    }
}

Describe 'Remote objects carry their server' {
    BeforeAll {
        $script:Kms = Start-ProvisioningServer -Name 'pipes-kms' -Role Kms -Port 0 -DataPath $script:Other -KmsMasterKey InsecureFile -WarningAction SilentlyContinue
        $script:Cred = [pscredential]::new('kms-admin', (ConvertTo-SecureString 'admin-password-1' -AsPlainText -Force))
        $script:Remote = @{ Credential = $script:Cred; CaCertificate = $script:Kms.CaCertificatePath }
    }
    AfterAll { $script:Kms | Stop-ProvisioningServer -Confirm:$false }

    It 'Get-KmsProvider -Server | Set-KmsProvider goes back to that server' {
        New-KmsProvider -Server $script:Kms.Urls[0] @script:Remote -Name 'remote-p' -KeyId 'r-1' -KeyDerivationKey (Kdk) -Confirm:$false @script:Quiet | Out-Null
        $p = Get-KmsProvider -Server $script:Kms.Urls[0] @script:Remote -Name 'remote-p' @script:Quiet
        $p.Server | Should -Be ([uri]$script:Kms.Urls[0]).ToString()
        $p | Set-KmsProvider @script:Remote -KeyId 'r-2' -Confirm:$false @script:Quiet
        (Get-KmsProvider -DataPath $script:Other -Name 'remote-p' @script:Quiet).KeyId | Should -Be 'r-2'
    }
}
