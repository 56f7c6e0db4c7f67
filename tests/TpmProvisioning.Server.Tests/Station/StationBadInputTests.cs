using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Station;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Station;

/// <summary>
/// Every bad input gives the documented error object with a fitting status and changes nothing; scripts' round trip; the
/// closed default (no token, bad token, cookie only for reads, no CORS wildcard); errors as HTML for browsers.
/// </summary>
public sealed class StationBadInputTests : IClassFixture<SwtpmFixture>, IAsyncLifetime
{
    private readonly SwtpmFixture _tpm;
    private StationTestServer s = null!;
    private DeviceProvisioningResult _device = null!;

    public StationBadInputTests(SwtpmFixture tpm) => _tpm = tpm;

    public async Task InitializeAsync()
    {
        var root = X509Certificate2.CreateFromPem(File.ReadAllText(_tpm.Swtpm.ManufacturerRootPath));
        var issuer = X509Certificate2.CreateFromPem(File.ReadAllText(_tpm.Swtpm.ManufacturerIssuerPath));
        s = await StationTestServer.StartAsync(root, issuer, o => o.Station.MaxScriptBytes = 4096);
        using var client = new ProvisioningClient(new ProvisioningClientOptions { Server = new Uri(s.Url), CaCertificate = s.ServerCa });
        using var dev = _tpm.Open();
        _device = await client.ProvisionAsync(dev, new DeviceIdentity("door-controller", "BAD-0001", "Contoso", "1"), s.Key.Key,
            new DeviceProvisioningOptions { TpmCaCertificate = s.TpmCa, ReplaceAkHandle = true });
    }

    public async Task DisposeAsync()
    {
        _tpm.EvictPersistent(0x81000002, 0x8100FFFF);
        await s.DisposeAsync();
    }

    private static MultipartFormDataContent Upload(string fileName, string content)
    {
        var form = new MultipartFormDataContent();
        var file = new ByteArrayContent(Encoding.UTF8.GetBytes(content));
        file.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        form.Add(file, "script", fileName);
        return form;
    }

    [Fact]
    public async Task EveryBadInputGivesTheErrorObjectAndChangesNothing()
    {
        string before = await s.SnapshotAsync();
        var cases = new List<(string What, Func<Task<(HttpStatusCode, string, HttpContentHeaders?)>> Call, HttpStatusCode Status, string Code)>
        {
            ("unknown serial", () => s.GetAsync("/devices/NOPE-1"), HttpStatusCode.NotFound, "DEVICE_NOT_FOUND"),
            ("unknown serial log", () => s.GetAsync("/devices/NOPE-1/log/triage"), HttpStatusCode.NotFound, "DEVICE_NOT_FOUND"),
            ("unknown serial key", () => s.GetAsync("/devices/NOPE-1/key/public"), HttpStatusCode.NotFound, "DEVICE_NOT_FOUND"),
            ("traversal serial", () => s.GetAsync("/devices/..%2F..%2Fetc%2Fpasswd/log/provisioner"), HttpStatusCode.NotFound, "DEVICE_NOT_FOUND"),
            ("unknown log type", () => s.GetAsync("/devices/BAD-0001/log/bogus"), HttpStatusCode.NotFound, "LOG_NOT_FOUND"),
            ("log type traversal", () => s.GetAsync("/devices/BAD-0001/log/..%2Ftriage"), HttpStatusCode.NotFound, "LOG_NOT_FOUND"),
            ("save traversal", () => s.PostJsonAsync("/customisation/save-script", "{\"filename\":\"../../tmp/pwn\",\"content\":\"'hi'\"}"), HttpStatusCode.BadRequest, "INVALID_SCRIPT_NAME"),
            ("save dotted", () => s.PostJsonAsync("/customisation/save-script", "{\"filename\":\"a.b\",\"content\":\"'hi'\"}"), HttpStatusCode.BadRequest, "INVALID_SCRIPT_NAME"),
            ("save absolute", () => s.PostJsonAsync("/customisation/save-script", "{\"filename\":\"/etc/x\",\"content\":\"'hi'\"}"), HttpStatusCode.BadRequest, "INVALID_SCRIPT_NAME"),
            ("get traversal", () => s.GetAsync("/customisation/get-script?script=..%2F..%2Fetc%2Fpasswd"), HttpStatusCode.BadRequest, "INVALID_SCRIPT_NAME"),
            ("enable traversal", () => s.SendAsync(HttpMethod.Post, "/customisation/enable-script?script=../x"), HttpStatusCode.BadRequest, "INVALID_SCRIPT_NAME"),
            ("delete traversal", () => s.SendAsync(HttpMethod.Post, "/customisation/delete-script?script=..%5Cx"), HttpStatusCode.BadRequest, "INVALID_SCRIPT_NAME"),
            ("upload traversal", () => s.SendAsync(HttpMethod.Post, "/customisation/upload-script", Upload("../evil.ps1", "'x'")), HttpStatusCode.BadRequest, "INVALID_SCRIPT_NAME"),
            ("get unknown", () => s.GetAsync("/customisation/get-script?script=nonsense"), HttpStatusCode.NotFound, "SCRIPT_NOT_FOUND"),
            ("get missing name", () => s.GetAsync("/customisation/get-script"), HttpStatusCode.BadRequest, "MISSING_SCRIPT_NAME"),
            ("enable unknown", () => s.SendAsync(HttpMethod.Post, "/customisation/enable-script?script=nonsense"), HttpStatusCode.NotFound, "SCRIPT_NOT_FOUND"),
            ("delete unknown", () => s.SendAsync(HttpMethod.Post, "/customisation/delete-script?script=nonsense"), HttpStatusCode.NotFound, "SCRIPT_NOT_FOUND"),
            ("template of no hook", () => s.GetAsync("/customisation/create-script?script=foo"), HttpStatusCode.BadRequest, "INVALID_SCRIPT_NAME"),
            ("save without content", () => s.PostJsonAsync("/customisation/save-script", "{\"filename\":\"x\"}"), HttpStatusCode.BadRequest, "MISSING_REQUIRED_FIELDS"),
            ("save not JSON", () => s.PostJsonAsync("/customisation/save-script", "{nope"), HttpStatusCode.BadRequest, "INVALID_JSON"),
            ("save oversize", () => s.PostJsonAsync("/customisation/save-script", JsonSerializer.Serialize(new { filename = "big", content = new string('x', 4097) })), HttpStatusCode.RequestEntityTooLarge, "SCRIPT_TOO_LARGE"),
            ("upload oversize", () => s.SendAsync(HttpMethod.Post, "/customisation/upload-script", Upload("big.ps1", new string('x', 4097))), HttpStatusCode.RequestEntityTooLarge, "SCRIPT_TOO_LARGE"),
            ("upload huge", () => s.SendAsync(HttpMethod.Post, "/customisation/upload-script", Upload("big.ps1", new string('x', 300_000))), HttpStatusCode.RequestEntityTooLarge, "SCRIPT_TOO_LARGE"),
            ("upload not multipart", () => s.PostJsonAsync("/customisation/upload-script", "{}"), HttpStatusCode.BadRequest, "INVALID_CONTENT_TYPE"),
            ("upload no file", () => s.SendAsync(HttpMethod.Post, "/customisation/upload-script", new MultipartFormDataContent { { new StringContent("x"), "other" } }), HttpStatusCode.BadRequest, "MISSING_SCRIPT_FILE"),
            ("GET a POST route", () => s.GetAsync("/customisation/delete-script?script=x"), HttpStatusCode.MethodNotAllowed, "METHOD_NOT_ALLOWED"),
            ("GET save", () => s.GetAsync("/customisation/save-script"), HttpStatusCode.MethodNotAllowed, "METHOD_NOT_ALLOWED"),
            ("POST a GET route", () => s.SendAsync(HttpMethod.Post, "/devices"), HttpStatusCode.MethodNotAllowed, "METHOD_NOT_ALLOWED"),
            ("DELETE manufacturing", () => s.SendAsync(HttpMethod.Delete, "/api/v2/manufacturing"), HttpStatusCode.MethodNotAllowed, "METHOD_NOT_ALLOWED"),
            ("OPTIONS preflight", () => s.SendAsync(HttpMethod.Options, "/api/v2/manufacturing", auth: false), HttpStatusCode.MethodNotAllowed, "METHOD_NOT_ALLOWED"),
            ("GET verify-qrcode", () => s.GetAsync("/api/v2/verify-qrcode?code=x"), HttpStatusCode.MethodNotAllowed, "METHOD_NOT_ALLOWED"),
            ("no token", () => s.GetAsync("/devices", auth: false), HttpStatusCode.Unauthorized, "UNAUTHENTICATED"),
            ("no token manufacturing", () => s.GetAsync("/api/v2/manufacturing", auth: false), HttpStatusCode.Unauthorized, "UNAUTHENTICATED"),
            ("no token log", () => s.GetAsync("/devices/BAD-0001/log/triage", auth: false), HttpStatusCode.Unauthorized, "UNAUTHENTICATED"),
            ("no token save", () => s.SendAsync(HttpMethod.Post, "/customisation/save-script", new StringContent("{\"filename\":\"x\",\"content\":\"'x'\"}", Encoding.UTF8, "application/json"), auth: false), HttpStatusCode.Unauthorized, "UNAUTHENTICATED"),
            ("bad token", () => s.SendAsync(HttpMethod.Get, "/devices", token: "tpst_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), HttpStatusCode.Unauthorized, "INVALID_TOKEN"),
            ("garbage token", () => s.SendAsync(HttpMethod.Get, "/devices", token: "rpisb_bogus"), HttpStatusCode.Unauthorized, "INVALID_TOKEN"),
            ("API key as token", () => s.SendAsync(HttpMethod.Get, "/devices", token: s.Key.Key), HttpStatusCode.Unauthorized, "INVALID_TOKEN"),
            ("bad audit limit", () => s.GetAsync("/auditlog?limit=abc"), HttpStatusCode.BadRequest, "INVALID_PARAMETER"),
            ("bad audit date", () => s.GetAsync("/auditlog?start_date=yesterday"), HttpStatusCode.BadRequest, "INVALID_PARAMETER"),
            ("bad audit outcome", () => s.GetAsync("/auditlog?outcome=7"), HttpStatusCode.BadRequest, "INVALID_PARAMETER"),
            ("bad service-log order", () => s.GetAsync("/api/v2/service-log/station?order=sideways"), HttpStatusCode.BadRequest, "INVALID_PARAMETER"),
            ("ws without upgrade", () => s.GetAsync("/ws/devices"), HttpStatusCode.BadRequest, "WEBSOCKET_REQUIRED"),
        };
        foreach (var (what, call, status, code) in cases)
        {
            var r = await call();
            Assert.True(r.Item1 == status, $"{what}: {r.Item1} {r.Item2}");
            Assert.True(StationTestServer.ErrorCode(r, status) == code, $"{what}: {r.Item2}");
            Assert.True(r.Item3?.ContentType?.MediaType == "application/json", what);
        }
        Assert.Equal(before, await s.SnapshotAsync());
        Assert.False(File.Exists("/tmp/pwn.ps1"));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(s.DataPath, "station", "scripts")));
        Assert.NotEmpty(await s.Store.QueryAuditAsync(new Storage.AuditQuery { Action = "station.devices.read", Outcome = Storage.AuditOutcome.Denied }));
    }

    [Fact]
    public async Task AnOverflowingChunkSizeIsA400ErrorObjectOnEveryBodyRoute()
    {
        string before = await s.SnapshotAsync();
        foreach (var path in new[] { "/customisation/save-script", "/api/v2/verify-qrcode", "/customisation/upload-script", "/customisation/enable-script" })
        {
            var contentType = path.EndsWith("upload-script") ? "multipart/form-data; boundary=x" : path.EndsWith("enable-script") ? "application/x-www-form-urlencoded" : "application/json";
            var request = $"POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {s.Token}\r\nContent-Type: {contentType}\r\n"
                + "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n{}\r\n0\r\n\r\n";
            var r = await Hardening.RawHttp.SendAsync(s.Url, request);
            Assert.True(r.Status == 400, $"{path}: {r.Status} {r.Body}");
            var error = JsonDocument.Parse(r.Body).RootElement.GetProperty("error");
            Assert.Equal(400, error.GetProperty("status").GetInt32());
        }
        Assert.Equal(before, await s.SnapshotAsync());
    }

    [Fact]
    public async Task OnlyATenantClientCertificateOperatesTheStation()
    {
        // The components CA also issues server and agent certificates (serverAuth): those, and read-only client roles, are refused.
        using var ca = Pki.ComponentCa.LoadOrCreate(Path.Combine(s.DataPath, "ca"));
        using var serverCert = ca.IssueServerCertificate(["kms.example"], [System.Net.IPAddress.Loopback]);
        using var readOnly = ca.IssueClientCertificate("kms", role: Pki.ClientRole.Kms);
        using var tenant = ca.IssueClientCertificate("operator");
        async Task<(HttpStatusCode, string)> Get(System.Security.Cryptography.X509Certificates.X509Certificate2 cert)
        {
            using var http = Keylime.KeylimeTestServer.Client(s.ServerCa, cert);
            using var resp = await http.GetAsync(s.Url + "/devices");
            return (resp.StatusCode, await resp.Content.ReadAsStringAsync());
        }
        foreach (var refused in new[] { serverCert, readOnly })
        {
            var (st, body) = await Get(refused);
            Assert.Equal(HttpStatusCode.Forbidden, st);
            Assert.Equal("CERTIFICATE_NOT_ACCEPTED", StationTestServer.Json(body).GetProperty("error").GetProperty("code").GetString());
        }
        Assert.Equal(HttpStatusCode.OK, (await Get(tenant)).Item1);
    }

    [Fact]
    public async Task TheSecondDeleteIsNotFoundAndTheRoundTripKeepsState()
    {
        var hooks = StationTestServer.Json((await s.GetAsync("/customisation/list-hooks")).Body);
        Assert.Equal(["tpm-provisioner"], hooks.GetProperty("provisioners").EnumerateArray().Select(p => p.GetString()));
        Assert.Equal(HookStages.All.Count, hooks.GetProperty("hooks").GetArrayLength());

        const string name = "tpm-provisioner-post-provision";
        var template = StationTestServer.Json((await s.GetAsync("/customisation/get-script?script=" + name)).Body);
        Assert.False(template.GetProperty("exists").GetBoolean());
        Assert.Contains("post-provision", template.GetProperty("content").GetString());
        Assert.Equal(template.GetProperty("content").GetString(), StationTestServer.Json((await s.GetAsync("/customisation/create-script?script=" + name)).Body).GetProperty("content").GetString());

        var saved = StationTestServer.Json((await s.PostJsonAsync("/customisation/save-script", JsonSerializer.Serialize(new { filename = name + ".ps1", content = "'hello'" }))).Body);
        Assert.False(saved.GetProperty("enabled").GetBoolean());
        Assert.Equal(name + ".ps1", saved.GetProperty("filename").GetString());
        Assert.Equal(HttpStatusCode.OK, (await s.SendAsync(HttpMethod.Post, "/customisation/enable-script", new FormUrlEncodedContent([new("script", name)]))).Status);
        Assert.True(StationTestServer.Json((await s.GetAsync("/customisation/get-script?script=" + name)).Body).GetProperty("enabled").GetBoolean());
        // A save keeps the script enabled; an upload of another name starts disabled.
        Assert.True(StationTestServer.Json((await s.PostJsonAsync("/customisation/save-script", JsonSerializer.Serialize(new { filename = name, content = "'hello again'" }))).Body).GetProperty("enabled").GetBoolean());
        Assert.Equal(HttpStatusCode.OK, (await s.SendAsync(HttpMethod.Post, "/customisation/upload-script", Upload("my-tool.ps1", "'tool'"))).Status);
        var list = StationTestServer.Json((await s.GetAsync("/customisation/list-scripts")).Body).GetProperty("scripts").EnumerateArray().ToList();
        Assert.False(list.Single(x => x.GetProperty("filename").GetString() == "my-tool.ps1").GetProperty("enabled").GetBoolean());
        Assert.True(list.Single(x => x.GetProperty("filename").GetString() == name + ".ps1").GetProperty("exists").GetBoolean());
        Assert.Equal(HttpStatusCode.OK, (await s.SendAsync(HttpMethod.Post, "/customisation/disable-script", JsonContent(new { script = name }))).Status);
        Assert.False(StationTestServer.Json((await s.GetAsync("/customisation/get-script?script=" + name)).Body).GetProperty("enabled").GetBoolean());
        Assert.Equal(HttpStatusCode.OK, (await s.SendAsync(HttpMethod.Post, "/customisation/delete-script?script=" + name)).Status);
        Assert.Equal("SCRIPT_NOT_FOUND", StationTestServer.ErrorCode(await s.SendAsync(HttpMethod.Post, "/customisation/delete-script?script=" + name), HttpStatusCode.NotFound));
        Assert.Equal(HttpStatusCode.OK, (await s.SendAsync(HttpMethod.Post, "/customisation/delete-script?script=my-tool")).Status);
    }

    private static StringContent JsonContent(object o) => new(JsonSerializer.Serialize(o), Encoding.UTF8, "application/json");

    [Fact]
    public async Task BrowsersGetHtmlAndACookieOpensReadsOnly()
    {
        // Errors as HTML when Accept contains text/html.
        var err = await s.GetAsync("/devices/NOPE-1", accept: "text/html,application/xhtml+xml");
        Assert.Equal(HttpStatusCode.NotFound, err.Status);
        Assert.Equal("text/html", err.Headers!.ContentType!.MediaType);
        Assert.Contains("DEVICE_NOT_FOUND", err.Body);
        var unauth = await s.GetAsync("/devices", auth: false, accept: "text/html");
        Assert.Equal(HttpStatusCode.Unauthorized, unauth.Status);
        Assert.Contains("/login", unauth.Body);

        // Pages for devices, device detail (with logs), scripts, options and audit.
        var page = await s.GetAsync("/devices", accept: "text/html");
        Assert.Equal("text/html", page.Headers!.ContentType!.MediaType);
        Assert.Contains("BAD-0001", page.Body);
        Assert.Contains("PROVISIONER-FINISHED", page.Body);
        var detail = await s.GetAsync("/devices/BAD-0001", accept: "text/html");
        Assert.Contains("EK certificate chain: trusted", detail.Body);
        foreach (var p in new[] { "/customisation/list-scripts", "/options/get", "/auditlog" })
            Assert.Equal("text/html", (await s.GetAsync(p, accept: "text/html")).Headers!.ContentType!.MediaType);

        // Sign in: the token in a form becomes an HttpOnly SameSite=Strict cookie...
        using var handler = new SocketsHttpHandler
        {
            UseCookies = true, CookieContainer = new CookieContainer(), AllowAutoRedirect = false,
            SslOptions = { RemoteCertificateValidationCallback = (_, cert, _, errors) => Pki.PinnedCaTls.Validates(s.ServerCa, cert, errors) },
        };
        using var browser = new HttpClient(handler);
        Assert.Equal(HttpStatusCode.Unauthorized, (await browser.PostAsync(s.Url + "/login", new FormUrlEncodedContent([new("token", "tpst_wrong")]))).StatusCode);
        var login = await browser.PostAsync(s.Url + "/login", new FormUrlEncodedContent([new("token", s.Token), new("next", "//evil.example/")]));
        Assert.Equal(HttpStatusCode.Redirect, login.StatusCode);
        Assert.Equal("/devices", login.Headers.Location!.OriginalString);
        var setCookie = string.Join(";", login.Headers.GetValues("Set-Cookie")).ToLowerInvariant();
        Assert.Contains("httponly", setCookie);
        Assert.Contains("samesite=strict", setCookie);
        Assert.Contains("secure", setCookie);
        // ...that opens reads...
        var viaCookie = await browser.GetAsync(s.Url + "/devices");
        Assert.Equal(HttpStatusCode.OK, viaCookie.StatusCode);
        Assert.False(viaCookie.Headers.Contains("Access-Control-Allow-Origin"));
        // ...but never a change.
        var write = await browser.PostAsync(s.Url + "/customisation/save-script", new StringContent("{\"filename\":\"x\",\"content\":\"'x'\"}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Unauthorized, write.StatusCode);
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(s.DataPath, "station", "scripts")));
    }
}
