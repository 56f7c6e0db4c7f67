using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Hosting;
using TpmProvisioning.Kms;
using TpmProvisioning.Server.Hosting;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tests.Keylime;

namespace TpmProvisioning.Tests.Kms;

/// <summary>
/// The whole chain on swtpm: a real agent registered at the registrar and watched by the verifier asks the KMS for its data key
/// over mutual TLS with its own certificate and gets it; after tpm2_pcrextend on a policy PCR the verifier flags it and the next
/// request is refused; the KMS audit shows both. The KMS asks the real verifier and registrar (one server-components CA).
/// </summary>
public sealed class KeyReleaseEndToEndTests(SwtpmFixture tpm) : IClassFixture<SwtpmFixture>
{
    [Fact]
    public async Task AnAttestedAgentGetsItsKeyAndAfterAPcrChangeIsRefusedOnceTheVerifierFlagsIt()
    {
        tpm.FlushTransients();
        int kmsPort = KmsTestServer.FreePort();
        var revocations = new Uri($"https://127.0.0.1:{kmsPort}/api/tpmprov/kms/v1/revocations");
        // The verifier sends its revocation notices to the KMS as well (over HTTPS; the KMS's CA is the shared one).
        await using var bed = await VerifierTestBed.StartAsync(tpm, shareRegistrarCa: true, configureVerifier: v => v.RevocationWebhooks = [v.RevocationWebhooks[0], revocations]);
        var kmsData = Directory.CreateTempSubdirectory("tpmprov-kms-e2e-").FullName;
        var kdk = RandomNumberGenerator.GetBytes(32);
        var kms = await KmsReleaseBed.StartKmsAsync(bed, kmsData, kmsPort, TimeSpan.FromSeconds(30), kdk);
        var owned = new List<IDisposable>();
        try
        {

            // The verifier watches the agent with PCR 15 pinned.
            using var tenant = bed.Tenant();
            string pcr15 = bed.PcrNow(15);
            await tenant.AddAsync(bed.AgentId, bed.Body(TpmPolicy.Format(new Dictionary<int, IReadOnlyList<string>> { [15] = [pcr15] })).ToJsonString());
            var s = await VerifierTestBed.WaitForAsync(tenant, bed.AgentId, x => x.AttestationCount >= 1 || x.OperationalState >= 7);
            Assert.True(s.AttestationCount >= 1, $"{s.OperationalState} {s.LastEventId}");

            // The device asks with its own TLS certificate (the one it registered as mtls_cert).
            var Release = KmsReleaseBed.Device(bed, kms, owned);
            var (st, body) = await Release();
            Assert.True(st == HttpStatusCode.OK, body.ToString());
            Assert.Equal(Convert.ToBase64String(KmsEngine.DeriveDataKey(kdk, "disk-0")), body.GetProperty("results").GetProperty("key").GetString());

            // The PCR changes; once the verifier flags the agent, the KMS refuses.
            Tpm2Tools.Run(tpm.ConnectionString, "tpm2_pcrextend", "15:sha256=" + new string('c', 64));
            s = await VerifierTestBed.WaitForAsync(tenant, bed.AgentId, x => x.OperationalState == (int)OperationalState.InvalidQuote, seconds: 10);
            Assert.Equal((int)OperationalState.InvalidQuote, s.OperationalState);
            (st, body) = await Release();
            Assert.Equal(HttpStatusCode.Forbidden, st);
            Assert.DoesNotContain("key", body.GetProperty("results").EnumerateObject().Select(p => p.Name));

            using (var live = await SqliteStore.OpenAsync(Path.Combine(kmsData, "tpmprovisioning.db")))
                for (int i = 0; i < 50 && await live.GetKmsRevocationAsync(bed.AgentId) is null; i++) await Task.Delay(100);
            await kms.StopAsync();
            using var audit = await SqliteStore.OpenAsync(Path.Combine(kmsData, "tpmprovisioning.db"));
            var entries = await audit.QueryAuditAsync(new AuditQuery { Action = "kms.release" });
            Assert.Contains(entries, e => e.Outcome == AuditOutcome.Success && e.Target?.Contains(bed.AgentId, StringComparison.Ordinal) == true);
            Assert.Contains(entries, e => e.Outcome != AuditOutcome.Success && e.Target?.Contains(bed.AgentId, StringComparison.Ordinal) == true);
            // The verifier's signed notice reached the KMS, which recorded the revocation.
            Assert.Contains(await audit.QueryAuditAsync(new AuditQuery { Action = "kms.revocation" }), e => e.Outcome == AuditOutcome.Success);
            Assert.NotNull(await audit.GetKmsRevocationAsync(bed.AgentId));
        }
        finally
        {
            foreach (var o in owned) o.Dispose();
            await kms.DisposeAsync();
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            try { Directory.Delete(kmsData, true); } catch (IOException) { }
        }
    }

    [Fact]
    public async Task AnAgentTheVerifierCannotReachIsStillRetryingButItsKeyIsRefusedOnceItsLastGoodQuoteIsTooOld()
    {
        tpm.FlushTransients();
        // Keylime counts GET_QUOTE_RETRY as passing; the KMS also wants a recent good quote.
        await using var bed = await VerifierTestBed.StartAsync(tpm, shareRegistrarCa: true, configureVerifier: v => { v.MaxRetries = 100; v.RetryInterval = 0.5; });
        var kmsData = Directory.CreateTempSubdirectory("tpmprov-kms-stale-").FullName;
        var kms = await KmsReleaseBed.StartKmsAsync(bed, kmsData, 0, TimeSpan.FromSeconds(2), RandomNumberGenerator.GetBytes(32));
        var owned = new List<IDisposable>();
        try
        {
            using var tenant = bed.Tenant();
            await tenant.AddAsync(bed.AgentId, bed.Body().ToJsonString());
            Assert.True((await VerifierTestBed.WaitForAsync(tenant, bed.AgentId, x => x.AttestationCount >= 1)).AttestationCount >= 1);
            var Release = KmsReleaseBed.Device(bed, kms, owned);
            Assert.Equal(HttpStatusCode.OK, (await Release()).Item1);

            await bed.Agent.StopAsync();
            var s = await VerifierTestBed.WaitForAsync(tenant, bed.AgentId, x => x.OperationalState == (int)OperationalState.GetQuoteRetry, seconds: 10);
            Assert.Equal((int)OperationalState.GetQuoteRetry, s.OperationalState);
            await Task.Delay(2500);
            var (st, body) = await Release();
            Assert.Equal(HttpStatusCode.Forbidden, st);
            Assert.Contains("old", body.GetProperty("status").GetString());
        }
        finally
        {
            foreach (var o in owned) o.Dispose();
            await kms.DisposeAsync();
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            try { Directory.Delete(kmsData, true); } catch (IOException) { }
        }
    }
}

/// <summary>A KMS server on a data path sharing the registrar's components CA, asking the bed's verifier and registrar, with one provider.</summary>
internal static class KmsReleaseBed
{
    public static async Task<IServerHost> StartKmsAsync(VerifierTestBed bed, string kmsData, int port, TimeSpan maxAge, byte[] kdk)
    {
        VerifierTestBed.CopyCa(bed.Registrar.DataPath, kmsData);
        var kms = await ProvisioningServerHost.StartAsync(new ServerOptions
        {
            DataPath = kmsData,
            Port = port,
            Roles = ServerRole.Kms,
            Kms = new KmsSettings
            {
                MasterKey = MasterKeyKind.InsecureFile,
                PasswordIterations = 1000,
                Verifier = new Uri(bed.Verifier.Info.Urls[0]),
                Registrar = new Uri(bed.Registrar.Url),
                MaxAttestationAge = maxAge,
                RevocationPublicKeyPem = bed.RevocationKey.ExportSubjectPublicKeyInfoPem(),
            },
        });
        using var store = await SqliteStore.OpenAsync(Path.Combine(kmsData, "tpmprovisioning.db"));
        var engine = await KmsEngine.OpenAsync(store, new InsecureFileMasterKey(Path.Combine(kmsData, "kms")), new KmsSettings { PasswordIterations = 1000 });
        await engine.CreateProviderAsync("fleet", "kid-1", kdk, new KmsCaller("test"));
        return kms;
    }

    public static Func<Task<(HttpStatusCode, JsonElement)>> Device(VerifierTestBed bed, IServerHost kms, List<IDisposable> owned)
    {
        var agentCert = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(bed.AgentData, "tls", "server.pfx"), null);
        var device = KeylimeTestServer.Client(X509Certificate2.CreateFromPem(File.ReadAllText(kms.Info.CaCertificatePath!)), agentCert);
        owned.Add(agentCert);
        owned.Add(device);
        return async () =>
        {
            using var resp = await device.PostAsync(kms.Info.Urls[0] + "/api/tpmprov/kms/v1/release",
                new StringContent(JsonSerializer.Serialize(new { agent_id = bed.AgentId, provider = "fleet", key_identifier = "disk-0" }), Encoding.UTF8, "application/json"));
            return (resp.StatusCode, JsonDocument.Parse(await resp.Content.ReadAsStringAsync()).RootElement.Clone());
        };
    }

}
