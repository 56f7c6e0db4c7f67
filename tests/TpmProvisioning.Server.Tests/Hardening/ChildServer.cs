using System.Diagnostics;
using System.Text.Json;
using TpmProvisioning.Hosting;
using TpmProvisioning.Server.Hosting;

namespace TpmProvisioning.Tests.Hardening;

/// <summary>
/// The test assembly's entry point (the test SDK's own is turned off): <c>dotnet TpmProvisioning.Server.Tests.dll serve
/// &lt;dataPath&gt; &lt;roles&gt;</c> runs a server in a process of its own, so a test can measure that process's memory without the
/// noise of the test host, or kill it as an operating system kills a server. It prints <c>URL &lt;url&gt;</c> once listening and
/// stops when its standard input closes. An optional fourth argument names a JSON file of <see cref="Options"/> (a verifier
/// node of a cluster); the store comes, as for a service, from the environment variable <c>TPMPROVISIONING_STORE</c>.
/// </summary>
public static class ChildServer
{
    /// <summary>Settings of a child server beyond its data path and roles, written as JSON beside it.</summary>
    public sealed record Options
    {
        /// <summary>The store several servers share (given to the child in <c>TPMPROVISIONING_STORE</c>, never on its command line).</summary>
        public string? StoreConnectionString { get; init; }
        public string? VerifierId { get; init; }
        public TimeSpan? QuoteInterval { get; init; }
        public TimeSpan? LeaseDuration { get; init; }
        public int? MaxRetries { get; init; }
        /// <summary>A components CA folder copied to <c>&lt;dataPath&gt;/ca</c> before start (a cluster's nodes share one CA).</summary>
        public string? CaFrom { get; init; }
        public LogLevelName? LogLevel { get; init; }
    }

    public static async Task<int> Main(string[] args)
    {
        if (args.Length < 3 || args[0] != "serve") return 2;
        var extra = args.Length > 3 ? JsonSerializer.Deserialize<Options>(File.ReadAllText(args[3])) ?? new Options() : new Options();
        var verifier = new TpmProvisioning.Attestation.Verifier.VerifierSettings();
        if (extra.VerifierId is { } id) verifier.VerifierId = id;
        if (extra.QuoteInterval is { } interval) verifier.QuoteInterval = interval;
        if (extra.LeaseDuration is { } lease) verifier.LeaseDuration = lease;
        if (extra.MaxRetries is { } retries) verifier.MaxRetries = retries;
        var host = await ProvisioningServerHost.StartAsync(new ServerOptions
        {
            DataPath = args[1], Port = 0, Roles = Enum.Parse<ServerRole>(args[2]),
            Kms = new TpmProvisioning.Kms.KmsSettings { MasterKey = TpmProvisioning.Kms.MasterKeyKind.InsecureFile, PasswordIterations = 1000 },
            Verifier = verifier,
            LogLevel = extra.LogLevel ?? LogLevelName.Information,
        });
        Console.WriteLine("URL " + host.Info.Urls[0]);
        Console.Out.Flush();
        await Console.In.ReadToEndAsync();
        await host.StopAsync();
        return 0;
    }

    /// <summary>A child server process and its address; disposing closes its input and waits for it (killing it if it hangs).</summary>
    public sealed class Handle : IAsyncDisposable
    {
        public required Process Process { get; init; }
        public required string Url { get; init; }
        public required string DataPath { get; init; }
        /// <summary>What the process wrote to its standard error, complete once it has exited.</summary>
        public Task<string>? ErrorOutput { get; init; }

        /// <summary>A line of /proc/&lt;pid&gt;/status in bytes (VmRSS: resident now; VmHWM: the peak resident size).</summary>
        public long StatusBytes(string field)
        {
            foreach (var line in File.ReadAllLines($"/proc/{Process.Id}/status"))
                if (line.StartsWith(field + ":", StringComparison.Ordinal))
                    return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0]) * 1024;
            throw new InvalidOperationException(field + " not in /proc status");
        }

        /// <summary>Kills the process by its id (SIGKILL: no stop, nothing given back) and waits until it is gone.</summary>
        public async Task KillAsync()
        {
            try { Process.Kill(); } catch (InvalidOperationException) { } // already exited
            await Process.WaitForExitAsync();
        }

        public async ValueTask DisposeAsync()
        {
            try { Process.StandardInput.Close(); } catch (IOException) { }
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            try { await Process.WaitForExitAsync(cts.Token); }
            catch (OperationCanceledException) { Process.Kill(true); await Process.WaitForExitAsync(); }
            Process.Dispose();
            try { Directory.Delete(DataPath, true); } catch (IOException) { }
        }
    }

    /// <summary>Starts a child server hosting <paramref name="roles"/> in a fresh data path, with <paramref name="options"/> if given.</summary>
    public static async Task<Handle> StartAsync(ServerRole roles, Options? options = null)
    {
        var dataPath = Directory.CreateTempSubdirectory("tpmprov-child-").FullName;
        if (options?.CaFrom is { } ca) CopyFolder(ca, Path.Combine(dataPath, "ca"));
        var psi = new ProcessStartInfo(Environment.ProcessPath!.EndsWith("dotnet", StringComparison.Ordinal) ? Environment.ProcessPath : "dotnet")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(typeof(ChildServer).Assembly.Location);
        psi.ArgumentList.Add("serve");
        psi.ArgumentList.Add(dataPath);
        psi.ArgumentList.Add(roles.ToString().Replace(" ", ""));
        if (options is not null)
        {
            var file = Path.Combine(dataPath, "child-options.json");
            File.WriteAllText(file, JsonSerializer.Serialize(options with { StoreConnectionString = null }));
            psi.ArgumentList.Add(file);
            if (options.StoreConnectionString is { } store) psi.Environment[ServerOptions.StoreConnectionStringVariable] = store;
        }
        var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string? line = null;
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
            while ((line = await p.StandardOutput.ReadLineAsync(cts.Token)) is not null && !line.StartsWith("URL ", StringComparison.Ordinal)) { }
        }
        catch (OperationCanceledException) { line = null; }
        if (line is null)
        {
            try { p.Kill(true); } catch (InvalidOperationException) { }
            await p.WaitForExitAsync();
            string err = await stderr;
            p.Dispose();
            try { Directory.Delete(dataPath, true); } catch (IOException) { }
            throw new InvalidOperationException("the child server did not start: " + (err.Length > 2000 ? err[^2000..] : err));
        }
        _ = p.StandardOutput.ReadToEndAsync();
        return new Handle { Process = p, Url = line[4..], DataPath = dataPath, ErrorOutput = stderr };
    }

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)), true);
        foreach (var d in Directory.GetDirectories(from)) CopyFolder(d, Path.Combine(to, Path.GetFileName(d)));
    }
}
