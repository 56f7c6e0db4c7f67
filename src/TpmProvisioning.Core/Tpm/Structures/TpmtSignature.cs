namespace TpmProvisioning.Tpm;

/// <summary>
/// TPMT_SIGNATURE: RSASSA and RSAPSS (one signature value), ECDSA/ECDAA/ECSCHNORR/SM2 (r and s), HMAC (a digest) and NULL.
/// </summary>
public sealed class TpmtSignature
{
    /// <summary>The signature algorithm.</summary>
    public TpmAlgId SigAlg { get; init; }
    /// <summary>The hash algorithm the signed digest was computed with.</summary>
    public TpmAlgId Hash { get; init; }
    /// <summary>RSA: the signature value. HMAC: the digest. Empty otherwise.</summary>
    public byte[] Signature { get; init; } = [];
    /// <summary>ECC: r.</summary>
    public byte[] R { get; init; } = [];
    /// <summary>ECC: s.</summary>
    public byte[] S { get; init; } = [];

    /// <summary>True for RSASSA and RSAPSS.</summary>
    public bool IsRsa => SigAlg is TpmAlgId.RsaSsa or TpmAlgId.RsaPss;
    /// <summary>True for ECDSA, ECDAA, EC-Schnorr and SM2.</summary>
    public bool IsEcc => SigAlg is TpmAlgId.EcDsa or TpmAlgId.EcDaa or TpmAlgId.EcSchnorr || SigAlg == TpmAlgIdExtra.Sm2;

    /// <summary>An RSASSA-PKCS1-v1_5 signature.</summary>
    public static TpmtSignature RsaSsa(TpmAlgId hash, byte[] sig) => new() { SigAlg = TpmAlgId.RsaSsa, Hash = hash, Signature = sig };
    /// <summary>An RSASSA-PSS signature.</summary>
    public static TpmtSignature RsaPss(TpmAlgId hash, byte[] sig) => new() { SigAlg = TpmAlgId.RsaPss, Hash = hash, Signature = sig };
    /// <summary>An ECDSA signature from r and s.</summary>
    public static TpmtSignature EcDsa(TpmAlgId hash, byte[] r, byte[] s) => new() { SigAlg = TpmAlgId.EcDsa, Hash = hash, R = r, S = s };

    /// <summary>An ECDSA signature from .NET's IEEE P1363 form (r || s, equal halves).</summary>
    public static TpmtSignature EcDsaFromP1363(TpmAlgId hash, ReadOnlySpan<byte> p1363)
    {
        if (p1363.Length == 0 || p1363.Length % 2 != 0) throw new ArgumentException("IEEE P1363 signature must have two equal halves.", nameof(p1363));
        int n = p1363.Length / 2;
        return EcDsa(hash, p1363[..n].ToArray(), p1363[n..].ToArray());
    }

    /// <summary>
    /// Writes r || s, each left-padded with zeros to <paramref name="coordinateSize"/>, into <paramref name="destination"/> (2 × size bytes);
    /// false when r or s is longer than the coordinate size once leading zeros are dropped.
    /// </summary>
    public bool TryWriteP1363(int coordinateSize, Span<byte> destination)
    {
        if (destination.Length < 2 * coordinateSize) return false;
        return Pad(R, destination[..coordinateSize]) && Pad(S, destination.Slice(coordinateSize, coordinateSize));

        static bool Pad(ReadOnlySpan<byte> v, Span<byte> dst)
        {
            while (v.Length > 0 && v[0] == 0 && v.Length > dst.Length) v = v[1..];
            if (v.Length > dst.Length) return false;
            dst[..(dst.Length - v.Length)].Clear();
            v.CopyTo(dst[(dst.Length - v.Length)..]);
            return true;
        }
    }

    /// <summary>Writes the TPMT_SIGNATURE.</summary>
    public void Marshal(TpmWriter w)
    {
        w.Alg(SigAlg);
        if (SigAlg == TpmAlgId.Null) return;
        w.Alg(Hash);
        if (IsRsa) w.B2(Signature);
        else if (IsEcc) w.B2(R).B2(S);
        else if (SigAlg == TpmAlgId.Hmac) w.Bytes(Signature);
        else throw new InvalidOperationException($"TPMT_SIGNATURE: cannot marshal algorithm 0x{(ushort)SigAlg:X4}.");
    }

    /// <summary>The marshaled TPMT_SIGNATURE.</summary>
    public byte[] ToBytes()
    {
        var w = new TpmWriter(8 + Signature.Length + R.Length + S.Length);
        Marshal(w);
        return w.ToArray();
    }

    /// <summary>Parses a TPMT_SIGNATURE that fills <paramref name="data"/> exactly.</summary>
    public static TpmtSignature Parse(ReadOnlySpan<byte> data)
    {
        var r = new TpmReader(data, "TPMT_SIGNATURE");
        var s = Read(ref r);
        r.ExpectEnd();
        return s;
    }

    /// <summary>Reads a TPMT_SIGNATURE from inside a larger structure.</summary>
    public static TpmtSignature Read(ref TpmReader r)
    {
        var alg = r.Alg();
        if (alg == TpmAlgId.Null) return new TpmtSignature { SigAlg = TpmAlgId.Null, Hash = TpmAlgId.Null };
        var hash = r.Alg();
        if (!TpmHash.IsHashAlg(hash)) throw new TpmFormatException($"TPMT_SIGNATURE: hash 0x{(ushort)hash:X4} is not a hash algorithm.");
        switch (alg)
        {
            case TpmAlgId.RsaSsa or TpmAlgId.RsaPss:
                return new TpmtSignature { SigAlg = alg, Hash = hash, Signature = r.B2(TpmPublic.MaxRsaKeyBytes) };
            case TpmAlgId.EcDsa or TpmAlgId.EcDaa or TpmAlgId.EcSchnorr:
            case var a when a == TpmAlgIdExtra.Sm2:
                var rr = r.B2(TpmPublic.MaxEccKeyBytes);
                var ss = r.B2(TpmPublic.MaxEccKeyBytes);
                return new TpmtSignature { SigAlg = alg, Hash = hash, R = rr, S = ss };
            case TpmAlgId.Hmac:
                return new TpmtSignature { SigAlg = alg, Hash = hash, Signature = r.Bytes(TpmHash.DigestSize(hash)).ToArray() };
            default:
                throw new TpmFormatException($"TPMT_SIGNATURE: unsupported signature algorithm 0x{(ushort)alg:X4}.");
        }
    }
}
