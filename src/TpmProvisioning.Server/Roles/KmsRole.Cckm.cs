using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using TpmProvisioning.Kms;

namespace TpmProvisioning.Server.Roles;

/// <summary>Spec 004: CipherTrust CCKM OCI keys and key versions, CipherTrust bearer tokens and error shape.</summary>
internal sealed partial class KmsRole
{
    /// <summary>CipherTrust's error body: <c>{"code": n, "codeDesc": "...", "message": "..."}</c>.</summary>
    internal static IResult CckmError(int status, string message)
    {
        var (code, desc) = status switch
        {
            400 => (4, "NCERRInvalidParamValue: Invalid parameter value"),
            401 => (13, "NCERRAuthFailed: Authentication failed"),
            403 => (7, "NCERRForbidden: Insufficient permissions"),
            404 => (5, "NCERRNotFound: Resource not found"),
            409 => (6, "NCERRConflict: Resource already exists"),
            429 => (15, "NCERRTooManyRequests: Too many requests"),
            503 => (16, "NCERRServiceUnavailable: Service unavailable"),
            _ => (2, "NCERRInternalServerError: Internal server error"),
        };
        return Results.Json(new Dictionary<string, object> { ["code"] = code, ["codeDesc"] = desc, ["message"] = message }, Json, statusCode: status);
    }

    private static IResult CckmError(KmsException ex) => ex.Kind switch
    {
        KmsErrorKind.InvalidArgument => CckmError(400, ex.Message),
        KmsErrorKind.AlreadyExists => CckmError(409, ex.Message),
        KmsErrorKind.NotFound => CckmError(404, ex.Message),
        KmsErrorKind.Unauthenticated => CckmError(401, "Unauthorized: a valid bearer token is required"),
        KmsErrorKind.Unauthorized => CckmError(403, ex.Message),
        KmsErrorKind.Throttled => CckmError(429, ex.Message),
        KmsErrorKind.Busy => CckmError(503, ex.Message),
        _ => CckmError(500, "Internal server error"),
    };

    private static Task<IResult> Cckm(HttpContext http, ServerContext context, KmsServices kms, ILogger log, KmsUserRole need, string action, string? target,
        Func<KmsCaller, Task<IResult>> body)
    {
        string auth = http.Request.Headers.Authorization.ToString();
        var token = auth.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? auth[7..].Trim() : null;
        return GuardedAsync(http, context, kms, log, need, action, target, token, KmsEngine.BearerKind, "no valid bearer token",
            user => $"user '{user.Name}' ({user.Role}) may not change keys",
            CckmError, () => CckmError(503, "The server is draining"), () => CckmError(500, "Internal server error"), body);
    }

    private static Dictionary<string, object?> KeyJson(KmsSettings s, KmsKeyInfo k) => new()
    {
        ["id"] = k.Id,
        ["uri"] = s.UriPrefix + "oci-key:" + k.Id,
        ["account"] = s.Account,
        ["createdAt"] = Time(k.Created),
        ["updatedAt"] = Time(k.Updated),
        ["name"] = k.Name,
        ["key_material_origin"] = "native",
        ["gone"] = false,
        ["oci_params"] = new Dictionary<string, object?>
        {
            ["compartment_id"] = k.CompartmentId,
            ["key_id"] = k.OciKeyId,
            ["vault_id"] = k.VaultId,
            ["display_name"] = k.Name,
            ["current_key_version"] = k.CurrentOciVersionId,
            ["lifecycle_state"] = "ENABLED",
            ["protection_mode"] = "SOFTWARE",
            ["key_shape"] = new Dictionary<string, object> { ["algorithm"] = k.Algorithm, ["length"] = k.Length },
            ["time_created"] = TimeMs(k.Created),
        },
    };

    private static Dictionary<string, object?> VersionJson(KmsSettings s, KmsKeyVersionInfo v) => new()
    {
        ["id"] = v.Id,
        ["uri"] = s.UriPrefix + "oci-key-version:" + v.Id,
        ["account"] = s.Account,
        ["createdAt"] = Time(v.Created),
        ["updatedAt"] = Time(v.Updated),
        ["key_material_origin"] = v.KeyMaterialOrigin,
        ["gone"] = false,
        ["oci_key_version_params"] = new Dictionary<string, object?>
        {
            ["compartment_id"] = v.CompartmentId,
            ["version_id"] = v.OciVersionId,
            ["key_id"] = v.OciKeyId,
            ["time_created"] = TimeMs(v.Created),
            ["vault_id"] = v.VaultId,
            ["lifecycle_state"] = v.LifecycleState,
            ["origin"] = v.Origin,
            ["is_primary"] = v.IsPrimary,
        },
    };

    /// <summary>CipherTrust's list envelope, with <c>skip</c> and <c>limit</c> from the query (defaults 0 and 10).</summary>
    private static IResult Page<T>(HttpContext http, IReadOnlyList<T> all, Func<T, object> map)
    {
        int skip = int.TryParse(http.Request.Query["skip"], out var sk) && sk >= 0 ? sk : 0;
        int limit = int.TryParse(http.Request.Query["limit"], out var li) && li > 0 ? Math.Min(li, 1000) : 10;
        return Results.Json(new Dictionary<string, object>
        {
            ["skip"] = skip, ["limit"] = limit, ["total"] = all.Count, ["resources"] = all.Skip(skip).Take(limit).Select(map).ToList(),
        }, Json);
    }

    private static void MapCckm(IEndpointRouteBuilder routes, ServerContext context, KmsServices kms, ILogger log)
    {
        var engine = kms.Engine;
        var s = engine.Settings;

        routes.MapPost("/api/v1/auth/tokens", async (HttpContext http) =>
        {
            if (context.Info.Draining) return CckmError(503, "The server is draining");
            var (body, error) = await ReadJsonAsync(http);
            if (body is not { } b)
            {
                RetryAfter(http, error!);
                return CckmError(error!);
            }
            string? err = null;
            var grant = Str(b, "grant_type", ref err) ?? "password";
            var user = Str(b, "username", ref err);
            var password = Str(b, "password", ref err);
            if (err is not null) return CckmError(400, err);
            if (grant != "password") return CckmError(400, $"grant_type '{grant}' is not supported; use 'password'");
            if (string.IsNullOrEmpty(user) || string.IsNullOrEmpty(password)) return CckmError(400, "username and password are required");
            try
            {
                var issued = await engine.LoginAsync(user, password, KmsEngine.BearerKind, Caller(http, user), http.RequestAborted);
                return Results.Json(new Dictionary<string, object>
                {
                    ["jwt"] = issued.Token,
                    ["duration"] = (long)s.TokenLifetime.TotalSeconds,
                    ["token_type"] = "Bearer",
                    ["client_id"] = issued.UserName,
                }, Json);
            }
            catch (KmsException ex)
            {
                RetryAfter(http, ex);
                return CckmError(ex);
            }
        });

        foreach (var prefix in new[] { "/v1/cckm/oci/keys", "/api/v1/cckm/oci/keys" })
        {
            routes.MapPost(prefix, Task<IResult> (HttpContext http) => Cckm(http, context, kms, log, KmsUserRole.Administrator, "kms.key.create", null, async caller =>
            {
                var (body, error) = await ReadJsonAsync(http);
                if (body is not { } b) throw error!;
                string? err = null;
                var name = Str(b, "name", ref err);
                var compartment = Str(b, "compartment_id", ref err);
                if (err is not null) throw new KmsException(KmsErrorKind.InvalidArgument, "body", err);
                var key = await engine.CreateKeyAsync(name, compartment, caller, http.RequestAborted);
                return Results.Json(KeyJson(s, key), Json, statusCode: 201);
            }));

            routes.MapGet(prefix, Task<IResult> (HttpContext http) => Cckm(http, context, kms, log, KmsUserRole.ReadOnly, "kms.key.list", null, async _ =>
                Page(http, await engine.ListKeysAsync(http.RequestAborted), k => KeyJson(s, k))));

            routes.MapGet(prefix + "/{id}", (HttpContext http, string id) => Cckm(http, context, kms, log, KmsUserRole.ReadOnly, "kms.key.get", id, async _ =>
                Results.Json(KeyJson(s, await engine.GetKeyAsync(id, http.RequestAborted)), Json)));

            routes.MapPost(prefix + "/{id}/versions", (HttpContext http, string id) => Cckm(http, context, kms, log, KmsUserRole.Administrator, "kms.key.version.create", id, async caller =>
            {
                var (body, error) = await ReadJsonAsync(http);
                if (body is not { } b) throw error!;
                bool isNative = false;
                if (b.TryGetProperty("is_native", out var n))
                {
                    if (n.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw new KmsException(KmsErrorKind.InvalidArgument, "is_native", "is_native must be a boolean");
                    isNative = n.GetBoolean();
                }
                string? err = null, sourceId = null, tier = null;
                if (!isNative)
                {
                    sourceId = Str(b, "source_key_identifier", ref err);
                    tier = Str(b, "source_key_tier", ref err);
                    if (err is not null) throw new KmsException(KmsErrorKind.InvalidArgument, "body", err);
                }
                var v = await engine.AddVersionAsync(id, isNative, sourceId, tier, caller, http.RequestAborted);
                log.LogInformation("KMS: key {Key} version {Number} ({Origin}) added by {User}", v.KeyId, v.Number, v.KeyMaterialOrigin, caller.Actor);
                return Results.Json(VersionJson(s, v), Json, statusCode: 201);
            }));

            routes.MapGet(prefix + "/{id}/versions", (HttpContext http, string id) => Cckm(http, context, kms, log, KmsUserRole.ReadOnly, "kms.key.version.list", id, async _ =>
                Page(http, await engine.ListVersionsAsync(id, http.RequestAborted), v => VersionJson(s, v))));

            routes.MapGet(prefix + "/{id}/versions/{versionId}", (HttpContext http, string id, string versionId) => Cckm(http, context, kms, log, KmsUserRole.ReadOnly, "kms.key.version.get", id, async _ =>
                Results.Json(VersionJson(s, await engine.GetVersionAsync(id, versionId, http.RequestAborted)), Json)));
        }
    }
}
