using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace TpmProvisioning.Tests.Measurements;

/// <summary>
/// Builds IMA ASCII lists the way the kernel writes them, with template hashes computed here independently of the
/// engine (little-endian length-prefixed fields; the old "ima" template's path padded to 256 bytes), and replays them.
/// </summary>
internal sealed class ImaListBuilder
{
    private readonly List<(string Line, byte[] Data, bool Violation)> _entries = new();

    public IReadOnlyList<string> Lines => _entries.Select(e => e.Line).ToList();
    public int Count => _entries.Count;

    public static byte[] Field(ReadOnlySpan<byte> bytes)
    {
        var f = new byte[4 + bytes.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(f, (uint)bytes.Length);
        bytes.CopyTo(f.AsSpan(4));
        return f;
    }

    public static byte[] NgData(string alg, byte[] digest, string name, byte[]? third, bool withThird) =>
    [
        .. Field([.. Encoding.ASCII.GetBytes(alg + ":"), 0, .. digest]),
        .. Field([.. Encoding.UTF8.GetBytes(name), 0]),
        .. (withThird ? Field(third ?? []) : []),
    ];

    public ImaListBuilder Ng(string path, byte[] digest, string alg = "sha256")
    {
        var data = NgData(alg, digest, path, null, false);
        return Add($"ima-ng {alg}:{Hex(digest)} {path}", data);
    }

    public ImaListBuilder Sig(string path, byte[] digest, byte[]? sig, string alg = "sha256")
    {
        var data = NgData(alg, digest, path, sig, true);
        return Add($"ima-sig {alg}:{Hex(digest)} {path} {(sig is null ? "" : Hex(sig))}", data);
    }

    public ImaListBuilder Buf(string name, byte[] buffer, string alg = "sha256")
    {
        var digest = alg == "sha1" ? SHA1.HashData(buffer) : SHA256.HashData(buffer);
        var data = NgData(alg, digest, name, buffer, true);
        return Add($"ima-buf {alg}:{Hex(digest)} {name} {Hex(buffer)}", data);
    }

    public ImaListBuilder Legacy(string path, byte[] sha1)
    {
        var data = new byte[20 + 256];
        sha1.CopyTo(data, 0);
        Encoding.UTF8.GetBytes(path).CopyTo(data, 20);
        return Add($"ima {Hex(sha1)} {path}", data);
    }

    public ImaListBuilder Violation(string path)
    {
        var digest = new byte[32];
        var data = NgData("sha256", digest, path, null, false);
        _entries.Add(($"10 {new string('0', 40)} ima-ng sha256:{Hex(digest)} {path}", data, true));
        return this;
    }

    private ImaListBuilder Add(string rest, byte[] data)
    {
        _entries.Add(($"10 {Hex(SHA1.HashData(data))} {rest}", data, false));
        return this;
    }

    /// <summary>The list text from entry <paramref name="from"/> (to <paramref name="to"/> exclusive), newline-terminated.</summary>
    public string Text(int from = 0, int? to = null) =>
        string.Concat(_entries.Skip(from).Take((to ?? _entries.Count) - from).Select(e => e.Line + "\n"));

    /// <summary>PCR 10 after the first <paramref name="count"/> entries in a bank (per-bank template hash; all ones for violations).</summary>
    public byte[] Pcr(HashAlgorithmName bank, int? count = null)
    {
        int size = bank == HashAlgorithmName.SHA1 ? 20 : bank == HashAlgorithmName.SHA256 ? 32 : bank == HashAlgorithmName.SHA384 ? 48 : 64;
        var pcr = new byte[size];
        foreach (var e in _entries.Take(count ?? _entries.Count))
        {
            byte[] ext;
            if (e.Violation) { ext = new byte[size]; Array.Fill(ext, (byte)0xFF); }
            else ext = Hash(bank, e.Data);
            pcr = Hash(bank, [.. pcr, .. ext]);
        }
        return pcr;
    }

    public static byte[] Hash(HashAlgorithmName alg, byte[] data) =>
        alg == HashAlgorithmName.SHA1 ? SHA1.HashData(data)
        : alg == HashAlgorithmName.SHA256 ? SHA256.HashData(data)
        : alg == HashAlgorithmName.SHA384 ? SHA384.HashData(data) : SHA512.HashData(data);

    public static string Hex(byte[] b) => Convert.ToHexStringLower(b);
    public static byte[] Digest(string seed) => SHA256.HashData(Encoding.UTF8.GetBytes(seed));

    /// <summary>A realistic system list: boot_aggregate then n files.</summary>
    public static ImaListBuilder System(int files, byte[]? bootAggregate = null)
    {
        var b = new ImaListBuilder().Ng("boot_aggregate", bootAggregate ?? Digest("boot"));
        for (int i = 0; i < files; i++) b.Ng($"/usr/lib/pkg{i % 50}/file{i}.so", Digest("f" + i));
        return b;
    }
}

/// <summary>A minimal reader of tpm2_eventlog's YAML: per event the PCR, type and digests; and the final PCRs per bank.</summary>
internal sealed class EventLogYaml
{
    public sealed record Event(int Pcr, string Type, List<(string Alg, string Digest)> Digests);

    public List<Event> Events { get; } = new();
    public Dictionary<string, Dictionary<int, string>> Pcrs { get; } = new();

    public static EventLogYaml Parse(string yaml)
    {
        var y = new EventLogYaml();
        int pcr = -1;
        string? type = null;
        List<(string, string)>? digests = null;
        string? pendingAlg = null;
        string? bank = null;
        bool inPcrs = false;
        void Flush()
        {
            if (type is not null) y.Events.Add(new Event(pcr, type, digests ?? new()));
            type = null;
            digests = null;
        }
        foreach (var raw in yaml.Split('\n'))
        {
            var line = raw.TrimEnd();
            if (line == "pcrs:") { Flush(); inPcrs = true; continue; }
            if (inPcrs)
            {
                var t = line.Trim();
                if (t.EndsWith(':') && !t.Contains(' ')) { bank = t.TrimEnd(':'); y.Pcrs[bank] = new(); continue; }
                var parts = t.Split(':', 2);
                if (bank is not null && parts.Length == 2 && int.TryParse(parts[0].Trim(), out int n))
                    y.Pcrs[bank][n] = parts[1].Trim().Replace("0x", "").ToLowerInvariant();
                continue;
            }
            var s = line.TrimStart(' ', '-');
            if (s.StartsWith("PCRIndex:", StringComparison.Ordinal))
            {
                Flush();
                pcr = int.Parse(s["PCRIndex:".Length..].Trim(), CultureInfo.InvariantCulture);
                digests = new();
            }
            else if (s.StartsWith("EventType:", StringComparison.Ordinal) && digests is not null && type is null)
                type = s["EventType:".Length..].Trim();
            else if (s.StartsWith("AlgorithmId:", StringComparison.Ordinal))
                pendingAlg = s["AlgorithmId:".Length..].Trim();
            else if (s.StartsWith("Digest:", StringComparison.Ordinal) && pendingAlg is not null && digests is not null)
            {
                digests.Add((pendingAlg, s["Digest:".Length..].Trim().Trim('"').ToLowerInvariant()));
                pendingAlg = null;
            }
        }
        Flush();
        return y;
    }
}

/// <summary>The sample event logs in TestData/ beside this file (licences in TestData/README.md).</summary>
internal static class TestLogs
{
    public static string Folder { get; } = System.IO.Path.Combine(ThisDirectory(), "TestData");
    public static string PathOf(string name) => System.IO.Path.Combine(Folder, name);
    public static byte[] Read(string name) => File.ReadAllBytes(PathOf(name));
    public static IEnumerable<string> Names(string pattern) =>
        Directory.EnumerateFiles(Folder, pattern).Select(System.IO.Path.GetFileName).Where(n => !n!.EndsWith(".yaml") && !n.EndsWith(".md")).Order()!;
    private static string ThisDirectory([System.Runtime.CompilerServices.CallerFilePath] string path = "") => System.IO.Path.GetDirectoryName(path)!;
}
