using System.Reflection;
using TpmProvisioning.Configuration;
using TpmProvisioning.Hosting;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Tests.Configuration;

/// <summary>
/// The settings catalogue: every public setting property of the product's settings classes is in it, docs/configuration.md
/// carries its generated reference (the test fails when a setting lacks documentation or the page is stale), values are
/// checked by type and range with messages naming the setting and the rule, and persisted values apply at start unless a
/// start parameter gave them.
/// </summary>
public sealed class SettingsCatalogTests
{
    private static string RepoRoot
    {
        get
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "TpmProvisioning.sln"))) return d.FullName;
            throw new InvalidOperationException("repository root not found");
        }
    }

    private const string Begin = "<!-- settings:begin (generated from SettingsCatalog.ToMarkdown; do not edit by hand) -->";
    private const string End = "<!-- settings:end -->";

    [Fact]
    public void ConfigurationPageDocumentsEverySettingOfTheCatalogue()
    {
        var path = Path.Combine(RepoRoot, "docs", "configuration.md");
        var text = File.ReadAllText(path).ReplaceLineEndings("\n");
        int b = text.IndexOf(Begin, StringComparison.Ordinal), e = text.IndexOf(End, StringComparison.Ordinal);
        string expected = SettingsCatalog.ToMarkdown();
        if (Environment.GetEnvironmentVariable("TPMPROV_UPDATE_DOCS") == "1" && b >= 0 && e > b)
        {
            File.WriteAllText(path, text[..(b + Begin.Length)] + "\n\n" + expected + text[e..]);
            text = File.ReadAllText(path).ReplaceLineEndings("\n");
            (b, e) = (text.IndexOf(Begin, StringComparison.Ordinal), text.IndexOf(End, StringComparison.Ordinal));
        }
        Assert.True(b >= 0 && e > b, "docs/configuration.md must hold the generated reference between its markers");
        var section = text[(b + Begin.Length)..e];
        foreach (var d in SettingsCatalog.All)
        {
            Assert.Contains($"| `{d.Name}` |", section);
            Assert.False(string.IsNullOrWhiteSpace(d.Description), d.Name + " has no meaning");
        }
        Assert.Equal(expected.Trim(), section.Trim()); // stale page: run the test with TPMPROV_UPDATE_DOCS=1
    }

    [Fact]
    public void EverySettingPropertyOfTheProductIsInTheCatalogue()
    {
        // Each settings class: its public settable properties map to catalogue entries (the catalogue names them in its getters).
        var types = new (Type Type, string Prefix, string[] Skip)[]
        {
            (typeof(ServerOptions), "SERVER_", ["Provisioning", "Registrar", "Agent", "Verifier", "Kms", "Station", "ExplicitSettings"]),
            (typeof(TpmProvisioning.Provisioning.ProvisioningSettings), "PROVISIONING_", []),
            (typeof(TpmProvisioning.Attestation.RegistrarSettings), "REGISTRAR_", []),
            (typeof(TpmProvisioning.Attestation.AgentSettings), "AGENT_", []),
            (typeof(TpmProvisioning.Attestation.Verifier.VerifierSettings), "VERIFIER_", ["Secrets", "MasterKey"]),
            (typeof(TpmProvisioning.Kms.KmsSettings), "KMS_", ["LoginThrottle"]),
            (typeof(TpmProvisioning.Kms.KmsLoginThrottleSettings), "KMS_LOGIN_", []),
            (typeof(TpmProvisioning.Station.StationSettings), "STATION_", ["MasterKey"]),
        };
        var names = SettingsCatalog.All.Select(d => d.Name).ToHashSet();
        var missing = new List<string>();
        foreach (var (type, prefix, skip) in types)
            foreach (var p in type.GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(p => p.CanWrite && !skip.Contains(p.Name)))
            {
                // Words of the property name, upper snake case; the catalogue may add a unit or drop a repeated prefix.
                string snake = string.Concat(p.Name.Select((c, i) => i > 0 && char.IsUpper(c) && !char.IsUpper(p.Name[i - 1]) ? "_" + c : c.ToString())).ToUpperInvariant();
                bool found = names.Any(n => n.StartsWith(prefix, StringComparison.Ordinal) && (n[prefix.Length..].StartsWith(snake, StringComparison.Ordinal)
                    || n[prefix.Length..].StartsWith(snake.Replace(prefix.TrimEnd('_') + "_", "", StringComparison.Ordinal), StringComparison.Ordinal)
                    || n.Contains(snake.Replace("_PEM", "", StringComparison.Ordinal).Replace("_DIRECTORY", "", StringComparison.Ordinal).Replace("S_", "_", StringComparison.Ordinal), StringComparison.Ordinal)));
                if (!found) missing.Add($"{type.Name}.{p.Name} ({prefix}{snake})");
            }
        Assert.True(missing.Count == 0, "settings not in the catalogue: " + string.Join(", ", missing));
    }

    [Fact]
    public void DefaultsAreTheSettingsClassesOwn()
    {
        var o = new ServerOptions { DataPath = "." };
        Assert.Equal(1800d, SettingsCatalog.Find("STATION_HOOK_TIMEOUT_SECONDS")!.Default);
        Assert.Equal(2d, SettingsCatalog.Find("verifier_quote_interval_seconds")!.Default);
        Assert.Equal(96L * 1024 * 1024, SettingsCatalog.Find("SERVER_MAX_BUFFERED_REQUEST_BYTES")!.Default);
        foreach (var d in SettingsCatalog.All.Where(d => d.Name != "SERVER_DATA_PATH"))
            Assert.Equal(SettingDefinition.Format(d.GetValue(o)), SettingDefinition.Format(d.Default));
        Assert.Null(SettingsCatalog.Find("SERVER_DATA_PATH")!.Default); // per user (TPMPROV_DATA), documented by its meaning
        // Every settable default passes its own rule.
        foreach (var d in SettingsCatalog.All.Where(d => d.Settable))
            Assert.True(d.Check(d.Default is List<string> l ? l : d.Default).Error is null, d.Name + " default breaks its rule: " + d.Check(d.Default).Error?.Message);
    }

    [Theory]
    [InlineData("STATION_HOOK_TIMEOUT_SECONDS", "soon", SettingError.InvalidValue)]
    [InlineData("STATION_HOOK_TIMEOUT_SECONDS", "0", SettingError.OutOfRange)]
    [InlineData("STATION_HOOK_TIMEOUT_SECONDS", "86401", SettingError.OutOfRange)]
    [InlineData("STATION_MAX_SCRIPT_BYTES", "1.5", SettingError.InvalidValue)]
    [InlineData("STATION_PUBLIC_DASHBOARD", "yes", SettingError.InvalidValue)]
    [InlineData("SERVER_LOG_LEVEL", "Loud", SettingError.InvalidValue)]
    [InlineData("KMS_VERIFIER", "ftp://x", SettingError.InvalidValue)]
    [InlineData("KMS_VERIFIER", "https://user:pw@x", SettingError.InvalidValue)]
    [InlineData("STATION_IMAGE_SHA256", "abc", SettingError.InvalidValue)]
    [InlineData("STATION_SCRIPTS_DIRECTORY", "relative/path", SettingError.InvalidValue)]
    [InlineData("SERVER_PORT", "8443", SettingError.ReadOnlyField)]
    [InlineData("AGENT_RUN_PAYLOAD_SCRIPT", "true", SettingError.ReadOnlyField)]
    [InlineData("VERIFIER_MAX_RETRIES", "", SettingError.InvalidValue)]
    public void BadValuesAreRefusedWithTheSettingAndTheRule(string name, string value, string code)
    {
        var d = SettingsCatalog.Find(name)!;
        var (v, error) = d.Check(value);
        Assert.Null(v);
        Assert.NotNull(error);
        Assert.Equal(code, error!.Code);
        Assert.StartsWith(d.Name + ": ", error.Message);
        if (code == SettingError.OutOfRange) Assert.Contains("from 1 to 86400", error.Message);
    }

    [Fact]
    public void GoodValuesAreNormalised()
    {
        Assert.Equal(90d, SettingsCatalog.Find("STATION_HOOK_TIMEOUT_SECONDS")!.Check(TimeSpan.FromSeconds(90)).Value);
        Assert.Equal(2048L, SettingsCatalog.Find("STATION_MAX_SCRIPT_BYTES")!.Check("2048").Value);
        Assert.Equal(true, SettingsCatalog.Find("STATION_PUBLIC_DASHBOARD")!.Check("True").Value);
        Assert.Equal("Warning", SettingsCatalog.Find("SERVER_LOG_LEVEL")!.Check("warning").Value);
        Assert.Equal(new List<string> { "a", "b" }, SettingsCatalog.Find("PROVISIONING_NAMESPACES")!.Check("a, b").Value);
        Assert.Null(SettingsCatalog.Find("STATION_IMAGE_NAME")!.Check("").Value);
        Assert.Null(SettingsCatalog.Find("STATION_IMAGE_NAME")!.Check("").Error);
    }

    [Fact]
    public void CheckAllIsAllOrNothing()
    {
        var ex = Assert.Throws<SettingException>(() => SettingsCatalog.CheckAll([new("STATION_HOOK_TIMEOUT_SECONDS", 60L), new("NO_SUCH_SETTING", 1L)]));
        Assert.Equal(SettingError.UnknownField, ex.Error.Code);
        Assert.Contains("NO_SUCH_SETTING", ex.Message);
        ex = Assert.Throws<SettingException>(() => SettingsCatalog.CheckAll([new("STATION_HOOK_TIMEOUT_SECONDS", 60L), new("station_hook_timeout_seconds", 61L)]));
        Assert.Contains("more than once", ex.Message);
    }

    [Fact]
    public void PersistedValuesApplyUnlessAStartParameterGaveThem()
    {
        var o = new ServerOptions { DataPath = "." };
        o.Verifier.QuoteInterval = TimeSpan.FromSeconds(7);
        SettingsCatalog.MarkExplicit(o, ["QuoteInterval", "Port"]);
        var stored = new[]
        {
            new StoredSetting("VERIFIER_QUOTE_INTERVAL_SECONDS", "30", DateTimeOffset.UtcNow, "t"),
            new StoredSetting("STATION_HOOK_TIMEOUT_SECONDS", "120", DateTimeOffset.UtcNow, "t"),
            new StoredSetting("STATION_MAX_SCRIPT_BYTES", "12", DateTimeOffset.UtcNow, "t"), // out of range now: ignored
            new StoredSetting("GONE_SETTING", "1", DateTimeOffset.UtcNow, "t"),
            new StoredSetting("firmware:cm4", "2025-01-01", DateTimeOffset.UtcNow, "t"),
        };
        var (applied, skipped) = SettingsCatalog.ApplyPersisted(o, stored);
        Assert.Equal(["STATION_HOOK_TIMEOUT_SECONDS"], applied);
        Assert.Equal(3, skipped.Count);
        Assert.Equal(TimeSpan.FromSeconds(7), o.Verifier.QuoteInterval);
        Assert.Equal(TimeSpan.FromSeconds(120), o.Station.HookTimeout);
        Assert.Equal(1024 * 1024, o.Station.MaxScriptBytes);
        var described = SettingsCatalog.Describe(o, stored);
        Assert.Equal("start", described.Single(d => d.Name == "VERIFIER_QUOTE_INTERVAL_SECONDS").Source);
        Assert.Equal("stored", described.Single(d => d.Name == "STATION_HOOK_TIMEOUT_SECONDS").Source);
        Assert.Equal("default", described.Single(d => d.Name == "KMS_PASSWORD_ITERATIONS").Source);
    }
}
