using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace TpmProvisioning.Bench.Reporting;

/// <summary>
/// After BenchmarkDotNet has run: one plain markdown summary per benchmark class (ops/s per benchmark, then the ratios its
/// <see cref="RatioToAttribute"/>s ask for, with PASS/FAIL where a target is set), printed and saved under the artifacts folder.
/// </summary>
public static class TargetReport
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>What the summaries came to.</summary>
    public sealed record Outcome(int Benchmarks, int Failed, int TargetsMissed, IReadOnlyList<string> Files);

    /// <summary>Writes the summaries of <paramref name="summaries"/> to <paramref name="artifactsPath"/> and <paramref name="console"/>.</summary>
    public static Outcome Write(IEnumerable<Summary> summaries, string artifactsPath, TextWriter console)
    {
        Directory.CreateDirectory(artifactsPath);
        var rows = new List<Row>();
        foreach (var summary in summaries)
            foreach (var bc in summary.BenchmarksCases)
                rows.Add(new Row(bc, summary[bc]));

        int failed = 0, missed = 0, count = 0;
        var files = new List<string>();
        foreach (var group in rows.GroupBy(r => r.Case.Descriptor.Type))
        {
            var type = group.Key;
            var attr = type.GetCustomAttribute<ReportFileAttribute>();
            string name = attr?.Name ?? type.Name;
            var text = Render(attr?.Title ?? type.Name, group.ToList(), ref failed, ref missed, ref count);
            var path = Path.Combine(artifactsPath, name + ".md");
            File.WriteAllText(path, text);
            files.Add(path);
            console.WriteLine();
            console.Write(text);
            console.WriteLine($"(saved to {path})");
        }
        return new Outcome(count, failed, missed, files);
    }

    private sealed record Row(BenchmarkCase Case, BenchmarkReport? Report)
    {
        public double? MeanNs => Report?.ResultStatistics?.Mean;
        public double? OpsPerSecond => MeanNs is > 0 ? 1e9 / MeanNs : null;
        // Method name plus parameters: short, and what --filter matches.
        public string Id => Case.Descriptor.WorkloadMethod.Name + (Case.HasParameters ? $" [{Case.Parameters.DisplayInfo}]" : "");
        public string Description => Case.Descriptor.WorkloadMethod.GetCustomAttribute<BenchmarkAttribute>()?.Description ?? Case.Descriptor.WorkloadMethod.Name;
        public string Key(string method) => $"{method}|{Case.Parameters.DisplayInfo}|{Case.Job.DisplayInfo}";
    }

    private static string Render(string title, List<Row> rows, ref int failed, ref int missed, ref int count)
    {
        var sb = new StringBuilder();
        var job = string.Join("; ", rows.Select(r => r.Case.Job.DisplayInfo).Distinct());
        sb.Append("# ").AppendLine(title).AppendLine();
        sb.AppendLine($"- Machine: {CpuName()}, {Environment.ProcessorCount} logical cores; {RuntimeInformation.OSDescription.Trim()}");
        sb.AppendLine($"- Runtime: {RuntimeInformation.FrameworkDescription} ({RuntimeInformation.ProcessArchitecture}); BenchmarkDotNet job: {job}");
        sb.AppendLine($"- Run: {DateTimeOffset.UtcNow.ToString("yyyy-MM-dd HH:mm:ss", Inv)} UTC; every benchmark single-threaded, so ops/s is per core");
        sb.AppendLine();
        sb.AppendLine("| Benchmark | What | Mean | StdDev | ops/s |");
        sb.AppendLine("|---|---|---:|---:|---:|");
        foreach (var r in rows)
        {
            count++;
            if (r.MeanNs is not { } mean) { failed++; sb.AppendLine($"| {r.Id} | {r.Description} | failed | | |"); continue; }
            var sd = r.Report!.ResultStatistics!.StandardDeviation;
            sb.AppendLine($"| {r.Id} | {r.Description} | {Time(mean)} | {Time(sd)} | {r.OpsPerSecond!.Value.ToString("N0", Inv)} |");
        }

        var byKey = rows.ToDictionary(r => r.Key(r.Case.Descriptor.WorkloadMethod.Name));
        var ratios = new StringBuilder();
        foreach (var r in rows)
        {
            foreach (var ratio in r.Case.Descriptor.WorkloadMethod.GetCustomAttributes<RatioToAttribute>())
            {
                byKey.TryGetValue(r.Key(ratio.Baseline), out var b);
                string target = double.IsNaN(ratio.Target) ? "-" : ">= " + Percent(ratio.Target);
                string name = $"{r.Id} / {b?.Id ?? ratio.Baseline}";
                if (r.OpsPerSecond is not { } ops || b?.OpsPerSecond is not { } baseOps)
                {
                    if (!double.IsNaN(ratio.Target)) missed++;
                    ratios.AppendLine($"| {name} | n/a | {target} | {(double.IsNaN(ratio.Target) ? "-" : "FAIL (not measured)")} |");
                    continue;
                }
                double value = ops / baseOps;
                string verdict = "-";
                if (!double.IsNaN(ratio.Target))
                {
                    bool pass = value >= ratio.Target;
                    if (!pass) missed++;
                    verdict = pass ? "PASS" : "FAIL";
                }
                ratios.AppendLine($"| {name} | {Percent(value)} | {target} | {verdict} |");
            }
        }
        if (ratios.Length > 0)
        {
            sb.AppendLine();
            sb.AppendLine("| Ratio (ops/s over baseline ops/s) | Value | Target | Result |");
            sb.AppendLine("|---|---:|---:|:---:|");
            sb.Append(ratios);
        }
        return sb.ToString();
    }

    private static string Percent(double v) => (v * 100).ToString("0.0", Inv) + "%";

    private static string Time(double ns) => ns switch
    {
        >= 1e6 => (ns / 1e6).ToString("0.000", Inv) + " ms",
        >= 1e3 => (ns / 1e3).ToString("0.000", Inv) + " us",
        _ => ns.ToString("0.0", Inv) + " ns",
    };

    private static string CpuName()
    {
        try
        {
            if (OperatingSystem.IsLinux())
                foreach (var line in File.ReadLines("/proc/cpuinfo"))
                    if (line.StartsWith("model name", StringComparison.Ordinal)) return line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return RuntimeInformation.ProcessArchitecture.ToString();
    }
}
