using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace TpmProvisioning.Tpm.Simulator;

/// <summary>swtpm or swtpm_setup is not on PATH.</summary>
public sealed class SwtpmNotInstalledException : InvalidOperationException
{
    /// <summary>Creates the exception.</summary>
    public SwtpmNotInstalledException(string message) : base(message) { }
}

/// <summary>How a new <see cref="SwtpmInstance"/> gets its state.</summary>
public enum SwtpmStateMode
{
    /// <summary>Run swtpm_setup for this instance: its own seeds, EKs and EK certificates (distinct from every other instance).</summary>
    Fresh,
    /// <summary>
    /// Copy a state provisioned once per process: much faster, but every copy has the same seeds, hence the same EKs and
    /// certificates. Do not use where two TPMs must differ (e.g. "a credential made for one TPM fails on another").
    /// </summary>
    FastCopy,
}

/// <summary>Options for <see cref="SwtpmInstance.Start"/>.</summary>
public sealed record SwtpmOptions
{
    /// <summary>Fresh provisioning (default) or a copy of a per-process template.</summary>
    public SwtpmStateMode StateMode { get; init; } = SwtpmStateMode.Fresh;

    /// <summary>PCR banks to allocate (swtpm_setup <c>--pcr-banks</c>, e.g. "sha1,sha256"); null keeps the configuration's choice (sha256).</summary>
    public string? PcrBanks { get; init; }

    /// <summary>The local CA signing EK certificates; null means <see cref="SwtpmLocalCa.Default"/>.</summary>
    public SwtpmLocalCa? LocalCa { get; init; }

    /// <summary>How long to wait for swtpm to listen.</summary>
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(10);
}

/// <summary>
/// A real swtpm TPM 2.0 running as a child process on loopback ports P (commands) and P+1 (control), with its own state
/// directory provisioned by <c>swtpm_setup --tpm2 --create-ek-cert --create-platform-cert</c> (RSA 2048 EK certificate at
/// 0x01C00002, ECC P-384 at 0x01C00016, both EKs persisted at 0x81010001 / 0x81010016). Dispose kills it and deletes its state.
/// swtpm serves one client connection at a time: close a <see cref="TpmDevice"/> before tpm2-tools use the same instance.
/// </summary>
public sealed class SwtpmInstance : IDisposable
{
    private Process? _process;
    private readonly StringBuilder _log = new();

    /// <summary>Connection string for <see cref="TpmDevice.Open"/> and tpm2-tools' TPM2TOOLS_TCTI: <c>swtpm:host=127.0.0.1,port=P</c>.</summary>
    public string ConnectionString => $"swtpm:host=127.0.0.1,port={Port}";

    /// <summary>The command port P.</summary>
    public int Port { get; private set; }

    /// <summary>The control port, P + 1.</summary>
    public int ControlPort => Port + 1;

    /// <summary>This instance's state directory (deleted on dispose).</summary>
    public string StateDirectory { get; }

    /// <summary>The local CA that signed this TPM's EK certificates.</summary>
    public SwtpmLocalCa LocalCa { get; }

    /// <summary>The manufacturer root certificate (PEM) to trust for this TPM's EK certificates.</summary>
    public string ManufacturerRootPath => LocalCa.RootCertificatePath;

    /// <summary>The manufacturer intermediate certificate (PEM) that issued the EK certificates.</summary>
    public string ManufacturerIssuerPath => LocalCa.IssuerCertificatePath;

    /// <summary>Process id of the swtpm child.</summary>
    public int Pid { get; private set; }

    /// <summary>How the state was made.</summary>
    public SwtpmStateMode StateMode { get; }

    /// <summary>What swtpm printed so far (for diagnostics).</summary>
    public string Output { get { lock (_log) return _log.ToString(); } }

    /// <summary>Handle of the persistent RSA EK swtpm_setup created.</summary>
    public const uint PersistentRsaEk = 0x81010001;

    /// <summary>Handle of the persistent ECC P-384 EK swtpm_setup created.</summary>
    public const uint PersistentEccEk = 0x81010016;

    private SwtpmInstance(string stateDir, SwtpmLocalCa ca, SwtpmStateMode mode)
    {
        StateDirectory = stateDir;
        LocalCa = ca;
        StateMode = mode;
    }

    /// <summary>True when swtpm and swtpm_setup are on PATH.</summary>
    public static bool IsInstalled => FindExecutable("swtpm") is not null && FindExecutable("swtpm_setup") is not null;

    /// <summary>Provisions a state directory and starts swtpm on free loopback ports; returns when it accepts connections.</summary>
    /// <exception cref="SwtpmNotInstalledException">swtpm or swtpm_setup is not installed.</exception>
    /// <exception cref="InvalidOperationException">Provisioning or start-up failed (the message carries swtpm's output).</exception>
    public static SwtpmInstance Start(SwtpmOptions? options = null)
    {
        options ??= new SwtpmOptions();
        RequireInstalled();
        var ca = options.LocalCa ?? SwtpmLocalCa.Default;
        string dir = Path.Combine(Path.GetTempPath(), $"swtpm-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        var inst = new SwtpmInstance(dir, ca, options.StateMode);
        try
        {
            if (options.StateMode == SwtpmStateMode.FastCopy)
            {
                string template = TemplateState(ca, options.PcrBanks);
                foreach (var f in Directory.GetFiles(template))
                    if (!Path.GetFileName(f).StartsWith('.')) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            }
            else
            {
                Provision(dir, ca, options.PcrBanks);
            }
            inst.Launch(options.StartTimeout);
            return inst;
        }
        catch
        {
            inst.Dispose();
            throw;
        }
    }

    internal static void RequireInstalled()
    {
        if (FindExecutable("swtpm") is null)
            throw new SwtpmNotInstalledException("swtpm is not installed (not found on PATH). On Debian/Ubuntu: apt-get install swtpm swtpm-tools.");
        if (FindExecutable("swtpm_setup") is null)
            throw new SwtpmNotInstalledException("swtpm_setup is not installed (not found on PATH). On Debian/Ubuntu: apt-get install swtpm-tools.");
    }

    /// <summary>Finds an executable on PATH, or null.</summary>
    public static string? FindExecutable(string name)
    {
        foreach (var d in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            foreach (var candidate in OperatingSystem.IsWindows() ? new[] { name + ".exe", name } : new[] { name })
            {
                string p = Path.Combine(d, candidate);
                if (File.Exists(p)) return p;
            }
        }
        return null;
    }

    // ------------------------------------------------------------------ provisioning

    private static readonly SemaphoreSlim SetupGate = new(1, 1);
    private static readonly object TemplateGate = new();
    private static readonly Dictionary<string, string> Templates = [];

    private static string TemplateState(SwtpmLocalCa ca, string? pcrBanks)
    {
        string key = ca.Directory + "|" + (pcrBanks ?? "");
        lock (TemplateGate)
        {
            if (Templates.TryGetValue(key, out var t) && Directory.Exists(t)) return t;
            t = Path.Combine(Path.GetTempPath(), $"swtpm-template-{Environment.ProcessId}-{Guid.NewGuid():N}");
            Directory.CreateDirectory(t);
            Provision(t, ca, pcrBanks);
            Templates[key] = t;
            if (Templates.Count == 1)
                AppDomain.CurrentDomain.ProcessExit += (_, _) =>
                {
                    lock (TemplateGate) foreach (var d in Templates.Values) TryDelete(d);
                };
            return t;
        }
    }

    /// <summary>
    /// Runs swtpm_setup into <paramref name="stateDir"/>. Serialized within the process and across processes (a lock file),
    /// because swtpm_localca's first run creates the CA and parallel first runs race; retried a few times.
    /// </summary>
    private static void Provision(string stateDir, SwtpmLocalCa ca, string? pcrBanks)
    {
        var args = new List<string> { "--tpm2", "--create-ek-cert", "--create-platform-cert", "--tpmstate", stateDir, "--overwrite" };
        if (ca.SetupConfigFile is not null) { args.Add("--config"); args.Add(ca.SetupConfigFile); }
        if (pcrBanks is not null) { args.Add("--pcr-banks"); args.Add(pcrBanks); }

        string lastOutput = "";
        for (int attempt = 1; attempt <= 4; attempt++)
        {
            SetupGate.Wait();
            try
            {
                using var fileLock = AcquireFileLock(Path.Combine(Path.GetTempPath(), $"tpmprovisioning-swtpm-setup-{Environment.UserName}.lock"), TimeSpan.FromSeconds(120));
                var (code, output) = Run(FindExecutable("swtpm_setup")!, args, TimeSpan.FromSeconds(60));
                lastOutput = output;
                if (code == 0 && File.Exists(ca.RootCertificatePath)) return;
            }
            finally
            {
                SetupGate.Release();
            }
            Thread.Sleep(100 * attempt);
        }
        throw new InvalidOperationException($"swtpm_setup failed to provision {stateDir}:{Environment.NewLine}{lastOutput}");
    }

    private static FileStream AcquireFileLock(string path, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.None);
            }
            catch (IOException) when (sw.Elapsed < timeout)
            {
                Thread.Sleep(25);
            }
        }
    }

    private static (int Code, string Output) Run(string exe, IEnumerable<string> args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(exe)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"Could not start {exe}.");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            return (-1, $"{exe} timed out after {timeout.TotalSeconds:0} s.");
        }
        p.WaitForExit();
        return (p.ExitCode, stdout.Result + stderr.Result);
    }

    // ------------------------------------------------------------------ process

    private static int _nextPort = 20000 + Random.Shared.Next(0, 20000) * 2;

    private static int FreePortPair()
    {
        for (int i = 0; i < 500; i++)
        {
            int p = Interlocked.Add(ref _nextPort, 2);
            if (p > 64000) { Interlocked.Exchange(ref _nextPort, 20000); continue; }
            if (IsFree(p) && IsFree(p + 1)) return p;
        }
        throw new InvalidOperationException("No free pair of loopback ports found for swtpm.");
    }

    private static bool IsFree(int port)
    {
        try
        {
            var l = new TcpListener(IPAddress.Loopback, port);
            l.Start();
            l.Stop();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private void Launch(TimeSpan timeout)
    {
        string swtpm = FindExecutable("swtpm")!;
        string lastError = "";
        for (int attempt = 0; attempt < 5; attempt++)
        {
            int port = FreePortPair();
            var psi = new ProcessStartInfo(swtpm)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (var a in new[]
            {
                "socket", "--tpm2",
                "--server", $"type=tcp,port={port},bindaddr=127.0.0.1",
                "--ctrl", $"type=tcp,port={port + 1},bindaddr=127.0.0.1",
                "--flags", "not-need-init,startup-clear",
                "--tpmstate", $"dir={StateDirectory}",
            }) psi.ArgumentList.Add(a);
            var p = Process.Start(psi) ?? throw new InvalidOperationException("Could not start swtpm.");
            p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (_log) _log.AppendLine(e.Data); };
            p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_log) _log.AppendLine(e.Data); };
            p.BeginOutputReadLine();
            p.BeginErrorReadLine();
            _process = p;
            Pid = p.Id;
            Port = port;
            if (WaitListening(p, port + 1, timeout) && WaitListening(p, port, timeout)) return;
            lastError = Output;
            Kill();
            lock (_log) _log.Clear();
        }
        throw new InvalidOperationException($"swtpm did not start listening:{Environment.NewLine}{lastError}");
    }

    private static bool WaitListening(Process p, int port, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < timeout)
        {
            if (p.HasExited) return false;
            try
            {
                using var c = new TcpClient();
                c.Connect(IPAddress.Loopback, port);
                return true;
            }
            catch (SocketException)
            {
                Thread.Sleep(5);
            }
        }
        return false;
    }

    private void Kill()
    {
        var p = _process;
        _process = null;
        if (p is null) return;
        try
        {
            if (!p.HasExited)
            {
                p.Kill();
                p.WaitForExit(5000);
            }
        }
        catch (InvalidOperationException) { }
        catch (System.ComponentModel.Win32Exception) { }
        p.Dispose();
    }

    /// <summary>Stops swtpm (by its PID) and deletes the state directory.</summary>
    public void Dispose()
    {
        Kill();
        TryDelete(StateDirectory);
    }

    private static void TryDelete(string dir)
    {
        try { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    /// <inheritdoc />
    public override string ToString() => $"swtpm pid {Pid} at {ConnectionString} ({StateMode})";
}
