using TpmProvisioning.Station;

namespace TpmProvisioning.Storage;

/// <summary>Filter for station devices; null members do not filter.</summary>
public sealed record StationDeviceQuery
{
    public string? State { get; init; }
    public string? Serial { get; init; }
    /// <summary>Newest first, at most this many.</summary>
    public int Limit { get; init; } = 10_000;
}

/// <summary>Station members of the store (spec 003): device history and logs (append-only), operator tokens, record facts.</summary>
public partial interface IStore
{
    /// <summary>Appends one transition; returns its id (ids grow with time).</summary>
    Task<long> AppendDeviceStateAsync(DeviceStateChange change, CancellationToken ct = default);

    /// <summary>Every transition of the device with this serial, oldest first.</summary>
    Task<IReadOnlyList<DeviceStateChange>> GetDeviceHistoryAsync(string serial, CancellationToken ct = default);

    /// <summary>One entry per device (vendor, serial) with its latest transition, newest first.</summary>
    Task<IReadOnlyList<StationDevice>> ListStationDevicesAsync(StationDeviceQuery query, CancellationToken ct = default);

    Task<long> AppendDeviceLogAsync(DeviceLogLine line, CancellationToken ct = default);

    /// <summary>The lines of one log of the device with this serial, oldest first.</summary>
    Task<IReadOnlyList<DeviceLogLine>> GetDeviceLogAsync(string serial, DeviceLogType log, CancellationToken ct = default);

    Task InsertStationTokenAsync(StationTokenRecord token, CancellationToken ct = default);
    Task<StationTokenRecord?> GetStationTokenAsync(string tokenId, CancellationToken ct = default);
    Task<IReadOnlyList<StationTokenRecord>> ListStationTokensAsync(CancellationToken ct = default);
    Task<bool> RemoveStationTokenAsync(string tokenId, CancellationToken ct = default);

    /// <summary>Adds or replaces the station facts of a manufacturing record.</summary>
    Task UpsertStationRecordInfoAsync(StationRecordInfo info, CancellationToken ct = default);
    Task<IReadOnlyDictionary<long, StationRecordInfo>> GetStationRecordInfosAsync(IReadOnlyCollection<long> recordIds, CancellationToken ct = default);

    /// <summary>Manufacturing records newest first (time, then id), skipping <paramref name="offset"/>; <paramref name="limit"/> null means all.</summary>
    Task<IReadOnlyList<ManufacturingRecord>> PageManufacturingRecordsAsync(long offset, long? limit, CancellationToken ct = default);
}
