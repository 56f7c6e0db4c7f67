using System.Net;
using System.Net.Security;
using System.Net.WebSockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Pki;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Station;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tpm;
using TpmProvisioning.Tpm.Simulator;

namespace TpmProvisioning.Tests.Station;

/// <summary>Two swtpm devices (distinct EKs), each a device on the factory line.</summary>
public sealed class TwoSwtpmFixture : IDisposable
{
    public SwtpmInstance A { get; } = SwtpmInstance.Start(new SwtpmOptions { StateMode = SwtpmStateMode.Fresh });
    public SwtpmInstance B { get; } = SwtpmInstance.Start(new SwtpmOptions { StateMode = SwtpmStateMode.Fresh });

    public void Dispose()
    {
        A.Dispose();
        B.Dispose();
    }
}

/// <summary>
/// The station end to end on real swtpm devices over HTTPS with SQLite: two devices provisioned through the station, the
/// manufacturing database and its pagination, device history and logs, the AK public key against tpm2_readpublic, the
/// private key route, and a WebSocket client seeing the snapshot then each state of a provisioning in order.
/// </summary>
public sealed class StationEndToEndTests : IClassFixture<TwoSwtpmFixture>
{
    private readonly TwoSwtpmFixture _tpms;

    public StationEndToEndTests(TwoSwtpmFixture tpms) => _tpms = tpms;

    private static readonly string[] s_flow =
    [
        DeviceStates.BootstrapStarted, DeviceStates.BootstrapFinished, DeviceStates.TriageStarted, DeviceStates.TriageFinished,
        DeviceStates.ProvisionerStarted, DeviceStates.ProvisionerFinished,
    ];

    private static async Task<DeviceProvisioningResult> ProvisionAsync(StationTestServer s, SwtpmInstance tpm, string serial)
    {
        using var client = new ProvisioningClient(new ProvisioningClientOptions { Server = new Uri(s.Url), CaCertificate = s.ServerCa });
        using var dev = TpmDevice.Open(tpm.ConnectionString);
        return await client.ProvisionAsync(dev, new DeviceIdentity("door-controller", serial, "Contoso", "4.0.2"), s.Key.Key,
            new DeviceProvisioningOptions { TpmCaCertificate = s.TpmCa, ReplaceAkHandle = true });
    }

    [Fact]
    public async Task TwoDevicesProvisionedThroughTheStation()
    {
        var root = X509Certificate2.CreateFromPem(File.ReadAllText(_tpms.A.ManufacturerRootPath));
        var issuer = X509Certificate2.CreateFromPem(File.ReadAllText(_tpms.A.ManufacturerIssuerPath));
        await using var s = await StationTestServer.StartAsync(root, issuer);

        // A WebSocket client connected before anything happens: an empty snapshot, then every state in order.
        using var ws = s.Socket();
        using var wsTimeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        await ws.ConnectAsync(new Uri(s.Url.Replace("https://", "wss://") + "/ws/devices"), wsTimeout.Token);
        var snapshot = await StationTestServer.ReceiveJsonAsync(ws, wsTimeout.Token);
        Assert.Equal("snapshot", snapshot.GetProperty("type").GetString());
        Assert.Equal(0, snapshot.GetProperty("devices").GetArrayLength());

        var a = await ProvisionAsync(s, _tpms.A, "ST-A-0001");
        var b = await ProvisionAsync(s, _tpms.B, "ST-B-0002");

        var seen = new List<(string Serial, string State)>();
        while (seen.Count < 2 * s_flow.Length)
        {
            var ev = await StationTestServer.ReceiveJsonAsync(ws, wsTimeout.Token);
            Assert.Equal("state", ev.GetProperty("type").GetString());
            seen.Add((ev.GetProperty("serial").GetString()!, ev.GetProperty("state").GetString()!));
        }
        Assert.Equal(s_flow.Select(st => ("ST-A-0001", st)).Concat(s_flow.Select(st => ("ST-B-0002", st))), seen);
        await ws.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", CancellationToken.None);

        // A second client gets the snapshot of both devices, newest first.
        using (var ws2 = s.Socket())
        {
            await ws2.ConnectAsync(new Uri(s.Url.Replace("https://", "wss://") + "/ws/devices"), wsTimeout.Token);
            var snap2 = await StationTestServer.ReceiveJsonAsync(ws2, wsTimeout.Token);
            Assert.Equal(["ST-B-0002", "ST-A-0001"], snap2.GetProperty("devices").EnumerateArray().Select(d => d.GetProperty("serial").GetString()));
            Assert.All(snap2.GetProperty("devices").EnumerateArray(), d => Assert.Equal(DeviceStates.ProvisionerFinished, d.GetProperty("state").GetString()));
            await ws2.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", CancellationToken.None);
        }

        // Manufacturing: newest first, numbers as numbers, the identity of the TPM device.
        var all = await s.GetAsync("/api/v2/manufacturing");
        Assert.Equal(HttpStatusCode.OK, all.Status);
        var rows = StationTestServer.Json(all.Body).EnumerateArray().ToList();
        Assert.Equal(["ST-B-0002", "ST-A-0001"], rows.Select(r => r.GetProperty("serial").GetString()));
        var ra = rows[1];
        Assert.Equal(JsonValueKind.Number, ra.GetProperty("id").ValueKind);
        Assert.Equal("door-controller", ra.GetProperty("name").GetString());
        Assert.Equal("Contoso", ra.GetProperty("vendor").GetString());
        Assert.Equal("4.0.2", ra.GetProperty("version").GetString());
        Assert.Equal(a.EkThumbprint, ra.GetProperty("ek_cert_sha256").GetString());
        Assert.Contains("CN=", ra.GetProperty("ek_cert_issuer").GetString());
        Assert.Equal(a.AkCertificate.SerialNumber, ra.GetProperty("ak_cert_serial").GetString());
        Assert.Equal(a.AkCertificate.GetCertHashString(System.Security.Cryptography.HashAlgorithmName.SHA256), ra.GetProperty("ak_cert_sha256").GetString());
        Assert.Equal(s.TpmCa.GetCertHashString(System.Security.Cryptography.HashAlgorithmName.SHA256), ra.GetProperty("tpm_ca_sha256").GetString());
        Assert.StartsWith("file:", ra.GetProperty("tpm_ca_key_label").GetString());
        Assert.Equal(JsonValueKind.Null, ra.GetProperty("agent_id").ValueKind);

        // Exact pagination at the edges.
        async Task<List<string?>> Page(string q) =>
            StationTestServer.Json((await s.GetAsync("/api/v2/manufacturing" + q)).Body).EnumerateArray().Select(r => r.GetProperty("serial").GetString()).ToList();
        Assert.Equal(["ST-B-0002"], await Page("?limit=1"));
        Assert.Equal(["ST-A-0001"], await Page("?offset=1&limit=1"));
        Assert.Equal(["ST-A-0001"], await Page("?offset=1"));
        Assert.Equal(["ST-B-0002", "ST-A-0001"], await Page("?offset=0&limit=2"));
        Assert.Equal(["ST-B-0002", "ST-A-0001"], await Page("?limit=10000"));
        Assert.Empty(await Page("?offset=2"));
        Assert.Empty(await Page("?offset=999&limit=5"));
        foreach (var bad in new[] { "?limit=0", "?limit=-1", "?offset=-1", "?limit=abc", "?offset=1x", "?limit=10001", "?limit=1&limit=2", "?limit=", "?offset=%20" })
            Assert.Equal("INVALID_PARAMETER", StationTestServer.ErrorCode(await s.GetAsync("/api/v2/manufacturing" + bad), HttpStatusCode.BadRequest));

        // Devices: one entry per device, newest first, filter by state.
        var devices = StationTestServer.Json((await s.GetAsync("/devices")).Body).GetProperty("devices").EnumerateArray().ToList();
        Assert.Equal(["ST-B-0002", "ST-A-0001"], devices.Select(d => d.GetProperty("serial").GetString()));
        Assert.Equal("127.0.0.1", devices[0].GetProperty("ip_address").GetString());
        Assert.Equal(2, StationTestServer.Json((await s.GetAsync("/devices?state=PROVISIONER-FINISHED")).Body).GetProperty("devices").GetArrayLength());
        Assert.Equal(0, StationTestServer.Json((await s.GetAsync("/devices?state=TRIAGE-ABORTED")).Body).GetProperty("devices").GetArrayLength());
        Assert.Equal("INVALID_PARAMETER", StationTestServer.ErrorCode(await s.GetAsync("/devices?state=bogus"), HttpStatusCode.BadRequest));

        // Device detail: the history of every transition, with times.
        var detail = StationTestServer.Json((await s.GetAsync("/devices/ST-A-0001")).Body);
        Assert.Equal(DeviceStates.ProvisionerFinished, detail.GetProperty("state").GetString());
        Assert.Equal(s_flow, detail.GetProperty("history").EnumerateArray().Select(h => h.GetProperty("state").GetString()));
        Assert.All(detail.GetProperty("history").EnumerateArray(), h => Assert.EndsWith("Z", h.GetProperty("timestamp").GetString()));
        Assert.Equal(ra.GetProperty("id").GetInt64(), detail.GetProperty("manufacturing_id").GetInt64());
        Assert.Equal(JsonValueKind.Null, detail.GetProperty("attestation").ValueKind);

        // The three logs: every step of the flow, timestamped.
        var bootstrap = await s.GetAsync("/devices/ST-A-0001/log/bootstrap");
        Assert.Equal(HttpStatusCode.OK, bootstrap.Status);
        Assert.Equal("text/plain", bootstrap.Headers!.ContentType!.MediaType);
        Assert.Contains("provisioning request from 127.0.0.1", bootstrap.Body);
        Assert.Contains("EK certificate: serial", bootstrap.Body);
        Assert.Contains($"SHA-256 {a.EkThumbprint}", bootstrap.Body);
        Assert.Contains("EK certificate chain: trusted", bootstrap.Body);
        var triage = (await s.GetAsync("/devices/ST-A-0001/log/triage")).Body;
        foreach (var step in new[] { "EK key: ", "AK: ", $"Name {a.AkName}", "CSR: the signature verifies", "binding: neither the serial nor the EK is bound yet" })
            Assert.Contains(step, triage);
        var prov = (await s.GetAsync("/devices/ST-A-0001/log/provisioner")).Body;
        foreach (var step in new[] { $"AK certificate issued: serial {a.AkCertificate.SerialNumber}", "credential: a fresh secret", "manufacturing record" })
            Assert.Contains(step, prov);
        Assert.All(bootstrap.Body.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => Assert.Matches(@"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", l));

        // The AK public key is the persisted AK's, as tpm2_readpublic reads it from the TPM.
        var pub = await s.GetAsync("/devices/ST-A-0001/key/public");
        Assert.Equal(HttpStatusCode.OK, pub.Status);
        using (var tmp = new TempDir())
        {
            Tpm2Tools.Run(_tpms.A.ConnectionString, "tpm2_readpublic", "-c", "0x" + a.AkHandle.ToString("x"), "-f", "pem", "-o", tmp["ak.pem"]);
            Assert.Equal(PemDer(File.ReadAllText(tmp["ak.pem"])), PemDer(pub.Body));
        }
        Assert.NotEqual(PemDer(pub.Body), PemDer((await s.GetAsync("/devices/ST-B-0002/key/public")).Body));

        // The private key: 403 with the error object whatever the serial, method or credentials, and audited.
        foreach (var (serial, auth) in new[] { ("ST-A-0001", true), ("nope", true), ("ST-B-0002", false), ("..%2F..%2Fetc", false) })
            Assert.Equal("PRIVATE_KEY_API_DISABLED", StationTestServer.ErrorCode(await s.GetAsync($"/devices/{serial}/key/private", auth), HttpStatusCode.Forbidden));
        Assert.Equal("PRIVATE_KEY_API_DISABLED", StationTestServer.ErrorCode(await s.SendAsync(HttpMethod.Post, "/devices/ST-A-0001/key/private"), HttpStatusCode.Forbidden));
        var denied = await s.Store.QueryAuditAsync(new AuditQuery { Action = "station.key.private.denied" });
        Assert.Equal(5, denied.Count);
        Assert.All(denied, e => Assert.Equal(AuditOutcome.Denied, e.Outcome));

        // The audit log route: default limit 100, filters.
        var audit = StationTestServer.Json((await s.GetAsync("/auditlog?event_type=station.key.private.denied")).Body);
        Assert.Equal(5, audit.GetProperty("count").GetInt32());
        Assert.Equal(100, StationTestServer.Json((await s.GetAsync("/auditlog")).Body).GetProperty("limit").GetInt32());
        Assert.Equal(2, StationTestServer.Json((await s.GetAsync("/auditlog?event_type=provision.create&outcome=Success")).Body).GetProperty("count").GetInt32());

        // QR: the label payload and a serial match; anything else does not.
        var recA = Assert.Single(await s.Store.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery { Serial = "ST-A-0001" }));
        var qr = StationTestServer.Json((await s.PostJsonAsync("/api/v2/verify-qrcode", JsonSerializer.Serialize(new { qrcode = DeviceLabels.Payload(recA) }))).Body);
        Assert.True(qr.GetProperty("exists").GetBoolean());
        Assert.Equal("ST-A-0001", qr.GetProperty("serial").GetString());
        Assert.True(StationTestServer.Json((await s.PostJsonAsync("/api/v2/verify-qrcode", "{\"qrcode\":\"ST-B-0002\"}")).Body).GetProperty("exists").GetBoolean());
        Assert.False(StationTestServer.Json((await s.PostJsonAsync("/api/v2/verify-qrcode", "{\"qrcode\":\"ST-C\"}")).Body).GetProperty("exists").GetBoolean());
        var forged = DeviceLabels.Payload(recA).Replace(recA.EkFingerprint, new string('0', 64));
        Assert.False(StationTestServer.Json((await s.PostJsonAsync("/api/v2/verify-qrcode", JsonSerializer.Serialize(new { qrcode = forged }))).Body).GetProperty("exists").GetBoolean());
        foreach (var bad in new[] { "{}", "{\"qrcode\":5}", "{\"qrcode\":\"\"}", "{\"qrcode\":\"  \"}", "{\"qrcode\":\"a\\nb\"}" })
            Assert.Equal("INVALID_PARAMETER", StationTestServer.ErrorCode(await s.PostJsonAsync("/api/v2/verify-qrcode", bad), HttpStatusCode.BadRequest));

        // Services and the provisioning service's log.
        var services = StationTestServer.Json((await s.GetAsync("/api/v2/services")).Body).GetProperty("services").EnumerateArray().ToList();
        Assert.Contains(services, x => x.GetProperty("name").GetString() == "provisioning");
        var station = services.Single(x => x.GetProperty("name").GetString() == "station");
        Assert.Equal(12, station.GetProperty("counters").GetProperty("states_written").GetInt64());
        var slog = StationTestServer.Json((await s.GetAsync("/api/v2/service-log/provisioning?limit=1&order=desc")).Body);
        Assert.Single(slog.GetProperty("logs").EnumerateArray());
        Assert.Contains("Provisioned Contoso/ST-B-0002", slog.GetProperty("logs")[0].GetString());
        Assert.Equal("SERVICE_NOT_FOUND", StationTestServer.ErrorCode(await s.GetAsync("/api/v2/service-log/sshd"), HttpStatusCode.NotFound));

        using (var dev = TpmDevice.Open(_tpms.A.ConnectionString)) dev.EvictPersistent(a.AkHandle);
        using (var dev = TpmDevice.Open(_tpms.B.ConnectionString)) dev.EvictPersistent(b.AkHandle);
    }

    private static byte[] PemDer(string pem)
    {
        Assert.True(System.Security.Cryptography.PemEncoding.TryFind(pem, out var f));
        Assert.Equal("PUBLIC KEY", pem[f.Label]);
        return Convert.FromBase64String(pem[f.Base64Data].ToString());
    }
}
