#Requires -Version 7.6
# Every help example runs as written (issue 15, item 5). Each ```powershell block under "## EXAMPLES" of docs/cmdlets/*.md
# runs in a runspace of its own with the module imported, in a scratch folder, with a swtpm simulator as the default TPM
# (TPM2TOOLS_TCTI) and an unattended user: Get-Credential and Read-Host answer with fixed values instead of prompting.
#
# Conventions understood here:
#   <!-- example: not-unattended (why) -->   on the line before a code fence: the example cannot run unattended (a real
#                                            device, another machine); it is reported as skipped with that reason.
#   The fleet's conventional folders in the examples (/var/lib/tpmprov*, /var/lib/keylime, /etc/tpmprov, /opt/tpmprov, /mnt)
#   are mapped into the scratch folder, so no example writes outside it.
#
# The lab (BeforeAll, once for the whole file) is the fleet the examples' prose assumes:
#   /var/lib/tpmprov        a copy, per page, of a prepared data path: store, TPM CA, components CA (ca/cacert.pem), API keys
#                           'plant-shenzhen-1', 'plant-brno-1' and 'plant-brno-2', a provisioned device GW-004711 (vendor Contoso), KMS users
#                           kms-admin (Administrator), kms-reader and vcenter-reader (ReadOnly), KMS providers vsphere-prod,
#                           vsphere-old, test-lab, KMS keys disk-encryption (two versions) and
#                           imported-key, station token 'line-3 dashboard',
#                           station scripts tpm-provisioner-post-provision (disabled) and -provision-started (enabled),
#                           the simulator's EK CAs trusted, a lab KMS master key (InsecureFile, so it survives a new TPM),
#                           station images factory-os.img, old-os.img, test-build.img (a small disk with an MBR made by
#                           sfdisk), rootfs-artefacts.tar and gateway-rootfs.tar (artefact archives), firmware releases of
#                           family cm4 (2025-02-11, 2025-05-08 with notes), signing keys plant-2025 (PEM) and hsm-ca
#                           (PKCS#11: a SoftHSM2 token station-ca under the scratch folder, SOFTHSM2_CONF, key tpm-ca, PIN as
#                           Read-Host answers). Pages that create one of these objects (New-KmsUser, New-KmsProvider,
#                           New-KmsKey, New-TpmCa, Import-TpmCa, Register-Pkcs11SigningKey) get a copy without it.
#                           /var/lib/tpmprov-agent is a copy of it too (a data path an agent has run on); the other
#                           /var/lib/tpmprov-* (other roles' data paths) are empty folders of the page.
#   servers (loopback, port 0, shared by every runspace, restarted if an example stops one):
#     factory  Provisioning, Station, Kms; it serves the page's /var/lib/tpmprov while an example of that page talks to it
#              (https://station:8443, https://kms:8443, $url, Get-ProvisioningServer -Name factory) and
#              no example of the page starts its own server there; else a copy of the prepared data path
#              its KMS asks the lab verifier and registrar (the attestation gate); a page with a Get-KmsDataKey example
#              has the lab agent attested at the lab verifier while it runs
#     registrar, verifier (its client certificate to agents: ./verifier-1.pfx), each on a copy of the prepared data path;
#              the registrar also serves Keylime's plain registration port
#     agent    Agent on the simulator, registered at the lab registrar as d432fbb3-d2f1-8a97-9ef7-75bd81c00000 (registered
#              again after a page that removed it), serving ./agent-mtls.pfx (its mTLS certificate, CN = its id)
#     gateway-nat, gateway-004712   Agents on the line-2 simulator as 5e8f0c1a-... and a3c94e17-..., started when an example
#              names that id, stopped (and removed from the lab verifier and registrar) when its page ends
#     db1      a real PostgreSQL (TLS from a lab CA trusted through PGSSLROOTCERT, role tpmprov, database fleet), started
#              when an example names Host=db1, stopped by its process group in AfterAll
#   agents a page registered at the lab registrar are removed when the page ends.
#   host names in the examples are rewritten to the lab servers' URLs:
#     https://factory-ca.contoso.com:8443, https://station:8443, https://kms:8443, $url -> factory
#     https://registrar.contoso.com:8891, https://registrar:8891 -> registrar;  https://verifier(.contoso.com):8881 -> verifier
#     http://registrar.example.net:8890 -> the registrar's plain port;  Host=db1(.example.net) -> the PostgreSQL
#     198.51.100.7:19002 (a NAT address) -> gateway-nat
#   files in each page's folder: ./ca.pem, ./cacert.pem, ./factory-ca.pem, ./registrar-ca.pem, ./verifier-ca.pem (the lab's
#     components CA), ./tpm-ca.pem (its TPM CA), ./components-ca.pfx (that CA with its key, password as Read-Host answers),
#     ./server.pem (certificate and key from openssl), client certificates without a password: ./tenant-alice.pfx, ./tenant-alice-registrar.pfx,
#     ./tenant-alice-verifier.pfx, ./tenant-ops-verifier.pfx (Tenant), ./verifier-1.pfx (Verifier), ./agent-mtls.pfx (the lab agent's);
#     ./contoso-ak-ca.pem + .key (an AK CA made by openssl; .key.enc the key encrypted with the Read-Host password), ./infineon/IFX-RootCA.pem, ./infineon/intermediates/*.pem and
#     ./ek-ca-041.pem (the simulator's EK manufacturer CAs), ./batch-42-results.csv, ./tpms.csv, ./devices.csv (a second simulator,
#     line-2), ./settings.csv, etc/tpmprov/monitor.pfx + monitor.pass + verifier-ca.pem (mapped /etc/tpmprov), ./gateway-fw2.3-policy.json and ./gateway-fw2.4-policy.json (tpm_policy JSON), ./post-provision.ps1,
#     ./ca/cacert.pem (the components CA), ./factory-os.img and ./release/*.img (images to upload), ./tpm-ca.key.pem (the TPM
#     CA's key), ./hsm-ca.pem (the HSM key's CA certificate), ./ref/ima.txt and ./ref/eventlog.bin (a reference gateway's IMA
#     list and UEFI event log), mnt/gw-2.4-usr (a mounted /usr tree), etc/tpmprov/revocation-key.pem (an RSA key),
#     var/lib/keylime/cv_ca/cacert.crt (Keylime's CA: the components CA), ./gateway-004712-bootstrap.zip.
#   variables in each page's runspace: $cred (kms-admin), $url (the factory's URL, set before each example), $token (a station token), $sim (the simulator).
#   Examples of one page run in order in one runspace (a page's examples build on each other, as its prose does);
#   servers an example starts stop when it ends, unless it keeps them in a variable (then when its page ends);
#   literal ids in the prose: API key id 3f9c1a2b4d5e6f70 is plant-brno-1's, manufacturer CA thumbprint 5B1D0C3E...
#   is the simulator's EK issuing CA; $env:TPMPROV_API_KEY and a Read-Host 'API key' answer are plant-shenzhen-1's key, a
#   Read-Host '... token' answer the station token;
#   the module is on PSModulePath.
#   ports an example names are rewritten to 0 and listen addresses (0.0.0.0, 192.0.2.10) to 127.0.0.1;
#   the TPM device device:/dev/tpmrm0 is the simulator (an attestation key at 0x81000010; restarted if an example stops it).
BeforeDiscovery {
    $root = Split-Path (Split-Path $PSScriptRoot)
    # TPMPROV_EXAMPLES_PAGES (wildcards, comma-separated, such as 'New-Kms*,Get-KmsKey') runs only those pages' examples,
    # while working on them.
    $only = if ($env:TPMPROV_EXAMPLES_PAGES) { $env:TPMPROV_EXAMPLES_PAGES -split ',' | ForEach-Object Trim } else { '*' }
    $pages = Get-ChildItem (Join-Path $root 'docs/cmdlets') -Filter '*.md' | Where-Object { $n = $_.BaseName; @($only | Where-Object { $n -like $_ }).Count }
    $script:Examples = foreach ($page in $pages | Sort-Object Name) {
        $lines = Get-Content $page.FullName
        $inExamples = $false; $inCode = $false; $n = 0; $code = $null; $mark = $null; $prev = ''
        foreach ($line in $lines) {
            if ($line -match '^## ') { $inExamples = $line -match '^## EXAMPLES' }
            if (-not $inExamples) { $prev = $line; continue }
            if (-not $inCode -and $line -match '^```powershell') {
                $inCode = $true; $code = [Text.StringBuilder]::new(); $n++
                $mark = if ($prev -match '<!--\s*example:\s*not-unattended\s*\(([^)]*)\)\s*-->') { $Matches[1] } else { $null }
                continue
            }
            if ($inCode -and $line -match '^```') {
                $inCode = $false
                $id = "$($page.BaseName)#$n"
                @{ Id = $id; Page = $page.BaseName; Code = $code.ToString(); NotUnattended = $mark }
                $prev = $line; continue
            }
            if ($inCode) { [void]$code.AppendLine($line) } else { if ($line.Trim()) { $prev = $line } }
        }
    }
}

BeforeAll {
    $ModulePath = $env:TPMPROV_MODULE_PATH
    if (-not $ModulePath) { throw 'Set TPMPROV_MODULE_PATH to the built module manifest (build.ps1 Test does).' }
    Import-Module $ModulePath -Force
    $script:Work = Join-Path ([IO.Path]::GetTempPath()) ("tpmprov-pester-examples-" + [guid]::NewGuid())
    New-Item -ItemType Directory -Path $script:Work | Out-Null
    $script:Saved = @{ TPMPROV_DATA = $env:TPMPROV_DATA; TPM2TOOLS_TCTI = $env:TPM2TOOLS_TCTI; TPMPROV_API_KEY = $env:TPMPROV_API_KEY; PSModulePath = $env:PSModulePath }
    # The module is installed, as the examples' scheduled scripts (Import-Module TpmProvisioning) assume.
    $env:PSModulePath = (Split-Path (Split-Path (Split-Path $ModulePath))) + [IO.Path]::PathSeparator + $env:PSModulePath
    # The default TPM: a simulator with an attestation key at 0x81000010, the handle the examples' prose uses.
    function script:Start-LabSimulator {
        $script:Sim = Start-TpmSimulator -Name 'help-examples' -Fast
        $env:TPM2TOOLS_TCTI = $script:Sim.ConnectionString
        New-TpmAttestationKey -AkHandle 0x81000010 -Tpm $script:Sim.ConnectionString | Out-Null
    }
    Start-LabSimulator
    $script:Password = ConvertTo-SecureString 'Example-Passw0rd-1' -AsPlainText -Force

    # The prepared data path every page gets a copy of at /var/lib/tpmprov.
    $script:Docs = Join-Path (Split-Path (Split-Path $PSScriptRoot)) 'docs/cmdlets'
    $script:Template = Join-Path $script:Work 'lab/template'
    $script:Files = Join-Path $script:Work 'lab/files'
    New-Item -ItemType Directory -Path (Join-Path $script:Files 'infineon/intermediates') -Force | Out-Null
    New-Item -ItemType Directory -Path $script:Template -Force | Out-Null
    Add-TpmManufacturerCa -DataPath $script:Template -Path $script:Sim.ManufacturerRootPath | Out-Null
    Add-TpmManufacturerCa -DataPath $script:Template -Path $script:Sim.ManufacturerIssuerPath -Intermediate | Out-Null
    Copy-Item $script:Sim.ManufacturerRootPath (Join-Path $script:Files 'infineon/IFX-RootCA.pem')
    Copy-Item $script:Sim.ManufacturerIssuerPath (Join-Path $script:Files 'infineon/intermediates/IFX-TPM-EK-Intermediate-CA-041.pem')
    Copy-Item $script:Sim.ManufacturerIssuerPath (Join-Path $script:Files 'ek-ca-041.pem')
    $prep = Start-ProvisioningServer -Name 'help-lab-prepare' -Role Provisioning, Station, Kms -KmsMasterKey InsecureFile -Address 127.0.0.1 -Port 0 -DataPath $script:Template
    try {
        $shenzhen = $prep | New-ProvisioningApiKey -Name 'plant-shenzhen-1' -Vendor 'Contoso', 'Fabrikam' -RatePerMinute 600
        $null = $prep | New-ProvisioningApiKey -Name 'plant-brno-2' -Vendor 'Contoso' -RatePerMinute 300
        $null = $prep | New-ProvisioningApiKey -Name 'plant-brno-1' -Vendor 'Contoso' -RatePerMinute 300
        Export-TpmCa -DataPath $script:Template -Path (Join-Path $script:Work 'lab/tpm-ca.pem') | Out-Null
        $null = New-TpmProvisioning -Server $prep.Urls[0] -ApiKey $shenzhen.Key -Tpm $script:Sim.ConnectionString `
            -CaCertificate $prep.CaCertificatePath -TpmCaCertificate (Join-Path $script:Work 'lab/tpm-ca.pem') `
            -DeviceName 'gateway-004711' -Serial 'GW-004711' -Vendor 'Contoso' -Version '2.3.0'
        $script:StationToken = (New-StationToken -DataPath $script:Template -Name 'line-3 dashboard').Token
        $script:ApiKey = ConvertFrom-SecureString -SecureString $shenzhen.Key -AsPlainText
        $script:BrnoKeyId = (Get-ProvisioningApiKey -DataPath $script:Template -Name 'plant-brno-1').KeyId
    }
    finally { $prep | Stop-ProvisioningServer -Confirm:$false }
    New-KmsUser -DataPath $script:Template -Name 'kms-admin' -Password $script:Password -Role Administrator | Out-Null
    New-KmsUser -DataPath $script:Template -Name 'kms-reader' -Password $script:Password -Role ReadOnly | Out-Null
    New-KmsUser -DataPath $script:Template -Name 'vcenter-reader' -Password $script:Password -Role ReadOnly | Out-Null
    foreach ($p in 'vsphere-prod', 'vsphere-old', 'test-lab') {
        $kdk = ConvertTo-SecureString ([Convert]::ToBase64String([Security.Cryptography.RandomNumberGenerator]::GetBytes(32))) -AsPlainText -Force
        New-KmsProvider -DataPath $script:Template -Name $p -ProviderKeyId "$p-1" -KeyDerivationKey $kdk | Out-Null
    }
    Set-ProvisioningScript -DataPath $script:Template -Name 'tpm-provisioner-post-provision' -Content 'Write-Output "post-provision: $env:TPMPROV_SERIAL"' | Out-Null
    Set-ProvisioningScript -DataPath $script:Template -Name 'tpm-provisioner-provision-started' -Enable -Content 'Write-Output "started: $env:TPMPROV_SERIAL"' | Out-Null
    $script:IssuerThumbprint = (Get-TpmManufacturerCa -DataPath $script:Template | Where-Object Kind -NE Root | Select-Object -First 1).Thumbprint
    $script:TemplateNoKey = Join-Path $script:Work 'lab/template-nokey'
    Copy-Item -Recurse $script:Template $script:TemplateNoKey
    New-KmsKey -DataPath $script:Template -Name 'disk-encryption' | Out-Null
    Add-KmsKeyVersion -DataPath $script:Template -Key 'disk-encryption' -Native | Out-Null
    New-KmsKey -DataPath $script:Template -Name 'imported-key' | Out-Null
    Copy-Item (Join-Path $script:Template 'ca/cacert.pem') (Join-Path $script:Work 'lab/ca.pem')
    foreach ($f in 'ca.pem', 'cacert.pem', 'factory-ca.pem', 'registrar-ca.pem', 'verifier-ca.pem') { Copy-Item (Join-Path $script:Work 'lab/ca.pem') (Join-Path $script:Files $f) }
    Copy-Item (Join-Path $script:Work 'lab/tpm-ca.pem') (Join-Path $script:Files 'tpm-ca.pem')
    foreach ($c in @{ n = 'tenant-alice' }, @{ n = 'tenant-alice-registrar' }, @{ n = 'tenant-alice-verifier' }, @{ n = 'tenant-ops-verifier' },
        @{ n = 'verifier-1'; r = 'Verifier' }) {
        $extra = if ($c.r) { @{ Role = $c.r } } else { @{} }
        $cert = New-ProvisioningClientCertificate -DataPath $script:Template -Name $c.n @extra
        [IO.File]::WriteAllBytes((Join-Path $script:Files "$($c.n).pfx"), $cert.Export('Pfx'))
    }
    # The lab agent's mTLS certificate (its TLS certificate, registered as mtls_cert), named by its agent id as Keylime's are;
    # with its key in ./agent-mtls.pfx, the certificate a device presents to the KMS (Get-KmsDataKey).
    # It serves TLS and is a client certificate to the KMS, so openssl issues it from the components CA with both usages.
    $mtls = New-Item -ItemType Directory -Path (Join-Path $script:Work 'lab/agent-mtls') -Force
    Push-Location $mtls
    try {
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout agent.key -out agent.csr -subj '/CN=d432fbb3-d2f1-8a97-9ef7-75bd81c00000' 2>$null
        @('subjectAltName=DNS:localhost,IP:127.0.0.1', 'extendedKeyUsage=serverAuth,clientAuth', 'keyUsage=critical,digitalSignature') | Set-Content agent.ext
        openssl x509 -req -in agent.csr -CA (Join-Path $script:Template 'ca/cacert.pem') -CAkey (Join-Path $script:Template 'ca/cakey.pem') `
            -CAcreateserial -CAserial (Join-Path $mtls 'ca.srl') -out agent.crt -days 365 -extfile agent.ext 2>$null
        openssl pkcs12 -export -in agent.crt -inkey agent.key -out (Join-Path $script:Files 'agent-mtls.pfx') -passout pass: 2>$null
        if ($LASTEXITCODE) { throw 'openssl could not make the lab agent certificate' }
    }
    finally { Pop-Location }
    $script:AgentCert = Get-PfxCertificate -FilePath (Join-Path $script:Files 'agent-mtls.pfx')
    Export-ProvisioningCertificate -DataPath $script:Template -Kind ComponentCa -Path (Join-Path $script:Files 'components-ca.pfx') -IncludePrivateKey -Password $script:Password | Out-Null
    Push-Location $script:Files
    try {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout contoso-ak-ca.key -out contoso-ak-ca.pem -days 3650 `
            -subj '/CN=Contoso Device AK CA/O=Contoso Ltd/C=DE' -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' 2>$null
        if ($LASTEXITCODE) { throw 'openssl could not make the lab AK CA' }
        openssl pkey -in contoso-ak-ca.key -aes256 -passout 'pass:Example-Passw0rd-1' -out contoso-ak-ca.key.enc 2>$null
        if ($LASTEXITCODE) { throw 'openssl could not encrypt the lab AK CA key' }
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.crt -days 365 `
            -subj '/CN=factory.contoso.com' -addext 'subjectAltName=DNS:factory.contoso.com,DNS:localhost,IP:127.0.0.1' 2>$null
        if ($LASTEXITCODE) { throw 'openssl could not make the lab server certificate' }
        (Get-Content -Raw server.crt) + (Get-Content -Raw server.key) | Set-Content server.pem
        Remove-Item server.crt, server.key
    }
    finally { Pop-Location }
    @('Serial,Vendor', 'GW-004711,Contoso') | Set-Content (Join-Path $script:Files 'batch-42-results.csv')
    @('Tpm', "`"$($script:Sim.ConnectionString)`"") | Set-Content (Join-Path $script:Files 'tpms.csv')
    $line2 = Start-TpmSimulator -Name 'line-2'   # not -Fast: a TPM of its own (the fast ones share one EK)
    $script:Line2 = $line2
    @('Tpm,DeviceName,Serial,Vendor,Version', "`"$($line2.ConnectionString)`",gateway-004712,GW-004712,Contoso,2.3.0") | Set-Content (Join-Path $script:Files 'devices.csv')
    (New-AttestationPolicy -Pcr (0..7 + 15)).TpmPolicy | Set-Content (Join-Path $script:Files 'gateway-fw2.3-policy.json')
    (New-AttestationPolicy -Pcr (0..7)).TpmPolicy | Set-Content (Join-Path $script:Files 'gateway-fw2.4-policy.json')
    @('Write-Output "post-provision: $env:TPMPROV_SERIAL"') | Set-Content (Join-Path $script:Files 'post-provision.ps1')
    # The bootstrap payload of gateway 004712 (Start-AgentAttestation -Payload): a zip the agent extracts.
    $boot = New-Item -ItemType Directory -Path (Join-Path $script:Work 'lab/bootstrap') -Force
    Set-Content -Path (Join-Path $boot 'wifi.conf') -Value 'ssid=plant-3'
    [IO.Compression.ZipFile]::CreateFromDirectory($boot, (Join-Path $script:Files 'gateway-004712-bootstrap.zip'))
    @('Name,Value', 'STATION_HOOK_TIMEOUT_SECONDS,300', 'VERIFIER_MAX_RETRIES,8') | Set-Content (Join-Path $script:Files 'settings.csv')
    # The monitoring job's files (Test-AgentAttestation): its client certificate, the password file beside it, the verifier's CA.
    $etc = New-Item -ItemType Directory -Path (Join-Path $script:Files 'etc/tpmprov') -Force
    $monitor = New-ProvisioningClientCertificate -DataPath $script:Template -Name 'monitor'
    [IO.File]::WriteAllBytes((Join-Path $etc 'monitor.pfx'), $monitor.Export('Pfx', 'Example-Passw0rd-1'))
    'Example-Passw0rd-1' | Set-Content (Join-Path $etc 'monitor.pass')
    Copy-Item (Join-Path $script:Work 'lab/ca.pem') (Join-Path $etc 'verifier-ca.pem')
    # Keylime's own CA, whose tenant and verifier certificates an agent may trust (/var/lib/keylime, mapped like /var/lib/tpmprov).
    New-Item -ItemType Directory -Path (Join-Path $script:Files 'var/lib/keylime/cv_ca') -Force | Out-Null
    Copy-Item (Join-Path $script:Work 'lab/ca.pem') (Join-Path $script:Files 'var/lib/keylime/cv_ca/cacert.crt')
    # The tenant's revocation key (Start-AgentAttestation -RevocationKey): an RSA key in PEM.
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out (Join-Path $etc 'revocation-key.pem') 2>$null
    if ($LASTEXITCODE) { throw 'openssl could not make the lab revocation key' }

    # Station images: a small disk image with an MBR partition table (sfdisk), artefact archives of a root file system (tar);
    # in the station's images folder of the data path and, to upload, in the page's folder (./factory-os.img, ./release/*.img).
    $img = New-Item -ItemType Directory -Path (Join-Path $script:Work 'lab/img') -Force
    $rootfs = Join-Path $img 'rootfs'
    New-Item -ItemType Directory -Path (Join-Path $rootfs 'usr/bin'), (Join-Path $rootfs 'etc'), (Join-Path $rootfs 'var/log') -Force | Out-Null
    Set-Content -Path (Join-Path $rootfs 'usr/bin/gateway-agent') -Value 'gateway agent 2.4.0'
    Set-Content -Path (Join-Path $rootfs 'etc/hostname') -Value 'gateway'
    Set-Content -Path (Join-Path $rootfs 'var/log/boot.log') -Value 'boot'
    $disk = Join-Path $img 'factory-os.img'
    truncate -s 256K $disk
    "label: dos`nstart=64, size=128, type=c`nstart=192, type=83" | sfdisk -q $disk
    if ($LASTEXITCODE) { throw 'sfdisk could not make the lab disk image' }
    tar -C $rootfs -cf (Join-Path $img 'rootfs-artefacts.tar') .
    if ($LASTEXITCODE) { throw 'tar could not make the lab artefact archive' }
    $images = New-Item -ItemType Directory -Path (Join-Path $script:Template 'station/images') -Force
    foreach ($n in 'factory-os.img', 'old-os.img', 'test-build.img') { Copy-Item $disk (Join-Path $images $n) }
    foreach ($n in 'rootfs-artefacts.tar', 'gateway-rootfs.tar') { Copy-Item (Join-Path $img 'rootfs-artefacts.tar') (Join-Path $images $n) }
    Copy-Item $disk (Join-Path $script:Files 'factory-os.img')
    New-Item -ItemType Directory -Path (Join-Path $script:Files 'release') -Force | Out-Null
    Copy-Item $disk (Join-Path $script:Files 'release/factory-os-2.4.img')
    New-Item -ItemType Directory -Path (Join-Path $script:Files 'ca') -Force | Out-Null
    Copy-Item (Join-Path $script:Work 'lab/ca.pem') (Join-Path $script:Files 'ca/cacert.pem')
    # A mounted software image (New-AttestationPolicy -Path /mnt/gw-2.4-usr; /mnt is mapped into the page's folder).
    New-Item -ItemType Directory -Path (Join-Path $script:Files 'mnt') -Force | Out-Null
    Copy-Item -Recurse (Join-Path $rootfs 'usr') (Join-Path $script:Files 'mnt/gw-2.4-usr')
    New-Item -ItemType Directory -Path (Join-Path $script:Files 'mnt/gw-2.4-usr/share/doc') -Force | Out-Null
    Set-Content -Path (Join-Path $script:Files 'mnt/gw-2.4-usr/share/doc/README') -Value 'docs'
    # A reference gateway's IMA list (real kernel lines) and UEFI event log (Keylime's sample) copied to ./ref.
    New-Item -ItemType Directory -Path (Join-Path $script:Files 'ref') -Force | Out-Null
    @('10 3c93cea361cd6892bc8b9e3458e22ce60ef2e632 ima-ng sha1:ac7dd11bf0e3bec9a7eb2c01e495072962fb9dfa boot_aggregate',
        '10 3d1452eb1fcbe51ad137f3fc21d3cf4a7c2e625b ima-ng sha1:a212d835ca43d7deedd4ee806898e77eab53dafa /usr/lib/systemd/systemd',
        '10 d7026dc672344d3ee372217bdbc7395947788671 ima 6f66d1d8e2fffcc12dfcb78c04b81fe5b8bbae4e /usr/bin/kmod') |
        Set-Content (Join-Path $script:Files 'ref/ima.txt')
    Copy-Item (Join-Path (Split-Path $PSScriptRoot) 'TpmProvisioning.Core.Tests/Measurements/TestData/keylime-binary_bios_measurements') (Join-Path $script:Files 'ref/eventlog.bin')
    # The station's firmware catalogue: releases of family cm4, one with notes.
    $fw = New-Item -ItemType Directory -Path (Join-Path $script:Template 'station/firmware/cm4') -Force
    Set-Content -Path (Join-Path $fw 'pieeprom-2025-02-11.bin') -Value 'cm4 eeprom 2025-02-11'
    Set-Content -Path (Join-Path $fw 'pieeprom-2025-05-08.bin') -Value 'cm4 eeprom 2025-05-08'
    Set-Content -Path (Join-Path $fw 'pieeprom-2025-05-08.md') -Value '# 2025-05-08', '', '- Fixes USB boot on some NVMe bridges.'
    # Signing keys: the TPM CA's own key beside its certificate (./tpm-ca.key.pem), an older plant CA key 'plant-2025' (PEM),
    # and a SoftHSM2 token 'station-ca' (PIN as Read-Host answers) holding key 'tpm-ca', registered as 'hsm-ca' with ./hsm-ca.pem.
    Copy-Item (Join-Path $script:Template 'provisioning/tpm-ca/cakey.pem') (Join-Path $script:Files 'tpm-ca.key.pem')
    $keys = New-Item -ItemType Directory -Path (Join-Path $script:Work 'lab/keys') -Force
    Push-Location $keys
    try {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout plant-2025.key.pem -out plant-2025.pem -days 3650 `
            -subj '/CN=Contoso Plant CA 2025/O=Contoso Ltd' -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' 2>$null
        if ($LASTEXITCODE) { throw 'openssl could not make the lab plant CA' }
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out hsm-ca.key.pem 2>$null
        openssl req -x509 -key hsm-ca.key.pem -out hsm-ca.pem -days 3650 -subj '/CN=Contoso HSM TPM CA/O=Contoso Ltd' `
            -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' 2>$null
        if ($LASTEXITCODE) { throw 'openssl could not make the lab HSM CA' }
    }
    finally { Pop-Location }
    Add-ProvisioningSigningKey -DataPath $script:Template -Label plant-2025 -Path (Join-Path $keys 'plant-2025.pem') -KeyPath (Join-Path $keys 'plant-2025.key.pem') -Confirm:$false | Out-Null
    # SoftHSM2 reads SOFTHSM2_CONF once per process, when the module is first loaded: the native environment is set first.
    $hsm = New-Item -ItemType Directory -Path (Join-Path $script:Work 'lab/softhsm/tokens') -Force
    $script:SoftHsmConf = Join-Path (Split-Path $hsm) 'softhsm2.conf'
    "directories.tokendir = $hsm`nobjectstore.backend = file`nlog.level = ERROR" | Set-Content $script:SoftHsmConf
    $script:Saved.SOFTHSM2_CONF = $env:SOFTHSM2_CONF
    $env:SOFTHSM2_CONF = $script:SoftHsmConf
    if (-not ('HelpExamples.NativeEnv' -as [type])) {
        Add-Type -Namespace HelpExamples -Name NativeEnv -MemberDefinition ('[DllImport("libc")] public static extern int setenv(string name, string value, int overwrite);' +
            '[DllImport("libc")] public static extern int unsetenv(string name);')
    }
    [void][HelpExamples.NativeEnv]::setenv('SOFTHSM2_CONF', $script:SoftHsmConf, 1)
    softhsm2-util --init-token --free --label station-ca --pin 'Example-Passw0rd-1' --so-pin 'Example-SO-Passw0rd-1' | Out-Null
    if ($LASTEXITCODE) { throw 'softhsm2-util could not make the lab token' }
    openssl pkcs8 -topk8 -nocrypt -in (Join-Path $keys 'hsm-ca.key.pem') -out (Join-Path $keys 'hsm-ca.p8.pem') 2>$null
    softhsm2-util --import (Join-Path $keys 'hsm-ca.p8.pem') --token station-ca --label tpm-ca --id ca01 --pin 'Example-Passw0rd-1' | Out-Null
    if ($LASTEXITCODE) { throw 'softhsm2-util could not import the lab HSM key' }
    Copy-Item (Join-Path $keys 'hsm-ca.pem') (Join-Path $script:Files 'hsm-ca.pem')
    Register-Pkcs11SigningKey -DataPath $script:Template -Label hsm-ca -Module /usr/lib/softhsm/libsofthsm2.so -TokenLabel station-ca -KeyLabel tpm-ca `
        -Path (Join-Path $keys 'hsm-ca.pem') -Pin $script:Password -Confirm:$false | Out-Null

    # The lab's servers, by the names the examples use; (re)started by Start-LabServer.
    # The factory's KMS releases keys to agents that the lab verifier attests (its gate asks the lab verifier and registrar).
    $script:LabSpec = [ordered]@{
        registrar = @{ Role = 'Registrar'; Extra = { @{ RegistrarPlainPort = 0 } } }
        verifier  = @{ Role = 'Verifier'; Extra = { @{ VerifierClientCertificate = Get-PfxCertificate -FilePath (Join-Path $script:Files 'verifier-1.pfx') } } }
        factory   = @{ Role = 'Provisioning', 'Station', 'Kms'; Extra = { if ((Get-LabServer verifier) -and (Get-LabServer registrar)) { @{ KmsVerifier = (LabUrl verifier); KmsRegistrar = (LabUrl registrar) } } else { @{} } } }
        agent     = @{ Role = 'Agent'; Extra = { @{ Tpm = $script:Sim.ConnectionString; Registrar = (LabUrl registrar); Certificate = $script:AgentCert
                RegistrarCaCertificate = (Join-Path $script:Files 'registrar-ca.pem'); AgentId = 'd432fbb3-d2f1-8a97-9ef7-75bd81c00000' } } }
    }
    # The running server of that name (a stopped one stays listed in the session).
    function script:Get-LabServer([string] $name) { Get-ProvisioningServer -Name $name -ErrorAction Ignore | Where-Object State -EQ 'Running' | Select-Object -First 1 }
    function script:Start-LabServer {
        foreach ($name in $script:LabSpec.Keys) {
            if (Get-LabServer $name) { continue }
            $path = $script:LabPaths[$name] ?? (Join-Path $script:Work "lab/$name")
            if (-not (Test-Path $path)) { Copy-Item -Recurse $script:Template $path; Remove-Item (Join-Path $path 'server.lock') -ErrorAction Ignore }
            $extra = if ($script:LabSpec[$name].Extra) { & $script:LabSpec[$name].Extra } else { @{} }
            $script:LabIds += (Start-ProvisioningServer -Name $name -Role $script:LabSpec[$name].Role -Address 127.0.0.1 -Port 0 -DataPath $path @extra).Id
        }
    }
    function script:LabUrl([string] $name) { (Get-LabServer $name).Urls[0].ToString().TrimEnd('/') }
    # An example that asks the KMS for a key (Get-KmsDataKey) needs the lab agent attested at the lab verifier: it is added
    # there (no PCR policy) while its page runs, and removed again when the page ends (other pages add it as their prose says).
    $script:LabAttestation = $false
    function script:Get-LabVerifierTls { @{ CaCertificate = (Join-Path $script:Files 'ca.pem'); ClientCertificate = (Get-PfxCertificate -FilePath (Join-Path $script:Files 'tenant-alice-verifier.pfx')) } }
    function script:Start-LabAttestation {
        $tls = Get-LabVerifierTls
        $id = 'd432fbb3-d2f1-8a97-9ef7-75bd81c00000'
        if (-not (Get-AttestationAgent -Verifier (LabUrl verifier) @tls -AgentId $id -ErrorAction Ignore)) {
            Get-AttestationAgent -Registrar (LabUrl registrar) -CaCertificate (Join-Path $script:Files 'ca.pem') -AgentId $id `
                -ClientCertificate (Get-PfxCertificate -FilePath (Join-Path $script:Files 'tenant-alice.pfx')) |
                Start-AgentAttestation -Verifier (LabUrl verifier) @tls | Out-Null
            $script:LabAttestation = $true
        }
        $deadline = [DateTime]::UtcNow.AddSeconds(120)
        while ((Get-AttestationAgent -Verifier (LabUrl verifier) @tls -AgentId $id).AttestationStatus -ne 'PASS' -and [DateTime]::UtcNow -lt $deadline) { Start-Sleep -Milliseconds 500 }
    }
    # Gateways the examples name by agent id besides the lab agent: an agent server each on the line-2 simulator, started
    # when an example names its id and stopped when its page ends. The NAT address of the gateway-nat's site,
    # 198.51.100.7:19002, is its loopback address here.
    $script:ExtraAgents = [ordered]@{ '5e8f0c1a-7b2d-8c3e-9f40-a1b2c3d4e5f6' = 'gateway-nat'; 'a3c94e17-2f6b-8d05-b1e8-6f7a9c0d2e41' = 'gateway-004712' }
    function script:Start-LabExtraAgent([string] $id) {
        $name = $script:ExtraAgents[$id]
        if (Get-LabServer $name) { return }
        $path = Join-Path $script:Work "lab/$name"
        if (-not (Test-Path $path)) { Copy-Item -Recurse $script:Template $path; Remove-Item (Join-Path $path 'server.lock') -ErrorAction Ignore }
        $null = Start-ProvisioningServer -Name $name -Role Agent -Address 127.0.0.1 -Port 0 -DataPath $path -Tpm $script:Line2.ConnectionString `
            -Registrar (LabUrl registrar) -RegistrarCaCertificate (Join-Path $script:Files 'registrar-ca.pem') -AgentId $id
    }
    function script:Stop-LabAttestation {
        if (-not $script:LabAttestation) { return }
        $tls = Get-LabVerifierTls
        if (Get-LabServer verifier) { Stop-AgentAttestation -Verifier (LabUrl verifier) @tls -AgentId 'd432fbb3-d2f1-8a97-9ef7-75bd81c00000' -Remove -Confirm:$false -ErrorAction Ignore }
        $script:LabAttestation = $false
    }
    $env:TPMPROV_API_KEY = $script:ApiKey
    $script:LabIds = @()
    $script:LabPaths = @{}
    Start-LabServer

    # The fleet's PostgreSQL server (db1 in the examples), started the first time an example names it: a real PostgreSQL on a
    # free loopback port (PostgresInstance: initdb and postgres as nobody), with TLS from a lab CA that PGSSLROOTCERT trusts
    # (the examples verify the server: SSL Mode=VerifyFull), a role tpmprov and an empty database fleet.
    $script:Postgres = $null
    function script:Start-LabPostgres {
        if ($script:Postgres) { return }
        $why = [TpmProvisioning.Storage.PostgresInstance]::Unavailable()
        if ($why) { throw "The examples' PostgreSQL cannot start here: $why" }
        $script:Postgres = [TpmProvisioning.Storage.PostgresInstance]::StartAsync([Threading.CancellationToken]::None).GetAwaiter().GetResult()
        $tls = New-Item -ItemType Directory -Path (Join-Path $script:Work 'lab/pg-tls') -Force
        Push-Location $tls
        try {
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout db-ca.key -out db-ca.pem -days 30 `
                -subj '/CN=Lab Database CA' -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' 2>$null
            openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj '/CN=db1.example.net' 2>$null
            'subjectAltName=DNS:db1.example.net,IP:127.0.0.1' | Set-Content san.ext
            openssl x509 -req -in server.csr -CA db-ca.pem -CAkey db-ca.key -CAcreateserial -out server.crt -days 30 -extfile san.ext 2>$null
            if ($LASTEXITCODE) { throw 'openssl could not make the lab database certificate' }
            # PostgreSQL runs as nobody when this runs as root, and reads its key only when that user alone can.
            if ((id -u) -eq '0') { chown nobody server.key server.crt }
            chmod 600 server.key
        }
        finally { Pop-Location }
        $conn = [Npgsql.NpgsqlConnection]::new($script:Postgres.AdminConnectionString + ';Pooling=false')
        $conn.Open()
        try {
            foreach ($sql in "CREATE ROLE tpmprov LOGIN PASSWORD 'Example-Passw0rd-1'", 'CREATE DATABASE fleet OWNER tpmprov',
                "ALTER SYSTEM SET ssl_cert_file = '$(Join-Path $tls 'server.crt')'", "ALTER SYSTEM SET ssl_key_file = '$(Join-Path $tls 'server.key')'",
                'ALTER SYSTEM SET ssl = on', 'SELECT pg_reload_conf()') {
                $cmd = $conn.CreateCommand(); $cmd.CommandText = $sql; [void]$cmd.ExecuteNonQuery(); $cmd.Dispose()
            }
        }
        finally { $conn.Dispose() }
        $script:Saved.PGSSLROOTCERT = $env:PGSSLROOTCERT
        $env:PGSSLROOTCERT = Join-Path $tls 'db-ca.pem'
    }

    # The unattended user: what Get-Credential and Read-Host would have been answered with.
    $script:Scaffold = @'
function Get-Credential { param([Parameter(Position = 0)][string] $UserName = 'admin', [string] $Message, [string] $Title)
    [pscredential]::new($UserName, (ConvertTo-SecureString 'Example-Passw0rd-1' -AsPlainText -Force)) }
function Read-Host { param([Parameter(Position = 0)] $Prompt, [switch] $AsSecureString, [switch] $MaskInput)
    $answer = if ($Prompt -match 'base64') { 'q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=' } elseif ($Prompt -match 'API key') { $env:TPMPROV_API_KEY } elseif ($Prompt -match 'token') { $LabToken } else { 'Example-Passw0rd-1' }
    if ($answer -is [securestring]) { $answer } elseif ($AsSecureString) { ConvertTo-SecureString $answer -AsPlainText -Force } else { 'example' } }
'@
    $script:Runspaces = @{}
    function script:Get-PageRunspace([string] $page) {
        if ($script:Runspaces[$page]) { return $script:Runspaces[$page] }
        $dir = Join-Path $script:Work ($page -replace '[^\w]', '-')
        New-Item -ItemType Directory -Path $dir -Force | Out-Null
        $data = Join-Path $dir 'var/lib/tpmprov'
        New-Item -ItemType Directory -Path (Split-Path $data) -Force | Out-Null
        # A page whose examples create one of the lab's objects gets a copy without it.
        Copy-Item -Recurse ($page -eq 'New-KmsKey' ? $script:TemplateNoKey : $script:Template) $data
        Copy-Item -Recurse $script:Template (Join-Path (Split-Path $data) 'tpmprov-agent')
        if ($page -eq 'New-KmsUser') { 'kms-admin', 'vcenter-reader' | ForEach-Object { Remove-KmsUser -DataPath $data -Name $_ -Confirm:$false } }
        if ($page -in 'Import-TpmCa', 'New-TpmCa') { Remove-Item -Recurse -Force (Join-Path $data 'provisioning/tpm-ca') }
        if ($page -eq 'New-KmsProvider') { Remove-KmsProvider -DataPath $data -Name 'vsphere-prod' -Confirm:$false }
        if ($page -eq 'Register-Pkcs11SigningKey') { Remove-ProvisioningSigningKey -DataPath $data -Label 'hsm-ca' -Confirm:$false }
        Remove-Item (Join-Path $data 'server.lock') -ErrorAction Ignore
        $text = Get-Content -Raw (Join-Path $script:Docs "$page.md") -ErrorAction Ignore
        foreach ($f in Get-ChildItem $script:Files) {
            # A lab file is left out of a page whose examples make it (so they make it as written).
            $first = ($text -split "`n" | Where-Object { $_ -match "\./$([regex]::Escape($f.Name))\b" } | Select-Object -First 1)
            if ($first -match "(Export|New)-\w+[^\n]*-Path\s+\./$([regex]::Escape($f.Name))") { continue }
            Copy-Item -Recurse -Force -Path $f.FullName -Destination $dir
        }
        $iss = [Management.Automation.Runspaces.InitialSessionState]::CreateDefault2()
        $iss.ImportPSModule($ModulePath)
        $rs = [runspacefactory]::CreateRunspace($iss)
        $rs.Open()
        $rs.SessionStateProxy.SetVariable('LabToken', $script:StationToken)
        $rs.SessionStateProxy.SetVariable('LabTcti', $script:Sim.ConnectionString)
        $ps = [powershell]::Create(); $ps.Runspace = $rs
        [void]$ps.AddScript("$script:Scaffold`nSet-Location -LiteralPath '$dir'; `$ConfirmPreference = 'None'; `$ProgressPreference = 'SilentlyContinue'
`$cred = Get-Credential kms-admin; `$token = `$LabToken; `$sim = Get-TpmSimulator -Name help-examples")
        $ps.Invoke(); $ps.Dispose()
        $script:Runspaces[$page] = @{ Runspace = $rs; Dir = $dir }
        return $script:Runspaces[$page]
    }
    function script:Convert-ExampleCode([string] $code, [string] $dir) {
        # A host name is rewritten only while its lab server runs (an example may stand in for it).
        function LabUrl([string] $name) { $s = Get-LabServer $name; if ($s) { $s.Urls[0].ToString().TrimEnd('/') } else { '$0' } }
        $code = $code -replace '(?<![\w.])/(var/lib/tpmprov|var/lib/keylime|etc/tpmprov|opt/tpmprov|mnt/)', ($dir.TrimEnd('/') + '/$1')
        if ($script:Postgres) { $code = $code -replace 'Host=db1(\.example\.net)?(?=;)', "Host=127.0.0.1;Port=$($script:Postgres.Port)" }
        $code = $code -replace 'https://(factory-ca\.contoso\.com|station):8443', (LabUrl factory)
        $code = $code -replace 'https://kms:8443', (LabUrl factory)
        $code = $code -replace 'https://registrar(\.contoso\.com)?:8891', (LabUrl registrar)
        $code = $code -replace 'http://registrar(\.example\.net|\.contoso\.com)?:8890', ((Get-LabServer registrar).RegistrarPlainUrl ?? '$0').TrimEnd('/')
        $code = $code -replace 'https://verifier(\.contoso\.com)?:8881', (LabUrl verifier)
        $code = $code -replace '(-Port\s+)\d+', '${1}0'
        $code = $code -replace 'device:/dev/tpmrm0', "'$($script:Sim.ConnectionString)'"
        $code = $code -replace '3f9c1a2b4d5e6f70', $script:BrnoKeyId
        $code = $code -replace '5B1D0C3E9A7F4E22C8D6B0A1F3E5C7D9B2A4C6E8F0A1B3C5D7E9F1A3B5C7D9E1', $script:IssuerThumbprint
        $code = $code -replace '(-Address\s+)(0\.0\.0\.0|192\.0\.2\.10)', '${1}127.0.0.1'
        if ($nat = Get-LabServer gateway-nat) { $code = $code -replace '198\.51\.100\.7', '127.0.0.1' -replace '\b19002\b', ([uri]$nat.Urls[0]).Port }
        return $code
    }
    function script:Invoke-Example([string] $id, [string] $page, [string] $code) {
        if ($script:Page -and $script:Page -ne $page) {
            # A page's own servers run until its last example; then the lab is as it was.
            Get-ProvisioningServer | Where-Object Id -NotIn $script:LabIds | Stop-ProvisioningServer -Confirm:$false
            $script:Runspaces[$script:Page].Runspace.Dispose(); $script:Runspaces.Remove($script:Page)
            Stop-LabAttestation
            # A page that removed the lab agent's registration (Remove-AttestationAgent, Stop-AgentAttestation -Remove) gets it back.
            $tenant = Get-PfxCertificate -FilePath (Join-Path $script:Files 'tenant-alice.pfx')
            # The agents a page added to the lab verifier and registered at the lab registrar go with it (a TPM registers under
            # one AK at a time); only a page whose examples register or add agents is looked at.
            if ($script:PageAgents -and (Get-LabServer verifier)) {
                $vtls = Get-LabVerifierTls
                Get-AttestationAgent -Verifier (LabUrl verifier) @vtls -ErrorAction Ignore | Where-Object AgentId -In @($script:ExtraAgents.Keys) |
                    ForEach-Object { Stop-AgentAttestation -Verifier (LabUrl verifier) @vtls -AgentId $_.AgentId -Remove -Confirm:$false -ErrorAction Ignore }
            }
            if ($script:PageAgents -and (Get-LabServer registrar)) {
                Get-AttestationAgent -Registrar (LabUrl registrar) -CaCertificate (Join-Path $script:Files 'ca.pem') -ClientCertificate $tenant -ErrorAction Ignore |
                    Where-Object AgentId -NE 'd432fbb3-d2f1-8a97-9ef7-75bd81c00000' |
                    Remove-AttestationAgent -Registrar (LabUrl registrar) -CaCertificate (Join-Path $script:Files 'ca.pem') -ClientCertificate $tenant -Confirm:$false -ErrorAction Ignore
            }
            if ((Get-LabServer registrar) -and -not (Get-AttestationAgent -Registrar (LabUrl registrar) `
                    -CaCertificate (Join-Path $script:Files 'ca.pem') -ClientCertificate $tenant -AgentId 'd432fbb3-d2f1-8a97-9ef7-75bd81c00000' -ErrorAction Ignore)) {
                Get-ProvisioningServer -Name agent -ErrorAction Ignore | Where-Object Id -In $script:LabIds | Stop-ProvisioningServer -Confirm:$false
            }
            if ($script:LabPaths['factory']) {
                Get-ProvisioningServer -Name factory -ErrorAction Ignore | Stop-ProvisioningServer -Confirm:$false
                $script:LabPaths.Remove('factory')
            }
            Start-LabServer
        }
        if ($script:Page -ne $page) { $script:PageAgents = $false }
        if ($code -match 'Register-AttestationAgent|Start-AgentAttestation|-Role\s[^\n]*Agent') { $script:PageAgents = $true }
        $script:Page = $page
        if ($code -match 'Host=db1\b') { Start-LabPostgres }
        $lab = Get-PageRunspace $page
        $dir = $lab.Dir
        $env:TPMPROV_DATA = Join-Path $dir 'data'
        $env:TPM2TOOLS_TCTI = $script:Sim.ConnectionString
        # An example that starts a server by a lab server's name stands in for it while it runs.
        foreach ($name in $script:LabSpec.Keys) {
            if ($code -match "Start-ProvisioningServer[^\n]*-Name\s+'?$name\b" -and $code -notmatch "Get-ProvisioningServer\s+-Name\s+'?$name\b") { Get-ProvisioningServer -Name $name | Stop-ProvisioningServer -Confirm:$false }
        }
        # The station/factory server of the examples' prose serves the page's /var/lib/tpmprov.
        $pageData = Join-Path $dir 'var/lib/tpmprov'
        if ($code -match "https://(factory-ca\.contoso\.com|station|kms):8443|-Server\s+\`$url\b|Get-ProvisioningServer\s+-Name\s+'?factory\b" -and
            (Get-LabServer factory).DataPath -ne $pageData -and
            -not (Get-ProvisioningServer | Where-Object { $_.DataPath -eq $pageData -and $_.State -eq 'Running' }) -and
            -not ((Get-Content -Raw (Join-Path $script:Docs "$page.md") -ErrorAction Ignore) -match 'Start-ProvisioningServer[^\n]*-DataPath /var/lib/tpmprov(\s|$)')) {
            Get-ProvisioningServer -Name factory -ErrorAction Ignore | Stop-ProvisioningServer -Confirm:$false
            $script:LabPaths['factory'] = $pageData
            Start-LabServer
        }
        if ($code -match 'Get-KmsDataKey\b') { Start-LabAttestation }
        foreach ($id in $script:ExtraAgents.Keys) { if ($code -match $id) { Start-LabExtraAgent $id } }
        $before = @(Get-ProvisioningServer | ForEach-Object Id)
        if (Get-LabServer factory) { $lab.Runspace.SessionStateProxy.SetVariable('url', (LabUrl factory)) }
        $code = Convert-ExampleCode $code $dir
        $ps = [powershell]::Create()
        $ps.Runspace = $lab.Runspace
        try {
            [void]$ps.AddScript("Set-Location -LiteralPath '$dir'`n$code")
            $async = $ps.BeginInvoke()
            if (-not $async.AsyncWaitHandle.WaitOne([TimeSpan]::FromSeconds(180))) { $ps.Stop(); return "did not finish within 180 s" }
            try { [void]$ps.EndInvoke($async) } catch { return "terminating error: $($_.Exception.InnerException.Message ?? $_.Exception.Message)" }
            if ($ps.InvocationStateInfo.State -eq 'Failed') { return "failed: $($ps.InvocationStateInfo.Reason.Message)" }
            $errors = @($ps.Streams.Error)
            if ($errors.Count) { return "error: $($errors[0].FullyQualifiedErrorId): $($errors[0].Exception.Message)" }
            return $null
        }
        finally {
            $ps.Dispose()
            if (-not (Get-TpmSimulator -Name 'help-examples' -ErrorAction Ignore)) {
                # The example stopped every simulator (Stop-TpmSimulator's own examples do): the lab gets a new one.
                Start-LabSimulator
                # The agent comes back on the new TPM, at a registrar that has not seen the old one.
                Get-ProvisioningServer -Name agent, registrar -ErrorAction Ignore | Where-Object Id -In $script:LabIds | Stop-ProvisioningServer -Confirm:$false
                Remove-Item -Recurse -Force (Join-Path $script:Work 'lab/registrar') -ErrorAction Ignore
                $lab.Runspace.SessionStateProxy.SetVariable('sim', $script:Sim)
            }
            # Servers the example started and did not keep in a variable are done with; kept ones serve the page's later examples.
            if ($code -notmatch '\$\w+\s*=\s*(Start-ProvisioningServer|[^\n]*\|\s*Start-ProvisioningServer)') {
                Get-ProvisioningServer | Where-Object { $_.Id -notin $before -and $_.Id -notin $script:LabIds } | Stop-ProvisioningServer -Confirm:$false
            }
            Start-LabServer
        }
    }
}

AfterAll {
    foreach ($r in $script:Runspaces.Values) { $r.Runspace.Dispose() }
    Get-ProvisioningServer | Stop-ProvisioningServer -Confirm:$false
    Get-TpmSimulator | Where-Object Name -NE 'help-examples' | Stop-TpmSimulator -Confirm:$false
    $script:Sim | Stop-TpmSimulator -Confirm:$false
    if ($script:Postgres) { $script:Postgres.DisposeAsync().AsTask().GetAwaiter().GetResult() }
    if ('HelpExamples.NativeEnv' -as [type]) {
        if ($script:Saved.SOFTHSM2_CONF) { [void][HelpExamples.NativeEnv]::setenv('SOFTHSM2_CONF', $script:Saved.SOFTHSM2_CONF, 1) } else { [void][HelpExamples.NativeEnv]::unsetenv('SOFTHSM2_CONF') }
    }
    foreach ($k in $script:Saved.Keys) { Set-Item "env:$k" $script:Saved[$k] }
    Remove-Item $script:Work -Recurse -Force -ErrorAction Ignore
}

Describe 'Help examples run as written' {
    It '<Id>' -ForEach $script:Examples {
        if ($NotUnattended) { Set-ItResult -Skipped -Because "marked not-unattended in the help: $NotUnattended"; return }
        $problem = Invoke-Example $Id $Page $Code
        $problem | Should -BeNullOrEmpty -Because "$Id should run as written:`n$Code"
    }
}

Describe 'Examples that need a person still name real commands and parameters' {
    # They are not run (a foreground -Wait, a -Confirm review), but they must parse, and every command of the module they call
    # must exist and take each parameter they give it (by name, alias or unique prefix), as the rest are checked by running.
    BeforeAll {
        function script:Test-ExampleStatically([string] $code) {
            $tokens = $null; $errors = $null
            $ast = [System.Management.Automation.Language.Parser]::ParseInput($code, [ref]$tokens, [ref]$errors)
            foreach ($e in $errors) { "parse: $($e.Message)" }
            foreach ($cmd in $ast.FindAll({ $args[0] -is [System.Management.Automation.Language.CommandAst] }, $true)) {
                $name = $cmd.GetCommandName()
                if (-not $name) { continue }
                $info = Get-Command $name -ErrorAction Ignore
                if (-not $info) { "unknown command $name"; continue }
                if ($info.CommandType -notin 'Cmdlet', 'Function') { continue }
                foreach ($p in $cmd.CommandElements | Where-Object { $_ -is [System.Management.Automation.Language.CommandParameterAst] }) {
                    $n = $p.ParameterName
                    $names = foreach ($pm in $info.Parameters.Values) { $pm.Name; $pm.Aliases }
                    if ($names -contains $n) { continue }
                    if (@($info.Parameters.Values | Where-Object { $_.Name -like "$n*" }).Count -ne 1) { "$name has no parameter -$n" }
                }
            }
        }
    }

    It '<Id>' -ForEach @($script:Examples | Where-Object NotUnattended) {
        Test-ExampleStatically $Code | Should -BeNullOrEmpty -Because "$Id calls the module as documented"
    }

    It 'reports an unknown parameter, an unknown command and a parse error (the check can fail)' {
        Test-ExampleStatically 'Start-ProvisioningServer -Role Verifier -NoSuchParameter 1' | Should -Be 'Start-ProvisioningServer has no parameter -NoSuchParameter'
        Test-ExampleStatically 'Start-NoSuchThing -Name x' | Should -Be 'unknown command Start-NoSuchThing'
        Test-ExampleStatically 'Get-ProvisioningServer -Name (' | Should -Match '^parse: '
        Test-ExampleStatically 'Start-ProvisioningServer -Ro Verifier -Wait' | Should -BeNullOrEmpty
    }
}

Describe 'The example runner' {
    It 'reports an example that writes an error, one that throws, and passes one that works' {
        Invoke-Example 'Runner-SelfTest#1' 'Runner-SelfTest' 'Get-ProvisioningServer -Name no-such-server' | Should -Match '^error: ServerNotFound,'
        Invoke-Example 'Runner-SelfTest#2' 'Runner-SelfTest' "throw 'the device failed'" | Should -Match 'the device failed'
        Invoke-Example 'Runner-SelfTest#3' 'Runner-SelfTest' 'Get-KmsUser -DataPath /var/lib/tpmprov -Name kms-admin | Out-Null' | Should -BeNullOrEmpty
    }
}
