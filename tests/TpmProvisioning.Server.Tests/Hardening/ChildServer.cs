using System.Diagnostics;
using TpmProvisioning.Hosting;
using TpmProvisioning.Server.Hosting;

namespace TpmProvisioning.Tests.Hardening;

/// <summary>
/// The test assembly's entry point (the test SDK's own is turned off): <c>dotnet TpmProvisioning.Server.Tests.dll serve
/// &lt;dataPath&gt; &lt;roles&gt;</c> runs a server in a process of its own, so a test can measure that process's memory without the
/// noise of the test host. It prints <c>URL &lt;url&gt;</c> once listening and stops when its standard input closes.
/// </summary>
public static class ChildServer
{
    public static async Task<int> Main(string[] args)
    {
        if (args.Length < 3 || args[0] != "serve") return 2;
        var host = await ProvisioningServerHost.StartAsync(new ServerOptions
        {
            DataPath = args[1], Port = 0, Roles = Enum.Parse<ServerRole>(args[2]),
            Kms = new TpmProvisioning.Kms.KmsSettings { MasterKey = TpmProvisioning.Kms.MasterKeyKind.InsecureFile, PasswordIterations = 1000 },
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

        /// <summary>A line of /proc/&lt;pid&gt;/status in bytes (VmRSS: resident now; VmHWM: the peak resident size).</summary>
        public long StatusBytes(string field)
        {
            foreach (var line in File.ReadAllLines($"/proc/{Process.Id}/status"))
                if (line.StartsWith(field + ":", StringComparison.Ordinal))
                    return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0]) * 1024;
            throw new InvalidOperationException(field + " not in /proc status");
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

    /// <summary>Starts a child server hosting <paramref name="roles"/> in a fresh data path.</summary>
    public static async Task<Handle> StartAsync(ServerRole roles)
    {
        var dataPath = Directory.CreateTempSubdirectory("tpmprov-child-").FullName;
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
        var p = Process.Start(psi)!;
        _ = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        string? line;
        while ((line = await p.StandardOutput.ReadLineAsync(cts.Token)) is not null && !line.StartsWith("URL ", StringComparison.Ordinal)) { }
        if (line is null)
        {
            p.Kill(true);
            throw new InvalidOperationException("the child server did not start");
        }
        _ = p.StandardOutput.ReadToEndAsync();
        return new Handle { Process = p, Url = line[4..], DataPath = dataPath };
    }
}
