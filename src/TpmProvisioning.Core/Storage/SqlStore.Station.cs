using System.Data.Common;
using TpmProvisioning.Station;

namespace TpmProvisioning.Storage;

/// <summary>Station members over portable SQL (tables from migration 7).</summary>
public abstract partial class SqlStore
{
    private const string StateColumns = "id, time_ms, serial, vendor, state, address, detail, device_name";

    public async Task<long> AppendDeviceStateAsync(DeviceStateChange change, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(change);
        return await Guard("append a device state", async () =>
        {
            await using var conn = await OpenAsync(ct).ConfigureAwait(false);
            await using var cmd = conn.CreateCommand();
            cmd.CommandText = $"INSERT INTO station_device_states (time_ms, serial, vendor, state, address, detail, device_name) VALUES (@t, @serial, @vendor, @state, @address, @detail, @name)" + Dialect.ReturningId;
            AddParam(cmd, "t", change.Time.ToUnixTimeMilliseconds());
            AddParam(cmd, "serial", Limit(change.Serial, 1024));
            AddParam(cmd, "vendor", Limit(change.Vendor, 1024));
            AddParam(cmd, "state", Limit(change.State, 64));
            AddParam(cmd, "address", Limit(change.Address, 128));
            AddParam(cmd, "detail", Limit(change.Detail is null ? null : SecretRedactor.Redact(change.Detail), 4096));
            AddParam(cmd, "name", Limit(change.DeviceName, 1024));
            return Convert.ToInt64(await cmd.ExecuteScalarAsync(ct).ConfigureAwait(false));
        }).ConfigureAwait(false);
    }

    private static DeviceStateChange ReadState(DbDataReader r) => new()
    {
        Id = r.GetInt64(0),
        Time = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(1)),
        Serial = r.GetString(2),
        Vendor = r.GetString(3),
        State = r.GetString(4),
        Address = r.IsDBNull(5) ? null : r.GetString(5),
        Detail = r.IsDBNull(6) ? null : r.GetString(6),
        DeviceName = r.IsDBNull(7) ? null : r.GetString(7),
    };

    public Task<IReadOnlyList<DeviceStateChange>> GetDeviceHistoryAsync(string serial, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(serial);
        return AllAsync("read a device history",
            cmd => { AddParam(cmd, "serial", serial); return $"SELECT {StateColumns} FROM station_device_states WHERE serial = @serial ORDER BY id"; },
            ReadState, ct);
    }

    public async Task<IReadOnlyList<StationDevice>> ListStationDevicesAsync(StationDeviceQuery query, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        // The latest row per device, then the first time it was seen: two portable queries, joined here.
        var latest = await AllAsync("list station devices", cmd =>
        {
            string sql = $"SELECT {StateColumns} FROM station_device_states WHERE id IN (SELECT MAX(id) FROM station_device_states GROUP BY vendor, serial)";
            if (query.State is not null) { sql += " AND state = @state"; AddParam(cmd, "state", query.State); }
            if (query.Serial is not null) { sql += " AND serial = @serial"; AddParam(cmd, "serial", query.Serial); }
            return sql + " ORDER BY id DESC";
        }, ReadState, ct).ConfigureAwait(false);
        var first = await AllAsync("list station devices", _ =>
            "SELECT vendor, serial, MIN(time_ms), MAX(device_name) FROM station_device_states GROUP BY vendor, serial",
            r => (Key: (r.GetString(0), r.GetString(1)), First: r.GetInt64(2), Name: r.IsDBNull(3) ? null : r.GetString(3)), ct).ConfigureAwait(false);
        var firstBy = first.ToDictionary(f => f.Key, f => (f.First, f.Name));
        return latest.Take(Math.Max(0, query.Limit)).Select(s => new StationDevice
        {
            Serial = s.Serial,
            Vendor = s.Vendor,
            Name = s.DeviceName ?? (firstBy.TryGetValue((s.Vendor, s.Serial), out var f1) ? f1.Name : null),
            State = s.State,
            Address = s.Address,
            FirstSeen = firstBy.TryGetValue((s.Vendor, s.Serial), out var f) ? DateTimeOffset.FromUnixTimeMilliseconds(f.First) : s.Time,
            LastSeen = s.Time,
            LastChangeId = s.Id,
        }).ToList();
    }

    public async Task<long> AppendDeviceLogAsync(DeviceLogLine line, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(line);
        return await Guard("append a device log line", async () =>
        {
            await using var conn = await OpenAsync(ct).ConfigureAwait(false);
            await using var cmd = conn.CreateCommand();
            cmd.CommandText = "INSERT INTO station_device_logs (time_ms, serial, vendor, log_type, line) VALUES (@t, @serial, @vendor, @log, @line)" + Dialect.ReturningId;
            AddParam(cmd, "t", line.Time.ToUnixTimeMilliseconds());
            AddParam(cmd, "serial", Limit(line.Serial, 1024));
            AddParam(cmd, "vendor", Limit(line.Vendor, 1024));
            AddParam(cmd, "log", line.Log.ToString().ToLowerInvariant());
            AddParam(cmd, "line", Limit(SecretRedactor.Redact(line.Line), 16 * 1024));
            return Convert.ToInt64(await cmd.ExecuteScalarAsync(ct).ConfigureAwait(false));
        }).ConfigureAwait(false);
    }

    public Task<IReadOnlyList<DeviceLogLine>> GetDeviceLogAsync(string serial, DeviceLogType log, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(serial);
        return AllAsync("read a device log", cmd =>
        {
            AddParam(cmd, "serial", serial);
            AddParam(cmd, "log", log.ToString().ToLowerInvariant());
            return "SELECT id, time_ms, serial, vendor, line FROM station_device_logs WHERE serial = @serial AND log_type = @log ORDER BY id";
        }, r => new DeviceLogLine
        {
            Id = r.GetInt64(0),
            Time = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(1)),
            Serial = r.GetString(2),
            Vendor = r.GetString(3),
            Log = log,
            Line = r.GetString(4),
        }, ct);
    }

    public async Task InsertStationTokenAsync(StationTokenRecord token, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(token);
        await ExecuteAsync("add a station token", cmd =>
        {
            AddParam(cmd, "id", token.TokenId);
            AddParam(cmd, "name", token.Name);
            AddParam(cmd, "hash", token.SecretHash);
            AddParam(cmd, "t", token.Created.ToUnixTimeMilliseconds());
            return "INSERT INTO station_tokens (token_id, name, secret_hash, created_ms) VALUES (@id, @name, @hash, @t)";
        }, ct).ConfigureAwait(false);
    }

    private static StationTokenRecord ReadToken(DbDataReader r) => new()
    {
        TokenId = r.GetString(0),
        Name = r.GetString(1),
        SecretHash = r.GetFieldValue<byte[]>(2),
        Created = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(3)),
    };

    public Task<StationTokenRecord?> GetStationTokenAsync(string tokenId, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(tokenId);
        return FirstAsync("read a station token", cmd => { AddParam(cmd, "id", tokenId); return "SELECT token_id, name, secret_hash, created_ms FROM station_tokens WHERE token_id = @id"; }, ReadToken, ct);
    }

    public Task<IReadOnlyList<StationTokenRecord>> ListStationTokensAsync(CancellationToken ct = default) =>
        AllAsync("list station tokens", _ => "SELECT token_id, name, secret_hash, created_ms FROM station_tokens ORDER BY created_ms, token_id", ReadToken, ct);

    public async Task<bool> RemoveStationTokenAsync(string tokenId, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(tokenId);
        return await ExecuteAsync("remove a station token", cmd => { AddParam(cmd, "id", tokenId); return "DELETE FROM station_tokens WHERE token_id = @id"; }, ct).ConfigureAwait(false) > 0;
    }

    public async Task UpsertStationRecordInfoAsync(StationRecordInfo info, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(info);
        await Guard("write station record facts", async () =>
        {
            await using var conn = await OpenAsync(ct).ConfigureAwait(false);
            await using var tx = await conn.BeginTransactionAsync(ct).ConfigureAwait(false);
            await using (var del = conn.CreateCommand())
            {
                del.Transaction = tx;
                del.CommandText = "DELETE FROM station_records WHERE record_id = @id";
                AddParam(del, "id", info.RecordId);
                await del.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
            }
            await using (var cmd = conn.CreateCommand())
            {
                cmd.Transaction = tx;
                cmd.CommandText = "INSERT INTO station_records (record_id, ek_issuer, ca_key_label, ca_fingerprint, image_name, image_sha256) VALUES (@id, @issuer, @label, @fp, @image, @sha)";
                AddParam(cmd, "id", info.RecordId);
                AddParam(cmd, "issuer", info.EkIssuer);
                AddParam(cmd, "label", info.CaKeyLabel);
                AddParam(cmd, "fp", info.CaFingerprint);
                AddParam(cmd, "image", info.ImageName);
                AddParam(cmd, "sha", info.ImageSha256);
                await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
            }
            await tx.CommitAsync(ct).ConfigureAwait(false);
            return 0;
        }).ConfigureAwait(false);
    }

    public async Task<IReadOnlyDictionary<long, StationRecordInfo>> GetStationRecordInfosAsync(IReadOnlyCollection<long> recordIds, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(recordIds);
        var result = new Dictionary<long, StationRecordInfo>();
        foreach (var chunk in recordIds.Distinct().Chunk(200))
        {
            var rows = await AllAsync("read station record facts", cmd =>
            {
                var names = new List<string>();
                for (int i = 0; i < chunk.Length; i++) { AddParam(cmd, "r" + i, chunk[i]); names.Add("@r" + i); }
                return $"SELECT record_id, ek_issuer, ca_key_label, ca_fingerprint, image_name, image_sha256 FROM station_records WHERE record_id IN ({string.Join(", ", names)})";
            }, r => new StationRecordInfo
            {
                RecordId = r.GetInt64(0),
                EkIssuer = r.IsDBNull(1) ? null : r.GetString(1),
                CaKeyLabel = r.IsDBNull(2) ? null : r.GetString(2),
                CaFingerprint = r.IsDBNull(3) ? null : r.GetString(3),
                ImageName = r.IsDBNull(4) ? null : r.GetString(4),
                ImageSha256 = r.IsDBNull(5) ? null : r.GetString(5),
            }, ct).ConfigureAwait(false);
            foreach (var row in rows) result[row.RecordId] = row;
        }
        return result;
    }

    public Task<IReadOnlyList<ManufacturingRecord>> PageManufacturingRecordsAsync(long offset, long? limit, CancellationToken ct = default)
    {
        if (offset < 0) throw new ArgumentOutOfRangeException(nameof(offset));
        if (limit is < 0) throw new ArgumentOutOfRangeException(nameof(limit));
        return AllAsync("page manufacturing records", cmd =>
        {
            AddParam(cmd, "offset", offset);
            // LIMIT with OFFSET is portable when both are given; "all" is the largest 64-bit value.
            AddParam(cmd, "limit", limit ?? long.MaxValue);
            return $"SELECT {RecordColumns} FROM manufacturing_records ORDER BY time_ms DESC, id DESC LIMIT @limit OFFSET @offset";
        }, ReadManufacturingRow, ct);
    }

    private static ManufacturingRecord ReadManufacturingRow(DbDataReader r) => new()
    {
        Id = r.GetInt64(0),
        Time = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(1)),
        Serial = r.GetString(2),
        Vendor = r.GetString(3),
        DeviceName = r.GetString(4),
        DeviceVersion = r.GetString(5),
        EkFingerprint = r.GetString(6),
        AkName = r.GetString(7),
        AkCertificateSerial = r.GetString(8),
        AkCertificate = r.GetFieldValue<byte[]>(9),
        ApiKeyId = r.GetString(10),
    };
}
