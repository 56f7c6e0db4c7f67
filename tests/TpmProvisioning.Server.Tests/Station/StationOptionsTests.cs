using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Configuration;
using TpmProvisioning.Hosting;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Tests.Station;

/// <summary>One station (Provisioning and Station roles) for the options tests; its options object is kept to see live changes.</summary>
public sealed class StationOptionsFixture : IAsyncLifetime
{
    public StationTestServer Server { get; private set; } = null!;
    public ServerOptions Options { get; private set; } = null!;

    /// <summary>A manufacturer root no device chains to: these tests provision nothing.</summary>
    internal static X509Certificate2 DummyRoot()
    {
        using var k = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest("CN=No TPM maker", k, HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        using var c = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(1));
        return X509CertificateLoader.LoadCertificate(c.RawData);
    }

    public async Task InitializeAsync() => Server = await StationTestServer.StartAsync(DummyRoot(), null, o => Options = o);

    public async Task DisposeAsync() => await Server.DisposeAsync();
}

/// <summary>
/// <c>/options/get</c>, <c>/options/validate</c>, <c>/options/set</c>, <c>/options/clear-workdir</c> and the firmware catalogue
/// against a real server: bad, unknown, out-of-range and read-only values are the error object and change nothing (read back
/// from the server and the store); good values are persisted, audited, and applied live (observed over HTTP) or reported as
/// needing a restart.
/// </summary>
public sealed class StationOptionsTests(StationOptionsFixture fx) : IClassFixture<StationOptionsFixture>
{
    private StationTestServer S => fx.Server;

    private async Task<Dictionary<string, string>> FlatAsync()
    {
        var r = await S.GetAsync("/options/get");
        Assert.Equal(HttpStatusCode.OK, r.Status);
        return StationTestServer.Json(r.Body).EnumerateObject().ToDictionary(p => p.Name, p => p.Value.ToString());
    }

    private async Task<string> StoredAsync() =>
        string.Join("\n", (await S.Store.GetSettingsAsync()).Select(s => $"{s.Name}={s.Value}"));

    [Fact]
    public async Task GetListsEverySettingWithItsRuleAndHowItApplies()
    {
        var flat = await FlatAsync();
        foreach (var d in SettingsCatalog.All) Assert.True(flat.ContainsKey(d.Name), d.Name);
        Assert.Equal("1800", flat["STATION_HOOK_TIMEOUT_SECONDS"]);

        var detail = StationTestServer.Json((await S.GetAsync("/options/get?detail=true")).Body).GetProperty("options").EnumerateArray().ToList();
        Assert.Equal(SettingsCatalog.All.Count, detail.Count);
        var hook = detail.Single(o => o.GetProperty("name").GetString() == "STATION_HOOK_TIMEOUT_SECONDS");
        Assert.Equal("live", hook.GetProperty("apply").GetString());
        Assert.Equal(1800, hook.GetProperty("default").GetDouble());
        Assert.Contains("from 1 to 86400", hook.GetProperty("rule").GetString());
        Assert.Equal("start-only", detail.Single(o => o.GetProperty("name").GetString() == "SERVER_PORT").GetProperty("apply").GetString());
        StationTestServer.ErrorCode(await S.GetAsync("/options/get?detail=maybe"), HttpStatusCode.BadRequest);
        Assert.Equal(HttpStatusCode.Unauthorized, (await S.GetAsync("/options/get", auth: false)).Status);
    }

    [Fact]
    public async Task ValidateAnswersForEachValueWithoutChangingAnything()
    {
        string before = await StoredAsync();
        async Task<JsonElement> V(string json)
        {
            var r = await S.PostJsonAsync("/options/validate", json);
            Assert.Equal(HttpStatusCode.OK, r.Status);
            return StationTestServer.Json(r.Body);
        }
        var ok = await V("{\"field\":\"STATION_HOOK_TIMEOUT_SECONDS\",\"value\":90}");
        Assert.True(ok.GetProperty("valid").GetBoolean());
        Assert.False(ok.GetProperty("restart_required").GetBoolean());
        var restart = await V("{\"field\":\"STATION_WATCH_INTERVAL_SECONDS\",\"value\":\"10\"}");
        Assert.True(restart.GetProperty("restart_required").GetBoolean());
        var bad = await V("{\"field\":\"STATION_HOOK_TIMEOUT_SECONDS\",\"value\":\"soon\"}");
        Assert.False(bad.GetProperty("valid").GetBoolean());
        Assert.Equal("INVALID_VALUE", bad.GetProperty("code").GetString());
        Assert.StartsWith("STATION_HOOK_TIMEOUT_SECONDS: must be a number of seconds", bad.GetProperty("error").GetString());
        var range = await V("{\"field\":\"STATION_HOOK_TIMEOUT_SECONDS\",\"value\":0}");
        Assert.Equal("VALUE_OUT_OF_RANGE", range.GetProperty("code").GetString());
        Assert.Equal("READ_ONLY_FIELD", (await V("{\"field\":\"SERVER_PORT\",\"value\":1}")).GetProperty("code").GetString());
        Assert.Equal("UNKNOWN_FIELD", StationTestServer.ErrorCode(await S.PostJsonAsync("/options/validate", "{\"field\":\"RPI_SB_WORKDIR\",\"value\":\"/x\"}"), HttpStatusCode.BadRequest));
        Assert.Equal("MISSING_FIELD_NAME", StationTestServer.ErrorCode(await S.PostJsonAsync("/options/validate", "{\"value\":1}"), HttpStatusCode.BadRequest));
        Assert.Equal("INVALID_JSON", StationTestServer.ErrorCode(await S.PostJsonAsync("/options/validate", "{\"field\":\"\\uD800\",\"value\":1}"), HttpStatusCode.BadRequest));
        Assert.Equal("INVALID_JSON", StationTestServer.ErrorCode(await S.PostJsonAsync("/options/validate", "{\"field\":\"STATION_IMAGE_NAME\",\"value\":\"\\uDC00\"}"), HttpStatusCode.BadRequest));
        Assert.Equal("INVALID_JSON", StationTestServer.ErrorCode(await S.PostJsonAsync("/options/validate", "[1]"), HttpStatusCode.BadRequest));
        Assert.Equal("METHOD_NOT_ALLOWED", StationTestServer.ErrorCode(await S.GetAsync("/options/validate"), HttpStatusCode.MethodNotAllowed));
        // Every station JSON body reader refuses a lone surrogate escape the same way (the part-1 routes too).
        Assert.Equal("INVALID_JSON", StationTestServer.ErrorCode(await S.PostJsonAsync("/customisation/save-script", "{\"filename\":\"x\",\"content\":\"\\uD800\"}"), HttpStatusCode.BadRequest));
        Assert.Equal(before, await StoredAsync());
        Assert.Equal(TimeSpan.FromSeconds(1800), fx.Options.Station.HookTimeout);
    }

    [Fact]
    public async Task ABadUnknownOutOfRangeOrReadOnlyValueIsTheErrorObjectAndChangesNothing()
    {
        var flatBefore = await FlatAsync();
        string storedBefore = await StoredAsync();
        int changesBefore = (await S.Store.QueryAuditAsync(new AuditQuery { Action = "station.options.changed", Limit = 1000 })).Count;
        var cases = new (string What, string Body, string Code, string Names)[]
        {
            ("bad value", "{\"STATION_HOOK_TIMEOUT_SECONDS\":\"soon\"}", "INVALID_VALUE", "STATION_HOOK_TIMEOUT_SECONDS"),
            ("bad boolean", "{\"STATION_PUBLIC_DASHBOARD\":\"yes\"}", "INVALID_VALUE", "STATION_PUBLIC_DASHBOARD"),
            ("object value", "{\"STATION_MAX_SCRIPT_BYTES\":{\"a\":1}}", "INVALID_VALUE", "STATION_MAX_SCRIPT_BYTES"),
            ("out of range", "{\"STATION_HOOK_TIMEOUT_SECONDS\":0}", "VALUE_OUT_OF_RANGE", "STATION_HOOK_TIMEOUT_SECONDS"),
            ("out of range high", "{\"STATION_MAX_SCRIPT_BYTES\":999999999}", "VALUE_OUT_OF_RANGE", "STATION_MAX_SCRIPT_BYTES"),
            ("unknown option", "{\"RPI_SB_WORKDIR\":\"/tmp\"}", "UNKNOWN_FIELD", "RPI_SB_WORKDIR"),
            ("read-only", "{\"SERVER_PORT\":1}", "READ_ONLY_FIELD", "SERVER_PORT"),
            ("payload scripts stay start-only", "{\"AGENT_RUN_PAYLOAD_SCRIPT\":true}", "READ_ONLY_FIELD", "AGENT_RUN_PAYLOAD_SCRIPT"),
            // All or nothing: the good first value is not applied either.
            ("good then bad", "{\"STATION_HOOK_TIMEOUT_SECONDS\":60,\"STATION_MAX_SCRIPT_BYTES\":12}", "VALUE_OUT_OF_RANGE", "STATION_MAX_SCRIPT_BYTES"),
            ("good then unknown", "{\"STATION_PUBLIC_DASHBOARD\":true,\"NOPE\":1}", "UNKNOWN_FIELD", "NOPE"),
            ("huge number", "{\"STATION_HOOK_TIMEOUT_SECONDS\":1e400}", "VALUE_OUT_OF_RANGE", "STATION_HOOK_TIMEOUT_SECONDS"),
            ("lone surrogate value", "{\"STATION_IMAGE_NAME\":\"\\uD800\"}", "INVALID_JSON", "surrogate"),
            ("lone surrogate name", "{\"\\uDF00\":1}", "INVALID_JSON", "surrogate"),
            ("empty object", "{}", "MISSING_REQUIRED_FIELDS", "name"),
            ("not JSON", "{nope", "INVALID_JSON", "JSON"),
        };
        foreach (var (what, body, code, names) in cases)
        {
            var r = await S.PostJsonAsync("/options/set", body);
            Assert.True(r.Status == HttpStatusCode.BadRequest, $"{what}: {r.Status} {r.Body}");
            Assert.True(StationTestServer.ErrorCode(r, HttpStatusCode.BadRequest) == code, $"{what}: {r.Body}");
            Assert.Contains(names, StationTestServer.Json(r.Body).GetProperty("error").GetProperty("detail").GetString());
        }
        Assert.Equal(flatBefore, await FlatAsync());
        Assert.Equal(storedBefore, await StoredAsync());
        Assert.Equal(TimeSpan.FromSeconds(1800), fx.Options.Station.HookTimeout);
        Assert.False(fx.Options.Station.PublicDashboard);
        Assert.Equal(changesBefore, (await S.Store.QueryAuditAsync(new AuditQuery { Action = "station.options.changed", Limit = 1000 })).Count);
        // Refusals are audited as rejected requests.
        Assert.NotEmpty(await S.Store.QueryAuditAsync(new AuditQuery { Action = "station.options.set", Outcome = AuditOutcome.Rejected }));
    }

    [Fact]
    public async Task LiveChangesTakeEffectAtOnceAndRestartOnesAreReported()
    {
        // Before: a 3000-byte script is accepted, a 5000-byte provisioning body is not refused for its size.
        var script = JsonSerializer.Serialize(new { filename = "live-limit", content = "# " + new string('x', 3000) });
        Assert.Equal(HttpStatusCode.OK, (await S.PostJsonAsync("/customisation/save-script", script)).Status);
        var junk = new StringContent(new string('x', 5000), Encoding.UTF8, "application/json");
        Assert.NotEqual(HttpStatusCode.RequestEntityTooLarge, (await S.SendAsync(HttpMethod.Post, "/api/tpm/tpm/provision", junk, auth: false)).Status);

        var r = await S.PostJsonAsync("/options/set", """
            {"STATION_MAX_SCRIPT_BYTES": 2048, "PROVISIONING_MAX_REQUEST_BYTES": "4096", "STATION_HOOK_TIMEOUT_SECONDS": 90,
             "STATION_WATCH_INTERVAL_SECONDS": 12, "VERIFIER_QUOTE_INTERVAL_SECONDS": 5, "SERVER_MAX_BUFFERED_REQUEST_BYTES": 33554432}
            """);
        Assert.True(r.Status == HttpStatusCode.OK, r.Body);
        var answer = StationTestServer.Json(r.Body);
        var applied = answer.GetProperty("changed").EnumerateArray().ToDictionary(c => c.GetProperty("name").GetString()!, c => c.GetProperty("applied").GetString());
        Assert.Equal("live", applied["STATION_MAX_SCRIPT_BYTES"]);
        Assert.Equal("live", applied["PROVISIONING_MAX_REQUEST_BYTES"]);
        Assert.Equal("live", applied["STATION_HOOK_TIMEOUT_SECONDS"]);
        Assert.Equal("live", applied["SERVER_MAX_BUFFERED_REQUEST_BYTES"]);
        Assert.Equal("restart", applied["STATION_WATCH_INTERVAL_SECONDS"]);
        Assert.Equal("restart", applied["VERIFIER_QUOTE_INTERVAL_SECONDS"]); // live setting, but this server hosts no verifier
        Assert.Equal(["STATION_WATCH_INTERVAL_SECONDS", "VERIFIER_QUOTE_INTERVAL_SECONDS"],
            answer.GetProperty("restart_required").EnumerateArray().Select(e => e.GetString()!).Order().ToArray());

        // Live: the same requests are now refused for their size, with each surface's own error shape.
        var big = await S.PostJsonAsync("/customisation/save-script", script);
        Assert.Equal("SCRIPT_TOO_LARGE", StationTestServer.ErrorCode(big, HttpStatusCode.RequestEntityTooLarge));
        junk = new StringContent(new string('x', 5000), Encoding.UTF8, "application/json");
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, (await S.SendAsync(HttpMethod.Post, "/api/tpm/tpm/provision", junk, auth: false)).Status);
        Assert.Equal(TimeSpan.FromSeconds(90), fx.Options.Station.HookTimeout);
        Assert.Equal(32L * 1024 * 1024, fx.Options.MaxBufferedRequestBytes);
        Assert.Equal(TimeSpan.FromSeconds(5), fx.Options.Station.WatchInterval); // restart: the running value is unchanged

        // Read back: values, sources and the pending restart value; persisted and audited.
        var detail = StationTestServer.Json((await S.GetAsync("/options/get?detail=1")).Body).GetProperty("options").EnumerateArray()
            .ToDictionary(o => o.GetProperty("name").GetString()!, o => o);
        Assert.Equal(2048, detail["STATION_MAX_SCRIPT_BYTES"].GetProperty("value").GetInt64());
        Assert.Equal("stored", detail["STATION_MAX_SCRIPT_BYTES"].GetProperty("source").GetString());
        Assert.Equal(5, detail["STATION_WATCH_INTERVAL_SECONDS"].GetProperty("value").GetDouble());
        Assert.Equal(12, detail["STATION_WATCH_INTERVAL_SECONDS"].GetProperty("pending").GetDouble());
        var stored = (await S.Store.GetSettingsAsync()).ToDictionary(s => s.Name, s => s.Value);
        Assert.Equal("2048", stored["STATION_MAX_SCRIPT_BYTES"]);
        Assert.Equal("90", stored["STATION_HOOK_TIMEOUT_SECONDS"]);
        var audit = await S.Store.QueryAuditAsync(new AuditQuery { Action = "station.options.changed", Limit = 100 });
        Assert.Contains(audit, e => e.Target == "STATION_HOOK_TIMEOUT_SECONDS" && e.Detail!.Contains("1800 -> 90") && e.Actor.StartsWith("token:"));
        Assert.Contains(audit, e => e.Target == "STATION_WATCH_INTERVAL_SECONDS" && e.Detail!.Contains("next start"));

        // An empty value resets a nullable setting; back to the defaults for the other tests.
        r = await S.PostJsonAsync("/options/set", """{"STATION_MAX_SCRIPT_BYTES": 1048576, "PROVISIONING_MAX_REQUEST_BYTES": 262144, "STATION_HOOK_TIMEOUT_SECONDS": 1800, "SERVER_MAX_BUFFERED_REQUEST_BYTES": 100663296, "STATION_IMAGE_NAME": ""}""");
        Assert.Equal(HttpStatusCode.OK, r.Status);
        Assert.Equal(HttpStatusCode.OK, (await S.PostJsonAsync("/customisation/save-script", script)).Status);
    }

    [Fact]
    public async Task ClearWorkdirEmptiesTheWorkFolderOnlyAndNeverFollowsLinks()
    {
        var work = Path.Combine(S.DataPath, "station", "work");
        Directory.CreateDirectory(Path.Combine(work, "job-1", "deep"));
        await File.WriteAllTextAsync(Path.Combine(work, "a.tmp"), "12345");
        await File.WriteAllTextAsync(Path.Combine(work, "job-1", "deep", "b.tmp"), "123");
        var outside = Path.Combine(S.DataPath, "keep-me.txt");
        await File.WriteAllTextAsync(outside, "precious");
        var outsideDir = Directory.CreateDirectory(Path.Combine(S.DataPath, "keep-dir")).FullName;
        await File.WriteAllTextAsync(Path.Combine(outsideDir, "c.txt"), "precious too");
        File.CreateSymbolicLink(Path.Combine(work, "link-to-file"), outside);
        Directory.CreateSymbolicLink(Path.Combine(work, "link-to-dir"), outsideDir);
        var dbBefore = new FileInfo(Path.Combine(S.DataPath, "tpmprovisioning.db")).Exists;

        var r = await S.SendAsync(HttpMethod.Post, "/options/clear-workdir");
        Assert.True(r.Status == HttpStatusCode.OK, r.Body);
        var j = StationTestServer.Json(r.Body);
        Assert.True(j.GetProperty("cleared").GetBoolean());
        Assert.Equal(8, j.GetProperty("bytes_removed").GetInt64());
        Assert.True(Directory.Exists(work));
        Assert.Empty(Directory.EnumerateFileSystemEntries(work));
        Assert.Equal("precious", await File.ReadAllTextAsync(outside));
        Assert.Equal("precious too", await File.ReadAllTextAsync(Path.Combine(outsideDir, "c.txt")));
        Assert.True(dbBefore && File.Exists(Path.Combine(S.DataPath, "tpmprovisioning.db")));
        Assert.True(Directory.Exists(Path.Combine(S.DataPath, "ca")));
        Assert.Contains(await S.Store.QueryAuditAsync(new AuditQuery { Action = "station.workdir.cleared" }), e => e.Detail!.Contains("2 file(s)") || e.Detail!.Contains("4 file(s)"));
        Assert.Equal("METHOD_NOT_ALLOWED", StationTestServer.ErrorCode(await S.GetAsync("/options/clear-workdir"), HttpStatusCode.MethodNotAllowed));
        Assert.Equal("UNAUTHENTICATED", StationTestServer.ErrorCode(await S.SendAsync(HttpMethod.Post, "/options/clear-workdir", auth: false), HttpStatusCode.Unauthorized));
    }

    /// <summary>Two families of releases, one with notes, in the data path's firmware folder.</summary>
    internal static string WriteFirmware(string dataPath)
    {
        var root = Path.Combine(dataPath, "station", "firmware");
        Directory.CreateDirectory(Path.Combine(root, "cm4"));
        Directory.CreateDirectory(Path.Combine(root, "cm5"));
        File.WriteAllBytes(Path.Combine(root, "cm4", "pieeprom-2025-01-15.bin"), Encoding.ASCII.GetBytes("cm4 january"));
        File.WriteAllBytes(Path.Combine(root, "cm4", "pieeprom-2025-05-08.bin"), Encoding.ASCII.GetBytes("cm4 may"));
        File.WriteAllText(Path.Combine(root, "cm4", "pieeprom-2025-05-08.md"), "Fixes USB boot on slow hubs.");
        File.WriteAllBytes(Path.Combine(root, "cm5", "pieeprom-2025-05-08.bin"), Encoding.ASCII.GetBytes("cm5 may"));
        File.WriteAllBytes(Path.Combine(root, "cm5", "tpm-fw-1.2.3.bin"), Encoding.ASCII.GetBytes("tpm firmware"));
        File.WriteAllText(Path.Combine(root, "cm5", "README.txt"), "not a release");
        return root;
    }

    [Fact]
    public async Task FirmwareCatalogueListsSelectsAndServesNotesAndRefusesUnknownVersions()
    {
        WriteFirmware(S.DataPath);
        var list = StationTestServer.Json((await S.GetAsync("/options/firmware/list")).Body);
        Assert.Equal(["cm4", "cm5"], list.GetProperty("families").EnumerateArray().Select(e => e.GetString()!).ToArray());
        var releases = list.GetProperty("firmware").EnumerateArray().ToList();
        Assert.Equal(4, releases.Count);
        var may4 = releases.Single(r => r.GetProperty("family").GetString() == "cm4" && r.GetProperty("version").GetString() == "2025-05-08");
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(Encoding.ASCII.GetBytes("cm4 may"))), may4.GetProperty("sha256").GetString());
        Assert.Equal("2025-05-08", may4.GetProperty("date").GetString());
        Assert.True(may4.GetProperty("has_notes").GetBoolean());
        Assert.Equal("tpm-fw", releases.Single(r => r.GetProperty("version").GetString() == "1.2.3").GetProperty("name").GetString());
        Assert.Equal(HttpStatusCode.OK, (await S.GetAsync("/options/firmware")).Status);
        Assert.Single(StationTestServer.Json((await S.GetAsync("/options/firmware?family=cm4")).Body).GetProperty("firmware").EnumerateArray(), r => r.GetProperty("has_notes").GetBoolean());

        var notes = StationTestServer.Json((await S.GetAsync("/options/firmware/notes/2025-05-08?family=cm4")).Body);
        Assert.Equal("Fixes USB boot on slow hubs.", notes.GetProperty("notes").GetString());
        Assert.Equal("", StationTestServer.Json((await S.GetAsync("/options/firmware/notes/1.2.3")).Body).GetProperty("notes").GetString());

        var set = await S.PostJsonAsync("/options/firmware/set", "{\"family\":\"cm4\",\"version\":\"2025-01-15\"}");
        Assert.True(set.Status == HttpStatusCode.OK, set.Body);
        Assert.True(StationTestServer.Json(set.Body).GetProperty("selected").GetBoolean());
        string storedBefore = await StoredAsync();
        Assert.Contains("firmware:cm4=2025-01-15", storedBefore);

        // Unknown versions, traversal and bad names: the error object, the selection unchanged.
        var cases = new (string What, Func<Task<(HttpStatusCode, string, System.Net.Http.Headers.HttpContentHeaders?)>> Call, HttpStatusCode Status, string Code)[]
        {
            ("unknown version set", () => S.PostJsonAsync("/options/firmware/set", "{\"family\":\"cm4\",\"version\":\"2024-12-31\"}"), HttpStatusCode.NotFound, "FIRMWARE_NOT_FOUND"),
            ("version of another family", () => S.PostJsonAsync("/options/firmware/set", "{\"family\":\"cm4\",\"version\":\"1.2.3\"}"), HttpStatusCode.NotFound, "FIRMWARE_NOT_FOUND"),
            ("unknown family", () => S.PostJsonAsync("/options/firmware/set", "{\"family\":\"cm9\",\"version\":\"2025-05-08\"}"), HttpStatusCode.NotFound, "FIRMWARE_NOT_FOUND"),
            ("ambiguous version", () => S.PostJsonAsync("/options/firmware/set", "{\"version\":\"2025-05-08\"}"), HttpStatusCode.BadRequest, "AMBIGUOUS_VERSION"),
            ("traversal family", () => S.PostJsonAsync("/options/firmware/set", "{\"family\":\"../cm4\",\"version\":\"2025-05-08\"}"), HttpStatusCode.BadRequest, "INVALID_FAMILY"),
            ("traversal version", () => S.PostJsonAsync("/options/firmware/set", "{\"family\":\"cm4\",\"version\":\"../../etc/passwd\"}"), HttpStatusCode.BadRequest, "INVALID_VERSION"),
            ("missing version", () => S.PostJsonAsync("/options/firmware/set", "{\"family\":\"cm4\"}"), HttpStatusCode.BadRequest, "MISSING_REQUIRED_FIELDS"),
            ("lone surrogate version", () => S.PostJsonAsync("/options/firmware/set", "{\"family\":\"cm4\",\"version\":\"\\uD800\"}"), HttpStatusCode.BadRequest, "INVALID_JSON"),
                        ("number version", () => S.PostJsonAsync("/options/firmware/set", "{\"family\":\"cm4\",\"version\":20250508}"), HttpStatusCode.BadRequest, "INVALID_PARAMETER"),
            ("unknown notes", () => S.GetAsync("/options/firmware/notes/2024-12-31"), HttpStatusCode.NotFound, "FIRMWARE_NOT_FOUND"),
            ("encoded traversal notes", () => S.GetAsync("/options/firmware/notes/..%2F..%2Fetc%2Fpasswd"), HttpStatusCode.BadRequest, "INVALID_VERSION"),
            ("traversal family notes", () => S.GetAsync("/options/firmware/notes/2025-05-08?family=..%2Fcm4"), HttpStatusCode.BadRequest, "INVALID_FAMILY"),
            ("dot family list", () => S.GetAsync("/options/firmware/list?family=.."), HttpStatusCode.BadRequest, "INVALID_FAMILY"),
            ("GET set", () => S.GetAsync("/options/firmware/set"), HttpStatusCode.MethodNotAllowed, "METHOD_NOT_ALLOWED"),
        };
        foreach (var (what, call, status, code) in cases)
        {
            var r = await call();
            Assert.True(r.Item1 == status, $"{what}: {r.Item1} {r.Item2}");
            Assert.True(StationTestServer.ErrorCode(r, status) == code, $"{what}: {r.Item2}");
        }
        Assert.Equal(storedBefore, await StoredAsync());
        var after = StationTestServer.Json((await S.GetAsync("/options/firmware/list?family=cm4")).Body);
        Assert.Equal("2025-01-15", after.GetProperty("selected").GetProperty("cm4").GetString());
        Assert.Single(after.GetProperty("firmware").EnumerateArray(), r => r.GetProperty("selected").GetBoolean());
        Assert.Contains(await S.Store.QueryAuditAsync(new AuditQuery { Action = "station.firmware.selected" }), e => e.Target == "cm4/2025-01-15");
    }
}

/// <summary>Persisted settings survive a restart and apply at start, except where the start gives the value explicitly.</summary>
public sealed class StationOptionsRestartTests
{
    [Fact]
    public async Task StoredSettingsApplyAtTheNextStartAndExplicitStartValuesWin()
    {
        var dataPath = Directory.CreateTempSubdirectory("tpmprov-options-").FullName;
        IServerHost? host = null;
        SqliteStore? store = null;
        try
        {
            (host, store, var ca) = await ScratchServer.StartAsync(dataPath, [(StationOptionsFixture.DummyRoot(), null)], ServerRole.Station, null);
            var token = (await new TpmProvisioning.Station.StationTokenManager(store).CreateAsync("ops")).Token;
            using (var http = Provisioning.TestServer.TrustingClient(ca))
            {
                using var req = new HttpRequestMessage(HttpMethod.Post, host.Info.Urls[0].TrimEnd('/') + "/options/set")
                {
                    Content = new StringContent("""{"STATION_WATCH_INTERVAL_SECONDS": 12, "STATION_HOOK_TIMEOUT_SECONDS": 90, "STATION_PUBLIC_DASHBOARD": true}""", Encoding.UTF8, "application/json"),
                };
                req.Headers.Authorization = new("Bearer", token);
                using var resp = await http.SendAsync(req);
                Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
            }
            await host.StopAsync();
            store.Dispose();
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();

            ServerOptions? second = null;
            (host, store, _) = await ScratchServer.StartAsync(dataPath, [], ServerRole.Station, o =>
            {
                second = o;
                o.Station.HookTimeout = TimeSpan.FromSeconds(30);
                SettingsCatalog.MarkExplicit(o, ["StationHookTimeout"]);
            });
            Assert.Equal(TimeSpan.FromSeconds(12), second!.Station.WatchInterval);     // stored, applied at start
            Assert.True(second.Station.PublicDashboard);                              // stored, applied at start
            Assert.Equal(TimeSpan.FromSeconds(30), second.Station.HookTimeout);       // the explicit start value wins
            Assert.Contains(host.RecentLog(200), l => l.Message.Contains("Stored settings applied") && l.Message.Contains("STATION_WATCH_INTERVAL_SECONDS"));
            Assert.Contains(host.RecentLog(200), l => l.Message.Contains("STATION_HOOK_TIMEOUT_SECONDS: given as a start parameter"));
        }
        finally
        {
            await ScratchServer.StopAsync(host, store, dataPath);
        }
    }
}
