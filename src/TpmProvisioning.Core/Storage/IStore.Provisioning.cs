namespace TpmProvisioning.Storage;

/// <summary>
/// A stored provisioning API key. Only a hash of the secret is kept; the secret itself is shown once, at creation.
/// </summary>
public sealed record ApiKeyRecord
{
    /// <summary>The public identifier (the lookup part of the key, also the audit actor).</summary>
    public required string KeyId { get; init; }
    /// <summary>A label for people.</summary>
    public string Name { get; init; } = "";
    /// <summary>SHA-256 of the whole key string.</summary>
    public required byte[] SecretHash { get; init; }
    /// <summary>Vendors this key may provision for; <c>*</c> means any.</summary>
    public IReadOnlyList<string> Vendors { get; init; } = ["*"];
    /// <summary>Requests per minute; 0 means unlimited.</summary>
    public int RatePerMinute { get; init; }
    public bool Enabled { get; init; } = true;
    public DateTimeOffset Created { get; init; } = DateTimeOffset.UtcNow;
}

/// <summary>A change to an API key; null members stay as they are.</summary>
public sealed record ApiKeyUpdate
{
    public required string KeyId { get; init; }
    public bool? Enabled { get; init; }
    public IReadOnlyList<string>? Vendors { get; init; }
    public int? RatePerMinute { get; init; }
    public string? Name { get; init; }
}

/// <summary>
/// One successful provisioning: the device, the EK it was provisioned with, and the AK certificate issued. A device
/// (vendor + serial) provisioned again with the same EK gets a further record.
/// </summary>
public sealed record ManufacturingRecord
{
    public long Id { get; init; }
    public DateTimeOffset Time { get; init; } = DateTimeOffset.UtcNow;
    public required string Serial { get; init; }
    public required string Vendor { get; init; }
    public required string DeviceName { get; init; }
    public required string DeviceVersion { get; init; }
    /// <summary>SHA-256 of the EK certificate's DER, upper-case hex.</summary>
    public required string EkFingerprint { get; init; }
    /// <summary>The AK's TPM Name, upper-case hex.</summary>
    public required string AkName { get; init; }
    /// <summary>The AK certificate's serial number, upper-case hex.</summary>
    public required string AkCertificateSerial { get; init; }
    /// <summary>The AK certificate, DER.</summary>
    public required byte[] AkCertificate { get; init; }
    /// <summary>The API key that requested it.</summary>
    public required string ApiKeyId { get; init; }
}

/// <summary>Filter for manufacturing records; null members do not filter.</summary>
public sealed record ManufacturingRecordQuery
{
    public string? Serial { get; init; }
    public string? Vendor { get; init; }
    public string? EkFingerprint { get; init; }
    public string? ApiKeyId { get; init; }
    public DateTimeOffset? Since { get; init; }
    public DateTimeOffset? Until { get; init; }
    /// <summary>Newest first, at most this many.</summary>
    public int Limit { get; init; } = 1000;
}

/// <summary>How a (vendor, serial, EK) triple stands against the existing device bindings.</summary>
public enum DeviceBindingState
{
    /// <summary>Neither the serial nor the EK is bound yet.</summary>
    Free,
    /// <summary>The serial is bound to this same EK: a re-provisioning of the same device.</summary>
    SameDevice,
    /// <summary>The serial is bound to another EK.</summary>
    SerialBoundToOtherEk,
    /// <summary>The EK is bound to another device.</summary>
    EkBoundToOtherDevice,
}

/// <summary>A binding check's answer, with the conflicting binding when there is one.</summary>
public sealed record DeviceBindingCheck(DeviceBindingState State, string? OtherVendor = null, string? OtherSerial = null, string? OtherEkFingerprint = null);

/// <summary>Provisioning members of the store: API keys, device bindings and manufacturing records.</summary>
public partial interface IStore
{
    /// <summary>Adds an API key; throws <see cref="InvalidOperationException"/> when the id exists.</summary>
    Task InsertApiKeyAsync(ApiKeyRecord key, CancellationToken ct = default);

    Task<ApiKeyRecord?> GetApiKeyAsync(string keyId, CancellationToken ct = default);

    /// <summary>All keys, oldest first.</summary>
    Task<IReadOnlyList<ApiKeyRecord>> ListApiKeysAsync(CancellationToken ct = default);

    /// <summary>Applies an update; false when the key does not exist.</summary>
    Task<bool> UpdateApiKeyAsync(ApiKeyUpdate update, CancellationToken ct = default);

    /// <summary>Removes a key; false when it does not exist. Records made with it keep its id.</summary>
    Task<bool> RemoveApiKeyAsync(string keyId, CancellationToken ct = default);

    /// <summary>Where a device and EK stand against the bindings, without changing anything.</summary>
    Task<DeviceBindingCheck> CheckDeviceBindingAsync(string vendor, string serial, string ekFingerprint, CancellationToken ct = default);

    /// <summary>
    /// Atomically binds the record's device to its EK (unless already bound to it) and appends the record. When the serial or
    /// the EK is bound elsewhere nothing is written and the conflicting binding is returned; on success the state is
    /// <see cref="DeviceBindingState.Free"/> (first provisioning) or <see cref="DeviceBindingState.SameDevice"/> and the new id is set.
    /// </summary>
    Task<(DeviceBindingCheck Binding, long Id)> AddManufacturingRecordAsync(ManufacturingRecord record, CancellationToken ct = default);

    Task<IReadOnlyList<ManufacturingRecord>> QueryManufacturingRecordsAsync(ManufacturingRecordQuery query, CancellationToken ct = default);

    Task<long> CountManufacturingRecordsAsync(CancellationToken ct = default);
}
