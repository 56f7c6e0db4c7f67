#Requires -Version 7.6
# The provisioning station through the cmdlets: a real swtpm, the server over HTTPS in this session (Provisioning and
# Station roles), SQLite, a hook script run by the module's PowerShell runner; local (-DataPath) and remote (-Server) alike.
BeforeAll {
    $ModulePath = $env:TPMPROV_MODULE_PATH
    if (-not $ModulePath) { throw 'Set TPMPROV_MODULE_PATH to the built module manifest (build.ps1 Test does).' }
    Import-Module $ModulePath -Force
    $script:Work = Join-Path ([IO.Path]::GetTempPath()) ("tpmprov-pester-station-" + [guid]::NewGuid())
    New-Item -ItemType Directory -Path $script:Work | Out-Null
    $script:Data = Join-Path $script:Work 'data'
    $script:Sim = Start-TpmSimulator -Name 'station-a'
    $script:Server = Start-ProvisioningServer -Port 0 -DataPath $script:Data -Role Provisioning, Station -StationHookTimeout '00:00:30'
    $script:Url = $script:Server.Urls[0]
    $script:Server | Add-TpmManufacturerCa -Path $script:Sim.ManufacturerRootPath -Confirm:$false | Out-Null
    $script:Server | Add-TpmManufacturerCa -Path $script:Sim.ManufacturerIssuerPath -Intermediate -Confirm:$false | Out-Null
    $script:Key = $script:Server | New-ProvisioningApiKey -Name 'plant-1' -Vendor 'Contoso' -Confirm:$false
    $script:TpmCaPem = Join-Path $script:Work 'tpmca.pem'
    $script:Server | Export-TpmCa -Path $script:TpmCaPem -Confirm:$false | Out-Null
    $script:Token = New-StationToken -DataPath $script:Data -Name 'pester' -Confirm:$false
    $script:Remote = @{ Server = $script:Url; Token = $script:Token.Token; CaCertificate = $script:Server.CaCertificatePath }
}

AfterAll {
    Get-ProvisioningServer | Stop-ProvisioningServer -Confirm:$false
    Get-TpmSimulator | Stop-TpmSimulator -Confirm:$false
    Remove-Item $script:Work -Recurse -Force -ErrorAction Ignore
}

Describe 'Station scripts and tokens' {
    It 'creates a token whose secret is shown once and stored only as a hash' {
        $script:Token.Token | Should -BeOfType ([securestring])
        $plain = ConvertFrom-SecureString $script:Token.Token -AsPlainText
        $plain | Should -Match '^tpst_[0-9a-f]{16}_'
        (Get-StationToken -DataPath $script:Data).TokenId | Should -Contain $script:Token.TokenId
        [Text.Encoding]::ASCII.GetString([IO.File]::ReadAllBytes((Join-Path $script:Data 'tpmprovisioning.db'))).Contains($plain.Substring(30)) | Should -BeFalse
    }

    It 'saves nothing with -WhatIf, then saves and enables a hook' {
        Set-ProvisioningScript -DataPath $script:Data -Name tpm-provisioner-certificate-issued -Content '"label queued for $SERIAL"' -WhatIf
        (Get-ProvisioningScript -DataPath $script:Data -Name tpm-provisioner-certificate-issued).Exists | Should -BeFalse
        $s = Set-ProvisioningScript @script:Remote -Name tpm-provisioner-certificate-issued -Content '"label queued for $SERIAL"' -Enable -Confirm:$false
        $s.Enabled | Should -BeTrue
        $s.Stage | Should -Be 'certificate-issued'
        (Get-ProvisioningScript -DataPath $script:Data | Where-Object Enabled).Filename | Should -Be 'tpm-provisioner-certificate-issued.ps1'
    }

    It 'refuses a traversal in a script name with the station''s error id, locally and remotely' {
        Set-ProvisioningScript -DataPath $script:Data -Name '../evil' -Content 'x' -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e1
        $e1[0].FullyQualifiedErrorId | Should -BeLike 'INVALID_SCRIPT_NAME,*'
        Set-ProvisioningScript @script:Remote -Name '../evil' -Content 'x' -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e2
        $e2[0].FullyQualifiedErrorId | Should -BeLike 'INVALID_SCRIPT_NAME,*'
        Test-Path (Join-Path $script:Data 'station/evil.ps1') | Should -BeFalse
    }

    It 'disables, enables and removes a script with -WhatIf honoured' {
        Set-ProvisioningScript -DataPath $script:Data -Name scratch -Content "'x'" -Confirm:$false | Out-Null
        (Enable-ProvisioningScript -DataPath $script:Data -Name scratch -PassThru -Confirm:$false).Enabled | Should -BeTrue
        (Disable-ProvisioningScript @script:Remote -Name scratch -PassThru -Confirm:$false).Enabled | Should -BeFalse
        Remove-ProvisioningScript -DataPath $script:Data -Name scratch -WhatIf
        (Get-ProvisioningScript -DataPath $script:Data -Name scratch).Exists | Should -BeTrue
        Remove-ProvisioningScript @script:Remote -Name scratch -Confirm:$false
        Get-ProvisioningScript -DataPath $script:Data -Name scratch -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -BeLike 'SCRIPT_NOT_FOUND,*'
    }
}

Describe 'A device through the station' {
    BeforeAll {
        $script:Result = New-TpmProvisioning -Server $script:Url -ApiKey $script:Key.Key -SkipCertificateCheck -TpmCaCertificate $script:TpmCaPem -Confirm:$false `
            -Tpm $script:Sim.ConnectionString -DeviceName 'sensor-0001' -Serial 'ST-0001' -Vendor 'Contoso' -Version '1.0'
    }

    It 'shows the device and its history the same locally and remotely' {
        $local = Get-ProvisioningDevice -DataPath $script:Data -Serial 'ST-0001'
        $remote = Get-ProvisioningDevice @script:Remote -Serial 'ST-0001'
        $local.State | Should -Be 'PROVISIONER-FINISHED'
        $remote.State | Should -Be $local.State
        $remote.History.State | Should -Be $local.History.State
        $local.History.State | Should -Be @('BOOTSTRAP-STARTED', 'BOOTSTRAP-FINISHED', 'TRIAGE-STARTED', 'TRIAGE-FINISHED', 'PROVISIONER-STARTED', 'PROVISIONER-FINISHED')
        (Get-ProvisioningDevice @script:Remote -State PROVISIONER-FINISHED).Serial | Should -Be 'ST-0001'
        (Get-ProvisioningDevice -DataPath $script:Data | Format-Table | Out-String) | Should -Match 'ST-0001\s+Contoso'
    }

    It 'has the hook''s output in the provisioner log, the same through -Server' {
        $local = Get-ProvisioningDeviceLog -DataPath $script:Data -Serial 'ST-0001' -Type Provisioner
        $local.Line | Should -Contain 'tpm-provisioner-certificate-issued.ps1: label queued for ST-0001'
        $remote = Get-ProvisioningDeviceLog @script:Remote -Serial 'ST-0001' -Type Provisioner
        $remote.Line | Should -Be $local.Line
        (Get-ProvisioningDeviceLog -DataPath $script:Data -Serial 'ST-0001').Log | Select-Object -Unique | Should -Be @('Bootstrap', 'Triage', 'Provisioner')
    }

    It 'reads the manufacturing records and the audit log remotely as it does locally' {
        $local = Get-ManufacturingRecord -DataPath $script:Data -Serial 'ST-0001'
        $remote = Get-ManufacturingRecord @script:Remote -Serial 'ST-0001'
        $remote.Id | Should -Be $local.Id
        $remote.AkCertificateSerial | Should -Be $local.AkCertificateSerial
        [Convert]::ToHexString($remote.AkCertificate) | Should -Be ([Convert]::ToHexString($local.AkCertificate))
        (Get-ProvisioningAuditLog @script:Remote -Action 'provision.create' -Last 5).Outcome | Should -Contain 'Success'
    }

    It 'writes a QR label that the station verifies, and not a forged one' {
        $png = Join-Path $script:Work 'label.png'
        Get-DeviceLabel -DataPath $script:Data -Serial 'ST-0001' -Path $png -WhatIf
        Test-Path $png | Should -BeFalse
        $label = Get-DeviceLabel -DataPath $script:Data -Serial 'ST-0001' -Path $png -Confirm:$false
        $bytes = [IO.File]::ReadAllBytes($png)
        [Convert]::ToHexString($bytes, 0, 8) | Should -Be '89504E470D0A1A0A'
        $label.Payload | Should -Be "TPMPROV1;serial=ST-0001;ek=$($script:Result.EkThumbprint)"
        ($label | Test-DeviceQrCode @script:Remote).Exists | Should -BeTrue
        (Test-DeviceQrCode -DataPath $script:Data -Text ($label.Payload -replace 'ek=\w+', ('ek=' + '0' * 64))).Exists | Should -BeFalse
    }

    It 'refuses a revoked token' {
        $t = New-StationToken -DataPath $script:Data -Name 'short-lived' -Confirm:$false
        (Get-ProvisioningDevice -Server $script:Url -Token $t.Token -CaCertificate $script:Server.CaCertificatePath).Serial | Should -Contain 'ST-0001'
        Remove-StationToken -DataPath $script:Data -TokenId $t.TokenId -Confirm:$false
        Get-ProvisioningDevice -Server $script:Url -Token $t.Token -CaCertificate $script:Server.CaCertificatePath -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -BeLike 'CredentialsRefused,*'
        $e[0].Exception.InnerException.Message | Should -Match 'INVALID_TOKEN'
    }
}
