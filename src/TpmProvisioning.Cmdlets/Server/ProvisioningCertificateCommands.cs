using System.Management.Automation;
using System.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using TpmProvisioning.Pki;

namespace TpmProvisioning.Cmdlets;

/// <summary>
/// Exports a data path's components CA or server certificate (on an agent: the agent's own certificate), or a given
/// certificate such as a tenant or verifier client certificate, as PEM or PFX. The private key only with -IncludePrivateKey
/// and a password.
/// </summary>
[Cmdlet(VerbsData.Export, "ProvisioningCertificate", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, DefaultParameterSetName = "DataPath")]
[OutputType(typeof(FileInfo))]
public sealed class ExportProvisioningCertificateCommand : ProvisioningDataCmdletBase
{
    /// <summary>Which of the data path's certificates to export.</summary>
    [Parameter(ParameterSetName = "DataPath", Position = 0)]
    public ComponentCertificateKind Kind { get; set; } = ComponentCertificateKind.ComponentCa;

    /// <summary>A certificate to export instead, e.g. the client certificate New-ProvisioningClientCertificate returned.</summary>
    [Parameter(ParameterSetName = "Certificate", Mandatory = true, ValueFromPipeline = true)]
    public X509Certificate2? Certificate { get; set; }

    /// <summary>The file to write.</summary>
    [Parameter(Mandatory = true)]
    [ValidateNotNullOrEmpty]
    public string Path { get; set; } = "";

    /// <summary>PEM or PFX; default from the file extension (.pfx and .p12 are PFX), else PEM.</summary>
    [Parameter]
    public CertificateFileFormat? Format { get; set; }

    /// <summary>Also export the private key, encrypted under -Password. Needed for PFX.</summary>
    [Parameter]
    public SwitchParameter IncludePrivateKey { get; set; }

    /// <summary>The password protecting the exported private key.</summary>
    [Parameter]
    public SecureString? Password { get; set; }

    /// <summary>Overwrite an existing file.</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void ProcessRecord()
    {
        var target = GetUnresolvedProviderPathFromPSPath(Path);
        var format = Format ?? (target.EndsWith(".pfx", StringComparison.OrdinalIgnoreCase) || target.EndsWith(".p12", StringComparison.OrdinalIgnoreCase) ? CertificateFileFormat.Pfx : CertificateFileFormat.Pem);
        if (format == CertificateFileFormat.Pfx && !IncludePrivateKey)
        {
            WriteError(new ErrorRecord(new ArgumentException("A PFX file carries the private key: add -IncludePrivateKey and -Password, or export PEM."), "PfxNeedsPrivateKey", ErrorCategory.InvalidArgument, target));
            return;
        }
        if (IncludePrivateKey && (Password is null || Password.Length == 0))
        {
            WriteError(new ErrorRecord(new ArgumentException("-IncludePrivateKey needs a non-empty -Password to encrypt the key."), "PasswordRequired", ErrorCategory.InvalidArgument, target));
            return;
        }
        if (File.Exists(target) && !Force)
        {
            WriteError(new ErrorRecord(new IOException($"'{target}' exists. Use -Force to overwrite it."), "FileExists", ErrorCategory.ResourceExists, target));
            return;
        }
        X509Certificate2 cert;
        bool owned = Certificate is null;
        string what;
        if (Certificate is not null) { cert = Certificate; what = cert.Subject; }
        else
        {
            try { cert = ComponentCertificates.Load(ResolvedDataPath, Kind); }
            catch (FileNotFoundException ex) { WriteError(new ErrorRecord(ex, "CertificateNotFound", ErrorCategory.ObjectNotFound, ResolvedDataPath)); return; }
            what = $"{Kind} certificate of {ResolvedDataPath}";
        }
        try
        {
            if (IncludePrivateKey && !cert.HasPrivateKey)
            {
                WriteError(new ErrorRecord(new ArgumentException($"{cert.Subject} has no private key to export."), "PrivateKeyNotAvailable", ErrorCategory.InvalidArgument, cert));
                return;
            }
            if (!ShouldProcess(target, $"Export the {what} as {format}{(IncludePrivateKey ? " WITH its private key" : "")}")) return;
            byte[] bytes;
            try { bytes = ComponentCertificates.Export(cert, format, IncludePrivateKey ? new System.Net.NetworkCredential("", Password).Password : null); }
            catch (Exception ex) when (ex is ArgumentException or CryptographicException)
            {
                WriteError(new ErrorRecord(ex, "CertificateExportFailed", ErrorCategory.InvalidOperation, cert));
                return;
            }
            try
            {
                if (OperatingSystem.IsWindows() || !IncludePrivateKey) File.WriteAllBytes(target, bytes);
                else
                {
                    using var fs = new FileStream(target, new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite });
                    fs.Write(bytes);
                }
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                WriteError(Defaults.FileWriteError(ex, target));
                return;
            }
            if (owned) Audit(IncludePrivateKey ? "cert.export.key" : "cert.export", cert.Thumbprint, $"{Kind} to {target}");
            WriteObject(new FileInfo(target));
        }
        finally
        {
            if (owned) cert.Dispose();
        }
    }
}

/// <summary>
/// Installs a components CA or a server certificate (with its private key, from PEM or PFX) into a data path, so servers
/// on several hosts share one components CA. Takes effect at the server's next start.
/// </summary>
[Cmdlet(VerbsData.Import, "ProvisioningCertificate", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(X509Certificate2))]
public sealed class ImportProvisioningCertificateCommand : ProvisioningDataCmdletBase
{
    /// <summary>Which of the data path's certificates to replace.</summary>
    [Parameter(Mandatory = true, Position = 0)]
    public ComponentCertificateKind Kind { get; set; }

    /// <summary>PEM (certificate and private key) or PFX file to import.</summary>
    [Parameter(Mandatory = true, Position = 1)]
    [ValidateNotNullOrEmpty]
    public string Path { get; set; } = "";

    /// <summary>Password of the PFX or of an encrypted PEM private key.</summary>
    [Parameter]
    public SecureString? Password { get; set; }

    /// <summary>Replace an existing components CA (certificates it issued stop being trusted).</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void ProcessRecord()
    {
        var source = GetUnresolvedProviderPathFromPSPath(Path);
        if (!File.Exists(source))
        {
            WriteError(new ErrorRecord(new FileNotFoundException($"'{source}' does not exist.", source), "FileNotFound", ErrorCategory.ObjectNotFound, source));
            return;
        }
        X509Certificate2 cert;
        try { cert = ComponentCertificates.ReadWithKey(File.ReadAllBytes(source), Password is null ? null : new System.Net.NetworkCredential("", Password).Password); }
        catch (Exception ex) when (ex is CryptographicException or ArgumentException)
        {
            WriteError(new ErrorRecord(new InvalidDataException($"'{source}' is not a certificate with its private key that this password opens: {ex.Message}", ex), "CertificateUnreadable", ErrorCategory.InvalidData, source));
            return;
        }
        using (cert)
        {
            var dataPath = ResolvedDataPath;
            if (Kind == ComponentCertificateKind.ComponentCa && ComponentCertificates.Exists(dataPath, Kind) && !Force)
            {
                WriteError(new ErrorRecord(new InvalidOperationException($"A components CA exists under '{dataPath}'. Use -Force to replace it: certificates it issued stop being trusted."), "ComponentCaExists", ErrorCategory.ResourceExists, dataPath));
                return;
            }
            if (!ShouldProcess(dataPath, $"Install {cert.Subject} ({cert.Thumbprint}) as the {Kind} certificate")) return;
            try
            {
                if (Kind == ComponentCertificateKind.ComponentCa) ComponentCertificates.ImportCa(dataPath, cert);
                else ComponentCertificates.ImportServer(dataPath, cert);
            }
            catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or CryptographicException)
            {
                WriteError(new ErrorRecord(ex, Kind == ComponentCertificateKind.ComponentCa ? "NotAComponentCa" : "ServerCertificateRejected", ErrorCategory.InvalidData, cert));
                return;
            }
            Audit("cert.import", cert.Thumbprint, $"{Kind} from {source}");
            WriteObject(X509CertificateLoader.LoadCertificate(cert.RawData));
        }
    }
}
