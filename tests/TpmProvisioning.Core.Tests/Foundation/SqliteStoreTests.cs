using Microsoft.Data.Sqlite;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Tests.Foundation;

public sealed class SqliteStoreTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("tpmprov-store-").FullName;
    private string Db => Path.Combine(_dir, "store.db");

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        Directory.Delete(_dir, true);
    }

    [Fact]
    public async Task OpenAppliesEveryMigrationOnceAndUsesWal()
    {
        using (var s = await SqliteStore.OpenAsync(Db)) Assert.Equal(Migrations.Latest, s.SchemaVersion);
        using (var s = await SqliteStore.OpenAsync(Db)) Assert.Equal(Migrations.Latest, s.SchemaVersion);

        using var conn = new SqliteConnection($"Data Source={Db}");
        conn.Open();
        using var cmd = conn.CreateCommand();
        cmd.CommandText = "SELECT COUNT(*) FROM schema_migrations";
        Assert.Equal((long)Migrations.All.Count, (long)cmd.ExecuteScalar()!);
        cmd.CommandText = "PRAGMA journal_mode";
        Assert.Equal("wal", (string)cmd.ExecuteScalar()!);
    }

    [Fact]
    public async Task RefusesASchemaNewerThanTheModule()
    {
        using (await SqliteStore.OpenAsync(Db)) { }
        using (var conn = new SqliteConnection($"Data Source={Db}"))
        {
            conn.Open();
            using var cmd = conn.CreateCommand();
            cmd.CommandText = $"INSERT INTO schema_migrations (version, name, applied_ms) VALUES ({Migrations.Latest + 1}, 'future', 0)";
            cmd.ExecuteNonQuery();
        }
        SqliteConnection.ClearAllPools();
        var ex = await Assert.ThrowsAsync<StoreUnavailableException>(() => SqliteStore.OpenAsync(Db));
        Assert.Contains("newer", ex.Message);
    }

    [Fact]
    public async Task AuditEntriesRoundTripNewestFirstAndFilter()
    {
        using var s = await SqliteStore.OpenAsync(Db);
        var t0 = DateTimeOffset.UtcNow.AddMinutes(-10);
        await s.AppendAuditAsync(new AuditEntry { Time = t0, Actor = "key:1", Action = "provision.create", Target = "SN1", Source = "10.0.0.1", Outcome = AuditOutcome.Success });
        await s.AppendAuditAsync(new AuditEntry { Time = t0.AddMinutes(1), Actor = "key:2", Action = "provision.create", Target = "SN2", Source = "10.0.0.2", Outcome = AuditOutcome.Denied, Detail = "vendor not allowed" });
        await s.AppendAuditAsync(new AuditEntry { Time = t0.AddMinutes(2), Actor = "admin", Action = "server.stop", Outcome = AuditOutcome.Success });

        var all = await s.QueryAuditAsync(new AuditQuery());
        Assert.Equal(["server.stop", "provision.create", "provision.create"], all.Select(e => e.Action));
        Assert.Equal(t0.ToUnixTimeMilliseconds(), all[2].Time.ToUnixTimeMilliseconds());
        Assert.Equal("10.0.0.1", all[2].Source);

        var denied = await s.QueryAuditAsync(new AuditQuery { Outcome = AuditOutcome.Denied });
        var d = Assert.Single(denied);
        Assert.Equal("key:2", d.Actor);
        Assert.Equal("vendor not allowed", d.Detail);

        var recent = await s.QueryAuditAsync(new AuditQuery { Since = t0.AddSeconds(30), Action = "provision.create" });
        Assert.Equal("SN2", Assert.Single(recent).Target);
        Assert.Single(await s.QueryAuditAsync(new AuditQuery { Limit = 1 }));
    }

    [Fact]
    public async Task AuditDetailsAreRedactedBeforeTheyAreStored()
    {
        using var s = await SqliteStore.OpenAsync(Db);
        await s.AppendAuditAsync(new AuditEntry { Actor = "x", Action = "a", Detail = "request {\"api_key\": \"tpk_supersecretvalue123\", \"device\": 1}" });
        var e = Assert.Single(await s.QueryAuditAsync(new AuditQuery()));
        Assert.DoesNotContain("supersecret", e.Detail);
        Assert.Contains("\"device\": 1", e.Detail);
        // The WAL exists while a pooled connection is open and may be checkpointed away at any time: read what is there.
        var raw = new System.Text.StringBuilder();
        foreach (var f in new[] { Db, Db + "-wal", Db + "-shm" })
            if (File.Exists(f)) { try { raw.Append(System.Text.Encoding.Latin1.GetString(await File.ReadAllBytesAsync(f))); } catch (FileNotFoundException) { } }
        Assert.True(raw.Length > 0);
        Assert.DoesNotContain("supersecret", raw.ToString());
    }

    [Fact]
    public async Task ConcurrentWritersAllLand()
    {
        using var s = await SqliteStore.OpenAsync(Db);
        await Parallel.ForEachAsync(Enumerable.Range(0, 200), new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (i, ct) =>
            await s.AppendAuditAsync(new AuditEntry { Actor = "w" + i, Action = "load", Outcome = AuditOutcome.Success }, ct));
        var rows = await s.QueryAuditAsync(new AuditQuery { Action = "load", Limit = 1000 });
        Assert.Equal(200, rows.Select(r => r.Actor).Distinct().Count());
    }

    [Fact]
    public async Task PingIsTrueForAHealthyStore()
    {
        using var s = await SqliteStore.OpenAsync(Db);
        Assert.True(await s.PingAsync());
    }

    [Fact]
    public async Task AnUnopenablePathIsAStoreError()
    {
        var blocker = Path.Combine(_dir, "file");
        await File.WriteAllTextAsync(blocker, "x");
        // A directory cannot be created under a regular file.
        await Assert.ThrowsAnyAsync<Exception>(() => SqliteStore.OpenAsync(Path.Combine(blocker, "sub", "store.db")));
    }
}
