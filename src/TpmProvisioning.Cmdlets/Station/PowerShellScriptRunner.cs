using System.Diagnostics;
using System.Management.Automation;
using System.Management.Automation.Runspaces;
using TpmProvisioning.Station;

namespace TpmProvisioning.Cmdlets.Station;

/// <summary>
/// Runs a station hook script in a runspace of its own (a fresh <see cref="InitialSessionState.CreateDefault2"/>, never the
/// server's or the caller's runspace), with the device and record as variables, and a time limit after which the pipeline is
/// stopped. The script runs from a private copy of the exact text the station checked. Output and error records become lines;
/// a throw, a terminating error or a non-zero <c>exit</c> fails it.
/// </summary>
public sealed class PowerShellScriptRunner : IStationScriptRunner
{
    /// <summary>Most output lines kept per run (the rest are counted).</summary>
    public const int MaxLines = 1000;

    public async Task<ScriptRunResult> RunAsync(ScriptRunRequest request, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(request);
        var dir = Directory.CreateTempSubdirectory("tpmprov-hook-");
        var sw = Stopwatch.StartNew();
        try
        {
            var path = Path.Combine(dir.FullName, StationNames.Normalize(request.Name) is { } n ? n + ".ps1" : "hook.ps1");
            await File.WriteAllTextAsync(path, request.Content, new System.Text.UTF8Encoding(false), ct).ConfigureAwait(false);

            var iss = InitialSessionState.CreateDefault2();
            if (OperatingSystem.IsWindows()) iss.ExecutionPolicy = Microsoft.PowerShell.ExecutionPolicy.Bypass;
            foreach (var (name, value) in request.Variables)
                iss.Variables.Add(new SessionStateVariableEntry(name, value, "set by the station", ScopedItemOptions.None));
            using var runspace = RunspaceFactory.CreateRunspace(iss);
            runspace.Open();
            using var ps = PowerShell.Create(runspace);
            var lines = new List<string>();
            int dropped = 0;
            void Add(string line)
            {
                lock (lines)
                {
                    if (lines.Count < MaxLines) lines.Add(line);
                    else dropped++;
                }
            }
            var output = new PSDataCollection<PSObject>();
            output.DataAdded += (_, e) => Add(output[e.Index]?.ToString() ?? "");
            ps.Streams.Error.DataAdded += (_, e) => Add("ERROR: " + ps.Streams.Error[e.Index]);
            ps.Streams.Warning.DataAdded += (_, e) => Add("WARNING: " + ps.Streams.Warning[e.Index]);
            ps.Streams.Information.DataAdded += (_, e) => Add(ps.Streams.Information[e.Index]?.MessageData?.ToString() ?? "");
            ps.AddCommand(path);

            var invocation = ps.BeginInvoke<PSObject, PSObject>(null, output);
            bool finished = await WaitAsync(invocation.AsyncWaitHandle, request.Timeout, ct).ConfigureAwait(false);
            bool timedOut = false;
            if (!finished)
            {
                timedOut = !ct.IsCancellationRequested;
                // Stop() asks the pipeline to stop at its next statement; give it a moment, never wait forever.
                var stop = Task.Run(ps.Stop, CancellationToken.None);
                await Task.WhenAny(stop, Task.Delay(TimeSpan.FromSeconds(30), CancellationToken.None)).ConfigureAwait(false);
            }
            string? error = null;
            try { ps.EndInvoke(invocation); }
            catch (PipelineStoppedException) { error = timedOut ? "stopped at its time limit" : "stopped"; }
            catch (RuntimeException ex) { error = ex.Message; }
            catch (InvalidOperationException) when (timedOut) { error = "stopped at its time limit"; }

            int exitCode = 0;
            if (error is null && !timedOut)
            {
                ps.Commands.Clear();
                ps.Streams.ClearStreams();
                var code = ps.AddScript("$global:LASTEXITCODE").Invoke();
                if (code.Count > 0 && code[0]?.BaseObject is int c) exitCode = c;
            }
            ct.ThrowIfCancellationRequested();
            if (dropped > 0) Add($"({dropped} more lines not kept)");
            lock (lines)
            {
                return new ScriptRunResult
                {
                    Succeeded = error is null && !timedOut && exitCode == 0,
                    Output = lines.ToList(),
                    Error = timedOut ? null : error ?? (exitCode != 0 ? $"exit code {exitCode}" : null),
                    TimedOut = timedOut,
                    ExitCode = timedOut ? 124 : exitCode,
                    Elapsed = sw.Elapsed,
                };
            }
        }
        finally
        {
            try { dir.Delete(true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    private static Task<bool> WaitAsync(WaitHandle handle, TimeSpan timeout, CancellationToken ct)
    {
        var tcs = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var registration = ThreadPool.RegisterWaitForSingleObject(handle, (_, timedOut) => tcs.TrySetResult(!timedOut), null,
            timeout > TimeSpan.FromMilliseconds(int.MaxValue) ? Timeout.InfiniteTimeSpan : timeout, true);
        var ctr = ct.Register(() => tcs.TrySetResult(false));
        _ = tcs.Task.ContinueWith(_ => { registration.Unregister(null); ctr.Dispose(); }, TaskScheduler.Default);
        return tcs.Task;
    }
}
