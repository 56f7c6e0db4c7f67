using System.Security.Cryptography;
using System.Text;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Station;

/// <summary>Settings of the station surface (spec 003).</summary>
public sealed class StationSettings
{
    /// <summary>How long one hook script may run before it is stopped and its stage fails (the original's 1800 s).</summary>
    public TimeSpan HookTimeout { get; set; } = TimeSpan.FromSeconds(1800);
    /// <summary>Largest script accepted by save and upload (413 above).</summary>
    public int MaxScriptBytes { get; set; } = 1024 * 1024;
    /// <summary>An anonymous read-only view of devices and states (never logs or keys). Off by default.</summary>
    public bool PublicDashboard { get; set; }
    /// <summary>The scripts folder; null means <c>&lt;DataPath&gt;/station/scripts</c>.</summary>
    public string? ScriptsDirectory { get; set; }
    /// <summary>Runs hook scripts (PowerShell, supplied by the module). Without one, an enabled hook fails its stage.</summary>
    public IStationScriptRunner? ScriptRunner { get; set; }
    /// <summary>The image assigned to devices provisioned here, copied into their manufacturing records; null when none.</summary>
    public string? ImageName { get; set; }
    public string? ImageSha256 { get; set; }
    /// <summary>The images folder; null means <c>&lt;DataPath&gt;/station/images</c>.</summary>
    public string? ImagesDirectory { get; set; }
    /// <summary>Largest image <c>/upload-image</c> accepts (413 above); default 64 GiB.</summary>
    public long MaxImageBytes { get; set; } = StationImages.DefaultMaxBytes;
    /// <summary>The Keylime verifier whose attestation state device details show (read as the KMS gate reads it); null for none.</summary>
    public Uri? Verifier { get; set; }
    /// <summary>How often the station looks for registrations and the verifier's verdicts (REGISTERED, ATTESTING, ATTESTATION-FAILED).</summary>
    public TimeSpan WatchInterval { get; set; } = TimeSpan.FromSeconds(5);
    /// <summary>The firmware catalogue (one folder per device family); null means <c>&lt;DataPath&gt;/station/firmware</c>.</summary>
    public string? FirmwareDirectory { get; set; }
    /// <summary>The master key that seals the station's signing keys and PKCS#11 PINs (null: the KMS's or verifier's, or the one set up in the data path).</summary>
    public Kms.KmsSettings? MasterKey { get; set; }
}

/// <summary>A station failure with its HTTP status and the original's error code (<c>DEVICE_NOT_FOUND</c>, ...).</summary>
public sealed class StationException(int status, string code, string detail, string? additional = null) : Exception(detail)
{
    public int Status { get; } = status;
    public string Code { get; } = code;
    public string? Additional { get; } = additional;
}

/// <summary>What a hook script is run with.</summary>
public sealed record ScriptRunRequest
{
    public required string Name { get; init; }
    public required string Content { get; init; }
    /// <summary>Variables the script sees (name without <c>$</c> to value).</summary>
    public required IReadOnlyDictionary<string, object?> Variables { get; init; }
    public required TimeSpan Timeout { get; init; }
}

/// <summary>How a hook script ended: its output lines, and why it failed when it did.</summary>
public sealed record ScriptRunResult
{
    public bool Succeeded { get; init; }
    public IReadOnlyList<string> Output { get; init; } = [];
    public string? Error { get; init; }
    public bool TimedOut { get; init; }
    public int ExitCode { get; init; }
    public TimeSpan Elapsed { get; init; }
}

/// <summary>Runs one hook script in a runspace of its own with a time limit (the module implements it over PowerShell).</summary>
public interface IStationScriptRunner
{
    Task<ScriptRunResult> RunAsync(ScriptRunRequest request, CancellationToken ct);
}

/// <summary>A state change as the station broadcasts it (<c>/ws/devices</c>).</summary>
public sealed record StationEvent(long Id, DateTimeOffset Time, string Serial, string Vendor, string State, string? Detail, string? Address);

/// <summary>A script of the station, as listed.</summary>
public sealed record StationScript
{
    /// <summary>File name with <c>.ps1</c>.</summary>
    public required string Filename { get; init; }
    /// <summary>Name without <c>.ps1</c>.</summary>
    public required string Name { get; init; }
    public bool Exists { get; init; }
    public bool Enabled { get; init; }
    public string? Sha256 { get; init; }
    public long Size { get; init; }
    /// <summary>The flow (<c>tpm-provisioner</c>) and stage when the name is a hook's.</summary>
    public string? Provisioner { get; init; }
    public string? Stage { get; init; }
    public string? Description { get; init; }
    public string? Content { get; init; }
}

/// <summary>An operator token as shown: everything but the secret.</summary>
public sealed record StationTokenInfo(string TokenId, string Name, DateTimeOffset Created);

/// <summary>A new token: <see cref="Token"/> is the secret, shown this once.</summary>
public sealed record NewStationToken(StationTokenInfo Info, string Token);

/// <summary>
/// Station operator tokens: <c>tpst_&lt;id&gt;_&lt;secret&gt;</c>, stored as SHA-256 of the whole string (as API keys are),
/// sent as <c>Authorization: Bearer</c>.
/// </summary>
public sealed class StationTokenManager(IStore store)
{
    public const string Prefix = "tpst_";
    private const int IdChars = 16;
    private const int SecretChars = 43;

    public async Task<NewStationToken> CreateAsync(string name, string actor = "local", CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (name.Length is 0 or > 100 || string.IsNullOrWhiteSpace(name) || name.Any(char.IsControl))
            throw new ArgumentException("A token name is 1-100 characters, not blank, without control characters.", nameof(name));
        string id = Convert.ToHexString(RandomNumberGenerator.GetBytes(IdChars / 2)).ToLowerInvariant();
        string secret = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_');
        string token = Prefix + id + "_" + secret;
        var record = new StationTokenRecord { TokenId = id, Name = name, SecretHash = SHA256.HashData(Encoding.UTF8.GetBytes(token)) };
        await store.InsertStationTokenAsync(record, ct).ConfigureAwait(false);
        await store.AppendAuditAsync(new AuditEntry { Actor = actor, Action = "station.token.create", Target = id, Outcome = AuditOutcome.Success, Detail = "name=" + name }, ct).ConfigureAwait(false);
        return new NewStationToken(new StationTokenInfo(id, name, record.Created), token);
    }

    public async Task<IReadOnlyList<StationTokenInfo>> ListAsync(CancellationToken ct = default) =>
        (await store.ListStationTokensAsync(ct).ConfigureAwait(false)).Select(t => new StationTokenInfo(t.TokenId, t.Name, t.Created)).ToList();

    public async Task<bool> RemoveAsync(string tokenId, string actor = "local", CancellationToken ct = default)
    {
        bool removed = await store.RemoveStationTokenAsync(tokenId, ct).ConfigureAwait(false);
        if (removed) await store.AppendAuditAsync(new AuditEntry { Actor = actor, Action = "station.token.remove", Target = tokenId, Outcome = AuditOutcome.Success }, ct).ConfigureAwait(false);
        return removed;
    }

    /// <summary>The token's info when <paramref name="presented"/> is a valid token, else null.</summary>
    public async Task<StationTokenInfo?> AuthenticateAsync(string? presented, CancellationToken ct = default)
    {
        if (presented is null || presented.Length != Prefix.Length + IdChars + 1 + SecretChars || !presented.StartsWith(Prefix, StringComparison.Ordinal)
            || presented[Prefix.Length + IdChars] != '_')
            return null;
        string id = presented.Substring(Prefix.Length, IdChars);
        var record = await store.GetStationTokenAsync(id, ct).ConfigureAwait(false);
        if (record is null || !CryptographicOperations.FixedTimeEquals(record.SecretHash, SHA256.HashData(Encoding.UTF8.GetBytes(presented)))) return null;
        return new StationTokenInfo(record.TokenId, record.Name, record.Created);
    }
}
