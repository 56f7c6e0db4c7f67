using System.Text.Json;
using TpmProvisioning.Kms;

namespace TpmProvisioning.Cmdlets;

/// <summary>
/// What a data path remembers of its master key: its kind and, for a TPM-sealed key, the TPM connection that sealed it
/// (<c>&lt;DataPath&gt;/kms/master-key.settings.json</c>, no secret in it). Cmdlets and servers on that data path use them when
/// -MasterKey/-MasterKeyTpm are not given, so a help example works as written after the first command set the key up.
/// </summary>
internal static class MasterKeyMemory
{
    public const string FileName = "master-key.settings.json";

    public sealed record Remembered(MasterKeyKind Kind, string? Tpm);

    public static string PathOf(string dataPath) => Path.Combine(KmsEngineFactory.KmsDirectory(dataPath), FileName);

    public static Remembered? Read(string dataPath)
    {
        try
        {
            var file = PathOf(dataPath);
            if (!File.Exists(file)) return null;
            using var doc = JsonDocument.Parse(File.ReadAllText(file));
            var root = doc.RootElement;
            if (!root.TryGetProperty("kind", out var k) || !Enum.TryParse<MasterKeyKind>(k.GetString(), out var kind)) return null;
            var tpm = root.TryGetProperty("tpm", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
            return new Remembered(kind, string.IsNullOrWhiteSpace(tpm) ? null : tpm);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or JsonException) { return null; }
    }

    /// <summary>Remembers the kind (and TPM) a data path's master key was opened with; best effort.</summary>
    public static void Write(string dataPath, MasterKeyKind kind, string? tpm)
    {
        try
        {
            var known = Read(dataPath);
            if (known is not null && known.Kind == kind && known.Tpm == tpm) return;
            var dir = KmsEngineFactory.KmsDirectory(dataPath);
            if (!Directory.Exists(dir)) return;
            File.WriteAllText(PathOf(dataPath), JsonSerializer.Serialize(new Dictionary<string, string?> { ["kind"] = kind.ToString(), ["tpm"] = tpm }));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { }
    }

    /// <summary>The TPM connection a TPM-sealed key needs when none is given: remembered, else TPM2TOOLS_TCTI or the platform TPM; null when there is none.</summary>
    public static string? DefaultTpm(string dataPath)
    {
        if (Read(dataPath) is { Kind: MasterKeyKind.Tpm, Tpm: { } remembered }) return remembered;
        try { return TpmProvisioning.Tpm.Transport.TpmTransportFactory.DefaultConnectionString(); }
        catch (TpmProvisioning.Tpm.Transport.TpmTransportException) { return null; }
    }
}
