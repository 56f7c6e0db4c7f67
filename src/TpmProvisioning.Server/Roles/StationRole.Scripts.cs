using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using TpmProvisioning.Station;

namespace TpmProvisioning.Server.Roles;

/// <summary>Customisation scripts (<c>/customisation/*</c>): PowerShell hooks of the station's flow.</summary>
internal sealed partial class StationRole
{
    private static void MapScripts(IEndpointRouteBuilder routes, StationEnv env)
    {
        var scripts = env.Station.Scripts;

        Route(routes, env, "/customisation/list-scripts", "GET", Access.Operator, "station.script.list", (http, caller) =>
        {
            var list = scripts.List();
            if (WantsHtml(http)) return Task.FromResult(Html(StationPages.Scripts(list, caller)));
            return Task.FromResult(JsonOk(new Dictionary<string, object?> { ["scripts"] = list.Select(ScriptJson).ToList() }));
        });

        Route(routes, env, "/customisation/get-script", "GET", Access.Operator, "station.script.read", (http, caller) =>
        {
            var s = scripts.Get(http.Request.Query["script"].ToString());
            if (WantsHtml(http)) return Task.FromResult(Html(StationPages.Script(s, caller)));
            return Task.FromResult(JsonOk(new Dictionary<string, object?> { ["exists"] = s.Exists, ["filename"] = s.Name, ["content"] = s.Content, ["enabled"] = s.Enabled }));
        });

        Route(routes, env, "/customisation/create-script", "GET", Access.Operator, "station.script.template", (http, _) =>
        {
            var name = StationScripts.CheckName(http.Request.Query["script"].ToString());
            var stage = HookStages.All.Select(h => h.Name).FirstOrDefault(st => StationScripts.HookName(st) == name)
                ?? throw new StationException(400, "INVALID_SCRIPT_NAME", $"'{name}' is not a hook of the station", "hooks: " + string.Join(", ", StationScripts.HookNames));
            return Task.FromResult(JsonOk(new Dictionary<string, object?> { ["exists"] = false, ["filename"] = name, ["content"] = StationScripts.Template(stage), ["enabled"] = false }));
        });

        Route(routes, env, "/customisation/list-hooks", "GET", Access.Operator, "station.script.hooks", (http, _) =>
        {
            var hooks = StationScripts.HookNames.Select(h => scripts.Describe(h)).Select(d => new Dictionary<string, object?>
            {
                ["filename"] = d.Filename, ["provisioner"] = d.Provisioner, ["stage"] = d.Stage, ["exists"] = d.Exists, ["enabled"] = d.Enabled,
            }).ToList();
            return Task.FromResult(JsonOk(new Dictionary<string, object?>
            {
                ["provisioners"] = new[] { StationScripts.Flow },
                ["stages"] = HookStages.All.Select(s => new Dictionary<string, object?> { ["name"] = s.Name, ["description"] = s.Description }).ToList(),
                ["hooks"] = hooks,
            }));
        });

        Route(routes, env, "/customisation/save-script", "POST", Access.Operator, "station.script.save", async (http, _) =>
        {
            AllowBody(http, scripts.MaxBytes * 6L + 64 * 1024);
            var body = await ReadJsonObjectAsync(http, scripts.MaxBytes * 6 + 64 * 1024);
            string? filename = body.TryGetProperty("filename", out var f) && f.ValueKind == JsonValueKind.String ? f.GetString() : null;
            string? content = body.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString() : null;
            if (filename is null || content is null) throw new StationException(400, "MISSING_REQUIRED_FIELDS", "filename and content (strings) are required");
            var saved = scripts.Save(filename, content);
            env.Log.LogScript("saved", saved);
            return JsonOk(ScriptJson(saved));
        });

        Route(routes, env, "/customisation/upload-script", "POST", Access.Operator, "station.script.upload", async (http, _) =>
        {
            if (!http.Request.HasFormContentType || !(http.Request.ContentType ?? "").StartsWith("multipart/form-data", StringComparison.OrdinalIgnoreCase))
                throw new StationException(400, "INVALID_CONTENT_TYPE", "upload-script takes multipart/form-data with the file in the field 'script'");
            long max = scripts.MaxBytes + 64L * 1024;
            if (http.Request.ContentLength is { } len && len > max)
            {
                http.Response.Headers.Connection = "close";
                throw new StationException(413, "SCRIPT_TOO_LARGE", $"a script may be at most {scripts.MaxBytes} bytes");
            }
            AllowBody(http, max);
            IFormCollection form;
            try { form = await http.Request.ReadFormAsync(new Microsoft.AspNetCore.Http.Features.FormOptions { MultipartBodyLengthLimit = max }, http.RequestAborted); }
            catch (InvalidDataException) { throw new StationException(413, "SCRIPT_TOO_LARGE", $"a script may be at most {scripts.MaxBytes} bytes"); }
            catch (BadHttpRequestException ex) when (ex.StatusCode == 413) { throw new StationException(413, "SCRIPT_TOO_LARGE", $"a script may be at most {scripts.MaxBytes} bytes"); }
            catch (IOException) { throw new StationException(400, "FORM_PARSE_ERROR", "the multipart body cannot be read"); }
            var file = form.Files.GetFile("script") ?? throw new StationException(400, "MISSING_SCRIPT_FILE", "the multipart field 'script' with a file is required");
            if (file.Length > scripts.MaxBytes) throw new StationException(413, "SCRIPT_TOO_LARGE", $"a script may be at most {scripts.MaxBytes} bytes");
            string content;
            using (var reader = new StreamReader(file.OpenReadStream(), new UTF8Encoding(false, true)))
            {
                try { content = await reader.ReadToEndAsync(http.RequestAborted); }
                catch (DecoderFallbackException) { throw new StationException(400, "INVALID_SCRIPT_CONTENT", "a script must be UTF-8 text"); }
            }
            var saved = scripts.Save(file.FileName, content);
            env.Log.LogScript("uploaded", saved);
            if (WantsHtml(http)) return Html(StationPages.Script(scripts.Get(saved.Name), new Caller("operator", "", true)));
            return Results.Text("Script file uploaded successfully", "text/plain; charset=utf-8", Encoding.UTF8);
        });

        foreach (var (path, verb, op) in new[] { ("/customisation/enable-script", "enabled", 1), ("/customisation/disable-script", "disabled", 0), ("/customisation/delete-script", "deleted", 2) })
        {
            Route(routes, env, path, "POST", Access.Operator, "station.script." + verb[..^1], async (http, _) =>
            {
                var name = await ScriptParamAsync(http);
                if (op == 2) scripts.Delete(name);
                else env.Log.LogScript(verb, scripts.SetEnabled(name, op == 1));
                return Results.Text($"Script {verb} successfully", "text/plain; charset=utf-8", Encoding.UTF8);
            });
        }
    }

    /// <summary>The <c>script</c> parameter from the query, a form, or a JSON body.</summary>
    private static async Task<string?> ScriptParamAsync(HttpContext http)
    {
        var q = http.Request.Query["script"];
        if (q.Count > 0) return q.ToString();
        if (http.Request.HasFormContentType)
        {
            var form = await http.Request.ReadFormAsync(http.RequestAborted);
            return form["script"].ToString();
        }
        if ((http.Request.ContentType ?? "").StartsWith("application/json", StringComparison.OrdinalIgnoreCase))
        {
            var body = await ReadJsonObjectAsync(http, 16 * 1024);
            return body.TryGetProperty("script", out var s) && s.ValueKind == JsonValueKind.String ? s.GetString() : null;
        }
        return null;
    }

    private static void AllowBody(HttpContext http, long max)
    {
        var feature = http.Features.Get<IHttpMaxRequestBodySizeFeature>();
        if (feature is { IsReadOnly: false }) feature.MaxRequestBodySize = max;
    }

    internal static Dictionary<string, object?> ScriptJson(StationScript s) => new()
    {
        ["filename"] = s.Filename,
        ["name"] = s.Name,
        ["executable"] = s.Enabled,
        ["enabled"] = s.Enabled,
        ["sha256"] = s.Sha256,
        ["size"] = s.Size,
        ["provisioner"] = s.Provisioner,
        ["stage"] = s.Stage,
        ["description"] = s.Description,
        ["exists"] = s.Exists,
    };
}

internal static class StationLogExtensions
{
    public static void LogScript(this Microsoft.Extensions.Logging.ILogger log, string what, StationScript s) =>
        Microsoft.Extensions.Logging.LoggerExtensions.LogInformation(log, "Station: script {Name} {What} (sha256 {Sha256}, enabled {Enabled})", s.Filename, what, s.Sha256, s.Enabled);
}
