#Requires -Version 7.6
<#
One name, one type, one meaning per concept across every cmdlet of the module, checked against the canonical table
tests/Pester/ParameterNames.psd1 (the conventions section of docs/ARCHITECTURE.md explains it). A cmdlet added later with
a parameter name that is not in the table, a known name with another type, or an alias that another concept already
uses fails here with the line to add or the name to use instead.
#>

BeforeDiscovery {
    if (-not $env:TPMPROV_MODULE_PATH) { throw 'Set TPMPROV_MODULE_PATH to the built module manifest (build.ps1 Test does).' }
    $module = Import-Module -Name $env:TPMPROV_MODULE_PATH -PassThru -Force -ErrorAction Stop
    $script:CommandNames = @($module.ExportedCommands.Values | Where-Object CommandType -EQ 'Cmdlet' | Sort-Object Name | ForEach-Object { @{ Name = $_.Name } })
}

BeforeAll {
    $script:Module = Import-Module -Name $env:TPMPROV_MODULE_PATH -PassThru -Force -ErrorAction Stop
    $script:Table = Import-PowerShellDataFile -Path (Join-Path $PSScriptRoot 'ParameterNames.psd1')
    $script:Canon = $script:Table.Parameters
    $script:Shared = $script:Table.SharedAliases
    $common = [System.Management.Automation.PSCmdlet]::CommonParameters + [System.Management.Automation.PSCmdlet]::OptionalCommonParameters

    function script:Get-TypeName([type] $Type) {
        $t = $Type
        if ($t.IsArray) { $t = $t.GetElementType() }
        $u = [Nullable]::GetUnderlyingType($t)
        if ($u) { $t = $u }
        $t.Name
    }

    # Every parameter of every cmdlet: command, name, normalised type, aliases.
    $script:Uses = foreach ($c in $script:Module.ExportedCommands.Values | Where-Object CommandType -EQ 'Cmdlet') {
        foreach ($p in $c.Parameters.Values) {
            if ($common -contains $p.Name) { continue }
            [pscustomobject]@{ Command = $c.Name; Name = $p.Name; Type = Get-TypeName $p.ParameterType; Aliases = @($p.Aliases) }
        }
    }

    # Checks the table itself against the module's parameters; returns one problem text per violation.
    function script:Get-NamingProblems($Uses, $Canon, $Shared) {
        foreach ($u in $Uses) {
            $e = $Canon[$u.Name]
            if (-not $e) {
                "$($u.Command) -$($u.Name) [$($u.Type)]: '$($u.Name)' is not a canonical parameter name. Use the existing name for this concept, or add a line to tests/Pester/ParameterNames.psd1: $($u.Name) = @{ Type = '$($u.Type)'; Meaning = '...' }"
                continue
            }
            $want = if ($e.Types -and $e.Types.ContainsKey($u.Command)) { $e.Types[$u.Command] } else { $e.Type }
            if ($u.Type -ne $want) {
                "$($u.Command) -$($u.Name) is [$($u.Type)], but -$($u.Name) is [$want] everywhere else ($($e.Meaning))."
            }
            foreach ($a in $u.Aliases) {
                $declared = @($e.Aliases) -contains $a
                if (-not $declared) {
                    "$($u.Command) -$($u.Name) has alias '$a', which is not declared under $($u.Name) in ParameterNames.psd1."
                }
                $other = $Canon[$a]
                if ($other -and $a -ne $u.Name -and -not $other.Generic -and -not (@($e.SameAs) -contains $a) -and -not $Shared.ContainsKey($a)) {
                    "$($u.Command) -$($u.Name) has alias '$a', but -$a is the canonical name of another concept ($($other.Meaning))."
                }
            }
        }
        # An alias declared for two concepts (not a generic name, which any noun may use for its own id or name).
        $byAlias = @{}
        foreach ($name in $Canon.Keys) { foreach ($a in @($Canon[$name].Aliases)) { if ($a) { $byAlias[$a] += @($name) } } }
        foreach ($a in $byAlias.Keys) {
            $owners = @($byAlias[$a] | Sort-Object -Unique)
            if ($owners.Count -gt 1 -and -not ($Canon[$a] -and $Canon[$a].Generic) -and -not $Shared.ContainsKey($a)) {
                "Alias '$a' is declared for $($owners -join ', '): one alias, one concept (or list it in SharedAliases with the reason)."
            }
        }
        # A certificate parameter named *CaCertificate takes a certificate or a file, never only a string.
        foreach ($u in $Uses | Where-Object Name -Like '*CaCertificate') {
            if ($u.Type -ne 'Object') { "$($u.Command) -$($u.Name) is [$($u.Type)]: -*CaCertificate parameters take a certificate or a PEM/DER file ([object])." }
        }
    }
}

Describe 'One name per concept' {
    It 'every entry of the table has a type and a meaning' {
        foreach ($name in $script:Canon.Keys) {
            $script:Canon[$name].Type | Should -Not -BeNullOrEmpty -Because "$name needs a Type"
            $script:Canon[$name].Meaning | Should -Not -BeNullOrEmpty -Because "$name needs a Meaning"
        }
    }

    It 'every parameter of every cmdlet has its canonical name, type and aliases' {
        $problems = @(Get-NamingProblems $script:Uses $script:Canon $script:Shared)
        $problems -join [Environment]::NewLine | Should -BeNullOrEmpty
    }

    It 'the check fails for a second type, an unknown name, a colliding alias and a string CA certificate' {
        # The rules must be able to fail: feed them uses that break each one.
        $bad = @(
            [pscustomobject]@{ Command = 'New-Thing'; Name = 'AkHandle'; Type = 'String'; Aliases = @() }
            [pscustomobject]@{ Command = 'New-Thing'; Name = 'PersistentHandle'; Type = 'UInt32'; Aliases = @() }
            [pscustomobject]@{ Command = 'New-Thing'; Name = 'Serial'; Type = 'String'; Aliases = @('Vendor') }
            [pscustomobject]@{ Command = 'New-Thing'; Name = 'CaCertificate'; Type = 'String'; Aliases = @() }
        )
        $canon = $script:Canon.Clone()
        $canon['Kind2'] = @{ Type = 'String'; Meaning = 'x'; Aliases = @('Tail') }
        $problems = @(Get-NamingProblems $bad $canon $script:Shared)
        ($problems -match 'AkHandle is \[String\]').Count | Should -Be 1
        ($problems -match "'PersistentHandle' is not a canonical parameter name").Count | Should -Be 1
        ($problems -match "alias 'Vendor'").Count | Should -BeGreaterThan 0
        ($problems -match 'parameters take a certificate or a PEM/DER file').Count | Should -Be 1
        ($problems -match "Alias 'Tail' is declared for").Count | Should -Be 1
    }

    It 'old names still bind as aliases: <Old> on <Command>' -TestCases @(
        @{ Command = 'New-TpmAttestationKey'; Old = 'PersistentHandle'; New = 'AkHandle' }
        @{ Command = 'Get-TpmEndorsementKey'; Old = 'Kind'; New = 'EkKind' }
        @{ Command = 'Get-ProvisioningServerLog'; Old = 'Tail'; New = 'Last' }
        @{ Command = 'Set-ProvisioningApiKey'; Old = 'KeyId'; New = 'ApiKeyId' }
        @{ Command = 'Remove-ProvisioningApiKey'; Old = 'KeyId'; New = 'ApiKeyId' }
        @{ Command = 'New-KmsProvider'; Old = 'KeyId'; New = 'ProviderKeyId' }
        @{ Command = 'Set-KmsProvider'; Old = 'KeyId'; New = 'ProviderKeyId' }
        @{ Command = 'Import-TpmCa'; Old = 'CertificatePath'; New = 'Path' }
    ) {
        param($Command, $Old, $New)
        (Get-Command $Command).Parameters[$New].Aliases | Should -Contain $Old
    }
}
