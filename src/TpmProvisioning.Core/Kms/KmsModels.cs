using System.Security.Cryptography.X509Certificates;

namespace TpmProvisioning.Kms;

/// <summary>Why a KMS call failed; each surface maps it to its own error shape.</summary>
public enum KmsErrorKind
{
    InvalidArgument,
    AlreadyExists,
    NotFound,
    Unauthenticated,
    Unauthorized,
    /// <summary>A dependency (master key, HSM, store) is not usable; surfaces answer a generic error without details.</summary>
    Unavailable,
    /// <summary>Too many failed logins for the user or from the address: 429 with <see cref="KmsException.RetryAfterSeconds"/>.</summary>
    Throttled,
    /// <summary>The server has no capacity for the call now (password checks queued too long, body budget spent): 503 with Retry-After.</summary>
    Busy,
}

/// <summary>A KMS call failed. <see cref="Field"/> names the offending request field for <see cref="KmsErrorKind.InvalidArgument"/>.</summary>
public sealed class KmsException(KmsErrorKind kind, string? field, string message) : Exception(message)
{
    public KmsErrorKind Kind { get; } = kind;
    public string? Field { get; } = field;
    /// <summary>Seconds before a retry may succeed, for <see cref="KmsErrorKind.Throttled"/> and <see cref="KmsErrorKind.Busy"/>.</summary>
    public int? RetryAfterSeconds { get; init; }
}

/// <summary>What a KMS user may do.</summary>
public enum KmsUserRole
{
    /// <summary>List and read providers, keys and versions.</summary>
    ReadOnly,
    /// <summary>Everything ReadOnly may, plus create, update and delete.</summary>
    Administrator,
}

/// <summary>Settings of the KMS surface (<see cref="Hosting.ServerOptions.Kms"/>).</summary>
public sealed class KmsSettings
{
    /// <summary>How the master key is protected. <see cref="MasterKeyKind.InsecureFile"/> only when chosen explicitly.</summary>
    public MasterKeyKind MasterKey { get; set; } = MasterKeyKind.Tpm;
    /// <summary>The server's own TPM for <see cref="MasterKeyKind.Tpm"/> (TCTI-style string; null: TPM2TOOLS_TCTI or the platform default).</summary>
    public string? MasterKeyTpm { get; set; }
    /// <summary>The HSM for <see cref="MasterKeyKind.Pkcs11"/>.</summary>
    public Pkcs11Settings? MasterKeyPkcs11 { get; set; }
    /// <summary>The HSM that serves the <c>hsm-luna</c> key source tier; null: that tier is not configured (400).</summary>
    public Pkcs11Settings? HsmLunaSource { get; set; }

    /// <summary>CCKM <c>account</c> field of every resource.</summary>
    public string Account { get; set; } = "kylo:kylo:admin:accounts:kylo";
    /// <summary>Prefix of CCKM <c>uri</c> fields (the resource type and id follow).</summary>
    public string UriPrefix { get; set; } = "kylo:kylo:cckm:";
    /// <summary>OCI compartment of keys created without one.</summary>
    public string DefaultCompartmentId { get; set; } = "ocid1.tenancy.oc1..tpmprovisioning";
    /// <summary>OCI region part of generated OCIDs.</summary>
    public string OciRegion { get; set; } = "local";

    /// <summary>Lifetime of a vSphere session id.</summary>
    public TimeSpan SessionLifetime { get; set; } = TimeSpan.FromHours(1);
    /// <summary>Lifetime of a CipherTrust bearer token (CipherTrust's default is 300 s).</summary>
    public TimeSpan TokenLifetime { get; set; } = TimeSpan.FromSeconds(300);
    /// <summary>PBKDF2-SHA256 iterations for new user passwords (OWASP 2023: 600,000).</summary>
    public int PasswordIterations { get; set; } = 600_000;
    /// <summary>Backoff of failed logins per user name and per address (docs/rest/kms.md, "Failed logins").</summary>
    public KmsLoginThrottleSettings LoginThrottle { get; set; } = new();

    /// <summary>The Keylime verifier the release gate asks (<c>GET /v2.1/agents/{id}</c>); null: no release (every request refused).</summary>
    public Uri? Verifier { get; set; }
    /// <summary>The Keylime registrar holding the agents' mTLS certificates; null: the verifier's address.</summary>
    public Uri? Registrar { get; set; }
    /// <summary>CA that issued the verifier's and registrar's TLS certificates; null: this server's components CA.</summary>
    public X509Certificate2? KeylimeCaCertificate { get; set; }
    /// <summary>Client certificate for the verifier and registrar; null: one issued by this server's components CA.</summary>
    public X509Certificate2? KeylimeClientCertificate { get; set; }
    /// <summary>A release needs a successful attestation at most this old.</summary>
    public TimeSpan MaxAttestationAge { get; set; } = TimeSpan.FromSeconds(60);
    /// <summary>Public key (PEM) that signs Keylime revocation notices; null: notices are refused.</summary>
    public string? RevocationPublicKeyPem { get; set; }
    /// <summary>
    /// A revocation notice is honoured only when its <c>event_time</c> is at most this far from now (either way): a notice
    /// captured and replayed later is refused, and so is the same notice twice.
    /// </summary>
    public TimeSpan RevocationMaxAge { get; set; } = TimeSpan.FromMinutes(5);
}

/// <summary>A provider as the surfaces show it (never its key derivation key).</summary>
public sealed record KmsProviderInfo(string Name, string KeyId, string Health, DateTimeOffset Created, DateTimeOffset Updated)
{
    public string Type => "NATIVE";
}

/// <summary>A key as the surfaces show it.</summary>
public sealed record KmsKeyInfo
{
    public required string Id { get; init; }
    public required string Name { get; init; }
    public required string CompartmentId { get; init; }
    public required string VaultId { get; init; }
    public required string OciKeyId { get; init; }
    public required string Algorithm { get; init; }
    public required int Length { get; init; }
    public string? CurrentVersionId { get; init; }
    public string? CurrentOciVersionId { get; init; }
    public int VersionCount { get; init; }
    public DateTimeOffset Created { get; init; }
    public DateTimeOffset Updated { get; init; }
}

/// <summary>A key version as the surfaces show it (never its material).</summary>
public sealed record KmsKeyVersionInfo
{
    public required string Id { get; init; }
    public required string KeyId { get; init; }
    public required string KeyName { get; init; }
    public required int Number { get; init; }
    public required string OciVersionId { get; init; }
    public required string OciKeyId { get; init; }
    public required string CompartmentId { get; init; }
    public required string VaultId { get; init; }
    /// <summary><c>INTERNAL</c> or <c>EXTERNAL</c>.</summary>
    public required string Origin { get; init; }
    /// <summary><c>native</c>, <c>local</c> or <c>hsm-luna</c>.</summary>
    public required string KeyMaterialOrigin { get; init; }
    public string? SourceKeyIdentifier { get; init; }
    public string? SourceKeyTier { get; init; }
    public required string LifecycleState { get; init; }
    public required bool IsPrimary { get; init; }
    public DateTimeOffset Created { get; init; }
    public DateTimeOffset Updated { get; init; }
}

/// <summary>A KMS user (never its password hash).</summary>
public sealed record KmsUserInfo(string Name, KmsUserRole Role, DateTimeOffset Created);

/// <summary>A token or session id just issued: the secret is here and nowhere else (the store keeps its SHA-256).</summary>
public sealed record KmsIssuedToken(string Token, string UserName, KmsUserRole Role, DateTimeOffset Expires);
