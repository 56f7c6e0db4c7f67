using System.Data.Common;
using System.Text.Json;

namespace TpmProvisioning.Storage;

/// <summary>Provisioning members over portable SQL (tables from migration 2).</summary>
public abstract partial class SqlStore
{
    private const string ApiKeyColumns = "key_id, name, secret_hash, vendors, rate_per_minute, enabled, created_ms";
    private const string RecordColumns = "id, time_ms, serial, vendor, device_name, device_version, ek_fingerprint, ak_name, ak_cert_serial, ak_cert, api_key_id";

    public Task InsertApiKeyAsync(ApiKeyRecord key, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(key);
        return Guard("add an API key", async () =>
        {
            await using var conn = await OpenAsync(ct).ConfigureAwait(false);
            await using (var probe = conn.CreateCommand())
            {
                probe.CommandText = "SELECT COUNT(*) FROM api_keys WHERE key_id = @id";
                AddParam(probe, "id", key.KeyId);
                if (Convert.ToInt64(await probe.ExecuteScalarAsync(ct).ConfigureAwait(false)) > 0)
                    throw new InvalidOperationException($"An API key with id '{key.KeyId}' exists.");
            }
            await using var cmd = conn.CreateCommand();
            cmd.CommandText = $"INSERT INTO api_keys ({ApiKeyColumns}) VALUES (@id, @name, @hash, @vendors, @rate, @enabled, @created)";
            AddParam(cmd, "id", key.KeyId);
            AddParam(cmd, "name", key.Name);
            AddParam(cmd, "hash", key.SecretHash);
            AddParam(cmd, "vendors", JsonSerializer.Serialize(key.Vendors));
            AddParam(cmd, "rate", key.RatePerMinute);
            AddParam(cmd, "enabled", key.Enabled ? 1 : 0);
            AddParam(cmd, "created", key.Created.ToUnixTimeMilliseconds());
            await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
            return 0;
        });
    }

    public Task<ApiKeyRecord?> GetApiKeyAsync(string keyId, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(keyId);
        return Guard("read an API key", async () =>
            (await QueryAsync(cmd => { AddParam(cmd, "id", keyId); return $"SELECT {ApiKeyColumns} FROM api_keys WHERE key_id = @id"; }, ReadApiKey, ct)
                .ConfigureAwait(false)).FirstOrDefault());
    }

    public Task<IReadOnlyList<ApiKeyRecord>> ListApiKeysAsync(CancellationToken ct = default) =>
        Guard<IReadOnlyList<ApiKeyRecord>>("list API keys", async () =>
            await QueryAsync(_ => $"SELECT {ApiKeyColumns} FROM api_keys ORDER BY created_ms, key_id", ReadApiKey, ct).ConfigureAwait(false));

    private static ApiKeyRecord ReadApiKey(DbDataReader r) => new()
    {
        KeyId = r.GetString(0),
        Name = r.GetString(1),
        SecretHash = r.GetFieldValue<byte[]>(2),
        Vendors = JsonSerializer.Deserialize<string[]>(r.GetString(3)) ?? [],
        RatePerMinute = Convert.ToInt32(r.GetValue(4)),
        Enabled = Convert.ToInt64(r.GetValue(5)) != 0,
        Created = DateTimeOffset.FromUnixTimeMilliseconds(Convert.ToInt64(r.GetValue(6))),
    };

    public Task<bool> UpdateApiKeyAsync(ApiKeyUpdate update, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(update);
        return Guard("update an API key", async () =>
        {
            await using var conn = await OpenAsync(ct).ConfigureAwait(false);
            await using var cmd = conn.CreateCommand();
            var set = new List<string>();
            if (update.Enabled is { } e) { set.Add("enabled = @enabled"); AddParam(cmd, "enabled", e ? 1 : 0); }
            if (update.Vendors is { } v) { set.Add("vendors = @vendors"); AddParam(cmd, "vendors", JsonSerializer.Serialize(v)); }
            if (update.RatePerMinute is { } rate) { set.Add("rate_per_minute = @rate"); AddParam(cmd, "rate", rate); }
            if (update.Name is { } n) { set.Add("name = @name"); AddParam(cmd, "name", n); }
            AddParam(cmd, "id", update.KeyId);
            cmd.CommandText = set.Count == 0
                ? "SELECT COUNT(*) FROM api_keys WHERE key_id = @id"
                : $"UPDATE api_keys SET {string.Join(", ", set)} WHERE key_id = @id";
            return set.Count == 0
                ? Convert.ToInt64(await cmd.ExecuteScalarAsync(ct).ConfigureAwait(false)) > 0
                : await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false) > 0;
        });
    }

    public async Task<bool> RemoveApiKeyAsync(string keyId, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(keyId);
        return await ExecuteAsync("remove an API key", cmd => { AddParam(cmd, "id", keyId); return "DELETE FROM api_keys WHERE key_id = @id"; }, ct).ConfigureAwait(false) > 0;
    }

    public Task<DeviceBindingCheck> CheckDeviceBindingAsync(string vendor, string serial, string ekFingerprint, CancellationToken ct = default) =>
        Guard("check a device binding", async () =>
        {
            await using var conn = await OpenAsync(ct).ConfigureAwait(false);
            return await CheckBindingAsync(conn, null, vendor, serial, ekFingerprint, ct).ConfigureAwait(false);
        });

    private static async Task<DeviceBindingCheck> CheckBindingAsync(DbConnection conn, DbTransaction? tx, string vendor, string serial, string ek, CancellationToken ct)
    {
        await using var cmd = conn.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = "SELECT vendor, serial, ek_fingerprint FROM device_bindings WHERE (vendor = @vendor AND serial = @serial) OR ek_fingerprint = @ek";
        AddParam(cmd, "vendor", vendor);
        AddParam(cmd, "serial", serial);
        AddParam(cmd, "ek", ek);
        DeviceBindingCheck? sameSerial = null, sameEk = null;
        await using (var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false))
        {
            while (await r.ReadAsync(ct).ConfigureAwait(false))
            {
                string v = r.GetString(0), s = r.GetString(1), e = r.GetString(2);
                if (v == vendor && s == serial)
                    sameSerial = e == ek ? new(DeviceBindingState.SameDevice, v, s, e) : new(DeviceBindingState.SerialBoundToOtherEk, v, s, e);
                else
                    sameEk = new(DeviceBindingState.EkBoundToOtherDevice, v, s, e);
            }
        }
        if (sameSerial is { State: DeviceBindingState.SerialBoundToOtherEk }) return sameSerial;
        return sameEk ?? sameSerial ?? new DeviceBindingCheck(DeviceBindingState.Free);
    }

    public Task<(DeviceBindingCheck Binding, long Id)> AddManufacturingRecordAsync(ManufacturingRecord record, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(record);
        return Guard("add a manufacturing record", async () =>
        {
            await using var conn = await OpenAsync(ct).ConfigureAwait(false);
            await using var tx = await conn.BeginTransactionAsync(ct).ConfigureAwait(false);
            // Portable "insert unless bound": the primary key (vendor, serial) and the unique EK index decide races between
            // servers; whatever happened, the re-read below says whether this device now owns the binding.
            await using (var bind = conn.CreateCommand())
            {
                bind.Transaction = tx;
                bind.CommandText = "INSERT INTO device_bindings (vendor, serial, ek_fingerprint, bound_ms) VALUES (@vendor, @serial, @ek, @t) ON CONFLICT DO NOTHING";
                AddParam(bind, "vendor", record.Vendor);
                AddParam(bind, "serial", record.Serial);
                AddParam(bind, "ek", record.EkFingerprint);
                AddParam(bind, "t", record.Time.ToUnixTimeMilliseconds());
                int inserted = await bind.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
                var check = await CheckBindingAsync(conn, tx, record.Vendor, record.Serial, record.EkFingerprint, ct).ConfigureAwait(false);
                if (check.State is not DeviceBindingState.SameDevice)
                {
                    await tx.RollbackAsync(ct).ConfigureAwait(false);
                    return (check, 0L);
                }
                if (inserted == 1) check = new DeviceBindingCheck(DeviceBindingState.Free);

                await using var cmd = conn.CreateCommand();
                cmd.Transaction = tx;
                cmd.CommandText = "INSERT INTO manufacturing_records (time_ms, serial, vendor, device_name, device_version, ek_fingerprint, ak_name, ak_cert_serial, ak_cert, api_key_id) "
                    + "VALUES (@t, @serial, @vendor, @name, @version, @ek, @ak, @certserial, @cert, @key)" + Dialect.ReturningId;
                AddParam(cmd, "t", record.Time.ToUnixTimeMilliseconds());
                AddParam(cmd, "serial", record.Serial);
                AddParam(cmd, "vendor", record.Vendor);
                AddParam(cmd, "name", record.DeviceName);
                AddParam(cmd, "version", record.DeviceVersion);
                AddParam(cmd, "ek", record.EkFingerprint);
                AddParam(cmd, "ak", record.AkName);
                AddParam(cmd, "certserial", record.AkCertificateSerial);
                AddParam(cmd, "cert", record.AkCertificate);
                AddParam(cmd, "key", record.ApiKeyId);
                long id = Convert.ToInt64(await cmd.ExecuteScalarAsync(ct).ConfigureAwait(false));
                await tx.CommitAsync(ct).ConfigureAwait(false);
                return (check, id);
            }
        });
    }

    public Task<IReadOnlyList<ManufacturingRecord>> QueryManufacturingRecordsAsync(ManufacturingRecordQuery query, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        return Guard<IReadOnlyList<ManufacturingRecord>>("query manufacturing records", async () =>
            await QueryAsync(cmd =>
                $"SELECT {RecordColumns} FROM manufacturing_records" + Where(cmd,
                    ("serial = @serial", "serial", query.Serial),
                    ("vendor = @vendor", "vendor", query.Vendor),
                    ("ek_fingerprint = @ek", "ek", query.EkFingerprint?.ToUpperInvariant()),
                    ("api_key_id = @key", "key", query.ApiKeyId),
                    ("time_ms >= @since", "since", query.Since?.ToUnixTimeMilliseconds()),
                    ("time_ms <= @until", "until", query.Until?.ToUnixTimeMilliseconds()))
                + Newest(cmd, query.Limit),
                ReadManufacturingRow, ct).ConfigureAwait(false));
    }

    public Task<long> CountManufacturingRecordsAsync(CancellationToken ct = default) =>
        Guard("count manufacturing records", async () =>
        {
            await using var conn = await OpenAsync(ct).ConfigureAwait(false);
            await using var cmd = conn.CreateCommand();
            cmd.CommandText = "SELECT COUNT(*) FROM manufacturing_records";
            return Convert.ToInt64(await cmd.ExecuteScalarAsync(ct).ConfigureAwait(false));
        });
}
