using TpmProvisioning.Hosting;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Configuration;

/// <summary>
/// The settings of a data path without a running server (the cmdlets' <c>-DataPath</c>): the values the next server start will
/// use, and changes stored for it. The same checks, all-or-nothing writes and audit entries as <c>/options/set</c>.
/// </summary>
public static class StoredOptions
{
    /// <summary>The options a server on <paramref name="dataPath"/> would start with (defaults, then stored values).</summary>
    public static async Task<(ServerOptions Options, IReadOnlyList<StoredSetting> Stored)> LoadAsync(IStore store, string dataPath, CancellationToken ct = default)
    {
        var stored = await store.GetSettingsAsync(ct).ConfigureAwait(false);
        var options = new ServerOptions { DataPath = dataPath };
        SettingsCatalog.ApplyPersisted(options, stored);
        return (options, stored);
    }

    /// <summary>Every setting with the value the next start will use.</summary>
    public static async Task<IReadOnlyList<ProvisioningOption>> DescribeAsync(IStore store, string dataPath, CancellationToken ct = default)
    {
        var (options, stored) = await LoadAsync(store, dataPath, ct).ConfigureAwait(false);
        return SettingsCatalog.Describe(options, stored);
    }

    /// <summary>
    /// Checks every value (a refusal throws <see cref="SettingException"/> and nothing is stored), stores them in one transaction
    /// and audits each change. They apply from the next server start on this data path.
    /// </summary>
    public static async Task<IReadOnlyList<ProvisioningOptionChange>> SetAsync(IStore store, string dataPath, IReadOnlyList<KeyValuePair<string, object?>> values,
        string actor, CancellationToken ct = default)
    {
        var changes = SettingsCatalog.CheckAll(values);
        var (options, _) = await LoadAsync(store, dataPath, ct).ConfigureAwait(false);
        await store.SetSettingsAsync(changes.Select(c => new KeyValuePair<string, string?>(c.Setting.Name, SettingDefinition.Format(c.Value))).ToList(), actor, ct).ConfigureAwait(false);
        var result = new List<ProvisioningOptionChange>();
        foreach (var (d, value) in changes)
        {
            var old = d.GetValue(options);
            await store.AppendAuditAsync(new AuditEntry
            {
                Actor = actor, Action = "station.options.changed", Target = d.Name, Source = "local", Outcome = AuditOutcome.Success,
                Detail = $"{SettingDefinition.Format(old) ?? "(empty)"} -> {SettingDefinition.Format(value) ?? "(default)"}; applies from the next start",
            }, ct).ConfigureAwait(false);
            result.Add(new ProvisioningOptionChange { Name = d.Name, OldValue = old, NewValue = value ?? d.Default, Applied = "Restart" });
        }
        return result;
    }
}
