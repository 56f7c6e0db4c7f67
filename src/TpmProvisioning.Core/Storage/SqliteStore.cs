using System.Data.Common;
using Microsoft.Data.Sqlite;

namespace TpmProvisioning.Storage;

/// <summary>The embedded default store: one SQLite file, WAL journal, busy timeout for concurrent writers.</summary>
public sealed class SqliteStore : SqlStore
{
    private readonly string _connectionString;

    private SqliteStore(string path) : base(new SqliteDialect())
    {
        Path = path;
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = path,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Cache = SqliteCacheMode.Private,
            Pooling = true,
            DefaultTimeout = 30,
        }.ToString();
    }

    /// <summary>The database file.</summary>
    public string Path { get; }

    /// <summary>The store's file name under a server's data path.</summary>
    public const string DefaultFileName = "tpmprovisioning.db";

    /// <summary>
    /// Opens the store a server with data path <paramref name="dataPath"/> uses (<see cref="DefaultFileName"/> in it). Admin
    /// sessions open it beside a running server (WAL allows it) to manage API keys and read records.
    /// </summary>
    public static Task<SqliteStore> OpenInDataPathAsync(string dataPath, CancellationToken ct = default) =>
        OpenAsync(System.IO.Path.Combine(System.IO.Path.GetFullPath(dataPath), DefaultFileName), ct);

    /// <summary>Opens (creating if needed) the store file and brings its schema up to date.</summary>
    public static async Task<SqliteStore> OpenAsync(string path, CancellationToken ct = default)
    {
        var full = System.IO.Path.GetFullPath(path);
        var dir = System.IO.Path.GetDirectoryName(full);
        if (!string.IsNullOrEmpty(dir) && !Directory.Exists(dir)) PrivateFiles.CreateFolder(dir);
        // SQLite gives its -wal and -shm files the database file's mode: a database created 0600 keeps all three private.
        PrivateFiles.Touch(full);
        if (!OperatingSystem.IsWindows())
            foreach (var f in new[] { full, full + "-wal", full + "-shm" })
                if (File.Exists(f) && (File.GetUnixFileMode(f) & ~PrivateFiles.FileMode) != 0) File.SetUnixFileMode(f, PrivateFiles.FileMode);
        var store = new SqliteStore(full);
        try
        {
            await using (var conn = await store.OpenAsync(ct).ConfigureAwait(false))
            {
                await ExecAsync(conn, null, "PRAGMA journal_mode=WAL", ct).ConfigureAwait(false);
            }
            await store.MigrateAsync(ct).ConfigureAwait(false);
            return store;
        }
        catch
        {
            store.Dispose();
            throw;
        }
    }

    protected override async Task<DbConnection> OpenConnectionAsync(CancellationToken ct)
    {
        var conn = new SqliteConnection(_connectionString);
        try
        {
            await conn.OpenAsync(ct).ConfigureAwait(false);
            await using var cmd = conn.CreateCommand();
            cmd.CommandText = "PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL;";
            await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
            return conn;
        }
        catch
        {
            await conn.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    public override void Dispose()
    {
        // Release pooled handles so the file can be deleted or moved once the server stops.
        using (var conn = new SqliteConnection(_connectionString)) SqliteConnection.ClearPool(conn);
        base.Dispose();
    }
}
