using System.Buffers;
using System.Security.Cryptography;
using Org.BouncyCastle.Crypto.Digests;
using Org.BouncyCastle.Crypto.Engines;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Crypto.Signers;
using BcBigInteger = Org.BouncyCastle.Math.BigInteger;

namespace TpmProvisioning.Tpm;

/// <summary>Stable codes for quote verification failures.</summary>
public static class QuoteFailureCodes
{
    /// <summary>The TPMS_ATTEST bytes do not parse.</summary>
    public const string MalformedQuote = "MalformedQuote";
    /// <summary>magic is not TPM_GENERATED_VALUE.</summary>
    public const string BadMagic = "BadMagic";
    /// <summary>The attestation is not a quote (type is not TPM_ST_ATTEST_QUOTE).</summary>
    public const string NotAQuote = "NotAQuote";
    /// <summary>extraData differs from the expected nonce.</summary>
    public const string NonceMismatch = "NonceMismatch";
    /// <summary>The quoted PCR selection differs from the expected one.</summary>
    public const string PcrSelectionMismatch = "PcrSelectionMismatch";
    /// <summary>A quoted PCR has no value in the PCR values supplied.</summary>
    public const string PcrValueMissing = "PcrValueMissing";
    /// <summary>The digest of the supplied PCR values differs from the quote's pcrDigest.</summary>
    public const string PcrDigestMismatch = "PcrDigestMismatch";
    /// <summary>The TPMT_SIGNATURE bytes do not parse.</summary>
    public const string MalformedSignature = "MalformedSignature";
    /// <summary>The signature's algorithm or hash does not fit the AK (key type or the AK's fixed scheme).</summary>
    public const string SignatureAlgorithmMismatch = "SignatureAlgorithmMismatch";
    /// <summary>The signature does not verify under the AK.</summary>
    public const string BadSignature = "BadSignature";
    /// <summary>The AK is not a restricted signing key, so its signature does not prove the TPM produced the quote.</summary>
    public const string AkNotRestrictedSigningKey = "AkNotRestrictedSigningKey";
}

/// <summary>One failed check: a stable <see cref="Code"/> (see <see cref="QuoteFailureCodes"/>) and a readable message.</summary>
public sealed record QuoteCheckFailure(string Code, string Message)
{
    /// <inheritdoc />
    public override string ToString() => $"{Code}: {Message}";
}

/// <summary>The outcome of verifying a quote: every failed check is listed, not only the first.</summary>
public sealed class QuoteVerificationResult
{
    internal QuoteVerificationResult(IReadOnlyList<QuoteCheckFailure> failures, TpmsAttest? attest, TpmtSignature? signature)
    {
        Failures = failures;
        Attest = attest;
        Signature = signature;
    }

    /// <summary>True when no check failed.</summary>
    public bool IsValid => Failures.Count == 0;
    /// <summary>The failed checks.</summary>
    public IReadOnlyList<QuoteCheckFailure> Failures { get; }
    /// <summary>The parsed TPMS_ATTEST (null when it did not parse).</summary>
    public TpmsAttest? Attest { get; }
    /// <summary>The parsed signature (null when it did not parse).</summary>
    public TpmtSignature? Signature { get; }
    /// <summary>The PCR values the quote came with (a Keylime quote's PCR blob); null when they did not parse or were given apart.</summary>
    public PcrValues? Pcrs { get; internal init; }
    /// <summary>True when a failure with this code was reported.</summary>
    public bool Has(string code)
    {
        foreach (var f in Failures) if (f.Code == code) return true;
        return false;
    }

    /// <inheritdoc />
    public override string ToString() => IsValid ? "valid" : string.Join("; ", Failures);
}

/// <summary>
/// An attestation key parsed once into a ready .NET verifier, for verifying many quotes. Verification does not change the key
/// object, so one instance may serve concurrent verifications.
/// </summary>
public sealed class PreparedAk : IDisposable
{
    private readonly RSA? _rsa;
    private readonly ECDsa? _ecdsa;
    private readonly RsaKeyParameters? _bcRsa;

    private PreparedAk(TpmPublic pub)
    {
        Public = pub;
        Name = TpmHash.IsSupported(pub.NameAlg) ? pub.ComputeName() : [];
        AttributeProblems = pub.RestrictedSigningKeyProblems();
        if (pub.IsRsa)
        {
            _rsa = pub.GetRsaPublicKey();
            var p = pub.ToRsaParameters();
            // BouncyCastle refuses moduli no RSA key has (even, small factors) with ArgumentException: that is a bad key, not a bad call.
            try { _bcRsa = new RsaKeyParameters(false, new BcBigInteger(1, p.Modulus), new BcBigInteger(1, p.Exponent)); }
            catch (ArgumentException ex)
            {
                _rsa.Dispose();
                throw new CryptographicException("The RSA public key is not valid: " + ex.Message, ex);
            }
            KeySizeBytes = p.Modulus!.Length;
        }
        else
        {
            _ecdsa = pub.GetECDsaPublicKey();
            CoordinateSize = TpmPublic.CoordinateSize(pub.Curve);
        }
    }

    /// <summary>
    /// Parses the AK public area into a verifier. Throws <see cref="NotSupportedException"/> for curves or key types .NET cannot verify,
    /// <see cref="InvalidOperationException"/> for an empty modulus or point, <see cref="CryptographicException"/> for a key that is not valid.
    /// </summary>
    public static PreparedAk Create(TpmPublic akPublic)
    {
        ArgumentNullException.ThrowIfNull(akPublic);
        return new PreparedAk(akPublic.Clone());
    }

    /// <summary>Parses a TPM2B_PUBLIC and prepares it.</summary>
    public static PreparedAk FromTpm2B(ReadOnlySpan<byte> tpm2bPublic) => new(TpmPublic.ParseTpm2B(tpm2bPublic));

    /// <summary>The AK public area.</summary>
    public TpmPublic Public { get; }
    /// <summary>The AK Name.</summary>
    public byte[] Name { get; }
    /// <summary>Why the AK is not a restricted signing key (empty when it is).</summary>
    public IReadOnlyList<string> AttributeProblems { get; }
    internal int CoordinateSize { get; }
    internal int KeySizeBytes { get; }

    /// <summary>Checks that the signature's algorithm fits this key; null when it does, else the reason.</summary>
    public string? CheckAlgorithm(TpmtSignature sig)
    {
        ArgumentNullException.ThrowIfNull(sig);
        if (Public.IsRsa && !sig.IsRsa) return $"RSA AK cannot produce a {sig.SigAlg} signature.";
        if (Public.IsEcc && sig.SigAlg != TpmAlgId.EcDsa) return $"ECC AK signature {sig.SigAlg} is not ECDSA.";
        if (!Public.Scheme.IsNull && (sig.SigAlg != Public.Scheme.Scheme || sig.Hash != Public.Scheme.HashAlg))
            return $"AK scheme is {Public.Scheme.Scheme}/{Public.Scheme.HashAlg} but the signature is {sig.SigAlg}/{sig.Hash}.";
        if (!TpmHash.IsSupported(sig.Hash)) return $"Signature hash {sig.Hash} is not supported.";
        return null;
    }

    /// <summary>Verifies <paramref name="sig"/> over <paramref name="digest"/> (already hashed with <c>sig.Hash</c>).</summary>
    public bool VerifyDigest(TpmtSignature sig, ReadOnlySpan<byte> digest)
    {
        ArgumentNullException.ThrowIfNull(sig);
        if (_rsa is not null)
        {
            if (sig.Signature.Length != KeySizeBytes) return false;
            var name = TpmHash.Name(sig.Hash);
            if (sig.SigAlg == TpmAlgId.RsaSsa) return _rsa.VerifyHash(digest, sig.Signature, name, RSASignaturePadding.Pkcs1);
            if (_rsa.VerifyHash(digest, sig.Signature, name, RSASignaturePadding.Pss)) return true;
            return VerifyPssMaxSalt(sig, digest);
        }
        Span<byte> p1363 = stackalloc byte[2 * CoordinateSize];
        if (!sig.TryWriteP1363(CoordinateSize, p1363)) return false;
        return _ecdsa!.VerifyHash(digest, p1363);
    }

    // Some TPMs use the largest salt the key allows instead of the hash length; .NET verifies only the latter.
    private bool VerifyPssMaxSalt(TpmtSignature sig, ReadOnlySpan<byte> digest)
    {
        int h = TpmHash.DigestSize(sig.Hash);
        int salt = KeySizeBytes - h - 2;
        if (salt <= 0) return false;
        var d = sig.Hash switch
        {
            TpmAlgId.Sha1 => (Org.BouncyCastle.Crypto.IDigest)new Sha1Digest(),
            TpmAlgId.Sha256 => new Sha256Digest(),
            TpmAlgId.Sha384 => new Sha384Digest(),
            _ => new Sha512Digest(),
        };
        var signer = PssSigner.CreateRawSigner(new RsaBlindedEngine(), d, d, salt, PssSigner.TrailerImplicit);
        signer.Init(false, _bcRsa);
        signer.BlockUpdate(digest.ToArray(), 0, digest.Length);
        // A signature whose value is not below the modulus (e.g. made by another, larger key) is invalid, not an error.
        try { return signer.VerifySignature(sig.Signature); }
        catch (Org.BouncyCastle.Crypto.DataLengthException) { return false; }
        catch (Org.BouncyCastle.Crypto.CryptoException) { return false; }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _rsa?.Dispose();
        _ecdsa?.Dispose();
    }
}

/// <summary>
/// Verifies TPM2_Quote evidence: the signature over the TPMS_ATTEST bytes, the magic and type, the nonce in extraData,
/// the PCR selection and the digest of the supplied PCR values. All checks run; each failure is reported.
/// </summary>
public static class QuoteVerifier
{
    private static readonly QuoteCheckFailure[] None = [];

    /// <summary>Verifies with an AK public area (prepares it for this call only; use the <see cref="PreparedAk"/> overload for volume).</summary>
    public static QuoteVerificationResult Verify(ReadOnlySpan<byte> attest, ReadOnlySpan<byte> signature, PcrValues pcrValues,
        TpmPublic akPublic, ReadOnlySpan<byte> expectedNonce, PcrSelection? expectedSelection = null)
    {
        using var ak = PreparedAk.Create(akPublic);
        return Verify(attest, signature, pcrValues, ak, expectedNonce, expectedSelection);
    }

    /// <summary>Verifies a quote with a prepared AK.</summary>
    /// <param name="attest">The TPMS_ATTEST bytes exactly as signed.</param>
    /// <param name="signature">The marshaled TPMT_SIGNATURE.</param>
    /// <param name="pcrValues">PCR values per bank and index, as claimed by the attester.</param>
    /// <param name="ak">The attestation key.</param>
    /// <param name="expectedNonce">The nonce the verifier issued (compared with extraData).</param>
    /// <param name="expectedSelection">When given, the PCRs the quote must cover.</param>
    public static QuoteVerificationResult Verify(ReadOnlySpan<byte> attest, ReadOnlySpan<byte> signature, PcrValues pcrValues,
        PreparedAk ak, ReadOnlySpan<byte> expectedNonce, PcrSelection? expectedSelection = null)
    {
        ArgumentNullException.ThrowIfNull(pcrValues);
        ArgumentNullException.ThrowIfNull(ak);
        List<QuoteCheckFailure>? failures = null;
        void Fail(string code, string message) => (failures ??= new List<QuoteCheckFailure>(2)).Add(new QuoteCheckFailure(code, message));

        if (ak.AttributeProblems.Count > 0)
            Fail(QuoteFailureCodes.AkNotRestrictedSigningKey, "AK is not a restricted signing key: " + string.Join(", ", ak.AttributeProblems) + ".");

        // Signature over the raw bytes: independent of whether they parse.
        TpmtSignature? sig = null;
        try { sig = TpmtSignature.Parse(signature); }
        catch (TpmFormatException ex) { Fail(QuoteFailureCodes.MalformedSignature, ex.Message); }
        if (sig is not null)
        {
            var why = ak.CheckAlgorithm(sig);
            if (why is not null) Fail(QuoteFailureCodes.SignatureAlgorithmMismatch, why);
            else
            {
                Span<byte> digest = stackalloc byte[64];
                int n = TpmHash.Hash(sig.Hash, attest, digest);
                if (!ak.VerifyDigest(sig, digest[..n])) Fail(QuoteFailureCodes.BadSignature, "The signature does not verify under the AK.");
            }
        }

        TpmsAttest? parsed = null;
        try { parsed = TpmsAttest.Parse(attest); }
        catch (TpmFormatException ex) { Fail(QuoteFailureCodes.MalformedQuote, ex.Message); }
        if (parsed is not null)
        {
            if (!parsed.IsTpmGenerated) Fail(QuoteFailureCodes.BadMagic, $"magic is 0x{parsed.Magic:X8}, not TPM_GENERATED_VALUE.");
            if (!expectedNonce.SequenceEqual(parsed.ExtraData)) Fail(QuoteFailureCodes.NonceMismatch, "extraData does not equal the expected nonce.");
            if (!parsed.IsQuote || parsed.PcrSelect is null || parsed.PcrDigest is null)
            {
                Fail(QuoteFailureCodes.NotAQuote, $"Attestation type is 0x{(ushort)parsed.Type:X4}, not TPM_ST_ATTEST_QUOTE.");
            }
            else
            {
                if (expectedSelection is not null && !expectedSelection.SelectsSame(parsed.PcrSelect))
                    Fail(QuoteFailureCodes.PcrSelectionMismatch, $"Quote covers {parsed.PcrSelect}, expected {expectedSelection}.");
                // The TPM hashes PCR values with the signing scheme's hash.
                var hashAlg = sig is not null && TpmHash.IsSupported(sig.Hash) ? sig.Hash
                    : TpmHash.IsSupported(ak.Public.Scheme.HashAlg) ? ak.Public.Scheme.HashAlg : TpmAlgId.Sha256;
                CheckPcrDigest(parsed, pcrValues, hashAlg, Fail);
            }
        }

        return new QuoteVerificationResult(failures is null ? None : failures, parsed, sig);
    }

    private static void CheckPcrDigest(TpmsAttest q, PcrValues values, TpmAlgId hashAlg, Action<string, string> fail)
    {
        int total = 0;
        foreach (var (bank, index) in q.PcrSelect!.Enumerate())
        {
            if (!values.TryGet(bank, index, out var v))
            {
                fail(QuoteFailureCodes.PcrValueMissing, $"No value supplied for quoted PCR {bank.ToString().ToLowerInvariant()}:{index}.");
                return;
            }
            total += v.Length;
        }
        byte[] buf = ArrayPool<byte>.Shared.Rent(Math.Max(total, 1));
        try
        {
            int at = 0;
            foreach (var (bank, index) in q.PcrSelect.Enumerate())
            {
                values.TryGet(bank, index, out var v);
                v.CopyTo(buf, at);
                at += v.Length;
            }
            Span<byte> d = stackalloc byte[64];
            int n = TpmHash.Hash(hashAlg, buf.AsSpan(0, total), d);
            if (!d[..n].SequenceEqual(q.PcrDigest))
                fail(QuoteFailureCodes.PcrDigestMismatch, "The digest of the supplied PCR values does not match the quote's pcrDigest.");
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
    }

    /// <summary>
    /// Verifies a Keylime quote string (<c>r&lt;attest&gt;:&lt;signature&gt;:&lt;pcrs&gt;</c>) whose PCR values come from its tpm2-tools PCR blob.
    /// A string or blob that does not parse yields <see cref="QuoteFailureCodes.MalformedQuote"/>.
    /// </summary>
    public static QuoteVerificationResult VerifyKeylime(string quote, PreparedAk ak, ReadOnlySpan<byte> expectedNonce, PcrSelection? expectedSelection = null)
    {
        ArgumentNullException.ThrowIfNull(ak);
        KeylimeQuote kq;
        Tpm2ToolsPcrBlob blob;
        try
        {
            kq = KeylimeQuote.Parse(quote);
            blob = Tpm2ToolsPcrBlob.Parse(kq.PcrBlob);
        }
        catch (TpmFormatException ex)
        {
            return new QuoteVerificationResult([new QuoteCheckFailure(QuoteFailureCodes.MalformedQuote, ex.Message)], null, null);
        }
        var r = Verify(kq.Attest, kq.Signature, blob.Values, ak, expectedNonce, expectedSelection);
        if (r.Attest?.PcrSelect is { } quoted && !quoted.SelectsSame(blob.Selection))
        {
            var l = new List<QuoteCheckFailure>(r.Failures)
            {
                new(QuoteFailureCodes.PcrSelectionMismatch, $"The PCR blob covers {blob.Selection}, the quote {quoted}."),
            };
            return new QuoteVerificationResult(l, r.Attest, r.Signature) { Pcrs = blob.Values };
        }
        return new QuoteVerificationResult(r.Failures, r.Attest, r.Signature) { Pcrs = blob.Values };
    }
}
