using System.Formats.Asn1;
using Org.BouncyCastle.Asn1;
using Org.BouncyCastle.Asn1.X509;
using Org.BouncyCastle.Asn1.X9;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Pki;

/// <summary>
/// A public key reduced to what identifies it (RSA modulus and exponent, or EC curve and affine point), so keys from a
/// certificate, a CSR, a SubjectPublicKeyInfo and a TPM public area compare equal whatever their encoding: RSA keys
/// published as rsaEncryption, RSAES-OAEP or RSASSA-PSS, EC points compressed or not.
/// </summary>
public sealed class KeyIdentity : IEquatable<KeyIdentity>
{
    private const string RsaEncryption = "1.2.840.113549.1.1.1";
    private const string RsaesOaep = "1.2.840.113549.1.1.7";
    private const string RsassaPss = "1.2.840.113549.1.1.10";
    private const string EcPublicKey = "1.2.840.10045.2.1";

    private KeyIdentity(bool isRsa, byte[] a, byte[] b, string? curveOid)
    {
        IsRsa = isRsa;
        A = a;
        B = b;
        CurveOid = curveOid;
    }

    public bool IsRsa { get; }
    /// <summary>RSA modulus or EC X (unsigned big-endian; X padded to the curve size).</summary>
    private byte[] A { get; }
    /// <summary>RSA exponent or EC Y.</summary>
    private byte[] B { get; }
    /// <summary>The named curve of an EC key.</summary>
    public string? CurveOid { get; }

    /// <summary>RSA key size or EC field size in bits.</summary>
    public int KeySizeBits => IsRsa ? A.Length * 8 : CurveOid switch
    {
        "1.2.840.10045.3.1.7" => 256,
        "1.3.132.0.34" => 384,
        "1.3.132.0.35" => 521,
        _ => A.Length * 8,
    };

    /// <summary>Short text for messages, e.g. <c>RSA-2048</c> or <c>EC P-256</c>.</summary>
    public override string ToString() => IsRsa ? $"RSA-{KeySizeBits}" : CurveOid switch
    {
        "1.2.840.10045.3.1.7" => "EC P-256",
        "1.3.132.0.34" => "EC P-384",
        "1.3.132.0.35" => "EC P-521",
        _ => $"EC {CurveOid}",
    };

    /// <summary>Reads a DER SubjectPublicKeyInfo; <see cref="FormatException"/> when it is not an RSA or named-curve EC key.</summary>
    public static KeyIdentity FromSubjectPublicKeyInfo(ReadOnlySpan<byte> der)
    {
        // System.Formats.Asn1 rather than BouncyCastle: this runs several times per provisioning request.
        string alg;
        string? curve = null;
        ReadOnlyMemory<byte> keyBits;
        try
        {
            var spki = new AsnReader(der.ToArray(), AsnEncodingRules.DER);
            var outer = spki.ReadSequence();
            spki.ThrowIfNotEmpty();
            var algId = outer.ReadSequence();
            alg = algId.ReadObjectIdentifier();
            if (algId.HasData)
            {
                if (algId.PeekTag().HasSameClassAndValue(Asn1Tag.ObjectIdentifier)) curve = algId.ReadObjectIdentifier();
                else algId.ReadEncodedValue();
            }
            algId.ThrowIfNotEmpty();
            if (!outer.TryReadPrimitiveBitString(out int unused, out keyBits) || unused != 0) throw new FormatException("the subjectPublicKey BIT STRING is not whole bytes");
            outer.ThrowIfNotEmpty();
        }
        catch (AsnContentException ex)
        {
            throw new FormatException("not a DER SubjectPublicKeyInfo", ex);
        }
        var key = keyBits.Span;
        try
        {
            switch (alg)
            {
                case RsaEncryption or RsaesOaep or RsassaPss:
                {
                    var r = new AsnReader(keyBits, AsnEncodingRules.DER);
                    var seq = r.ReadSequence();
                    r.ThrowIfNotEmpty();
                    var n = seq.ReadIntegerBytes().Span;
                    var e = seq.ReadIntegerBytes().Span;
                    seq.ThrowIfNotEmpty();
                    if (n.Length == 0 || e.Length == 0 || (n[0] & 0x80) != 0 || (e[0] & 0x80) != 0) throw new FormatException("RSA key with a negative modulus or exponent");
                    var nb = TrimZeros(n.ToArray());
                    var eb = TrimZeros(e.ToArray());
                    if (nb is [0] || eb is [0]) throw new FormatException("RSA key with a zero modulus or exponent");
                    return new KeyIdentity(true, nb, eb, null);
                }
                case EcPublicKey:
                {
                    if (curve is null) throw new FormatException("EC key without a named curve");
                    int size = curve switch
                    {
                        "1.2.840.10045.3.1.7" => 32,
                        "1.3.132.0.34" => 48,
                        "1.3.132.0.35" => 66,
                        _ => 0,
                    };
                    if (size > 0 && key.Length == 1 + 2 * size && key[0] == 0x04)
                    {
                        // Uncompressed point: .NET checks that it is on the curve as it imports it.
                        var x = key.Slice(1, size).ToArray();
                        var y = key.Slice(1 + size, size).ToArray();
                        try
                        {
                            using var ec = System.Security.Cryptography.ECDiffieHellman.Create(new System.Security.Cryptography.ECParameters
                            {
                                Curve = System.Security.Cryptography.ECCurve.CreateFromValue(curve),
                                Q = new System.Security.Cryptography.ECPoint { X = x, Y = y },
                            });
                        }
                        catch (System.Security.Cryptography.CryptographicException ex) { throw new FormatException("EC point not on its curve", ex); }
                        return new KeyIdentity(false, x, y, curve);
                    }
                    // Compressed points and other curves: BouncyCastle decodes and validates.
                    var x9 = ECNamedCurveTable.GetByOid(new DerObjectIdentifier(curve)) ?? throw new FormatException($"unknown curve {curve}");
                    var q = x9.Curve.DecodePoint(key.ToArray()).Normalize();
                    if (q.IsInfinity || !q.IsValid()) throw new FormatException("EC point not on its curve");
                    return new KeyIdentity(false, q.AffineXCoord.GetEncoded(), q.AffineYCoord.GetEncoded(), curve);
                }
                default:
                    throw new FormatException($"unsupported key algorithm {alg}");
            }
        }
        catch (Exception ex) when (ex is AsnContentException or ArgumentException or InvalidOperationException)
        {
            throw new FormatException($"malformed {(alg == EcPublicKey ? "EC" : "RSA")} public key: {ex.Message}", ex);
        }
    }

    /// <summary>
    /// The DER SubjectPublicKeyInfo of this key: rsaEncryption (NULL parameters) or id-ecPublicKey with its named curve and an
    /// uncompressed point. Written directly, without importing the key into a crypto provider.
    /// </summary>
    public byte[] ToSubjectPublicKeyInfo()
    {
        var w = new AsnWriter(AsnEncodingRules.DER);
        using (w.PushSequence())
        {
            using (w.PushSequence())
            {
                w.WriteObjectIdentifier(IsRsa ? RsaEncryption : EcPublicKey);
                if (IsRsa) w.WriteNull();
                else w.WriteObjectIdentifier(CurveOid!);
            }
            if (IsRsa)
            {
                var inner = new AsnWriter(AsnEncodingRules.DER);
                using (inner.PushSequence())
                {
                    inner.WriteIntegerUnsigned(A);
                    inner.WriteIntegerUnsigned(B);
                }
                w.WriteBitString(inner.Encode());
            }
            else
            {
                var point = new byte[1 + A.Length + B.Length];
                point[0] = 0x04;
                A.CopyTo(point, 1);
                B.CopyTo(point, 1 + A.Length);
                w.WriteBitString(point);
            }
        }
        return w.Encode();
    }

    /// <summary>Reads a parsed SubjectPublicKeyInfo.</summary>
    public static KeyIdentity FromSubjectPublicKeyInfo(SubjectPublicKeyInfo spki)
    {
        ArgumentNullException.ThrowIfNull(spki);
        return FromSubjectPublicKeyInfo(spki.GetDerEncoded());
    }

    /// <summary>The key of a TPM public area.</summary>
    public static KeyIdentity FromTpmPublic(TpmPublic pub)
    {
        ArgumentNullException.ThrowIfNull(pub);
        if (pub.IsRsa)
        {
            var p = pub.ToRsaParameters();
            return new KeyIdentity(true, TrimZeros(p.Modulus!), TrimZeros(p.Exponent!), null);
        }
        var e = pub.ToECParameters();
        return new KeyIdentity(false, e.Q.X!, e.Q.Y!, e.Curve.Oid.Value);
    }

    /// <summary>
    /// A copy of <paramref name="template"/> whose unique field holds this key. The type, size and curve must agree with the
    /// template; a non-default RSA exponent is written into the copy.
    /// </summary>
    public TpmPublic ToTpmPublic(TpmPublic template)
    {
        ArgumentNullException.ThrowIfNull(template);
        var p = template.Clone();
        if (IsRsa)
        {
            if (!template.IsRsa || A.Length * 8 != template.KeyBits) throw new FormatException($"{this} does not fit the template ({template})");
            uint e = 0;
            if (B.Length > 4) throw new FormatException("RSA exponent too large for a TPM key");
            foreach (byte b in B) e = (e << 8) | b;
            p.Exponent = e == 65537 ? 0 : e;
            p.Modulus = A;
        }
        else
        {
            var curve = TpmCurve ?? throw new FormatException($"{this} has no TPM curve");
            if (!template.IsEcc || template.Curve != curve) throw new FormatException($"{this} does not fit the template ({template})");
            p.X = A;
            p.Y = B;
        }
        return p;
    }

    /// <summary>The TPM curve of an EC key, or null for RSA and curves the TPM code does not know.</summary>
    public TpmEccCurve? TpmCurve => CurveOid switch
    {
        "1.2.840.10045.3.1.7" => TpmEccCurve.NistP256,
        "1.3.132.0.34" => TpmEccCurve.NistP384,
        "1.3.132.0.35" => TpmEccCurve.NistP521,
        _ => null,
    };

    private static byte[] TrimZeros(byte[] v)
    {
        int i = 0;
        while (i < v.Length - 1 && v[i] == 0) i++;
        return i == 0 ? v : v[i..];
    }

    public bool Equals(KeyIdentity? other) => other is not null && IsRsa == other.IsRsa && CurveOid == other.CurveOid
        && A.AsSpan().SequenceEqual(other.A) && B.AsSpan().SequenceEqual(other.B);

    public override bool Equals(object? obj) => obj is KeyIdentity k && Equals(k);

    public override int GetHashCode()
    {
        var h = new HashCode();
        h.Add(IsRsa);
        h.AddBytes(A);
        return h.ToHashCode();
    }
}
