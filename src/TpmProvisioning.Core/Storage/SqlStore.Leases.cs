using System.Data.Common;
using TpmProvisioning.Attestation.Verifier;

namespace TpmProvisioning.Storage;

/// <summary>Verifier cluster members over SQL (migration 8). Claims need <c>FOR UPDATE SKIP LOCKED</c>: PostgreSQL only.</summary>
public abstract partial class SqlStore
{
    /// <summary>Operational states the loop watches (START, GET_QUOTE, GET_QUOTE_RETRY, PROVIDE_V, PROVIDE_V_RETRY).</summary>
    private const string WatchedStates = "(1, 3, 4, 5, 6)";

    public virtual bool SupportsLeases => false;

    public Task<DateTimeOffset> HeartbeatVerifierAsync(string verifierId, string? contact, TimeSpan lease, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(verifierId);
        return Guard("record a verifier heartbeat", async () =>
        {
            await using var conn = await OpenAsync(ct).ConfigureAwait(false);
            await using var cmd = conn.CreateCommand();
            cmd.CommandText = $"""
                INSERT INTO verifier_nodes (verifier_id, contact, started_ms, heartbeat_ms, lease_ms) VALUES (@id, @contact, {Dialect.NowMs}, {Dialect.NowMs}, @lease)
                ON CONFLICT (verifier_id) DO UPDATE SET contact = @contact, heartbeat_ms = {Dialect.NowMs}, lease_ms = @lease
                RETURNING heartbeat_ms
                """;
            AddParam(cmd, "id", verifierId);
            AddParam(cmd, "contact", contact);
            AddParam(cmd, "lease", (long)lease.TotalMilliseconds);
            return DateTimeOffset.FromUnixTimeMilliseconds(Convert.ToInt64(await cmd.ExecuteScalarAsync(ct).ConfigureAwait(false)));
        });
    }

    public async Task LeaveVerifierClusterAsync(string verifierId, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(verifierId);
        await ExecuteAsync("leave the verifier cluster", cmd =>
        {
            AddParam(cmd, "id", verifierId);
            return "UPDATE verifier_agents SET lease_owner = NULL, lease_expires_ms = 0 WHERE lease_owner = @id; DELETE FROM verifier_nodes WHERE verifier_id = @id";
        }, ct).ConfigureAwait(false);
    }

    public Task<IReadOnlyList<LeaseClaim>> RenewVerifierLeasesAsync(string verifierId, TimeSpan lease, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(verifierId);
        return AllAsync("renew verifier leases", cmd =>
        {
            AddParam(cmd, "id", verifierId);
            AddParam(cmd, "lease", (long)lease.TotalMilliseconds);
            return $"UPDATE verifier_agents SET lease_expires_ms = {Dialect.NowMs} + @lease WHERE lease_owner = @id AND lease_expires_ms > {Dialect.NowMs} AND operational_state IN {WatchedStates} RETURNING agent_id, updated_ms";
        }, r => new LeaseClaim(r.GetString(0), DateTimeOffset.FromUnixTimeMilliseconds(Convert.ToInt64(r.GetValue(1)))), ct);
    }

    public Task<IReadOnlyList<LeaseClaim>> ClaimVerifierAgentsAsync(string verifierId, int max, TimeSpan lease, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(verifierId);
        if (!SupportsLeases) throw new NotSupportedException($"The {Provider} store is not shared; it has no verifier leases.");
        if (max <= 0) return Task.FromResult<IReadOnlyList<LeaseClaim>>([]);
        return AllAsync("claim verifier agents", cmd =>
        {
            AddParam(cmd, "id", verifierId);
            AddParam(cmd, "lease", (long)lease.TotalMilliseconds);
            AddParam(cmd, "max", max);
            return $"""
                WITH c AS (
                    SELECT agent_id FROM verifier_agents
                    WHERE operational_state IN {WatchedStates} AND (lease_owner IS NULL OR lease_expires_ms IS NULL OR lease_expires_ms <= {Dialect.NowMs})
                    ORDER BY lease_expires_ms NULLS FIRST, agent_id
                    LIMIT @max
                    FOR UPDATE SKIP LOCKED)
                UPDATE verifier_agents v SET lease_owner = @id, lease_expires_ms = {Dialect.NowMs} + @lease, verifier_id = @id
                FROM c WHERE v.agent_id = c.agent_id
                RETURNING v.agent_id, v.updated_ms
                """;
        }, r => new LeaseClaim(r.GetString(0), DateTimeOffset.FromUnixTimeMilliseconds(Convert.ToInt64(r.GetValue(1)))), ct);
    }

    public async Task<bool> ClaimVerifierAgentAsync(string verifierId, string agentId, TimeSpan lease, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(verifierId);
        ArgumentNullException.ThrowIfNull(agentId);
        return await ExecuteAsync("claim a verifier agent", cmd =>
        {
            AddParam(cmd, "id", verifierId);
            AddParam(cmd, "agent", agentId);
            AddParam(cmd, "lease", (long)lease.TotalMilliseconds);
            return $"""
                UPDATE verifier_agents SET lease_owner = @id, lease_expires_ms = {Dialect.NowMs} + @lease, verifier_id = @id
                WHERE agent_id = @agent AND (lease_owner IS NULL OR lease_owner = @id OR lease_expires_ms IS NULL OR lease_expires_ms <= {Dialect.NowMs})
                """;
        }, ct).ConfigureAwait(false) > 0;
    }

    public async Task ReleaseVerifierLeasesAsync(string verifierId, IReadOnlyCollection<string> agentIds, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(verifierId);
        ArgumentNullException.ThrowIfNull(agentIds);
        foreach (var chunk in agentIds.Chunk(200))
            await ExecuteAsync("release verifier leases", cmd =>
            {
                AddParam(cmd, "id", verifierId);
                var names = new List<string>();
                for (int i = 0; i < chunk.Length; i++) { names.Add("@a" + i); AddParam(cmd, "a" + i, chunk[i]); }
                return $"UPDATE verifier_agents SET lease_owner = NULL, lease_expires_ms = 0 WHERE lease_owner = @id AND agent_id IN ({string.Join(", ", names)})";
            }, ct).ConfigureAwait(false);
    }

    public Task<(int LiveVerifiers, int WatchedAgents)> VerifierClusterSizeAsync(CancellationToken ct = default) =>
        Guard("read the verifier cluster's size", async () =>
        {
            await using var conn = await OpenAsync(ct).ConfigureAwait(false);
            await using var cmd = conn.CreateCommand();
            cmd.CommandText = $"""
                SELECT (SELECT COUNT(*) FROM verifier_nodes WHERE heartbeat_ms + lease_ms >= {Dialect.NowMs}),
                       (SELECT COUNT(*) FROM verifier_agents WHERE operational_state IN {WatchedStates})
                """;
            await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
            await r.ReadAsync(ct).ConfigureAwait(false);
            return (Convert.ToInt32(r.GetValue(0)), Convert.ToInt32(r.GetValue(1)));
        });

    public Task<IReadOnlyList<VerifierNodeRecord>> ListVerifierNodesAsync(CancellationToken ct = default) =>
        AllAsync("list verifiers", _ => $"""
            SELECT n.verifier_id, n.contact, n.started_ms, n.heartbeat_ms, n.lease_ms,
                   (SELECT COUNT(*) FROM verifier_agents a WHERE a.verifier_id = n.verifier_id AND a.operational_state IN {WatchedStates}),
                   (SELECT COUNT(*) FROM verifier_agents a WHERE a.lease_owner = n.verifier_id AND a.lease_expires_ms > {Dialect.NowMs}),
                   (SELECT COUNT(*) FROM verifier_agents a WHERE a.verifier_id = n.verifier_id AND a.operational_state IN {WatchedStates}
                        AND (a.lease_owner IS NULL OR a.lease_expires_ms IS NULL OR a.lease_expires_ms <= {Dialect.NowMs})),
                   {Dialect.NowMs}
            FROM verifier_nodes n
            UNION ALL
            SELECT a.verifier_id, NULL, NULL, NULL, 0,
                   SUM(CASE WHEN a.operational_state IN {WatchedStates} THEN 1 ELSE 0 END), 0, 0, {Dialect.NowMs}
            FROM verifier_agents a WHERE a.verifier_id NOT IN (SELECT verifier_id FROM verifier_nodes)
            GROUP BY a.verifier_id
            ORDER BY 1
            """,
            r => new VerifierNodeRecord
            {
                VerifierId = r.GetString(0),
                Contact = r.IsDBNull(1) ? null : r.GetString(1),
                Started = r.IsDBNull(2) ? null : DateTimeOffset.FromUnixTimeMilliseconds(Convert.ToInt64(r.GetValue(2))),
                Heartbeat = r.IsDBNull(3) ? null : DateTimeOffset.FromUnixTimeMilliseconds(Convert.ToInt64(r.GetValue(3))),
                Lease = TimeSpan.FromMilliseconds(Convert.ToInt64(r.GetValue(4))),
                Agents = Convert.ToInt32(r.GetValue(5)),
                LeasedAgents = Convert.ToInt32(r.GetValue(6)),
                ExpiredAgents = Convert.ToInt32(r.GetValue(7)),
                StoreTime = DateTimeOffset.FromUnixTimeMilliseconds(Convert.ToInt64(r.GetValue(8))),
            }, ct);

    public async Task<bool> UpdateVerifierAgentReleasingLeaseAsync(VerifierAgentRecord agent, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(agent);
        return await ExecuteAsync("update a verifier agent", cmd =>
        {
            AddVerifierParams(cmd, agent);
            return """
                UPDATE verifier_agents SET progress_json = @progress, operational_state = @state, severity_level = @sev, last_event_id = @event,
                    attestation_count = @count, last_received_quote = @recv, last_successful_attestation = @ok, updated_ms = @upd,
                    lease_owner = NULL, lease_expires_ms = 0
                WHERE agent_id = @id
                """;
        }, ct).ConfigureAwait(false) > 0;
    }

    public async Task<bool> UpdateLeasedVerifierAgentAsync(VerifierAgentRecord agent, string owner, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(agent);
        ArgumentNullException.ThrowIfNull(owner);
        return await ExecuteAsync("update a leased verifier agent", cmd =>
        {
            AddVerifierParams(cmd, agent);
            AddParam(cmd, "owner", owner);
            return $"""
                UPDATE verifier_agents SET progress_json = @progress, operational_state = @state, severity_level = @sev, last_event_id = @event,
                    attestation_count = @count, last_received_quote = @recv, last_successful_attestation = @ok, updated_ms = @upd
                WHERE agent_id = @id AND lease_owner = @owner AND lease_expires_ms > {Dialect.NowMs}
                """;
        }, ct).ConfigureAwait(false) > 0;
    }
}
