namespace TpmProvisioning.Tpm.Simulator;

/// <summary>
/// swtpm's local CA, which signs the EK and platform certificates swtpm_setup writes and so plays the TPM manufacturer.
/// As root (or whenever the system directory <c>/var/lib/swtpm-localca</c> is writable) it is the system one, configured by
/// <c>/etc/swtpm_setup.conf</c>; otherwise a per-user directory with generated configuration files.
/// </summary>
public sealed class SwtpmLocalCa
{
    /// <summary>The system local CA directory used by Debian's swtpm-tools.</summary>
    public const string SystemDirectory = "/var/lib/swtpm-localca";

    /// <summary>The system swtpm_setup configuration file.</summary>
    public const string SystemSetupConfig = "/etc/swtpm_setup.conf";

    /// <summary>Directory holding the CA keys, certificates and serial counter.</summary>
    public string Directory { get; }

    /// <summary>The swtpm_setup configuration file to pass with <c>--config</c>, or null to use the system default.</summary>
    public string? SetupConfigFile { get; }

    /// <summary>The root CA certificate (PEM): the manufacturer trust anchor. It exists after the first swtpm_setup.</summary>
    public string RootCertificatePath => Path.Combine(Directory, "swtpm-localca-rootca-cert.pem");

    /// <summary>The intermediate (issuer) certificate (PEM) that signs EK certificates.</summary>
    public string IssuerCertificatePath => Path.Combine(Directory, "issuercert.pem");

    private SwtpmLocalCa(string directory, string? setupConfig)
    {
        Directory = directory;
        SetupConfigFile = setupConfig;
    }

    private static readonly Lazy<SwtpmLocalCa> DefaultCa = new(Resolve, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>The local CA this process uses (resolved once).</summary>
    public static SwtpmLocalCa Default => DefaultCa.Value;

    /// <summary>A local CA in <paramref name="directory"/> with generated configuration files (created as needed).</summary>
    public static SwtpmLocalCa InDirectory(string directory)
    {
        System.IO.Directory.CreateDirectory(directory);
        string tool = SwtpmInstance.FindExecutable("swtpm_localca") ?? "/usr/bin/swtpm_localca";
        string caConf = Path.Combine(directory, "swtpm-localca.conf");
        string caOpts = Path.Combine(directory, "swtpm-localca.options");
        string setupConf = Path.Combine(directory, "swtpm_setup.conf");
        WriteIfChanged(caConf,
            $"statedir = {directory}\n" +
            $"signingkey = {Path.Combine(directory, "signkey.pem")}\n" +
            $"issuercert = {Path.Combine(directory, "issuercert.pem")}\n" +
            $"certserial = {Path.Combine(directory, "certserial")}\n");
        WriteIfChanged(caOpts, "--platform-manufacturer TpmProvisioning\n--platform-version 2.1\n--platform-model swtpm\n");
        WriteIfChanged(setupConf,
            $"create_certs_tool = {tool}\n" +
            $"create_certs_tool_config = {caConf}\n" +
            $"create_certs_tool_options = {caOpts}\n" +
            "active_pcr_banks = sha256\n");
        return new SwtpmLocalCa(directory, setupConf);
    }

    private static void WriteIfChanged(string path, string content)
    {
        if (File.Exists(path) && File.ReadAllText(path) == content) return;
        string tmp = path + "." + Environment.ProcessId + ".tmp";
        File.WriteAllText(tmp, content);
        File.Move(tmp, path, overwrite: true);
    }

    private static SwtpmLocalCa Resolve()
    {
        string? env = Environment.GetEnvironmentVariable("TPMPROVISIONING_SWTPM_LOCALCA");
        if (!string.IsNullOrWhiteSpace(env)) return InDirectory(Path.GetFullPath(env));
        if (File.Exists(SystemSetupConfig) && IsWritableDirectory(SystemDirectory))
            return new SwtpmLocalCa(SystemDirectory, null);
        string baseDir = Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData, Environment.SpecialFolderOption.Create);
        if (string.IsNullOrEmpty(baseDir)) baseDir = Path.Combine(Path.GetTempPath(), "tpmprovisioning-" + Environment.UserName);
        return InDirectory(Path.Combine(baseDir, "tpmprovisioning", "swtpm-localca"));
    }

    private static bool IsWritableDirectory(string dir)
    {
        if (!System.IO.Directory.Exists(dir)) return false;
        try
        {
            string probe = Path.Combine(dir, $".probe-{Environment.ProcessId}-{Guid.NewGuid():N}");
            File.WriteAllText(probe, "");
            File.Delete(probe);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}
