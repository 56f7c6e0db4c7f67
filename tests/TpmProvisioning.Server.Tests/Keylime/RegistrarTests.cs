using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using System.Text.Json.Nodes;
using TpmProvisioning.Attestation;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Keylime;

/// <summary>
/// The Keylime registrar over HTTPS on a real swtpm: register and activate with a TPM-made AK (ActivateCredential on the
/// swtpm computes the tag), read back over mutual TLS, and every refusal with its status and no stored change.
/// </summary>
public sealed class RegistrarTests : IClassFixture<SwtpmFixture>, IAsyncLifetime
{
    private readonly SwtpmFixture tpm;
    private KeylimeTestServer s = null!;

    public RegistrarTests(SwtpmFixture fixture)
    {
        tpm = fixture;
        tpm.FlushTransients();
    }

    public async Task InitializeAsync()
    {
        var root = X509Certificate2.CreateFromPem(File.ReadAllText(tpm.Swtpm.ManufacturerRootPath));
        var issuer = X509Certificate2.CreateFromPem(File.ReadAllText(tpm.Swtpm.ManufacturerIssuerPath));
        s = await KeylimeTestServer.StartAsync([(root, issuer)]);
    }

    public async Task DisposeAsync()
    {
        tpm.FlushTransients();
        await s.DisposeAsync();
    }

    private static AgentTpmKeys Keys(TpmDevice dev)
    {
        var ek = dev.CreateEk(EkKind.Rsa2048);
        var ak = dev.CreateAk().Key;
        return new AgentTpmKeys
        {
            EkHandle = ek.Handle,
            AkHandle = ak.Handle,
            EkPublic = ek.Public.ToTpm2B(),
            AkPublic = ak.Public.ToTpm2B(),
            EkCertificate = dev.ReadEkCertificateDer(EkKind.Rsa2048),
        };
    }

    private static string Body(AgentTpmKeys k, Action<JsonObject>? edit = null)
    {
        var o = new JsonObject
        {
            ["ekcert"] = k.EkCertificate is null ? null : Convert.ToBase64String(k.EkCertificate),
            ["ek_tpm"] = Convert.ToBase64String(k.EkPublic),
            ["aik_tpm"] = Convert.ToBase64String(k.AkPublic),
            ["mtls_cert"] = "disabled",
            ["ip"] = "127.0.0.1",
            ["port"] = 9002,
        };
        edit?.Invoke(o);
        return o.ToJsonString();
    }

    private static void AssertEnvelope(JsonElement body, int code)
    {
        Assert.Equal(code, body.GetProperty("code").GetInt32());
        Assert.Equal(JsonValueKind.String, body.GetProperty("status").ValueKind);
        Assert.Equal(JsonValueKind.Object, body.GetProperty("results").ValueKind);
    }

    [Fact]
    public async Task VersionAdvertises20To25AndEveryServedVersionAnswers()
    {
        var (status, body) = await s.SendAsync(HttpMethod.Get, "/version");
        Assert.Equal(HttpStatusCode.OK, status);
        AssertEnvelope(body, 200);
        Assert.Equal("Success", body.GetProperty("status").GetString());
        Assert.Equal("2.5", body.GetProperty("results").GetProperty("current_version").GetString());
        string[] served = ["2.0", "2.1", "2.2", "2.3", "2.4", "2.5"];
        Assert.Equal(served, body.GetProperty("results").GetProperty("supported_versions").EnumerateArray().Select(e => e.GetString()));

        foreach (var v in served)
        {
            var (st, list) = await s.SendAsync(HttpMethod.Get, $"/v{v}/agents/", tenant: true);
            Assert.Equal(HttpStatusCode.OK, st);
            Assert.Equal(JsonValueKind.Array, list.GetProperty("results").GetProperty("uuids").ValueKind);
        }
        foreach (var v in new[] { "1.0", "2.6", "3.0" })
        {
            var (old, oldBody) = await s.SendAsync(HttpMethod.Get, $"/v{v}/agents/", tenant: true);
            Assert.Equal(HttpStatusCode.BadRequest, old);
            AssertEnvelope(oldBody, 400);
        }
    }

    /// <summary>
    /// rust-keylime's agent (keylime/src/registrar_client.rs): GET /version, then POST /v{current_version}/agents/{uuid} with
    /// its Register struct (iak_cert and idevid_cert serialized as null), then activation by PUT /v{version}/agents/{uuid}
    /// (not .../activate) with the JSON body {"auth_tag":"&lt;hex HMAC-SHA384&gt;"}.
    /// </summary>
    [Fact]
    public async Task RustKeylimesActivationCallActivates()
    {
        string id = Guid.NewGuid().ToString();
        using var dev = tpm.Open();
        var keys = Keys(dev);
        var (_, version) = await s.SendAsync(HttpMethod.Get, "/version");
        string v = version.GetProperty("results").GetProperty("current_version").GetString()!;
        string register = "{\"aik_tpm\":\"" + Convert.ToBase64String(keys.AkPublic) + "\",\"ek_tpm\":\"" + Convert.ToBase64String(keys.EkPublic)
            + "\",\"ekcert\":\"" + Convert.ToBase64String(keys.EkCertificate!) + "\",\"iak_cert\":null,\"idevid_cert\":null,\"ip\":\"127.0.0.1\",\"mtls_cert\":\"disabled\",\"port\":9002}";
        var (st, body) = await s.SendAsync(HttpMethod.Post, $"/v{v}/agents/{id}", register);
        Assert.Equal(HttpStatusCode.OK, st);
        var blob = body.GetProperty("results").GetProperty("blob").GetString()!;
        string tag = RegistrarClient.SolveChallenge(dev, keys, id, blob);
        Assert.Matches("^[0-9a-f]{96}$", tag);
        Assert.Equal(HttpStatusCode.NotFound, (await s.SendAsync(HttpMethod.Get, $"/v{v}/agents/{id}", tenant: true)).Status);

        using var req = new HttpRequestMessage(HttpMethod.Put, $"{s.Url}/v{v}/agents/{id}")
        {
            Content = new StringContent("{\"auth_tag\":\"" + tag + "\"}", System.Text.Encoding.UTF8, "application/json"),
        };
        using var resp = await s.Anonymous.SendAsync(req);
        var text = await resp.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
        AssertEnvelope(JsonDocument.Parse(text).RootElement, 200);
        using var tenant = s.RegistrarClient(tenant: true);
        var view = await tenant.GetAsync(id);
        Assert.Equal(1, view.RegCount);

        // Keylime's POST .../activate runs the same activation: a re-registration activates through it (regcount 2).
        (st, body) = await s.SendAsync(HttpMethod.Post, $"/v2.0/agents/{id}", register.Replace("9002", "9004"));
        Assert.Equal(HttpStatusCode.OK, st);
        tag = RegistrarClient.SolveChallenge(dev, keys, id, body.GetProperty("results").GetProperty("blob").GetString()!);
        (st, _) = await s.SendAsync(HttpMethod.Post, $"/v2.0/agents/{id}/activate", "{\"auth_tag\":\"" + tag + "\"}");
        Assert.Equal(HttpStatusCode.OK, st);
        view = await tenant.GetAsync(id);
        Assert.Equal((2, 9004), (view.RegCount, view.Port));

        // A wrong tag on rust-keylime's route is refused like on .../activate, and the active registration is kept.
        (st, body) = await s.SendAsync(HttpMethod.Post, $"/v{v}/agents/{id}", register);
        Assert.Equal(HttpStatusCode.OK, st);
        (st, _) = await s.SendAsync(HttpMethod.Put, $"/v{v}/agents/{id}", "{\"auth_tag\":\"" + new string('a', 96) + "\"}");
        Assert.Equal(HttpStatusCode.BadRequest, st);
        view = await tenant.GetAsync(id);
        Assert.Equal((2, 9004), (view.RegCount, view.Port));
        await tenant.DeleteAsync(id);
    }

    [Fact]
    public async Task AgentRegistersActivatesAndIsReadBackOverMutualTls()
    {
        string id = Guid.NewGuid().ToString();
        using var client = s.RegistrarClient();
        using var tenant = s.RegistrarClient(tenant: true);
        using (var dev = tpm.Open())
        {
            var keys = Keys(dev);
            await client.RegisterAndActivateAsync(dev, keys, new AgentIdentity { AgentId = id, Ip = "127.0.0.1", Port = 9002, MtlsCertificatePem = "disabled" });

            var view = await tenant.GetAsync(id);
            Assert.Equal(1, view.RegCount);
            Assert.Equal(Convert.ToBase64String(keys.AkPublic), view.AikTpm);
            Assert.Equal(Convert.ToBase64String(keys.EkPublic), view.EkTpm);
            Assert.Equal(Convert.ToBase64String(keys.EkCertificate!), view.EkCert);
            Assert.Equal("127.0.0.1", view.Ip);
            Assert.Equal(9002, view.Port);
            Assert.Contains(id, await tenant.ListAsync());

            // The raw answer carries every field of the spec's example.
            var (st, raw) = await s.SendAsync(HttpMethod.Get, $"/v2.1/agents/{id}", tenant: true);
            Assert.Equal(HttpStatusCode.OK, st);
            AssertEnvelope(raw, 200);
            var example = JsonDocument.Parse(KeylimeTestServer.Seed("registrar-get-agent.response.json")).RootElement.GetProperty("results");
            foreach (var p in example.EnumerateObject()) Assert.True(raw.GetProperty("results").TryGetProperty(p.Name, out _), p.Name);

            // Without a client certificate the protected routes refuse.
            var (noCert, noCertBody) = await s.SendAsync(HttpMethod.Get, $"/v2.1/agents/{id}");
            Assert.Equal(HttpStatusCode.Unauthorized, noCert);
            AssertEnvelope(noCertBody, 401);
            Assert.Equal(HttpStatusCode.Unauthorized, (await s.SendAsync(HttpMethod.Get, "/v2.1/agents/")).Status);
            Assert.Equal(HttpStatusCode.Unauthorized, (await s.SendAsync(HttpMethod.Delete, $"/v2.1/agents/{id}")).Status);

            // Re-registration with the same TPM: held pending (the active registration still answers) until it activates,
            // then its contact replaces the old one and regcount is 2.
            var blob = await client.RegisterAsync(new AgentIdentity { AgentId = id, Ip = "127.0.0.2", Port = 9003 }, keys.EkPublic, keys.AkPublic, keys.EkCertificate);
            var held = await tenant.GetAsync(id);
            Assert.Equal((1, "127.0.0.1", 9002), (held.RegCount, held.Ip, held.Port));
            await client.ActivateAsync(id, RegistrarClient.SolveChallenge(dev, keys, id, blob));
            var renewed = await tenant.GetAsync(id);
            Assert.Equal((2, "127.0.0.2", 9003), (renewed.RegCount, renewed.Ip, renewed.Port));
        }

        await tenant.DeleteAsync(id);
        Assert.Equal(HttpStatusCode.NotFound, (await s.SendAsync(HttpMethod.Get, $"/v2.1/agents/{id}", tenant: true)).Status);
        Assert.Equal(HttpStatusCode.NotFound, (await s.SendAsync(HttpMethod.Delete, $"/v2.1/agents/{id}", tenant: true)).Status);
        var audit = await s.Store.QueryAuditAsync(new Storage.AuditQuery { Action = RegistrarService.AuditActivate });
        Assert.Equal(2, audit.Count(a => a.Target == id && a.Outcome == Storage.AuditOutcome.Success));
    }

    [Fact]
    public async Task ThePlainPortServesOnlyRegistrationActivationAndVersion()
    {
        var root = X509Certificate2.CreateFromPem(File.ReadAllText(tpm.Swtpm.ManufacturerRootPath));
        var issuer = X509Certificate2.CreateFromPem(File.ReadAllText(tpm.Swtpm.ManufacturerIssuerPath));
        await using var p = await KeylimeTestServer.StartAsync([(root, issuer)], o => o.Registrar.PlainPort = 0);
        var info = p.Host.Info;
        Assert.NotNull(info.RegistrarPlainPort);
        Assert.NotEqual(info.Port, info.RegistrarPlainPort);
        Assert.Equal($"http://127.0.0.1:{info.RegistrarPlainPort}", info.RegistrarPlainUrl);
        Assert.Single(info.Urls);
        Assert.StartsWith("https://", info.Urls[0]);

        string id = Guid.NewGuid().ToString();
        using var plain = new RegistrarClient(new RegistrarClientOptions { Registrar = new Uri(info.RegistrarPlainUrl!) });
        using var http = new HttpClient();
        using (var dev = tpm.Open())
        {
            var keys = Keys(dev);
            Assert.Equal(KeylimeApi.LatestVersion, (await plain.GetVersionAsync()).CurrentVersion);
            await plain.RegisterAndActivateAsync(dev, keys, new AgentIdentity { AgentId = id, Ip = "127.0.0.1", Port = 9002, MtlsCertificatePem = "disabled" });
        }
        // Reading, listing and deleting: refused on the plain port, served on the TLS port with a client certificate.
        foreach (var (method, path) in new[] { (HttpMethod.Get, $"/v2.1/agents/{id}"), (HttpMethod.Get, "/v2.1/agents/"), (HttpMethod.Delete, $"/v2.1/agents/{id}"), (HttpMethod.Get, "/healthz") })
        {
            using var resp = await http.SendAsync(new HttpRequestMessage(method, info.RegistrarPlainUrl + path));
            Assert.Equal(HttpStatusCode.Forbidden, resp.StatusCode);
            AssertEnvelope(JsonDocument.Parse(await resp.Content.ReadAsStringAsync()).RootElement, 403);
        }
        using (var resp = await http.GetAsync(info.RegistrarPlainUrl + "/nothing/here")) Assert.Equal(HttpStatusCode.Forbidden, resp.StatusCode);
        using (var resp = await http.GetAsync(info.RegistrarPlainUrl + "/v1.0/agents/")) Assert.Equal(HttpStatusCode.BadRequest, resp.StatusCode);
        using var tenant = p.RegistrarClient(tenant: true);
        Assert.Equal(1, (await tenant.GetAsync(id)).RegCount);
        // The TLS port behaves as before: registration open, reading needs the certificate.
        Assert.Equal(HttpStatusCode.Unauthorized, (await p.SendAsync(HttpMethod.Get, $"/v2.1/agents/{id}")).Status);
        Assert.Equal(HttpStatusCode.OK, (await p.SendAsync(HttpMethod.Get, "/version")).Status);
        // A TLS handshake on the plain port fails: it is plain HTTP only.
        using var tls = new RegistrarClient(new RegistrarClientOptions { Registrar = new Uri($"https://127.0.0.1:{info.RegistrarPlainPort}"), CaCertificate = p.ServerCa });
        await Assert.ThrowsAnyAsync<HttpRequestException>(() => tls.GetVersionAsync());
    }

    [Fact]
    public async Task APlainPortEqualToTheServerPortIsRefused()
    {
        var ex = await Assert.ThrowsAsync<Hosting.ServerStartException>(() => Server.Hosting.ProvisioningServerHost.StartAsync(new Hosting.ServerOptions
        {
            DataPath = Path.Combine(s.DataPath, "other"), Port = 18891, Roles = Hosting.ServerRole.Registrar, Registrar = new RegistrarSettings { PlainPort = 18891 },
        }));
        Assert.Equal("Failed", ex.Reason);
    }

    [Fact]
    public async Task TheBlobIsATpm2ToolsCredentialFileThatTpm2ActivatecredentialOpens()
    {
        string id = Guid.NewGuid().ToString();
        using var client = s.RegistrarClient();
        using var dev = tpm.Open();
        var keys = Keys(dev);
        var blob = await client.RegisterAsync(new AgentIdentity { AgentId = id }, keys.EkPublic, keys.AkPublic, keys.EkCertificate);
        var file = Convert.FromBase64String(blob);
        Assert.Equal(0xBADCC0DEu, System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(file));
        Assert.Equal(1u, System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(file.AsSpan(4)));
        var challenge = dev.ActivateCredential(keys.EkHandle, keys.AkHandle, Credential.FromTpm2ToolsFile(file));
        // Keylime's challenge: 32 printable characters; the tag is keyed by their base64 text.
        Assert.Equal(32, challenge.Length);
        Assert.All(challenge, b => Assert.True(char.IsAsciiLetterOrDigit((char)b)));
        var key = System.Text.Encoding.ASCII.GetBytes(Convert.ToBase64String(challenge));
        var tag = Convert.ToHexStringLower(HMACSHA384.HashData(key, System.Text.Encoding.ASCII.GetBytes(id)));
        var (st, body) = await s.SendAsync(HttpMethod.Put, $"/v2.1/agents/{id}/activate", $"{{\"auth_tag\":\"{tag}\"}}");
        Assert.Equal(HttpStatusCode.OK, st);
        AssertEnvelope(body, 200);
        Assert.Equal("Success", body.GetProperty("status").GetString());
    }

    [Fact]
    public async Task AWrongAuthTagDeletesTheRegistration()
    {
        string id = Guid.NewGuid().ToString();
        using var client = s.RegistrarClient();
        using var dev = tpm.Open();
        var keys = Keys(dev);
        await client.RegisterAsync(new AgentIdentity { AgentId = id }, keys.EkPublic, keys.AkPublic, keys.EkCertificate);
        Assert.NotNull(await s.Store.GetRegistrarAgentAsync(id));
        var (st, body) = await s.SendAsync(HttpMethod.Put, $"/v2.1/agents/{id}/activate", "{\"auth_tag\":\"" + new string('a', 96) + "\"}");
        Assert.Equal(HttpStatusCode.BadRequest, st);
        AssertEnvelope(body, 400);
        Assert.Null(await s.Store.GetRegistrarAgentAsync(id));
        Assert.Equal(HttpStatusCode.NotFound, (await s.SendAsync(HttpMethod.Get, $"/v2.1/agents/{id}", tenant: true)).Status);
        Assert.Equal(HttpStatusCode.NotFound, (await s.SendAsync(HttpMethod.Put, $"/v2.1/agents/{id}/activate", "{\"auth_tag\":\"00\"}")).Status);
    }

    [Fact]
    public async Task ARegistrationWithOnlyThePublicKeysCannotTakeOverAnActiveAgent()
    {
        // Anyone can read an agent's ek_tpm and aik_tpm. Re-registering with them, and then failing activation, must leave the
        // active registration exactly as it was: same contact, same certificate, still active, still readable by the KMS.
        string id = Guid.NewGuid().ToString();
        var root = X509Certificate2.CreateFromPem(File.ReadAllText(tpm.Swtpm.ManufacturerRootPath));
        var issuer = X509Certificate2.CreateFromPem(File.ReadAllText(tpm.Swtpm.ManufacturerIssuerPath));
        await using var p = await KeylimeTestServer.StartAsync([(root, issuer)], o => o.Registrar.PlainPort = 0);
        using var client = new RegistrarClient(new RegistrarClientOptions { Registrar = new Uri(p.Host.Info.RegistrarPlainUrl!) });
        using var tenant = p.RegistrarClient(tenant: true);
        using var cca = Pki.ComponentCa.LoadOrCreate(Path.Combine(p.DataPath, "ca"));
        using var agentCert = cca.IssueServerCertificate(["agent"], [IPAddress.Loopback]);
        string mtls = agentCert.ExportCertificatePem();
        using var dev = tpm.Open();
        var keys = Keys(dev);
        await client.RegisterAndActivateAsync(dev, keys, new AgentIdentity { AgentId = id, Ip = "127.0.0.1", Port = 9002, MtlsCertificatePem = mtls });
        var before = await tenant.GetAsync(id);

        using var http = new HttpClient();
        var attack = Body(keys, o => { o["ip"] = "10.6.6.6"; o["port"] = 1; o["mtls_cert"] = "disabled"; });
        using (var resp = await http.PostAsync($"{p.Host.Info.RegistrarPlainUrl}/v2.1/agents/{id}", new StringContent(attack)))
            Assert.Equal(HttpStatusCode.OK, resp.StatusCode); // answered like any registration: the attacker learns nothing
        Assert.Equal(before, await tenant.GetAsync(id));
        Assert.True((await p.Store.GetRegistrarAgentAsync(id))!.Active);

        using (var resp = await http.PutAsync($"{p.Host.Info.RegistrarPlainUrl}/v2.1/agents/{id}/activate", new StringContent("{\"auth_tag\":\"" + new string('a', 96) + "\"}")))
            Assert.Equal(HttpStatusCode.BadRequest, resp.StatusCode);
        var after = await p.Store.GetRegistrarAgentAsync(id);
        Assert.NotNull(after);
        Assert.True(after!.Active);
        Assert.Null(after.Pending);
        Assert.Equal(before, await tenant.GetAsync(id));
        Assert.Equal(mtls, (await tenant.GetAsync(id)).MtlsCert);
        var audit = await p.Store.QueryAuditAsync(new Storage.AuditQuery { Action = RegistrarService.AuditActivate });
        Assert.Contains(audit, a => a.Target == id && a.Outcome == Storage.AuditOutcome.Rejected && a.Detail!.Contains("active registration kept"));

        // The real agent, holding the TPM, can still re-register and activate.
        var blob = await client.RegisterAsync(new AgentIdentity { AgentId = id, Ip = "127.0.0.1", Port = 9010, MtlsCertificatePem = mtls }, keys.EkPublic, keys.AkPublic, keys.EkCertificate);
        await client.ActivateAsync(id, RegistrarClient.SolveChallenge(dev, keys, id, blob));
        var renewed = await tenant.GetAsync(id);
        Assert.Equal((2, 9010), (renewed.RegCount, renewed.Port));
    }

    [Fact]
    public async Task RefusalsAnswer400AndStoreNothing()
    {
        using var dev = tpm.Open();
        var keys = Keys(dev);
        string id = Guid.NewGuid().ToString();
        var before = await s.SnapshotAsync();

        // An AIK that is not restricted (a software key as tpm2_loadexternal would load it: plain signing, no fixedTPM).
        using var rsa = RSA.Create(2048);
        var soft = TpmTemplates.AkRsa2048;
        soft.Attributes &= ~(TpmaObject.Restricted | TpmaObject.FixedTpm | TpmaObject.FixedParent | TpmaObject.SensitiveDataOrigin);
        soft.Modulus = rsa.ExportParameters(false).Modulus!;
        // An EK certificate for the right key from a CA nobody trusts.
        using var rogueKey = RSA.Create(2048);
        var rogueReq = new CertificateRequest("CN=Rogue TPM Maker", rogueKey, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        rogueReq.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        using var rogueCa = rogueReq.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(1));
        using var ekRsa = RSA.Create();
        ekRsa.ImportParameters(TpmPublic.ParseTpm2B(keys.EkPublic).ToRsaParameters());
        var leafReq = new CertificateRequest("CN=ek", ekRsa, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        using var rogueEkCert = leafReq.Create(rogueCa, DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(1), [1, 2, 3]);
        // An EK that is not the one in the certificate.
        var otherEk = TpmTemplates.EkRsa2048;
        otherEk.Modulus = rsa.ExportParameters(false).Modulus!;

        (string Path, string Body, string Why)[] cases =
        [
            ($"/v2.1/agents/{id}", Body(keys, o => o["aik_tpm"] = Convert.ToBase64String(soft.ToTpm2B())), "unrestricted AIK"),
            ($"/v2.1/agents/{id}", Body(keys, o => o["ekcert"] = Convert.ToBase64String(rogueEkCert.RawData)), "EK certificate from an untrusted CA"),
            ($"/v2.1/agents/{id}", Body(keys, o => o["ek_tpm"] = Convert.ToBase64String(otherEk.ToTpm2B())), "EK not matching its certificate"),
            ("/v2.1/agents/not-a-uuid", Body(keys), "malformed uuid"),
            ("/v2.1/agents/d432fbb3-d2f1-4a97-9ef7-75bd81c0000%21", Body(keys), "malformed uuid (escaped)"),
            ($"/v2.1/agents/{id}", Body(keys, o => o["aik_tpm"] = "not base64!"), "bad base64"),
            ($"/v2.1/agents/{id}", Body(keys, o => o["ek_tpm"] = Convert.ToBase64String(new byte[] { 0, 4, 1, 2, 3, 4 })), "not a TPM2B_PUBLIC"),
            ($"/v2.1/agents/{id}", Body(keys, o => o["ekcert"] = Convert.ToBase64String(new byte[] { 0x30, 0x03, 1, 2, 3 })), "not a certificate"),
            ($"/v2.1/agents/{id}", Body(keys, o => o.Remove("aik_tpm")), "no AIK"),
            ($"/v2.1/agents/{id}", Body(keys, o => o["port"] = "ninety"), "bad port"),
            ($"/v2.1/agents/{id}", Body(keys, o => o["aik_tpm"] = Convert.ToBase64String(WithCipher(keys.AkPublic))), "restricted signing AK with an AES symmetric"),
            ($"/v2.1/agents/{id}", Body(keys, o => o["ip"] = "1.1.1.1'; DROP TABLE x;--"), "SQL in ip"),
            ($"/v2.1/agents/{id}", Body(keys, o => o["ip"] = "127.0.0.1\u0000evil"), "NUL in ip"),
            ($"/v2.1/agents/{id}", Body(keys, o => o["ip"] = "https://127.0.0.1:9002/"), "URL as ip"),
            ($"/v2.1/agents/{id}", Body(keys, o => o["ip"] = new string('a', 5000)), "5000-character ip"),
            ($"/v2.1/agents/{id}", Body(keys, o => o["ip"] = "999.1.1.1"), "not an IPv4 address"),
            ($"/v2.1/agents/{id}", Body(keys).Replace("\"ip\":\"127.0.0.1\"", "\"ip\":\"\\uDF00\""), "lone surrogate escape (found by the short afl pass)"),
            ($"/v2.1/agents/{id}", Body(keys, o => o["mtls_cert"] = "-----BEGIN CERTIFICATE-----\nAAAAAAAAAAAAAAAAAAAA\n-----END CERTIFICATE-----\n"), "garbage mtls_cert"),
            ($"/v2.1/agents/{id}", Body(keys, o => o["mtls_cert"] = "not a certificate"), "mtls_cert not PEM"),
            ($"/v2.1/agents/{id}", "[1,2,3]", "not an object"),
            ($"/v2.1/agents/{id}", "{", "not JSON"),
        ];
        foreach (var (path, body, why) in cases)
        {
            var (st, resp) = await s.SendAsync(HttpMethod.Post, path, body);
            Assert.True(st == HttpStatusCode.BadRequest, $"{why}: {st} {resp}");
            AssertEnvelope(resp, 400);
            Assert.Equal(before, await s.SnapshotAsync());
        }
        var (ok, _) = await s.SendAsync(HttpMethod.Post, $"/v2.1/agents/{id}", Body(keys));
        Assert.Equal(HttpStatusCode.OK, ok);
        foreach (var host in new[] { "agent-7.example.net", "::1", "192.0.2.10", "localhost" })
            Assert.Equal(HttpStatusCode.OK, (await s.SendAsync(HttpMethod.Post, $"/v2.1/agents/{id}", Body(keys, o => o["ip"] = host))).Status);
    }

    private static byte[] WithCipher(byte[] akTpm2B)
    {
        var ak = TpmPublic.ParseTpm2B(akTpm2B);
        ak.Symmetric = TpmSymmetricDef.Aes128Cfb;
        return ak.ToTpm2B();
    }

    [Fact]
    public async Task TheSameIdWithAnotherEkOrAkIs403()
    {
        using var dev = tpm.Open();
        var keys = Keys(dev);
        string id = Guid.NewGuid().ToString();
        using var client = s.RegistrarClient();
        await client.RegisterAndActivateAsync(dev, keys, new AgentIdentity { AgentId = id });
        var before = await s.SnapshotAsync();

        using var rsa = RSA.Create(2048);
        var otherEk = TpmTemplates.EkRsa2048;
        otherEk.Modulus = rsa.ExportParameters(false).Modulus!;
        var (st, body) = await s.SendAsync(HttpMethod.Post, $"/v2.1/agents/{id}", Body(keys, o => { o["ek_tpm"] = Convert.ToBase64String(otherEk.ToTpm2B()); o.Remove("ekcert"); }));
        Assert.Equal(HttpStatusCode.Forbidden, st);
        AssertEnvelope(body, 403);

        dev.TryFlush(keys.AkHandle);
        dev.TryFlush(keys.EkHandle);
        var ak2 = dev.CreateAk().Key;
        (st, body) = await s.SendAsync(HttpMethod.Post, $"/v2.1/agents/{id}", Body(keys with { AkPublic = ak2.Public.ToTpm2B() }));
        Assert.Equal(HttpStatusCode.Forbidden, st);
        AssertEnvelope(body, 403);
        Assert.Equal(before, await s.SnapshotAsync());
        Assert.Equal(1, (await s.RegistrarClient(tenant: true).GetAsync(id)).RegCount);
    }
}

/// <summary>The spec's example bodies, as contract fixtures (seeds/keylime).</summary>
public sealed class RegistrarSeedTests : IAsyncLifetime
{
    private KeylimeTestServer s = null!;

    // The example's EK certificate is from a swtpm local CA of 2021 that this test does not have: the chain check is off.
    public async Task InitializeAsync() => s = await KeylimeTestServer.StartAsync([], o => o.Registrar.VerifyEkCertificateChain = false);

    public async Task DisposeAsync() => await s.DisposeAsync();

    [Fact]
    public async Task TheSpecsRegistrationExampleIsAccepted()
    {
        // As written, the example's mtls_cert is a placeholder, which the registrar refuses as it refuses any certificate that does not parse.
        var (placeholder, why) = await s.SendAsync(HttpMethod.Post, "/v2.1/agents/d432fbb3-d2f1-4a97-9ef7-75bd81c00000", KeylimeTestServer.Seed("registrar-post-agent.request.json"));
        Assert.Equal(HttpStatusCode.BadRequest, placeholder);
        Assert.Equal("mtls_cert: not a PEM certificate", why.GetProperty("status").GetString());
        var body = KeylimeTestServer.RegistrationExample();
        var (st, resp) = await s.SendAsync(HttpMethod.Post, "/v2.1/agents/d432fbb3-d2f1-4a97-9ef7-75bd81c00000", body);
        Assert.Equal(HttpStatusCode.OK, st);
        Assert.Equal(200, resp.GetProperty("code").GetInt32());
        Assert.Equal("Success", resp.GetProperty("status").GetString());
        var blob = Convert.FromBase64String(resp.GetProperty("results").GetProperty("blob").GetString()!);
        var cred = Credential.FromTpm2ToolsFile(blob);
        Assert.Equal(256, cred.EncryptedSecret.Length);

        // Without ek_tpm, the EK is the certificate's key in the default EK template; port "9002" (a string) is a port.
        var rec = await s.Store.GetRegistrarAgentAsync("d432fbb3-d2f1-4a97-9ef7-75bd81c00000");
        Assert.NotNull(rec);
        Assert.Equal(9002, rec!.Port);
        Assert.False(rec.Active);
        var ek = TpmPublic.ParseTpm2B(rec.EkTpm);
        Assert.True(ek.ParametersEqual(TpmTemplates.EkRsa2048));

        // The GET example's ek_tpm/ekcert pair is consistent the same way.
        var get = JsonDocument.Parse(KeylimeTestServer.Seed("registrar-get-agent.response.json")).RootElement.GetProperty("results");
        var pair = new JsonObject
        {
            ["aik_tpm"] = get.GetProperty("aik_tpm").GetString(),
            ["ek_tpm"] = get.GetProperty("ek_tpm").GetString(),
            ["ekcert"] = get.GetProperty("ekcert").GetString(),
            ["ip"] = "127.0.0.1",
            ["port"] = 9002,
        };
        (st, resp) = await s.SendAsync(HttpMethod.Post, "/v2.1/agents/5e600bce-a5cb-4f5a-bf08-46d0b45081c5", pair.ToJsonString());
        Assert.Equal(HttpStatusCode.OK, st);

        // The activation example's tag is not this challenge's: refused, registration gone.
        (st, resp) = await s.SendAsync(HttpMethod.Put, "/v2.1/agents/d432fbb3-d2f1-4a97-9ef7-75bd81c00000/activate", KeylimeTestServer.Seed("registrar-activate.request.json"));
        Assert.Equal(HttpStatusCode.BadRequest, st);
        Assert.Null(await s.Store.GetRegistrarAgentAsync("d432fbb3-d2f1-4a97-9ef7-75bd81c00000"));
    }
}
