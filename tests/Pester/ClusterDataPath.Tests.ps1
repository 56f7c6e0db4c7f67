#Requires -Version 7.6
# Admin cmdlets follow a server onto PostgreSQL (issue 16): a server started on a data path with a PostgreSQL store records
# where its store is (store.settings.json, never the password), and the cmdlets that take -DataPath open that store instead of
# the data path's SQLite file. The password comes from -StoreCredential (Get-VerifierCluster), TPMPROVISIONING_STORE for the same
# database, PGPASSWORD or the password file; without one they fail with StoreCredentialRequired. Also: the connection string's
# Maximum Pool Size bounds what one node holds (pg_stat_activity). The PostgreSQL server is the module's own throw-away instance
# with a password-protected role, started once for this file and stopped at the end; where it cannot run, these cases skip.
BeforeDiscovery {
    Import-Module $env:TPMPROV_MODULE_PATH -Force
    $script:PgUnavailable = [TpmProvisioning.Storage.PostgresInstance]::Unavailable()
}

BeforeAll {
    $ModulePath = $env:TPMPROV_MODULE_PATH
    if (-not $ModulePath) { throw 'Set TPMPROV_MODULE_PATH to the built module manifest (build.ps1 Test does).' }
    Import-Module $ModulePath -Force
    $script:Work = Join-Path ([IO.Path]::GetTempPath()) ("tpmprov-pester-clusterdp-" + [guid]::NewGuid())
    New-Item -ItemType Directory -Path $script:Work | Out-Null
    # No password may come from this machine's environment: each case gives its own.
    $script:SavedEnv = @{ PGPASSWORD = $env:PGPASSWORD; PGPASSFILE = $env:PGPASSFILE; TPMPROVISIONING_STORE = $env:TPMPROVISIONING_STORE }
    $env:PGPASSWORD = $null
    $env:TPMPROVISIONING_STORE = $null
    # An empty password file (Npgsql refuses a PGPASSFILE that does not exist), so ~/.pgpass is not read either.
    $env:PGPASSFILE = Join-Path $script:Work 'empty-pgpass'
    Set-Content -Path $env:PGPASSFILE -Value '# nothing'
    $script:Password = 'Fleet-' + [guid]::NewGuid().ToString('N')
    $script:Cred = [pscredential]::new('fleetadmin', (ConvertTo-SecureString $script:Password -AsPlainText -Force))
    $script:Data = Join-Path $script:Work 'node'
    $script:Pg = $null
    if (-not [TpmProvisioning.Storage.PostgresInstance]::Unavailable()) {
        $none = [Threading.CancellationToken]::None
        $script:Pg = [TpmProvisioning.Storage.PostgresInstance]::StartAsync($none).GetAwaiter().GetResult()
        $script:Db = $script:Pg.CreatePasswordDatabaseAsync('fleetadmin', $script:Password, 'fleet', $none).GetAwaiter().GetResult()
    }
    function script:Failure([scriptblock] $call) {
        $errs = @()
        try { & $call -ErrorAction SilentlyContinue -ErrorVariable +errs | Out-Null } catch { $errs += $_ }
        $errs | Select-Object -First 1
    }
    # Sets (or, for $null, removes: a .NET call would set an empty string, which Npgsql takes as a password) environment variables.
    function script:SetEnv([string] $name, $value) {
        if ($null -eq $value) { Remove-Item "env:$name" -ErrorAction Ignore } else { Set-Item "env:$name" $value }
    }
    function script:WithEnv([hashtable] $vars, [scriptblock] $body) {
        $saved = @{}
        foreach ($k in $vars.Keys) { $saved[$k] = [Environment]::GetEnvironmentVariable($k); SetEnv $k $vars[$k] }
        try { & $body } finally { foreach ($k in $saved.Keys) { SetEnv $k $saved[$k] } }
    }
    function script:PlainText([securestring] $s) { [Net.NetworkCredential]::new('', $s).Password }
}

AfterAll {
    Get-ProvisioningServer | Stop-ProvisioningServer -Confirm:$false
    if ($script:Pg) { $script:Pg.DisposeAsync().AsTask().GetAwaiter().GetResult() }
    foreach ($k in $script:SavedEnv.Keys) { SetEnv $k $script:SavedEnv[$k] }
    Remove-Item $script:Work -Recurse -Force -ErrorAction Ignore
}

Describe 'A data path follows its server onto PostgreSQL' -Skip:([bool]$script:PgUnavailable) {
    BeforeAll {
        # The data path first held a SQLite store of its own: after the move its file is stale and must not be read.
        New-ProvisioningApiKey -DataPath $script:Data -Name 'stale-sqlite-key' -Confirm:$false | Out-Null
        $script:Node = Start-ProvisioningServer -Name 'q-node' -Port 0 -DataPath $script:Data -Role Provisioning -InsecurePlainHttp `
            -StoreConnectionString $script:Db -StoreCredential $script:Cred -WarningAction SilentlyContinue
        # A manufacturing record written straight into the PostgreSQL store (as another node of the fleet would).
        $cert = & {
            $key = [Security.Cryptography.ECDsa]::Create([Security.Cryptography.ECCurve+NamedCurves]::nistP256)
            $req = [Security.Cryptography.X509Certificates.CertificateRequest]::new('CN=Q-PG-001', $key, [Security.Cryptography.HashAlgorithmName]::SHA256)
            $req.CreateSelfSigned([DateTimeOffset]::Now.AddMinutes(-5), [DateTimeOffset]::Now.AddDays(1))
        }
        $none = [Threading.CancellationToken]::None
        $store = [TpmProvisioning.Storage.PostgresStore]::OpenAsync([TpmProvisioning.Storage.PostgresStore]::WithCredential($script:Db, 'fleetadmin', $script:Password), $none).GetAwaiter().GetResult()
        try {
            $record = [TpmProvisioning.Storage.ManufacturingRecord]@{
                Serial = 'Q-PG-001'; Vendor = 'Contoso'; DeviceName = 'pg-device'; DeviceVersion = '1.0'; EkFingerprint = ('AB' * 32)
                AkName = ('000B' + 'CD' * 32); AkCertificateSerial = $cert.SerialNumber; AkCertificate = $cert.RawData; ApiKeyId = 'fleetnode2'
            }
            $store.AddManufacturingRecordAsync($record, $none).GetAwaiter().GetResult() | Out-Null
        }
        finally { $store.Dispose() }
        $script:ProvisionUrl = $script:Node.Urls[0].TrimEnd('/') + '/api/tpm/tpm/provision'
        $script:Http = [Net.Http.HttpClient]::new()
        function script:Post([string] $body) {
            $content = [Net.Http.StringContent]::new($body, [Text.Encoding]::UTF8, 'application/json')
            [int]$script:Http.PostAsync($script:ProvisionUrl, $content).GetAwaiter().GetResult().StatusCode
        }
    }

    AfterAll { if ($script:Http) { $script:Http.Dispose() } }

    It 'records where its store is in the data path, without the password' {
        $file = Join-Path $script:Data 'store.settings.json'
        $raw = Get-Content -Raw $file
        $settings = $raw | ConvertFrom-Json
        $settings.kind | Should -Be 'postgresql'
        $settings.connectionString | Should -Match "Port=$($script:Pg.Port)"
        $settings.connectionString | Should -Match 'Username=fleetadmin'
        $raw | Should -Not -Match ([regex]::Escape($script:Password))
        $raw | Should -Not -Match 'Password'
        if (-not $IsWindows) { (Get-Item $file).UnixFileMode | Should -Be ([IO.UnixFileMode]'UserRead, UserWrite') }
        $script:Node.Store | Should -BeLike 'postgresql Host=127.0.0.1*'
    }

    It 'without a password each reader fails with StoreCredentialRequired, says what to give and reads no stale SQLite file' {
        foreach ($reader in { Get-ProvisioningApiKey -DataPath $script:Data }, { Get-ManufacturingRecord -DataPath $script:Data }, { Get-ProvisioningAuditLog -DataPath $script:Data }) {
            $e = Failure $reader
            $e.FullyQualifiedErrorId | Should -BeLike 'StoreCredentialRequired,*'
            $e.CategoryInfo.Category | Should -Be 'AuthenticationError'
            $e.Exception.Message | Should -Match 'PGPASSWORD'
            $e.Exception.Message | Should -Match '\.pgpass'
            $e.Exception.Message | Should -Match 'TPMPROVISIONING_STORE'
            $e.Exception.Message | Should -Match 'Database=fleet'
            $e.Exception.Message | Should -Not -Match ([regex]::Escape($script:Password))
        }
        # A cmdlet that takes -StoreCredential names it too.
        $e = Failure { Get-VerifierCluster -DataPath $script:Data }
        $e.FullyQualifiedErrorId | Should -BeLike 'StoreCredentialRequired,*'
        $e.Exception.Message | Should -Match '-StoreCredential'
    }

    It 'with PGPASSWORD the readers see the PostgreSQL data, not the stale SQLite file' {
        WithEnv @{ PGPASSWORD = $script:Password } {
            (Get-ProvisioningApiKey -DataPath $script:Data).Name | Should -Not -Contain 'stale-sqlite-key'
            $records = @(Get-ManufacturingRecord -DataPath $script:Data -Serial 'Q-PG-001')
            $records.Count | Should -Be 1
            $records[0].DeviceName | Should -Be 'pg-device'
            $audit = @(Get-ProvisioningAuditLog -DataPath $script:Data -Action 'server.start')
            $audit.Target | Should -Contain 'q-node'
        }
    }

    It 'a key made with New-ProvisioningApiKey -DataPath lands in PostgreSQL and the server accepts it over HTTP' {
        WithEnv @{ PGPASSWORD = $script:Password } {
            $made = New-ProvisioningApiKey -DataPath $script:Data -Name 'pg-plant' -Confirm:$false
            (Get-ProvisioningApiKey -DataPath $script:Data).Name | Should -Contain 'pg-plant'
            # A known key gets past authentication to the device checks (400); an unknown one is 401.
            Post (@{ api_key = (PlainText $made.Key) } | ConvertTo-Json) | Should -Be 400
            Post (@{ api_key = 'tpk_0123456789abcdef_' + ('x' * 43) } | ConvertTo-Json) | Should -Be 401
            @(Get-ProvisioningAuditLog -DataPath $script:Data -Action 'provision.create').Actor | Should -Contain $made.KeyId
        }
        # The data path's SQLite file got nothing.
        $sqlite = [TpmProvisioning.Storage.SqliteStore]::OpenAsync((Join-Path $script:Data 'tpmprovisioning.db'), [Threading.CancellationToken]::None).GetAwaiter().GetResult()
        try { $sqlite.ListApiKeysAsync([Threading.CancellationToken]::None).GetAwaiter().GetResult().Name | Should -Be @('stale-sqlite-key') }
        finally { $sqlite.Dispose() }
    }

    It 'takes the password of TPMPROVISIONING_STORE naming the same database; a wrong one is StoreCredentialRefused' {
        WithEnv @{ TPMPROVISIONING_STORE = "$($script:Db);Password=$($script:Password)" } {
            (Get-ProvisioningApiKey -DataPath $script:Data).Name | Should -Contain 'pg-plant'
        }
        WithEnv @{ TPMPROVISIONING_STORE = "$($script:Db);Password=not-the-password-42" } {
            $e = Failure { Get-ProvisioningApiKey -DataPath $script:Data }
            $e.FullyQualifiedErrorId | Should -BeLike 'StoreCredentialRefused,*'
            $e.CategoryInfo.Category | Should -Be 'AuthenticationError'
            $e.Exception.Message | Should -Match 'TPMPROVISIONING_STORE'
            $e.Exception.Message | Should -Not -Match 'not-the-password-42'
        }
    }

    It 'takes the password from the password file PGPASSFILE names' {
        $b = [Npgsql.NpgsqlConnectionStringBuilder]::new($script:Db)
        $passfile = Join-Path $script:Work 'pgpass'
        Set-Content -Path $passfile -Value "127.0.0.1:$($b.Port):$($b.Database):fleetadmin:$($script:Password)"
        if (-not $IsWindows) { [IO.File]::SetUnixFileMode($passfile, [IO.UnixFileMode]'UserRead, UserWrite') }
        WithEnv @{ PGPASSFILE = $passfile } {
            @(Get-ManufacturingRecord -DataPath $script:Data -Serial 'Q-PG-001').Count | Should -Be 1
        }
    }

    It 'a PGPASSFILE that does not exist is StoreUnavailable naming the file' {
        $missing = Join-Path $script:Work 'no-such-pgpass'
        WithEnv @{ PGPASSFILE = $missing } {
            $e = Failure { Get-ProvisioningApiKey -DataPath $script:Data }
            $e.FullyQualifiedErrorId | Should -BeLike 'StoreUnavailable,*'
            $e.CategoryInfo.Category | Should -Be 'ResourceUnavailable'
            $e.Exception.Message | Should -Match ([regex]::Escape($missing))
        }
    }

    It 'Get-VerifierCluster -DataPath opens the same store with -StoreCredential' {
        { Get-VerifierCluster -DataPath $script:Data -StoreCredential $script:Cred -ErrorAction Stop } | Should -Not -Throw
        $bad = [pscredential]::new('fleetadmin', (ConvertTo-SecureString 'wrong-password-7' -AsPlainText -Force))
        $e = Failure { Get-VerifierCluster -DataPath $script:Data -StoreCredential $bad }
        $e.FullyQualifiedErrorId | Should -BeLike 'StoreCredentialRefused,*'
        $e.Exception.Message | Should -Match '-StoreCredential'
        $e.Exception.Message | Should -Not -Match 'wrong-password-7'
    }

    It 'still refuses a second server on the data path (DataPathInUse)' {
        $e = Failure { Start-ProvisioningServer -Name 'q-second' -Port 0 -DataPath $script:Data -Role Provisioning -StoreConnectionString $script:Db -StoreCredential $script:Cred }
        $e.FullyQualifiedErrorId | Should -BeLike 'DataPathInUse,*'
        @(Get-ProvisioningServer -Name 'q-second' -ErrorAction SilentlyContinue).Count | Should -Be 0
    }

    It 'started again on SQLite, the data path forgets PostgreSQL and its cmdlets read the SQLite store as before' {
        $script:Node | Stop-ProvisioningServer -Confirm:$false
        # Stopped, the data path still names the fleet's store.
        WithEnv @{ PGPASSWORD = $script:Password } { (Get-ProvisioningApiKey -DataPath $script:Data).Name | Should -Contain 'pg-plant' }
        $sqliteNode = Start-ProvisioningServer -Name 'q-sqlite' -Port 0 -DataPath $script:Data -Role Provisioning -InsecurePlainHttp -WarningAction SilentlyContinue
        try {
            $sqliteNode.Store | Should -BeLike 'sqlite *'
            Test-Path (Join-Path $script:Data 'store.settings.json') | Should -BeFalse
            (Get-ProvisioningApiKey -DataPath $script:Data).Name | Should -Be @('stale-sqlite-key')
        }
        finally { $sqliteNode | Stop-ProvisioningServer -Confirm:$false }
    }
}

Describe 'Maximum Pool Size in the store connection string bounds the connections of a node' -Skip:([bool]$script:PgUnavailable) {
    It 'a node with Maximum Pool Size=5 never holds more than 5 connections, even with 20 requests waiting on the database' {
        $none = [Threading.CancellationToken]::None
        $db = $script:Pg.CreateDatabaseAsync('pool', $none).GetAwaiter().GetResult()
        $poolData = Join-Path $script:Work 'pool'
        $node = Start-ProvisioningServer -Name 'q-pool' -Port 0 -DataPath $poolData -Role Provisioning -InsecurePlainHttp `
            -StoreConnectionString "$db;Maximum Pool Size=5;Application Name=q-pool-probe" -WarningAction SilentlyContinue
        # The instance's own user needs no password: the data path's cmdlets reach the store as they are.
        $key = PlainText (New-ProvisioningApiKey -DataPath $poolData -Name 'pool' -Confirm:$false).Key
        $lock = [Npgsql.NpgsqlConnection]::new("$db;Pooling=false")
        $watch = [Npgsql.NpgsqlConnection]::new("$db;Pooling=false")
        $http = [Net.Http.HttpClient]::new()
        $http.Timeout = [TimeSpan]::FromMinutes(2)
        try {
            $lock.Open(); $watch.Open()
            $tx = $lock.BeginTransaction()
            $cmd = $lock.CreateCommand(); $cmd.Transaction = $tx
            # Every request's key lookup now waits on this lock, holding its pooled connection.
            $cmd.CommandText = 'LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE'; $cmd.ExecuteNonQuery() | Out-Null
            $url = $node.Urls[0].TrimEnd('/') + '/api/tpm/tpm/provision'
            $body = @{ api_key = $key } | ConvertTo-Json
            $requests = foreach ($i in 1..20) { $http.PostAsync($url, [Net.Http.StringContent]::new($body, [Text.Encoding]::UTF8, 'application/json')) }
            $count = $watch.CreateCommand()
            $count.CommandText = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'q-pool-probe'"
            $max = 0; $samples = 0; $deadline = (Get-Date).AddSeconds(60)
            # Sample until the pool is full, then some more: it must never grow past 5.
            while ((Get-Date) -lt $deadline -and ($max -lt 5 -or $samples -lt 20)) {
                $n = [int]$count.ExecuteScalar()
                if ($n -gt $max) { $max = $n }
                if ($max -ge 5) { $samples++ }
                Start-Sleep -Milliseconds 50
            }
            $max | Should -Be 5
            $tx.Commit()
            [Threading.Tasks.Task]::WaitAll([Threading.Tasks.Task[]]$requests, [TimeSpan]::FromMinutes(2)) | Should -BeTrue
            # Released, the waiting requests end: answered (400, past the key) or, for those that waited longer than the pool's timeout, 503.
            $requests | ForEach-Object { [int]$_.Result.StatusCode | Should -BeIn 400, 503 }
            [int]$count.ExecuteScalar() | Should -BeLessOrEqual 5
        }
        finally {
            $http.Dispose(); $lock.Dispose(); $watch.Dispose()
            $node | Stop-ProvisioningServer -Confirm:$false
        }
    }
}
