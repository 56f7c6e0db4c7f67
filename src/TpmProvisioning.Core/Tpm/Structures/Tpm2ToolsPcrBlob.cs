using System.Buffers.Binary;

namespace TpmProvisioning.Tpm;

/// <summary>
/// The PCR file <c>tpm2_quote -o</c> / <c>tpm2_pcrread -o</c> write in tpm2-tools 5.x's default "serialized" format, which Keylime
/// carries as the third part of its quote. It is a raw little-endian memory dump of C structures, not TPM marshaling:
/// <list type="number">
/// <item>TPML_PCR_SELECTION as a fixed C struct (132 bytes): u32 count, then 16 TPMS_PCR_SELECTION of 8 bytes each
/// (u16 hash, u8 sizeofSelect, u8 pcrSelect[4], one padding byte); unused entries are zero;</item>
/// <item>u32 number of TPML_DIGEST that follow;</item>
/// <item>each TPML_DIGEST as a fixed C struct (532 bytes): u32 count, then 8 TPM2B_DIGEST of 66 bytes (u16 size, 64-byte buffer).</item>
/// </list>
/// PCR values follow the selection order (banks in order, PCRs ascending), up to 8 per TPML_DIGEST as TPM2_PCR_Read returns them.
/// </summary>
public sealed class Tpm2ToolsPcrBlob
{
    /// <summary>Size of the TPML_PCR_SELECTION struct.</summary>
    public const int SelectionStructSize = 4 + 16 * 8;
    /// <summary>Size of one TPML_DIGEST struct.</summary>
    public const int DigestListStructSize = 4 + 8 * 66;
    /// <summary>Most TPML_DIGEST structs accepted (TPM2_MAX_PCRS in tpm2-tools).</summary>
    public const int MaxDigestLists = 32;

    private Tpm2ToolsPcrBlob(PcrSelection selection, PcrValues values, IReadOnlyList<byte[]> digests)
    {
        Selection = selection;
        Values = values;
        Digests = digests;
    }

    /// <summary>The PCR selection in the blob.</summary>
    public PcrSelection Selection { get; }
    /// <summary>The PCR values by bank and index.</summary>
    public PcrValues Values { get; }
    /// <summary>The values in file order.</summary>
    public IReadOnlyList<byte[]> Digests { get; }

    /// <summary>Writes the blob for the selected PCRs; every selected PCR must have a value of its bank's digest size.</summary>
    public static byte[] Write(PcrSelection selection, PcrValues values)
    {
        ArgumentNullException.ThrowIfNull(selection);
        ArgumentNullException.ThrowIfNull(values);
        var ordered = new List<byte[]>();
        foreach (var (bank, index) in selection.Enumerate())
        {
            if (!values.TryGet(bank, index, out var v)) throw new ArgumentException($"No value for PCR {bank}:{index}.", nameof(values));
            if (v.Length > 64) throw new ArgumentException($"PCR {bank}:{index} value longer than 64 bytes.", nameof(values));
            ordered.Add(v);
        }
        int lists = (ordered.Count + 7) / 8;
        if (lists > MaxDigestLists) throw new ArgumentException("Too many PCR values.", nameof(selection));
        var buf = new byte[SelectionStructSize + 4 + lists * DigestListStructSize];
        var s = buf.AsSpan();
        BinaryPrimitives.WriteUInt32LittleEndian(s, (uint)selection.Banks.Count);
        for (int i = 0; i < selection.Banks.Count; i++)
        {
            var b = selection.Banks[i];
            var e = s.Slice(4 + i * 8, 8);
            BinaryPrimitives.WriteUInt16LittleEndian(e, (ushort)b.Hash);
            e[2] = (byte)b.Select.Length;
            b.Select.CopyTo(e[3..]);
        }
        BinaryPrimitives.WriteUInt32LittleEndian(s[SelectionStructSize..], (uint)lists);
        for (int l = 0; l < lists; l++)
        {
            var dl = s.Slice(SelectionStructSize + 4 + l * DigestListStructSize, DigestListStructSize);
            int count = Math.Min(8, ordered.Count - l * 8);
            BinaryPrimitives.WriteUInt32LittleEndian(dl, (uint)count);
            for (int k = 0; k < count; k++)
            {
                var v = ordered[l * 8 + k];
                var d = dl.Slice(4 + k * 66, 66);
                BinaryPrimitives.WriteUInt16LittleEndian(d, (ushort)v.Length);
                v.CopyTo(d[2..]);
            }
        }
        return buf;
    }

    /// <summary>Parses a blob; anything malformed or inconsistent with its own selection throws <see cref="TpmFormatException"/>.</summary>
    public static Tpm2ToolsPcrBlob Parse(ReadOnlySpan<byte> blob)
    {
        if (blob.Length < SelectionStructSize + 4)
            throw new TpmFormatException($"tpm2-tools PCR blob: {blob.Length} bytes, shorter than the fixed header.");
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(blob);
        if (count > PcrSelection.MaxBanks) throw new TpmFormatException($"tpm2-tools PCR blob: selection count {count} exceeds {PcrSelection.MaxBanks}.");
        var banks = new List<PcrBankSelection>();
        for (int i = 0; i < count; i++)
        {
            var e = blob.Slice(4 + i * 8, 8);
            var hash = (TpmAlgId)BinaryPrimitives.ReadUInt16LittleEndian(e);
            int size = e[2];
            if (!TpmHash.IsHashAlg(hash)) throw new TpmFormatException($"tpm2-tools PCR blob: bank 0x{(ushort)hash:X4} is not a hash algorithm.");
            if (size > PcrBankSelection.MaxSelectBytes) throw new TpmFormatException($"tpm2-tools PCR blob: sizeofSelect {size}.");
            banks.Add(new PcrBankSelection(hash, e.Slice(3, size).ToArray()));
        }
        var selection = new PcrSelection(banks);

        uint lists = BinaryPrimitives.ReadUInt32LittleEndian(blob[SelectionStructSize..]);
        if (lists > MaxDigestLists) throw new TpmFormatException($"tpm2-tools PCR blob: {lists} digest lists.");
        long expected = SelectionStructSize + 4 + (long)lists * DigestListStructSize;
        if (blob.Length != expected) throw new TpmFormatException($"tpm2-tools PCR blob: {blob.Length} bytes, expected {expected} for {lists} digest lists.");
        var digests = new List<byte[]>();
        for (int l = 0; l < lists; l++)
        {
            var dl = blob.Slice(SelectionStructSize + 4 + l * DigestListStructSize, DigestListStructSize);
            uint n = BinaryPrimitives.ReadUInt32LittleEndian(dl);
            if (n > 8) throw new TpmFormatException($"tpm2-tools PCR blob: TPML_DIGEST count {n} exceeds 8.");
            for (int k = 0; k < n; k++)
            {
                var d = dl.Slice(4 + k * 66, 66);
                int size = BinaryPrimitives.ReadUInt16LittleEndian(d);
                if (size > 64) throw new TpmFormatException($"tpm2-tools PCR blob: digest size {size}.");
                digests.Add(d.Slice(2, size).ToArray());
            }
        }

        var values = new PcrValues();
        int at = 0;
        foreach (var (bank, index) in selection.Enumerate())
        {
            if (at >= digests.Count) throw new TpmFormatException($"tpm2-tools PCR blob: no value for selected PCR {bank}:{index}.");
            var v = digests[at++];
            if (TpmHash.IsHashAlg(bank) && v.Length != TpmHash.DigestSize(bank))
                throw new TpmFormatException($"tpm2-tools PCR blob: PCR {bank}:{index} value of {v.Length} bytes.");
            values.Set(bank, index, v);
        }
        if (at != digests.Count) throw new TpmFormatException($"tpm2-tools PCR blob: {digests.Count - at} values beyond the selection.");
        return new Tpm2ToolsPcrBlob(selection, values, digests);
    }
}
