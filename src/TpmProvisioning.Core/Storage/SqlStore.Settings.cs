namespace TpmProvisioning.Storage;

/// <summary>Persisted settings over portable SQL (table <c>server_settings</c> from migration 8).</summary>
public abstract partial class SqlStore
{
    public Task<IReadOnlyList<StoredSetting>> GetSettingsAsync(CancellationToken ct = default) =>
        AllAsync("read the settings", _ => "SELECT name, value, updated_ms, updated_by FROM server_settings ORDER BY name",
            r => new StoredSetting(r.GetString(0), r.GetString(1), DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(2)), r.IsDBNull(3) ? null : r.GetString(3)), ct);

    public async Task SetSettingsAsync(IReadOnlyList<KeyValuePair<string, string?>> changes, string actor, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(changes);
        if (changes.Count == 0) return;
        await Guard("write the settings", async () =>
        {
            await using var conn = await OpenAsync(ct).ConfigureAwait(false);
            await using var tx = await conn.BeginTransactionAsync(ct).ConfigureAwait(false);
            long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            foreach (var (name, value) in changes)
            {
                await using var cmd = conn.CreateCommand();
                cmd.Transaction = tx;
                AddParam(cmd, "name", name);
                if (value is null)
                    cmd.CommandText = "DELETE FROM server_settings WHERE name = @name";
                else
                {
                    cmd.CommandText = "INSERT INTO server_settings (name, value, updated_ms, updated_by) VALUES (@name, @value, @t, @by) "
                        + "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms, updated_by = excluded.updated_by";
                    AddParam(cmd, "value", value);
                    AddParam(cmd, "t", now);
                    AddParam(cmd, "by", Limit(actor, 512));
                }
                await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
            }
            await tx.CommitAsync(ct).ConfigureAwait(false);
            return 0;
        }).ConfigureAwait(false);
    }
}
