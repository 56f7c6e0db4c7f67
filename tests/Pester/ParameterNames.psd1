# One name per concept: every parameter name of the module, its one type and what it means.
# Naming.Tests.ps1 fails when a cmdlet has a parameter that is not here, a parameter whose type is not the one below
# (Nullable<T> counts as T, T[] as T), or an alias that is not declared under its own name (see the rules at the end).
#
# Adding a cmdlet: reuse the names below with their meaning and type (-DataPath, -Server, -Path, -Name, -AkHandle,
# -EkKind, -CaCertificate, -Last, ...). A new concept gets a new line here; a new name for an existing concept does not
# (use the existing one, and keep an old name as an [Alias] declared under the canonical entry).
#
# Keys of an entry:
#   Type     the parameter type's name (element type for arrays, underlying type for Nullable)
#   Meaning  what the name stands for, the same in every cmdlet
#   Generic  $true for PowerShell's generic names (Name, Id, Path, Kind, Role, ...): "the <x> of the thing the cmdlet's noun
#            names". A generic name may also be an alias of the noun's own identifier (-AgentId's alias Id).
#   Types    for a generic name whose type depends on the noun: cmdlet -> type (Type is then the default)
#   Aliases  the aliases this concept may carry (old names kept for scripts, and property names it binds from)
#   SameAs   canonical names that are the same concept under a longer name (Start-ProvisioningServer -KmsMasterKey = -MasterKey)
@{
    Parameters = @{
        AcceptHashAlgorithm        = @{ Type = 'String'; Meaning = 'hash algorithms a verifier accepts for quotes, preferred first' }
        Action                     = @{ Type = 'String'; Meaning = 'audit action name filter' }
        Address                    = @{ Type = 'String'; Meaning = 'IP address a server listens on' }
        AgentCertificate           = @{ Type = 'X509Certificate2'; Meaning = "the agent's TLS certificate" }
        AgentId                    = @{ Type = 'String'; Meaning = 'Keylime agent id (a UUID)'; Aliases = @('Id', 'AgentUuid') }
        AgentSelfSignedCertificate = @{ Type = 'SwitchParameter'; Meaning = 'agent role: a self-signed TLS certificate instead of one from the components CA' }
        AikTpm                     = @{ Type = 'String'; Meaning = "an agent's AK as base64 TPM2B_PUBLIC (Keylime aik_tpm)"; Aliases = @('AkTpm') }
        AkHandle                   = @{ Type = 'UInt32'; Meaning = 'persistent TPM handle of an attestation key; default: the first free handle from 0x81000002'; Aliases = @('PersistentHandle', 'Handle') }
        Algorithm                  = @{ Type = 'String'; Meaning = 'key algorithm of the key the noun names'; Generic = $true }
        ApiKey                     = @{ Type = 'SecureString'; Meaning = 'the secret of a provisioning API key' }
        ApiKeyId                   = @{ Type = 'String'; Meaning = 'the id of a provisioning API key'; Aliases = @('KeyId') }
        AsPlainBytes               = @{ Type = 'SwitchParameter'; Meaning = 'return key material as plain bytes' }
        Attest                     = @{ Type = 'Byte'; Meaning = 'TPMS_ATTEST bytes of a quote'; Aliases = @('Message') }
        AttestationKey             = @{ Type = 'TpmAttestationKey'; Meaning = 'an attestation key'; Types = @{ 'Test-TpmQuote' = 'Object' }; Aliases = @('AkPublic', 'AkPublicKey') }
        CaCertificate              = @{ Type = 'Object'; Meaning = "the CA a server's TLS certificate must chain to: a certificate, or a PEM/DER file" }
        Certificate                = @{ Type = 'X509Certificate2'; Meaning = 'a certificate of the thing the noun names'; Generic = $true }
        ClientCertificate          = @{ Type = 'X509Certificate2'; Meaning = 'client certificate (with key) for mutual TLS' }
        CompartmentId              = @{ Type = 'String'; Meaning = 'OCI compartment id of a KMS key' }
        ContactAddress             = @{ Type = 'String'; Meaning = 'agent role: address a verifier reaches the agent at' }
        ContactIp                  = @{ Type = 'String'; Meaning = 'address a verifier reaches a registered agent at' }
        ContactPort                = @{ Type = 'Int32'; Meaning = 'port a verifier reaches an agent at' }
        Content                    = @{ Type = 'String'; Meaning = 'text content of the thing the noun names'; Generic = $true }
        Credential                 = @{ Type = 'PSCredential'; Meaning = 'user name and password for a KMS server' }
        DataPath                   = @{ Type = 'String'; Meaning = "a server's data folder (its store, CAs, logs)" }
        DeviceName                 = @{ Type = 'String'; Meaning = 'a device name (manufacturing)' ; Aliases = @('Name') }
        Disabled                   = @{ Type = 'SwitchParameter'; Meaning = 'create disabled' }
        EkKind                     = @{ Type = 'EkKind'; Meaning = 'which endorsement key (template and certificate NV index)'; Aliases = @('Kind', 'Algorithm') }
        Enable                     = @{ Type = 'SwitchParameter'; Meaning = 'enable the thing the noun names on creation'; Generic = $true }
        EnablePayloadScript        = @{ Type = 'SwitchParameter'; Meaning = 'agent role: run the delivered payload script' }
        Enabled                    = @{ Type = 'Boolean'; Meaning = 'set enabled or disabled' }
        EventLog                   = @{ Type = 'String'; Meaning = 'UEFI event log file' }
        Exclude                    = @{ Type = 'String'; Meaning = 'paths to leave out' }
        Fast                       = @{ Type = 'SwitchParameter'; Meaning = 'skip slow set-up steps' }
        Force                      = @{ Type = 'SwitchParameter'; Meaning = 'replace what exists' }
        Format                     = @{ Type = 'CertificateFileFormat'; Meaning = 'file format of the export'; Generic = $true }
        HashAlgorithm              = @{ Type = 'String'; Meaning = 'hash algorithm / PCR bank name: sha1, sha256, sha384, sha512'; Aliases = @('Bank') }
        Id                         = @{ Type = 'Int32'; Meaning = 'identifier of the thing the noun names'; Generic = $true }
        ImaLog                     = @{ Type = 'String'; Meaning = 'IMA measurement list file' }
        IncludePrivateKey          = @{ Type = 'SwitchParameter'; Meaning = 'export the private key too' }
        InputObject                = @{ Type = 'Object'; Meaning = 'the pipeline object the noun names'; Generic = $true
                                        Types = @{ 'Get-ProvisioningAuditLog' = 'ServerInfo'; 'Get-ProvisioningServerLog' = 'ServerInfo'; 'Stop-ProvisioningServer' = 'ServerInfo'
                                                   'Stop-TpmSimulator' = 'TpmSimulator'; 'Test-TpmQuote' = 'TpmIntegrityQuote' } }
        InsecurePlainHttp          = @{ Type = 'SwitchParameter'; Meaning = 'serve plain HTTP (labs only)' }
        Intermediate               = @{ Type = 'SwitchParameter'; Meaning = 'an intermediate CA, not a root' }
        Ip                         = @{ Type = 'String'; Meaning = "an agent's address"; Aliases = @('CloudAgentIp') }
        Key                        = @{ Type = 'String'; Meaning = 'a KMS key (spec 004) by id or name'; Aliases = @('KeyId', 'Id') }
        KeyDerivationKey           = @{ Type = 'SecureString'; Meaning = "a KMS provider's key derivation key" }
        KeyIdentifier              = @{ Type = 'String'; Meaning = 'the key identifier a data key is derived for under a KMS provider (spec 002 key_identifier)' }
        KeylimeQuote               = @{ Type = 'String'; Meaning = "a quote in Keylime's string form"; Aliases = @('Quote') }
        KeyPath                    = @{ Type = 'String'; Meaning = 'PEM file with a private key (the second file beside -Path)' }
        KeyPassword                = @{ Type = 'SecureString'; Meaning = 'passphrase of an encrypted private key file (-KeyPath)' }
        Kind                       = @{ Type = 'ComponentCertificateKind'; Meaning = 'kind of the thing the noun names'; Generic = $true }
        KmsMasterKey               = @{ Type = 'MasterKeyKind'; Meaning = 'how the KMS store is sealed'; SameAs = @('MasterKey'); Aliases = @('MasterKey') }
        KmsMasterKeyTpm            = @{ Type = 'String'; Meaning = 'TPM sealing the KMS store'; SameAs = @('MasterKeyTpm'); Aliases = @('MasterKeyTpm') }
        KmsMaxAttestationAge       = @{ Type = 'TimeSpan'; Meaning = 'KMS: how old a passing attestation may be' }
        KmsRegistrar               = @{ Type = 'Uri'; Meaning = 'KMS: the registrar to ask' }
        KmsRevocationPublicKey     = @{ Type = 'String'; Meaning = 'KMS: key that signs revocation notices' }
        KmsSettings                = @{ Type = 'KmsSettings'; Meaning = 'KMS settings object' }
        KmsVerifier                = @{ Type = 'Uri'; Meaning = 'KMS: the verifier to ask' }
        Last                       = @{ Type = 'Int32'; Meaning = 'at most this many, newest'; Aliases = @('Tail') }
        LogLevel                   = @{ Type = 'LogLevelName'; Meaning = 'lowest level a server logs' }
        MasterKey                  = @{ Type = 'MasterKeyKind'; Meaning = 'how the KMS store is sealed' }
        MasterKeyTpm               = @{ Type = 'String'; Meaning = 'TPM sealing the KMS store' }
        MaxAge                     = @{ Type = 'TimeSpan'; Meaning = 'how old the last passing quote may be' }
        MinimumLevel               = @{ Type = 'LogLevelName'; Meaning = 'lowest level to return' }
        MtlsCertificate            = @{ Type = 'String'; Meaning = "an agent's TLS certificate, PEM"; Aliases = @('MtlsCert') }
        Name                       = @{ Type = 'String'; Meaning = 'name of the thing the noun names'; Generic = $true; Aliases = @('KeyId', 'Id', 'UserName', 'Provider'); SameAs = @('Provider') }
        Namespace                  = @{ Type = 'String'; Meaning = 'spec 000 namespace' }
        Native                     = @{ Type = 'SwitchParameter'; Meaning = 'a native key version (not uploaded)' }
        NewName                    = @{ Type = 'String'; Meaning = 'new name of the thing the noun names' }
        Nonce                      = @{ Type = 'String'; Meaning = 'nonce of a quote' }
        Outcome                    = @{ Type = 'AuditOutcome'; Meaning = 'audit outcome filter' }
        PassThru                   = @{ Type = 'SwitchParameter'; Meaning = 'write the changed object' }
        Password                   = @{ Type = 'SecureString'; Meaning = 'password of the thing the noun names'; Generic = $true }
        Path                       = @{ Type = 'String'; Meaning = 'a file (or files) the cmdlet reads or writes'; Generic = $true; Aliases = @('FullName', 'CertificatePath') }
        PathPrefix                 = @{ Type = 'String'; Meaning = 'prefix of the paths in a runtime policy' }
        Payload                    = @{ Type = 'String'; Meaning = 'payload delivered to an agent' }
        PayloadTimeout             = @{ Type = 'TimeSpan'; Meaning = 'how long to wait for payload delivery' }
        Pcr                        = @{ Type = 'Int32'; Meaning = 'PCR indices' }
        PcrBank                    = @{ Type = 'String'; Meaning = 'PCR banks of a simulator' }
        PcrBlob                    = @{ Type = 'Byte'; Meaning = "PCR values in tpm2-tools' file format" }
        PcrMask                    = @{ Type = 'String'; Meaning = 'Keylime PCR mask, such as 0x408000' }
        PixelsPerModule            = @{ Type = 'Int32'; Meaning = 'QR code module size' }
        Policy                     = @{ Type = 'Object'; Meaning = 'attestation policy (New-AttestationPolicy output or tpm_policy JSON)' }
        Port                       = @{ Type = 'Int32'; Meaning = 'TCP port'; Aliases = @('CloudAgentPort') }
        Primary                    = @{ Type = 'SwitchParameter'; Meaning = 'only the primary version' }
        Provider                   = @{ Type = 'String'; Meaning = 'a KMS provider by name' }
        ProviderKeyId              = @{ Type = 'String'; Meaning = "a KMS provider's key id (spec 002 key_id)"; Aliases = @('KeyId') }
        Quiet                      = @{ Type = 'SwitchParameter'; Meaning = 'return only a Boolean' }
        QuoteInterval              = @{ Type = 'TimeSpan'; Meaning = 'verifier: time between quotes' }
        QuoteSchedule              = @{ Type = 'QuoteSchedule'; Meaning = 'verifier: what the quote interval counts from' }
        RatePerMinute              = @{ Type = 'Int32'; Meaning = 'requests per minute of an API key' }
        Registrar                  = @{ Type = 'Uri'; Meaning = "a Keylime registrar's address" }
        RegistrarCaCertificate     = @{ Type = 'Object'; Meaning = "the CA the registrar's TLS certificate must chain to: a certificate, or a PEM/DER file" }
        RegistrarPlainPort         = @{ Type = 'Int32'; Meaning = "registrar's plain HTTP port" }
        Remove                     = @{ Type = 'SwitchParameter'; Meaning = 'also remove the thing the noun names' }
        RequireClientCertificate   = @{ Type = 'ServerRole'; Meaning = 'roles that require a client certificate' }
        RevocationKey              = @{ Type = 'String'; Meaning = 'key that signs revocation notices' }
        RevocationWebhook          = @{ Type = 'Uri'; Meaning = 'where revocation notices go' }
        Role                       = @{ Type = 'ServerRole'; Meaning = 'role(s) of the thing the noun names'; Generic = $true
                                        Types = @{ 'New-KmsUser' = 'KmsUserRole'; 'New-ProvisioningClientCertificate' = 'ClientRole' } }
        Serial                     = @{ Type = 'String'; Meaning = 'a device serial number (manufacturing)'; Aliases = @('SerialNumber') }
        Server                     = @{ Type = 'Uri'; Meaning = "a server's base address"; Aliases = @('Url') }
        Signature                  = @{ Type = 'Byte'; Meaning = 'TPMT_SIGNATURE bytes of a quote' }
        Since                      = @{ Type = 'DateTime'; Meaning = 'only entries at or after this time' }
        SkipCertificateCheck       = @{ Type = 'SwitchParameter'; Meaning = "accept any server TLS certificate (labs only)" }
        SourceKeyIdentifier        = @{ Type = 'String'; Meaning = "a key version's identifier in its key source" }
        SourceKeyTier              = @{ Type = 'String'; Meaning = "a key version's key source tier" }
        State                      = @{ Type = 'String'; Meaning = 'state filter of the thing the noun names'; Generic = $true }
        StationHookTimeout         = @{ Type = 'TimeSpan'; Meaning = 'station: time limit of a hook script' }
        StationPublicDashboard     = @{ Type = 'SwitchParameter'; Meaning = 'station: dashboard without a token' }
        StationVerifier            = @{ Type = 'Uri'; Meaning = 'station: the verifier to watch' }
        Subject                    = @{ Type = 'String'; Meaning = 'certificate subject' }
        Text                       = @{ Type = 'String'; Meaning = 'scanned text'; Aliases = @('Payload') }
        ThrottleLimit              = @{ Type = 'Int32'; Meaning = 'how many items run at once where work fans out' }
        Thumbprint                 = @{ Type = 'String'; Meaning = 'certificate thumbprint' }
        Token                      = @{ Type = 'SecureString'; Meaning = 'station operator token' }
        TokenId                    = @{ Type = 'String'; Meaning = 'station token id' }
        Tpm                        = @{ Type = 'String'; Meaning = 'TPM connection string (tpm2-tools TCTI syntax)'; Aliases = @('ConnectionString', 'Tcti') }
        TpmCaCertificate           = @{ Type = 'Object'; Meaning = 'the TPM CA an AK certificate must chain to: a certificate, or a PEM/DER file' }
        Transient                  = @{ Type = 'SwitchParameter'; Meaning = 'keep the key transient' }
        TrustedClientCa            = @{ Type = 'String'; Meaning = 'PEM files of further client-certificate CAs' }
        TrustedClientCaRole        = @{ Type = 'ClientRole'; Meaning = 'roles the further client CAs may act as' }
        Type                       = @{ Type = 'DeviceLogType'; Meaning = 'type filter of the thing the noun names'; Generic = $true }
        ValidDays                  = @{ Type = 'Int32'; Meaning = 'certificate lifetime in days' }
        Vendor                     = @{ Type = 'String'; Meaning = 'a device vendor (manufacturing)' }
        Verifier                   = @{ Type = 'Uri'; Meaning = "a Keylime verifier's address" }
        VerifierClientCertificate  = @{ Type = 'X509Certificate2'; Meaning = "verifier role: client certificate it presents to agents" }
        Version                    = @{ Type = 'String'; Meaning = 'version of the thing the noun names (device version, key version)'; Generic = $true }
        Wait                       = @{ Type = 'SwitchParameter'; Meaning = 'run in the foreground until stopped' }
        Activate                   = @{ Type = 'SwitchParameter'; Meaning = 'make the signing key just added the active one' }
        Analysis                   = @{ Type = 'ImageAnalysis'; Meaning = 'an image analysis (Get-ProvisioningImage -Analyze) to turn into a policy' }
        Analyze                    = @{ Type = 'SwitchParameter'; Meaning = "also analyse the image (partition table, or an artefact folder's files)" }
        Family                     = @{ Type = 'String'; Meaning = 'a device family of the firmware catalogue' }
        Image                      = @{ Type = 'Object'; Meaning = 'an image folder or archive of artefacts (path or image object)' }
        KeyLabel                   = @{ Type = 'String'; Meaning = "a PKCS#11 private key object's CKA_LABEL" }
        KeyObjectId                = @{ Type = 'String'; Meaning = "a PKCS#11 private key object's CKA_ID (hex)"; Aliases = @('KeyId') }
        Label                      = @{ Type = 'String'; Meaning = 'the label of a TPM CA signing key' }
        Module                     = @{ Type = 'String'; Meaning = 'absolute path of a PKCS#11 module (shared library)' }
        Notes                      = @{ Type = 'SwitchParameter'; Meaning = "include a firmware release's notes" }
        Pin                        = @{ Type = 'SecureString'; Meaning = 'the user PIN of a PKCS#11 token' }
        Section                    = @{ Type = 'String'; Meaning = 'a section of the settings catalogue (Server, Verifier, Station, ...)' }
        Slot                       = @{ Type = 'UInt64'; Meaning = 'a PKCS#11 slot id' }
        StoreConnectionString      = @{ Type = 'String'; Meaning = 'a PostgreSQL connection string of the store several servers share' }
        StoreCredential            = @{ Type = 'PSCredential'; Meaning = 'user and password for the shared PostgreSQL store' }
        Target                     = @{ Type = 'String'; Meaning = 'which kind of stored secrets to wrap (all, key, pin, verifier)' }
        TokenLabel                 = @{ Type = 'String'; Meaning = "a PKCS#11 token's label" }
        Value                      = @{ Type = 'Object'; Meaning = 'the value of a setting' }
        VerifierId                 = @{ Type = 'String'; Meaning = "a verifier's id (Keylime verifier_id)" }
        VerifierLease              = @{ Type = 'TimeSpan'; Meaning = "on a shared store, how long a verifier's claim on an agent lasts unrenewed" }
    }

    # An alias that two concepts carry, or that is another concept's canonical name, is allowed only here, with the reason.
    # Each is an old name or a property name that objects of each concept carry, so binding by property name keeps working;
    # on any one cmdlet it means that cmdlet's canonical parameter.
    SharedAliases = @{
        KeyId   = 'old name of -ApiKeyId (API key objects) and -ProviderKeyId (KMS provider objects); property name of KMS key versions (-Key) and Get-KmsKey/Get-ProvisioningApiKey -Name; PKCS#11 key objects of Get-Pkcs11Status -Module (-KeyObjectId)'
        Payload = 'Test-DeviceQrCode -Text: the scanned QR payload; not the agent payload of Start-AgentAttestation -Payload'
    }
}
