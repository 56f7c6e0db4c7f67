using System.Data.Common;

namespace TpmProvisioning.Storage;

/// <summary>Registrar members over portable SQL (table from migration 3).</summary>
public abstract partial class SqlStore
{
    private const string RegistrarColumns = "agent_id, aik_tpm, ek_tpm, ekcert, mtls_cert, ip, port, regcount, active, auth_tag_hash, registered_ms, updated_ms, activated_ms";
    private const string RegistrarPendingColumns = "pending_mtls_cert, pending_ip, pending_port, pending_auth_tag_hash, pending_ms";

    public Task<RegistrarAgentRecord?> GetRegistrarAgentAsync(string agentId, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(agentId);
        return FirstAsync("read a registered agent", cmd => { AddParam(cmd, "id", agentId); return $"SELECT {RegistrarColumns}, {RegistrarPendingColumns} FROM registrar_agents WHERE agent_id = @id"; },
            ReadRegistrarAgent, ct);
    }

    public Task<IReadOnlyList<string>> ListRegistrarAgentIdsAsync(CancellationToken ct = default) =>
        AllAsync("list registered agents", _ => "SELECT agent_id FROM registrar_agents ORDER BY agent_id", r => r.GetString(0), ct);

    public Task UpsertRegistrarAgentAsync(RegistrarAgentRecord agent, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(agent);
        return ExecuteAsync("store a registered agent", cmd =>
        {
            AddParam(cmd, "id", agent.AgentId);
            AddParam(cmd, "aik", agent.AikTpm);
            AddParam(cmd, "ek", agent.EkTpm);
            AddParam(cmd, "ekcert", agent.EkCert);
            AddParam(cmd, "mtls", agent.MtlsCert);
            AddParam(cmd, "ip", agent.Ip);
            AddParam(cmd, "port", agent.Port);
            AddParam(cmd, "regcount", agent.RegCount);
            AddParam(cmd, "active", agent.Active ? 1 : 0);
            AddParam(cmd, "tag", agent.AuthTagHash);
            AddParam(cmd, "reg", agent.Registered.ToUnixTimeMilliseconds());
            AddParam(cmd, "upd", agent.Updated.ToUnixTimeMilliseconds());
            AddParam(cmd, "act", agent.Activated?.ToUnixTimeMilliseconds());
            return $"""
                INSERT INTO registrar_agents ({RegistrarColumns})
                VALUES (@id, @aik, @ek, @ekcert, @mtls, @ip, @port, @regcount, @active, @tag, @reg, @upd, @act)
                ON CONFLICT (agent_id) DO UPDATE SET aik_tpm = @aik, ek_tpm = @ek, ekcert = @ekcert, mtls_cert = @mtls, ip = @ip,
                    port = @port, regcount = @regcount, active = @active, auth_tag_hash = @tag, registered_ms = @reg,
                    updated_ms = @upd, activated_ms = @act, pending_mtls_cert = NULL, pending_ip = NULL, pending_port = NULL,
                    pending_auth_tag_hash = NULL, pending_ms = NULL
                """;
        }, ct);
    }

    public async Task<bool> ActivateRegistrarAgentAsync(string agentId, byte[] expectedAuthTagHash, DateTimeOffset at, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(agentId);
        ArgumentNullException.ThrowIfNull(expectedAuthTagHash);
        return await ExecuteAsync("activate a registered agent", cmd =>
        {
            AddParam(cmd, "id", agentId);
            AddParam(cmd, "tag", expectedAuthTagHash);
            AddParam(cmd, "t", at.ToUnixTimeMilliseconds());
            return "UPDATE registrar_agents SET active = 1, auth_tag_hash = NULL, activated_ms = @t, updated_ms = @t WHERE agent_id = @id AND auth_tag_hash = @tag";
        }, ct).ConfigureAwait(false) > 0;
    }

    public async Task<bool> SetPendingRegistrationAsync(string agentId, PendingRegistration pending, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(agentId);
        ArgumentNullException.ThrowIfNull(pending);
        return await ExecuteAsync("hold a re-registration", cmd =>
        {
            AddParam(cmd, "id", agentId);
            AddParam(cmd, "mtls", pending.MtlsCert);
            AddParam(cmd, "ip", pending.Ip);
            AddParam(cmd, "port", pending.Port);
            AddParam(cmd, "tag", pending.AuthTagHash);
            AddParam(cmd, "t", pending.Registered.ToUnixTimeMilliseconds());
            return """
                UPDATE registrar_agents SET pending_mtls_cert = @mtls, pending_ip = @ip, pending_port = @port, pending_auth_tag_hash = @tag, pending_ms = @t
                WHERE agent_id = @id AND active = 1
                """;
        }, ct).ConfigureAwait(false) > 0;
    }

    public async Task<bool> PromotePendingRegistrationAsync(string agentId, byte[] expectedAuthTagHash, DateTimeOffset at, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(agentId);
        ArgumentNullException.ThrowIfNull(expectedAuthTagHash);
        return await ExecuteAsync("activate a re-registration", cmd =>
        {
            AddParam(cmd, "id", agentId);
            AddParam(cmd, "tag", expectedAuthTagHash);
            AddParam(cmd, "t", at.ToUnixTimeMilliseconds());
            return """
                UPDATE registrar_agents SET mtls_cert = pending_mtls_cert, ip = pending_ip, port = pending_port, regcount = regcount + 1,
                    activated_ms = @t, updated_ms = @t, pending_mtls_cert = NULL, pending_ip = NULL, pending_port = NULL,
                    pending_auth_tag_hash = NULL, pending_ms = NULL
                WHERE agent_id = @id AND active = 1 AND pending_auth_tag_hash = @tag
                """;
        }, ct).ConfigureAwait(false) > 0;
    }

    public async Task<bool> DiscardPendingRegistrationAsync(string agentId, byte[] authTagHash, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(agentId);
        ArgumentNullException.ThrowIfNull(authTagHash);
        return await ExecuteAsync("discard a re-registration", cmd =>
        {
            AddParam(cmd, "id", agentId);
            AddParam(cmd, "tag", authTagHash);
            return """
                UPDATE registrar_agents SET pending_mtls_cert = NULL, pending_ip = NULL, pending_port = NULL, pending_auth_tag_hash = NULL, pending_ms = NULL
                WHERE agent_id = @id AND pending_auth_tag_hash = @tag
                """;
        }, ct).ConfigureAwait(false) > 0;
    }

    public async Task<bool> DeleteRegistrarAgentAsync(string agentId, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(agentId);
        return await ExecuteAsync("remove a registered agent", cmd => { AddParam(cmd, "id", agentId); return "DELETE FROM registrar_agents WHERE agent_id = @id"; }, ct)
            .ConfigureAwait(false) > 0;
    }

    private static RegistrarAgentRecord ReadRegistrarAgent(DbDataReader r) => new()
    {
        AgentId = r.GetString(0),
        AikTpm = r.GetFieldValue<byte[]>(1),
        EkTpm = r.GetFieldValue<byte[]>(2),
        EkCert = r.IsDBNull(3) ? null : r.GetFieldValue<byte[]>(3),
        MtlsCert = r.IsDBNull(4) ? null : r.GetString(4),
        Ip = r.IsDBNull(5) ? null : r.GetString(5),
        Port = r.IsDBNull(6) ? null : Convert.ToInt32(r.GetValue(6)),
        RegCount = Convert.ToInt32(r.GetValue(7)),
        Active = Convert.ToInt64(r.GetValue(8)) != 0,
        AuthTagHash = r.IsDBNull(9) ? null : r.GetFieldValue<byte[]>(9),
        Registered = DateTimeOffset.FromUnixTimeMilliseconds(Convert.ToInt64(r.GetValue(10))),
        Updated = DateTimeOffset.FromUnixTimeMilliseconds(Convert.ToInt64(r.GetValue(11))),
        Activated = r.IsDBNull(12) ? null : DateTimeOffset.FromUnixTimeMilliseconds(Convert.ToInt64(r.GetValue(12))),
        Pending = r.IsDBNull(16) ? null : new PendingRegistration
        {
            MtlsCert = r.IsDBNull(13) ? null : r.GetString(13),
            Ip = r.IsDBNull(14) ? null : r.GetString(14),
            Port = r.IsDBNull(15) ? null : Convert.ToInt32(r.GetValue(15)),
            AuthTagHash = r.GetFieldValue<byte[]>(16),
            Registered = r.IsDBNull(17) ? DateTimeOffset.UnixEpoch : DateTimeOffset.FromUnixTimeMilliseconds(Convert.ToInt64(r.GetValue(17))),
        },
    };
}
