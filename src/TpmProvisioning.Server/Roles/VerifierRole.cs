using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using TpmProvisioning.Attestation;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;

namespace TpmProvisioning.Server.Roles;

/// <summary>
/// Spec 001, the Keylime cloud verifier (API v2.1): tenants add, read, list, stop, reactivate and delete agents over mutual TLS
/// with a components-CA client certificate; the verifier watches each agent from the moment it is added and again after a
/// restart. It asks agents for quotes with a client certificate of its own, issued by the same CA.
/// </summary>
internal sealed class VerifierRole : IRoleModule
{
    public ServerRole Role => ServerRole.Verifier;
    public bool ChoosesClientCertificatesPerRoute => true;

    public void AddServices(IServiceCollection services, ServerContext context)
    {
        services.AddSingleton(sp =>
        {
            var log = sp.GetRequiredService<ILoggerFactory>().CreateLogger("TpmProvisioning.Verifier");
            var settings = context.Options.Verifier ?? new VerifierSettings();
            // Several servers on one store: each is a verifier of its own id, and leases split the agents (VerifierLeases).
            if (context.Store.SupportsLeases && settings.VerifierId == "default") settings.VerifierId = VerifierLeases.StableVerifierId(context.Options.DataPath);
            var clientCert = settings.ClientCertificate ?? context.ComponentCa.IssueClientCertificate($"verifier {settings.VerifierId}", role: ClientRole.Verifier);
            var connector = new AgentConnector(clientCert, settings.RequestTimeout);
            var notifier = new RevocationNotifier(settings.RevocationWebhooks, context.ComponentCa.Certificate, m => log.LogWarning("{Message}", m));
            settings.Secrets ??= OpenSecrets(context, settings.MasterKey, log);
            return new VerifierService(context.Store, settings, connector, notifier, MeasurementChecks.Default, log: m => log.LogInformation("{Message}", m))
            {
                ContactIp = context.Options.ContactAddress ?? context.Options.Address.ToString(),
                Leases = context.Store.SupportsLeases
                    ? new VerifierLeases(context.Store, settings.VerifierId, settings.QuoteInterval, settings.LeaseDuration, log: m => log.LogInformation("{Message}", m))
                    : null,
            };
        });
    }

    public void Map(IEndpointRouteBuilder routes, ServerContext context)
    {
        var svc = routes.ServiceProvider.GetRequiredService<VerifierService>();
        var log = routes.ServiceProvider.GetRequiredService<ILoggerFactory>().CreateLogger("TpmProvisioning.Verifier");
        var lifetime = routes.ServiceProvider.GetRequiredService<IHostApplicationLifetime>();
        context.OnStarted(async () =>
        {
            svc.ContactPort = context.Options.ContactPort ?? context.Info.Port;
            if (svc.Leases is { } leases) leases.Contact = $"{svc.ContactIp}:{svc.ContactPort}";
            try
            {
                int n = await svc.ResumeAsync(lifetime.ApplicationStopping);
                if (n > 0) log.LogInformation("Verifier: resumed watching {Count} agent(s) from the store", n);
            }
            catch (Exception ex) { log.LogError(ex, "Verifier: could not resume watching agents"); }
        });
        lifetime.ApplicationStopping.Register(() =>
        {
            // No more claims, the quotes in flight judged and stored (up to 10 s), then the leases go back so the other servers
            // take the agents at once.
            svc.ShutdownAsync(TimeSpan.FromSeconds(Math.Min(10, svc.Settings.RequestTimeout.TotalSeconds))).GetAwaiter().GetResult();
        });

        Keylime.MapShared(routes, context);
        // Reading: the tenant, and a KMS deciding a key release. Everything that changes what is watched: the tenant only.
        var readers = Keylime.Mutual(routes, context, ClientRole.Tenant | ClientRole.Kms);
        var g = Keylime.Mutual(routes, context, ClientRole.Tenant);
        foreach (string p in Keylime.Prefixes) MapVersion(p, svc, log, context, readers, g);
    }

    private static void MapVersion(string p, VerifierService svc, ILogger log, ServerContext context, RouteGroupBuilder readers, RouteGroupBuilder g)
    {
        readers.MapGet(p + "/agents/", async Task<IResult> (HttpContext http) =>
        {
            var all = await svc.ListAsync(http.RequestAborted);
            // As Keylime's verifier: the presence of bulk is enough (its tenant sends bulk=True&verifier=default); verifier,
            // when given, narrows to agents watched by that verifier id.
            var q = http.Request.Query;
            if (q.ContainsKey("verifier") && q["verifier"].ToString() is { Length: > 0 } vid && vid != svc.VerifierId)
                all = [];
            if (q.ContainsKey("bulk"))
                return Keylime.Envelope(200, "Success", all.ToDictionary(a => a.AgentId, a => (object)a.Status));
            // Keylime answers a list of one-column rows: [["id1"], ["id2"]].
            return Keylime.Envelope(200, "Success", new Dictionary<string, object> { ["uuids"] = all.Select(a => new[] { a.AgentId }).ToList() });
        });
        readers.MapGet(p + "/agents/{agent_id}", async (HttpContext http, string agent_id) => Keylime.Envelope(await svc.GetAsync(agent_id, http.RequestAborted)));
        g.MapPost(p + "/agents/{agent_id}", async (HttpContext http, string agent_id) =>
        {
            if (context.Info.Draining) return Keylime.Draining();
            // Up to 32 MiB: parsed where it was buffered (pooled segments), released with the response.
            var (body, error) = await Keylime.ReadBodySequenceAsync(http, VerifierAgentRequest.MaxBodyBytes);
            if (body is null) return error!;
            var outcome = await svc.AddAsync(agent_id, body.Sequence, Keylime.CallInfo(http), http.RequestAborted);
            log.LogInformation("Verifier: add {AgentId}: {Status} {Message}", Clip(agent_id), outcome.Status, outcome.Message);
            return Keylime.Envelope(outcome);
        });
        g.MapDelete(p + "/agents/{agent_id}", async (HttpContext http, string agent_id) =>
        {
            if (context.Info.Draining) return Keylime.Draining();
            return Keylime.Envelope(await svc.DeleteAsync(agent_id, Keylime.CallInfo(http), http.RequestAborted));
        });
        g.MapPut(p + "/agents/{agent_id}/reactivate", async (HttpContext http, string agent_id) =>
        {
            if (context.Info.Draining) return Keylime.Draining();
            return Keylime.Envelope(await svc.ReactivateAsync(agent_id, Keylime.CallInfo(http), http.RequestAborted));
        });
        g.MapPut(p + "/agents/{agent_id}/stop", async (HttpContext http, string agent_id) =>
        {
            if (context.Info.Draining) return Keylime.Draining();
            return Keylime.Envelope(await svc.StopAsync(agent_id, Keylime.CallInfo(http), http.RequestAborted));
        });
    }

    private static string Clip(string s) => s.Length <= 64 ? s : s[..64] + "…";

    /// <summary>
    /// The master key that seals the tenants' revocation keys and V shares: the server's (as given for the KMS, or already set up
    /// in the data path's <c>kms</c> folder); without one, a key file of the verifier's own (0600), with a warning.
    /// </summary>
    private static Kms.SecretSealer OpenSecrets(ServerContext context, Kms.KmsSettings? given, ILogger log)
    {
        var dataPath = context.Info.DataPath;
        Kms.IMasterKeyWrapper wrapper;
        var kms = given ?? (context.Options.Roles.HasFlag(ServerRole.Kms) ? context.Options.Kms : null);
        if (kms is null && Kms.KmsEngineFactory.DetectMasterKey(dataPath) is { } kind) kms = new Kms.KmsSettings { MasterKey = kind };
        wrapper = kms is not null
            ? Kms.KmsEngine.CreateWrapper(kms, Kms.KmsEngineFactory.KmsDirectory(dataPath))
            : new Kms.InsecureFileMasterKey(Path.Combine(dataPath, "verifier"));
        try
        {
            var sealer = Kms.SecretSealer.Open(wrapper);
            if (wrapper.Kind == Kms.MasterKeyKind.InsecureFile)
                log.LogWarning("Verifier: tenant secrets (revocation_key, v) are sealed with a key FILE ({Key}), kept apart from the database; start with -MasterKey Tpm or Pkcs11 to seal it in hardware", wrapper.Description);
            else log.LogInformation("Verifier: tenant secrets are sealed with the master key {Key}", wrapper.Description);
            return sealer;
        }
        catch (Exception ex) when (ex is Kms.KmsException or Tpm.TpmException or Net.Pkcs11Interop.Common.Pkcs11Exception or IOException)
        {
            throw new ServerStartException("Failed", $"The verifier's master key ({wrapper.Description}) is not usable: {ex.Message}", ex);
        }
    }
}
