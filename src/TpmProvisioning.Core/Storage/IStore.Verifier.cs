using TpmProvisioning.Attestation.Verifier;

namespace TpmProvisioning.Storage;

/// <summary>Verifier members of the store (spec 001, the cloud verifier).</summary>
public partial interface IStore
{
    Task<VerifierAgentRecord?> GetVerifierAgentAsync(string agentId, CancellationToken ct = default);

    /// <summary>Agents of <paramref name="verifierId"/> (all verifiers when null), ascending by id.</summary>
    Task<IReadOnlyList<VerifierAgentRecord>> ListVerifierAgentsAsync(string? verifierId = null, CancellationToken ct = default);

    /// <summary>Inserts the agent; false when one with that id exists (nothing changes).</summary>
    Task<bool> InsertVerifierAgentAsync(VerifierAgentRecord agent, CancellationToken ct = default);

    /// <summary>Replaces the state columns and progress of an existing agent; false when there is none.</summary>
    Task<bool> UpdateVerifierAgentAsync(VerifierAgentRecord agent, CancellationToken ct = default);

    /// <summary>
    /// Replaces the state columns and progress of several existing agents at once (the verifier's verdicts of one moment, written
    /// together); element i is false when agent i is not there. A store that can writes them in one transaction; this default
    /// writes them one by one.
    /// </summary>
    async Task<bool[]> UpdateVerifierAgentsAsync(IReadOnlyList<VerifierAgentRecord> agents, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(agents);
        var done = new bool[agents.Count];
        for (int i = 0; i < agents.Count; i++) done[i] = await UpdateVerifierAgentAsync(agents[i], ct).ConfigureAwait(false);
        return done;
    }

    /// <summary>Removes the agent; false when there was none.</summary>
    Task<bool> DeleteVerifierAgentAsync(string agentId, CancellationToken ct = default);
}
