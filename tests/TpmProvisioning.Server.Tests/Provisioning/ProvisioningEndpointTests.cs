using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Pki;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Provisioning;

/// <summary>The provisioning endpoint over HTTPS with software devices: statuses, error bodies, limits, audit, no stored change on rejection.</summary>
public sealed class ProvisioningEndpointTests : IAsyncLifetime
{
    private readonly TestManufacturer _maker = new();
    private TestServer s = null!;

    public async Task InitializeAsync() => s = await TestServer.StartAsync([(_maker.Root, _maker.Issuer)]);

    public async Task DisposeAsync()
    {
        await s.DisposeAsync();
        _maker.Dispose();
    }

    private SoftwareDevice Device(string serial = "SN-100", string vendor = "Contoso", string name = "camera-100", bool eccAk = false) =>
        new(_maker, new DeviceIdentity(name, serial, vendor, "1.2"), eccAk);

    [Fact]
    public async Task ProvisionsOverHttpsWithTheSpecsJsonShape()
    {
        using var dev = Device();
        var (status, body, _) = await s.PostAsync(dev.Request(s.Key.Key, akAsSpki: true));
        Assert.Equal(HttpStatusCode.OK, status);
        using var doc = JsonDocument.Parse(body);
        Assert.Equal(["credential_bundle", "encrypted_ak_cert", "nonce"], doc.RootElement.EnumerateObject().Select(p => p.Name).Order());
        var resp = JsonSerializer.Deserialize(body, ProvisioningJsonContext.Default.ProvisioningResponse)!;
        using var cert = dev.Open(resp);
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(s.TpmCa);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.VerificationFlags = X509VerificationFlags.IgnoreWrongUsage;
        Assert.True(chain.Build(cert));
        Assert.Equal(KeyIdentity.FromTpmPublic(dev.Ak.Public), KeyIdentity.FromSubjectPublicKeyInfo(cert.PublicKey.ExportSubjectPublicKeyInfo()));
        Assert.Equal(1, await s.Store.CountManufacturingRecordsAsync());
        var audit = (await s.Store.QueryAuditAsync(new AuditQuery { Action = ProvisioningService.AuditAction })).Single();
        Assert.Equal(s.Key.Info.KeyId, audit.Actor);
        Assert.Equal("127.0.0.1", audit.Source);
        Assert.DoesNotContain(s.Key.Key, audit.Detail);
    }

    [Fact]
    public async Task TheNamespacedRouteServesKnownNamespacesAnd404sOthers()
    {
        using var dev = Device();
        Assert.Equal(HttpStatusCode.OK, (await s.PostAsync(dev.Request(s.Key.Key), ProvisioningRoutes.Namespaced("default"))).Status);
        var before = await s.SnapshotAsync();
        var (status, body, _) = await s.PostAsync(dev.Request(s.Key.Key), ProvisioningRoutes.Namespaced("acme"));
        Assert.Equal(HttpStatusCode.NotFound, status);
        Assert.Equal("namespace 'acme' not found", JsonSerializer.Deserialize<string>(body));
        Assert.Equal(before, await s.SnapshotAsync());
        Assert.Equal(HttpStatusCode.NotFound, (await s.PostAsync("{}", "/api/tpm/tpm/unknown")).Status);
    }

    [Fact]
    public async Task KnownNamespacesAreConfigurable()
    {
        await using var s2 = await TestServer.StartAsync([(_maker.Root, _maker.Issuer)], o => o.Provisioning.Namespaces = ["plant-a", "plant-b"]);
        using var dev = Device();
        Assert.Equal(HttpStatusCode.OK, (await s2.PostAsync(dev.Request(s2.Key.Key), ProvisioningRoutes.Namespaced("plant-b"))).Status);
        Assert.Equal(HttpStatusCode.NotFound, (await s2.PostAsync(dev.Request(s2.Key.Key), ProvisioningRoutes.Namespaced("default"))).Status);
    }

    [Fact]
    public async Task TheKeyMayComeInAnAuthorizationHeader()
    {
        using var dev = Device();
        var req = dev.Request(s.Key.Key);
        req.ApiKey = null;
        Assert.Equal(HttpStatusCode.OK, (await s.PostAsync(req, authorization: "APIToken " + s.Key.Key)).Status);
        using var dev2 = Device("SN-101");
        var req2 = dev2.Request("");
        Assert.Equal(HttpStatusCode.OK, (await s.PostAsync(req2, authorization: "Bearer " + s.Key.Key)).Status);
    }

    public static TheoryData<string, HttpStatusCode, string> Rejections => new()
    {
        { "ek-from-untrusted-ca", HttpStatusCode.BadRequest, "ek_cert: does not chain to a trusted TPM manufacturer root" },
        { "ek-pub-not-the-certificates", HttpStatusCode.BadRequest, "ek_pub_key: does not match the EK certificate's public key" },
        { "csr-key-not-the-ak", HttpStatusCode.BadRequest, "csr: its public key is not the AK (ak_pub_key)" },
        { "csr-bad-signature", HttpStatusCode.BadRequest, "csr: signature does not verify" },
        { "ak-not-restricted", HttpStatusCode.BadRequest, "ak_pub_key: not a restricted signing key fit for attestation: restricted missing" },
        { "ak-not-fixedtpm", HttpStatusCode.BadRequest, "ak_pub_key: not a restricted signing key fit for attestation: fixedTPM missing" },
        { "name-of-5", HttpStatusCode.BadRequest, "device.name: must be at least 6 characters" },
        { "malformed-base64", HttpStatusCode.BadRequest, "ek_cert: not valid base64" },
        { "malformed-der", HttpStatusCode.BadRequest, "ak_pub_key: not a DER SubjectPublicKeyInfo" },
        { "malformed-csr-der", HttpStatusCode.BadRequest, "csr: not a DER PKCS#10 request" },
        { "unknown-key", HttpStatusCode.Unauthorized, "api_key: not a valid API key" },
        { "missing-key", HttpStatusCode.Unauthorized, "api_key: missing" },
        { "disabled-key", HttpStatusCode.Forbidden, "api_key: this API key is disabled" },
        { "vendor-not-in-scope", HttpStatusCode.Forbidden, "device.vendor: this API key may not provision devices of vendor 'Fabrikam'" },
        { "second-ek-for-known-serial", HttpStatusCode.Conflict, "device.serial: 'SN-100' of vendor 'Contoso' is already bound to another EK" },
        { "ek-bound-to-other-serial", HttpStatusCode.Conflict, "ek_cert: this EK is already bound to another device" },
    };

    [Theory]
    [MemberData(nameof(Rejections))]
    public async Task RejectionsHaveTheirStatusAFieldNamingMessageAndChangeNothing(string scenario, HttpStatusCode expected, string message)
    {
        using var dev = Device(vendor: scenario == "vendor-not-in-scope" ? "Fabrikam" : "Contoso", name: scenario == "name-of-5" ? "cam-1" : "camera-100");
        var req = dev.Request(s.Key.Key);
        string? auth = null;
        switch (scenario)
        {
            case "ek-from-untrusted-ca":
                using (var rogue = new TestManufacturer("Rogue Fab")) req.EkCert = Convert.ToBase64String(rogue.IssueEkCertificate(dev.EkKey.ExportSubjectPublicKeyInfo()));
                break;
            case "ek-pub-not-the-certificates":
                using (var other = RSA.Create(2048)) req.EkPubKey = Convert.ToBase64String(other.ExportSubjectPublicKeyInfo());
                break;
            case "csr-key-not-the-ak":
                using (var stranger = SoftwareAttestationKey.CreateRsa()) req.Csr = AkCsr.ToPem(AkCsr.Create(stranger.Public, dev.Identity, m => stranger.Sign(m)));
                break;
            case "csr-bad-signature":
                var der = AkCsr.Create(dev.Ak.Public, dev.Identity, m => dev.Ak.Sign(m));
                der[^9] ^= 0x01;
                req.Csr = AkCsr.ToPem(der);
                break;
            case "ak-not-restricted" or "ak-not-fixedtpm":
                var weak = dev.Ak.Public.Clone();
                weak.Attributes &= scenario == "ak-not-restricted" ? ~TpmaObject.Restricted : ~TpmaObject.FixedTpm;
                req.AkPubKey = Convert.ToBase64String(weak.ToTpm2B());
                break;
            case "malformed-base64":
                req.EkCert = "MIIB**not base64**";
                break;
            case "malformed-der":
                req.AkPubKey = Convert.ToBase64String([0x30, 0x82, 0x01, 0x22, 0x30, 0x0D]);
                break;
            case "malformed-csr-der":
                req.Csr = Convert.ToBase64String([0x30, 0x03, 0x02, 0x01, 0x05]);
                break;
            case "unknown-key":
                req.ApiKey = "tpk_0123456789abcdef_" + new string('x', 43);
                break;
            case "missing-key":
                req.ApiKey = null;
                auth = "APIToken some-console-token-not-ours";
                break;
            case "disabled-key":
                await new ApiKeyManager(s.Store).SetEnabledAsync(s.Key.Info.KeyId, false);
                break;
            case "second-ek-for-known-serial":
            {
                using var first = Device();
                Assert.Equal(HttpStatusCode.OK, (await s.PostAsync(first.Request(s.Key.Key))).Status);
                break;
            }
            case "ek-bound-to-other-serial":
                Assert.Equal(HttpStatusCode.OK, (await s.PostAsync(dev.Request(s.Key.Key))).Status);
                req.Device!.Serial = "SN-OTHER";
                break;
        }

        var before = await s.SnapshotAsync();
        int audits = await s.AuditCountAsync();
        var (status, body, _) = await s.PostAsync(req, authorization: auth);
        Assert.Equal(expected, status);
        Assert.StartsWith(message, JsonSerializer.Deserialize<string>(body));
        Assert.Equal(before, await s.SnapshotAsync());
        Assert.Equal(audits + 1, await s.AuditCountAsync());
    }

    [Theory]
    [InlineData("{\"api_key\": \"x\", ", "body: not valid JSON")]
    [InlineData("[1,2]", "body: must be a JSON object")]
    [InlineData("{\"ek_cert\": 5}", "ek_cert: must be a string")]
    [InlineData("{\"device\": \"camera\"}", "device: must be an object")]
    [InlineData("{\"device\": {\"name\": true}}", "device.name: must be a string")]
    [InlineData("null", "body: a JSON object is required")]
    [InlineData("", "body: not valid JSON")]
    public async Task MalformedJsonIs400NamingWhere(string json, string message)
    {
        var before = await s.SnapshotAsync();
        var (status, body, _) = await s.PostAsync(json);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.StartsWith(message, JsonSerializer.Deserialize<string>(body));
        Assert.Equal(before, await s.SnapshotAsync());
    }

    [Fact]
    public async Task TheRateLimitAnswers429WithRetryAfter()
    {
        var slow = await new ApiKeyManager(s.Store).CreateAsync("slow", ["*"], ratePerMinute: 3);
        for (int i = 0; i < 3; i++)
        {
            using var d = Device("RL-" + i);
            Assert.Equal(HttpStatusCode.OK, (await s.PostAsync(d.Request(slow.Key))).Status);
        }
        using var last = Device("RL-X");
        var before = await s.SnapshotAsync();
        var (status, body, headers) = await s.PostAsync(last.Request(slow.Key));
        Assert.Equal(HttpStatusCode.TooManyRequests, status);
        var retry = headers.RetryAfter!.Delta!.Value.TotalSeconds;
        Assert.InRange(retry, 1, 20);
        Assert.StartsWith("api_key: rate limit of 3 requests per minute exceeded", JsonSerializer.Deserialize<string>(body));
        Assert.Equal(before, await s.SnapshotAsync());
        // Other keys are not held back.
        Assert.Equal(HttpStatusCode.OK, (await s.PostAsync(last.Request(s.Key.Key))).Status);
        var audit = (await s.Store.QueryAuditAsync(new AuditQuery { Action = ProvisioningService.AuditAction, Outcome = AuditOutcome.Denied })).Single();
        Assert.Equal(slow.Info.KeyId, audit.Actor);
    }

    [Fact]
    public async Task ADrainingServerAnswers503WithRetryAfter()
    {
        using var dev = Device();
        s.Host.BeginDrain();
        Assert.True(s.Host.Info.Draining);
        var (status, body, headers) = await s.PostAsync(dev.Request(s.Key.Key));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
        Assert.Contains("draining", JsonSerializer.Deserialize<string>(body));
        Assert.Equal(5, headers.RetryAfter!.Delta!.Value.TotalSeconds);
        Assert.Equal(0, await s.Store.CountManufacturingRecordsAsync());
    }

    /// <summary>
    /// Sends raw HTTP/1.1 over TLS with a body of <paramref name="bodyBytes"/>, reading the answer concurrently. Returns the status
    /// line, how many body bytes had been written when it arrived, and whether the server then closed the connection (the
    /// rest of the body could not be written).
    /// </summary>
    private async Task<(string StatusLine, long SentBeforeAnswer, bool ClosedByServer)> SendRawAsync(string headers, long bodyBytes, bool chunked)
    {
        var uri = new Uri(s.Url);
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, uri.Port);
        using var ssl = new SslStream(tcp.GetStream(), false, (_, _, _, _) => true);
        await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = "localhost", ApplicationProtocols = [SslApplicationProtocol.Http11] });
        await ssl.WriteAsync(Encoding.ASCII.GetBytes(headers));
        var readBuf = new byte[4096];
        var read = ssl.ReadAsync(readBuf).AsTask();
        // The body opens a JSON string that never ends, so a streaming parser keeps reading until the cap stops it.
        const string prefix = "{\"csr\": \"";
        var chunk = new byte[64 * 1024];
        long sent = 0, sentBeforeAnswer = -1;
        bool closed = false;
        var deadline = DateTime.UtcNow.AddSeconds(30);
        try
        {
            while (sent < bodyBytes && DateTime.UtcNow < deadline)
            {
                Array.Fill(chunk, (byte)'A');
                if (sent == 0) Encoding.ASCII.GetBytes(prefix).CopyTo(chunk, 0);
                int n = (int)Math.Min(chunk.Length, bodyBytes - sent);
                if (chunked) await ssl.WriteAsync(Encoding.ASCII.GetBytes($"{n:X}\r\n"));
                await ssl.WriteAsync(chunk.AsMemory(0, n));
                if (chunked) await ssl.WriteAsync("\r\n"u8.ToArray());
                sent += n;
                if (read.IsCompleted && sentBeforeAnswer < 0) sentBeforeAnswer = sent;
            }
        }
        catch (IOException)
        {
            closed = true; // the server hung up: it is not reading (or buffering) the rest
        }
        var done = await Task.WhenAny(read, Task.Delay(TimeSpan.FromSeconds(15)));
        Assert.Same(read, done);
        int got = await read;
        if (sentBeforeAnswer < 0) sentBeforeAnswer = sent;
        var text = Encoding.ASCII.GetString(readBuf, 0, got);
        return (text.Split("\r\n")[0], sentBeforeAnswer, closed);
    }

    [Fact]
    public async Task ATwentyMegabyteBodyIsRefusedBeforeItIsRead()
    {
        const long twentyMb = 20L * 1024 * 1024;
        int audits = await s.AuditCountAsync();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var (line, sentBeforeAnswer, closed) = await SendRawAsync(
            $"POST {ProvisioningRoutes.Spec} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {twentyMb}\r\n\r\n", twentyMb, chunked: false);
        Assert.StartsWith("HTTP/1.1 413", line);
        Assert.True(sentBeforeAnswer < twentyMb, "the server answered only after the whole body");
        Assert.True(closed, "the server kept reading the refused body");
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(15));
        Assert.Equal(audits + 1, await s.AuditCountAsync());
        Assert.Equal(HttpStatusCode.OK, (await s.Http.GetAsync(s.Url + "/healthz")).StatusCode); // and the server is fine
    }

    [Fact]
    public async Task AChunkedBodyIsCutAtTheCap()
    {
        const long twentyMb = 20L * 1024 * 1024;
        var (line, _, closed) = await SendRawAsync(
            $"POST {ProvisioningRoutes.Spec} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", twentyMb, chunked: true);
        Assert.StartsWith("HTTP/1.1 413", line);
        Assert.True(closed, "the server kept reading the refused body");
    }

    [Fact]
    public async Task ABodyJustUnderTheCapIsRead()
    {
        // 200 KiB of whitespace around a valid request: under the 256 KiB cap, so it is parsed and answered on its merits.
        using var dev = Device();
        var json = JsonSerializer.Serialize(dev.Request(s.Key.Key), ProvisioningJsonContext.Default.ProvisioningRequest);
        var (status, _, _) = await s.PostAsync(new string(' ', 200 * 1024) + json);
        Assert.Equal(HttpStatusCode.OK, status);
    }
}
