#Requires -Version 7.6
BeforeAll {
    $ModulePath = $env:TPMPROV_MODULE_PATH
    if (-not $ModulePath) { throw 'Set TPMPROV_MODULE_PATH to the built module manifest (build.ps1 Test does).' }
    Import-Module $ModulePath -Force
    $script:Data = Join-Path ([IO.Path]::GetTempPath()) ("tpmprov-pester-" + [guid]::NewGuid())
}

AfterAll {
    Get-ProvisioningServer | Stop-ProvisioningServer -Confirm:$false
    Remove-Item $script:Data -Recurse -Force -ErrorAction Ignore
}

Describe 'Module import in a clean pwsh' {
    It 'imports with -NoProfile in a child process and starts Kestrel there (the ASP.NET Core resolver works)' {
        $exe = [Environment]::ProcessPath
        [string[]] $prefix = if ([IO.Path]::GetFileNameWithoutExtension($exe) -eq 'pwsh') { @() } else { @(Join-Path $PSHOME 'pwsh.dll') }
        $dir = Join-Path $script:Data 'child'
        $script = "`$ErrorActionPreference='Stop'; Import-Module '$ModulePath'; `$s = Start-ProvisioningServer -Port 0 -DataPath '$dir'; `$h = Invoke-RestMethod (`$s.Urls[0] + '/healthz') -SkipCertificateCheck; `$s | Stop-ProvisioningServer -Confirm:`$false; `$h.status"
        $out = & $exe @prefix -NoProfile -NonInteractive -Command $script
        $LASTEXITCODE | Should -Be 0
        ($out | Select-Object -Last 1) | Should -Be 'ok'
    }

    It 'exports exactly the cmdlets the manifest lists' {
        $manifest = Import-PowerShellDataFile $ModulePath
        $exported = (Get-Module TpmProvisioning).ExportedCmdlets.Keys | Sort-Object
        $exported | Should -Be ($manifest.CmdletsToExport | Sort-Object)
        $inAssembly = [TpmProvisioning.Cmdlets.ModuleInitializer].Assembly.GetTypes() |
            Where-Object { $_.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $false) } |
            ForEach-Object { $a = $_.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $false)[0]; "$($a.VerbName)-$($a.NounName)" } | Sort-Object
        $inAssembly | Should -Be ($manifest.CmdletsToExport | Sort-Object)
    }

    It 'requires PowerShell 7.6' {
        (Test-ModuleManifest $ModulePath).PowerShellVersion | Should -Be ([version]'7.6')
    }
}

Describe 'Start-, Get-, Stop-ProvisioningServer' {
    It 'starts on a free port, answers /healthz over HTTPS, and stops from the pipeline' {
        $s = Start-ProvisioningServer -Port 0 -DataPath $script:Data -Name pester1
        $s.PSObject.TypeNames | Should -Contain 'TpmProvisioning.Hosting.ServerInfo'
        $s.State | Should -Be 'Running'
        $s.Port | Should -BeGreaterThan 0
        $s.Urls[0] | Should -Be "https://127.0.0.1:$($s.Port)"
        (Invoke-RestMethod "$($s.Urls[0])/healthz" -SkipCertificateCheck).status | Should -Be 'ok'
        (Get-ProvisioningServer -Name pester1).Id | Should -Be $s.Id
        $s | Stop-ProvisioningServer -Confirm:$false
        $s.State | Should -Be 'Stopped'
        { Invoke-RestMethod "$($s.Urls[0])/healthz" -SkipCertificateCheck -TimeoutSec 5 } | Should -Throw
    }

    It 'serves a certificate issued by the CA under its data path' {
        $s = Start-ProvisioningServer -Port 0 -DataPath $script:Data
        try {
            $ca = [System.Security.Cryptography.X509Certificates.X509Certificate2]::CreateFromPem((Get-Content -Raw $s.CaCertificatePath))
            $tcp = [System.Net.Sockets.TcpClient]::new('127.0.0.1', $s.Port)
            $ssl = [System.Net.Security.SslStream]::new($tcp.GetStream(), $false, { $true })
            $ssl.AuthenticateAsClient('localhost')
            $leaf = [System.Security.Cryptography.X509Certificates.X509Certificate2]::new($ssl.RemoteCertificate)
            $ssl.Dispose(); $tcp.Dispose()
            $leaf.Issuer | Should -Be $ca.Subject
            $leaf.Thumbprint | Should -Be $s.CertificateThumbprint
        }
        finally { $s | Stop-ProvisioningServer -Confirm:$false }
    }

    It 'gives a clear terminating error, not a stack trace, when the port is taken' {
        $s = Start-ProvisioningServer -Port 0 -DataPath $script:Data
        try {
            $err = $null
            try { Start-ProvisioningServer -Port $s.Port -DataPath (Join-Path $script:Data 'clash') } catch { $err = $_ }
            $err | Should -Not -BeNullOrEmpty
            $err.FullyQualifiedErrorId | Should -BeLike 'ServerStartPortInUse,*'
            $err.CategoryInfo.Category | Should -Be 'ResourceUnavailable'
            $err.Exception.Message | Should -BeLike "*$($s.Port)*already in use*"
        }
        finally { $s | Stop-ProvisioningServer -Confirm:$false }
    }

    It 'honours -WhatIf on Start and Stop' {
        $before = @(Get-ProvisioningServer).Count
        Start-ProvisioningServer -Port 0 -DataPath $script:Data -WhatIf | Should -BeNullOrEmpty
        @(Get-ProvisioningServer).Count | Should -Be $before
        $s = Start-ProvisioningServer -Port 0 -DataPath $script:Data
        $s | Stop-ProvisioningServer -WhatIf
        (Get-ProvisioningServer -Id $s.Id).State | Should -Be 'Running'
        $s | Stop-ProvisioningServer -Confirm:$false
    }

    It 'runs several servers at once and completes their names' {
        $a = Start-ProvisioningServer -Port 0 -DataPath $script:Data -Name 'fleet-a'
        $b = Start-ProvisioningServer -Port 0 -DataPath (Join-Path $script:Data 'b') -Name 'fleet-b' -Role Provisioning, Verifier
        try {
            (Get-ProvisioningServer -Name 'fleet-*').Count | Should -Be 2
            $b.Roles | Should -Be ([TpmProvisioning.Hosting.ServerRole]'Provisioning, Verifier')
            $completions = TabExpansion2 -inputScript 'Stop-ProvisioningServer -Name fleet-' -cursorColumn 36
            $completions.CompletionMatches.CompletionText | Should -Contain 'fleet-b'
        }
        finally { $a, $b | Stop-ProvisioningServer -Confirm:$false }
    }

    It 'refuses Registrar with Verifier on one server (both serve /v2.1/agents/) with ServerStartRoleConflict' {
        $before = @(Get-ProvisioningServer).Count
        $err = $null
        try { Start-ProvisioningServer -Port 0 -DataPath (Join-Path $script:Data 'c') -Role Registrar, Verifier } catch { $err = $_ }
        $err.FullyQualifiedErrorId | Should -BeLike 'ServerStartRoleConflict,*'
        $err.CategoryInfo.Category | Should -Be 'InvalidArgument'
        @(Get-ProvisioningServer).Count | Should -Be $before
    }

    It 'keeps a redacted log and an audit trail' {
        $s = Start-ProvisioningServer -Port 0 -DataPath $script:Data -Name audited
        (Get-ProvisioningServerLog $s).Message | Should -Contain ((Get-ProvisioningServerLog $s).Message | Where-Object { $_ -like 'Server audited started*' })
        $s | Stop-ProvisioningServer -Confirm:$false
        $audit = Get-ProvisioningAuditLog -DataPath $script:Data -Last 2
        $audit[0].Action | Should -Be 'server.stop'
        $audit[1].Action | Should -Be 'server.start'
        $audit[1].Target | Should -Be 'audited'
    }
}
