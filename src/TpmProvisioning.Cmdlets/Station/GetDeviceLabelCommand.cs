using System.Management.Automation;
using QRCoder;
using TpmProvisioning.Station;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Cmdlets.Station;

/// <summary>A device label written by Get-DeviceLabel.</summary>
public sealed record DeviceLabel(string Serial, string Vendor, long RecordId, string Payload, string Path, long Bytes);

/// <summary>
/// Renders a device's label: a PNG with a QR code of <c>TPMPROV1;serial=…;ek=…</c> (the serial and its EK certificate's
/// SHA-256), which Test-DeviceQrCode and <c>POST /api/v2/verify-qrcode</c> check against the manufacturing records.
/// </summary>
[Cmdlet(VerbsCommon.Get, "DeviceLabel", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low, DefaultParameterSetName = "DataPath")]
[OutputType(typeof(DeviceLabel))]
public sealed class GetDeviceLabelCommand : StationCmdletBase
{
    /// <summary>The device's serial (its newest manufacturing record is used).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    public string Serial { get; set; } = "";

    /// <summary>The PNG file to write (default: &lt;serial&gt;-label.png in the current folder).</summary>
    [Parameter(Position = 1)]
    public string? Path { get; set; }

    /// <summary>Pixels per QR module (default 10).</summary>
    [Parameter]
    [ValidateRange(1, 64)]
    public int PixelsPerModule { get; set; } = 10;

    protected override void ProcessRecord()
    {
        if (!TryRun(
                async (store, _) => (await store.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery { Serial = Serial, Limit = 1 })).FirstOrDefault(),
                async c =>
                {
                    for (long offset = 0; ; offset += 1000)
                    {
                        var page = await c.GetManufacturingRecordsAsync(offset, 1000);
                        if (page.FirstOrDefault(r => r.Serial == Serial) is { } hit) return hit;
                        if (page.Count < 1000) return null;
                    }
                }, Serial, out var record)) return;
        if (record is null)
        {
            WriteError(new ErrorRecord(new ItemNotFoundException($"No manufacturing record for serial '{Serial}'."), "DEVICE_NOT_FOUND", ErrorCategory.ObjectNotFound, Serial));
            return;
        }
        var payload = DeviceLabels.Payload(record);
        var safe = string.Concat(Serial.Select(ch => char.IsAsciiLetterOrDigit(ch) || ch is '-' or '_' ? ch : '_'));
        var path = GetUnresolvedProviderPathFromPSPath(Path ?? $"{safe}-label.png");
        if (!ShouldProcess(path, $"Write the QR label of {record.Vendor}/{record.Serial}")) return;
        var png = Render(payload, PixelsPerModule);
        try { File.WriteAllBytes(path, png); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            WriteError(new ErrorRecord(ex, "LabelNotWritten", ErrorCategory.WriteError, path));
            return;
        }
        WriteObject(new DeviceLabel(record.Serial, record.Vendor, record.Id, payload, path, png.Length));
    }

    /// <summary>The PNG of a QR code of <paramref name="payload"/> (error correction M, a 4-module quiet zone).</summary>
    public static byte[] Render(string payload, int pixelsPerModule = 10)
    {
        using var generator = new QRCodeGenerator();
        using var data = generator.CreateQrCode(payload, QRCodeGenerator.ECCLevel.M);
        return new PngByteQRCode(data).GetGraphic(pixelsPerModule);
    }
}
