using System.Text.Json.Nodes;
using TpmProvisioning.Kms;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Station;

/// <summary>How the stored secrets of one kind are kept.</summary>
public sealed record SecretKindStatus
{
    /// <summary><c>signing-keys</c>, <c>pkcs11-pins</c>, <c>verifier-revocation-keys</c>, <c>verifier-v</c> or <c>kms-material</c>.</summary>
    public required string Kind { get; init; }
    public long Total { get; init; }
    public long Plaintext { get; init; }
    /// <summary>Wrapped secrets per master key id.</summary>
    public IReadOnlyDictionary<string, long> WrappedBy { get; init; } = new Dictionary<string, long>();
    /// <summary>Wrapped with a master key this server does not hold.</summary>
    public long WrappedByUnknownKey { get; init; }
}

/// <summary>The secrets-at-rest report of a data path.</summary>
public sealed record SecretStatusReport
{
    /// <summary>The id of the master key that wraps new secrets, or null when the server has none.</summary>
    public string? MasterKeyId { get; init; }
    public string? MasterKey { get; init; }
    public string? MasterKeyKind { get; init; }
    public IReadOnlyList<SecretKindStatus> Kinds { get; init; } = [];
    public long TotalPlaintext => Kinds.Sum(k => k.Plaintext);
    public long TotalWrapped => Kinds.Sum(k => k.WrappedBy.Values.Sum() + k.WrappedByUnknownKey);
}

/// <summary>What one migration wrapped.</summary>
public sealed record SecretMigrationResult
{
    public string Target { get; init; } = "all";
    public string? MasterKeyId { get; init; }
    /// <summary>Secrets wrapped by this run, per kind.</summary>
    public IReadOnlyDictionary<string, long> Wrapped { get; init; } = new Dictionary<string, long>();
    /// <summary>Secrets that were already wrapped.</summary>
    public long AlreadyWrapped { get; init; }
    /// <summary>Rows that changed while being wrapped (run again).</summary>
    public long Skipped { get; init; }
    public long TotalWrapped => Wrapped.Values.Sum();
}

/// <summary>
/// Secrets at rest (spec 003 options/encryption-status and migrate-secrets): counts every secret the product keeps (PEM signing
/// keys, PKCS#11 PINs, the verifier's stored tenant revocation_key and v, KMS material) by the master key that wraps it, and
/// wraps every plaintext one with the primary master key. Idempotent; each row is replaced only if it did not change meanwhile.
/// </summary>
public static class SecretsAtRest
{
    public const string SigningKeys = "signing-keys";
    public const string Pins = "pkcs11-pins";
    public const string RevocationKeys = "verifier-revocation-keys";
    public const string VerifierV = "verifier-v";
    public const string KmsMaterial = "kms-material";
    public static readonly string[] Targets = ["all", "key", "pin", "verifier"];

    private sealed class Counter(string kind)
    {
        public long Total, Plain, Unknown;
        public readonly Dictionary<string, long> By = new(StringComparer.Ordinal);
        public void Add(string? value, Func<string, string?> identify)
        {
            if (string.IsNullOrEmpty(value)) return;
            Total++;
            if (!SecretSealer.IsSealed(value)) { Plain++; return; }
            if (identify(value) is { } id) By[id] = By.GetValueOrDefault(id) + 1; else Unknown++;
        }
        public SecretKindStatus ToStatus() => new() { Kind = kind, Total = Total, Plaintext = Plain, WrappedBy = By, WrappedByUnknownKey = Unknown };
    }

    private static string VerifierRow(string agentId, string field) => $"verifier_agents/{agentId}/{field}";

    private static string? Field(JsonNode? config, string name) =>
        config is JsonObject o && o.TryGetPropertyValue(name, out var v) && v is JsonValue jv && jv.TryGetValue<string>(out var s) ? s : null;

    public static async Task<SecretStatusReport> StatusAsync(IStore store, SecretKeyRing ring, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(ring);
        var keys = new Counter(SigningKeys);
        foreach (var k in await store.ListSigningKeysAsync(ct).ConfigureAwait(false))
            if (k.Kind == SigningKeyKind.Pem) keys.Add(k.PrivateKey, v => ring.Identify(v, SigningKeyService.SecretRow(k.Label)));
        var pins = new Counter(Pins);
        foreach (var p in await store.ListPkcs11PinsAsync(ct).ConfigureAwait(false))
            pins.Add(p.Pin, v => ring.Identify(v, SigningKeyService.PinRow(p.Module, p.Token)));
        var rk = new Counter(RevocationKeys);
        var vv = new Counter(VerifierV);
        foreach (var (agent, json) in await store.ListVerifierConfigsAsync(ct).ConfigureAwait(false))
        {
            JsonNode? config;
            try { config = JsonNode.Parse(json); }
            catch (System.Text.Json.JsonException) { continue; }
            rk.Add(Field(config, "revocation_key"), v => ring.Identify(v, VerifierRow(agent, "revocation_key")));
            vv.Add(Field(config, "v"), v => ring.Identify(v, VerifierRow(agent, "v")));
        }
        var (providers, versions) = await store.CountKmsWrappedAsync(ct).ConfigureAwait(false);
        var kms = new Counter(KmsMaterial);
        long kmsTotal = providers + versions;
        if (kmsTotal > 0)
        {
            // KMS material is always wrapped; which key wrapped it is what the store's master-key check opens with.
            var check = await store.GetKmsMetaAsync("master_key_check", ct).ConfigureAwait(false);
            string? id = check is null ? null : ring.IdentifyBlob(check, "master_key_check");
            kms.Total = kmsTotal;
            if (id is null) kms.Unknown = kmsTotal; else kms.By[id] = kmsTotal;
        }
        return new SecretStatusReport
        {
            MasterKeyId = ring.PrimaryId, MasterKey = ring.PrimaryDescription, MasterKeyKind = ring.PrimaryKind?.ToString(),
            Kinds = [keys.ToStatus(), pins.ToStatus(), rk.ToStatus(), vv.ToStatus(), kms.ToStatus()],
        };
    }

    /// <summary>Wraps every plaintext secret of <paramref name="target"/> (<c>all</c>, <c>key</c>, <c>pin</c>, <c>verifier</c>) and audits the counts.</summary>
    public static async Task<SecretMigrationResult> MigrateAsync(IStore store, SecretKeyRing ring, string? target, string actor, string source, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(ring);
        target = string.IsNullOrEmpty(target) ? "all" : target;
        if (!Targets.Contains(target)) throw new StationException(400, "INVALID_PARAMETER", $"target: one of {string.Join(", ", Targets)}", $"Received: {(target.Length > 64 ? target[..64] : target)}");
        if (!ring.CanSeal) throw new StationException(409, "NO_MASTER_KEY", "the server has no master key to wrap with; start it with -MasterKey Tpm, Pkcs11 or InsecureFile");
        var wrapped = new Dictionary<string, long>(StringComparer.Ordinal);
        long already = 0, skipped = 0;
        void Count(string kind, bool done) { if (done) wrapped[kind] = wrapped.GetValueOrDefault(kind) + 1; else skipped++; }

        if (target is "all" or "key")
        {
            wrapped[SigningKeys] = 0;
            foreach (var k in await store.ListSigningKeysAsync(ct).ConfigureAwait(false))
            {
                if (k.Kind != SigningKeyKind.Pem || string.IsNullOrEmpty(k.PrivateKey)) continue;
                if (SecretSealer.IsSealed(k.PrivateKey)) { already++; continue; }
                Count(SigningKeys, await store.ReplaceSigningKeySecretAsync(k.Label, k.PrivateKey, ring.Seal(k.PrivateKey, SigningKeyService.SecretRow(k.Label)), ring.PrimaryId, ct).ConfigureAwait(false));
            }
        }
        if (target is "all" or "pin")
        {
            wrapped[Pins] = 0;
            foreach (var p in await store.ListPkcs11PinsAsync(ct).ConfigureAwait(false))
            {
                if (SecretSealer.IsSealed(p.Pin)) { already++; continue; }
                Count(Pins, await store.ReplacePkcs11PinSecretAsync(p.Module, p.Token, p.Pin, ring.Seal(p.Pin, SigningKeyService.PinRow(p.Module, p.Token)), ring.PrimaryId, ct).ConfigureAwait(false));
            }
        }
        if (target is "all" or "verifier")
        {
            wrapped[RevocationKeys] = 0;
            wrapped[VerifierV] = 0;
            foreach (var (agent, json) in await store.ListVerifierConfigsAsync(ct).ConfigureAwait(false))
            {
                JsonNode? config;
                try { config = JsonNode.Parse(json); }
                catch (System.Text.Json.JsonException) { continue; }
                if (config is not JsonObject o) continue;
                var changed = new List<string>();
                foreach (var (field, kind) in new[] { ("revocation_key", RevocationKeys), ("v", VerifierV) })
                {
                    var value = Field(o, field);
                    if (string.IsNullOrEmpty(value)) continue;
                    if (SecretSealer.IsSealed(value)) { already++; continue; }
                    o[field] = ring.Seal(value, VerifierRow(agent, field));
                    changed.Add(kind);
                }
                if (changed.Count == 0) continue;
                bool done = await store.ReplaceVerifierConfigAsync(agent, json, o.ToJsonString(), ct).ConfigureAwait(false);
                foreach (var kind in changed) Count(kind, done);
            }
        }
        await store.ScrubAsync(ct).ConfigureAwait(false);
        var result = new SecretMigrationResult { Target = target, MasterKeyId = ring.PrimaryId, Wrapped = wrapped, AlreadyWrapped = already, Skipped = skipped };
        try
        {
            await store.AppendAuditAsync(new AuditEntry
            {
                Actor = actor, Action = "station.secrets.migrate", Target = target, Source = source, Outcome = AuditOutcome.Success,
                Detail = $"wrapped {string.Join(", ", wrapped.Select(w => $"{w.Key}={w.Value}"))}; already wrapped {already}; skipped {skipped}; master key {ring.PrimaryId}",
            }, ct).ConfigureAwait(false);
        }
        catch (StoreUnavailableException) { }
        return result;
    }
}
