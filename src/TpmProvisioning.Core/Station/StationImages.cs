using System.Globalization;

namespace TpmProvisioning.Station;

/// <summary>An image of the station's images folder, as listed.</summary>
public sealed record StationImage
{
    public required string Name { get; init; }
    /// <summary><c>traditional</c> (a raw disk image or any single file), <c>archive</c> (tar or zip of artefacts) or <c>artefacts</c> (a folder).</summary>
    public required string Type { get; init; }
    /// <summary>Bytes (a folder: the sum of its files).</summary>
    public long Size { get; init; }
    public DateTimeOffset Modified { get; init; }
    /// <summary>The SHA-256 (lower-case hex) when known for the file as it is now; null otherwise (folders have none).</summary>
    public string? Sha256 { get; init; }
    /// <summary><c>complete</c>, <c>pending</c>, <c>none</c> (never hashed or changed since), <c>error</c>, or <c>n/a</c> for a folder.</summary>
    public string HashStatus { get; init; } = "none";
    /// <summary>While pending: 0 to 1.</summary>
    public double? HashProgress { get; init; }
    /// <summary>The device families the image is assigned to (as <c>vendor/name/version</c> patterns), empty when none.</summary>
    public IReadOnlyList<string> AssignedTo { get; init; } = [];
}

/// <summary>What <c>/get-image-metadata</c> reports.</summary>
public sealed record StationImageMetadata
{
    public required string Name { get; init; }
    public required string Type { get; init; }
    public long SizeBytes { get; init; }
    public DateTimeOffset LastModified { get; init; }
}

/// <summary>The outcome of one upload.</summary>
public sealed record StationImageUpload
{
    /// <summary>The name the image is stored under.</summary>
    public required string Name { get; init; }
    /// <summary>The name asked for (differs from <see cref="Name"/> when it was taken).</summary>
    public required string OriginalName { get; init; }
    public bool Renamed { get; init; }
    public long Size { get; init; }
}

/// <summary>
/// The station's images folder (spec 003, Images). Every name a caller gives is a plain file name in this folder: no separator,
/// no <c>..</c>, no leading dot, no control character, at most <see cref="MaxNameLength"/> characters; a symbolic link whose
/// target is outside the folder is refused as well. Uploads stream into a hidden temporary file (<c>.upload-*.part</c>) that is
/// renamed into place only when complete, so an interrupted upload is never listed; leftovers are removed by
/// <see cref="CleanLeftovers"/> when a server starts. Hashes are computed by <see cref="StationImageHasher"/>.
/// </summary>
public sealed class StationImages
{
    public const int MaxNameLength = 200;
    /// <summary>Default upload limit: 64 GiB.</summary>
    public const long DefaultMaxBytes = 64L << 30;
    internal const string TempPrefix = ".upload-";
    internal const string TempSuffix = ".part";
    private readonly string _realDirectory;

    public StationImages(string directory, long maxBytes = DefaultMaxBytes)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        Directory = Path.GetFullPath(directory);
        MaxBytes = maxBytes > 0 ? maxBytes : DefaultMaxBytes;
        System.IO.Directory.CreateDirectory(Directory);
        _realDirectory = RealPath(Directory);
        Hasher = new StationImageHasher(this);
    }

    /// <summary>The images folder (absolute).</summary>
    public string Directory { get; }
    /// <summary>Largest upload accepted (413 above).</summary>
    public long MaxBytes { get; }
    public StationImageHasher Hasher { get; }

    /// <summary>Why <paramref name="name"/> is not a plain image name, or null when it is one.</summary>
    public static string? NameProblem(string? name)
    {
        if (string.IsNullOrEmpty(name)) return "an image name is required";
        if (name.Length > MaxNameLength) return $"an image name is at most {MaxNameLength} characters";
        if (name.Contains('\0')) return "an image name must not contain NUL";
        if (name.Any(char.IsControl)) return "an image name must not contain control characters";
        if (name.Contains('/') || name.Contains('\\')) return "an image name is a plain file name, without '/' or '\\'";
        if (name == "." || name == ".." || name.Contains("..", StringComparison.Ordinal)) return "an image name must not contain '..'";
        if (name[0] == '.') return "an image name must not start with '.'";
        if (name.Trim().Length != name.Length) return "an image name must not start or end with a space";
        if (Path.IsPathRooted(name) || name.Contains(':')) return "an image name must not be a path";
        // A name that still decodes to a path (double encoding) is refused rather than taken literally.
        if (name.Contains('%'))
        {
            string decoded = Uri.UnescapeDataString(name);
            if (decoded != name && NameProblem(decoded) is not null) return "an image name must not hide a path in percent-encoding";
        }
        return null;
    }

    /// <summary>The full path of an existing image, or the error object (MISSING_IMAGE_NAME, INVALID_IMAGE_NAME, IMAGE_NOT_FOUND).</summary>
    public string Resolve(string? name) => Resolve(name, mustExist: true, out _);

    internal string Resolve(string? name, bool mustExist, out FileSystemInfo? info)
    {
        info = null;
        if (string.IsNullOrEmpty(name)) throw new StationException(400, "MISSING_IMAGE_NAME", "the parameter 'name' (an image name) is required");
        if (NameProblem(name) is { } why) throw new StationException(400, "INVALID_IMAGE_NAME", why, "Requested image: " + StationService.Clip(Printable(name)));
        string full = Path.Combine(Directory, name);
        // Belt and braces: the joined path must sit directly in the folder.
        if (!string.Equals(Path.GetDirectoryName(Path.GetFullPath(full)), Directory, StringComparison.Ordinal))
            throw new StationException(400, "INVALID_IMAGE_NAME", "an image name is a plain file name in the images folder", "Requested image: " + StationService.Clip(Printable(name)));
        FileSystemInfo fi = new FileInfo(full);
        if (!fi.Exists)
        {
            var di = new DirectoryInfo(full);
            if (di.Exists) fi = di;
        }
        if (!fi.Exists && fi.LinkTarget is null)
        {
            if (mustExist) throw new StationException(404, "IMAGE_NOT_FOUND", "no image with this name", "Requested image: " + StationService.Clip(name));
            return full;
        }
        if (fi.LinkTarget is not null && !LinkStaysInside(fi))
            throw new StationException(400, "INVALID_IMAGE_NAME", "the image is a symbolic link to a place outside the images folder", "Requested image: " + StationService.Clip(name));
        if (!fi.Exists && mustExist) throw new StationException(404, "IMAGE_NOT_FOUND", "no image with this name", "Requested image: " + StationService.Clip(name));
        info = fi;
        return full;
    }

    private bool LinkStaysInside(FileSystemInfo link)
    {
        try
        {
            var target = link.ResolveLinkTarget(returnFinalTarget: true);
            if (target is null) return false;
            string real = RealPath(target.FullName);
            return real.StartsWith(_realDirectory + Path.DirectorySeparatorChar, StringComparison.Ordinal) && !real[(_realDirectory.Length + 1)..].StartsWith('.');
        }
        catch (IOException) { return false; }
        catch (UnauthorizedAccessException) { return false; }
    }

    /// <summary>The path with every symbolic link of it resolved (the path itself when it does not exist).</summary>
    internal static string RealPath(string path)
    {
        var full = Path.GetFullPath(path);
        var parts = full.Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries);
        string cur = Path.GetPathRoot(full) ?? "/";
        for (int i = 0; i < parts.Length; i++)
        {
            string next = Path.Combine(cur, parts[i]);
            FileSystemInfo fi = System.IO.Directory.Exists(next) ? new DirectoryInfo(next) : new FileInfo(next);
            if (fi.LinkTarget is not null && fi.ResolveLinkTarget(true) is { } t) next = RealPath(t.FullName);
            cur = next;
        }
        return cur.Length > 1 ? cur.TrimEnd(Path.DirectorySeparatorChar) : cur;
    }

    private static string Printable(string s) => new(s.Select(c => char.IsControl(c) ? '?' : c).ToArray());

    /// <summary>Deletes the temporary files of uploads that never finished (a server killed mid-upload). Returns how many.</summary>
    public int CleanLeftovers()
    {
        int n = 0;
        foreach (var f in System.IO.Directory.EnumerateFiles(Directory, TempPrefix + "*" + TempSuffix))
        {
            try { File.Delete(f); n++; } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
        return n;
    }

    /// <summary>Every image, by name (entries with names that are not plain image names, and links leading outside, are skipped).</summary>
    public IReadOnlyList<StationImage> List(Func<string, IReadOnlyList<string>>? assignedTo = null)
    {
        var list = new List<StationImage>();
        foreach (var entry in new DirectoryInfo(Directory).EnumerateFileSystemInfos())
        {
            if (NameProblem(entry.Name) is not null) continue;
            if (entry.LinkTarget is not null && !LinkStaysInside(entry)) continue;
            try { list.Add(Describe(entry, assignedTo?.Invoke(entry.Name) ?? [])); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        return list.OrderBy(i => i.Name, StringComparer.Ordinal).ToList();
    }

    /// <summary>One image as listed.</summary>
    public StationImage Get(string? name, IReadOnlyList<string>? assignedTo = null)
    {
        Resolve(name, true, out var info);
        return Describe(info!, assignedTo ?? []);
    }

    private StationImage Describe(FileSystemInfo entry, IReadOnlyList<string> assigned)
    {
        var target = entry.LinkTarget is not null ? entry.ResolveLinkTarget(true) ?? entry : entry;
        if (target is DirectoryInfo d || (target.Attributes & FileAttributes.Directory) != 0)
        {
            var dir = new DirectoryInfo(target.FullName);
            long size = 0;
            foreach (var f in dir.EnumerateFiles("*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.ReparsePoint, IgnoreInaccessible = true }))
                size += f.Length;
            return new StationImage { Name = entry.Name, Type = "artefacts", Size = size, Modified = dir.LastWriteTimeUtc, HashStatus = "n/a", AssignedTo = assigned };
        }
        var file = new FileInfo(target.FullName);
        var hash = Hasher.Peek(entry.Name, file);
        return new StationImage
        {
            Name = entry.Name, Type = StationImageAnalyzer.IsArchiveName(entry.Name) ? "archive" : "traditional", Size = file.Length, Modified = file.LastWriteTimeUtc,
            Sha256 = hash.Sha256, HashStatus = hash.Status, HashProgress = hash.Status == "pending" ? hash.Progress : null, AssignedTo = assigned,
        };
    }

    public StationImageMetadata Metadata(string? name)
    {
        var img = Get(name);
        return new StationImageMetadata { Name = img.Name, Type = img.Type, SizeBytes = img.Size, LastModified = img.Modified };
    }

    /// <summary>Deletes an image (a folder with its contents), its cached hash, and stops a hash of it.</summary>
    public void Delete(string? name)
    {
        string full = Resolve(name, true, out var info);
        Hasher.Forget(name!);
        try
        {
            if (info is DirectoryInfo && info.LinkTarget is null) System.IO.Directory.Delete(full, recursive: true);
            else File.Delete(full); // a link is removed, never what it points to
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new StationException(500, "IMAGE_DELETE_ERROR", "the image could not be deleted: " + ex.Message);
        }
    }

    /// <summary>
    /// Streams <paramref name="source"/> into a new image called <paramref name="name"/> (or <c>stem_N.ext</c> when the name is taken):
    /// written to a hidden temporary file, flushed to disk, then renamed into place. Nothing is listed unless the whole body arrived.
    /// </summary>
    public async Task<StationImageUpload> UploadAsync(string? name, Stream source, long? declaredLength, CancellationToken ct = default, IProgress<long>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        Resolve(name, mustExist: false, out _); // validates the name
        if (declaredLength is { } len)
        {
            if (len > MaxBytes) throw TooLarge();
            long free;
            try { free = new DriveInfo(Directory).AvailableFreeSpace; } catch (Exception ex) when (ex is IOException or ArgumentException or UnauthorizedAccessException) { free = long.MaxValue; }
            if (free < len) throw new StationException(507, "INSUFFICIENT_DISK_SPACE", $"the images folder has {free} bytes free; the upload needs {len}");
        }
        string temp = Path.Combine(Directory, TempPrefix + Guid.NewGuid().ToString("N") + TempSuffix);
        long total = 0;
        try
        {
            var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None, BufferSize = 0, Options = FileOptions.Asynchronous };
            if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead;
            await using (var fs = new FileStream(temp, options))
            {
                var buffer = new byte[1 << 20];
                while (true)
                {
                    // Fill the buffer before writing, so the disk sees large writes whatever the network's segment size.
                    int filled = 0, n;
                    while (filled < buffer.Length && (n = await source.ReadAsync(buffer.AsMemory(filled), ct).ConfigureAwait(false)) > 0) filled += n;
                    if (filled == 0) break;
                    total += filled;
                    if (total > MaxBytes) throw TooLarge();
                    await fs.WriteAsync(buffer.AsMemory(0, filled), ct).ConfigureAwait(false);
                    progress?.Report(total);
                    if (filled < buffer.Length) break;
                }
                fs.Flush(flushToDisk: true);
            }
            if (declaredLength is { } expected && expected != total)
                throw new StationException(400, "STREAM_ERROR", $"the upload ended after {total} of {expected} bytes");
            string final = name!;
            for (int i = 1; ; i++)
            {
                string path = Path.Combine(Directory, final);
                if (!File.Exists(path) && !System.IO.Directory.Exists(path) && new FileInfo(path).LinkTarget is null)
                {
                    try
                    {
                        File.Move(temp, path, overwrite: false);
                        Hasher.Forget(final);
                        return new StationImageUpload { Name = final, OriginalName = name!, Renamed = final != name, Size = total };
                    }
                    catch (IOException) when (File.Exists(path)) { }
                }
                if (i > 9999) throw new StationException(409, "IMAGE_EXISTS", "the image name and its numbered variants are taken");
                final = Numbered(name!, i);
            }
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    private StationException TooLarge() => new(413, "IMAGE_TOO_LARGE", $"an image may be at most {MaxBytes} bytes");

    /// <summary><c>disk.img.xz</c> with n=2 is <c>disk_2.img.xz</c>.</summary>
    internal static string Numbered(string name, int n)
    {
        int dot = name.IndexOf('.', 1);
        string stem = dot > 0 ? name[..dot] : name, ext = dot > 0 ? name[dot..] : "";
        string candidate = stem + "_" + n.ToString(CultureInfo.InvariantCulture) + ext;
        return candidate.Length <= MaxNameLength ? candidate : candidate[..MaxNameLength];
    }
}
