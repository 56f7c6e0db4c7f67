using Npgsql;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Station;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Fixtures;

namespace TpmProvisioning.Tests.Foundation;

/// <summary>
/// The store contract, run against every provider: SQLite (a file) and PostgreSQL (a real server started for the test run,
/// a fresh schema per test). What one provider does, the other must do the same way.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class StoreContractTests(PostgresFixture pg) : IAsyncLifetime
{
    private readonly StoreFactory _stores = new(pg);

    public Task InitializeAsync() => Task.CompletedTask;
    public async Task DisposeAsync() => await _stores.DisposeAsync();

    public static TheoryData<string> Kinds => StoreFactory.Kinds;

    [SkippableTheory, MemberData(nameof(Kinds))]
    public async Task EveryMigrationIsAppliedOnceEvenWhenServersOpenTogether(string kind)
    {
        if (kind == "sqlite")
        {
            var s = await _stores.OpenAsync(kind);
            Assert.Equal(Migrations.Latest, s.SchemaVersion);
            Assert.Equal(kind, s.Provider);
            return;
        }
        var cs = await _stores.NewPostgresConnectionStringAsync();
        // Three servers starting at once on one empty database: the advisory lock lets one migrate, the others find it done.
        var stores = await Task.WhenAll(Enumerable.Range(0, 3).Select(_ => PostgresStore.OpenAsync(cs)));
        try
        {
            Assert.All(stores, s => Assert.Equal(Migrations.Latest, s.SchemaVersion));
            Assert.All(stores, s => Assert.Equal("postgresql", s.Provider));
            await using var conn = new NpgsqlConnection(cs);
            await conn.OpenAsync();
            await using var cmd = conn.CreateCommand();
            cmd.CommandText = "SELECT COUNT(*) FROM schema_migrations";
            Assert.Equal((long)Migrations.All.Count, (long)(await cmd.ExecuteScalarAsync())!);
            // A schema newer than the module is refused.
            cmd.CommandText = $"INSERT INTO schema_migrations (version, name, applied_ms) VALUES ({Migrations.Latest + 1}, 'future', 0)";
            await cmd.ExecuteNonQueryAsync();
            var ex = await Assert.ThrowsAsync<StoreUnavailableException>(() => PostgresStore.OpenAsync(cs));
            Assert.Contains("newer", ex.Message);
        }
        finally
        {
            foreach (var s in stores) s.Dispose();
        }
    }

    [SkippableFact]
    public async Task APostgresPasswordNeverAppearsInAnError()
    {
        var cs = await _stores.NewPostgresConnectionStringAsync();
        var b = new NpgsqlConnectionStringBuilder(cs) { Port = 1, Password = "hunter2-very-secret", Timeout = 2 };
        var ex = await Assert.ThrowsAsync<StoreUnavailableException>(() => PostgresStore.OpenAsync(b.ConnectionString));
        Assert.DoesNotContain("hunter2", ex.ToString());
        var bad = await Assert.ThrowsAsync<ArgumentException>(() => PostgresStore.OpenAsync("Host=x;Password=hunter2-very-secret;Port=notanumber"));
        Assert.DoesNotContain("hunter2", bad.Message);
        Assert.DoesNotContain("hunter2", PostgresStore.Describe(b.ConnectionString));
        Assert.True(PostgresStore.IsPostgresConnectionString(cs));
        Assert.False(PostgresStore.IsPostgresConnectionString("Data Source=x.db"));
    }

    [SkippableTheory, MemberData(nameof(Kinds))]
    public async Task AuditEntriesRoundTripNewestFirstFilterAndAreRedacted(string kind)
    {
        var s = await _stores.OpenAsync(kind);
        Assert.True(await s.PingAsync());
        var t0 = DateTimeOffset.UtcNow.AddMinutes(-10);
        await s.AppendAuditAsync(new AuditEntry { Time = t0, Actor = "key:1", Action = "provision.create", Target = "SN1", Source = "10.0.0.1", Outcome = AuditOutcome.Success });
        await s.AppendAuditAsync(new AuditEntry { Time = t0.AddMinutes(1), Actor = "key:2", Action = "provision.create", Target = "SN2", Source = "10.0.0.2", Outcome = AuditOutcome.Denied, Detail = "vendor not allowed" });
        await s.AppendAuditAsync(new AuditEntry { Time = t0.AddMinutes(2), Actor = "admin", Action = "server.stop", Outcome = AuditOutcome.Success, Detail = "request {\"api_key\": \"tpk_supersecretvalue123\"}" });

        var all = await s.QueryAuditAsync(new AuditQuery());
        Assert.Equal(["server.stop", "provision.create", "provision.create"], all.Select(e => e.Action));
        Assert.Equal(t0.ToUnixTimeMilliseconds(), all[2].Time.ToUnixTimeMilliseconds());
        Assert.DoesNotContain("supersecret", all[0].Detail);
        var d = Assert.Single(await s.QueryAuditAsync(new AuditQuery { Outcome = AuditOutcome.Denied }));
        Assert.Equal(("key:2", "vendor not allowed"), (d.Actor, d.Detail));
        Assert.Equal("SN2", Assert.Single(await s.QueryAuditAsync(new AuditQuery { Since = t0.AddSeconds(30), Action = "provision.create" })).Target);
        Assert.Single(await s.QueryAuditAsync(new AuditQuery { Limit = 1 }));

        await Parallel.ForEachAsync(Enumerable.Range(0, 200), new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (i, ct) =>
            await s.AppendAuditAsync(new AuditEntry { Actor = "w" + i, Action = "load", Outcome = AuditOutcome.Success }, ct));
        Assert.Equal(200, (await s.QueryAuditAsync(new AuditQuery { Action = "load" })).Select(r => r.Actor).Distinct().Count());
    }

    private static ManufacturingRecord Record(string vendor, string serial, string ek) => new()
    {
        Serial = serial, Vendor = vendor, DeviceName = "device-" + serial, DeviceVersion = "1", EkFingerprint = ek,
        AkName = "000B" + new string('A', 64), AkCertificateSerial = "01", AkCertificate = [0x30, 0x00], ApiKeyId = "k1",
    };

    [SkippableTheory, MemberData(nameof(Kinds))]
    public async Task ApiKeysAndBindingsBehaveAlike(string kind)
    {
        var s = await _stores.OpenAsync(kind);
        var keys = new ApiKeyManager(s);
        var k = await keys.CreateAsync("line 3", ["Contoso"], 120, actor: "alice");
        Assert.Equal(ApiKeyCheck.Valid, (await keys.AuthenticateAsync(k.Key)).Check);
        Assert.True(await keys.SetEnabledAsync(k.Info.KeyId, false));
        Assert.Equal(ApiKeyCheck.Disabled, (await keys.AuthenticateAsync(k.Key)).Check);
        Assert.Equal("b2", (await keys.UpdateAsync(k.Info.KeyId, name: "b2"))!.Name);
        await Assert.ThrowsAsync<InvalidOperationException>(() => s.InsertApiKeyAsync(new ApiKeyRecord { KeyId = k.Info.KeyId, SecretHash = new byte[32] }));
        Assert.True(await keys.RemoveAsync(k.Info.KeyId));
        Assert.Empty(await keys.ListAsync());

        var (first, id1) = await s.AddManufacturingRecordAsync(Record("V", "S1", "EK1"));
        Assert.Equal(DeviceBindingState.Free, first.State);
        var (again, id2) = await s.AddManufacturingRecordAsync(Record("V", "S1", "EK1"));
        Assert.Equal(DeviceBindingState.SameDevice, again.State);
        Assert.True(id2 > id1);
        Assert.Equal(DeviceBindingState.SerialBoundToOtherEk, (await s.AddManufacturingRecordAsync(Record("V", "S1", "EK2"))).Binding.State);
        Assert.Equal(DeviceBindingState.EkBoundToOtherDevice, (await s.AddManufacturingRecordAsync(Record("V", "S2", "EK1"))).Binding.State);
        Assert.Equal(2, await s.CountManufacturingRecordsAsync());
        Assert.Equal([id2, id1], (await s.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery { Vendor = "V", Serial = "S1" })).Select(r => r.Id));
        Assert.Equal([id2], (await s.PageManufacturingRecordsAsync(0, 1)).Select(r => r.Id));
    }

    [SkippableTheory, MemberData(nameof(Kinds))]
    public async Task OneSerialClaimedByManyDevicesAtOnceGetsOneRecord(string kind)
    {
        // Three store instances on one database play three servers (for SQLite: one file, three pools).
        var s = await _stores.OpenAsync(kind);
        IStore[] servers = kind == "sqlite" ? [s, s, s] : [s, await PostgresStore.OpenAsync(await ConnectionStringOf(s)), await PostgresStore.OpenAsync(await ConnectionStringOf(s))];
        try
        {
            for (int serial = 0; serial < 10; serial++)
            {
                var results = await Task.WhenAll(Enumerable.Range(0, 6).Select(i =>
                    Task.Run(() => servers[i % 3].AddManufacturingRecordAsync(Record("V", "SN" + serial, $"EK{serial}-{i}")))));
                Assert.Single(results, r => r.Binding.State == DeviceBindingState.Free);
                Assert.All(results.Where(r => r.Binding.State != DeviceBindingState.Free), r => Assert.Equal(DeviceBindingState.SerialBoundToOtherEk, r.Binding.State));
                Assert.Single(await s.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery { Vendor = "V", Serial = "SN" + serial }));
            }
        }
        finally
        {
            if (kind != "sqlite") { servers[1].Dispose(); servers[2].Dispose(); }
        }
    }

    private Task<string> ConnectionStringOf(IStore _) => Task.FromResult(_stores.LastPostgresConnectionString!);

    [SkippableTheory, MemberData(nameof(Kinds))]
    public async Task RegistrarAgentsRoundTrip(string kind)
    {
        var s = await _stores.OpenAsync(kind);
        var tag = new byte[32]; tag[0] = 7;
        var a = new RegistrarAgentRecord { AgentId = "agent-1", AikTpm = [1, 2], EkTpm = [3, 4], EkCert = [5], MtlsCert = "PEM", Ip = "127.0.0.1", Port = 9002, RegCount = 1, AuthTagHash = tag };
        await s.UpsertRegistrarAgentAsync(a);
        Assert.Equal(["agent-1"], await s.ListRegistrarAgentIdsAsync());
        Assert.False(await s.ActivateRegistrarAgentAsync("agent-1", new byte[32], DateTimeOffset.UtcNow));
        Assert.True(await s.ActivateRegistrarAgentAsync("agent-1", tag, DateTimeOffset.UtcNow));
        var r = (await s.GetRegistrarAgentAsync("agent-1"))!;
        Assert.True(r.Active);
        Assert.Equal(new byte[] { 1, 2 }, r.AikTpm);
        Assert.Equal((9002, "PEM"), (r.Port, r.MtlsCert));
        var tag2 = new byte[32]; tag2[1] = 9;
        Assert.True(await s.SetPendingRegistrationAsync("agent-1", new PendingRegistration { Ip = "10.0.0.9", Port = 1, AuthTagHash = tag2 }));
        Assert.True(await s.PromotePendingRegistrationAsync("agent-1", tag2, DateTimeOffset.UtcNow));
        Assert.Equal("10.0.0.9", (await s.GetRegistrarAgentAsync("agent-1"))!.Ip);
        Assert.True(await s.DeleteRegistrarAgentAsync("agent-1"));
        Assert.Null(await s.GetRegistrarAgentAsync("agent-1"));
    }

    private static VerifierAgentRecord Agent(string id, string verifier = "v1") => new()
    {
        AgentId = id, Config = new VerifierAgentConfig { Ip = "127.0.0.1", Port = 9002 }, VerifierId = verifier,
        Added = DateTimeOffset.FromUnixTimeMilliseconds(1_700_000_000_000), Updated = DateTimeOffset.FromUnixTimeMilliseconds(1_700_000_000_000),
    };

    [SkippableTheory, MemberData(nameof(Kinds))]
    public async Task VerifierAgentsRoundTrip(string kind)
    {
        var s = await _stores.OpenAsync(kind);
        Assert.True(await s.InsertVerifierAgentAsync(Agent("a1")));
        Assert.False(await s.InsertVerifierAgentAsync(Agent("a1")));
        Assert.True(await s.InsertVerifierAgentAsync(Agent("a2", "v2")));
        var r = (await s.GetVerifierAgentAsync("a1"))!;
        Assert.True(await s.UpdateVerifierAgentAsync(r with { State = OperationalState.GetQuote, AttestationCount = 5, SeverityLevel = null, LastEventId = "x" }));
        r = (await s.GetVerifierAgentAsync("a1"))!;
        Assert.Equal((OperationalState.GetQuote, 5L, "x", 9002), (r.State, r.AttestationCount, r.LastEventId, r.Config.Port));
        Assert.Equal(["a1"], (await s.ListVerifierAgentsAsync("v1")).Select(x => x.AgentId));
        Assert.Equal(2, (await s.ListVerifierAgentsAsync()).Count);
        Assert.True(await s.DeleteVerifierAgentAsync("a1"));
        Assert.False(await s.UpdateVerifierAgentAsync(r));
    }

    [SkippableTheory, MemberData(nameof(Kinds))]
    public async Task KmsRecordsRoundTrip(string kind)
    {
        var s = await _stores.OpenAsync(kind);
        Assert.Equal(new byte[] { 1 }, await s.InitKmsMetaAsync("check", [1]));
        Assert.Equal(new byte[] { 1 }, await s.InitKmsMetaAsync("check", [2]));
        Assert.True(await s.InsertKmsProviderAsync(new KmsProviderRecord { Name = "p", KeyId = "k", WrappedKdk = [9] }));
        Assert.False(await s.InsertKmsProviderAsync(new KmsProviderRecord { Name = "p", KeyId = "k", WrappedKdk = [9] }));
        Assert.True(await s.UpdateKmsProviderAsync("p", "k2", DateTimeOffset.UtcNow));
        Assert.Equal("k2", (await s.GetKmsProviderAsync("p"))!.KeyId);
        var key = new KmsKeyRecord { Id = "key1", Name = "n1", CompartmentId = "c", VaultId = "v", OciKeyId = "o" };
        var v1 = new KmsKeyVersionRecord { Id = "ver1", KeyId = "key1", OciVersionId = "ov1", Origin = "INTERNAL", MaterialOrigin = "native", WrappedMaterial = [1], IsPrimary = true };
        Assert.True(await s.InsertKmsKeyAsync(key, v1));
        var v2 = await s.AddKmsKeyVersionAsync(v1 with { Id = "ver2", OciVersionId = "ov2" });
        Assert.Equal(2, v2.Number);
        var versions = await s.ListKmsKeyVersionsAsync("key1");
        Assert.Equal([false, true], versions.Select(v => v.IsPrimary));
        Assert.Equal("key1", (await s.GetKmsKeyAsync("n1"))!.Id);
        Assert.True(await s.InsertKmsUserAsync(new KmsUserRecord { Name = "u", PasswordHash = [1], Salt = [2], Iterations = 3, Role = "admin" }));
        await s.InsertKmsTokenAsync(new KmsTokenRecord { TokenHash = [7, 7], UserName = "u", Kind = "session", Expires = DateTimeOffset.UtcNow.AddHours(1) });
        Assert.NotNull(await s.GetKmsTokenAsync([7, 7], DateTimeOffset.UtcNow));
        Assert.Null(await s.GetKmsTokenAsync([7, 7], DateTimeOffset.UtcNow.AddHours(2)));
        await s.UpsertKmsRevocationAsync(new KmsRevocationRecord { AgentId = "a", EventId = "e1" });
        await s.UpsertKmsRevocationAsync(new KmsRevocationRecord { AgentId = "a", EventId = "e2" });
        Assert.Equal("e2", (await s.GetKmsRevocationAsync("a"))!.EventId);
        Assert.True(await s.RecordKmsRevocationNoticeAsync([1, 2, 3], DateTimeOffset.UtcNow, DateTimeOffset.UtcNow.AddDays(-1)));
        Assert.False(await s.RecordKmsRevocationNoticeAsync([1, 2, 3], DateTimeOffset.UtcNow, DateTimeOffset.UtcNow.AddDays(-1)));
        Assert.True(await s.DeleteKmsUserAsync("u"));
    }

    [SkippableTheory, MemberData(nameof(Kinds))]
    public async Task StationRecordsRoundTrip(string kind)
    {
        var s = await _stores.OpenAsync(kind);
        await s.AppendDeviceStateAsync(new DeviceStateChange { Serial = "S1", Vendor = "V", State = "connected" });
        await s.AppendDeviceStateAsync(new DeviceStateChange { Serial = "S1", Vendor = "V", State = "provisioned", Detail = "ok" });
        Assert.Equal(["connected", "provisioned"], (await s.GetDeviceHistoryAsync("S1")).Select(h => h.State));
        Assert.Equal("provisioned", Assert.Single(await s.ListStationDevicesAsync(new StationDeviceQuery())).State);
        await s.AppendDeviceLogAsync(new DeviceLogLine { Serial = "S1", Vendor = "V", Log = DeviceLogType.Provisioner, Line = "step 1" });
        Assert.Equal("step 1", Assert.Single(await s.GetDeviceLogAsync("S1", DeviceLogType.Provisioner)).Line);
        await s.InsertStationTokenAsync(new StationTokenRecord { TokenId = "t1", Name = "op", SecretHash = [1] });
        Assert.Single(await s.ListStationTokensAsync());
        Assert.True(await s.RemoveStationTokenAsync("t1"));
        var (_, id) = await s.AddManufacturingRecordAsync(Record("V", "S1", "EK1"));
        await s.UpsertStationRecordInfoAsync(new StationRecordInfo { RecordId = id, ImageName = "img" });
        await s.UpsertStationRecordInfoAsync(new StationRecordInfo { RecordId = id, ImageName = "img2" });
        Assert.Equal("img2", (await s.GetStationRecordInfosAsync([id, 999]))[id].ImageName);
    }

    [SkippableTheory, MemberData(nameof(Kinds))]
    public async Task VerifierLeasesSplitAgentsOnlyOnASharedStore(string kind)
    {
        var s = await _stores.OpenAsync(kind);
        var lease = TimeSpan.FromSeconds(30);
        for (int i = 0; i < 10; i++) Assert.True(await s.InsertVerifierAgentAsync(Agent($"a{i:00}") with { State = OperationalState.GetQuote }));
        Assert.True(await s.InsertVerifierAgentAsync(Agent("failed") with { State = OperationalState.Failed }));
        await s.HeartbeatVerifierAsync("v1", "127.0.0.1:1", lease);
        await s.HeartbeatVerifierAsync("v2", "127.0.0.1:2", lease);
        Assert.Equal((2, 10), await s.VerifierClusterSizeAsync());
        var view = await s.ListVerifierNodesAsync();
        Assert.Equal(["v1", "v2"], view.Select(n => n.VerifierId));
        Assert.Equal((10, "Lagging"), (view[0].Agents, view[0].Health)); // alive, but its agents hold no lease yet
        if (kind == "sqlite")
        {
            Assert.False(s.SupportsLeases);
            await Assert.ThrowsAsync<NotSupportedException>(() => s.ClaimVerifierAgentsAsync("v1", 5, lease));
            return;
        }
        Assert.True(s.SupportsLeases);
        // Two verifiers claim at the same time: SKIP LOCKED gives each agent to exactly one.
        var claims = await Task.WhenAll(Task.Run(() => s.ClaimVerifierAgentsAsync("v1", 6, lease)), Task.Run(() => s.ClaimVerifierAgentsAsync("v2", 6, lease)));
        var all = claims.SelectMany(c => c.Select(x => x.AgentId)).ToList();
        Assert.Equal(all.Count, all.Distinct().Count());
        Assert.DoesNotContain("failed", all);
        Assert.Equal(10, all.Count + (await s.ClaimVerifierAgentsAsync("v1", 10, lease)).Count + (await s.ClaimVerifierAgentsAsync("v2", 10, lease)).Count);
        Assert.Empty(await s.ClaimVerifierAgentsAsync("v3", 10, lease));
        var v1 = (await s.RenewVerifierLeasesAsync("v1", lease)).Select(c => c.AgentId).ToList();
        Assert.Equal(v1.Order(), (await s.ListVerifierAgentsAsync("v1")).Where(a => a.State == OperationalState.GetQuote).Select(a => a.AgentId).Order());
        // A fenced write succeeds for the holder only.
        var rec = (await s.GetVerifierAgentAsync(v1[0]))!;
        Assert.True(await s.UpdateLeasedVerifierAgentAsync(rec with { AttestationCount = 1 }, "v1"));
        Assert.False(await s.UpdateLeasedVerifierAgentAsync(rec with { AttestationCount = 2 }, "v2"));
        // Released leases go to whoever claims next; a short lease expires and moves too.
        await s.ReleaseVerifierLeasesAsync("v1", [v1[0]]);
        Assert.Equal([v1[0]], (await s.ClaimVerifierAgentsAsync("v3", 10, lease)).Select(c => c.AgentId));
        Assert.False(await s.ClaimVerifierAgentAsync("v1", v1[0], lease));
        var nodes = await s.ListVerifierNodesAsync();
        Assert.Equal(["v1", "v2", "v3"], nodes.Select(n => n.VerifierId));
        Assert.Equal(("NoLeases", 1), (nodes[2].Health, nodes[2].Agents)); // v3 claimed one agent but never sent a heartbeat
        Assert.All(nodes, n => Assert.True(n.Alive));
        Assert.Equal(v1.Count - 1, nodes[0].LeasedAgents);
        await s.RenewVerifierLeasesAsync("v2", TimeSpan.FromMilliseconds(1));
        await Task.Delay(50);
        Assert.Empty(await s.RenewVerifierLeasesAsync("v2", lease)); // expired: not renewed
        var v2Node = (await s.ListVerifierNodesAsync())[1];
        Assert.Equal("Lagging", v2Node.Health);
        Assert.Equal(0, v2Node.LeasedAgents);
        Assert.Equal((await s.ListVerifierAgentsAsync("v2")).Count, v2Node.ExpiredAgents);
        Assert.True(v2Node.ExpiredAgents > 0);
        await s.LeaveVerifierClusterAsync("v1");
        Assert.Equal(["v1", "v2", "v3"], (await s.ListVerifierNodesAsync()).Select(n => n.VerifierId)); // v1's agents still name it
        Assert.Null((await s.ListVerifierNodesAsync())[0].Heartbeat);
    }
}
