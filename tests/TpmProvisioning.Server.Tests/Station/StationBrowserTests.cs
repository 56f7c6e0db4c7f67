using System.Diagnostics;
using System.Net.WebSockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tpm.Simulator;

namespace TpmProvisioning.Tests.Station;

/// <summary>
/// Debian's headless Chromium, driven over the DevTools protocol, signs in on the station's /login page with an operator
/// token (the HttpOnly cookie), opens /devices, and shows the provisioned devices: the rendered DOM has their rows and the
/// screenshot is a real PNG of the page.
/// </summary>
public sealed class StationBrowserTests : IClassFixture<SwtpmFixture>
{
    private readonly SwtpmFixture _tpm;

    public StationBrowserTests(SwtpmFixture tpm) => _tpm = tpm;

    /// <summary>A headless Chromium with its own profile and a DevTools port chosen by Chromium; stopped by its process id.</summary>
    internal sealed class Browser : IAsyncDisposable
    {
        private readonly Process _process;
        private readonly string _profile = Directory.CreateTempSubdirectory("tpmprov-chromium-").FullName;
        private ClientWebSocket? _ws;
        private int _nextId;
        private readonly List<JsonObject> _events = [];

        public Browser()
        {
            string exe = SwtpmInstance.FindExecutable("chromium") ?? SwtpmInstance.FindExecutable("chromium-browser")
                ?? throw new InvalidOperationException("Debian's chromium is not installed (apt-get install -y chromium; build.ps1 Bootstrap does).");
            var psi = new ProcessStartInfo(exe)
            {
                RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false,
            };
            foreach (var a in new[] { "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--ignore-certificate-errors",
                         "--no-first-run", "--disable-extensions", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
                         "--window-size=1280,800", $"--user-data-dir={_profile}", "about:blank" })
                psi.ArgumentList.Add(a);
            _process = Process.Start(psi)!;
            _process.OutputDataReceived += (_, _) => { };
            _process.ErrorDataReceived += (_, _) => { };
            _process.BeginOutputReadLine();
            _process.BeginErrorReadLine();
        }

        public async Task ConnectAsync(CancellationToken ct)
        {
            var portFile = Path.Combine(_profile, "DevToolsActivePort");
            while (!File.Exists(portFile) || File.ReadAllLines(portFile).Length < 2)
            {
                if (_process.HasExited) throw new InvalidOperationException($"chromium exited with {_process.ExitCode}");
                await Task.Delay(100, ct);
            }
            int port = int.Parse(File.ReadAllLines(portFile)[0]);
            using var http = new HttpClient();
            string? pageWs = null;
            while (pageWs is null)
            {
                var list = JsonNode.Parse(await http.GetStringAsync($"http://127.0.0.1:{port}/json/list", ct))!.AsArray();
                pageWs = list.FirstOrDefault(t => (string?)t!["type"] == "page")?["webSocketDebuggerUrl"]?.GetValue<string>();
                if (pageWs is null) await Task.Delay(100, ct);
            }
            _ws = new ClientWebSocket();
            _ws.Options.KeepAliveInterval = TimeSpan.Zero;
            await _ws.ConnectAsync(new Uri(pageWs), ct);
        }

        private async Task<JsonObject> ReceiveAsync(CancellationToken ct)
        {
            var buf = new byte[1 << 16];
            using var ms = new MemoryStream();
            WebSocketReceiveResult r;
            do
            {
                r = await _ws!.ReceiveAsync(buf, ct);
                ms.Write(buf, 0, r.Count);
            } while (!r.EndOfMessage);
            return JsonNode.Parse(ms.ToArray())!.AsObject();
        }

        /// <summary>Sends a DevTools command and returns its result (events seen meanwhile are kept).</summary>
        public async Task<JsonObject> SendAsync(string method, object? parameters, CancellationToken ct)
        {
            int id = ++_nextId;
            var msg = JsonSerializer.SerializeToUtf8Bytes(new { id, method, @params = parameters ?? new { } });
            await _ws!.SendAsync(msg, WebSocketMessageType.Text, true, ct);
            while (true)
            {
                var m = await ReceiveAsync(ct);
                if (m["id"]?.GetValue<int>() == id)
                {
                    if (m["error"] is { } err) throw new InvalidOperationException($"{method}: {err.ToJsonString()}");
                    return m["result"]!.AsObject();
                }
                lock (_events) _events.Add(m);
            }
        }

        /// <summary>Waits for an event (one seen earlier counts), then forgets the events seen so far.</summary>
        public async Task WaitForEventAsync(string method, CancellationToken ct)
        {
            while (true)
            {
                lock (_events)
                    if (_events.Any(e => (string?)e["method"] == method)) { _events.Clear(); return; }
                var m = await ReceiveAsync(ct);
                lock (_events) _events.Add(m);
            }
        }

        public async Task<string> EvaluateAsync(string expression, CancellationToken ct) =>
            (await SendAsync("Runtime.evaluate", new { expression, returnByValue = true }, ct))["result"]!["value"]?.ToString() ?? "";

        public async ValueTask DisposeAsync()
        {
            try { _ws?.Dispose(); } catch (Exception) { }
            try { if (!_process.HasExited) _process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            await _process.WaitForExitAsync();
            _process.Dispose();
            try { Directory.Delete(_profile, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    [Fact]
    public async Task HeadlessChromiumSignsInAndShowsTheDeviceRows()
    {
        var root = X509Certificate2.CreateFromPem(File.ReadAllText(_tpm.Swtpm.ManufacturerRootPath));
        var issuer = X509Certificate2.CreateFromPem(File.ReadAllText(_tpm.Swtpm.ManufacturerIssuerPath));
        await using var s = await StationTestServer.StartAsync(root, issuer);
        using (var client = new ProvisioningClient(new ProvisioningClientOptions { Server = new Uri(s.Url), CaCertificate = s.ServerCa }))
        using (var dev = _tpm.Open())
            await client.ProvisionAsync(dev, new DeviceIdentity("door-controller", "WEB-0001", "Contoso", "1"), s.Key.Key,
                new DeviceProvisioningOptions { TpmCaCertificate = s.TpmCa, ReplaceAkHandle = true });
        _tpm.EvictPersistent(0x81000002, 0x8100FFFF);

        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var ct = cts.Token;
        await using var browser = new Browser();
        await browser.ConnectAsync(ct);
        await browser.SendAsync("Page.enable", null, ct);
        await browser.SendAsync("Network.enable", null, ct);

        // Without signing in, /devices is the 401 page, not the devices.
        await browser.SendAsync("Page.navigate", new { url = s.Url + "/devices" }, ct);
        await browser.WaitForEventAsync("Page.loadEventFired", ct);
        var anonymous = await browser.EvaluateAsync("document.body.innerText", ct);
        Assert.Contains("UNAUTHENTICATED", anonymous);
        Assert.DoesNotContain("WEB-0001", anonymous);

        // Sign in on the form with the operator token; the server answers with the cookie and a redirect to /devices.
        await browser.SendAsync("Page.navigate", new { url = s.Url + "/login" }, ct);
        await browser.WaitForEventAsync("Page.loadEventFired", ct);
        await browser.EvaluateAsync($"document.querySelector('input[name=token]').value = {JsonSerializer.Serialize(s.Token)}; document.forms[0].submit(); 'ok'", ct);
        await browser.WaitForEventAsync("Page.loadEventFired", ct);
        Assert.EndsWith("/devices", await browser.EvaluateAsync("location.pathname", ct));

        var rows = await browser.EvaluateAsync("JSON.stringify([...document.querySelectorAll('tr.device')].map(r => ({ text: r.innerText, h: r.getBoundingClientRect().height })))", ct);
        var parsed = JsonNode.Parse(rows)!.AsArray();
        var row = Assert.Single(parsed);
        Assert.Contains("WEB-0001", (string)row!["text"]!);
        Assert.Contains("PROVISIONER-FINISHED", (string)row["text"]!);
        Assert.True(row["h"]!.GetValue<double>() > 0, "the device row is laid out (visible)");
        Assert.Equal("true", await browser.EvaluateAsync("document.cookie.includes('tpst_session') === false", ct)); // HttpOnly: not readable by script

        // The page goes live over /ws/devices (same origin, the session cookie): it receives the snapshot.
        string live = "";
        for (var until = DateTime.UtcNow.AddSeconds(60); live != "live" && DateTime.UtcNow < until; await Task.Delay(200, ct))
            live = await browser.EvaluateAsync("document.getElementById('live').textContent", ct);
        Assert.Equal("live", live);

        var shot = await browser.SendAsync("Page.captureScreenshot", new { format = "png" }, ct);
        var png = Convert.FromBase64String(shot["data"]!.GetValue<string>());
        var file = Path.Combine(s.DataPath, "devices.png");
        await File.WriteAllBytesAsync(file, png, ct);
        if (Environment.GetEnvironmentVariable("TPMPROV_KEEP_SCREENSHOT") is { Length: > 0 } keep) File.Copy(file, keep, true);
        Assert.Equal("89504E470D0A1A0A", Convert.ToHexString(png, 0, 8));
        var image = StbImageSharp.ImageResult.FromMemory(png, StbImageSharp.ColorComponents.RedGreenBlueAlpha);
        Assert.True(image.Width >= 800 && image.Height >= 400, $"{image.Width}x{image.Height}");
        Assert.True(image.Data.Distinct().Count() > 16, "the screenshot is not a blank page");
    }
}
