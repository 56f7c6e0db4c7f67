using Microsoft.Data.Sqlite;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Tests.Provisioning;

/// <summary>API keys and bindings. The store cases run against both providers (<see cref="StoreFactory"/>): SQLite and a real PostgreSQL.</summary>
[Collection(Fixtures.PostgresCollection.Name)]
public sealed class ApiKeyAndStoreTests(Fixtures.PostgresFixture pg) : IAsyncLifetime
{
    private readonly Fixtures.StoreFactory _stores = new(pg);
    public static TheoryData<string> Kinds => Fixtures.StoreFactory.Kinds;

    private readonly string _dir = Directory.CreateTempSubdirectory("tpmprov-keys-").FullName;
    private SqliteStore _store = null!;
    private string Db => Path.Combine(_dir, "store.db");

    public async Task InitializeAsync() => _store = await SqliteStore.OpenAsync(Db);

    public async Task DisposeAsync()
    {
        _store.Dispose();
        await _stores.DisposeAsync();
        SqliteConnection.ClearAllPools();
        Directory.Delete(_dir, true);
    }

    [Fact]
    public async Task AKeyIsShownOnceAndOnlyItsHashIsStored()
    {
        var keys = new ApiKeyManager(_store);
        var k = await keys.CreateAsync("line 3", ["Contoso", "Fabrikam", "contoso"], 120, actor: "alice");
        Assert.Matches("^tpk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$", k.Key);
        Assert.True(ApiKeyManager.TryParseKeyId(k.Key, out var id));
        Assert.Equal(k.Info.KeyId, id);
        Assert.Equal(["Contoso", "Fabrikam"], k.Info.Vendors);
        Assert.Equal(120, k.Info.RatePerMinute);
        Assert.True(k.Info.Enabled);

        var stored = (await _store.GetApiKeyAsync(id))!;
        Assert.Equal(32, stored.SecretHash.Length);
        SqliteConnection.ClearAllPools();
        var fileText = System.Text.Encoding.ASCII.GetString(File.ReadAllBytes(Db)) + (File.Exists(Db + "-wal") ? System.Text.Encoding.ASCII.GetString(File.ReadAllBytes(Db + "-wal")) : "");
        Assert.DoesNotContain(k.Key.Split('_')[2], fileText); // the secret is nowhere in the database
        Assert.Contains(id, fileText);

        var (check, info) = await keys.AuthenticateAsync(k.Key);
        Assert.Equal(ApiKeyCheck.Valid, check);
        Assert.Equal(id, info!.KeyId);
        Assert.Equal(ApiKeyCheck.Missing, (await keys.AuthenticateAsync(" ")).Check);
        Assert.Equal(ApiKeyCheck.Unknown, (await keys.AuthenticateAsync(k.Key.Replace(id, "0123456789abcdef"))).Check);

        var audit = await _store.QueryAuditAsync(new AuditQuery { Action = "provision.apikey.create" });
        Assert.Equal("alice", Assert.Single(audit).Actor);
        Assert.DoesNotContain(k.Key, audit[0].Detail);
    }

    [SkippableTheory, MemberData(nameof(Kinds))]
    public async Task KeysListDisableEnableRescopeAndRemove(string kind)
    {
        var store = await _stores.OpenAsync(kind);
        var keys = new ApiKeyManager(store);
        var a = await keys.CreateAsync("a");
        var b = await keys.CreateAsync("b", ["Contoso"], 10, enabled: false);
        Assert.Equal(["*"], a.Info.Vendors);
        Assert.True(a.Info.AllowsVendor("anyone"));
        Assert.False(b.Info.AllowsVendor("Fabrikam"));
        Assert.True(b.Info.AllowsVendor("CONTOSO"));
        Assert.Equal(new[] { a.Info.KeyId, b.Info.KeyId }.Order(), (await keys.ListAsync()).Select(k => k.KeyId).Order());
        Assert.Equal(ApiKeyCheck.Disabled, (await keys.AuthenticateAsync(b.Key)).Check);

        Assert.True(await keys.SetEnabledAsync(b.Info.KeyId, true));
        Assert.Equal(ApiKeyCheck.Valid, (await keys.AuthenticateAsync(b.Key)).Check);
        var updated = await keys.UpdateAsync(b.Info.KeyId, vendors: ["Fabrikam", "*"], ratePerMinute: 0, name: "b2");
        Assert.Equal(["*"], updated!.Vendors);
        Assert.Equal((0, "b2"), (updated.RatePerMinute, updated.Name));
        Assert.Null(await keys.UpdateAsync("0000000000000000", enabled: false));
        Assert.False(await keys.SetEnabledAsync("0000000000000000", true));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => keys.CreateAsync("neg", null, -1));

        Assert.True(await keys.RemoveAsync(a.Info.KeyId));
        Assert.False(await keys.RemoveAsync(a.Info.KeyId));
        Assert.Equal(ApiKeyCheck.Unknown, (await keys.AuthenticateAsync(a.Key)).Check);
        Assert.Single(await keys.ListAsync());
        var actions = (await store.QueryAuditAsync(new AuditQuery())).Select(e => e.Action).ToList();
        Assert.Contains("provision.apikey.enable", actions);
        Assert.Contains("provision.apikey.update", actions);
        Assert.Contains("provision.apikey.remove", actions);
    }

    [Theory]
    [InlineData("Bearer tpk_x", "tpk_x")]
    [InlineData("bearer  tpk_x ", "tpk_x")]
    [InlineData("APIToken tpk_abc", "tpk_abc")]
    [InlineData("APIToken console-token", null)]
    [InlineData("tpk_abc", "tpk_abc")]
    [InlineData("Basic dXNlcjpwdw==", null)]
    [InlineData("somethingelse", null)]
    [InlineData("", null)]
    public void AuthorizationHeaderForms(string header, string? key) => Assert.Equal(key, ApiKeyManager.FromAuthorizationHeader(header));

    [Fact]
    public void TheRateLimiterRefillsContinuously()
    {
        var time = new ManualTime();
        var rl = new ApiKeyRateLimiter(time);
        for (int i = 0; i < 60; i++) Assert.True(rl.TryAcquire("k", 60, out _));
        Assert.False(rl.TryAcquire("k", 60, out int retry));
        Assert.Equal(1, retry);
        time.Advance(TimeSpan.FromMilliseconds(1500));
        Assert.True(rl.TryAcquire("k", 60, out _));
        Assert.False(rl.TryAcquire("k", 60, out _));
        Assert.True(rl.TryAcquire("other", 60, out _));
        Assert.True(rl.TryAcquire("unlimited", 0, out _));
        // Lowering the rate caps the bucket.
        time.Advance(TimeSpan.FromMinutes(5));
        Assert.True(rl.TryAcquire("k", 1, out _));
        Assert.False(rl.TryAcquire("k", 1, out retry));
        Assert.Equal(60, retry);
    }

    private static ManufacturingRecord Record(string vendor, string serial, string ek, string key = "k1") => new()
    {
        Serial = serial, Vendor = vendor, DeviceName = "device-" + serial, DeviceVersion = "1", EkFingerprint = ek,
        AkName = "000B" + new string('A', 64), AkCertificateSerial = "01", AkCertificate = [0x30, 0x00], ApiKeyId = key,
    };

    [SkippableTheory, MemberData(nameof(Kinds))]
    public async Task BindingsKeepOneEkPerDeviceAndOneDevicePerEk(string kind)
    {
        var store = await _stores.OpenAsync(kind);
        Assert.Equal(DeviceBindingState.Free, (await store.CheckDeviceBindingAsync("V", "S1", "EK1")).State);
        var (first, id1) = await store.AddManufacturingRecordAsync(Record("V", "S1", "EK1"));
        Assert.Equal(DeviceBindingState.Free, first.State);
        Assert.True(id1 > 0);

        Assert.Equal(DeviceBindingState.SameDevice, (await store.CheckDeviceBindingAsync("V", "S1", "EK1")).State);
        var (again, id2) = await store.AddManufacturingRecordAsync(Record("V", "S1", "EK1"));
        Assert.Equal(DeviceBindingState.SameDevice, again.State);
        Assert.True(id2 > id1);

        var serialTaken = await store.AddManufacturingRecordAsync(Record("V", "S1", "EK2"));
        Assert.Equal(DeviceBindingState.SerialBoundToOtherEk, serialTaken.Binding.State);
        Assert.Equal("EK1", serialTaken.Binding.OtherEkFingerprint);
        var ekTaken = await store.AddManufacturingRecordAsync(Record("V", "S2", "EK1"));
        Assert.Equal(DeviceBindingState.EkBoundToOtherDevice, ekTaken.Binding.State);
        Assert.Equal("S1", ekTaken.Binding.OtherSerial);
        // Serials are per vendor.
        Assert.Equal(DeviceBindingState.Free, (await store.AddManufacturingRecordAsync(Record("W", "S1", "EK3"))).Binding.State);
        Assert.Equal(3, await store.CountManufacturingRecordsAsync());

        var recs = await store.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery { Vendor = "V", Serial = "S1" });
        Assert.Equal([id2, id1], recs.Select(r => r.Id));
        Assert.Single(await store.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery { EkFingerprint = "ek3" }));
        Assert.Empty(await store.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery { ApiKeyId = "nobody" }));
        Assert.Single(await store.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery { Limit = 1 }));
        var r0 = recs[0];
        Assert.Equal(("device-S1", "1"), (r0.DeviceName, r0.DeviceVersion));
        Assert.Equal(new byte[] { 0x30, 0x00 }, r0.AkCertificate);
    }

    [SkippableTheory, MemberData(nameof(Kinds))]
    public async Task SchemaVersionTwoIsApplied(string kind)
    {
        var store = await _stores.OpenAsync(kind);
        Assert.True(store.SchemaVersion >= 2);
        Assert.Contains(Migrations.All, m => m.Version == 2);
        await Assert.ThrowsAsync<InvalidOperationException>(async () =>
        {
            var r = new ApiKeyRecord { KeyId = "dup", SecretHash = new byte[32] };
            await store.InsertApiKeyAsync(r);
            await store.InsertApiKeyAsync(r);
        });
    }
}
