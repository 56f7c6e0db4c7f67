using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using TpmProvisioning.Hosting;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Station;

namespace TpmProvisioning.Server.Roles;

/// <summary>
/// Spec 003 signing keys, PKCS#11 and secrets at rest (docs/rest/station.md): <c>/options/upload-key</c>, <c>/options/keys</c>
/// and its <c>activate</c>, <c>remove</c>, <c>wrap</c>, <c>register-pkcs11</c>; <c>/options/validate-key</c>, <c>/options/pkcs11-*</c>,
/// <c>/options/set-pkcs11-pin</c>, <c>/options/encryption-status</c>, <c>/options/migrate-secrets</c>. Never returns a key or a PIN.
/// </summary>
internal sealed partial class StationRole
{
    private const int MaxKeyBody = 256 * 1024;

    /// <summary>The one signing-key service of a server, shared by the provisioning endpoint (active key per request) and the station routes.</summary>
    internal static void AddSigningKeys(IServiceCollection services, ServerContext context) =>
        services.TryAddSingleton(_ => new SigningKeyService(context.Store,
            context.Options.Provisioning?.TpmCaDirectory ?? ProvisioningPaths.TpmCa(context.Info.DataPath), () => OpenKeyRing(context)));

    /// <summary>
    /// The master keys of the server: the station's (<c>-MasterKey</c>), else the KMS's or the verifier's, else the one set up in the
    /// data path; plus the verifier's fallback key file when it exists.
    /// </summary>
    internal static Kms.SecretKeyRing OpenKeyRing(ServerContext context)
    {
        var o = context.Options;
        var settings = o.Station?.MasterKey
            ?? (o.Roles.HasFlag(ServerRole.Kms) ? o.Kms : null)
            ?? (o.Roles.HasFlag(ServerRole.Verifier) ? o.Verifier?.MasterKey : null);
        return Kms.SecretKeyRing.Open(context.Info.DataPath, settings);
    }

    private static void MapKeys(IEndpointRouteBuilder routes, StationEnv env)
    {
        var keys = routes.ServiceProvider.GetRequiredService<SigningKeyService>();

        Route(routes, env, "/options/keys", "GET", Access.Operator, "station.signing-key.list", async (http, _) =>
        {
            var list = await keys.ListAsync(http.RequestAborted);
            return JsonOk(new Dictionary<string, object?>
            {
                ["activeKeyId"] = list.FirstOrDefault(k => k.Active)?.Label,
                ["keys"] = list.Select(SigningKeyJson).ToList(),
            });
        });

        Route(routes, env, "/options/upload-key", "POST", Access.Operator, "station.signing-key.upload", async (http, _) =>
        {
            var p = await ReadParamsAsync(http);
            var key = await keys.UploadAsync(p.Get("label") ?? p.Get("id"), p.Get("certificate"), p.Get("key"), http.RequestAborted);
            env.Log.LogSigningKey("uploaded", key);
            return JsonOk(SigningKeyJson(key), 201);
        });

        Route(routes, env, "/options/keys/activate", "POST", Access.Operator, "station.signing-key.activate", async (http, _) =>
        {
            var p = await ReadParamsAsync(http);
            var key = await keys.ActivateAsync(p.Get("id") ?? p.Get("label"), http.RequestAborted);
            env.Log.LogSigningKey("activated", key);
            return JsonOk(SigningKeyJson(key));
        });

        Route(routes, env, "/options/keys/remove", "POST", Access.Operator, "station.signing-key.remove", async (http, _) =>
        {
            var p = await ReadParamsAsync(http);
            string? label = p.Get("id") ?? p.Get("label");
            await keys.RemoveAsync(label, http.RequestAborted);
            env.Log.LogInformation("Station: signing key {Label} removed", label);
            return JsonOk(new Dictionary<string, object?> { ["success"] = true, ["id"] = label });
        });

        Route(routes, env, "/options/keys/wrap", "POST", Access.Operator, "station.signing-key.wrap", async (http, _) =>
        {
            var p = await ReadParamsAsync(http);
            var key = await keys.WrapAsync(p.Get("id") ?? p.Get("label"), http.RequestAborted);
            env.Log.LogSigningKey("wrapped", key);
            return JsonOk(SigningKeyJson(key));
        });

        Route(routes, env, "/options/keys/register-pkcs11", "POST", Access.Operator, "station.signing-key.register-pkcs11", async (http, _) =>
        {
            var p = await ReadParamsAsync(http);
            var key = await keys.RegisterPkcs11Async(Pkcs11Request(p), http.RequestAborted);
            env.Log.LogSigningKey("registered", key);
            return JsonOk(SigningKeyJson(key), 201);
        });

        Route(routes, env, "/options/validate-key", "POST", Access.Operator, "station.signing-key.validate", async (http, _) =>
        {
            var p = await ReadParamsAsync(http);
            string type = p.Get("type") ?? (p.Get("module") is not null ? "pkcs11" : "pem");
            var result = type switch
            {
                "pem" => SigningKeyService.ValidatePem(p.Get("certificate"), p.Get("key")),
                "pkcs11" => await keys.ValidatePkcs11Async(Pkcs11Request(p), http.RequestAborted),
                _ => throw new StationException(400, "INVALID_PARAMETER", "type: pem or pkcs11", $"Received: {Clip(type)}"),
            };
            return JsonOk(new Dictionary<string, object?>
            {
                ["valid"] = result.Valid, ["type"] = result.Type, ["algorithm"] = result.Algorithm, ["keySize"] = result.KeySize,
                ["fingerprint"] = result.Fingerprint, ["subject"] = result.Subject, ["message"] = result.Message,
            });
        });

        Route(routes, env, "/options/pkcs11-status", "GET", Access.Operator, "station.pkcs11.status", async (http, _) =>
        {
            var modules = await keys.StatusAsync(http.RequestAborted);
            return JsonOk(new Dictionary<string, object?>
            {
                ["available"] = modules.Count > 0 && modules.All(m => m.Loaded),
                ["modules"] = modules.Select(m => new Dictionary<string, object?>
                {
                    ["module"] = m.Module, ["exists"] = m.Exists, ["loaded"] = m.Loaded, ["error"] = m.Error, ["tokens"] = m.Tokens, ["keys"] = m.Keys,
                }).ToList(),
            });
        });

        Route(routes, env, "/options/pkcs11-discover", "POST", Access.Operator, "station.pkcs11.discover", async (http, _) =>
        {
            var p = await ReadParamsAsync(http);
            var tokens = await keys.DiscoverAsync(p.Get("module"), http.RequestAborted);
            return JsonOk(new Dictionary<string, object?>
            {
                ["module"] = p.Get("module"),
                ["tokens"] = tokens.Select(t => new Dictionary<string, object?>
                {
                    ["slot"] = t.Slot, ["label"] = t.Label, ["model"] = t.Model, ["manufacturer"] = t.Manufacturer, ["serial"] = t.SerialNumber,
                    ["initialized"] = t.Initialized, ["pinConfigured"] = t.PinConfigured, ["loggedIn"] = t.LoggedIn,
                    ["objects"] = t.Objects.Select(o => new Dictionary<string, object?> { ["class"] = o.Class, ["label"] = o.Label, ["id"] = o.Id, ["keyType"] = o.KeyType }).ToList(),
                }).ToList(),
            });
        });

        Route(routes, env, "/options/pkcs11-pin-status", "GET", Access.Operator, "station.pkcs11.pin-status", async (http, _) =>
        {
            var pins = await keys.PinStatusAsync(http.RequestAborted);
            string? module = http.Request.Query["module"].FirstOrDefault();
            string? token = http.Request.Query["token_label"].FirstOrDefault();
            var matching = pins.Where(x => (module is null || x.Module == module) && (token is null || x.Token == token)).ToList();
            return JsonOk(new Dictionary<string, object?>
            {
                ["configured"] = matching.Count > 0,
                ["tokens"] = matching.Select(x => new Dictionary<string, object?>
                {
                    ["module"] = x.Module, ["token_label"] = x.Token, ["configured"] = x.Configured, ["wrapped"] = x.Wrapped, ["wrapKeyId"] = x.WrapKeyId, ["updated"] = Time(x.Updated),
                }).ToList(),
            });
        });

        Route(routes, env, "/options/set-pkcs11-pin", "POST", Access.Operator, "station.pkcs11.set-pin", async (http, _) =>
        {
            var p = await ReadParamsAsync(http);
            bool stored = await keys.SetPinAsync(p.Get("module"), p.Get("token_label"), Slot(p), p.Get("pin"), http.RequestAborted);
            env.Log.LogInformation("Station: PKCS#11 PIN of {Token} in {Module} {What}", p.Get("token_label") ?? p.Get("slot"), p.Get("module"), stored ? "stored (sealed)" : "removed");
            return JsonOk(new Dictionary<string, object?> { ["success"] = true, ["configured"] = stored });
        });

        Route(routes, env, "/options/encryption-status", "GET", Access.Operator, "station.secrets.status", async (http, _) =>
        {
            var report = await SecretsAtRest.StatusAsync(env.Context.Store, keys.Ring, http.RequestAborted);
            return JsonOk(SecretStatusJson(report));
        });

        Route(routes, env, "/options/migrate-secrets", "POST", Access.Operator, "station.secrets.migrate", async (http, caller) =>
        {
            var p = await ReadParamsAsync(http);
            var result = await SecretsAtRest.MigrateAsync(env.Context.Store, keys.Ring, p.Get("target") ?? http.Request.Query["target"].FirstOrDefault(), caller.Actor, caller.Source, http.RequestAborted);
            env.Log.LogInformation("Station: secrets migrated ({Target}): {Count} wrapped with master key {KeyId}", result.Target, result.TotalWrapped, result.MasterKeyId);
            var report = await SecretsAtRest.StatusAsync(env.Context.Store, keys.Ring, http.RequestAborted);
            return JsonOk(new Dictionary<string, object?>
            {
                ["success"] = true, ["target"] = result.Target, ["masterKeyId"] = result.MasterKeyId, ["wrapped"] = result.Wrapped,
                ["totalWrapped"] = result.TotalWrapped, ["alreadyWrapped"] = result.AlreadyWrapped, ["skipped"] = result.Skipped,
                ["status"] = SecretStatusJson(report),
            });
        });
    }

    internal static Dictionary<string, object?> SigningKeyJson(ProvisioningSigningKey k) => new()
    {
        ["id"] = k.Label,
        ["label"] = k.Label,
        ["type"] = k.Location switch { "pkcs11" => "pkcs11", "file" => "builtin", _ => "pem" },
        ["location"] = k.Location,
        ["path"] = k.Pkcs11Module,
        ["fingerprint"] = k.Fingerprint,
        ["algorithm"] = k.Algorithm,
        ["keySize"] = k.KeySize,
        ["subject"] = k.Subject,
        ["notAfter"] = Time(k.NotAfter),
        ["active"] = k.Active,
        ["wrapped"] = k.Wrapped,
        ["wrapKeyId"] = k.WrapKeyId,
        ["pkcs11Token"] = k.Pkcs11Token,
        ["pkcs11Key"] = k.Pkcs11Key,
        ["isFitForPurpose"] = true,
        ["statusLevel"] = "ok",
        ["statusMessage"] = k.Active ? "signs AK certificates" : "ready",
        ["addedAt"] = k.Added is { } a ? Time(a) : null,
    };

    internal static Dictionary<string, object?> SecretStatusJson(SecretStatusReport r) => new()
    {
        ["masterKeyId"] = r.MasterKeyId,
        ["masterKey"] = r.MasterKey,
        ["masterKeyKind"] = r.MasterKeyKind,
        ["totalPlaintext"] = r.TotalPlaintext,
        ["totalWrapped"] = r.TotalWrapped,
        ["kinds"] = r.Kinds.Select(k => new Dictionary<string, object?>
        {
            ["kind"] = k.Kind, ["total"] = k.Total, ["plaintext"] = k.Plaintext, ["wrappedBy"] = k.WrappedBy, ["wrappedByUnknownKey"] = k.WrappedByUnknownKey,
        }).ToList(),
    };

    private static Pkcs11KeyRequest Pkcs11Request(Params p) => new()
    {
        Label = p.Get("label") ?? p.Get("id"), Module = p.Get("module"), TokenLabel = p.Get("token_label"), Slot = Slot(p),
        KeyLabel = p.Get("key_label"), KeyId = p.Get("key_id"), CertificatePem = p.Get("certificate"),
    };

    private static ulong? Slot(Params p)
    {
        var s = p.Get("slot");
        if (string.IsNullOrEmpty(s)) return null;
        if (!ulong.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out var v)) throw new StationException(400, "INVALID_PARAMETER", "slot: a whole number", $"Received: {Clip(s)}");
        return v;
    }

    /// <summary>Named string parameters of a request body (JSON object, URL-encoded or multipart form; a form file's text counts as its field).</summary>
    internal sealed class Params(Dictionary<string, string?> values)
    {
        public string? Get(string name) => values.TryGetValue(name, out var v) ? v : null;
    }

    internal static async Task<Params> ReadParamsAsync(HttpContext http)
    {
        var values = new Dictionary<string, string?>(StringComparer.Ordinal);
        if (http.Request.HasFormContentType)
        {
            var feature = http.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpMaxRequestBodySizeFeature>();
            if (feature is { IsReadOnly: false }) feature.MaxRequestBodySize = MaxKeyBody;
            var form = await http.Request.ReadFormAsync(new Microsoft.AspNetCore.Http.Features.FormOptions { MultipartBodyLengthLimit = MaxKeyBody, ValueLengthLimit = MaxKeyBody }, http.RequestAborted);
            foreach (var kv in form) values[kv.Key] = kv.Value.ToString();
            foreach (var f in form.Files)
            {
                if (f.Length > MaxKeyBody) throw new StationException(413, "PAYLOAD_TOO_LARGE", $"{f.Name}: at most {MaxKeyBody} bytes");
                using var reader = new StreamReader(f.OpenReadStream());
                values[f.Name] = await reader.ReadToEndAsync(http.RequestAborted);
            }
            return new Params(values);
        }
        if (http.Request.ContentLength is 0 || (http.Request.ContentLength is null && !http.Request.Headers.TransferEncoding.Any()))
            return new Params(values);
        var body = await ReadJsonObjectAsync(http, MaxKeyBody);
        foreach (var p in body.EnumerateObject())
        {
            values[p.Name] = p.Value.ValueKind switch
            {
                JsonValueKind.String => p.Value.GetString(),
                JsonValueKind.Number => p.Value.GetRawText(),
                JsonValueKind.Null => null,
                JsonValueKind.True => "true",
                JsonValueKind.False => "false",
                _ => throw new StationException(400, "INVALID_PARAMETER", $"{Clip(p.Name)}: a string is expected"),
            };
        }
        return new Params(values);
    }
}

internal static class SigningKeyLogExtensions
{
    public static void LogSigningKey(this Microsoft.Extensions.Logging.ILogger log, string what, ProvisioningSigningKey k) =>
        Microsoft.Extensions.Logging.LoggerExtensions.LogInformation(log, "Station: signing key {Label} {What} ({Location}, {Algorithm}-{Size}, certificate SHA-256 {Fingerprint}, active {Active})",
            k.Label, what, k.Location, k.Algorithm, k.KeySize, k.Fingerprint, k.Active);
}
