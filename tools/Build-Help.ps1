#Requires -Version 7.2
<#
.SYNOPSIS
Builds the module's Get-Help files from the PlatyPS-layout markdown in docs/.

.DESCRIPTION
Converts every docs/cmdlets/*.md page (PlatyPS markdown layout, schema 2.0.0) into one
MAML file, <OutputPath>/<Culture>/<ModuleName>.dll-Help.xml, which Get-Help reads for the
cmdlets of a binary module, and turns every docs/about_*.md topic into
<OutputPath>/<Culture>/about_*.help.txt.

Every page is checked before anything is written. Each problem is reported as
"file:line: message" and the build fails if there is at least one. See docs/HELP-AUTHORING.md.

.PARAMETER DocsPath
The docs folder: cmdlet pages in <DocsPath>/cmdlets/*.md, about topics in <DocsPath>/about_*.md.

.PARAMETER OutputPath
The built module folder (the one holding <ModuleName>.dll). Help goes to its <Culture> subfolder.

.PARAMETER ModuleName
The module name. The MAML file is named after its root assembly, <ModuleName>.dll.

.PARAMETER Culture
The help culture folder. Default en-US.

.EXAMPLE
./tools/Build-Help.ps1 -DocsPath docs -OutputPath out/TpmProvisioning
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)]
    [string] $DocsPath,

    [Parameter(Mandatory)]
    [string] $OutputPath,

    [string] $ModuleName = 'TpmProvisioning',

    [string] $Culture = 'en-US'
)

Set-StrictMode -Version 3.0
$ErrorActionPreference = 'Stop'

$script:Problems = [System.Collections.Generic.List[string]]::new()
$script:CurrentFile = ''

$NsMaml = 'http://schemas.microsoft.com/maml/2004/10'
$NsCommand = 'http://schemas.microsoft.com/maml/dev/command/2004/10'
$NsDev = 'http://schemas.microsoft.com/maml/dev/2004/10'
$NsMsHelp = 'http://msdn.microsoft.com/mshelp'

$SectionOrder = @('SYNOPSIS', 'SYNTAX', 'DESCRIPTION', 'EXAMPLES', 'PARAMETERS', 'INPUTS', 'OUTPUTS', 'NOTES', 'RELATED LINKS')
$RequiredSections = @('SYNOPSIS', 'SYNTAX', 'DESCRIPTION', 'EXAMPLES', 'PARAMETERS')
$YamlKeys = @('Type', 'Parameter Sets', 'Aliases', 'Accepted values', 'Required', 'Position',
    'Default value', 'Accept pipeline input', 'Accept wildcard characters', 'Applicable', 'Dynamic')

function Add-Problem {
    param([int] $Line, [string] $Message)
    $script:Problems.Add(('{0}:{1}: {2}' -f $script:CurrentFile, $Line, $Message))
}

#region Markdown reading

# Reads a file into line records; '#' lines inside code fences are not headings.
function Read-MarkdownLine {
    param([string] $Path)
    $text = [System.IO.File]::ReadAllText($Path)
    if ($text.Length -gt 0 -and $text[0] -eq [char]0xFEFF) { $text = $text.Substring(1) }
    $raw = $text -split '\r?\n'
    $records = [System.Collections.Generic.List[object]]::new()
    for ($i = 0; $i -lt $raw.Count; $i++) {
        $records.Add([pscustomobject]@{ N = $i + 1; Text = $raw[$i].TrimEnd() })
    }
    , $records
}

# Splits line records into blocks: para (a paragraph or one list item), code (fenced).
function ConvertTo-Block {
    param([object[]] $Lines)
    $blocks = [System.Collections.Generic.List[object]]::new()
    $para = $null
    $i = 0
    while ($i -lt $Lines.Count) {
        $line = $Lines[$i]
        $t = $line.Text
        if ($t -match '^\s{0,3}(`{3,}|~{3,})\s*([\w.+#-]*)') {
            $para = $null
            $fence = $Matches[1]
            $lang = $Matches[2].ToLowerInvariant()
            $start = $line.N
            $body = [System.Collections.Generic.List[string]]::new()
            $i++
            $closed = $false
            while ($i -lt $Lines.Count) {
                $ft = $Lines[$i].Text
                if ($ft -match ('^\s{0,3}' + [regex]::Escape($fence.Substring(0, 1)) + '{' + $fence.Length + ',}\s*$')) { $closed = $true; break }
                $body.Add($ft)
                $i++
            }
            if (-not $closed) { Add-Problem $start "code fence $fence opened here is never closed" }
            $blocks.Add([pscustomobject]@{ Kind = 'code'; N = $start; Lang = $lang; Lines = @($body) })
            $i++
            continue
        }
        if ($t -match '^\s*$') { $para = $null; $i++; continue }
        $isItem = $t -match '^\s{0,3}([-*+]|\d{1,3}[.)])\s+\S'
        if ($null -eq $para -or $isItem) {
            $para = [pscustomobject]@{ Kind = 'para'; N = $line.N; IsItem = $isItem; Lines = [System.Collections.Generic.List[string]]::new() }
            $blocks.Add($para)
        }
        $para.Lines.Add($t)
        $i++
    }
    , $blocks
}

# Turns inline markdown into plain text: links, **strong**, backslash escapes. Code spans are kept.
function ConvertFrom-Inline {
    param([string] $Text)
    $parts = [regex]::Split($Text, '(`+[^`]*`+)')
    $sb = [System.Text.StringBuilder]::new()
    foreach ($part in $parts) {
        if ($part.StartsWith('`')) { [void]$sb.Append($part); continue }
        $s = [regex]::Replace($part, '!?\[([^\]]*)\]\(([^)\s]*)(?:\s+"[^"]*")?\)', {
                param($m)
                $label = $m.Groups[1].Value
                $uri = $m.Groups[2].Value
                if ($uri -match '^[a-z][a-z0-9+.-]*://' -and $uri -ne $label) { "$label ($uri)" } else { $label }
            })
        $s = [regex]::Replace($s, '\*\*(\S(?:.*?\S)?)\*\*', '$1')
        $s = [regex]::Replace($s, '\\([!-/:-@\[-`{-~])', '$1')
        [void]$sb.Append($s)
    }
    $sb.ToString()
}

# A paragraph block's text: lines joined with single spaces (reflowed).
function Get-ParaText {
    param([object] $Block)
    ConvertFrom-Inline ((@($Block.Lines | ForEach-Object { $_.Trim() }) -join ' ').Trim())
}

# Paragraph strings for MAML; fenced code inside prose is kept verbatim as its own paragraph.
function Get-Paragraph {
    param([object[]] $Blocks)
    foreach ($b in $Blocks) {
        if ($b.Kind -eq 'para') { Get-ParaText $b }
        else { ($b.Lines -join "`n") }
    }
}

function Test-Placeholder {
    param([object[]] $Lines)
    foreach ($l in $Lines) {
        if ($l.Text -match '\{\{.*\}\}') { Add-Problem $l.N "placeholder text left in: $($l.Text.Trim())" }
    }
}

# Splits records into heading-delimited sections of one level.
function Split-Heading {
    param([object[]] $Lines, [int] $Level)
    $prefix = '#' * $Level
    $pre = [System.Collections.Generic.List[object]]::new()
    $sections = [System.Collections.Generic.List[object]]::new()
    $current = $null
    $inFence = $false
    $fenceChar = ''
    foreach ($l in $Lines) {
        if ($l.Text -match '^\s{0,3}(`{3,}|~{3,})') {
            if (-not $inFence) { $inFence = $true; $fenceChar = $Matches[1].Substring(0, 1) }
            elseif ($Matches[1].Substring(0, 1) -eq $fenceChar -and $l.Text.Trim() -match '^(`+|~+)$') { $inFence = $false }
        }
        elseif (-not $inFence -and $l.Text -match "^$prefix\s+(.+?)\s*#*\s*$" -and $l.Text -notmatch "^$prefix#") {
            $current = [pscustomobject]@{ Title = $Matches[1]; N = $l.N; Lines = [System.Collections.Generic.List[object]]::new() }
            $sections.Add($current)
            continue
        }
        if ($null -eq $current) { $pre.Add($l) } else { $current.Lines.Add($l) }
    }
    [pscustomobject]@{ Pre = @($pre); Sections = @($sections) }
}

function Test-Blank {
    param([object[]] $Lines)
    -not ($Lines | Where-Object { $_.Text -notmatch '^\s*$' })
}

#endregion

#region Cmdlet page parsing

function Read-FrontMatter {
    param([object[]] $Lines)
    $meta = @{}
    if ($Lines.Count -eq 0 -or $Lines[0].Text -ne '---') {
        Add-Problem 1 "the page must start with YAML front matter ('---' on line 1)"
        return [pscustomobject]@{ Meta = $meta; Rest = $Lines }
    }
    $end = -1
    for ($i = 1; $i -lt $Lines.Count; $i++) {
        if ($Lines[$i].Text -eq '---') { $end = $i; break }
        if ($Lines[$i].Text -match '^\s*$') { continue }
        if ($Lines[$i].Text -match '^([^:]+):\s*(.*)$') { $meta[$Matches[1].Trim()] = $Matches[2].Trim() }
        else { Add-Problem $Lines[$i].N "front matter line is not 'key: value': $($Lines[$i].Text)" }
    }
    if ($end -lt 0) {
        Add-Problem 1 "front matter is never closed with '---'"
        return [pscustomobject]@{ Meta = $meta; Rest = @() }
    }
    foreach ($k in 'external help file', 'Module Name', 'schema') {
        if (-not $meta.ContainsKey($k)) { Add-Problem 1 "front matter has no '$k'" }
    }
    if ($meta['schema'] -and $meta['schema'] -ne '2.0.0') { Add-Problem 1 "front matter schema is '$($meta['schema'])'; only 2.0.0 is supported" }
    if ($meta['Module Name'] -and $meta['Module Name'] -ne $ModuleName) { Add-Problem 1 "front matter Module Name is '$($meta['Module Name'])', expected '$ModuleName'" }
    $helpFile = "$ModuleName.dll-Help.xml"
    if ($meta['external help file'] -and $meta['external help file'] -ne $helpFile) { Add-Problem 1 "front matter external help file is '$($meta['external help file'])', expected '$helpFile'" }
    [pscustomobject]@{ Meta = $meta; Rest = @($Lines[($end + 1)..($Lines.Count - 1)] | Where-Object { $_ }) }
}

function Read-YamlBlock {
    param([object] $Block, [string] $ParamName)
    $y = [ordered]@{}
    $n = $Block.N
    foreach ($t in $Block.Lines) {
        $n++
        if ($t -match '^\s*$') { continue }
        if ($t -notmatch '^\s*([A-Za-z][A-Za-z ]*?)\s*:\s*(.*?)\s*$') { Add-Problem $n "parameter -${ParamName}: yaml line is not 'Key: value': $t"; continue }
        $key = $Matches[1]; $value = $Matches[2]
        $known = $YamlKeys | Where-Object { $_ -eq $key }
        if (-not $known) { Add-Problem $n "parameter -${ParamName}: unknown yaml key '$key' (expected one of: $($YamlKeys -join ', '))"; continue }
        $y[$known] = $value
    }
    foreach ($k in 'Type', 'Parameter Sets', 'Required', 'Position') {
        if (-not $y.Contains($k) -or [string]::IsNullOrWhiteSpace($y[$k])) { Add-Problem $Block.N "parameter -${ParamName}: yaml block has no '$k'" }
    }
    $required = if ($y.Contains('Required')) { $y['Required'] } else { 'False' }
    if ($required -notmatch '^(?i:true|false)$') { Add-Problem $Block.N "parameter -${ParamName}: Required must be True or False, not '$required'" }
    $position = if ($y.Contains('Position') -and $y['Position']) { $y['Position'] } else { 'Named' }
    if ($position -notmatch '^(?i:named|\d+)$') { Add-Problem $Block.N "parameter -${ParamName}: Position must be Named or a number, not '$position'" }
    $pipeline = if ($y.Contains('Accept pipeline input') -and $y['Accept pipeline input']) { $y['Accept pipeline input'] } else { 'False' }
    if ($pipeline -notmatch '^(?i:false|true(\s*\((by(value|propertyname)|from remaining arguments)(,\s*(by(value|propertyname)|from remaining arguments))*\))?)$') {
        Add-Problem $Block.N "parameter -${ParamName}: Accept pipeline input must be False or True (ByValue, ByPropertyName), not '$pipeline'"
    }
    $globbing = if ($y.Contains('Accept wildcard characters') -and $y['Accept wildcard characters']) { $y['Accept wildcard characters'] } else { 'False' }
    if ($globbing -notmatch '^(?i:true|false)$') { Add-Problem $Block.N "parameter -${ParamName}: Accept wildcard characters must be True or False, not '$globbing'" }
    $split = { param($v) @(if ($v) { $v -split ',' | ForEach-Object { $_.Trim() } | Where-Object { $_ } }) }
    $sets = & $split $y['Parameter Sets']
    $default = if ($y.Contains('Default value') -and $y['Default value']) { $y['Default value'] } else { 'None' }
    [pscustomobject]@{
        N              = $Block.N
        Type           = [string]$y['Type']
        Sets           = @($sets)
        Aliases        = @(& $split $y['Aliases'])
        AcceptedValues = @(& $split $y['Accepted values'])
        Required       = $required -match '^(?i:true)$'
        Position       = if ($position -match '^\d+$') { $position } else { 'named' }
        DefaultValue   = $default
        PipelineInput  = $pipeline
        Globbing       = $globbing -match '^(?i:true)$'
    }
}

function Read-CmdletPage {
    param([string] $Path)
    $lines = Read-MarkdownLine $Path
    $before = $script:Problems.Count
    Test-Placeholder $lines
    $fm = Read-FrontMatter $lines
    $h1 = Split-Heading $fm.Rest 1
    if (-not (Test-Blank $h1.Pre)) { Add-Problem ($h1.Pre | Where-Object { $_.Text -match '\S' } | Select-Object -First 1).N 'text before the # Cmdlet-Name heading' }
    if ($h1.Sections.Count -ne 1) {
        Add-Problem 1 "expected exactly one '# Cmdlet-Name' heading, found $($h1.Sections.Count)"
        return $null
    }
    $name = $h1.Sections[0].Title.Trim()
    $fileBase = [System.IO.Path]::GetFileNameWithoutExtension($Path)
    if ($name -notmatch '^[A-Za-z]+-[A-Za-z0-9]+$') { Add-Problem $h1.Sections[0].N "'$name' is not a Verb-Noun cmdlet name" }
    if ($name -ne $fileBase) { Add-Problem $h1.Sections[0].N "heading '$name' does not match the file name '$fileBase.md'" }

    $h2 = Split-Heading $h1.Sections[0].Lines 2
    if (-not (Test-Blank $h2.Pre)) { Add-Problem ($h2.Pre | Where-Object { $_.Text -match '\S' } | Select-Object -First 1).N "text between '# $name' and '## SYNOPSIS'" }
    $sections = @{}
    $lastIndex = -1
    foreach ($s in $h2.Sections) {
        $title = $s.Title.ToUpperInvariant()
        $index = [array]::IndexOf($SectionOrder, $title)
        if ($index -lt 0) { Add-Problem $s.N "unknown section '## $($s.Title)' (expected: $($SectionOrder -join ', '))"; continue }
        if ($sections.ContainsKey($title)) { Add-Problem $s.N "section '## $title' appears twice"; continue }
        if ($index -lt $lastIndex) { Add-Problem $s.N "section '## $title' is out of order (expected order: $($SectionOrder -join ', '))" }
        $lastIndex = $index
        $sections[$title] = $s
    }
    $missing = @($RequiredSections | Where-Object { -not $sections.ContainsKey($_) })
    foreach ($r in $missing) { Add-Problem $h1.Sections[0].N "missing section '## $r'" }
    if ($missing.Count) { return $null }

    $page = [ordered]@{
        Name = $name; Path = $Path; Meta = $fm.Meta
        Synopsis = ''; Description = @(); SyntaxSets = @(); Examples = @(); Parameters = @()
        Inputs = @(); Outputs = @(); Notes = @(); Links = @()
    }

    # SYNOPSIS
    $s = $sections['SYNOPSIS']
    $blocks = ConvertTo-Block $s.Lines
    $page.Synopsis = (@(Get-Paragraph $blocks) -join ' ').Trim()
    if (-not $page.Synopsis) { Add-Problem $s.N 'SYNOPSIS is empty' }
    if ((Split-Heading $s.Lines 3).Sections.Count) { Add-Problem $s.N 'SYNOPSIS must not have ### subsections' }

    # SYNTAX
    $s = $sections['SYNTAX']
    $h3 = Split-Heading $s.Lines 3
    $setSources = @()
    if ($h3.Sections.Count -eq 0) {
        $setSources = @([pscustomobject]@{ Title = '__AllParameterSets'; N = $s.N; Lines = $s.Lines })
    }
    else {
        if (-not (Test-Blank $h3.Pre)) { Add-Problem $s.N 'SYNTAX has text before its first ### parameter set heading' }
        $setSources = $h3.Sections
    }
    $seenSets = @{}
    $syntaxSets = foreach ($set in $setSources) {
        $setName = ($set.Title -replace '\s*\(Default\)\s*$', '').Trim()
        $isDefault = $set.Title -match '\(Default\)\s*$'
        if ($seenSets.ContainsKey($setName)) { Add-Problem $set.N "parameter set '$setName' appears twice in SYNTAX"; continue }
        $seenSets[$setName] = $true
        $code = @((ConvertTo-Block $set.Lines) | Where-Object Kind -EQ 'code')
        $prose = @((ConvertTo-Block $set.Lines) | Where-Object Kind -EQ 'para')
        if ($code.Count -ne 1) { Add-Problem $set.N "parameter set '$setName' needs exactly one fenced syntax block, found $($code.Count)"; continue }
        if ($prose.Count) { Add-Problem $prose[0].N "parameter set '$setName' has text outside its syntax block" }
        $syntaxText = ((@($code[0].Lines) | ForEach-Object { $_.Trim() }) -join ' ').Trim()
        if (-not $syntaxText.StartsWith($name + ' ') -and $syntaxText -ne $name) {
            Add-Problem $code[0].N "syntax for set '$setName' must start with '$name': $syntaxText"
            continue
        }
        $paramNames = @([regex]::Matches($syntaxText.Substring($name.Length), '(?<=^|[\s\[])-([A-Za-z_][A-Za-z0-9_]*)') | ForEach-Object { $_.Groups[1].Value })
        $dupe = $paramNames | Group-Object | Where-Object Count -GT 1 | Select-Object -First 1
        if ($dupe) { Add-Problem $code[0].N "syntax for set '$setName' names -$($dupe.Name) twice" }
        [pscustomobject]@{ Name = $setName; IsDefault = $isDefault; N = $code[0].N; Parameters = $paramNames }
    }
    $page.SyntaxSets = @($syntaxSets)
    if ($page.SyntaxSets.Count -eq 0 -and $setSources.Count -eq 0) { Add-Problem $s.N 'SYNTAX has no syntax block' }

    # DESCRIPTION
    $s = $sections['DESCRIPTION']
    $page.Description = @(Get-Paragraph (ConvertTo-Block $s.Lines) | Where-Object { $_ })
    if ($page.Description.Count -eq 0) { Add-Problem $s.N 'DESCRIPTION is empty' }

    # EXAMPLES
    $s = $sections['EXAMPLES']
    $h3 = Split-Heading $s.Lines 3
    if (-not (Test-Blank $h3.Pre)) { Add-Problem $s.N 'EXAMPLES has text before its first ### Example heading' }
    if ($h3.Sections.Count -eq 0) { Add-Problem $s.N "EXAMPLES has no example (add '### Example 1: title' with a fenced powershell block)" }
    $page.Examples = @(foreach ($ex in $h3.Sections) {
            $blocks = ConvertTo-Block $ex.Lines
            $code = @($blocks | Where-Object Kind -EQ 'code')
            if ($code.Count -eq 0) { Add-Problem $ex.N "example '$($ex.Title)' has no fenced code block"; continue }
            $firstCode = [array]::IndexOf(@($blocks), $code[0])
            $intro = @(Get-Paragraph @($blocks | Select-Object -First $firstCode))
            $after = @($blocks | Select-Object -Skip ($firstCode + 1) | Where-Object Kind -EQ 'para')
            [pscustomobject]@{
                Title   = $ex.Title.Trim()
                Code    = (@($code | ForEach-Object { ($_.Lines -join "`n").Trim("`n") }) -join "`n`n")
                Remarks = @($intro + @(Get-Paragraph $after) | Where-Object { $_ })
            }
        })

    # PARAMETERS
    $s = $sections['PARAMETERS']
    $h3 = Split-Heading $s.Lines 3
    if (-not (Test-Blank $h3.Pre)) { Add-Problem $s.N 'PARAMETERS has text before its first ### -Name heading' }
    $seenParams = @{}
    $page.Parameters = @(foreach ($p in $h3.Sections) {
            $title = $p.Title.Trim()
            if ($title -in 'CommonParameters', 'WorkflowParameters') { continue }
            if ($title -notmatch '^-([A-Za-z_][A-Za-z0-9_]*)$') { Add-Problem $p.N "parameter heading must be '### -Name' or '### CommonParameters', not '### $title'"; continue }
            $pname = $Matches[1]
            if ($seenParams.ContainsKey($pname)) { Add-Problem $p.N "parameter -$pname is documented twice"; continue }
            $seenParams[$pname] = $true
            $blocks = ConvertTo-Block $p.Lines
            $yaml = @($blocks | Where-Object { $_.Kind -eq 'code' -and $_.Lang -eq 'yaml' })
            $desc = @(Get-Paragraph @($blocks | Where-Object { -not ($_.Kind -eq 'code' -and $_.Lang -eq 'yaml') }) | Where-Object { $_ })
            if ($desc.Count -eq 0) { Add-Problem $p.N "parameter -$pname has no description" }
            if ($yaml.Count -eq 0) { Add-Problem $p.N "parameter -$pname has no yaml block"; continue }
            $metas = @($yaml | ForEach-Object { Read-YamlBlock $_ $pname })
            [pscustomobject]@{ Name = $pname; N = $p.N; Description = $desc; Metas = $metas }
        })

    # Syntax and PARAMETERS must agree.
    $byName = @{}
    foreach ($p in $page.Parameters) { $byName[$p.Name] = $p }
    $setNames = @($page.SyntaxSets | ForEach-Object Name)
    $used = @{}
    foreach ($set in $page.SyntaxSets) {
        $set | Add-Member -NotePropertyName Items -NotePropertyValue @(foreach ($pn in $set.Parameters) {
                $p = $byName[$pn]
                if (-not $p) { Add-Problem $set.N "syntax for set '$($set.Name)' uses -$pn, which has no '### -$pn' under PARAMETERS"; continue }
                $used[$pn] = $true
                $meta = $p.Metas | Where-Object { $_.Sets -contains '(All)' -or $_.Sets -contains $set.Name -or ($set.Name -eq '__AllParameterSets') } | Select-Object -First 1
                if (-not $meta) { Add-Problem $p.Metas[0].N "parameter -$pn is in the syntax of set '$($set.Name)' but its Parameter Sets ($($p.Metas.Sets -join ', ')) do not include it"; continue }
                [pscustomobject]@{ Parameter = $p; Meta = $meta }
            })
    }
    foreach ($p in $page.Parameters) {
        if (-not $used.ContainsKey($p.Name)) { Add-Problem $p.N "parameter -$($p.Name) is documented but appears in no SYNTAX block" }
        foreach ($m in $p.Metas) {
            foreach ($sn in $m.Sets) {
                if ($sn -ne '(All)' -and $setNames -notcontains $sn -and -not ($setNames.Count -eq 1 -and $setNames[0] -eq '__AllParameterSets')) {
                    Add-Problem $m.N "parameter -$($p.Name) names parameter set '$sn', which is not a ### heading under SYNTAX ($($setNames -join ', '))"
                }
            }
        }
    }

    # INPUTS / OUTPUTS
    foreach ($kind in 'INPUTS', 'OUTPUTS') {
        if (-not $sections.ContainsKey($kind)) { continue }
        $s = $sections[$kind]
        $h3 = Split-Heading $s.Lines 3
        if (-not (Test-Blank $h3.Pre)) { Add-Problem $s.N "$kind needs a '### TypeName' heading per type" }
        $page[$(if ($kind -eq 'INPUTS') { 'Inputs' } else { 'Outputs' })] = @(foreach ($t in $h3.Sections) {
                [pscustomobject]@{ Type = (ConvertFrom-Inline $t.Title.Trim()); Description = @(Get-Paragraph (ConvertTo-Block $t.Lines) | Where-Object { $_ }) }
            })
    }

    # NOTES
    if ($sections.ContainsKey('NOTES')) {
        $page.Notes = @(Get-Paragraph (ConvertTo-Block $sections['NOTES'].Lines) | Where-Object { $_ })
    }

    # RELATED LINKS (the online version first, as PlatyPS does)
    $links = [System.Collections.Generic.List[object]]::new()
    $online = $fm.Meta['online version']
    if ($online) { $links.Add([pscustomobject]@{ Text = 'Online Version:'; Uri = $online }) }
    if ($sections.ContainsKey('RELATED LINKS')) {
        foreach ($b in (ConvertTo-Block $sections['RELATED LINKS'].Lines)) {
            if ($b.Kind -ne 'para') { Add-Problem $b.N 'RELATED LINKS must hold links, not code'; continue }
            foreach ($t in $b.Lines) {
                $t = $t.Trim() -replace '^[-*+]\s+', ''
                if ($t -match '^\[([^\]]+)\]\(([^)\s]*)\)$') {
                    $uri = $Matches[2]
                    $links.Add([pscustomobject]@{ Text = $Matches[1]; Uri = $(if ($uri -match '^[a-z][a-z0-9+.-]*://') { $uri } else { '' }) })
                }
                elseif ($t) { $links.Add([pscustomobject]@{ Text = (ConvertFrom-Inline $t); Uri = '' }) }
            }
        }
    }
    $page.Links = @($links)

    if ($script:Problems.Count -gt $before) { return $null }
    [pscustomobject]$page
}

#endregion

#region MAML writing

function Write-Para {
    param([System.Xml.XmlWriter] $W, [string[]] $Paragraphs)
    if (-not $Paragraphs -or $Paragraphs.Count -eq 0) { $W.WriteElementString('maml', 'para', $NsMaml, ''); return }
    foreach ($p in $Paragraphs) { $W.WriteElementString('maml', 'para', $NsMaml, $p) }
}

function Write-Description {
    param([System.Xml.XmlWriter] $W, [string[]] $Paragraphs)
    $W.WriteStartElement('maml', 'description', $NsMaml)
    Write-Para $W $Paragraphs
    $W.WriteEndElement()
}

function Write-Type {
    param([System.Xml.XmlWriter] $W, [string] $TypeName)
    $W.WriteStartElement('dev', 'type', $NsDev)
    $W.WriteElementString('maml', 'name', $NsMaml, $TypeName)
    $W.WriteElementString('maml', 'uri', $NsMaml, '')
    $W.WriteEndElement()
}

function Write-Parameter {
    param([System.Xml.XmlWriter] $W, [object] $Parameter, [object] $Meta, [bool] $InSyntax)
    $isSwitch = $Meta.Type -match '^(System\.Management\.Automation\.)?SwitchParameter$'
    $W.WriteStartElement('command', 'parameter', $NsCommand)
    $W.WriteAttributeString('required', $Meta.Required.ToString().ToLowerInvariant())
    $W.WriteAttributeString('variableLength', 'true')
    $W.WriteAttributeString('globbing', $Meta.Globbing.ToString().ToLowerInvariant())
    $W.WriteAttributeString('pipelineInput', $Meta.PipelineInput)
    $W.WriteAttributeString('position', $Meta.Position)
    $W.WriteAttributeString('aliases', $(if ($Meta.Aliases.Count) { $Meta.Aliases -join ', ' } else { 'none' }))
    $W.WriteElementString('maml', 'name', $NsMaml, $Parameter.Name)
    Write-Description $W $Parameter.Description
    if ($InSyntax -and $Meta.AcceptedValues.Count) {
        $W.WriteStartElement('command', 'parameterValueGroup', $NsCommand)
        foreach ($v in $Meta.AcceptedValues) {
            $W.WriteStartElement('command', 'parameterValue', $NsCommand)
            $W.WriteAttributeString('required', 'false')
            $W.WriteAttributeString('command', 'variableLength', $NsCommand, 'false')
            $W.WriteString($v)
            $W.WriteEndElement()
        }
        $W.WriteEndElement()
    }
    if (-not ($InSyntax -and $isSwitch)) {
        $W.WriteStartElement('command', 'parameterValue', $NsCommand)
        $W.WriteAttributeString('required', $(if ($isSwitch) { 'false' } else { 'true' }))
        $W.WriteAttributeString('variableLength', 'false')
        $W.WriteString($Meta.Type)
        $W.WriteEndElement()
    }
    Write-Type $W $Meta.Type
    $W.WriteElementString('dev', 'defaultValue', $NsDev, $Meta.DefaultValue)
    $W.WriteEndElement()
}

function Write-Command {
    param([System.Xml.XmlWriter] $W, [object] $Page)
    $verb, $noun = $Page.Name -split '-', 2
    $W.WriteStartElement('command', 'command', $NsCommand)
    $W.WriteAttributeString('xmlns', 'maml', $null, $NsMaml)
    $W.WriteAttributeString('xmlns', 'dev', $null, $NsDev)
    $W.WriteAttributeString('xmlns', 'MSHelp', $null, $NsMsHelp)

    $W.WriteStartElement('command', 'details', $NsCommand)
    $W.WriteElementString('command', 'name', $NsCommand, $Page.Name)
    $W.WriteElementString('command', 'verb', $NsCommand, $verb)
    $W.WriteElementString('command', 'noun', $NsCommand, $noun)
    Write-Description $W @($Page.Synopsis)
    $W.WriteEndElement()

    Write-Description $W $Page.Description

    $W.WriteStartElement('command', 'syntax', $NsCommand)
    foreach ($set in $Page.SyntaxSets) {
        $W.WriteStartElement('command', 'syntaxItem', $NsCommand)
        $W.WriteElementString('maml', 'name', $NsMaml, $Page.Name)
        foreach ($item in $set.Items) { Write-Parameter $W $item.Parameter $item.Meta $true }
        $W.WriteEndElement()
    }
    $W.WriteEndElement()

    $W.WriteStartElement('command', 'parameters', $NsCommand)
    foreach ($p in $Page.Parameters) { Write-Parameter $W $p $p.Metas[0] $false }
    $W.WriteEndElement()

    foreach ($kind in @(
            @{ List = 'inputTypes'; Item = 'inputType'; Values = $Page.Inputs },
            @{ List = 'returnValues'; Item = 'returnValue'; Values = $Page.Outputs })) {
        $W.WriteStartElement('command', $kind.List, $NsCommand)
        foreach ($t in $kind.Values) {
            $W.WriteStartElement('command', $kind.Item, $NsCommand)
            Write-Type $W $t.Type
            Write-Description $W $t.Description
            $W.WriteEndElement()
        }
        $W.WriteEndElement()
    }

    if ($Page.Notes.Count) {
        $W.WriteStartElement('maml', 'alertSet', $NsMaml)
        $W.WriteStartElement('maml', 'alert', $NsMaml)
        Write-Para $W $Page.Notes
        $W.WriteEndElement()
        $W.WriteEndElement()
    }

    $W.WriteStartElement('command', 'examples', $NsCommand)
    foreach ($ex in $Page.Examples) {
        $W.WriteStartElement('command', 'example', $NsCommand)
        $W.WriteElementString('maml', 'title', $NsMaml, "--------- $($ex.Title) ---------")
        $W.WriteElementString('dev', 'code', $NsDev, $ex.Code)
        $W.WriteStartElement('dev', 'remarks', $NsDev)
        # The trailing empty paragraph keeps a blank line before the next example's title.
        Write-Para $W @($ex.Remarks + '')
        $W.WriteEndElement()
        $W.WriteEndElement()
    }
    $W.WriteEndElement()

    $W.WriteStartElement('maml', 'relatedLinks', $NsMaml)
    foreach ($l in $Page.Links) {
        $W.WriteStartElement('maml', 'navigationLink', $NsMaml)
        $W.WriteElementString('maml', 'linkText', $NsMaml, $l.Text)
        $W.WriteElementString('maml', 'uri', $NsMaml, $l.Uri)
        $W.WriteEndElement()
    }
    $W.WriteEndElement()

    $W.WriteEndElement()
}

#endregion

#region about_ topics

function Format-Wrapped {
    param([string] $Text, [int] $Indent, [int] $Hanging = 0, [int] $Width = 80)
    $out = [System.Collections.Generic.List[string]]::new()
    $line = ''
    $pad = ' ' * $Indent
    foreach ($word in ($Text -split '\s+' | Where-Object { $_ })) {
        $prefix = if ($out.Count -eq 0) { $pad } else { ' ' * ($Indent + $Hanging) }
        if ($line -and ($prefix.Length + $line.Length + 1 + $word.Length) -gt $Width) {
            $out.Add($prefix + $line)
            $line = $word
        }
        else { $line = if ($line) { "$line $word" } else { $word } }
    }
    if ($line) { $out.Add($(if ($out.Count -eq 0) { $pad } else { ' ' * ($Indent + $Hanging) }) + $line) }
    $out
}

function Convert-AboutTopic {
    param([string] $Path)
    $lines = Read-MarkdownLine $Path
    $before = $script:Problems.Count
    Test-Placeholder $lines
    $body = @($lines)
    if ($body.Count -and $body[0].Text -eq '---') {
        $end = 1
        while ($end -lt $body.Count -and $body[$end].Text -ne '---') { $end++ }
        if ($end -ge $body.Count) { Add-Problem 1 "front matter is never closed with '---'"; return $null }
        $body = @($body | Select-Object -Skip ($end + 1))
    }
    $topic = [System.IO.Path]::GetFileNameWithoutExtension($Path)
    $h1 = Split-Heading $body 1
    if ($h1.Sections.Count -ne 1) { Add-Problem 1 "expected exactly one '# $topic' heading, found $($h1.Sections.Count)"; return $null }
    if ($h1.Sections[0].Title.Trim() -ne $topic) { Add-Problem $h1.Sections[0].N "heading '$($h1.Sections[0].Title)' does not match the file name '$topic.md'" }
    $h2 = Split-Heading $h1.Sections[0].Lines 2
    if (-not ($h2.Sections | Where-Object { $_.Title.Trim() -eq 'SHORT DESCRIPTION' })) { Add-Problem $h1.Sections[0].N "missing section '## SHORT DESCRIPTION'" }
    if ($script:Problems.Count -gt $before) { return $null }

    $out = [System.Collections.Generic.List[string]]::new()
    $out.Add('TOPIC')
    $out.Add("    $topic")
    $emit = {
        param([object[]] $SectionLines)
        $previous = $null
        foreach ($b in (ConvertTo-Block $SectionLines)) {
            # A blank line between blocks, except right under a heading and between list items.
            if ($previous -and -not ($previous.Kind -eq 'para' -and $previous.IsItem -and $b.Kind -eq 'para' -and $b.IsItem)) { $out.Add('') }
            $previous = $b
            if ($b.Kind -eq 'code') { foreach ($c in $b.Lines) { $out.Add($(if ($c) { '        ' + $c } else { '' })) } }
            elseif ($b.IsItem) {
                $text = Get-ParaText $b
                $marker = ([regex]::Match($text, '^(\S+)\s+')).Groups[1].Value
                $rest = $text.Substring($marker.Length).Trim()
                foreach ($w in (Format-Wrapped "$marker $rest" 4 ($marker.Length + 1))) { $out.Add($w) }
            }
            else { foreach ($w in (Format-Wrapped (Get-ParaText $b) 4)) { $out.Add($w) } }
        }
    }
    if (-not (Test-Blank $h2.Pre)) { $out.Add(''); & $emit $h2.Pre }
    foreach ($s in $h2.Sections) {
        $out.Add('')
        $out.Add($s.Title.Trim().ToUpperInvariant())
        $h3 = Split-Heading $s.Lines 3
        & $emit $h3.Pre
        foreach ($sub in $h3.Sections) {
            $out.Add('')
            $out.Add('  ' + (ConvertFrom-Inline $sub.Title.Trim()))
            & $emit $sub.Lines
        }
    }
    ($out -join "`n") + "`n"
}

#endregion

# ---- main ----

# Paths in messages: relative to the current folder when under it, else full.
function Get-DisplayPath {
    param([string] $Path)
    $relative = [System.IO.Path]::GetRelativePath((Get-Location).ProviderPath, $Path)
    if ($relative.StartsWith('..')) { $Path } else { $relative }
}

$docs = $PSCmdlet.GetUnresolvedProviderPathFromPSPath($DocsPath)
$out = $PSCmdlet.GetUnresolvedProviderPathFromPSPath($OutputPath)
$cmdletDir = Join-Path $docs 'cmdlets'
if (-not (Test-Path -LiteralPath $cmdletDir -PathType Container)) { throw "Build-Help: no cmdlet page folder '$cmdletDir'." }
$pageFiles = @(Get-ChildItem -LiteralPath $cmdletDir -Filter '*.md' -File | Sort-Object Name)
if ($pageFiles.Count -eq 0) { throw "Build-Help: no cmdlet pages (*.md) in '$cmdletDir'." }
$aboutFiles = @(Get-ChildItem -LiteralPath $docs -Filter 'about_*.md' -File | Sort-Object Name)

$pages = [System.Collections.Generic.List[object]]::new()
$seen = @{}
foreach ($f in $pageFiles) {
    $script:CurrentFile = Get-DisplayPath $f.FullName
    $page = Read-CmdletPage $f.FullName
    if (-not $page) { continue }
    if ($seen.ContainsKey($page.Name)) { Add-Problem 1 "cmdlet $($page.Name) is also documented in $($seen[$page.Name])"; continue }
    $seen[$page.Name] = $script:CurrentFile
    $pages.Add($page)
}
$abouts = [ordered]@{}
foreach ($f in $aboutFiles) {
    $script:CurrentFile = Get-DisplayPath $f.FullName
    $text = Convert-AboutTopic $f.FullName
    if ($null -ne $text) { $abouts[$f.BaseName] = $text }
}

if ($script:Problems.Count) {
    $msg = "Build-Help: $($script:Problems.Count) problem(s) in the help markdown:`n  " + ($script:Problems -join "`n  ")
    $PSCmdlet.ThrowTerminatingError([System.Management.Automation.ErrorRecord]::new(
            [System.IO.InvalidDataException]::new($msg), 'HelpMarkdownInvalid',
            [System.Management.Automation.ErrorCategory]::InvalidData, $DocsPath))
}

$cultureDir = Join-Path $out $Culture
[void][System.IO.Directory]::CreateDirectory($cultureDir)
$mamlPath = Join-Path $cultureDir "$ModuleName.dll-Help.xml"
$settings = [System.Xml.XmlWriterSettings]::new()
$settings.Indent = $true
$settings.IndentChars = '  '
$settings.NewLineChars = "`n"
$settings.NewLineHandling = [System.Xml.NewLineHandling]::Replace
$settings.Encoding = [System.Text.UTF8Encoding]::new($false)
$writer = [System.Xml.XmlWriter]::Create($mamlPath, $settings)
try {
    $writer.WriteStartDocument()
    $writer.WriteStartElement('helpItems', 'http://msh')
    $writer.WriteAttributeString('schema', 'maml')
    foreach ($page in ($pages | Sort-Object Name)) { Write-Command $writer $page }
    $writer.WriteEndElement()
    $writer.WriteEndDocument()
}
finally { $writer.Dispose() }

# Read it back: a file Get-Help cannot parse must fail the build, not the user.
$check = [System.Xml.XmlDocument]::new()
$check.Load($mamlPath)
$ns = [System.Xml.XmlNamespaceManager]::new($check.NameTable)
$ns.AddNamespace('command', $NsCommand)
$count = $check.SelectNodes('//command:command', $ns).Count
if ($count -ne $pages.Count) { throw "Build-Help: wrote $count commands to '$mamlPath', expected $($pages.Count)." }

foreach ($topic in $abouts.Keys) {
    [System.IO.File]::WriteAllText((Join-Path $cultureDir "$topic.help.txt"), $abouts[$topic], [System.Text.UTF8Encoding]::new($false))
}

Write-Verbose "Build-Help: $($pages.Count) cmdlet page(s) -> $mamlPath; $($abouts.Count) about topic(s) -> $cultureDir"
[pscustomobject]@{
    MamlPath      = $mamlPath
    Cmdlets       = @($pages | ForEach-Object Name | Sort-Object)
    AboutTopics   = @($abouts.Keys | ForEach-Object { Join-Path $cultureDir "$_.help.txt" })
}
