using System.Data.Common;

namespace TpmProvisioning.Storage;

/// <summary>
/// The store over any ADO.NET provider: portable SQL, named parameters, one connection per operation
/// (both providers pool). Provider specifics live in <see cref="SqlDialect"/> and in the subclass's
/// connection set-up only.
/// </summary>
public abstract partial class SqlStore : IStore
{
    protected SqlStore(SqlDialect dialect) => Dialect = dialect;

    protected SqlDialect Dialect { get; }
    public string Provider => Dialect.Name;
    public int SchemaVersion { get; private set; }

    /// <summary>Opens a new, ready connection.</summary>
    protected abstract Task<DbConnection> OpenConnectionAsync(CancellationToken ct);

    protected async Task<DbConnection> OpenAsync(CancellationToken ct)
    {
        try
        {
            return await OpenConnectionAsync(ct).ConfigureAwait(false);
        }
        catch (DbException ex)
        {
            OnFailure(ex);
            throw new StoreUnavailableException($"The {Provider} store cannot be opened: {ex.Message}", ex);
        }
    }

    /// <summary>Creates the migrations table if needed and applies every migration newer than the stored version.</summary>
    public async Task MigrateAsync(CancellationToken ct = default)
    {
        await using var conn = await OpenAsync(ct).ConfigureAwait(false);
        await ExecAsync(conn, null, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms BIGINT NOT NULL)", ct).ConfigureAwait(false);
        int current = await CurrentVersionAsync(conn, ct).ConfigureAwait(false);
        if (current > Migrations.Latest)
            throw new StoreUnavailableException($"The store's schema version {current} is newer than this module understands ({Migrations.Latest}); upgrade the module.");
        foreach (var m in Migrations.All.Where(m => m.Version > current))
        {
            await using var tx = await conn.BeginTransactionAsync(ct).ConfigureAwait(false);
            foreach (var stmt in SplitStatements(Dialect.Expand(m.Sql)))
                await ExecAsync(conn, tx, stmt, ct).ConfigureAwait(false);
            await using (var cmd = conn.CreateCommand())
            {
                cmd.Transaction = tx;
                cmd.CommandText = "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (@v, @n, @t)";
                AddParam(cmd, "v", m.Version);
                AddParam(cmd, "n", m.Name);
                AddParam(cmd, "t", DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
                await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
            }
            await tx.CommitAsync(ct).ConfigureAwait(false);
        }
        SchemaVersion = await CurrentVersionAsync(conn, ct).ConfigureAwait(false);
    }

    private static async Task<int> CurrentVersionAsync(DbConnection conn, CancellationToken ct)
    {
        await using var cmd = conn.CreateCommand();
        cmd.CommandText = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations";
        return Convert.ToInt32(await cmd.ExecuteScalarAsync(ct).ConfigureAwait(false));
    }

    private static IEnumerable<string> SplitStatements(string sql) =>
        sql.Split(';').Select(s => s.Trim()).Where(s => s.Length > 0);

    protected static async Task ExecAsync(DbConnection conn, DbTransaction? tx, string sql, CancellationToken ct)
    {
        await using var cmd = conn.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = sql;
        await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
    }

    protected static void AddParam(DbCommand cmd, string name, object? value)
    {
        var p = cmd.CreateParameter();
        p.ParameterName = "@" + name;
        p.Value = value ?? DBNull.Value;
        cmd.Parameters.Add(p);
    }

    public async Task<bool> PingAsync(CancellationToken ct = default)
    {
        try
        {
            await using var conn = await OpenAsync(ct).ConfigureAwait(false);
            await using var cmd = conn.CreateCommand();
            cmd.CommandText = "SELECT 1";
            return Convert.ToInt32(await cmd.ExecuteScalarAsync(ct).ConfigureAwait(false)) == 1;
        }
        catch (Exception ex) when (ex is StoreUnavailableException or DbException or InvalidOperationException)
        {
            return false;
        }
    }

    public Task<long> AppendAuditAsync(AuditEntry entry, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(entry);
        return Guard("append an audit entry", () => AppendAuditCoreAsync(entry, ct));
    }

    private async Task<long> AppendAuditCoreAsync(AuditEntry entry, CancellationToken ct)
    {
        await using var conn = await OpenAsync(ct).ConfigureAwait(false);
        await using var cmd = conn.CreateCommand();
        cmd.CommandText = "INSERT INTO audit_log (time_ms, actor, action, target, source, outcome, detail) VALUES (@t, @actor, @action, @target, @source, @outcome, @detail)" + Dialect.ReturningId;
        AddParam(cmd, "t", entry.Time.ToUnixTimeMilliseconds());
        AddParam(cmd, "actor", Limit(entry.Actor, 512));
        AddParam(cmd, "action", Limit(entry.Action, 128));
        AddParam(cmd, "target", Limit(entry.Target, 512));
        AddParam(cmd, "source", Limit(entry.Source, 128));
        AddParam(cmd, "outcome", entry.Outcome.ToString());
        AddParam(cmd, "detail", Limit(entry.Detail is null ? null : SecretRedactor.Redact(entry.Detail), 4096));
        return Convert.ToInt64(await cmd.ExecuteScalarAsync(ct).ConfigureAwait(false));
    }

    private static string? Limit(string? s, int max) => s is null || s.Length <= max ? s : s[..max];

    public async Task<IReadOnlyList<AuditEntry>> QueryAuditAsync(AuditQuery query, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        return await Guard("read the audit log", () => QueryAsync(cmd =>
            "SELECT id, time_ms, actor, action, target, source, outcome, detail FROM audit_log" + Where(cmd,
                ("time_ms >= @since", "since", query.Since?.ToUnixTimeMilliseconds()),
                ("time_ms <= @until", "until", query.Until?.ToUnixTimeMilliseconds()),
                ("action = @action", "action", query.Action),
                ("actor = @actor", "actor", query.Actor),
                ("source = @source", "source", query.Source),
                ("outcome = @outcome", "outcome", query.Outcome?.ToString()))
            + Newest(cmd, query.Limit),
            r => new AuditEntry
            {
                Id = r.GetInt64(0),
                Time = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(1)),
                Actor = r.GetString(2),
                Action = r.GetString(3),
                Target = r.IsDBNull(4) ? null : r.GetString(4),
                Source = r.GetString(5),
                Outcome = Enum.TryParse<AuditOutcome>(r.GetString(6), out var o) ? o : AuditOutcome.Failed,
                Detail = r.IsDBNull(7) ? null : r.GetString(7),
            }, ct)).ConfigureAwait(false);
    }

    /// <summary>
    /// Runs a store operation, turning provider failures into <see cref="StoreUnavailableException"/>. A failure the provider
    /// calls transient (<see cref="IsTransient"/>: a serialization failure or deadlock under concurrent servers) reruns the
    /// whole operation, whose transaction was rolled back, a few times first.
    /// </summary>
    private async Task<T> Guard<T>(string what, Func<Task<T>> op)
    {
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                return await op().ConfigureAwait(false);
            }
            catch (DbException ex) when (attempt < MaxTransientAttempts && IsTransient(ex))
            {
                OnFailure(ex);
                await Task.Delay(Random.Shared.Next(5, 20 * attempt)).ConfigureAwait(false);
            }
            catch (DbException ex)
            {
                OnFailure(ex);
                throw new StoreUnavailableException($"The {Provider} store failed to {what}: {ex.Message}", ex);
            }
        }
    }

    private const int MaxTransientAttempts = 8;

    /// <summary>True when <paramref name="ex"/> is worth rerunning the operation (PostgreSQL's 40001 and 40P01); false by default.</summary>
    protected virtual bool IsTransient(DbException ex) => false;

    /// <summary>Called on every provider failure (before a retry or the <see cref="StoreUnavailableException"/>): a server store
    /// drops its pooled connections after a connection-level failure, so a restarted database is not met by stale ones.</summary>
    protected virtual void OnFailure(DbException ex) { }

    /// <summary>
    /// Runs a query on a fresh connection: <paramref name="prepare"/> adds the parameters and returns the SQL, <paramref name="read"/>
    /// maps each row.
    /// </summary>
    protected async Task<List<T>> QueryAsync<T>(Func<DbCommand, string> prepare, Func<DbDataReader, T> read, CancellationToken ct)
    {
        await using var conn = await OpenAsync(ct).ConfigureAwait(false);
        await using var cmd = conn.CreateCommand();
        cmd.CommandText = prepare(cmd);
        var list = new List<T>();
        await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
        while (await r.ReadAsync(ct).ConfigureAwait(false)) list.Add(read(r));
        return list;
    }

    /// <summary>Runs one statement on a fresh connection, store failures turned into <see cref="StoreUnavailableException"/>:
    /// <paramref name="prepare"/> adds the parameters and returns the SQL. Returns the rows affected.</summary>
    protected Task<int> ExecuteAsync(string what, Func<DbCommand, string> prepare, CancellationToken ct) =>
        Guard(what, async () =>
        {
            await using var conn = await OpenAsync(ct).ConfigureAwait(false);
            await using var cmd = conn.CreateCommand();
            cmd.CommandText = prepare(cmd);
            return await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
        });

    /// <summary>The first row of a guarded query, or null.</summary>
    protected async Task<T?> FirstAsync<T>(string what, Func<DbCommand, string> prepare, Func<DbDataReader, T> read, CancellationToken ct) where T : class =>
        await Guard(what, async () => (await QueryAsync(prepare, read, ct).ConfigureAwait(false)).FirstOrDefault()).ConfigureAwait(false);

    /// <summary>Every row of a guarded query.</summary>
    protected async Task<IReadOnlyList<T>> AllAsync<T>(string what, Func<DbCommand, string> prepare, Func<DbDataReader, T> read, CancellationToken ct) =>
        await Guard(what, async () => await QueryAsync(prepare, read, ct).ConfigureAwait(false)).ConfigureAwait(false);

    /// <summary>A <c> WHERE</c> clause of the filters whose value is not null (their parameters added to <paramref name="cmd"/>), or "".</summary>
    protected static string Where(DbCommand cmd, params (string Condition, string Parameter, object? Value)[] filters)
    {
        var where = new List<string>();
        foreach (var (condition, parameter, value) in filters)
        {
            if (value is null) continue;
            where.Add(condition);
            AddParam(cmd, parameter, value);
        }
        return where.Count > 0 ? " WHERE " + string.Join(" AND ", where) : "";
    }

    /// <summary><c> ORDER BY id DESC LIMIT @limit</c> with the limit clamped to 1..1,000,000.</summary>
    protected static string Newest(DbCommand cmd, int limit)
    {
        AddParam(cmd, "limit", Math.Clamp(limit, 1, 1_000_000));
        return " ORDER BY id DESC LIMIT @limit";
    }

    public virtual void Dispose() { GC.SuppressFinalize(this); }
}
