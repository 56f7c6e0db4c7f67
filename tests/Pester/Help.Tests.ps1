#Requires -Version 7.2
<#
Help quality for every exported command of the built module.

Input: $env:TPMPROV_MODULE_PATH, the path of the built module's TpmProvisioning.psd1 (its
folder must hold en-US/TpmProvisioning.dll-Help.xml and en-US/about_TpmProvisioning.help.txt,
written by tools/Build-Help.ps1 from docs/). Run in a fresh pwsh: a binary module cannot be unloaded.
#>

BeforeDiscovery {
    if (-not $env:TPMPROV_MODULE_PATH) {
        throw 'Set TPMPROV_MODULE_PATH to the built module manifest (TpmProvisioning.psd1) before running Help.Tests.ps1.'
    }
    $module = Import-Module -Name $env:TPMPROV_MODULE_PATH -PassThru -Force -ErrorAction Stop
    $commands = @($module.ExportedCommands.Values |
            Where-Object CommandType -In 'Cmdlet', 'Function' |
            Sort-Object Name |
            ForEach-Object { @{ Name = $_.Name } })
}

BeforeAll {
    $script:module = Import-Module -Name $env:TPMPROV_MODULE_PATH -PassThru -Force -ErrorAction Stop
    # Common parameters (Verbose, ErrorAction, ProgressAction, ...) are documented by PowerShell itself.
    # WhatIf and Confirm are not in this list: pages document them like any other parameter.
    $script:commonParameters = [System.Management.Automation.PSCmdlet]::CommonParameters

    function Get-HelpText {
        param($Value)
        (@($Value | ForEach-Object { if ($_ -is [string]) { $_ } else { $_.Text } }) -join "`n").Trim()
    }
}

Describe 'TpmProvisioning help' {
    It 'exports at least one cmdlet' {
        @($module.ExportedCommands.Values | Where-Object CommandType -In 'Cmdlet', 'Function').Count |
            Should -BeGreaterThan 0
    }

    It 'has the about_TpmProvisioning topic' {
        $about = Get-Help -Name about_TpmProvisioning -ErrorAction Stop | Out-String
        $about | Should -Match 'about_TpmProvisioning'
        $about | Should -Match 'SHORT DESCRIPTION'
    }
}

Describe '<Name> help' -ForEach $commands {
    BeforeAll {
        $command = Get-Command -Name $Name -Module $module.Name
        $help = Get-Help -Name "$($module.Name)\$Name" -Full -ErrorAction Stop
    }

    It 'has a written synopsis, not the generated syntax' {
        $synopsis = ([string]$help.Synopsis).Trim()
        $synopsis | Should -Not -BeNullOrEmpty
        # Without MAML, Get-Help makes the synopsis from the syntax: "Name [-Param] <Type> ...".
        $synopsis | Should -Not -BeLike "$Name*"
        $synopsis | Should -Not -Match '\[<CommonParameters>\]'
    }

    It 'has a description' {
        Get-HelpText $help.description | Should -Not -BeNullOrEmpty
    }

    It 'has at least one example, each with code' {
        $examples = @($help.examples.example | Where-Object { $_ })
        $examples.Count | Should -BeGreaterThan 0 -Because "$Name needs an '### Example' under EXAMPLES"
        foreach ($example in $examples) {
            ([string]$example.code).Trim() | Should -Not -BeNullOrEmpty -Because "every example of $Name needs code ($($example.title))"
        }
    }

    It 'describes every parameter' {
        $documented = @{}
        foreach ($p in @($help.parameters.parameter | Where-Object { $_ })) {
            $documented[$p.name] = Get-HelpText $p.description
        }
        $parameters = @($command.Parameters.Keys | Where-Object { $_ -notin $commonParameters })
        foreach ($parameter in $parameters) {
            $documented.ContainsKey($parameter) | Should -BeTrue -Because "-$parameter of $Name needs a '### -$parameter' section"
            $documented[$parameter] | Should -Not -BeNullOrEmpty -Because "-$parameter of $Name needs a description"
        }
    }

    It 'documents no parameter the cmdlet does not have' {
        $actual = @($command.Parameters.Keys)
        foreach ($p in @($help.parameters.parameter | Where-Object { $_ })) {
            $actual | Should -Contain $p.name -Because "help for $Name documents -$($p.name)"
        }
    }
}
