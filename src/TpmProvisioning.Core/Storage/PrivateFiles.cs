namespace TpmProvisioning.Storage;

/// <summary>
/// Everything under a data path is its owner's alone: folders 0700, files 0600, whatever the process umask (on Unix; Windows
/// relies on the folder's ACL). New folders and files are created that way; <see cref="Secure"/> tightens what an earlier
/// version, a copy or a restore left readable by others, and says what it changed.
/// </summary>
public static class PrivateFiles
{
    public const UnixFileMode FolderMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    public const UnixFileMode FileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private const UnixFileMode Others = UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute
        | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

    /// <summary>Creates <paramref name="path"/> (and missing parents) as 0700; an existing folder is tightened to 0700 if others can use it.</summary>
    public static DirectoryInfo CreateFolder(string path)
    {
        if (OperatingSystem.IsWindows()) return Directory.CreateDirectory(path);
        var info = Directory.CreateDirectory(path, FolderMode);
        if ((info.UnixFileMode & Others) != 0) File.SetUnixFileMode(path, info.UnixFileMode & ~Others);
        return info;
    }

    /// <summary>Opens <paramref name="path"/> for writing (<paramref name="mode"/> as FileMode), creating it 0600 when it is new.</summary>
    public static FileStream OpenWrite(string path, System.IO.FileMode mode = System.IO.FileMode.Create, FileShare share = FileShare.Read)
    {
        if (OperatingSystem.IsWindows()) return new FileStream(path, mode, FileAccess.Write, share);
        return new FileStream(path, new FileStreamOptions { Mode = mode, Access = FileAccess.Write, Share = share, UnixCreateMode = FileMode });
    }

    /// <summary>Writes <paramref name="content"/> to <paramref name="path"/> through a 0600 temporary file renamed into place.</summary>
    public static void WriteAllBytes(string path, ReadOnlySpan<byte> content)
    {
        var tmp = path + ".tmp";
        using (var fs = OpenWrite(tmp)) fs.Write(content);
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>Writes UTF-8 <paramref name="text"/> (no byte-order mark) like <see cref="WriteAllBytes"/>.</summary>
    public static void WriteAllText(string path, string text) => WriteAllBytes(path, new System.Text.UTF8Encoding(false).GetBytes(text));

    /// <summary>Creates an empty 0600 file unless it exists (so a program that creates it later, such as SQLite, keeps the mode).</summary>
    public static void Touch(string path)
    {
        if (File.Exists(path)) return;
        try { using var _ = OpenWrite(path, System.IO.FileMode.CreateNew); }
        catch (IOException) when (File.Exists(path)) { }
    }

    /// <summary>
    /// Tightens <paramref name="root"/> and everything under it: folders to 0700 and files to 0600 where group or others had any
    /// access (symbolic links are not followed). Returns what it changed, as <c>path: 0755 -> 0700</c> lines, for a warning.
    /// </summary>
    public static IReadOnlyList<string> Secure(string root, int maxEntries = 100_000)
    {
        var changed = new List<string>();
        if (OperatingSystem.IsWindows() || !Directory.Exists(root)) return changed;
        var pending = new Stack<string>();
        pending.Push(root);
        int seen = 0;
        while (pending.Count > 0 && seen < maxEntries)
        {
            var dir = pending.Pop();
            Tighten(dir, changed);
            IEnumerable<FileSystemInfo> entries;
            try { entries = new DirectoryInfo(dir).EnumerateFileSystemInfos(); }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { continue; }
            foreach (var e in entries)
            {
                if (++seen > maxEntries) break;
                if (e.LinkTarget is not null) continue;
                if (e is DirectoryInfo) pending.Push(e.FullName);
                else Tighten(e.FullName, changed);
            }
        }
        return changed;
    }

    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    private static void Tighten(string path, List<string> changed)
    {
        try
        {
            var mode = File.GetUnixFileMode(path);
            if ((mode & Others) == 0) return;
            var tightened = mode & ~Others;
            File.SetUnixFileMode(path, tightened);
            changed.Add($"{path}: {Octal(mode)} -> {Octal(tightened)}");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { }
    }

    private static string Octal(UnixFileMode m) => "0" + Convert.ToString((int)m & 0x1FF, 8);
}
