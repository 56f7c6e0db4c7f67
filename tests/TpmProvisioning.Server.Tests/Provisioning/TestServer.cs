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
        foreach (var (root, issuer) in manufacturers)
        {
            EkTrustStore.Add(s.DataPath, root, EkTrustKind.Root);
            if (issuer is not null) EkTrustStore.Add(s.DataPath, issuer, EkTrustKind.Intermediate);
        }
        var o = new ServerOptions { DataPath = s.DataPath, Port = 0, Roles = ServerRole.Provisioning };
        configure?.Invoke(o);
        s.Host = await ProvisioningServerHost.StartAsync(o);
        s.Store = await SqliteStore.OpenInDataPathAsync(s.DataPath);
        s.Key = await new ApiKeyManager(s.Store).CreateAsync("plant-1", ["Contoso"]);
        s.ServerCa = X509Certificate2.CreateFromPem(File.ReadAllText(s.Host.Info.CaCertificatePath!));
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
    public async Task<string> SnapshotAsync()
    {
        using var conn = new SqliteConnection($"Data Source={DbPath};Mode=ReadOnly");
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

    public async Task<int> AuditCountAsync() =>
        (await Store.QueryAuditAsync(new AuditQuery { Action = ProvisioningService.AuditAction, Limit = 100000 })).Count;

    public async ValueTask DisposeAsync()
    {
        Http?.Dispose();
        if (Host is not null) await Host.StopAsync();
        Store?.Dispose();
        SqliteConnection.ClearAllPools();
        try { Directory.Delete(DataPath, true); } catch (IOException) { }
    }
}

public static class ProvisioningRoutes
{
    public const string Spec = "/api/tpm/tpm/provision";
    public static string Namespaced(string ns) => $"/api/v1/namespaces/{ns}/api/tpm/tpm/provision";
}
