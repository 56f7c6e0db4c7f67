using System.Globalization;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Configuration;

namespace TpmProvisioning.Station;

/// <summary>The options surface: settings, the work folder and the firmware catalogue (docs/rest/station.md, "Options").</summary>
public sealed partial class StationClient
{
    /// <summary>A JSON value as the catalogue types it (numbers of durations as doubles, whole numbers as longs, lists as string arrays).</summary>
    private static object? Value(JsonElement v, SettingDefinition? d) => v.ValueKind switch
    {
        JsonValueKind.Null or JsonValueKind.Undefined => null,
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.Number when d?.Type is SettingType.Integer && v.TryGetInt64(out var l) => l,
        JsonValueKind.Number => v.GetDouble(),
        JsonValueKind.Array => v.EnumerateArray().Select(e => e.ToString()).ToList(),
        _ => v.GetString(),
    };

    private static string Json(object? value) => JsonSerializer.Serialize(value);

    /// <summary>Every setting of the server with its value, default, rule, how it applies and where its value came from.</summary>
    public async Task<IReadOnlyList<ProvisioningOption>> GetOptionsAsync(CancellationToken ct = default)
    {
        var root = await GetJsonAsync("options/get?detail=true", ct).ConfigureAwait(false);
        return root.GetProperty("options").EnumerateArray().Select(o =>
        {
            var d = SettingsCatalog.Find(S(o, "name"));
            return new ProvisioningOption
            {
                Name = S(o, "name") ?? "", Section = S(o, "section") ?? "", Value = Value(o.GetProperty("value"), d), Default = Value(o.GetProperty("default"), d),
                Type = S(o, "type") ?? "", Rule = S(o, "rule") ?? "", Apply = (S(o, "apply") ?? "") switch { "live" => "Live", "restart" => "Restart", _ => "StartOnly" },
                Source = S(o, "source") ?? "", Description = S(o, "description") ?? "", Settable = o.TryGetProperty("settable", out var st) && st.ValueKind == JsonValueKind.True,
                Pending = o.TryGetProperty("pending", out var p) ? Value(p, d) : null,
            };
        }).ToList();
    }

    /// <summary>Sets several settings at once (all or none); a refusal is a <see cref="StationRequestException"/> with the code.</summary>
    public async Task<IReadOnlyList<ProvisioningOptionChange>> SetOptionsAsync(IReadOnlyList<KeyValuePair<string, object?>> values, CancellationToken ct = default)
    {
        var body = "{" + string.Join(",", values.Select(kv => Json(kv.Key) + ":" + Json(kv.Value))) + "}";
        var r = JsonDocument.Parse(await SendAsync(HttpMethod.Post, "options/set", new StringContent(body, Encoding.UTF8, "application/json"), ct).ConfigureAwait(false)).RootElement;
        return r.GetProperty("changed").EnumerateArray().Select(c =>
        {
            var d = SettingsCatalog.Find(S(c, "name"));
            return new ProvisioningOptionChange
            {
                Name = S(c, "name") ?? "", OldValue = Value(c.GetProperty("old_value"), d), NewValue = Value(c.GetProperty("new_value"), d),
                Applied = S(c, "applied") == "live" ? "Live" : "Restart",
            };
        }).ToList();
    }

    /// <summary>Checks one value without changing anything; an unknown setting is a result with <c>UNKNOWN_FIELD</c>.</summary>
    public async Task<ProvisioningOptionTest> TestOptionAsync(string name, object? value, CancellationToken ct = default)
    {
        string body = "{\"field\":" + Json(name) + ",\"value\":" + Json(value) + "}";
        try
        {
            var r = JsonDocument.Parse(await SendAsync(HttpMethod.Post, "options/validate", new StringContent(body, Encoding.UTF8, "application/json"), ct).ConfigureAwait(false)).RootElement;
            bool valid = r.GetProperty("valid").GetBoolean();
            return new ProvisioningOptionTest
            {
                Name = S(r, "field") ?? name, Value = valid ? Value(r.GetProperty("value"), SettingsCatalog.Find(name)) : value, Valid = valid,
                Code = S(r, "code"), Message = valid ? S(r, "message") : S(r, "error"),
                RestartRequired = r.TryGetProperty("restart_required", out var rr) && rr.ValueKind == JsonValueKind.True,
            };
        }
        catch (StationRequestException ex) when (ex.Code == SettingError.UnknownField)
        {
            return new ProvisioningOptionTest { Name = name, Value = value, Valid = false, Code = ex.Code, Message = ex.Detail };
        }
    }

    /// <summary>Empties the station's work folder.</summary>
    public async Task<StationWorkDirectory.ClearResult> ClearWorkDirectoryAsync(CancellationToken ct = default)
    {
        var r = JsonDocument.Parse(await SendAsync(HttpMethod.Post, "options/clear-workdir", null, ct).ConfigureAwait(false)).RootElement;
        return new StationWorkDirectory.ClearResult("station/work", r.GetProperty("files_removed").GetInt32(), r.GetProperty("folders_removed").GetInt32(), r.GetProperty("bytes_removed").GetInt64());
    }

    private static ProvisioningFirmware ReadFirmware(JsonElement f) => new()
    {
        Family = S(f, "family") ?? "", Name = S(f, "name") ?? "", Version = S(f, "version") ?? "", Sha256 = S(f, "sha256") ?? "", FileName = S(f, "filename") ?? "",
        Size = f.GetProperty("size").GetInt64(), HasNotes = f.GetProperty("has_notes").GetBoolean(), Selected = f.GetProperty("selected").GetBoolean(),
        Date = DateTimeOffset.ParseExact(S(f, "date") ?? "1970-01-01", "yyyy-MM-dd", CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal),
    };

    /// <summary>The firmware releases (of one family, when given).</summary>
    public async Task<IReadOnlyList<ProvisioningFirmware>> GetFirmwareAsync(string? family, CancellationToken ct = default)
    {
        var root = await GetJsonAsync("options/firmware/list" + (family is null ? "" : "?family=" + Q(family)), ct).ConfigureAwait(false);
        return root.GetProperty("firmware").EnumerateArray().Select(ReadFirmware).ToList();
    }

    /// <summary>A release's notes; 404 <c>FIRMWARE_NOT_FOUND</c> for an unknown version.</summary>
    public async Task<ProvisioningFirmwareNotes> GetFirmwareNotesAsync(string? family, string version, CancellationToken ct = default)
    {
        var r = await GetJsonAsync("options/firmware/notes/" + Q(version) + (family is null ? "" : "?family=" + Q(family)), ct).ConfigureAwait(false);
        return new ProvisioningFirmwareNotes(S(r, "family") ?? "", S(r, "version") ?? "", S(r, "notes") ?? "");
    }

    /// <summary>Selects a release for its family.</summary>
    public async Task<ProvisioningFirmware> SelectFirmwareAsync(string? family, string version, CancellationToken ct = default)
    {
        var body = Json(new Dictionary<string, string?> { ["family"] = family, ["version"] = version });
        return ReadFirmware(JsonDocument.Parse(await SendAsync(HttpMethod.Post, "options/firmware/set", new StringContent(body, Encoding.UTF8, "application/json"), ct).ConfigureAwait(false)).RootElement);
    }
}
