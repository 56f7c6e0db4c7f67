namespace TpmProvisioning.Storage;

/// <summary>
/// One agent as the registrar keeps it (Keylime's <c>registrarmain</c> row). The activation secret is never stored: only a
/// SHA-256 of the auth tag the agent must present, so a copy of the database cannot be used to activate.
/// </summary>
public sealed record RegistrarAgentRecord
{
    public required string AgentId { get; init; }
    /// <summary>The AK, TPM2B_PUBLIC.</summary>
    public required byte[] AikTpm { get; init; }
    /// <summary>The EK, TPM2B_PUBLIC.</summary>
    public required byte[] EkTpm { get; init; }
    /// <summary>The EK certificate, DER; null when the agent sent none.</summary>
    public byte[]? EkCert { get; init; }
    /// <summary>The agent's HTTPS server certificate, PEM (or Keylime's <c>disabled</c>).</summary>
    public string? MtlsCert { get; init; }
    public string? Ip { get; init; }
    public int? Port { get; init; }
    /// <summary>How many times this agent has registered.</summary>
    public int RegCount { get; init; }
    /// <summary>True once the agent proved with TPM2_ActivateCredential that the AK lives beside the EK.</summary>
    public bool Active { get; init; }
    /// <summary>SHA-256 of the expected auth tag while activation is pending; null once active.</summary>
    public byte[]? AuthTagHash { get; init; }
    public DateTimeOffset Registered { get; init; } = DateTimeOffset.UtcNow;
    public DateTimeOffset Updated { get; init; } = DateTimeOffset.UtcNow;
    public DateTimeOffset? Activated { get; init; }
    /// <summary>
    /// A re-registration of an active agent that has not proved itself yet: it replaces the contact and certificate only when its
    /// own activation succeeds, so a registration by someone who merely knows the agent's public keys changes nothing.
    /// </summary>
    public PendingRegistration? Pending { get; init; }
}

/// <summary>What a re-registration of an active agent would change, held until it activates.</summary>
public sealed record PendingRegistration
{
    public string? MtlsCert { get; init; }
    public string? Ip { get; init; }
    public int? Port { get; init; }
    /// <summary>SHA-256 of the auth tag this re-registration must present.</summary>
    public required byte[] AuthTagHash { get; init; }
    public DateTimeOffset Registered { get; init; } = DateTimeOffset.UtcNow;
}

/// <summary>Registrar members of the store (spec 001).</summary>
public partial interface IStore
{
    Task<RegistrarAgentRecord?> GetRegistrarAgentAsync(string agentId, CancellationToken ct = default);

    /// <summary>Agent ids in ascending order.</summary>
    Task<IReadOnlyList<string>> ListRegistrarAgentIdsAsync(CancellationToken ct = default);

    /// <summary>Inserts the agent or replaces every column of the existing row.</summary>
    Task UpsertRegistrarAgentAsync(RegistrarAgentRecord agent, CancellationToken ct = default);

    /// <summary>
    /// Marks the agent active and forgets the pending auth tag, only if its pending tag hash still equals
    /// <paramref name="expectedAuthTagHash"/> (so a concurrent re-registration wins). Returns false when nothing changed.
    /// </summary>
    Task<bool> ActivateRegistrarAgentAsync(string agentId, byte[] expectedAuthTagHash, DateTimeOffset at, CancellationToken ct = default);

    /// <summary>Removes the agent; false when there was none.</summary>
    Task<bool> DeleteRegistrarAgentAsync(string agentId, CancellationToken ct = default);

    /// <summary>Holds <paramref name="pending"/> beside an active agent's record (replacing an earlier pending one); false when the agent is not active.</summary>
    Task<bool> SetPendingRegistrationAsync(string agentId, PendingRegistration pending, CancellationToken ct = default);

    /// <summary>
    /// Makes the pending re-registration the agent's registration (contact, certificate, regcount + 1) only if its tag hash still
    /// equals <paramref name="expectedAuthTagHash"/>. False when nothing changed.
    /// </summary>
    Task<bool> PromotePendingRegistrationAsync(string agentId, byte[] expectedAuthTagHash, DateTimeOffset at, CancellationToken ct = default);

    /// <summary>Drops the pending re-registration if its tag hash is still <paramref name="authTagHash"/>; the active record stays.</summary>
    Task<bool> DiscardPendingRegistrationAsync(string agentId, byte[] authTagHash, CancellationToken ct = default);
}
