using System.Buffers.Binary;
using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;

namespace TpmProvisioning.Station;

/// <summary>One partition of a raw disk image.</summary>
public sealed record ImagePartition
{
    public int Index { get; init; }
    /// <summary>MBR: the type byte as two hex digits (<c>0c</c>); GPT: the type GUID.</summary>
    public required string Type { get; init; }
    /// <summary>A readable name of the type (<c>FAT32 (LBA)</c>, <c>Linux filesystem</c>, ...), or <c>unknown</c>.</summary>
    public required string TypeName { get; init; }
    /// <summary>GPT: the partition's name; MBR: null.</summary>
    public string? Name { get; init; }
    /// <summary>GPT: the partition's unique GUID; MBR: null.</summary>
    public string? Guid { get; init; }
    public bool Bootable { get; init; }
    public long StartSector { get; init; }
    public long Sectors { get; init; }
    /// <summary>Offset in bytes from the start of the image.</summary>
    public long Offset { get; init; }
    public long Size { get; init; }
}

/// <summary>One file of an artefact folder or archive.</summary>
public sealed record ImageArtefact(string Path, long Size, string Sha256);

/// <summary>What <c>/analyze-image</c> finds.</summary>
public sealed record ImageAnalysis
{
    public required string Name { get; init; }
    /// <summary><c>traditional</c> (a raw disk image), <c>archive</c> or <c>artefacts</c> (a folder).</summary>
    public required string Type { get; init; }
    /// <summary><c>mbr</c>, <c>gpt</c> or <c>none</c> for a raw image; <c>tar</c>, <c>tar.gz</c>, <c>zip</c> or <c>folder</c> otherwise.</summary>
    public required string Format { get; init; }
    public long SizeBytes { get; init; }
    public int? SectorSize { get; init; }
    /// <summary>GPT: the disk GUID; MBR: the disk signature (hex).</summary>
    public string? DiskId { get; init; }
    public IReadOnlyList<ImagePartition> Partitions { get; init; } = [];
    public IReadOnlyList<ImageArtefact> Files { get; init; } = [];
    /// <summary>Entries not listed (links, special files, names that climb out of the tree) with why.</summary>
    public IReadOnlyList<string> Skipped { get; init; } = [];
}

/// <summary>
/// Reads what an image holds without mounting it: the MBR or GPT partition table of a raw disk image (types, sizes, offsets),
/// or the files of an artefact folder or a tar/zip archive with their sizes and SHA-256. Nothing is extracted to disk.
/// </summary>
public static class StationImageAnalyzer
{
    /// <summary>At most this many files are listed from a folder or an archive.</summary>
    public const int MaxFiles = 100_000;

    public static bool IsArchiveName(string name) =>
        name.EndsWith(".tar", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".tar.gz", StringComparison.OrdinalIgnoreCase)
        || name.EndsWith(".tgz", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".zip", StringComparison.OrdinalIgnoreCase);

    /// <summary>Analyses a file or folder on disk (the name reported is its file name).</summary>
    public static ImageAnalysis AnalyzePath(string path, CancellationToken ct = default)
    {
        if (Directory.Exists(path)) return AnalyzeFolder(Path.GetFileName(Path.TrimEndingDirectorySeparator(path)), path, ct);
        var name = Path.GetFileName(path);
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan);
        if (name.EndsWith(".zip", StringComparison.OrdinalIgnoreCase) || Magic(fs, "PK\u0003\u0004"))
            return AnalyzeZip(name, fs, ct);
        if (name.EndsWith(".tar.gz", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".tgz", StringComparison.OrdinalIgnoreCase) || MagicBytes(fs, [0x1f, 0x8b]))
        {
            using var gz = new GZipStream(fs, CompressionMode.Decompress, leaveOpen: true);
            return AnalyzeTar(name, "tar.gz", gz, fs.Length, ct);
        }
        if (name.EndsWith(".tar", StringComparison.OrdinalIgnoreCase) || IsTar(fs))
            return AnalyzeTar(name, "tar", fs, fs.Length, ct);
        return AnalyzeDisk(name, fs);
    }

    private static bool Magic(Stream s, string magic) => MagicBytes(s, Encoding.ASCII.GetBytes(magic));

    private static bool MagicBytes(Stream s, byte[] magic)
    {
        var buf = new byte[magic.Length];
        s.Position = 0;
        int n = s.ReadAtLeast(buf, buf.Length, throwOnEndOfStream: false);
        s.Position = 0;
        return n == magic.Length && buf.AsSpan().SequenceEqual(magic);
    }

    private static bool IsTar(Stream s)
    {
        var buf = new byte[512];
        s.Position = 0;
        int n = s.ReadAtLeast(buf, 512, throwOnEndOfStream: false);
        s.Position = 0;
        return n == 512 && Encoding.ASCII.GetString(buf, 257, 5) == "ustar";
    }

    // ------------------------------------------------------------------ partition tables

    public static ImageAnalysis AnalyzeDisk(string name, Stream s)
    {
        long length = s.Length;
        var mbr = new byte[512];
        s.Position = 0;
        if (s.ReadAtLeast(mbr, 512, throwOnEndOfStream: false) < 512 || mbr[510] != 0x55 || mbr[511] != 0xAA)
            return new ImageAnalysis { Name = name, Type = "traditional", Format = "none", SizeBytes = length };
        bool protective = Enumerable.Range(0, 4).Any(i => mbr[446 + i * 16 + 4] == 0xEE);
        if (protective)
            foreach (int sector in new[] { 512, 4096 })
                if (ReadGpt(name, s, sector, length) is { } gpt) return gpt;
        var parts = new List<ImagePartition>();
        for (int i = 0; i < 4; i++)
        {
            var e = mbr.AsSpan(446 + i * 16, 16);
            byte type = e[4];
            long start = BinaryPrimitives.ReadUInt32LittleEndian(e[8..]), count = BinaryPrimitives.ReadUInt32LittleEndian(e[12..]);
            if (type == 0 || count == 0) continue;
            parts.Add(new ImagePartition
            {
                Index = i + 1, Type = type.ToString("x2"), TypeName = MbrTypeName(type), Bootable = e[0] == 0x80,
                StartSector = start, Sectors = count, Offset = start * 512, Size = count * 512,
            });
        }
        // Logical partitions in an extended partition (a chain of EBRs).
        foreach (var ext in parts.Where(p => p.Type is "05" or "0f" or "85").ToList())
        {
            long ebr = ext.StartSector;
            for (int guard = 0, index = 5; guard < 128 && ebr > 0 && ebr * 512 + 512 <= length; guard++)
            {
                var buf = new byte[512];
                s.Position = ebr * 512;
                if (s.ReadAtLeast(buf, 512, throwOnEndOfStream: false) < 512 || buf[510] != 0x55 || buf[511] != 0xAA) break;
                var e = buf.AsSpan(446, 16);
                long start = BinaryPrimitives.ReadUInt32LittleEndian(e[8..]), count = BinaryPrimitives.ReadUInt32LittleEndian(e[12..]);
                if (e[4] != 0 && count > 0)
                    parts.Add(new ImagePartition
                    {
                        Index = index++, Type = e[4].ToString("x2"), TypeName = MbrTypeName(e[4]), Bootable = e[0] == 0x80,
                        StartSector = ebr + start, Sectors = count, Offset = (ebr + start) * 512, Size = count * 512,
                    });
                var link = buf.AsSpan(462, 16);
                long nextRel = BinaryPrimitives.ReadUInt32LittleEndian(link[8..]);
                if (link[4] == 0 || nextRel == 0) break;
                ebr = ext.StartSector + nextRel;
            }
        }
        return new ImageAnalysis
        {
            Name = name, Type = "traditional", Format = "mbr", SizeBytes = length, SectorSize = 512,
            DiskId = BinaryPrimitives.ReadUInt32LittleEndian(mbr.AsSpan(440)).ToString("x8"), Partitions = parts,
        };
    }

    private static ImageAnalysis? ReadGpt(string name, Stream s, int sector, long length)
    {
        if (length < sector * 2L) return null;
        var header = new byte[92];
        s.Position = sector;
        if (s.ReadAtLeast(header, 92, throwOnEndOfStream: false) < 92 || Encoding.ASCII.GetString(header, 0, 8) != "EFI PART") return null;
        long entriesLba = (long)BinaryPrimitives.ReadUInt64LittleEndian(header.AsSpan(72));
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(80));
        uint size = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(84));
        if (size < 128 || size > 4096 || count > 1024) return null;
        var diskGuid = new Guid(header.AsSpan(56, 16));
        var parts = new List<ImagePartition>();
        var entry = new byte[size];
        for (int i = 0; i < count; i++)
        {
            long pos = entriesLba * sector + (long)i * size;
            if (pos + size > length) break;
            s.Position = pos;
            if (s.ReadAtLeast(entry, (int)size, throwOnEndOfStream: false) < size) break;
            var type = new Guid(entry.AsSpan(0, 16));
            if (type == System.Guid.Empty) continue;
            long first = (long)BinaryPrimitives.ReadUInt64LittleEndian(entry.AsSpan(32)), last = (long)BinaryPrimitives.ReadUInt64LittleEndian(entry.AsSpan(40));
            ulong attrs = BinaryPrimitives.ReadUInt64LittleEndian(entry.AsSpan(48));
            string pname = Encoding.Unicode.GetString(entry, 56, 72).TrimEnd('\0');
            parts.Add(new ImagePartition
            {
                Index = i + 1, Type = type.ToString().ToUpperInvariant(), TypeName = GptTypeName(type), Name = pname, Guid = new Guid(entry.AsSpan(16, 16)).ToString().ToUpperInvariant(),
                Bootable = (attrs & 4) != 0, StartSector = first, Sectors = last - first + 1, Offset = first * sector, Size = (last - first + 1) * sector,
            });
        }
        return new ImageAnalysis
        {
            Name = name, Type = "traditional", Format = "gpt", SizeBytes = length, SectorSize = sector, DiskId = diskGuid.ToString().ToUpperInvariant(), Partitions = parts,
        };
    }

    private static string MbrTypeName(byte t) => t switch
    {
        0x01 => "FAT12", 0x04 => "FAT16 <32M", 0x05 => "Extended", 0x06 => "FAT16", 0x07 => "HPFS/NTFS/exFAT", 0x0b => "FAT32", 0x0c => "FAT32 (LBA)",
        0x0e => "FAT16 (LBA)", 0x0f => "Extended (LBA)", 0x82 => "Linux swap", 0x83 => "Linux", 0x85 => "Linux extended", 0x8e => "Linux LVM",
        0xa5 => "FreeBSD", 0xee => "GPT protective", 0xef => "EFI System", 0xfd => "Linux raid autodetect", _ => "unknown",
    };

    private static readonly Dictionary<Guid, string> s_gptTypes = new()
    {
        [new("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")] = "EFI System",
        [new("21686148-6449-6E6F-744E-656564454649")] = "BIOS boot",
        [new("0FC63DAF-8483-4772-8E79-3D69D8477DE4")] = "Linux filesystem",
        [new("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F")] = "Linux swap",
        [new("E6D6D379-F507-44C2-A23C-238F2A3DF928")] = "Linux LVM",
        [new("A19D880F-05FC-4D3B-A006-743F0F84911E")] = "Linux RAID",
        [new("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709")] = "Linux root (x86-64)",
        [new("B921B045-1DF0-41C3-AF44-4C6F280D3FAE")] = "Linux root (ARM64)",
        [new("BC13C2FF-59E6-4262-A352-B275FD6F7172")] = "Linux extended boot",
        [new("933AC7E1-2EB4-4F13-B844-0E14E2AEF915")] = "Linux home",
        [new("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")] = "Microsoft basic data",
        [new("E3C9E316-0B5C-4DB8-817D-F92DF00215AE")] = "Microsoft reserved",
    };

    private static string GptTypeName(Guid g) => s_gptTypes.TryGetValue(g, out var n) ? n : "unknown";

    // ------------------------------------------------------------------ artefacts

    /// <summary>The files of a folder (not following links) with sizes and SHA-256, paths relative with '/'.</summary>
    public static ImageAnalysis AnalyzeFolder(string name, string path, CancellationToken ct = default)
    {
        var files = new List<ImageArtefact>();
        var skipped = new List<string>();
        var root = new DirectoryInfo(path);
        var pending = new Stack<DirectoryInfo>();
        pending.Push(root);
        while (pending.Count > 0)
        {
            var dir = pending.Pop();
            foreach (var e in dir.EnumerateFileSystemInfos().OrderBy(e => e.Name, StringComparer.Ordinal))
            {
                ct.ThrowIfCancellationRequested();
                string rel = Path.GetRelativePath(root.FullName, e.FullName).Replace('\\', '/');
                if (e.LinkTarget is not null) { skipped.Add(rel + ": symbolic link"); continue; }
                if (e is DirectoryInfo d) { pending.Push(d); continue; }
                if (e is not FileInfo f || (f.Attributes & (FileAttributes.Device | FileAttributes.ReparsePoint)) != 0) { skipped.Add(rel + ": not a regular file"); continue; }
                if (files.Count >= MaxFiles) { skipped.Add(rel + ": over the file limit"); continue; }
                try
                {
                    using var fs = new FileStream(f.FullName, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan);
                    files.Add(new ImageArtefact(rel, fs.Length, HashStream(fs, ct)));
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { skipped.Add(rel + ": unreadable"); }
            }
        }
        return new ImageAnalysis
        {
            Name = name, Type = "artefacts", Format = "folder", SizeBytes = files.Sum(f => f.Size),
            Files = files.OrderBy(f => f.Path, StringComparer.Ordinal).ToList(), Skipped = skipped,
        };
    }

    public static ImageAnalysis AnalyzeTar(string name, string format, Stream s, long size, CancellationToken ct = default)
    {
        var files = new List<ImageArtefact>();
        var skipped = new List<string>();
        try
        {
            using var reader = new TarReader(s, leaveOpen: true);
            TarEntry? e;
            while ((e = reader.GetNextEntry(copyData: false)) is not null)
            {
                ct.ThrowIfCancellationRequested();
                string rel = e.Name;
                if (e.EntryType is TarEntryType.Directory) continue;
                if (e.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile or TarEntryType.ContiguousFile)) { skipped.Add(rel + ": " + e.EntryType); continue; }
                if (Normalize(rel) is not { } clean) { skipped.Add(rel + ": a path that leaves the archive's tree"); continue; }
                if (files.Count >= MaxFiles) { skipped.Add(rel + ": over the file limit"); continue; }
                files.Add(new ImageArtefact(clean, e.Length, e.DataStream is null ? Convert.ToHexStringLower(SHA256.HashData(ReadOnlySpan<byte>.Empty)) : HashStream(e.DataStream, ct)));
            }
        }
        catch (Exception ex) when (ex is InvalidDataException or FormatException or EndOfStreamException)
        {
            throw new StationException(422, "ARCHIVE_INVALID", "the archive cannot be read: " + ex.Message);
        }
        return new ImageAnalysis { Name = name, Type = "archive", Format = format, SizeBytes = size, Files = files.OrderBy(f => f.Path, StringComparer.Ordinal).ToList(), Skipped = skipped };
    }

    public static ImageAnalysis AnalyzeZip(string name, Stream s, CancellationToken ct = default)
    {
        var files = new List<ImageArtefact>();
        var skipped = new List<string>();
        try
        {
            using var zip = new ZipArchive(s, ZipArchiveMode.Read, leaveOpen: true);
            foreach (var e in zip.Entries)
            {
                ct.ThrowIfCancellationRequested();
                if (e.FullName.EndsWith('/')) continue;
                if (Normalize(e.FullName) is not { } clean) { skipped.Add(e.FullName + ": a path that leaves the archive's tree"); continue; }
                if (files.Count >= MaxFiles) { skipped.Add(e.FullName + ": over the file limit"); continue; }
                using var data = e.Open();
                files.Add(new ImageArtefact(clean, e.Length, HashStream(data, ct)));
            }
        }
        catch (InvalidDataException ex)
        {
            throw new StationException(422, "ARCHIVE_INVALID", "the archive cannot be read: " + ex.Message);
        }
        return new ImageAnalysis { Name = name, Type = "archive", Format = "zip", SizeBytes = s.Length, Files = files.OrderBy(f => f.Path, StringComparer.Ordinal).ToList(), Skipped = skipped };
    }

    /// <summary>An archive path as a relative path with '/', or null when it is absolute or climbs out with '..'.</summary>
    internal static string? Normalize(string path)
    {
        var p = path.Replace('\\', '/');
        while (p.StartsWith("./", StringComparison.Ordinal)) p = p[2..];
        if (p.Length == 0 || p[0] == '/' || p.Contains('\0')) return null;
        var parts = p.Split('/', StringSplitOptions.RemoveEmptyEntries).Where(x => x != ".").ToList();
        if (parts.Count == 0 || parts.Any(x => x == "..")) return null;
        return string.Join('/', parts);
    }

    private static string HashStream(Stream s, CancellationToken ct)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buf = new byte[1 << 20];
        int n;
        while ((n = s.Read(buf, 0, buf.Length)) > 0)
        {
            ct.ThrowIfCancellationRequested();
            hash.AppendData(buf, 0, n);
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>
    /// A Keylime runtime policy's digests from an analysed folder or archive: each file's path on the device (<paramref name="prefix"/>
    /// joined with its relative path, default <c>/</c>) to its SHA-256.
    /// </summary>
    public static Attestation.Measurements.RuntimePolicy ToRuntimePolicy(ImageAnalysis analysis, string? prefix = null, IEnumerable<string>? excludes = null)
    {
        ArgumentNullException.ThrowIfNull(analysis);
        if (analysis.Files.Count == 0 && analysis.Type == "traditional")
            throw new ArgumentException($"'{analysis.Name}' is a raw disk image ({analysis.Format}); a runtime policy is made from a folder or an archive of artefacts.");
        var policy = new Attestation.Measurements.RuntimePolicy { Generator = Attestation.Measurements.RuntimePolicy.GeneratorCompatibleAllowList };
        policy.AddExcludes(excludes);
        string root = string.IsNullOrEmpty(prefix) ? "/" : prefix.Replace('\\', '/');
        if (!root.EndsWith('/')) root += "/";
        if (!root.StartsWith('/')) root = "/" + root;
        foreach (var f in analysis.Files) policy.AddDigest(root + f.Path, f.Sha256);
        return policy;
    }
}
