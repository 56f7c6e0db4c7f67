using System.Data.Common;
using System.Text.Json;
using TpmProvisioning.Attestation.Verifier;

namespace TpmProvisioning.Storage;

/// <summary>Verifier members over portable SQL (table from migration 4). The tenant's request and the verifier's progress are JSON columns; the fields lists and filters use are columns of their own.</summary>
public abstract partial class SqlStore
{
    private const string VerifierColumns = "agent_id, config_json, progress_json, operational_state, severity_level, last_event_id, attestation_count, last_received_quote, last_successful_attestation, verifier_id, added_ms, updated_ms";

    public Task<VerifierAgentRecord?> GetVerifierAgentAsync(string agentId, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(agentId);
        return FirstAsync("read a verifier agent", cmd => { AddParam(cmd, "id", agentId); return $"SELECT {VerifierColumns} FROM verifier_agents WHERE agent_id = @id"; },
            ReadVerifierAgent, ct);
    }

    public Task<IReadOnlyList<VerifierAgentRecord>> ListVerifierAgentsAsync(string? verifierId = null, CancellationToken ct = default) =>
        AllAsync("list verifier agents", cmd => $"SELECT {VerifierColumns} FROM verifier_agents" + Where(cmd, ("verifier_id = @vid", "vid", verifierId)) + " ORDER BY agent_id",
            ReadVerifierAgent, ct);

    public async Task<bool> InsertVerifierAgentAsync(VerifierAgentRecord agent, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(agent);
        return await ExecuteAsync("store a verifier agent", cmd =>
        {
            AddVerifierParams(cmd, agent);
            AddParam(cmd, "config", JsonSerializer.Serialize(agent.Config, VerifierAgentRecord.Json));
            AddParam(cmd, "vid", agent.VerifierId);
            AddParam(cmd, "added", agent.Added.ToUnixTimeMilliseconds());
            return $"""
                INSERT INTO verifier_agents ({VerifierColumns})
                VALUES (@id, @config, @progress, @state, @sev, @event, @count, @recv, @ok, @vid, @added, @upd)
                ON CONFLICT (agent_id) DO NOTHING
                """;
        }, ct).ConfigureAwait(false) > 0;
    }

    public async Task<bool> UpdateVerifierAgentAsync(VerifierAgentRecord agent, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(agent);
        return await ExecuteAsync("update a verifier agent", cmd =>
        {
            AddVerifierParams(cmd, agent);
            return UpdateVerifierAgentSql;
        }, ct).ConfigureAwait(false) > 0;
    }

    private const string UpdateVerifierAgentSql = """
        UPDATE verifier_agents SET progress_json = @progress, operational_state = @state, severity_level = @sev, last_event_id = @event,
            attestation_count = @count, last_received_quote = @recv, last_successful_attestation = @ok, updated_ms = @upd
        WHERE agent_id = @id
        """;

    /// <summary>One connection, one transaction and one prepared statement for the whole batch: one commit instead of one per agent.</summary>
    public Task<bool[]> UpdateVerifierAgentsAsync(IReadOnlyList<VerifierAgentRecord> agents, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(agents);
        if (agents.Count == 0) return Task.FromResult(Array.Empty<bool>());
        return Guard("update verifier agents", async () =>
        {
            var done = new bool[agents.Count];
            await using var conn = await OpenAsync(ct).ConfigureAwait(false);
            await using var tx = await conn.BeginTransactionAsync(ct).ConfigureAwait(false);
            await using var cmd = conn.CreateCommand();
            cmd.Transaction = tx;
            cmd.CommandText = UpdateVerifierAgentSql;
            // One command and one set of parameters for the whole group: only the values change from record to record.
            AddVerifierParams(cmd, agents[0]);
            for (int i = 0; i < agents.Count; i++)
            {
                if (i > 0) SetVerifierParams(cmd, agents[i]);
                done[i] = await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false) > 0;
            }
            await tx.CommitAsync(ct).ConfigureAwait(false);
            return done;
        });
    }

    /// <summary>The values of <see cref="AddVerifierParams"/>'s parameters for another record, in the same order.</summary>
    private static void SetVerifierParams(DbCommand cmd, VerifierAgentRecord agent)
    {
        var p = cmd.Parameters;
        p[0].Value = agent.AgentId;
        p[1].Value = JsonSerializer.Serialize(agent.Progress, VerifierAgentRecord.Json);
        p[2].Value = (int)agent.State;
        p[3].Value = (object?)agent.SeverityLevel ?? DBNull.Value;
        p[4].Value = (object?)agent.LastEventId ?? DBNull.Value;
        p[5].Value = agent.AttestationCount;
        p[6].Value = agent.LastReceivedQuote;
        p[7].Value = agent.LastSuccessfulAttestation;
        p[8].Value = agent.Updated.ToUnixTimeMilliseconds();
    }

    private static void AddVerifierParams(DbCommand cmd, VerifierAgentRecord agent)
    {
        AddParam(cmd, "id", agent.AgentId);
        AddParam(cmd, "progress", JsonSerializer.Serialize(agent.Progress, VerifierAgentRecord.Json));
        AddParam(cmd, "state", (int)agent.State);
        AddParam(cmd, "sev", agent.SeverityLevel);
        AddParam(cmd, "event", agent.LastEventId);
        AddParam(cmd, "count", agent.AttestationCount);
        AddParam(cmd, "recv", agent.LastReceivedQuote);
        AddParam(cmd, "ok", agent.LastSuccessfulAttestation);
        AddParam(cmd, "upd", agent.Updated.ToUnixTimeMilliseconds());
    }

    public async Task<bool> DeleteVerifierAgentAsync(string agentId, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(agentId);
        return await ExecuteAsync("remove a verifier agent", cmd => { AddParam(cmd, "id", agentId); return "DELETE FROM verifier_agents WHERE agent_id = @id"; }, ct)
            .ConfigureAwait(false) > 0;
    }

    private static VerifierAgentRecord ReadVerifierAgent(DbDataReader r) => new()
    {
        AgentId = r.GetString(0),
        Config = JsonSerializer.Deserialize<VerifierAgentConfig>(r.GetString(1), VerifierAgentRecord.Json) ?? new VerifierAgentConfig(),
        Progress = JsonSerializer.Deserialize<VerifierAgentProgress>(r.GetString(2), VerifierAgentRecord.Json) ?? new VerifierAgentProgress(),
        State = (OperationalState)Convert.ToInt32(r.GetValue(3)),
        SeverityLevel = r.IsDBNull(4) ? null : Convert.ToInt32(r.GetValue(4)),
        LastEventId = r.IsDBNull(5) ? null : r.GetString(5),
        AttestationCount = Convert.ToInt64(r.GetValue(6)),
        LastReceivedQuote = Convert.ToInt64(r.GetValue(7)),
        LastSuccessfulAttestation = Convert.ToInt64(r.GetValue(8)),
        VerifierId = r.GetString(9),
        Added = DateTimeOffset.FromUnixTimeMilliseconds(Convert.ToInt64(r.GetValue(10))),
        Updated = DateTimeOffset.FromUnixTimeMilliseconds(Convert.ToInt64(r.GetValue(11))),
    };
}
