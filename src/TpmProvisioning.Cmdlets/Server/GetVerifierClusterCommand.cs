using System.Management.Automation;
using TpmProvisioning.Hosting;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Cmdlets;

/// <summary>
/// Shows the verifiers that share a store: each verifier id with its agents, the leases it holds, those that expired, its last
/// heartbeat and its lease health. On a PostgreSQL store several servers share, this is the cluster; on a server's SQLite
/// store, the one verifier (NoLeases).
/// </summary>
[Cmdlet(VerbsCommon.Get, "VerifierCluster", DefaultParameterSetName = "DataPath")]
[OutputType(typeof(VerifierNodeRecord))]
public sealed class GetVerifierClusterCommand : PSCmdlet
{
    /// <summary>A shared PostgreSQL store (Npgsql connection string, e.g. <c>Host=db1;Database=fleet</c>), as given to Start-ProvisioningServer.</summary>
    [Parameter(ParameterSetName = "Store", Mandatory = true, Position = 0)]
    [ValidateNotNullOrEmpty]
    public string? StoreConnectionString { get; set; }

    /// <summary>
    /// The user name and password for -StoreConnectionString (kept out of the string), or for the PostgreSQL store a -DataPath's
    /// server uses (default there: TPMPROVISIONING_STORE for the same database, PGPASSWORD, or the password file ~/.pgpass).
    /// </summary>
    [Parameter(ParameterSetName = "Store")]
    [Parameter(ParameterSetName = "DataPath")]
    [Credential]
    public PSCredential? StoreCredential { get; set; }

    /// <summary>A server's data path whose store to read (default the module's data path): the PostgreSQL store its server recorded there, else its SQLite file.</summary>
    [Parameter(ParameterSetName = "DataPath")]
    [ValidateNotNullOrEmpty]
    public string? DataPath { get; set; }

    /// <summary>Only these verifier ids; wildcards allowed.</summary>
    [Parameter]
    [SupportsWildcards]
    public string[]? VerifierId { get; set; }

    protected override void EndProcessing()
    {
        IStore store;
        try
        {
            if (ParameterSetName == "Store")
            {
                var cs = StoreCredential is { } c
                    ? PostgresStore.WithCredential(StoreConnectionString!, c.UserName, c.GetNetworkCredential().Password)
                    : StoreConnectionString!;
                store = PostgresStore.OpenAsync(cs).GetAwaiter().GetResult();
            }
            else
            {
                var path = GetUnresolvedProviderPathFromPSPath(DataPath ?? Defaults.DataPath);
                if (DataPathStore.OpenExisting(this, path, StoreCredential) is not { } opened) return;
                store = opened;
            }
        }
        catch (ArgumentException ex)
        {
            ThrowTerminatingError(new ErrorRecord(ex, "InvalidStoreConnectionString", ErrorCategory.InvalidArgument, null));
            return;
        }
        catch (StoreUnavailableException ex)
        {
            ThrowTerminatingError(new ErrorRecord(ex, "StoreUnavailable", ErrorCategory.ResourceUnavailable, null));
            return;
        }
        using (store)
        {
            IReadOnlyList<VerifierNodeRecord> nodes;
            try { nodes = store.ListVerifierNodesAsync().GetAwaiter().GetResult(); }
            catch (StoreUnavailableException ex)
            {
                ThrowTerminatingError(new ErrorRecord(ex, "StoreUnavailable", ErrorCategory.ResourceUnavailable, null));
                return;
            }
            var patterns = VerifierId?.Select(p => new WildcardPattern(p, WildcardOptions.IgnoreCase)).ToList();
            foreach (var n in nodes)
                if (patterns is null || patterns.Any(p => p.IsMatch(n.VerifierId))) WriteObject(n);
            foreach (var p in VerifierId ?? [])
                if (!WildcardPattern.ContainsWildcardCharacters(p) && !nodes.Any(n => string.Equals(n.VerifierId, p, StringComparison.OrdinalIgnoreCase)))
                    WriteError(new ErrorRecord(new ItemNotFoundException($"No verifier '{p}' in this store."), "VerifierNotFound", ErrorCategory.ObjectNotFound, p));
        }
    }
}
