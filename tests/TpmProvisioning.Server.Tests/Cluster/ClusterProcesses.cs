using System.Security.Cryptography.X509Certificates;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Tests.Hardening;
using TpmProvisioning.Tests.Keylime;

namespace TpmProvisioning.Tests.Cluster;

/// <summary>
/// Verifier servers of one cluster, each in an operating-system process of its own (<see cref="ChildServer"/>), on one
/// PostgreSQL database, with one components CA made here and copied into every node's data path (a cluster's nodes share one
/// CA), and a tenant client certificate from it. A node can be killed by its process id (SIGKILL: no stop, no lease given
/// back); disposing kills every node still running, by id, and deletes its data path.
/// </summary>
public sealed class ClusterProcesses : IAsyncDisposable
{
    private readonly string _caDir = Directory.CreateTempSubdirectory("tpmprov-cluster-ca-").FullName;
    private readonly Dictionary<string, ChildServer.Handle> _nodes = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();

    public X509Certificate2 Ca { get; }
    public HttpClient Tenant { get; }
    public string ConnectionString { get; }

    public ClusterProcesses(string connectionString)
    {
        ConnectionString = connectionString;
        using var ca = ComponentCa.LoadOrCreate(Path.Combine(_caDir, "ca"));
        Ca = X509Certificate2.CreateFromPem(File.ReadAllText(ca.CertificatePath));
        Tenant = KeylimeTestServer.Client(Ca, ca.IssueClientCertificate("tenant", role: ClientRole.Tenant));
    }

    /// <summary>The running node of that verifier id.</summary>
    public ChildServer.Handle this[string verifierId] { get { lock (_lock) return _nodes[verifierId]; } }

    /// <summary>Starts one verifier node per id, all at once.</summary>
    public Task StartVerifiersAsync(IEnumerable<string> verifierIds, TimeSpan interval, TimeSpan lease) =>
        Task.WhenAll(verifierIds.Select(async id =>
        {
            var node = await ChildServer.StartAsync(ServerRole.Verifier, new ChildServer.Options
            {
                StoreConnectionString = ConnectionString, VerifierId = id, QuoteInterval = interval, LeaseDuration = lease, MaxRetries = 3,
                CaFrom = Path.Combine(_caDir, "ca"),
            });
            lock (_lock) _nodes[id] = node;
        }));

    /// <summary>Kills the node's process (SIGKILL), waits until it is gone, and forgets it.</summary>
    public async Task KillAsync(string verifierId)
    {
        ChildServer.Handle node;
        lock (_lock) { node = _nodes[verifierId]; _nodes.Remove(verifierId); }
        await node.KillAsync();
        await node.DisposeAsync();
    }

    public async ValueTask DisposeAsync()
    {
        List<ChildServer.Handle> left;
        lock (_lock) { left = [.. _nodes.Values]; _nodes.Clear(); }
        foreach (var node in left)
        {
            try { await node.KillAsync(); } catch (Exception) { }
            await node.DisposeAsync();
        }
        Tenant.Dispose();
        Ca.Dispose();
        try { Directory.Delete(_caDir, true); } catch (IOException) { }
    }
}
