using System.Formats.Asn1;
using Microsoft.Data.Sqlite;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Fixtures;

/// <summary>
/// A software TPM manufacturer: a root CA and an intermediate "EK CA" (as Infineon, ST and Nuvoton ship them) that issues
/// EK certificates for software EK keys. EK certificates carry an unknown critical extension, as real ones carry TCG's
/// critical subjectAltName, so chain checks must tolerate it.
/// </summary>
public sealed class TestManufacturer : IDisposable
{
    private readonly ECDsa _rootKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
    private readonly ECDsa _issuerKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);

    public TestManufacturer(string name = "Test TPM Manufacturer")
    {
        var now = DateTimeOffset.UtcNow;
        var rootReq = new CertificateRequest($"CN={name} Root CA, O={name}", _rootKey, HashAlgorithmName.SHA256);
        rootReq.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        rootReq.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        rootReq.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(rootReq.PublicKey, false));
        using (var r = rootReq.CreateSelfSigned(now.AddDays(-1), now.AddYears(20))) Root = X509CertificateLoader.LoadCertificate(r.RawData);

        var issReq = new CertificateRequest($"CN={name} EK CA 001, O={name}", _issuerKey, HashAlgorithmName.SHA256);
        issReq.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 0, true));
        issReq.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        issReq.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(issReq.PublicKey, false));
        issReq.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(Root, true, false));
        using var iss = issReq.Create(Root.SubjectName, X509SignatureGenerator.CreateForECDsa(_rootKey), now.AddDays(-1), now.AddYears(15), Serial());
        Issuer = X509CertificateLoader.LoadCertificate(iss.RawData);
    }

    public X509Certificate2 Root { get; }
    public X509Certificate2 Issuer { get; }

    private static byte[] Serial()
    {
        var s = RandomNumberGenerator.GetBytes(12);
        s[0] = (byte)((s[0] & 0x7F) | 1);
        return s;
    }

    /// <summary>An EK certificate for <paramref name="ekSpki"/> (no subject, like TCG's profile; critical unknown extension).</summary>
    public byte[] IssueEkCertificate(byte[] ekSpki, DateTimeOffset? notAfter = null)
    {
        var pk = PublicKey.CreateFromSubjectPublicKeyInfo(ekSpki, out _);
        var req = new CertificateRequest(new X500DistinguishedName("CN=TPM EK"), pk, HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyEncipherment, true));
        // Stands in for TCG's critical subjectAltName (TPM manufacturer, model, version), which .NET does not understand.
        var w = new AsnWriter(AsnEncodingRules.DER);
        w.WriteCharacterString(UniversalTagNumber.UTF8String, "id:54455354");
        req.CertificateExtensions.Add(new X509Extension("2.23.133.99.1", w.Encode(), true));
        req.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(Issuer, true, false));
        var now = DateTimeOffset.UtcNow;
        using var cert = req.Create(Issuer.SubjectName, X509SignatureGenerator.CreateForECDsa(_issuerKey), now.AddDays(-1), notAfter ?? now.AddYears(10), Serial());
        return cert.RawData;
    }

    public void Dispose()
    {
        _rootKey.Dispose();
        _issuerKey.Dispose();
        Root.Dispose();
        Issuer.Dispose();
    }
}

/// <summary>
/// A device whose "TPM" is software: an RSA-2048 EK with a certificate from a <see cref="TestManufacturer"/> and a software
/// AK with the module's AK template. It builds requests and opens responses like a real TPM would (software ActivateCredential).
/// </summary>
public sealed class SoftwareDevice : IDisposable
{
    public SoftwareDevice(TestManufacturer manufacturer, DeviceIdentity identity, bool eccAk = false)
    {
        Identity = identity;
        EkKey = RSA.Create(2048);
        EkPublic = TpmPublic.FromSubjectPublicKeyInfo(EkKey.ExportSubjectPublicKeyInfo(), TpmTemplates.EkRsa2048);
        EkCertificate = manufacturer.IssueEkCertificate(EkKey.ExportSubjectPublicKeyInfo());
        Ak = eccAk ? SoftwareAttestationKey.CreateEccP256() : SoftwareAttestationKey.CreateRsa();
    }

    public DeviceIdentity Identity { get; }
    public RSA EkKey { get; }
    public TpmPublic EkPublic { get; }
    public byte[] EkCertificate { get; set; }
    public SoftwareAttestationKey Ak { get; set; }

    /// <summary>SHA-256 of the EK certificate, upper-case hex.</summary>
    public string EkFingerprint => Convert.ToHexString(SHA256.HashData(EkCertificate));

    /// <summary>A well-formed request: AK as TPM2B_PUBLIC (or SPKI), CSR signed by the AK, PEM.</summary>
    public ProvisioningRequest Request(string apiKey, bool akAsSpki = false) => new()
    {
        ApiKey = apiKey,
        AkPubKey = Convert.ToBase64String(akAsSpki ? Ak.Public.ToSubjectPublicKeyInfo() : Ak.Public.ToTpm2B()),
        Csr = AkCsr.ToPem(AkCsr.Create(Ak.Public, Identity, m => Ak.Sign(m))),
        EkCert = Convert.ToBase64String(EkCertificate),
        EkPubKey = Convert.ToBase64String(EkKey.ExportSubjectPublicKeyInfo()),
        Device = new ProvisioningDevice { Name = Identity.Name, Serial = Identity.Serial, Vendor = Identity.Vendor, Version = Identity.Version },
    };

    /// <summary>Recovers the secret with the software EK and decrypts the AK certificate.</summary>
    public X509Certificate2 Open(ProvisioningResponse response)
    {
        var blob = Credential.FromTpm2ToolsFile(Convert.FromBase64String(response.CredentialBundle));
        var secret = Credential.ActivateWithSoftwareEk(EkPublic, EkKey, Ak.Name, blob.IdObject, blob.EncryptedSecret);
        var der = ProvisioningEnvelope.Open(secret, Convert.FromBase64String(response.EncryptedAkCert), Convert.FromBase64String(response.Nonce));
        return X509CertificateLoader.LoadCertificate(der);
    }

    public void Dispose()
    {
        EkKey.Dispose();
        Ak.Dispose();
    }
}

/// <summary>Everything a provisioning call may change, as text: records, bindings, keys (audit excluded: every call adds one).</summary>
public static class ProvisioningSnapshot
{
    public static async Task<string> TakeAsync(string dbPath)
    {
        using var conn = new SqliteConnection($"Data Source={dbPath};Mode=ReadOnly");
        await conn.OpenAsync();
        var parts = new List<string>();
        foreach (var sql in new[]
        {
            "SELECT COUNT(*) FROM manufacturing_records",
            "SELECT COUNT(*) FROM device_bindings",
            "SELECT group_concat(vendor || '/' || serial || '=' || ek_fingerprint, ';') FROM device_bindings",
            "SELECT group_concat(key_id || ':' || enabled || ':' || rate_per_minute || ':' || vendors, ';') FROM api_keys",
        })
        {
            using var cmd = conn.CreateCommand();
            cmd.CommandText = sql;
            parts.Add(Convert.ToString(await cmd.ExecuteScalarAsync()) ?? "");
        }
        return string.Join(" | ", parts);
    }
}
