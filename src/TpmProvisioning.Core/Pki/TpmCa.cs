using System.Formats.Asn1;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Org.BouncyCastle.Asn1;
using Org.BouncyCastle.Asn1.X509;
using BcBigInteger = Org.BouncyCastle.Math.BigInteger;

namespace TpmProvisioning.Pki;

/// <summary>What goes into an AK certificate.</summary>
public sealed record AkCertificateRequest
{
    /// <summary>The AK's public key, DER SubjectPublicKeyInfo.</summary>
    public required byte[] AkSubjectPublicKeyInfo { get; init; }
    /// <summary>Device name (CN).</summary>
    public required string DeviceName { get; init; }
    /// <summary>Device serial (serialNumber attribute).</summary>
    public required string Serial { get; init; }
    /// <summary>Device vendor (O).</summary>
    public required string Vendor { get; init; }
    /// <summary>Device version (private extension).</summary>
    public required string Version { get; init; }
    /// <summary>SHA-256 of the EK certificate's DER (private extension).</summary>
    public required byte[] EkCertificateSha256 { get; init; }
    /// <summary>Validity from now; capped by the CA certificate's own end.</summary>
    public TimeSpan Lifetime { get; init; } = TimeSpan.FromDays(3652);
}

/// <summary>
/// The AK certificate profile: object identifiers of the private extensions and helpers to read them back.
/// The private arc is <c>2.25.332907752034474748648160271133752245152</c> (the UUID
/// fa73b36a-0008-448a-9582-c80255ad3ba0 under ITU-T X.667's 2.25 arc, which needs no registration).
/// </summary>
public static class AkCertificateProfile
{
    /// <summary>Private arc of this module.</summary>
    public const string PrivateArc = "2.25.332907752034474748648160271133752245152";
    /// <summary>Non-critical extension: OCTET STRING holding the SHA-256 of the EK certificate's DER (32 bytes).</summary>
    public const string EkCertificateSha256Oid = PrivateArc + ".1";
    /// <summary>Non-critical extension: UTF8String holding the device version.</summary>
    public const string DeviceVersionOid = PrivateArc + ".2";
    /// <summary>TCG's tcg-kp-AIKCertificate extended key usage.</summary>
    public const string TcgKpAikCertificate = "2.23.133.8.3";
    /// <summary>X.520 serialNumber attribute.</summary>
    public const string SerialNumberOid = "2.5.4.5";

    /// <summary>The EK certificate SHA-256 carried by an AK certificate, or null when it has none.</summary>
    public static byte[]? ReadEkCertificateSha256(X509Certificate2 akCertificate)
    {
        ArgumentNullException.ThrowIfNull(akCertificate);
        var ext = akCertificate.Extensions[EkCertificateSha256Oid];
        if (ext is null) return null;
        var v = AsnDecoder.ReadOctetString(ext.RawData, AsnEncodingRules.DER, out int read);
        return read == ext.RawData.Length ? v : null;
    }

    /// <summary>The device version carried by an AK certificate, or null.</summary>
    public static string? ReadDeviceVersion(X509Certificate2 akCertificate)
    {
        ArgumentNullException.ThrowIfNull(akCertificate);
        var ext = akCertificate.Extensions[DeviceVersionOid];
        return ext is null ? null : AsnDecoder.ReadCharacterString(ext.RawData, AsnEncodingRules.DER, UniversalTagNumber.UTF8String, out _);
    }

    /// <summary>The serialNumber attribute of a certificate's subject, or null.</summary>
    public static string? ReadSubjectSerial(X509Certificate2 cert)
    {
        ArgumentNullException.ThrowIfNull(cert);
        foreach (var rdn in cert.SubjectName.EnumerateRelativeDistinguishedNames())
            if (rdn.GetSingleElementType().Value == SerialNumberOid) return rdn.GetSingleElementValue();
        return null;
    }

    /// <summary>True when every character is allowed in an ASN.1 PrintableString.</summary>
    internal static bool IsPrintableString(string s)
    {
        foreach (char c in s)
        {
            bool ok = c is (>= 'A' and <= 'Z') or (>= 'a' and <= 'z') or (>= '0' and <= '9')
                or ' ' or '\'' or '(' or ')' or '+' or ',' or '-' or '.' or '/' or ':' or '=' or '?';
            if (!ok) return false;
        }
        return s.Length > 0;
    }
}

/// <summary>
/// The TPM CA: signs AK certificates for provisioned devices. Its certificate is a PEM file (<c>cacert.pem</c>) in its
/// directory; its key is a P-256 PEM file beside it (<c>cakey.pem</c>, 0600) by default, or any <see cref="ICertificateSigner"/>
/// (an HSM through PKCS#11). Signing goes through the signer with a timeout: a signer that hangs fails the request with
/// <see cref="CertificateSignerTimeoutException"/> instead of holding it.
/// </summary>
public sealed class TpmCa : IDisposable
{
    public const string CertFileName = "cacert.pem";
    public const string KeyFileName = "cakey.pem";
    public const string DefaultSubject = "CN=TpmProvisioning TPM CA, O=TpmProvisioning";

    private readonly AlgorithmIdentifier _sigAlg;
    private readonly X509Name _issuer;
    private readonly byte[] _caKeyId;

    private TpmCa(X509Certificate2 certificate, ICertificateSigner signer, string? directory)
    {
        if (!KeyIdentity.FromSubjectPublicKeyInfo(certificate.PublicKey.ExportSubjectPublicKeyInfo())
                .Equals(KeyIdentity.FromSubjectPublicKeyInfo(signer.SubjectPublicKeyInfo)))
            throw new CryptographicException($"The TPM CA key ({signer.Description}) does not belong to the certificate {certificate.Subject}.");
        if (certificate.Extensions.OfType<X509BasicConstraintsExtension>().FirstOrDefault() is not { CertificateAuthority: true })
            throw new CryptographicException($"The certificate {certificate.Subject} is not a CA certificate (basicConstraints cA is not set).");
        Certificate = certificate;
        Signer = signer;
        Directory = directory;
        _sigAlg = AlgorithmIdentifier.GetInstance(signer.SignatureAlgorithm);
        _issuer = X509Name.GetInstance(certificate.SubjectName.RawData);
        _caKeyId = certificate.Extensions.OfType<X509SubjectKeyIdentifierExtension>().FirstOrDefault()?.SubjectKeyIdentifierBytes.ToArray()
            ?? KeyId(certificate.PublicKey.ExportSubjectPublicKeyInfo());
    }

    /// <summary>The CA certificate (public part only).</summary>
    public X509Certificate2 Certificate { get; }
    /// <summary>The CA key.</summary>
    public ICertificateSigner Signer { get; }
    /// <summary>The CA's directory, or null for a CA built in memory.</summary>
    public string? Directory { get; }
    /// <summary>How long one signature may take.</summary>
    public TimeSpan SignerTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>True when <paramref name="directory"/> holds a CA certificate.</summary>
    public static bool Exists(string directory) => File.Exists(Path.Combine(directory, CertFileName));

    /// <summary>
    /// Creates a new CA in <paramref name="directory"/>: a P-256 key file (0600) and a self-signed certificate. Refuses to
    /// replace an existing CA unless <paramref name="force"/>.
    /// </summary>
    public static TpmCa Create(string directory, string? subject = null, TimeSpan? lifetime = null, bool force = false)
    {
        ArgumentNullException.ThrowIfNull(directory);
        PrepareDirectory(directory, force);
        var keyPath = Path.Combine(directory, KeyFileName);
        var signer = FileCertificateSigner.CreateEcdsaP256(keyPath);
        try
        {
            var cert = CreateSelfSigned(signer, subject ?? DefaultSubject, lifetime ?? TimeSpan.FromDays(7305));
            Storage.PrivateFiles.WriteAllText(Path.Combine(directory, CertFileName), cert.ExportCertificatePem());
            return new TpmCa(cert, signer, directory);
        }
        catch
        {
            signer.Dispose();
            throw;
        }
    }

    /// <summary>A self-signed CA certificate made through <paramref name="signer"/> (also for HSM keys).</summary>
    public static X509Certificate2 CreateSelfSigned(ICertificateSigner signer, string subject, TimeSpan lifetime)
    {
        ArgumentNullException.ThrowIfNull(signer);
        var name = X509Name.GetInstance(new X500DistinguishedName(subject).RawData);
        var spki = SubjectPublicKeyInfo.GetInstance(signer.SubjectPublicKeyInfo);
        var keyId = KeyId(signer.SubjectPublicKeyInfo);
        var ext = new X509ExtensionsGenerator();
        ext.AddExtension(X509Extensions.BasicConstraints, true, new BasicConstraints(0));
        ext.AddExtension(X509Extensions.KeyUsage, true, new KeyUsage(KeyUsage.KeyCertSign | KeyUsage.CrlSign | KeyUsage.DigitalSignature));
        ext.AddExtension(X509Extensions.SubjectKeyIdentifier, false, new SubjectKeyIdentifier(keyId));
        var now = DateTime.UtcNow;
        var tbs = BuildTbs(AlgorithmIdentifier.GetInstance(signer.SignatureAlgorithm), name, name, spki, now.AddMinutes(-5), now.Add(lifetime), ext.Generate());
        var sig = signer.SignAsync(tbs.GetDerEncoded()).GetAwaiter().GetResult();
        return Assemble(tbs, AlgorithmIdentifier.GetInstance(signer.SignatureAlgorithm), sig);
    }

    /// <summary>Loads the CA in <paramref name="directory"/> with its key file.</summary>
    /// <exception cref="FileNotFoundException">No CA there.</exception>
    public static TpmCa Load(string directory)
    {
        var certPath = Path.Combine(directory, CertFileName);
        var keyPath = Path.Combine(directory, KeyFileName);
        if (!File.Exists(certPath)) throw new FileNotFoundException($"No TPM CA certificate in '{directory}'.", certPath);
        if (!File.Exists(keyPath)) throw new FileNotFoundException($"The TPM CA in '{directory}' has no key file.", keyPath);
        var cert = X509Certificate2.CreateFromPem(File.ReadAllText(certPath));
        var signer = FileCertificateSigner.Load(keyPath);
        try { return new TpmCa(cert, signer, directory); }
        catch { signer.Dispose(); throw; }
    }

    /// <summary>Loads the CA certificate in <paramref name="directory"/> with an external signer (HSM).</summary>
    public static TpmCa Load(string directory, ICertificateSigner signer)
    {
        ArgumentNullException.ThrowIfNull(signer);
        var certPath = Path.Combine(directory, CertFileName);
        if (!File.Exists(certPath)) throw new FileNotFoundException($"No TPM CA certificate in '{directory}'.", certPath);
        return new TpmCa(X509Certificate2.CreateFromPem(File.ReadAllText(certPath)), signer, directory);
    }

    /// <summary>Loads the CA in <paramref name="directory"/>, creating one when there is none.</summary>
    public static TpmCa LoadOrCreate(string directory) => Exists(directory) ? Load(directory) : Create(directory);

    /// <summary>A CA over a certificate and signer held in memory (tests, or a key that lives elsewhere).</summary>
    public static TpmCa FromSigner(X509Certificate2 certificate, ICertificateSigner signer) => new(certificate, signer, null);

    /// <summary>
    /// Imports a CA certificate and its private key (PEM) into <paramref name="directory"/>. The certificate must be a CA and
    /// the key must be its key; an existing CA is replaced only with <paramref name="force"/>.
    /// </summary>
    public static TpmCa Import(string directory, string certificatePem, string privateKeyPem, bool force = false)
    {
        ArgumentNullException.ThrowIfNull(certificatePem);
        ArgumentNullException.ThrowIfNull(privateKeyPem);
        var cert = X509Certificate2.CreateFromPem(certificatePem);
        var signer = FileCertificateSigner.FromPem(privateKeyPem, "import");
        TpmCa check;
        try { check = new TpmCa(cert, signer, null); }
        catch { signer.Dispose(); throw; }
        check.Dispose();
        PrepareDirectory(directory, force);
        using (var s = FileCertificateSigner.FromPem(privateKeyPem)) s.Save(Path.Combine(directory, KeyFileName));
        Storage.PrivateFiles.WriteAllText(Path.Combine(directory, CertFileName), cert.ExportCertificatePem());
        return Load(directory);
    }

    /// <summary>The CA certificate as PEM (what devices and verifiers trust). Never the key.</summary>
    public string ExportCertificatePem() => Certificate.ExportCertificatePem();

    private static void PrepareDirectory(string directory, bool force)
    {
        Storage.PrivateFiles.CreateFolder(directory);
        if (Exists(directory) && !force)
            throw new InvalidOperationException($"A TPM CA already exists in '{directory}'; replace it only deliberately (force).");
    }

    /// <summary>
    /// Issues an AK certificate. The profile: v3, random positive 127-bit serial, subject CN=name + serialNumber=serial + O=vendor,
    /// basicConstraints cA=false and keyUsage digitalSignature (both critical), extendedKeyUsage tcg-kp-AIKCertificate,
    /// subject and authority key identifiers, and the non-critical private extensions <see cref="AkCertificateProfile.EkCertificateSha256Oid"/>
    /// and <see cref="AkCertificateProfile.DeviceVersionOid"/>.
    /// </summary>
    /// <exception cref="CertificateSignerTimeoutException">The signer took longer than <see cref="SignerTimeout"/>.</exception>
    public async Task<X509Certificate2> IssueAkCertificateAsync(AkCertificateRequest request, CancellationToken ct = default) =>
        X509CertificateLoader.LoadCertificate((await IssueAkCertificateDerAsync(request, ct).ConfigureAwait(false)).Der);

    /// <summary>
    /// <see cref="IssueAkCertificateAsync"/> without building an <see cref="X509Certificate2"/> (the server only needs the bytes):
    /// returns the DER certificate and its serial number as upper-case hex.
    /// </summary>
    public async Task<(byte[] Der, string SerialNumber)> IssueAkCertificateDerAsync(AkCertificateRequest request, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.EkCertificateSha256.Length != 32) throw new ArgumentException("The EK certificate fingerprint must be 32 bytes (SHA-256).", nameof(request));
        var subject = BuildSubject(request.DeviceName, request.Serial, request.Vendor);
        var spki = SubjectPublicKeyInfo.GetInstance(request.AkSubjectPublicKeyInfo);
        var ext = new X509ExtensionsGenerator();
        ext.AddExtension(X509Extensions.BasicConstraints, true, new BasicConstraints(false));
        ext.AddExtension(X509Extensions.KeyUsage, true, new KeyUsage(KeyUsage.DigitalSignature));
        ext.AddExtension(X509Extensions.ExtendedKeyUsage, false, new ExtendedKeyUsage(new[] { new DerObjectIdentifier(AkCertificateProfile.TcgKpAikCertificate) }));
        ext.AddExtension(X509Extensions.SubjectKeyIdentifier, false, new SubjectKeyIdentifier(KeyId(request.AkSubjectPublicKeyInfo)));
        ext.AddExtension(X509Extensions.AuthorityKeyIdentifier, false, new AuthorityKeyIdentifier(_caKeyId));
        ext.AddExtension(new DerObjectIdentifier(AkCertificateProfile.EkCertificateSha256Oid), false, new DerOctetString(request.EkCertificateSha256));
        ext.AddExtension(new DerObjectIdentifier(AkCertificateProfile.DeviceVersionOid), false, new DerUtf8String(request.Version));

        var now = DateTime.UtcNow;
        var notAfter = now.Add(request.Lifetime);
        var caEnd = Certificate.NotAfter.ToUniversalTime();
        if (notAfter > caEnd) notAfter = caEnd;
        var tbs = BuildTbs(_sigAlg, _issuer, subject, spki, now.AddMinutes(-5), notAfter, ext.Generate());
        var sig = await SignWithTimeoutAsync(tbs.GetDerEncoded(), ct).ConfigureAwait(false);
        var der = new X509CertificateStructure(tbs, _sigAlg, new DerBitString(sig)).GetDerEncoded();
        return (der, Convert.ToHexString(tbs.SerialNumber.Value.ToByteArrayUnsigned()));
    }

    private async Task<byte[]> SignWithTimeoutAsync(byte[] tbs, CancellationToken ct)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(SignerTimeout);
        try
        {
            // WaitAsync bounds the wait even for a signer that ignores its token (a hung HSM call).
            return await Signer.SignAsync(tbs, cts.Token).WaitAsync(SignerTimeout, ct).ConfigureAwait(false);
        }
        catch (TimeoutException ex)
        {
            throw new CertificateSignerTimeoutException($"The TPM CA signer ({Signer.Description}) did not answer within {SignerTimeout.TotalSeconds:0.#} s.", ex);
        }
        catch (OperationCanceledException ex) when (!ct.IsCancellationRequested)
        {
            throw new CertificateSignerTimeoutException($"The TPM CA signer ({Signer.Description}) did not answer within {SignerTimeout.TotalSeconds:0.#} s.", ex);
        }
    }

    /// <summary>The AK certificate subject: CN=name, serialNumber=serial (PrintableString when it fits, else UTF8String), O=vendor.</summary>
    internal static X509Name BuildSubject(string name, string serial, string vendor)
    {
        // The builder writes its RDNs in reverse order of the calls: DER order is O, serialNumber, CN (displayed CN first).
        var b = new X500DistinguishedNameBuilder();
        b.Add("2.5.4.3", name, UniversalTagNumber.UTF8String);
        b.Add(AkCertificateProfile.SerialNumberOid, serial, AkCertificateProfile.IsPrintableString(serial) ? UniversalTagNumber.PrintableString : UniversalTagNumber.UTF8String);
        b.Add("2.5.4.10", vendor, UniversalTagNumber.UTF8String);
        return X509Name.GetInstance(b.Build().RawData);
    }

    private static TbsCertificateStructure BuildTbs(AlgorithmIdentifier sigAlg, X509Name issuer, X509Name subject, SubjectPublicKeyInfo spki,
        DateTime notBefore, DateTime notAfter, X509Extensions extensions)
    {
        var serial = RandomNumberGenerator.GetBytes(16);
        serial[0] &= 0x7F;
        serial[0] |= 0x01; // positive, and always 16 bytes long
        var g = new V3TbsCertificateGenerator();
        g.SetSerialNumber(new DerInteger(new BcBigInteger(1, serial)));
        g.SetSignature(sigAlg);
        g.SetIssuer(issuer);
        g.SetStartDate(new Time(notBefore));
        g.SetEndDate(new Time(notAfter));
        g.SetSubject(subject);
        g.SetSubjectPublicKeyInfo(spki);
        g.SetExtensions(extensions);
        return g.GenerateTbsCertificate();
    }

    private static X509Certificate2 Assemble(TbsCertificateStructure tbs, AlgorithmIdentifier sigAlg, byte[] signature)
    {
        var der = new X509CertificateStructure(tbs, sigAlg, new DerBitString(signature)).GetDerEncoded();
        return X509CertificateLoader.LoadCertificate(der);
    }

    /// <summary>RFC 5280 method 1 key identifier: SHA-1 of the subjectPublicKey BIT STRING's bytes.</summary>
    internal static byte[] KeyId(byte[] spkiDer)
    {
        var spki = SubjectPublicKeyInfo.GetInstance(spkiDer);
        return SHA1.HashData(spki.PublicKey.GetBytes());
    }

    public void Dispose() => Signer.Dispose();
}
