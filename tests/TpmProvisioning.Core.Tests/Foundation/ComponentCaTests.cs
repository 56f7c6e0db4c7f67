using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using TpmProvisioning.Pki;

namespace TpmProvisioning.Tests.Foundation;

public sealed class ComponentCaTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("tpmprov-ca-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void CreatedOnceThenReloaded()
    {
        string thumb;
        using (var ca = ComponentCa.LoadOrCreate(_dir)) thumb = ca.Certificate.Thumbprint;
        using (var again = ComponentCa.LoadOrCreate(_dir)) Assert.Equal(thumb, again.Certificate.Thumbprint);
        Assert.DoesNotContain("PRIVATE", File.ReadAllText(Path.Combine(_dir, ComponentCa.CertFileName)));
    }

    [Fact]
    public void PrivateKeyFileIsOwnerOnly()
    {
        if (OperatingSystem.IsWindows()) return;
        using var ca = ComponentCa.LoadOrCreate(_dir);
        var mode = File.GetUnixFileMode(Path.Combine(_dir, ComponentCa.KeyFileName));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, mode);
    }

    [Fact]
    public void IssuedCertificatesChainAndForeignOnesDoNot()
    {
        using var ca = ComponentCa.LoadOrCreate(_dir);
        using var server = ca.IssueServerCertificate(["localhost"], [IPAddress.Loopback]);
        using var client = ca.IssueClientCertificate("tenant");
        Assert.True(server.HasPrivateKey);
        Assert.True(ca.Validates(server));
        Assert.True(ca.Validates(client));
        Assert.Contains(server.Extensions.OfType<X509SubjectAlternativeNameExtension>().Single().EnumerateIPAddresses(), a => a.Equals(IPAddress.Loopback));

        using var otherDir = new TempDir();
        using var other = ComponentCa.LoadOrCreate(otherDir.Path);
        using var foreign = other.IssueClientCertificate("tenant");
        Assert.False(ca.Validates(foreign));

        // Same subject, self-signed: a forged look-alike must not pass either.
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest(ca.Certificate.SubjectName, key, HashAlgorithmName.SHA256);
        using var lookalike = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        Assert.False(ca.Validates(lookalike));
    }

    private sealed class TempDir : IDisposable
    {
        public string Path { get; } = Directory.CreateTempSubdirectory("tpmprov-ca2-").FullName;
        public void Dispose() => Directory.Delete(Path, true);
    }
}
