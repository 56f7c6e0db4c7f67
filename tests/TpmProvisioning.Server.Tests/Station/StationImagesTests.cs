using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.WebSockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Pki;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Station;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tests.Hardening;
using TpmProvisioning.Tpm.Simulator;
using Xunit.Abstractions;

namespace TpmProvisioning.Tests.Station;

/// <summary>One swtpm and one station server (HTTPS, SQLite) for the image tests; upload limit 64 MiB.</summary>
public sealed class StationImagesFixture : IAsyncLifetime
{
    public const long MaxImageBytes = 64L << 20;
    public SwtpmFixture Tpm { get; } = new();
    public StationTestServer Server { get; private set; } = null!;
    public string Images => Path.Combine(Server.DataPath, "station", "images");

    public async Task InitializeAsync()
    {
        var root = X509Certificate2.CreateFromPem(File.ReadAllText(Tpm.Swtpm.ManufacturerRootPath));
        var issuer = X509Certificate2.CreateFromPem(File.ReadAllText(Tpm.Swtpm.ManufacturerIssuerPath));
        Server = await StationTestServer.StartAsync(root, issuer, o => o.Station.MaxImageBytes = MaxImageBytes);
    }

    public async Task DisposeAsync()
    {
        await Server.DisposeAsync();
        Tpm.Dispose();
    }
}

/// <summary>
/// The station's images over real HTTPS: upload (raw and multipart, renamed on a clash, refused over the limit), list, metadata,
/// delete, SHA-256 (cached, dropped when the file changes; over <c>/ws/sha256</c> with progress, equal to <c>sha256sum</c>), analysis
/// of MBR and GPT images against <c>sfdisk</c> and of artefact folders and archives, assignment to a device family reaching the
/// manufacturing record of a device provisioned on swtpm, and traversal attempts on every route.
/// </summary>
public sealed class StationImagesTests(StationImagesFixture fx, ITestOutputHelper output) : IClassFixture<StationImagesFixture>
{
    private StationTestServer S => fx.Server;

    private static string Sha(byte[] data) => Convert.ToHexStringLower(SHA256.HashData(data));

    private static string Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{file} {string.Join(' ', args)}: exit {p.ExitCode}: {stderr.Result}");
        return stdout.Result;
    }

    private static string RunWithInput(string file, string input, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        p.StandardInput.Write(input);
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{file}: exit {p.ExitCode}: {stderr.Result}");
        return stdout.Result;
    }

    private Task<(HttpStatusCode Status, string Body, HttpContentHeaders? Headers)> UploadRawAsync(string name, byte[] data) =>
        S.SendAsync(HttpMethod.Post, "/upload-image?name=" + Uri.EscapeDataString(name), new ByteArrayContent(data) { Headers = { ContentType = new("application/octet-stream") } });

    private async Task<string> HashViaGetAsync(string name)
    {
        for (var until = DateTime.UtcNow.AddMinutes(3); DateTime.UtcNow < until; await Task.Delay(100))
        {
            var r = await S.GetAsync("/get-image-sha256?name=" + Uri.EscapeDataString(name));
            Assert.True(r.Status == HttpStatusCode.OK, r.Body);
            var j = StationTestServer.Json(r.Body);
            if (j.GetProperty("status").GetString() == "complete") return j.GetProperty("sha256").GetString()!;
        }
        throw new TimeoutException("the hash did not complete");
    }

    [Fact]
    public async Task UploadListMetadataHashAndDelete()
    {
        var data = RandomNumberGenerator.GetBytes(3 * 1024 * 1024 + 17);
        var up = await UploadRawAsync("rt-disk.img", data);
        Assert.Equal(HttpStatusCode.OK, up.Status);
        var uj = StationTestServer.Json(up.Body);
        Assert.Equal("rt-disk.img", uj.GetProperty("filename").GetString());
        Assert.False(uj.GetProperty("renamed").GetBoolean());

        // The same name again, as multipart: stored under a numbered name.
        using (var form = new MultipartFormDataContent())
        {
            form.Add(new ByteArrayContent(data), "file", "rt-disk.img");
            var again = await S.SendAsync(HttpMethod.Post, "/upload-image", form);
            Assert.Equal(HttpStatusCode.OK, again.Status);
            var aj = StationTestServer.Json(again.Body);
            Assert.Equal("rt-disk_1.img", aj.GetProperty("filename").GetString());
            Assert.True(aj.GetProperty("renamed").GetBoolean());
            Assert.Equal("rt-disk.img", aj.GetProperty("original_filename").GetString());
        }
        Assert.Equal(data, await File.ReadAllBytesAsync(Path.Combine(fx.Images, "rt-disk_1.img")));

        var list = StationTestServer.Json((await S.GetAsync("/images/list")).Body).GetProperty("images").EnumerateArray().ToList();
        var item = list.Single(i => i.GetProperty("name").GetString() == "rt-disk.img");
        Assert.Equal(data.Length, item.GetProperty("size_bytes").GetInt64());
        Assert.Equal("traditional", item.GetProperty("type").GetString());
        var legacy = StationTestServer.Json((await S.GetAsync("/get-images")).Body).GetProperty("images").EnumerateArray().Select(i => i.GetProperty("name").GetString()).ToList();
        Assert.Contains("rt-disk_1.img", legacy);

        var meta = StationTestServer.Json((await S.GetAsync("/get-image-metadata?name=rt-disk.img")).Body);
        Assert.Equal(data.Length, meta.GetProperty("size_bytes").GetInt64());
        Assert.Equal("3.00 MB", meta.GetProperty("size_formatted").GetString());

        Assert.Equal(Sha(data), await HashViaGetAsync("rt-disk.img"));
        // Cached: complete at once, and listed with the hash.
        var cached = StationTestServer.Json((await S.GetAsync("/get-image-sha256?name=rt-disk.img")).Body);
        Assert.Equal("complete", cached.GetProperty("status").GetString());
        list = StationTestServer.Json((await S.GetAsync("/images/list")).Body).GetProperty("images").EnumerateArray().ToList();
        Assert.Equal(Sha(data), list.Single(i => i.GetProperty("name").GetString() == "rt-disk.img").GetProperty("sha256").GetString());

        // The file changes (size and time): the cache is dropped and the new hash computed.
        await File.AppendAllTextAsync(Path.Combine(fx.Images, "rt-disk.img"), "more");
        File.SetLastWriteTimeUtc(Path.Combine(fx.Images, "rt-disk.img"), DateTime.UtcNow.AddMinutes(1));
        var changed = StationTestServer.Json((await S.GetAsync("/get-image-sha256?name=rt-disk.img")).Body);
        Assert.Equal("pending", changed.GetProperty("status").GetString());
        Assert.Equal(Sha([.. data, .. "more"u8.ToArray()]), await HashViaGetAsync("rt-disk.img"));

        foreach (var name in new[] { "rt-disk.img", "rt-disk_1.img" })
        {
            var del = await S.SendAsync(HttpMethod.Post, "/delete-image", new FormUrlEncodedContent([new("name", name)]));
            Assert.Equal(HttpStatusCode.OK, del.Status);
        }
        Assert.False(File.Exists(Path.Combine(fx.Images, "rt-disk.img")));
        Assert.Equal("IMAGE_NOT_FOUND", StationTestServer.ErrorCode(await S.PostJsonAsync("/delete-image", "{\"name\":\"rt-disk.img\"}"), HttpStatusCode.NotFound));
        Assert.Equal("IMAGE_NOT_FOUND", StationTestServer.ErrorCode(await S.GetAsync("/get-image-metadata?name=rt-disk.img"), HttpStatusCode.NotFound));
        Assert.Equal("UNAUTHENTICATED", StationTestServer.ErrorCode(await S.GetAsync("/images/list", auth: false), HttpStatusCode.Unauthorized));
    }

    [Fact]
    public async Task UploadsOverTheLimitAreRefusedAndLeaveNothing()
    {
        var before = Directory.GetFileSystemEntries(fx.Images).Order().ToList();
        var big = new byte[StationImagesFixture.MaxImageBytes + 1024];
        // Declared length over the limit: refused before any of the body is read (none is sent here).
        var declared = await RawHttp.SendAsync(S.Url, $"POST /upload-image?name=big.img HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {S.Token}\r\n" +
            $"Content-Type: application/octet-stream\r\nContent-Length: {big.Length}\r\n\r\n");
        Assert.Equal(413, declared.Status);
        Assert.Equal("IMAGE_TOO_LARGE", JsonDocument.Parse(declared.Body).RootElement.GetProperty("error").GetProperty("code").GetString());
        long refusedBefore = (await S.Store.QueryAuditAsync(new TpmProvisioning.Storage.AuditQuery { Action = "station.image.upload", Limit = 100_000 })).Count(e => e.Detail == "POST 413");
        // Chunked (no length): refused when the count passes the limit; the temporary file is removed.
        using (var req = new HttpRequestMessage(HttpMethod.Post, S.Url + "/upload-image?name=big.img"))
        {
            req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", S.Token);
            req.Content = new StreamContent(new MemoryStream(big));
            req.Content.Headers.ContentType = new("application/octet-stream");
            req.Headers.TransferEncodingChunked = true;
            try
            {
                using var resp = await S.Http.SendAsync(req);
                Assert.Equal(HttpStatusCode.RequestEntityTooLarge, resp.StatusCode);
                Assert.Contains("IMAGE_TOO_LARGE", await resp.Content.ReadAsStringAsync());
            }
            catch (HttpRequestException) { } // the server may close while the rest is still being sent
        }
        // Whatever the client saw, the server refused it once more with 413 (the count passed the limit).
        long refusedAfter = (await S.Store.QueryAuditAsync(new TpmProvisioning.Storage.AuditQuery { Action = "station.image.upload", Limit = 100_000 })).Count(e => e.Detail == "POST 413");
        Assert.Equal(refusedBefore + 1, refusedAfter);
        Assert.Equal(before, Directory.GetFileSystemEntries(fx.Images).Order().ToList());
        Assert.DoesNotContain(Directory.GetFiles(fx.Images), f => Path.GetFileName(f).StartsWith(".upload-", StringComparison.Ordinal));
        Assert.Equal("INVALID_CONTENT_TYPE", StationTestServer.ErrorCode(await S.PostJsonAsync("/upload-image?name=x.img", "{}"), HttpStatusCode.BadRequest));
        using var empty = new MultipartFormDataContent { { new StringContent("v"), "field" } };
        Assert.Equal("INVALID_UPLOAD_REQUEST", StationTestServer.ErrorCode(await S.SendAsync(HttpMethod.Post, "/upload-image", empty), HttpStatusCode.BadRequest));
    }

    private static Task SendAsync(ClientWebSocket ws, object message, CancellationToken ct) =>
        ws.SendAsync(JsonSerializer.SerializeToUtf8Bytes(message), WebSocketMessageType.Text, true, ct);

    [Fact]
    public async Task HashOverTheWebSocketReportsProgressAndEqualsSha256sum()
    {
        string file = Path.Combine(fx.Images, "ws-hash.img");
        await using (var fs = File.Create(file))
            for (int i = 0; i < 24; i++) await fs.WriteAsync(RandomNumberGenerator.GetBytes(4 << 20));
        string expected = Run("sha256sum", file).Split(' ')[0];

        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        using var a = S.Socket();
        using var b = S.Socket();
        await a.ConnectAsync(new Uri(S.Url.Replace("https://", "wss://") + "/ws/sha256"), cts.Token);
        await b.ConnectAsync(new Uri(S.Url.Replace("https://", "wss://") + "/ws/sha256"), cts.Token);
        await SendAsync(a, new { action = "get_sha256", image_name = "ws-hash.img" }, cts.Token);
        var first = await StationTestServer.ReceiveJsonAsync(a, cts.Token);
        Assert.Equal("ws-hash.img", first.GetProperty("image_name").GetString());
        // A second client asking meanwhile joins the same job (or finds the result).
        await SendAsync(b, new { action = "get_sha256", image_name = "ws-hash.img" }, cts.Token);

        var percents = new List<int>();
        JsonElement m = first;
        while (m.GetProperty("status").GetString() == "pending")
        {
            if (m.TryGetProperty("progress_percent", out var p)) percents.Add(p.GetInt32());
            m = await StationTestServer.ReceiveJsonAsync(a, cts.Token);
        }
        output.WriteLine("progress: " + string.Join(",", percents));
        Assert.Equal("complete", m.GetProperty("status").GetString());
        Assert.Equal(expected, m.GetProperty("sha256").GetString());
        // The first client subscribed before the job started: it hears every 5 % step up to 100 %, in order.
        Assert.Equal(Enumerable.Range(0, 21).Select(i => i * 5).Skip(1), percents.Where(x => x > 0));
        Assert.Equal(percents.Order(), percents);

        JsonElement mb;
        do mb = await StationTestServer.ReceiveJsonAsync(b, cts.Token); while (mb.GetProperty("status").GetString() == "pending");
        Assert.Equal(expected, mb.GetProperty("sha256").GetString());

        // Asked again: the cached result at once.
        await SendAsync(a, new { action = "get_sha256", image_name = "ws-hash.img" }, cts.Token);
        var again = await StationTestServer.ReceiveJsonAsync(a, cts.Token);
        Assert.Equal("complete", again.GetProperty("status").GetString());
        Assert.Equal(expected, again.GetProperty("sha256").GetString());

        // Bad frames get an error frame, and the socket stays usable.
        await a.SendAsync("not json"u8.ToArray(), WebSocketMessageType.Text, true, cts.Token);
        Assert.Equal("Invalid JSON", (await StationTestServer.ReceiveJsonAsync(a, cts.Token)).GetProperty("error").GetString());
        await SendAsync(a, new { action = "get_sha256", image_name = "missing.img" }, cts.Token);
        Assert.Equal("IMAGE_NOT_FOUND", (await StationTestServer.ReceiveJsonAsync(a, cts.Token)).GetProperty("code").GetString());
        await a.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", cts.Token);
        await b.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", cts.Token);
        File.Delete(file);
    }

    /// <summary>Every file and folder under the data path with its size and modification time (the database and logs excluded).</summary>
    private string Tree() => string.Join("\n", Directory.EnumerateFileSystemEntries(S.DataPath, "*", SearchOption.AllDirectories)
        .Where(f => !f.Contains("/logs") && !f.Contains("tpmprovisioning.db"))
        .Order().Select(f => $"{Path.GetRelativePath(S.DataPath, f)} {(File.Exists(f) ? new FileInfo(f).Length : -1)} {File.GetLastWriteTimeUtc(f).Ticks}"));

    [Fact]
    public async Task TraversalOnEveryImageRouteGetsTheErrorObjectAndTouchesNothing()
    {
        // Sentinels outside the images folder: one beside it, one in the data path's root, one absolute elsewhere.
        var sentinelDir = Directory.CreateTempSubdirectory("tpmprov-sentinel-").FullName;
        string outside = Path.Combine(sentinelDir, "sentinel.txt");
        string beside = Path.Combine(S.DataPath, "station", "sentinel.txt");
        foreach (var f in new[] { outside, beside }) await File.WriteAllTextAsync(f, "do not touch " + f);
        // A link in the folder that points outside.
        File.CreateSymbolicLink(Path.Combine(fx.Images, "link.img"), outside);
        Directory.CreateSymbolicLink(Path.Combine(fx.Images, "linkdir"), sentinelDir);
        string tree = Tree();
        var sentinelSha = Sha(await File.ReadAllBytesAsync(outside));
        try
        {
            // As they go on the wire (query strings are decoded once by the server).
            string[] raw =
            [
                "../x", "..%2Fsentinel.txt", "../sentinel.txt", "/etc/passwd", "%2Fetc%2Fpasswd", "/", "%2F", "..", ".", "%2e%2e%2fsentinel.txt",
                "%252e%252e%252fsentinel.txt", "..%5Csentinel.txt", "%5C", "sentinel.txt%00", "%00", ".hidden", "x%2F..%2F..%2Fsentinel.txt",
                Uri.EscapeDataString(outside), new string('a', 300), "link.img", "linkdir", "%2e%2e", "",
            ];
            var codes = new HashSet<string>();
            foreach (var q in raw)
            {
                foreach (var path in new[] { "/get-image-metadata", "/get-image-sha256", "/analyze-image" })
                {
                    var r = await RawHttp.SendAsync(S.Url, $"GET {path}?name={q} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {S.Token}\r\nConnection: close\r\n\r\n");
                    codes.Add(AssertRefused(r, $"{path}?name={q}"));
                }
                var del = await RawHttp.SendAsync(S.Url, $"POST /delete-image?name={q} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {S.Token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                codes.Add(AssertRefused(del, "delete-image?name=" + q));
                var up = await RawHttp.SendAsync(S.Url, $"POST /upload-image?name={q} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {S.Token}\r\nContent-Type: application/octet-stream\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
                codes.Add(AssertRefused(up, "upload-image?name=" + q));
            }
            // The decoded forms in bodies: form, JSON, multipart file name, assignment, WebSocket.
            string[] decoded = ["../x", "../sentinel.txt", "/etc/passwd", "/", "..", "..\\sentinel.txt", "sentinel.txt\0", outside, "link.img", "linkdir", ".hidden", "%2e%2e%2fsentinel.txt"];
            using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            using var ws = S.Socket();
            await ws.ConnectAsync(new Uri(S.Url.Replace("https://", "wss://") + "/ws/sha256"), cts.Token);
            foreach (var name in decoded)
            {
                codes.Add(StationTestServer.ErrorCode(await S.SendAsync(HttpMethod.Post, "/delete-image", new FormUrlEncodedContent([new("name", name)])), HttpStatusCode.BadRequest));
                codes.Add(StationTestServer.ErrorCode(await S.PostJsonAsync("/delete-image", JsonSerializer.Serialize(new { name })), HttpStatusCode.BadRequest));
                codes.Add(StationTestServer.ErrorCode(await S.PostJsonAsync("/images/assign", JsonSerializer.Serialize(new { image = name, vendor = "Contoso" })), HttpStatusCode.BadRequest));
                using (var form = new MultipartFormDataContent())
                {
                    var part = new ByteArrayContent("hello"u8.ToArray());
                    part.Headers.ContentDisposition = new ContentDispositionHeaderValue("form-data") { Name = "\"file\"", FileNameStar = name };
                    form.Add(part);
                    codes.Add(StationTestServer.ErrorCode(await S.SendAsync(HttpMethod.Post, "/upload-image", form), HttpStatusCode.BadRequest));
                }
                await SendAsync(ws, new { action = "get_sha256", image_name = name }, cts.Token);
                var frame = await StationTestServer.ReceiveJsonAsync(ws, cts.Token);
                Assert.Equal("error", frame.GetProperty("status").GetString());
                Assert.Equal("INVALID_IMAGE_NAME", frame.GetProperty("code").GetString());
                Assert.DoesNotContain(sentinelSha, frame.GetRawText());
            }
            await ws.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", cts.Token);
            // Only these refusals (a NUL in a form field is refused by the form reader itself).
            Assert.Subset(new HashSet<string> { "INVALID_IMAGE_NAME", "MISSING_IMAGE_NAME", "FORM_PARSE_ERROR" }, codes);
            Assert.Contains("INVALID_IMAGE_NAME", codes);
            Assert.Contains("MISSING_IMAGE_NAME", codes);

            // Nothing was created, changed or removed; the link is not listed; no hash of a sentinel exists anywhere.
            Assert.Equal(tree, Tree());
            Assert.True(File.Exists(outside) && File.Exists(beside));
            var listed = (await S.GetAsync("/images/list")).Body;
            Assert.DoesNotContain("link.img", listed);
            Assert.DoesNotContain("linkdir", listed);
            Assert.DoesNotContain(sentinelSha, listed);
            Assert.False(Directory.Exists(Path.Combine(fx.Images, ".sha256")) && Directory.EnumerateFiles(Path.Combine(fx.Images, ".sha256")).Any(f => File.ReadAllText(f).StartsWith(sentinelSha, StringComparison.Ordinal)));
        }
        finally
        {
            File.Delete(Path.Combine(fx.Images, "link.img"));
            Directory.Delete(Path.Combine(fx.Images, "linkdir"));
            File.Delete(beside);
            Directory.Delete(sentinelDir, true);
        }
    }

    private static string AssertRefused(RawHttp.Response r, string what)
    {
        Assert.True(r.Status == 400, $"{what}: {r.Status} {r.Body}");
        var e = JsonDocument.Parse(r.Body).RootElement.GetProperty("error");
        Assert.Equal(400, e.GetProperty("status").GetInt32());
        Assert.False(string.IsNullOrEmpty(e.GetProperty("detail").GetString()));
        var code = e.GetProperty("code").GetString()!;
        Assert.True(code is "INVALID_IMAGE_NAME" or "MISSING_IMAGE_NAME", $"{what}: {code}");
        return code;
    }

    [Fact]
    public async Task AnalysisReadsPartitionTablesAsSfdiskDoesAndListsArtefacts()
    {
        if (SwtpmInstance.FindExecutable("sfdisk") is null && !File.Exists("/usr/sbin/sfdisk") && !File.Exists("/sbin/sfdisk"))
            throw new InvalidOperationException("sfdisk is not installed (apt-get install fdisk; build.ps1 Bootstrap does).");
        string sfdisk = SwtpmInstance.FindExecutable("sfdisk") ?? (File.Exists("/usr/sbin/sfdisk") ? "/usr/sbin/sfdisk" : "/sbin/sfdisk");
        var scripts = new Dictionary<string, string>
        {
            ["mbr-disk.img"] = "label: dos\nstart=8192, size=131072, type=c, bootable\nstart=139264, size=40960, type=83\n",
            ["gpt-disk.img"] = "label: gpt\nstart=2048, size=65536, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"boot\"\nstart=67584, size=90112, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"rootfs\"\n",
        };
        foreach (var (name, script) in scripts)
        {
            string file = Path.Combine(fx.Images, name);
            using (var fs = File.Create(file)) fs.SetLength(96L << 20); // sparse
            RunWithInput(sfdisk, script, "--no-reread", "--no-tell-kernel", "-q", file);
            var expected = JsonDocument.Parse(Run(sfdisk, "--json", file)).RootElement.GetProperty("partitiontable");
            var r = await S.GetAsync("/analyze-image?name=" + name);
            Assert.Equal(HttpStatusCode.OK, r.Status);
            var a = StationTestServer.Json(r.Body);
            output.WriteLine(r.Body);
            Assert.Equal(expected.GetProperty("label").GetString() == "dos" ? "mbr" : "gpt", a.GetProperty("format").GetString());
            var parts = a.GetProperty("partitions").EnumerateArray().ToList();
            var want = expected.GetProperty("partitions").EnumerateArray().ToList();
            Assert.Equal(want.Count, parts.Count);
            for (int i = 0; i < want.Count; i++)
            {
                Assert.Equal(want[i].GetProperty("start").GetInt64(), parts[i].GetProperty("start_sector").GetInt64());
                Assert.Equal(want[i].GetProperty("size").GetInt64(), parts[i].GetProperty("sectors").GetInt64());
                Assert.Equal(want[i].GetProperty("start").GetInt64() * 512, parts[i].GetProperty("offset_bytes").GetInt64());
                if (expected.GetProperty("label").GetString() == "dos")
                    Assert.Equal(Convert.ToInt32(want[i].GetProperty("type").GetString(), 16), Convert.ToInt32(parts[i].GetProperty("type").GetString(), 16));
                else Assert.Equal(want[i].GetProperty("type").GetString()!, parts[i].GetProperty("type").GetString()!, ignoreCase: true);
                if (want[i].TryGetProperty("name", out var pn)) Assert.Equal(pn.GetString(), parts[i].GetProperty("name").GetString());
                if (want[i].TryGetProperty("bootable", out var boot)) Assert.Equal(boot.GetBoolean(), parts[i].GetProperty("bootable").GetBoolean());
            }
            Assert.Contains(parts, p => p.GetProperty("type_name").GetString() is "FAT32 (LBA)" or "EFI System");
            File.Delete(file);
        }

        // Artefacts: a folder in the images folder, and the same tree as a tar and a zip.
        var src = Directory.CreateTempSubdirectory("tpmprov-artefacts-").FullName;
        try
        {
            Directory.CreateDirectory(Path.Combine(src, "boot"));
            Directory.CreateDirectory(Path.Combine(src, "usr", "bin"));
            var files = new Dictionary<string, byte[]>
            {
                ["boot/kernel8.img"] = RandomNumberGenerator.GetBytes(200_000),
                ["usr/bin/agent"] = RandomNumberGenerator.GetBytes(70_000),
                ["config.txt"] = "arm_64bit=1\n"u8.ToArray(),
            };
            foreach (var (rel, bytes) in files) await File.WriteAllBytesAsync(Path.Combine(src, rel), bytes);
            Run("tar", "-C", src, "-cf", Path.Combine(fx.Images, "artefacts.tar"), ".");
            var zipPsi = new ProcessStartInfo("zip") { WorkingDirectory = src, UseShellExecute = false, RedirectStandardOutput = true };
            foreach (var arg in new[] { "-q", "-r", Path.Combine(fx.Images, "artefacts.zip"), "." }) zipPsi.ArgumentList.Add(arg);
            using (var zp = Process.Start(zipPsi)!) { await zp.StandardOutput.ReadToEndAsync(); await zp.WaitForExitAsync(); Assert.Equal(0, zp.ExitCode); }
            Run("cp", "-r", src, Path.Combine(fx.Images, "artefacts"));
            foreach (var (name, type, format) in new[] { ("artefacts.tar", "archive", "tar"), ("artefacts.zip", "archive", "zip"), ("artefacts", "artefacts", "folder") })
            {
                var a = StationTestServer.Json((await S.GetAsync("/analyze-image?name=" + name)).Body);
                Assert.Equal(type, a.GetProperty("type").GetString());
                Assert.Equal(format, a.GetProperty("format").GetString());
                var listed = a.GetProperty("files").EnumerateArray().ToDictionary(f => f.GetProperty("path").GetString()!, f => (f.GetProperty("size_bytes").GetInt64(), f.GetProperty("sha256").GetString()));
                Assert.Equal(files.Keys.Order(), listed.Keys.Order());
                foreach (var (rel, bytes) in files) Assert.Equal((bytes.LongLength, Sha(bytes)), listed[rel]);
            }
            var list = StationTestServer.Json((await S.GetAsync("/images/list")).Body).GetProperty("images").EnumerateArray().ToList();
            Assert.Equal("artefacts", list.Single(i => i.GetProperty("name").GetString() == "artefacts").GetProperty("type").GetString());
            Assert.Equal("IMAGE_IS_FOLDER", StationTestServer.ErrorCode(await S.GetAsync("/get-image-sha256?name=artefacts"), HttpStatusCode.BadRequest));

            // An archive whose entry climbs out is listed without that entry (nothing is extracted, ever).
            var evilTar = Path.Combine(fx.Images, "evil.tar");
            await using (var fs = File.Create(evilTar))
            await using (var tw = new System.Formats.Tar.TarWriter(fs))
            {
                var e = new System.Formats.Tar.PaxTarEntry(System.Formats.Tar.TarEntryType.RegularFile, "../../escape.txt") { DataStream = new MemoryStream("x"u8.ToArray()) };
                await tw.WriteEntryAsync(e);
                var ok = new System.Formats.Tar.PaxTarEntry(System.Formats.Tar.TarEntryType.RegularFile, "fine.txt") { DataStream = new MemoryStream("y"u8.ToArray()) };
                await tw.WriteEntryAsync(ok);
            }
            var ev = StationTestServer.Json((await S.GetAsync("/analyze-image?name=evil.tar")).Body);
            Assert.Equal(["fine.txt"], ev.GetProperty("files").EnumerateArray().Select(f => f.GetProperty("path").GetString()).ToArray());
            Assert.Contains("../../escape.txt", ev.GetProperty("skipped")[0].GetString());
            Assert.False(File.Exists(Path.Combine(S.DataPath, "station", "escape.txt")));
            foreach (var n in new[] { "artefacts.tar", "artefacts.zip", "evil.tar" }) File.Delete(Path.Combine(fx.Images, n));
            Assert.Equal(HttpStatusCode.OK, (await S.PostJsonAsync("/delete-image", "{\"name\":\"artefacts\"}")).Status);
            Assert.False(Directory.Exists(Path.Combine(fx.Images, "artefacts")));
        }
        finally { Directory.Delete(src, true); }
    }

    [Fact]
    public async Task AnAssignedImageGoesIntoTheManufacturingRecord()
    {
        var data = RandomNumberGenerator.GetBytes(1 << 20);
        Assert.Equal(HttpStatusCode.OK, (await UploadRawAsync("factory-os.img", data)).Status);
        Assert.Equal(HttpStatusCode.OK, (await UploadRawAsync("other-os.img", RandomNumberGenerator.GetBytes(1000))).Status);

        // Bad assignments change nothing.
        Assert.Equal("MISSING_REQUIRED_FIELDS", StationTestServer.ErrorCode(await S.PostJsonAsync("/images/assign", "{\"image\":\"factory-os.img\"}"), HttpStatusCode.BadRequest));
        Assert.Equal("IMAGE_NOT_FOUND", StationTestServer.ErrorCode(await S.PostJsonAsync("/images/assign", "{\"image\":\"nope.img\",\"vendor\":\"Contoso\"}"), HttpStatusCode.NotFound));
        Assert.Equal("INVALID_PARAMETER", StationTestServer.ErrorCode(await S.PostJsonAsync("/images/assign", "{\"image\":\"factory-os.img\",\"vendor\":5}"), HttpStatusCode.BadRequest));
        Assert.Equal("INVALID_JSON", StationTestServer.ErrorCode(await S.PostJsonAsync("/images/assign", "{"), HttpStatusCode.BadRequest));
        Assert.Empty(StationTestServer.Json((await S.GetAsync("/images/assignments")).Body).GetProperty("assignments").EnumerateArray());

        var broad = StationTestServer.Json((await S.PostJsonAsync("/images/assign", "{\"image\":\"other-os.img\",\"vendor\":\"Contoso\"}")).Body);
        var assigned = await S.PostJsonAsync("/images/assign", "{\"image\":\"factory-os.img\",\"vendor\":\"Contoso\",\"name\":\"door-*\"}");
        Assert.Equal(HttpStatusCode.Created, assigned.Status);
        var aj = StationTestServer.Json(assigned.Body);
        Assert.Equal(Sha(data), aj.GetProperty("sha256").GetString());
        Assert.Equal("Contoso/door-*/*", aj.GetProperty("family").GetString());
        var listed = StationTestServer.Json((await S.GetAsync("/images/list")).Body).GetProperty("images").EnumerateArray().Single(i => i.GetProperty("name").GetString() == "factory-os.img");
        Assert.Equal("Contoso/door-*/*", listed.GetProperty("assigned_to")[0].GetString());

        // A device of the family is provisioned on swtpm: the more specific assignment wins.
        using (var client = new ProvisioningClient(new ProvisioningClientOptions { Server = new Uri(S.Url), CaCertificate = S.ServerCa }))
        using (var dev = fx.Tpm.Open())
            await client.ProvisionAsync(dev, new DeviceIdentity("door-controller", "IMG-0001", "Contoso", "2.1"), S.Key.Key,
                new DeviceProvisioningOptions { TpmCaCertificate = S.TpmCa, ReplaceAkHandle = true });
        fx.Tpm.EvictPersistent(0x81000002, 0x8100FFFF);
        var rows = StationTestServer.Json((await S.GetAsync("/api/v2/manufacturing")).Body).EnumerateArray().ToList();
        var row = rows.Single(r => r.GetProperty("serial").GetString() == "IMG-0001");
        Assert.Equal("factory-os.img", row.GetProperty("os_image_filename").GetString());
        Assert.Equal(Sha(data), row.GetProperty("os_image_sha256").GetString());

        // Unassigning, and deleting an image, remove its assignments.
        Assert.Equal("ASSIGNMENT_NOT_FOUND", StationTestServer.ErrorCode(await S.PostJsonAsync("/images/unassign", "{\"id\":999999}"), HttpStatusCode.NotFound));
        Assert.Equal(HttpStatusCode.OK, (await S.PostJsonAsync("/images/unassign", $"{{\"id\":{broad.GetProperty("id").GetInt64()}}}")).Status);
        Assert.Equal(HttpStatusCode.OK, (await S.PostJsonAsync("/delete-image", "{\"name\":\"factory-os.img\"}")).Status);
        Assert.Empty(StationTestServer.Json((await S.GetAsync("/images/assignments")).Body).GetProperty("assignments").EnumerateArray());
        Assert.Equal(HttpStatusCode.OK, (await S.PostJsonAsync("/delete-image", "{\"name\":\"other-os.img\"}")).Status);
    }
}
