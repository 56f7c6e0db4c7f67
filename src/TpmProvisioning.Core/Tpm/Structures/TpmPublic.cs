using System.Security.Cryptography;

namespace TpmProvisioning.Tpm;

/// <summary>TPMT_SYM_DEF_OBJECT: the symmetric algorithm of a storage or EK key (<see cref="Null"/> for none).</summary>
public readonly record struct TpmSymmetricDef(TpmAlgId Algorithm, ushort KeyBits, TpmAlgId Mode)
{
    /// <summary>No symmetric algorithm (TPM_ALG_NULL).</summary>
    public static TpmSymmetricDef Null => new(TpmAlgId.Null, 0, TpmAlgId.Null);
    /// <summary>AES-128 in CFB mode.</summary>
    public static TpmSymmetricDef Aes128Cfb => new(TpmAlgId.Aes, 128, TpmAlgId.Cfb);
    /// <summary>AES-256 in CFB mode.</summary>
    public static TpmSymmetricDef Aes256Cfb => new(TpmAlgId.Aes, 256, TpmAlgId.Cfb);
    /// <summary>True when no symmetric algorithm is set.</summary>
    public bool IsNull => Algorithm == TpmAlgId.Null;

    internal void Marshal(TpmWriter w)
    {
        w.Alg(Algorithm);
        if (IsNull) return;
        w.U16(KeyBits).Alg(Mode);
    }

    internal static TpmSymmetricDef Read(ref TpmReader r)
    {
        var alg = r.Alg();
        if (alg == TpmAlgId.Null) return Null;
        if (alg != TpmAlgId.Aes && alg != TpmAlgIdExtra.Sm4 && alg != TpmAlgIdExtra.Camellia)
            throw new TpmFormatException($"TPMT_SYM_DEF_OBJECT: unsupported symmetric algorithm 0x{(ushort)alg:X4}.");
        ushort bits = r.U16();
        if (bits is not (128 or 192 or 256))
            throw new TpmFormatException($"TPMT_SYM_DEF_OBJECT: unsupported key size {bits}.");
        var mode = r.Alg();
        if (mode is not (TpmAlgId.Cfb or TpmAlgId.Ctr or TpmAlgId.Ofb or TpmAlgId.Cbc or TpmAlgId.Ecb or TpmAlgId.Null))
            throw new TpmFormatException($"TPMT_SYM_DEF_OBJECT: unsupported mode 0x{(ushort)mode:X4}.");
        return new TpmSymmetricDef(alg, bits, mode);
    }
}

/// <summary>An asymmetric scheme or KDF (TPMT_RSA_SCHEME, TPMT_ECC_SCHEME, TPMT_KDF_SCHEME): algorithm plus hash, and the ECDAA count.</summary>
public readonly record struct TpmScheme(TpmAlgId Scheme, TpmAlgId HashAlg, ushort Count = 0)
{
    /// <summary>TPM_ALG_NULL: no scheme.</summary>
    public static TpmScheme Null => new(TpmAlgId.Null, TpmAlgId.Null);
    /// <summary>True when no scheme is set.</summary>
    public bool IsNull => Scheme == TpmAlgId.Null;
}

/// <summary>
/// TPMT_PUBLIC for RSA and ECC objects: parse, marshal, Name, SubjectPublicKeyInfo conversion and attribute checks.
/// Instances are mutable; <see cref="Clone"/> before editing a shared template.
/// </summary>
public sealed class TpmPublic
{
    /// <summary>Largest RSA modulus accepted (4096 bits).</summary>
    public const int MaxRsaKeyBytes = 512;
    /// <summary>Largest ECC coordinate accepted (BN P-638).</summary>
    public const int MaxEccKeyBytes = 80;
    /// <summary>Largest digest (SHA-512).</summary>
    public const int MaxDigestBytes = 64;

    /// <summary>Object type: <see cref="TpmAlgId.Rsa"/> or <see cref="TpmAlgId.Ecc"/>.</summary>
    public TpmAlgId Type { get; set; } = TpmAlgId.Rsa;
    /// <summary>Name algorithm.</summary>
    public TpmAlgId NameAlg { get; set; } = TpmAlgId.Sha256;
    /// <summary>Object attributes (TPMA_OBJECT).</summary>
    public TpmaObject Attributes { get; set; }
    /// <summary>Authorization policy digest (empty for none).</summary>
    public byte[] AuthPolicy { get; set; } = [];
    /// <summary>Symmetric algorithm for storage keys; <see cref="TpmSymmetricDef.Null"/> otherwise.</summary>
    public TpmSymmetricDef Symmetric { get; set; } = TpmSymmetricDef.Null;
    /// <summary>Signing or decryption scheme.</summary>
    public TpmScheme Scheme { get; set; } = TpmScheme.Null;

    /// <summary>RSA key size in bits.</summary>
    public ushort KeyBits { get; set; }
    /// <summary>RSA public exponent; 0 means the default 65537.</summary>
    public uint Exponent { get; set; }
    /// <summary>RSA modulus (unique.rsa), big-endian.</summary>
    public byte[] Modulus { get; set; } = [];

    /// <summary>ECC curve.</summary>
    public TpmEccCurve Curve { get; set; }
    /// <summary>ECC key derivation function (usually null).</summary>
    public TpmScheme Kdf { get; set; } = TpmScheme.Null;
    /// <summary>ECC public point X (unique.ecc.x).</summary>
    public byte[] X { get; set; } = [];
    /// <summary>ECC public point Y (unique.ecc.y).</summary>
    public byte[] Y { get; set; } = [];

    /// <summary>The RSA exponent with 0 replaced by 65537.</summary>
    public uint EffectiveExponent => Exponent == 0 ? 65537u : Exponent;
    /// <summary>True for RSA objects.</summary>
    public bool IsRsa => Type == TpmAlgId.Rsa;
    /// <summary>True for ECC objects.</summary>
    public bool IsEcc => Type == TpmAlgId.Ecc;

    /// <summary>A deep copy.</summary>
    public TpmPublic Clone() => new()
    {
        Type = Type, NameAlg = NameAlg, Attributes = Attributes, AuthPolicy = (byte[])AuthPolicy.Clone(),
        Symmetric = Symmetric, Scheme = Scheme, KeyBits = KeyBits, Exponent = Exponent,
        Modulus = (byte[])Modulus.Clone(), Curve = Curve, Kdf = Kdf, X = (byte[])X.Clone(), Y = (byte[])Y.Clone(),
    };

    // ------------------------------------------------------------------ marshal

    /// <summary>Writes the TPMT_PUBLIC.</summary>
    public void Marshal(TpmWriter w)
    {
        ArgumentNullException.ThrowIfNull(w);
        w.Alg(Type).Alg(NameAlg).U32((uint)Attributes).B2(AuthPolicy);
        switch (Type)
        {
            case TpmAlgId.Rsa:
                Symmetric.Marshal(w);
                w.Alg(Scheme.Scheme);
                if (Scheme.Scheme is TpmAlgId.RsaSsa or TpmAlgId.RsaPss or TpmAlgId.Oaep) w.Alg(Scheme.HashAlg);
                w.U16(KeyBits).U32(Exponent).B2(Modulus);
                break;
            case TpmAlgId.Ecc:
                Symmetric.Marshal(w);
                w.Alg(Scheme.Scheme);
                if (!Scheme.IsNull)
                {
                    w.Alg(Scheme.HashAlg);
                    if (Scheme.Scheme == TpmAlgId.EcDaa) w.U16(Scheme.Count);
                }
                w.U16((ushort)Curve);
                w.Alg(Kdf.Scheme);
                if (!Kdf.IsNull) w.Alg(Kdf.HashAlg);
                w.B2(X).B2(Y);
                break;
            default:
                throw new InvalidOperationException($"TpmPublic: type 0x{(ushort)Type:X4} cannot be marshaled.");
        }
    }

    /// <summary>The marshaled TPMT_PUBLIC.</summary>
    public byte[] ToBytes()
    {
        var w = new TpmWriter(Modulus.Length + X.Length + Y.Length + AuthPolicy.Length + 64);
        Marshal(w);
        return w.ToArray();
    }

    /// <summary>The marshaled TPM2B_PUBLIC (16-bit size, then the TPMT_PUBLIC).</summary>
    public byte[] ToTpm2B()
    {
        var w = new TpmWriter(Modulus.Length + X.Length + Y.Length + AuthPolicy.Length + 66);
        w.Sized16(Marshal);
        return w.ToArray();
    }

    // ------------------------------------------------------------------ parse

    /// <summary>Parses a TPMT_PUBLIC that must fill <paramref name="tpmtPublic"/> exactly.</summary>
    public static TpmPublic Parse(ReadOnlySpan<byte> tpmtPublic)
    {
        var r = new TpmReader(tpmtPublic, "TPMT_PUBLIC");
        var p = Read(ref r);
        r.ExpectEnd();
        return p;
    }

    /// <summary>Parses a TPM2B_PUBLIC that must fill <paramref name="tpm2bPublic"/> exactly.</summary>
    public static TpmPublic ParseTpm2B(ReadOnlySpan<byte> tpm2bPublic)
    {
        var r = new TpmReader(tpm2bPublic, "TPM2B_PUBLIC");
        var p = ReadTpm2B(ref r);
        r.ExpectEnd();
        return p;
    }

    /// <summary>Reads a TPM2B_PUBLIC from inside a larger structure (for example a command response).</summary>
    public static TpmPublic ReadTpm2B(ref TpmReader r)
    {
        var inner = r.Sized16();
        if (inner.Length == 0) throw new TpmFormatException("TPM2B_PUBLIC: empty.");
        return Parse(inner);
    }

    /// <summary>Reads a TPMT_PUBLIC from inside a larger structure.</summary>
    public static TpmPublic Read(ref TpmReader r)
    {
        var p = new TpmPublic { Type = r.Alg() };
        if (p.Type is not (TpmAlgId.Rsa or TpmAlgId.Ecc))
            throw new TpmFormatException($"TPMT_PUBLIC: unsupported object type 0x{(ushort)p.Type:X4}.");
        p.NameAlg = r.Alg();
        if (p.NameAlg != TpmAlgId.Null && !TpmHash.IsHashAlg(p.NameAlg))
            throw new TpmFormatException($"TPMT_PUBLIC: nameAlg 0x{(ushort)p.NameAlg:X4} is not a hash algorithm.");
        p.Attributes = (TpmaObject)r.U32();
        p.AuthPolicy = r.B2(MaxDigestBytes);
        p.Symmetric = TpmSymmetricDef.Read(ref r);
        if (p.Type == TpmAlgId.Rsa)
        {
            var s = r.Alg();
            p.Scheme = s switch
            {
                TpmAlgId.Null => TpmScheme.Null,
                TpmAlgId.RsaEs => new TpmScheme(s, TpmAlgId.Null),
                TpmAlgId.RsaSsa or TpmAlgId.RsaPss or TpmAlgId.Oaep => new TpmScheme(s, ReadHash(ref r, "RSA scheme")),
                _ => throw new TpmFormatException($"TPMT_PUBLIC: unsupported RSA scheme 0x{(ushort)s:X4}."),
            };
            p.KeyBits = r.U16();
            if (p.KeyBits is not (1024 or 2048 or 3072 or 4096))
                throw new TpmFormatException($"TPMT_PUBLIC: unsupported RSA key size {p.KeyBits}.");
            p.Exponent = r.U32();
            p.Modulus = r.B2(MaxRsaKeyBytes);
        }
        else
        {
            var s = r.Alg();
            switch (s)
            {
                case TpmAlgId.Null:
                    p.Scheme = TpmScheme.Null;
                    break;
                case TpmAlgId.EcDsa or TpmAlgId.Ecdh or TpmAlgId.EcSchnorr:
                case var _ when s == TpmAlgIdExtra.Sm2 || s == TpmAlgIdExtra.EcMqv:
                    p.Scheme = new TpmScheme(s, ReadHash(ref r, "ECC scheme"));
                    break;
                case TpmAlgId.EcDaa:
                    p.Scheme = new TpmScheme(s, ReadHash(ref r, "ECC scheme"), r.U16());
                    break;
                default:
                    throw new TpmFormatException($"TPMT_PUBLIC: unsupported ECC scheme 0x{(ushort)s:X4}.");
            }
            p.Curve = (TpmEccCurve)r.U16();
            if (!Enum.IsDefined(p.Curve) || p.Curve == TpmEccCurve.None)
                throw new TpmFormatException($"TPMT_PUBLIC: unsupported curve 0x{(ushort)p.Curve:X4}.");
            var k = r.Alg();
            if (k == TpmAlgId.Null) p.Kdf = TpmScheme.Null;
            else if (k is TpmAlgId.Kdf1Sp800_56A or TpmAlgId.Kdf1Sp800_108 || k == TpmAlgIdExtra.Kdf2 || k == TpmAlgIdExtra.Mgf1)
                p.Kdf = new TpmScheme(k, ReadHash(ref r, "KDF"));
            else throw new TpmFormatException($"TPMT_PUBLIC: unsupported KDF 0x{(ushort)k:X4}.");
            p.X = r.B2(MaxEccKeyBytes);
            p.Y = r.B2(MaxEccKeyBytes);
        }
        return p;
    }

    private static TpmAlgId ReadHash(ref TpmReader r, string what)
    {
        var h = r.Alg();
        if (!TpmHash.IsHashAlg(h)) throw new TpmFormatException($"TPMT_PUBLIC: {what} hash 0x{(ushort)h:X4} is not a hash algorithm.");
        return h;
    }

    // ------------------------------------------------------------------ name

    /// <summary>The object's Name: nameAlg (2 bytes, big-endian) followed by H_nameAlg(TPMT_PUBLIC).</summary>
    public byte[] ComputeName() => ComputeName(NameAlg, ToBytes());

    /// <summary>The Name of an object from its marshaled TPMT_PUBLIC bytes exactly as the TPM returned them.</summary>
    public static byte[] ComputeName(TpmAlgId nameAlg, ReadOnlySpan<byte> tpmtPublic)
    {
        if (!TpmHash.IsSupported(nameAlg)) throw new NotSupportedException($"Cannot compute a Name with nameAlg 0x{(ushort)nameAlg:X4}.");
        int size = TpmHash.DigestSize(nameAlg);
        var name = new byte[2 + size];
        name[0] = (byte)((ushort)nameAlg >> 8);
        name[1] = (byte)nameAlg;
        TpmHash.Hash(nameAlg, tpmtPublic, name.AsSpan(2));
        return name;
    }

    // ------------------------------------------------------------------ .NET keys

    /// <summary>The .NET curve for a TPM curve (NIST curves only).</summary>
    public static ECCurve ToECCurve(TpmEccCurve curve) => curve switch
    {
        TpmEccCurve.NistP256 => ECCurve.NamedCurves.nistP256,
        TpmEccCurve.NistP384 => ECCurve.NamedCurves.nistP384,
        TpmEccCurve.NistP521 => ECCurve.NamedCurves.nistP521,
        _ => throw new NotSupportedException($"Curve {curve} is not supported for software operations."),
    };

    /// <summary>Byte length of one coordinate on a curve.</summary>
    public static int CoordinateSize(TpmEccCurve curve) => curve switch
    {
        TpmEccCurve.NistP192 => 24,
        TpmEccCurve.NistP224 => 28,
        TpmEccCurve.NistP256 or TpmEccCurve.BnP256 or TpmEccCurve.Sm2P256 => 32,
        TpmEccCurve.NistP384 => 48,
        TpmEccCurve.NistP521 => 66,
        TpmEccCurve.BnP638 => 80,
        _ => throw new NotSupportedException($"Curve {curve} is unknown."),
    };

    private static TpmEccCurve FromOid(Oid? oid) => oid?.Value switch
    {
        "1.2.840.10045.3.1.7" => TpmEccCurve.NistP256,
        "1.3.132.0.34" => TpmEccCurve.NistP384,
        "1.3.132.0.35" => TpmEccCurve.NistP521,
        _ => oid?.FriendlyName switch
        {
            "nistP256" or "ECDSA_P256" or "secp256r1" => TpmEccCurve.NistP256,
            "nistP384" or "ECDSA_P384" or "secp384r1" => TpmEccCurve.NistP384,
            "nistP521" or "ECDSA_P521" or "secp521r1" => TpmEccCurve.NistP521,
            _ => TpmEccCurve.None,
        },
    };

    /// <summary>RSA public parameters (modulus and exponent).</summary>
    public RSAParameters ToRsaParameters()
    {
        if (!IsRsa) throw new InvalidOperationException("Not an RSA key.");
        if (Modulus.Length == 0) throw new InvalidOperationException("The RSA modulus (unique) is empty.");
        uint e = EffectiveExponent;
        byte[] exp = e switch
        {
            <= 0xFF => [(byte)e],
            <= 0xFFFF => [(byte)(e >> 8), (byte)e],
            <= 0xFFFFFF => [(byte)(e >> 16), (byte)(e >> 8), (byte)e],
            _ => [(byte)(e >> 24), (byte)(e >> 16), (byte)(e >> 8), (byte)e],
        };
        return new RSAParameters { Modulus = Modulus, Exponent = exp };
    }

    /// <summary>ECC public parameters (curve and point).</summary>
    public ECParameters ToECParameters()
    {
        if (!IsEcc) throw new InvalidOperationException("Not an ECC key.");
        int n = CoordinateSize(Curve);
        if (X.Length == 0 || Y.Length == 0) throw new InvalidOperationException("The ECC point (unique) is empty.");
        return new ECParameters { Curve = ToECCurve(Curve), Q = new ECPoint { X = LeftPad(X, n), Y = LeftPad(Y, n) } };
    }

    private static byte[] LeftPad(byte[] v, int n)
    {
        if (v.Length == n) return v;
        if (v.Length > n) throw new InvalidOperationException("ECC coordinate longer than the curve size.");
        var o = new byte[n];
        v.CopyTo(o, n - v.Length);
        return o;
    }

    /// <summary>A new .NET RSA holding this public key (caller disposes).</summary>
    public RSA GetRsaPublicKey()
    {
        var rsa = RSA.Create();
        rsa.ImportParameters(ToRsaParameters());
        return rsa;
    }

    /// <summary>A new .NET ECDsa holding this public key (caller disposes).</summary>
    public ECDsa GetECDsaPublicKey() => ECDsa.Create(ToECParameters());

    /// <summary>A new .NET ECDiffieHellman holding this public key (caller disposes).</summary>
    public ECDiffieHellman GetECDiffieHellmanPublicKey() => ECDiffieHellman.Create(ToECParameters());

    /// <summary>The DER SubjectPublicKeyInfo of this key (rsaEncryption or id-ecPublicKey).</summary>
    public byte[] ToSubjectPublicKeyInfo()
    {
        if (IsRsa) { using var rsa = GetRsaPublicKey(); return rsa.ExportSubjectPublicKeyInfo(); }
        using var ec = GetECDsaPublicKey();
        return ec.ExportSubjectPublicKeyInfo();
    }

    /// <summary>
    /// A copy of <paramref name="template"/> whose unique field holds the key from a DER SubjectPublicKeyInfo (for example
    /// from an EK certificate). The key's type, size, curve and exponent must agree with the template.
    /// </summary>
    public static TpmPublic FromSubjectPublicKeyInfo(ReadOnlySpan<byte> der, TpmPublic template)
    {
        ArgumentNullException.ThrowIfNull(template);
        var p = template.Clone();
        try
        {
            if (template.IsRsa)
            {
                using var rsa = RSA.Create();
                rsa.ImportSubjectPublicKeyInfo(der, out int read);
                if (read != der.Length) throw new TpmFormatException("SubjectPublicKeyInfo: trailing bytes.");
                var prm = rsa.ExportParameters(false);
                if (prm.Modulus!.Length * 8 != template.KeyBits)
                    throw new TpmFormatException($"SubjectPublicKeyInfo: RSA key of {prm.Modulus.Length * 8} bits, template expects {template.KeyBits}.");
                uint e = 0;
                if (prm.Exponent!.Length > 4) throw new TpmFormatException("SubjectPublicKeyInfo: RSA exponent too large.");
                foreach (byte b in prm.Exponent) e = (e << 8) | b;
                if (e != template.EffectiveExponent)
                    throw new TpmFormatException($"SubjectPublicKeyInfo: RSA exponent {e} differs from the template's {template.EffectiveExponent}.");
                p.Modulus = prm.Modulus;
            }
            else
            {
                using var ec = ECDiffieHellman.Create();
                ec.ImportSubjectPublicKeyInfo(der, out int read);
                if (read != der.Length) throw new TpmFormatException("SubjectPublicKeyInfo: trailing bytes.");
                var prm = ec.ExportParameters(false);
                var curve = FromOid(prm.Curve.Oid);
                if (curve != template.Curve)
                    throw new TpmFormatException($"SubjectPublicKeyInfo: curve {prm.Curve.Oid?.Value ?? "?"} differs from the template's {template.Curve}.");
                p.X = prm.Q.X!;
                p.Y = prm.Q.Y!;
            }
        }
        catch (CryptographicException ex)
        {
            throw new TpmFormatException("SubjectPublicKeyInfo: not a valid key of the template's type: " + ex.Message, ex);
        }
        return p;
    }

    // ------------------------------------------------------------------ attribute checks

    /// <summary>
    /// Problems that stop this object being a restricted signing key fit for attestation (an AK): restricted and sign set,
    /// decrypt clear, fixedTPM, fixedParent and sensitiveDataOrigin set. Empty when it is one.
    /// </summary>
    public IReadOnlyList<string> RestrictedSigningKeyProblems()
    {
        var l = new List<string>();
        Require(l, TpmaObject.Restricted, "restricted");
        Require(l, TpmaObject.Sign, "sign");
        if (Attributes.HasFlag(TpmaObject.Decrypt)) l.Add("decrypt must be clear");
        Require(l, TpmaObject.FixedTpm, "fixedTPM");
        Require(l, TpmaObject.FixedParent, "fixedParent");
        Require(l, TpmaObject.SensitiveDataOrigin, "sensitiveDataOrigin");
        // TPM 2.0 Part 1, 25.1 (and Part 3 TPM2_Create): a signing key's symmetric is TPM_ALG_NULL; no TPM creates one with a cipher.
        if (!Symmetric.IsNull) l.Add($"symmetric must be TPM_ALG_NULL for a signing key (is {Symmetric.Algorithm})");
        return l;
    }

    /// <summary>True when this is a restricted signing key (see <see cref="RestrictedSigningKeyProblems"/>); otherwise <paramref name="problem"/> names the first missing attribute.</summary>
    public bool IsRestrictedSigningKey(out string? problem)
    {
        var l = RestrictedSigningKeyProblems();
        problem = l.Count == 0 ? null : l[0];
        return l.Count == 0;
    }

    /// <summary>
    /// Problems that stop this object being a restricted decryption (storage) key such as an EK or SRK: restricted and decrypt set,
    /// sign clear, fixedTPM, fixedParent and sensitiveDataOrigin set, and a symmetric algorithm present.
    /// </summary>
    public IReadOnlyList<string> RestrictedDecryptionKeyProblems()
    {
        var l = new List<string>();
        Require(l, TpmaObject.Restricted, "restricted");
        Require(l, TpmaObject.Decrypt, "decrypt");
        if (Attributes.HasFlag(TpmaObject.Sign)) l.Add("sign must be clear");
        Require(l, TpmaObject.FixedTpm, "fixedTPM");
        Require(l, TpmaObject.FixedParent, "fixedParent");
        Require(l, TpmaObject.SensitiveDataOrigin, "sensitiveDataOrigin");
        if (Symmetric.IsNull) l.Add("symmetric algorithm missing");
        return l;
    }

    /// <summary>True when this is a restricted decryption key (see <see cref="RestrictedDecryptionKeyProblems"/>); otherwise <paramref name="problem"/> names the first problem.</summary>
    public bool IsRestrictedDecryptionKey(out string? problem)
    {
        var l = RestrictedDecryptionKeyProblems();
        problem = l.Count == 0 ? null : l[0];
        return l.Count == 0;
    }

    private void Require(List<string> l, TpmaObject flag, string name)
    {
        if (!Attributes.HasFlag(flag)) l.Add(name + " missing");
    }

    /// <summary>True when type, nameAlg, attributes, policy and parameters (everything but the unique field) equal the other's.</summary>
    public bool ParametersEqual(TpmPublic other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return Type == other.Type && NameAlg == other.NameAlg && Attributes == other.Attributes
            && AuthPolicy.AsSpan().SequenceEqual(other.AuthPolicy) && Symmetric == other.Symmetric && Scheme == other.Scheme
            && (IsRsa ? KeyBits == other.KeyBits && EffectiveExponent == other.EffectiveExponent
                      : Curve == other.Curve && Kdf == other.Kdf);
    }

    /// <inheritdoc />
    public override string ToString() => IsRsa
        ? $"RSA-{KeyBits} nameAlg={NameAlg} attrs=0x{(uint)Attributes:X8} scheme={Scheme.Scheme}"
        : $"ECC-{Curve} nameAlg={NameAlg} attrs=0x{(uint)Attributes:X8} scheme={Scheme.Scheme}";
}
