using TpmProvisioning.Attestation.Verifier;

namespace TpmProvisioning.Storage;

/// <summary>One verifier of a cluster as the shared store sees it.</summary>
public sealed record VerifierNodeRecord
{
    public string VerifierId { get; init; } = "";
    /// <summary>Where the verifier answers (<c>ip:port</c>), as it reported.</summary>
    public string? Contact { get; init; }
    /// <summary>When the verifier first joined; null for a verifier id that only appears on agents (a store without leases).</summary>
    public DateTimeOffset? Started { get; init; }
    /// <summary>The verifier's last heartbeat; null without leases.</summary>
    public DateTimeOffset? Heartbeat { get; init; }
    /// <summary>The lease period the verifier uses (zero without leases).</summary>
    public TimeSpan Lease { get; init; }
    /// <summary>Watched agents whose <c>verifier_id</c> names this verifier (Keylime's count of a verifier's agents).</summary>
    public int Agents { get; init; }
    /// <summary>Agents whose lease this verifier holds and that has not expired.</summary>
    public int LeasedAgents { get; init; }
    /// <summary>Agents whose <c>verifier_id</c> names this verifier but whose lease has expired (waiting to be taken over).</summary>
    public int ExpiredAgents { get; init; }
    /// <summary>The store's clock when this was read.</summary>
    public DateTimeOffset StoreTime { get; init; }
    /// <summary>True when the last heartbeat is within one lease period (always true without leases).</summary>
    public bool Alive => Heartbeat is not { } h || StoreTime - h <= Lease;
    /// <summary>Time since the last heartbeat, by the store's clock.</summary>
    public TimeSpan? Silence => Heartbeat is { } h ? StoreTime - h : null;
    /// <summary>
    /// <c>Healthy</c> (heartbeat within the lease, no expired lease on its agents), <c>Lagging</c> (alive, but some of its agents'
    /// leases expired: they are about to move), <c>Dead</c> (no heartbeat for a lease period: its agents move to the others),
    /// <c>NoLeases</c> (a store that is not shared: one verifier owns its agents).
    /// </summary>
    public string Health => Heartbeat is null ? "NoLeases" : !Alive ? "Dead" : ExpiredAgents > 0 ? "Lagging" : "Healthy";
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
