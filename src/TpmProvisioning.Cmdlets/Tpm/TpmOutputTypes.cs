using System.Security.Cryptography.X509Certificates;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Cmdlets;

/// <summary>One PCR value of one bank, from Get-TpmPcr.</summary>
public sealed class TpmPcrValue
{
    /// <summary>Bank (hash algorithm) name: sha1, sha256, sha384, sha512.</summary>
    public string Bank { get; init; } = "";
    /// <summary>PCR index.</summary>
    public int Index { get; init; }
    /// <summary>The value as lower-case hex.</summary>
    public string Value { get; init; } = "";
    /// <summary>The value as bytes (hidden from Export-Csv and ConvertTo-Json, which get <see cref="Value"/>).</summary>
    [System.Management.Automation.Hidden, Newtonsoft.Json.JsonIgnore]
    public byte[] Digest { get; init; } = [];
    /// <summary>The TPM read.</summary>
    public string Tpm { get; init; } = "";
    /// <inheritdoc />
    public override string ToString() => $"{Bank}:{Index}={Value}";
}

/// <summary>An endorsement key and its certificate, from Get-TpmEndorsementKey.</summary>
public sealed class TpmEndorsementKey
{
    /// <summary>Template family (Rsa2048, EccP256, ... ) the key was created from.</summary>
    public EkKind Kind { get; init; }
    /// <summary>Algorithm in words, e.g. RSA 2048.</summary>
    public string Algorithm { get; init; } = "";
    /// <summary>TPM object Name (nameAlg || digest of the public area), hex.</summary>
    public string Name { get; init; } = "";
    /// <summary>TPM2B_PUBLIC of the EK as the TPM returned it.</summary>
    public byte[] PublicArea { get; init; } = [];
    /// <summary>DER SubjectPublicKeyInfo of the EK.</summary>
    public byte[] PublicKey { get; init; } = [];
    /// <summary>The EK certificate from NV, or null when the TPM holds none for this key.</summary>
    public X509Certificate2? Certificate { get; init; }
    /// <summary>The NV index read for the certificate.</summary>
    public uint CertificateIndex { get; init; }
    /// <summary>Certificate issuer (the TPM manufacturer's CA).</summary>
    public string? Issuer => Certificate?.Issuer;
    /// <summary>Certificate subject.</summary>
    public string? Subject => Certificate?.Subject;
    /// <summary>SHA-256 thumbprint of the certificate, hex.</summary>
    public string? Thumbprint => Certificate is null ? null : Convert.ToHexString(Certificate.GetCertHash(System.Security.Cryptography.HashAlgorithmName.SHA256)).ToLowerInvariant();
    /// <summary>True when the certificate's public key is the EK's.</summary>
    public bool? CertificateMatchesKey { get; init; }
    /// <summary>The TPM read.</summary>
    public string Tpm { get; init; } = "";
    /// <summary>The EK public key as PEM.</summary>
    public string ToPem() => System.Security.Cryptography.PemEncoding.WriteString("PUBLIC KEY", PublicKey);
}

/// <summary>An attestation key created in the TPM, from New-TpmAttestationKey.</summary>
public sealed class TpmAttestationKey
{
    /// <summary>RSA or ECC.</summary>
    public string Algorithm { get; init; } = "";
    /// <summary>Persistent handle, or null for a transient key (reload it from <see cref="PrivateBlob"/>).</summary>
    public uint? Handle { get; init; }
    /// <summary>The handle as 0x81xxxxxx, or "transient".</summary>
    public string HandleHex => Handle is { } h ? $"0x{h:x8}" : "transient";
    /// <summary>True when the key lives at a persistent handle.</summary>
    public bool Persistent => Handle is not null;
    /// <summary>TPM object Name, hex.</summary>
    public string Name { get; init; } = "";
    /// <summary>TPM2B_PUBLIC of the AK.</summary>
    public byte[] PublicArea { get; init; } = [];
    /// <summary>DER SubjectPublicKeyInfo of the AK.</summary>
    public byte[] PublicKey { get; init; } = [];
    /// <summary>TPM2B_PRIVATE, wrapped by the TPM's storage key (useless outside that TPM); null for a persisted key.</summary>
    public byte[]? PrivateBlob { get; init; }
    /// <summary>The storage key template family the private blob is wrapped under (Rsa2048 or EccP256).</summary>
    public string ParentTemplate { get; init; } = "Rsa2048";
    /// <summary>The TPM holding the key.</summary>
    public string Tpm { get; init; } = "";
    /// <summary>The AK public key as PEM.</summary>
    public string ToPem() => System.Security.Cryptography.PemEncoding.WriteString("PUBLIC KEY", PublicKey);
}

/// <summary>A quote with its PCR values, from Get-IntegrityQuote.</summary>
public sealed class TpmIntegrityQuote
{
    /// <summary>The nonce as given (UTF-8 into the quote's extraData).</summary>
    public string Nonce { get; init; } = "";
    /// <summary>The nonce bytes as quoted.</summary>
    public byte[] NonceBytes { get; init; } = [];
    /// <summary>PCR bank quoted.</summary>
    public string HashAlgorithm { get; init; } = "";
    /// <summary>PCR indices quoted.</summary>
    public int[] Pcr { get; init; } = [];
    /// <summary>The selection in tpm2-tools syntax, e.g. sha256:0,1,2.</summary>
    public string PcrSelection { get; init; } = "";
    /// <summary>TPMS_ATTEST bytes as signed.</summary>
    public byte[] Attest { get; init; } = [];
    /// <summary>TPMT_SIGNATURE bytes.</summary>
    public byte[] Signature { get; init; } = [];
    /// <summary>The PCR values in tpm2-tools' PCR file format (tpm2_quote -o).</summary>
    public byte[] PcrBlob { get; init; } = [];
    /// <summary>The PCR values read with the quote.</summary>
    public TpmPcrValue[] PcrValues { get; init; } = [];
    /// <summary>The quote in Keylime's string form r&lt;attest&gt;:&lt;signature&gt;:&lt;pcrs&gt;.</summary>
    public string KeylimeQuote { get; init; } = "";
    /// <summary>Name of the AK that signed, hex.</summary>
    public string AkName { get; init; } = "";
    /// <summary>TPM clock at the quote (ms).</summary>
    public ulong Clock { get; init; }
    /// <summary>TPM reset count at the quote.</summary>
    public uint ResetCount { get; init; }
    /// <summary>The TPM quoted.</summary>
    public string Tpm { get; init; } = "";
    /// <summary>When the quote was taken.</summary>
    public DateTimeOffset Time { get; init; }
}

/// <summary>The result of Test-TpmQuote: valid, or every check that failed.</summary>
public sealed class TpmQuoteVerification
{
    /// <summary>True when no check failed.</summary>
    public bool IsValid { get; init; }
    /// <summary>Codes of the failed checks (see about_TpmProvisioning), e.g. NonceMismatch, BadSignature.</summary>
    public string[] FailedChecks { get; init; } = [];
    /// <summary>The failed checks with their messages.</summary>
    public QuoteCheckFailure[] Failures { get; init; } = [];
    /// <summary>The nonce the quote was checked against.</summary>
    public string Nonce { get; init; } = "";
    /// <summary>The PCR selection the quote covers, when it parsed.</summary>
    public string? PcrSelection { get; init; }
    /// <summary>The signer's qualified name from the quote, hex, when it parsed.</summary>
    public string? Signer { get; init; }
    /// <summary>TPM clock in the quote, when it parsed.</summary>
    public ulong? Clock { get; init; }
    /// <summary>Name of the AK checked against, hex.</summary>
    public string AkName { get; init; } = "";
    /// <summary>One-line outcome.</summary>
    public string Summary => IsValid ? "valid" : string.Join("; ", Failures.Select(f => f.ToString()));
}
