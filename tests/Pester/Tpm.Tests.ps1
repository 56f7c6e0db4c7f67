#Requires -Version 7.6
# TPM cmdlets against a real swtpm, cross-checked with tpm2-tools (an independent implementation).
BeforeAll {
    $ModulePath = $env:TPMPROV_MODULE_PATH
    if (-not $ModulePath) { throw 'Set TPMPROV_MODULE_PATH to the built module manifest (build.ps1 Test does).' }
    Import-Module $ModulePath -Force
    $script:Work = Join-Path ([IO.Path]::GetTempPath()) ("tpmprov-pester-tpm-" + [guid]::NewGuid())
    New-Item -ItemType Directory -Path $script:Work | Out-Null
    $script:Sim = Start-TpmSimulator -Name 'pester-main' -PcrBank sha1, sha256
    $env:TPM2TOOLS_TCTI = $script:Sim.ConnectionString

    # A simple function (no CmdletBinding): tpm2-tools options such as -o reach the tool unparsed through $args.
    function script:Invoke-Tpm2([string] $Tool) {
        $out = & $Tool @args 2>&1
        if ($LASTEXITCODE -ne 0) { throw "$Tool $($args -join ' ') failed ($LASTEXITCODE): $out" }
        $out
    }
    function script:Get-WorkPath([string] $Name) { Join-Path $script:Work $Name }
    function script:Save-Bytes([string] $Name, [byte[]] $Bytes) { $p = Get-WorkPath $Name; [IO.File]::WriteAllBytes($p, $Bytes); $p }
    function script:Flip([byte[]] $Bytes, [int] $Index) { $c = [byte[]]$Bytes.Clone(); $c[$Index] = $c[$Index] -bxor 0x01; ,$c }
}

AfterAll {
    Get-TpmSimulator | Stop-TpmSimulator -Confirm:$false
    Remove-Item Env:TPM2TOOLS_TCTI -ErrorAction Ignore
    Remove-Item $script:Work -Recurse -Force -ErrorAction Ignore
}

Describe 'Start-, Get-, Stop-TpmSimulator' {
    It 'starts swtpm on loopback with EK certificates and lists it' {
        $script:Sim.State | Should -Be 'Running'
        $script:Sim.ConnectionString | Should -Match '^swtpm:host=127\.0\.0\.1,port=\d+$'
        (Get-Process -Id $script:Sim.Pid).ProcessName | Should -Be 'swtpm'
        (Get-TpmSimulator -Name 'pester-*').Id | Should -Contain $script:Sim.Id
        Test-Path $script:Sim.ManufacturerRootPath | Should -BeTrue
    }

    It 'refuses a second simulator with the same name' {
        { Start-TpmSimulator -Name 'pester-main' -ErrorAction Stop } | Should -Throw -ErrorId 'TpmSimulatorNameInUse,TpmProvisioning.Cmdlets.StartTpmSimulatorCommand'
    }

    It 'stops by pipeline, kills the process and deletes the state; -WhatIf stops nothing' {
        $s = Start-TpmSimulator -Name 'pester-short' -Fast
        $s | Stop-TpmSimulator -WhatIf
        Get-Process -Id $s.Pid -ErrorAction Ignore | Should -Not -BeNullOrEmpty
        $stopped = $s | Stop-TpmSimulator -Confirm:$false -PassThru
        $stopped.State | Should -Be 'Stopped'
        Start-Sleep -Milliseconds 200
        Get-Process -Id $s.Pid -ErrorAction Ignore | Should -BeNullOrEmpty
        Test-Path $s.StateDirectory | Should -BeFalse
        Get-TpmSimulator -Name 'pester-short' -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
    }

    It 'reports an unknown name as a not-found error' {
        { Get-TpmSimulator -Name 'no-such-sim' -ErrorAction Stop } | Should -Throw -ErrorId 'TpmSimulatorNotFound,TpmProvisioning.Cmdlets.GetTpmSimulatorCommand'
    }
}

Describe 'Get-TpmInfo' {
    It 'reads manufacturer, banks and persistent handles, agreeing with tpm2_getcap' {
        $info = $script:Sim | Get-TpmInfo
        $info.Manufacturer | Should -Be 'IBM'
        $info.Tpm | Should -Be $script:Sim.ConnectionString
        ($info.ActivePcrBanks | ForEach-Object { "$_" }) | Should -Be @('Sha1', 'Sha256')
        $theirs = Invoke-Tpm2 tpm2_getcap handles-persistent | ForEach-Object { ($_ -replace '^\s*-\s*', '').Trim().ToLowerInvariant() } | Where-Object { $_ }
        ($info.PersistentHandles | ForEach-Object { '0x{0:x}' -f $_ }) | Should -Be ($theirs | ForEach-Object { '0x{0:x}' -f [Convert]::ToUInt32($_, 16) })
    }

    It 'writes a clear error for an unreachable TPM and for a bad connection string, and goes on' {
        $r = Get-TpmInfo -Tpm 'swtpm:host=127.0.0.1,port=1' -ErrorAction SilentlyContinue -ErrorVariable e1
        $r | Should -BeNullOrEmpty
        $e1[0].FullyQualifiedErrorId | Should -Be 'TpmConnectionFailed,TpmProvisioning.Cmdlets.GetTpmInfoCommand'
        Get-TpmInfo -Tpm 'bogus:x' -ErrorAction SilentlyContinue -ErrorVariable e2
        $e2[0].FullyQualifiedErrorId | Should -Be 'InvalidTpmConnectionString,TpmProvisioning.Cmdlets.GetTpmInfoCommand'
        $e2[0].Exception.Message | Should -Match 'swtpm:host=H,port=P'
    }

    It 'takes many TPMs from the pipeline by property name' {
        $rows = @([pscustomobject]@{ Tpm = $script:Sim.ConnectionString }, [pscustomobject]@{ ConnectionString = $script:Sim.ConnectionString })
        ($rows | Get-TpmInfo).Count | Should -Be 2
    }
}

Describe 'Get-TpmPcr' {
    It 'returns the values tpm2_pcrread reports, after an extend by tpm2_pcrextend' {
        Invoke-Tpm2 tpm2_pcrextend "16:sha256=$('ab' * 32),sha1=$('cd' * 20)" | Out-Null
        $ours = Get-TpmPcr -Tpm $script:Sim.ConnectionString -Pcr 16 -HashAlgorithm sha256, sha1
        $ours.Count | Should -Be 2
        $theirs = (Invoke-Tpm2 tpm2_pcrread 'sha256:16' | Select-String '16\s*:\s*0x([0-9A-Fa-f]+)').Matches[0].Groups[1].Value.ToLowerInvariant()
        ($ours | Where-Object Bank -EQ 'sha256').Value | Should -Be $theirs
        ($ours | Where-Object Bank -EQ 'sha256').Value | Should -Not -Be ('00' * 32)
        $theirs1 = (Invoke-Tpm2 tpm2_pcrread 'sha1:16' | Select-String '16\s*:\s*0x([0-9A-Fa-f]+)').Matches[0].Groups[1].Value.ToLowerInvariant()
        ($ours | Where-Object Bank -EQ 'sha1').Value | Should -Be $theirs1
    }

    It 'reads all 24 PCRs of every active bank by default' {
        $all = Get-TpmPcr -Tpm $script:Sim.ConnectionString
        $all.Count | Should -Be 48
        ($all | Group-Object Bank).Name | Should -Be @('sha1', 'sha256')
    }

    It 'refuses a bank the TPM does not have' {
        Get-TpmPcr -Tpm $script:Sim.ConnectionString -HashAlgorithm sha384 -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -Be 'PcrBankNotActive,TpmProvisioning.Cmdlets.GetTpmPcrCommand'
    }
}

Describe 'Get-TpmEndorsementKey' {
    It 'returns the RSA EK with its certificate; the key equals tpm2_readpublic of the persisted EK' {
        $ek = $script:Sim | Get-TpmEndorsementKey
        $ek.Kind | Should -Be 'Rsa2048'
        $ek.Algorithm | Should -Be 'RSA 2048'
        $ek.Certificate | Should -Not -BeNullOrEmpty
        $ek.CertificateMatchesKey | Should -BeTrue
        $issuer = [System.Security.Cryptography.X509Certificates.X509Certificate2]::CreateFromPem((Get-Content -Raw $script:Sim.ManufacturerIssuerPath))
        $ek.Issuer | Should -Be $issuer.Subject
        $ek.Certificate.Verify() | Out-Null   # no throw on a parse
        $pem = Get-WorkPath 'ek.pem'
        Invoke-Tpm2 tpm2_readpublic -c 0x81010001 -f pem -o $pem | Out-Null
        $ek.ToPem().Trim() | Should -Be (Get-Content -Raw $pem).Trim()
    }

    It 'returns an ECC P-256 EK without a certificate and the P-384 high-range EK with one' {
        $keys = Get-TpmEndorsementKey -Tpm $script:Sim.ConnectionString -Kind EccP256, EccP384High
        $keys[0].Algorithm | Should -Be 'ECC NIST P-256'
        $keys[0].Certificate | Should -BeNullOrEmpty
        $keys[1].Algorithm | Should -Be 'ECC NIST P-384'
        $keys[1].CertificateMatchesKey | Should -BeTrue
    }

    It 'leaves no transient object behind' {
        1..4 | ForEach-Object { Get-TpmEndorsementKey -Tpm $script:Sim.ConnectionString | Out-Null }
        (Invoke-Tpm2 tpm2_getcap handles-transient | Where-Object { $_ -match '0x' }) | Should -BeNullOrEmpty
    }
}

Describe 'New-TpmAttestationKey' {
    It 'creates and persists an RSA AK whose Name equals what tpm2_readpublic computes' {
        $script:Ak = $script:Sim | New-TpmAttestationKey -Confirm:$false
        $script:Ak.Persistent | Should -BeTrue
        $script:Ak.HandleHex | Should -Match '^0x810000[0-9a-f]{2}$'
        $nameFile = Get-WorkPath 'ak.name'
        Invoke-Tpm2 tpm2_readpublic -c $script:Ak.HandleHex -n $nameFile | Out-Null
        ([Convert]::ToHexString([IO.File]::ReadAllBytes($nameFile))).ToLowerInvariant() | Should -Be $script:Ak.Name
        (Get-TpmInfo -Tpm $script:Sim.ConnectionString).PersistentHandles | Should -Contain $script:Ak.Handle
    }

    It 'creates an ECC AK and a transient AK that persists nothing' {
        $before = (Get-TpmInfo -Tpm $script:Sim.ConnectionString).PersistentHandles
        $script:AkEcc = New-TpmAttestationKey -Tpm $script:Sim.ConnectionString -Algorithm Ecc -Transient
        $script:AkEcc.Algorithm | Should -Be 'ECC'
        $script:AkEcc.Persistent | Should -BeFalse
        $script:AkEcc.PrivateBlob.Length | Should -BeGreaterThan 32
        (Get-TpmInfo -Tpm $script:Sim.ConnectionString).PersistentHandles | Should -Be $before
        (Invoke-Tpm2 tpm2_getcap handles-transient | Where-Object { $_ -match '0x' }) | Should -BeNullOrEmpty
    }

    It 'does nothing under -WhatIf' {
        $before = (Get-TpmInfo -Tpm $script:Sim.ConnectionString).PersistentHandles
        New-TpmAttestationKey -Tpm $script:Sim.ConnectionString -WhatIf | Should -BeNullOrEmpty
        (Get-TpmInfo -Tpm $script:Sim.ConnectionString).PersistentHandles | Should -Be $before
    }

    It 'refuses an occupied handle without -Force and replaces it with -Force' {
        New-TpmAttestationKey -Tpm $script:Sim.ConnectionString -PersistentHandle $script:Ak.Handle -ErrorAction SilentlyContinue -ErrorVariable e | Should -BeNullOrEmpty
        $e[0].FullyQualifiedErrorId | Should -Be 'PersistentHandleInUse,TpmProvisioning.Cmdlets.NewTpmAttestationKeyCommand'
        $h = 0x81000099   # a negative Int32 literal in PowerShell: the cmdlet must still take it as the handle
        $a = New-TpmAttestationKey -Tpm $script:Sim.ConnectionString -PersistentHandle $h -Confirm:$false
        $b = New-TpmAttestationKey -Tpm $script:Sim.ConnectionString -PersistentHandle $h -Force -Confirm:$false
        $b.Name | Should -Not -Be $a.Name
        Invoke-Tpm2 tpm2_evictcontrol -C o -c 0x81000099 | Out-Null
    }
}

Describe 'Get-IntegrityQuote and Test-TpmQuote' {
    BeforeAll {
        $script:Nonce = 'pester-nonce-0123'
        $script:Quote = $script:Ak | Get-IntegrityQuote -Nonce $script:Nonce -PcrMask '0x1c3ff'
    }

    It 'quotes the requested PCRs and returns the Keylime string form' {
        $script:Quote.Pcr | Should -Be @(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14, 15, 16)
        $script:Quote.PcrSelection | Should -Be 'sha256:0,1,2,3,4,5,6,7,8,9,14,15,16'
        $script:Quote.KeylimeQuote | Should -Match '^r[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$'
        $script:Quote.AkName | Should -Be $script:Ak.Name
        ($script:Quote.PcrValues | Where-Object Index -EQ 16).Value | Should -Be ((Get-TpmPcr -Tpm $script:Sim.ConnectionString -Pcr 16 -HashAlgorithm sha256).Value)
    }

    It 'produces a quote that tpm2_checkquote accepts (and rejects with another nonce)' {
        $msg = Save-Bytes 'q.msg' $script:Quote.Attest
        $sig = Save-Bytes 'q.sig' $script:Quote.Signature
        $pcrs = Save-Bytes 'q.pcrs' $script:Quote.PcrBlob
        $akPem = Get-WorkPath 'ak.pem'
        Set-Content -Path $akPem -Value $script:Ak.ToPem()
        $hex = [Convert]::ToHexString([Text.Encoding]::UTF8.GetBytes($script:Nonce))
        & tpm2_checkquote -u $akPem -m $msg -s $sig -f $pcrs -g sha256 -q $hex 2>&1 | Out-Null
        $LASTEXITCODE | Should -Be 0
        & tpm2_checkquote -u $akPem -m $msg -s $sig -f $pcrs -g sha256 -q 'deadbeef' 2>&1 | Out-Null
        $LASTEXITCODE | Should -Not -Be 0
    }

    It 'verifies its own quote from the pipeline, and the Keylime string form' {
        ($script:Quote | Test-TpmQuote -AttestationKey $script:Ak).IsValid | Should -BeTrue
        Test-TpmQuote -KeylimeQuote $script:Quote.KeylimeQuote -AttestationKey $script:Ak.PublicKey -Nonce $script:Nonce -Quiet | Should -BeTrue
        Test-TpmQuote -KeylimeQuote $script:Quote.KeylimeQuote -AttestationKey $script:Ak.ToPem() -Nonce $script:Nonce -PcrMask '0x1c3ff' -Quiet | Should -BeTrue
    }

    It 'verifies a tpm2_quote output (files from tpm2-tools)' {
        $hex = [Convert]::ToHexString([Text.Encoding]::UTF8.GetBytes('from-tpm2-tools'))
        $m = Get-WorkPath 't.msg'; $s = Get-WorkPath 't.sig'; $o = Get-WorkPath 't.pcrs'; $pub = Get-WorkPath 'ak.pub'
        Invoke-Tpm2 tpm2_quote -c $script:Ak.HandleHex -l 'sha256:0,1,2,3,16' -q $hex -m $m -s $s -o $o -g sha256 | Out-Null
        Invoke-Tpm2 tpm2_readpublic -c $script:Ak.HandleHex -o $pub | Out-Null
        $r = Test-TpmQuote -Attest ([IO.File]::ReadAllBytes($m)) -Signature ([IO.File]::ReadAllBytes($s)) -PcrBlob ([IO.File]::ReadAllBytes($o)) -AttestationKey $pub -Nonce 'from-tpm2-tools' -Pcr 0, 1, 2, 3, 16
        $r.IsValid | Should -BeTrue -Because $r.Summary
        $r.AkName | Should -Be $script:Ak.Name
    }

    It 'quotes with a transient ECC AK and verifies it with a base64 TPM2B_PUBLIC' {
        $q = $script:AkEcc | Get-IntegrityQuote -Pcr 0, 1 -Nonce 'ecc'
        $q | Test-TpmQuote -AttestationKey ([Convert]::ToBase64String($script:AkEcc.PublicArea)) -Quiet | Should -BeTrue
        (Invoke-Tpm2 tpm2_getcap handles-transient | Where-Object { $_ -match '0x' }) | Should -BeNullOrEmpty
    }

    It 'names the failed check for each tampering' -ForEach @(
        @{ Case = 'a flipped bit in the attest'; Part = 'Attest'; Index = 40; Code = 'BadSignature' }
        @{ Case = 'a flipped bit in the signature'; Part = 'Signature'; Index = 20; Code = 'BadSignature' }
        @{ Case = 'a flipped bit in a PCR value'; Part = 'PcrBlob'; Index = 150; Code = 'PcrDigestMismatch' }
    ) {
        $parts = @{ Attest = $script:Quote.Attest; Signature = $script:Quote.Signature; PcrBlob = $script:Quote.PcrBlob }
        $parts[$Part] = Flip $parts[$Part] $Index
        $r = Test-TpmQuote @parts -AttestationKey $script:Ak -Nonce $script:Nonce
        $r.IsValid | Should -BeFalse
        $r.FailedChecks | Should -Contain $Code
    }

    It 'rejects a wrong nonce, another AK, and a selection other than the expected one' {
        ($script:Quote | Test-TpmQuote -AttestationKey $script:Ak -Nonce 'other').FailedChecks | Should -Be @('NonceMismatch')
        $other = New-TpmAttestationKey -Tpm $script:Sim.ConnectionString -Transient
        ($script:Quote | Test-TpmQuote -AttestationKey $other).FailedChecks | Should -Be @('BadSignature')
        ($script:Quote | Test-TpmQuote -AttestationKey $script:Ak -Pcr 0, 1).FailedChecks | Should -Be @('PcrSelectionMismatch')
    }

    It 'reports a malformed Keylime string as a failed check, not an exception' {
        (Test-TpmQuote -KeylimeQuote 'rnot:a:quote' -AttestationKey $script:Ak -Nonce 'x').FailedChecks | Should -Contain 'MalformedQuote'
        Test-TpmQuote -KeylimeQuote 'garbage' -AttestationKey $script:Ak -Nonce 'x' -Quiet | Should -BeFalse
    }

    It 'refuses an attestation key it cannot read' {
        { Test-TpmQuote -KeylimeQuote $script:Quote.KeylimeQuote -AttestationKey 'not a key' -Nonce 'x' -ErrorAction Stop } |
            Should -Throw -ErrorId 'InvalidAttestationKey,TpmProvisioning.Cmdlets.TestTpmQuoteCommand'
    }

    It 'chains TPM cmdlets in one pipeline on a one-connection TPM (each closes the TPM before writing)' {
        $q = $script:Sim | New-TpmAttestationKey -Transient | Get-IntegrityQuote -Nonce 'chained' -Pcr 0
        $q.Nonce | Should -Be 'chained'
        $q.PcrSelection | Should -Be 'sha256:0'
    }

    It 'refuses -Pcr together with -PcrMask' {
        { $script:Ak | Get-IntegrityQuote -Pcr 0 -PcrMask 0x1 -ErrorAction Stop } | Should -Throw -ErrorId 'PcrAndPcrMask,TpmProvisioning.Cmdlets.GetIntegrityQuoteCommand'
    }
}
