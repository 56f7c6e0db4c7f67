using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using TpmProvisioning.Hosting;

namespace TpmProvisioning.Cmdlets;

/// <summary>The servers this process runs, shared by every runspace of the session.</summary>
internal static class ServerRegistry
{
    private static readonly ConcurrentDictionary<int, IServerHost> Hosts = new();

    public static IEnumerable<IServerHost> All => Hosts.Values.OrderBy(h => h.Info.Id);

    public static IServerHost? Get(int id) => Hosts.TryGetValue(id, out var h) ? h : null;

    private static readonly ConcurrentDictionary<int, FileStream> DataPathLocks = new();

    public static void Add(IServerHost host) => Hosts[host.Info.Id] = host;

    /// <summary>Adds a started server with the lock it holds on its data path (released when it is removed).</summary>
    public static void Add(IServerHost host, FileStream? dataPathLock)
    {
        Hosts[host.Info.Id] = host;
        if (dataPathLock is not null) DataPathLocks[host.Info.Id] = dataPathLock;
    }

    public static void Remove(int id)
    {
        Hosts.TryRemove(id, out _);
        if (DataPathLocks.TryRemove(id, out var held)) held.Dispose();
    }

    /// <summary>The file a running server holds locked in its data path, so a second server there (in any process) is refused.</summary>
    public static string LockFile(string dataPath) => Path.Combine(dataPath, "server.lock");

    /// <summary>A running server of this session with this name, if any.</summary>
    public static IServerHost? Named(string name) =>
        Hosts.Values.FirstOrDefault(h => h.Info.State is ServerState.Starting or ServerState.Running or ServerState.Stopping && string.Equals(h.Info.Name, name, StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// Takes the data path's lock for a server about to start: null with <paramref name="inUseBy"/> set when another server holds it
    /// (named when it runs in this session); null with no reason when the folder cannot hold a lock file (the host then says why).
    /// </summary>
    public static FileStream? TryLockDataPath(string dataPath, out string? inUseBy)
    {
        inUseBy = null;
        var mine = Hosts.Values.FirstOrDefault(h => h.Info.State is ServerState.Starting or ServerState.Running or ServerState.Stopping && SamePath(h.Info.DataPath, dataPath));
        if (mine is not null)
        {
            inUseBy = $"server '{mine.Info.Name}' (Id {mine.Info.Id}) of this session";
            return null;
        }
        try
        {
            Directory.CreateDirectory(dataPath);
            var stream = new FileStream(LockFile(dataPath), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            stream.SetLength(0);
            var text = System.Text.Encoding.UTF8.GetBytes($"{Environment.ProcessId}{Environment.NewLine}");
            stream.Write(text);
            stream.Flush();
            return stream;
        }
        catch (IOException ex) when (ex is not (DirectoryNotFoundException or FileNotFoundException or PathTooLongException or DriveNotFoundException))
        {
            inUseBy = "a server in another process";
            return null;
        }
        catch (Exception ex) when (ex is UnauthorizedAccessException or IOException or ArgumentException or NotSupportedException)
        {
            return null;
        }
    }

    private static bool SamePath(string a, string b) =>
        string.Equals(Path.TrimEndingDirectorySeparator(Path.GetFullPath(a)), Path.TrimEndingDirectorySeparator(Path.GetFullPath(b)),
            OperatingSystem.IsWindows() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal);

    /// <summary>Starts a server. Kept apart (and not inlined) so no ASP.NET Core type is touched before the resolver is in place.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static IServerHost Start(ServerOptions options, CancellationToken ct) =>
        TpmProvisioning.Server.Hosting.ProvisioningServerHost.StartAsync(options, ct).GetAwaiter().GetResult();
}
