using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Npgsql;

namespace TpmProvisioning.Storage;

/// <summary>
/// A throw-away PostgreSQL server for tests, the bench and demos (as <c>SwtpmInstance</c> is for TPMs): <c>initdb</c> into a
/// temporary folder, <c>postgres</c> on loopback on a free port, trust authentication for its one user, stopped (its process
/// group killed) and deleted on dispose. PostgreSQL refuses to run as root: under root it runs as <c>nobody</c> (65534)
/// through <c>setpriv</c>. <see cref="Unavailable"/> says why it cannot run here (no binaries, no way to drop root).
/// </summary>
public sealed class PostgresInstance : IAsyncDisposable
{
    public const string User = "tpmtest";
    private const int NobodyId = 65534;

    private readonly string _bin;
    private readonly string _dir;
    private Process? _process;
    private int _databases;

    private PostgresInstance(string bin, string dir) { _bin = bin; _dir = dir; }

    /// <summary>The loopback port the server listens on (kept across <see cref="StopAsync"/> and <see cref="StartAgainAsync"/>).</summary>
    public int Port { get; private set; }

    /// <summary>The postmaster's process id (also its process group), or 0 when stopped.</summary>
    public int ProcessId => _process is { HasExited: false } p ? p.Id : 0;

    /// <summary>A connection string to the <c>postgres</c> maintenance database.</summary>
    public string AdminConnectionString => ConnectionString("postgres");

    public string ConnectionString(string database) => $"Host=127.0.0.1;Port={Port};Username={User};Database={database};Timeout=5;Include Error Detail=true";

    /// <summary>The folder of <c>initdb</c> and <c>postgres</c>: <c>TPMPROV_PG_BIN</c>, else the newest <c>/usr/lib/postgresql/N/bin</c>.</summary>
    public static string? FindBinaries()
    {
        var env = Environment.GetEnvironmentVariable("TPMPROV_PG_BIN");
        if (!string.IsNullOrEmpty(env) && File.Exists(Path.Combine(env, "postgres"))) return env;
        const string root = "/usr/lib/postgresql";
        if (!Directory.Exists(root)) return null;
        return Directory.GetDirectories(root)
            .Select(d => (Dir: Path.Combine(d, "bin"), Version: int.TryParse(Path.GetFileName(d).Split('.')[0], out var v) ? v : 0))
            .Where(x => File.Exists(Path.Combine(x.Dir, "postgres")) && File.Exists(Path.Combine(x.Dir, "initdb")))
            .OrderByDescending(x => x.Version).Select(x => x.Dir).FirstOrDefault();
    }

    /// <summary>Null when a server can be started here, else why not (tests skip with this message).</summary>
    public static string? Unavailable()
    {
        if (!OperatingSystem.IsLinux()) return "PostgreSQL tests run on Linux only.";
        if (FindBinaries() is null) return "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres; build.ps1 Bootstrap installs Debian's postgresql).";
        if (IsRoot && !File.Exists("/usr/bin/setpriv")) return "Running as root without setpriv: PostgreSQL cannot drop to an unprivileged user.";
        return null;
    }

    private static bool IsRoot => OperatingSystem.IsLinux() && geteuid() == 0;

    [DllImport("libc", SetLastError = true)] private static extern uint geteuid();
    [DllImport("libc", SetLastError = true)] private static extern int kill(int pid, int sig);
    private const int SIGINT = 2, SIGKILL = 9;

    /// <summary>Initialises a cluster in a fresh temporary folder and starts it.</summary>
    public static async Task<PostgresInstance> StartAsync(CancellationToken ct = default)
    {
        if (Unavailable() is { } why) throw new InvalidOperationException(why);
        var dir = Directory.CreateTempSubdirectory("tpmprov-pg-").FullName;
        var pg = new PostgresInstance(FindBinaries()!, dir);
        try
        {
            if (IsRoot) Run("chown", [$"{NobodyId}:{NobodyId}", dir]);
            RunAs(Path.Combine(pg._bin, "initdb"), ["-D", Path.Combine(dir, "data"), "-U", User, "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions"]);
            for (int attempt = 1; ; attempt++)
            {
                pg.Port = FreePort();
                try { await pg.LaunchAsync(ct).ConfigureAwait(false); break; }
                catch (IOException) when (attempt < 5) { } // the port was taken between probe and bind: another one
            }
            return pg;
        }
        catch
        {
            await pg.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    private static ProcessStartInfo Command(string exe, IEnumerable<string> args, bool ownGroup)
    {
        var list = new List<string>();
        if (ownGroup) list.Add("/usr/bin/setsid");
        if (IsRoot) list.AddRange(["/usr/bin/setpriv", $"--reuid={NobodyId}", $"--regid={NobodyId}", "--clear-groups", "--"]);
        list.Add(exe);
        list.AddRange(args);
        var psi = new ProcessStartInfo(list[0]) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in list.Skip(1)) psi.ArgumentList.Add(a);
        psi.Environment["LC_ALL"] = "C";
        return psi;
    }

    private static void RunAs(string exe, string[] args) => Run(Command(exe, args, ownGroup: false));
    private static void Run(string exe, string[] args)
    {
        var psi = new ProcessStartInfo(exe) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        Run(psi);
    }

    private static void Run(ProcessStartInfo psi)
    {
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{psi.FileName} {string.Join(' ', psi.ArgumentList)} exited with {p.ExitCode}: {err.Result}{stdout}");
    }

    private async Task LaunchAsync(CancellationToken ct)
    {
        var psi = Command(Path.Combine(_bin, "postgres"), ["-D", Path.Combine(_dir, "data"), "-p", Port.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "-h", "127.0.0.1", "-k", _dir, "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=500",
            "-c", "shared_buffers=64MB", "-c", "log_min_messages=warning", "-c", "logging_collector=off"], ownGroup: true);
        var p = Process.Start(psi)!;
        _process = p;
        var log = new System.Text.StringBuilder();
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (log) { if (log.Length < 16_000) log.AppendLine(e.Data); } };
        p.OutputDataReceived += (_, _) => { };
        p.BeginErrorReadLine();
        p.BeginOutputReadLine();
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            if (p.HasExited)
            {
                string text; lock (log) text = log.ToString();
                _process = null;
                if (text.Contains("Address already in use", StringComparison.OrdinalIgnoreCase) || text.Contains("could not bind", StringComparison.OrdinalIgnoreCase))
                    throw new IOException("port taken: " + text);
                throw new InvalidOperationException($"postgres exited with {p.ExitCode}: {text}");
            }
            try
            {
                await using var conn = new NpgsqlConnection(AdminConnectionString + ";Pooling=false");
                await conn.OpenAsync(ct).ConfigureAwait(false);
                return;
            }
            catch (NpgsqlException) when (DateTime.UtcNow < deadline) { await Task.Delay(100, ct).ConfigureAwait(false); }
        }
    }

    /// <summary>Creates a fresh, empty database and returns its connection string.</summary>
    public async Task<string> CreateDatabaseAsync(string? prefix = null, CancellationToken ct = default)
    {
        string name = $"{(prefix ?? "t").ToLowerInvariant()}_{Interlocked.Increment(ref _databases)}_{Guid.NewGuid():N}";
        if (name.Length > 60) name = name[..60];
        name = new string(name.Select(c => char.IsAsciiLetterOrDigit(c) ? char.ToLowerInvariant(c) : '_').ToArray());
        await using var conn = new NpgsqlConnection(AdminConnectionString + ";Pooling=false");
        await conn.OpenAsync(ct).ConfigureAwait(false);
        await using var cmd = conn.CreateCommand();
        cmd.CommandText = $"CREATE DATABASE \"{name}\"";
        await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
        return ConnectionString(name);
    }

    /// <summary>
    /// Creates a login role <paramref name="user"/> that must give <paramref name="password"/> (SCRAM over loopback, unlike the
    /// instance's own trusted user) and a fresh database it owns; returns that database's connection string for the role, without
    /// the password. For tests of what happens with and without a password.
    /// </summary>
    public async Task<string> CreatePasswordDatabaseAsync(string user, string password, string? prefix = null, CancellationToken ct = default)
    {
        if (string.IsNullOrEmpty(user) || !user.All(c => char.IsAsciiLetterOrDigit(c) || c == '_')) throw new ArgumentException("Use a plain role name (letters, digits, _).", nameof(user));
        string hba = Path.Combine(_dir, "data", "pg_hba.conf");
        string line = $"host all {user} 127.0.0.1/32 scram-sha-256";
        var existing = await File.ReadAllTextAsync(hba, ct).ConfigureAwait(false);
        // The first matching line wins: the role's password line goes before the instance's trust lines (rewritten in place, so the
        // file keeps its owner).
        if (!existing.Contains(line, StringComparison.Ordinal)) await File.WriteAllTextAsync(hba, line + "\n" + existing, ct).ConfigureAwait(false);
        string database = await CreateDatabaseAsync(prefix, ct).ConfigureAwait(false);
        string name = new NpgsqlConnectionStringBuilder(database).Database!;
        await using (var conn = new NpgsqlConnection(AdminConnectionString + ";Pooling=false"))
        {
            await conn.OpenAsync(ct).ConfigureAwait(false);
            await using var cmd = conn.CreateCommand();
            cmd.CommandText = $"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}') THEN CREATE ROLE \"{user}\" LOGIN; END IF; END$$; " +
                $"ALTER ROLE \"{user}\" PASSWORD '{password.Replace("'", "''", StringComparison.Ordinal)}'; ALTER DATABASE \"{name}\" OWNER TO \"{user}\"; SELECT pg_reload_conf()";
            await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
        }
        string forUser = new NpgsqlConnectionStringBuilder(database) { Username = user }.ConnectionString;
        // The postmaster reloads pg_hba.conf after the signal: wait until the role is really asked for its password.
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            try
            {
                await using var probe = new NpgsqlConnection(forUser + ";Pooling=false");
                await probe.OpenAsync(ct).ConfigureAwait(false);
            }
            catch (NpgsqlException) { return forUser; }
            if (DateTime.UtcNow > deadline) throw new InvalidOperationException("pg_hba.conf was not reloaded within 60 s.");
            await Task.Delay(100, ct).ConfigureAwait(false);
        }
    }

    /// <summary>Stops the server (fast shutdown: sessions end, committed work is on disk); the port is kept for <see cref="StartAgainAsync"/>.</summary>
    public async Task StopAsync()
    {
        if (_process is not { } p) return;
        if (!p.HasExited)
        {
            kill(p.Id, SIGINT);
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            try { await p.WaitForExitAsync(cts.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) { KillGroup(p); }
        }
        p.Dispose();
        _process = null;
        // Pools are left as they are: clients must notice the broken connections themselves, as they would in production.
    }

    /// <summary>Starts the stopped server again on the same port and data.</summary>
    public Task StartAgainAsync(CancellationToken ct = default) => _process is null ? LaunchAsync(ct) : Task.CompletedTask;

    /// <summary>Kills the postmaster's process group and each of its children (PostgreSQL's children take sessions of their own).</summary>
    private static void KillGroup(Process p)
    {
        // Never signal an id that may have been reused: only while the postmaster we started is alive (its children end with it).
        if (p.HasExited) return;
        var children = OperatingSystem.IsLinux() ? ProcStats().Where(x => x.Ppid == p.Id).Select(x => x.Pid).ToList() : [];
        kill(-p.Id, SIGKILL);
        kill(p.Id, SIGKILL);
        foreach (var c in children) kill(c, SIGKILL);
    }

    /// <summary>
    /// CPU time (user + system) of the server so far: the postmaster, its live children (backends, writers, which each take a
    /// session of their own) and the children that already ended (the postmaster's cutime/cstime).
    /// </summary>
    public TimeSpan CpuTime()
    {
        if (ProcessId is not (var pid and > 0) || !OperatingSystem.IsLinux()) return TimeSpan.Zero;
        long ticks = 0;
        foreach (var (p, ppid, fields) in ProcStats())
        {
            if (p == pid) ticks += Field(fields, 14) + Field(fields, 15) + Field(fields, 16) + Field(fields, 17);
            else if (ppid == pid) ticks += Field(fields, 14) + Field(fields, 15);
        }
        return TimeSpan.FromSeconds(ticks / 100.0);
    }

    /// <summary>Field <paramref name="n"/> (1-based, as in proc(5)) of a stat line split after the command name.</summary>
    private static long Field(string[] after, int n) => long.Parse(after[n - 3], System.Globalization.CultureInfo.InvariantCulture);

    private static IEnumerable<(int Pid, int Ppid, string[] Fields)> ProcStats()
    {
        foreach (var d in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(d), out int pid)) continue;
            string[] fields;
            try
            {
                var stat = File.ReadAllText(Path.Combine(d, "stat"));
                fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentOutOfRangeException) { continue; }
            if (fields.Length < 20 || !int.TryParse(fields[1], out int ppid)) continue;
            yield return (pid, ppid, fields);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_process is { } p)
        {
            KillGroup(p);
            try { await p.WaitForExitAsync(new CancellationTokenSource(TimeSpan.FromSeconds(10)).Token).ConfigureAwait(false); } catch (OperationCanceledException) { }
            p.Dispose();
            _process = null;
        }
        NpgsqlConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }
}
