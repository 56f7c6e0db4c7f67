using System.Net;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using Microsoft.Data.Sqlite;
using TpmProvisioning.Attestation;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Server.Hosting;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Tests.Keylime;

/// <summary>
/// A real HTTPS server on a free loopback port hosting Keylime roles, in a scratch data path, trusting the given TPM
/// manufacturers; an anonymous client (trusts the server's CA, no client certificate) and a tenant client (with a
/// components-CA client certificate).
/// </summary>
public sealed class KeylimeTestServer : IAsyncDisposable
{
    private KeylimeTestServer() { }

    public string DataPath { get; } = Directory.CreateTempSubdirectory("tpmprov-kl-").FullName;
    public IServerHost Host { get; private set; } = null!;
    public string Url => Host.Info.Urls[0];
    public SqliteStore Store { get; private set; } = null!;
    public X509Certificate2 ServerCa { get; private set; } = null!;
    public X509Certificate2 TenantCertificate { get; private set; } = null!;
    /// <summary>No client certificate.</summary>
    public HttpClient Anonymous { get; private set; } = null!;
    /// <summary>With the tenant's client certificate.</summary>
    public HttpClient Tenant { get; private set; } = null!;
    public string DbPath => Path.Combine(DataPath, "tpmprovisioning.db");

    public static async Task<KeylimeTestServer> StartAsync(IEnumerable<(X509Certificate2 Root, X509Certificate2? Issuer)> manufacturers, Action<ServerOptions>? configure = null)
    {
        var s = new KeylimeTestServer();
        (s.Host, s.Store, s.ServerCa) = await ScratchServer.StartAsync(s.DataPath, manufacturers, ServerRole.Registrar, configure);
        using (var ca = ComponentCa.LoadOrCreate(Path.Combine(s.DataPath, "ca")))
            s.TenantCertificate = ca.IssueClientCertificate("tenant");
        s.Anonymous = Client(s.ServerCa, null);
        s.Tenant = Client(s.ServerCa, s.TenantCertificate);
        return s;
    }

    public RegistrarClient RegistrarClient(bool tenant = false) => new(new RegistrarClientOptions
    {
        Registrar = new Uri(Url),
        CaCertificate = ServerCa,
        ClientCertificate = tenant ? TenantCertificate : null,
    });

    public static HttpClient Client(X509Certificate2 ca, X509Certificate2? clientCert) => new(new SocketsHttpHandler
    {
        SslOptions = new SslClientAuthenticationOptions
        {
            LocalCertificateSelectionCallback = clientCert is null ? null : (_, _, _, _, _) => clientCert,
            RemoteCertificateValidationCallback = (_, cert, _, errors) => PinnedCaTls.Validates(ca, cert, errors),
        },
    }) { Timeout = TimeSpan.FromSeconds(60) };

    public async Task<(HttpStatusCode Status, JsonElement Body)> SendAsync(HttpMethod method, string path, string? json = null, bool tenant = false)
    {
        using var req = new HttpRequestMessage(method, Url + path);
        if (json is not null) req.Content = new StringContent(json, Encoding.UTF8, "application/json");
        using var resp = await (tenant ? Tenant : Anonymous).SendAsync(req);
        var text = await resp.Content.ReadAsStringAsync();
        if (resp.StatusCode == HttpStatusCode.InternalServerError)
            throw new InvalidOperationException("server error: " + string.Join("\n", Host.RecentLog(5).Select(e => e.Message + " " + e.Exception)));
        return (resp.StatusCode, text.Length == 0 ? default : JsonDocument.Parse(text).RootElement.Clone());
    }

    /// <summary>The registrar table as text (audit excluded).</summary>
    public async Task<string> SnapshotAsync()
    {
        using var conn = new SqliteConnection($"Data Source={DbPath};Mode=ReadOnly");
        await conn.OpenAsync();
        using var cmd = conn.CreateCommand();
        cmd.CommandText = "SELECT COUNT(*) || ':' || COALESCE(group_concat(agent_id || '/' || regcount || '/' || active || '/' || hex(aik_tpm) || '/' || hex(ek_tpm), ';'), '') FROM (SELECT * FROM registrar_agents ORDER BY agent_id)";
        return Convert.ToString(await cmd.ExecuteScalarAsync()) ?? "";
    }

    /// <summary>
    /// The spec's registration example with its <c>mtls_cert</c> placeholder (<c>-----BEGIN CERTIFICATE----- (...) -----END CERTIFICATE-----</c>)
    /// filled in by a real certificate: the registrar parses the certificate, as the verifier does, and refuses the placeholder.
    /// </summary>
    public static string RegistrationExample()
    {
        var body = System.Text.Json.Nodes.JsonNode.Parse(Seed("registrar-post-agent.request.json"))!.AsObject();
        using var key = System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256);
        using var cert = new System.Security.Cryptography.X509Certificates.CertificateRequest("CN=keylime-agent", key, System.Security.Cryptography.HashAlgorithmName.SHA256)
            .CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddYears(1));
        body["mtls_cert"] = cert.ExportCertificatePem();
        return body.ToJsonString();
    }

    /// <summary>The repository's seeds/keylime folder (contract fixtures from the spec).</summary>
    public static string Seed(string name)
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            var p = Path.Combine(d.FullName, "seeds", "keylime", name);
            if (File.Exists(p)) return File.ReadAllText(p);
        }
        throw new FileNotFoundException("seed not found: " + name);
    }

    public async ValueTask DisposeAsync()
    {
        Anonymous?.Dispose();
        Tenant?.Dispose();
        await ScratchServer.StopAsync(Host, Store, DataPath);
    }
}
