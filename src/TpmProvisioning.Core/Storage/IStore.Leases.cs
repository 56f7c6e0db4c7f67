using TpmProvisioning.Attestation.Verifier;

namespace TpmProvisioning.Storage;

/// <summary>One verifier of a cluster as the shared store sees it.</summary>
public sealed record VerifierNodeRecord
{
    public string VerifierId { get; init; } = "";
    /// <summary>Where the verifier answers (<c>ip:port</c>), as it reported.</summary>
    public string? Contact { get; init; }
    public DateTimeOffset Started { get; init; }
    public DateTimeOffset Heartbeat { get; init; }
    /// <summary>The lease period the verifier uses.</summary>
    public TimeSpan Lease { get; init; }
    /// <summary>Agents whose lease this verifier holds and that has not expired.</summary>
    public int LeasedAgents { get; init; }
    /// <summary>Agents whose <c>verifier_id</c> names this verifier but whose lease has expired (waiting to be taken over).</summary>
    public int ExpiredAgents { get; init; }
    /// <summary>The store's clock when this was read.</summary>
    public DateTimeOffset StoreTime { get; init; }
    /// <summary>True when the last heartbeat is within one lease period.</summary>
    public bool Alive => StoreTime - Heartbeat <= Lease;
}

/// <summary>An agent the lease component claimed: when it was last judged decides when its next quote is due.</summary>
public readonly record struct LeaseClaim(string AgentId, DateTimeOffset LastJudged);

/// <summary>
/// Verifier leases in the shared store (migration 8). Only stores several servers share (<see cref="SupportsLeases"/>) claim
/// with <c>FOR UPDATE SKIP LOCKED</c>; all times are the store's clock, so servers with skewed clocks agree on expiry.
/// </summary>
public partial interface IStore
{
    /// <summary>True when several servers may share this store and split the verifier's agents by lease (PostgreSQL).</summary>
    bool SupportsLeases { get; }

    /// <summary>Records that <paramref name="verifierId"/> is alive (insert or update); returns the store's clock.</summary>
    Task<DateTimeOffset> HeartbeatVerifierAsync(string verifierId, string? contact, TimeSpan lease, CancellationToken ct = default);

    /// <summary>Removes the verifier's node row and gives up its leases (a clean stop).</summary>
    Task LeaveVerifierClusterAsync(string verifierId, CancellationToken ct = default);

    /// <summary>Extends every lease on a watched agent <paramref name="verifierId"/> holds that has not expired; returns those agents.</summary>
    Task<IReadOnlyList<LeaseClaim>> RenewVerifierLeasesAsync(string verifierId, TimeSpan lease, CancellationToken ct = default);

    /// <summary>
    /// Claims up to <paramref name="max"/> watched agents that nobody holds or whose lease expired (skipping rows another
    /// verifier is claiming at this moment); their <c>verifier_id</c> becomes <paramref name="verifierId"/>.
    /// </summary>
    Task<IReadOnlyList<LeaseClaim>> ClaimVerifierAgentsAsync(string verifierId, int max, TimeSpan lease, CancellationToken ct = default);

    /// <summary>Claims one agent when nobody holds it (after it was added); false when another verifier holds it.</summary>
    Task<bool> ClaimVerifierAgentAsync(string verifierId, string agentId, TimeSpan lease, CancellationToken ct = default);

    /// <summary>Gives up the leases of <paramref name="agentIds"/> that <paramref name="verifierId"/> holds.</summary>
    Task ReleaseVerifierLeasesAsync(string verifierId, IReadOnlyCollection<string> agentIds, CancellationToken ct = default);

    /// <summary>Live verifiers (heartbeat within their lease) and watched agents: the fair share is watched / live.</summary>
    Task<(int LiveVerifiers, int WatchedAgents)> VerifierClusterSizeAsync(CancellationToken ct = default);

    /// <summary>Every verifier known to the store with its agent counts and lease health.</summary>
    Task<IReadOnlyList<VerifierNodeRecord>> ListVerifierNodesAsync(CancellationToken ct = default);

    /// <summary>A tenant's change (stop, reactivate): writes like <see cref="UpdateVerifierAgentAsync"/> and, in the same statement, ends whatever lease is held on the agent, so its holder's next fenced write fails.</summary>
    Task<bool> UpdateVerifierAgentReleasingLeaseAsync(VerifierAgentRecord agent, CancellationToken ct = default);

    /// <summary>Like <see cref="UpdateVerifierAgentAsync"/>, but only while <paramref name="owner"/> holds the agent's lease (a fenced write).</summary>
    Task<bool> UpdateLeasedVerifierAgentAsync(VerifierAgentRecord agent, string owner, CancellationToken ct = default);
}
