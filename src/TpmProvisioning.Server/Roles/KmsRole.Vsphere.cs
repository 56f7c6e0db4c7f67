using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using TpmProvisioning.Kms;

namespace TpmProvisioning.Server.Roles;

/// <summary>Spec 002: vSphere trusted-infrastructure KMS providers, vSphere sessions and the vSphere error shape.</summary>
internal sealed partial class KmsRole
{
    public const string ProvidersPath = "/api/esx/trusted-infrastructure/kms/providers";
    public const string SessionHeader = "vmware-api-session-id";

    /// <summary>vSphere's error body: <c>{"error_type": "...", "messages": [{"id", "default_message", "args"}]}</c>.</summary>
    internal static IResult VsphereError(int status, string errorType, string message, params string[] args) =>
        Results.Json(new Dictionary<string, object>
        {
            ["error_type"] = errorType,
            ["messages"] = new[] { new Dictionary<string, object> { ["id"] = "com.vmware.vapi.std.errors." + errorType.ToLowerInvariant(), ["default_message"] = message, ["args"] = args } },
        }, Json, statusCode: status);

    private static IResult VsphereError(KmsException ex) => ex.Kind switch
    {
        KmsErrorKind.InvalidArgument => VsphereError(400, "INVALID_ARGUMENT", ex.Message, ex.Field ?? ""),
        KmsErrorKind.AlreadyExists => VsphereError(400, "ALREADY_EXISTS", ex.Message, ex.Field ?? ""),
        KmsErrorKind.NotFound => VsphereError(404, "NOT_FOUND", ex.Message, ex.Field ?? ""),
        KmsErrorKind.Unauthenticated => VsphereError(401, "UNAUTHENTICATED", "Authentication required."),
        KmsErrorKind.Unauthorized => VsphereError(403, "UNAUTHORIZED", ex.Message),
        KmsErrorKind.Throttled => VsphereError(429, "UNABLE_TO_ALLOCATE_RESOURCE", ex.Message, (ex.RetryAfterSeconds ?? 1).ToString(System.Globalization.CultureInfo.InvariantCulture)),
        KmsErrorKind.Busy => VsphereError(503, "SERVICE_UNAVAILABLE", ex.Message),
        _ => VsphereError(500, "ERROR", "The operation failed; see the server log."),
    };

    /// <summary>Runs a vSphere call: authenticates the session, checks the role, maps engine errors and audits refused changes.</summary>
    private static Task<IResult> Vsphere(HttpContext http, ServerContext context, KmsServices kms, ILogger log, KmsUserRole need, string action, string? target,
        Func<KmsCaller, Task<IResult>> body) =>
        GuardedAsync(http, context, kms, log, need, action, target, http.Request.Headers[SessionHeader].ToString(), KmsEngine.SessionKind, "no valid session",
            user => $"user '{user.Name}' ({user.Role}) may not {action.Split('.')[^1]} providers",
            VsphereError, () => VsphereError(503, "SERVICE_UNAVAILABLE", "The server is draining."), () => VsphereError(500, "ERROR", "The operation failed; see the server log."), body);

    /// <summary>
    /// What every authenticated KMS call shares (vSphere sessions, CipherTrust bearer tokens): refuse while draining,
    /// authenticate the credential, check the role, run the call, map engine errors to the surface's shape (through
    /// <paramref name="error"/>), audit refused changes, and answer store, crypto and HSM failures with a bare 500.
    /// </summary>
    private static async Task<IResult> GuardedAsync(HttpContext http, ServerContext context, KmsServices kms, ILogger log, KmsUserRole need, string action, string? target,
        string? credential, string credentialKind, string unauthenticated, Func<KmsUserInfo, string> denied,
        Func<KmsException, IResult> error, Func<IResult> draining, Func<IResult> internalError, Func<KmsCaller, Task<IResult>> body)
    {
        if (context.Info.Draining) return draining();
        KmsCaller caller = Caller(http, "anonymous");
        try
        {
            var user = await kms.Engine.AuthenticateAsync(credential, credentialKind, http.RequestAborted);
            if (user is null) throw new KmsException(KmsErrorKind.Unauthenticated, null, unauthenticated);
            caller = Caller(http, user.Name);
            if (need == KmsUserRole.Administrator && user.Role != KmsUserRole.Administrator)
                throw new KmsException(KmsErrorKind.Unauthorized, null, denied(user));
            return await body(caller);
        }
        catch (KmsException ex)
        {
            RetryAfter(http, ex);
            if (need == KmsUserRole.Administrator || ex.Kind is KmsErrorKind.Unauthenticated or KmsErrorKind.Unauthorized)
                await TryAuditAsync(kms, caller, action, target, ex, log);
            if (ex.Kind == KmsErrorKind.Unavailable) log.LogError("KMS {Action} failed: {Message}", action, ex.Message);
            return error(ex);
        }
        catch (Exception ex) when (ex is Storage.StoreUnavailableException or System.Security.Cryptography.CryptographicException or Net.Pkcs11Interop.Common.Pkcs11Exception)
        {
            log.LogError(ex, "KMS {Action} failed", action);
            return internalError();
        }
    }

    private static async Task TryAuditAsync(KmsServices kms, KmsCaller caller, string action, string? target, KmsException ex, ILogger log)
    {
        try { await kms.Engine.AuditRefusalAsync(caller, action, target, ex); }
        catch (Storage.StoreUnavailableException e) { log.LogError(e, "KMS: audit of a refused {Action} failed", action); }
    }

    private static void MapVsphere(IEndpointRouteBuilder routes, ServerContext context, KmsServices kms, ILogger log)
    {
        var engine = kms.Engine;

        routes.MapPost("/api/session", async (HttpContext http) =>
        {
            if (context.Info.Draining) return VsphereError(503, "SERVICE_UNAVAILABLE", "The server is draining.");
            var (user, password) = Basic(http.Request.Headers.Authorization.ToString());
            try
            {
                if (user is null) throw new KmsException(KmsErrorKind.Unauthenticated, null, "basic credentials required");
                var issued = await engine.LoginAsync(user, password, KmsEngine.SessionKind, Caller(http, user), http.RequestAborted);
                return Results.Json(issued.Token, Json, statusCode: 201);
            }
            catch (KmsException ex)
            {
                RetryAfter(http, ex);
                return VsphereError(ex);
            }
        });

        routes.MapDelete("/api/session", async (HttpContext http) =>
        {
            var token = http.Request.Headers[SessionHeader].ToString();
            if (string.IsNullOrEmpty(token) || await engine.AuthenticateAsync(token, KmsEngine.SessionKind, http.RequestAborted) is null)
                return VsphereError(401, "UNAUTHENTICATED", "Authentication required.");
            await engine.LogoutAsync(token, http.RequestAborted);
            return Results.NoContent();
        });

        routes.MapPost(ProvidersPath, Task<IResult> (HttpContext http) => Vsphere(http, context, kms, log, KmsUserRole.Administrator, "kms.provider.create", null, async caller =>
        {
            var (body, error) = await ReadJsonAsync(http);
            if (body is not { } b) throw error!;
            string? err = null;
            var name = Str(b, "provider", ref err);
            if (err is not null) throw new KmsException(KmsErrorKind.InvalidArgument, "provider", err);
            if (!b.TryGetProperty("native_spec", out var spec) || spec.ValueKind != JsonValueKind.Object)
                throw new KmsException(KmsErrorKind.InvalidArgument, "native_spec", "native_spec is required (only NATIVE providers are supported)");
            var keyId = Str(spec, "key_id", ref err);
            var kdkText = Str(spec, "key_derivation_key", ref err);
            if (err is not null) throw new KmsException(KmsErrorKind.InvalidArgument, "native_spec", "native_spec." + err);
            KmsEngine.CheckName(name, "provider");
            var kdk = KmsEngine.DecodeKeyDerivationKey(kdkText);
            try { await engine.CreateProviderAsync(name, keyId, kdk, caller, http.RequestAborted); }
            finally { System.Security.Cryptography.CryptographicOperations.ZeroMemory(kdk); }
            log.LogInformation("KMS: provider {Provider} created by {User}", name, caller.Actor);
            return Results.NoContent();
        })).Open();

        routes.MapGet(ProvidersPath, Task<IResult> (HttpContext http) => Vsphere(http, context, kms, log, KmsUserRole.ReadOnly, "kms.provider.list", null, async _ =>
            Results.Json((await engine.ListProvidersAsync(http.RequestAborted)).Select(p => new Dictionary<string, object> { ["provider"] = p.Name, ["health"] = p.Health }).ToList(), Json))).Open();

        routes.MapGet(ProvidersPath + "/{provider}", (HttpContext http, string provider) => Vsphere(http, context, kms, log, KmsUserRole.ReadOnly, "kms.provider.get", provider, async _ =>
        {
            var p = await engine.GetProviderAsync(provider, http.RequestAborted);
            return Results.Json(new Dictionary<string, object>
            {
                ["health"] = p.Health,
                ["details"] = Array.Empty<object>(),
                ["type"] = p.Type,
                ["native_info"] = new Dictionary<string, object> { ["key_id"] = p.KeyId },
            }, Json);
        })).Open();

        routes.MapMethods(ProvidersPath + "/{provider}", ["PATCH"], (HttpContext http, string provider) => Vsphere(http, context, kms, log, KmsUserRole.Administrator, "kms.provider.update", provider, async caller =>
        {
            var (body, error) = await ReadJsonAsync(http);
            if (body is not { } b) throw error!;
            string? keyId = null, err = null;
            if (b.TryGetProperty("native_spec", out var spec) && spec.ValueKind != JsonValueKind.Null)
            {
                if (spec.ValueKind != JsonValueKind.Object) throw new KmsException(KmsErrorKind.InvalidArgument, "native_spec", "native_spec must be an object");
                if (spec.TryGetProperty("key_derivation_key", out _))
                    throw new KmsException(KmsErrorKind.InvalidArgument, "native_spec.key_derivation_key", "the key derivation key of a provider cannot be changed (its data keys would change)");
                keyId = Str(spec, "key_id", ref err);
                if (err is not null) throw new KmsException(KmsErrorKind.InvalidArgument, "native_spec.key_id", "native_spec." + err);
            }
            await engine.UpdateProviderAsync(provider, keyId, caller, http.RequestAborted);
            return Results.NoContent();
        })).Open();

        routes.MapDelete(ProvidersPath + "/{provider}", (HttpContext http, string provider) => Vsphere(http, context, kms, log, KmsUserRole.Administrator, "kms.provider.delete", provider, async caller =>
        {
            await engine.DeleteProviderAsync(provider, caller, http.RequestAborted);
            log.LogInformation("KMS: provider {Provider} deleted by {User}", provider, caller.Actor);
            return Results.NoContent();
        })).Open();
    }

    /// <summary>The user and password of an HTTP basic Authorization header; (null, null) when absent or malformed.</summary>
    internal static (string? User, string? Password) Basic(string header)
    {
        if (!header.StartsWith("Basic ", StringComparison.OrdinalIgnoreCase)) return (null, null);
        try
        {
            var text = Encoding.UTF8.GetString(Convert.FromBase64String(header[6..].Trim()));
            int colon = text.IndexOf(':');
            return colon <= 0 ? (null, null) : (text[..colon], text[(colon + 1)..]);
        }
        catch (FormatException) { return (null, null); }
    }
}
