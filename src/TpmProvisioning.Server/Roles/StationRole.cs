using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using TpmProvisioning.Hosting;
using TpmProvisioning.Station;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Server.Roles;

/// <summary>
/// Spec 003, the provisioning station: manufacturing records, devices with their states, logs and keys, customisation
/// scripts, QR verification, services, the audit log and live device updates (docs/rest/station.md). Closed by default:
/// every route needs an operator token (<c>Authorization: Bearer tpst_…</c>) or a components-CA client certificate; browsers
/// may sign in with a token for read-only pages (an HttpOnly, SameSite=Strict cookie that GET routes alone accept).
/// Errors are the documented object <c>{"error":{status,title,code,detail,additional}}</c>, or an HTML page when
/// <c>Accept</c> contains <c>text/html</c>.
/// </summary>
internal sealed partial class StationRole : IRoleModule
{
    public ServerRole Role => ServerRole.Station;
    public bool ChoosesClientCertificatesPerRoute => true;

    public const string SessionCookie = "tpst_session";
    internal static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web) { PropertyNamingPolicy = null, WriteIndented = false };

    public void AddServices(IServiceCollection services, ServerContext context)
    {
        services.AddSingleton(sp => new StationService(context.Store, context.Options.Station ?? new StationSettings(), context.Info.DataPath));
        services.AddSingleton(sp => new StationHub(sp.GetRequiredService<StationService>()));
        AddSigningKeys(services, context);
    }

    public void Map(IEndpointRouteBuilder routes, ServerContext context)
    {
        var station = routes.ServiceProvider.GetRequiredService<StationService>();
        var hub = routes.ServiceProvider.GetRequiredService<StationHub>();
        var log = routes.ServiceProvider.GetRequiredService<ILoggerFactory>().CreateLogger("TpmProvisioning.Station");
        var env = new StationEnv(context, station, hub, log);
        hub.Bind(context);
        log.LogInformation("Station: scripts in {Folder}, hook limit {Seconds} s, script runner {Runner}, public dashboard {Public}",
            station.Scripts.Directory, station.Settings.HookTimeout.TotalSeconds, station.Settings.ScriptRunner is null ? "none" : station.Settings.ScriptRunner.GetType().Name,
            station.Settings.PublicDashboard ? "on" : "off");
        // Registration and attestation after provisioning: the registrar's rows in this store, the verifier when one is set.
        station.StartWatch(station.Settings.WatchInterval, station.Settings.Verifier is null ? null : hub.VerifierStatusesAsync);
        MapDevices(routes, env);
        MapScripts(routes, env);
        MapMisc(routes, env);
        MapOptions(routes, env);
        MapKeys(routes, env);
        MapImages(routes, env);
    }

    /// <summary>What the station's handlers share.</summary>
    internal sealed record StationEnv(ServerContext Context, StationService Station, StationHub Hub, ILogger Log);

    /// <summary>Who is calling: an operator (token or certificate), a signed-in browser (cookie, reads only) or anonymous.</summary>
    internal sealed record Caller(string Actor, string Source, bool Operator);

    [Flags]
    internal enum Access
    {
        /// <summary>An operator only (token or client certificate; the session cookie too on GET).</summary>
        Operator = 0,
        /// <summary>Anonymous callers too while the public dashboard is on.</summary>
        PublicRead = 1,
    }

    /// <summary>
    /// Maps <paramref name="path"/> for every method: the wrong method gets 405 with the error object and an <c>Allow</c> header,
    /// then draining (503), then authentication (401/403), then the handler; a <see cref="StationException"/> becomes its
    /// error object. Every refusal and every change is audited.
    /// </summary>
    internal static void Route(IEndpointRouteBuilder routes, StationEnv env, string path, string method, Access access, string action,
        Func<HttpContext, Caller, Task<IResult>> handler)
    {
        routes.Map(path, async (HttpContext http) =>
        {
            var req = http.Request;
            // A WebSocket over HTTP/2 (RFC 8441, as browsers open it) arrives as CONNECT rather than GET.
            bool methodOk = req.Method == method || (method == "GET" && (req.Method == "HEAD" || (req.Method == "CONNECT" && http.WebSockets.IsWebSocketRequest)));
            IResult result;
            Caller? caller = null;
            try
            {
                if (!methodOk)
                {
                    http.Response.Headers.Allow = method == "GET" ? "GET, HEAD" : method;
                    result = Error(http, 405, "METHOD_NOT_ALLOWED", $"{req.Method} is not allowed here; use {method}");
                }
                else if (env.Context.Info.Draining)
                {
                    http.Response.Headers.RetryAfter = "5";
                    result = Error(http, 503, "SERVICE_UNAVAILABLE", "the server is draining; retry later");
                }
                else
                {
                    (caller, var refusal) = await AuthenticateAsync(http, env, access);
                    result = refusal ?? await handler(http, caller!);
                }
            }
            catch (StationException ex)
            {
                result = Error(http, ex.Status, ex.Code, ex.Message, ex.Additional);
            }
            catch (StoreUnavailableException)
            {
                result = Error(http, 503, "DB_ERROR", "the station's store is unavailable; retry later");
            }
            catch (BadHttpRequestException ex) when (ex.StatusCode == 413)
            {
                http.Response.Headers.Connection = "close";
                result = Error(http, 413, "PAYLOAD_TOO_LARGE", "the request body is too large");
            }
            catch (Exception ex) when (ex is BadHttpRequestException || (ex is IOException && !http.RequestAborted.IsCancellationRequested))
            {
                // Broken HTTP framing (a chunk size that overflows, a body cut short) while a form is read: the client's fault.
                http.Response.Headers.Connection = "close";
                result = Error(http, 400, "INVALID_REQUEST", "malformed request body");
            }
            catch (OperationCanceledException) when (http.RequestAborted.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                env.Log.LogError(ex, "Station request {Id} to {Path} failed", http.TraceIdentifier, req.Path.Value);
                result = Error(http, 500, "SERVER_ERROR", $"internal error; correlation id {http.TraceIdentifier}");
            }
            int status = result is IStatusCodeHttpResult { StatusCode: { } sc } ? sc : 200;
            if (req.Method != "GET" && req.Method != "HEAD" || status is 401 or 403 || action.StartsWith("station.key", StringComparison.Ordinal) || action == "station.log.read")
                await AuditAsync(env, http, caller, action, status);
            if (!http.Response.HasStarted)
            {
                http.Response.Headers.CacheControl = "no-store";
                http.Response.Headers.XContentTypeOptions = "nosniff";
                http.Response.Headers.XFrameOptions = "DENY";
                http.Response.Headers["Referrer-Policy"] = "same-origin";
                http.Response.Headers.ContentSecurityPolicy = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'";
                await result.ExecuteAsync(http);
            }
        });
    }

    private static async Task AuditAsync(StationEnv env, HttpContext http, Caller? caller, string action, int status)
    {
        try
        {
            string target = http.Request.Path.Value ?? "";
            await env.Context.Store.AppendAuditAsync(new AuditEntry
            {
                Actor = caller?.Actor ?? "anonymous",
                Action = action,
                Target = target.Length <= 256 ? target : target[..256],
                Source = http.Connection.RemoteIpAddress?.ToString() ?? "unknown",
                Outcome = status is >= 200 and < 300 ? AuditOutcome.Success : status is 401 or 403 ? AuditOutcome.Denied : status >= 500 ? AuditOutcome.Failed : AuditOutcome.Rejected,
                Detail = $"{http.Request.Method} {status}",
            }, CancellationToken.None);
        }
        catch (StoreUnavailableException) { }
    }

    /// <summary>Bearer token, then client certificate, then (GET only) the session cookie, then the public dashboard.</summary>
    internal static async Task<(Caller? Caller, IResult? Refusal)> AuthenticateAsync(HttpContext http, StationEnv env, Access access)
    {
        string source = http.Connection.RemoteIpAddress?.ToString() ?? "unknown";
        var auth = http.Request.Headers.Authorization.ToString();
        if (auth.Length > 0)
        {
            if (!auth.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
                return (null, Error(http, 401, "INVALID_TOKEN", "the Authorization header must be 'Bearer <operator token>'"));
            var token = await env.Station.Tokens.AuthenticateAsync(auth[7..].Trim(), http.RequestAborted);
            if (token is null) return (null, Error(http, 401, "INVALID_TOKEN", "the operator token is not valid"));
            return (new Caller($"token:{token.TokenId}", source, true), null);
        }
        if (env.Context.Tls)
        {
            var cert = http.Connection.ClientCertificate ?? await http.Connection.GetClientCertificateAsync(http.RequestAborted);
            if (cert is not null)
            {
                if (!env.Context.ComponentCa.Validates(cert))
                    return (null, Error(http, 403, "CERTIFICATE_NOT_TRUSTED", "the client certificate is not issued by this server's components CA"));
                // The CA issues server and agent certificates too: only a client certificate in the tenant (admin) role operates the station.
                if (!Pki.ClientRoles.Of(cert).HasFlag(Pki.ClientRole.Tenant))
                    return (null, Error(http, 403, "CERTIFICATE_NOT_ACCEPTED", $"the client certificate's role ({Pki.ClientRoles.Describe(Pki.ClientRoles.Of(cert))}) may not operate the station; it needs the tenant role"));
                return (new Caller($"cert:{cert.Subject}", source, true), null);
            }
        }
        bool read = http.Request.Method is "GET" or "HEAD" || (http.Request.Method == "CONNECT" && http.WebSockets.IsWebSocketRequest);
        if (read && http.Request.Cookies.TryGetValue(SessionCookie, out var cookie) && !string.IsNullOrEmpty(cookie))
        {
            var token = await env.Station.Tokens.AuthenticateAsync(cookie, http.RequestAborted);
            if (token is not null) return (new Caller($"session:{token.TokenId}", source, true), null);
        }
        if (read && access.HasFlag(Access.PublicRead) && env.Station.Settings.PublicDashboard)
            return (new Caller("anonymous", source, false), null);
        return (null, Error(http, 401, "UNAUTHENTICATED", "an operator token (Authorization: Bearer) or a client certificate of the components CA is required"));
    }

    internal static bool WantsHtml(HttpContext http) =>
        http.Request.Headers.Accept.ToString().Contains("text/html", StringComparison.OrdinalIgnoreCase);

    /// <summary>The documented error object, or an HTML error page when the client accepts HTML.</summary>
    internal static IResult Error(HttpContext http, int status, string code, string detail, string? additional = null)
    {
        string title = ReasonPhrases.GetReasonPhrase(status);
        if (WantsHtml(http))
            return Results.Content(StationPages.ErrorPage(status, title, code, detail, additional), "text/html; charset=utf-8", Encoding.UTF8, status);
        var error = new Dictionary<string, object?> { ["status"] = status, ["title"] = title, ["code"] = code, ["detail"] = detail };
        if (additional is not null) error["additional"] = additional;
        return Results.Json(new Dictionary<string, object?> { ["error"] = error }, Json, statusCode: status);
    }

    internal static IResult JsonOk(object value, int status = 200) => Results.Json(value, Json, statusCode: status);

    internal static IResult Html(string page) => Results.Content(page, "text/html; charset=utf-8", Encoding.UTF8);

    /// <summary>An optional non-negative integer query parameter; a bad value is a 400 INVALID_PARAMETER.</summary>
    internal static long? QueryLong(HttpContext http, string name, long min, long max)
    {
        var values = http.Request.Query[name];
        if (values.Count == 0) return null;
        if (values.Count > 1) throw new StationException(400, "INVALID_PARAMETER", $"{name}: given more than once");
        var s = values[0];
        if (!long.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out var v) || v < min || v > max)
            throw new StationException(400, "INVALID_PARAMETER", $"{name}: must be a whole number from {min} to {max}", $"Received: {Clip(s ?? "")}");
        return v;
    }

    internal static string Clip(string s) => s.Length <= 64 ? s : s[..64] + "…";

    internal static string Time(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture);
    /// <summary>The original's timestamp format, UTC.</summary>
    internal static string Ts(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture);
}
