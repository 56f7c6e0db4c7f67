using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using Microsoft.Data.Sqlite;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Server.Hosting;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Tests.Provisioning;

/// <summary>
/// A real server (HTTPS on a free loopback port, roles = provisioning) in a scratch data path, trusting the given TPM
/// manufacturers, with one API key (vendor Contoso) and a client that trusts only the server's own CA.
/// </summary>
public sealed class TestServer : IAsyncDisposable
{
    private TestServer() { }

    public string DataPath { get; } = Directory.CreateTempSubdirectory("tpmprov-srv-").FullName;
    public IServerHost Host { get; private set; } = null!;
    public string Url => Host.Info.Urls[0];
    /// <summary>A second store on the server's database, as an admin session would open it.</summary>
    public SqliteStore Store { get; private set; } = null!;
    public NewApiKey Key { get; private set; } = null!;
    public HttpClient Http { get; private set; } = null!;
    public X509Certificate2 ServerCa { get; private set; } = null!;
    public X509Certificate2 TpmCa { get; private set; } = null!;
    public string DbPath => Path.Combine(DataPath, SqliteStore.DefaultFileName);

    public static async Task<TestServer> StartAsync(IEnumerable<(X509Certificate2 Root, X509Certificate2? Issuer)> manufacturers, Action<ServerOptions>? configure = null)
    {
        var s = new TestServer();
        (s.Host, s.Store, s.ServerCa) = await ScratchServer.StartAsync(s.DataPath, manufacturers, ServerRole.Provisioning, configure);
        s.Key = await new ApiKeyManager(s.Store).CreateAsync("plant-1", ["Contoso"]);
        s.TpmCa = X509Certificate2.CreateFromPem(File.ReadAllText(Path.Combine(ProvisioningPaths.TpmCa(s.DataPath), Pki.TpmCa.CertFileName)));
        s.Http = TrustingClient(s.ServerCa);
        return s;
    }

    public static HttpClient TrustingClient(X509Certificate2 ca) => Keylime.KeylimeTestServer.Client(ca, null);

    /// <summary>Posts <paramref name="json"/> to <paramref name="path"/> (default: the spec's route).</summary>
    public async Task<(HttpStatusCode Status, string Body, HttpResponseHeaders Headers)> PostAsync(string json, string path = ProvisioningRoutes.Spec, string? authorization = null)
    {
        using var req = new HttpRequestMessage(HttpMethod.Post, Url + path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        if (authorization is not null) req.Headers.TryAddWithoutValidation("Authorization", authorization);
        using var resp = await Http.SendAsync(req);
        return (resp.StatusCode, await resp.Content.ReadAsStringAsync(), resp.Headers);
    }

    public Task<(HttpStatusCode Status, string Body, HttpResponseHeaders Headers)> PostAsync(ProvisioningRequest request, string path = ProvisioningRoutes.Spec, string? authorization = null) =>
        PostAsync(JsonSerializer.Serialize(request, ProvisioningJsonContext.Default.ProvisioningRequest), path, authorization);

    /// <summary>Records, bindings and keys as text (audit excluded: every call adds one entry).</summary>
    public Task<string> SnapshotAsync() => Fixtures.ProvisioningSnapshot.TakeAsync(DbPath);

    public async Task<int> AuditCountAsync() =>
        (await Store.QueryAuditAsync(new AuditQuery { Action = ProvisioningService.AuditAction, Limit = 100000 })).Count;

    public async ValueTask DisposeAsync()
    {
        Http?.Dispose();
        await ScratchServer.StopAsync(Host, Store, DataPath);
    }
}

public static class ProvisioningRoutes
{
    public const string Spec = "/api/tpm/tpm/provision";
    public static string Namespaced(string ns) => $"/api/v1/namespaces/{ns}/api/tpm/tpm/provision";
}
