using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Pki;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Station;

/// <summary>How to reach a station.</summary>
public sealed class StationClientOptions
{
    public required Uri Server { get; init; }
    /// <summary>An operator token (<c>tpst_…</c>), sent as <c>Authorization: Bearer</c>.</summary>
    public string? Token { get; init; }
    /// <summary>The CA the server's certificate must chain to (the server's components CA); null uses the system's trust.</summary>
    public X509Certificate2? CaCertificate { get; init; }
    /// <summary>A components-CA client certificate, instead of a token.</summary>
    public X509Certificate2? ClientCertificate { get; init; }
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(60);
}

/// <summary>The station answered with its error object.</summary>
public sealed class StationRequestException(int status, string code, string detail) : Exception($"{status} {code}: {detail}")
{
    public int Status { get; } = status;
    public string Code { get; } = code;
    public string Detail { get; } = detail;

    /// <summary>The failure a station answer describes: its error object's code and detail, else <c>HTTP_&lt;status&gt;</c> and the reason.</summary>
    internal static StationRequestException FromResponse(int status, string? reason, string body)
    {
        string code = "HTTP_" + status, detail = reason ?? "";
        try
        {
            using var doc = JsonDocument.Parse(body);
            if (doc.RootElement.TryGetProperty("error", out var e) && e.ValueKind == JsonValueKind.Object)
            {
                code = e.TryGetProperty("code", out var c) ? c.GetString() ?? code : code;
                detail = e.TryGetProperty("detail", out var d) ? d.GetString() ?? detail : detail;
            }
        }
        catch (JsonException) { }
        return new StationRequestException(status, code, detail);
    }
}

/// <summary>
/// A client of the station's REST surface (docs/rest/station.md) that returns the same objects the engine gives a local caller,
/// so a cmdlet's <c>-Server</c> and <c>-DataPath</c> output look alike.
/// </summary>
public sealed partial class StationClient : IDisposable
{
    private readonly HttpClient _http;
    private readonly Uri _base;

    public StationClient(StationClientOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _base = new Uri(options.Server.GetLeftPart(UriPartial.Authority) + "/");
        _http = CreateHttp(options, options.Timeout);
    }

    /// <summary>
    /// The HTTP client of a station client: the server certificate pinned to <see cref="StationClientOptions.CaCertificate"/>,
    /// the client certificate and the bearer token presented, JSON asked for.
    /// </summary>
    internal static HttpClient CreateHttp(StationClientOptions options, TimeSpan timeout)
    {
        var handler = new SocketsHttpHandler { UseCookies = false };
        if (options.CaCertificate is { } ca)
            handler.SslOptions.RemoteCertificateValidationCallback = (_, cert, _, errors) => PinnedCaTls.Validates(ca, cert, errors);
        if (options.ClientCertificate is { } cc)
            handler.SslOptions.LocalCertificateSelectionCallback = (_, _, _, _, _) => cc;
        var http = new HttpClient(handler) { Timeout = timeout };
        if (options.Token is { Length: > 0 } t) http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", t);
        http.DefaultRequestHeaders.Accept.Add(new MediaTypeWithQualityHeaderValue("application/json"));
        return http;
    }

    private async Task<string> SendAsync(HttpMethod method, string path, HttpContent? content, CancellationToken ct)
    {
        using var req = new HttpRequestMessage(method, new Uri(_base, path)) { Content = content };
        using var resp = await _http.SendAsync(req, ct).ConfigureAwait(false);
        var body = await resp.Content.ReadAsStringAsync(ct).ConfigureAwait(false);
        if (resp.IsSuccessStatusCode) return body;
        throw StationRequestException.FromResponse((int)resp.StatusCode, resp.ReasonPhrase, body);
    }

    private async Task<JsonElement> GetJsonAsync(string path, CancellationToken ct) =>
        JsonDocument.Parse(await SendAsync(HttpMethod.Get, path, null, ct).ConfigureAwait(false)).RootElement.Clone();

    private static string Q(string s) => Uri.EscapeDataString(s);
    private static string? S(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
    private static DateTimeOffset T(JsonElement e, string name) =>
        S(e, name) is { } s && DateTimeOffset.TryParse(s, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var t) ? t : default;

    public async Task<IReadOnlyList<ManufacturingRecord>> GetManufacturingRecordsAsync(long offset, long? limit, CancellationToken ct = default)
    {
        var root = await GetJsonAsync($"api/v2/manufacturing?offset={offset}" + (limit is { } l ? $"&limit={l}" : ""), ct).ConfigureAwait(false);
        return root.EnumerateArray().Select(r => new ManufacturingRecord
        {
            Id = r.GetProperty("id").GetInt64(), Time = T(r, "provision_time"), Serial = S(r, "serial") ?? "", Vendor = S(r, "vendor") ?? "",
            DeviceName = S(r, "name") ?? "", DeviceVersion = S(r, "version") ?? "", EkFingerprint = S(r, "ek_cert_sha256") ?? "",
            AkName = S(r, "ak_name") ?? "", AkCertificateSerial = S(r, "ak_cert_serial") ?? "",
            AkCertificate = S(r, "ak_cert") is { } b ? Convert.FromBase64String(b) : [], ApiKeyId = S(r, "api_key_id") ?? "",
        }).ToList();
    }

    public async Task<IReadOnlyList<StationDevice>> GetDevicesAsync(string? state, CancellationToken ct = default)
    {
        var root = await GetJsonAsync("devices" + (state is null ? "" : "?state=" + Q(state)), ct).ConfigureAwait(false);
        return root.GetProperty("devices").EnumerateArray().Select(d => new StationDevice
        {
            Serial = S(d, "serial") ?? "", Vendor = S(d, "vendor") ?? "", Name = S(d, "name"), State = S(d, "state") ?? "", Address = S(d, "ip_address"),
            FirstSeen = T(d, "first_seen"), LastSeen = T(d, "last_seen"),
        }).ToList();
    }

    public async Task<StationDeviceDetail> GetDeviceAsync(string serial, CancellationToken ct = default)
    {
        var d = await GetJsonAsync("devices/" + Q(serial), ct).ConfigureAwait(false);
        string vendor = S(d, "vendor") ?? "";
        return new StationDeviceDetail
        {
            Serial = S(d, "serial") ?? serial, Vendor = vendor, Name = S(d, "name"), State = S(d, "state") ?? "", Address = S(d, "ip_address"),
            FirstSeen = T(d, "first_seen"), LastSeen = T(d, "last_seen"),
            History = d.GetProperty("history").EnumerateArray().Select(h => new DeviceStateChange
            {
                Serial = serial, Vendor = vendor, State = S(h, "state") ?? "", Time = T(h, "timestamp"), Detail = S(h, "detail"),
            }).ToList(),
        };
    }

    public async Task<IReadOnlyList<DeviceLogLine>> GetLogAsync(string serial, DeviceLogType log, CancellationToken ct = default)
    {
        var text = await SendAsync(HttpMethod.Get, $"devices/{Q(serial)}/log/{log.ToString().ToLowerInvariant()}", null, ct).ConfigureAwait(false);
        var lines = new List<DeviceLogLine>();
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            int sp = line.IndexOf(' ');
            DateTimeOffset.TryParse(sp > 0 ? line[..sp] : "", CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var t);
            lines.Add(new DeviceLogLine { Serial = serial, Vendor = "", Log = log, Time = t, Line = sp > 0 ? line[(sp + 1)..] : line });
        }
        return lines;
    }

    public async Task<IReadOnlyList<StationScript>> ListScriptsAsync(CancellationToken ct = default)
    {
        var root = await GetJsonAsync("customisation/list-scripts", ct).ConfigureAwait(false);
        return root.GetProperty("scripts").EnumerateArray().Select(ReadScript).ToList();
    }

    private static StationScript ReadScript(JsonElement s) => new()
    {
        Filename = S(s, "filename") ?? "", Name = S(s, "name") ?? "", Exists = s.TryGetProperty("exists", out var x) && x.GetBoolean(),
        Enabled = s.TryGetProperty("enabled", out var en) && en.GetBoolean(), Sha256 = S(s, "sha256"),
        Size = s.TryGetProperty("size", out var z) && z.ValueKind == JsonValueKind.Number ? z.GetInt64() : 0,
        Provisioner = S(s, "provisioner"), Stage = S(s, "stage"), Description = S(s, "description"),
    };

    public async Task<StationScript> GetScriptAsync(string name, CancellationToken ct = default)
    {
        var g = await GetJsonAsync("customisation/get-script?script=" + Q(name), ct).ConfigureAwait(false);
        var meta = (await ListScriptsAsync(ct).ConfigureAwait(false)).FirstOrDefault(s => s.Name == S(g, "filename"));
        return (meta ?? new StationScript { Filename = S(g, "filename") + StationScripts.Extension, Name = S(g, "filename") ?? name }) with
        {
            Content = S(g, "content"), Exists = g.GetProperty("exists").GetBoolean(), Enabled = g.GetProperty("enabled").GetBoolean(),
        };
    }

    public async Task<StationScript> SaveScriptAsync(string name, string content, CancellationToken ct = default)
    {
        var body = JsonSerializer.Serialize(new Dictionary<string, string> { ["filename"] = name, ["content"] = content });
        var r = await SendAsync(HttpMethod.Post, "customisation/save-script", new StringContent(body, Encoding.UTF8, "application/json"), ct).ConfigureAwait(false);
        return ReadScript(JsonDocument.Parse(r).RootElement);
    }

    /// <summary>Enable, disable or delete (<paramref name="operation"/> is <c>enable</c>, <c>disable</c> or <c>delete</c>).</summary>
    public async Task ScriptOperationAsync(string operation, string name, CancellationToken ct = default) =>
        await SendAsync(HttpMethod.Post, $"customisation/{operation}-script", new FormUrlEncodedContent([new("script", name)]), ct).ConfigureAwait(false);

    public async Task<(bool Exists, string? Serial, string? Vendor, long? RecordId)> VerifyQrCodeAsync(string text, CancellationToken ct = default)
    {
        var r = JsonDocument.Parse(await SendAsync(HttpMethod.Post, "api/v2/verify-qrcode",
            new StringContent(JsonSerializer.Serialize(new Dictionary<string, string> { ["qrcode"] = text }), Encoding.UTF8, "application/json"), ct).ConfigureAwait(false)).RootElement;
        return (r.GetProperty("exists").GetBoolean(), S(r, "serial"), S(r, "vendor"),
            r.TryGetProperty("manufacturing_id", out var id) && id.ValueKind == JsonValueKind.Number ? id.GetInt64() : null);
    }

    public async Task<IReadOnlyList<AuditEntry>> GetAuditAsync(AuditQuery query, CancellationToken ct = default)
    {
        var q = new List<string> { "limit=" + Math.Clamp(query.Limit, 1, 10_000) };
        if (query.Action is { } a) q.Add("event_type=" + Q(a));
        if (query.Actor is { } c) q.Add("client=" + Q(c));
        if (query.Source is { } src) q.Add("client_ip=" + Q(src));
        if (query.Outcome is { } o) q.Add("outcome=" + o);
        if (query.Since is { } since) q.Add("start_date=" + Q(since.UtcDateTime.ToString("o", CultureInfo.InvariantCulture)));
        if (query.Until is { } until) q.Add("end_date=" + Q(until.UtcDateTime.ToString("o", CultureInfo.InvariantCulture)));
        var root = await GetJsonAsync("auditlog?" + string.Join("&", q), ct).ConfigureAwait(false);
        return root.GetProperty("audit_entries").EnumerateArray().Select(e => new AuditEntry
        {
            Id = e.GetProperty("id").GetInt64(), Time = T(e, "timestamp"), Action = S(e, "event_type") ?? "", Actor = S(e, "client") ?? "",
            Source = S(e, "client_ip") ?? "", Target = S(e, "target_path"), Detail = S(e, "additional_info"),
            Outcome = Enum.TryParse<AuditOutcome>(S(e, "outcome"), out var oc) ? oc : AuditOutcome.Failed,
        }).ToList();
    }

    public void Dispose() => _http.Dispose();
}
