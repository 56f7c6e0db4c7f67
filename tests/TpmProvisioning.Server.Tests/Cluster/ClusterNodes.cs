using System.Net;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Server.Hosting;
using TpmProvisioning.Tests.Keylime;

namespace TpmProvisioning.Tests.Cluster;

/// <summary>
/// Several real servers (Kestrel, TLS) in this process sharing one PostgreSQL database, each with a data path of its own and
/// one components CA between them (copied, as a cluster's nodes share one CA), and a tenant client certificate from it.
/// </summary>
public sealed class ClusterNodes : IAsyncDisposable
{
    private readonly List<string> _dirs = [];

    public List<ProvisioningServerHost> Hosts { get; } = [];
    public X509Certificate2 Ca { get; private set; } = null!;
    public HttpClient Tenant { get; private set; } = null!;
    public HttpClient Anonymous { get; private set; } = null!;
    public string ConnectionString { get; }

    public ClusterNodes(string connectionString) => ConnectionString = connectionString;

    /// <summary>Starts a node; <paramref name="prepare"/> runs on its data path before start (trust anchors).</summary>
    public async Task<ProvisioningServerHost> StartAsync(ServerRole roles, Action<ServerOptions>? configure = null, Action<string>? prepare = null)
    {
        var dir = Directory.CreateTempSubdirectory("tpmprov-node-").FullName;
        _dirs.Add(dir);
        if (_dirs.Count > 1) CopyFolder(Path.Combine(_dirs[0], "ca"), Path.Combine(dir, "ca"));
        prepare?.Invoke(dir);
        var o = new ServerOptions { DataPath = dir, Port = 0, Roles = roles, StoreConnectionString = ConnectionString, LogLevel = LogLevelName.Information, ShutdownTimeout = TimeSpan.FromSeconds(5) };
        configure?.Invoke(o);
        var host = (ProvisioningServerHost)await ProvisioningServerHost.StartAsync(o);
        Hosts.Add(host);
        if (Hosts.Count == 1)
        {
            Ca = X509Certificate2.CreateFromPem(File.ReadAllText(host.Info.CaCertificatePath!));
            using var ca = ComponentCa.LoadOrCreate(Path.Combine(dir, "ca"));
            Tenant = KeylimeTestServer.Client(Ca, ca.IssueClientCertificate("tenant", role: ClientRole.Tenant));
            Anonymous = KeylimeTestServer.Client(Ca, null);
        }
        return host;
    }

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)), true);
        foreach (var d in Directory.GetDirectories(from)) CopyFolder(d, Path.Combine(to, Path.GetFileName(d)));
    }

    public static async Task<(HttpStatusCode Status, string Body, HttpResponseMessage Response)> SendAsync(HttpClient client, HttpMethod method, string url, string? json = null)
    {
        using var req = new HttpRequestMessage(method, url);
        if (json is not null) req.Content = new StringContent(json, Encoding.UTF8, "application/json");
        var resp = await client.SendAsync(req);
        return (resp.StatusCode, await resp.Content.ReadAsStringAsync(), resp);
    }

    public static JsonElement Json(string body) => JsonDocument.Parse(body).RootElement.Clone();

    public async ValueTask DisposeAsync()
    {
        foreach (var h in Hosts)
        {
            try { await h.StopAsync(); } catch (Exception) { }
        }
        Tenant?.Dispose();
        Anonymous?.Dispose();
        foreach (var d in _dirs) { try { Directory.Delete(d, true); } catch (IOException) { } }
    }
}
