using System.Globalization;
using System.Net.Http.Headers;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Pki;

namespace TpmProvisioning.Station;

/// <summary>
/// A client of the station's image routes (docs/rest/station.md, Images) returning the objects the engine gives a local caller.
/// Uploads stream from disk with progress; hashes follow <c>/ws/sha256</c> (or poll <c>/get-image-sha256</c> when the WebSocket
/// cannot be opened).
/// </summary>
public sealed class StationImageClient : IDisposable
{
    private readonly StationClientOptions _options;
    private readonly HttpClient _http;
    private readonly Uri _base;

    public StationImageClient(StationClientOptions options)
    {
        _options = options ?? throw new ArgumentNullException(nameof(options));
        _base = new Uri(options.Server.GetLeftPart(UriPartial.Authority) + "/");
        // Each call sets its own time limit (an upload or a hash of a large image outlasts the default).
        _http = StationClient.CreateHttp(options, Timeout.InfiniteTimeSpan);
    }

    private async Task<JsonElement> SendAsync(HttpMethod method, string path, HttpContent? content, CancellationToken ct, TimeSpan? timeout = null)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout ?? _options.Timeout);
        using var req = new HttpRequestMessage(method, new Uri(_base, path)) { Content = content };
        using var resp = await _http.SendAsync(req, cts.Token).ConfigureAwait(false);
        var body = await resp.Content.ReadAsStringAsync(cts.Token).ConfigureAwait(false);
        if (resp.IsSuccessStatusCode) return body.Length == 0 ? default : JsonDocument.Parse(body).RootElement.Clone();
        throw StationRequestException.FromResponse((int)resp.StatusCode, resp.ReasonPhrase, body);
    }

    private static string Q(string s) => Uri.EscapeDataString(s);
    private static string? S(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
    private static long L(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt64() : 0;

    private static StationImage ReadImage(JsonElement i)
    {
        string status = S(i, "hash_status") ?? "none";
        return new StationImage
        {
            Name = S(i, "name") ?? "", Type = S(i, "type") ?? "traditional", Size = L(i, "size_bytes"),
            Modified = DateTimeOffset.TryParse(S(i, "last_modified"), CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var t) ? t : default,
            Sha256 = status == "complete" ? S(i, "sha256") : null, HashStatus = status,
            HashProgress = i.TryGetProperty("hash_progress_percent", out var p) && p.ValueKind == JsonValueKind.Number ? p.GetInt32() / 100.0 : null,
            AssignedTo = i.TryGetProperty("assigned_to", out var a) && a.ValueKind == JsonValueKind.Array ? a.EnumerateArray().Select(x => x.GetString() ?? "").ToList() : [],
        };
    }

    public async Task<IReadOnlyList<StationImage>> ListAsync(CancellationToken ct = default) =>
        (await SendAsync(HttpMethod.Get, "images/list", null, ct).ConfigureAwait(false)).GetProperty("images").EnumerateArray().Select(ReadImage).ToList();

    /// <summary>One image (IMAGE_NOT_FOUND or INVALID_IMAGE_NAME from the station otherwise).</summary>
    public async Task<StationImage> GetAsync(string name, CancellationToken ct = default)
    {
        await SendAsync(HttpMethod.Get, "get-image-metadata?name=" + Q(name), null, ct).ConfigureAwait(false);
        return (await ListAsync(ct).ConfigureAwait(false)).FirstOrDefault(i => i.Name == name)
            ?? throw new StationRequestException(404, "IMAGE_NOT_FOUND", "no image with this name");
    }

    public async Task<ImageAnalysis> AnalyzeAsync(string name, CancellationToken ct = default)
    {
        var a = await SendAsync(HttpMethod.Get, "analyze-image?name=" + Q(name), null, ct, TimeSpan.FromHours(1)).ConfigureAwait(false);
        return new ImageAnalysis
        {
            Name = S(a, "name") ?? name, Type = S(a, "type") ?? "", Format = S(a, "format") ?? "", SizeBytes = L(a, "size_bytes"),
            SectorSize = a.TryGetProperty("sector_size", out var ss) && ss.ValueKind == JsonValueKind.Number ? ss.GetInt32() : null, DiskId = S(a, "disk_id"),
            Partitions = a.GetProperty("partitions").EnumerateArray().Select(p => new ImagePartition
            {
                Index = p.GetProperty("index").GetInt32(), Type = S(p, "type") ?? "", TypeName = S(p, "type_name") ?? "", Name = S(p, "name"), Guid = S(p, "guid"),
                Bootable = p.TryGetProperty("bootable", out var b) && b.ValueKind == JsonValueKind.True, StartSector = L(p, "start_sector"), Sectors = L(p, "sectors"),
                Offset = L(p, "offset_bytes"), Size = L(p, "size_bytes"),
            }).ToList(),
            Files = a.GetProperty("files").EnumerateArray().Select(f => new ImageArtefact(S(f, "path") ?? "", L(f, "size_bytes"), S(f, "sha256") ?? "")).ToList(),
            Skipped = a.TryGetProperty("skipped", out var sk) ? sk.EnumerateArray().Select(x => x.GetString() ?? "").ToList() : [],
        };
    }

    /// <summary>Streams a local file to <c>/upload-image</c> (raw bytes); <paramref name="progress"/> hears the bytes sent.</summary>
    public async Task<StationImageUpload> UploadAsync(string path, string name, IProgress<long>? progress = null, CancellationToken ct = default)
    {
        await using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan | FileOptions.Asynchronous);
        using var content = new StreamContent(new ProgressStream(fs, progress), 1 << 20);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        content.Headers.ContentLength = fs.Length;
        var r = await SendAsync(HttpMethod.Post, "upload-image?name=" + Q(name), content, ct, TimeSpan.FromDays(1)).ConfigureAwait(false);
        return new StationImageUpload
        {
            Name = S(r, "filename") ?? name, OriginalName = S(r, "original_filename") ?? name, Renamed = r.TryGetProperty("renamed", out var rn) && rn.ValueKind == JsonValueKind.True,
            Size = L(r, "size_bytes"),
        };
    }

    public async Task DeleteAsync(string name, CancellationToken ct = default) =>
        await SendAsync(HttpMethod.Post, "delete-image", new FormUrlEncodedContent([new("name", name)]), ct).ConfigureAwait(false);

    /// <summary>The image's SHA-256: over <c>/ws/sha256</c> with progress (0 to 1), or by polling when the WebSocket cannot be opened.</summary>
    public async Task<ImageHashState> HashAsync(string name, IProgress<double>? progress = null, CancellationToken ct = default)
    {
        using var ws = new ClientWebSocket();
        if (_options.Token is { Length: > 0 } t) ws.Options.SetRequestHeader("Authorization", "Bearer " + t);
        if (_options.CaCertificate is { } ca) ws.Options.RemoteCertificateValidationCallback = (_, cert, _, errors) => PinnedCaTls.Validates(ca, cert, errors);
        if (_options.ClientCertificate is { } cc) ws.Options.ClientCertificates.Add(cc);
        var wsUri = new UriBuilder(new Uri(_base, "ws/sha256")) { Scheme = _base.Scheme == "https" ? "wss" : "ws" }.Uri;
        try
        {
            await ws.ConnectAsync(wsUri, ct).ConfigureAwait(false);
        }
        catch (WebSocketException)
        {
            return await PollAsync(name, progress, ct).ConfigureAwait(false);
        }
        await ws.SendAsync(JsonSerializer.SerializeToUtf8Bytes(new Dictionary<string, string> { ["action"] = "get_sha256", ["image_name"] = name }), WebSocketMessageType.Text, true, ct).ConfigureAwait(false);
        var buf = new byte[16 * 1024];
        while (true)
        {
            using var ms = new MemoryStream();
            WebSocketReceiveResult r;
            do
            {
                r = await ws.ReceiveAsync(buf, ct).ConfigureAwait(false);
                if (r.MessageType == WebSocketMessageType.Close) throw new StationRequestException(500, "SHA256_ERROR", "the station closed the WebSocket before the hash was complete");
                ms.Write(buf, 0, r.Count);
            } while (!r.EndOfMessage);
            var m = JsonDocument.Parse(ms.ToArray()).RootElement;
            if (S(m, "image_name") is { } n && n != name) continue;
            switch (S(m, "status"))
            {
                case "pending":
                    if (m.TryGetProperty("progress", out var p) && p.ValueKind == JsonValueKind.Number) progress?.Report(p.GetDouble());
                    continue;
                case "complete":
                    progress?.Report(1);
                    try { await ws.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", CancellationToken.None).ConfigureAwait(false); } catch (WebSocketException) { }
                    return new ImageHashState(name, "complete", S(m, "sha256"), 1, null);
                default:
                    string code = S(m, "code") ?? "SHA256_ERROR";
                    throw new StationRequestException(code switch { "IMAGE_NOT_FOUND" => 404, "SHA256_ERROR" => 500, _ => 400 }, code, S(m, "error") ?? "the hash failed");
            }
        }
    }

    private async Task<ImageHashState> PollAsync(string name, IProgress<double>? progress, CancellationToken ct)
    {
        while (true)
        {
            var r = await SendAsync(HttpMethod.Get, "get-image-sha256?name=" + Q(name), null, ct).ConfigureAwait(false);
            if (S(r, "status") == "complete") return new ImageHashState(name, "complete", S(r, "sha256"), 1, null);
            if (S(r, "status") == "error") throw new StationRequestException(500, "SHA256_ERROR", S(r, "sha256") ?? "the hash failed");
            if (r.TryGetProperty("progress", out var p) && p.ValueKind == JsonValueKind.Number) progress?.Report(p.GetDouble());
            await Task.Delay(500, ct).ConfigureAwait(false);
        }
    }

    public void Dispose() => _http.Dispose();

    /// <summary>Reports the bytes read through it.</summary>
    private sealed class ProgressStream(Stream inner, IProgress<long>? progress) : Stream
    {
        private long _read;
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => inner.Length;
        public override long Position { get => _read; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => Count(inner.Read(buffer, offset, count));
        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default) => Count(await inner.ReadAsync(buffer, ct).ConfigureAwait(false));
        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken ct) => ReadAsync(buffer.AsMemory(offset, count), ct).AsTask();
        private int Count(int n) { _read += n; progress?.Report(_read); return n; }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
