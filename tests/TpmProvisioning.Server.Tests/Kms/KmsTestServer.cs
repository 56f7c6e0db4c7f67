using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Hosting;
using TpmProvisioning.Kms;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Keylime;

namespace TpmProvisioning.Tests.Kms;

/// <summary>A real HTTPS server hosting the KMS (insecure file master key, fast password hashing) and the registrar, and users. No verifier: release is tested end to end in KeyReleaseTests.</summary>
public sealed class KmsTestServer : IAsyncDisposable
{
    public const string AdminPassword = "admin-password-1";
    public const string ReaderPassword = "reader-password-1";
    public string DataPath { get; } = Directory.CreateTempSubdirectory("tpmprov-kms-").FullName;
    public IServerHost Host { get; private set; } = null!;
    public string Url => Host.Info.Urls[0];
    public SqliteStore Store { get; private set; } = null!;
    public X509Certificate2 ServerCa { get; private set; } = null!;
    public KmsEngine Engine { get; private set; } = null!;
    public RSA RevocationKey { get; } = RSA.Create(2048);
    public HttpClient Http { get; private set; } = null!;
    public string DbPath => Path.Combine(DataPath, "tpmprovisioning.db");

    public static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int p = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return p;
    }

    public static async Task<KmsTestServer> StartAsync(Action<KmsSettings>? configure = null)
    {
        var s = new KmsTestServer();
        int port = FreePort();
        (s.Host, s.Store, s.ServerCa) = await ScratchServer.StartAsync(s.DataPath, [], ServerRole.Kms | ServerRole.Registrar, o =>
        {
            o.Port = port;
            o.Kms = new KmsSettings
            {
                MasterKey = MasterKeyKind.InsecureFile, PasswordIterations = 1000,
                Registrar = new Uri($"https://127.0.0.1:{port}"), RevocationPublicKeyPem = s.RevocationKey.ExportSubjectPublicKeyInfoPem(),
            };
            configure?.Invoke(o.Kms);
        });
        s.Engine = await KmsEngine.OpenAsync(s.Store, new InsecureFileMasterKey(Path.Combine(s.DataPath, "kms")), new KmsSettings { PasswordIterations = 1000 });
        await s.Engine.CreateUserAsync("admin", AdminPassword, KmsUserRole.Administrator, new KmsCaller("test"));
        await s.Engine.CreateUserAsync("reader", ReaderPassword, KmsUserRole.ReadOnly, new KmsCaller("test"));
        s.Http = KeylimeTestServer.Client(s.ServerCa, null);
        return s;
    }

    public static string Seed(string name)
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            var p = Path.Combine(d.FullName, "seeds", "kms", name);
            if (File.Exists(p)) return File.ReadAllText(p);
        }
        throw new FileNotFoundException("seed not found: " + name);
    }

    public async Task<string> SessionAsync(string user = "admin", string password = AdminPassword)
    {
        using var req = new HttpRequestMessage(HttpMethod.Post, Url + "/api/session");
        req.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{user}:{password}")));
        using var resp = await Http.SendAsync(req);
        Assert.Equal(HttpStatusCode.Created, resp.StatusCode);
        return JsonSerializer.Deserialize<string>(await resp.Content.ReadAsStringAsync())!;
    }

    public async Task<string> TokenAsync(string user = "admin", string password = AdminPassword)
    {
        var (st, body) = await SendAsync(HttpMethod.Post, "/api/v1/auth/tokens", JsonSerializer.Serialize(new { grant_type = "password", username = user, password }));
        Assert.Equal(HttpStatusCode.OK, st);
        Assert.Equal("Bearer", body.GetProperty("token_type").GetString());
        return body.GetProperty("jwt").GetString()!;
    }

    public async Task<(HttpStatusCode Status, JsonElement Body)> SendAsync(HttpMethod method, string path, string? json = null, string? session = null, string? bearer = null, HttpClient? client = null)
    {
        using var req = new HttpRequestMessage(method, Url + path);
        if (json is not null) req.Content = new StringContent(json, Encoding.UTF8, "application/json");
        if (session is not null) req.Headers.Add("vmware-api-session-id", session);
        if (bearer is not null) req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", bearer);
        using var resp = await (client ?? Http).SendAsync(req);
        var text = await resp.Content.ReadAsStringAsync();
        return (resp.StatusCode, text.Length == 0 ? default : JsonDocument.Parse(text).RootElement.Clone());
    }

    /// <summary>The KMS tables as text (audit excluded), to show that refused calls change nothing.</summary>
    public async Task<string> SnapshotAsync()
    {
        var sb = new StringBuilder();
        foreach (var p in await Store.ListKmsProvidersAsync()) sb.Append($"P:{p.Name}/{p.KeyId}/{Convert.ToHexString(p.WrappedKdk)}/{p.Updated.ToUnixTimeMilliseconds()};");
        foreach (var k in await Store.ListKmsKeysAsync())
        {
            sb.Append($"K:{k.Id}/{k.Name}/{k.Updated.ToUnixTimeMilliseconds()};");
            foreach (var v in await Store.ListKmsKeyVersionsAsync(k.Id)) sb.Append($"V:{v.Id}/{v.Number}/{v.IsPrimary}/{Convert.ToHexString(v.WrappedMaterial)};");
        }
        return sb.ToString();
    }

    public async ValueTask DisposeAsync()
    {
        Http?.Dispose();
        Engine?.Dispose();
        await ScratchServer.StopAsync(Host, Store, DataPath);
    }
}
