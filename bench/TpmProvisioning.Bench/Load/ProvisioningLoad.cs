using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Server.Hosting;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Fixtures;

namespace TpmProvisioning.Bench.Load;

/// <summary>
/// Provisioning throughput over HTTPS on loopback: a real server (Kestrel, TLS, SQLite store, P-256 TPM CA) in this
/// process, concurrent clients posting well-formed requests from software devices (RSA-2048 EKs with certificates from a
/// software manufacturer, RSA AKs, CSRs signed by the AKs). Every request is fully checked and signed by the server;
/// a pool of devices is cycled, which the server accepts as re-provisioning of the same device and EK.
/// Prints and saves throughput, p50/p99/max latency, and the machine's raw P-256 sign and verify rates from the same run.
/// </summary>
public static class ProvisioningLoad
{
    public static async Task<int> RunAsync(string artifacts, TimeSpan duration, int concurrency, int devices, TextWriter output)
    {
        Directory.CreateDirectory(artifacts);
        var dataPath = Directory.CreateTempSubdirectory("tpmprov-bench-").FullName;
        try
        {
            output.WriteLine($"Provisioning load: {concurrency} concurrent HTTPS clients for {duration.TotalSeconds:0} s, pool of {devices} software devices, {Environment.ProcessorCount} cores.");
            using var manufacturer = new TestManufacturer();
            EkTrustStore.Add(dataPath, manufacturer.Root, EkTrustKind.Root);
            EkTrustStore.Add(dataPath, manufacturer.Issuer, EkTrustKind.Intermediate);
            var host = await ProvisioningServerHost.StartAsync(new ServerOptions
            {
                DataPath = dataPath, Port = 0, Roles = ServerRole.Provisioning, LogLevel = LogLevelName.Warning,
            });
            try
            {
                string key;
                using (var admin = await SqliteStore.OpenAsync(Path.Combine(dataPath, "tpmprovisioning.db")))
                    key = (await new ApiKeyManager(admin).CreateAsync("bench", ["Contoso"])).Key;

                var bodies = new byte[devices][];
                var pool = new List<SoftwareDevice>();
                for (int i = 0; i < devices; i++)
                {
                    var d = new SoftwareDevice(manufacturer, new DeviceIdentity($"bench-device-{i:D5}", $"BENCH-{i:D5}", "Contoso", "1.0"));
                    pool.Add(d);
                    bodies[i] = System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(d.Request(key), ProvisioningJsonContext.Default.ProvisioningRequest);
                }
                var serverCa = X509Certificate2.CreateFromPem(File.ReadAllText(host.Info.CaCertificatePath!));
                using var http = new HttpClient(new SocketsHttpHandler
                {
                    MaxConnectionsPerServer = concurrency,
                    SslOptions = new SslClientAuthenticationOptions { RemoteCertificateValidationCallback = (_, c, _, e) => PinnedCaTls.Validates(serverCa, c, e) },
                });
                var url = new Uri(new Uri(host.Info.Urls[0]), "api/tpm/tpm/provision");

                // Correctness first: one response must open with the device's software EK into a certificate for its AK.
                using (var first = await Post(http, url, bodies[0]))
                {
                    if (first.StatusCode != HttpStatusCode.OK) throw new InvalidOperationException($"Warm-up request failed: {(int)first.StatusCode} {await first.Content.ReadAsStringAsync()}");
                    var resp = await first.Content.ReadFromJsonAsync(ProvisioningJsonContext.Default.ProvisioningResponse);
                    var cert = pool[0].Open(resp!);
                    if (!cert.PublicKey.ExportSubjectPublicKeyInfo().AsSpan().SequenceEqual(pool[0].Ak.Public.ToSubjectPublicKeyInfo()))
                        throw new InvalidOperationException("The AK certificate does not carry the device's AK.");
                }

                // Warm-up, then the measured run.
                await Drive(http, url, bodies, concurrency, TimeSpan.FromSeconds(2), null);
                var latencies = new List<double>[concurrency];
                for (int i = 0; i < concurrency; i++) latencies[i] = new List<double>(100_000);
                var sw = Stopwatch.StartNew();
                var (ok, failed) = await Drive(http, url, bodies, concurrency, duration, latencies);
                sw.Stop();
                var all = latencies.SelectMany(l => l).Order().ToArray();
                double rate = ok / sw.Elapsed.TotalSeconds;
                double P(double q) => all.Length == 0 ? double.NaN : all[Math.Min(all.Length - 1, (int)Math.Ceiling(q * all.Length) - 1)];

                var (signRate, verifyRate) = RawP256Rates();
                var sb = new StringBuilder();
                sb.AppendLine("# Provisioning throughput (POST /api/tpm/tpm/provision over HTTPS, loopback)");
                sb.AppendLine();
                sb.AppendLine($"Machine: {Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, .NET {Environment.Version}. Server and clients share the machine.");
                sb.AppendLine($"Load: {concurrency} concurrent clients, {duration.TotalSeconds:0} s, {devices} software devices (RSA-2048 EK + certificate, RSA-2048 AK, CSR) cycled; P-256 TPM CA; SQLite store (WAL).");
                sb.AppendLine();
                sb.AppendLine("| measure | value | target |");
                sb.AppendLine("|---|---:|---|");
                sb.AppendLine($"| provisions per second | {rate:N0} | >= 1,000 {(rate >= 1000 ? "PASS" : "FAIL")} |");
                sb.AppendLine($"| latency p50 | {P(0.50):N1} ms | |");
                sb.AppendLine($"| latency p99 | {P(0.99):N1} ms | < 50 ms {(P(0.99) < 50 ? "PASS" : "FAIL")} |");
                sb.AppendLine($"| latency max | {(all.Length == 0 ? double.NaN : all[^1]):N1} ms | |");
                sb.AppendLine($"| requests ok / failed | {ok:N0} / {failed:N0} | failed = 0 {(failed == 0 ? "PASS" : "FAIL")} |");
                sb.AppendLine($"| raw P-256 sign, 1 core | {signRate:N0}/s | |");
                sb.AppendLine($"| raw P-256 verify, 1 core | {verifyRate:N0}/s | |");
                var text = sb.ToString();
                output.WriteLine();
                output.Write(text);
                File.WriteAllText(Path.Combine(artifacts, "provisioning.md"), text);
                foreach (var d in pool) d.Dispose();
                return failed == 0 ? 0 : 1;
            }
            finally
            {
                await host.StopAsync();
            }
        }
        finally
        {
            try { Directory.Delete(dataPath, true); } catch (IOException) { }
        }
    }

    private static Task<HttpResponseMessage> Post(HttpClient http, Uri url, byte[] body)
    {
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
        return http.PostAsync(url, content);
    }

    private static async Task<(long Ok, long Failed)> Drive(HttpClient http, Uri url, byte[][] bodies, int concurrency, TimeSpan duration, List<double>[]? latencies)
    {
        long ok = 0, failed = 0, next = 0;
        var end = Stopwatch.GetTimestamp() + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        var workers = Enumerable.Range(0, concurrency).Select(w => Task.Run(async () =>
        {
            while (Stopwatch.GetTimestamp() < end)
            {
                var body = bodies[(int)(Interlocked.Increment(ref next) % bodies.Length)];
                long t0 = Stopwatch.GetTimestamp();
                try
                {
                    using var r = await Post(http, url, body);
                    await r.Content.LoadIntoBufferAsync();
                    if (r.StatusCode == HttpStatusCode.OK) Interlocked.Increment(ref ok); else Interlocked.Increment(ref failed);
                }
                catch (HttpRequestException) { Interlocked.Increment(ref failed); }
                latencies?[w].Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
            }
        })).ToArray();
        await Task.WhenAll(workers);
        return (ok, failed);
    }

    /// <summary>Raw single-thread P-256 ECDSA sign and verify rates over a SHA-256 digest, one second each.</summary>
    private static (double Sign, double Verify) RawP256Rates()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var digest = SHA256.HashData("bench"u8);
        var sig = key.SignHash(digest);
        double Measure(Action a)
        {
            for (int i = 0; i < 200; i++) a();
            long n = 0;
            var sw = Stopwatch.StartNew();
            while (sw.ElapsedMilliseconds < 1000) { a(); n++; }
            return n / sw.Elapsed.TotalSeconds;
        }
        return (Measure(() => key.SignHash(digest)), Measure(() => key.VerifyHash(digest, sig)));
    }
}
