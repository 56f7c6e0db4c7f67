using System.Security.Cryptography;
using System.Text;

namespace TpmProvisioning.Station;

/// <summary>
/// The station's customisation scripts: PowerShell files <c>&lt;name&gt;.ps1</c> in one folder. A hook is named
/// <c>tpm-provisioner-&lt;stage&gt;</c>; it runs only when enabled (a marker file <c>&lt;name&gt;.ps1.enabled</c> beside it, the
/// original's executable bit). Names outside <c>[A-Za-z0-9_-]</c> are refused, never rewritten. New scripts start disabled.
/// </summary>
public sealed class StationScripts
{
    public const string Flow = "tpm-provisioner";
    public const string Extension = ".ps1";
    private const string EnabledSuffix = ".enabled";
    private readonly object _gate = new();

    public StationScripts(string directory, int maxBytes)
    {
        Directory = Path.GetFullPath(directory);
        MaxBytes = maxBytes;
        System.IO.Directory.CreateDirectory(Directory);
    }

    public string Directory { get; }
    /// <summary>Largest script accepted; a running server's options surface may change it.</summary>
    public int MaxBytes { get; set; }

    /// <summary>Hook names of the flow, in stage order.</summary>
    public static IReadOnlyList<string> HookNames { get; } = HookStages.All.Select(s => $"{Flow}-{s.Name}").ToList();

    public static string HookName(string stage) => $"{Flow}-{stage}";

    /// <summary>The safe name for <paramref name="script"/> (a trailing .ps1 allowed), or a 400 (missing) / 400 INVALID_SCRIPT_NAME.</summary>
    public static string CheckName(string? script)
    {
        if (string.IsNullOrEmpty(script)) throw new StationException(400, "MISSING_SCRIPT_NAME", "the script name is required");
        return StationNames.Normalize(script)
            ?? throw new StationException(400, "INVALID_SCRIPT_NAME", "a script name is 1-128 characters of A-Z, a-z, 0-9, '_' and '-' (with an optional .ps1)",
                "hooks: " + string.Join(", ", HookNames));
    }

    private string PathOf(string name) => Path.Combine(Directory, name + Extension);

    private static (string? Flow, string? Stage, string? Description) HookOf(string name)
    {
        foreach (var (stage, description) in HookStages.All)
            if (name == HookName(stage)) return (Flow, stage, description);
        return (null, null, null);
    }

    public StationScript Describe(string name, bool withContent = false)
    {
        var path = PathOf(name);
        var (flow, stage, description) = HookOf(name);
        if (!File.Exists(path))
            return new StationScript { Filename = name + Extension, Name = name, Exists = false, Provisioner = flow, Stage = stage, Description = description };
        var bytes = File.ReadAllBytes(path);
        return new StationScript
        {
            Filename = name + Extension, Name = name, Exists = true, Enabled = File.Exists(path + EnabledSuffix),
            Sha256 = Convert.ToHexString(SHA256.HashData(bytes)).ToLowerInvariant(), Size = bytes.Length,
            Provisioner = flow, Stage = stage, Description = description,
            Content = withContent ? Encoding.UTF8.GetString(bytes) : null,
        };
    }

    /// <summary>Every script file, then a placeholder for each hook without one (as the original lists them).</summary>
    public IReadOnlyList<StationScript> List()
    {
        var files = System.IO.Directory.EnumerateFiles(Directory, "*" + Extension)
            .Select(Path.GetFileName).Select(f => f![..^Extension.Length]).Where(StationNames.IsSafe).OrderBy(n => n, StringComparer.Ordinal).ToList();
        var list = files.Select(n => Describe(n)).ToList();
        list.AddRange(HookNames.Where(h => !files.Contains(h)).Select(h => Describe(h)));
        return list;
    }

    /// <summary>A script with its content; a hook without a file gives its template (<c>Exists</c> false); anything else 404.</summary>
    public StationScript Get(string? script)
    {
        var name = CheckName(script);
        var d = Describe(name, withContent: true);
        if (d.Exists) return d;
        if (d.Stage is not null) return d with { Content = Template(d.Stage) };
        throw new StationException(404, "SCRIPT_NOT_FOUND", $"no script named '{name}'");
    }

    /// <summary>Writes a script (atomically). A new file starts disabled; an existing one keeps its state.</summary>
    public StationScript Save(string? script, string? content)
    {
        var name = CheckName(script);
        if (content is null) throw new StationException(400, "MISSING_REQUIRED_FIELDS", "filename and content are required");
        var bytes = new UTF8Encoding(false).GetBytes(content);
        if (bytes.Length > MaxBytes) throw new StationException(413, "SCRIPT_TOO_LARGE", $"a script may be at most {MaxBytes} bytes");
        lock (_gate)
        {
            var path = PathOf(name);
            var tmp = path + ".tmp-" + Guid.NewGuid().ToString("N");
            File.WriteAllBytes(tmp, bytes);
            File.Move(tmp, path, true);
        }
        return Describe(name);
    }

    public StationScript SetEnabled(string? script, bool enabled)
    {
        var name = CheckName(script);
        lock (_gate)
        {
            var path = PathOf(name);
            if (!File.Exists(path)) throw new StationException(404, "SCRIPT_NOT_FOUND", $"no script named '{name}'");
            if (enabled) File.WriteAllText(path + EnabledSuffix, "");
            else File.Delete(path + EnabledSuffix);
        }
        return Describe(name);
    }

    public void Delete(string? script)
    {
        var name = CheckName(script);
        lock (_gate)
        {
            var path = PathOf(name);
            if (!File.Exists(path)) throw new StationException(404, "SCRIPT_NOT_FOUND", $"no script named '{name}'");
            File.Delete(path + EnabledSuffix);
            File.Delete(path);
        }
    }

    /// <summary>The enabled hook of a stage with its content, or null.</summary>
    public StationScript? EnabledHook(string stage)
    {
        var d = Describe(HookName(stage), withContent: true);
        return d is { Exists: true, Enabled: true } ? d : null;
    }

    /// <summary>A template for a hook (nothing is written).</summary>
    public static string Template(string stage) => $$"""
        # {{HookName(stage)}}.ps1: runs when the '{{stage}}' stage of the station fires.
        # {{HookStages.All.First(s => s.Name == stage).Description}}
        # Variables: $Device (Serial, Vendor, Name, Version, Source, State), $Record (the manufacturing record, when there is one),
        # $Stage, and the original's upper-case names: $TARGET_DEVICE_SERIAL, $SERIAL, $VENDOR, $DEVICE_NAME, $DEVICE_VERSION,
        # $EK_FINGERPRINT, $AK_NAME, $AK_CERT_SERIAL, $PROVISION_FAILED_CONTEXT.
        # Output goes to the device's log. A throw or a non-zero exit fails the stage.
        "{{stage}} for $SERIAL"
        """;
}
