using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace TpmProvisioning.Pki;

/// <summary>
/// The server-components CA, as Keylime's verifier keeps one: created on first start under
/// <c>&lt;DataPath&gt;/ca</c>, it issues the server's TLS certificate and the client certificates
/// used for mutual TLS. Created as ECDSA P-256; an imported CA may be ECDSA or RSA (a site's existing Keylime <c>cv_ca</c> is
/// RSA). The private key file is readable by its owner only. Client certificates of other CAs (a site's Keylime verifier and
/// tenant) are trusted in configured roles through <see cref="TrustClientCa"/>.
/// </summary>
public sealed class ComponentCa : IDisposable
{
    public const string CertFileName = "cacert.pem";
    public const string KeyFileName = "cakey.pem";

    private readonly AsymmetricAlgorithm _key;
    private readonly List<(X509Certificate2 Ca, ClientRole Roles)> _trustedClientCas = [];

    private ComponentCa(X509Certificate2 cert, AsymmetricAlgorithm key, string directory)
    {
        Certificate = cert;
        _key = key;
        Directory = directory;
    }

    public X509Certificate2 Certificate { get; }
    public string Directory { get; }
    public string CertificatePath => Path.Combine(Directory, CertFileName);

    /// <summary>Loads the CA from <paramref name="directory"/>, creating it when absent.</summary>
    public static ComponentCa LoadOrCreate(string directory, string commonName = "TpmProvisioning Components CA")
    {
        Storage.PrivateFiles.CreateFolder(directory);
        var certPath = Path.Combine(directory, CertFileName);
        var keyPath = Path.Combine(directory, KeyFileName);
        if (File.Exists(certPath) && File.Exists(keyPath))
        {
            var cert = X509Certificate2.CreateFromPem(File.ReadAllText(certPath));
            AsymmetricAlgorithm key = cert.GetKeyAlgorithm() == "1.2.840.113549.1.1.1" ? RSA.Create() : ECDsa.Create();
            key.ImportFromPem(File.ReadAllText(keyPath));
            return new ComponentCa(cert, key, directory);
        }

        var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest(new X500DistinguishedName($"CN={Escape(commonName)}, O=TpmProvisioning"), caKey, HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 1, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign | X509KeyUsageFlags.DigitalSignature, true));
        req.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(req.PublicKey, false));
        var now = DateTimeOffset.UtcNow;
        using var selfSigned = req.CreateSelfSigned(now.AddMinutes(-5), now.AddYears(10));
        var publicCert = X509CertificateLoader.LoadCertificate(selfSigned.RawData);
        WriteSecretFile(keyPath, caKey.ExportPkcs8PrivateKeyPem());
        Storage.PrivateFiles.WriteAllText(certPath, publicCert.ExportCertificatePem());
        return new ComponentCa(publicCert, caKey, directory);
    }

    /// <summary>Issues a TLS server certificate (with private key) for the given names and addresses.</summary>
    public X509Certificate2 IssueServerCertificate(IEnumerable<string> dnsNames, IEnumerable<IPAddress> addresses, string commonName = "TpmProvisioning Server")
    {
        var san = new SubjectAlternativeNameBuilder();
        foreach (var d in dnsNames.Distinct()) san.AddDnsName(d);
        foreach (var a in addresses.Distinct()) san.AddIpAddress(a);
        return Issue(commonName, san.Build(), new OidCollection { new Oid("1.3.6.1.5.5.7.3.1") }, TimeSpan.FromDays(397));
    }

    /// <summary>
    /// Issues a TLS client certificate (with private key) for mutual TLS: extended key usage clientAuth plus the role it may act
    /// in (<see cref="ClientRoles"/>). A server certificate, or an agent's, carries no role and is refused as a client.
    /// </summary>
    public X509Certificate2 IssueClientCertificate(string commonName, TimeSpan? lifetime = null, ClientRole role = ClientRole.Tenant)
    {
        if (role == ClientRole.None) throw new ArgumentException("A client certificate needs a role.", nameof(role));
        var eku = new OidCollection { new Oid(ClientRoles.ClientAuthOid) };
        foreach (var r in ClientRoles.Each(role)) eku.Add(new Oid(ClientRoles.Oid(r)));
        return Issue(commonName, null, eku, lifetime ?? TimeSpan.FromDays(397));
    }

    /// <summary>
    /// The roles <paramref name="cert"/> may act in as a client of this CA's servers: none unless this CA issued it and it
    /// carries the clientAuth extended key usage; then the role usages it carries (<see cref="ClientRoles"/>).
    /// </summary>
    public ClientRole ClientRolesOf(X509Certificate2 cert) => Validates(cert) ? ClientRoles.Of(cert) : TrustedClientRoles(cert);

    private X509Certificate2 Issue(string commonName, X509Extension? san, OidCollection eku, TimeSpan lifetime)
    {
        using var leafKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest(new X500DistinguishedName($"CN={Escape(commonName)}, O=TpmProvisioning"), leafKey, HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyAgreement, true));
        req.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(eku, false));
        req.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(Certificate, true, false));
        if (san is not null) req.CertificateExtensions.Add(san);
        var now = DateTimeOffset.UtcNow;
        var notAfter = now.Add(lifetime) < Certificate.NotAfter ? now.Add(lifetime) : new DateTimeOffset(Certificate.NotAfter.ToUniversalTime());
        var serial = RandomNumberGenerator.GetBytes(16);
        serial[0] &= 0x7F;
        var generator = _key is RSA rsa ? X509SignatureGenerator.CreateForRSA(rsa, RSASignaturePadding.Pkcs1) : X509SignatureGenerator.CreateForECDsa((ECDsa)_key);
        using var cert = req.Create(Certificate.SubjectName, generator, now.AddMinutes(-5), notAfter, serial);
        using var withKey = cert.CopyWithPrivateKey(leafKey);
        // Round-trip through PKCS#12 so the key is usable by SslStream on every platform.
        return X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null, X509KeyStorageFlags.Exportable);
    }

    /// <summary>True when <paramref name="cert"/> was issued by this CA and is within its validity.</summary>
    public bool Validates(X509Certificate2 cert) => Chains(cert, Certificate);

    private static bool Chains(X509Certificate2 cert, X509Certificate2 root)
    {
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(root);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.VerificationFlags = X509VerificationFlags.NoFlag;
        return chain.Build(cert) && chain.ChainElements[^1].Certificate.RawData.AsSpan().SequenceEqual(root.RawData);
    }

    /// <summary>
    /// Trusts client certificates issued by another CA (RSA or ECDSA; a site's Keylime <c>cv_ca</c>, whose tenant and verifier
    /// certificates carry no role) in <paramref name="roles"/>: a certificate that chains to <paramref name="ca"/> and may
    /// authenticate a client (clientAuth in its extended key usage, or no extended key usage at all, which RFC 5280 reads as
    /// any purpose) acts in exactly those roles. This CA's own certificates never gain roles this way.
    /// </summary>
    public void TrustClientCa(X509Certificate2 ca, ClientRole roles)
    {
        ArgumentNullException.ThrowIfNull(ca);
        if (roles == ClientRole.None) throw new ArgumentException("A trusted client CA needs at least one role.", nameof(roles));
        var bc = ca.Extensions.OfType<X509BasicConstraintsExtension>().FirstOrDefault();
        if (bc is not { CertificateAuthority: true }) throw new ArgumentException($"'{ca.Subject}' is not a CA certificate (basic constraints CA:TRUE).", nameof(ca));
        if (ca.GetKeyAlgorithm() is not ("1.2.840.113549.1.1.1" or "1.2.840.10045.2.1")) throw new ArgumentException($"'{ca.Subject}': only RSA and ECDSA CAs are supported.", nameof(ca));
        lock (_trustedClientCas) _trustedClientCas.Add((X509CertificateLoader.LoadCertificate(ca.RawData), roles));
    }

    /// <summary>Reads a CA certificate (PEM or DER) to trust for client certificates; refuses one that is not an RSA or ECDSA CA.</summary>
    public static X509Certificate2 ReadCaCertificate(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var text = System.Text.Encoding.ASCII.GetString(bytes);
        var cert = text.Contains("-----BEGIN CERTIFICATE-----", StringComparison.Ordinal)
            ? X509Certificate2.CreateFromPem(text) : X509CertificateLoader.LoadCertificate(bytes);
        var bc = cert.Extensions.OfType<X509BasicConstraintsExtension>().FirstOrDefault();
        if (bc is not { CertificateAuthority: true }) throw new ArgumentException($"'{cert.Subject}' is not a CA certificate (basic constraints CA:TRUE).");
        if (cert.GetKeyAlgorithm() is not ("1.2.840.113549.1.1.1" or "1.2.840.10045.2.1")) throw new ArgumentException($"'{cert.Subject}': only RSA and ECDSA CAs are supported.");
        return cert;
    }

    /// <summary>The other CAs whose client certificates are trusted, with their roles.</summary>
    public IReadOnlyList<(X509Certificate2 Ca, ClientRole Roles)> TrustedClientCas { get { lock (_trustedClientCas) return [.. _trustedClientCas]; } }

    /// <summary>
    /// True when <paramref name="cert"/> may complete a mutual-TLS handshake: issued by this CA or by a trusted client CA (which
    /// roles it may act in is decided per route, so a trusted CA's server certificate gets 403 in the envelope, as this CA's own).
    /// </summary>
    public bool ValidatesClient(X509Certificate2 cert) => Validates(cert) || TrustedClientCas.Any(t => Chains(cert, t.Ca));

    /// <summary>
    /// The roles a certificate from a trusted client CA (<see cref="TrustClientCa"/>) acts in; none for this CA's own
    /// certificates, for certificates of no trusted CA, and for certificates whose extended key usage excludes clientAuth.
    /// </summary>
    public ClientRole TrustedClientRoles(X509Certificate2 cert)
    {
        ArgumentNullException.ThrowIfNull(cert);
        var cas = TrustedClientCas;
        if (cas.Count == 0 || Validates(cert)) return ClientRole.None;
        var eku = cert.Extensions.OfType<X509EnhancedKeyUsageExtension>().FirstOrDefault();
        if (eku is not null && !eku.EnhancedKeyUsages.Cast<Oid>().Any(o => o.Value == ClientRoles.ClientAuthOid)) return ClientRole.None;
        var roles = ClientRole.None;
        foreach (var (ca, r) in cas)
            if (Chains(cert, ca)) roles |= r;
        return roles;
    }

    private static string Escape(string cn) => cn.Replace("\\", "\\\\").Replace(",", "\\,").Replace("=", "\\=").Replace("+", "\\+").Replace("\"", "\\\"");

    /// <summary>Writes a file only its owner can read (mode 0600 on Unix).</summary>
    public static void WriteSecretFile(string path, string content) => Storage.PrivateFiles.WriteAllText(path, content);

    public void Dispose() => _key.Dispose();
}
