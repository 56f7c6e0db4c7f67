using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Storage;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Bench.Load;

/// <summary>
/// The verifier watching a fleet: N agents, each on its own loopback HTTPS port with its own P-256 AK, answering
/// <c>/v2.1/quotes/integrity</c> with quotes made in software (the same bytes a TPM makes: TPMS_ATTEST over the nonce, the
/// PCR blob, PCR 16 bound to the NK), and one <see cref="VerifierService"/> in this process watching all of them every
/// interval over TLS, judging every quote in full and writing every verdict to SQLite. Reports judged quotes per second
/// against the fleet's demand (N / interval), the effective period per agent, agents that left GET_QUOTE, and CPU.
/// The agents share the machine with the verifier, so the numbers are a floor for the verifier alone.
/// </summary>
public static class VerifierLoad
{
    private sealed record SimAgent(SoftwareAttestationKey Key);

    public static async Task<int> RunAsync(string artifacts, TimeSpan duration, int agents, TimeSpan interval, TextWriter output)
    {
        Directory.CreateDirectory(artifacts);
        var dataPath = Directory.CreateTempSubdirectory("tpmprov-bench-verifier-").FullName;
        output.WriteLine($"Verifier load: {agents} agents, quote interval {interval.TotalSeconds:0.#} s, {duration.TotalSeconds:0} s measured, {Environment.ProcessorCount} cores.");
        using var nk = RSA.Create(2048);
        string nkPem = nk.ExportSubjectPublicKeyInfoPem() + "\n";
        var pcr16 = SHA256.HashData([.. new byte[32], .. SHA256.HashData(Encoding.UTF8.GetBytes(nkPem))]);
        using var tlsKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest("CN=bench-agents", tlsKey, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback);
        req.CertificateExtensions.Add(san.Build());
        using var tlsCertEphemeral = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        using var tlsCert = X509CertificateLoader.LoadPkcs12(tlsCertEphemeral.Export(X509ContentType.Pkcs12), null);

        var sims = Enumerable.Range(0, agents).Select(_ => new SimAgent(SoftwareAttestationKey.CreateEccP256())).ToArray();
        var portToAgent = new Dictionary<int, SimAgent>();
        long boot = Environment.TickCount64;

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ApplicationName = "tpmprov-bench-agents", ContentRootPath = dataPath });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            for (int i = 0; i < agents; i++) k.Listen(IPAddress.Loopback, 0, lo => lo.UseHttps(tlsCert));
        });
        var app = builder.Build();
        app.MapGet("/v2.1/quotes/integrity", (HttpContext ctx) =>
        {
            var sim = portToAgent[ctx.Connection.LocalPort];
            var q = ctx.Request.Query;
            string nonce = q["nonce"].ToString();
            uint mask = AgentMask(q["mask"].ToString());
            var selection = PcrSelection.FromBitmask(TpmAlgId.Sha256, mask);
            var values = new PcrValues();
            foreach (var (bank, index) in selection.Enumerate()) values.Set(bank, index, index == 16 ? pcr16 : new byte[32]);
            var clock = new TpmsClockInfo((ulong)(Environment.TickCount64 - boot), 1, 0, true);
            var (attest, sig) = sim.Key.Quote(selection, values, Encoding.ASCII.GetBytes(nonce), clock);
            var results = new Dictionary<string, object?>
            {
                ["quote"] = KeylimeQuote.Format(attest, sig, Tpm2ToolsPcrBlob.Write(selection, values)),
                ["hash_alg"] = "sha256", ["enc_alg"] = "ecc", ["sign_alg"] = "ecdsa", ["boottime"] = 1000,
            };
            if (q["partial"] != "1") results["pubkey"] = nkPem;
            return Results.Json(new Dictionary<string, object> { ["code"] = 200, ["status"] = "Success", ["results"] = results });
        });
        await app.StartAsync();
        var ports = app.Services.GetService(typeof(IServer)) is IServer server && server.Features.Get<IServerAddressesFeature>() is { } f
            ? f.Addresses.Select(a => new Uri(a).Port).ToList() : [];
        if (ports.Count != agents) { output.WriteLine($"Kestrel bound {ports.Count} of {agents} ports."); return 1; }
        for (int i = 0; i < agents; i++) portToAgent[ports[i]] = sims[i];

        var store = await SqliteStore.OpenAsync(Path.Combine(dataPath, "tpmprovisioning.db"));
        var settings = new VerifierSettings { QuoteInterval = interval, RequestTimeout = TimeSpan.FromSeconds(30) };
        var verifier = new VerifierService(store, settings, new AgentConnector(null, settings.RequestTimeout), new RevocationNotifier([]), MeasurementChecks.Default);
        int code = 0;
        try
        {
            string policy = TpmPolicy.Format(new Dictionary<int, IReadOnlyList<string>> { [15] = [new string('0', 64)] });
            string certPem = tlsCert.ExportCertificatePem();
            var ids = new List<string>();
            for (int i = 0; i < agents; i++)
            {
                string id = Guid.NewGuid().ToString();
                var body = new JsonObject
                {
                    ["cloudagent_ip"] = "127.0.0.1", ["cloudagent_port"] = ports[i], ["tpm_policy"] = policy,
                    ["ak_tpm"] = Convert.ToBase64String(sims[i].Key.Public.ToTpm2B()), ["mtls_cert"] = certPem,
                    ["accept_tpm_hash_algs"] = new JsonArray("sha256"), ["accept_tpm_encryption_algs"] = new JsonArray("ecc"),
                    ["accept_tpm_signing_algs"] = new JsonArray("ecdsa"),
                };
                var added = await verifier.AddAsync(id, Encoding.UTF8.GetBytes(body.ToJsonString()));
                if (!added.Succeeded) { output.WriteLine($"add {i}: {added.Status} {added.Message}"); return 1; }
                ids.Add(id);
            }
            // Warm-up: every agent judged at least once.
            var warm = Stopwatch.StartNew();
            while (warm.Elapsed < TimeSpan.FromSeconds(60))
            {
                var all = await store.ListVerifierAgentsAsync();
                if (all.All(a => a.AttestationCount > 0)) break;
                await Task.Delay(250);
            }
            output.WriteLine($"    warm-up: every agent judged once after {warm.Elapsed.TotalSeconds:0.0} s");

            var before = (await store.ListVerifierAgentsAsync()).ToDictionary(a => a.AgentId, a => a.AttestationCount);
            var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
            var sw = Stopwatch.StartNew();
            await Task.Delay(duration);
            var elapsed = sw.Elapsed;
            var cpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds / elapsed.TotalSeconds / Environment.ProcessorCount;
            var after = await store.ListVerifierAgentsAsync();
            long judged = after.Sum(a => a.AttestationCount - before.GetValueOrDefault(a.AgentId));
            int notWatched = after.Count(a => a.State != OperationalState.GetQuote);
            var perAgent = after.Select(a => a.AttestationCount - before.GetValueOrDefault(a.AgentId)).Where(n => n > 0).ToList();
            double period = perAgent.Count == 0 ? double.NaN : elapsed.TotalSeconds / perAgent.Average();
            double demand = agents / interval.TotalSeconds;
            double rate = judged / elapsed.TotalSeconds;
            bool kept = rate >= 0.9 * demand / (1 + 0.05) && notWatched == 0;

            var report = new StringBuilder();
            report.AppendLine("# Verifier under a fleet (software agents over HTTPS, loopback)");
            report.AppendLine();
            report.AppendLine($"Machine: {Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, .NET {Environment.Version}. Agents and verifier share the machine.");
            report.AppendLine($"Fleet: {agents} agents (P-256 AKs, one loopback HTTPS port each), tpm_policy on PCR 15, PCR 16 bound to the NK, IMA/measured-boot checks enabled but unused; quote interval {interval.TotalSeconds:0.#} s; measured {elapsed.TotalSeconds:0} s after warm-up.");
            report.AppendLine();
            report.AppendLine("| measure | value | target |");
            report.AppendLine("|---|---:|---|");
            report.AppendLine($"| quotes judged per second | {rate:N0} | fleet demand {demand:N0}/s (N / interval) {(kept ? "PASS" : "MISS")} |");
            report.AppendLine($"| effective period per agent | {period:0.00} s | interval + one quote round trip |");
            report.AppendLine($"| agents not in GET_QUOTE | {notWatched} | 0 |");
            report.AppendLine($"| CPU (verifier + agents) | {cpu:P0} of {Environment.ProcessorCount} cores | |");
            report.AppendLine($"| watch tasks (no thread each) | {verifier.WatchedCount} | {agents} |");
            output.WriteLine();
            output.Write(report);
            File.WriteAllText(Path.Combine(artifacts, "verifier-load.md"), report.ToString());
            code = kept ? 0 : 2;
        }
        finally
        {
            await verifier.DisposeAsync();
            store.Dispose();
            await app.StopAsync();
            await app.DisposeAsync();
            foreach (var s in sims) s.Key.Dispose();
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            try { Directory.Delete(dataPath, true); } catch (IOException) { }
        }
        return code;
    }

    private static uint AgentMask(string mask) =>
        Attestation.AgentService.ParseMask(mask) ?? (1u << 16);
}
