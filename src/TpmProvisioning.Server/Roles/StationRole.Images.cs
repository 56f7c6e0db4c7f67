using System.Globalization;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Extensions.Logging;
using Microsoft.Net.Http.Headers;
using TpmProvisioning.Station;

namespace TpmProvisioning.Server.Roles;

/// <summary>
/// Images (<c>/get-images</c>, <c>/images/*</c>, <c>/get-image-*</c>, <c>/upload-image</c>, <c>/delete-image</c>, <c>/analyze-image</c>)
/// and <c>/ws/sha256</c>. Every name is a plain file name of the images folder (<see cref="StationImages.NameProblem"/>); anything
/// else is the error object before the folder is touched. Uploads stream to disk and are not charged to the server's body budget.
/// </summary>
internal sealed partial class StationRole
{
    private static void MapImages(IEndpointRouteBuilder routes, StationEnv env)
    {
        var station = env.Station;
        var images = station.Images;
        int cleaned = images.CleanLeftovers();
        env.Log.LogInformation("Station: images in {Folder}, upload limit {Max} bytes; {Cleaned} unfinished upload(s) removed", images.Directory, images.MaxBytes, cleaned);

        foreach (var path in new[] { "/images/list", "/get-images" })
            Route(routes, env, path, "GET", Access.Operator, "station.image.list", async (http, caller) =>
            {
                var list = await station.ListImagesAsync(http.RequestAborted);
                if (WantsHtml(http)) return Html(StationPages.Images(list, caller));
                return JsonOk(new Dictionary<string, object?> { ["images"] = list.Select(i => ImageJson(env, i)).ToList() });
            });

        Route(routes, env, "/get-image-metadata", "GET", Access.Operator, "station.image.metadata", (http, _) =>
        {
            var m = images.Metadata(ImageName(http));
            double mb = m.SizeBytes / 1048576.0;
            return Task.FromResult(JsonOk(new Dictionary<string, object?>
            {
                ["name"] = m.Name, ["type"] = m.Type, ["size_bytes"] = m.SizeBytes, ["size_mb"] = Math.Round(mb, 2), ["size_formatted"] = Formatted(m.SizeBytes),
                ["last_modified"] = Ts(m.LastModified), ["last_modified_utc"] = Time(m.LastModified),
                ["estimated_process_minutes"] = (long)Math.Ceiling(mb / 40 / 60),
            }));
        });

        Route(routes, env, "/get-image-sha256", "GET", Access.Operator, "station.image.sha256", (http, _) =>
        {
            string? name = ImageName(http);
            var (state, job, sub) = images.Hasher.GetOrStart(name);
            sub.Dispose();
            if (state.Status == "complete") return Task.FromResult(JsonOk(new Dictionary<string, object?> { ["name"] = name, ["sha256"] = state.Sha256, ["status"] = "complete" }));
            var body = new Dictionary<string, object?>
            {
                ["name"] = name, ["sha256"] = "Calculating...", ["status"] = "pending",
                ["message"] = job is { Done: > 0 } ? "SHA256 calculation is in progress." : "SHA256 calculation started.",
            };
            if (job is { Progress: > 0 } j) { body["progress"] = Math.Round(j.Progress, 4); body["progress_percent"] = (int)Math.Floor(j.Progress * 100); }
            return Task.FromResult(JsonOk(body)); // 200 while pending too, as the original answers
        });

        Route(routes, env, "/analyze-image", "GET", Access.Operator, "station.image.analyze", async (http, _) =>
        {
            string? name = ImageName(http);
            string full = images.Resolve(name);
            var a = await Task.Run(() => StationImageAnalyzer.AnalyzePath(full, http.RequestAborted), http.RequestAborted);
            return JsonOk(AnalysisJson(a with { Name = name! }));
        });

        Route(routes, env, "/upload-image", "POST", Access.Operator, "station.image.upload", async (http, caller) =>
        {
            var req = http.Request;
            long slack = 1 << 20; // multipart headers and boundaries
            if (req.ContentLength is { } len && len > images.MaxBytes + slack)
            {
                http.Response.Headers.Connection = "close";
                throw new StationException(413, "IMAGE_TOO_LARGE", $"an image may be at most {images.MaxBytes} bytes");
            }
            AllowBody(http, images.MaxBytes + slack);
            StationImageUpload up;
            var contentType = req.ContentType ?? "";
            if (contentType.StartsWith("multipart/form-data", StringComparison.OrdinalIgnoreCase))
            {
                if (!MediaTypeHeaderValue.TryParse(contentType, out var mt) || HeaderUtilities.RemoveQuotes(mt.Boundary).Value is not { Length: > 0 and <= 200 } boundary)
                    throw new StationException(400, "INVALID_CONTENT_TYPE", "multipart/form-data needs a boundary");
                var reader = new MultipartReader(boundary, req.Body) { HeadersLengthLimit = 16 * 1024, HeadersCountLimit = 16 };
                MultipartSection? section;
                StationImageUpload? done = null;
                try
                {
                    while (done is null && (section = await reader.ReadNextSectionAsync(http.RequestAborted)) is not null)
                    {
                        if (!ContentDispositionHeaderValue.TryParse(section.ContentDisposition, out var cd) || !cd.IsFileDisposition()) continue;
                        string? fileName = cd.FileNameStar.HasValue ? cd.FileNameStar.Value : HeaderUtilities.RemoveQuotes(cd.FileName).Value;
                        string? name = req.Query["name"].Count > 0 ? req.Query["name"].ToString() : fileName;
                        done = await images.UploadAsync(name, section.Body, null, http.RequestAborted);
                    }
                }
                catch (InvalidDataException ex) { throw new StationException(400, "FORM_PARSE_ERROR", "the multipart body cannot be read: " + ex.Message); }
                up = done ?? throw new StationException(400, "INVALID_UPLOAD_REQUEST", "the multipart body needs one file part (Content-Disposition with a filename)");
            }
            else
            {
                if (contentType.Length > 0 && !contentType.StartsWith("application/octet-stream", StringComparison.OrdinalIgnoreCase))
                    throw new StationException(400, "INVALID_CONTENT_TYPE", "upload-image takes multipart/form-data, or the raw bytes as application/octet-stream with ?name=");
                var name = req.Query["name"].ToString();
                if (name.Length == 0) throw new StationException(400, "MISSING_IMAGE_NAME", "a raw upload needs ?name=<image name>");
                up = await images.UploadAsync(name, req.Body, req.ContentLength, http.RequestAborted);
            }
            env.Log.LogInformation("Station: image {Name} uploaded ({Size} bytes) by {Actor}", up.Name, up.Size, caller.Actor);
            var body = new Dictionary<string, object?>
            {
                ["success"] = true, ["is_idp"] = false, ["filename"] = up.Name, ["renamed"] = up.Renamed, ["size_bytes"] = up.Size,
                ["message"] = up.Renamed ? "File uploaded successfully (renamed to avoid conflict)" : "File uploaded successfully", ["sha256"] = "Calculating...",
            };
            if (up.Renamed) body["original_filename"] = up.OriginalName;
            // The hash starts now, as the original's does.
            images.Hasher.GetOrStart(up.Name).Subscription.Dispose();
            return JsonOk(body); // 200, as the original answers
        });

        Route(routes, env, "/delete-image", "POST", Access.Operator, "station.image.delete", async (http, caller) =>
        {
            var name = await BodyOrQueryAsync(http, "name");
            await station.DeleteImageAsync(name, caller.Actor, http.RequestAborted);
            env.Log.LogInformation("Station: image {Name} deleted by {Actor}", name, caller.Actor);
            return JsonOk(new Dictionary<string, object?> { ["success"] = true, ["name"] = name, ["message"] = "Image deleted" });
        });

        Route(routes, env, "/images/assignments", "GET", Access.Operator, "station.image.assignments", async (http, _) =>
            JsonOk(new Dictionary<string, object?> { ["assignments"] = (await station.ListImageAssignmentsAsync(http.RequestAborted)).Select(AssignmentJson).ToList() }));

        Route(routes, env, "/images/assign", "POST", Access.Operator, "station.image.assign", async (http, caller) =>
        {
            var body = await ReadJsonObjectAsync(http, 16 * 1024);
            string? Str(string field) => body.TryGetProperty(field, out var v) ? v.ValueKind switch
            {
                JsonValueKind.String => v.GetString(),
                JsonValueKind.Null => null,
                _ => throw new StationException(400, "INVALID_PARAMETER", $"{field}: a string"),
            } : null;
            var image = Str("image") ?? throw new StationException(400, "MISSING_IMAGE_NAME", "image: the name of the image to assign is required");
            var a = await station.AssignImageAsync(image, Str("vendor"), Str("name"), Str("version"), caller.Actor, http.RequestAborted);
            return JsonOk(AssignmentJson(a), 201);
        });

        Route(routes, env, "/images/unassign", "POST", Access.Operator, "station.image.unassign", async (http, caller) =>
        {
            var body = await ReadJsonObjectAsync(http, 16 * 1024);
            if (!body.TryGetProperty("id", out var idv) || idv.ValueKind != JsonValueKind.Number || !idv.TryGetInt64(out var id) || id < 1)
                throw new StationException(400, "INVALID_PARAMETER", "id: the number of the assignment (from /images/assignments)");
            await station.RemoveImageAssignmentAsync(id, caller.Actor, http.RequestAborted);
            return JsonOk(new Dictionary<string, object?> { ["success"] = true, ["id"] = id });
        });

        Route(routes, env, "/ws/sha256", "GET", Access.Operator, "station.ws.sha256", async (http, caller) =>
        {
            if (!http.WebSockets.IsWebSocketRequest)
                throw new StationException(400, "WEBSOCKET_REQUIRED", "/ws/sha256 is a WebSocket endpoint");
            var origin = http.Request.Headers.Origin.ToString();
            if (origin.Length > 0 && (!Uri.TryCreate(origin, UriKind.Absolute, out var o2) || !string.Equals(o2.Authority, http.Request.Host.Value, StringComparison.OrdinalIgnoreCase)))
                throw new StationException(403, "CROSS_ORIGIN", "the WebSocket must be opened from this server's pages");
            await ServeSha256Async(http, images, env);
            return Results.Empty;
        });
    }

    /// <summary>The <c>name</c> query parameter (decoded once by the framework); given twice is refused.</summary>
    private static string? ImageName(HttpContext http)
    {
        var v = http.Request.Query["name"];
        if (v.Count > 1) throw new StationException(400, "INVALID_IMAGE_NAME", "name: given more than once");
        return v.Count == 0 ? null : v[0];
    }

    /// <summary>A parameter from the query, a form, or a JSON body.</summary>
    private static async Task<string?> BodyOrQueryAsync(HttpContext http, string field)
    {
        var q = http.Request.Query[field];
        if (q.Count > 1) throw new StationException(400, "INVALID_IMAGE_NAME", $"{field}: given more than once");
        if (q.Count == 1) return q[0];
        if (http.Request.HasFormContentType)
        {
            if (http.Request.ContentLength is null or > 16 * 1024) throw new StationException(413, "PAYLOAD_TOO_LARGE", "the form may be at most 16 KiB");
            IFormCollection form;
            try { form = await http.Request.ReadFormAsync(http.RequestAborted); }
            catch (InvalidDataException ex) { throw new StationException(400, "FORM_PARSE_ERROR", "the form cannot be read: " + ex.Message); }
            return form[field].Count == 1 ? form[field][0] : form[field].Count > 1 ? throw new StationException(400, "INVALID_IMAGE_NAME", $"{field}: given more than once") : null;
        }
        if ((http.Request.ContentType ?? "").StartsWith("application/json", StringComparison.OrdinalIgnoreCase))
        {
            var body = await ReadJsonObjectAsync(http, 16 * 1024);
            return body.TryGetProperty(field, out var s) && s.ValueKind == JsonValueKind.String ? s.GetString() : null;
        }
        return null;
    }

    private static string Formatted(long bytes)
    {
        string[] units = ["B", "KB", "MB", "GB", "TB"];
        double v = bytes;
        int u = 0;
        while (v >= 1024 && u < units.Length - 1) { v /= 1024; u++; }
        return v.ToString("0.00", CultureInfo.InvariantCulture) + " " + units[u];
    }

    internal static Dictionary<string, object?> ImageJson(StationEnv env, StationImage i) => new()
    {
        ["name"] = i.Name,
        ["path"] = Path.Combine(env.Station.Images.Directory, i.Name),
        ["type"] = i.Type,
        ["sha256"] = i.Sha256 ?? (i.HashStatus == "pending" ? "Calculating..." : null),
        ["hash_status"] = i.HashStatus,
        ["hash_progress_percent"] = i.HashProgress is { } p ? (int)Math.Floor(p * 100) : null,
        ["size_bytes"] = i.Size,
        ["size_mb"] = Math.Round(i.Size / 1048576.0, 2),
        ["last_modified"] = Time(i.Modified),
        ["is_gold_master"] = env.Station.Settings.ImageName is { } gm && gm == i.Name,
        ["is_idp"] = false,
        ["assigned_to"] = i.AssignedTo,
    };

    internal static Dictionary<string, object?> AssignmentJson(ImageAssignment a) => new()
    {
        ["id"] = a.Id, ["image"] = a.Image, ["sha256"] = a.Sha256, ["vendor"] = a.Vendor, ["name"] = a.NamePattern, ["version"] = a.VersionPattern,
        ["family"] = a.Family, ["created"] = Time(a.Created), ["actor"] = a.Actor,
    };

    internal static Dictionary<string, object?> AnalysisJson(ImageAnalysis a) => new()
    {
        ["name"] = a.Name,
        ["type"] = a.Type,
        ["format"] = a.Format,
        ["size_bytes"] = a.SizeBytes,
        ["sector_size"] = a.SectorSize,
        ["disk_id"] = a.DiskId,
        ["partition_count"] = a.Partitions.Count,
        ["partitions"] = a.Partitions.Select(p => new Dictionary<string, object?>
        {
            ["index"] = p.Index, ["type"] = p.Type, ["type_name"] = p.TypeName, ["name"] = p.Name, ["guid"] = p.Guid, ["bootable"] = p.Bootable,
            ["start_sector"] = p.StartSector, ["sectors"] = p.Sectors, ["offset_bytes"] = p.Offset, ["size_bytes"] = p.Size,
        }).ToList(),
        ["file_count"] = a.Files.Count,
        ["files"] = a.Files.Select(f => new Dictionary<string, object?> { ["path"] = f.Path, ["size_bytes"] = f.Size, ["sha256"] = f.Sha256 }).ToList(),
        ["skipped"] = a.Skipped,
    };

    /// <summary>
    /// <c>/ws/sha256</c>: the client sends <c>{"action":"get_sha256","image_name":"…"}</c>; the server answers with the state
    /// (complete, or pending and the job started), then a pending frame at each 5 % step and the complete (or error) frame.
    /// </summary>
    private static async Task ServeSha256Async(HttpContext http, StationImages images, StationEnv env)
    {
        using var ws = await http.WebSockets.AcceptWebSocketAsync();
        var ct = http.RequestAborted;
        var outbox = Channel.CreateBounded<Dictionary<string, object?>>(new BoundedChannelOptions(1000) { FullMode = BoundedChannelFullMode.DropOldest, SingleReader = true });
        var subscriptions = new List<IDisposable>();
        var sender = Task.Run(async () =>
        {
            try
            {
                await foreach (var m in outbox.Reader.ReadAllAsync(ct))
                    await ws.SendAsync(JsonSerializer.SerializeToUtf8Bytes(m, Json), WebSocketMessageType.Text, true, ct);
            }
            catch (Exception e) when (e is WebSocketException or OperationCanceledException) { }
        });
        static Dictionary<string, object?> Frame(ImageHashState s)
        {
            var f = new Dictionary<string, object?> { ["image_name"] = s.Name, ["status"] = s.Status };
            if (s.Status == "complete") f["sha256"] = s.Sha256;
            else if (s.Status == "pending") { f["progress"] = Math.Round(s.Progress, 4); f["progress_percent"] = s.ProgressPercent; }
            else if (s.Status == "error") f["error"] = s.Error;
            return f;
        }
        try
        {
            var buf = new byte[8 * 1024];
            while (ws.State == WebSocketState.Open)
            {
                int used = 0;
                WebSocketReceiveResult r;
                bool tooLong = false;
                do
                {
                    if (used == buf.Length) { tooLong = true; used = 0; }
                    r = await ws.ReceiveAsync(new ArraySegment<byte>(buf, used, buf.Length - used), ct);
                    used += r.Count;
                } while (!r.EndOfMessage && r.MessageType != WebSocketMessageType.Close);
                if (r.MessageType == WebSocketMessageType.Close) break;
                string? name = null;
                try
                {
                    if (tooLong) throw new JsonException();
                    using var doc = JsonDocument.Parse(buf.AsMemory(0, used));
                    var root = doc.RootElement;
                    if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("action", out var act) || act.ValueKind != JsonValueKind.String || act.GetString() != "get_sha256")
                    {
                        outbox.Writer.TryWrite(new() { ["status"] = "error", ["error"] = "unknown action; send {\"action\":\"get_sha256\",\"image_name\":\"…\"}", ["code"] = "INVALID_PARAMETER" });
                        continue;
                    }
                    name = root.TryGetProperty("image_name", out var n) && n.ValueKind == JsonValueKind.String ? n.GetString() : null;
                }
                catch (JsonException)
                {
                    outbox.Writer.TryWrite(new() { ["error"] = "Invalid JSON", ["status"] = "error", ["code"] = "INVALID_JSON" });
                    continue;
                }
                try
                {
                    var (_, _, sub) = images.Hasher.GetOrStart(name, s => outbox.Writer.TryWrite(Frame(s)), first: s => outbox.Writer.TryWrite(Frame(s)));
                    subscriptions.Add(sub);
                }
                catch (StationException ex)
                {
                    outbox.Writer.TryWrite(new() { ["image_name"] = name, ["status"] = "error", ["error"] = ex.Message, ["code"] = ex.Code });
                }
            }
        }
        catch (Exception e) when (e is WebSocketException or OperationCanceledException) { }
        finally
        {
            foreach (var s in subscriptions) s.Dispose();
            outbox.Writer.TryComplete();
        }
        await sender;
        if (ws.State is WebSocketState.Open or WebSocketState.CloseReceived)
        {
            try { await ws.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", CancellationToken.None); } catch (WebSocketException) { }
        }
    }
}
