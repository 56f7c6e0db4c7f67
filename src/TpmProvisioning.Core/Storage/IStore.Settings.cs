namespace TpmProvisioning.Storage;

/// <summary>A setting persisted by <c>/options/set</c> or <c>Set-ProvisioningOption</c>, in the catalogue's text form.</summary>
public sealed record StoredSetting(string Name, string Value, DateTimeOffset Updated, string? UpdatedBy);

/// <summary>Persisted settings (migration 8): read at server start, written by the options surface.</summary>
public partial interface IStore
{
    /// <summary>Every persisted setting, by name.</summary>
    Task<IReadOnlyList<StoredSetting>> GetSettingsAsync(CancellationToken ct = default);

    /// <summary>
    /// Writes the given settings in one transaction: all or none. A null value removes the setting (its default applies again).
    /// </summary>
    Task SetSettingsAsync(IReadOnlyList<KeyValuePair<string, string?>> changes, string actor, CancellationToken ct = default);
}
