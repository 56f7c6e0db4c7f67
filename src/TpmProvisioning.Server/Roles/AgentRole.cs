using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using TpmProvisioning.Attestation;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;

namespace TpmProvisioning.Server.Roles;

/// <summary>
/// Spec 001, the Keylime agent (API v2.1): agent info, the NK, and quotes from the real TPM in Keylime's format, over mutual
/// TLS with a components-CA client certificate (the tenant's or the verifier's). <c>/version</c> is open. When a registrar is
/// configured the agent registers and activates once the server listens, sending its own TLS certificate as <c>mtls_cert</c>.
/// </summary>
internal sealed class AgentRole : IRoleModule
{
    public ServerRole Role => ServerRole.Agent;
    public bool ChoosesClientCertificatesPerRoute => true;

    /// <summary>The agent's state folder under the data path: <c>agent_data.json</c> and the private payload folder <c>secure/</c>.</summary>
    public static string StateDirectory(string dataPath) => Path.Combine(dataPath, "agent");

    public void AddServices(IServiceCollection services, ServerContext context) =>
        services.AddSingleton(sp =>
        {
            var log = sp.GetRequiredService<ILoggerFactory>().CreateLogger("TpmProvisioning.Agent");
            return AgentService.Start(context.Options.Agent ?? new AgentSettings(), StateDirectory(context.Info.DataPath), m => log.LogInformation("Agent: {Message}", m));
        });

    public void Map(IEndpointRouteBuilder routes, ServerContext context)
    {
        // Resolved now so a TPM that cannot be opened fails the start, not the first quote.
        AgentService agent;
        try { agent = routes.ServiceProvider.GetRequiredService<AgentService>(); }
        catch (TpmUnavailableException ex) { throw new ServerStartException("AgentTpmUnavailable", ex.Message, ex); }
        catch (InvalidOperationException ex) when (ex.InnerException is null) { throw new ServerStartException("AgentTpmUnavailable", ex.Message, ex); }
        var log = routes.ServiceProvider.GetRequiredService<ILoggerFactory>().CreateLogger("TpmProvisioning.Agent");
        Keylime.MapShared(routes, context);
        // The tenant (identity quotes, U, verify) and the verifier (integrity quotes, V), as Keylime's agent serves them.
        var g = Keylime.Mutual(routes, context, ClientRole.Tenant | ClientRole.Verifier);
        foreach (string p in Keylime.Prefixes)
        {
        g.MapGet(p + "/agent/info", () => Keylime.Envelope(200, "Success", agent.Info()));
        g.MapGet(p + "/keys/pubkey", () => Keylime.Envelope(200, "Success", new AgentPublicKey { Pubkey = agent.NkPublicPem }));
        g.MapPost(p + "/keys/ukey", async Task<IResult> (HttpContext http) =>
        {
            if (context.Info.Draining) return Keylime.Draining();
            var (body, error) = await Keylime.ReadBodyAsync(http, KeylimePayload.MaxEncryptedPayloadChars + 64 * 1024);
            return error ?? Keylime.Envelope(agent.Payloads.ReceiveU(body));
        });
        g.MapPost(p + "/keys/vkey", async Task<IResult> (HttpContext http) =>
        {
            if (context.Info.Draining) return Keylime.Draining();
            var (body, error) = await Keylime.ReadBodyAsync(http, 64 * 1024);
            return error ?? Keylime.Envelope(agent.Payloads.ReceiveV(body));
        });
        g.MapGet(p + "/keys/verify", (HttpContext http) => Keylime.Envelope(agent.Payloads.Verify(http.Request.Query["challenge"])));
        g.MapGet(p + "/quotes/integrity", async Task<IResult> (HttpContext http) =>
        {
            if (context.Info.Draining) return Keylime.Draining();
            var q = http.Request.Query;
            return Keylime.Envelope(await agent.IntegrityQuoteAsync(q["nonce"], q["mask"], q.ContainsKey("partial") ? q["partial"].ToString() : null,
                q.ContainsKey("ima_ml_entry") ? q["ima_ml_entry"].ToString() : null, http.RequestAborted));
        });
        g.MapGet(p + "/quotes/identity", async Task<IResult> (HttpContext http) =>
        {
            if (context.Info.Draining) return Keylime.Draining();
            return Keylime.Envelope(await agent.IdentityQuoteAsync(http.Request.Query["nonce"], http.RequestAborted));
        });
        }

        var settings = agent.Settings;
        if (settings.Registrar is { } registrarUri)
        {
            var lifetime = routes.ServiceProvider.GetRequiredService<IHostApplicationLifetime>();
            context.OnStarted(async () =>
            {
                try
                {
                    X509Certificate2? ca = settings.RegistrarCaCertificatePath is { } caPath ? X509Certificate2.CreateFromPem(File.ReadAllText(caPath)) : null;
                    using var client = new RegistrarClient(new RegistrarClientOptions { Registrar = registrarUri, CaCertificate = ca });
                    await agent.RegisterAsync(client, new AgentIdentity
                    {
                        AgentId = agent.AgentId,
                        Ip = settings.ContactIp ?? context.Options.ContactAddress ?? context.Options.Address.ToString(),
                        Port = settings.ContactPort ?? context.Options.ContactPort ?? context.Info.Port,
                        MtlsCertificatePem = OwnCertificatePem(context),
                    }, lifetime.ApplicationStopping);
                    context.Info.AgentRegistered = true;
                    log.LogInformation("Agent {AgentId} registered and activated at {Registrar}", agent.AgentId, registrarUri);
                }
                catch (Exception ex)
                {
                    if (ex is KeylimeRequestException kre) context.Info.AgentRegistrationStatus = kre.StatusCode;
                    context.Info.AgentRegistrationError = ex.Message;
                    log.LogError(ex, "Agent {AgentId} could not register at {Registrar}", agent.AgentId, registrarUri);
                }
            });
        }
    }

    private static string? OwnCertificatePem(ServerContext context)
    {
        if (!context.Tls) return "disabled";
        if (context.Options.Certificate is { } c) return c.ExportCertificatePem();
        var pfx = context.Options.Agent.SelfSignedCertificate
            ? Path.Combine(StateDirectory(context.Info.DataPath), "mtls", AgentSelfSignedCertificate.FileName)
            : Path.Combine(context.Info.DataPath, "tls", "server.pfx");
        if (!File.Exists(pfx)) return null;
        using var cert = X509CertificateLoader.LoadPkcs12FromFile(pfx, null);
        return cert.ExportCertificatePem();
    }
}
