using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using TpmProvisioning.Configuration;
using TpmProvisioning.Hosting;
using TpmProvisioning.Server.Hosting;
using TpmProvisioning.Station;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Server.Roles;

/// <summary>
/// Configuration (docs/rest/station.md, "Options"): the product's settings catalogue (<see cref="SettingsCatalog"/>) read, checked
/// and changed over <c>/options/get</c>, <c>/options/validate</c> and <c>/options/set</c> (persisted, audited, applied live where
/// the catalogue says so); <c>/options/clear-workdir</c>; and the firmware catalogue under <c>/options/firmware*</c>.
/// </summary>
internal sealed partial class StationRole
{
    private const int MaxOptionsBody = 64 * 1024;
    private static readonly SemaphoreSlim s_optionsGate = new(1, 1);

    private static void MapOptions(IEndpointRouteBuilder routes, StationEnv env)
    {
        var info = env.Context.Info;
        var options = env.Context.Options;
        var budget = routes.ServiceProvider.GetService<RequestBodyBudget>();
        StationFirmware Firmware() => new(options.Station.FirmwareDirectory ?? StationFirmware.DefaultDirectory(info.DataPath));

        Route(routes, env, "/options/get", "GET", Access.Operator, "station.options.read", async (http, caller) =>
        {
            var stored = await env.Context.Store.GetSettingsAsync(http.RequestAborted);
            var all = SettingsCatalog.Describe(options, stored);
            if (WantsHtml(http)) return Html(StationPages.Options(all, info.Roles, caller));
            var detail = http.Request.Query["detail"].ToString();
            if (detail is "1" or "true")
                return JsonOk(new Dictionary<string, object?> { ["options"] = all.Select(OptionJson).ToList(), ["roles"] = info.Roles.ToString() });
            if (detail.Length > 0) throw new StationException(400, "INVALID_PARAMETER", "detail: true or false");
            // The original's shape: one object of every setting to its value.
            var flat = new Dictionary<string, object?>();
            foreach (var o in all) flat[o.Name] = o.Value;
            return JsonOk(flat);
        });

        Route(routes, env, "/options/validate", "POST", Access.Operator, "station.options.validate", async (http, _) =>
        {
            var body = await ReadJsonObjectAsync(http, MaxOptionsBody);
            string? field = null;
            Text(() => field = body.TryGetProperty("field", out var f) && f.ValueKind == JsonValueKind.String ? f.GetString() : null);
            if (field is not { Length: > 0 })
                throw new StationException(400, "MISSING_FIELD_NAME", "field: the name of a setting is required (a string)");
            var d = SettingsCatalog.Find(field) ?? throw new StationException(400, SettingError.UnknownField, $"{Clip(field)}: not a setting; see GET /options/get or docs/configuration.md");
            object? raw = null;
            Text(() => raw = body.TryGetProperty("value", out var v) ? Raw(d.Name, v) : null);
            var (value, error) = d.Check(raw);
            var answer = new Dictionary<string, object?> { ["valid"] = error is null, ["field"] = d.Name };
            if (error is null)
            {
                answer["value"] = value;
                answer["restart_required"] = !AppliesLive(d, info.Roles);
                answer["message"] = AppliesLive(d, info.Roles) ? "applies at once" : "applies from the next start";
            }
            else
            {
                answer["code"] = error.Code;
                answer["error"] = error.Message;
            }
            return JsonOk(answer);
        });

        Route(routes, env, "/options/set", "POST", Access.Operator, "station.options.set", async (http, caller) =>
        {
            var body = await ReadJsonObjectAsync(http, MaxOptionsBody);
            var raw = new List<KeyValuePair<string, object?>>();
            Text(() =>
            {
                foreach (var p in body.EnumerateObject())
                {
                    var d = SettingsCatalog.Find(p.Name);
                    raw.Add(new(p.Name, d is null ? null : Raw(d.Name, p.Value)));
                }
            });
            if (raw.Count == 0) throw new StationException(400, "MISSING_REQUIRED_FIELDS", "the body names no setting: send {\"NAME\": value, ...}");
            IReadOnlyList<(SettingDefinition Setting, object? Value)> changes;
            try { changes = SettingsCatalog.CheckAll(raw); }
            catch (SettingException ex) { throw Refusal(ex.Error); }

            await s_optionsGate.WaitAsync(http.RequestAborted);
            try
            {
                // Persist first (all or none); only then does the running server change.
                await env.Context.Store.SetSettingsAsync(changes.Select(c => new KeyValuePair<string, string?>(c.Setting.Name, SettingDefinition.Format(c.Value))).ToList(),
                    caller.Actor, http.RequestAborted);
                var report = new List<Dictionary<string, object?>>();
                foreach (var (d, value) in changes)
                {
                    object? old = d.GetValue(options);
                    bool live = AppliesLive(d, info.Roles);
                    if (live) ApplyLive(env, budget, d, value);
                    report.Add(new Dictionary<string, object?>
                    {
                        ["name"] = d.Name, ["old_value"] = old, ["new_value"] = value ?? d.Default, ["applied"] = live ? "live" : "restart",
                    });
                    await env.Context.Store.AppendAuditAsync(new AuditEntry
                    {
                        Actor = caller.Actor, Action = "station.options.changed", Target = d.Name, Source = caller.Source, Outcome = AuditOutcome.Success,
                        Detail = $"{SettingDefinition.Format(old) ?? "(empty)"} -> {SettingDefinition.Format(value) ?? "(default)"}; {(live ? "applied live" : "applies from the next start")}",
                    }, CancellationToken.None);
                    env.Log.LogInformation("Station: setting {Name} changed by {Actor} ({How})", d.Name, caller.Actor, live ? "live" : "next start");
                }
                return JsonOk(new Dictionary<string, object?>
                {
                    ["changed"] = report,
                    ["restart_required"] = report.Where(r => (string)r["applied"]! == "restart").Select(r => r["name"]).ToList(),
                });
            }
            finally { s_optionsGate.Release(); }
        });

        Route(routes, env, "/options/clear-workdir", "POST", Access.Operator, "station.workdir.clear", async (http, caller) =>
        {
            var r = StationWorkDirectory.Clear(info.DataPath);
            await env.Context.Store.AppendAuditAsync(new AuditEntry
            {
                Actor = caller.Actor, Action = "station.workdir.cleared", Target = "station/work", Source = caller.Source, Outcome = AuditOutcome.Success,
                Detail = $"{r.Files} file(s), {r.Folders} folder(s), {r.Bytes} byte(s) removed",
            }, CancellationToken.None);
            return JsonOk(new Dictionary<string, object?> { ["cleared"] = true, ["files_removed"] = r.Files, ["folders_removed"] = r.Folders, ["bytes_removed"] = r.Bytes });
        });

        async Task<IResult> FirmwareList(HttpContext http, Caller caller)
        {
            var fw = Firmware();
            var family = http.Request.Query["family"].ToString();
            var selected = await StationFirmware.SelectedAsync(env.Context.Store, http.RequestAborted);
            var list = fw.List(family.Length > 0 ? family : null, selected);
            if (WantsHtml(http)) return Html(StationPages.Firmware(list, fw.Families(), caller));
            return JsonOk(new Dictionary<string, object?>
            {
                ["families"] = fw.Families(),
                ["firmware"] = list.Select(FirmwareJson).ToList(),
                ["selected"] = selected,
            });
        }
        Route(routes, env, "/options/firmware", "GET", Access.Operator, "station.firmware.read", FirmwareList);
        Route(routes, env, "/options/firmware/list", "GET", Access.Operator, "station.firmware.read", FirmwareList);

        Route(routes, env, "/options/firmware/set", "POST", Access.Operator, "station.firmware.set", async (http, caller) =>
        {
            var body = await ReadJsonObjectAsync(http, MaxOptionsBody);
            string? family = null, version = null;
            Text(() => (family, version) = (Str(body, "family"), Str(body, "version")));
            if (version is null) throw new StationException(400, "MISSING_REQUIRED_FIELDS", "version: the firmware version to select is required (family: its device family)");
            var r = await Firmware().SelectAsync(env.Context.Store, family, version, caller.Actor, http.RequestAborted);
            await env.Context.Store.AppendAuditAsync(new AuditEntry
            {
                Actor = caller.Actor, Action = "station.firmware.selected", Target = $"{r.Family}/{r.Version}", Source = caller.Source, Outcome = AuditOutcome.Success,
                Detail = $"{r.FileName} sha256={r.Sha256}",
            }, CancellationToken.None);
            return JsonOk(FirmwareJson(r));
        });

        Route(routes, env, "/options/firmware/notes/{version}", "GET", Access.Operator, "station.firmware.notes", (http, _) =>
        {
            var version = (string?)http.GetRouteValue("version");
            var family = http.Request.Query["family"].ToString();
            var notes = Firmware().Notes(family.Length > 0 ? family : null, version);
            return Task.FromResult(JsonOk(new Dictionary<string, object?> { ["family"] = notes.Family, ["version"] = notes.Version, ["notes"] = notes.Notes }));
        });
    }

    /// <summary>Reads strings of a parsed body: a lone surrogate escape (valid JSON, but no text) is a 400, not a server error.</summary>
    private static void Text(Action read)
    {
        try { read(); }
        catch (InvalidOperationException) { throw new StationException(400, "INVALID_JSON", "the body holds a string that is not valid text (a lone surrogate escape)"); }
    }

    private static string? Str(JsonElement body, string name)
    {
        if (!body.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.String) throw new StationException(400, "INVALID_PARAMETER", $"{name}: must be a string");
        return v.GetString();
    }

    /// <summary>A JSON value as the catalogue takes it: text, a whole number, a number, a boolean, null, or a list of texts.</summary>
    private static object? Raw(string name, JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.String => v.GetString(),
        JsonValueKind.Number => v.TryGetInt64(out var l) ? l : v.TryGetDouble(out var dbl) && double.IsFinite(dbl) ? dbl
            : throw Refusal(new SettingError(name, SettingError.OutOfRange, $"{name}: {SettingsCatalog.Find(name)!.Rule}", Clip(v.GetRawText()))),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.Null => null,
        JsonValueKind.Array when v.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String) => v.EnumerateArray().Select(e => e.GetString()!).ToList(),
        _ => throw Refusal(new SettingError(name, SettingError.InvalidValue, $"{name}: {SettingsCatalog.Find(name)!.Rule}", Clip(v.GetRawText()))),
    };

    private static StationException Refusal(SettingError e) =>
        new(400, e.Code, e.Message, e.Received is null ? null : "Received: " + e.Received);

    /// <summary>Whether a change applies at once here: the setting is live and its role is hosted by this server.</summary>
    private static bool AppliesLive(SettingDefinition d, ServerRole roles) => d.Apply == SettingApply.Live && (d.Role is not { } r || roles.HasFlag(r));

    /// <summary>Sets the value in the running server's settings (which its services read at each use) and in the objects derived from them.</summary>
    private static void ApplyLive(StationEnv env, RequestBodyBudget? budget, SettingDefinition d, object? value)
    {
        var options = env.Context.Options;
        d.SetValue(options, value ?? d.Default);
        switch (d.Name)
        {
            case "STATION_MAX_SCRIPT_BYTES":
                env.Station.Scripts.MaxBytes = options.Station.MaxScriptBytes;
                break;
            case "SERVER_MAX_BUFFERED_REQUEST_BYTES" when budget is not null:
                budget.Capacity = options.MaxBufferedRequestBytes;
                break;
        }
    }

    internal static Dictionary<string, object?> OptionJson(ProvisioningOption o) => new()
    {
        ["name"] = o.Name, ["section"] = o.Section, ["value"] = o.Value, ["default"] = o.Default, ["type"] = o.Type, ["rule"] = o.Rule,
        ["apply"] = o.Apply.ToLowerInvariant() switch { "startonly" => "start-only", var a => a }, ["settable"] = o.Settable, ["source"] = o.Source,
        ["pending"] = o.Pending, ["description"] = o.Description,
    };

    internal static Dictionary<string, object?> FirmwareJson(ProvisioningFirmware f) => new()
    {
        ["family"] = f.Family, ["name"] = f.Name, ["version"] = f.Version, ["date"] = f.Date.UtcDateTime.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture),
        ["sha256"] = f.Sha256, ["size"] = f.Size, ["filename"] = f.FileName, ["has_notes"] = f.HasNotes, ["selected"] = f.Selected,
    };
}
