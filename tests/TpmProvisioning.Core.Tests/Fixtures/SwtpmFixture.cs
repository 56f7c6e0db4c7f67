using System.Diagnostics;
using TpmProvisioning.Tpm;
using TpmProvisioning.Tpm.Simulator;

namespace TpmProvisioning.Tests.Fixtures;

/// <summary>
/// One freshly provisioned swtpm per test class (<c>IClassFixture&lt;SwtpmFixture&gt;</c>): its own state directory and
/// port pair, so test classes run in parallel. Tests in a class share the TPM and run one after another; open a
/// <see cref="TpmDevice"/> per test with <see cref="Open"/> and dispose it before running tpm2-tools against the same instance.
/// </summary>
public class SwtpmFixture : IDisposable
{
    /// <summary>The running simulator.</summary>
    public SwtpmInstance Swtpm { get; }

    /// <summary>swtpm:host=127.0.0.1,port=P.</summary>
    public string ConnectionString => Swtpm.ConnectionString;

    /// <summary>Starts the simulator with <see cref="Options"/>.</summary>
    public SwtpmFixture() => Swtpm = SwtpmInstance.Start(Options);

    /// <summary>How the simulator is provisioned; fixtures that need speed over distinct EKs override with FastCopy.</summary>
    protected virtual SwtpmOptions Options => new() { StateMode = SwtpmStateMode.Fresh };

    /// <summary>A new connection to this fixture's TPM.</summary>
    public TpmDevice Open() => TpmDevice.Open(ConnectionString);

    /// <summary>
    /// Runs a tpm2-tools command against this TPM (no <see cref="TpmDevice"/> may be open on it meanwhile), then flushes
    /// transient objects: without a resource manager, tools that save contexts to files leave the originals loaded, and
    /// swtpm holds only three.
    /// </summary>
    public string Tools(string tool, params string[] args)
    {
        try { return Tpm2Tools.Run(ConnectionString, tool, args); }
        finally { FlushTransients(); }
    }

    /// <summary>Flushes every loaded transient object (so a failed test does not starve the next of object slots).</summary>
    public void FlushTransients()
    {
        using var dev = Open();
        foreach (var h in dev.GetHandles(TpmHandle.HrTransient)) dev.TryFlush(h);
    }

    /// <summary>Evicts every persistent object from <paramref name="first"/> to <paramref name="last"/> (say, the AKs an agent persisted).</summary>
    public void EvictPersistent(uint first, uint last)
    {
        using var dev = Open();
        foreach (var h in dev.GetHandles(TpmHandle.HrPersistent).Where(h => h >= first && h <= last)) dev.EvictPersistent(h);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        Swtpm.Dispose();
        GC.SuppressFinalize(this);
    }
}

/// <summary>A swtpm fixture provisioned by copying a per-process template (fast; same EK as other FastCopy instances).</summary>
public sealed class FastSwtpmFixture : SwtpmFixture
{
    /// <inheritdoc />
    protected override SwtpmOptions Options => new() { StateMode = SwtpmStateMode.FastCopy };
}

/// <summary>Runs tpm2-tools 5.x commands with TPM2TOOLS_TCTI set, in a scratch directory.</summary>
public static class Tpm2Tools
{
    /// <summary>True when tpm2-tools are on PATH.</summary>
    public static bool IsInstalled => SwtpmInstance.FindExecutable("tpm2_getcap") is not null;

    /// <summary>Runs <paramref name="tool"/> (e.g. "tpm2_createek"); throws with its output on a non-zero exit. Returns stdout.</summary>
    public static string Run(string? connectionString, string tool, params string[] args)
    {
        var psi = new ProcessStartInfo(tool)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (connectionString is null) psi.Environment.Remove("TPM2TOOLS_TCTI");
        else psi.Environment["TPM2TOOLS_TCTI"] = connectionString;
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"Cannot start {tool}.");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(60000))
        {
            p.Kill();
            throw new TimeoutException($"{tool} timed out.");
        }
        p.WaitForExit();
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"{tool} {string.Join(' ', args)} exited with {p.ExitCode}:\n{stdout.Result}\n{stderr.Result}");
        return stdout.Result;
    }
}

/// <summary>A scratch directory deleted on dispose.</summary>
public sealed class TempDir : IDisposable
{
    /// <summary>The directory.</summary>
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "tpmtest-" + Guid.NewGuid().ToString("N"));

    /// <summary>Creates it.</summary>
    public TempDir() => Directory.CreateDirectory(Path);

    /// <summary>A path inside it.</summary>
    public string this[string name] => System.IO.Path.Combine(Path, name);

    /// <inheritdoc />
    public void Dispose()
    {
        try { Directory.Delete(Path, true); } catch (IOException) { }
    }
}
