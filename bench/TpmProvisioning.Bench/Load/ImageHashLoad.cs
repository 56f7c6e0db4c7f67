using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Server.Hosting;
using TpmProvisioning.Station;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Bench.Load;

/// <summary>
/// Image hashing at disk speed: a file of <c>sizeMiB</c> MiB in a real station's images folder (Kestrel, TLS, SQLite, in this
/// process), hashed by <c>sha256sum</c> and by the station's <c>/get-image-sha256</c> route (started, then polled until complete)
/// in the same run, alternately, three times each after one warm-up read (so both read from the same page cache). The best
/// run of each is reported in MB/s (10^6 bytes per second); the target is at least 90 % of <c>sha256sum</c>.
/// </summary>
public static class ImageHashLoad
{
    public static async Task<int> RunAsync(string artifacts, int sizeMiB, bool strict, TextWriter output)
    {
        Directory.CreateDirectory(artifacts);
        var dataPath = Directory.CreateTempSubdirectory("tpmprov-bench-images-").FullName;
        try
        {
            string images = Path.Combine(dataPath, "station", "images");
            Directory.CreateDirectory(images);
            string file = Path.Combine(images, "bench.img");
            long size = (long)sizeMiB << 20;
            output.WriteLine($"Image hash: a {sizeMiB} MiB file, sha256sum and GET /get-image-sha256 (HTTPS, in-process server), {Environment.ProcessorCount} cores.");
            await using (var fs = new FileStream(file, FileMode.CreateNew, FileAccess.Write, FileShare.None, 0))
            {
                var block = RandomNumberGenerator.GetBytes(4 << 20);
                for (long done = 0; done < size; done += block.Length)
                {
                    block[0]++; // no two blocks alike
                    await fs.WriteAsync(block.AsMemory(0, (int)Math.Min(block.Length, size - done)));
                }
            }
            // Warm-up: one full read, so both contenders start from the same page cache.
            await using (var warm = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 4 << 20, FileOptions.SequentialScan))
            {
                var buf = new byte[4 << 20];
                while (await warm.ReadAsync(buf) > 0) { }
            }

            var host = await ProvisioningServerHost.StartAsync(new ServerOptions
            {
                DataPath = dataPath, Port = 0, Roles = ServerRole.Provisioning | ServerRole.Station, LogLevel = LogLevelName.Warning,
            });
            try
            {
                string token;
                using (var admin = await SqliteStore.OpenAsync(Path.Combine(dataPath, "tpmprovisioning.db")))
                    token = (await new StationTokenManager(admin).CreateAsync("bench")).Token;
                var serverCa = X509Certificate2.CreateFromPem(File.ReadAllText(host.Info.CaCertificatePath!));
                using var http = new HttpClient(new SocketsHttpHandler
                {
                    SslOptions = new SslClientAuthenticationOptions { RemoteCertificateValidationCallback = (_, c, _, e) => PinnedCaTls.Validates(serverCa, c, e) },
                });
                http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
                var url = new Uri(new Uri(host.Info.Urls[0]), "get-image-sha256?name=bench.img");

                string? expected = null, routeSha = null;
                var toolTimes = new List<double>();
                var routeTimes = new List<double>();
                for (int run = 0; run < 3; run++)
                {
                    var sw = Stopwatch.StartNew();
                    using (var p = Process.Start(new ProcessStartInfo("sha256sum", [file]) { RedirectStandardOutput = true, UseShellExecute = false })!)
                    {
                        expected = (await p.StandardOutput.ReadToEndAsync()).Split(' ')[0];
                        await p.WaitForExitAsync();
                    }
                    toolTimes.Add(sw.Elapsed.TotalSeconds);

                    // A new modification time drops the cached hash: the route hashes the file again.
                    File.SetLastWriteTimeUtc(file, DateTime.UtcNow.AddSeconds(run + 1));
                    sw.Restart();
                    while (true)
                    {
                        using var doc = JsonDocument.Parse(await http.GetStringAsync(url));
                        if (doc.RootElement.GetProperty("status").GetString() == "complete")
                        {
                            routeSha = doc.RootElement.GetProperty("sha256").GetString();
                            break;
                        }
                        await Task.Delay(5);
                    }
                    routeTimes.Add(sw.Elapsed.TotalSeconds);
                }
                double toolMBps = size / toolTimes.Min() / 1e6, routeMBps = size / routeTimes.Min() / 1e6, ratio = routeMBps / toolMBps;
                bool same = string.Equals(expected, routeSha, StringComparison.OrdinalIgnoreCase);
                var sb = new StringBuilder();
                sb.AppendLine($"# Image SHA-256: /get-image-sha256 against sha256sum ({sizeMiB} MiB, page cache warm, best of 3)");
                sb.AppendLine();
                sb.AppendLine("| measure | value | target |");
                sb.AppendLine("|---|---|---|");
                sb.AppendLine(string.Create(CultureInfo.InvariantCulture, $"| sha256sum | {toolMBps:N0} MB/s | |"));
                sb.AppendLine(string.Create(CultureInfo.InvariantCulture, $"| GET /get-image-sha256 | {routeMBps:N0} MB/s | |"));
                sb.AppendLine(string.Create(CultureInfo.InvariantCulture, $"| ratio | {ratio:P0} | >= 90 % {(ratio >= 0.9 ? "PASS" : "MISS")} |"));
                sb.AppendLine($"| same digest | {(same ? "yes" : "NO")} | yes {(same ? "PASS" : "FAIL")} |");
                sb.AppendLine(string.Create(CultureInfo.InvariantCulture, $"| runs (s) | sha256sum {string.Join(", ", toolTimes.Select(t => t.ToString("0.000", CultureInfo.InvariantCulture)))}; route {string.Join(", ", routeTimes.Select(t => t.ToString("0.000", CultureInfo.InvariantCulture)))} | |"));
                var text = sb.ToString();
                output.WriteLine();
                output.Write(text);
                File.WriteAllText(Path.Combine(artifacts, "image-hash.md"), text);
                if (!same) return 1;
                return strict && ratio < 0.9 ? 2 : 0;
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
}
