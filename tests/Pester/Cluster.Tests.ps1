#Requires -Version 7.6
# Several servers on one PostgreSQL store: Start-ProvisioningServer -StoreConnectionString and Get-VerifierCluster, driven
# the way an admin does. The PostgreSQL server is the module's own throw-away instance (initdb + postgres on loopback, run
# as nobody under root), started once for this file and stopped at the end; where it cannot run, those cases skip.
BeforeDiscovery {
    Import-Module $env:TPMPROV_MODULE_PATH -Force
    $script:PgUnavailable = [TpmProvisioning.Storage.PostgresInstance]::Unavailable()
}

BeforeAll {
    $ModulePath = $env:TPMPROV_MODULE_PATH
    if (-not $ModulePath) { throw 'Set TPMPROV_MODULE_PATH to the built module manifest (build.ps1 Test does).' }
    Import-Module $ModulePath -Force
    $script:Data = Join-Path ([IO.Path]::GetTempPath()) ("tpmprov-pester-cluster-" + [guid]::NewGuid())
    $script:Pg = $null
    if (-not [TpmProvisioning.Storage.PostgresInstance]::Unavailable()) {
        $script:Pg = [TpmProvisioning.Storage.PostgresInstance]::StartAsync([Threading.CancellationToken]::None).GetAwaiter().GetResult()
        $script:Db = $script:Pg.CreateDatabaseAsync('pester', [Threading.CancellationToken]::None).GetAwaiter().GetResult()
    }
}

AfterAll {
    Get-ProvisioningServer | Stop-ProvisioningServer -Confirm:$false
    if ($script:Pg) { $script:Pg.DisposeAsync().AsTask().GetAwaiter().GetResult() }
    Remove-Item $script:Data -Recurse -Force -ErrorAction Ignore
}

Describe 'Start-ProvisioningServer -StoreConnectionString: bad input' {
    It 'refuses a connection string that is not PostgreSQL, naming no password' {
        $err = $null
        try { Start-ProvisioningServer -Port 0 -DataPath (Join-Path $script:Data 'bad') -StoreConnectionString 'Data Source=x.db;Password=hunter2secret' -ErrorAction Stop }
        catch { $err = $_ }
        $err.FullyQualifiedErrorId | Should -BeLike 'InvalidStoreConnectionString*'
        $err.CategoryInfo.Category | Should -Be 'InvalidArgument'
        "$err" | Should -Not -Match 'hunter2'
        Get-ProvisioningServer | Should -BeNullOrEmpty
    }

    It 'refuses -StoreCredential without -StoreConnectionString' {
        $cred = [pscredential]::new('u', (ConvertTo-SecureString 'p' -AsPlainText -Force))
        { Start-ProvisioningServer -Port 0 -DataPath (Join-Path $script:Data 'bad2') -StoreCredential $cred -ErrorAction Stop } |
            Should -Throw -ErrorId 'StoreCredentialWithoutStore*'
    }

    It 'names host and database but never the password under -WhatIf' {
        $cred = [pscredential]::new('fleet', (ConvertTo-SecureString 'hunter2secret' -AsPlainText -Force))
        # What if: goes to the host, so a transcript catches it.
        $transcript = Join-Path ([IO.Path]::GetTempPath()) ("whatif-" + [guid]::NewGuid() + '.txt')
        Start-Transcript -Path $transcript -UseMinimalHeader | Out-Null
        try { Start-ProvisioningServer -Port 0 -DataPath (Join-Path $script:Data 'whatif') -StoreConnectionString 'Host=db1.example.net;Database=fleet' -StoreCredential $cred -WhatIf }
        finally { Stop-Transcript | Out-Null }
        $out = Get-Content -Raw $transcript
        Remove-Item $transcript
        $out | Should -Match 'db1.example.net'
        $out | Should -Not -Match 'hunter2'
        Get-ProvisioningServer | Should -BeNullOrEmpty
        Test-Path (Join-Path $script:Data 'whatif') | Should -BeFalse
    }

    It 'is ServerStartStoreUnavailable when the database cannot be reached' {
        { Start-ProvisioningServer -Port 0 -DataPath (Join-Path $script:Data 'down') -StoreConnectionString 'Host=127.0.0.1;Port=1;Database=none;Timeout=2;Password=hunter2secret' -ErrorAction Stop } |
            Should -Throw -ErrorId 'ServerStartStoreUnavailable*'
        Get-ProvisioningServer | Should -BeNullOrEmpty
    }
}

Describe 'Get-VerifierCluster' {
    It 'is StoreNotFound for a data path without a store' {
        { Get-VerifierCluster -DataPath (Join-Path $script:Data 'nothing') -ErrorAction Stop } | Should -Throw -ErrorId 'StoreNotFound*'
    }

    It 'shows two servers on one PostgreSQL store as two healthy verifiers' -Skip:([bool]$script:PgUnavailable) {
        $a = Start-ProvisioningServer -Role Verifier -Port 0 -DataPath (Join-Path $script:Data 'a') -StoreConnectionString $script:Db -VerifierId pester-a -QuoteInterval '00:00:01'
        $b = Start-ProvisioningServer -Role Verifier -Port 0 -DataPath (Join-Path $script:Data 'b') -StoreConnectionString $script:Db -QuoteInterval '00:00:01'
        $a.Store | Should -BeLike 'postgresql Host=127.0.0.1*'
        $deadline = (Get-Date).AddSeconds(30)
        do {
            $cluster = @(Get-VerifierCluster -StoreConnectionString $script:Db)
            if ($cluster.Count -ge 2) { break }
            Start-Sleep -Milliseconds 250
        } while ((Get-Date) -lt $deadline)
        $cluster.Count | Should -Be 2
        $cluster[0].PSObject.TypeNames | Should -Contain 'TpmProvisioning.Storage.VerifierNodeRecord'
        $cluster.VerifierId | Should -Contain 'pester-a'
        # The server given no id has a generated one, kept in its data path.
        $generated = Get-Content (Join-Path $script:Data 'b/verifier/verifier-id')
        $cluster.VerifierId | Should -Contain $generated.Trim()
        $cluster | ForEach-Object { $_.Health | Should -Be 'Healthy' }
        ($cluster | Format-Table | Out-String) | Should -Match 'Healthy'
        @(Get-VerifierCluster -StoreConnectionString $script:Db -VerifierId 'pester-*').Count | Should -Be 1
        { Get-VerifierCluster -StoreConnectionString $script:Db -VerifierId nobody -ErrorAction Stop } | Should -Throw -ErrorId 'VerifierNotFound*'

        # A clean stop leaves the cluster at once.
        $a | Stop-ProvisioningServer -Confirm:$false
        (Get-VerifierCluster -StoreConnectionString $script:Db).VerifierId | Should -Not -Contain 'pester-a'
        $b | Stop-ProvisioningServer -Confirm:$false
    }
}
