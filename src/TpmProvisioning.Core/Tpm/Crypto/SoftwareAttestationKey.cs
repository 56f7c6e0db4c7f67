using System.Security.Cryptography;

namespace TpmProvisioning.Tpm;

/// <summary>
/// A software attestation key that produces quotes in the TPM's exact formats (TPMS_ATTEST signed as TPMT_SIGNATURE). It proves
/// nothing about a platform; it exists for tests, demos and load benchmarks of the verifying side.
/// </summary>
public sealed class SoftwareAttestationKey : IDisposable
{
    private readonly RSA? _rsa;
    private readonly ECDsa? _ecdsa;

    private SoftwareAttestationKey(TpmPublic pub, RSA? rsa, ECDsa? ecdsa)
    {
        Public = pub;
        _rsa = rsa;
        _ecdsa = ecdsa;
        Name = pub.ComputeName();
    }

    /// <summary>An RSA-2048 key with the <see cref="TpmTemplates.AkRsa2048"/> public area (RSASSA-SHA256), or RSAPSS when <paramref name="pss"/>.</summary>
    public static SoftwareAttestationKey CreateRsa(bool pss = false)
    {
        var rsa = RSA.Create(2048);
        var template = TpmTemplates.AkRsa2048;
        if (pss) template.Scheme = new TpmScheme(TpmAlgId.RsaPss, TpmAlgId.Sha256);
        return new SoftwareAttestationKey(TpmPublic.FromSubjectPublicKeyInfo(rsa.ExportSubjectPublicKeyInfo(), template), rsa, null);
    }

    /// <summary>An ECC P-256 key with the <see cref="TpmTemplates.AkEccP256"/> public area (ECDSA-SHA256).</summary>
    public static SoftwareAttestationKey CreateEccP256()
    {
        var ec = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        return new SoftwareAttestationKey(TpmPublic.FromSubjectPublicKeyInfo(ec.ExportSubjectPublicKeyInfo(), TpmTemplates.AkEccP256), null, ec);
    }

    /// <summary>The AK public area.</summary>
    public TpmPublic Public { get; }
    /// <summary>The AK Name.</summary>
    public byte[] Name { get; }

    /// <summary>Signs arbitrary bytes with the key's scheme and returns the marshaled TPMT_SIGNATURE.</summary>
    public byte[] Sign(ReadOnlySpan<byte> data)
    {
        var hash = Public.Scheme.HashAlg;
        var name = TpmHash.Name(hash);
        if (_rsa is not null)
        {
            bool pss = Public.Scheme.Scheme == TpmAlgId.RsaPss;
            var sig = _rsa.SignData(data.ToArray(), name, pss ? RSASignaturePadding.Pss : RSASignaturePadding.Pkcs1);
            return (pss ? TpmtSignature.RsaPss(hash, sig) : TpmtSignature.RsaSsa(hash, sig)).ToBytes();
        }
        return TpmtSignature.EcDsaFromP1363(hash, _ecdsa!.SignData(data, name)).ToBytes();
    }

    /// <summary>
    /// A quote over <paramref name="selection"/> of <paramref name="values"/> with <paramref name="nonce"/> as extraData: returns the
    /// TPMS_ATTEST bytes and the TPMT_SIGNATURE bytes.
    /// </summary>
    public (byte[] Attest, byte[] Signature) Quote(PcrSelection selection, PcrValues values, byte[] nonce, TpmsClockInfo? clock = null)
    {
        ArgumentNullException.ThrowIfNull(selection);
        ArgumentNullException.ThrowIfNull(values);
        var digest = values.ComputeDigest(selection, Public.Scheme.HashAlg, out var missing)
            ?? throw new ArgumentException($"No value for PCR {missing}.", nameof(values));
        var qualifiedSigner = Name;
        var attest = TpmsAttest.CreateQuote(qualifiedSigner, nonce, clock ?? new TpmsClockInfo(1000, 1, 0, true), 0x2020_0000_0001_0000UL, selection, digest);
        return (attest.Raw, Sign(attest.Raw));
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _rsa?.Dispose();
        _ecdsa?.Dispose();
    }
}
