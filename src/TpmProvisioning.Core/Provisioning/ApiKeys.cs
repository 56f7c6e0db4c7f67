using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Provisioning;

/// <summary>An API key as admins see it: everything but the secret and its hash.</summary>
public sealed record ApiKeyInfo
{
    public required string KeyId { get; init; }
    public string Name { get; init; } = "";
    /// <summary>Vendors the key may provision for; <c>*</c> means any.</summary>
    public IReadOnlyList<string> Vendors { get; init; } = ["*"];
    /// <summary>Requests per minute; 0 means unlimited.</summary>
    public int RatePerMinute { get; init; }
    public bool Enabled { get; init; }
    public DateTimeOffset Created { get; init; }

    /// <summary>True when the key may provision devices of <paramref name="vendor"/> (case-insensitive; <c>*</c> allows all).</summary>
    public bool AllowsVendor(string vendor) => Vendors.Any(v => v == "*" || string.Equals(v, vendor, StringComparison.OrdinalIgnoreCase));

    internal static ApiKeyInfo From(ApiKeyRecord r) => new()
    {
        KeyId = r.KeyId, Name = r.Name, Vendors = r.Vendors, RatePerMinute = r.RatePerMinute, Enabled = r.Enabled, Created = r.Created,
    };
}

/// <summary>A newly created key: <see cref="Key"/> is the secret, shown this once and never stored.</summary>
public sealed record NewApiKey(ApiKeyInfo Info, string Key);

/// <summary>Why an API key was not accepted.</summary>
public enum ApiKeyCheck
{
    Valid,
    Missing,
    Unknown,
    Disabled,
}

/// <summary>
/// Provisioning API keys. A key reads <c>tpk_&lt;id&gt;_&lt;secret&gt;</c>: <c>id</c> is 16 lower-case hex characters (the lookup
/// part, also the audit actor), <c>secret</c> 32 random bytes in unpadded base64url. The store keeps SHA-256 of the whole key
/// string: a 256-bit random secret needs no slow hash, and a stolen database yields no usable key. The <c>tpk_</c> prefix
/// lets the log redactor mask any key that slips into text.
/// </summary>
public sealed class ApiKeyManager
{
    public const string Prefix = "tpk_";
    private const int IdChars = 16;
    private const int SecretChars = 43;

    private readonly IStore _store;

    public ApiKeyManager(IStore store) => _store = store ?? throw new ArgumentNullException(nameof(store));

    /// <summary>Creates a key. <paramref name="vendors"/> null or empty means <c>*</c>; <paramref name="ratePerMinute"/> 0 means unlimited.</summary>
    public async Task<NewApiKey> CreateAsync(string name, IEnumerable<string>? vendors = null, int ratePerMinute = 0, bool enabled = true,
        string actor = "local", CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(name);
        var scope = NormalizeVendors(vendors);
        if (ratePerMinute < 0) throw new ArgumentOutOfRangeException(nameof(ratePerMinute), "The rate must be 0 (unlimited) or more requests per minute.");
        string id = Convert.ToHexString(RandomNumberGenerator.GetBytes(IdChars / 2)).ToLowerInvariant();
        string secret = Base64Url(RandomNumberGenerator.GetBytes(32));
        string key = Prefix + id + "_" + secret;
        var record = new ApiKeyRecord
        {
            KeyId = id, Name = name, SecretHash = Hash(key), Vendors = scope, RatePerMinute = ratePerMinute, Enabled = enabled, Created = DateTimeOffset.UtcNow,
        };
        await _store.InsertApiKeyAsync(record, ct).ConfigureAwait(false);
        await _store.AppendAuditAsync(new AuditEntry
        {
            Actor = actor, Action = "provision.apikey.create", Target = id, Outcome = AuditOutcome.Success,
            Detail = $"name={name} vendors={string.Join(",", scope)} rate={ratePerMinute} enabled={enabled}",
        }, ct).ConfigureAwait(false);
        return new NewApiKey(ApiKeyInfo.From(record), key);
    }

    public async Task<IReadOnlyList<ApiKeyInfo>> ListAsync(CancellationToken ct = default) =>
        (await _store.ListApiKeysAsync(ct).ConfigureAwait(false)).Select(ApiKeyInfo.From).ToList();

    public async Task<ApiKeyInfo?> GetAsync(string keyId, CancellationToken ct = default) =>
        await _store.GetApiKeyAsync(keyId, ct).ConfigureAwait(false) is { } r ? ApiKeyInfo.From(r) : null;

    /// <summary>Changes a key's state, scope, rate or name; returns the key as it now is, or null when it does not exist.</summary>
    public async Task<ApiKeyInfo?> UpdateAsync(string keyId, bool? enabled = null, IEnumerable<string>? vendors = null, int? ratePerMinute = null,
        string? name = null, string actor = "local", CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(keyId);
        if (ratePerMinute < 0) throw new ArgumentOutOfRangeException(nameof(ratePerMinute), "The rate must be 0 (unlimited) or more requests per minute.");
        var update = new ApiKeyUpdate
        {
            KeyId = keyId, Enabled = enabled, Vendors = vendors is null ? null : NormalizeVendors(vendors), RatePerMinute = ratePerMinute, Name = name,
        };
        bool found = await _store.UpdateApiKeyAsync(update, ct).ConfigureAwait(false);
        if (!found) return null;
        var parts = new List<string>();
        if (enabled is { } e) parts.Add("enabled=" + e);
        if (update.Vendors is { } v) parts.Add("vendors=" + string.Join(",", v));
        if (ratePerMinute is { } rate) parts.Add("rate=" + rate);
        if (name is not null) parts.Add("name=" + name);
        await _store.AppendAuditAsync(new AuditEntry
        {
            Actor = actor, Action = enabled == false ? "provision.apikey.disable" : enabled == true ? "provision.apikey.enable" : "provision.apikey.update",
            Target = keyId, Outcome = AuditOutcome.Success, Detail = string.Join(" ", parts),
        }, ct).ConfigureAwait(false);
        return await GetAsync(keyId, ct).ConfigureAwait(false);
    }

    /// <summary>Enables or disables a key; false when it does not exist.</summary>
    public async Task<bool> SetEnabledAsync(string keyId, bool enabled, string actor = "local", CancellationToken ct = default) =>
        await UpdateAsync(keyId, enabled: enabled, actor: actor, ct: ct).ConfigureAwait(false) is not null;

    /// <summary>Removes a key; false when it does not exist.</summary>
    public async Task<bool> RemoveAsync(string keyId, string actor = "local", CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(keyId);
        bool removed = await _store.RemoveApiKeyAsync(keyId, ct).ConfigureAwait(false);
        if (removed)
            await _store.AppendAuditAsync(new AuditEntry { Actor = actor, Action = "provision.apikey.remove", Target = keyId, Outcome = AuditOutcome.Success }, ct).ConfigureAwait(false);
        return removed;
    }

    /// <summary>Checks a presented key. Unknown covers malformed keys and wrong secrets alike.</summary>
    public async Task<(ApiKeyCheck Check, ApiKeyInfo? Key)> AuthenticateAsync(string? presented, CancellationToken ct = default)
    {
        if (string.IsNullOrWhiteSpace(presented)) return (ApiKeyCheck.Missing, null);
        if (!TryParseKeyId(presented, out var id)) return (ApiKeyCheck.Unknown, null);
        var record = await _store.GetApiKeyAsync(id, ct).ConfigureAwait(false);
        if (record is null || !CryptographicOperations.FixedTimeEquals(record.SecretHash, Hash(presented))) return (ApiKeyCheck.Unknown, null);
        var info = ApiKeyInfo.From(record);
        return (record.Enabled ? ApiKeyCheck.Valid : ApiKeyCheck.Disabled, info);
    }

    /// <summary>The key id of a well-formed key string.</summary>
    public static bool TryParseKeyId(string key, out string keyId)
    {
        keyId = "";
        if (key is null || key.Length != Prefix.Length + IdChars + 1 + SecretChars || !key.StartsWith(Prefix, StringComparison.Ordinal) || key[Prefix.Length + IdChars] != '_')
            return false;
        var id = key.AsSpan(Prefix.Length, IdChars);
        foreach (char c in id) if (c is not ((>= '0' and <= '9') or (>= 'a' and <= 'f'))) return false;
        foreach (char c in key.AsSpan(Prefix.Length + IdChars + 1)) if (!(char.IsAsciiLetterOrDigit(c) || c is '-' or '_')) return false;
        keyId = id.ToString();
        return true;
    }

    /// <summary>
    /// The key carried by an <c>Authorization</c> header: <c>Bearer &lt;key&gt;</c>, <c>APIToken &lt;key&gt;</c> (the scheme of the
    /// spec's console) or a bare key. Only values that look like this module's keys (<c>tpk_</c>) count, so a client written
    /// for the original service, which sends its console token there, is not mistaken for presenting a wrong key.
    /// </summary>
    public static string? FromAuthorizationHeader(string? header)
    {
        if (string.IsNullOrWhiteSpace(header)) return null;
        var h = header.Trim();
        int sp = h.IndexOf(' ');
        string v;
        if (sp < 0) v = h;
        else
        {
            var scheme = h[..sp];
            if (!scheme.Equals("Bearer", StringComparison.OrdinalIgnoreCase) && !scheme.Equals("APIToken", StringComparison.OrdinalIgnoreCase)) return null;
            v = h[(sp + 1)..].Trim();
        }
        return v.StartsWith(Prefix, StringComparison.Ordinal) ? v : null;
    }

    private static IReadOnlyList<string> NormalizeVendors(IEnumerable<string>? vendors)
    {
        var list = (vendors ?? []).Select(v => v?.Trim() ?? "").Where(v => v.Length > 0).Distinct(StringComparer.OrdinalIgnoreCase).ToList();
        if (list.Any(v => v.Length > 1024)) throw new ArgumentException("A vendor name is longer than 1024 characters.", nameof(vendors));
        return list.Count == 0 || list.Contains("*") ? ["*"] : list;
    }

    internal static byte[] Hash(string key) => SHA256.HashData(Encoding.UTF8.GetBytes(key));

    private static string Base64Url(byte[] b) => Convert.ToBase64String(b).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}

/// <summary>
/// Per-key request rate, as token buckets in memory: a key with rate R per minute holds up to R tokens and gains R/60 per
/// second, so it may burst R requests and then sustain R per minute. Servers sharing a database do not share buckets.
/// </summary>
public sealed class ApiKeyRateLimiter
{
    private sealed class Bucket
    {
        public double Tokens;
        public long Stamp;
        public int Rate;
    }

    private readonly ConcurrentDictionary<string, Bucket> _buckets = new(StringComparer.Ordinal);
    private readonly TimeProvider _time;

    public ApiKeyRateLimiter(TimeProvider? time = null) => _time = time ?? TimeProvider.System;

    /// <summary>Takes one token for <paramref name="keyId"/>; when none is left, false and the whole seconds until one is.</summary>
    public bool TryAcquire(string keyId, int ratePerMinute, out int retryAfterSeconds)
    {
        retryAfterSeconds = 0;
        if (ratePerMinute <= 0) return true;
        long now = _time.GetTimestamp();
        var b = _buckets.GetOrAdd(keyId, _ => new Bucket { Tokens = ratePerMinute, Stamp = now, Rate = ratePerMinute });
        lock (b)
        {
            double perSecond = ratePerMinute / 60.0;
            if (b.Rate != ratePerMinute)
            {
                b.Tokens = Math.Min(b.Tokens, ratePerMinute);
                b.Rate = ratePerMinute;
            }
            double elapsed = _time.GetElapsedTime(b.Stamp, now).TotalSeconds;
            if (elapsed > 0) b.Tokens = Math.Min(ratePerMinute, b.Tokens + elapsed * perSecond);
            b.Stamp = now;
            if (b.Tokens >= 1)
            {
                b.Tokens -= 1;
                return true;
            }
            retryAfterSeconds = Math.Max(1, (int)Math.Ceiling((1 - b.Tokens) / perSecond));
            return false;
        }
    }

    /// <summary>Forgets a key's bucket (after the key is removed or its rate changed).</summary>
    public void Reset(string keyId) => _buckets.TryRemove(keyId, out _);
}
