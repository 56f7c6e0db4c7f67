using Microsoft.Data.Sqlite;
using Npgsql;
using TpmProvisioning.Storage;
using Xunit;

namespace TpmProvisioning.Tests.Fixtures;

/// <summary>
/// One PostgreSQL server for the whole test run (every class that needs one is in the <c>postgres</c> collection), started on
/// loopback in its own temporary folder and stopped, process group and all, when the run ends. Each test class takes a fresh
/// database (<see cref="CreateDatabaseAsync"/>). Where PostgreSQL cannot run, <see cref="SkipReason"/> says why and the
/// PostgreSQL cases skip.
/// </summary>
public sealed class PostgresFixture : IAsyncLifetime
{
    public PostgresInstance? Server { get; private set; }
    public string? SkipReason { get; private set; }

    public async Task InitializeAsync()
    {
        SkipReason = PostgresInstance.Unavailable();
        if (SkipReason is not null) return;
        Server = await PostgresInstance.StartAsync();
    }

    public async Task DisposeAsync()
    {
        if (Server is not null) await Server.DisposeAsync();
    }

    /// <summary>A fresh database; skips the test (SkippableFact/Theory) when PostgreSQL is not available here.</summary>
    public async Task<string> CreateDatabaseAsync(string prefix = "t")
    {
        Skip.If(SkipReason is not null, SkipReason);
        return await Server!.CreateDatabaseAsync(prefix);
    }
}

[CollectionDefinition(Name)]
public sealed class PostgresCollection : ICollectionFixture<PostgresFixture>
{
    public const string Name = "postgres";
}

/// <summary>
/// The store factory that store tests are parameterised over: <c>sqlite</c> (a file in a temporary folder) or <c>postgresql</c>
/// (a schema of its own in the test class's database, so each test starts empty).
/// </summary>
public sealed class StoreFactory : IAsyncDisposable
{
    public static TheoryData<string> Kinds => new() { "sqlite", "postgresql" };

    private readonly PostgresFixture _pg;
    private readonly string _dir = Directory.CreateTempSubdirectory("tpmprov-storef-").FullName;
    private readonly List<IStore> _open = [];
    private string? _database;
    private int _schemas;

    public StoreFactory(PostgresFixture pg) => _pg = pg;

    /// <summary>The connection string of the newest PostgreSQL schema handed out.</summary>
    public string? LastPostgresConnectionString { get; private set; }

    /// <summary>The connection string of a fresh, empty PostgreSQL schema (its own search path).</summary>
    public async Task<string> NewPostgresConnectionStringAsync()
    {
        _database ??= await _pg.CreateDatabaseAsync("store");
        string schema = $"s{Interlocked.Increment(ref _schemas)}_{Guid.NewGuid():N}"[..24];
        await using (var conn = new NpgsqlConnection(_database + ";Pooling=false"))
        {
            await conn.OpenAsync();
            await using var cmd = conn.CreateCommand();
            cmd.CommandText = $"CREATE SCHEMA {schema}";
            await cmd.ExecuteNonQueryAsync();
        }
        return LastPostgresConnectionString = _database + $";Search Path={schema}";
    }

    /// <summary>A new, migrated, empty store of <paramref name="kind"/>; closed when the factory is disposed.</summary>
    public async Task<IStore> OpenAsync(string kind)
    {
        IStore store = kind switch
        {
            "sqlite" => await SqliteStore.OpenAsync(Path.Combine(_dir, $"store{_open.Count}.db")),
            "postgresql" => await PostgresStore.OpenAsync(await NewPostgresConnectionStringAsync()),
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };
        _open.Add(store);
        return store;
    }

    public ValueTask DisposeAsync()
    {
        foreach (var s in _open) s.Dispose();
        SqliteConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
        return ValueTask.CompletedTask;
    }
}
