using System.Globalization;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Server.Hosting;
using TpmProvisioning.Kms;

namespace TpmProvisioning.Server.Roles;

/// <summary>The KMS services a role instance shares between its surfaces.</summary>
internal sealed class KmsServices(KmsEngine engine, KeyReleaseService release, IAttestationGate gate) : IDisposable
{
    public KmsEngine Engine { get; } = engine;
    public KeyReleaseService Release { get; } = release;
    public IAttestationGate Gate { get; } = gate;

    public void Dispose()
    {
        (Gate as IDisposable)?.Dispose();
        Engine.Dispose();
    }
}

/// <summary>A gate for a server with no verifier configured: nothing is released.</summary>
internal sealed class NoVerifierGate : IAttestationGate
{
    public Task<GateVerdict> CheckAsync(string agentId, X509Certificate2 clientCert, CancellationToken ct) =>
        Task.FromResult(GateVerdict.Refuse("no verifier is configured on this KMS"));
}

/// <summary>
/// The KMS: vSphere trusted-infrastructure providers (spec 002, sessions from <c>POST /api/session</c>), CipherTrust CCKM OCI keys
/// and versions (spec 004, bearer tokens from <c>POST /api/v1/auth/tokens</c>), and the attestation-gated release of keys to
/// devices with the Keylime revocation webhook (docs/rest/kms.md).
/// </summary>
internal sealed partial class KmsRole : IRoleModule
{
    public ServerRole Role => ServerRole.Kms;
    public bool ChoosesClientCertificatesPerRoute => true;
    public bool AcceptsClientCertificatesFromAnyIssuer => true;

    internal static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web) { PropertyNamingPolicy = null };
    public const int MaxBodyBytes = 64 * 1024;

    public void AddServices(IServiceCollection services, ServerContext context)
    {
        services.AddSingleton(sp =>
        {
            var settings = context.Options.Kms ?? new KmsSettings();
            var log = sp.GetRequiredService<ILoggerFactory>().CreateLogger("TpmProvisioning.Kms");
            KmsEngine engine;
            IMasterKeyWrapper wrapper;
            try { (engine, wrapper) = KmsEngineFactory.OpenAsync(context.Store, context.Info.DataPath, settings).GetAwaiter().GetResult(); }
            catch (Exception ex) when (ex is KmsException or Tpm.TpmException or Net.Pkcs11Interop.Common.Pkcs11Exception or IOException)
            {
                throw new ServerStartException("Failed", $"The KMS master key ({settings.MasterKey}) is not usable: {ex.Message}", ex);
            }
            if (wrapper.Kind == MasterKeyKind.InsecureFile)
                log.LogWarning("KMS: the master key is an INSECURE plaintext file ({Path}); anyone who reads it reads every key. Never use this in production.", wrapper.Description);
            else log.LogInformation("KMS: master key {Description}", wrapper.Description);
            IAttestationGate gate = settings.Verifier is null ? new NoVerifierGate() : new KeylimeAttestationGate(new KeylimeGateOptions
            {
                Verifier = settings.Verifier,
                Registrar = settings.Registrar,
                CaCertificate = settings.KeylimeCaCertificate ?? context.ComponentCa.Certificate,
                ClientCertificate = settings.KeylimeClientCertificate ?? context.ComponentCa.IssueClientCertificate("kms", role: ClientRole.Kms),
                MaxAttestationAge = settings.MaxAttestationAge,
            });
            if (settings.Verifier is null) log.LogWarning("KMS: no verifier configured; key release to devices is refused");
            return new KmsServices(engine, new KeyReleaseService(engine, gate), gate);
        });
    }

    public void Map(IEndpointRouteBuilder routes, ServerContext context)
    {
        var kms = routes.ServiceProvider.GetRequiredService<KmsServices>();
        var log = routes.ServiceProvider.GetRequiredService<ILoggerFactory>().CreateLogger("TpmProvisioning.Kms");
        MapVsphere(routes, context, kms, log);
        MapCckm(routes, context, kms, log);
        MapRelease(routes, context, kms, log);
    }

    internal static KmsCaller Caller(HttpContext http, string actor) => new(actor, http.Connection.RemoteIpAddress?.ToString() ?? "unknown");

    /// <summary>
    /// Reads a JSON object body (at most <see cref="MaxBodyBytes"/>) through the shared <see cref="RequestBodyReader"/>; null with a
    /// <see cref="KmsException"/> when absent, too large, malformed or not an object (<see cref="KmsErrorKind.InvalidArgument"/>),
    /// or when the server's body budget is spent (<see cref="KmsErrorKind.Busy"/>, Retry-After already set).
    /// </summary>
    internal static async Task<(JsonElement? Body, KmsException? Error)> ReadJsonAsync(HttpContext http)
    {
        var r = await RequestBodyReader.ReadAsync(http, MaxBodyBytes);
        if (r.Body is not { } body)
            return (null, r.Error switch
            {
                BodyReadError.TooLarge => Invalid("body: larger than 64 KiB"),
                BodyReadError.Busy => new KmsException(KmsErrorKind.Busy, null, "The server is busy; retry later.") { RetryAfterSeconds = RequestBodyReader.BusyRetryAfterSeconds },
                BodyReadError.InvalidUtf8 => Invalid("body: not valid UTF-8"),
                _ => Invalid(r.Message ?? "body: malformed request body"),
            });
        using (body)
        {
            if (body.Length == 0) return (null, Invalid("body: a JSON object is required"));
            try
            {
                using var doc = JsonDocument.Parse(body.Sequence);
                if (doc.RootElement.ValueKind != JsonValueKind.Object) return (null, Invalid("body: must be a JSON object"));
                return (doc.RootElement.Clone(), null);
            }
            catch (JsonException) { return (null, Invalid("body: not valid JSON")); }
        }

        static KmsException Invalid(string message) => new(KmsErrorKind.InvalidArgument, "body", message);
    }

    /// <summary>Sets Retry-After when the error carries one (throttled logins, a busy server).</summary>
    internal static void RetryAfter(HttpContext http, KmsException ex)
    {
        if (ex.RetryAfterSeconds is { } s) http.Response.Headers.RetryAfter = s.ToString(CultureInfo.InvariantCulture);
    }

    /// <summary>A string member; <paramref name="error"/> set when present but not a string.</summary>
    internal static string? Str(JsonElement obj, string name, ref string? error)
    {
        if (!obj.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.String)
        {
            // A lone surrogate escape (\uDF00) is valid JSON but no text: reading it throws InvalidOperationException.
            try { return v.GetString(); }
            catch (InvalidOperationException) { error ??= $"{name}: not valid text (a lone surrogate escape)"; return null; }
        }
        error ??= $"{name}: must be a string";
        return null;
    }

    internal static string Time(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fffffff'Z'", CultureInfo.InvariantCulture);
    internal static string TimeMs(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture);
}
