using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using TpmProvisioning.Pki;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Provisioning;

public sealed class TpmCaTests : IDisposable
{
    private readonly TempDir _tmp = new();
    private string CaDir => _tmp["tpm-ca"];

    public void Dispose() => _tmp.Dispose();

    [Fact]
    public void CreateWritesACaCertificateAndAnOwnerOnlyP256Key()
    {
        using var ca = TpmCa.Create(CaDir);
        Assert.True(TpmCa.Exists(CaDir));
        Assert.Equal("CN=TpmProvisioning TPM CA, O=TpmProvisioning", ca.Certificate.Subject);
        Assert.True(ca.Certificate.Extensions.OfType<X509BasicConstraintsExtension>().Single().CertificateAuthority);
        using var ec = ca.Certificate.GetECDsaPublicKey()!;
        Assert.Equal(256, ec.KeySize);
        Assert.StartsWith("file:", ca.Signer.Description);
        if (!OperatingSystem.IsWindows())
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(CaDir, TpmCa.KeyFileName)));
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(CaDir));
        }
        // The self-signed certificate verifies under its own key.
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(ca.Certificate);
        Assert.True(chain.Build(ca.Certificate));
    }

    [Fact]
    public void LoadReturnsTheSameCaAndCreateRefusesToReplaceIt()
    {
        string thumb;
        using (var ca = TpmCa.Create(CaDir, "CN=Plant 7 TPM CA")) thumb = ca.Certificate.Thumbprint;
        using (var again = TpmCa.LoadOrCreate(CaDir)) Assert.Equal(thumb, again.Certificate.Thumbprint);
        Assert.Throws<InvalidOperationException>(() => TpmCa.Create(CaDir));
        using var replaced = TpmCa.Create(CaDir, force: true);
        Assert.NotEqual(thumb, replaced.Certificate.Thumbprint);
        Assert.Throws<FileNotFoundException>(() => TpmCa.Load(_tmp["nothing-here"]));
    }

    [Fact]
    public async Task ImportTakesAPemCaAndItsKeyAndRefusesMismatches()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP384);
        var req = new CertificateRequest("CN=Imported TPM CA", key, HashAlgorithmName.SHA384);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign, true));
        using var cert = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(5));
        using var otherKey = ECDsa.Create(ECCurve.NamedCurves.nistP384);

        Assert.Throws<CryptographicException>(() => TpmCa.Import(CaDir, cert.ExportCertificatePem(), otherKey.ExportPkcs8PrivateKeyPem()));
        Assert.False(TpmCa.Exists(CaDir)); // nothing written

        var leafReq = new CertificateRequest("CN=not a CA", key, HashAlgorithmName.SHA384);
        using var leaf = leafReq.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(1));
        Assert.Throws<CryptographicException>(() => TpmCa.Import(CaDir, leaf.ExportCertificatePem(), key.ExportPkcs8PrivateKeyPem()));

        using var ca = TpmCa.Import(CaDir, cert.ExportCertificatePem(), key.ExportECPrivateKeyPem());
        Assert.Equal(cert.Thumbprint, ca.Certificate.Thumbprint);
        Assert.DoesNotContain("PRIVATE", ca.ExportCertificatePem());
        Assert.Equal(cert.Thumbprint, X509Certificate2.CreateFromPem(ca.ExportCertificatePem()).Thumbprint);

        // It issues, with ECDSA-SHA384 for its P-384 key.
        using var ak = SoftwareAttestationKey.CreateEccP256();
        using var issued = await ca.IssueAkCertificateAsync(Request(ak));
        Assert.Equal("1.2.840.10045.4.3.3", issued.SignatureAlgorithm.Value);
        Assert.Throws<InvalidOperationException>(() => TpmCa.Import(CaDir, cert.ExportCertificatePem(), key.ExportPkcs8PrivateKeyPem()));
    }

    [Fact]
    public async Task AnRsaCaKeyIsSupported()
    {
        using var key = RSA.Create(2048);
        var req = new CertificateRequest("CN=RSA TPM CA", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        using var cert = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(5));
        using var ca = TpmCa.Import(CaDir, cert.ExportCertificatePem(), key.ExportRSAPrivateKeyPem());
        using var ak = SoftwareAttestationKey.CreateRsa();
        using var issued = await ca.IssueAkCertificateAsync(Request(ak));
        Assert.Equal("1.2.840.113549.1.1.11", issued.SignatureAlgorithm.Value);
        using var rsa = cert.GetRSAPublicKey()!;
        Assert.True(X509CertificateLoader.LoadCertificate(issued.RawData).Issuer == cert.Subject);
    }

    private static AkCertificateRequest Request(SoftwareAttestationKey ak, string serial = "SN-77") => new()
    {
        AkSubjectPublicKeyInfo = ak.Public.ToSubjectPublicKeyInfo(),
        DeviceName = "gateway-7",
        Serial = serial,
        Vendor = "Contoso",
        Version = "2.4.1",
        EkCertificateSha256 = SHA256.HashData("ek"u8),
    };

    [Fact]
    public async Task TheAkCertificateProfile()
    {
        using var ca = TpmCa.Create(CaDir);
        using var ak = SoftwareAttestationKey.CreateRsa();
        using var cert = await ca.IssueAkCertificateAsync(Request(ak) with { Lifetime = TimeSpan.FromDays(365 * 50) });
        Assert.Equal(3, cert.Version);
        Assert.Equal("CN=gateway-7, SERIALNUMBER=SN-77, O=Contoso", cert.Subject);
        Assert.Equal(ca.Certificate.Subject, cert.Issuer);
        Assert.Equal(16, cert.SerialNumberBytes.Length);
        Assert.True(cert.NotAfter <= ca.Certificate.NotAfter); // capped by the CA
        Assert.True(cert.NotBefore <= DateTime.Now);

        var bc = cert.Extensions.OfType<X509BasicConstraintsExtension>().Single();
        Assert.True(bc.Critical);
        Assert.False(bc.CertificateAuthority);
        var ku = cert.Extensions.OfType<X509KeyUsageExtension>().Single();
        Assert.True(ku.Critical);
        Assert.Equal(X509KeyUsageFlags.DigitalSignature, ku.KeyUsages);
        var eku = cert.Extensions.OfType<X509EnhancedKeyUsageExtension>().Single();
        Assert.False(eku.Critical);
        Assert.Equal(AkCertificateProfile.TcgKpAikCertificate, Assert.Single(eku.EnhancedKeyUsages.Cast<Oid>()).Value);
        Assert.NotNull(cert.Extensions.OfType<X509SubjectKeyIdentifierExtension>().SingleOrDefault());
        var aki = cert.Extensions.OfType<X509AuthorityKeyIdentifierExtension>().Single();
        Assert.Equal(ca.Certificate.Extensions.OfType<X509SubjectKeyIdentifierExtension>().Single().SubjectKeyIdentifierBytes.ToArray(), aki.KeyIdentifier!.Value.ToArray());

        var ek = cert.Extensions[AkCertificateProfile.EkCertificateSha256Oid]!;
        Assert.False(ek.Critical);
        Assert.Equal(SHA256.HashData("ek"u8), AkCertificateProfile.ReadEkCertificateSha256(cert));
        Assert.False(cert.Extensions[AkCertificateProfile.DeviceVersionOid]!.Critical);
        Assert.Equal("2.4.1", AkCertificateProfile.ReadDeviceVersion(cert));
        Assert.Equal(KeyIdentity.FromTpmPublic(ak.Public), KeyIdentity.FromSubjectPublicKeyInfo(cert.PublicKey.ExportSubjectPublicKeyInfo()));

        // Serials are random: two certificates never share one.
        using var second = await ca.IssueAkCertificateAsync(Request(ak));
        Assert.NotEqual(cert.SerialNumber, second.SerialNumber);
    }

    [Fact]
    public async Task SerialsOutsidePrintableStringAreUtf8InTheSubject()
    {
        using var ca = TpmCa.Create(CaDir);
        using var ak = SoftwareAttestationKey.CreateEccP256();
        using var cert = await ca.IssueAkCertificateAsync(Request(ak, "SN_ü#1"));
        Assert.Equal("SN_ü#1", AkCertificateProfile.ReadSubjectSerial(cert));
    }
}

public sealed class EkTrustStoreTests : IDisposable
{
    private readonly TempDir _tmp = new();
    private readonly TestManufacturer _m = new();

    public void Dispose()
    {
        _m.Dispose();
        _tmp.Dispose();
    }

    private byte[] EkCert(out RSA key)
    {
        key = RSA.Create(2048);
        return _m.IssueEkCertificate(key.ExportSubjectPublicKeyInfo());
    }

    [Fact]
    public void AnEkCertificateChainsThroughTheIntermediateToTheRoot()
    {
        var der = EkCert(out var key);
        key.Dispose();
        using var cert = X509CertificateLoader.LoadCertificate(der);
        var ok = new EkTrustStore([_m.Root], [_m.Issuer]).Validate(cert);
        Assert.True(ok.Trusted, ok.Problem);
        Assert.Equal(_m.Root.Thumbprint, ok.Root!.Thumbprint);

        var noIntermediate = new EkTrustStore([_m.Root]).Validate(cert);
        Assert.False(noIntermediate.Trusted);
        Assert.Equal("does not chain to a trusted TPM manufacturer root", noIntermediate.Problem);

        // An intermediate is never a trust anchor by itself.
        Assert.False(new EkTrustStore([], [_m.Issuer, _m.Root]).Validate(cert).Trusted);
        Assert.False(new EkTrustStore([_m.Issuer]).Validate(cert).Trusted);
        Assert.Equal("no trusted TPM manufacturer root is configured", new EkTrustStore([]).Validate(cert).Problem);

        // A CA certificate is not an EK certificate even if it chains.
        Assert.Equal("is a CA certificate, not an EK certificate", new EkTrustStore([_m.Root], [_m.Issuer]).Validate(_m.Issuer).Problem);
    }

    [Fact]
    public void ACertificateWithAForgedSignatureDoesNotChain()
    {
        var der = EkCert(out var key);
        key.Dispose();
        der[^3] ^= 1;
        using var cert = X509CertificateLoader.LoadCertificate(der);
        var r = new EkTrustStore([_m.Root], [_m.Issuer]).Validate(cert);
        Assert.False(r.Trusted);
    }

    [Fact]
    public void FolderManagementAddsListsAndRemoves()
    {
        var data = _tmp.Path;
        var root = EkTrustStore.Add(data, _m.Root, EkTrustKind.Root);
        Assert.Equal(EkTrustKind.Root, root.Kind);
        Assert.Equal(_m.Root.GetCertHashString(HashAlgorithmName.SHA256), root.Thumbprint);
        Assert.StartsWith(TpmProvisioning.Provisioning.ProvisioningPaths.EkRoots(data), root.Path);
        Assert.Equal(root, EkTrustStore.Add(data, _m.Root, EkTrustKind.Root)); // idempotent
        Assert.Throws<ArgumentException>(() => EkTrustStore.Add(data, _m.Issuer, EkTrustKind.Root)); // not self-signed
        var der = EkCert(out var key);
        key.Dispose();
        using var leaf = X509CertificateLoader.LoadCertificate(der);
        Assert.Throws<ArgumentException>(() => EkTrustStore.Add(data, leaf, EkTrustKind.Intermediate)); // not a CA
        EkTrustStore.Add(data, _m.Issuer, EkTrustKind.Intermediate);

        var list = EkTrustStore.List(data);
        Assert.Equal([EkTrustKind.Root, EkTrustKind.Intermediate], list.Select(e => e.Kind));
        var store = EkTrustStore.Load(TpmProvisioning.Provisioning.ProvisioningPaths.EkRoots(data), TpmProvisioning.Provisioning.ProvisioningPaths.EkIntermediates(data));
        Assert.True(store.Validate(leaf).Trusted);

        Assert.True(EkTrustStore.Remove(data, list[1].Thumbprint.ToLowerInvariant()));
        Assert.False(EkTrustStore.Remove(data, list[1].Thumbprint));
        Assert.Single(EkTrustStore.List(data));
    }

    [Fact]
    public void FoldersTakePemBundlesAndDerFiles()
    {
        var roots = _tmp["roots"];
        var inter = _tmp["inter"];
        Directory.CreateDirectory(roots);
        Directory.CreateDirectory(inter);
        File.WriteAllBytes(Path.Combine(roots, "vendor.cer"), _m.Root.RawData);
        using var other = new TestManufacturer("Other Fab");
        File.WriteAllText(Path.Combine(inter, "bundle.pem"), _m.Issuer.ExportCertificatePem() + "\n" + other.Issuer.ExportCertificatePem());
        File.WriteAllText(Path.Combine(inter, "README.txt"), "ignored");
        var s = EkTrustStore.Load(roots, inter);
        Assert.Single(s.Roots);
        Assert.Equal(2, s.Intermediates.Count);
    }

    [Fact]
    public void LiveAnchorsPickUpARootAddedWhileRunning()
    {
        var data = _tmp.Path;
        var anchors = new EkTrustAnchors(TpmProvisioning.Provisioning.ProvisioningPaths.EkRoots(data), TpmProvisioning.Provisioning.ProvisioningPaths.EkIntermediates(data))
        {
            RefreshInterval = TimeSpan.Zero,
        };
        var der = EkCert(out var key);
        key.Dispose();
        using var leaf = X509CertificateLoader.LoadCertificate(der);
        Assert.False(anchors.Current.Validate(leaf).Trusted);
        EkTrustStore.Add(data, _m.Root, EkTrustKind.Root);
        EkTrustStore.Add(data, _m.Issuer, EkTrustKind.Intermediate);
        Assert.True(anchors.Current.Validate(leaf).Trusted);
        EkTrustStore.Remove(data, _m.Root.GetCertHashString(HashAlgorithmName.SHA256));
        Assert.False(anchors.Current.Validate(leaf).Trusted);
    }
}
