using System.Data.Common;

namespace TpmProvisioning.Storage;

/// <summary>KMS members over portable SQL (tables from migration 5).</summary>
public abstract partial class SqlStore
{
    private const string KmsProviderColumns = "name, key_id, kdk_wrapped, health, created_ms, updated_ms";
    private const string KmsKeyColumns = "id, name, compartment_id, vault_id, oci_key_id, algorithm, length, created_ms, updated_ms";
    private const string KmsVersionColumns = "id, key_id, number, oci_version_id, origin, material_origin, source_key_identifier, source_key_tier, material_wrapped, lifecycle_state, is_primary, created_ms, updated_ms";
    private const string KmsUserColumns = "name, password_hash, salt, iterations, role, created_ms";

    private static long Ms(DateTimeOffset t) => t.ToUnixTimeMilliseconds();
    private static DateTimeOffset At(DbDataReader r, int i) => DateTimeOffset.FromUnixTimeMilliseconds(Convert.ToInt64(r.GetValue(i)));
    private static string? Str(DbDataReader r, int i) => r.IsDBNull(i) ? null : r.GetString(i);

    /// <summary>Runs one statement on a fresh connection (optionally in <paramref name="tx"/>); returns the rows affected.</summary>
    // ------------------------------------------------------------------ meta

    public Task<byte[]?> GetKmsMetaAsync(string name, CancellationToken ct = default) =>
        FirstAsync("read a KMS setting", cmd => { AddParam(cmd, "n", name); return "SELECT value FROM kms_meta WHERE name = @n"; },
            r => r.GetFieldValue<byte[]>(0), ct);

    public async Task<byte[]> InitKmsMetaAsync(string name, byte[] value, CancellationToken ct = default)
    {
        await ExecuteAsync("store a KMS setting", cmd =>
        {
            AddParam(cmd, "n", name);
            AddParam(cmd, "v", value);
            return "INSERT INTO kms_meta (name, value) VALUES (@n, @v) ON CONFLICT DO NOTHING";
        }, ct).ConfigureAwait(false);
        return await GetKmsMetaAsync(name, ct).ConfigureAwait(false) ?? value;
    }

    // ------------------------------------------------------------------ providers

    public async Task<bool> InsertKmsProviderAsync(KmsProviderRecord provider, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(provider);
        return await ExecuteAsync("add a KMS provider", cmd =>
        {
            AddParam(cmd, "n", provider.Name);
            AddParam(cmd, "k", provider.KeyId);
            AddParam(cmd, "w", provider.WrappedKdk);
            AddParam(cmd, "h", provider.Health);
            AddParam(cmd, "c", Ms(provider.Created));
            AddParam(cmd, "u", Ms(provider.Updated));
            return $"INSERT INTO kms_providers ({KmsProviderColumns}) VALUES (@n, @k, @w, @h, @c, @u) ON CONFLICT DO NOTHING";
        }, ct).ConfigureAwait(false) > 0;
    }

    public Task<KmsProviderRecord?> GetKmsProviderAsync(string name, CancellationToken ct = default) =>
        FirstAsync("read a KMS provider", cmd => { AddParam(cmd, "n", name); return $"SELECT {KmsProviderColumns} FROM kms_providers WHERE name = @n"; }, ReadProvider, ct);

    public Task<IReadOnlyList<KmsProviderRecord>> ListKmsProvidersAsync(CancellationToken ct = default) =>
        AllAsync("list KMS providers", _ => $"SELECT {KmsProviderColumns} FROM kms_providers ORDER BY name", ReadProvider, ct);

    public async Task<bool> UpdateKmsProviderAsync(string name, string keyId, DateTimeOffset at, CancellationToken ct = default) =>
        await ExecuteAsync("update a KMS provider", cmd =>
        {
            AddParam(cmd, "n", name);
            AddParam(cmd, "k", keyId);
            AddParam(cmd, "u", Ms(at));
            return "UPDATE kms_providers SET key_id = @k, updated_ms = @u WHERE name = @n";
        }, ct).ConfigureAwait(false) > 0;

    public async Task<bool> DeleteKmsProviderAsync(string name, CancellationToken ct = default) =>
        await ExecuteAsync("remove a KMS provider", cmd => { AddParam(cmd, "n", name); return "DELETE FROM kms_providers WHERE name = @n"; }, ct).ConfigureAwait(false) > 0;

    private static KmsProviderRecord ReadProvider(DbDataReader r) => new()
    {
        Name = r.GetString(0), KeyId = r.GetString(1), WrappedKdk = r.GetFieldValue<byte[]>(2), Health = r.GetString(3),
        Created = At(r, 4), Updated = At(r, 5),
    };

    // ------------------------------------------------------------------ keys and versions

    public Task<bool> InsertKmsKeyAsync(KmsKeyRecord key, KmsKeyVersionRecord firstVersion, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(firstVersion);
        return Guard("add a KMS key", async () =>
        {
            await using var conn = await OpenAsync(ct).ConfigureAwait(false);
            await using var tx = await conn.BeginTransactionAsync(ct).ConfigureAwait(false);
            await using (var cmd = conn.CreateCommand())
            {
                cmd.Transaction = tx;
                cmd.CommandText = $"INSERT INTO kms_keys ({KmsKeyColumns}) VALUES (@id, @n, @comp, @vault, @oci, @alg, @len, @c, @u) ON CONFLICT DO NOTHING";
                AddParam(cmd, "id", key.Id);
                AddParam(cmd, "n", key.Name);
                AddParam(cmd, "comp", key.CompartmentId);
                AddParam(cmd, "vault", key.VaultId);
                AddParam(cmd, "oci", key.OciKeyId);
                AddParam(cmd, "alg", key.Algorithm);
                AddParam(cmd, "len", key.Length);
                AddParam(cmd, "c", Ms(key.Created));
                AddParam(cmd, "u", Ms(key.Updated));
                if (await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false) == 0)
                {
                    await tx.RollbackAsync(ct).ConfigureAwait(false);
                    return false;
                }
            }
            await InsertVersionAsync(conn, tx, firstVersion with { KeyId = key.Id, Number = 1, IsPrimary = true }, ct).ConfigureAwait(false);
            await tx.CommitAsync(ct).ConfigureAwait(false);
            return true;
        });
    }

    public Task<KmsKeyRecord?> GetKmsKeyAsync(string idOrName, CancellationToken ct = default) =>
        FirstAsync("read a KMS key", cmd => { AddParam(cmd, "k", idOrName); return $"SELECT {KmsKeyColumns} FROM kms_keys WHERE id = @k OR name = @k ORDER BY CASE WHEN id = @k THEN 0 ELSE 1 END"; }, ReadKey, ct);

    public Task<IReadOnlyList<KmsKeyRecord>> ListKmsKeysAsync(CancellationToken ct = default) =>
        AllAsync("list KMS keys", _ => $"SELECT {KmsKeyColumns} FROM kms_keys ORDER BY created_ms, id", ReadKey, ct);

    public Task<KmsKeyVersionRecord> AddKmsKeyVersionAsync(KmsKeyVersionRecord version, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(version);
        return Guard("add a KMS key version", async () =>
        {
            await using var conn = await OpenAsync(ct).ConfigureAwait(false);
            await using var tx = await conn.BeginTransactionAsync(ct).ConfigureAwait(false);
            int next;
            await using (var cmd = conn.CreateCommand())
            {
                cmd.Transaction = tx;
                cmd.CommandText = "UPDATE kms_key_versions SET is_primary = 0, updated_ms = @u WHERE key_id = @k AND is_primary = 1";
                AddParam(cmd, "k", version.KeyId);
                AddParam(cmd, "u", Ms(version.Created));
                await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
            }
            await using (var cmd = conn.CreateCommand())
            {
                cmd.Transaction = tx;
                cmd.CommandText = "SELECT COALESCE(MAX(number), 0) + 1 FROM kms_key_versions WHERE key_id = @k";
                AddParam(cmd, "k", version.KeyId);
                next = Convert.ToInt32(await cmd.ExecuteScalarAsync(ct).ConfigureAwait(false));
            }
            var added = version with { Number = next, IsPrimary = true };
            await InsertVersionAsync(conn, tx, added, ct).ConfigureAwait(false);
            await using (var cmd = conn.CreateCommand())
            {
                cmd.Transaction = tx;
                cmd.CommandText = "UPDATE kms_keys SET updated_ms = @u WHERE id = @k";
                AddParam(cmd, "k", version.KeyId);
                AddParam(cmd, "u", Ms(version.Created));
                await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
            }
            await tx.CommitAsync(ct).ConfigureAwait(false);
            return added;
        });
    }

    private static async Task InsertVersionAsync(DbConnection conn, DbTransaction tx, KmsKeyVersionRecord v, CancellationToken ct)
    {
        await using var cmd = conn.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = $"INSERT INTO kms_key_versions ({KmsVersionColumns}) VALUES (@id, @k, @num, @oci, @origin, @mo, @sid, @tier, @w, @state, @primary, @c, @u)";
        AddParam(cmd, "id", v.Id);
        AddParam(cmd, "k", v.KeyId);
        AddParam(cmd, "num", v.Number);
        AddParam(cmd, "oci", v.OciVersionId);
        AddParam(cmd, "origin", v.Origin);
        AddParam(cmd, "mo", v.MaterialOrigin);
        AddParam(cmd, "sid", v.SourceKeyIdentifier);
        AddParam(cmd, "tier", v.SourceKeyTier);
        AddParam(cmd, "w", v.WrappedMaterial);
        AddParam(cmd, "state", v.LifecycleState);
        AddParam(cmd, "primary", v.IsPrimary ? 1 : 0);
        AddParam(cmd, "c", Ms(v.Created));
        AddParam(cmd, "u", Ms(v.Updated));
        await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
    }

    public Task<IReadOnlyList<KmsKeyVersionRecord>> ListKmsKeyVersionsAsync(string keyId, CancellationToken ct = default) =>
        AllAsync("list KMS key versions", cmd => { AddParam(cmd, "k", keyId); return $"SELECT {KmsVersionColumns} FROM kms_key_versions WHERE key_id = @k ORDER BY number"; }, ReadVersion, ct);

    public Task<KmsKeyVersionRecord?> GetKmsKeyVersionAsync(string versionId, CancellationToken ct = default) =>
        FirstAsync("read a KMS key version", cmd => { AddParam(cmd, "v", versionId); return $"SELECT {KmsVersionColumns} FROM kms_key_versions WHERE id = @v"; }, ReadVersion, ct);

    private static KmsKeyRecord ReadKey(DbDataReader r) => new()
    {
        Id = r.GetString(0), Name = r.GetString(1), CompartmentId = r.GetString(2), VaultId = r.GetString(3), OciKeyId = r.GetString(4),
        Algorithm = r.GetString(5), Length = Convert.ToInt32(r.GetValue(6)), Created = At(r, 7), Updated = At(r, 8),
    };

    private static KmsKeyVersionRecord ReadVersion(DbDataReader r) => new()
    {
        Id = r.GetString(0), KeyId = r.GetString(1), Number = Convert.ToInt32(r.GetValue(2)), OciVersionId = r.GetString(3),
        Origin = r.GetString(4), MaterialOrigin = r.GetString(5), SourceKeyIdentifier = Str(r, 6), SourceKeyTier = Str(r, 7),
        WrappedMaterial = r.GetFieldValue<byte[]>(8), LifecycleState = r.GetString(9), IsPrimary = Convert.ToInt64(r.GetValue(10)) != 0,
        Created = At(r, 11), Updated = At(r, 12),
    };

    // ------------------------------------------------------------------ users and tokens

    public async Task<bool> InsertKmsUserAsync(KmsUserRecord user, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(user);
        return await ExecuteAsync("add a KMS user", cmd =>
        {
            AddParam(cmd, "n", user.Name);
            AddParam(cmd, "h", user.PasswordHash);
            AddParam(cmd, "s", user.Salt);
            AddParam(cmd, "i", user.Iterations);
            AddParam(cmd, "r", user.Role);
            AddParam(cmd, "c", Ms(user.Created));
            return $"INSERT INTO kms_users ({KmsUserColumns}) VALUES (@n, @h, @s, @i, @r, @c) ON CONFLICT DO NOTHING";
        }, ct).ConfigureAwait(false) > 0;
    }

    public Task<KmsUserRecord?> GetKmsUserAsync(string name, CancellationToken ct = default) =>
        FirstAsync("read a KMS user", cmd => { AddParam(cmd, "n", name); return $"SELECT {KmsUserColumns} FROM kms_users WHERE name = @n"; }, ReadUser, ct);

    public Task<IReadOnlyList<KmsUserRecord>> ListKmsUsersAsync(CancellationToken ct = default) =>
        AllAsync("list KMS users", _ => $"SELECT {KmsUserColumns} FROM kms_users ORDER BY name", ReadUser, ct);

    public async Task<bool> DeleteKmsUserAsync(string name, CancellationToken ct = default)
    {
        await ExecuteAsync("remove a KMS user's tokens", cmd => { AddParam(cmd, "n", name); return "DELETE FROM kms_tokens WHERE user_name = @n"; }, ct).ConfigureAwait(false);
        return await ExecuteAsync("remove a KMS user", cmd => { AddParam(cmd, "n", name); return "DELETE FROM kms_users WHERE name = @n"; }, ct).ConfigureAwait(false) > 0;
    }

    private static KmsUserRecord ReadUser(DbDataReader r) => new()
    {
        Name = r.GetString(0), PasswordHash = r.GetFieldValue<byte[]>(1), Salt = r.GetFieldValue<byte[]>(2),
        Iterations = Convert.ToInt32(r.GetValue(3)), Role = r.GetString(4), Created = At(r, 5),
    };

    public Task InsertKmsTokenAsync(KmsTokenRecord token, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(token);
        return ExecuteAsync("store a KMS token", cmd =>
        {
            AddParam(cmd, "h", token.TokenHash);
            AddParam(cmd, "u", token.UserName);
            AddParam(cmd, "k", token.Kind);
            AddParam(cmd, "c", Ms(token.Created));
            AddParam(cmd, "e", Ms(token.Expires));
            AddParam(cmd, "now", Ms(token.Created));
            // Expired tokens are swept whenever a new one is issued.
            return "DELETE FROM kms_tokens WHERE expires_ms < @now; INSERT INTO kms_tokens (token_hash, user_name, kind, created_ms, expires_ms) VALUES (@h, @u, @k, @c, @e)";
        }, ct);
    }

    public Task<KmsTokenRecord?> GetKmsTokenAsync(byte[] tokenHash, DateTimeOffset now, CancellationToken ct = default) =>
        FirstAsync("read a KMS token", cmd =>
        {
            AddParam(cmd, "h", tokenHash);
            AddParam(cmd, "now", Ms(now));
            return "SELECT token_hash, user_name, kind, created_ms, expires_ms FROM kms_tokens WHERE token_hash = @h AND expires_ms > @now";
        }, r => new KmsTokenRecord { TokenHash = r.GetFieldValue<byte[]>(0), UserName = r.GetString(1), Kind = r.GetString(2), Created = At(r, 3), Expires = At(r, 4) }, ct);

    public async Task<bool> DeleteKmsTokenAsync(byte[] tokenHash, CancellationToken ct = default) =>
        await ExecuteAsync("remove a KMS token", cmd => { AddParam(cmd, "h", tokenHash); return "DELETE FROM kms_tokens WHERE token_hash = @h"; }, ct).ConfigureAwait(false) > 0;

    // ------------------------------------------------------------------ revocations

    public Task UpsertKmsRevocationAsync(KmsRevocationRecord revocation, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(revocation);
        return ExecuteAsync("store a revocation", cmd =>
        {
            AddParam(cmd, "a", revocation.AgentId);
            AddParam(cmd, "e", revocation.EventId);
            AddParam(cmd, "t", revocation.Type);
            AddParam(cmd, "time", Ms(revocation.Time));
            AddParam(cmd, "d", revocation.Detail);
            return "INSERT INTO kms_revocations (agent_id, event_id, type, time_ms, detail) VALUES (@a, @e, @t, @time, @d) " +
                   "ON CONFLICT (agent_id) DO UPDATE SET event_id = @e, type = @t, time_ms = @time, detail = @d";
        }, ct);
    }

    public Task<KmsRevocationRecord?> GetKmsRevocationAsync(string agentId, CancellationToken ct = default) =>
        FirstAsync("read a revocation", cmd => { AddParam(cmd, "a", agentId); return "SELECT agent_id, event_id, type, time_ms, detail FROM kms_revocations WHERE agent_id = @a"; },
            r => new KmsRevocationRecord { AgentId = r.GetString(0), EventId = Str(r, 1), Type = Str(r, 2), Time = At(r, 3), Detail = Str(r, 4) }, ct);

    public async Task<bool> DeleteKmsRevocationAsync(string agentId, CancellationToken ct = default) =>
        await ExecuteAsync("remove a revocation", cmd => { AddParam(cmd, "a", agentId); return "DELETE FROM kms_revocations WHERE agent_id = @a"; }, ct).ConfigureAwait(false) > 0;

    public async Task<bool> RecordKmsRevocationNoticeAsync(byte[] noticeHash, DateTimeOffset now, DateTimeOffset forgetBefore, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(noticeHash);
        await ExecuteAsync("forget old revocation notices", cmd => { AddParam(cmd, "t", Ms(forgetBefore)); return "DELETE FROM kms_revocation_notices WHERE received_ms < @t"; }, ct).ConfigureAwait(false);
        return await ExecuteAsync("record a revocation notice", cmd =>
        {
            AddParam(cmd, "h", Convert.ToHexString(noticeHash));
            AddParam(cmd, "t", Ms(now));
            return "INSERT INTO kms_revocation_notices (notice_hash, received_ms) VALUES (@h, @t) ON CONFLICT (notice_hash) DO NOTHING";
        }, ct).ConfigureAwait(false) > 0;
    }
}
