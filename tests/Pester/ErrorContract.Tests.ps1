#Requires -Version 7.6
# No unhandled .NET exception reaches the user (issue 15, item 6): every exported cmdlet, in each of its parameter sets, is
# called with unusable paths and an unreachable server, then with wrong credentials against a running server; every error
# it gives must carry a specific ErrorId (not an exception's type name) and a category other than NotSpecified.
BeforeDiscovery {
    $ModulePath = $env:TPMPROV_MODULE_PATH
    if (-not $ModulePath) { throw 'Set TPMPROV_MODULE_PATH to the built module manifest (build.ps1 Test does).' }
    Import-Module $ModulePath -Force
    $script:Cmdlets = Get-Command -Module TpmProvisioning -CommandType Cmdlet | Sort-Object Name | ForEach-Object { @{ Name = $_.Name } }
}

BeforeAll {
    Import-Module $env:TPMPROV_MODULE_PATH -Force
    $script:Work = Join-Path ([IO.Path]::GetTempPath()) ("tpmprov-pester-errcontract-" + [guid]::NewGuid())
    New-Item -ItemType Directory -Path $script:Work | Out-Null
    # Nothing here may touch the user's data path or a real TPM.
    $script:SavedData = $env:TPMPROV_DATA; $script:SavedTcti = $env:TPM2TOOLS_TCTI
    $env:TPMPROV_DATA = Join-Path $script:Work 'default-data'
    $l = [Net.Sockets.TcpListener]::new([Net.IPAddress]::Loopback, 0); $l.Start(); $script:DeadPort = $l.LocalEndpoint.Port; $l.Stop()
    $env:TPM2TOOLS_TCTI = "swtpm:host=127.0.0.1,port=$script:DeadPort"
    # A file where a folder is expected: no store, no folder can be made below it.
    $script:AFile = Join-Path $script:Work 'a-file'
    Set-Content -Path $script:AFile -Value 'not a folder'
    $script:Unusable = Join-Path $script:AFile 'data'
    $key = [Security.Cryptography.ECDsa]::Create([Security.Cryptography.ECCurve+NamedCurves]::nistP256)
    $req = [Security.Cryptography.X509Certificates.CertificateRequest]::new('CN=stranger', $key, [Security.Cryptography.HashAlgorithmName]::SHA256)
    $script:Stranger = $req.CreateSelfSigned([DateTimeOffset]::Now.AddMinutes(-5), [DateTimeOffset]::Now.AddDays(1))
    $script:BadSecret = ConvertTo-SecureString 'wrong-secret-value' -AsPlainText -Force
    $script:BadCred = [pscredential]::new('nobody', $script:BadSecret)

    # A running server for the wrong-credentials pass: every role that takes credentials or certificates.
    $live = Join-Path $script:Work 'live'
    $script:Live = Start-ProvisioningServer -Name 'errcontract' -Port 0 -DataPath $live -Role Provisioning, Registrar, Kms, Station -KmsMasterKey InsecureFile -WarningAction SilentlyContinue

    # A value for a parameter, by name first, then by type; $null when the test cannot make one.
    function script:ValueFor($p, $server) {
        $name = $p.Name; $t = $p.ParameterType
        if ($t -eq [System.Management.Automation.SwitchParameter]) { return $null }
        switch -Regex ($name) {
            '^(DataPath)$' { return $script:Unusable }
            '^(Path|LiteralPath|CertificatePath|KeyPath|OutFile|ScriptPath|PolicyPath|RuntimePolicy|MeasuredBootPolicy|RevocationKey|Payload)$' { return (Join-Path $script:Unusable 'file.pem') }
            '^(Server|Registrar|Verifier|ServerUri|Uri|Url)$' { if ($t -eq [string] -or $t -eq [uri]) { return ($server ?? $script:Dead) } }
            '^(Credential)$' { return $script:BadCred }
            '^(Tpm|MasterKeyTpm|ConnectionString)$' { return "swtpm:host=127.0.0.1,port=$script:DeadPort" }
            '^(AgentId)$' { return '00000000-0000-4000-8000-000000000001' }
            '^(CaCertificate|ClientCertificate|Certificate)$' { if ($t -eq [Security.Cryptography.X509Certificates.X509Certificate2] -or $t -eq [object]) { return $script:Stranger } }
        }
        $base = [Nullable]::GetUnderlyingType($t) ?? $t
        if ($base -eq [string]) { return 'x' }
        if ($base -eq [string[]]) { return @('x') }
        if ($base -eq [uri]) { return ($server ?? $script:Dead) }
        if ($base -eq [securestring]) { return $script:BadSecret }
        if ($base -eq [pscredential]) { return $script:BadCred }
        if ($base -eq [Security.Cryptography.X509Certificates.X509Certificate2]) { return $script:Stranger }
        if ($base -in [int], [long], [double]) { return 1 }
        if ($base -in [uint32], [uint64]) { return [uint32]2164260866 }
        if ($base -eq [uint32[]] -or $base -eq [int[]]) { return @(16) }
        if ($base -eq [timespan]) { return [timespan]::FromSeconds(1) }
        if ($base -eq [bool]) { return $true }
        if ($base -eq [byte[]]) { return [byte[]](1, 2, 3, 4) }
        if ($base -eq [object]) { return (Join-Path $script:Unusable 'file.pem') }
        if ($base -eq [hashtable]) { return @{} }
        if ($base.IsEnum) { return [Enum]::GetValues($base)[0] }
        if ($base.IsArray -and $base.GetElementType().IsEnum) { return @([Enum]::GetValues($base.GetElementType())[0]) }
        return $null
    }

    # Calls every parameter set of a cmdlet; returns what went wrong with the error contract, as text lines.
    function script:Probe([string] $cmdName, $server) {
        $cmd = Get-Command $cmdName
        $problems = [Collections.Generic.List[string]]::new()
        foreach ($set in $cmd.ParameterSets) {
            $splat = @{}
            $skip = $false
            foreach ($p in $set.Parameters) {
                if ($p.Name -in [System.Management.Automation.PSCmdlet]::CommonParameters -or $p.Name -in [System.Management.Automation.PSCmdlet]::OptionalCommonParameters) { continue }
                # Locally (no server given) the paths are unusable, optional files (a key, a payload) included; remotely the server is
                # given instead of a data path.
                $optional = if ($server) { 'Server', 'Registrar', 'Verifier', 'ServerUri', 'Credential', 'Token', 'ApiKey', 'Tpm' } else { 'DataPath', 'Path', 'Tpm', 'MasterKeyTpm', 'RevocationKey', 'Payload' }
                $wanted = $p.IsMandatory -or $p.Name -in $optional
                if (-not $wanted) { continue }
                $v = ValueFor $p $server
                if ($null -eq $v) { if ($p.IsMandatory) { $skip = $true; break } else { continue } }
                $splat[$p.Name] = $v
            }
            if ($skip) { continue }
            if ($server -and $set.Parameters.Name -contains 'SkipCertificateCheck' -and -not $splat.ContainsKey('CaCertificate')) { $splat.SkipCertificateCheck = $true }
            if ($cmd.Parameters.ContainsKey('Confirm')) { $splat.Confirm = $false }
            $errs = [Collections.Generic.List[System.Management.Automation.ErrorRecord]]::new()
            try {
                $ev = $null
                & $cmdName @splat -ErrorAction SilentlyContinue -ErrorVariable ev -WarningAction SilentlyContinue -InformationAction SilentlyContinue 6>$null | Out-Null
                foreach ($e in $ev) { if ($e -is [System.Management.Automation.ErrorRecord]) { $errs.Add($e) } }
            }
            catch { $errs.Add($_) }
            foreach ($e in $errs) {
                $id = $e.FullyQualifiedErrorId.Split(',')[0]
                $cat = $e.CategoryInfo.Category
                $typeName = $e.Exception.GetType().Name
                if ($id -eq $typeName -or $id -match 'Exception$' -or $id -match '^System\.' -or $cat -eq 'NotSpecified') {
                    $problems.Add("$cmdName [$($set.Name)] $(($splat.Keys | Sort-Object) -join ','): $id ($cat): $($e.Exception.Message)")
                }
            }
        }
        $problems
    }
    $script:Dead = "https://127.0.0.1:$script:DeadPort"
}

AfterAll {
    Get-ProvisioningServer | Stop-ProvisioningServer -Confirm:$false
    Get-TpmSimulator | Stop-TpmSimulator -Confirm:$false
    $env:TPMPROV_DATA = $script:SavedData; $env:TPM2TOOLS_TCTI = $script:SavedTcti
    Remove-Item $script:Work -Recurse -Force -ErrorAction Ignore
}

Describe 'Every cmdlet''s errors have a specific ErrorId and category' {
    It '<Name>: unusable paths, no TPM' -ForEach $script:Cmdlets {
        $problems = Probe $Name $null
        $problems | Should -BeNullOrEmpty -Because ($problems -join [Environment]::NewLine)
    }

    It '<Name>: an unreachable server' -ForEach $script:Cmdlets {
        $problems = Probe $Name $script:Dead
        $problems | Should -BeNullOrEmpty -Because ($problems -join [Environment]::NewLine)
    }

    It '<Name>: wrong credentials and a stranger''s certificate against a running server' -ForEach $script:Cmdlets {
        $problems = Probe $Name $script:Live.Urls[0]
        $problems | Should -BeNullOrEmpty -Because ($problems -join [Environment]::NewLine)
    }
}
