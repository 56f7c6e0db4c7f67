using System.Data.Common;
using Npgsql;

namespace TpmProvisioning.Storage;

/// <summary>
/// The store on PostgreSQL (Npgsql), for fleets that several servers share: the same portable SQL and migrations as
/// <see cref="SqliteStore"/>, one pooled data source per store. Schema migrations run under an advisory lock so servers
/// starting together apply each migration once; serialization failures and deadlocks (40001, 40P01) are retried by the
/// guarded operations. The connection string's password is never part of a message: <see cref="Description"/> names
/// host, port, database and user only.
/// </summary>
public sealed class PostgresStore : SqlStore
{
    /// <summary>The advisory lock key migrations take (any constant the product owns).</summary>
    private const long MigrationLockKey = 0x54504D50_524F5631; // "TPMPROV1"

    private readonly NpgsqlDataSource _source;

    private PostgresStore(NpgsqlDataSource source, string description) : base(new PostgresDialect())
    {
        _source = source;
        Description = description;
    }

    /// <summary>Host, port, database and user of the connection, without the password (for logs and errors).</summary>
    public string Description { get; }

    /// <summary>True when <paramref name="connectionString"/> looks like an Npgsql connection string (has a Host).</summary>
    public static bool IsPostgresConnectionString(string? connectionString)
    {
        if (string.IsNullOrWhiteSpace(connectionString)) return false;
        try { return !string.IsNullOrEmpty(new NpgsqlConnectionStringBuilder(connectionString).Host); }
        catch (ArgumentException) { return false; }
    }

    /// <summary>
    /// <paramref name="connectionString"/> with the user name and password of a credential (so the password need not be typed
    /// into the string, a command line or a history file). Throws <see cref="ArgumentException"/> when it does not parse.
    /// </summary>
    public static string WithCredential(string connectionString, string userName, string? password)
    {
        NpgsqlConnectionStringBuilder b;
        try { b = new NpgsqlConnectionStringBuilder(connectionString); }
        catch (Exception ex) when (ex is ArgumentException or FormatException or InvalidCastException)
        {
            throw new ArgumentException("The store connection string does not parse as a PostgreSQL (Npgsql) connection string.", nameof(connectionString));
        }
        b.Username = userName;
        b.Password = password;
        return b.ConnectionString;
    }

    /// <summary>The description of a connection string without its password; throws <see cref="ArgumentException"/> when it does not parse.</summary>
    public static string Describe(string connectionString)
    {
        var b = new NpgsqlConnectionStringBuilder(connectionString);
        return $"Host={b.Host};Port={b.Port};Database={b.Database ?? b.Username};Username={b.Username}";
    }

    /// <summary>Opens the store on the database <paramref name="connectionString"/> names and brings its schema up to date.</summary>
    /// <exception cref="ArgumentException">The connection string does not parse (the message never repeats it).</exception>
    /// <exception cref="StoreUnavailableException">The database cannot be reached or migrated.</exception>
    public static async Task<PostgresStore> OpenAsync(string connectionString, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(connectionString);
        NpgsqlConnectionStringBuilder builder;
        try { builder = new NpgsqlConnectionStringBuilder(connectionString); }
        catch (Exception ex) when (ex is ArgumentException or FormatException or InvalidCastException)
        {
            // Npgsql's message may quote the offending value: keep only the kind of error.
            throw new ArgumentException("The store connection string does not parse as a PostgreSQL (Npgsql) connection string.", nameof(connectionString));
        }
        if (string.IsNullOrEmpty(builder.Host)) throw new ArgumentException("The store connection string names no Host.", nameof(connectionString));
        // Sensible defaults for a shared fleet database, unless the admin set them.
        // A busy server waits for a pooled connection rather than answering 503 at once.
        if (!connectionString.Contains("Timeout", StringComparison.OrdinalIgnoreCase)) builder.Timeout = 15;
        if (!connectionString.Contains("Maximum Pool Size", StringComparison.OrdinalIgnoreCase) && !connectionString.Contains("MaxPoolSize", StringComparison.OrdinalIgnoreCase)) builder.MaxPoolSize = 50;
        builder.ApplicationName ??= "TpmProvisioning";
        builder.PersistSecurityInfo = false;
        string description = $"Host={builder.Host};Port={builder.Port};Database={builder.Database ?? builder.Username};Username={builder.Username}";
        var source = new NpgsqlDataSourceBuilder(builder.ConnectionString).Build();
        var store = new PostgresStore(source, description);
        try
        {
            await using var lockConn = await store.OpenAsync(ct).ConfigureAwait(false);
            await using (var cmd = lockConn.CreateCommand())
            {
                cmd.CommandText = $"SELECT pg_advisory_lock({MigrationLockKey})";
                await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
            }
            try
            {
                await store.MigrateAsync(ct).ConfigureAwait(false);
            }
            catch (DbException ex)
            {
                throw new StoreUnavailableException($"The postgresql store at {description} could not be migrated: {ex.Message}", ex);
            }
            finally
            {
                await using var cmd = lockConn.CreateCommand();
                cmd.CommandText = $"SELECT pg_advisory_unlock({MigrationLockKey})";
                try { await cmd.ExecuteNonQueryAsync(CancellationToken.None).ConfigureAwait(false); } catch (DbException) { }
            }
            return store;
        }
        catch
        {
            store.Dispose();
            throw;
        }
    }

    /// <summary>Several servers share this store and split the verifier's agents by lease.</summary>
    public override bool SupportsLeases => true;

    protected override async Task<DbConnection> OpenConnectionAsync(CancellationToken ct) =>
        await _source.OpenConnectionAsync(ct).ConfigureAwait(false);

    /// <summary>
    /// Worth a retry of the whole operation: serialization failures and deadlocks (the transaction was rolled back), and a
    /// pooled connection the server ended while it sat idle (57P01-57P03: the server announced it before this command ran, so
    /// nothing of the operation was done).
    /// </summary>
    protected override bool IsTransient(DbException ex) =>
        ex is PostgresException { SqlState: PostgresErrorCodes.SerializationFailure or PostgresErrorCodes.DeadlockDetected
            or PostgresErrorCodes.AdminShutdown or PostgresErrorCodes.CrashShutdown or PostgresErrorCodes.CannotConnectNow };

    /// <summary>After a connection-level failure the pool's idle connections are likely dead too: drop them.</summary>
    protected override void OnFailure(DbException ex)
    {
        bool connectionLevel = ex is not PostgresException pe || pe.SqlState.StartsWith("08", StringComparison.Ordinal) || pe.SqlState.StartsWith("57P", StringComparison.Ordinal);
        if (connectionLevel) _source.Clear();
    }

    /// <summary>Runs <paramref name="sql"/> on one connection of this store (for the lease component and tests).</summary>
    internal NpgsqlDataSource DataSource => _source;

    public override void Dispose()
    {
        _source.Dispose();
        base.Dispose();
    }
}
