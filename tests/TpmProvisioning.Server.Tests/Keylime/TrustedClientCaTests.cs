using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Server.Hosting;

namespace TpmProvisioning.Tests.Keylime;

/// <summary>
/// A site's existing Keylime: client certificates from another CA (RSA like Keylime's <c>cv_ca</c>, or ECDSA; no role OID,
/// often no extended key usage) act in the roles configured for that CA, never more; the components CA may itself be RSA; a
/// the verifier's <c>bulk</c> works as Keylime's tenant sends it.
/// </summary>
public sealed class TrustedClientCaTests : IAsyncDisposable
{
    private readonly List<IServerHost> hosts = [];
    private readonly List<string> paths = [];

    public async ValueTask DisposeAsync()
    {
        foreach (var h in hosts) await h.StopAsync();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        foreach (var p in paths) try { Directory.Delete(p, true); } catch (IOException) { }
    }

    /// <summary>A CA as Keylime's ca_impl_openssl makes it: RSA 2048 or ECDSA P-256, CA:TRUE.</summary>
    internal static (X509Certificate2 Cert, AsymmetricAlgorithm Key) MakeCa(string name, bool rsa)
    {
        AsymmetricAlgorithm key = rsa ? RSA.Create(2048) : ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = key is RSA r ? new CertificateRequest("CN=" + name, r, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1)
            : new CertificateRequest("CN=" + name, (ECDsa)key, HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign | X509KeyUsageFlags.DigitalSignature, true));
        req.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(req.PublicKey, false));
        var cert = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddYears(1));
        return (cert, key);
    }

    /// <summary>A leaf from <paramref name="ca"/>: Keylime's client certificates carry no extended key usage (<paramref name="eku"/> null).</summary>
    internal static X509Certificate2 Issue((X509Certificate2 Cert, AsymmetricAlgorithm Key) ca, string name, params string[]? eku)
    {
        using var key = RSA.Create(2048);
        var req = new CertificateRequest("CN=" + name, key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        if (eku is { Length: > 0 })
        {
            var oids = new OidCollection();
            foreach (var o in eku) oids.Add(new Oid(o));
            req.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(oids, false));
        }
        req.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca.Cert, true, false));
        var gen = ca.Key is RSA r ? X509SignatureGenerator.CreateForRSA(r, RSASignaturePadding.Pkcs1) : X509SignatureGenerator.CreateForECDsa((ECDsa)ca.Key);
        var serial = RandomNumberGenerator.GetBytes(12);
        serial[0] &= 0x7F;
        using var cert = req.Create(ca.Cert.SubjectName, gen, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddMonths(6), serial);
        using var withKey = cert.CopyWithPrivateKey(key);
        return X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null);
    }

    private async Task<IServerHost> StartAsync(ServerRole role, params TrustedClientCa[] trusted)
    {
        var path = Directory.CreateTempSubdirectory("tpmprov-trust-").FullName;
        paths.Add(path);
        var host = await ProvisioningServerHost.StartAsync(new ServerOptions { DataPath = path, Port = 0, Roles = role, TrustedClientCas = [.. trusted] });
        hosts.Add(host);
        return host;
    }

    private static async Task<(HttpStatusCode Status, JsonElement Body)> CallAsync(IServerHost host, HttpMethod method, string path, X509Certificate2? client)
    {
        var ca = X509Certificate2.CreateFromPem(File.ReadAllText(host.Info.CaCertificatePath!));
        using var http = KeylimeTestServer.Client(ca, client);
        using var resp = await http.SendAsync(new HttpRequestMessage(method, host.Info.Urls[0] + path));
        var text = await resp.Content.ReadAsStringAsync();
        return (resp.StatusCode, text.Length == 0 ? default : JsonDocument.Parse(text).RootElement.Clone());
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ClientCertificatesOfATrustedCaActInItsRolesOnly(bool rsa)
    {
        var site = MakeCa("Keylime Certificate Authority", rsa);
        var registrar = await StartAsync(ServerRole.Registrar, new TrustedClientCa(site.Cert, ClientRole.Kms));
        var tenantish = Issue(site, "client");

        // The Kms role may read but not delete; a certificate without any EKU counts as clientAuth (RFC 5280).
        Assert.Equal(HttpStatusCode.OK, (await CallAsync(registrar, HttpMethod.Get, "/v2.1/agents/", tenantish)).Status);
        var (del, delBody) = await CallAsync(registrar, HttpMethod.Delete, "/v2.1/agents/d432fbb3-d2f1-4a97-9ef7-75bd81c00000", tenantish);
        Assert.Equal(HttpStatusCode.Forbidden, del);
        Assert.Equal(403, delBody.GetProperty("code").GetInt32());

        // Granted Tenant: it may delete (404: no such agent, past the certificate check).
        var registrar2 = await StartAsync(ServerRole.Registrar, new TrustedClientCa(site.Cert, ClientRole.Tenant));
        Assert.Equal(HttpStatusCode.NotFound, (await CallAsync(registrar2, HttpMethod.Delete, "/v2.1/agents/d432fbb3-d2f1-4a97-9ef7-75bd81c00000", tenantish)).Status);
        // A server certificate of that CA (serverAuth only) is no client.
        var server = Issue(site, "server", "1.3.6.1.5.5.7.3.1");
        Assert.Equal(HttpStatusCode.Forbidden, (await CallAsync(registrar2, HttpMethod.Get, "/v2.1/agents/", server)).Status);
        // The components CA's own server certificate never gains the trusted CA's roles.
        using (var own = ComponentCa.LoadOrCreate(Path.Combine(registrar2.Info.DataPath, "ca")))
        {
            Assert.Equal(ClientRole.None, own.TrustedClientRoles(X509Certificate2.CreateFromPem(File.ReadAllText(Path.Combine(registrar2.Info.DataPath, "ca", "cacert.pem")))));
            own.TrustClientCa(site.Cert, ClientRole.Tenant);
            using var ownServer = own.IssueServerCertificate(["localhost"], [IPAddress.Loopback]);
            Assert.Equal(ClientRole.None, own.ClientRolesOf(ownServer));
            Assert.Equal(ClientRole.Tenant, own.ClientRolesOf(tenantish));
        }
        // Not a CA: refused when configured.
        using (var any = ComponentCa.LoadOrCreate(Path.Combine(registrar2.Info.DataPath, "ca")))
            Assert.Throws<ArgumentException>(() => any.TrustClientCa(tenantish, ClientRole.Tenant));
    }

    [Fact]
    public async Task AnRsaComponentsCaIsImportedAndIssuesTheServersCertificates()
    {
        var path = Directory.CreateTempSubdirectory("tpmprov-rsaca-").FullName;
        paths.Add(path);
        var (caCert, _) = MakeCa("Keylime Certificate Authority", rsa: true);
        Assert.NotNull(caCert.GetRSAPrivateKey());
        ComponentCertificates.ImportCa(path, caCert);
        var host = await ProvisioningServerHost.StartAsync(new ServerOptions { DataPath = path, Port = 0, Roles = ServerRole.Registrar });
        hosts.Add(host);
        using (var ca = ComponentCa.LoadOrCreate(Path.Combine(path, "ca")))
        {
            Assert.Equal(caCert.Thumbprint, ca.Certificate.Thumbprint);
            using var tenant = ca.IssueClientCertificate("tenant", role: ClientRole.Tenant);
            Assert.True(ca.Validates(tenant));
            Assert.Equal(HttpStatusCode.OK, (await CallAsync(host, HttpMethod.Get, "/v2.1/agents/", tenant)).Status);
        }
        // A CA without its private key cannot be imported.
        Assert.Throws<ArgumentException>(() => ComponentCertificates.ImportCa(path, X509CertificateLoader.LoadCertificate(caCert.RawData)));
    }

    [Fact]
    public async Task TheVerifierAnswersBulkWheneverItIsPresent()
    {
        var verifier = await StartAsync(ServerRole.Verifier);
        using var ca = ComponentCa.LoadOrCreate(Path.Combine(verifier.Info.DataPath, "ca"));
        using var tenant = ca.IssueClientCertificate("tenant", role: ClientRole.Tenant);
        foreach (var q in new[] { "?bulk=True&verifier=default", "?bulk", "?bulk=1", "?bulk=0" })
        {
            var (st, body) = await CallAsync(verifier, HttpMethod.Get, "/v2.5/agents/" + q, tenant);
            Assert.Equal(HttpStatusCode.OK, st);
            Assert.False(body.GetProperty("results").TryGetProperty("uuids", out _), q);
        }
        var (_, list) = await CallAsync(verifier, HttpMethod.Get, "/v2.5/agents/", tenant);
        Assert.True(list.GetProperty("results").TryGetProperty("uuids", out _));
        var (_, other) = await CallAsync(verifier, HttpMethod.Get, "/v2.5/agents/?verifier=elsewhere", tenant);
        Assert.Empty(other.GetProperty("results").GetProperty("uuids").EnumerateArray());
    }
}
