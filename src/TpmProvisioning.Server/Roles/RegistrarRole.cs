using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using TpmProvisioning.Attestation;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Provisioning;

namespace TpmProvisioning.Server.Roles;

/// <summary>
/// Spec 001, the Keylime registrar (API v2.1). Agents register (<c>POST /v2.1/agents/{id}</c>) and activate
/// (<c>PUT /v2.1/agents/{id}/activate</c>) without a client certificate, as Keylime serves them; listing, reading and
/// deleting agents need a client certificate from the server-components CA. With <see cref="RegistrarSettings.PlainPort"/>,
/// registration, activation and <c>/version</c> also answer on a plain-HTTP port (Keylime's 8890). Every answer is Keylime's
/// <c>{code, status, results}</c> envelope.
/// </summary>
internal sealed class RegistrarRole : IRoleModule
{
    public ServerRole Role => ServerRole.Registrar;
    public bool ChoosesClientCertificatesPerRoute => true;

    public void AddServices(IServiceCollection services, ServerContext context)
    {
        services.AddSingleton(sp =>
        {
            var log = sp.GetRequiredService<ILoggerFactory>().CreateLogger("TpmProvisioning.Registrar");
            var settings = context.Options.Registrar ?? new RegistrarSettings();
            string roots = settings.EkRootsDirectory ?? ProvisioningPaths.EkRoots(context.Info.DataPath);
            string intermediates = settings.EkIntermediatesDirectory ?? ProvisioningPaths.EkIntermediates(context.Info.DataPath);
            Storage.PrivateFiles.CreateFolder(roots);
            Storage.PrivateFiles.CreateFolder(intermediates);
            var trust = new EkTrustAnchors(roots, intermediates);
            if (settings.VerifyEkCertificateChain && trust.Current.Roots.Count == 0)
                log.LogWarning("Registrar: no trusted TPM manufacturer root in {Folder}; registrations with an EK certificate are refused until one is added", roots);
            return new RegistrarService(context.Store, trust, settings);
        });
    }

    public void Map(IEndpointRouteBuilder routes, ServerContext context)
    {
        var svc = routes.ServiceProvider.GetRequiredService<RegistrarService>();
        var log = routes.ServiceProvider.GetRequiredService<ILoggerFactory>().CreateLogger("TpmProvisioning.Registrar");
        Keylime.MapShared(routes, context);
        // Reading: the tenant, and a KMS that checks a device's certificate. Deleting: the tenant only.
        var readers = Keylime.Mutual(routes, context, ClientRole.Tenant | ClientRole.Kms);
        var tenant = Keylime.Mutual(routes, context, ClientRole.Tenant);
        foreach (string p in Keylime.Prefixes) MapVersion(routes, p, svc, log, context, readers, tenant);
    }

    private static void MapVersion(IEndpointRouteBuilder routes, string p, RegistrarService svc, ILogger log, ServerContext context, RouteGroupBuilder readers, RouteGroupBuilder tenant)
    {
        routes.MapPost(p + "/agents/{agent_id}", async (HttpContext http, string agent_id) =>
        {
            if (context.Info.Draining) return Keylime.Draining();
            var (body, error) = await Keylime.ReadBodyAsync(http);
            if (error is not null) return error;
            var call = Keylime.CallInfo(http);
            var outcome = await svc.RegisterAsync(agent_id, body!, call, http.RequestAborted);
            if (outcome.Succeeded) log.LogInformation("Registrar: agent {AgentId} registered from {Source}", agent_id, call.Source);
            else log.LogInformation("Registrar: registration of {AgentId} from {Source} refused: {Status} {Message}", Clip(agent_id), call.Source, outcome.Status, outcome.Message);
            return Keylime.Envelope(outcome);
        }).OpenOnPlainPort();

        // Activation: Keylime's documented PUT .../activate, its POST .../activate (v3 style, kept in 2.x) and the
        // PUT /agents/{id} that rust-keylime's agent actually sends; all three run the same activation.
        async Task<IResult> Activate(HttpContext http, string agent_id)
        {
            if (context.Info.Draining) return Keylime.Draining();
            var (body, error) = await Keylime.ReadBodyAsync(http);
            if (error is not null) return error;
            string? tag = null;
            try
            {
                using var doc = System.Text.Json.JsonDocument.Parse(body);
                if (doc.RootElement.ValueKind == System.Text.Json.JsonValueKind.Object && doc.RootElement.TryGetProperty("auth_tag", out var t) && t.ValueKind == System.Text.Json.JsonValueKind.String)
                    tag = t.GetString();
            }
            catch (System.Text.Json.JsonException) { return Keylime.Envelope(400, "body: not valid JSON", null); }
            var call = Keylime.CallInfo(http);
            var outcome = await svc.ActivateAsync(agent_id, tag, call, http.RequestAborted);
            log.LogInformation("Registrar: activation of {AgentId} from {Source}: {Status}", Clip(agent_id), call.Source, outcome.Status);
            return Keylime.Envelope(outcome);
        }
        routes.MapPut(p + "/agents/{agent_id}/activate", Activate).OpenOnPlainPort();
        routes.MapPost(p + "/agents/{agent_id}/activate", Activate).OpenOnPlainPort();
        routes.MapPut(p + "/agents/{agent_id}", Activate).OpenOnPlainPort();

        readers.MapGet(p + "/agents/", async Task<IResult> (HttpContext http) => Keylime.Envelope(await svc.ListAsync(http.RequestAborted)));
        readers.MapGet(p + "/agents/{agent_id}", async (HttpContext http, string agent_id) => Keylime.Envelope(await svc.GetAsync(agent_id, http.RequestAborted)));
        tenant.MapDelete(p + "/agents/{agent_id}", async (HttpContext http, string agent_id) =>
        {
            if (context.Info.Draining) return Keylime.Draining();
            return Keylime.Envelope(await svc.DeleteAsync(agent_id, Keylime.CallInfo(http), http.RequestAborted));
        });
    }

    private static string Clip(string s) => s.Length <= 64 ? s : s[..64] + "…";
}
