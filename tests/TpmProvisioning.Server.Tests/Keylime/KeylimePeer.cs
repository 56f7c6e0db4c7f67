using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace TpmProvisioning.Tests.Keylime;

/// <summary>
/// Keylime 7.14.3 itself (the Python reference: verifier, registrar, tenant) as a test peer, run from Debian's python packages
/// out of the shared peers folder (<c>../shared/peers/keylime</c> beside the repository, or <c>KEYLIME_PEER_DIR</c>). One
/// verifier and one registrar per test class, each started with <c>setsid</c> on free loopback ports in a scratch
/// <c>KEYLIME_DIR</c>, and stopped by process group (the service processes ignore SIGTERM; their workers do not, so the group
/// gets SIGTERM, then SIGKILL). Only what an admin would set is changed in Keylime's configuration: ports, workers, retries,
/// timeouts, the tenant's EK certificate store and trusted server CAs, and ECDSA among the accepted signing algorithms.
/// <see cref="SkipReason"/> says why the peer cannot run (Debian's python packages missing and not installable: run
/// <c>build.ps1 Bootstrap</c> as root).
/// </summary>
public sealed partial class KeylimePeerFixture : IAsyncLifetime
{
    public const string Python = "/usr/bin/python3";
    /// <summary>What Keylime imports, as Debian packages name them (<c>python3-&lt;module&gt;</c>), see the peer's PEER.md.</summary>
    public static readonly string[] Modules = ["cryptography", "tornado", "zmq", "yaml", "requests", "sqlalchemy", "alembic", "packaging", "psutil", "lark", "pyasn1", "pyasn1_modules", "jinja2", "gpg", "typing_extensions", "jsonschema"];

    private readonly List<int> _groups = [];
    public string? SkipReason { get; private set; }
    public string PeerRoot { get; private set; } = "";
    public string Scratch { get; } = Directory.CreateTempSubdirectory("keylime-peer-").FullName;
    public string KeylimeDir => Path.Combine(Scratch, "keylime");
    public string ConfDir => Path.Combine(Scratch, "conf");
    public string CertStore => Path.Combine(Scratch, "tpm_cert_store");
    /// <summary>Keylime's verifier CA (it issues the verifier's and tenant's client certificates and the servers' certificates).</summary>
    public string CvCa => Path.Combine(KeylimeDir, "cv_ca", "cacert.crt");
    public int VerifierPort { get; private set; }
    public int RegistrarPort { get; private set; }
    public int RegistrarTlsPort { get; private set; }

    public async Task InitializeAsync()
    {
        try { await StartAsync(); }
        catch
        {
            await StopAsync();
            throw;
        }
    }

    private async Task StartAsync()
    {
        // The peer is not part of the project (nothing of Keylime is copied into it): a checkout without the shared peers folder
        // beside it skips these tests, saying so, rather than failing everything else.
        if (FindPeer() is not { } root)
        {
            SkipReason = "Keylime peer skipped: shared/peers/keylime (with keylime/__init__.py) was not found beside the repository; set KEYLIME_PEER_DIR to its folder.";
            return;
        }
        PeerRoot = root;
        var (code, output) = await RunAsync(Python, ["-c", "import " + string.Join(", ", Modules)], null, TimeSpan.FromSeconds(60));
        if (code != 0)
        {
            SkipReason = $"Keylime peer skipped: Debian's python packages for Keylime are not installed ({LastLine(output)}); run 'build.ps1 Bootstrap' as root to install them.";
            return;
        }
        Directory.CreateDirectory(KeylimeDir);
        Directory.CreateDirectory(ConfDir);
        Directory.CreateDirectory(CertStore);
        foreach (var f in Directory.EnumerateFiles(Path.Combine(PeerRoot, "tpm_cert_store"))) File.Copy(f, Path.Combine(CertStore, Path.GetFileName(f)), true);
        // swtpm's local CA plays the TPM manufacturer: its root and issuer certificates (not its keys).
        foreach (var f in new[] { "swtpm-localca-rootca-cert.pem", "issuercert.pem" })
            if (File.Exists(Path.Combine("/var/lib/swtpm-localca", f))) File.Copy(Path.Combine("/var/lib/swtpm-localca", f), Path.Combine(CertStore, f), true);

        (code, output) = await RunAsync(Python, ["-m", "keylime.cmd.convert_config", "--defaults", "--templates", Path.Combine(PeerRoot, "templates"), "--out", ConfDir], Env(), TimeSpan.FromSeconds(120));
        if (code != 0) throw new InvalidOperationException("keylime convert_config failed: " + output);
        var ports = FreePorts(4);
        (VerifierPort, RegistrarPort, RegistrarTlsPort) = (ports[0], ports[1], ports[2]);
        Set("verifier", "port", VerifierPort.ToString());
        Set("verifier", "registrar_port", RegistrarTlsPort.ToString());
        Set("verifier", "num_workers", "1");
        Set("verifier", "zmq_port", ports[3].ToString());
        Set("verifier", "quote_interval", "1");
        Set("verifier", "request_timeout", "20.0");
        Set("verifier", "max_retries", "3");
        Set("registrar", "port", RegistrarPort.ToString());
        Set("registrar", "tls_port", RegistrarTlsPort.ToString());
        WriteTenantConfig("tenant", VerifierPort, RegistrarTlsPort, []);

        // The verifier first: it creates cv_ca (its CA, server and client certificates) that the registrar and tenant use.
        Start("verifier");
        await WaitForAsync(() => File.Exists(CvCa) && Listening(VerifierPort), "verifier");
        Start("registrar");
        await WaitForAsync(() => Listening(RegistrarPort) && Listening(RegistrarTlsPort), "registrar");
    }

    /// <summary>
    /// Writes a tenant configuration <paramref name="name"/><c>.conf</c> talking to the given verifier and registrar (TLS)
    /// ports, trusting Keylime's own CA plus <paramref name="extraServerCas"/> (the CA route for our servers' certificates).
    /// </summary>
    public string WriteTenantConfig(string name, int verifierPort, int registrarTlsPort, IEnumerable<string> extraServerCas)
    {
        var text = File.ReadAllText(Path.Combine(ConfDir, "tenant.conf.orig") is var orig && File.Exists(orig) ? orig : Path.Combine(ConfDir, "tenant.conf"));
        if (!File.Exists(Path.Combine(ConfDir, "tenant.conf.orig"))) File.WriteAllText(Path.Combine(ConfDir, "tenant.conf.orig"), text);
        text = SetIn(text, "verifier_port", verifierPort.ToString());
        text = SetIn(text, "registrar_port", registrarTlsPort.ToString());
        text = SetIn(text, "max_retries", "3");
        text = SetIn(text, "request_timeout", "30");
        text = SetIn(text, "tpm_cert_store", CertStore);
        text = SetIn(text, "accept_tpm_signing_algs", "['ecschnorr', 'rsassa', 'ecdsa']");
        var cas = new[] { "cacert.crt" }.Concat(extraServerCas).Select(c => $"'{c}'");
        text = SetIn(text, "trusted_server_ca", "[" + string.Join(", ", cas) + "]");
        var path = Path.Combine(ConfDir, name + ".conf");
        File.WriteAllText(path, text);
        return path;
    }

    /// <summary>Runs Keylime's tenant with <c>-c</c> and <paramref name="args"/>; the exit code and its whole output.</summary>
    public Task<(int Code, string Output)> TenantAsync(string config, params string[] args) =>
        RunAsync(Python, ["-m", "keylime.cmd.tenant", .. args], Env(config), TimeSpan.FromSeconds(180));

    private Dictionary<string, string> Env(string? tenantConfig = null) => new()
    {
        ["PYTHONPATH"] = PeerRoot,
        ["KEYLIME_DIR"] = KeylimeDir,
        ["KEYLIME_VERIFIER_CONFIG"] = Path.Combine(ConfDir, "verifier.conf"),
        ["KEYLIME_REGISTRAR_CONFIG"] = Path.Combine(ConfDir, "registrar.conf"),
        ["KEYLIME_TENANT_CONFIG"] = tenantConfig ?? Path.Combine(ConfDir, "tenant.conf"),
        ["KEYLIME_CA_CONFIG"] = Path.Combine(ConfDir, "ca.conf"),
        ["KEYLIME_LOGGING_CONFIG"] = Path.Combine(ConfDir, "logging.conf"),
    };

    private void Set(string conf, string key, string value)
    {
        var path = Path.Combine(ConfDir, conf + ".conf");
        File.WriteAllText(path, SetIn(File.ReadAllText(path), key, value));
    }

    private static string SetIn(string text, string key, string value)
    {
        var re = new Regex("^" + Regex.Escape(key) + @"\s*=.*$", RegexOptions.Multiline);
        if (!re.IsMatch(text)) throw new InvalidOperationException($"Keylime configuration has no '{key}' option.");
        return re.Replace(text, $"{key} = {value}", 1);
    }

    private void Start(string service)
    {
        var psi = new ProcessStartInfo("setsid", [Python, "-m", "keylime.cmd." + service])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = Scratch,
        };
        foreach (var (k, v) in Env()) psi.Environment[k] = v;
        var log = new StreamWriter(Path.Combine(Scratch, service + ".log")) { AutoFlush = true };
        var p = Process.Start(psi)!;
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        // setsid execs in place (the child is no group leader): its pid is the new process group's id.
        lock (_groups) _groups.Add(p.Id);
    }

    public string Log(string service)
    {
        try
        {
            using var fs = new FileStream(Path.Combine(Scratch, service + ".log"), FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            var text = new StreamReader(fs).ReadToEnd();
            return text.Length > 6000 ? text[^6000..] : text;
        }
        catch (IOException) { return ""; }
    }

    private async Task WaitForAsync(Func<bool> ready, string service)
    {
        var until = DateTime.UtcNow.AddSeconds(120);
        while (!ready())
        {
            if (DateTime.UtcNow > until) throw new InvalidOperationException($"Keylime {service} did not start listening within 120 s:\n{Log(service)}");
            await Task.Delay(200);
        }
    }

    public static bool Listening(int port)
    {
        try
        {
            using var c = new TcpClient();
            c.Connect(IPAddress.Loopback, port);
            return true;
        }
        catch (SocketException) { return false; }
    }

    private static int[] FreePorts(int n)
    {
        var listeners = Enumerable.Range(0, n).Select(_ => new TcpListener(IPAddress.Loopback, 0)).ToList();
        foreach (var l in listeners) l.Start();
        var ports = listeners.Select(l => ((IPEndPoint)l.LocalEndpoint).Port).ToArray();
        foreach (var l in listeners) l.Stop();
        return ports;
    }

    private static string? FindPeer()
    {
        var env = Environment.GetEnvironmentVariable("KEYLIME_PEER_DIR");
        if (!string.IsNullOrEmpty(env)) return File.Exists(Path.Combine(env, "keylime", "__init__.py")) ? env : null;
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            var p = Path.Combine(d.FullName, "shared", "peers", "keylime");
            if (File.Exists(Path.Combine(p, "keylime", "__init__.py"))) return p;
        }
        return null;
    }

    private static string LastLine(string s) => s.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault() ?? "";

    public static async Task<(int Code, string Output)> RunAsync(string file, IEnumerable<string> args, IDictionary<string, string>? env, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(file, args)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        if (env is not null) foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var sb = new StringBuilder();
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (sb) sb.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (sb) sb.AppendLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        using var cts = new CancellationTokenSource(timeout);
        try { await p.WaitForExitAsync(cts.Token); }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            await p.WaitForExitAsync();
            lock (sb) sb.AppendLine($"(killed after {timeout.TotalSeconds} s)");
            return (-1, sb.ToString());
        }
        p.WaitForExit();
        lock (sb) return (p.ExitCode, sb.ToString());
    }

    public async Task DisposeAsync()
    {
        await StopAsync();
        try { Directory.Delete(Scratch, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    private async Task StopAsync()
    {
        int[] groups;
        lock (_groups)
        {
            groups = [.. _groups];
            _groups.Clear();
        }
        foreach (var g in groups) Signal(g, "TERM");
        var until = DateTime.UtcNow.AddSeconds(15);
        while (groups.Any(GroupAlive) && DateTime.UtcNow < until) await Task.Delay(200);
        foreach (var g in groups.Where(GroupAlive)) Signal(g, "KILL");
        until = DateTime.UtcNow.AddSeconds(10);
        while (groups.Any(GroupAlive) && DateTime.UtcNow < until) await Task.Delay(100);
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);

    private static void Signal(int group, string signal) => _ = kill(-group, signal == "KILL" ? 9 : 15);

    /// <summary>True while any process of the group is alive (<c>kill(-pgid, 0)</c>).</summary>
    private static bool GroupAlive(int group) => kill(-group, 0) == 0;
}
