using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tpm;
using TpmProvisioning.Tpm.Simulator;

namespace TpmProvisioning.Tests.Device;

public class EkTests(SwtpmFixture tpm) : IClassFixture<SwtpmFixture>
{
    private TpmObject CreateAndFlush(EkKind kind)
    {
        using var dev = tpm.Open();
        var ek = dev.CreateEk(kind);
        dev.FlushContext(ek.Handle);
        return ek;
    }

    [Theory]
    [InlineData("rsa", EkKind.Rsa2048)]
    [InlineData("ecc", EkKind.EccP256)]
    public void EkPublicAreaEqualsTpm2CreateEk(string alg, EkKind kind)
    {
        var ours = CreateAndFlush(kind);
        using var tmp = new TempDir();
        tpm.Tools("tpm2_createek", "-G", alg, "-c", tmp["ek.ctx"], "-u", tmp["ek.pub"]);
        var tpm2b = File.ReadAllBytes(tmp["ek.pub"]);
        Assert.Equal(tpm2b.AsSpan(2).ToArray(), ours.PublicBytes);
        Assert.Equal(TpmPublic.ParseTpm2B(tpm2b).ComputeName(), ours.Name);
        Assert.Equal(ours.Public.ComputeName(), ours.Name);
    }

    [Fact]
    public void LowRangeRsaEkIsTheOneSwtpmSetupPersisted()
    {
        using var dev = tpm.Open();
        var ek = dev.CreateEk(EkKind.Rsa2048);
        dev.FlushContext(ek.Handle);
        var persisted = dev.ReadPublic(SwtpmInstance.PersistentRsaEk).Object;
        Assert.Equal(persisted.Name, ek.Name);
    }

    [Fact]
    public void HighRangeP384EkIsTheOneSwtpmSetupPersisted()
    {
        using var dev = tpm.Open();
        var ek = dev.CreateEk(EkKind.EccP384High);
        dev.FlushContext(ek.Handle);
        var persisted = dev.ReadPublic(SwtpmInstance.PersistentEccEk).Object;
        Assert.Equal(persisted.Name, ek.Name);
        Assert.Equal(TpmTemplates.PolicyBSha384, ek.Public.AuthPolicy);
    }

    [Fact]
    public void RsaEkCertificateFromNvParsesAndCarriesTheEkKey()
    {
        using var dev = tpm.Open();
        var der = dev.ReadEkCertificateDer(EkKind.Rsa2048)!;
        var nvSize = dev.NvReadPublic(TpmHandle.NvEkCertRsa2048).DataSize;
        Assert.True(der.Length <= nvSize);
        using var cert = dev.ReadEkCertificate(EkKind.Rsa2048)!;
        Assert.Equal(der, cert.RawData);
        var ek = dev.CreateEk(EkKind.Rsa2048);
        dev.FlushContext(ek.Handle);
        using var rsa = cert.GetRSAPublicKey()!;
        Assert.Equal(ek.Public.Modulus, rsa.ExportParameters(false).Modulus);
        Assert.Equal(ek.Public.ToSubjectPublicKeyInfo(), cert.PublicKey.ExportSubjectPublicKeyInfo());
    }

    [Fact]
    public void EccP384EkCertificateCarriesTheHighRangeEkKey()
    {
        using var dev = tpm.Open();
        using var cert = dev.ReadEkCertificate(EkKind.EccP384High)!;
        var ek = dev.CreateEk(EkKind.EccP384High);
        dev.FlushContext(ek.Handle);
        Assert.Null(cert.GetECDsaPublicKey()); // key usage is keyAgreement only: .NET gives the key as ECDH
        using var ecdh = cert.GetECDiffieHellmanPublicKey()!;
        var q = ecdh.ExportParameters(false).Q;
        Assert.Equal(ek.Public.X, q.X);
        Assert.Equal(ek.Public.Y, q.Y);
    }

    [Fact]
    public void MissingEkCertificateIndexReturnsNull()
    {
        using var dev = tpm.Open();
        Assert.Null(dev.ReadEkCertificateDer(EkKind.EccP256));
        Assert.Null(dev.ReadEkCertificate(EkKind.Rsa2048High));
    }

    [Fact]
    public void EkCertificateChainsToTheSwtpmManufacturerRoot()
    {
        using var dev = tpm.Open();
        using var cert = dev.ReadEkCertificate(EkKind.Rsa2048)!;
        using var root = X509Certificate2.CreateFromPem(File.ReadAllText(tpm.Swtpm.ManufacturerRootPath));
        using var issuer = X509Certificate2.CreateFromPem(File.ReadAllText(tpm.Swtpm.ManufacturerIssuerPath));
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(root);
        chain.ChainPolicy.ExtraStore.Add(issuer);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        // EK certificates carry TCG-specific critical extensions (subjectAltName with TPM attributes) .NET does not know.
        chain.ChainPolicy.VerificationFlags = X509VerificationFlags.IgnoreWrongUsage | X509VerificationFlags.IgnoreInvalidPolicy;
        chain.Build(cert);
        Assert.Equal(3, chain.ChainElements.Count);
        Assert.Equal(root.Thumbprint, chain.ChainElements[^1].Certificate.Thumbprint);
        Assert.DoesNotContain(chain.ChainStatus, s => s.Status is X509ChainStatusFlags.NotSignatureValid or X509ChainStatusFlags.UntrustedRoot or X509ChainStatusFlags.PartialChain);
    }

    [Fact]
    public void DerLengthTrimsPaddedNvData()
    {
        Assert.Equal(2 + 0x10, TpmDevice.DerTotalLength([0x30, 0x10]));
        Assert.Equal(4 + 0x0312, TpmDevice.DerTotalLength([0x30, 0x82, 0x03, 0x12, 0xFF, 0xFF]));
        Assert.Throws<TpmFormatException>(() => TpmDevice.DerTotalLength([0xFF, 0xFF, 0xFF]));
    }
}
