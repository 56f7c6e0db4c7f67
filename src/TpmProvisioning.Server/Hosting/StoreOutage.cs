using System.Data.Common;
using System.Globalization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using TpmProvisioning.Server.Roles;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Server.Hosting;

/// <summary>
/// While the store cannot be reached (a shared PostgreSQL restarting, a network cut) every surface answers 503 with Retry-After
/// in its own error shape instead of a 500, and recovers by itself: each request opens its connection afresh, so the first one
/// after the database is back succeeds. Nothing is acknowledged before the store has committed it. Surfaces that already map a
/// store outage to 503 themselves keep their body; this adds the Retry-After header any 503 lacks.
/// </summary>
internal static class StoreOutage
{
    public const int RetryAfterSeconds = 5;

    public static void Use(WebApplication app)
    {
        var log = app.Logger;
        app.Use(async (http, next) =>
        {
            http.Response.OnStarting(static state =>
            {
                var r = ((HttpContext)state).Response;
                if (r.StatusCode == StatusCodes.Status503ServiceUnavailable && !r.Headers.ContainsKey("Retry-After"))
                    r.Headers.RetryAfter = RetryAfterSeconds.ToString(CultureInfo.InvariantCulture);
                return Task.CompletedTask;
            }, http);
            try
            {
                await next(http);
            }
            catch (Exception ex) when (IsOutage(ex) && !http.Response.HasStarted)
            {
                log.LogWarning("The store is unavailable: {Method} {Path} answered 503 ({Reason})", http.Request.Method, http.Request.Path.Value, Reason(ex));
                http.Response.Clear();
                http.Response.Headers.RetryAfter = RetryAfterSeconds.ToString(CultureInfo.InvariantCulture);
                await Answer(http).ExecuteAsync(http);
            }
        });
    }

    private static bool IsOutage(Exception ex)
    {
        for (Exception? e = ex; e is not null; e = e.InnerException)
            if (e is StoreUnavailableException or DbException) return true;
        return false;
    }

    private static string Reason(Exception ex)
    {
        for (Exception? e = ex; e is not null; e = e.InnerException)
            if (e is StoreUnavailableException or DbException) return e.GetType().Name;
        return ex.GetType().Name;
    }

    /// <summary>The 503 body in the shape of the surface the path belongs to.</summary>
    internal static IResult Answer(HttpContext http)
    {
        string path = http.Request.Path.Value ?? "";
        const string why = "the store is unavailable; retry later";
        if (path.StartsWith("/api/tpm", StringComparison.OrdinalIgnoreCase))
            return Results.Json(why, statusCode: 503);
        if (path.Equals("/version", StringComparison.OrdinalIgnoreCase) || Keylime.Prefixes.Any(p => path.StartsWith(p + "/", StringComparison.OrdinalIgnoreCase)))
            return Keylime.Envelope(503, "Service Unavailable: " + why, null);
        if (path.Contains("/cckm/", StringComparison.OrdinalIgnoreCase) || path.StartsWith("/api/v1/auth", StringComparison.OrdinalIgnoreCase))
            return KmsRole.CckmError(503, why);
        if (path.StartsWith("/api/esx", StringComparison.OrdinalIgnoreCase) || path.StartsWith("/api/session", StringComparison.OrdinalIgnoreCase))
            return KmsRole.VsphereError(503, "SERVICE_UNAVAILABLE", why);
        return StationRole.Error(http, 503, "DB_ERROR", why);
    }
}
