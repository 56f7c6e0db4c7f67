using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using TpmProvisioning.Kms;

namespace TpmProvisioning.Server.Roles;

/// <summary>Key release to attested devices and the Keylime revocation webhook (docs/rest/kms.md); Keylime's envelope.</summary>
internal sealed partial class KmsRole
{
    public const string ReleasePath = "/api/tpmprov/kms/v1/release";
    public const string RevocationPath = "/api/tpmprov/kms/v1/revocations";

    private static int StatusOf(KmsErrorKind kind) => kind switch
    {
        KmsErrorKind.InvalidArgument => 400,
        KmsErrorKind.Unauthenticated => 401,
        KmsErrorKind.Unauthorized => 403,
        KmsErrorKind.NotFound => 404,
        KmsErrorKind.AlreadyExists => 409,
        KmsErrorKind.Throttled => 429,
        KmsErrorKind.Busy => 503,
        _ => 500,
    };

    private static void MapRelease(IEndpointRouteBuilder routes, ServerContext context, KmsServices kms, ILogger log)
    {
        routes.MapPost(ReleasePath, async (HttpContext http) =>
        {
            if (context.Info.Draining) return Keylime.Draining();
            var cert = http.Connection.ClientCertificate ?? await http.Connection.GetClientCertificateAsync(http.RequestAborted);
            var (body, error) = await ReadJsonAsync(http);
            if (body is not { } b) return Keylime.Envelope(StatusOf(error!.Kind), error.Message, null);
            string? err = null;
            var agentId = Str(b, "agent_id", ref err);
            var request = new KeyReleaseRequest
            {
                Provider = Str(b, "provider", ref err), KeyIdentifier = Str(b, "key_identifier", ref err),
                KeyId = Str(b, "key_id", ref err), Version = Str(b, "version", ref err),
            };
            if (err is not null) return Keylime.Envelope(400, err, null);
            var caller = Caller(http, cert is null ? "anonymous" : $"agent:{agentId} ({cert.Subject})");
            try
            {
                var r = await kms.Release.ReleaseAsync(agentId, cert, request, caller, http.RequestAborted);
                log.LogInformation("KMS: key released to agent {AgentId} ({What})", agentId, r.Provider is null ? $"key {r.KeyId} v{r.VersionNumber}" : $"provider {r.Provider}");
                var results = new Dictionary<string, object?>
                {
                    ["agent_id"] = r.AgentId, ["provider"] = r.Provider, ["key_identifier"] = r.KeyIdentifier, ["key_id"] = r.KeyId,
                    ["version_id"] = r.VersionId, ["version_number"] = r.VersionNumber, ["algorithm"] = r.Algorithm, ["key"] = Convert.ToBase64String(r.Key),
                };
                System.Security.Cryptography.CryptographicOperations.ZeroMemory(r.Key);
                return Keylime.Envelope(200, "Success", results);
            }
            catch (KmsException ex)
            {
                log.LogInformation("KMS: release to agent {AgentId} refused: {Reason}", agentId, ex.Message);
                return Keylime.Envelope(StatusOf(ex.Kind), ex.Kind == KmsErrorKind.Unavailable ? "Internal error" : ex.Message, null);
            }
        });

        routes.MapPost(RevocationPath, async (HttpContext http) =>
        {
            if (context.Info.Draining) return Keylime.Draining();
            var (body, error) = await Keylime.ReadBodyAsync(http);
            if (error is not null) return error;
            try
            {
                var notice = await kms.Release.AcceptRevocationAsync(body!, kms.Engine.Settings.RevocationPublicKeyPem, Caller(http, "keylime-revocation"), http.RequestAborted);
                log.LogWarning("KMS: revocation notice for agent {AgentId} ({Type}); key release to it stopped", notice.AgentId, notice.Type);
                return Keylime.Envelope(200, "Success", new Dictionary<string, object?> { ["agent_id"] = notice.AgentId });
            }
            catch (KmsException ex)
            {
                log.LogWarning("KMS: revocation notice refused: {Reason}", ex.Message);
                return Keylime.Envelope(ex.Kind == KmsErrorKind.Unavailable ? 503 : StatusOf(ex.Kind), ex.Message, null);
            }
        });
    }
}
