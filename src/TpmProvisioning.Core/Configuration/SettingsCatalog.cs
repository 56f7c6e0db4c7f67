using System.Globalization;
using TpmProvisioning.Hosting;

namespace TpmProvisioning.Configuration;

/// <summary>The kind of value a setting takes.</summary>
public enum SettingType
{
    /// <summary>A whole number within the setting's range.</summary>
    Integer,
    /// <summary>A number (decimals allowed) within the setting's range.</summary>
    Number,
    /// <summary><c>true</c> or <c>false</c>.</summary>
    Boolean,
    /// <summary>A duration given as a number of the setting's unit (seconds or days), within its range.</summary>
    Duration,
    /// <summary>Free text (no control characters).</summary>
    String,
    /// <summary>One of the setting's allowed values.</summary>
    Enum,
    /// <summary>An absolute http or https URL.</summary>
    Url,
    /// <summary>An absolute file-system path.</summary>
    Path,
    /// <summary>A comma-separated list.</summary>
    List,
    /// <summary>An object (certificate, HSM, runner) that only a start parameter can give.</summary>
    Object,
}

/// <summary>When a change of the setting takes effect.</summary>
public enum SettingApply
{
    /// <summary>At once on a running server: the next request, quote, hook or login uses it.</summary>
    Live,
    /// <summary>Persisted now, used from the next server start.</summary>
    Restart,
    /// <summary>Only a start parameter (or <c>ServerOptions</c>) sets it; the options surface shows it but refuses changes.</summary>
    StartOnly,
}

/// <summary>Why a value was refused: a stable code and a message naming the setting and its rule.</summary>
public sealed record SettingError(string Name, string Code, string Message, string? Received)
{
    /// <summary>The value does not parse, or is not one of the allowed values.</summary>
    public const string InvalidValue = "INVALID_VALUE";
    /// <summary>The value parses but lies outside the setting's range.</summary>
    public const string OutOfRange = "VALUE_OUT_OF_RANGE";
    /// <summary>No setting has that name.</summary>
    public const string UnknownField = "UNKNOWN_FIELD";
    /// <summary>The setting is set by start parameters only.</summary>
    public const string ReadOnlyField = "READ_ONLY_FIELD";
}

/// <summary>Thrown by the options operations with the first refused value; nothing was changed.</summary>
public sealed class SettingException(SettingError error) : Exception(error.Message)
{
    public SettingError Error { get; } = error;
}

/// <summary>
/// One setting of the product: its name on the options surface and in <c>docs/configuration.md</c>, its type, default, range or
/// allowed values, meaning, the role it belongs to, when a change applies, and the <c>Start-ProvisioningServer</c> parameters
/// that set it explicitly (which win over a persisted value).
/// </summary>
public sealed record SettingDefinition
{
    internal SettingDefinition(string name, string section, SettingType type, string description, SettingApply apply,
        Func<ServerOptions, object?> get, Action<ServerOptions, object?>? set)
    {
        Name = name; Section = section; Type = type; Description = description; Apply = apply; _get = get; _set = set;
    }

    private readonly Func<ServerOptions, object?> _get;
    private readonly Action<ServerOptions, object?>? _set;

    /// <summary>Upper-case name, e.g. <c>STATION_HOOK_TIMEOUT_SECONDS</c>.</summary>
    public string Name { get; }
    /// <summary>Server, Provisioning, Registrar, Agent, Verifier, Kms or Station.</summary>
    public string Section { get; }
    public SettingType Type { get; }
    public string Description { get; }
    public SettingApply Apply { get; }
    /// <summary>The role whose surface uses it; null for the server as a whole.</summary>
    public ServerRole? Role { get; init; }
    public double? Minimum { get; init; }
    public double? Maximum { get; init; }
    /// <summary>For <see cref="SettingType.Enum"/> (and lists of a closed set): the allowed values.</summary>
    public IReadOnlyList<string>? Allowed { get; init; }
    /// <summary>For <see cref="SettingType.Duration"/>: <c>seconds</c> or <c>days</c>.</summary>
    public string? Unit { get; init; }
    /// <summary>Whether an empty value (null) is allowed: the setting then takes its built-in behaviour (e.g. a path under the data path).</summary>
    public bool Nullable { get; init; }
    /// <summary>What an empty value means, for the documentation.</summary>
    public string? NullMeaning { get; init; }
    /// <summary>Start-ProvisioningServer parameters that set this setting explicitly.</summary>
    public IReadOnlyList<string> StartParameters { get; init; } = [];
    /// <summary>Checks beyond type and range (e.g. a SHA-256 in hex); returns the rule broken, or null.</summary>
    internal Func<object, string?>? Extra { get; init; }
    /// <summary>The rule in words, for error messages and the documentation.</summary>
    public string? RuleText { get; init; }

    /// <summary>True when the options surface may change it.</summary>
    public bool Settable => _set is not null && Apply != SettingApply.StartOnly;

    /// <summary>The current value in <paramref name="options"/> (normalised: numbers, booleans, text, lists).</summary>
    public object? GetValue(ServerOptions options) => _get(options);

    /// <summary>The built-in default (a fresh <see cref="ServerOptions"/>).</summary>
    public object? Default => Name == "SERVER_DATA_PATH" ? null : _get(new ServerOptions { DataPath = "." });

    /// <summary>Sets <paramref name="value"/> (already checked) in <paramref name="options"/>.</summary>
    public void SetValue(ServerOptions options, object? value)
    {
        if (_set is null) throw new InvalidOperationException($"{Name} is set by start parameters only.");
        _set(options, value);
    }

    /// <summary>The rule a value must follow, in words.</summary>
    public string Rule
    {
        get
        {
            if (RuleText is not null) return RuleText;
            string rule = Type switch
            {
                SettingType.Integer => $"must be a whole number{Range()}",
                SettingType.Number => $"must be a number{Range()}",
                SettingType.Duration => $"must be a number of {Unit ?? "seconds"}{Range()}",
                SettingType.Boolean => "must be true or false",
                SettingType.Enum => "must be one of " + string.Join(", ", Allowed ?? []),
                SettingType.Url => "must be an absolute http or https URL",
                SettingType.Path => "must be an absolute path",
                SettingType.List => Allowed is null ? "must be a comma-separated list" : "must be a comma-separated list of " + string.Join(", ", Allowed),
                SettingType.String => "must be text without control characters",
                _ => "is set by start parameters only",
            };
            return Nullable ? rule + " (or empty for " + (NullMeaning ?? "the built-in behaviour") + ")" : rule;
        }
    }

    private string Range() =>
        Minimum is { } min && Maximum is { } max ? $" from {Fmt(min)} to {Fmt(max)}" : Minimum is { } m ? $" of at least {Fmt(m)}" : Maximum is { } x ? $" of at most {Fmt(x)}" : "";

    private static string Fmt(double d) => d.ToString("0.###", CultureInfo.InvariantCulture);

    /// <summary>
    /// Checks <paramref name="raw"/> (text, a number, a boolean, a <see cref="TimeSpan"/>, a list, or null) and returns the
    /// normalised value, or the error naming this setting and its rule.
    /// </summary>
    public (object? Value, SettingError? Error) Check(object? raw)
    {
        SettingError Bad(string code, string? why = null) =>
            new(Name, code, $"{Name}: {why ?? Rule}", raw is null ? null : Clip(Convert.ToString(raw, CultureInfo.InvariantCulture) ?? ""));
        if (!Settable) return (null, Bad(SettingError.ReadOnlyField, "is set by start parameters only (Start-ProvisioningServer" + (StartParameters.Count > 0 ? " -" + string.Join(", -", StartParameters) : "") + ")"));
        if (raw is string { Length: 0 } || raw is null)
            return Nullable ? (null, null) : (null, Bad(SettingError.InvalidValue, Rule + "; it cannot be empty"));
        object? value;
        switch (Type)
        {
            case SettingType.Integer:
            {
                if (!TryNumber(raw, out var d) || d != Math.Floor(d) || double.IsInfinity(d)) return (null, Bad(SettingError.InvalidValue));
                if (Minimum is { } min && d < min || Maximum is { } max && d > max) return (null, Bad(SettingError.OutOfRange));
                value = (long)d;
                break;
            }
            case SettingType.Number:
            case SettingType.Duration:
            {
                if (raw is TimeSpan ts) raw = Unit == "days" ? ts.TotalDays : ts.TotalSeconds;
                if (!TryNumber(raw, out var d) || double.IsNaN(d) || double.IsInfinity(d)) return (null, Bad(SettingError.InvalidValue));
                if (Minimum is { } min && d < min || Maximum is { } max && d > max) return (null, Bad(SettingError.OutOfRange));
                value = d;
                break;
            }
            case SettingType.Boolean:
                if (raw is bool b) value = b;
                else if (raw is string s && bool.TryParse(s.Trim(), out var pb)) value = pb;
                else return (null, Bad(SettingError.InvalidValue));
                break;
            case SettingType.Enum:
            {
                var s = Convert.ToString(raw, CultureInfo.InvariantCulture)!.Trim();
                var match = Allowed!.FirstOrDefault(a => string.Equals(a, s, StringComparison.OrdinalIgnoreCase));
                if (match is null) return (null, Bad(SettingError.InvalidValue));
                value = match;
                break;
            }
            case SettingType.Url:
            {
                var s = Convert.ToString(raw, CultureInfo.InvariantCulture)!.Trim();
                if (!Uri.TryCreate(s, UriKind.Absolute, out var u) || u.Scheme is not ("http" or "https") || u.UserInfo.Length > 0 || s.Any(char.IsControl))
                    return (null, Bad(SettingError.InvalidValue, Rule + " without user information"));
                value = u.ToString();
                break;
            }
            case SettingType.Path:
            {
                var s = Convert.ToString(raw, CultureInfo.InvariantCulture)!;
                if (s.Any(char.IsControl) || !System.IO.Path.IsPathFullyQualified(s)) return (null, Bad(SettingError.InvalidValue));
                value = System.IO.Path.GetFullPath(s);
                break;
            }
            case SettingType.List:
            {
                IEnumerable<string> items = raw switch
                {
                    string s => s.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries),
                    System.Collections.IEnumerable e => e.Cast<object?>().Select(o => Convert.ToString(o, CultureInfo.InvariantCulture)?.Trim() ?? ""),
                    _ => [Convert.ToString(raw, CultureInfo.InvariantCulture)!],
                };
                var list = items.ToList();
                if (list.Any(i => i.Length == 0 || i.Length > 2048 || i.Any(char.IsControl) || i.Contains(','))) return (null, Bad(SettingError.InvalidValue));
                value = list;
                break;
            }
            case SettingType.String:
            {
                var s = Convert.ToString(raw, CultureInfo.InvariantCulture)!;
                if (s.Length > 4096 || s.Any(char.IsControl)) return (null, Bad(SettingError.InvalidValue));
                value = s;
                break;
            }
            default:
                return (null, Bad(SettingError.ReadOnlyField));
        }
        if (Extra?.Invoke(value!) is { } broken) return (null, Bad(SettingError.InvalidValue, broken));
        return (value, null);
    }

    private static bool TryNumber(object raw, out double d)
    {
        switch (raw)
        {
            case string s:
                return double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out d);
            case bool:
                d = 0;
                return false;
            case IConvertible c when raw is byte or sbyte or short or ushort or int or uint or long or ulong or float or double or decimal:
                d = c.ToDouble(CultureInfo.InvariantCulture);
                return true;
            default:
                d = 0;
                return false;
        }
    }

    private static string Clip(string s) => s.Length <= 64 ? s : s[..64] + "…";

    /// <summary>A value in the text form the store keeps and <c>/options/get</c> shows for lists.</summary>
    public static string? Format(object? value) => value switch
    {
        null => null,
        bool b => b ? "true" : "false",
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        IEnumerable<string> list => string.Join(",", list),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString(),
    };
}

/// <summary>A setting with its value on a given server (or data path): what <c>Get-ProvisioningOption</c> and the options page show.</summary>
public sealed record ProvisioningOption
{
    public required string Name { get; init; }
    public required string Section { get; init; }
    public object? Value { get; init; }
    public object? Default { get; init; }
    public required string Type { get; init; }
    /// <summary>The rule a value follows (type, range or allowed values).</summary>
    public required string Rule { get; init; }
    /// <summary><c>Live</c>, <c>Restart</c> or <c>StartOnly</c>.</summary>
    public required string Apply { get; init; }
    /// <summary><c>default</c>, <c>stored</c> (persisted by the options surface) or <c>start</c> (a start parameter).</summary>
    public required string Source { get; init; }
    public required string Description { get; init; }
    public bool Settable { get; init; }
    /// <summary>A stored value that differs from the running one and waits for the next start (settings applied at restart).</summary>
    public object? Pending { get; init; }
}

/// <summary>One changed setting, as <c>/options/set</c> and <c>Set-ProvisioningOption</c> report it.</summary>
public sealed record ProvisioningOptionChange
{
    public required string Name { get; init; }
    public object? OldValue { get; init; }
    public object? NewValue { get; init; }
    /// <summary><c>Live</c> when the running server uses it now, <c>Restart</c> when it applies from the next start.</summary>
    public required string Applied { get; init; }
    public bool RestartRequired => Applied != "Live";
}

/// <summary>The verdict on one value (<c>/options/validate</c>, <c>Test-ProvisioningOption</c>).</summary>
public sealed record ProvisioningOptionTest
{
    public required string Name { get; init; }
    public object? Value { get; init; }
    public bool Valid { get; init; }
    /// <summary>The error code when not valid (<c>INVALID_VALUE</c>, <c>VALUE_OUT_OF_RANGE</c>, <c>UNKNOWN_FIELD</c>, <c>READ_ONLY_FIELD</c>).</summary>
    public string? Code { get; init; }
    public string? Message { get; init; }
    public bool RestartRequired { get; init; }
}
