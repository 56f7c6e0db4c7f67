using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using TpmProvisioning.Station;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Server.Roles;

/// <summary>Manufacturing records, devices, logs, keys and QR verification.</summary>
internal sealed partial class StationRole
{
    /// <summary>Largest page of <c>/api/v2/manufacturing</c>.</summary>
    public const long MaxManufacturingLimit = 10_000;

    private static void MapDevices(IEndpointRouteBuilder routes, StationEnv env)
    {
        var station = env.Station;

        Route(routes, env, "/api/v2/manufacturing", "GET", Access.Operator, "station.manufacturing.read", async (http, caller) =>
        {
            long offset = QueryLong(http, "offset", 0, long.MaxValue) ?? 0;
            long? limit = QueryLong(http, "limit", 1, MaxManufacturingLimit);
            var rows = await station.PageManufacturingAsync(offset, limit, http.RequestAborted);
            if (WantsHtml(http)) return Html(StationPages.Manufacturing(rows, offset, caller));
            return JsonOk(rows.Select(ManufacturingJson).ToList());
        });

        Route(routes, env, "/devices", "GET", Access.PublicRead, "station.devices.read", async (http, caller) =>
        {
            var state = http.Request.Query["state"].ToString();
            if (state.Length > 0 && !DeviceStates.IsKnown(state))
                throw new StationException(400, "INVALID_PARAMETER", "state: not a device state", "states: " + string.Join(", ", DeviceStates.All));
            var devices = await env.Context.Store.ListStationDevicesAsync(new StationDeviceQuery { State = state.Length > 0 ? state : null }, http.RequestAborted);
            if (WantsHtml(http)) return Html(StationPages.Devices(devices, state, caller));
            return JsonOk(new Dictionary<string, object?> { ["devices"] = devices.Select(DeviceJson).ToList() });
        });

        Route(routes, env, "/devices/{serialno}", "GET", Access.PublicRead, "station.device.read", async (http, caller) =>
        {
            string serial = (string)http.GetRouteValue("serialno")!;
            var d = await station.GetDeviceAsync(serial, http.RequestAborted);
            var agents = d.Record is null ? [] : await station.AgentsByEkAsync(http.RequestAborted);
            string? agentId = d.Record is null ? null : agents.GetValueOrDefault(d.Record.EkFingerprint);
            var attestation = agentId is null ? null : await env.Hub.AttestationAsync(env, agentId, http.RequestAborted);
            if (WantsHtml(http))
            {
                Dictionary<string, IReadOnlyList<DeviceLogLine>>? logs = null;
                if (caller.Operator)
                {
                    logs = [];
                    foreach (var t in new[] { "bootstrap", "triage", "provisioner" })
                        logs[t] = await station.GetLogAsync(serial, t, http.RequestAborted);
                }
                return Html(StationPages.Device(d, agentId, attestation, logs, caller));
            }
            return JsonOk(new Dictionary<string, object?>
            {
                ["serial"] = d.Serial,
                ["port"] = null,
                ["state"] = d.State,
                ["vendor"] = d.Vendor,
                ["name"] = d.Name,
                ["ip_address"] = d.Address,
                ["first_seen"] = Time(d.FirstSeen),
                ["last_seen"] = Time(d.LastSeen),
                ["history"] = d.History.Select(h => new Dictionary<string, object?> { ["state"] = h.State, ["timestamp"] = Time(h.Time), ["detail"] = h.Detail }).ToList(),
                ["manufacturing_id"] = d.Record?.Id,
                ["agent_id"] = agentId,
                ["attestation"] = attestation,
            });
        });

        Route(routes, env, "/devices/{serialno}/log/{type}", "GET", Access.Operator, "station.log.read", async (http, _) =>
        {
            string serial = (string)http.GetRouteValue("serialno")!;
            string type = (string)http.GetRouteValue("type")!;
            var lines = await station.GetLogAsync(serial, type, http.RequestAborted);
            var sb = new StringBuilder();
            foreach (var l in lines) sb.Append(l.ToString()).Append('\n');
            return Results.Text(sb.ToString(), "text/plain; charset=utf-8", Encoding.UTF8);
        });

        Route(routes, env, "/devices/{serialno}/key/public", "GET", Access.Operator, "station.key.public", async (http, _) =>
        {
            string serial = (string)http.GetRouteValue("serialno")!;
            var pem = await station.GetPublicKeyPemAsync(serial, http.RequestAborted);
            return Results.Text(pem, "application/x-pem-file", Encoding.ASCII);
        });

        // The private key route answers 403 before anything else (method, authentication, serial): a TPM-resident key never
        // leaves its TPM and the station holds no device private key. Every attempt is audited.
        routes.Map("/devices/{serialno}/key/private", async (HttpContext http) =>
        {
            await AuditAsync(env, http, null, "station.key.private.denied", 403);
            http.Response.Headers.CacheControl = "no-store";
            await Error(http, 403, "PRIVATE_KEY_API_DISABLED",
                "the private key API is disabled: device keys are TPM-resident (the AK never leaves its TPM) and the station holds no device private key",
                "private keys must not travel over HTTP").ExecuteAsync(http);
        });

        Route(routes, env, "/api/v2/verify-qrcode", "POST", Access.Operator, "station.qrcode.verify", async (http, _) =>
        {
            var body = await ReadJsonObjectAsync(http, 16 * 1024);
            if (!body.TryGetProperty("qrcode", out var q) || q.ValueKind != JsonValueKind.String)
                throw new StationException(400, "INVALID_PARAMETER", "qrcode: a string is required");
            string code = q.GetString()!;
            if (code.Length is 0 or > 1024 || code.Trim().Length == 0 || code.Any(char.IsControl))
                throw new StationException(400, "INVALID_PARAMETER", "qrcode: 1-1024 printable characters, not only spaces");
            var record = await station.MatchQrAsync(code, http.RequestAborted);
            return JsonOk(new Dictionary<string, object?>
            {
                ["success"] = true,
                ["exists"] = record is not null,
                ["qrcode"] = code,
                ["serial"] = record?.Serial,
                ["vendor"] = record?.Vendor,
                ["manufacturing_id"] = record?.Id,
            });
        });
    }

    internal static Dictionary<string, object?> ManufacturingJson(ManufacturingRow r) => new()
    {
        ["id"] = r.Id,
        ["serial"] = r.Serial,
        ["name"] = r.Name,
        ["vendor"] = r.Vendor,
        ["version"] = r.Version,
        ["ek_cert_sha256"] = r.EkFingerprint,
        ["ek_cert_issuer"] = r.EkIssuer,
        ["ak_name"] = r.AkName,
        ["ak_cert_serial"] = r.AkCertificateSerial,
        ["ak_cert_sha256"] = r.AkCertificateFingerprint,
        ["tpm_ca_key_label"] = r.CaKeyLabel,
        ["tpm_ca_sha256"] = r.CaFingerprint,
        ["os_image_filename"] = r.ImageName,
        ["os_image_sha256"] = r.ImageSha256,
        ["agent_id"] = r.AgentId,
        ["api_key_id"] = r.ApiKeyId,
        ["ak_cert"] = Convert.ToBase64String(r.AkCertificate),
        ["provision_ts"] = Ts(r.ProvisionTime),
        ["provision_time"] = Time(r.ProvisionTime),
    };

    internal static Dictionary<string, object?> DeviceJson(StationDevice d) => new()
    {
        ["serial"] = d.Serial,
        ["port"] = null,
        ["ip_address"] = d.Address,
        ["state"] = d.State,
        ["image"] = null,
        ["vendor"] = d.Vendor,
        ["name"] = d.Name,
        ["first_seen"] = Time(d.FirstSeen),
        ["last_seen"] = Time(d.LastSeen),
    };

    /// <summary>A JSON object body of at most <paramref name="max"/> bytes: 413 above, 400 INVALID_JSON when not an object.</summary>
    internal static async Task<JsonElement> ReadJsonObjectAsync(HttpContext http, int max)
    {
        var bytes = await ReadBodyAsync(http, max);
        try
        {
            using var doc = JsonDocument.Parse(bytes);
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new StationException(400, "INVALID_JSON", "the body must be a JSON object");
            if (!AllText(doc.RootElement)) throw new StationException(400, "INVALID_JSON", "the body holds a string that is not valid text (a lone surrogate escape)");
            return doc.RootElement.Clone();
        }
        catch (JsonException) { throw new StationException(400, "INVALID_JSON", "the body is not valid JSON"); }
    }

    /// <summary>
    /// Whether every string and property name reads as text: a lone surrogate escape (<c>\uD800</c>) is valid JSON, but reading
    /// it throws InvalidOperationException, which a handler would turn into a 500.
    /// </summary>
    private static bool AllText(JsonElement e)
    {
        try
        {
            switch (e.ValueKind)
            {
                case JsonValueKind.String: _ = e.GetString(); return true;
                case JsonValueKind.Array: return e.EnumerateArray().All(AllText);
                case JsonValueKind.Object: return e.EnumerateObject().All(p => p.Name is not null && AllText(p.Value));
                default: return true;
            }
        }
        catch (InvalidOperationException) { return false; }
    }

    /// <summary>The body through the server's shared reader (size cap, server-wide budget, framing errors), in the station's error shape.</summary>
    internal static async Task<byte[]> ReadBodyAsync(HttpContext http, long max)
    {
        var read = await Hosting.RequestBodyReader.ReadAsync(http, max, requireUtf8: false);
        return read.Error switch
        {
            Hosting.BodyReadError.None => read.Body!.ToArray(),
            Hosting.BodyReadError.TooLarge => throw new StationException(413, "PAYLOAD_TOO_LARGE", $"the body may be at most {max} bytes"),
            Hosting.BodyReadError.Busy => throw new StationException(503, "SERVICE_UNAVAILABLE", read.Message ?? "busy; retry later"),
            _ => throw new StationException(400, "INVALID_REQUEST", read.Message ?? "malformed request body"),
        };
    }
}
