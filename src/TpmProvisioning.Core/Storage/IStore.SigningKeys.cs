namespace TpmProvisioning.Storage;

/// <summary>Where a signing key's private part lives.</summary>
public enum SigningKeyKind
{
    /// <summary>A PEM private key in the store (sealed with the master key when one exists).</summary>
    Pem,
    /// <summary>A key inside a PKCS#11 token; only its certificate and where to find it are stored.</summary>
    Pkcs11,
}

/// <summary>One stored TPM CA signing key (the key that signs AK certificates) with its CA certificate.</summary>
public sealed record SigningKeyRecord
{
    public required string Label { get; init; }
    public SigningKeyKind Kind { get; init; }
    /// <summary><c>RSA</c> or <c>EC</c> with <see cref="KeySize"/> bits (P-256, P-384).</summary>
    public required string Algorithm { get; init; }
    public int KeySize { get; init; }
    /// <summary>SHA-256 of the CA certificate's DER, upper-case hex.</summary>
    public required string Fingerprint { get; init; }
    public required string CertificatePem { get; init; }
    /// <summary>PEM keys: the PKCS#8 PEM, or its sealed form (<c>sealed:v1:…</c>). Never returned by any surface.</summary>
    public string? PrivateKey { get; init; }
    /// <summary>The id of the master key that sealed <see cref="PrivateKey"/>, or null when it is plaintext.</summary>
    public string? WrapKeyId { get; init; }
    public string? Pkcs11Module { get; init; }
    public string? Pkcs11Token { get; init; }
    public string? Pkcs11KeyLabel { get; init; }
    /// <summary>CKA_ID as hex.</summary>
    public string? Pkcs11KeyId { get; init; }
    public bool Active { get; init; }
    public DateTimeOffset Created { get; init; }
    public DateTimeOffset Updated { get; init; }
}

/// <summary>A PKCS#11 token's user PIN, sealed with the master key.</summary>
public sealed record Pkcs11PinRecord
{
    public required string Module { get; init; }
    public required string Token { get; init; }
    /// <summary>The sealed PIN (<c>sealed:v1:…</c>), or plaintext when no master key existed.</summary>
    public required string Pin { get; init; }
    public string? WrapKeyId { get; init; }
    public DateTimeOffset Updated { get; init; }
}

/// <summary>Signing keys, PKCS#11 PINs, and the raw secret columns that secrets-at-rest counts and migrates.</summary>
public partial interface IStore
{
    /// <summary>Adds a key; false when its label exists.</summary>
    Task<bool> InsertSigningKeyAsync(SigningKeyRecord key, CancellationToken ct = default);
    Task<IReadOnlyList<SigningKeyRecord>> ListSigningKeysAsync(CancellationToken ct = default);
    Task<SigningKeyRecord?> GetSigningKeyAsync(string label, CancellationToken ct = default);
    /// <summary>The active key's label and last change time, or null when the built-in TPM CA is active.</summary>
    Task<(string Label, long UpdatedMs)?> GetActiveSigningKeyStampAsync(CancellationToken ct = default);
    /// <summary>Makes <paramref name="label"/> the only active key (null: none, the built-in CA); false when the label does not exist.</summary>
    Task<bool> ActivateSigningKeyAsync(string? label, CancellationToken ct = default);
    /// <summary>Removes an inactive key; false when it does not exist or is active.</summary>
    Task<bool> RemoveSigningKeyAsync(string label, CancellationToken ct = default);
    /// <summary>Replaces a key's private part if it still is <paramref name="expected"/> (compare and swap).</summary>
    Task<bool> ReplaceSigningKeySecretAsync(string label, string expected, string replacement, string? wrapKeyId, CancellationToken ct = default);

    Task UpsertPkcs11PinAsync(Pkcs11PinRecord pin, CancellationToken ct = default);
    Task<Pkcs11PinRecord?> GetPkcs11PinAsync(string module, string token, CancellationToken ct = default);
    Task<IReadOnlyList<Pkcs11PinRecord>> ListPkcs11PinsAsync(CancellationToken ct = default);
    Task<bool> RemovePkcs11PinAsync(string module, string token, CancellationToken ct = default);
    Task<bool> ReplacePkcs11PinSecretAsync(string module, string token, string expected, string replacement, string? wrapKeyId, CancellationToken ct = default);

    /// <summary>Every verifier agent's stored configuration JSON (which holds its sealed or plaintext revocation_key and v).</summary>
    Task<IReadOnlyList<(string AgentId, string ConfigJson)>> ListVerifierConfigsAsync(CancellationToken ct = default);
    /// <summary>Replaces an agent's configuration JSON if it is still <paramref name="expected"/>.</summary>
    Task<bool> ReplaceVerifierConfigAsync(string agentId, string expected, string replacement, CancellationToken ct = default);
    /// <summary>How many KMS rows hold wrapped material (provider key derivation keys, key versions).</summary>
    Task<(long Providers, long Versions)> CountKmsWrappedAsync(CancellationToken ct = default);
    /// <summary>Drops old copies of replaced values from the database's files where the provider keeps them (SQLite: the WAL).</summary>
    Task ScrubAsync(CancellationToken ct = default);
}
