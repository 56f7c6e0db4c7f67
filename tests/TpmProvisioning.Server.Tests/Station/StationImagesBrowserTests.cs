using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace TpmProvisioning.Tests.Station;

/// <summary>
/// Debian's headless Chromium on the images page: signed in with an operator token, it lists an image with its size, and the
/// hash button starts a hash whose progress arrives over <c>/ws/sha256</c> and reaches 100 % with the file's SHA-256; a screenshot
/// of the page is a real PNG.
/// </summary>
public sealed class StationImagesBrowserTests
{
    private static X509Certificate2 ThrowawayRoot()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest("CN=unused manufacturer", key, HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        return req.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
    }

    [Fact]
    public async Task TheHashButtonShowsProgressOverTheWebSocketUpTo100Percent()
    {
        await using var s = await StationTestServer.StartAsync(ThrowawayRoot(), null);
        var images = Path.Combine(s.DataPath, "station", "images");
        Directory.CreateDirectory(images);
        string file = Path.Combine(images, "browser-os.img");
        await using (var fs = File.Create(file))
            for (int i = 0; i < 16; i++) await fs.WriteAsync(RandomNumberGenerator.GetBytes(4 << 20));
        string expected = Convert.ToHexStringLower(SHA256.HashData(await File.ReadAllBytesAsync(file)));

        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var ct = cts.Token;
        await using var browser = new StationBrowserTests.Browser();
        await browser.ConnectAsync(ct);
        await browser.SendAsync("Page.enable", null, ct);
        await browser.SendAsync("Page.navigate", new { url = s.Url + "/login?next=/images/list" }, ct);
        await browser.WaitForEventAsync("Page.loadEventFired", ct);
        await browser.EvaluateAsync($"document.querySelector('input[name=token]').value = {JsonSerializer.Serialize(s.Token)}; document.forms[0].submit(); 'ok'", ct);
        await browser.WaitForEventAsync("Page.loadEventFired", ct);
        Assert.EndsWith("/images/list", await browser.EvaluateAsync("location.pathname", ct));

        var row = JsonNode.Parse(await browser.EvaluateAsync("JSON.stringify([...document.querySelectorAll('tr.image')].map(r => ({ name: r.dataset.name, text: r.innerText })))", ct))!.AsArray();
        var only = Assert.Single(row);
        Assert.Equal("browser-os.img", (string)only!["name"]!);
        Assert.Contains("67,108,864 bytes", (string)only["text"]!);
        Assert.Contains("not computed", (string)only["text"]!);

        await browser.EvaluateAsync("document.querySelector('tr.image button.hash').click(); 'clicked'", ct);
        string sha = "";
        for (var until = DateTime.UtcNow.AddMinutes(2); sha.Length == 0 && DateTime.UtcNow < until; await Task.Delay(200, ct))
            sha = await browser.EvaluateAsync("document.querySelector('tr.image').getAttribute('data-sha256') || ''", ct);
        Assert.Equal(expected, sha);
        Assert.Equal("100%", await browser.EvaluateAsync("document.querySelector('tr.image .pct').textContent", ct));
        Assert.Equal("100", await browser.EvaluateAsync("String(document.querySelector('tr.image progress.hashbar').value)", ct));
        // The page heard the steps over the WebSocket, in order, up to 100.
        var steps = JsonNode.Parse(await browser.EvaluateAsync("JSON.stringify(window.hashProgress || [])", ct))!.AsArray().Select(n => n!.GetValue<int>()).ToList();
        Assert.Contains(100, steps);
        Assert.True(steps.Count(p => p is > 0 and < 100) >= 3, "progress steps between 0 and 100: " + string.Join(",", steps));
        Assert.Equal(steps.Order(), steps);

        var shot = await browser.SendAsync("Page.captureScreenshot", new { format = "png" }, ct);
        var png = Convert.FromBase64String(shot["data"]!.GetValue<string>());
        var path = Path.Combine(s.DataPath, "images.png");
        await File.WriteAllBytesAsync(path, png, ct);
        if (Environment.GetEnvironmentVariable("TPMPROV_KEEP_IMAGES_SCREENSHOT") is { Length: > 0 } keep) File.Copy(path, keep, true);
        Assert.Equal("89504E470D0A1A0A", Convert.ToHexString(png, 0, 8));
        var image = StbImageSharp.ImageResult.FromMemory(png, StbImageSharp.ColorComponents.RedGreenBlueAlpha);
        Assert.True(image.Width >= 800 && image.Height >= 400, $"{image.Width}x{image.Height}");
        Assert.True(image.Data.Distinct().Count() > 16, "the screenshot is not a blank page");
    }
}
