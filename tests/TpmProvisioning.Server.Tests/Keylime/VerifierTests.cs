using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TpmProvisioning.Attestation;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Server.Hosting;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Keylime;

/// <summary>A real HTTP listener on loopback that records the revocation notifications it receives.</summary>
public sealed class WebhookReceiver : IDisposable
{
    private readonly HttpListener _listener;
    public ConcurrentQueue<string> Bodies { get; } = new();
    public Uri Url { get; }

    public WebhookReceiver()
    {
        for (int attempt = 0; ; attempt++)
        {
            // A listener whose start failed (port taken) is closed; each attempt takes a new one.
            int port = Random.Shared.Next(20000, 60000);
            Url = new Uri($"http://127.0.0.1:{port}/revocation/");
            var listener = new HttpListener();
            listener.Prefixes.Add(Url.ToString());
            try
            {
                listener.Start();
                _listener = listener;
                break;
            }
            catch (HttpListenerException) when (attempt < 20) { listener.Close(); }
        }
        _ = Task.Run(async () =>
        {
            while (_listener.IsListening)
            {
                HttpListenerContext ctx;
                try { ctx = await _listener.GetContextAsync(); }
                catch (Exception) { return; }
                using (var r = new StreamReader(ctx.Request.InputStream)) Bodies.Enqueue(await r.ReadToEndAsync());
                ctx.Response.StatusCode = 200;
                ctx.Response.Close();
            }
        });
    }

    public void Dispose() => _listener.Close();
}

/// <summary>
/// A registrar, a real agent on swtpm registered with it, and a verifier (separate data path) that presents a client
/// certificate from the agent's components CA and sends revocation notices to a real webhook listener.
/// </summary>
public sealed class VerifierTestBed : IAsyncDisposable
{
    private readonly SwtpmFixture tpm;
    public KeylimeTestServer Registrar { get; private set; } = null!;
    public IServerHost Agent { get; private set; } = null!;
    public IServerHost Verifier { get; set; } = null!;
    public string AgentData { get; } = Directory.CreateTempSubdirectory("tpmprov-vagent-").FullName;
    public string VerifierData { get; } = Directory.CreateTempSubdirectory("tpmprov-verifier-").FullName;
    public string AgentId { get; } = Guid.NewGuid().ToString();
    public WebhookReceiver Webhook { get; } = new();
    public RSA RevocationKey { get; } = RSA.Create(2048);
    public X509Certificate2 VerifierClientCert { get; private set; } = null!;
    public RegistrarAgentView View { get; private set; } = null!;

    private VerifierTestBed(SwtpmFixture fixture) => tpm = fixture;
    private Action<VerifierSettings>? _configureVerifier;

    /// <param name="shareRegistrarCa">Give the verifier the registrar's components CA (Keylime's one server-components CA).</param>
    public static async Task<VerifierTestBed> StartAsync(SwtpmFixture fixture, Action<AgentSettings>? configureAgent = null, bool shareRegistrarCa = false,
        Action<VerifierSettings>? configureVerifier = null)
    {
        var b = new VerifierTestBed(fixture) { _configureVerifier = configureVerifier };
        var root = X509Certificate2.CreateFromPem(File.ReadAllText(fixture.Swtpm.ManufacturerRootPath));
        var issuer = X509Certificate2.CreateFromPem(File.ReadAllText(fixture.Swtpm.ManufacturerIssuerPath));
        b.Registrar = await KeylimeTestServer.StartAsync([(root, issuer)]);
        var settings = new AgentSettings
        {
            AgentId = b.AgentId,
            Tpm = fixture.ConnectionString,
            Registrar = new Uri(b.Registrar.Url),
            RegistrarCaCertificatePath = b.Registrar.Host.Info.CaCertificatePath,
            ImaMeasurementListPath = Path.Combine(b.AgentData, "none.txt"),
            EventLogPath = Path.Combine(b.AgentData, "none.bin"),
        };
        configureAgent?.Invoke(settings);
        b.Agent = await ProvisioningServerHost.StartAsync(new ServerOptions { DataPath = b.AgentData, Port = 0, Roles = ServerRole.Agent, Agent = settings });
        for (int i = 0; i < 200 && !b.Agent.Info.AgentRegistered && b.Agent.Info.AgentRegistrationError is null; i++) await Task.Delay(100);
        Assert.True(b.Agent.Info.AgentRegistered, b.Agent.Info.AgentRegistrationError);
        using (var tenant = b.Registrar.RegistrarClient(tenant: true)) b.View = await tenant.GetAsync(b.AgentId);
        // The agent trusts its fleet's components CA: the verifier presents a certificate issued by it.
        using (var cca = ComponentCa.LoadOrCreate(Path.Combine(b.AgentData, "ca")))
            b.VerifierClientCert = cca.IssueClientCertificate("verifier", role: ClientRole.Verifier);
        if (shareRegistrarCa) CopyCa(b.Registrar.DataPath, b.VerifierData);
        b.Verifier = await b.StartVerifierAsync();
        return b;
    }

    /// <summary>Copies a data path's components CA (certificate and key) to another, as an operator shares one CA between servers.</summary>
    public static void CopyCa(string fromDataPath, string toDataPath)
    {
        var to = Path.Combine(toDataPath, "ca");
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(Path.Combine(fromDataPath, "ca"))) File.Copy(f, Path.Combine(to, Path.GetFileName(f)), overwrite: true);
    }

    public Task<IServerHost> StartVerifierAsync()
    {
        var settings = new VerifierSettings
        {
            QuoteInterval = TimeSpan.FromMilliseconds(300),
            RetryInterval = 0.2,
            ExponentialBackoff = false,
            MaxRetries = 2,
            RequestTimeout = TimeSpan.FromSeconds(10),
            ClientCertificate = VerifierClientCert,
            RevocationWebhooks = [Webhook.Url],
        };
        _configureVerifier?.Invoke(settings);
        return ProvisioningServerHost.StartAsync(new ServerOptions { DataPath = VerifierData, Port = 0, Roles = ServerRole.Verifier, Verifier = settings });
    }

    /// <summary>A PCR's SHA-256 value as the agent quotes it (the agent holds the TPM between its quotes, so it is asked).</summary>
    public string PcrNow(int pcr)
    {
        using var connector = new AgentConnector(VerifierClientCert, TimeSpan.FromSeconds(10));
        var config = new VerifierAgentConfig { Ip = "127.0.0.1", Port = Agent.Info.Port, MtlsCert = View.MtlsCert };
        var r = connector.GetIntegrityQuoteAsync(config, "abc", 1u << pcr, true, 0, default).GetAwaiter().GetResult();
        Assert.True(r.Status == AgentCallStatus.Ok, r.Message);
        var quote = KeylimeQuote.Parse(r.Results.GetProperty("quote").GetString()!);
        Assert.True(Tpm2ToolsPcrBlob.Parse(quote.PcrBlob).Values.TryGet(TpmAlgId.Sha256, pcr, out var v));
        return Convert.ToHexStringLower(v);
    }

    public VerifierClient Tenant(bool withCert = true)
    {
        var ca = X509Certificate2.CreateFromPem(File.ReadAllText(Verifier.Info.CaCertificatePath!));
        X509Certificate2? cert = null;
        if (withCert) using (var cca = ComponentCa.LoadOrCreate(Path.Combine(VerifierData, "ca"))) cert = cca.IssueClientCertificate("tenant");
        return new VerifierClient(new VerifierClientOptions { Verifier = new Uri(Verifier.Info.Urls[0]), CaCertificate = ca, ClientCertificate = cert });
    }

    /// <summary>The spec's POST body for this agent, with the given tpm_policy (default: none).</summary>
    public JsonObject Body(string? tpmPolicy = null, int? port = null) => new()
    {
        ["cloudagent_ip"] = "127.0.0.1",
        ["cloudagent_port"] = port ?? Agent.Info.Port,
        ["tpm_policy"] = tpmPolicy ?? "{}",
        ["ak_tpm"] = View.AikTpm,
        ["mtls_cert"] = View.MtlsCert,
        ["runtime_policy"] = "",
        ["mb_refstate"] = "null",
        ["ima_sign_verification_keys"] = "[]",
        ["metadata"] = "{}",
        ["revocation_key"] = RevocationKey.ExportPkcs8PrivateKeyPem(),
        ["accept_tpm_hash_algs"] = new JsonArray("sha512", "sha384", "sha256"),
        ["accept_tpm_encryption_algs"] = new JsonArray("ecc", "rsa"),
        ["accept_tpm_signing_algs"] = new JsonArray("ecschnorr", "rsassa"),
        ["supported_version"] = "2.1",
    };

    public static async Task<VerifierAgentStatus> WaitForAsync(VerifierClient client, string id, Func<VerifierAgentStatus, bool> until, int seconds = 30)
    {
        VerifierAgentStatus s = await client.GetAsync(id);
        for (int i = 0; i < seconds * 10 && !until(s); i++)
        {
            await Task.Delay(100);
            s = await client.GetAsync(id);
        }
        return s;
    }

    public async ValueTask DisposeAsync()
    {
        if (Verifier is not null) await Verifier.StopAsync();
        if (Agent is not null) await Agent.StopAsync();
        await Registrar.DisposeAsync();
        Webhook.Dispose();
        RevocationKey.Dispose();
        tpm.FlushTransients();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        foreach (var d in new[] { AgentData, VerifierData }) try { Directory.Delete(d, true); } catch (IOException) { }
    }
}

/// <summary>
/// The Keylime verifier watching a real agent on swtpm: quotes fetched over mutual TLS with a fresh nonce every interval and
/// judged; a policy violation names the PCR and is sent, signed, to a webhook; unreachable agents are retried then FAILED;
/// a verifier restart resumes watching from the store; bad requests change nothing.
/// </summary>
public sealed class VerifierTests : IClassFixture<SwtpmFixture>, IAsyncLifetime
{
    private readonly SwtpmFixture tpm;
    private VerifierTestBed bed = null!;
    private IServerHost agent => bed.Agent;
    private IServerHost verifier { get => bed.Verifier; set => bed.Verifier = value; }
    private string verifierData => bed.VerifierData;
    private string agentId => bed.AgentId;
    private WebhookReceiver webhook => bed.Webhook;
    private RSA revocationKey => bed.RevocationKey;
    private X509Certificate2 verifierClientCert => bed.VerifierClientCert;
    private RegistrarAgentView view => bed.View;
    private KeylimeTestServer registrar => bed.Registrar;

    public VerifierTests(SwtpmFixture fixture)
    {
        tpm = fixture;
        tpm.FlushTransients();
    }

    public async Task InitializeAsync() => bed = await VerifierTestBed.StartAsync(tpm);

    public async Task DisposeAsync() => await bed.DisposeAsync();

    private Task<IServerHost> StartVerifierAsync() => bed.StartVerifierAsync();

    private VerifierClient Tenant(bool withCert = true) => bed.Tenant(withCert);

    private static Task<VerifierAgentStatus> WaitForAsync(VerifierClient client, string id, Func<VerifierAgentStatus, bool> until, int seconds = 30) =>
        VerifierTestBed.WaitForAsync(client, id, until, seconds);

    private JsonObject Body(string? tpmPolicy = null, int? port = null) =>
        bed.Body(tpmPolicy ?? TpmPolicy.Format(new Dictionary<int, IReadOnlyList<string>> { [15] = [Pcr15Hex()] }), port);



    private string? pcr15;

    /// <summary>PCR 15 as the agent quotes it, read once.</summary>
    private string Pcr15Hex() => pcr15 ??= bed.PcrNow(15);





    [Fact]
    public async Task AnAddedAgentIsWatchedWithItsCountRisingAndEveryFieldOfTheSpecExample()
    {
        using var client = Tenant();
        await client.AddAsync(agentId, Body().ToJsonString());
        var s = await WaitForAsync(client, agentId, x => x.AttestationCount >= 3);
        Assert.True(s.AttestationCount >= 3, $"state {s.OperationalState}, {s.LastEventId}: {string.Join("; ", s.Failures)}");
        Assert.Equal((int)OperationalState.GetQuote, s.OperationalState);
        Assert.Equal("PASS", s.AttestationStatus);
        Assert.Equal("sha256", s.HashAlg);
        Assert.Equal("rsa", s.EncAlg);
        Assert.Equal("rsassa", s.SignAlg);
        Assert.Null(s.V);
        Assert.True(s.LastSuccessfulAttestation > 0 && s.LastReceivedQuote >= s.LastSuccessfulAttestation);

        // The raw answer carries every field of the spec's example and never the revocation key.
        using var http = KeylimeTestServer.Client(X509Certificate2.CreateFromPem(File.ReadAllText(verifier.Info.CaCertificatePath!)),
            ComponentCa.LoadOrCreate(Path.Combine(verifierData, "ca")).IssueClientCertificate("tenant2"));
        var text = await http.GetStringAsync($"{verifier.Info.Urls[0]}/v2.1/agents/{agentId}");
        var results = JsonDocument.Parse(text).RootElement.GetProperty("results");
        var example = JsonDocument.Parse(KeylimeTestServer.Seed("verifier-get-agent.response.json")).RootElement.GetProperty("results");
        foreach (var p in example.EnumerateObject()) Assert.True(results.TryGetProperty(p.Name, out _), p.Name);
        Assert.DoesNotContain("PRIVATE KEY", text);

        // The list answers Keylime's nested rows, and ?bulk=1 every status.
        Assert.Equal([agentId], await client.ListAsync());
        Assert.Equal((int)OperationalState.GetQuote, (await client.ListStatusAsync())[agentId].OperationalState);

        // Each quote asked for a fresh nonce: the audit shows the add, the store the last nonce.
        var audit = await registrar.Store.QueryAuditAsync(new Storage.AuditQuery());
        Assert.NotNull(audit);
    }

    [Fact]
    public async Task APolicyViolationIsInvalidQuoteNamingThePcrAndASignedNoticeReachesTheWebhook()
    {
        using var client = Tenant();
        string wrong = new('a', 64);
        await client.AddAsync(agentId, Body(TpmPolicy.Format(new Dictionary<int, IReadOnlyList<string>> { [15] = [wrong] })).ToJsonString());
        var s = await WaitForAsync(client, agentId, x => x.OperationalState == (int)OperationalState.InvalidQuote);
        Assert.Equal((int)OperationalState.InvalidQuote, s.OperationalState);
        Assert.Equal("FAIL", s.AttestationStatus);
        Assert.Equal("pcr_validation.invalid_pcr_15", s.LastEventId);
        Assert.Equal(6, s.SeverityLevel);
        Assert.Contains(s.Failures, f => f.Pcr == 15);
        Assert.Equal(0, s.AttestationCount);

        for (int i = 0; i < 100 && webhook.Bodies.IsEmpty; i++) await Task.Delay(100);
        Assert.True(webhook.Bodies.TryDequeue(out var body), "no notification reached the webhook");
        using var doc = JsonDocument.Parse(body);
        var notice = new RevocationNotice(doc.RootElement.GetProperty("msg").GetString()!, doc.RootElement.GetProperty("signature").GetString()!);
        Assert.True(RevocationNotifier.Verify(revocationKey, notice));
        Assert.False(RevocationNotifier.Verify(revocationKey, notice with { Msg = notice.Msg.Replace("revocation", "revocatioN") }));
        var msg = JsonDocument.Parse(notice.Msg).RootElement;
        Assert.Equal(agentId, msg.GetProperty("agent_id").GetString());
        Assert.Equal("revocation", msg.GetProperty("type").GetString());
        Assert.Equal("pcr_validation.invalid_pcr_15", msg.GetProperty("event_id").GetString());
        Assert.Equal("emergency", msg.GetProperty("severity_label").GetString());
        await Task.Delay(500);
        Assert.True(webhook.Bodies.IsEmpty, "the notice was sent more than once");

        // Watching stopped: the state holds. Reactivating with the same wrong policy fails again; delete then answers 200.
        await Task.Delay(800);
        Assert.Equal(0, (await client.GetAsync(agentId)).AttestationCount);
        await client.ReactivateAsync(agentId);
        s = await WaitForAsync(client, agentId, x => x.OperationalState == (int)OperationalState.InvalidQuote && x.LastReceivedQuote > 0);
        Assert.Equal((int)OperationalState.InvalidQuote, s.OperationalState);
        await client.DeleteAsync(agentId);
        var ex = await Assert.ThrowsAsync<KeylimeRequestException>(() => client.GetAsync(agentId));
        Assert.Equal(404, ex.StatusCode);
    }

    [Fact]
    public async Task Tpm2PcrextendOnAPolicyPcrWhileWatchedMakesItInvalidWithinTwoIntervalsAndNotifiesOnce()
    {
        using var client = Tenant();
        await client.AddAsync(agentId, Body().ToJsonString());
        var s = await WaitForAsync(client, agentId, x => x.AttestationCount >= 2);
        Assert.True(s.AttestationCount >= 2, $"{s.OperationalState} {s.LastEventId}");

        // tpm2-tools extends PCR 15 while the agent runs (the agent connects to swtpm per quote).
        Tpm2Tools.Run(tpm.ConnectionString, "tpm2_pcrextend", "15:sha256=" + new string('b', 64));
        var changed = DateTime.UtcNow;
        s = await WaitForAsync(client, agentId, x => x.OperationalState == (int)OperationalState.InvalidQuote, seconds: 10);
        var took = DateTime.UtcNow - changed;
        Assert.Equal((int)OperationalState.InvalidQuote, s.OperationalState);
        Assert.Equal("pcr_validation.invalid_pcr_15", s.LastEventId);
        Assert.Contains(s.Failures, f => f.Pcr == 15);
        // Two quote intervals (0.3 s each) plus the quote's own time and this poll's 0.1 s granularity.
        Assert.True(took < TimeSpan.FromSeconds(2), $"took {took.TotalMilliseconds} ms");
        for (int i = 0; i < 50 && webhook.Bodies.IsEmpty; i++) await Task.Delay(100);
        Assert.Single(webhook.Bodies);
        Assert.Contains("invalid_pcr_15", webhook.Bodies.First());
    }

    [Fact]
    public async Task AnUnreachableAgentIsRetriedThenFailed()
    {
        using var client = Tenant();
        int deadPort;
        using (var l = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0)) { l.Start(); deadPort = ((IPEndPoint)l.LocalEndpoint).Port; }
        await client.AddAsync(agentId, Body(port: deadPort).ToJsonString());
        var s = await WaitForAsync(client, agentId, x => x.OperationalState == (int)OperationalState.Failed);
        Assert.Equal((int)OperationalState.Failed, s.OperationalState);
        Assert.Equal("internal.not_reachable", s.LastEventId);
        // A never-attested agent's communication error notifies nobody (Keylime's rule).
        await Task.Delay(300);
        Assert.True(webhook.Bodies.IsEmpty);
    }

    [Fact]
    public async Task AVerifierRestartResumesWatchingWithoutReactivation()
    {
        using (var client = Tenant())
        {
            await client.AddAsync(agentId, Body().ToJsonString());
            Assert.True((await WaitForAsync(client, agentId, x => x.AttestationCount >= 2)).AttestationCount >= 2);
        }
        await verifier.StopAsync();
        long before;
        using (var store = await Storage.SqliteStore.OpenAsync(Path.Combine(verifierData, "tpmprovisioning.db")))
            before = (await store.GetVerifierAgentAsync(agentId))!.AttestationCount;
        verifier = await StartVerifierAsync();
        using var again = Tenant();
        var s = await WaitForAsync(again, agentId, x => x.AttestationCount >= before + 2);
        Assert.True(s.AttestationCount >= before + 2, $"count {s.AttestationCount} (was {before}), state {s.OperationalState}");
        Assert.Equal("PASS", s.AttestationStatus);

        // Stop: TENANT_FAILED and the count holds; reactivate: watched again.
        await again.StopAsync(agentId);
        s = await again.GetAsync(agentId);
        Assert.Equal((int)OperationalState.TenantFailed, s.OperationalState);
        long stopped = s.AttestationCount;
        await Task.Delay(900);
        Assert.Equal(stopped, (await again.GetAsync(agentId)).AttestationCount);
        await again.ReactivateAsync(agentId);
        Assert.True((await WaitForAsync(again, agentId, x => x.AttestationCount > stopped)).AttestationCount > stopped);
    }

    [Fact]
    public async Task BadRequestsAnswer400InTheEnvelopeAndStoreNothing()
    {
        using var client = Tenant();
        async Task<int> Post(string id, string body)
        {
            try { await client.AddAsync(id, body); return 200; }
            catch (KeylimeRequestException e) { return e.StatusCode; }
        }
        Assert.Equal(400, await Post("not a uuid!", Body().ToJsonString()));
        Assert.Equal(400, await Post(agentId, "{not json"));
        Assert.Equal(400, await Post(agentId, "[]"));
        var b = Body(); b["cloudagent_port"] = 70000;
        Assert.Equal(400, await Post(agentId, b.ToJsonString()));
        b = Body(); b["tpm_policy"] = "{\"15\": [\"zz\"], \"mask\": \"0x8000\"}";
        Assert.Equal(400, await Post(agentId, b.ToJsonString()));
        b = Body(); b["ak_tpm"] = "@@@";
        Assert.Equal(400, await Post(agentId, b.ToJsonString()));
        b = Body(); b["mtls_cert"] = "disabled";
        Assert.Equal(400, await Post(agentId, b.ToJsonString()));
        b = Body(); b["v"] = Convert.ToBase64String(new byte[16]);
        Assert.Equal(400, await Post(agentId, b.ToJsonString()));
        b = Body(); b["revocation_key"] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----";
        Assert.Equal(400, await Post(agentId, b.ToJsonString()));
        // An AK that is not restricted (a software key's public area with sign only) is refused.
        using (var sw = RSA.Create(2048))
        {
            var pub = TpmPublic.ParseTpm2B(Convert.FromBase64String(view.AikTpm));
            var loose = pub.Clone();
            loose.Attributes &= ~TpmaObject.Restricted;
            b = Body(); b["ak_tpm"] = Convert.ToBase64String(loose.ToTpm2B());
            Assert.Equal(400, await Post(agentId, b.ToJsonString()));
        }
        Assert.Empty(await client.ListAsync());

        // The spec's example body, its placeholders filled in, is accepted; the same id again is 409.
        var example = JsonNode.Parse(KeylimeTestServer.Seed("verifier-post-agent.request.json"))!.AsObject();
        example["mtls_cert"] = view.MtlsCert;
        example["revocation_key"] = revocationKey.ExportPkcs8PrivateKeyPem();
        Assert.Equal(200, await Post(agentId, example.ToJsonString()));
        Assert.Equal(409, await Post(agentId, Body().ToJsonString()));
        await client.DeleteAsync(agentId);

        // Without a client certificate: 401.
        using var anon = Tenant(withCert: false);
        var ex = await Assert.ThrowsAsync<KeylimeRequestException>(() => anon.ListAsync());
        Assert.Equal(401, ex.StatusCode);
    }

    [Fact]
    public async Task TheJudgeRefusesAReplayedQuoteATamperedOneAndAClockThatWentBack()
    {
        using var connector = new AgentConnector(verifierClientCert, TimeSpan.FromSeconds(10));
        var config = VerifierAgentRequest.Parse(Encoding.UTF8.GetBytes(Body().ToJsonString()), true, out var err);
        Assert.True(config is not null, err);
        var policy = TpmPolicy.TryParse(config.TpmPolicy, out _)!;
        uint mask = QuoteJudge.QuoteMask(config, policy, []);
        using var ak = PreparedAk.FromTpm2B(Convert.FromBase64String(view.AikTpm));

        string n1 = VerifierService.NewNonce();
        var first = await connector.GetIntegrityQuoteAsync(config, n1, mask, partial: false, 0, default);
        Assert.Equal(AgentCallStatus.Ok, first.Status);
        var r1 = QuoteResponse.FromJson(first.Results)!;
        var good = QuoteJudge.Judge(config, new VerifierAgentProgress(), ak, policy, n1, mask, r1);
        Assert.True(good.Passed, string.Join("; ", good.Failures));
        Assert.NotNull(good.Progress.NkPem);

        // Replayed: the old answer judged against the next nonce.
        string n2 = VerifierService.NewNonce();
        var replay = QuoteJudge.Judge(config, good.Progress, ak, policy, n2, mask, r1 with { Pubkey = null });
        Assert.Contains(replay.Failures, f => f.EventId == QuoteJudge.QuoteValidation && f.Reason.StartsWith(QuoteFailureCodes.NonceMismatch, StringComparison.Ordinal));

        // Tampered: a flipped bit in the signature.
        var parts = r1.Quote!.Split(':');
        var sig = Convert.FromBase64String(parts[1]);
        sig[^1] ^= 1;
        var tampered = QuoteJudge.Judge(config, new VerifierAgentProgress(), ak, policy, n1, mask, r1 with { Quote = $"{parts[0]}:{Convert.ToBase64String(sig)}:{parts[2]}" });
        Assert.Contains(tampered.Failures, f => f.Reason.StartsWith(QuoteFailureCodes.BadSignature, StringComparison.Ordinal));

        // The TPM clock seen later than this quote's: a replay of an old quote with a forged-fresh nonce is caught even so.
        var later = good.Progress with { Clock = good.Progress.Clock + 3_600_000 };
        var old = QuoteJudge.Judge(config, later, ak, policy, n1, mask, r1);
        Assert.Contains(old.Failures, f => f.EventId == QuoteJudge.ClockWentBack);

        // Another NK without a reboot, and an algorithm not accepted.
        using var other = RSA.Create(2048);
        var nk2 = QuoteJudge.Judge(config, good.Progress, ak, policy, n1, mask, r1 with { Pubkey = other.ExportSubjectPublicKeyInfoPem() + "\n" });
        Assert.Contains(nk2.Failures, f => f.Pcr == 16);
        var alg = QuoteJudge.Judge(config with { AcceptTpmHashAlgs = ["sha384"] }, new VerifierAgentProgress(), ak, policy, n1, mask, r1);
        Assert.Contains(alg.Failures, f => f.EventId == QuoteJudge.InvalidHashAlg);
    }
}

