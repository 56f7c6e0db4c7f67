using System.Buffers.Binary;
using System.Text;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Attestation.Measurements;

/// <summary>The event log does not parse: <see cref="Exception.Message"/> names the event and byte offset.</summary>
public sealed class UefiEventLogFormatException(string message) : FormatException(message);

/// <summary>One event of a TCG PC Client event log.</summary>
public sealed class UefiEvent
{
    internal UefiEvent(int index, long offset, int pcr, uint eventType, IReadOnlyDictionary<TpmAlgId, byte[]> digests, byte[] data)
    {
        Index = index;
        Offset = offset;
        Pcr = pcr;
        EventType = eventType;
        Digests = digests;
        Data = data;
    }

    /// <summary>The event's position in the log (0 is the first event, the Spec ID event in crypto-agile logs), as tpm2_eventlog's EventNum.</summary>
    public int Index { get; }
    /// <summary>Byte offset of the event in the log.</summary>
    public long Offset { get; }
    /// <summary>The PCR index.</summary>
    public int Pcr { get; }
    /// <summary>The event type number.</summary>
    public uint EventType { get; }
    /// <summary>The event type's TCG name (EV_...), or a hex number when unknown.</summary>
    public string EventTypeName => UefiEventLog.EventTypeName(EventType);
    /// <summary>The digests, by bank.</summary>
    public IReadOnlyDictionary<TpmAlgId, byte[]> Digests { get; }
    /// <summary>The event data.</summary>
    public byte[] Data { get; }
    /// <summary>The digest for one bank, or null.</summary>
    public byte[]? Digest(TpmAlgId bank) => Digests.TryGetValue(bank, out var d) ? d : null;
    /// <summary>True for EV_NO_ACTION (logged, never extended).</summary>
    public bool IsNoAction => EventType == UefiEventLog.EvNoAction;
}

/// <summary>
/// A TCG PC Client Platform Firmware Profile event log (<c>/sys/kernel/security/tpm0/binary_bios_measurements</c>): the
/// crypto-agile format (a SHA-1-format "Spec ID Event03" header event with the digest-size table, then TCG_PCR_EVENT2
/// records) or the old SHA-1-only format. Parsing is bounded: sizes are checked against what remains and against limits.
/// </summary>
public sealed class UefiEventLog
{
    /// <summary>The largest log accepted.</summary>
    public const int MaxLogSize = 64 << 20;
    /// <summary>The most algorithms a Spec ID event may list.</summary>
    public const int MaxAlgorithms = 16;
    /// <summary>EV_NO_ACTION.</summary>
    public const uint EvNoAction = 0x3;
    private const uint EvEfiVariableDriverConfig = 0x80000001;
    private static readonly byte[] SpecIdSignature = "Spec ID Event03\0"u8.ToArray();
    private static readonly byte[] StartupLocalitySignature = "StartupLocality\0"u8.ToArray();

    private UefiEventLog(bool cryptoAgile, IReadOnlyDictionary<TpmAlgId, int> algorithms, IReadOnlyList<UefiEvent> events, int startupLocality)
    {
        IsCryptoAgile = cryptoAgile;
        Algorithms = algorithms;
        Events = events;
        StartupLocality = startupLocality;
    }

    /// <summary>True for the crypto-agile format.</summary>
    public bool IsCryptoAgile { get; }
    /// <summary>The banks in the log and their digest sizes (SHA-1 only for the old format).</summary>
    public IReadOnlyDictionary<TpmAlgId, int> Algorithms { get; }
    /// <summary>All events, the header event included.</summary>
    public IReadOnlyList<UefiEvent> Events { get; }
    /// <summary>The events that extend a PCR: all but the crypto-agile header event and EV_NO_ACTION events.</summary>
    public IEnumerable<UefiEvent> Extending => Events.Where(e => !e.IsNoAction && !(IsCryptoAgile && e.Index == 0));

    /// <summary>The locality of TPM2_Startup from a StartupLocality event (0 when none); PCR 0 starts at this value.</summary>
    public int StartupLocality { get; }

    /// <summary>Parses a log; throws <see cref="UefiEventLogFormatException"/> (a <see cref="FormatException"/>) when it does not parse.</summary>
    public static UefiEventLog Parse(byte[] log)
    {
        ArgumentNullException.ThrowIfNull(log);
        if (log.Length > MaxLogSize) throw new UefiEventLogFormatException($"Event log of {log.Length} bytes is larger than {MaxLogSize}.");
        var r = new Reader(log);
        var events = new List<UefiEvent>();

        // The first event is always in the SHA-1 format (TCG_PCClientPCREvent).
        var first = ReadSha1Event(ref r, 0);
        var algorithms = new Dictionary<TpmAlgId, int>();
        bool agile = first.EventType == EvNoAction && first.Pcr == 0 && first.Data.Length >= SpecIdSignature.Length
            && first.Data.AsSpan(0, SpecIdSignature.Length).SequenceEqual(SpecIdSignature);
        events.Add(first);
        if (agile) ReadSpecId(first.Data, algorithms);
        else algorithms[TpmAlgId.Sha1] = 20;

        int locality = 0;
        while (r.Remaining > 0)
        {
            if (r.RestIsPadding()) break;
            var ev = agile ? ReadAgileEvent(ref r, events.Count, algorithms) : ReadSha1Event(ref r, events.Count);
            if (ev.EventType == EvNoAction && ev.Pcr == 0 && ev.Data.Length >= 17
                && ev.Data.AsSpan(0, 16).SequenceEqual(StartupLocalitySignature))
                locality = ev.Data[16];
            events.Add(ev);
        }
        return new UefiEventLog(agile, algorithms, events, locality);
    }

    /// <summary>Parses a log; false with the reason instead of an exception.</summary>
    public static bool TryParse(byte[] log, out UefiEventLog? result, out string? error)
    {
        try
        {
            result = Parse(log);
            error = null;
            return true;
        }
        catch (FormatException e)
        {
            result = null;
            error = e.Message;
            return false;
        }
    }

    private static void ReadSpecId(byte[] data, Dictionary<TpmAlgId, int> algorithms)
    {
        var r = new Reader(data);
        r.Skip(16, "Spec ID signature", 0);
        r.Skip(4 + 4, "Spec ID platform class and version", 0); // platformClass, minor, major, errata, uintnSize
        uint n = r.U32("Spec ID numberOfAlgorithms", 0);
        if (n == 0 || n > MaxAlgorithms) throw new UefiEventLogFormatException($"Event 0 (Spec ID): numberOfAlgorithms {n} is not 1..{MaxAlgorithms}.");
        for (int i = 0; i < n; i++)
        {
            var alg = (TpmAlgId)r.U16("Spec ID algorithmId", 0);
            int size = r.U16("Spec ID digestSize", 0);
            if (size == 0 || size > 64) throw new UefiEventLogFormatException($"Event 0 (Spec ID): digest size {size} for algorithm 0x{(ushort)alg:X4} is not 1..64.");
            if (TpmHash.IsHashAlg(alg) && TpmHash.DigestSize(alg) != size)
                throw new UefiEventLogFormatException($"Event 0 (Spec ID): digest size {size} for {alg} should be {TpmHash.DigestSize(alg)}.");
            if (!algorithms.TryAdd(alg, size)) throw new UefiEventLogFormatException($"Event 0 (Spec ID): algorithm 0x{(ushort)alg:X4} listed twice.");
        }
        int vendor = r.U8("Spec ID vendorInfoSize", 0);
        r.Skip(vendor, "Spec ID vendorInfo", 0);
    }

    private static UefiEvent ReadSha1Event(ref Reader r, int index)
    {
        long offset = r.Position;
        int pcr = ReadPcr(ref r, index);
        uint type = r.U32("event type", index);
        var digest = r.Bytes(20, "SHA-1 digest", index);
        var data = ReadData(ref r, index);
        return new UefiEvent(index, offset, pcr, type, new Dictionary<TpmAlgId, byte[]> { [TpmAlgId.Sha1] = digest }, data);
    }

    private static UefiEvent ReadAgileEvent(ref Reader r, int index, Dictionary<TpmAlgId, int> algorithms)
    {
        long offset = r.Position;
        int pcr = ReadPcr(ref r, index);
        uint type = r.U32("event type", index);
        uint count = r.U32("digest count", index);
        if (count == 0 || count > algorithms.Count)
            throw new UefiEventLogFormatException($"Event {index} at offset {offset}: digest count {count} is not 1..{algorithms.Count} (the Spec ID event's algorithms).");
        var digests = new Dictionary<TpmAlgId, byte[]>((int)count);
        for (int i = 0; i < count; i++)
        {
            var alg = (TpmAlgId)r.U16("digest algorithm", index);
            if (!algorithms.TryGetValue(alg, out int size))
                throw new UefiEventLogFormatException($"Event {index} at offset {offset}: digest algorithm 0x{(ushort)alg:X4} is not in the Spec ID event's table.");
            var d = r.Bytes(size, "digest", index);
            if (!digests.TryAdd(alg, d)) throw new UefiEventLogFormatException($"Event {index} at offset {offset}: algorithm 0x{(ushort)alg:X4} digested twice.");
        }
        var data = ReadData(ref r, index);
        return new UefiEvent(index, offset, pcr, type, digests, data);
    }

    private static int ReadPcr(ref Reader r, int index)
    {
        long offset = r.Position;
        uint pcr = r.U32("PCR index", index);
        if (pcr > 23) throw new UefiEventLogFormatException($"Event {index} at offset {offset}: PCR index {pcr} is not 0..23.");
        return (int)pcr;
    }

    private static byte[] ReadData(ref Reader r, int index)
    {
        long offset = r.Position;
        uint size = r.U32("event size", index);
        if (size > r.Remaining) throw new UefiEventLogFormatException($"Event {index} at offset {offset}: event size {size} is larger than the {r.Remaining} bytes left.");
        return r.Bytes((int)size, "event data", index);
    }

    /// <summary>
    /// Replays the log into PCRs 0-23 of one bank (EV_NO_ACTION skipped; PCR 0 starts at the StartupLocality; PCRs 17-22
    /// start at all ones as after a TPM reset). Throws <see cref="ArgumentException"/> when the log has no such bank or an
    /// event lacks its digest.
    /// </summary>
    public IReadOnlyList<byte[]> Replay(TpmAlgId bank)
    {
        if (!TpmHash.IsSupported(bank) || !Algorithms.ContainsKey(bank))
            throw new ArgumentException($"The event log has no {bank} bank (it has {string.Join(", ", Algorithms.Keys)}).", nameof(bank));
        int size = TpmHash.DigestSize(bank);
        var pcrs = new byte[24][];
        for (int i = 0; i < 24; i++)
        {
            pcrs[i] = new byte[size];
            if (i is >= 17 and <= 22) Array.Fill(pcrs[i], (byte)0xFF);
        }
        pcrs[0][size - 1] = (byte)StartupLocality;
        var buffer = new byte[2 * size];
        foreach (var e in Extending)
        {
            var d = e.Digest(bank) ?? throw new ArgumentException($"Event {e.Index} has no {bank} digest.", nameof(bank));
            pcrs[e.Pcr].CopyTo(buffer, 0);
            d.CopyTo(buffer, size);
            pcrs[e.Pcr] = TpmHash.Hash(bank, buffer);
        }
        return pcrs;
    }

    /// <summary>The TCG name of an event type.</summary>
    public static string EventTypeName(uint type) => type switch
    {
        0x0 => "EV_PREBOOT_CERT",
        0x1 => "EV_POST_CODE",
        0x2 => "EV_UNUSED",
        0x3 => "EV_NO_ACTION",
        0x4 => "EV_SEPARATOR",
        0x5 => "EV_ACTION",
        0x6 => "EV_EVENT_TAG",
        0x7 => "EV_S_CRTM_CONTENTS",
        0x8 => "EV_S_CRTM_VERSION",
        0x9 => "EV_CPU_MICROCODE",
        0xA => "EV_PLATFORM_CONFIG_FLAGS",
        0xB => "EV_TABLE_OF_DEVICES",
        0xC => "EV_COMPACT_HASH",
        0xD => "EV_IPL",
        0xE => "EV_IPL_PARTITION_DATA",
        0xF => "EV_NONHOST_CODE",
        0x10 => "EV_NONHOST_CONFIG",
        0x11 => "EV_NONHOST_INFO",
        0x12 => "EV_OMIT_BOOT_DEVICE_EVENTS",
        0x80000000 => "EV_EFI_EVENT_BASE",
        0x80000001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        0x80000002 => "EV_EFI_VARIABLE_BOOT",
        0x80000003 => "EV_EFI_BOOT_SERVICES_APPLICATION",
        0x80000004 => "EV_EFI_BOOT_SERVICES_DRIVER",
        0x80000005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        0x80000006 => "EV_EFI_GPT_EVENT",
        0x80000007 => "EV_EFI_ACTION",
        0x80000008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        0x80000009 => "EV_EFI_HANDOFF_TABLES",
        0x8000000A => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        0x8000000B => "EV_EFI_HANDOFF_TABLES2",
        0x8000000C => "EV_EFI_VARIABLE_BOOT2",
        0x80000010 => "EV_EFI_HCRTM_EVENT",
        0x800000E0 => "EV_EFI_VARIABLE_AUTHORITY",
        0x800000E1 => "EV_EFI_SPDM_FIRMWARE_BLOB",
        0x800000E2 => "EV_EFI_SPDM_FIRMWARE_CONFIG",
        _ => $"0x{type:X8}",
    };

    /// <summary>The event type number for a TCG name (EV_...) or a number (decimal or 0x hex); null when unknown.</summary>
    public static uint? EventTypeFromName(string name)
    {
        if (name.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            && uint.TryParse(name.AsSpan(2), System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture, out var hex)) return hex;
        if (uint.TryParse(name, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var dec)) return dec;
        foreach (uint t in KnownTypes) if (EventTypeName(t) == name) return t;
        return null;
    }

    private static readonly uint[] KnownTypes =
        [.. Enumerable.Range(0, 0x13).Select(i => (uint)i), .. Enumerable.Range(0, 0xD).Select(i => 0x80000000u + (uint)i), 0x80000010, 0x800000E0, 0x800000E1, 0x800000E2];

    /// <summary>
    /// The EFI variables measured as EV_EFI_VARIABLE_DRIVER_CONFIG into PCR 7 (SecureBoot, PK, KEK, db, dbx, ...), the last
    /// measurement of each name winning, with each event's digest in <paramref name="bank"/> checked against its data.
    /// </summary>
    internal IReadOnlyList<(UefiEvent Event, UefiVariable Variable, bool DigestMatchesData)> SecureBootVariables(TpmAlgId bank)
    {
        var list = new List<(UefiEvent, UefiVariable, bool)>();
        foreach (var e in Events)
        {
            if (e.EventType != EvEfiVariableDriverConfig || e.Pcr != 7) continue;
            if (!UefiVariable.TryParse(e.Data, out var v)) continue;
            var d = e.Digest(bank);
            bool matches = d is not null && TpmHash.Hash(bank, e.Data).AsSpan().SequenceEqual(d);
            list.Add((e, v!, matches));
        }
        return list;
    }

    private ref struct Reader(byte[] data)
    {
        private readonly byte[] _data = data;
        private int _pos;
        public readonly int Position => _pos;
        public readonly int Remaining => _data.Length - _pos;

        public readonly bool RestIsPadding()
        {
            var rest = _data.AsSpan(_pos);
            return MeasurementHex.IsAll(rest, 0) || MeasurementHex.IsAll(rest, 0xFF);
        }

        private readonly void Need(int n, string what, int index)
        {
            if (n < 0 || n > Remaining)
                throw new UefiEventLogFormatException($"Event {index} at offset {_pos}: truncated reading {what} ({n} bytes needed, {Remaining} left).");
        }

        public void Skip(int n, string what, int index) { Need(n, what, index); _pos += n; }
        public byte U8(string what, int index) { Need(1, what, index); return _data[_pos++]; }
        public ushort U16(string what, int index) { Need(2, what, index); var v = BinaryPrimitives.ReadUInt16LittleEndian(_data.AsSpan(_pos)); _pos += 2; return v; }
        public uint U32(string what, int index) { Need(4, what, index); var v = BinaryPrimitives.ReadUInt32LittleEndian(_data.AsSpan(_pos)); _pos += 4; return v; }
        public byte[] Bytes(int n, string what, int index) { Need(n, what, index); var v = _data.AsSpan(_pos, n).ToArray(); _pos += n; return v; }
    }
}

/// <summary>A measured EFI variable (UEFI_VARIABLE_DATA) and, for signature databases, its EFI_SIGNATURE_LIST entries.</summary>
public sealed class UefiVariable
{
    /// <summary>EFI_GLOBAL_VARIABLE (SecureBoot, PK, KEK).</summary>
    public static readonly Guid GlobalVariable = new("8be4df61-93ca-11d2-aa0d-00e098032b8c");
    /// <summary>EFI_IMAGE_SECURITY_DATABASE_GUID (db, dbx).</summary>
    public static readonly Guid ImageSecurityDatabase = new("d719b2cb-3d3a-4596-a3bc-dad00e67656f");
    /// <summary>EFI_CERT_X509_GUID.</summary>
    public static readonly Guid CertX509 = new("a5c059a1-94e4-4aa7-87b5-ab155c2bf072");
    /// <summary>EFI_CERT_SHA256_GUID.</summary>
    public static readonly Guid CertSha256 = new("c1c41626-504c-4092-aca9-41f936934328");

    private UefiVariable(Guid vendor, string name, byte[] data)
    {
        VendorGuid = vendor;
        Name = name;
        Data = data;
    }

    /// <summary>The vendor GUID.</summary>
    public Guid VendorGuid { get; }
    /// <summary>The variable name.</summary>
    public string Name { get; }
    /// <summary>The variable's value.</summary>
    public byte[] Data { get; }

    /// <summary>Parses UEFI_VARIABLE_DATA; false when the layout does not fit.</summary>
    public static bool TryParse(ReadOnlySpan<byte> data, out UefiVariable? variable)
    {
        variable = null;
        if (data.Length < 32) return false;
        var guid = new Guid(data[..16]);
        ulong nameLen = BinaryPrimitives.ReadUInt64LittleEndian(data[16..]);
        ulong dataLen = BinaryPrimitives.ReadUInt64LittleEndian(data[24..]);
        ulong available = (ulong)(data.Length - 32);
        if (nameLen > available / 2 || dataLen > available - nameLen * 2) return false;
        var name = Encoding.Unicode.GetString(data.Slice(32, (int)nameLen * 2)).TrimEnd('\0');
        var value = data.Slice(32 + (int)nameLen * 2, (int)dataLen).ToArray();
        variable = new UefiVariable(guid, name, value);
        return true;
    }

    /// <summary>
    /// The entries of an EFI_SIGNATURE_LIST sequence (PK, KEK, db, dbx) as (type, owner, data); false when malformed.
    /// </summary>
    public bool TryGetSignatures(out List<(Guid Type, Guid Owner, byte[] Data)> entries)
    {
        entries = new();
        var d = Data.AsSpan();
        while (d.Length > 0)
        {
            if (d.Length < 28) return false;
            var type = new Guid(d[..16]);
            uint listSize = BinaryPrimitives.ReadUInt32LittleEndian(d[16..]);
            uint headerSize = BinaryPrimitives.ReadUInt32LittleEndian(d[20..]);
            uint sigSize = BinaryPrimitives.ReadUInt32LittleEndian(d[24..]);
            if (listSize < 28 || listSize > d.Length || headerSize > listSize - 28 || sigSize < 16) return false;
            var body = d.Slice(28 + (int)headerSize, (int)(listSize - 28 - headerSize));
            if (body.Length % sigSize != 0) return false;
            for (int off = 0; off < body.Length; off += (int)sigSize)
            {
                var sig = body.Slice(off, (int)sigSize);
                entries.Add((type, new Guid(sig[..16]), sig[16..].ToArray()));
            }
            d = d[(int)listSize..];
        }
        return true;
    }

    /// <summary>
    /// The identity of a signature-database entry as the refstate names it: SHA-256 of the certificate for X.509 entries,
    /// the hash itself for SHA-256 entries, SHA-256 of the data otherwise (lower-case hex).
    /// </summary>
    public static string EntryId(Guid type, byte[] data) =>
        type == CertSha256 && data.Length == 32 ? MeasurementHex.ToHex(data) : MeasurementHex.ToHex(System.Security.Cryptography.SHA256.HashData(data));
}
