using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Server.Hosting;

namespace TpmProvisioning.Server.Roles;

/// <summary>
/// Spec 000: <c>POST /api/tpm/tpm/provision</c> and <c>POST /api/v1/namespaces/{namespace}/api/tpm/tpm/provision</c>.
/// HTTP in, <see cref="ProvisioningService"/>, HTTP out: success is the spec's JSON object, every error a JSON string with
/// the spec's status code. The body is capped before it is read; the server's draining state answers 503.
/// </summary>
internal sealed class ProvisioningRole : IRoleModule
{
    public const string Route = "/api/tpm/tpm/provision";
    public const string NamespacedRoute = "/api/v1/namespaces/{namespace}/api/tpm/tpm/provision";

    public ServerRole Role => ServerRole.Provisioning;

    public void AddServices(IServiceCollection services, ServerContext context)
    {
        // Built by the container so it is disposed (the CA key with it) when the server stops.
        services.AddSingleton(sp => new ProvisioningEndpoint(context, sp.GetRequiredService<ILoggerFactory>().CreateLogger("TpmProvisioning.Provisioning"))
        {
            // The station, when it shares the server, watches every provisioning (states, logs, hook stages).
            Service = { Observer = sp.GetService<Station.StationService>() },
        });
        // The active signing key (station options/keys) signs each request's AK certificate; the TPM CA is the default.
        StationRole.AddSigningKeys(services, context);
    }

    public void Map(IEndpointRouteBuilder routes, ServerContext context)
    {
        // Resolved now so a broken TPM CA or trust folder fails the start, not the first request.
        var endpoint = routes.ServiceProvider.GetRequiredService<ProvisioningEndpoint>();
        var keys = routes.ServiceProvider.GetRequiredService<Station.SigningKeyService>();
        endpoint.Service.CaSource = ct => keys.ResolveAsync(endpoint.Service.Ca, ct);
        routes.MapPost(Route, (HttpContext http) => endpoint.HandleAsync(http, null));
        routes.MapPost(NamespacedRoute, (HttpContext http, string @namespace) => endpoint.HandleAsync(http, @namespace));
    }
}

/// <summary>The provisioning endpoint: one per server.</summary>
internal sealed class ProvisioningEndpoint : IDisposable
{
    private readonly ServerContext _context;
    private readonly ILogger _log;
    private readonly ProvisioningSettings _settings;
    private readonly HashSet<string> _namespaces;

    public ProvisioningEndpoint(ServerContext context, ILogger log)
    {
        _context = context;
        _log = log;
        _settings = context.Options.Provisioning ?? new ProvisioningSettings();
        _namespaces = new HashSet<string>(_settings.Namespaces, StringComparer.Ordinal);
        string dataPath = context.Info.DataPath;
        var ca = TpmCa.LoadOrCreate(_settings.TpmCaDirectory ?? ProvisioningPaths.TpmCa(dataPath));
        try
        {
            string roots = _settings.EkRootsDirectory ?? ProvisioningPaths.EkRoots(dataPath);
            string intermediates = _settings.EkIntermediatesDirectory ?? ProvisioningPaths.EkIntermediates(dataPath);
            Storage.PrivateFiles.CreateFolder(roots);
            Storage.PrivateFiles.CreateFolder(intermediates);
            var trust = new EkTrustAnchors(roots, intermediates);
            Service = new ProvisioningService(context.Store, ca, trust, _settings);
            if (trust.Current.Roots.Count == 0)
                _log.LogWarning("No trusted TPM manufacturer root in {Folder}: every provisioning request will be refused until one is added", roots);
            _log.LogInformation("Provisioning: TPM CA {Subject} ({Key}); EK roots {Roots}, intermediates {Intermediates}; namespaces {Namespaces}",
                ca.Certificate.Subject, ca.Signer.Description, roots, intermediates, string.Join(",", _namespaces));
        }
        catch
        {
            ca.Dispose();
            throw;
        }
    }

    public ProvisioningService Service { get; }

    public async Task HandleAsync(HttpContext http, string? ns)
    {
        var call = new ProvisioningCallInfo
        {
            Source = http.Connection.RemoteIpAddress?.ToString() ?? "unknown",
            Authorization = http.Request.Headers.Authorization.Count > 0 ? http.Request.Headers.Authorization.ToString() : null,
            CorrelationId = http.TraceIdentifier,
            Namespace = ns,
        };
        var ct = http.RequestAborted;
        ProvisioningOutcome outcome;
        try
        {
            outcome = await RunAsync(http, ns, call, ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            return; // the client went away
        }
        catch (Exception ex)
        {
            _log.LogError(ex, "Provisioning request {CorrelationId} failed", call.CorrelationId);
            outcome = new ProvisioningOutcome { Status = 500, Error = $"internal error; correlation id {call.CorrelationId}" };
        }

        if (outcome.Status == 500 && outcome.Fault is { } fault)
            _log.LogError(fault, "Provisioning request {CorrelationId} failed", call.CorrelationId);
        else if (outcome.Succeeded)
            _log.LogInformation("Provisioned {Vendor}/{Serial} (AK certificate {CertSerial}) for key {KeyId} from {Source}",
                outcome.Record!.Vendor, outcome.Record.Serial, outcome.Record.AkCertificateSerial, outcome.ApiKeyId, call.Source);
        else
            _log.LogInformation("Provisioning request {CorrelationId} from {Source} refused: {Status} {Error}", call.CorrelationId, call.Source, outcome.Status, outcome.Error);

        await WriteAsync(http, outcome);
    }

    private async Task<ProvisioningOutcome> RunAsync(HttpContext http, string? ns, ProvisioningCallInfo call, CancellationToken ct)
    {
        var svc = Service;
        if (_context.Info.Draining)
            return await svc.RejectAsync(503, "the server is draining; retry on another server or later", call, _settings.UnavailableRetryAfterSeconds, ct);
        if (ns is not null && !_namespaces.Contains(ns))
            return await svc.RejectAsync(404, $"namespace '{Clip(ns)}' not found", call, null, ct);

        long max = _settings.MaxRequestBytes;
        // The shared reader: capped, charged to the server's body budget, framing errors (a bad chunk size) as 400.
        var read = await RequestBodyReader.ReadAsync(http, max, requireUtf8: false);
        if (read.Body is not { } body)
            return read.Error switch
            {
                BodyReadError.TooLarge when http.Request.ContentLength is { } len => await svc.RejectAsync(413, $"body: {len} bytes is more than the {max} allowed", call, null, ct),
                BodyReadError.TooLarge => await svc.RejectAsync(413, $"body: more than the {max} bytes allowed", call, null, ct),
                BodyReadError.Busy => await svc.RejectAsync(503, "the server is busy with other large requests; retry later", call, RequestBodyReader.BusyRetryAfterSeconds, ct),
                _ => await svc.RejectAsync(400, read.Message ?? "body: malformed request body", call, null, ct),
            };

        ProvisioningRequest? request;
        try
        {
            // At most the provisioning cap (256 KiB by default): one contiguous copy is cheap, and the parse checks the whole input.
            request = JsonSerializer.Deserialize(body.ToArray(), ProvisioningJsonContext.Default.ProvisioningRequest);
        }
        catch (JsonException ex)
        {
            return await svc.RejectAsync(400, DescribeJsonError(ex), call, null, ct);
        }
        finally
        {
            body.Dispose();
        }
        return await svc.ProvisionAsync(request, call, ct);
    }

    /// <summary>Turns a System.Text.Json error into "field: why" without echoing input.</summary>
    internal static string DescribeJsonError(JsonException ex)
    {
        string field = ex.Path is { Length: > 2 } p && p.StartsWith("$.", StringComparison.Ordinal) ? p[2..] : "body";
        bool typeMismatch = ex.Message.Contains("could not be converted", StringComparison.Ordinal);
        if (typeMismatch)
        {
            string expected = field == "device" ? "an object" : "a string";
            return field == "body" ? "body: must be a JSON object" : $"{field}: must be {expected}";
        }
        string at = ex.LineNumber is { } line ? $" (line {line + 1}, byte {ex.BytePositionInLine + 1})" : "";
        return $"body: not valid JSON{at}";
    }

    private static string Clip(string s) => s.Length <= 64 ? s : s[..64] + "…";

    private static async Task WriteAsync(HttpContext http, ProvisioningOutcome outcome)
    {
        var resp = http.Response;
        if (resp.HasStarted) return;
        resp.StatusCode = outcome.Status;
        resp.Headers.CacheControl = "no-store";
        if (outcome.RetryAfterSeconds is { } retry) resp.Headers.RetryAfter = retry.ToString(System.Globalization.CultureInfo.InvariantCulture);
        // A refused oversized body is not drained: tell the client this connection ends here.
        if (outcome.Status == StatusCodes.Status413PayloadTooLarge) resp.Headers.Connection = "close";
        if (outcome.Succeeded && outcome.AlreadyProvisioned) resp.Headers[ProvisioningHeaders.Status] = ProvisioningHeaders.AlreadyProvisioned;
        if (outcome.Succeeded)
            await resp.WriteAsJsonAsync(outcome.Response!, ProvisioningJsonContext.Default.ProvisioningResponse, contentType: null, http.RequestAborted);
        else
            await resp.WriteAsJsonAsync(outcome.Error ?? "error", ProvisioningJsonContext.Default.String, contentType: null, http.RequestAborted);
    }

    public void Dispose() => Service.Ca.Dispose();
}
