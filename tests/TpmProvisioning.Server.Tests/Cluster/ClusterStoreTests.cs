using System.Net;
using System.Text.Json;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tests.Provisioning;
using Xunit.Abstractions;

namespace TpmProvisioning.Tests.Cluster;

/// <summary>What <see cref="ClusterStoreTests"/> shares: a software TPM manufacturer and a few software agents.</summary>
public sealed class ClusterStoreFixture : IAsyncLifetime
{
    public TestManufacturer Manufacturer { get; } = new();
    public SoftwareAgentFleet Fleet { get; private set; } = null!;
    public async Task InitializeAsync() => Fleet = await SoftwareAgentFleet.StartAsync(12);
    public async Task DisposeAsync()
    {
        if (Fleet is not null) await Fleet.DisposeAsync();
        Manufacturer.Dispose();
    }
}

/// <summary>
/// Servers sharing one real PostgreSQL database: concurrent provisioning of the same serials through three servers leaves one
/// record per serial and answers every conflict 409; PostgreSQL stopped mid-run turns requests into 503 with Retry-After in
/// each surface's shape, and the servers recover by themselves when it is back, with nothing acknowledged lost.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class ClusterStoreTests(PostgresFixture pg, ClusterStoreFixture shared, ITestOutputHelper output) : IClassFixture<ClusterStoreFixture>
{
    private void Trust(string dataPath)
    {
        EkTrustStore.Add(dataPath, shared.Manufacturer.Root, EkTrustKind.Root);
        EkTrustStore.Add(dataPath, shared.Manufacturer.Issuer, EkTrustKind.Intermediate);
    }

    private static async Task<(HttpStatusCode Status, string Body, string? RetryAfter)> ProvisionAsync(HttpClient http, string url, SoftwareDevice device, string key)
    {
        var json = JsonSerializer.Serialize(device.Request(key), ProvisioningJsonContext.Default.ProvisioningRequest);
        var (status, body, resp) = await ClusterNodes.SendAsync(http, HttpMethod.Post, url + ProvisioningRoutes.Spec, json);
        using (resp) return (status, body, resp.Headers.RetryAfter?.ToString());
    }

    [SkippableFact]
    public async Task ConcurrentProvisioningOfTheSameSerialsThroughThreeServersKeepsOneRecordAndAnswers409()
    {
        var db = await pg.CreateDatabaseAsync("prov");
        await using var nodes = new ClusterNodes(db);
        for (int i = 0; i < 3; i++) await nodes.StartAsync(ServerRole.Provisioning, prepare: Trust);
        using var admin = await PostgresStore.OpenAsync(db);
        var key = (await new ApiKeyManager(admin).CreateAsync("plant", ["Contoso"])).Key;

        const int serials = 8;
        var devices = new List<SoftwareDevice>();
        try
        {
            var outcomes = new List<(int Serial, HttpStatusCode Status, string Body)>();
            for (int s = 0; s < serials; s++)
            {
                // Three devices (three EKs) claim one serial at the same moment, each through another server.
                var claimants = Enumerable.Range(0, 3).Select(k => new SoftwareDevice(shared.Manufacturer, new DeviceIdentity($"dev-{s}-{k}", $"CLUSTER-{s:D3}", "Contoso", "1.0"))).ToList();
                devices.AddRange(claimants);
                var results = await Task.WhenAll(claimants.Select((d, k) => Task.Run(() => ProvisionAsync(nodes.Anonymous, nodes.Hosts[k].Info.Urls[0], d, key))));
                outcomes.AddRange(results.Select(r => (s, r.Status, r.Body)));
            }
            foreach (var g in outcomes.GroupBy(o => o.Serial))
            {
                Assert.True(g.Count(o => o.Status == HttpStatusCode.OK) == 1, $"serial {g.Key}: {string.Join(", ", g.Select(o => $"{(int)o.Status} {o.Body}"))}");
                Assert.All(g.Where(o => o.Status != HttpStatusCode.OK), o =>
                {
                    Assert.Equal(HttpStatusCode.Conflict, o.Status);
                    Assert.Contains("already bound", JsonSerializer.Deserialize<string>(o.Body));
                });
                Assert.Single(await admin.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery { Vendor = "Contoso", Serial = $"CLUSTER-{g.Key:D3}" }));
            }
            Assert.Equal(serials, await admin.CountManufacturingRecordsAsync());
            output.WriteLine($"{serials} serials x 3 servers: {outcomes.Count(o => o.Status == HttpStatusCode.OK)} x 200, {outcomes.Count(o => o.Status == HttpStatusCode.Conflict)} x 409, {await admin.CountManufacturingRecordsAsync()} records");
        }
        finally
        {
            foreach (var d in devices) d.Dispose();
        }
    }

    [SkippableFact]
    public async Task PostgresStoppedMidRunAnswers503AndTheServersRecoverByThemselves()
    {
        var db = await pg.CreateDatabaseAsync("outage");
        var fleet = shared.Fleet;
        await using var nodes = new ClusterNodes(db);
        var settings = new Func<string, VerifierSettings>(id => new VerifierSettings { VerifierId = id, QuoteInterval = TimeSpan.FromSeconds(1), LeaseDuration = TimeSpan.FromSeconds(4), MaxRetries = 3 });
        await nodes.StartAsync(ServerRole.Provisioning | ServerRole.Verifier, o => o.Verifier = settings("out-a"), Trust);
        await nodes.StartAsync(ServerRole.Provisioning | ServerRole.Verifier, o => o.Verifier = settings("out-b"), Trust);
        using var admin = await PostgresStore.OpenAsync(db);
        var key = (await new ApiKeyManager(admin).CreateAsync("plant", ["Contoso"])).Key;
        string a = nodes.Hosts[0].Info.Urls[0], b = nodes.Hosts[1].Info.Urls[0];

        var devices = Enumerable.Range(0, 6).Select(i => new SoftwareDevice(shared.Manufacturer, new DeviceIdentity($"outage-device-{i}", $"OUTAGE-{i:D3}", "Contoso", "1.0"))).ToList();
        try
        {
            // Before: acknowledged work.
            for (int i = 0; i < 3; i++)
            {
                var before = await ProvisionAsync(nodes.Anonymous, i % 2 == 0 ? a : b, devices[i], key);
                Assert.True(before.Status == HttpStatusCode.OK, $"{(int)before.Status} {before.Body}");
            }
            for (int i = 0; i < fleet.Count; i++)
            {
                var (st, body, r) = await ClusterNodes.SendAsync(nodes.Tenant, HttpMethod.Post, $"{a}/v2.1/agents/{fleet.AgentIds[i]}", fleet.AddBody(i));
                r.Dispose();
                Assert.True(st == HttpStatusCode.OK, body);
            }
            await WaitUntil(TimeSpan.FromSeconds(60), async () => (await admin.ListVerifierAgentsAsync()).All(x => x.AttestationCount > 0), "agents were not judged before the outage");
            var judgedBefore = (await admin.ListVerifierAgentsAsync()).ToDictionary(x => x.AgentId, x => x.AttestationCount);

            await pg.Server!.StopAsync();
            try
            {
                // Meanwhile: 503 with Retry-After, each surface in its own shape; nothing is acknowledged.
                var p = await ProvisionAsync(nodes.Anonymous, b, devices[3], key);
                Assert.Equal(HttpStatusCode.ServiceUnavailable, p.Status);
                Assert.NotNull(p.RetryAfter);
                Assert.Contains("unavailable", JsonSerializer.Deserialize<string>(p.Body));

                var (kst, kbody, kresp) = await ClusterNodes.SendAsync(nodes.Tenant, HttpMethod.Get, $"{b}/v2.1/agents/{fleet.AgentIds[0]}");
                using (kresp)
                {
                    Assert.Equal(HttpStatusCode.ServiceUnavailable, kst);
                    Assert.NotNull(kresp.Headers.RetryAfter);
                    var env = ClusterNodes.Json(kbody);
                    Assert.Equal(503, env.GetProperty("code").GetInt32());
                    Assert.StartsWith("Service Unavailable", env.GetProperty("status").GetString());
                }
                var (hst, _, hresp) = await ClusterNodes.SendAsync(nodes.Anonymous, HttpMethod.Get, $"{a}/healthz");
                hresp.Dispose();
                Assert.Equal(HttpStatusCode.ServiceUnavailable, hst);
                await Task.Delay(TimeSpan.FromSeconds(2)); // the verifier loops meet the outage too
            }
            finally
            {
                await pg.Server!.StartAgainAsync();
            }

            // After: the servers recover by themselves (no restart), the acknowledged records are there, judging resumes.
            await WaitUntil(TimeSpan.FromSeconds(60), async () => (await ProvisionAsync(nodes.Anonymous, b, devices[4], key)).Status == HttpStatusCode.OK, "provisioning did not recover");
            Assert.Equal(HttpStatusCode.OK, (await ProvisionAsync(nodes.Anonymous, a, devices[5], key)).Status);
            for (int i = 0; i < 3; i++)
                Assert.Single(await admin.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery { Serial = $"OUTAGE-{i:D3}" }));
            Assert.Empty(await admin.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery { Serial = "OUTAGE-003" }));
            await WaitUntil(TimeSpan.FromSeconds(60), async () =>
            {
                var now = await admin.ListVerifierAgentsAsync();
                return now.All(x => x.State == OperationalState.GetQuote && x.AttestationCount > judgedBefore[x.AgentId]);
            }, "the verifiers did not resume judging every agent");
            var (gst, _, gresp) = await ClusterNodes.SendAsync(nodes.Tenant, HttpMethod.Get, $"{b}/v2.1/agents/{fleet.AgentIds[0]}");
            gresp.Dispose();
            Assert.Equal(HttpStatusCode.OK, gst);
            var audit = await admin.QueryAuditAsync(new AuditQuery { Action = "provision.create" });
            output.WriteLine($"outage: {audit.Count} provisioning calls audited; agents judged again after the restart");
        }
        finally
        {
            foreach (var d in devices) d.Dispose();
        }
    }

    [SkippableFact]
    public async Task TheStorePasswordIsNeverLoggedAuditedOrShown()
    {
        const string secret = "pw-Secret-4711-never-shown";
        var db = await pg.CreateDatabaseAsync("secret");
        string dataPath;
        await using (var nodes = new ClusterNodes(db + ";Password=" + secret)) // trust authentication ignores it; the server still holds it
        {
            var host = await nodes.StartAsync(ServerRole.Provisioning | ServerRole.Verifier, o => o.Verifier = new VerifierSettings { VerifierId = "secret-node" }, Trust);
            dataPath = host.Info.DataPath;
            Assert.StartsWith("postgresql Host=127.0.0.1", host.Info.Store);
            Assert.DoesNotContain(secret, host.Info.Store);
            var (st, body, r) = await ClusterNodes.SendAsync(nodes.Anonymous, HttpMethod.Get, host.Info.Urls[0] + "/healthz");
            r.Dispose();
            Assert.Equal(HttpStatusCode.OK, st);
            Assert.Contains("postgresql", body);
            Assert.DoesNotContain(secret, body);
            Assert.DoesNotContain(host.RecentLog(1000), e => (e.Message + e.Exception).Contains(secret, StringComparison.Ordinal));
            await host.StopAsync();
            foreach (var f in Directory.EnumerateFiles(dataPath, "*", SearchOption.AllDirectories))
                Assert.DoesNotContain(secret, await File.ReadAllTextAsync(f));
        }
        using var admin = await PostgresStore.OpenAsync(db);
        Assert.DoesNotContain(await admin.QueryAuditAsync(new AuditQuery()), e => (e.Detail ?? "").Contains(secret, StringComparison.Ordinal));
        // An unreachable database: the start error names host and database, not the password.
        var scratch = Directory.CreateTempSubdirectory("tpmprov-node-").FullName;
        try
        {
            var ex = await Assert.ThrowsAsync<TpmProvisioning.Hosting.ServerStartException>(() => TpmProvisioning.Server.Hosting.ProvisioningServerHost.StartAsync(new ServerOptions
            {
                DataPath = scratch, Port = 0, StoreConnectionString = $"Host=127.0.0.1;Port=1;Database=none;Timeout=2;Password={secret}",
            }));
            Assert.Equal("StoreUnavailable", ex.Reason);
            Assert.DoesNotContain(secret, ex.ToString());
            foreach (var f in Directory.EnumerateFiles(scratch, "*", SearchOption.AllDirectories))
                Assert.DoesNotContain(secret, await File.ReadAllTextAsync(f));
        }
        finally { Directory.Delete(scratch, true); }
    }

    private static async Task WaitUntil(TimeSpan limit, Func<Task<bool>> condition, string what)
    {
        var until = DateTime.UtcNow + limit;
        while (true)
        {
            bool ok;
            try { ok = await condition(); }
            catch (Exception e) when (e is StoreUnavailableException or HttpRequestException) { ok = false; }
            if (ok) return;
            if (DateTime.UtcNow > until) Assert.Fail(what);
            await Task.Delay(250);
        }
    }
}
