using System.Globalization;
using System.Text;
using System.Text.Json;

namespace TpmProvisioning.Station;

/// <summary>The station's signing-key, PKCS#11 and secrets-at-rest routes (docs/rest/station.md), read back into the engine's types.</summary>
public sealed partial class StationClient
{
    private async Task<JsonElement> PostJsonAsync(string path, object body, CancellationToken ct)
    {
        var json = JsonSerializer.Serialize(body);
        var r = await SendAsync(HttpMethod.Post, path, new StringContent(json, Encoding.UTF8, "application/json"), ct).ConfigureAwait(false);
        return JsonDocument.Parse(r).RootElement.Clone();
    }

    private static long L(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt64() : 0;
    private static bool B(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.True;

    internal static ProvisioningSigningKey ReadSigningKey(JsonElement k) => new()
    {
        Label = S(k, "label") ?? S(k, "id") ?? "",
        Location = S(k, "location") ?? "",
        Algorithm = S(k, "algorithm") ?? "",
        KeySize = (int)L(k, "keySize"),
        Fingerprint = S(k, "fingerprint") ?? "",
        Subject = S(k, "subject") ?? "",
        NotAfter = T(k, "notAfter"),
        Active = B(k, "active"),
        Wrapped = B(k, "wrapped"),
        WrapKeyId = S(k, "wrapKeyId"),
        Pkcs11Module = S(k, "path"),
        Pkcs11Token = S(k, "pkcs11Token"),
        Pkcs11Key = S(k, "pkcs11Key"),
        Added = S(k, "addedAt") is null ? null : T(k, "addedAt"),
    };

    public async Task<IReadOnlyList<ProvisioningSigningKey>> GetSigningKeysAsync(CancellationToken ct = default)
    {
        var r = await GetJsonAsync("options/keys", ct).ConfigureAwait(false);
        return r.GetProperty("keys").EnumerateArray().Select(ReadSigningKey).ToList();
    }

    public async Task<ProvisioningSigningKey> UploadSigningKeyAsync(string label, string certificatePem, string keyPem, CancellationToken ct = default) =>
        ReadSigningKey(await PostJsonAsync("options/upload-key", new Dictionary<string, string> { ["label"] = label, ["certificate"] = certificatePem, ["key"] = keyPem }, ct).ConfigureAwait(false));

    /// <summary><paramref name="operation"/> is <c>activate</c> or <c>wrap</c>.</summary>
    public async Task<ProvisioningSigningKey> SigningKeyOperationAsync(string operation, string label, CancellationToken ct = default) =>
        ReadSigningKey(await PostJsonAsync($"options/keys/{operation}", new Dictionary<string, string> { ["id"] = label }, ct).ConfigureAwait(false));

    public async Task RemoveSigningKeyAsync(string label, CancellationToken ct = default) =>
        await PostJsonAsync("options/keys/remove", new Dictionary<string, string> { ["id"] = label }, ct).ConfigureAwait(false);

    private static Dictionary<string, object?> Pkcs11Body(Pkcs11KeyRequest r) => new()
    {
        ["label"] = r.Label, ["module"] = r.Module, ["token_label"] = r.TokenLabel, ["slot"] = r.Slot?.ToString(CultureInfo.InvariantCulture),
        ["key_label"] = r.KeyLabel, ["key_id"] = r.KeyId, ["certificate"] = r.CertificatePem,
    };

    public async Task<ProvisioningSigningKey> RegisterPkcs11KeyAsync(Pkcs11KeyRequest request, CancellationToken ct = default) =>
        ReadSigningKey(await PostJsonAsync("options/keys/register-pkcs11", Pkcs11Body(request), ct).ConfigureAwait(false));

    public async Task<SigningKeyValidation> ValidateKeyAsync(string? certificatePem, string? keyPem, Pkcs11KeyRequest? pkcs11, CancellationToken ct = default)
    {
        var body = pkcs11 is not null ? Pkcs11Body(pkcs11) : new Dictionary<string, object?> { ["certificate"] = certificatePem, ["key"] = keyPem };
        body["type"] = pkcs11 is not null ? "pkcs11" : "pem";
        var r = await PostJsonAsync("options/validate-key", body, ct).ConfigureAwait(false);
        return new SigningKeyValidation
        {
            Valid = B(r, "valid"), Type = S(r, "type") ?? "", Algorithm = S(r, "algorithm"), KeySize = (int)L(r, "keySize"), Fingerprint = S(r, "fingerprint"),
            Subject = S(r, "subject"), Message = S(r, "message") ?? "",
        };
    }

    public async Task<IReadOnlyList<Pkcs11ModuleStatus>> GetPkcs11StatusAsync(CancellationToken ct = default)
    {
        var r = await GetJsonAsync("options/pkcs11-status", ct).ConfigureAwait(false);
        return r.GetProperty("modules").EnumerateArray().Select(m => new Pkcs11ModuleStatus
        {
            Module = S(m, "module") ?? "", Exists = B(m, "exists"), Loaded = B(m, "loaded"), Error = S(m, "error"),
            Tokens = m.GetProperty("tokens").EnumerateArray().Select(t => t.GetString() ?? "").ToList(),
            Keys = m.GetProperty("keys").EnumerateArray().Select(t => t.GetString() ?? "").ToList(),
        }).ToList();
    }

    public async Task<IReadOnlyList<Pkcs11TokenInfo>> DiscoverPkcs11Async(string module, CancellationToken ct = default)
    {
        var r = await PostJsonAsync("options/pkcs11-discover", new Dictionary<string, string> { ["module"] = module }, ct).ConfigureAwait(false);
        return r.GetProperty("tokens").EnumerateArray().Select(t => new Pkcs11TokenInfo
        {
            Module = module, Slot = t.GetProperty("slot").GetUInt64(), Label = S(t, "label") ?? "", Model = S(t, "model"), Manufacturer = S(t, "manufacturer"),
            SerialNumber = S(t, "serial"), Initialized = B(t, "initialized"), PinConfigured = B(t, "pinConfigured"), LoggedIn = B(t, "loggedIn"),
            Objects = t.GetProperty("objects").EnumerateArray().Select(o => new Pkcs11ObjectInfo(S(o, "class") ?? "", S(o, "label"), S(o, "id"), S(o, "keyType"))).ToList(),
        }).ToList();
    }

    public async Task<IReadOnlyList<Pkcs11PinStatus>> GetPkcs11PinStatusAsync(CancellationToken ct = default)
    {
        var r = await GetJsonAsync("options/pkcs11-pin-status", ct).ConfigureAwait(false);
        return r.GetProperty("tokens").EnumerateArray().Select(t => new Pkcs11PinStatus(S(t, "module") ?? "", S(t, "token_label") ?? "", B(t, "configured"), B(t, "wrapped"),
            S(t, "wrapKeyId"), T(t, "updated"))).ToList();
    }

    /// <summary>Stores (or with an empty <paramref name="pin"/> removes) a token's PIN; returns whether one is now stored.</summary>
    public async Task<bool> SetPkcs11PinAsync(string module, string? tokenLabel, ulong? slot, string? pin, CancellationToken ct = default)
    {
        var r = await PostJsonAsync("options/set-pkcs11-pin", new Dictionary<string, string?>
        {
            ["module"] = module, ["token_label"] = tokenLabel, ["slot"] = slot?.ToString(CultureInfo.InvariantCulture), ["pin"] = pin,
        }, ct).ConfigureAwait(false);
        return B(r, "configured");
    }

    internal static SecretStatusReport ReadSecretStatus(JsonElement r) => new()
    {
        MasterKeyId = S(r, "masterKeyId"), MasterKey = S(r, "masterKey"), MasterKeyKind = S(r, "masterKeyKind"),
        Kinds = r.GetProperty("kinds").EnumerateArray().Select(k => new SecretKindStatus
        {
            Kind = S(k, "kind") ?? "", Total = L(k, "total"), Plaintext = L(k, "plaintext"), WrappedByUnknownKey = L(k, "wrappedByUnknownKey"),
            WrappedBy = k.GetProperty("wrappedBy").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetInt64()),
        }).ToList(),
    };

    public async Task<SecretStatusReport> GetEncryptionStatusAsync(CancellationToken ct = default) =>
        ReadSecretStatus(await GetJsonAsync("options/encryption-status", ct).ConfigureAwait(false));

    public async Task<SecretMigrationResult> MigrateSecretsAsync(string target, CancellationToken ct = default)
    {
        var r = await PostJsonAsync("options/migrate-secrets", new Dictionary<string, string> { ["target"] = target }, ct).ConfigureAwait(false);
        return new SecretMigrationResult
        {
            Target = S(r, "target") ?? target, MasterKeyId = S(r, "masterKeyId"), AlreadyWrapped = L(r, "alreadyWrapped"), Skipped = L(r, "skipped"),
            Wrapped = r.GetProperty("wrapped").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetInt64()),
        };
    }
}
