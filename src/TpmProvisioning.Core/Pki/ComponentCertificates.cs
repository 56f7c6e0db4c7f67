using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace TpmProvisioning.Pki;

/// <summary>The certificates a server keeps under its data path for mutual TLS.</summary>
public enum ComponentCertificateKind
{
    /// <summary>The server-components CA (<c>ca/cacert.pem</c>, key <c>ca/cakey.pem</c>): issues server and client certificates.</summary>
    ComponentCa,
    /// <summary>The server's TLS certificate (<c>tls/server.pfx</c>): the registrar's or verifier's, and on an agent the agent's own (its <c>mtls_cert</c>).</summary>
    Server,
}

/// <summary>File formats for exported certificates.</summary>
public enum CertificateFileFormat
{
    /// <summary>PEM: the certificate, and with the key an encrypted PKCS#8 <c>ENCRYPTED PRIVATE KEY</c> block.</summary>
    Pem,
    /// <summary>PKCS#12 with the certificate and its key, password-protected.</summary>
    Pfx,
}

/// <summary>
/// Reads, exports and replaces the components CA and the server certificate of a data path, so several servers (registrar,
/// verifier, agents) can share one components CA, as Keylime's components share theirs.
/// </summary>
public static class ComponentCertificates
{
    /// <summary>The server certificate file under a data path.</summary>
    public static string ServerPfxPath(string dataPath) => Path.Combine(dataPath, "tls", "server.pfx");
    /// <summary>The components CA folder under a data path.</summary>
    public static string CaDirectory(string dataPath) => Path.Combine(dataPath, "ca");

    /// <summary>True when the data path holds a certificate of that kind.</summary>
    public static bool Exists(string dataPath, ComponentCertificateKind kind) => kind == ComponentCertificateKind.ComponentCa
        ? File.Exists(Path.Combine(CaDirectory(dataPath), ComponentCa.CertFileName)) && File.Exists(Path.Combine(CaDirectory(dataPath), ComponentCa.KeyFileName))
        : File.Exists(ServerPfxPath(dataPath));

    /// <summary>Loads a data path's certificate with its private key (exportable); throws <see cref="FileNotFoundException"/> when absent.</summary>
    public static X509Certificate2 Load(string dataPath, ComponentCertificateKind kind)
    {
        if (!Exists(dataPath, kind)) throw new FileNotFoundException($"No {kind} certificate under '{dataPath}'; start a server on this data path first.");
        if (kind == ComponentCertificateKind.Server)
            return X509CertificateLoader.LoadPkcs12FromFile(ServerPfxPath(dataPath), null, X509KeyStorageFlags.Exportable);
        var dir = CaDirectory(dataPath);
        using var withKey = X509Certificate2.CreateFromPem(File.ReadAllText(Path.Combine(dir, ComponentCa.CertFileName)), File.ReadAllText(Path.Combine(dir, ComponentCa.KeyFileName)));
        return X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null, X509KeyStorageFlags.Exportable);
    }

    /// <summary>
    /// The bytes of an export: without <paramref name="keyPassword"/> the certificate alone (PEM only); with it, the
    /// certificate and its private key protected by that password (AES-256, PBKDF2-SHA256).
    /// </summary>
    public static byte[] Export(X509Certificate2 certificate, CertificateFileFormat format, string? keyPassword)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        if (keyPassword is null)
        {
            if (format == CertificateFileFormat.Pfx) throw new ArgumentException("A PFX file carries the private key: export it with a password.");
            return System.Text.Encoding.ASCII.GetBytes(certificate.ExportCertificatePem() + "\n");
        }
        if (keyPassword.Length == 0) throw new ArgumentException("The private key's password must not be empty.");
        if (!certificate.HasPrivateKey) throw new ArgumentException($"The certificate {certificate.Subject} has no private key to export.");
        var pbe = new PbeParameters(PbeEncryptionAlgorithm.Aes256Cbc, HashAlgorithmName.SHA256, 200_000);
        if (format == CertificateFileFormat.Pfx) return certificate.ExportPkcs12(pbe, keyPassword);
        using AsymmetricAlgorithm key = (AsymmetricAlgorithm?)certificate.GetECDsaPrivateKey() ?? certificate.GetRSAPrivateKey()
            ?? throw new ArgumentException("Only ECDSA and RSA keys are exported.");
        return System.Text.Encoding.ASCII.GetBytes(certificate.ExportCertificatePem() + "\n" + key.ExportEncryptedPkcs8PrivateKeyPem(keyPassword, pbe) + "\n");
    }

    /// <summary>
    /// Reads a certificate with its private key from a PFX or from PEM (a <c>CERTIFICATE</c> block with a <c>PRIVATE KEY</c>,
    /// <c>EC PRIVATE KEY</c>, <c>RSA PRIVATE KEY</c> or <c>ENCRYPTED PRIVATE KEY</c> block). Throws
    /// <see cref="CryptographicException"/> when it cannot (wrong password, no key, not a certificate).
    /// </summary>
    public static X509Certificate2 ReadWithKey(byte[] content, string? password)
    {
        ArgumentNullException.ThrowIfNull(content);
        var text = LooksLikePem(content) ? System.Text.Encoding.ASCII.GetString(content) : null;
        X509Certificate2 cert;
        if (text is null) cert = X509CertificateLoader.LoadPkcs12(content, password, X509KeyStorageFlags.Exportable);
        else
        {
            if (!text.Contains("PRIVATE KEY-----", StringComparison.Ordinal)) throw new CryptographicException("The file holds no private key.");
            using var pem = text.Contains("-----BEGIN ENCRYPTED PRIVATE KEY-----", StringComparison.Ordinal)
                ? X509Certificate2.CreateFromEncryptedPem(text, text, password ?? throw new CryptographicException("The private key is encrypted: give its password."))
                : X509Certificate2.CreateFromPem(text, text);
            cert = X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null, X509KeyStorageFlags.Exportable);
        }
        if (!cert.HasPrivateKey)
        {
            cert.Dispose();
            throw new CryptographicException("The file holds no private key.");
        }
        return cert;
    }

    private static bool LooksLikePem(byte[] b)
    {
        var head = System.Text.Encoding.ASCII.GetString(b, 0, Math.Min(b.Length, 4096));
        return head.Contains("-----BEGIN ", StringComparison.Ordinal);
    }

    /// <summary>
    /// Makes <paramref name="ca"/> (with its ECDSA or RSA key; a site's Keylime <c>cv_ca</c> is RSA) the data path's components CA. Certificates the previous CA issued
    /// stop being trusted; the server certificate is reissued from the new CA at the next start.
    /// </summary>
    public static void ImportCa(string dataPath, X509Certificate2 ca)
    {
        ArgumentNullException.ThrowIfNull(ca);
        var bc = ca.Extensions.OfType<X509BasicConstraintsExtension>().FirstOrDefault();
        if (bc is not { CertificateAuthority: true }) throw new ArgumentException($"{ca.Subject} is not a CA certificate (basic constraints).");
        using AsymmetricAlgorithm key = (AsymmetricAlgorithm?)ca.GetECDsaPrivateKey() ?? ca.GetRSAPrivateKey()
            ?? throw new ArgumentException("The components CA needs its private key, ECDSA or RSA.");
        if (key is RSA { KeySize: < 2048 }) throw new ArgumentException("An RSA components CA needs a key of at least 2048 bits.");
        var dir = CaDirectory(dataPath);
        Storage.PrivateFiles.CreateFolder(dir);
        ComponentCa.WriteSecretFile(Path.Combine(dir, ComponentCa.KeyFileName), key.ExportPkcs8PrivateKeyPem());
        Storage.PrivateFiles.WriteAllText(Path.Combine(dir, ComponentCa.CertFileName), ca.ExportCertificatePem());
    }

    /// <summary>
    /// Makes <paramref name="server"/> (with its key) the data path's TLS certificate. It must chain to the data path's
    /// components CA (a server reissues any other at start); for a certificate from elsewhere use the server's
    /// <c>Certificate</c> option instead.
    /// </summary>
    public static void ImportServer(string dataPath, X509Certificate2 server)
    {
        ArgumentNullException.ThrowIfNull(server);
        if (!Exists(dataPath, ComponentCertificateKind.ComponentCa)) throw new InvalidOperationException($"No components CA under '{dataPath}' to check the certificate against.");
        using (var ca = ComponentCa.LoadOrCreate(CaDirectory(dataPath)))
            if (!ca.Validates(server)) throw new ArgumentException($"{server.Subject} was not issued by this data path's components CA.");
        var path = ServerPfxPath(dataPath);
        Storage.PrivateFiles.CreateFolder(Path.GetDirectoryName(path)!);
        Storage.PrivateFiles.WriteAllBytes(path, server.Export(X509ContentType.Pkcs12));
    }
}
