using System.Net;
using System.Net.WebSockets;
using System.Security.Cryptography.X509Certificates;
using TpmProvisioning.Pki;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Tests.Fixtures;

namespace TpmProvisioning.Tests.Station;

/// <summary>
/// The optional public dashboard: anonymous reads of devices and states only (never logs, keys, scripts, records or the audit
/// log); and /ws/devices closed to anonymous callers by default and to foreign origins always.
/// </summary>
public sealed class StationPublicDashboardTests : IClassFixture<SwtpmFixture>
{
    private readonly SwtpmFixture _tpm;

    public StationPublicDashboardTests(SwtpmFixture tpm) => _tpm = tpm;

    private static async Task<WebSocketException?> TryConnectAsync(StationTestServer s, string? token, string? origin)
    {
        using var ws = new ClientWebSocket();
        if (token is not null) ws.Options.SetRequestHeader("Authorization", "Bearer " + token);
        if (origin is not null) ws.Options.SetRequestHeader("Origin", origin);
        ws.Options.RemoteCertificateValidationCallback = (_, cert, _, errors) => PinnedCaTls.Validates(s.ServerCa, cert, errors);
        try
        {
            await ws.ConnectAsync(new Uri(s.Url.Replace("https://", "wss://") + "/ws/devices"), CancellationToken.None);
            await ws.CloseAsync(WebSocketCloseStatus.NormalClosure, "", CancellationToken.None);
            return null;
        }
        catch (WebSocketException ex) { return ex; }
    }

    [Fact]
    public async Task ClosedByDefaultAndThePublicViewShowsStatesOnly()
    {
        var root = X509Certificate2.CreateFromPem(File.ReadAllText(_tpm.Swtpm.ManufacturerRootPath));
        var issuer = X509Certificate2.CreateFromPem(File.ReadAllText(_tpm.Swtpm.ManufacturerIssuerPath));

        await using (var closed = await StationTestServer.StartAsync(root, issuer))
        {
            Assert.NotNull(await TryConnectAsync(closed, null, null));
            Assert.NotNull(await TryConnectAsync(closed, closed.Token, "https://evil.example"));
            Assert.Null(await TryConnectAsync(closed, closed.Token, null));
            Assert.Equal("UNAUTHENTICATED", StationTestServer.ErrorCode(await closed.GetAsync("/devices", auth: false), HttpStatusCode.Unauthorized));
        }

        await using var s = await StationTestServer.StartAsync(root, issuer, o => o.Station.PublicDashboard = true);
        try
        {
            using (var client = new ProvisioningClient(new ProvisioningClientOptions { Server = new Uri(s.Url), CaCertificate = s.ServerCa }))
            using (var dev = _tpm.Open())
                await client.ProvisionAsync(dev, new DeviceIdentity("door-controller", "PUB-0001", "Contoso", "1"), s.Key.Key,
                    new DeviceProvisioningOptions { TpmCaCertificate = s.TpmCa, ReplaceAkHandle = true });

            var list = await s.GetAsync("/devices", auth: false);
            Assert.Equal(HttpStatusCode.OK, list.Status);
            Assert.Contains("PUB-0001", list.Body);
            Assert.Equal(HttpStatusCode.OK, (await s.GetAsync("/devices/PUB-0001", auth: false)).Status);
            var page = await s.GetAsync("/devices/PUB-0001", auth: false, accept: "text/html");
            Assert.Contains("PROVISIONER-FINISHED", page.Body);
            Assert.DoesNotContain("EK certificate chain", page.Body);
            Assert.Null(await TryConnectAsync(s, null, null));
            foreach (var path in new[] { "/devices/PUB-0001/log/bootstrap", "/devices/PUB-0001/key/public", "/api/v2/manufacturing", "/customisation/list-scripts", "/auditlog", "/api/v2/services", "/options/get" })
                Assert.Equal("UNAUTHENTICATED", StationTestServer.ErrorCode(await s.GetAsync(path, auth: false), HttpStatusCode.Unauthorized));
            Assert.Equal("PRIVATE_KEY_API_DISABLED", StationTestServer.ErrorCode(await s.GetAsync("/devices/PUB-0001/key/private", auth: false), HttpStatusCode.Forbidden));
            Assert.Equal("UNAUTHENTICATED", StationTestServer.ErrorCode(await s.PostJsonAsync("/api/v2/verify-qrcode", "{\"qrcode\":\"PUB-0001\"}", auth: false), HttpStatusCode.Unauthorized));
        }
        finally
        {
            _tpm.EvictPersistent(0x81000002, 0x8100FFFF);
        }
    }
}
