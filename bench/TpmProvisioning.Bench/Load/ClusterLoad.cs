using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Server.Hosting;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Cluster;

namespace TpmProvisioning.Bench.Load;

/// <summary>
/// Several verifier servers on one PostgreSQL database (a throw-away local instance, as in the tests) watching one fleet of
/// software agents over HTTPS: the same fleet is watched by 1, then 2, then 3 servers, each run on a fresh database. Reports
/// quotes judged per second against the fleet's demand (N / interval), agents out of GET_QUOTE, how the agents spread over
/// the servers, the CPU of this process (servers and agents) and PostgreSQL's own share of the machine. On one 2-core
/// machine this shows the cost of sharing the store more than a speed-up: the servers and the agents share the same cores.
/// </summary>
public static class ClusterLoad
{
    public static async Task<int> RunAsync(string artifacts, TimeSpan duration, int agents, TimeSpan interval, int maxServers, TextWriter output)
    {
        Directory.CreateDirectory(artifacts);
        if (PostgresInstance.Unavailable() is { } why) { output.WriteLine($"Cluster load skipped: {why}"); return 0; }
        output.WriteLine($"Cluster load: {agents} agents, quote interval {interval.TotalSeconds:0.#} s, 1..{maxServers} servers on one PostgreSQL, {duration.TotalSeconds:0} s measured each, {Environment.ProcessorCount} cores.");
        string loadStart = LoadAverage();
        await using var pg = await PostgresInstance.StartAsync();
        await using var fleet = await SoftwareAgentFleet.StartAsync(agents);
        var rows = new List<string>();
        bool allKept = true;
        for (int servers = 1; servers <= maxServers; servers++)
        {
            var (row, kept) = await RoundAsync(pg, fleet, servers, duration, interval, output);
            rows.Add(row);
            allKept &= kept;
        }
        var report = new StringBuilder();
        report.AppendLine("# Verifier servers sharing one PostgreSQL database (software agents over HTTPS, loopback)");
        report.AppendLine();
        report.AppendLine($"Machine: {Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, .NET {Environment.Version}, load average at the start {loadStart}, at the end {LoadAverage()}. The servers, the agents and PostgreSQL share the machine: the servers run in this process, PostgreSQL in its own processes.");
        report.AppendLine($"Fleet: {agents} agents (P-256 AKs, one loopback HTTPS port each), quote interval {interval.TotalSeconds:0.#} s, verifier leases of {Math.Max(6, 3 * interval.TotalSeconds):0} s; each row a fresh database, {duration.TotalSeconds:0} s measured after every agent was judged and the servers had settled on their shares.");
        report.AppendLine();
        report.AppendLine("| servers | quotes judged/s | demand/s | kept | agents not in GET_QUOTE | agents per server | CPU this process | CPU PostgreSQL | effective period |");
        report.AppendLine("|---:|---:|---:|---|---:|---|---:|---:|---:|");
        foreach (var r in rows) report.AppendLine(r);
        report.AppendLine();
        report.AppendLine("CPU is a share of the whole machine (all cores). On one machine, more servers add coordination (heartbeats, lease renewal, fenced writes) rather than capacity; the split pays off when each server has cores of its own.");
        output.WriteLine();
        output.Write(report);
        File.WriteAllText(Path.Combine(artifacts, "cluster.md"), report.ToString());
        return allKept ? 0 : 2;
    }

    private static async Task<(string Row, bool Kept)> RoundAsync(PostgresInstance pg, SoftwareAgentFleet fleet, int servers, TimeSpan duration, TimeSpan interval, TextWriter output)
    {
        string db = await pg.CreateDatabaseAsync($"bench{servers}");
        var dirs = new List<string>();
        var hosts = new List<IServerHost>();
        using var admin = await PostgresStore.OpenAsync(db);
        try
        {
            for (int s = 0; s < servers; s++)
            {
                var dir = Directory.CreateTempSubdirectory("tpmprov-bench-node-").FullName;
                if (dirs.Count > 0) CopyFolder(Path.Combine(dirs[0], "ca"), Path.Combine(dir, "ca"));
                dirs.Add(dir);
                hosts.Add(await ProvisioningServerHost.StartAsync(new ServerOptions
                {
                    DataPath = dir, Port = 0, Roles = ServerRole.Verifier, StoreConnectionString = db, LogLevel = LogLevelName.Warning,
                    Verifier = new VerifierSettings { VerifierId = $"bench-{s + 1}", QuoteInterval = interval, RequestTimeout = TimeSpan.FromSeconds(30) },
                }));
            }
            var ca = X509Certificate2.CreateFromPem(File.ReadAllText(hosts[0].Info.CaCertificatePath!));
            X509Certificate2 tenant;
            using (var cca = ComponentCa.LoadOrCreate(Path.Combine(dirs[0], "ca"))) tenant = cca.IssueClientCertificate("bench tenant", role: ClientRole.Tenant);
            using var http = new HttpClient(new SocketsHttpHandler
            {
                MaxConnectionsPerServer = 16,
                SslOptions = new SslClientAuthenticationOptions
                {
                    LocalCertificateSelectionCallback = (_, _, _, _, _) => tenant,
                    RemoteCertificateValidationCallback = (_, c, _, e) => PinnedCaTls.Validates(ca, c, e),
                },
            });
            var url = hosts[0].Info.Urls[0];
            await Parallel.ForEachAsync(Enumerable.Range(0, fleet.Count), new ParallelOptions { MaxDegreeOfParallelism = 16 }, async (i, ct) =>
            {
                for (int attempt = 1; ; attempt++)
                {
                    using var content = new StringContent(fleet.AddBody(i), Encoding.UTF8, "application/json");
                    using var r = await http.PostAsync($"{url}/v2.1/agents/{fleet.AgentIds[i]}", content, ct);
                    if (r.StatusCode == HttpStatusCode.OK) break;
                    // A busy server answers 503 with Retry-After: a client waits and tries again, as a tenant would.
                    if (r.StatusCode == HttpStatusCode.ServiceUnavailable && attempt < 10)
                    {
                        await Task.Delay(r.Headers.RetryAfter?.Delta ?? TimeSpan.FromSeconds(2), ct);
                        continue;
                    }
                    throw new InvalidOperationException($"add {i}: {(int)r.StatusCode} {await r.Content.ReadAsStringAsync(ct)}");
                }
            });

            var warm = Stopwatch.StartNew();
            int fair = (int)Math.Ceiling(fleet.Count / (double)servers);
            while (warm.Elapsed < TimeSpan.FromSeconds(180))
            {
                var all = await admin.ListVerifierAgentsAsync();
                var view = await admin.ListVerifierNodesAsync();
                if (all.All(a => a.AttestationCount > 0) && view.Count(v => v.Heartbeat is not null) == servers && view.All(v => v.LeasedAgents >= fair - Math.Max(2, fair / 50))) break;
                await Task.Delay(500);
            }
            output.WriteLine($"    {servers} server(s): settled after {warm.Elapsed.TotalSeconds:0.0} s");
            await Task.Delay(interval * 2);

            var before = (await admin.ListVerifierAgentsAsync()).ToDictionary(a => a.AgentId, a => a.AttestationCount);
            var proc = Process.GetCurrentProcess();
            var cpu0 = proc.TotalProcessorTime;
            var db0 = pg.CpuTime();
            var sw = Stopwatch.StartNew();
            await Task.Delay(duration);
            var elapsed = sw.Elapsed;
            proc.Refresh();
            double cpu = (proc.TotalProcessorTime - cpu0).TotalSeconds / elapsed.TotalSeconds / Environment.ProcessorCount;
            double dbCpu = (pg.CpuTime() - db0).TotalSeconds / elapsed.TotalSeconds / Environment.ProcessorCount;
            var after = await admin.ListVerifierAgentsAsync();
            long judged = after.Sum(a => a.AttestationCount - before.GetValueOrDefault(a.AgentId));
            int notWatched = after.Count(a => a.State != OperationalState.GetQuote);
            var perAgent = after.Select(a => a.AttestationCount - before.GetValueOrDefault(a.AgentId)).Where(n => n > 0).ToList();
            double period = perAgent.Count == 0 ? double.NaN : elapsed.TotalSeconds / perAgent.Average();
            var spread = after.GroupBy(a => a.VerifierId).OrderBy(g => g.Key).Select(g => g.Count().ToString(System.Globalization.CultureInfo.InvariantCulture));
            double demand = fleet.Count / interval.TotalSeconds;
            double rate = judged / elapsed.TotalSeconds;
            // As the single-node verifier load: within 10% of the demand, allowing for the round trip each period adds.
            bool kept = rate >= 0.9 * demand / 1.05 && notWatched == 0;
            output.WriteLine($"    {servers} server(s): {rate:N0} judged/s of {demand:N0}/s, CPU {cpu:P0} + PostgreSQL {dbCpu:P0}");
            return ($"| {servers} | {rate:N0} | {demand:N0} | {(kept ? "yes" : "no")} | {notWatched} | {string.Join(" / ", spread)} | {cpu:P0} | {dbCpu:P0} | {period:0.00} s |", kept);
        }
        finally
        {
            foreach (var h in hosts) await h.StopAsync();
            foreach (var d in dirs) { try { Directory.Delete(d, true); } catch (IOException) { } }
        }
    }

    /// <summary>The 1-minute load average (what else competes for the cores), or "n/a".</summary>
    private static string LoadAverage()
    {
        try { return File.ReadAllText("/proc/loadavg").Split(' ')[0]; }
        catch (IOException) { return "n/a"; }
    }

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)), true);
        foreach (var d in Directory.GetDirectories(from)) CopyFolder(d, Path.Combine(to, Path.GetFileName(d)));
    }
}
