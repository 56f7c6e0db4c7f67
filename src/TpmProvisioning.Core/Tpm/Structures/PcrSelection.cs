using System.Text;

namespace TpmProvisioning.Tpm;

/// <summary>TPMS_PCR_SELECTION: one PCR bank (hash algorithm) and a bitmap of selected PCRs (bit i of byte j = PCR 8j+i).</summary>
public sealed class PcrBankSelection
{
    /// <summary>Largest sizeofSelect accepted (32 PCRs), as tpm2-tss's TPM2_PCR_SELECT_MAX.</summary>
    public const int MaxSelectBytes = 4;

    /// <summary>Creates a bank selection from its bitmap.</summary>
    public PcrBankSelection(TpmAlgId hash, byte[] select)
    {
        ArgumentNullException.ThrowIfNull(select);
        if (select.Length > MaxSelectBytes) throw new ArgumentException($"sizeofSelect above {MaxSelectBytes}.", nameof(select));
        Hash = hash;
        Select = select;
    }

    /// <summary>The bank's hash algorithm.</summary>
    public TpmAlgId Hash { get; }
    /// <summary>The pcrSelect bitmap (its length is sizeofSelect).</summary>
    public byte[] Select { get; }

    /// <summary>True when PCR <paramref name="index"/> is selected.</summary>
    public bool Contains(int index) => index >= 0 && index / 8 < Select.Length && (Select[index / 8] & (1 << (index % 8))) != 0;

    /// <summary>Selected PCR indices in ascending order.</summary>
    public IReadOnlyList<int> Indices
    {
        get
        {
            var l = new List<int>();
            for (int i = 0; i < Select.Length * 8; i++) if (Contains(i)) l.Add(i);
            return l;
        }
    }

    /// <summary>Number of selected PCRs.</summary>
    public int Count
    {
        get { int n = 0; foreach (var b in Select) n += System.Numerics.BitOperations.PopCount(b); return n; }
    }

    /// <summary>The selection as a bitmask (bit i = PCR i), for up to 32 PCRs.</summary>
    public uint Mask
    {
        get { uint m = 0; for (int i = 0; i < Select.Length; i++) m |= (uint)Select[i] << (8 * i); return m; }
    }
}

/// <summary>TPML_PCR_SELECTION: an ordered list of PCR bank selections.</summary>
public sealed class PcrSelection
{
    /// <summary>Largest number of banks accepted (HASH_COUNT in tpm2-tss).</summary>
    public const int MaxBanks = 16;

    private readonly List<PcrBankSelection> _banks;

    /// <summary>Creates a selection from bank selections, in order.</summary>
    public PcrSelection(IEnumerable<PcrBankSelection> banks)
    {
        _banks = [.. banks];
        if (_banks.Count > MaxBanks) throw new ArgumentException($"More than {MaxBanks} banks.", nameof(banks));
    }

    /// <summary>The bank selections in order.</summary>
    public IReadOnlyList<PcrBankSelection> Banks => _banks;

    /// <summary>Total number of selected PCRs across banks.</summary>
    public int Count { get { int n = 0; foreach (var b in _banks) n += b.Count; return n; } }

    /// <summary>The banks that select at least one PCR (for TPM_CAP_PCRS: the active banks).</summary>
    public IReadOnlyList<TpmAlgId> NonEmptyBanks => _banks.Where(b => b.Count > 0).Select(b => b.Hash).ToList();

    /// <summary>A one-bank selection of the given PCR indices (sizeofSelect 3 for PCRs below 24, as TPMs report).</summary>
    public static PcrSelection Create(TpmAlgId bank, params int[] pcrs) => new([Bank(bank, pcrs)]);

    /// <summary>A one-bank selection from a bitmask (bit i = PCR i).</summary>
    public static PcrSelection FromBitmask(TpmAlgId bank, uint mask)
    {
        var l = new List<int>();
        for (int i = 0; i < 32; i++) if ((mask & (1u << i)) != 0) l.Add(i);
        return Create(bank, [.. l]);
    }

    /// <summary>A bank selection of the given PCR indices (0..31).</summary>
    public static PcrBankSelection Bank(TpmAlgId bank, IEnumerable<int> pcrs)
    {
        var sel = new byte[4];
        int max = -1;
        foreach (int p in pcrs)
        {
            if (p is < 0 or > 31) throw new ArgumentOutOfRangeException(nameof(pcrs), p, "PCR index must be 0..31.");
            sel[p / 8] |= (byte)(1 << (p % 8));
            max = Math.Max(max, p);
        }
        int size = Math.Max(3, max / 8 + 1);
        return new PcrBankSelection(bank, sel[..size]);
    }

    /// <summary>Returns a new selection with another bank appended.</summary>
    public PcrSelection Add(TpmAlgId bank, params int[] pcrs) => new([.. _banks, Bank(bank, pcrs)]);

    /// <summary>
    /// Parses tpm2-tools selection syntax, for example <c>sha256:0,1,2+sha1:10</c> or <c>sha256:all</c>.
    /// </summary>
    public static PcrSelection FromString(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var banks = new List<PcrBankSelection>();
        foreach (var part in spec.Split('+', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int colon = part.IndexOf(':');
            if (colon < 0) throw new FormatException($"PCR selection '{part}' lacks 'bank:'.");
            var alg = part[..colon].ToLowerInvariant() switch
            {
                "sha1" => TpmAlgId.Sha1, "sha256" => TpmAlgId.Sha256, "sha384" => TpmAlgId.Sha384, "sha512" => TpmAlgId.Sha512,
                "sm3_256" => TpmAlgId.Sm3_256,
                var other => throw new FormatException($"Unknown PCR bank '{other}'."),
            };
            var list = part[(colon + 1)..];
            IEnumerable<int> idx = list.Trim().Equals("all", StringComparison.OrdinalIgnoreCase)
                ? Enumerable.Range(0, 24)
                : list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(s =>
                    int.TryParse(s, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out int v)
                        ? v : s.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
                            ? Convert.ToInt32(s[2..], 16) : throw new FormatException($"Bad PCR index '{s}'."));
            banks.Add(Bank(alg, idx));
        }
        if (banks.Count == 0) throw new FormatException("Empty PCR selection.");
        return new PcrSelection(banks);
    }

    /// <summary>Writes the TPML_PCR_SELECTION.</summary>
    public void Marshal(TpmWriter w)
    {
        w.U32((uint)_banks.Count);
        foreach (var b in _banks)
        {
            w.Alg(b.Hash).U8((byte)b.Select.Length).Bytes(b.Select);
        }
    }

    /// <summary>The marshaled TPML_PCR_SELECTION.</summary>
    public byte[] ToBytes()
    {
        var w = new TpmWriter(4 + _banks.Count * 7);
        Marshal(w);
        return w.ToArray();
    }

    /// <summary>Parses a TPML_PCR_SELECTION that fills <paramref name="data"/> exactly.</summary>
    public static PcrSelection Parse(ReadOnlySpan<byte> data)
    {
        var r = new TpmReader(data, "TPML_PCR_SELECTION");
        var s = Read(ref r);
        r.ExpectEnd();
        return s;
    }

    /// <summary>Reads a TPML_PCR_SELECTION from inside a larger structure.</summary>
    public static PcrSelection Read(ref TpmReader r)
    {
        uint count = r.U32();
        if (count > MaxBanks) throw new TpmFormatException($"TPML_PCR_SELECTION: count {count} exceeds {MaxBanks}.");
        var banks = new List<PcrBankSelection>((int)count);
        for (int i = 0; i < count; i++)
        {
            var hash = r.Alg();
            if (!TpmHash.IsHashAlg(hash)) throw new TpmFormatException($"TPML_PCR_SELECTION: bank 0x{(ushort)hash:X4} is not a hash algorithm.");
            int size = r.U8();
            if (size > PcrBankSelection.MaxSelectBytes) throw new TpmFormatException($"TPML_PCR_SELECTION: sizeofSelect {size} exceeds {PcrBankSelection.MaxSelectBytes}.");
            banks.Add(new PcrBankSelection(hash, r.Bytes(size).ToArray()));
        }
        return new PcrSelection(banks);
    }

    /// <summary>Selected (bank, PCR) pairs in digest order: banks in list order, PCRs ascending within a bank.</summary>
    public IEnumerable<(TpmAlgId Bank, int Index)> Enumerate()
    {
        foreach (var b in _banks)
            for (int i = 0; i < b.Select.Length * 8; i++)
                if (b.Contains(i)) yield return (b.Hash, i);
    }

    /// <summary>True when both select the same PCRs in the same banks (bank order and sizeofSelect padding ignored).</summary>
    public bool SelectsSame(PcrSelection other)
    {
        ArgumentNullException.ThrowIfNull(other);
        Span<ushort> ha = stackalloc ushort[MaxBanks]; Span<uint> ma = stackalloc uint[MaxBanks];
        Span<ushort> hb = stackalloc ushort[MaxBanks]; Span<uint> mb = stackalloc uint[MaxBanks];
        int na = Collect(this, ha, ma), nb = Collect(other, hb, mb);
        if (na != nb) return false;
        for (int i = 0; i < na; i++)
        {
            int j = hb[..nb].IndexOf(ha[i]);
            if (j < 0 || mb[j] != ma[i]) return false;
        }
        return true;

        static int Collect(PcrSelection s, Span<ushort> hashes, Span<uint> masks)
        {
            int n = 0;
            foreach (var b in s._banks)
            {
                uint m = b.Mask;
                if (m == 0) continue;
                int j = hashes[..n].IndexOf((ushort)b.Hash);
                if (j >= 0) masks[j] |= m;
                else { hashes[n] = (ushort)b.Hash; masks[n++] = m; }
            }
            return n;
        }
    }

    /// <summary>tpm2-tools syntax, for example <c>sha256:0,1,2+sha1:10</c>.</summary>
    public override string ToString()
    {
        var sb = new StringBuilder();
        foreach (var b in _banks)
        {
            if (sb.Length > 0) sb.Append('+');
            sb.Append(b.Hash.ToString().ToLowerInvariant()).Append(':').Append(string.Join(',', b.Indices));
        }
        return sb.ToString();
    }
}

/// <summary>PCR values by bank and index (0..31), as read from a TPM or an attestation evidence blob.</summary>
public sealed class PcrValues
{
    /// <summary>Number of PCR indices a bank can hold here.</summary>
    public const int MaxPcrs = 32;

    private readonly List<(TpmAlgId Bank, byte[]?[] Values)> _banks = new(2);

    private byte[]?[]? Find(TpmAlgId bank)
    {
        foreach (var (b, v) in _banks) if (b == bank) return v;
        return null;
    }

    /// <summary>Sets one PCR value.</summary>
    public PcrValues Set(TpmAlgId bank, int index, byte[] value)
    {
        ArgumentNullException.ThrowIfNull(value);
        if (index is < 0 or >= MaxPcrs) throw new ArgumentOutOfRangeException(nameof(index), index, "PCR index must be 0..31.");
        var arr = Find(bank);
        if (arr is null) { arr = new byte[MaxPcrs][]; _banks.Add((bank, arr)); }
        arr[index] = value;
        return this;
    }

    /// <summary>Gets one PCR value.</summary>
    public bool TryGet(TpmAlgId bank, int index, out byte[] value)
    {
        if (index is >= 0 and < MaxPcrs && Find(bank)?[index] is { } v) { value = v; return true; }
        value = [];
        return false;
    }

    /// <summary>The banks present.</summary>
    public IEnumerable<TpmAlgId> Banks => _banks.Select(b => b.Bank);

    /// <summary>The values of one bank by index, ascending (empty when absent).</summary>
    public IReadOnlyDictionary<int, byte[]> Bank(TpmAlgId bank)
    {
        var d = new SortedDictionary<int, byte[]>();
        var arr = Find(bank);
        if (arr is not null) for (int i = 0; i < arr.Length; i++) if (arr[i] is { } v) d[i] = v;
        return d;
    }

    /// <summary>
    /// The quote's pcrDigest: H_<paramref name="hashAlg"/>(value of every selected PCR in selection order), or null when a selected PCR has no value
    /// (<paramref name="missing"/> then names the first one).
    /// </summary>
    public byte[]? ComputeDigest(PcrSelection selection, TpmAlgId hashAlg, out string? missing)
    {
        ArgumentNullException.ThrowIfNull(selection);
        using var h = TpmHash.CreateIncremental(hashAlg);
        foreach (var (bank, index) in selection.Enumerate())
        {
            if (!TryGet(bank, index, out var v)) { missing = $"{bank.ToString().ToLowerInvariant()}:{index}"; return null; }
            h.AppendData(v);
        }
        missing = null;
        return h.GetHashAndReset();
    }
}
