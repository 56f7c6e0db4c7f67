using System.Data.Common;

namespace TpmProvisioning.Storage;

/// <summary>Signing keys and PKCS#11 PINs over portable SQL (tables from migration 8), and the secret columns of secrets at rest.</summary>
public abstract partial class SqlStore
{
    private const string SigningKeyColumns = "label, kind, algorithm, key_size, fingerprint, certificate_pem, private_key, wrap_key_id, pkcs11_module, pkcs11_token, pkcs11_key_label, pkcs11_key_id, active, created_ms, updated_ms";

    public async Task<bool> InsertSigningKeyAsync(SigningKeyRecord key, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(key);
        return await ExecuteAsync("add a signing key", cmd =>
        {
            AddParam(cmd, "label", key.Label);
            AddParam(cmd, "kind", key.Kind.ToString().ToLowerInvariant());
            AddParam(cmd, "alg", key.Algorithm);
            AddParam(cmd, "size", key.KeySize);
            AddParam(cmd, "fp", key.Fingerprint);
            AddParam(cmd, "cert", key.CertificatePem);
            AddParam(cmd, "priv", key.PrivateKey);
            AddParam(cmd, "wrap", key.WrapKeyId);
            AddParam(cmd, "module", key.Pkcs11Module);
            AddParam(cmd, "token", key.Pkcs11Token);
            AddParam(cmd, "klabel", key.Pkcs11KeyLabel);
            AddParam(cmd, "kid", key.Pkcs11KeyId);
            AddParam(cmd, "c", key.Created.ToUnixTimeMilliseconds());
            AddParam(cmd, "u", key.Updated.ToUnixTimeMilliseconds());
            return $"INSERT INTO station_signing_keys ({SigningKeyColumns}) VALUES (@label, @kind, @alg, @size, @fp, @cert, @priv, @wrap, @module, @token, @klabel, @kid, 0, @c, @u) ON CONFLICT DO NOTHING";
        }, ct).ConfigureAwait(false) == 1;
    }

    private static SigningKeyRecord ReadSigningKey(DbDataReader r)
    {
        string? S(int i) => r.IsDBNull(i) ? null : r.GetString(i);
        return new SigningKeyRecord
        {
            Label = r.GetString(0),
            Kind = r.GetString(1) == "pkcs11" ? SigningKeyKind.Pkcs11 : SigningKeyKind.Pem,
            Algorithm = r.GetString(2),
            KeySize = Convert.ToInt32(r.GetValue(3)),
            Fingerprint = r.GetString(4),
            CertificatePem = r.GetString(5),
            PrivateKey = S(6),
            WrapKeyId = S(7),
            Pkcs11Module = S(8),
            Pkcs11Token = S(9),
            Pkcs11KeyLabel = S(10),
            Pkcs11KeyId = S(11),
            Active = Convert.ToInt64(r.GetValue(12)) == 1,
            Created = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(13)),
            Updated = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(14)),
        };
    }

    public Task<IReadOnlyList<SigningKeyRecord>> ListSigningKeysAsync(CancellationToken ct = default) =>
        AllAsync("list signing keys", _ => $"SELECT {SigningKeyColumns} FROM station_signing_keys ORDER BY created_ms, label", ReadSigningKey, ct);

    public Task<SigningKeyRecord?> GetSigningKeyAsync(string label, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(label);
        return FirstAsync("read a signing key", cmd => { AddParam(cmd, "label", label); return $"SELECT {SigningKeyColumns} FROM station_signing_keys WHERE label = @label"; }, ReadSigningKey, ct);
    }

    public async Task<(string Label, long UpdatedMs)?> GetActiveSigningKeyStampAsync(CancellationToken ct = default)
    {
        var rows = await AllAsync("read the active signing key", _ => "SELECT label, updated_ms FROM station_signing_keys WHERE active = 1",
            r => (Label: r.GetString(0), UpdatedMs: r.GetInt64(1)), ct).ConfigureAwait(false);
        return rows.Count == 0 ? null : rows[0];
    }

    public async Task<bool> ActivateSigningKeyAsync(string? label, CancellationToken ct = default)
    {
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        if (label is null)
        {
            await ExecuteAsync("activate the built-in signing key", cmd => { AddParam(cmd, "u", now); return "UPDATE station_signing_keys SET active = 0, updated_ms = @u WHERE active = 1"; }, ct).ConfigureAwait(false);
            return true;
        }
        return await Guard("activate a signing key", async () =>
        {
            await using var conn = await OpenAsync(ct).ConfigureAwait(false);
            await using var tx = await conn.BeginTransactionAsync(ct).ConfigureAwait(false);
            await using (var check = conn.CreateCommand())
            {
                check.Transaction = tx;
                check.CommandText = "SELECT COUNT(*) FROM station_signing_keys WHERE label = @label";
                AddParam(check, "label", label);
                if (Convert.ToInt64(await check.ExecuteScalarAsync(ct).ConfigureAwait(false)) == 0) return false;
            }
            foreach (var sql in new[]
            {
                "UPDATE station_signing_keys SET active = 0, updated_ms = @u WHERE active = 1 AND label <> @label",
                "UPDATE station_signing_keys SET active = 1, updated_ms = @u WHERE label = @label",
            })
            {
                await using var cmd = conn.CreateCommand();
                cmd.Transaction = tx;
                cmd.CommandText = sql;
                AddParam(cmd, "label", label);
                AddParam(cmd, "u", now);
                await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
            }
            await tx.CommitAsync(ct).ConfigureAwait(false);
            return true;
        }).ConfigureAwait(false);
    }

    public async Task<bool> RemoveSigningKeyAsync(string label, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(label);
        return await SecretWriteAsync("remove a signing key", cmd => { AddParam(cmd, "label", label); return "DELETE FROM station_signing_keys WHERE label = @label AND active = 0"; }, ct).ConfigureAwait(false) == 1;
    }

    public async Task<bool> ReplaceSigningKeySecretAsync(string label, string expected, string replacement, string? wrapKeyId, CancellationToken ct = default)
    {
        return await SecretWriteAsync("wrap a signing key", cmd =>
        {
            AddParam(cmd, "label", label);
            AddParam(cmd, "old", expected);
            AddParam(cmd, "new", replacement);
            AddParam(cmd, "wrap", wrapKeyId);
            AddParam(cmd, "u", DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
            return "UPDATE station_signing_keys SET private_key = @new, wrap_key_id = @wrap, updated_ms = @u WHERE label = @label AND private_key = @old";
        }, ct).ConfigureAwait(false) == 1;
    }

    public async Task UpsertPkcs11PinAsync(Pkcs11PinRecord pin, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(pin);
        await SecretWriteAsync("store a PKCS#11 PIN", cmd =>
        {
            AddParam(cmd, "m", pin.Module);
            AddParam(cmd, "t", pin.Token);
            AddParam(cmd, "p", pin.Pin);
            AddParam(cmd, "w", pin.WrapKeyId);
            AddParam(cmd, "u", pin.Updated.ToUnixTimeMilliseconds());
            return "INSERT INTO station_pkcs11_pins (module, token, pin_sealed, wrap_key_id, updated_ms) VALUES (@m, @t, @p, @w, @u) " +
                   "ON CONFLICT (module, token) DO UPDATE SET pin_sealed = @p, wrap_key_id = @w, updated_ms = @u";
        }, ct).ConfigureAwait(false);
    }

    private static Pkcs11PinRecord ReadPin(DbDataReader r) => new()
    {
        Module = r.GetString(0),
        Token = r.GetString(1),
        Pin = r.GetString(2),
        WrapKeyId = r.IsDBNull(3) ? null : r.GetString(3),
        Updated = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(4)),
    };

    public Task<Pkcs11PinRecord?> GetPkcs11PinAsync(string module, string token, CancellationToken ct = default) =>
        FirstAsync("read a PKCS#11 PIN", cmd =>
        {
            AddParam(cmd, "m", module);
            AddParam(cmd, "t", token);
            return "SELECT module, token, pin_sealed, wrap_key_id, updated_ms FROM station_pkcs11_pins WHERE module = @m AND token = @t";
        }, ReadPin, ct);

    public Task<IReadOnlyList<Pkcs11PinRecord>> ListPkcs11PinsAsync(CancellationToken ct = default) =>
        AllAsync("list PKCS#11 PINs", _ => "SELECT module, token, pin_sealed, wrap_key_id, updated_ms FROM station_pkcs11_pins ORDER BY module, token", ReadPin, ct);

    public async Task<bool> RemovePkcs11PinAsync(string module, string token, CancellationToken ct = default) =>
        await SecretWriteAsync("remove a PKCS#11 PIN", cmd =>
        {
            AddParam(cmd, "m", module);
            AddParam(cmd, "t", token);
            return "DELETE FROM station_pkcs11_pins WHERE module = @m AND token = @t";
        }, ct).ConfigureAwait(false) == 1;

    public async Task<bool> ReplacePkcs11PinSecretAsync(string module, string token, string expected, string replacement, string? wrapKeyId, CancellationToken ct = default) =>
        await SecretWriteAsync("wrap a PKCS#11 PIN", cmd =>
        {
            AddParam(cmd, "m", module);
            AddParam(cmd, "t", token);
            AddParam(cmd, "old", expected);
            AddParam(cmd, "new", replacement);
            AddParam(cmd, "w", wrapKeyId);
            return "UPDATE station_pkcs11_pins SET pin_sealed = @new, wrap_key_id = @w WHERE module = @m AND token = @t AND pin_sealed = @old";
        }, ct).ConfigureAwait(false) == 1;

    public Task<IReadOnlyList<(string AgentId, string ConfigJson)>> ListVerifierConfigsAsync(CancellationToken ct = default) =>
        AllAsync("read verifier configurations", _ => "SELECT agent_id, config_json FROM verifier_agents ORDER BY agent_id", r => (r.GetString(0), r.GetString(1)), ct);

    public async Task<bool> ReplaceVerifierConfigAsync(string agentId, string expected, string replacement, CancellationToken ct = default) =>
        await SecretWriteAsync("seal a verifier configuration", cmd =>
        {
            AddParam(cmd, "id", agentId);
            AddParam(cmd, "old", expected);
            AddParam(cmd, "new", replacement);
            return "UPDATE verifier_agents SET config_json = @new WHERE agent_id = @id AND config_json = @old";
        }, ct).ConfigureAwait(false) == 1;

    public async Task<(long Providers, long Versions)> CountKmsWrappedAsync(CancellationToken ct = default)
    {
        var rows = await AllAsync("count KMS material", _ => "SELECT (SELECT COUNT(*) FROM kms_providers), (SELECT COUNT(*) FROM kms_key_versions)",
            r => (Convert.ToInt64(r.GetValue(0)), Convert.ToInt64(r.GetValue(1))), ct).ConfigureAwait(false);
        return rows[0];
    }

    /// <summary>
    /// One statement that replaces or deletes a secret: on SQLite with <c>secure_delete</c> on, so the old value's bytes are
    /// zeroed in the page rather than left in free space.
    /// </summary>
    private Task<int> SecretWriteAsync(string what, Func<DbCommand, string> prepare, CancellationToken ct) =>
        Guard(what, async () =>
        {
            await using var conn = await OpenAsync(ct).ConfigureAwait(false);
            if (Dialect is SqliteDialect) await ExecAsync(conn, null, "PRAGMA secure_delete=ON", ct).ConfigureAwait(false);
            await using var cmd = conn.CreateCommand();
            cmd.CommandText = prepare(cmd);
            return await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
        });

    public async Task ScrubAsync(CancellationToken ct = default)
    {
        if (Dialect is not SqliteDialect) return;
        await Guard("checkpoint the write-ahead log", async () =>
        {
            await using var conn = await OpenAsync(ct).ConfigureAwait(false);
            // Copies the current pages into the database file and truncates the WAL, dropping the frames that held old values.
            // A reader of another connection (a watch loop, an admin session) can hold the checkpoint back: it then answers
            // busy, or checkpoints only part of the log. Retry until the whole log is copied and truncated, for a bounded time.
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            while (true)
            {
                await using var cmd = conn.CreateCommand();
                cmd.CommandText = "PRAGMA wal_checkpoint(TRUNCATE)";
                await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
                bool done = true;
                if (await r.ReadAsync(ct).ConfigureAwait(false))
                {
                    long busy = r.GetInt64(0), log = r.GetInt64(1), copied = r.GetInt64(2);
                    done = busy == 0 && (log <= 0 || log == copied);
                }
                if (done || DateTime.UtcNow > deadline) return 0;
                await Task.Delay(50, ct).ConfigureAwait(false);
            }
        }).ConfigureAwait(false);
    }
}
