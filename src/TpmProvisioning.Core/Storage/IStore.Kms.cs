namespace TpmProvisioning.Storage;

/// <summary>A KMS provider (spec 002). The key derivation key is stored only wrapped by the master key.</summary>
public sealed record KmsProviderRecord
{
    public required string Name { get; init; }
    public required string KeyId { get; init; }
    /// <summary>The key derivation key, AES-256-GCM under the master key (AAD binds the provider name).</summary>
    public required byte[] WrappedKdk { get; init; }
    public string Health { get; init; } = "OK";
    public DateTimeOffset Created { get; init; } = DateTimeOffset.UtcNow;
    public DateTimeOffset Updated { get; init; } = DateTimeOffset.UtcNow;
}

/// <summary>A KMS key (spec 004's OCI key as CCKM keeps it).</summary>
public sealed record KmsKeyRecord
{
    public required string Id { get; init; }
    public required string Name { get; init; }
    public required string CompartmentId { get; init; }
    public required string VaultId { get; init; }
    public required string OciKeyId { get; init; }
    public string Algorithm { get; init; } = "AES";
    /// <summary>Key length in bytes.</summary>
    public int Length { get; init; } = 32;
    public DateTimeOffset Created { get; init; } = DateTimeOffset.UtcNow;
    public DateTimeOffset Updated { get; init; } = DateTimeOffset.UtcNow;
}

/// <summary>One version of a KMS key. Its material is stored only wrapped by the master key (AAD binds the version id).</summary>
public sealed record KmsKeyVersionRecord
{
    public required string Id { get; init; }
    public required string KeyId { get; init; }
    /// <summary>1, 2, ... in creation order; assigned by the store.</summary>
    public int Number { get; init; }
    public required string OciVersionId { get; init; }
    /// <summary><c>INTERNAL</c> (native) or <c>EXTERNAL</c> (uploaded).</summary>
    public required string Origin { get; init; }
    /// <summary><c>native</c>, or the source tier (<c>local</c>, <c>hsm-luna</c>).</summary>
    public required string MaterialOrigin { get; init; }
    public string? SourceKeyIdentifier { get; init; }
    public string? SourceKeyTier { get; init; }
    public required byte[] WrappedMaterial { get; init; }
    public string LifecycleState { get; init; } = "ENABLED";
    public bool IsPrimary { get; init; }
    public DateTimeOffset Created { get; init; } = DateTimeOffset.UtcNow;
    public DateTimeOffset Updated { get; init; } = DateTimeOffset.UtcNow;
}

/// <summary>A KMS user: PBKDF2-SHA256 password hash, salt and iteration count; never the password.</summary>
public sealed record KmsUserRecord
{
    public required string Name { get; init; }
    public required byte[] PasswordHash { get; init; }
    public required byte[] Salt { get; init; }
    public required int Iterations { get; init; }
    public required string Role { get; init; }
    public DateTimeOffset Created { get; init; } = DateTimeOffset.UtcNow;
}

/// <summary>A session id or bearer token, stored as its SHA-256 only.</summary>
public sealed record KmsTokenRecord
{
    public required byte[] TokenHash { get; init; }
    public required string UserName { get; init; }
    /// <summary><c>session</c> (vSphere) or <c>bearer</c> (CipherTrust).</summary>
    public required string Kind { get; init; }
    public DateTimeOffset Created { get; init; } = DateTimeOffset.UtcNow;
    public required DateTimeOffset Expires { get; init; }
}

/// <summary>A verifier revocation notice that stops key release to an agent.</summary>
public sealed record KmsRevocationRecord
{
    public required string AgentId { get; init; }
    public string? EventId { get; init; }
    public string? Type { get; init; }
    public DateTimeOffset Time { get; init; } = DateTimeOffset.UtcNow;
    public string? Detail { get; init; }
}

/// <summary>KMS members of the store (specs 002 and 004, and attestation-gated release).</summary>
public partial interface IStore
{
    Task<byte[]?> GetKmsMetaAsync(string name, CancellationToken ct = default);
    /// <summary>Sets the value only when none is stored; returns the value in effect afterwards.</summary>
    Task<byte[]> InitKmsMetaAsync(string name, byte[] value, CancellationToken ct = default);

    /// <summary>Adds the provider; false (nothing changed) when one with that name exists.</summary>
    Task<bool> InsertKmsProviderAsync(KmsProviderRecord provider, CancellationToken ct = default);
    Task<KmsProviderRecord?> GetKmsProviderAsync(string name, CancellationToken ct = default);
    Task<IReadOnlyList<KmsProviderRecord>> ListKmsProvidersAsync(CancellationToken ct = default);
    /// <summary>Sets the key id; false when there is no such provider.</summary>
    Task<bool> UpdateKmsProviderAsync(string name, string keyId, DateTimeOffset at, CancellationToken ct = default);
    Task<bool> DeleteKmsProviderAsync(string name, CancellationToken ct = default);

    /// <summary>Adds the key with its first version (primary) in one transaction; false when the id or name exists.</summary>
    Task<bool> InsertKmsKeyAsync(KmsKeyRecord key, KmsKeyVersionRecord firstVersion, CancellationToken ct = default);
    Task<KmsKeyRecord?> GetKmsKeyAsync(string idOrName, CancellationToken ct = default);
    Task<IReadOnlyList<KmsKeyRecord>> ListKmsKeysAsync(CancellationToken ct = default);
    /// <summary>Adds a version as the key's new primary (the others stop being primary); returns it with its number.</summary>
    Task<KmsKeyVersionRecord> AddKmsKeyVersionAsync(KmsKeyVersionRecord version, CancellationToken ct = default);
    /// <summary>Versions of a key, oldest first.</summary>
    Task<IReadOnlyList<KmsKeyVersionRecord>> ListKmsKeyVersionsAsync(string keyId, CancellationToken ct = default);
    Task<KmsKeyVersionRecord?> GetKmsKeyVersionAsync(string versionId, CancellationToken ct = default);

    Task<bool> InsertKmsUserAsync(KmsUserRecord user, CancellationToken ct = default);
    Task<KmsUserRecord?> GetKmsUserAsync(string name, CancellationToken ct = default);
    Task<IReadOnlyList<KmsUserRecord>> ListKmsUsersAsync(CancellationToken ct = default);
    /// <summary>Removes the user and every token issued to it.</summary>
    Task<bool> DeleteKmsUserAsync(string name, CancellationToken ct = default);

    Task InsertKmsTokenAsync(KmsTokenRecord token, CancellationToken ct = default);
    /// <summary>The token if it exists and has not expired at <paramref name="now"/>.</summary>
    Task<KmsTokenRecord?> GetKmsTokenAsync(byte[] tokenHash, DateTimeOffset now, CancellationToken ct = default);
    Task<bool> DeleteKmsTokenAsync(byte[] tokenHash, CancellationToken ct = default);

    Task UpsertKmsRevocationAsync(KmsRevocationRecord revocation, CancellationToken ct = default);
    Task<KmsRevocationRecord?> GetKmsRevocationAsync(string agentId, CancellationToken ct = default);
    Task<bool> DeleteKmsRevocationAsync(string agentId, CancellationToken ct = default);

    /// <summary>
    /// Records that a revocation notice (by the SHA-256 of its signed text) was received at <paramref name="now"/>, and forgets
    /// notices received before <paramref name="forgetBefore"/>. False when the same notice was already recorded (a replay).
    /// </summary>
    Task<bool> RecordKmsRevocationNoticeAsync(byte[] noticeHash, DateTimeOffset now, DateTimeOffset forgetBefore, CancellationToken ct = default);
}
