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
}
