#Requires -Version 7.6
# Station images through the cmdlets: a server over HTTPS in this session (Provisioning and Station roles), local (-DataPath)
# and remote (-Server) alike; uploads, hashes against Get-FileHash, traversal refused with the station's error id, -WhatIf,
# and an artefact archive turned into a Keylime runtime policy.
BeforeAll {
    $ModulePath = $env:TPMPROV_MODULE_PATH
    if (-not $ModulePath) { throw 'Set TPMPROV_MODULE_PATH to the built module manifest (build.ps1 Test does).' }
    Import-Module $ModulePath -Force
    $script:Work = Join-Path ([IO.Path]::GetTempPath()) ("tpmprov-pester-images-" + [guid]::NewGuid())
    New-Item -ItemType Directory -Path $script:Work | Out-Null
    $script:Data = Join-Path $script:Work 'data'
    $script:Server = Start-ProvisioningServer -Port 0 -DataPath $script:Data -Role Provisioning, Station
    $script:Token = New-StationToken -DataPath $script:Data -Name 'pester-images' -Confirm:$false
    $script:Remote = @{ Server = $script:Server.Urls[0]; Token = $script:Token.Token; CaCertificate = $script:Server.CaCertificatePath }
    $script:Images = Join-Path $script:Data 'station/images'

    $script:Disk = Join-Path $script:Work 'disk.img'
    $bytes = [byte[]]::new(5MB + 123)
    [Security.Cryptography.RandomNumberGenerator]::Fill($bytes)
    $bytes[0] = 0; $bytes[257] = 0; $bytes[510] = 0 # no archive magic, no partition table: a raw image whatever the random bytes
    [IO.File]::WriteAllBytes($script:Disk, $bytes)
    $script:DiskSha = (Get-FileHash $script:Disk -Algorithm SHA256).Hash.ToLowerInvariant()
}

AfterAll {
    Get-ProvisioningServer | Stop-ProvisioningServer -Confirm:$false
    Remove-Item $script:Work -Recurse -Force -ErrorAction Ignore
}

Describe 'Station images' {
    It 'adds nothing with -WhatIf, then adds an image remotely and lists it the same locally' {
        Add-ProvisioningImage -Path $script:Disk -Name 'os.img' @script:Remote -WhatIf
        Get-ProvisioningImage -DataPath $script:Data | Should -BeNullOrEmpty
        $added = Add-ProvisioningImage -Path $script:Disk -Name 'os.img' @script:Remote -Confirm:$false
        $added | Should -BeOfType ([TpmProvisioning.Station.StationImage])
        $added.Name | Should -Be 'os.img'
        $added.Size | Should -Be (Get-Item $script:Disk).Length
        $local = Get-ProvisioningImage -DataPath $script:Data -Name 'os.img'
        $local.Size | Should -Be $added.Size
        (Get-ProvisioningImage @script:Remote -Name 'os*').Name | Should -Be 'os.img'
    }

    It 'adds locally, renaming a taken name' {
        $again = Get-Item $script:Disk | Add-ProvisioningImage -Name 'os.img' -DataPath $script:Data -Confirm:$false
        $again.Name | Should -Be 'os_1.img'
        (Get-FileHash (Join-Path $script:Images 'os_1.img') -Algorithm SHA256).Hash.ToLowerInvariant() | Should -Be $script:DiskSha
    }

    It 'hashes an image remotely and locally to what Get-FileHash says' {
        $remote = Get-ProvisioningImageHash -Name 'os.img' @script:Remote
        $remote | Should -BeOfType ([TpmProvisioning.Station.ImageHashState])
        $remote.Status | Should -Be 'complete'
        $remote.Sha256 | Should -Be $script:DiskSha
        (Get-ProvisioningImageHash -Name 'os_1.img' -DataPath $script:Data).Sha256 | Should -Be $script:DiskSha
        (Get-ProvisioningImage @script:Remote -Name 'os.img').Sha256 | Should -Be $script:DiskSha
    }

    It 'refuses traversal with INVALID_IMAGE_NAME, locally and remotely, and touches nothing' {
        $sentinel = Join-Path $script:Data 'station/sentinel.txt'
        Set-Content -Path $sentinel -Value 'keep me'
        foreach ($bad in '../sentinel.txt', '/etc/passwd', '..', '.hidden', "a`0b") {
            Get-ProvisioningImageHash -Name $bad @script:Remote -ErrorAction SilentlyContinue -ErrorVariable e1
            $e1[0].FullyQualifiedErrorId | Should -BeLike 'INVALID_IMAGE_NAME,*'
            Get-ProvisioningImageHash -Name $bad -DataPath $script:Data -ErrorAction SilentlyContinue -ErrorVariable e2
            $e2[0].FullyQualifiedErrorId | Should -BeLike 'INVALID_IMAGE_NAME,*'
            Remove-ProvisioningImage -Name $bad @script:Remote -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable e3
            $e3[0].FullyQualifiedErrorId | Should -BeLike 'INVALID_IMAGE_NAME,*'
            Get-ProvisioningImage -Name $bad -DataPath $script:Data -ErrorAction SilentlyContinue -ErrorVariable e4
            $e4[0].FullyQualifiedErrorId | Should -BeLike 'INVALID_IMAGE_NAME,*'
        }
        Get-Content $sentinel | Should -Be 'keep me'
        Get-ProvisioningImageHash -Name 'missing.img' @script:Remote -ErrorAction SilentlyContinue -ErrorVariable e5
        $e5[0].FullyQualifiedErrorId | Should -BeLike 'IMAGE_NOT_FOUND,*'
        $e5[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
    }

    It 'analyses an artefact archive and turns it into a runtime policy with the files'' digests' {
        $tree = Join-Path $script:Work 'rootfs'
        New-Item -ItemType Directory -Path (Join-Path $tree 'usr/bin') -Force | Out-Null
        Set-Content -Path (Join-Path $tree 'usr/bin/agent') -Value 'agent binary'
        Set-Content -Path (Join-Path $tree 'config.txt') -Value 'arm_64bit=1'
        $tar = Join-Path $script:Work 'rootfs.tar'
        & tar -C $tree -cf $tar .
        $LASTEXITCODE | Should -Be 0
        Add-ProvisioningImage -Path $tar -DataPath $script:Data -Confirm:$false | Out-Null
        $analysis = Get-ProvisioningImage -Name 'rootfs.tar' -Analyze @script:Remote
        $analysis | Should -BeOfType ([TpmProvisioning.Station.ImageAnalysis])
        $analysis.Format | Should -Be 'tar'
        ($analysis.Files.Path | Sort-Object) | Should -Be @('config.txt', 'usr/bin/agent')
        $policy = $analysis | New-AttestationPolicy
        $policy.RuntimeEntries | Should -Be 2
        $digests = ($policy.RuntimePolicy | ConvertFrom-Json -AsHashtable).digests
        $digests['/usr/bin/agent'] | Should -Be @((Get-FileHash (Join-Path $tree 'usr/bin/agent') -Algorithm SHA256).Hash.ToLowerInvariant())
        # The archive path works directly too, with a prefix.
        $p2 = New-AttestationPolicy -Image $tar -PathPrefix '/opt/app'
        ($p2.RuntimePolicy | ConvertFrom-Json -AsHashtable).digests.Keys | Should -Contain '/opt/app/config.txt'
        # A raw disk image is not a runtime policy.
        New-AttestationPolicy -Image (Join-Path $script:Images 'os.img') -ErrorAction SilentlyContinue -ErrorVariable e
        $e.Count | Should -BeGreaterThan 0
    }

    It 'removes an image only when confirmed' {
        Remove-ProvisioningImage -Name 'os_1.img' -DataPath $script:Data -WhatIf
        Test-Path (Join-Path $script:Images 'os_1.img') | Should -BeTrue
        Remove-ProvisioningImage -Name 'os_1.img' -DataPath $script:Data -Confirm:$false
        Remove-ProvisioningImage -Name 'os.img' @script:Remote -Confirm:$false
        Test-Path (Join-Path $script:Images 'os_1.img') | Should -BeFalse
        Get-ProvisioningImage -DataPath $script:Data -Name 'os.img' -ErrorAction SilentlyContinue -ErrorVariable e
        $e[0].FullyQualifiedErrorId | Should -BeLike 'IMAGE_NOT_FOUND,*'
    }
}
