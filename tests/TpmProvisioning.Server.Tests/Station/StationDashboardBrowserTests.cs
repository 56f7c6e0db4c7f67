using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using System.Text.Json.Nodes;
using TpmProvisioning.Configuration;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Tests.Fixtures;

namespace TpmProvisioning.Tests.Station;

/// <summary>
/// One swtpm, one station with a provisioned device, firmware releases, a changed setting, and one headless Chromium signed in
/// with an operator token: shared by every page of the dashboard test. Everything started here is stopped on dispose
/// (Chromium and swtpm by process id).
/// </summary>
public sealed class DashboardFixture : SwtpmFixture, IAsyncLifetime
{
    public StationTestServer Server { get; private set; } = null!;
    internal StationBrowserTests.Browser Browser { get; private set; } = null!;
    public string ShotDirectory { get; } = Directory.CreateTempSubdirectory("tpmprov-dashboard-shots-").FullName;

    public async Task InitializeAsync()
    {
        var root = X509Certificate2.CreateFromPem(File.ReadAllText(Swtpm.ManufacturerRootPath));
        var issuer = X509Certificate2.CreateFromPem(File.ReadAllText(Swtpm.ManufacturerIssuerPath));
        Server = await StationTestServer.StartAsync(root, issuer);
        using (var client = new ProvisioningClient(new ProvisioningClientOptions { Server = new Uri(Server.Url), CaCertificate = Server.ServerCa }))
        using (var dev = Open())
            await client.ProvisionAsync(dev, new DeviceIdentity("door-controller", "DASH-0001", "Contoso", "1"), Server.Key.Key,
                new DeviceProvisioningOptions { TpmCaCertificate = Server.TpmCa, ReplaceAkHandle = true });
        EvictPersistent(0x81000002, 0x8100FFFF);
        StationOptionsTests.WriteFirmware(Server.DataPath);
        Assert.Equal(System.Net.HttpStatusCode.OK, (await Server.PostJsonAsync("/options/firmware/set", "{\"family\":\"cm4\",\"version\":\"2025-05-08\"}")).Status);
        Assert.Equal(System.Net.HttpStatusCode.OK, (await Server.PostJsonAsync("/options/set", "{\"STATION_WATCH_INTERVAL_SECONDS\":12}")).Status);
        Assert.Equal(System.Net.HttpStatusCode.OK, (await Server.PostJsonAsync("/customisation/save-script", "{\"filename\":\"tpm-provisioner-post-provision\",\"content\":\"'labelled'\"}")).Status);

        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        Browser = new StationBrowserTests.Browser();
        await Browser.ConnectAsync(cts.Token);
        await Browser.SendAsync("Page.enable", null, cts.Token);
        await Browser.SendAsync("Page.navigate", new { url = Server.Url + "/login" }, cts.Token);
        await Browser.WaitForEventAsync("Page.loadEventFired", cts.Token);
        await Browser.EvaluateAsync($"document.querySelector('input[name=token]').value = {JsonSerializer.Serialize(Server.Token)}; document.forms[0].submit(); 'ok'", cts.Token);
        await Browser.WaitForEventAsync("Page.loadEventFired", cts.Token);
    }

    public async Task DisposeAsync()
    {
        if (Browser is not null) await Browser.DisposeAsync();
        if (Server is not null) await Server.DisposeAsync();
        if (Environment.GetEnvironmentVariable("TPMPROV_KEEP_SCREENSHOTS") is { Length: > 0 } keep)
        {
            Directory.CreateDirectory(keep);
            foreach (var f in Directory.EnumerateFiles(ShotDirectory)) File.Copy(f, Path.Combine(keep, Path.GetFileName(f)), true);
        }
        try { Directory.Delete(ShotDirectory, true); } catch (IOException) { }
    }
}

/// <summary>
/// Every page of the dashboard in headless Chromium (Debian's chromium over the DevTools protocol): one navigation bar, the
/// page's own content visible (laid out with a height), and a real, non-blank screenshot of each.
/// </summary>
public sealed class StationDashboardBrowserTests(DashboardFixture fx) : IClassFixture<DashboardFixture>
{
    [Theory]
    [InlineData("devices", "/devices", "tr.device", "DASH-0001")]
    [InlineData("device", "/devices/DASH-0001", "main table", "PROVISIONER-FINISHED")]
    [InlineData("manufacturing", "/api/v2/manufacturing", "tr.record", "DASH-0001")]
    [InlineData("scripts", "/customisation/list-scripts", "main table", "tpm-provisioner-post-provision.ps1")]
    [InlineData("options", "/options/get", "tr.option", "STATION_HOOK_TIMEOUT_SECONDS")]
    [InlineData("firmware", "/options/firmware", "tr.release", "pieeprom")]
    [InlineData("audit", "/auditlog", "main table", "station.options.changed")]
    public async Task EachDashboardPageShowsItsContentUnderOneNavigation(string name, string path, string selector, string expected)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var ct = cts.Token;
        var b = fx.Browser;
        await b.SendAsync("Page.navigate", new { url = fx.Server.Url + path }, ct);
        await b.WaitForEventAsync("Page.loadEventFired", ct);
        Assert.Equal(path.Split('?')[0], await b.EvaluateAsync("location.pathname", ct));

        // The one navigation: every dashboard page is linked from every page.
        var nav = JsonNode.Parse(await b.EvaluateAsync("JSON.stringify([...document.querySelectorAll('header a')].map(a => a.textContent))", ct))!.AsArray().Select(n => (string)n!).ToList();
        foreach (var item in new[] { "Devices", "Manufacturing", "Images", "Scripts", "Options", "Firmware", "Audit log" }) Assert.Contains(item, nav);

        // The page's content, visible.
        var found = JsonNode.Parse(await b.EvaluateAsync(
            $"JSON.stringify([...document.querySelectorAll({JsonSerializer.Serialize(selector)})].map(e => ({{ text: e.innerText, h: e.getBoundingClientRect().height }})))", ct))!.AsArray();
        Assert.NotEmpty(found);
        var hit = found.FirstOrDefault(e => ((string)e!["text"]!).Contains(expected, StringComparison.Ordinal));
        Assert.True(hit is not null, $"{name}: '{expected}' not in {selector}: {found.ToJsonString()[..Math.Min(400, found.ToJsonString().Length)]}");
        Assert.True(hit!["h"]!.GetValue<double>() > 0, $"{name}: the content is laid out");

        var text = await b.EvaluateAsync("document.body.innerText", ct);
        switch (name)
        {
            case "options":
                Assert.Equal(SettingsCatalog.All.Count, found.Count);
                Assert.Contains("Restart needed", text);           // the stored STATION_WATCH_INTERVAL_SECONDS waits for a restart
                Assert.Contains("from 1 to 86400", text);          // rules shown
                Assert.Contains("start parameter", text);          // start-only settings shown as such
                break;
            case "firmware":
                Assert.Contains("selected", text);
                Assert.Equal(4, found.Count);
                break;
            case "device":
                Assert.Contains("AK certificate serial", text);
                break;
        }

        var shot = await b.SendAsync("Page.captureScreenshot", new { format = "png", captureBeyondViewport = false }, ct);
        var png = Convert.FromBase64String(shot["data"]!.GetValue<string>());
        await File.WriteAllBytesAsync(Path.Combine(fx.ShotDirectory, name + ".png"), png, ct);
        Assert.Equal("89504E470D0A1A0A", Convert.ToHexString(png, 0, 8));
        var image = StbImageSharp.ImageResult.FromMemory(png, StbImageSharp.ColorComponents.RedGreenBlueAlpha);
        Assert.True(image.Width >= 800 && image.Height >= 400, $"{image.Width}x{image.Height}");
        Assert.True(image.Data.Distinct().Count() > 16, $"{name}: the screenshot is not a blank page");
    }
}
