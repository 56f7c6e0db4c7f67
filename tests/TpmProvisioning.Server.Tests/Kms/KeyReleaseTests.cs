using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Kms;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Keylime;

namespace TpmProvisioning.Tests.Kms;

/// <summary>
/// Release to attested devices over mutual TLS: the real registrar role holds the agent's mTLS certificate, a canned verifier
/// (stand-in until the verifier role is merged) reports its state; the revocation webhook takes Keylime-signed notices.
/// </summary>
public sealed class KeyReleaseTests : IAsyncLifetime
{
    private KmsTestServer s = null!;
    private X509Certificate2 agentCert = null!;
    private HttpClient agent = null!;
    private const string AgentId = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000";
    private static readonly byte[] Kdk = RandomNumberGenerator.GetBytes(32);

    private static X509Certificate2 SelfSigned(string cn)
    {
        using var key = RSA.Create(2048);
        var req = new CertificateRequest("CN=" + cn, key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        using var c = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        return X509CertificateLoader.LoadPkcs12(c.Export(X509ContentType.Pkcs12), null);
    }

    public async Task InitializeAsync()
    {
        s = await KmsTestServer.StartAsync();
        agentCert = SelfSigned(AgentId);
        agent = KeylimeTestServer.Client(s.ServerCa, agentCert);
        await s.Store.UpsertRegistrarAgentAsync(new RegistrarAgentRecord { AgentId = AgentId, AikTpm = [1], EkTpm = [2], MtlsCert = agentCert.ExportCertificatePem(), Active = true, RegCount = 1 });
        await s.Engine.CreateProviderAsync("prov", "kid", Kdk, new KmsCaller("test"));
    }

    public async Task DisposeAsync()
    {
        agent.Dispose();
        await s.DisposeAsync();
    }

    private void Verifier(int state, TimeSpan ago) => s.Verifier.Agents[AgentId] = (state, DateTimeOffset.UtcNow.Add(-ago).ToUnixTimeSeconds());

    private Task<(HttpStatusCode, JsonElement)> Release(HttpClient? client = null, string? json = null) =>
        s.SendAsync(HttpMethod.Post, "/api/tpmprov/kms/v1/release", json ?? JsonSerializer.Serialize(new { agent_id = AgentId, provider = "prov", key_identifier = "disk-0" }), client: client ?? agent);

    [Fact]
    public async Task AnAttestedAgentGetsItsKeyAndAFailedOrStaleOneIsRefusedAndBothAreAudited()
    {
        Verifier(3, TimeSpan.FromSeconds(2));
        var (st, body) = await Release();
        Assert.True(st == HttpStatusCode.OK, body.ToString());
        Assert.Equal(Convert.ToBase64String(KmsEngine.DeriveDataKey(Kdk, "disk-0")), body.GetProperty("results").GetProperty("key").GetString());

        // Key and version: the primary, then an explicit version.
        var key = await s.Engine.CreateKeyAsync("dev-key", null, new KmsCaller("test"));
        var (st2, byKey) = await Release(json: JsonSerializer.Serialize(new { agent_id = AgentId, key_id = key.Id }));
        Assert.Equal(HttpStatusCode.OK, st2);
        Assert.Equal(1, byKey.GetProperty("results").GetProperty("version_number").GetInt32());
        Assert.Equal(Convert.ToBase64String((await s.Engine.GetVersionMaterialAsync(key.Id, null)).Material), byKey.GetProperty("results").GetProperty("key").GetString());

        Verifier(7, TimeSpan.FromSeconds(2)); // FAILED
        (st, body) = await Release();
        Assert.Equal(HttpStatusCode.Forbidden, st);
        Assert.Contains("FAILED", body.GetProperty("status").GetString());
        Assert.Equal(0, body.GetProperty("results").EnumerateObject().Count());

        Verifier(4, TimeSpan.FromMinutes(10)); // attesting, but the last good quote is stale
        (st, body) = await Release();
        Assert.Equal(HttpStatusCode.Forbidden, st);
        Assert.Contains("old", body.GetProperty("status").GetString());

        s.Verifier.Agents.TryRemove(AgentId, out _);
        (st, _) = await Release();
        Assert.Equal(HttpStatusCode.Forbidden, st);

        var audit = await s.Store.QueryAuditAsync(new AuditQuery { Action = "kms.release" });
        Assert.Equal(2, audit.Count(e => e.Outcome == AuditOutcome.Success && e.Target == AgentId));
        Assert.Equal(3, audit.Count(e => e.Outcome == AuditOutcome.Denied && e.Target == AgentId));
        Assert.Contains(audit, e => e.Outcome == AuditOutcome.Denied && e.Detail!.Contains("operational_state 7"));
    }

    [Fact]
    public async Task OnlyTheAgentsRegisteredCertificateIsAccepted()
    {
        Verifier(3, TimeSpan.Zero);
        using var other = KeylimeTestServer.Client(s.ServerCa, SelfSigned(AgentId));
        var (st, body) = await Release(other);
        Assert.Equal(HttpStatusCode.Forbidden, st);
        Assert.Contains("registered mTLS certificate", body.GetProperty("status").GetString());
        (st, _) = await Release(s.Http);
        Assert.Equal(HttpStatusCode.Unauthorized, st);
        (st, _) = await Release(json: JsonSerializer.Serialize(new { agent_id = "unknown-agent", provider = "prov", key_identifier = "x" }));
        Assert.Equal(HttpStatusCode.Forbidden, st);
        (st, _) = await Release(json: JsonSerializer.Serialize(new { agent_id = AgentId, provider = "prov", key_identifier = "x", key_id = "k" }));
        Assert.Equal(HttpStatusCode.BadRequest, st);
        (st, _) = await Release(json: JsonSerializer.Serialize(new { agent_id = AgentId, provider = "nope", key_identifier = "x" }));
        Assert.Equal(HttpStatusCode.NotFound, st);
    }

    private static string Notice(RSA key, string agentId, bool maxSalt)
    {
        var msg = JsonSerializer.Serialize(new { type = "revocation", ip = "127.0.0.1", agent_id = agentId, port = 9002, tpm_policy = "{}", meta_data = "{}", event_id = "pcr_validation.failed", severity_label = "emergency", context = "{}" });
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
        Verifier(3, TimeSpan.FromSeconds(1));
        Assert.Equal(HttpStatusCode.OK, (await Release()).Item1);

        using var forger = RSA.Create(2048);
        foreach (var bad in new[] { Notice(forger, AgentId, true), "{\"msg\": 1}", "nope", Notice(s.RevocationKey, AgentId, true).Replace("pcr_validation", "pcr_validatiom") })
        {
            var (bst, bbody) = await s.SendAsync(HttpMethod.Post, "/api/tpmprov/kms/v1/revocations", bad);
            Assert.True(bst is HttpStatusCode.Unauthorized or HttpStatusCode.BadRequest, $"{bst} {bbody}");
        }
        Assert.Null(await s.Store.GetKmsRevocationAsync(AgentId));
        Assert.Equal(HttpStatusCode.OK, (await Release()).Item1);

        var (st, body) = await s.SendAsync(HttpMethod.Post, "/api/tpmprov/kms/v1/revocations", Notice(s.RevocationKey, AgentId, maxSalt: true));
        Assert.True(st == HttpStatusCode.OK, body.ToString());
        Assert.Equal(AgentId, body.GetProperty("results").GetProperty("agent_id").GetString());
        // The verifier still says the agent attests (it has not polled since): release stops anyway.
        var (rst, rbody) = await Release();
        Assert.Equal(HttpStatusCode.Forbidden, rst);
        Assert.Contains("revoked", rbody.GetProperty("status").GetString());
        // A later successful attestation (after the notice) lifts it.
        await Task.Delay(1100);
        Verifier(3, TimeSpan.FromSeconds(-1));
        Assert.Equal(HttpStatusCode.OK, (await Release()).Item1);
        // .NET-style PSS (salt = digest length) verifies too.
        Assert.Equal(HttpStatusCode.OK, (await s.SendAsync(HttpMethod.Post, "/api/tpmprov/kms/v1/revocations", Notice(s.RevocationKey, AgentId, maxSalt: false))).Status);

        var audit = await s.Store.QueryAuditAsync(new AuditQuery { Action = "kms.revocation" });
        Assert.Equal(2, audit.Count(e => e.Outcome == AuditOutcome.Success));
        Assert.Equal(4, audit.Count(e => e.Outcome == AuditOutcome.Rejected));
        Assert.Contains(await s.Store.QueryAuditAsync(new AuditQuery { Action = "kms.release", Outcome = AuditOutcome.Denied }), e => e.Detail!.Contains("revoked"));
    }
}
