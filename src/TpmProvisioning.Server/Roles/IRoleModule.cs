using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using TpmProvisioning.Hosting;

namespace TpmProvisioning.Server.Roles;

/// <summary>One REST surface. The host adds its services, then maps its routes into a group that carries the role's
/// client-certificate requirement when the server was started with one for this role.</summary>
internal interface IRoleModule
{
    ServerRole Role { get; }
    /// <summary>
    /// True when the role decides per route which endpoints need a client certificate (it adds
    /// <see cref="Hosting.ClientCertificateFilter"/> itself and marks open routes with
    /// <see cref="Hosting.AllowWithoutClientCertificateAttribute"/>): the handshake then asks clients for a certificate
    /// whenever the server speaks TLS, whatever <see cref="ServerOptions.RequireClientCertificate"/> says.
    /// </summary>
    bool ChoosesClientCertificatesPerRoute => false;
    /// <summary>
    /// True when the role authenticates some callers by a client certificate from another issuer (the KMS matches a device's
    /// certificate against the one its registrar holds): the handshake then takes any certificate and every route that needs the
    /// components CA checks it in <see cref="Hosting.ClientCertificateFilter"/>, as all mutual-TLS routes do.
    /// </summary>
    bool AcceptsClientCertificatesFromAnyIssuer => false;
    void AddServices(IServiceCollection services, ServerContext context) { }
    void Map(IEndpointRouteBuilder routes, ServerContext context);
}

/// <summary>Everything a role module may need from the host.</summary>
internal sealed class ServerContext
{
    public required ServerOptions Options { get; init; }
    public required Storage.IStore Store { get; init; }
    public required Pki.ComponentCa ComponentCa { get; init; }
    public required ServerInfo Info { get; init; }
    /// <summary>True when the server speaks TLS (false only with <see cref="ServerOptions.InsecurePlainHttp"/>).</summary>
    public bool Tls { get; init; }
    /// <summary>Routes several roles share (such as Keylime's <c>/version</c>), mapped by whichever role comes first.</summary>
    public HashSet<string> SharedRoutes { get; } = new(StringComparer.Ordinal);

    // Continuations run synchronously inside MarkStarted, up to their first await: a role's first steps (such as the verifier
    // taking its contact port) are done before StartAsync returns to the caller.
    private readonly TaskCompletionSource _started = new();

    /// <summary>
    /// Runs <paramref name="work"/> once the server is listening and <see cref="Info"/> holds its bound addresses and port (so
    /// a role never reports port 0 for <c>-Port 0</c>). Kestrel's own ApplicationStarted fires before the host has read them.
    /// Nothing runs when the start fails.
    /// </summary>
    public void OnStarted(Func<Task> work) => _ = _started.Task.ContinueWith(t => t.IsCompletedSuccessfully ? work() : Task.CompletedTask,
        CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default).Unwrap();

    /// <summary>Called by the host when the bound addresses are in <see cref="Info"/>, or with false when the start failed.</summary>
    internal void MarkStarted(bool ok)
    {
        if (ok) _started.TrySetResult();
        else _started.TrySetCanceled();
    }

    /// <summary>The server's most recent log entries, oldest first (for the station's service log).</summary>
    public Func<int, IReadOnlyList<ServerLogEntry>> RecentLog { get; init; } = _ => [];
}

/// <summary>The registry of surfaces. Later surfaces replace their placeholder here.</summary>
internal static class RoleModules
{
    public static IReadOnlyList<IRoleModule> All { get; } =
    [
        new ProvisioningRole(),
        new RegistrarRole(),
        new VerifierRole(),
        new AgentRole(),
        new KmsRole(),
        new StationRole(),
    ];
}

/// <summary>A role whose routes have not landed yet: the server may host it; it serves nothing but health.</summary>
internal sealed class PlaceholderRole(ServerRole role) : IRoleModule
{
    public ServerRole Role => role;
    public void Map(IEndpointRouteBuilder routes, ServerContext context) { }
}
