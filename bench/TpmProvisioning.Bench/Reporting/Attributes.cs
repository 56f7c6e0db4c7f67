namespace TpmProvisioning.Bench.Reporting;

/// <summary>
/// Names the summary file (<c>&lt;artifacts&gt;/&lt;Name&gt;.md</c>) and title for a benchmark class. Without it the class name is used.
/// </summary>
[AttributeUsage(AttributeTargets.Class, Inherited = false)]
public sealed class ReportFileAttribute(string name, string title) : Attribute
{
    /// <summary>File name without extension.</summary>
    public string Name { get; } = name;
    /// <summary>Heading of the summary.</summary>
    public string Title { get; } = title;
}

/// <summary>
/// Reports this benchmark's throughput as a ratio of another benchmark's in the same class (same parameters, same job),
/// and, when <see cref="Target"/> is set, PASS/FAIL against that minimum ratio.
/// </summary>
[AttributeUsage(AttributeTargets.Method, AllowMultiple = true)]
public sealed class RatioToAttribute(string baseline) : Attribute
{
    /// <summary>Method name of the baseline benchmark.</summary>
    public string Baseline { get; } = baseline;
    /// <summary>Minimum ratio (this ops/s divided by the baseline's) to pass; NaN (the default) reports the ratio only.</summary>
    public double Target { get; set; } = double.NaN;
}
