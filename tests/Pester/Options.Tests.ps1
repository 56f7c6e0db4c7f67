#Requires -Version 7.6
# Configuration and firmware through the cmdlets: a station over HTTPS in this session (SQLite), locally (-DataPath) and
# remotely (-Server) alike. Bad, unknown, out-of-range and read-only values are errors with the station's code and change
# nothing (read back); good values are stored and, on the running station, applied at once where the setting allows it.
BeforeAll {
    $ModulePath = $env:TPMPROV_MODULE_PATH
    if (-not $ModulePath) { throw 'Set TPMPROV_MODULE_PATH to the built module manifest (build.ps1 Test does).' }
    Import-Module $ModulePath -Force
    $script:Work = Join-Path ([IO.Path]::GetTempPath()) ("tpmprov-pester-options-" + [guid]::NewGuid())
    New-Item -ItemType Directory -Path $script:Work | Out-Null
    $script:Data = Join-Path $script:Work 'data'
    $script:Server = Start-ProvisioningServer -Name 'options' -Port 0 -DataPath $script:Data -Role Station -StationHookTimeout '00:00:30'
    $script:Token = New-StationToken -DataPath $script:Data -Name 'pester-options' -Confirm:$false
    $script:Remote = @{ Server = $script:Server.Urls[0]; Token = $script:Token.Token; CaCertificate = $script:Server.CaCertificatePath }
    $fw = Join-Path $script:Data 'station/firmware'
    New-Item -ItemType Directory -Path (Join-Path $fw 'cm4'), (Join-Path $fw 'cm5') -Force | Out-Null
    Set-Content -Path (Join-Path $fw 'cm4/pieeprom-2025-01-15.bin') -Value 'cm4 january' -NoNewline
    Set-Content -Path (Join-Path $fw 'cm4/pieeprom-2025-05-08.bin') -Value 'cm4 may' -NoNewline
    Set-Content -Path (Join-Path $fw 'cm4/pieeprom-2025-05-08.md') -Value 'Fixes USB boot.' -NoNewline
    Set-Content -Path (Join-Path $fw 'cm5/pieeprom-2025-06-01.bin') -Value 'cm5 june' -NoNewline
}

AfterAll {
    $script:Server | Stop-ProvisioningServer -Confirm:$false
    Remove-Item $script:Work -Recurse -Force -ErrorAction Ignore
}

Describe 'Provisioning options' {
    It 'lists every setting with its default, rule and how it applies, locally and remotely' {
        $local = Get-ProvisioningOption -DataPath $script:Data
        $remote = Get-ProvisioningOption @script:Remote
        $local.Count | Should -BeGreaterThan 60
        $remote.Count | Should -Be $local.Count
        $hook = $remote | Where-Object Name -eq 'STATION_HOOK_TIMEOUT_SECONDS'
        $hook.Value | Should -Be 30
        $hook.Default | Should -Be 1800
        $hook.Source | Should -Be 'start'
        $hook.Apply | Should -Be 'Live'
        $hook.Rule | Should -BeLike '*from 1 to 86400*'
        (Get-ProvisioningOption -DataPath $script:Data -Section Kms).Section | Sort-Object -Unique | Should -Be 'Kms'
        (Get-ProvisioningOption -DataPath $script:Data -Name 'VERIFIER_*').Count | Should -BeGreaterThan 5
        ($remote | Format-Table | Out-String -Width 250) | Should -BeLike '*Apply*Source*Rule*'
    }

    It 'completes option names from the catalogue' {
        $line = 'Set-ProvisioningOption -Name STATION_HO'
        $c = TabExpansion2 -inputScript $line -cursorColumn $line.Length
        $c.CompletionMatches.CompletionText | Should -Contain 'STATION_HOOK_TIMEOUT_SECONDS'
        $line = 'Set-ProvisioningOption -Name SERVER_PO'
        (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText | Should -Not -Contain 'SERVER_PORT'
        $line = 'Get-ProvisioningOption -Name SERVER_PO'
        (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText | Should -Contain 'SERVER_PORT'
    }

    It 'refuses a bad value, a value out of range, an unknown option and a start-only one, and changes nothing' {
        $before = Get-ProvisioningOption @script:Remote | ForEach-Object { "$($_.Name)=$($_.Value)" }
        $cases = @(
            @{ Name = 'STATION_HOOK_TIMEOUT_SECONDS'; Value = 'soon'; Id = 'INVALID_VALUE' }
            @{ Name = 'STATION_HOOK_TIMEOUT_SECONDS'; Value = 0; Id = 'VALUE_OUT_OF_RANGE' }
            @{ Name = 'STATION_MAX_SCRIPT_BYTES'; Value = 99999999999; Id = 'VALUE_OUT_OF_RANGE' }
            @{ Name = 'RPI_SB_WORKDIR'; Value = '/tmp'; Id = 'UNKNOWN_FIELD' }
            @{ Name = 'SERVER_PORT'; Value = 1; Id = 'READ_ONLY_FIELD' }
        )
        foreach ($c in $cases) {
            foreach ($target in @(@{ DataPath = $script:Data }, $script:Remote)) {
                $err = $null
                Set-ProvisioningOption @target -Name $c.Name -Value $c.Value -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable err | Should -BeNullOrEmpty
                $err[0].FullyQualifiedErrorId | Should -BeLike "$($c.Id),*"
                $err[0].Exception.Message | Should -BeLike "$($c.Name)*"
            }
        }
        # The server's own answer to the same bad value (the cmdlet's pre-check bypassed by the client call).
        $t = Test-ProvisioningOption @script:Remote -Name STATION_HOOK_TIMEOUT_SECONDS -Value 0
        $t.Valid | Should -BeFalse
        $t.Code | Should -Be 'VALUE_OUT_OF_RANGE'
        (Test-ProvisioningOption @script:Remote -Name NOPE -Value 1).Code | Should -Be 'UNKNOWN_FIELD'
        (Test-ProvisioningOption -Name STATION_PUBLIC_DASHBOARD -Value 'maybe').Code | Should -Be 'INVALID_VALUE'
        (Test-ProvisioningOption -Name STATION_WATCH_INTERVAL_SECONDS -Value 10).RestartRequired | Should -BeTrue
        Get-ProvisioningOption -DataPath $script:Data -Name NOPE -ErrorAction SilentlyContinue -ErrorVariable e3
        $e3[0].FullyQualifiedErrorId | Should -BeLike 'UNKNOWN_FIELD,*'
        (Get-ProvisioningOption @script:Remote | ForEach-Object { "$($_.Name)=$($_.Value)" }) | Should -Be $before
        (Get-ProvisioningOption -DataPath $script:Data | Where-Object Source -eq 'stored') | Should -BeNullOrEmpty
    }

    It 'changes nothing with -WhatIf, then applies a live setting at once and stores a restart one' {
        Set-ProvisioningOption @script:Remote -Name STATION_MAX_SCRIPT_BYTES -Value 2048 -WhatIf
        (Get-ProvisioningOption @script:Remote -Name STATION_MAX_SCRIPT_BYTES).Value | Should -Be 1048576

        $c = Set-ProvisioningOption @script:Remote -Name STATION_MAX_SCRIPT_BYTES -Value 2048 -Confirm:$false
        $c.Applied | Should -Be 'Live'
        $c.OldValue | Should -Be 1048576
        $c.NewValue | Should -Be 2048
        # Live: the running station refuses a larger script now.
        Set-ProvisioningScript @script:Remote -Name big -Content ('#' + ('x' * 3000)) -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable big
        $big[0].FullyQualifiedErrorId | Should -BeLike 'SCRIPT_TOO_LARGE,*'

        $r = Set-ProvisioningOption @script:Remote -Name STATION_WATCH_INTERVAL_SECONDS -Value (New-TimeSpan -Seconds 12) -Confirm:$false
        $r.Applied | Should -Be 'Restart'
        $r.RestartRequired | Should -BeTrue
        $w = Get-ProvisioningOption @script:Remote -Name STATION_WATCH_INTERVAL_SECONDS
        $w.Value | Should -Be 5
        $w.Pending | Should -Be 12
        (Get-ProvisioningOption -DataPath $script:Data -Name STATION_WATCH_INTERVAL_SECONDS).Value | Should -Be 12
        (Get-ProvisioningAuditLog -DataPath $script:Data -Action station.options.changed).Target | Should -Contain 'STATION_MAX_SCRIPT_BYTES'

        $l = Set-ProvisioningOption -DataPath $script:Data -Name VERIFIER_MAX_RETRIES -Value 8 -Confirm:$false
        $l.Applied | Should -Be 'Restart'
        (Get-ProvisioningOption -DataPath $script:Data -Name VERIFIER_MAX_RETRIES).Source | Should -Be 'stored'
        Set-ProvisioningOption @script:Remote -Name STATION_MAX_SCRIPT_BYTES -Value 1048576 -Confirm:$false | Out-Null
    }
}

Describe 'Firmware catalogue and work folder' {
    It 'lists releases with their SHA-256 locally and remotely, and reads notes' {
        $local = Get-ProvisioningFirmware -DataPath $script:Data
        $remote = Get-ProvisioningFirmware @script:Remote
        $local.Count | Should -Be 3
        ($remote | ForEach-Object { "$($_.Family)/$($_.Version)/$($_.Sha256)" }) | Should -Be ($local | ForEach-Object { "$($_.Family)/$($_.Version)/$($_.Sha256)" })
        $may = $local | Where-Object { $_.Family -eq 'cm4' -and $_.Version -eq '2025-05-08' }
        $may.Sha256 | Should -Be ((Get-FileHash -Algorithm SHA256 (Join-Path $script:Data 'station/firmware/cm4/pieeprom-2025-05-08.bin')).Hash.ToLowerInvariant())
        $may.HasNotes | Should -BeTrue
        (Get-ProvisioningFirmware @script:Remote -Family cm4 -Version 2025-05-08 -Notes).Notes | Should -Be 'Fixes USB boot.'
        (Get-ProvisioningFirmware -DataPath $script:Data -Family cm5).Version | Should -Be '2025-06-01'
        ($local | Format-Table | Out-String -Width 250) | Should -BeLike '*Family*Version*Sha256*'
    }

    It 'gives FIRMWARE_NOT_FOUND for an unknown version, locally and remotely' {
        Get-ProvisioningFirmware -DataPath $script:Data -Version 2020-01-01 -ErrorAction SilentlyContinue -ErrorVariable e1
        $e1[0].FullyQualifiedErrorId | Should -BeLike 'FIRMWARE_NOT_FOUND,*'
        Get-ProvisioningFirmware @script:Remote -Version 2020-01-01 -Notes -ErrorAction SilentlyContinue -ErrorVariable e2
        $e2[0].FullyQualifiedErrorId | Should -BeLike 'FIRMWARE_NOT_FOUND,*'
        Get-ProvisioningFirmware @script:Remote -Family '../cm4' -ErrorAction SilentlyContinue -ErrorVariable e3
        $e3[0].FullyQualifiedErrorId | Should -BeLike 'INVALID_FAMILY,*'
    }

    It 'selects a release with -WhatIf honoured, and refuses an unknown one without changing the selection' {
        Set-ProvisioningFirmware @script:Remote -Family cm4 -Version 2025-01-15 -WhatIf
        (Get-ProvisioningFirmware -DataPath $script:Data | Where-Object Selected) | Should -BeNullOrEmpty
        $s = Set-ProvisioningFirmware @script:Remote -Family cm4 -Version 2025-01-15 -Confirm:$false
        $s.Selected | Should -BeTrue
        Set-ProvisioningFirmware -DataPath $script:Data -Family cm4 -Version 2019-01-01 -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e1
        $e1[0].FullyQualifiedErrorId | Should -BeLike 'FIRMWARE_NOT_FOUND,*'
        Set-ProvisioningFirmware @script:Remote -Family cm4 -Version 2019-01-01 -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e2
        $e2[0].FullyQualifiedErrorId | Should -BeLike 'FIRMWARE_NOT_FOUND,*'
        (Get-ProvisioningFirmware @script:Remote | Where-Object Selected | ForEach-Object { "$($_.Family)/$($_.Version)" }) | Should -Be 'cm4/2025-01-15'
        Get-ProvisioningFirmware -DataPath $script:Data -Family cm5 | Set-ProvisioningFirmware -DataPath $script:Data -Confirm:$false | Out-Null
        (Get-ProvisioningFirmware @script:Remote | Where-Object Selected).Count | Should -Be 2
    }

    It 'clears the work folder only after confirmation, never following a link out of it' {
        $work = Join-Path $script:Data 'station/work'
        New-Item -ItemType Directory -Path (Join-Path $work 'job') -Force | Out-Null
        Set-Content -Path (Join-Path $work 'job/tmp.bin') -Value '12345' -NoNewline
        $keep = Join-Path $script:Work 'keep.txt'
        Set-Content -Path $keep -Value 'keep' -NoNewline
        New-Item -ItemType SymbolicLink -Path (Join-Path $work 'link') -Target $keep | Out-Null
        Clear-ProvisioningWorkDirectory @script:Remote -WhatIf
        Test-Path (Join-Path $work 'job/tmp.bin') | Should -BeTrue
        $r = Clear-ProvisioningWorkDirectory @script:Remote -Confirm:$false
        $r.Bytes | Should -Be 5
        @(Get-ChildItem $work -Force).Count | Should -Be 0
        Get-Content $keep | Should -Be 'keep'
        Test-Path (Join-Path $script:Data 'tpmprovisioning.db') | Should -BeTrue
        (Clear-ProvisioningWorkDirectory -DataPath $script:Data -Confirm:$false).Files | Should -Be 0
    }
}

Describe 'Stored settings at the next start' {
    It 'applies stored values when the server starts again, and an explicit parameter wins' {
        Set-ProvisioningOption -DataPath $script:Data -Name STATION_HOOK_TIMEOUT_SECONDS -Value 45 -Confirm:$false | Out-Null
        Set-ProvisioningOption -DataPath $script:Data -Name STATION_PUBLIC_DASHBOARD -Value $true -Confirm:$false | Out-Null
        $script:Server | Stop-ProvisioningServer -Confirm:$false
        $script:Server = Start-ProvisioningServer -Name 'options-2' -Port 0 -DataPath $script:Data -Role Station -StationHookTimeout '00:01:00'
        $remote = @{ Server = $script:Server.Urls[0]; Token = $script:Token.Token; CaCertificate = $script:Server.CaCertificatePath }
        $o = Get-ProvisioningOption @remote -Name STATION_HOOK_TIMEOUT_SECONDS, STATION_PUBLIC_DASHBOARD, STATION_WATCH_INTERVAL_SECONDS
        ($o | Where-Object Name -eq STATION_HOOK_TIMEOUT_SECONDS).Value | Should -Be 60       # -StationHookTimeout wins
        ($o | Where-Object Name -eq STATION_HOOK_TIMEOUT_SECONDS).Source | Should -Be 'start'
        ($o | Where-Object Name -eq STATION_PUBLIC_DASHBOARD).Value | Should -BeTrue          # stored, applied at start
        ($o | Where-Object Name -eq STATION_WATCH_INTERVAL_SECONDS).Value | Should -Be 12      # stored earlier for the next start
        ($o | Where-Object Name -eq STATION_WATCH_INTERVAL_SECONDS).Pending | Should -BeNullOrEmpty
        (Get-ProvisioningServerLog -InputObject $script:Server | Where-Object Message -like '*Stored settings applied*').Message | Should -BeLike '*STATION_PUBLIC_DASHBOARD*'
    }
}
