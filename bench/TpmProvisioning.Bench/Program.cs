using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using Perfolizer.Horology;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using TpmProvisioning.Bench.Reporting;

namespace TpmProvisioning.Bench;

/// <summary>
/// Runs the benchmarks of this assembly with BenchmarkDotNet, then writes a plain summary per benchmark class.
/// </summary>
/// <remarks>
/// <para>Usage: <c>dotnet run -c Release --project bench/TpmProvisioning.Bench -- [--artifacts DIR] [--filter GLOB] [--strict] [BenchmarkDotNet options]</c></para>
/// <para>Every public class with <c>[Benchmark]</c> methods is picked up; <c>--filter '*QuoteVerify*'</c> selects (default: all).
/// A class names its summary file with <see cref="ReportFileAttribute"/> and asks for ratios with <see cref="RatioToAttribute"/>.
/// Summaries go to <c>DIR/&lt;name&gt;.md</c>, BenchmarkDotNet's own reports to <c>DIR/results</c>.</para>
/// <para>Exit code: 0; 1 when a benchmark failed or nothing ran; 2 when <c>--strict</c> is given and a ratio target was missed.</para>
/// </remarks>
public static class Program
{
    public static int Main(string[] args)
    {
        var list = args.ToList();
        bool strict = list.Remove("--strict");
        string artifacts = Path.GetFullPath(OptionValue(list, "--artifacts", "-a") ?? "BenchmarkDotNet.Artifacts");
        // Load tests are not micro-benchmarks: `--load provisioning [--duration S] [--concurrency N] [--devices N]`,
        // `--load verifier [--duration S] [--agents N] [--interval S] [--schedule FixedRate|AfterVerdict] [--report <file name>]`, `--load image-hash [--size-mib N]`.
        if (OptionValue(list, "--load") is { } load)
        {
            if (load == "verifier-agents") // the child process of `--load verifier`
                return Load.VerifierLoad.RunAgentsAsync(int.Parse(OptionValue(list, "--agents") ?? "500"), OptionValue(list, "--manifest") ?? "agents.json").GetAwaiter().GetResult();
            if (load == "verifier")
                return Load.VerifierLoad.RunAsync(artifacts,
                    TimeSpan.FromSeconds(int.Parse(OptionValue(list, "--duration") ?? "20")),
                    int.Parse(OptionValue(list, "--agents") ?? "500"),
                    TimeSpan.FromSeconds(double.Parse(OptionValue(list, "--interval") ?? "2", System.Globalization.CultureInfo.InvariantCulture)),
                    Enum.Parse<TpmProvisioning.Attestation.Verifier.QuoteSchedule>(OptionValue(list, "--schedule") ?? "FixedRate", ignoreCase: true), Console.Out,
                    OptionValue(list, "--report")).GetAwaiter().GetResult();
            if (load == "image-hash")
                return Load.ImageHashLoad.RunAsync(artifacts, int.Parse(OptionValue(list, "--size-mib") ?? "1024"), strict, Console.Out).GetAwaiter().GetResult();
            // `--load cluster [--duration S] [--agents N] [--interval S] [--servers N]`: 1..N verifier servers on one PostgreSQL.
            if (load == "cluster")
                return Load.ClusterLoad.RunAsync(artifacts,
                    TimeSpan.FromSeconds(int.Parse(OptionValue(list, "--duration") ?? "20")),
                    int.Parse(OptionValue(list, "--agents") ?? "3000"),
                    TimeSpan.FromSeconds(double.Parse(OptionValue(list, "--interval") ?? "2", System.Globalization.CultureInfo.InvariantCulture)),
                    int.Parse(OptionValue(list, "--servers") ?? "3"), Console.Out).GetAwaiter().GetResult();
            if (load != "provisioning") { Console.Error.WriteLine($"Unknown load test '{load}' (known: provisioning, verifier, image-hash, cluster)."); return 1; }
            return Load.ProvisioningLoad.RunAsync(artifacts,
                TimeSpan.FromSeconds(int.Parse(OptionValue(list, "--duration") ?? "10")),
                int.Parse(OptionValue(list, "--concurrency") ?? "16"),
                int.Parse(OptionValue(list, "--devices") ?? "64"), Console.Out).GetAwaiter().GetResult();
        }
        bool listOnly = list.Any(a => a.StartsWith("--list", StringComparison.Ordinal));
        // Without a filter BenchmarkSwitcher asks on the console which benchmarks to run.
        if (OptionValue(list, "--filter", "-f") is null && !listOnly) list.AddRange(["--filter", "*"]);

        var summaries = BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run([.. list], CreateConfig(artifacts)).ToList();
        if (listOnly) return 0;
        if (summaries.Count == 0 || summaries.All(s => s.BenchmarksCases.Length == 0))
        {
            Console.Error.WriteLine("No benchmark ran (check --filter).");
            return 1;
        }

        var outcome = TargetReport.Write(summaries, artifacts, Console.Out);
        Console.WriteLine();
        Console.WriteLine($"{outcome.Benchmarks} benchmarks, {outcome.Failed} failed, {outcome.TargetsMissed} ratio targets missed.");
        if (outcome.Failed > 0 || summaries.Any(s => s.HasCriticalValidationErrors)) return 1;
        return strict && outcome.TargetsMissed > 0 ? 2 : 0;
    }

    /// <summary>
    /// One short in-process job (no per-benchmark project build): a pilot stage, then 3 warmup and 15 measured iterations of
    /// about 250 ms each. A job given on the command line (<c>--job</c>, <c>--runtimes</c>, ...) replaces it.
    /// </summary>
    public static IConfig CreateConfig(string artifactsPath)
    {
        var job = Job.Default
            .WithToolchain(InProcessEmitToolchain.Instance)
            .WithLaunchCount(1)
            .WithWarmupCount(3)
            .WithIterationCount(15)
            .WithIterationTime(TimeInterval.FromMilliseconds(250))
            .WithId("ShortInProcess")
            .AsDefault();
        return DefaultConfig.Instance
            .AddJob(job)
            .AddColumn(StatisticColumn.OperationsPerSecond)
            .WithArtifactsPath(artifactsPath);
    }

    private static string? OptionValue(List<string> args, params string[] names)
    {
        for (int i = 0; i < args.Count; i++)
        {
            foreach (var n in names)
            {
                if (args[i] == n && i + 1 < args.Count) return args[i + 1];
                if (args[i].StartsWith(n + "=", StringComparison.Ordinal)) return args[i][(n.Length + 1)..];
            }
        }
        return null;
    }
}
