using System.Net;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Data.Sqlite;
using TpmProvisioning.Cmdlets.Station;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Server.Hosting;
using TpmProvisioning.Station;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Fixtures;

namespace TpmProvisioning.Tests.Station;

/// <summary>The PowerShell hook runner alone: output, variables, exit codes, throws, a fresh runspace per run, the time limit.</summary>
public sealed class PowerShellScriptRunnerTests
{
    private static Task<ScriptRunResult> Run(string content, TimeSpan? timeout = null, Dictionary<string, object?>? vars = null) =>
        new PowerShellScriptRunner().RunAsync(new ScriptRunRequest
        {
            Name = "tpm-provisioner-post-provision.ps1", Content = content, Variables = vars ?? new() { ["SERIAL"] = "X-1" },
            Timeout = timeout ?? TimeSpan.FromMinutes(2),
        }, CancellationToken.None);

    [Fact]
    public async Task OutputAndVariablesComeBackAsLines()
    {
        var r = await Run("\"serial $SERIAL\"; 1 + 1; $Device.Serial", vars: new() { ["SERIAL"] = "X-1", ["Device"] = new HookDevice("X-1", "V", "n", "1", "s", null, null) });
        Assert.True(r.Succeeded, r.Error);
        Assert.Equal(["serial X-1", "2", "X-1"], r.Output);
        Assert.Equal(0, r.ExitCode);
    }

    [Fact]
    public async Task ANonZeroExitOrAThrowFails()
    {
        var exit = await Run("'before'; exit 3; 'after'");
        Assert.False(exit.Succeeded);
        Assert.Equal(3, exit.ExitCode);
        Assert.Equal("exit code 3", exit.Error);
        Assert.Equal(["before"], exit.Output);

        var thrown = await Run("throw 'no label stock'");
        Assert.False(thrown.Succeeded);
        Assert.Equal("no label stock", thrown.Error);
        Assert.False(thrown.TimedOut);
    }

    [Fact]
    public async Task EachRunHasAFreshRunspace()
    {
        Assert.True((await Run("$global:leak = 'x'; exit 0")).Succeeded);
        var second = await Run("\"[$global:leak]\"");
        Assert.Equal(["[]"], second.Output);
    }

    [Fact]
    public async Task ALoopThatNeverEndsIsStoppedAtItsLimit()
    {
        var r = await Run("'looping'; while ($true) { }", TimeSpan.FromSeconds(1));
        Assert.False(r.Succeeded);
        Assert.True(r.TimedOut);
        Assert.Equal(124, r.ExitCode);
        Assert.Equal(["looping"], r.Output);
    }
}

/// <summary>
/// Hooks on a real provisioning (swtpm, HTTPS, SQLite) with the PowerShell runner: a failing provision-started stops the
/// device (PROVISIONER-ABORTED, no record, provision-failed ran), a loop is stopped at the station's limit, and an enabled
/// certificate-issued hook's output lands in the device log.
/// </summary>
public sealed class StationHookTests : IClassFixture<SwtpmFixture>, IAsyncLifetime
{
    private readonly SwtpmFixture _tpm;
    private readonly string _data = Directory.CreateTempSubdirectory("tpmprov-hooks-").FullName;
    private IServerHost _host = null!;
    private SqliteStore _store = null!;
    private StationService _station = null!;
    private NewApiKey _key = null!;
    private X509Certificate2 _serverCa = null!, _tpmCa = null!;

    public StationHookTests(SwtpmFixture tpm) => _tpm = tpm;

    public async Task InitializeAsync()
    {
        EkTrustStore.Add(_data, X509Certificate2.CreateFromPem(File.ReadAllText(_tpm.Swtpm.ManufacturerRootPath)), EkTrustKind.Root);
        EkTrustStore.Add(_data, X509Certificate2.CreateFromPem(File.ReadAllText(_tpm.Swtpm.ManufacturerIssuerPath)), EkTrustKind.Intermediate);
        _host = await ProvisioningServerHost.StartAsync(new ServerOptions
        {
            DataPath = _data, Port = 0, Roles = ServerRole.Provisioning | ServerRole.Station,
            Station = new StationSettings { HookTimeout = TimeSpan.FromSeconds(2), ScriptRunner = new PowerShellScriptRunner() },
        });
        _store = await SqliteStore.OpenInDataPathAsync(_data);
        _key = await new ApiKeyManager(_store).CreateAsync("plant", ["Contoso"]);
        _serverCa = X509Certificate2.CreateFromPem(File.ReadAllText(_host.Info.CaCertificatePath!));
        _tpmCa = X509Certificate2.CreateFromPem(File.ReadAllText(Path.Combine(ProvisioningPaths.TpmCa(_data), TpmCa.CertFileName)));
        // The admin side of the same scripts folder (as Set-ProvisioningScript -DataPath works).
        _station = new StationService(_store, new StationSettings(), _data);
    }

    public async Task DisposeAsync()
    {
        _tpm.EvictPersistent(0x81000002, 0x8100FFFF);
        await _host.StopAsync();
        _store.Dispose();
        SqliteConnection.ClearAllPools();
        try { Directory.Delete(_data, true); } catch (IOException) { }
    }

    private async Task<DeviceProvisioningResult> ProvisionAsync(string serial)
    {
        using var client = new ProvisioningClient(new ProvisioningClientOptions { Server = new Uri(_host.Info.Urls[0]), CaCertificate = _serverCa });
        using var dev = _tpm.Open();
        return await client.ProvisionAsync(dev, new DeviceIdentity("door-controller", serial, "Contoso", "1"), _key.Key,
            new DeviceProvisioningOptions { TpmCaCertificate = _tpmCa, ReplaceAkHandle = true });
    }

    private void Hook(string stage, string content, bool enabled = true)
    {
        _station.Scripts.Save(StationScripts.HookName(stage), content);
        _station.Scripts.SetEnabled(StationScripts.HookName(stage), enabled);
    }

    private async Task<string> LogAsync(string serial, DeviceLogType log) =>
        string.Join("\n", (await _store.GetDeviceLogAsync(serial, log)).Select(l => l.Line));

    [Fact]
    public async Task HooksStopProvisioningOrWriteToTheDeviceLog()
    {
        const string serial = "HOOK-0001";
        Hook(HookStages.ProvisionStarted, "'checking label stock'; throw 'line stopped: no label stock'");
        Hook(HookStages.ProvisionFailed, "\"cleanup for $SERIAL after $PROVISION_FAILED_CONTEXT\"");

        // 1. A failing provision-started stops the device with its message; no record; provision-failed ran.
        var ex = await Assert.ThrowsAsync<ProvisioningRequestException>(() => ProvisionAsync(serial));
        Assert.Equal(HttpStatusCode.Forbidden, ex.StatusCode);
        Assert.Contains("line stopped: no label stock", ex.ServerMessage);
        Assert.Equal(0, await _store.CountManufacturingRecordsAsync());
        var history = await _store.GetDeviceHistoryAsync(serial);
        Assert.Equal(DeviceStates.ProvisionerAborted, history[^1].State);
        Assert.Contains("line stopped: no label stock", history[^1].Detail);
        Assert.DoesNotContain(history, h => h.State == DeviceStates.ProvisionerFinished);
        var log = await LogAsync(serial, DeviceLogType.Provisioner);
        Assert.Contains("tpm-provisioner-provision-started.ps1: checking label stock", log);
        Assert.Contains("hook tpm-provisioner-provision-started.ps1 failed: line stopped: no label stock", log);
        Assert.Contains("provisioner aborted: 403", log);
        Assert.Contains("tpm-provisioner-provision-failed.ps1: cleanup for HOOK-0001 after provisioning", log);
        Assert.DoesNotContain("AK certificate issued", log);

        // 2. A hook that loops forever is stopped at the station's limit (2 s here) and reported; still no record.
        Hook(HookStages.ProvisionStarted, "while ($true) { }");
        var ex2 = await Assert.ThrowsAsync<ProvisioningRequestException>(() => ProvisionAsync(serial));
        Assert.Contains("stopped after its time limit of 2 s", ex2.ServerMessage);
        Assert.Equal(0, await _store.CountManufacturingRecordsAsync());
        Assert.Contains("hook tpm-provisioner-provision-started.ps1 failed: stopped after its time limit of 2 s", await LogAsync(serial, DeviceLogType.Provisioner));
        Assert.Equal(DeviceStates.ProvisionerAborted, (await _store.GetDeviceHistoryAsync(serial))[^1].State);

        // 3. With provision-started disabled, an enabled certificate-issued hook's output lands in the device log.
        _station.Scripts.SetEnabled(StationScripts.HookName(HookStages.ProvisionStarted), false);
        Hook(HookStages.CertificateIssued, "\"issued for $SERIAL ($($Device.Vendor)) cert $AK_CERT_SERIAL\"");
        Hook(HookStages.PostProvision, "\"record for $($Record.Serial) ek $($Record.EkFingerprint)\"");
        var ok = await ProvisionAsync(serial);
        log = await LogAsync(serial, DeviceLogType.Provisioner);
        Assert.Contains($"tpm-provisioner-certificate-issued.ps1: issued for HOOK-0001 (Contoso) cert {ok.AkCertificate.SerialNumber}", log);
        Assert.Contains($"tpm-provisioner-post-provision.ps1: record for HOOK-0001 ek {ok.EkThumbprint}", log);
        Assert.Equal(DeviceStates.ProvisionerFinished, (await _store.GetDeviceHistoryAsync(serial))[^1].State);
        Assert.Equal(1, await _store.CountManufacturingRecordsAsync());

        // 4. The device's QR label decodes to its payload, which the station's route verifies.
        var record = Assert.Single(await _store.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery { Serial = serial }));
        string scanned = QrLabelTests.Decode(GetDeviceLabelCommand.Render(DeviceLabels.Payload(record), 4));
        Assert.Equal($"TPMPROV1;serial=HOOK-0001;ek={ok.EkThumbprint}", scanned);
        var token = await new StationTokenManager(_store).CreateAsync("scanner");
        using var client = new StationClient(new StationClientOptions { Server = new Uri(_host.Info.Urls[0]), Token = token.Token, CaCertificate = _serverCa });
        var verdict = await client.VerifyQrCodeAsync(scanned);
        Assert.True(verdict.Exists);
        Assert.Equal(record.Id, verdict.RecordId);
        Assert.False((await client.VerifyQrCodeAsync(scanned.Replace(ok.EkThumbprint, new string('A', 64)))).Exists);
    }
}

/// <summary>Labels: what Get-DeviceLabel encodes is what a QR reader (ZXing) decodes from the PNG.</summary>
public sealed class QrLabelTests
{
    /// <summary>Decodes the QR code in a PNG (StbImageSharp for the pixels, ZXing for the code).</summary>
    public static string Decode(byte[] png)
    {
        var image = StbImageSharp.ImageResult.FromMemory(png, StbImageSharp.ColorComponents.RedGreenBlueAlpha);
        var source = new ZXing.RGBLuminanceSource(image.Data, image.Width, image.Height, ZXing.RGBLuminanceSource.BitmapFormat.RGBA32);
        var reader = new ZXing.BarcodeReaderGeneric { Options = { PossibleFormats = [ZXing.BarcodeFormat.QR_CODE], TryHarder = true } };
        var result = reader.Decode(source) ?? throw new InvalidOperationException("no QR code found in the PNG");
        return result.Text;
    }

    [Theory]
    [InlineData("TPMPROV1;serial=GW-004711;ek=9F3C1E7A5B2D4C6E8F0A1B3C5D7E9F1A2B4C6D8E0F1A3B5C7D9E1F2A4B6C8D0E", 10)]
    [InlineData("TPMPROV1;serial=a%20b%3Bc;ek=00", 3)]
    public void TheLabelDecodesToItsPayload(string payload, int pixels)
    {
        var png = GetDeviceLabelCommand.Render(payload, pixels);
        Assert.Equal("89504E470D0A1A0A", Convert.ToHexString(png, 0, 8));
        Assert.Equal(payload, Decode(png));
        Assert.True(DeviceLabels.TryParse(payload, out var serial, out _));
        Assert.False(string.IsNullOrEmpty(serial));
    }
}
