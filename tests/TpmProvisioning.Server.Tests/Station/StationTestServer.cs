using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Hosting;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Station;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Tests.Station;

/// <summary>
/// A real server hosting Provisioning and Station (HTTPS on a free loopback port, SQLite) in a scratch data path that trusts
/// swtpm's manufacturer CA, with a provisioning API key and a station operator token.
/// </summary>
public sealed class StationTestServer : IAsyncDisposable
{
    private StationTestServer() { }

    public string DataPath { get; } = Directory.CreateTempSubdirectory("tpmprov-station-").FullName;
    public IServerHost Host { get; private set; } = null!;
    public string Url => Host.Info.Urls[0].TrimEnd('/');
    public SqliteStore Store { get; private set; } = null!;
    public NewApiKey Key { get; private set; } = null!;
    public string Token { get; private set; } = null!;
    public X509Certificate2 ServerCa { get; private set; } = null!;
    public X509Certificate2 TpmCa { get; private set; } = null!;
    public HttpClient Http { get; private set; } = null!;

    public static async Task<StationTestServer> StartAsync(X509Certificate2 root, X509Certificate2? issuer, Action<ServerOptions>? configure = null)
    {
        var s = new StationTestServer();
        (s.Host, s.Store, s.ServerCa) = await ScratchServer.StartAsync(s.DataPath, [(root, issuer)], ServerRole.Provisioning | ServerRole.Station, configure);
        s.Key = await new ApiKeyManager(s.Store).CreateAsync("plant-1", ["Contoso"]);
        s.Token = (await new StationTokenManager(s.Store).CreateAsync("line-1")).Token;
        s.TpmCa = X509Certificate2.CreateFromPem(File.ReadAllText(Path.Combine(ProvisioningPaths.TpmCa(s.DataPath), Pki.TpmCa.CertFileName)));
        s.Http = Provisioning.TestServer.TrustingClient(s.ServerCa);
        return s;
    }

    public async Task<(HttpStatusCode Status, string Body, HttpContentHeaders? Headers)> SendAsync(HttpMethod method, string path, HttpContent? content = null,
        bool auth = true, string? accept = null, string? token = null)
    {
        using var req = new HttpRequestMessage(method, Url + path) { Content = content };
        if (auth) req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token ?? Token);
        if (accept is not null) req.Headers.TryAddWithoutValidation("Accept", accept);
        using var resp = await Http.SendAsync(req);
        var body = await resp.Content.ReadAsStringAsync();
        if (resp.StatusCode == HttpStatusCode.InternalServerError)
            throw new InvalidOperationException("server error: " + body + " " + string.Join("\n", Host.RecentLog(5).Select(e => e.Message + " " + e.Exception)));
        return (resp.StatusCode, body, resp.Content.Headers);
    }

    public Task<(HttpStatusCode Status, string Body, HttpContentHeaders? Headers)> GetAsync(string path, bool auth = true, string? accept = null) =>
        SendAsync(HttpMethod.Get, path, null, auth, accept);

    public Task<(HttpStatusCode Status, string Body, HttpContentHeaders? Headers)> PostJsonAsync(string path, string json, bool auth = true) =>
        SendAsync(HttpMethod.Post, path, new StringContent(json, Encoding.UTF8, "application/json"), auth);

    public static JsonElement Json(string body) => JsonDocument.Parse(body).RootElement.Clone();

    /// <summary>A WebSocket client with the operator token that trusts only this station's CA (not yet connected).</summary>
    public System.Net.WebSockets.ClientWebSocket Socket()
    {
        var ws = new System.Net.WebSockets.ClientWebSocket();
        ws.Options.SetRequestHeader("Authorization", "Bearer " + Token);
        ws.Options.RemoteCertificateValidationCallback = (_, cert, _, errors) => Pki.PinnedCaTls.Validates(ServerCa, cert, errors);
        return ws;
    }

    /// <summary>The next whole message of <paramref name="ws"/> as JSON; throws when the server closes the socket.</summary>
    public static async Task<JsonElement> ReceiveJsonAsync(System.Net.WebSockets.ClientWebSocket ws, CancellationToken ct)
    {
        var buf = new byte[64 * 1024];
        using var ms = new MemoryStream();
        System.Net.WebSockets.WebSocketReceiveResult r;
        do
        {
            r = await ws.ReceiveAsync(buf, ct);
            if (r.MessageType == System.Net.WebSockets.WebSocketMessageType.Close) throw new InvalidOperationException("the server closed the socket");
            ms.Write(buf, 0, r.Count);
        } while (!r.EndOfMessage);
        return JsonDocument.Parse(ms.ToArray()).RootElement.Clone();
    }

    /// <summary>Asserts the documented error object and returns its code.</summary>
    public static string ErrorCode((HttpStatusCode Status, string Body, HttpContentHeaders? Headers) r, HttpStatusCode expected)
    {
        Assert.Equal(expected, r.Status);
        var e = Json(r.Body).GetProperty("error");
        Assert.Equal((int)expected, e.GetProperty("status").GetInt32());
        Assert.False(string.IsNullOrEmpty(e.GetProperty("title").GetString()));
        Assert.False(string.IsNullOrEmpty(e.GetProperty("detail").GetString()));
        return e.GetProperty("code").GetString()!;
    }

    /// <summary>Station tables, records and scripts as text (audit excluded: refusals are audited).</summary>
    public async Task<string> SnapshotAsync()
    {
        var sb = new StringBuilder();
        foreach (var d in await Store.ListStationDevicesAsync(new StationDeviceQuery()))
        {
            sb.AppendLine($"{d.Vendor}/{d.Serial} {d.State} {d.LastChangeId}");
            foreach (var t in Enum.GetValues<DeviceLogType>()) sb.AppendLine($"  {t}: {(await Store.GetDeviceLogAsync(d.Serial, t)).Count}");
        }
        sb.AppendLine("records " + await Store.CountManufacturingRecordsAsync());
        sb.AppendLine("tokens " + (await Store.ListStationTokensAsync()).Count);
        foreach (var f in Directory.EnumerateFileSystemEntries(DataPath, "*", SearchOption.AllDirectories).Where(f => !f.Contains("logs") && !f.EndsWith(".db-wal") && !f.EndsWith(".db-shm") && !f.EndsWith(".db")).Order())
            sb.AppendLine(Path.GetRelativePath(DataPath, f) + (File.Exists(f) ? " " + new FileInfo(f).Length : ""));
        return sb.ToString();
    }

    public async ValueTask DisposeAsync()
    {
        Http?.Dispose();
        await ScratchServer.StopAsync(Host, Store, DataPath);
    }
}
