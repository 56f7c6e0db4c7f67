using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Attestation;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Server.Hosting;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Keylime;

/// <summary>
/// The Keylime agent on a real swtpm: it registers and activates at a registrar at start, and its quotes, fetched over mutual
/// TLS, verify with our verifier and with tpm2_checkquote.
/// </summary>
public sealed partial class AgentTests : IClassFixture<SwtpmFixture>, IAsyncLifetime
{
    private readonly SwtpmFixture tpm;
    private KeylimeTestServer registrar = null!;
    private IServerHost agent = null!;
    private readonly string agentData = Directory.CreateTempSubdirectory("tpmprov-agent-").FullName;
    private readonly string agentId = Guid.NewGuid().ToString();
    private HttpClient verifier = null!;
    private X509Certificate2 verifierCert = null!;
    private HttpClient anonymous = null!;

    public AgentTests(SwtpmFixture fixture)
    {
        tpm = fixture;
        tpm.FlushTransients();
    }

    public async Task InitializeAsync()
    {
        var root = X509Certificate2.CreateFromPem(File.ReadAllText(tpm.Swtpm.ManufacturerRootPath));
        var issuer = X509Certificate2.CreateFromPem(File.ReadAllText(tpm.Swtpm.ManufacturerIssuerPath));
        registrar = await KeylimeTestServer.StartAsync([(root, issuer)]);
        File.WriteAllLines(Path.Combine(agentData, "ima.txt"),
        [
            "10 367a111b682553da5340f977001689db8366056a ima-ng sha256:94c0ac6d0ff747d8f1ca7fac89101a141f3e8f6a2c710717b477a026422766d6 boot_aggregate",
            "10 1111111111111111111111111111111111111111 ima-ng sha256:2222222222222222222222222222222222222222222222222222222222222222 /usr/bin/true",
            "10 3333333333333333333333333333333333333333 ima-ng sha256:4444444444444444444444444444444444444444444444444444444444444444 /usr/bin/false",
        ]);
        File.WriteAllBytes(Path.Combine(agentData, "eventlog.bin"), [1, 2, 3, 4]);
        agent = await StartAgentAsync();
        var ca = X509Certificate2.CreateFromPem(File.ReadAllText(agent.Info.CaCertificatePath!));
        using (var cca = ComponentCa.LoadOrCreate(Path.Combine(agentData, "ca")))
            verifier = KeylimeTestServer.Client(ca, verifierCert = cca.IssueClientCertificate("verifier", role: ClientRole.Verifier));
        anonymous = KeylimeTestServer.Client(ca, null);
    }

    private async Task<IServerHost> StartAgentAsync(Action<AgentSettings>? edit = null)
    {
        var settings = new AgentSettings
        {
            AgentId = agentId,
            Tpm = tpm.ConnectionString,
            Registrar = new Uri(registrar.Url),
            RegistrarCaCertificatePath = registrar.Host.Info.CaCertificatePath,
            ImaMeasurementListPath = Path.Combine(agentData, "ima.txt"),
            EventLogPath = Path.Combine(agentData, "eventlog.bin"),
            RunPayloadScript = true,
            PayloadScriptHost = PwshPath(),
        };
        edit?.Invoke(settings);
        var host = await ProvisioningServerHost.StartAsync(new ServerOptions { DataPath = agentData, Port = 0, Roles = ServerRole.Agent, Agent = settings });
        for (int i = 0; i < 200 && !host.Info.AgentRegistered && host.Info.AgentRegistrationError is null; i++) await Task.Delay(100);
        return host;
    }

    [Fact]
    public async Task EveryRestartRegistersTheBoundPortOrTheConfiguredContact()
    {
        // The port is known before the role registers (no port 0), restart after restart in one session, with debug logging.
        for (int i = 0; i < 4; i++)
        {
            await agent.StopAsync();
            agent = await ProvisioningServerHost.StartAsync(new ServerOptions
            {
                DataPath = agentData, Port = 0, Roles = ServerRole.Agent, LogLevel = LogLevelName.Debug,
                Agent = new AgentSettings { AgentId = agentId, Tpm = tpm.ConnectionString, Registrar = new Uri(registrar.Url), RegistrarCaCertificatePath = registrar.Host.Info.CaCertificatePath },
            });
            for (int w = 0; w < 200 && !agent.Info.AgentRegistered && agent.Info.AgentRegistrationError is null; w++) await Task.Delay(100);
            var view = await RegisteredAsync();
            Assert.NotEqual(0, agent.Info.Port);
            Assert.Equal(agent.Info.Port, view.Port);
            Assert.Equal("127.0.0.1", view.Ip);
        }
        // Behind NAT: the configured contact address and port are registered instead.
        await agent.StopAsync();
        agent = await ProvisioningServerHost.StartAsync(new ServerOptions
        {
            DataPath = agentData, Port = 0, Roles = ServerRole.Agent, ContactAddress = "agent.example.net", ContactPort = 9443,
            Agent = new AgentSettings { AgentId = agentId, Tpm = tpm.ConnectionString, Registrar = new Uri(registrar.Url), RegistrarCaCertificatePath = registrar.Host.Info.CaCertificatePath },
        });
        for (int w = 0; w < 200 && !agent.Info.AgentRegistered && agent.Info.AgentRegistrationError is null; w++) await Task.Delay(100);
        var natted = await RegisteredAsync();
        Assert.Equal(("agent.example.net", 9443), (natted.Ip, natted.Port));
    }

    [Fact]
    public async Task ARestartReusesThePersistedAkAndReRegisters()
    {
        var first = await RegisteredAsync();
        var data = JsonDocument.Parse(File.ReadAllText(Path.Combine(agentData, "agent", AgentService.AgentDataFileName))).RootElement;
        uint handle = data.GetProperty("ak_handle").GetUInt32();
        Assert.InRange(handle, AgentService.AutoAkHandleFirst, AgentService.AutoAkHandleLast);
        Assert.Equal(first.AikTpm, data.GetProperty("ak_tpm").GetString());

        await agent.StopAsync();
        agent = await StartAgentAsync();
        var second = await RegisteredAsync();
        Assert.Equal(2, second.RegCount);
        Assert.Equal(first.AikTpm, second.AikTpm);

        // The AK gone from the TPM (evicted behind the agent's back): the next start makes and remembers a new one, which the
        // registrar refuses for the same uuid (403), as it must.
        await agent.StopAsync();
        tpm.EvictPersistent(handle, handle);
        agent = await StartAgentAsync();
        Assert.False(agent.Info.AgentRegistered);
        Assert.Equal(403, agent.Info.AgentRegistrationStatus);
        var again = JsonDocument.Parse(File.ReadAllText(Path.Combine(agentData, "agent", AgentService.AgentDataFileName))).RootElement;
        Assert.NotEqual(first.AikTpm, again.GetProperty("ak_tpm").GetString());
    }

    public async Task DisposeAsync()
    {
        verifier?.Dispose();
        anonymous?.Dispose();
        if (agent is not null) await agent.StopAsync();
        await registrar.DisposeAsync();
        tpm.FlushTransients();
        tpm.EvictPersistent(AgentService.AutoAkHandleFirst, AgentService.AutoAkHandleLast);
        try { Directory.Delete(agentData, true); } catch (IOException) { }
    }

    private async Task<(HttpStatusCode, JsonElement)> GetAsync(string path, HttpClient? client = null)
    {
        using var resp = await (client ?? verifier).GetAsync(agent.Info.Urls[0] + path);
        var text = await resp.Content.ReadAsStringAsync();
        return (resp.StatusCode, text.Length == 0 ? default : JsonDocument.Parse(text).RootElement.Clone());
    }

    private async Task<RegistrarAgentView> RegisteredAsync()
    {
        Assert.True(agent.Info.AgentRegistered, agent.Info.AgentRegistrationError ?? "registration did not finish");
        using var tenant = registrar.RegistrarClient(tenant: true);
        return await tenant.GetAsync(agentId);
    }

    [Fact]
    public async Task TheAgentRegistersAndActivatesAtStart()
    {
        var view = await RegisteredAsync();
        Assert.Equal(1, view.RegCount);
        var own = X509Certificate2.CreateFromPem(view.MtlsCert!);
        Assert.Equal(agent.Info.CertificateThumbprint, own.Thumbprint);
        Assert.Equal(agent.Info.Port, view.Port);
        Assert.NotNull(view.EkCert);
    }

    [Fact]
    public async Task VersionIsOpenInfoAndKeysNeedAClientCertificate()
    {
        var (st, body) = await GetAsync("/version", anonymous);
        Assert.Equal(HttpStatusCode.OK, st);
        Assert.Equal(KeylimeApi.LatestVersion, body.GetProperty("results").GetProperty("current_version").GetString());
        Assert.Equal(HttpStatusCode.Unauthorized, (await GetAsync("/v2.1/agent/info", anonymous)).Item1);
        // Every served version answers the same routes (Keylime's verifier and tenant pick the highest both know).
        foreach (var v in KeylimeApi.SupportedVersions) Assert.Equal(HttpStatusCode.OK, (await GetAsync($"/v{v}/agent/info")).Item1);

        (st, body) = await GetAsync("/v2.1/agent/info");
        Assert.Equal(HttpStatusCode.OK, st);
        var r = body.GetProperty("results");
        var example = JsonDocument.Parse(KeylimeTestServer.Seed("agent-info.response.json")).RootElement.GetProperty("results");
        foreach (var p in example.EnumerateObject()) Assert.True(r.TryGetProperty(p.Name, out _), p.Name);
        Assert.Equal(agentId, r.GetProperty("agent_uuid").GetString());
        Assert.Equal("sha256", r.GetProperty("tpm_hash_alg").GetString());
        Assert.Equal("rsa", r.GetProperty("tpm_enc_alg").GetString());
        Assert.Equal("rsassa", r.GetProperty("tpm_sign_alg").GetString());

        (st, body) = await GetAsync("/v2.1/keys/pubkey");
        Assert.Equal(HttpStatusCode.OK, st);
        using var nk = RSA.Create();
        nk.ImportFromPem(body.GetProperty("results").GetProperty("pubkey").GetString());
        Assert.Equal(2048, nk.KeySize);
    }

    [Fact]
    public async Task IntegrityQuoteVerifiesWithOurVerifierAndTpm2Checkquote()
    {
        var view = await RegisteredAsync();
        var ak = TpmPublic.ParseTpm2B(Convert.FromBase64String(view.AikTpm));
        const string nonce = "1234567890ABCDEFHIJ";
        var (st, body) = await GetAsync($"/v2.1/quotes/integrity?nonce={nonce}&mask=0x10401&partial=0&ima_ml_entry=1");
        Assert.Equal(HttpStatusCode.OK, st);
        Assert.Equal("Success", body.GetProperty("status").GetString());
        var r = body.GetProperty("results");
        foreach (var f in new[] { "quote", "hash_alg", "enc_alg", "sign_alg", "pubkey", "boottime", "ima_measurement_list", "ima_measurement_list_entry", "mb_measurement_list" })
            Assert.True(r.TryGetProperty(f, out _), f);
        Assert.Equal(1, r.GetProperty("ima_measurement_list_entry").GetInt32());
        Assert.Equal(2, r.GetProperty("ima_measurement_list").GetString()!.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        Assert.Equal("AQIDBA==", r.GetProperty("mb_measurement_list").GetString());

        string quote = r.GetProperty("quote").GetString()!;
        using var prepared = PreparedAk.Create(ak);
        var sel = PcrSelection.FromBitmask(TpmAlgId.Sha256, 0x10401);
        var result = QuoteVerifier.VerifyKeylime(quote, prepared, Encoding.ASCII.GetBytes(nonce), sel);
        Assert.True(result.IsValid, result.ToString());
        Assert.False(QuoteVerifier.VerifyKeylime(quote, prepared, "otherNonce"u8, sel).IsValid);

        // PCR 16 holds the NK: extended once from zero with SHA-256 of the PEM served as pubkey.
        var kq = KeylimeQuote.Parse(quote);
        var blob = Tpm2ToolsPcrBlob.Parse(kq.PcrBlob);
        var pem = r.GetProperty("pubkey").GetString()!;
        var expected16 = SHA256.HashData([.. new byte[32], .. SHA256.HashData(Encoding.UTF8.GetBytes(pem))]);
        Assert.Equal(Convert.ToHexString(expected16), Convert.ToHexString(blob.Values.TryGet(TpmAlgId.Sha256, 16, out var v16) ? v16 : []));

        using var tmp = new TempDir();
        File.WriteAllBytes(tmp["quote.msg"], kq.Attest);
        File.WriteAllBytes(tmp["quote.sig"], kq.Signature);
        File.WriteAllBytes(tmp["quote.pcrs"], kq.PcrBlob);
        File.WriteAllBytes(tmp["ak.pub"], ak.ToTpm2B());
        Tpm2Tools.Run(null, "tpm2_checkquote", "-u", tmp["ak.pub"], "-m", tmp["quote.msg"], "-s", tmp["quote.sig"], "-f", tmp["quote.pcrs"],
            "-g", "sha256", "-q", Convert.ToHexString(Encoding.ASCII.GetBytes(nonce)));
        Assert.Throws<InvalidOperationException>(() => Tpm2Tools.Run(null, "tpm2_checkquote", "-u", tmp["ak.pub"], "-m", tmp["quote.msg"],
            "-s", tmp["quote.sig"], "-f", tmp["quote.pcrs"], "-g", "sha256", "-q", "00112233"));

        // Without PCR 10 and 0, no lists; partial=1 leaves the NK out.
        (st, body) = await GetAsync($"/v2.1/quotes/integrity?nonce={nonce}&mask=0x8000&partial=1");
        Assert.Equal(HttpStatusCode.OK, st);
        r = body.GetProperty("results");
        Assert.False(r.TryGetProperty("ima_measurement_list", out _));
        Assert.False(r.TryGetProperty("mb_measurement_list", out _));
        Assert.False(r.TryGetProperty("pubkey", out _));
    }

    [Theory]
    [InlineData("0x0", new[] { 16 })]
    [InlineData("0", new[] { 16 })]
    [InlineData("0x8000", new[] { 15, 16 })]
    [InlineData("0x10401", new[] { 0, 10, 16 })]
    public async Task IntegrityQuoteAlwaysCoversPcr16AndBoottimeIsTheBootEpoch(string mask, int[] pcrs)
    {
        // Keylime's verifier sends mask=0x0 for a policy without PCRs and refuses a quote without PCR 16 (missing_pcr_16).
        var view = await RegisteredAsync();
        var ak = TpmPublic.ParseTpm2B(Convert.FromBase64String(view.AikTpm));
        var (st, body) = await GetAsync($"/v2.1/quotes/integrity?nonce=abc123&mask={mask}&partial=0");
        Assert.Equal(HttpStatusCode.OK, st);
        var r = body.GetProperty("results");
        var kq = KeylimeQuote.Parse(r.GetProperty("quote").GetString()!);
        var blob = Tpm2ToolsPcrBlob.Parse(kq.PcrBlob);
        for (int i = 0; i < 24; i++)
            Assert.Equal(pcrs.Contains(i), blob.Values.TryGet(TpmAlgId.Sha256, i, out _));
        using var prepared = PreparedAk.Create(ak);
        var verified = QuoteVerifier.VerifyKeylime(r.GetProperty("quote").GetString()!, prepared, "abc123"u8, PcrSelection.Create(TpmAlgId.Sha256, pcrs));
        Assert.True(verified.IsValid, verified.ToString());

        // boottime: the boot as a Unix epoch, the same for every quote of this boot (Keylime resets IMA state when it changes).
        long boot = r.GetProperty("boottime").GetInt64();
        long now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        Assert.InRange(boot, now - Environment.TickCount64 / 1000 - 5, now);
        await Task.Delay(1100);
        (st, body) = await GetAsync($"/v2.1/quotes/integrity?nonce=abc124&mask={mask}&partial=1");
        Assert.Equal(HttpStatusCode.OK, st);
        Assert.Equal(boot, body.GetProperty("results").GetProperty("boottime").GetInt64());
        Assert.Equal(AgentService.ReadBootTime(), boot);
    }

    [Fact]
    public async Task IdentityQuoteCoversPcr16AndVerifies()
    {
        var view = await RegisteredAsync();
        var ak = TpmPublic.ParseTpm2B(Convert.FromBase64String(view.AikTpm));
        var (st, body) = await GetAsync("/v2.1/quotes/identity?nonce=abcDEF0123456789xyzQ");
        Assert.Equal(HttpStatusCode.OK, st);
        var r = body.GetProperty("results");
        foreach (var f in new[] { "quote", "hash_alg", "enc_alg", "sign_alg", "pubkey", "boottime" }) Assert.True(r.TryGetProperty(f, out _), f);
        using var prepared = PreparedAk.Create(ak);
        var result = QuoteVerifier.VerifyKeylime(r.GetProperty("quote").GetString()!, prepared, "abcDEF0123456789xyzQ"u8, PcrSelection.Create(TpmAlgId.Sha256, 16));
        Assert.True(result.IsValid, result.ToString());

        var kq = KeylimeQuote.Parse(r.GetProperty("quote").GetString()!);
        using var tmp = new TempDir();
        File.WriteAllBytes(tmp["quote.msg"], kq.Attest);
        File.WriteAllBytes(tmp["quote.sig"], kq.Signature);
        File.WriteAllBytes(tmp["quote.pcrs"], kq.PcrBlob);
        File.WriteAllBytes(tmp["ak.pub"], ak.ToTpm2B());
        Tpm2Tools.Run(null, "tpm2_checkquote", "-u", tmp["ak.pub"], "-m", tmp["quote.msg"], "-s", tmp["quote.sig"], "-f", tmp["quote.pcrs"],
            "-g", "sha256", "-q", Convert.ToHexString("abcDEF0123456789xyzQ"u8));
    }

    [Theory]
    [InlineData("/v2.1/quotes/integrity?nonce=short!&mask=0x1")]
    [InlineData("/v2.1/quotes/integrity?nonce=123456789012345678901&mask=0x1")]
    [InlineData("/v2.1/quotes/integrity?nonce=abc&mask=zz")]
    [InlineData("/v2.1/quotes/integrity?nonce=abc&mask=0x1000000")]
    [InlineData("/v2.1/quotes/integrity?nonce=abc&mask=0x1&partial=2")]
    [InlineData("/v2.1/quotes/identity")]
    public async Task MalformedQuoteRequestsAre400(string path)
    {
        var (st, body) = await GetAsync(path);
        Assert.Equal(HttpStatusCode.BadRequest, st);
        Assert.Equal(400, body.GetProperty("code").GetInt32());
    }
}
