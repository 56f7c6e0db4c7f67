using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
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
/// The verifier watching a fleet. N software agents run in a child process (<c>--load verifier-agents</c>), each with its own
/// P-256 AK and its own address (127.1.x.y on one shared port, so N agents cost the child one listening socket, not N), answering
/// <c>/v2.1/quotes/integrity</c> with quotes made in software (the same bytes a TPM makes: TPMS_ATTEST over the nonce, the PCR
/// blob, PCR 16 bound to the NK). One <see cref="VerifierService"/> in this process watches all of them every interval over TLS
/// (one connection per agent, as with real agents on their own hosts), judging every quote in full and writing every verdict to
/// SQLite. Reports judged quotes per second against the fleet's demand (N / interval), agents that left GET_QUOTE, and the
/// verifier's own CPU and memory (this process: /proc/self/stat and /proc/self/status) apart from the agents' (the child's).
/// </summary>
public static class VerifierLoad
{
    private const string ReadyLine = "agents-ready";

    // ------------------------------------------------------------------ the verifier (parent)

    public static async Task<int> RunAsync(string artifacts, TimeSpan duration, int agents, TimeSpan interval, QuoteSchedule schedule, TextWriter output, string? reportName = null)
    {
        Directory.CreateDirectory(artifacts);
        var dataPath = Directory.CreateTempSubdirectory("tpmprov-bench-verifier-").FullName;
        output.WriteLine($"Verifier load: {agents} agents (in a child process), quote interval {interval.TotalSeconds:0.#} s ({schedule}), {duration.TotalSeconds:0} s measured, {Environment.ProcessorCount} cores.");
        var started = DateTimeOffset.UtcNow;
        var baseline = ProcStats.Self();
        using var child = AgentProcess.Start(agents, Path.Combine(dataPath, "agents.json"));
        int code = 0;
        SqliteStore? store = null;
        VerifierService? verifier = null;
        try
        {
            var manifest = await child.WaitReadyAsync(TimeSpan.FromMinutes(3));
            store = await SqliteStore.OpenAsync(Path.Combine(dataPath, "tpmprovisioning.db"));
            var settings = new VerifierSettings { QuoteInterval = interval, QuoteSchedule = schedule, RequestTimeout = TimeSpan.FromSeconds(30) };
            verifier = new VerifierService(store, settings, new AgentConnector(null, settings.RequestTimeout), new RevocationNotifier([]), MeasurementChecks.Default);

            string policy = TpmPolicy.Format(new Dictionary<int, IReadOnlyList<string>> { [15] = [new string('0', 64)] });
            var add = Stopwatch.StartNew();
            TimeSpan addTime;
            // Added four at a time, as several tenants would (the store serialises the writes; the checks of each body run in parallel).
            string? addError = null;
            await Parallel.ForEachAsync(Enumerable.Range(0, agents), new ParallelOptions { MaxDegreeOfParallelism = 4 }, async (i, ct) =>
            {
                var body = new JsonObject
                {
                    ["cloudagent_ip"] = manifest.Addresses[i], ["cloudagent_port"] = manifest.Port, ["tpm_policy"] = policy,
                    ["ak_tpm"] = manifest.AkTpm[i], ["mtls_cert"] = manifest.CertPem,
                    ["accept_tpm_hash_algs"] = new JsonArray("sha256"), ["accept_tpm_encryption_algs"] = new JsonArray("ecc"),
                    ["accept_tpm_signing_algs"] = new JsonArray("ecdsa"),
                };
                var added = await verifier.AddAsync(Guid.NewGuid().ToString(), Encoding.UTF8.GetBytes(body.ToJsonString()), ct: ct);
                if (!added.Succeeded) addError ??= $"add {i}: {added.Status} {added.Message}";
            });
            if (addError is not null) { output.WriteLine(addError); return 1; }
            addTime = add.Elapsed;
            output.WriteLine($"    {agents} agents added in {addTime.TotalSeconds:0.0} s");

            // Warm-up: every agent judged at least once.
            var warm = Stopwatch.StartNew();
            bool allJudged = false;
            TimeSpan warmTime;
            while (warm.Elapsed < TimeSpan.FromSeconds(180) && !allJudged)
            {
                await Task.Delay(1000);
                allJudged = (await store.ListVerifierAgentsAsync()).All(a => a.AttestationCount > 0);
            }
            // Steady state: the runtime re-compiles hot methods in the background (tiering) for a minute or so after start; on 2 cores that
            // thread takes a good share of the CPU, so the measure starts once it has gone quiet (less than 50 ms of compiling in 5 s).
            var jitWait = Stopwatch.StartNew();
            for (var jit = System.Runtime.JitInfo.GetCompilationTime(); jitWait.Elapsed < TimeSpan.FromSeconds(90);)
            {
                await Task.Delay(5000);
                var now = System.Runtime.JitInfo.GetCompilationTime();
                if (now - jit < TimeSpan.FromMilliseconds(50)) break;
                jit = now;
            }
            warmTime = warm.Elapsed;
            output.WriteLine($"    warm-up: {(allJudged ? "every agent judged once" : "NOT every agent judged")} after {warmTime.TotalSeconds:0.0} s");

            // The window runs from the middle of the first listing to the middle of the last (listing 10,000 rows takes a while).
            var sw = Stopwatch.StartNew();
            var before = (await store.ListVerifierAgentsAsync()).ToDictionary(a => a.AgentId, a => a.AttestationCount);
            var t0 = sw.Elapsed / 2;
            // CPU, GC and thread-pool figures cover the window between the listings (the bench's own reads are left out).
            var cpuClock = Stopwatch.StartNew();
            var self0 = ProcStats.Self();
            var agents0 = ProcStats.Of(child.Id);
            long completed0 = ThreadPool.CompletedWorkItemCount;
            var jit0 = System.Runtime.JitInfo.GetCompilationTime();
            var (commits0, records0) = verifier.VerdictWrites;
            var pause0 = GC.GetTotalPauseDuration();
            long alloc0 = GC.GetTotalAllocatedBytes(false);
            int gc0 = GC.CollectionCount(0), gc2 = GC.CollectionCount(2);
            int maxThreads = 0; long maxPending = 0, maxRss = 0;
            while (sw.Elapsed - t0 < duration)
            {
                await Task.Delay(TimeSpan.FromSeconds(Math.Clamp((duration - (sw.Elapsed - t0)).TotalSeconds, 0.01, 1)));
                maxThreads = Math.Max(maxThreads, ThreadPool.ThreadCount);
                maxPending = Math.Max(maxPending, ThreadPool.PendingWorkItemCount);
                maxRss = Math.Max(maxRss, ProcStats.RssOf(Environment.ProcessId));
            }
            var self1 = ProcStats.Self();
            var agents1 = ProcStats.Of(child.Id);
            var cpuWindow = cpuClock.Elapsed;
            long completed1 = ThreadPool.CompletedWorkItemCount;
            var jitMs = (System.Runtime.JitInfo.GetCompilationTime() - jit0).TotalMilliseconds;
            var pause1 = GC.GetTotalPauseDuration();
            long alloc1 = GC.GetTotalAllocatedBytes(false);
            int gc0n = GC.CollectionCount(0) - gc0, gc2n = GC.CollectionCount(2) - gc2;
            var gcInfo = GC.GetGCMemoryInfo(GCKind.Any);
            var t1 = sw.Elapsed;
            var after = await store.ListVerifierAgentsAsync();
            var elapsed = (t1 + sw.Elapsed) / 2 - t0;
            long judged = after.Sum(a => a.AttestationCount - before.GetValueOrDefault(a.AgentId));
            int notWatched = after.Count(a => a.State != OperationalState.GetQuote);
            int starved = after.Count(a => a.AttestationCount - before.GetValueOrDefault(a.AgentId) < Math.Floor(elapsed / interval) - 1);
            double demand = agents / interval.TotalSeconds;
            double rate = judged / elapsed.TotalSeconds;
            double verifierCores = (self1.CpuSeconds - self0.CpuSeconds) / cpuWindow.TotalSeconds;
            double agentCores = (agents1.CpuSeconds - agents0.CpuSeconds) / cpuWindow.TotalSeconds;
            bool kept = allJudged && rate >= 0.95 * demand && notWatched == 0;
            var r = new LoadResult
            {
                Started = started, Agents = agents, IntervalSeconds = interval.TotalSeconds, Schedule = schedule,
                Gen0Budget = Environment.GetEnvironmentVariable("DOTNET_GCgen0size") is { Length: > 0 } g0 ? $"{g0} (DOTNET_GCgen0size)" : "the runtime's default", MeasuredSeconds = Math.Round(elapsed.TotalSeconds, 2),
                Cores = Environment.ProcessorCount, Os = System.Runtime.InteropServices.RuntimeInformation.OSDescription, Runtime = Environment.Version.ToString(),
                ServerGc = System.Runtime.GCSettings.IsServerGC, WarmupSeconds = Math.Round(warmTime.TotalSeconds, 1), AddSeconds = Math.Round(addTime.TotalSeconds, 1),
                Demand = demand, QuotesPerSecond = Math.Round(rate, 1), RateOfDemand = Math.Round(rate / demand, 4),
                EffectivePeriodSeconds = Math.Round(agents * elapsed.TotalSeconds / Math.Max(1, judged), 3),
                AgentsNotInGetQuote = notWatched, AgentsBehindSchedule = starved, Kept = kept,
                VerifierCpuCores = Math.Round(verifierCores, 3), VerifierCpuMicrosecondsPerQuote = Math.Round(verifierCores * 1e6 / Math.Max(1, rate), 1),
                AgentsCpuCores = Math.Round(agentCores, 3),
                VerifierRssBytes = self1.RssBytes, VerifierHwmBytes = self1.HwmBytes, VerifierMaxRssMeasuredBytes = Math.Max(maxRss, self1.RssBytes), BaselineRssBytes = baseline.RssBytes,
                RssPerAgentBytes = self1.RssBytes / agents, RssAbovePerAgentBytes = (self1.RssBytes - baseline.RssBytes) / agents,
                AgentsRssBytes = agents1.RssBytes,
                GcHeapBytes = gcInfo.HeapSizeBytes, GcCommittedBytes = gcInfo.TotalCommittedBytes, GcGen0 = gc0n, GcGen2 = gc2n,
                AllocatedBytesPerQuote = (alloc1 - alloc0) / Math.Max(1, judged),
                GcPausePercent = Math.Round((pause1 - pause0).TotalMilliseconds / cpuWindow.TotalMilliseconds * 100, 2),
                ThreadPoolThreads = ThreadPool.ThreadCount, ThreadPoolMaxThreads = maxThreads, ThreadPoolMaxPending = maxPending,
                ThreadPoolItemsPerSecond = Math.Round((completed1 - completed0) / cpuWindow.TotalSeconds),
                JitMilliseconds = Math.Round(jitMs), VerdictCommits = verifier.VerdictWrites.Commits - commits0, VerdictRecords = verifier.VerdictWrites.Records - records0,
                OsThreads = self1.Threads, FileDescriptors = self1.Fds, Sockets = self1.Sockets, Watches = verifier.WatchedCount,
            };
            var report = r.Markdown();
            output.WriteLine();
            output.Write(report);
            string name = reportName ?? $"verifier-load-{agents}{(schedule == QuoteSchedule.AfterVerdict ? "-after-verdict" : "")}";
            File.WriteAllText(Path.Combine(artifacts, name + ".md"), report);
            File.WriteAllText(Path.Combine(artifacts, name + ".json"), JsonSerializer.Serialize(r, new JsonSerializerOptions { WriteIndented = true }));
            code = kept ? 0 : 2;
        }
        finally
        {
            if (verifier is not null) await verifier.DisposeAsync();
            store?.Dispose();
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            try { Directory.Delete(dataPath, true); } catch (IOException) { }
        }
        return code;
    }

    private sealed record LoadResult
    {
        public DateTimeOffset Started { get; init; }
        public int Agents { get; init; }
        public double IntervalSeconds { get; init; }
        public double MeasuredSeconds { get; init; }
        public int Cores { get; init; }
        public string Os { get; init; } = "";
        public string Runtime { get; init; } = "";
        public bool ServerGc { get; init; }
        public double AddSeconds { get; init; }
        public double WarmupSeconds { get; init; }
        public double Demand { get; init; }
        public double QuotesPerSecond { get; init; }
        public double RateOfDemand { get; init; }
        public double EffectivePeriodSeconds { get; init; }
        public int AgentsNotInGetQuote { get; init; }
        public int AgentsBehindSchedule { get; init; }
        public bool Kept { get; init; }
        public double VerifierCpuCores { get; init; }
        public double VerifierCpuMicrosecondsPerQuote { get; init; }
        public double AgentsCpuCores { get; init; }
        public long VerifierRssBytes { get; init; }
        public long VerifierHwmBytes { get; init; }
        public long VerifierMaxRssMeasuredBytes { get; init; }
        public long BaselineRssBytes { get; init; }
        [System.Text.Json.Serialization.JsonConverter(typeof(System.Text.Json.Serialization.JsonStringEnumConverter<QuoteSchedule>))]
        public QuoteSchedule Schedule { get; init; }
        public string Gen0Budget { get; init; } = "";
        public long RssPerAgentBytes { get; init; }
        public long RssAbovePerAgentBytes { get; init; }
        public long AgentsRssBytes { get; init; }
        public long GcHeapBytes { get; init; }
        public long GcCommittedBytes { get; init; }
        public int GcGen0 { get; init; }
        public int GcGen2 { get; init; }
        public double GcPausePercent { get; init; }
        public long AllocatedBytesPerQuote { get; init; }
        public int ThreadPoolThreads { get; init; }
        public int ThreadPoolMaxThreads { get; init; }
        public long ThreadPoolMaxPending { get; init; }
        public double ThreadPoolItemsPerSecond { get; init; }
        public double JitMilliseconds { get; init; }
        public long VerdictCommits { get; init; }
        public long VerdictRecords { get; init; }
        public int OsThreads { get; init; }
        public int FileDescriptors { get; init; }
        public int Sockets { get; init; }
        public int Watches { get; init; }

        public string Markdown()
        {
            static string Mb(long b) => $"{b / 1048576.0:N0} MiB";
            var s = new StringBuilder();
            s.AppendLine($"# Verifier under a fleet of {Agents:N0} agents (software agents over HTTPS, loopback)");
            s.AppendLine();
            s.AppendLine($"Run {Started:yyyy-MM-dd HH:mm} UTC. Machine: {Cores} cores, {Os}, .NET {Runtime}, {(ServerGc ? "server" : "workstation")} GC, gen0 budget {Gen0Budget}. The agents run in a child process; CPU and memory below are the verifier process's own unless marked.");
            s.AppendLine($"Fleet: {Agents:N0} agents (P-256 AKs, one address each, one TLS connection each), tpm_policy on PCR 15, PCR 16 bound to the NK, IMA/measured-boot checks enabled but unused; quote interval {IntervalSeconds:0.#} s, schedule {Schedule}; agents added in {AddSeconds:0.0} s, warm-up {WarmupSeconds:0.0} s, measured {MeasuredSeconds:0} s.");
            s.AppendLine();
            s.AppendLine("| measure | value | target |");
            s.AppendLine("|---|---:|---|");
            s.AppendLine($"| quotes judged per second | {QuotesPerSecond:N0} ({RateOfDemand:P1} of demand) | within 5% of N / interval = {Demand:N0}/s: {(Kept ? "PASS" : "MISS")} |");
            s.AppendLine($"| effective period per agent | {EffectivePeriodSeconds:0.000} s | {(Schedule == QuoteSchedule.FixedRate ? "the interval (start to start)" : "interval + one quote round trip (Keylime's pacing)")} |");
            s.AppendLine($"| agents not in GET_QUOTE | {AgentsNotInGetQuote} | 0 |");
            s.AppendLine($"| agents judged fewer than (measured / interval) - 1 times | {AgentsBehindSchedule} | 0 |");
            s.AppendLine($"| verifier CPU | {VerifierCpuCores:0.00} cores ({VerifierCpuMicrosecondsPerQuote:N0} µs per quote) | |");
            s.AppendLine($"| agents' CPU (child process) | {AgentsCpuCores:0.00} cores | |");
            s.AppendLine($"| verifier RSS at end / peak (VmHWM) | {Mb(VerifierRssBytes)} / {Mb(VerifierHwmBytes)} | well under 2 GB |");
            s.AppendLine($"| verifier RSS per agent (RSS / N; above the process's start) | {RssPerAgentBytes / 1024.0:N1} KiB; {RssAbovePerAgentBytes / 1024.0:N1} KiB | |");
            s.AppendLine($"| GC heap / committed | {Mb(GcHeapBytes)} / {Mb(GcCommittedBytes)} | |");
            s.AppendLine($"| GC during the measure | {GcGen0} gen0, {GcGen2} gen2, {GcPausePercent:0.00}% paused | |");
            s.AppendLine($"| allocated per judged quote (verifier process) | {AllocatedBytesPerQuote / 1024.0:N1} KiB | |");
            s.AppendLine($"| thread pool: threads (max seen), max queued, items/s | {ThreadPoolThreads} ({ThreadPoolMaxThreads}), {ThreadPoolMaxPending}, {ThreadPoolItemsPerSecond:N0} | no starvation: threads near cores, queue short |");
            s.AppendLine($"| verdicts stored / commits | {VerdictRecords:N0} / {VerdictCommits:N0} | several verdicts per commit under load |");
            s.AppendLine($"| JIT compiling during the measure | {JitMilliseconds:N0} ms | steady state |");
            s.AppendLine($"| OS threads, file descriptors, sockets | {OsThreads}, {FileDescriptors}, {Sockets} | one socket per agent |");
            s.AppendLine($"| agents' RSS (child process) | {Mb(AgentsRssBytes)} | |");
            s.AppendLine($"| watches | {Watches:N0} | {Agents:N0} |");
            return s.ToString();
        }
    }

    /// <summary>CPU, memory, threads and descriptors of a process from /proc (Linux).</summary>
    private readonly record struct ProcStats(double CpuSeconds, long RssBytes, long HwmBytes, int Threads, int Fds, int Sockets)
    {
        public static ProcStats Self() => Of(Environment.ProcessId);

        public static ProcStats Of(int pid)
        {
            if (!OperatingSystem.IsLinux())
            {
                using var p = Process.GetProcessById(pid);
                return new(p.TotalProcessorTime.TotalSeconds, p.WorkingSet64, p.PeakWorkingSet64, p.Threads.Count, 0, 0);
            }
            try
            {
                var stat = File.ReadAllText($"/proc/{pid}/stat");
                var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                // fields[0] is field 3 (state): utime is field 14, stime field 15.
                double ticks = long.Parse(fields[11]) + long.Parse(fields[12]);
                long rss = 0, hwm = 0; int threads = 0;
                foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                {
                    if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = Kib(line);
                    else if (line.StartsWith("VmHWM:", StringComparison.Ordinal)) hwm = Kib(line);
                    else if (line.StartsWith("Threads:", StringComparison.Ordinal)) threads = int.Parse(line[8..].Trim());
                }
                int fds = 0, sockets = 0;
                foreach (var fd in Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd"))
                {
                    fds++;
                    try { if (new FileInfo(fd).LinkTarget?.StartsWith("socket:", StringComparison.Ordinal) == true) sockets++; }
                    catch (IOException) { }
                }
                return new(ticks / 100.0, rss, hwm, threads, fds, sockets);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException) { return default; }
        }

        /// <summary>Only VmRSS (cheap: no walk of the descriptors), for sampling during the measure.</summary>
        public static long RssOf(int pid)
        {
            if (!OperatingSystem.IsLinux()) return Environment.WorkingSet;
            try
            {
                foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                    if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) return Kib(line);
            }
            catch (IOException) { }
            return 0;
        }

        private static long Kib(string line) => long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
    }

    /// <summary>What the agents' process hands the verifier: where each agent listens and its AK.</summary>
    private sealed record Manifest(int Port, string CertPem, string[] Addresses, string[] AkTpm);

    /// <summary>The child process of software agents, stopped by closing its stdin and, failing that, killed by id.</summary>
    private sealed class AgentProcess : IDisposable
    {
        private readonly Process _process;
        private readonly string _manifestPath;

        private AgentProcess(Process process, string manifestPath) { _process = process; _manifestPath = manifestPath; }

        public int Id => _process.Id;

        public static AgentProcess Start(int agents, string manifestPath)
        {
            var psi = new ProcessStartInfo { RedirectStandardInput = true, RedirectStandardOutput = true, UseShellExecute = false };
            string host = Environment.ProcessPath ?? "dotnet";
            psi.FileName = host;
            if (Path.GetFileNameWithoutExtension(host).Equals("dotnet", StringComparison.OrdinalIgnoreCase))
                psi.ArgumentList.Add(typeof(VerifierLoad).Assembly.Location);
            // The GC tuning under test is the verifier's; the agents keep the runtime's defaults.
            psi.Environment.Remove("DOTNET_GCgen0size");
            foreach (var a in new[] { "--load", "verifier-agents", "--agents", agents.ToString(System.Globalization.CultureInfo.InvariantCulture), "--manifest", manifestPath })
                psi.ArgumentList.Add(a);
            return new AgentProcess(Process.Start(psi) ?? throw new InvalidOperationException("The agents' process did not start."), manifestPath);
        }

        public async Task<Manifest> WaitReadyAsync(TimeSpan timeout)
        {
            using var cts = new CancellationTokenSource(timeout);
            while (await _process.StandardOutput.ReadLineAsync(cts.Token) is { } line)
                if (line == ReadyLine)
                    return JsonSerializer.Deserialize<Manifest>(await File.ReadAllTextAsync(_manifestPath, cts.Token))!;
            throw new InvalidOperationException($"The agents' process ended before it was ready (exit {(_process.HasExited ? _process.ExitCode : -1)}).");
        }

        public void Dispose()
        {
            try
            {
                if (!_process.HasExited)
                {
                    _process.StandardInput.Close();
                    if (!_process.WaitForExit(15000)) _process.Kill(entireProcessTree: true);
                    _process.WaitForExit(15000);
                }
            }
            catch (InvalidOperationException) { }
            _process.Dispose();
        }
    }

    // ------------------------------------------------------------------ the agents (child)

    private sealed record SimAgent(SoftwareAttestationKey Key);

    /// <summary>Agent i's address: 127.1.hi.lo, 250 agents per /24 (loopback on Linux covers 127.0.0.0/8).</summary>
    private static string AgentAddress(int i) => $"127.1.{i / 250}.{i % 250 + 1}";

    private static int AgentIndex(IPAddress address)
    {
        var b = address.IsIPv4MappedToIPv6 ? address.MapToIPv4().GetAddressBytes() : address.GetAddressBytes();
        return b.Length == 4 && b[0] == 127 && b[1] == 1 && b[3] is >= 1 and <= 250 ? b[2] * 250 + b[3] - 1 : -1;
    }

    /// <summary>
    /// <c>--load verifier-agents --agents N --manifest PATH</c>: serves N software agents on one port of the wildcard address
    /// (connections from outside loopback are closed unanswered), writes the manifest, prints <see cref="ReadyLine"/> and serves
    /// until stdin closes.
    /// </summary>
    public static async Task<int> RunAgentsAsync(int agents, string manifestPath)
    {
        if (agents is < 1 or > 250 * 250) { Console.Error.WriteLine("--agents: 1 to 62500."); return 1; }
        var dataPath = Directory.CreateTempSubdirectory("tpmprov-bench-agents-").FullName;
        using var nk = RSA.Create(2048);
        string nkPem = nk.ExportSubjectPublicKeyInfoPem() + "\n";
        var pcr16 = SHA256.HashData([.. new byte[32], .. SHA256.HashData(Encoding.UTF8.GetBytes(nkPem))]);
        using var tlsKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest("CN=bench-agents", tlsKey, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback); // the verifier pins the certificate itself (mtls_cert), not the address
        req.CertificateExtensions.Add(san.Build());
        using var tlsCertEphemeral = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        using var tlsCert = X509CertificateLoader.LoadPkcs12(tlsCertEphemeral.Export(X509ContentType.Pkcs12), null);
        var sims = Enumerable.Range(0, agents).Select(_ => new SimAgent(SoftwareAttestationKey.CreateEccP256())).ToArray();
        long boot = Environment.TickCount64;

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ApplicationName = "tpmprov-bench-agents", ContentRootPath = dataPath });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.KeepAliveTimeout = TimeSpan.FromMinutes(10); // agents keep the verifier's connection between quotes
            k.Listen(IPAddress.Any, 0, lo =>
            {
                lo.Use(next => ctx => ctx.RemoteEndPoint is IPEndPoint ep && IPAddress.IsLoopback(ep.Address) ? next(ctx) : Task.CompletedTask);
                lo.UseHttps(tlsCert);
            });
        });
        var app = builder.Build();
        app.MapGet("/v2.1/quotes/integrity", (HttpContext ctx) =>
        {
            int index = ctx.Connection.LocalIpAddress is { } local ? AgentIndex(local) : -1;
            if (index < 0 || index >= sims.Length) return Results.NotFound();
            var sim = sims[index];
            var q = ctx.Request.Query;
            string nonce = q["nonce"].ToString();
            uint mask = AgentMask(q["mask"].ToString());
            var selection = PcrSelection.FromBitmask(TpmAlgId.Sha256, mask);
            var values = new PcrValues();
            foreach (var (bank, pcr) in selection.Enumerate()) values.Set(bank, pcr, pcr == 16 ? pcr16 : new byte[32]);
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
        try
        {
            var port = app.Services.GetService(typeof(IServer)) is IServer server && server.Features.Get<IServerAddressesFeature>() is { } f
                ? f.Addresses.Select(a => new Uri(a.Replace("0.0.0.0", "127.0.0.1", StringComparison.Ordinal)).Port).FirstOrDefault() : 0;
            if (port == 0) { Console.Error.WriteLine("Kestrel bound no port."); return 1; }
            var manifest = new Manifest(port, tlsCert.ExportCertificatePem(),
                Enumerable.Range(0, agents).Select(AgentAddress).ToArray(),
                sims.Select(s => Convert.ToBase64String(s.Key.Public.ToTpm2B())).ToArray());
            await File.WriteAllTextAsync(manifestPath, JsonSerializer.Serialize(manifest));
            Console.Out.WriteLine(ReadyLine);
            Console.Out.Flush();
            // Serve until the verifier closes our stdin (or dies, which closes it too).
            await Console.In.ReadToEndAsync();
        }
        finally
        {
            await app.StopAsync();
            await app.DisposeAsync();
            foreach (var s in sims) s.Key.Dispose();
            try { Directory.Delete(dataPath, true); } catch (IOException) { }
        }
        return 0;
    }

    private static uint AgentMask(string mask) =>
        Attestation.AgentService.ParseMask(mask) ?? (1u << 16);
}
