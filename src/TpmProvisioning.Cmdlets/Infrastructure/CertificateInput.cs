using System.Management.Automation;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace TpmProvisioning.Cmdlets;

/// <summary>Reads a certificate parameter given as an object or as the path of a PEM or DER file.</summary>
internal static class CertificateInput
{
    /// <summary>The certificate, null for null; a terminating InvalidCertificate error when it cannot be read.</summary>
    public static X509Certificate2? Load(PSCmdlet cmdlet, object? value, string parameter)
    {
        value = value is PSObject p ? p.BaseObject : value;
        try
        {
            switch (value)
            {
                case null: return null;
                case X509Certificate2 c: return c;
                case string or FileInfo:
                    var path = value is FileInfo f ? f.FullName : cmdlet.GetUnresolvedProviderPathFromPSPath((string)value);
                    var bytes = File.ReadAllBytes(path);
                    var text = System.Text.Encoding.ASCII.GetString(bytes);
                    return text.Contains("-----BEGIN CERTIFICATE-----", StringComparison.Ordinal)
                        ? X509Certificate2.CreateFromPem(text)
                        : X509CertificateLoader.LoadCertificate(bytes);
                default:
                    throw new ArgumentException($"-{parameter} takes a certificate or the path of a PEM/DER file.");
            }
        }
        catch (Exception ex) when (ex is IOException or ArgumentException or CryptographicException or UnauthorizedAccessException)
        {
            cmdlet.ThrowTerminatingError(new ErrorRecord(ex, "InvalidCertificate", ErrorCategory.InvalidArgument, value));
            return null;
        }
    }
}
