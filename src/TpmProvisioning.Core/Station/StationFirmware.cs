using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Station;

/// <summary>One firmware release of a device family (<c>/options/firmware/list</c>, <c>Get-ProvisioningFirmware</c>).</summary>
public sealed record ProvisioningFirmware
{
    public required string Family { get; init; }
    /// <summary>The release's name: the file name before its version (e.g. <c>pieeprom</c>).</summary>
    public required string Name { get; init; }
    public required string Version { get; init; }
    /// <summary>The release date: the version when it is a date (YYYY-MM-DD), else the file's modification time (UTC).</summary>
    public DateTimeOffset Date { get; init; }
    public required string Sha256 { get; init; }
    public long Size { get; init; }
    public required string FileName { get; init; }
    /// <summary>True when a release-notes file sits beside it.</summary>
    public bool HasNotes { get; init; }
    /// <summary>True when this release is the family's selected firmware.</summary>
    public bool Selected { get; init; }
}

/// <summary>A release's notes (<c>/options/firmware/notes/{version}</c>).</summary>
public sealed record ProvisioningFirmwareNotes(string Family, string Version, string Notes);

/// <summary>
/// The firmware catalogue: a folder with one sub-folder per device family, each holding release files named
/// <c>&lt;name&gt;-&lt;version&gt;.&lt;ext&gt;</c> (version: a date <c>YYYY-MM-DD</c> or dotted numbers such as <c>1.2.3</c>),
/// each optionally with release notes in <c>&lt;name&gt;-&lt;version&gt;.md</c> or <c>.txt</c> beside it. Families and versions
/// are looked up only among the entries listed here, never joined into a path from request text, and symbolic links are
/// ignored, so no name reaches outside the folder. The selected release per family is kept in the store
/// (<c>firmware:&lt;family&gt;</c> beside the settings).
/// </summary>
public sealed partial class StationFirmware
{
    public const string SelectionPrefix = "firmware:";
    private const long MaxNotesBytes = 256 * 1024;
    private static readonly ConcurrentDictionary<(string Path, long Size, DateTime Mtime), string> s_hashes = new();

    public StationFirmware(string directory) => Directory = Path.GetFullPath(directory);

    /// <summary>The catalogue folder.</summary>
    public string Directory { get; }

    /// <summary><c>&lt;DataPath&gt;/station/firmware</c>.</summary>
    public static string DefaultDirectory(string dataPath) => Path.Combine(Path.GetFullPath(dataPath), "station", "firmware");

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    private static partial Regex FamilyRegex();
    [GeneratedRegex(@"^(?<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,63}?)-(?<version>\d{4}-\d{2}-\d{2}|\d{1,9}(\.\d{1,9}){0,3})\.(?<ext>[A-Za-z0-9]{1,8})$")]
    private static partial Regex ReleaseRegex();
    [GeneratedRegex(@"^[0-9][0-9.-]{0,31}$")]
    private static partial Regex VersionRegex();

    /// <summary>A family name as given, or a 400 <c>INVALID_FAMILY</c>.</summary>
    public static string CheckFamily(string family) =>
        FamilyRegex().IsMatch(family) && !family.Contains("..", StringComparison.Ordinal) ? family
            : throw new StationException(400, "INVALID_FAMILY", "a device family is 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-', not starting with '.' or '-'", $"Received: {Clip(family)}");

    /// <summary>A version as given, or a 400 <c>INVALID_VERSION</c>.</summary>
    public static string CheckVersion(string? version) =>
        version is { Length: > 0 } && VersionRegex().IsMatch(version) ? version
            : throw new StationException(400, "INVALID_VERSION", "a firmware version is a date (YYYY-MM-DD) or dotted numbers (1.2.3)", $"Received: {Clip(version ?? "")}");

    private static string Clip(string s) => s.Length <= 64 ? s : s[..64] + "…";

    private static bool IsLink(FileSystemInfo f) => f.LinkTarget is not null || f.Attributes.HasFlag(FileAttributes.ReparsePoint);

    /// <summary>The device families (sub-folders), sorted.</summary>
    public IReadOnlyList<string> Families()
    {
        var root = new DirectoryInfo(Directory);
        if (!root.Exists) return [];
        return root.EnumerateDirectories().Where(d => !IsLink(d) && FamilyRegex().IsMatch(d.Name)).Select(d => d.Name).Order(StringComparer.Ordinal).ToList();
    }

    /// <summary>Every release (of one family, when given), newest first within each family.</summary>
    public IReadOnlyList<ProvisioningFirmware> List(string? family = null, IReadOnlyDictionary<string, string>? selected = null)
    {
        if (family is not null) CheckFamily(family);
        var list = new List<ProvisioningFirmware>();
        foreach (var fam in Families())
        {
            if (family is not null && !string.Equals(fam, family, StringComparison.Ordinal)) continue;
            var dir = new DirectoryInfo(Path.Combine(Directory, fam));
            var files = dir.EnumerateFiles().Where(f => !IsLink(f)).ToList();
            var names = files.Select(f => f.Name).ToHashSet(StringComparer.Ordinal);
            foreach (var f in files)
            {
                var m = ReleaseRegex().Match(f.Name);
                if (!m.Success || m.Groups["ext"].Value is "md" or "txt") continue;
                string version = m.Groups["version"].Value, stem = f.Name[..^(m.Groups["ext"].Length + 1)];
                var date = DateTimeOffset.TryParseExact(version, "yyyy-MM-dd", CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var d) ? d : new DateTimeOffset(f.LastWriteTimeUtc, TimeSpan.Zero);
                list.Add(new ProvisioningFirmware
                {
                    Family = fam, Name = m.Groups["name"].Value, Version = version, Date = date, Size = f.Length, FileName = f.Name,
                    Sha256 = Hash(f), HasNotes = names.Contains(stem + ".md") || names.Contains(stem + ".txt"),
                    Selected = selected is not null && selected.TryGetValue(fam, out var sel) && sel == version,
                });
            }
        }
        return list.OrderBy(r => r.Family, StringComparer.Ordinal).ThenByDescending(r => r.Date).ThenByDescending(r => r.Version, StringComparer.Ordinal).ToList();
    }

    private static string Hash(FileInfo f) => s_hashes.GetOrAdd((f.FullName, f.Length, f.LastWriteTimeUtc), _ =>
    {
        using var s = new FileStream(f.FullName, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan);
        return Convert.ToHexStringLower(SHA256.HashData(s));
    });

    /// <summary>
    /// The release <paramref name="version"/> (of <paramref name="family"/>, or of the only family that has it); 404
    /// <c>FIRMWARE_NOT_FOUND</c> when none, 400 <c>AMBIGUOUS_VERSION</c> when several families have it and none was named.
    /// </summary>
    public ProvisioningFirmware Find(string? family, string? version, IReadOnlyDictionary<string, string>? selected = null)
    {
        CheckVersion(version);
        if (family is not null) CheckFamily(family);
        var matches = List(family, selected).Where(r => r.Version == version).ToList();
        if (matches.Count == 0)
            throw new StationException(404, "FIRMWARE_NOT_FOUND", family is null ? $"no firmware release has version {version}" : $"device family {family} has no firmware release {version}",
                "versions: " + string.Join(", ", List(family).Select(r => $"{r.Family}/{r.Version}").Take(50)));
        if (matches.Select(m => m.Family).Distinct().Count() > 1)
            throw new StationException(400, "AMBIGUOUS_VERSION", $"version {version} exists in several device families; name the family",
                "families: " + string.Join(", ", matches.Select(m => m.Family).Distinct()));
        return matches[0];
    }

    /// <summary>The release notes of a release (empty text when it has none).</summary>
    public ProvisioningFirmwareNotes Notes(string? family, string? version)
    {
        var r = Find(family, version);
        string stem = r.FileName[..r.FileName.LastIndexOf('.')];
        foreach (var ext in new[] { ".md", ".txt" })
        {
            var f = new FileInfo(Path.Combine(Directory, r.Family, stem + ext));
            if (!f.Exists || IsLink(f)) continue;
            if (f.Length > MaxNotesBytes) throw new StationException(500, "NOTES_TOO_LARGE", $"the release notes of {r.Family}/{r.Version} exceed {MaxNotesBytes} bytes");
            return new ProvisioningFirmwareNotes(r.Family, r.Version, File.ReadAllText(f.FullName));
        }
        return new ProvisioningFirmwareNotes(r.Family, r.Version, "");
    }

    /// <summary>The selected release per family, from the store.</summary>
    public static async Task<IReadOnlyDictionary<string, string>> SelectedAsync(IStore store, CancellationToken ct = default) =>
        (await store.GetSettingsAsync(ct).ConfigureAwait(false))
            .Where(s => s.Name.StartsWith(SelectionPrefix, StringComparison.Ordinal))
            .ToDictionary(s => s.Name[SelectionPrefix.Length..], s => s.Value, StringComparer.Ordinal);

    /// <summary>Selects release <paramref name="version"/> for its family (persisted); the release must exist.</summary>
    public async Task<ProvisioningFirmware> SelectAsync(IStore store, string? family, string? version, string actor, CancellationToken ct = default)
    {
        var r = Find(family, version);
        await store.SetSettingsAsync([new(SelectionPrefix + r.Family, r.Version)], actor, ct).ConfigureAwait(false);
        return r with { Selected = true };
    }
}

/// <summary>The station's work folder (<c>&lt;DataPath&gt;/station/work</c>): temporary files only, never images, the store or keys.</summary>
public static class StationWorkDirectory
{
    /// <summary><c>&lt;DataPath&gt;/station/work</c>.</summary>
    public static string Path(string dataPath) => System.IO.Path.Combine(System.IO.Path.GetFullPath(dataPath), "station", "work");

    /// <summary>What a clearing removed.</summary>
    public sealed record ClearResult(string Directory, int Files, int Folders, long Bytes);

    /// <summary>
    /// Deletes everything inside the work folder (not the folder itself). Symbolic links are removed as links, never followed, so
    /// nothing outside the folder is touched.
    /// </summary>
    public static ClearResult Clear(string dataPath)
    {
        var dir = new DirectoryInfo(Path(dataPath));
        int files = 0, folders = 0;
        long bytes = 0;
        if (!dir.Exists) return new ClearResult(dir.FullName, 0, 0, 0);
        void Empty(DirectoryInfo d)
        {
            foreach (var e in d.EnumerateFileSystemInfos())
            {
                bool link = e.LinkTarget is not null || e.Attributes.HasFlag(FileAttributes.ReparsePoint);
                if (e is DirectoryInfo sub && !link)
                {
                    Empty(sub);
                    sub.Delete(false);
                    folders++;
                }
                else
                {
                    if (!link && e is FileInfo fi) bytes += fi.Length;
                    e.Delete();
                    files++;
                }
            }
        }
        Empty(dir);
        return new ClearResult(dir.FullName, files, folders, bytes);
    }
}
