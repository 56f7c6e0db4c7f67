using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace TpmProvisioning.Tpm;

/// <summary>The TPM key derivation functions (TPM 2.0 Part 1, 11.4.10): KDFa (SP 800-108 counter-mode HMAC) and KDFe (SP 800-56A concatenation).</summary>
public static class Kdf
{
    /// <summary>
    /// KDFa: for i = 1.. HMAC_hash(key, [i]32 || label || 0x00 || contextU || contextV || [bits]32), truncated to <paramref name="bits"/>.
    /// The string label is ASCII; the terminating zero is added.
    /// </summary>
    public static byte[] KdfA(TpmAlgId hashAlg, ReadOnlySpan<byte> key, string label, ReadOnlySpan<byte> contextU, ReadOnlySpan<byte> contextV, int bits)
        => KdfA(hashAlg, key, Encoding.ASCII.GetBytes(label ?? ""), contextU, contextV, bits);

    /// <summary>KDFa with a label given as bytes; a zero byte is appended unless the label already ends in one (as the reference implementation does).</summary>
    public static byte[] KdfA(TpmAlgId hashAlg, ReadOnlySpan<byte> key, ReadOnlySpan<byte> label, ReadOnlySpan<byte> contextU, ReadOnlySpan<byte> contextV, int bits)
    {
        if (bits <= 0) throw new ArgumentOutOfRangeException(nameof(bits));
        int bytes = (bits + 7) / 8;
        int h = TpmHash.DigestSize(hashAlg);
        var output = new byte[bytes];
        Span<byte> counter = stackalloc byte[4];
        Span<byte> size = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(size, (uint)bits);
        bool addZero = label.Length == 0 || label[^1] != 0;
        using var hmac = TpmHash.CreateIncrementalHmac(hashAlg, key);
        Span<byte> block = stackalloc byte[64];
        for (uint i = 1, off = 0; off < bytes; i++, off += (uint)h)
        {
            BinaryPrimitives.WriteUInt32BigEndian(counter, i);
            hmac.AppendData(counter);
            hmac.AppendData(label);
            if (addZero) hmac.AppendData([0]);
            hmac.AppendData(contextU);
            hmac.AppendData(contextV);
            hmac.AppendData(size);
            hmac.GetHashAndReset(block);
            block[..Math.Min(h, bytes - (int)off)].CopyTo(output.AsSpan((int)off));
        }
        if (bits % 8 != 0) output[0] &= (byte)((1 << (bits % 8)) - 1);
        return output;
    }

    /// <summary>
    /// KDFe: for i = 1.. H([i]32 || Z || label || 0x00 || partyU || partyV), truncated to <paramref name="bits"/>.
    /// For MakeCredential Z is the x-coordinate of the shared point, partyU the ephemeral key's x and partyV the EK's x.
    /// </summary>
    public static byte[] KdfE(TpmAlgId hashAlg, ReadOnlySpan<byte> z, string label, ReadOnlySpan<byte> partyU, ReadOnlySpan<byte> partyV, int bits)
        => KdfE(hashAlg, z, Encoding.ASCII.GetBytes(label ?? ""), partyU, partyV, bits);

    /// <summary>KDFe with a label given as bytes; a zero byte is appended unless the label already ends in one.</summary>
    public static byte[] KdfE(TpmAlgId hashAlg, ReadOnlySpan<byte> z, ReadOnlySpan<byte> label, ReadOnlySpan<byte> partyU, ReadOnlySpan<byte> partyV, int bits)
    {
        if (bits <= 0) throw new ArgumentOutOfRangeException(nameof(bits));
        int bytes = (bits + 7) / 8;
        int h = TpmHash.DigestSize(hashAlg);
        var output = new byte[bytes];
        Span<byte> counter = stackalloc byte[4];
        bool addZero = label.Length == 0 || label[^1] != 0;
        using var hash = TpmHash.CreateIncremental(hashAlg);
        Span<byte> block = stackalloc byte[64];
        for (uint i = 1, off = 0; off < bytes; i++, off += (uint)h)
        {
            BinaryPrimitives.WriteUInt32BigEndian(counter, i);
            hash.AppendData(counter);
            hash.AppendData(z);
            hash.AppendData(label);
            if (addZero) hash.AppendData([0]);
            hash.AppendData(partyU);
            hash.AppendData(partyV);
            hash.GetHashAndReset(block);
            block[..Math.Min(h, bytes - (int)off)].CopyTo(output.AsSpan((int)off));
        }
        if (bits % 8 != 0) output[0] &= (byte)((1 << (bits % 8)) - 1);
        return output;
    }
}
