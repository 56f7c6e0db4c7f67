using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using TpmProvisioning.Hosting;

namespace TpmProvisioning.Cmdlets;

/// <summary>The servers this process runs, shared by every runspace of the session.</summary>
internal static class ServerRegistry
{
    private static readonly ConcurrentDictionary<int, IServerHost> Hosts = new();

    public static IEnumerable<IServerHost> All => Hosts.Values.OrderBy(h => h.Info.Id);

    public static IServerHost? Get(int id) => Hosts.TryGetValue(id, out var h) ? h : null;

    public static void Add(IServerHost host) => Hosts[host.Info.Id] = host;

    public static void Remove(int id) => Hosts.TryRemove(id, out _);

    /// <summary>Starts a server. Kept apart (and not inlined) so no ASP.NET Core type is touched before the resolver is in place.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static IServerHost Start(ServerOptions options, CancellationToken ct) =>
        TpmProvisioning.Server.Hosting.ProvisioningServerHost.StartAsync(options, ct).GetAwaiter().GetResult();
}
