using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using TpmProvisioning.Attestation;
using TpmProvisioning.Pki;
using TpmProvisioning.Server.Hosting;

namespace TpmProvisioning.Server.Roles;

/// <summary>What the Keylime surfaces (registrar, agent) share: the <c>{code, status, results}</c> envelope, <c>/version</c>,
/// the answer to unsupported API versions, body reading, and the per-route client-certificate rule.</summary>
internal static class Keylime
{
    public const string Prefix = "/v" + KeylimeApi.CurrentVersion;
    /// <summary>Every served version's prefix (<c>/v2.0</c> … <c>/v2.5</c>): each role maps its routes under all of them.</summary>
    public static IReadOnlyList<string> Prefixes { get; } = KeylimeApi.SupportedVersions.Select(v => "/v" + v).ToArray();
    public const int MaxBodyBytes = 1024 * 1024;

    private static readonly JsonSerializerOptions s_json = new(JsonSerializerDefaults.Web)
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        PropertyNamingPolicy = null,
    };

    public static IResult Envelope<T>(AttestationOutcome<T> outcome) =>
        Envelope(outcome.Status, outcome.Message, outcome.Succeeded ? outcome.Value : null);

    /// <summary>Keylime's envelope; <c>results</c> is <c>{}</c> when there is nothing to say, as Keylime answers.</summary>
    public static IResult Envelope(int status, string message, object? results) =>
        Results.Json(new Dictionary<string, object?> { ["code"] = status, ["status"] = message, ["results"] = results ?? new Dictionary<string, object>() }, s_json, statusCode: status);

    public static IResult Draining() => Envelope(503, "Service Unavailable: the server is draining", null);

    public static AttestationCallInfo CallInfo(HttpContext http) => new()
    {
        Actor = http.Items.TryGetValue(ClientCertificateFilter.ClientIdentityKey, out var who) && who is string s ? s : "agent",
        Source = http.Connection.RemoteIpAddress?.ToString() ?? "unknown",
    };

    /// <summary>
    /// Reads the body up to <paramref name="max"/> bytes (default <see cref="MaxBodyBytes"/>) through the shared
    /// <see cref="RequestBodyReader"/>, as one array (for the small bodies of the registrar and the agent); null with an error
    /// result in the envelope when too large (413), the server's body budget is spent (503), the framing is broken or the bytes
    /// are not UTF-8 (400).
    /// </summary>
    public static async Task<(byte[]? Body, IResult? Error)> ReadBodyAsync(HttpContext http, int max = MaxBodyBytes)
    {
        var (body, error) = await ReadBodySequenceAsync(http, max);
        return body is null ? (null, error) : (body.ToArray(), null);
    }

    /// <summary>As <see cref="ReadBodyAsync"/>, but the pooled body itself (released when the response ends), for large bodies parsed as a stream.</summary>
    public static async Task<(RequestBody? Body, IResult? Error)> ReadBodySequenceAsync(HttpContext http, long max)
    {
        var r = await RequestBodyReader.ReadAsync(http, max);
        return r.Body is not null ? (r.Body, null) : (null, BodyError(r));
    }

    /// <summary>A body refusal in the envelope.</summary>
    public static IResult BodyError(BodyReadResult r) => r.Error switch
    {
        BodyReadError.TooLarge => Envelope(413, "Request body too large", null),
        BodyReadError.Busy => Envelope(503, "Service Unavailable: " + r.Message, null),
        BodyReadError.InvalidUtf8 => Envelope(400, "body: not valid UTF-8", null),
        _ => Envelope(400, "Bad request: " + r.Message, null),
    };

    /// <summary>Marks an endpoint open to callers without a client certificate.</summary>
    public static TBuilder Open<TBuilder>(this TBuilder b) where TBuilder : IEndpointConventionBuilder =>
        b.WithMetadata(AllowWithoutClientCertificateAttribute.Instance);

    /// <summary>Marks an endpoint open without a client certificate and served on the registrar's plain port too.</summary>
    public static TBuilder OpenOnPlainPort<TBuilder>(this TBuilder b) where TBuilder : IEndpointConventionBuilder =>
        b.Open().WithMetadata(ServedOnPlainPortAttribute.Instance);

    /// <summary>
    /// A route group whose endpoints need a components-CA client certificate in one of <paramref name="allowed"/> roles when
    /// the server speaks TLS.
    /// </summary>
    public static RouteGroupBuilder Mutual(IEndpointRouteBuilder routes, ServerContext context, ClientRole allowed)
    {
        var g = routes.MapGroup("");
        if (context.Tls) g.AddEndpointFilter(new ClientCertificateFilter(context.ComponentCa, allowed));
        return g;
    }

    /// <summary>
    /// <c>GET /version</c> (unauthenticated, as Keylime's tenant and verifier negotiate with it) and a 400 in the envelope
    /// for any other <c>/v{major}.{minor}/</c> prefix; mapped once per server whichever Keylime roles it hosts.
    /// </summary>
    private static bool LooksLikeVersion(string v) =>
        v.Length is > 0 and <= 8 && v.All(c => char.IsAsciiDigit(c) || c == '.') && char.IsAsciiDigit(v[0]);

    public static void MapShared(IEndpointRouteBuilder routes, ServerContext context)
    {
        if (!context.SharedRoutes.Add("keylime")) return;
        routes.MapGet("/version", () => Envelope(200, "Success", new KeylimeVersionInfo())).OpenOnPlainPort();
        // The slim host has no regex route constraints: the version is checked here.
        routes.Map("/v{version}/{**rest}", (string version) =>
            KeylimeApi.SupportedVersions.Contains(version) || !LooksLikeVersion(version)
                ? Envelope(404, "Not Found", null)
                : Envelope(400, $"API version v{version} not supported; supported: {string.Join(", ", KeylimeApi.SupportedVersions)}", null)).OpenOnPlainPort();
    }
}
