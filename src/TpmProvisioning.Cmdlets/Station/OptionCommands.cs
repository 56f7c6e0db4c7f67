using System.Collections;
using System.Management.Automation;
using System.Management.Automation.Language;
using TpmProvisioning.Configuration;
using TpmProvisioning.Station;

namespace TpmProvisioning.Cmdlets.Station;

/// <summary>Completes setting names from the catalogue (docs/configuration.md).</summary>
public sealed class ProvisioningOptionNameCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        bool settableOnly = commandName.StartsWith("Set-", StringComparison.OrdinalIgnoreCase) || commandName.StartsWith("Test-", StringComparison.OrdinalIgnoreCase);
        return SettingsCatalog.Complete(wordToComplete.Trim('\'', '"'))
            .Where(d => !settableOnly || d.Settable)
            .Select(d => new CompletionResult(d.Name, d.Name, CompletionResultType.ParameterValue, $"{d.Name} ({d.Type}, {d.Apply}): {d.Description} Rule: {d.Rule}"));
    }
}

/// <summary>Shared by the option cmdlets: values from PowerShell as the catalogue takes them.</summary>
internal static class OptionValues
{
    /// <summary>Unwraps PSObjects; a TimeSpan for a duration becomes its number of the setting's unit; arrays become string lists.</summary>
    public static object? From(string name, object? value)
    {
        value = value is PSObject p ? p.BaseObject : value;
        var d = SettingsCatalog.Find(name);
        return value switch
        {
            TimeSpan t when d?.Type == SettingType.Duration => d.Unit == "days" ? t.TotalDays : t.TotalSeconds,
            string or null => value,
            IEnumerable e => e.Cast<object?>().Select(o => Convert.ToString(o is PSObject po ? po.BaseObject : o, System.Globalization.CultureInfo.InvariantCulture) ?? "").ToList(),
            _ => value,
        };
    }

    public static ErrorCategory Category(string code) => code switch
    {
        SettingError.UnknownField => ErrorCategory.ObjectNotFound,
        SettingError.ReadOnlyField => ErrorCategory.PermissionDenied,
        _ => ErrorCategory.InvalidArgument,
    };
}

/// <summary>Lists the product's settings with their values, defaults, rules and how a change applies.</summary>
[Cmdlet(VerbsCommon.Get, "ProvisioningOption", DefaultParameterSetName = "DataPath")]
[OutputType(typeof(ProvisioningOption))]
public sealed class GetProvisioningOptionCommand : StationCmdletBase
{
    /// <summary>Setting names; wildcards allowed. Default: every setting.</summary>
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(ProvisioningOptionNameCompleter))]
    [SupportsWildcards]
    public string[]? Name { get; set; }

    /// <summary>Only the settings of this section (Server, Provisioning, Registrar, Agent, Verifier, Kms, Station).</summary>
    [Parameter]
    [ValidateSet("Server", "Provisioning", "Registrar", "Agent", "Verifier", "Kms", "Station")]
    public string? Section { get; set; }

    protected override void ProcessRecord()
    {
        if (!TryRun((store, _) => StoredOptions.DescribeAsync(store, ResolvedDataPath), c => c.GetOptionsAsync(), null, out var all)) return;
        var patterns = (Name ?? ["*"]).Select(n => WildcardPattern.Get(n, WildcardOptions.IgnoreCase)).ToList();
        foreach (var n in Name ?? [])
            if (!WildcardPattern.ContainsWildcardCharacters(n) && SettingsCatalog.Find(n) is null)
                WriteError(new ErrorRecord(new ItemNotFoundException($"'{n}' is not a setting; see Get-ProvisioningOption or docs/configuration.md."), SettingError.UnknownField, ErrorCategory.ObjectNotFound, n));
        WriteObject(all.Where(o => patterns.Any(p => p.IsMatch(o.Name)) && (Section is null || string.Equals(o.Section, Section, StringComparison.OrdinalIgnoreCase))), enumerateCollection: true);
    }
}

/// <summary>Changes settings: stored, audited, and applied at once on a running station where the setting allows it.</summary>
[Cmdlet(VerbsCommon.Set, "ProvisioningOption", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, DefaultParameterSetName = "DataPath")]
[OutputType(typeof(ProvisioningOptionChange))]
public sealed class SetProvisioningOptionCommand : StationCmdletBase
{
    /// <summary>The setting to change.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(ProvisioningOptionNameCompleter))]
    public string Name { get; set; } = "";

    /// <summary>The new value; $null or '' resets a setting that allows it to its built-in behaviour.</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [AllowNull, AllowEmptyString]
    public object? Value { get; set; }

    protected override void ProcessRecord()
    {
        var value = OptionValues.From(Name, Value);
        // Checked here first, so -WhatIf and a local data path say the same as the server would.
        var (_, error) = SettingsCatalog.Find(Name) is { } d ? d.Check(value) : (null, new SettingError(Name, SettingError.UnknownField, $"{Name}: not a setting; see Get-ProvisioningOption or docs/configuration.md", null));
        if (error is not null)
        {
            WriteError(new ErrorRecord(new ArgumentException(error.Message), error.Code, OptionValues.Category(error.Code), Name));
            return;
        }
        string target = Remote ? $"{Name} on {Server}" : $"{Name} in {ResolvedDataPath}";
        if (!ShouldProcess(target, $"Set to '{SettingDefinition.Format(value) ?? "(default)"}'")) return;
        try
        {
            if (TryRun((store, _) => StoredOptions.SetAsync(store, ResolvedDataPath, [new(Name, value)], Actor),
                    c => c.SetOptionsAsync([new(Name, value)]), Name, out var changes))
                WriteObject(changes, enumerateCollection: true);
        }
        catch (SettingException ex)
        {
            WriteError(new ErrorRecord(new ArgumentException(ex.Error.Message), ex.Error.Code, OptionValues.Category(ex.Error.Code), Name));
        }
    }
}

/// <summary>Checks a value for a setting without changing anything.</summary>
[Cmdlet(VerbsDiagnostic.Test, "ProvisioningOption", DefaultParameterSetName = "DataPath")]
[OutputType(typeof(ProvisioningOptionTest))]
public sealed class TestProvisioningOptionCommand : StationCmdletBase
{
    /// <summary>The setting.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(ProvisioningOptionNameCompleter))]
    public string Name { get; set; } = "";

    /// <summary>The value to check.</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [AllowNull, AllowEmptyString]
    public object? Value { get; set; }

    protected override void ProcessRecord()
    {
        var value = OptionValues.From(Name, Value);
        if (Remote)
        {
            if (TryRun((_, _) => Task.FromResult<ProvisioningOptionTest>(null!), c => c.TestOptionAsync(Name, value), Name, out var r)) WriteObject(r);
            return;
        }
        var d = SettingsCatalog.Find(Name);
        if (d is null)
        {
            WriteObject(new ProvisioningOptionTest { Name = Name, Value = value, Valid = false, Code = SettingError.UnknownField, Message = $"{Name}: not a setting; see Get-ProvisioningOption or docs/configuration.md" });
            return;
        }
        var (v, error) = d.Check(value);
        WriteObject(new ProvisioningOptionTest
        {
            Name = d.Name, Value = error is null ? v : value, Valid = error is null, Code = error?.Code,
            Message = error?.Message ?? (d.Apply == SettingApply.Live ? "applies at once on a running station" : "applies from the next start"),
            RestartRequired = error is null && d.Apply != SettingApply.Live,
        });
    }
}

/// <summary>Lists the firmware catalogue: releases per device family with version, date, SHA-256 and notes.</summary>
[Cmdlet(VerbsCommon.Get, "ProvisioningFirmware", DefaultParameterSetName = "DataPath")]
[OutputType(typeof(ProvisioningFirmware), typeof(ProvisioningFirmwareNotes))]
public sealed class GetProvisioningFirmwareCommand : StationCmdletBase
{
    /// <summary>Only this device family.</summary>
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    public string? Family { get; set; }

    /// <summary>Only this release (an unknown version is the FIRMWARE_NOT_FOUND error).</summary>
    [Parameter(Position = 1, ValueFromPipelineByPropertyName = true)]
    public string? Version { get; set; }

    /// <summary>Return the release notes of -Version instead of the release.</summary>
    [Parameter]
    public SwitchParameter Notes { get; set; }

    protected override void ProcessRecord()
    {
        if (Notes && Version is null)
        {
            WriteError(new ErrorRecord(new ArgumentException("-Notes needs -Version."), "MISSING_PARAMETER", ErrorCategory.InvalidArgument, null));
            return;
        }
        async Task<StationFirmware> LocalCatalogue(TpmProvisioning.Storage.IStore store)
        {
            var (options, _) = await StoredOptions.LoadAsync(store, ResolvedDataPath);
            return new StationFirmware(options.Station.FirmwareDirectory ?? StationFirmware.DefaultDirectory(ResolvedDataPath));
        }
        if (Notes)
        {
            if (TryRun(async (store, _) => (await LocalCatalogue(store)).Notes(Family, Version), c => c.GetFirmwareNotesAsync(Family, Version!), Version, out var n)) WriteObject(n);
            return;
        }
        if (!TryRun(async (store, _) => (await LocalCatalogue(store)).List(Family, await StationFirmware.SelectedAsync(store)), c => c.GetFirmwareAsync(Family), Family, out var list)) return;
        if (Version is null)
        {
            WriteObject(list, enumerateCollection: true);
            return;
        }
        var match = list.Where(r => r.Version == Version).ToList();
        if (match.Count == 0)
            WriteError(new ErrorRecord(new ItemNotFoundException($"No firmware release has version {Version}{(Family is null ? "" : " in device family " + Family)}."), "FIRMWARE_NOT_FOUND", ErrorCategory.ObjectNotFound, Version));
        WriteObject(match, enumerateCollection: true);
    }
}

/// <summary>Empties the station's work folder (temporary files only; never images, the store or keys).</summary>
[Cmdlet(VerbsCommon.Clear, "ProvisioningWorkDirectory", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High, DefaultParameterSetName = "DataPath")]
[OutputType(typeof(StationWorkDirectory.ClearResult))]
public sealed class ClearProvisioningWorkDirectoryCommand : StationCmdletBase
{
    protected override void ProcessRecord()
    {
        string target = Remote ? $"work folder of {Server}" : StationWorkDirectory.Path(ResolvedDataPath);
        if (!ShouldProcess(target, "Delete every file and folder inside")) return;
        if (TryRun(async (store, _) =>
            {
                var r = StationWorkDirectory.Clear(ResolvedDataPath);
                await store.AppendAuditAsync(new TpmProvisioning.Storage.AuditEntry
                {
                    Actor = Actor, Action = "station.workdir.cleared", Target = "station/work", Source = "local", Outcome = TpmProvisioning.Storage.AuditOutcome.Success,
                    Detail = $"{r.Files} file(s), {r.Folders} folder(s), {r.Bytes} byte(s) removed",
                });
                return r;
            }, c => c.ClearWorkDirectoryAsync(), target, out var result))
            WriteObject(result);
    }
}

/// <summary>Selects a firmware release for its device family (stored and audited).</summary>
[Cmdlet(VerbsCommon.Set, "ProvisioningFirmware", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, DefaultParameterSetName = "DataPath")]
[OutputType(typeof(ProvisioningFirmware))]
public sealed class SetProvisioningFirmwareCommand : StationCmdletBase
{
    /// <summary>The device family (may be left out when only one family has the version).</summary>
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    public string? Family { get; set; }

    /// <summary>The release to select.</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    public string Version { get; set; } = "";

    protected override void ProcessRecord()
    {
        string target = $"{(Family is null ? "" : Family + "/")}{Version}" + (Remote ? $" on {Server}" : $" in {ResolvedDataPath}");
        if (!ShouldProcess(target, "Select firmware release")) return;
        if (TryRun(async (store, _) =>
            {
                var (options, _) = await StoredOptions.LoadAsync(store, ResolvedDataPath);
                var catalogue = new StationFirmware(options.Station.FirmwareDirectory ?? StationFirmware.DefaultDirectory(ResolvedDataPath));
                var r = await catalogue.SelectAsync(store, Family, Version, Actor);
                await store.AppendAuditAsync(new TpmProvisioning.Storage.AuditEntry
                {
                    Actor = Actor, Action = "station.firmware.selected", Target = $"{r.Family}/{r.Version}", Source = "local", Outcome = TpmProvisioning.Storage.AuditOutcome.Success,
                    Detail = $"{r.FileName} sha256={r.Sha256}",
                });
                return r;
            }, c => c.SelectFirmwareAsync(Family, Version), Version, out var selected))
            WriteObject(selected);
    }
}
