#Requires -Version 7.6
# A fleet admin's batch through cmdlets only: CSV in, CSV and JSON out, the batch run again, the exported rows fed to the
# next stage (records, quotes, registration), PCRs of several TPMs told apart. Real swtpm, HTTPS, SQLite.
BeforeAll {
    $ModulePath = $env:TPMPROV_MODULE_PATH
    if (-not $ModulePath) { throw 'Set TPMPROV_MODULE_PATH to the built module manifest (build.ps1 Test does).' }
    Import-Module $ModulePath -Force
    $script:Work = Join-Path ([IO.Path]::GetTempPath()) ("tpmprov-pester-fleet-" + [guid]::NewGuid())
    New-Item -ItemType Directory -Path $script:Work | Out-Null
    $script:Data = Join-Path $script:Work 'data'
    # -Fast simulators share one template state (one EK): one of each gives two distinct devices.
    $script:SimA = Start-TpmSimulator -Name 'fleet-a'
    $script:SimB = Start-TpmSimulator -Name 'fleet-b' -Fast
    # Provisioning and registrar on one data path: records and registered agents share the store, so they link.
    # The manufacturer CAs go in before the start, so the first request already finds them.
    Add-TpmManufacturerCa -DataPath $script:Data -Path $script:SimA.ManufacturerRootPath -Confirm:$false | Out-Null
    Add-TpmManufacturerCa -DataPath $script:Data -Path $script:SimA.ManufacturerIssuerPath -Intermediate -Confirm:$false | Out-Null
    $script:Server = Start-ProvisioningServer -Name 'fleet' -Port 0 -DataPath $script:Data -Role Provisioning, Registrar
    $script:Key = $script:Server | New-ProvisioningApiKey -Name 'fleet-plant' -Vendor 'Contoso' -Confirm:$false
    $script:TpmCaPem = Join-Path $script:Work 'tpmca.pem'
    $script:Server | Export-TpmCa -Path $script:TpmCaPem -Confirm:$false | Out-Null
    $script:Common = @{ Server = $script:Server.Urls[0]; ApiKey = $script:Key.Key; SkipCertificateCheck = $true; TpmCaCertificate = $script:TpmCaPem; Confirm = $false }
    $script:DevicesCsv = Join-Path $script:Work 'devices.csv'
    @(
        [pscustomobject]@{ Tpm = $script:SimA.ConnectionString; DeviceName = 'gateway-0001'; Serial = 'FL-0001'; Vendor = 'Contoso'; Version = '1.0' }
        [pscustomobject]@{ Tpm = $script:SimB.ConnectionString; DeviceName = 'gateway-0002'; Serial = 'FL-0002'; Vendor = 'Contoso'; Version = '1.0' }
    ) | Export-Csv -Path $script:DevicesCsv -NoTypeInformation
    $script:ResultsCsv = Join-Path $script:Work 'results.csv'

    # The TPM's own view of its handles, through tpm2-tools (an independent reader).
    function script:Get-Handles([string] $Tcti, [string] $Kind) {
        $out = & tpm2_getcap -T $Tcti "handles-$Kind" 2>&1
        if ($LASTEXITCODE -ne 0) { throw "tpm2_getcap handles-$Kind failed: $out" }
        @($out | ForEach-Object { "$_".Trim() } | Where-Object { $_ -match '^- 0x' } | ForEach-Object { $_.Substring(2).ToLowerInvariant() })
    }
    function script:Get-RecordCount { @(Get-ManufacturingRecord -DataPath $script:Data).Count }
}

AfterAll {
    Get-ProvisioningServer | Stop-ProvisioningServer -Confirm:$false
    Get-TpmSimulator | Stop-TpmSimulator -Confirm:$false
    Remove-Item $script:Work -Recurse -Force -ErrorAction Ignore
}

Describe 'A provisioning batch from CSV, exported and run again' {
    It 'provisions the CSV in input order with Row, Tpm, a hex AkHandle and the certificate as PEM and thumbprint' {
        $results = @(Import-Csv $script:DevicesCsv | New-TpmProvisioning @script:Common -ThrottleLimit 2)
        $results.Count | Should -Be 2
        $results.Row | Should -Be @(1, 2)
        $results.Serial | Should -Be @('FL-0001', 'FL-0002')
        $results.Status | Should -Be @('Provisioned', 'Provisioned')
        $results.Tpm | Should -Be @($script:SimA.ConnectionString, $script:SimB.ConnectionString)
        $results.AkHandle | Should -Be @('0x81000002', '0x81000002')
        foreach ($r in $results) {
            $r.AkCertificatePem | Should -Match '^-----BEGIN CERTIFICATE-----'
            $cert = [Security.Cryptography.X509Certificates.X509Certificate2]::CreateFromPem($r.AkCertificatePem)
            $r.AkCertificateThumbprint | Should -Be $cert.Thumbprint
            $r.AkCertificateSerial | Should -Be $cert.SerialNumber
            $cert.Subject | Should -Match $r.Serial
        }
        $results | Export-Csv -Path $script:ResultsCsv -NoTypeInformation
    }

    It 'exports to CSV and JSON as text: no type names, handles in hex, no byte arrays' {
        $csv = Get-Content -Raw $script:ResultsCsv
        $csv | Should -Not -Match 'System\.'
        $csv | Should -Match '"0x81000002"'
        $csv | Should -Match 'BEGIN CERTIFICATE'
        $rows = @(Import-Csv $script:ResultsCsv)
        $rows[0].PSObject.Properties.Name | Should -Not -Contain 'AkCertificate'
        $json = Get-ManufacturingRecord -DataPath $script:Data | ConvertTo-Json
        $json | Should -Not -Match 'System\.'
        $back = @($json | ConvertFrom-Json)
        $back.Count | Should -Be 2
        $back[0].AkCertificatePem | Should -Match '^-----BEGIN CERTIFICATE-----'
        $back[0].AkCertificateThumbprint | Should -Match '^[0-9A-F]{40}$'
        $back[0].PSObject.Properties.Name | Should -Not -Contain 'AkCertificate'
    }

    It 'feeds the exported rows to the next cmdlets by property name: records and quotes' {
        $records = @(Import-Csv $script:ResultsCsv | Get-ManufacturingRecord -DataPath $script:Data)
        $records.Serial | Should -Be @('FL-0001', 'FL-0002')
        $rows = @(Import-Csv $script:ResultsCsv)
        $records.AkCertificateSerial | Should -Be $rows.AkCertificateSerial
        $quotes = @(Import-Csv $script:ResultsCsv | Get-IntegrityQuote -Nonce 'fleet-check' -Pcr 16)
        $quotes.Count | Should -Be 2
        $quotes.Tpm | Should -Be @($script:SimA.ConnectionString, $script:SimB.ConnectionString)
        $quotes.AkName | Should -Be $rows.AkName.ToLowerInvariant()
    }

    It 'skips a device that is already provisioned: no second AK, record or transient handle' {
        $persistentA = Get-Handles $script:SimA.ConnectionString 'persistent'
        $persistentB = Get-Handles $script:SimB.ConnectionString 'persistent'
        $records = Get-RecordCount
        $warnings = $null
        $again = @(Import-Csv $script:DevicesCsv | New-TpmProvisioning @script:Common -ThrottleLimit 2 -WarningVariable warnings -WarningAction SilentlyContinue)
        $again.Status | Should -Be @('AlreadyProvisioned', 'AlreadyProvisioned')
        $again.Row | Should -Be @(1, 2)
        @($warnings | Where-Object { "$_" -match 'already provisioned' }).Count | Should -Be 2
        $first = @(Import-Csv $script:ResultsCsv)
        $again.AkCertificateSerial | Should -Be $first.AkCertificateSerial
        $again.AkHandle | Should -Be $first.AkHandle
        Get-RecordCount | Should -Be $records
        Get-Handles $script:SimA.ConnectionString 'persistent' | Should -Be $persistentA
        Get-Handles $script:SimB.ConnectionString 'persistent' | Should -Be $persistentB
        Get-Handles $script:SimA.ConnectionString 'transient' | Should -BeNullOrEmpty
        Get-Handles $script:SimB.ConnectionString 'transient' | Should -BeNullOrEmpty
        $audit = Get-ProvisioningAuditLog -DataPath $script:Data -Last 2
        @($audit | Where-Object { $_.Detail -match 'already provisioned' }).Count | Should -Be 2
    }

    It 'provisions again with -Force: a new AK replaces the old one at its handle' {
        $persistent = Get-Handles $script:SimA.ConnectionString 'persistent'
        $records = Get-RecordCount
        $old = (Import-Csv $script:ResultsCsv)[0]
        $r = Import-Csv $script:DevicesCsv | Select-Object -First 1 | New-TpmProvisioning @script:Common -Force
        $r.Status | Should -Be 'Provisioned'
        $r.AkHandle | Should -Be $old.AkHandle
        $r.AkName | Should -Not -Be $old.AkName
        Get-Handles $script:SimA.ConnectionString 'persistent' | Should -Be $persistent
        Get-Handles $script:SimA.ConnectionString 'transient' | Should -BeNullOrEmpty
        Get-RecordCount | Should -Be ($records + 1)
        (Get-ManufacturingRecord -DataPath $script:Data -Serial 'FL-0001' -Last 1).AkName | Should -Be $r.AkName
        # And a plain re-run after that is skipped again, with the new AK.
        $again = Import-Csv $script:DevicesCsv | Select-Object -First 1 | New-TpmProvisioning @script:Common -WarningAction SilentlyContinue
        $again.Status | Should -Be 'AlreadyProvisioned'
        $again.AkName | Should -Be $r.AkName
    }
}

Describe 'Tracing agents, records and TPMs' {
    It 'links a registered agent to its manufacturing serial and device name, both ways' {
        $tenant = $script:Server | New-ProvisioningClientCertificate -Name 'fleet-tenant' -Confirm:$false
        $reg = @{ Registrar = $script:Server.Urls[0]; CaCertificate = $script:Server.CaCertificatePath; ClientCertificate = $tenant }
        # The exported row carries the TPM and the AK handle: it registers the provisioned AK.
        $agent = Import-Csv $script:ResultsCsv | Select-Object -Last 1 | Register-AttestationAgent @reg -Confirm:$false
        $agent.AkHandle | Should -Be '0x81000002'
        $record = Get-ManufacturingRecord -DataPath $script:Data -Serial 'FL-0002'
        $record.AgentId | Should -Be $agent.AgentId
        (Get-ManufacturingRecord -DataPath $script:Data -Serial 'FL-0001' -Last 1).AgentId | Should -BeNullOrEmpty
        $listed = Get-AttestationAgent @reg -AgentId $agent.AgentId -DataPath $script:Data
        $listed.Serial | Should -Be 'FL-0002'
        $listed.DeviceName | Should -Be 'gateway-0002'
        (Get-AttestationAgent @reg -AgentId $agent.AgentId).Serial | Should -BeNullOrEmpty
    }

    It 'tells the PCRs of several TPMs apart, in the objects and in the default view' {
        $pcrs = @(Get-TpmSimulator -Name 'fleet-*' | Get-TpmPcr -Pcr 16 -HashAlgorithm sha256)
        $pcrs.Count | Should -Be 2
        ($pcrs.Tpm | Sort-Object -Unique).Count | Should -Be 2
        $table = $pcrs | Format-Table | Out-String -Width 300
        $table | Should -Match ([regex]::Escape($script:SimA.ConnectionString))
        $table | Should -Match ([regex]::Escape($script:SimB.ConnectionString))
        $pcrs | ConvertTo-Csv | Out-String | Should -Not -Match 'System\.Byte'
    }

    It 'uses one set of state names: Keylime''s' {
        $names = [TpmProvisioning.Cmdlets.AttestationStateNames]::All
        $names | Should -Contain 'GET_QUOTE'
        $names | Should -Contain 'INVALID_QUOTE'
        $names | Should -Contain 'TENANT_FAILED'
        $names | Should -Not -Contain 'Attested'
        $names | Should -Not -Contain 'InvalidQuote'
    }
}
