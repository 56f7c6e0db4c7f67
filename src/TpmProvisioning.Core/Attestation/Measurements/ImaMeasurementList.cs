using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Attestation.Measurements;

/// <summary>The IMA templates this parser understands.</summary>
public enum ImaTemplate
{
    /// <summary><c>ima</c>: SHA-1 file digest (no algorithm prefix) and a path padded to 256 bytes in the template data.</summary>
    Ima,
    /// <summary><c>ima-ng</c>: <c>alg:digest</c> and path.</summary>
    ImaNg,
    /// <summary><c>ima-sig</c>: ima-ng plus a hex file signature (may be empty).</summary>
    ImaSig,
    /// <summary><c>ima-buf</c>: <c>alg:digest</c>, buffer name, hex buffer.</summary>
    ImaBuf,
}

/// <summary>One parsed line of an IMA ASCII measurement list.</summary>
public sealed class ImaEntry
{
    internal ImaEntry(int entryNumber, int pcr, byte[] templateHash, ImaTemplate template, string templateName,
        string digestAlgorithm, byte[] digest, string path, byte[]? signature, byte[]? buffer, byte[] templateData)
    {
        EntryNumber = entryNumber;
        Pcr = pcr;
        TemplateHash = templateHash;
        Template = template;
        TemplateName = templateName;
        DigestAlgorithm = digestAlgorithm;
        Digest = digest;
        Path = path;
        Signature = signature;
        Buffer = buffer;
        TemplateData = templateData;
        TemplateHashAlgorithm = templateHash.Length switch
        {
            20 => TpmAlgId.Sha1,
            32 => TpmAlgId.Sha256,
            48 => TpmAlgId.Sha384,
            _ => TpmAlgId.Sha512,
        };
        IsViolation = MeasurementHex.IsAll(templateHash, 0);
        ComputedTemplateHash = TpmHash.Hash(TemplateHashAlgorithm, templateData);
        TemplateHashMatches = IsViolation || ComputedTemplateHash.AsSpan().SequenceEqual(templateHash);
    }

    /// <summary>The entry's number in the whole measurement list (0 is the boot_aggregate).</summary>
    public int EntryNumber { get; }
    /// <summary>The PCR the entry was extended into (10 for IMA).</summary>
    public int Pcr { get; }
    /// <summary>The template hash as logged (SHA-1 on most kernels).</summary>
    public byte[] TemplateHash { get; }
    /// <summary>The algorithm of <see cref="TemplateHash"/>, inferred from its length.</summary>
    public TpmAlgId TemplateHashAlgorithm { get; }
    /// <summary>The hash of <see cref="TemplateData"/> in <see cref="TemplateHashAlgorithm"/>.</summary>
    public byte[] ComputedTemplateHash { get; }
    /// <summary>True when the logged template hash equals the recomputed one (always true for violation entries).</summary>
    public bool TemplateHashMatches { get; }
    /// <summary>True for a kernel violation entry (logged template hash all zeros; the PCR was extended with all ones).</summary>
    public bool IsViolation { get; }
    /// <summary>The template.</summary>
    public ImaTemplate Template { get; }
    /// <summary>The template name as logged.</summary>
    public string TemplateName { get; }
    /// <summary>The file (or buffer) digest algorithm, lower case as the kernel names it (<c>sha1</c>, <c>sha256</c>, ...).</summary>
    public string DigestAlgorithm { get; }
    /// <summary>The file (or buffer) digest.</summary>
    public byte[] Digest { get; }
    /// <summary>The file digest as lower-case hex.</summary>
    public string DigestHex => MeasurementHex.ToHex(Digest);
    /// <summary>The path (the buffer or keyring name for ima-buf).</summary>
    public string Path { get; }
    /// <summary>The ima-sig signature blob (null when absent).</summary>
    public byte[]? Signature { get; }
    /// <summary>The ima-buf buffer (null for other templates).</summary>
    public byte[]? Buffer { get; }
    /// <summary>The template data the kernel hashes (length-prefixed fields; the fixed-size layout for <c>ima</c>).</summary>
    public byte[] TemplateData { get; }

    /// <summary>
    /// The value extended into PCR 10 of the given bank: the bank's hash of the template data (as current kernels do for
    /// every bank), or all ones for a violation entry.
    /// </summary>
    public byte[] PcrExtendValue(TpmAlgId bank)
    {
        if (IsViolation)
        {
            var ones = new byte[TpmHash.DigestSize(bank)];
            Array.Fill(ones, (byte)0xFF);
            return ones;
        }
        return bank == TemplateHashAlgorithm ? ComputedTemplateHash : TpmHash.Hash(bank, TemplateData);
    }
}

/// <summary>A line that did not parse: its entry number and why.</summary>
public sealed record ImaParseError(int EntryNumber, string Message)
{
    /// <inheritdoc />
    public override string ToString() => $"entry {EntryNumber}: {Message}";
}

/// <summary>The result of parsing an IMA list: the entries that parsed and an error per line that did not.</summary>
public sealed class ImaParseResult
{
    internal ImaParseResult(IReadOnlyList<ImaEntry> entries, IReadOnlyList<ImaParseError> errors, int lineCount)
    {
        Entries = entries;
        Errors = errors;
        LineCount = lineCount;
    }

    /// <summary>The entries that parsed, in order.</summary>
    public IReadOnlyList<ImaEntry> Entries { get; }
    /// <summary>One error per line that did not parse.</summary>
    public IReadOnlyList<ImaParseError> Errors { get; }
    /// <summary>True when every line parsed.</summary>
    public bool Success => Errors.Count == 0;
    /// <summary>The number of lines (entries) in the text, parsed or not; the next entry number is first + this.</summary>
    public int LineCount { get; }
}

/// <summary>Parser for the IMA ASCII runtime measurement list (<c>/sys/kernel/security/ima/ascii_runtime_measurements</c>).</summary>
public static class ImaMeasurementList
{
    private const int LegacyNameFieldSize = 256; // IMA_EVENT_NAME_LEN_MAX + 1
    /// <summary>The longest line accepted (a generous bound: paths are at most 4096 bytes, ima-buf buffers are small).</summary>
    public const int MaxLineLength = 1 << 20;

    /// <summary>
    /// Parses the text of an IMA list whose first line is entry <paramref name="firstLineNumber"/>. Never throws for bad
    /// input: lines that do not parse are reported in <see cref="ImaParseResult.Errors"/> with their entry number.
    /// A trailing newline does not start an entry; an empty line in the middle counts as an entry and is an error.
    /// </summary>
    public static ImaParseResult Parse(string text, int firstLineNumber = 0)
    {
        ArgumentNullException.ThrowIfNull(text);
        var entries = new List<ImaEntry>();
        var errors = new List<ImaParseError>();
        int lineIndex = 0;
        int pos = 0;
        while (pos < text.Length)
        {
            int nl = text.IndexOf('\n', pos);
            int end = nl < 0 ? text.Length : nl;
            var line = text.AsSpan(pos, end - pos);
            if (line.Length > 0 && line[^1] == '\r') line = line[..^1];
            int number = firstLineNumber + lineIndex;
            if (TryParseLine(line, number, out var entry, out var error)) entries.Add(entry!);
            else errors.Add(new ImaParseError(number, error!));
            lineIndex++;
            pos = nl < 0 ? text.Length : nl + 1;
        }
        return new ImaParseResult(entries, errors, lineIndex);
    }

    private static bool TryParseLine(ReadOnlySpan<char> line, int number, out ImaEntry? entry, out string? error)
    {
        entry = null;
        error = null;
        if (line.Length == 0) { error = "empty line"; return false; }
        if (line.Length > MaxLineLength) { error = $"line longer than {MaxLineLength} characters"; return false; }

        if (!NextField(ref line, out var pcrText)) { error = "truncated: expected 'PCR template-hash template-name fields'"; return false; }
        if (!int.TryParse(pcrText, NumberStyles.None, CultureInfo.InvariantCulture, out int pcr) || pcr > 23)
        { error = $"PCR '{Clip(pcrText)}' is not a PCR number"; return false; }
        if (!NextField(ref line, out var hashText)) { error = "truncated after the PCR"; return false; }
        if (!MeasurementHex.TryParse(hashText, out var templateHash) || templateHash.Length is not (20 or 32 or 48 or 64))
        { error = $"template hash '{Clip(hashText)}' is not a hex SHA-1/SHA-256/SHA-384/SHA-512 digest"; return false; }
        if (!NextField(ref line, out var templateText)) { error = "truncated after the template hash"; return false; }
        var rest = line;

        switch (templateText)
        {
            case "ima":
                return ParseIma(number, pcr, templateHash, rest, out entry, out error);
            case "ima-ng":
            {
                int sp = rest.IndexOf(' ');
                if (sp < 0) { error = "ima-ng: expected 'alg:digest path'"; return false; }
                if (!TryParseDigest(rest[..sp], out var alg, out var digest, out error)) return false;
                var path = rest[(sp + 1)..].ToString();
                var data = NgTemplateData(alg, digest, path, null, includeThird: false);
                entry = new ImaEntry(number, pcr, templateHash, ImaTemplate.ImaNg, "ima-ng", alg, digest, path, null, null, data);
                return true;
            }
            case "ima-sig":
            {
                int sp = rest.IndexOf(' ');
                if (sp < 0) { error = "ima-sig: expected 'alg:digest path [signature]'"; return false; }
                if (!TryParseDigest(rest[..sp], out var alg, out var digest, out error)) return false;
                var afterDigest = rest[(sp + 1)..];
                int sp2 = afterDigest.IndexOf(' ');
                var pathSpan = sp2 < 0 ? afterDigest : afterDigest[..sp2];
                var sigSpan = sp2 < 0 ? ReadOnlySpan<char>.Empty : afterDigest[(sp2 + 1)..];
                if (!MeasurementHex.TryParse(sigSpan, out var sig)) { error = "ima-sig: signature is not hex"; return false; }
                var path = pathSpan.ToString();
                var data = NgTemplateData(alg, digest, path, sig, includeThird: true);
                entry = new ImaEntry(number, pcr, templateHash, ImaTemplate.ImaSig, "ima-sig", alg, digest, path,
                    sig.Length == 0 ? null : sig, null, data);
                return true;
            }
            case "ima-buf":
            {
                int sp = rest.IndexOf(' ');
                if (sp < 0) { error = "ima-buf: expected 'alg:digest name buffer'"; return false; }
                if (!TryParseDigest(rest[..sp], out var alg, out var digest, out error)) return false;
                var afterDigest = rest[(sp + 1)..];
                int sp2 = afterDigest.IndexOf(' ');
                if (sp2 < 0) { error = "ima-buf: expected 'alg:digest name buffer' (buffer missing)"; return false; }
                if (!MeasurementHex.TryParse(afterDigest[(sp2 + 1)..], out var buf)) { error = "ima-buf: buffer is not hex"; return false; }
                var name = afterDigest[..sp2].ToString();
                var data = NgTemplateData(alg, digest, name, buf, includeThird: true);
                entry = new ImaEntry(number, pcr, templateHash, ImaTemplate.ImaBuf, "ima-buf", alg, digest, name, null, buf, data);
                return true;
            }
            default:
                error = $"unknown template '{Clip(templateText)}' (expected ima, ima-ng, ima-sig or ima-buf)";
                return false;
        }
    }

    private static bool ParseIma(int number, int pcr, byte[] templateHash, ReadOnlySpan<char> rest, out ImaEntry? entry, out string? error)
    {
        entry = null;
        int sp = rest.IndexOf(' ');
        if (sp < 0) { error = "ima: expected 'digest path'"; return false; }
        if (!MeasurementHex.TryParse(rest[..sp], out var digest) || digest.Length != 20)
        { error = "ima: file digest is not a hex SHA-1 digest"; entry = null; return false; }
        var path = rest[(sp + 1)..].ToString();
        int nameLen = Encoding.UTF8.GetByteCount(path);
        if (nameLen >= LegacyNameFieldSize) { error = $"ima: path longer than {LegacyNameFieldSize - 1} bytes"; return false; }
        var data = new byte[digest.Length + LegacyNameFieldSize];
        digest.CopyTo(data, 0);
        Encoding.UTF8.GetBytes(path, data.AsSpan(digest.Length));
        entry = new ImaEntry(number, pcr, templateHash, ImaTemplate.Ima, "ima", "sha1", digest, path, null, null, data);
        error = null;
        return true;
    }

    private static bool TryParseDigest(ReadOnlySpan<char> text, out string alg, out byte[] digest, out string? error)
    {
        error = null;
        alg = "";
        int colon = text.IndexOf(':');
        var hex = colon < 0 ? text : text[(colon + 1)..];
        if (!MeasurementHex.TryParse(hex, out digest) || digest.Length == 0)
        { error = $"file digest '{Clip(text)}' is not hex"; return false; }
        if (colon < 0)
        {
            // Keylime's rule: without a prefix, the length tells SHA-1 or MD5.
            alg = digest.Length switch { 20 => "sha1", 16 => "md5", _ => "" };
            if (alg.Length == 0) { error = "file digest has no algorithm prefix and is neither SHA-1 nor MD5 sized"; return false; }
            return true;
        }
        var algSpan = text[..colon];
        if (algSpan.Length == 0 || algSpan.Length > 32) { error = "file digest algorithm name is empty or too long"; return false; }
        foreach (var c in algSpan)
            if (!(c is >= 'a' and <= 'z' or >= '0' and <= '9' or '-' or '_'))
            { error = $"file digest algorithm '{Clip(algSpan)}' is not a hash name"; return false; }
        alg = algSpan.ToString();
        var expected = ImaHashAlgorithms.DigestSize(alg);
        if (expected > 0 && expected != digest.Length)
        { error = $"{alg} digest has {digest.Length} bytes, expected {expected}"; return false; }
        return true;
    }

    /// <summary>d-ng | n-ng [| sig or buf]: each field a little-endian u32 length then the bytes.</summary>
    private static byte[] NgTemplateData(string alg, byte[] digest, string name, byte[]? third, bool includeThird)
    {
        int algLen = Encoding.ASCII.GetByteCount(alg);
        int nameLen = Encoding.UTF8.GetByteCount(name);
        int size = 4 + algLen + 2 + digest.Length + 4 + nameLen + 1 + (includeThird ? 4 + (third?.Length ?? 0) : 0);
        var data = new byte[size];
        var span = data.AsSpan();
        BinaryPrimitives.WriteUInt32LittleEndian(span, (uint)(algLen + 2 + digest.Length));
        int p = 4;
        p += Encoding.ASCII.GetBytes(alg, span[p..]);
        span[p++] = (byte)':';
        span[p++] = 0;
        digest.CopyTo(span[p..]);
        p += digest.Length;
        BinaryPrimitives.WriteUInt32LittleEndian(span[p..], (uint)(nameLen + 1));
        p += 4;
        p += Encoding.UTF8.GetBytes(name, span[p..]);
        span[p++] = 0;
        if (includeThird)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(span[p..], (uint)(third?.Length ?? 0));
            p += 4;
            third?.CopyTo(span[p..]);
        }
        return data;
    }

    private static bool NextField(ref ReadOnlySpan<char> line, out ReadOnlySpan<char> field)
    {
        int sp = line.IndexOf(' ');
        if (sp <= 0) { field = default; return false; }
        field = line[..sp];
        line = line[(sp + 1)..];
        return true;
    }

    internal static string Clip(ReadOnlySpan<char> s) => s.Length <= 80 ? s.ToString() : s[..80].ToString() + "...";
}

/// <summary>The kernel's names for IMA digest algorithms and the Linux hash_algo numbers used in IMA signatures.</summary>
public static class ImaHashAlgorithms
{
    /// <summary>Digest size of a kernel hash name; 0 when unknown (the parser then accepts any length).</summary>
    public static int DigestSize(string name) => name switch
    {
        "md5" => 16,
        "sha1" => 20,
        "sha224" => 28,
        "sha256" or "sm3" or "sm3-256" or "streebog256" => 32,
        "sha384" => 48,
        "sha512" or "streebog512" => 64,
        _ => 0,
    };

    /// <summary>The TPM identifier for a kernel hash name this engine can compute; null otherwise.</summary>
    public static TpmAlgId? ToTpm(string name) => name switch
    {
        "sha1" => TpmAlgId.Sha1,
        "sha256" => TpmAlgId.Sha256,
        "sha384" => TpmAlgId.Sha384,
        "sha512" => TpmAlgId.Sha512,
        _ => null,
    };

    /// <summary>The kernel hash name of a TPM hash algorithm.</summary>
    public static string FromTpm(TpmAlgId alg) => alg switch
    {
        TpmAlgId.Sha1 => "sha1",
        TpmAlgId.Sha256 => "sha256",
        TpmAlgId.Sha384 => "sha384",
        TpmAlgId.Sha512 => "sha512",
        TpmAlgId.Sm3_256 => "sm3",
        _ => throw new NotSupportedException($"0x{(ushort)alg:X4} is not a hash algorithm IMA uses."),
    };

    /// <summary>The kernel hash name for a Linux <c>hash_algo</c> number (include/uapi/linux/hash_info.h); null when unsupported.</summary>
    public static string? FromLinuxHashAlgo(byte algo) => algo switch
    {
        2 => "sha1",
        4 => "sha256",
        5 => "sha384",
        6 => "sha512",
        _ => null,
    };

    /// <summary>The Linux <c>hash_algo</c> number for a supported kernel hash name.</summary>
    public static byte ToLinuxHashAlgo(string name) => name switch
    {
        "sha1" => 2,
        "sha256" => 4,
        "sha384" => 5,
        "sha512" => 6,
        _ => throw new NotSupportedException($"No IMA signature hash_algo for '{name}'."),
    };
}
