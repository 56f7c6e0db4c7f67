using System.Security.Cryptography.X509Certificates;
using System.Text.RegularExpressions;
using TpmProvisioning.Attestation;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Server.Hosting;
using TpmProvisioning.Tests.Fixtures;

namespace TpmProvisioning.Tests.Keylime;

/// <summary>
/// Compatibility proven against Keylime 7.14.3 itself (<see cref="KeylimePeerFixture"/>): Keylime's tenant, registrar and
/// verifier attest our agent on a real swtpm, and Keylime's tenant drives our registrar and verifier. Keylime is configured
/// only as an admin would (ports, trusted CAs, the tenant's EK certificate store); our servers trust Keylime's <c>cv_ca</c>
/// client certificates in the roles given (<see cref="ServerOptions.TrustedClientCas"/>).
/// </summary>
public sealed class KeylimePeerTests : IClassFixture<SwtpmFixture>, IClassFixture<KeylimePeerFixture>, IAsyncLifetime
{
    private readonly SwtpmFixture tpm;
    private readonly KeylimePeerFixture peer;
    private readonly List<IServerHost> hosts = [];
    private readonly List<string> dataPaths = [];

    public KeylimePeerTests(SwtpmFixture tpm, KeylimePeerFixture peer)
    {
        this.tpm = tpm;
        this.peer = peer;
        tpm.FlushTransients();
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var h in hosts) await h.StopAsync();
        tpm.FlushTransients();
        tpm.EvictPersistent(AgentService.AutoAkHandleFirst, AgentService.AutoAkHandleLast);
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        foreach (var d in dataPaths) try { Directory.Delete(d, true); } catch (IOException) { }
    }

    private string NewDataPath(string name)
    {
        var d = Directory.CreateTempSubdirectory("tpmprov-peer-" + name + "-").FullName;
        dataPaths.Add(d);
        return d;
    }

    private X509Certificate2 CvCa => X509Certificate2.CreateFromPem(File.ReadAllText(peer.CvCa));

    private async Task<IServerHost> StartAgentAsync(string agentId, Uri registrar, string? registrarCa, bool selfSigned, params TrustedClientCa[] trusted)
    {
        var dataPath = NewDataPath("agent");
        var options = new ServerOptions
        {
            DataPath = dataPath,
            Port = 0,
            Roles = ServerRole.Agent,
            Agent = new AgentSettings
            {
                AgentId = agentId,
                Tpm = tpm.ConnectionString,
                Registrar = registrar,
                RegistrarCaCertificatePath = registrarCa,
                SelfSignedCertificate = selfSigned,
                ImaMeasurementListPath = Path.Combine(dataPath, "none"),
                EventLogPath = Path.Combine(dataPath, "none"),
            },
            TrustedClientCas = [.. trusted],
        };
        var host = await ProvisioningServerHost.StartAsync(options);
        hosts.Add(host);
        for (int i = 0; i < 600 && !host.Info.AgentRegistered && host.Info.AgentRegistrationError is null; i++) await Task.Delay(100);
        Assert.True(host.Info.AgentRegistered, host.Info.AgentRegistrationError ?? "registration did not finish");
        return host;
    }

    private async Task<string> TenantOkAsync(string config, params string[] args)
    {
        var (code, output) = await peer.TenantAsync(config, args);
        Assert.True(code == 0, $"keylime_tenant {string.Join(' ', args)} exited {code}:\n{Tail(output)}");
        return output;
    }

    private static string Tail(string s) => s.Length > 5000 ? s[^5000..] : s;

    /// <summary>Polls <c>tenant -c status</c> until the verifier reports <paramref name="state"/>; returns that output.</summary>
    private async Task<string> WaitForStateAsync(string config, string agentId, string state, int minAttestations = 0)
    {
        string last = "";
        var until = DateTime.UtcNow.AddSeconds(90);
        while (DateTime.UtcNow < until)
        {
            var (_, output) = await peer.TenantAsync(config, "-c", "status", "-u", agentId);
            last = output;
            var states = Regex.Matches(output, "\"operational_state\": \"([^\"]+)\"").Select(m => m.Groups[1].Value).ToList();
            var count = Regex.Matches(output, "\"attestation_count\": (\\d+)").Select(m => int.Parse(m.Groups[1].Value)).DefaultIfEmpty(0).Max();
            if (states.Count > 0 && states[^1] == state && count >= minAttestations) return output;
            await Task.Delay(1000);
        }
        Assert.Fail($"agent {agentId} did not reach '{state}' (with {minAttestations} attestations) within 90 s:\n{Tail(last)}\nverifier log:\n{peer.Log("verifier")}");
        return last;
    }

    private string ReadPcr15()
    {
        var text = tpm.Tools("tpm2_pcrread", "sha256:15");
        return Regex.Match(text, @"15\s*:\s*0x([0-9A-Fa-f]{64})").Groups[1].Value.ToLowerInvariant();
    }

    [SkippableFact]
    public async Task KeylimesTenantRegistrarAndVerifierAttestOurAgent()
    {
        Skip.If(peer.SkipReason is not null, peer.SkipReason);
        string conf = Path.Combine(peer.ConfDir, "tenant.conf");
        string id = Guid.NewGuid().ToString();
        // As Keylime's agents: a self-signed certificate registered as mtls_cert (Keylime's default set-up trusts it), and
        // Keylime's cv_ca trusted for the tenant's and the verifier's client certificates (rust-keylime's trusted_client_ca).
        var agent = await StartAgentAsync(id, new Uri($"http://127.0.0.1:{peer.RegistrarPort}"), null, selfSigned: true,
            new TrustedClientCa(CvCa, ClientRole.Tenant | ClientRole.Verifier));

        // Keylime's registrar holds the real contact port.
        var reg = await TenantOkAsync(conf, "-c", "regstatus", "-u", id);
        Assert.Contains($"\"port\": {agent.Info.Port},", reg);

        // tenant -c add without -tp (the port comes from the registrar), an empty policy (mask 0x0), a payload, --verify.
        var payload = Path.Combine(peer.Scratch, "payload-" + id + ".txt");
        File.WriteAllText(payload, "secret for " + id);
        var add = await TenantOkAsync(conf, "-c", "add", "-u", id, "-t", "127.0.0.1", "--tpm_policy", "{}", "-f", payload, "--verify");
        Assert.Contains("Successful key derivation", add);
        Assert.Equal("secret for " + id, File.ReadAllText(Path.Combine(agent.Info.DataPath, "agent", "secure", "decrypted_payload")));
        // Several rounds of quotes, and it stays in Get Quote.
        await WaitForStateAsync(conf, id, "Get Quote", minAttestations: 3);
        await Task.Delay(2500);
        await WaitForStateAsync(conf, id, "Get Quote", minAttestations: 4);
        await TenantOkAsync(conf, "-c", "delete", "-u", id);

        // A PCR 15 policy: passes while PCR 15 holds its value, Invalid Quote once it is extended.
        string pcr15 = ReadPcr15();
        Assert.Equal(64, pcr15.Length);
        await TenantOkAsync(conf, "-c", "add", "-u", id, "-t", "127.0.0.1", "--tpm_policy", $"{{\"15\":[\"{pcr15}\"]}}");
        await WaitForStateAsync(conf, id, "Get Quote", minAttestations: 3);
        tpm.Tools("tpm2_pcrextend", "15:sha256=" + new string('0', 63) + "1");
        var bad = await WaitForStateAsync(conf, id, "Invalid Quote");
        Assert.Contains("pcr_validation.invalid_pcr_15", bad);
        await TenantOkAsync(conf, "-c", "delete", "-u", id);
        await TenantOkAsync(conf, "-c", "regdelete", "-u", id);
    }

    [SkippableFact]
    public async Task KeylimesTenantDrivesOurRegistrarAndVerifier()
    {
        Skip.If(peer.SkipReason is not null, peer.SkipReason);
        var cv = new TrustedClientCa(CvCa, ClientRole.Tenant);
        // Our registrar and verifier, each trusting Keylime's cv_ca for the tenant; EK certificates from swtpm's local CA.
        var regPath = NewDataPath("registrar");
        EkTrustStore.Add(regPath, X509Certificate2.CreateFromPem(File.ReadAllText(tpm.Swtpm.ManufacturerRootPath)), EkTrustKind.Root);
        EkTrustStore.Add(regPath, X509Certificate2.CreateFromPem(File.ReadAllText(tpm.Swtpm.ManufacturerIssuerPath)), EkTrustKind.Intermediate);
        var registrar = await ProvisioningServerHost.StartAsync(new ServerOptions { DataPath = regPath, Port = 0, Roles = ServerRole.Registrar, TrustedClientCas = [cv] });
        hosts.Add(registrar);
        var verPath = NewDataPath("verifier");
        var verifier = await ProvisioningServerHost.StartAsync(new ServerOptions
        {
            DataPath = verPath, Port = 0, Roles = ServerRole.Verifier, TrustedClientCas = [cv],
            Verifier = new TpmProvisioning.Attestation.Verifier.VerifierSettings { QuoteInterval = TimeSpan.FromSeconds(1) },
        });
        hosts.Add(verifier);
        // Our agent (components-CA certificate: the CA route) trusts Keylime's tenant and our verifier's CA for the verifier.
        string id = Guid.NewGuid().ToString();
        var verifierCa = X509Certificate2.CreateFromPem(File.ReadAllText(verifier.Info.CaCertificatePath!));
        var agent = await StartAgentAsync(id, new Uri(registrar.Info.Urls[0]), registrar.Info.CaCertificatePath, selfSigned: false,
            new TrustedClientCa(CvCa, ClientRole.Tenant), new TrustedClientCa(verifierCa, ClientRole.Verifier));
        // The tenant trusts our servers' CAs (trusted_server_ca), as an admin sets it up for the CA route.
        string conf = peer.WriteTenantConfig("tenant-ours", verifier.Info.Port, registrar.Info.Port,
            [registrar.Info.CaCertificatePath!, verifier.Info.CaCertificatePath!, agent.Info.CaCertificatePath!]);

        Assert.Contains(id, await TenantOkAsync(conf, "-c", "reglist"));
        Assert.Contains($"\"port\": {agent.Info.Port},", await TenantOkAsync(conf, "-c", "regstatus", "-u", id));
        await TenantOkAsync(conf, "-c", "add", "-u", id, "--tpm_policy", "{}");
        var watched = await WaitForStateAsync(conf, id, "Get Quote", minAttestations: 2);
        // The verifier reports its real port (Keylime's tenant sends delete there).
        Assert.Contains($"\"verifier_port\": {verifier.Info.Port},", watched);
        Assert.Contains($"[[\"{id}\"]]", await TenantOkAsync(conf, "-c", "cvlist"));
        var bulk = await TenantOkAsync(conf, "-c", "bulkinfo");
        Assert.Contains("Bulk Agent Info", bulk);
        Assert.Contains($"\"{id}\": {{\"operational_state\"", bulk);
        Assert.Contains("re-activated", await TenantOkAsync(conf, "-c", "reactivate", "-u", id));
        await WaitForStateAsync(conf, id, "Get Quote");
        Assert.Contains("deleted from the CV", await TenantOkAsync(conf, "-c", "delete", "-u", id));
        await TenantOkAsync(conf, "-c", "regdelete", "-u", id);
        var after = await TenantOkAsync(conf, "-c", "reglist");
        Assert.DoesNotContain(id, after);
    }
}
