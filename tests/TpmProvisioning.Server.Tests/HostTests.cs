using System.Net;
using System.Net.Http.Json;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Server.Hosting;

namespace TpmProvisioning.Tests;

public sealed class HostTests : IAsyncLifetime
{
    private readonly string _data = Directory.CreateTempSubdirectory("tpmprov-host-").FullName;
    private readonly List<IServerHost> _hosts = [];

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var h in _hosts) await h.StopAsync();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(_data, true); } catch (IOException) { }
    }

    private async Task<IServerHost> Start(Action<ServerOptions>? configure = null, string? dataPath = null)
    {
        var o = new ServerOptions { DataPath = dataPath ?? _data, Port = 0, Roles = ServerRole.Provisioning };
        configure?.Invoke(o);
        var h = await ProvisioningServerHost.StartAsync(o);
        _hosts.Add(h);
        return h;
    }

    /// <summary>A client that trusts only the server's own components CA, as a careful admin would.</summary>
    private static HttpClient ClientTrusting(string caPemPath, X509Certificate2? clientCert = null)
    {
        var ca = X509Certificate2.CreateFromPem(File.ReadAllText(caPemPath));
        var handler = new SocketsHttpHandler
        {
            SslOptions = new SslClientAuthenticationOptions
            {
                RemoteCertificateValidationCallback = (_, cert, _, errors) =>
                {
                    if (cert is null) return false;
                    using var chain = new X509Chain();
                    chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                    chain.ChainPolicy.CustomTrustStore.Add(ca);
                    chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                    return chain.Build(new X509Certificate2(cert)) && (errors & ~SslPolicyErrors.RemoteCertificateChainErrors) == SslPolicyErrors.None;
                },
                ClientCertificates = clientCert is null ? null : new X509CertificateCollection { clientCert },
            },
        };
        return new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(20) };
    }

    [Fact]
    public async Task ServesHealthOverHttpsWithItsOwnCaOnAFreeLoopbackPort()
    {
        var h = await Start();
        Assert.Equal(ServerState.Running, h.Info.State);
        Assert.NotEqual(0, h.Info.Port);
        var url = Assert.Single(h.Info.Urls);
        Assert.StartsWith("https://127.0.0.1:", url);

        using var http = ClientTrusting(h.Info.CaCertificatePath!);
        using var resp = await http.GetAsync(url + "/healthz");
        Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
        using var doc = JsonDocument.Parse(await resp.Content.ReadAsStringAsync());
        Assert.Equal("ok", doc.RootElement.GetProperty("status").GetString());
        Assert.Equal("sqlite", doc.RootElement.GetProperty("store").GetProperty("provider").GetString());
        Assert.Equal(["provisioning"], doc.RootElement.GetProperty("roles").EnumerateArray().Select(e => e.GetString()));
    }

    [Fact]
    public async Task TwoServersRunSideBySideAndASecondBindOnOnePortIsPortInUse()
    {
        var a = await Start();
        var b = await Start(o => o.Roles = ServerRole.Provisioning | ServerRole.Verifier, Path.Combine(_data, "b"));
        Assert.NotEqual(a.Info.Port, b.Info.Port);
        Assert.NotEqual(a.Info.Id, b.Info.Id);

        var ex = await Assert.ThrowsAsync<ServerStartException>(() => Start(o => o.Port = a.Info.Port, Path.Combine(_data, "c")));
        Assert.Equal("PortInUse", ex.Reason);
        Assert.Contains(a.Info.Port.ToString(), ex.Message);

        // The first server is unaffected.
        using var http = ClientTrusting(a.Info.CaCertificatePath!);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync(a.Info.Urls[0] + "/healthz")).StatusCode);
    }

    [Fact]
    public async Task StopReleasesThePortAndAuditsStartAndStop()
    {
        var h = await Start();
        int port = h.Info.Port;
        await h.StopAsync();
        Assert.Equal(ServerState.Stopped, h.Info.State);
        using (var probe = new TcpListener(IPAddress.Loopback, port)) { probe.Start(); probe.Stop(); }

        var again = await Start(o => o.Port = port);
        Assert.Equal(port, again.Info.Port);
        await again.StopAsync();

        using var store = await TpmProvisioning.Storage.SqliteStore.OpenAsync(Path.Combine(_data, "tpmprovisioning.db"));
        var actions = (await store.QueryAuditAsync(new TpmProvisioning.Storage.AuditQuery())).Select(e => e.Action).ToList();
        Assert.Equal(["server.stop", "server.start", "server.stop", "server.start"], actions);
    }

    [Fact]
    public async Task TheCaAndServerCertificateSurviveARestart()
    {
        var h = await Start();
        var thumb = h.Info.CertificateThumbprint;
        var ca = File.ReadAllText(h.Info.CaCertificatePath!);
        await h.StopAsync();
        var h2 = await Start();
        Assert.Equal(thumb, h2.Info.CertificateThumbprint);
        Assert.Equal(ca, File.ReadAllText(h2.Info.CaCertificatePath!));
    }

    [Fact]
    public async Task MutualTlsRefusesForeignClientCertificatesAtTheHandshake()
    {
        var h = await Start(o => { o.Roles = ServerRole.Registrar; o.RequireClientCertificate = ServerRole.Registrar; });
        using var ca = ComponentCa.LoadOrCreate(Path.Combine(_data, "ca"));
        using var good = ca.IssueClientCertificate("tenant");
        using (var http = ClientTrusting(h.Info.CaCertificatePath!, good))
            Assert.Equal(HttpStatusCode.OK, (await http.GetAsync(h.Info.Urls[0] + "/healthz")).StatusCode);

        var otherDir = Path.Combine(_data, "other-ca");
        using var other = ComponentCa.LoadOrCreate(otherDir);
        using var bad = other.IssueClientCertificate("tenant");
        using var badHttp = ClientTrusting(h.Info.CaCertificatePath!, bad);
        await Assert.ThrowsAsync<HttpRequestException>(() => badHttp.GetAsync(h.Info.Urls[0] + "/healthz"));
    }

    [Fact]
    public async Task LogsGoToARollingFileWithoutSecrets()
    {
        var h = await Start(o => o.Name = "logtest");
        var logDir = h.Info.LogPath!;
        await h.StopAsync();
        var file = Assert.Single(Directory.GetFiles(logDir, "server-*.log"));
        var text = await File.ReadAllTextAsync(file);
        Assert.Contains("Server logtest started", text);
        Assert.Contains(h.RecentLog(100), e => e.Message.Contains("logtest started"));
        Assert.DoesNotContain("PRIVATE KEY", text);
    }

    [Fact]
    public async Task PlainHttpOnlyWhenExplicitlyAsked()
    {
        var h = await Start(o => o.InsecurePlainHttp = true);
        Assert.StartsWith("http://", h.Info.Urls[0]);
        using var http = new HttpClient();
        var health = await http.GetFromJsonAsync<JsonElement>(h.Info.Urls[0] + "/healthz");
        Assert.Equal("ok", health.GetProperty("status").GetString());
    }

    [Fact]
    public async Task AnUnwritableDataPathIsAClearStartError()
    {
        var file = Path.Combine(_data, "not-a-dir");
        await File.WriteAllTextAsync(file, "x");
        var ex = await Assert.ThrowsAsync<ServerStartException>(() => ProvisioningServerHost.StartAsync(new ServerOptions { DataPath = file, Port = 0 }));
        Assert.Equal("DataPathNotWritable", ex.Reason);
    }
}
