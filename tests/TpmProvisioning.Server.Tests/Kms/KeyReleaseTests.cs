using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Hosting;
using TpmProvisioning.Kms;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tests.Keylime;

namespace TpmProvisioning.Tests.Kms;

/// <summary>
/// Release to attested devices over mutual TLS, against the real chain: an agent on swtpm registered at the registrar and
/// watched by the verifier (one server-components CA); the KMS asks both; the revocation webhook takes Keylime-signed notices.
/// </summary>
public sealed class KeyReleaseTests(SwtpmFixture tpm) : IClassFixture<SwtpmFixture>, IAsyncLifetime
{
    private VerifierTestBed bed = null!;
    private IServerHost kms = null!;
    private readonly string kmsData = Directory.CreateTempSubdirectory("tpmprov-kms-rel-").FullName;
    private static readonly byte[] Kdk = RandomNumberGenerator.GetBytes(32);
    private readonly List<IDisposable> owned = [];
    private Func<Task<(HttpStatusCode, JsonElement)>> releaseDisk = null!;

    public async Task InitializeAsync()
    {
        tpm.FlushTransients();
        bed = await VerifierTestBed.StartAsync(tpm, shareRegistrarCa: true);
        kms = await KmsReleaseBed.StartKmsAsync(bed, kmsData, 0, TimeSpan.FromSeconds(30), Kdk);
        releaseDisk = KmsReleaseBed.Device(bed, kms, owned);
    }

    public async Task DisposeAsync()
    {
        foreach (var o in owned) o.Dispose();
        await kms.DisposeAsync();
        await bed.DisposeAsync();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(kmsData, true); } catch (IOException) { }
    }

    private HttpClient DeviceClient(X509Certificate2? cert)
    {
        var c = KeylimeTestServer.Client(X509Certificate2.CreateFromPem(File.ReadAllText(kms.Info.CaCertificatePath!)), cert);
        owned.Add(c);
        return c;
    }

    private HttpClient Agent()
    {
        var cert = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(bed.AgentData, "tls", "server.pfx"), null);
        owned.Add(cert);
        return DeviceClient(cert);
    }

    private async Task<(HttpStatusCode, JsonElement)> Send(HttpClient client, string path, string json)
    {
        using var resp = await client.PostAsync(kms.Info.Urls[0] + path, new StringContent(json, Encoding.UTF8, "application/json"));
        var text = await resp.Content.ReadAsStringAsync();
        return (resp.StatusCode, text.Length == 0 ? default : JsonDocument.Parse(text).RootElement.Clone());
    }

    private Task<(HttpStatusCode, JsonElement)> Release(HttpClient client, object body) =>
        Send(client, "/api/tpmprov/kms/v1/release", JsonSerializer.Serialize(body));

    private async Task AttestAsync()
    {
        using var tenant = bed.Tenant();
        await tenant.AddAsync(bed.AgentId, bed.Body().ToJsonString());
        var s = await VerifierTestBed.WaitForAsync(tenant, bed.AgentId, x => x.AttestationCount >= 1 || x.OperationalState >= 7);
        Assert.True(s.AttestationCount >= 1, $"{s.OperationalState} {s.LastEventId}");
    }

    private async Task<SqliteStore> StoreAsync() => await SqliteStore.OpenAsync(Path.Combine(kmsData, "tpmprovisioning.db"));

    [Fact]
    public async Task AnUnwatchedAgentIsRefusedAndAWatchedOneGetsItsKeyByProviderOrByKeyVersionAllAudited()
    {
        var (st, body) = await releaseDisk();
        Assert.Equal(HttpStatusCode.Forbidden, st);
        Assert.Contains("does not monitor", body.GetProperty("status").GetString());

        await AttestAsync();
        (st, body) = await releaseDisk();
        Assert.True(st == HttpStatusCode.OK, body.ToString());
        Assert.Equal(Convert.ToBase64String(KmsEngine.DeriveDataKey(Kdk, "disk-0")), body.GetProperty("results").GetProperty("key").GetString());

        using var store = await StoreAsync();
        using var engine = await KmsEngine.OpenAsync(store, new InsecureFileMasterKey(Path.Combine(kmsData, "kms")), new KmsSettings { PasswordIterations = 1000 });
        var key = await engine.CreateKeyAsync("dev-key", null, new KmsCaller("test"));
        var (st2, byKey) = await Release(Agent(), new { agent_id = bed.AgentId, key_id = key.Id });
        Assert.Equal(HttpStatusCode.OK, st2);
        Assert.Equal(1, byKey.GetProperty("results").GetProperty("version_number").GetInt32());
        Assert.Equal(Convert.ToBase64String((await engine.GetVersionMaterialAsync(key.Id, null)).Material), byKey.GetProperty("results").GetProperty("key").GetString());

        var audit = await store.QueryAuditAsync(new AuditQuery { Action = "kms.release" });
        Assert.Equal(2, audit.Count(e => e.Outcome == AuditOutcome.Success && e.Target == bed.AgentId));
        Assert.Equal(1, audit.Count(e => e.Outcome == AuditOutcome.Denied && e.Target == bed.AgentId));
    }

    [Fact]
    public async Task OnlyTheAgentsRegisteredCertificateIsAccepted()
    {
        await AttestAsync();
        using var key = RSA.Create(2048);
        var req = new CertificateRequest("CN=" + bed.AgentId, key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        using var self = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        var other = X509CertificateLoader.LoadPkcs12(self.Export(X509ContentType.Pkcs12), null);
        owned.Add(other);
        var body = new { agent_id = bed.AgentId, provider = "fleet", key_identifier = "disk-0" };
        var (st, answer) = await Release(DeviceClient(other), body);
        Assert.Equal(HttpStatusCode.Forbidden, st);
        Assert.Contains("registered mTLS certificate", answer.GetProperty("status").GetString());
        Assert.Equal(HttpStatusCode.Unauthorized, (await Release(DeviceClient(null), body)).Item1);
        Assert.Equal(HttpStatusCode.Forbidden, (await Release(Agent(), new { agent_id = Guid.NewGuid().ToString(), provider = "fleet", key_identifier = "x" })).Item1);
        Assert.Equal(HttpStatusCode.BadRequest, (await Release(Agent(), new { agent_id = bed.AgentId, provider = "fleet", key_identifier = "x", key_id = "k" })).Item1);
        Assert.Equal(HttpStatusCode.NotFound, (await Release(Agent(), new { agent_id = bed.AgentId, provider = "nope", key_identifier = "x" })).Item1);
        // Agent ids are checked where they enter, before anything is asked of the verifier or registrar.
        foreach (var badId in new[] { "../../x", "..", "a b", "x\u0000" })
        {
            var (bst, bbody) = await Release(Agent(), new { agent_id = badId, provider = "fleet", key_identifier = "x" });
            Assert.Equal(HttpStatusCode.BadRequest, bst);
            Assert.Contains("agent_id", bbody.GetProperty("status").GetString());
        }
    }

    /// <summary>Python's time.asctime() of a UTC time, as Keylime's verifier writes event_time ("Thu Dec  3 10:25:14 2026").</summary>
    private static string AscTime(DateTimeOffset t) => $"{t.UtcDateTime:ddd MMM} {t.UtcDateTime.Day,2} {t.UtcDateTime:HH:mm:ss yyyy}";

    private static string Notice(RSA key, string agentId, bool maxSalt, DateTimeOffset? at = null, string? eventId = null, bool withTime = true)
    {
        var fields = new Dictionary<string, object?> { ["type"] = "revocation", ["ip"] = "127.0.0.1", ["agent_id"] = agentId, ["port"] = 9002, ["tpm_policy"] = "{}", ["meta_data"] = "{}", ["event_id"] = eventId ?? "pcr_validation.failed", ["severity_label"] = "emergency", ["context"] = $"{{\"nonce\": \"{Guid.NewGuid()}\"}}" };
        if (withTime) fields["event_time"] = AscTime(at ?? DateTimeOffset.UtcNow);
        var msg = JsonSerializer.Serialize(fields);
        byte[] sig;
        if (maxSalt)
        {
            // Keylime signs with PSS.MAX_LENGTH salt.
            var p = key.ExportParameters(true);
            var priv = new Org.BouncyCastle.Crypto.Parameters.RsaPrivateCrtKeyParameters(
                new(1, p.Modulus), new(1, p.Exponent), new(1, p.D), new(1, p.P), new(1, p.Q), new(1, p.DP), new(1, p.DQ), new(1, p.InverseQ));
            var signer = new Org.BouncyCastle.Crypto.Signers.PssSigner(new Org.BouncyCastle.Crypto.Engines.RsaBlindedEngine(), new Org.BouncyCastle.Crypto.Digests.Sha256Digest(), 256 - 32 - 2);
            signer.Init(true, priv);
            var m = Encoding.UTF8.GetBytes(msg);
            signer.BlockUpdate(m, 0, m.Length);
            sig = signer.GenerateSignature();
        }
        else sig = key.SignData(Encoding.UTF8.GetBytes(msg), HashAlgorithmName.SHA256, RSASignaturePadding.Pss);
        return JsonSerializer.Serialize(new { msg, signature = Convert.ToBase64String(sig) });
    }

    [Fact]
    public async Task ARevocationNoticeStopsReleaseAtOnceAndABadOneChangesNothing()
    {
        await AttestAsync();
        Assert.Equal(HttpStatusCode.OK, (await releaseDisk()).Item1);
        var anyone = DeviceClient(null);
        using var forger = RSA.Create(2048);
        foreach (var bad in new[] { Notice(forger, bed.AgentId, true), "{\"msg\": 1}", "nope", Notice(bed.RevocationKey, bed.AgentId, true).Replace("pcr_validation", "pcr_validatiom") })
        {
            var (bst, bbody) = await Send(anyone, "/api/tpmprov/kms/v1/revocations", bad);
            Assert.True(bst is HttpStatusCode.Unauthorized or HttpStatusCode.BadRequest, $"{bst} {bbody}");
        }
        using (var store = await StoreAsync()) Assert.Null(await store.GetKmsRevocationAsync(bed.AgentId));
        Assert.Equal(HttpStatusCode.OK, (await releaseDisk()).Item1);

        var (st, body) = await Send(anyone, "/api/tpmprov/kms/v1/revocations", Notice(bed.RevocationKey, bed.AgentId, maxSalt: true));
        Assert.True(st == HttpStatusCode.OK, body.ToString());
        Assert.Equal(bed.AgentId, body.GetProperty("results").GetProperty("agent_id").GetString());
        // The verifier still says the agent attests: release stops anyway, until a quote passes after the notice.
        var (rst, rbody) = await releaseDisk();
        Assert.Equal(HttpStatusCode.Forbidden, rst);
        Assert.Contains("revoked", rbody.GetProperty("status").GetString());
        var lifted = HttpStatusCode.Forbidden;
        for (int i = 0; i < 40 && lifted != HttpStatusCode.OK; i++) { await Task.Delay(250); lifted = (await releaseDisk()).Item1; }
        Assert.Equal(HttpStatusCode.OK, lifted);
        // .NET-style PSS (salt = digest length) verifies too.
        Assert.Equal(HttpStatusCode.OK, (await Send(anyone, "/api/tpmprov/kms/v1/revocations", Notice(bed.RevocationKey, bed.AgentId, maxSalt: false))).Item1);

        using var audit = await StoreAsync();
        var rev = await audit.QueryAuditAsync(new AuditQuery { Action = "kms.revocation" });
        Assert.Equal(2, rev.Count(e => e.Outcome == AuditOutcome.Success));
        Assert.Equal(4, rev.Count(e => e.Outcome == AuditOutcome.Rejected));
        Assert.Contains(await audit.QueryAuditAsync(new AuditQuery { Action = "kms.release", Outcome = AuditOutcome.Denied }), e => e.Detail!.Contains("revoked"));
    }

    [Fact]
    public async Task StaleReplayedAndMisaddressedNoticesAreRefusedAndChangeNothing()
    {
        await AttestAsync();
        var anyone = DeviceClient(null);
        // All validly signed by the verifier's revocation key.
        var fresh = Notice(bed.RevocationKey, bed.AgentId, maxSalt: true);
        (string Body, HttpStatusCode Status, string Why)[] refused =
        [
            (Notice(bed.RevocationKey, bed.AgentId, true, DateTimeOffset.UtcNow.AddHours(-1)), HttpStatusCode.BadRequest, "an hour old"),
            (Notice(bed.RevocationKey, bed.AgentId, true, DateTimeOffset.UtcNow.AddHours(1)), HttpStatusCode.BadRequest, "an hour in the future"),
            (Notice(bed.RevocationKey, bed.AgentId, true, withTime: false), HttpStatusCode.BadRequest, "no event_time"),
            (Notice(bed.RevocationKey, "../../x", true), HttpStatusCode.BadRequest, "agent_id with a path"),
            (Notice(bed.RevocationKey, "a b", true), HttpStatusCode.BadRequest, "agent_id with a space"),
        ];
        foreach (var (notice, status, why) in refused)
        {
            var (st, body) = await Send(anyone, "/api/tpmprov/kms/v1/revocations", notice);
            Assert.True(st == status, $"{why}: {st} {body}");
            Assert.Equal((int)status, body.GetProperty("code").GetInt32());
        }
        using (var store = await StoreAsync())
        {
            Assert.Null(await store.GetKmsRevocationAsync(bed.AgentId));
            Assert.Null(await store.GetKmsRevocationAsync("../../x"));
        }
        Assert.Equal(HttpStatusCode.OK, (await releaseDisk()).Item1);

        Assert.Equal(HttpStatusCode.OK, (await Send(anyone, "/api/tpmprov/kms/v1/revocations", fresh)).Item1);
        var (again, againBody) = await Send(anyone, "/api/tpmprov/kms/v1/revocations", fresh);
        Assert.Equal(HttpStatusCode.Conflict, again);
        Assert.Contains("already received", againBody.GetProperty("status").GetString());
        using var audit = await StoreAsync();
        var rev = await audit.QueryAuditAsync(new AuditQuery { Action = "kms.revocation" });
        Assert.Equal(1, rev.Count(e => e.Outcome == AuditOutcome.Success));
        Assert.Equal(refused.Length + 1, rev.Count(e => e.Outcome == AuditOutcome.Rejected));
    }

    [Theory]
    [InlineData("Thu Dec  3 10:25:14 2026", "2026-12-03T10:25:14Z")]
    [InlineData("Mon Nov 30 09:05:01 2026", "2026-11-30T09:05:01Z")]
    [InlineData("2026-12-03T10:25:14Z", "2026-12-03T10:25:14Z")]
    [InlineData("yesterday", null)]
    [InlineData("", null)]
    public void KeylimeEventTimesAreRead(string text, string? expected) =>
        Assert.Equal(expected is null ? null : DateTimeOffset.Parse(expected, System.Globalization.CultureInfo.InvariantCulture), KeyReleaseService.ParseEventTime(text));
}
