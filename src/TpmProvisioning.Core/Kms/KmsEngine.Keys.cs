using System.Security.Cryptography;
using System.Text;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Kms;

/// <summary>Keys and versions (spec 004): native versions get fresh material, uploaded ones a source key's; the newest is primary.</summary>
public sealed partial class KmsEngine
{
    /// <summary>Source key tiers of spec 004.</summary>
    public static readonly IReadOnlyList<string> SourceKeyTiers = ["local", "dsm", "hsm-luna"];

    private static string MaterialAad(string versionId) => $"kms:key-version:{versionId}:material";

    private string Ocid(string type) => $"ocid1.{type}.oc1.{Settings.OciRegion}.tpmprov.{Convert.ToHexString(RandomNumberGenerator.GetBytes(16)).ToLowerInvariant()}";

    /// <summary>Creates an AES-256 key with a first, native, primary version.</summary>
    public async Task<KmsKeyInfo> CreateKeyAsync(string? name, string? compartmentId, KmsCaller caller, CancellationToken ct = default)
    {
        CheckName(name, "name");
        // Keys are addressed by id or name, ids first: a name in the form of an id could never be addressed by its name.
        if (Guid.TryParse(name, out _))
            throw new KmsException(KmsErrorKind.InvalidArgument, "name", "name must not have the form of a key id (a UUID)");
        if (compartmentId is not null && (compartmentId.Length is 0 or > 256 || compartmentId.Any(char.IsControl)))
            throw new KmsException(KmsErrorKind.InvalidArgument, "compartment_id", "compartment_id must be 1-256 printable characters");
        var now = DateTimeOffset.UtcNow;
        var key = new KmsKeyRecord
        {
            Id = Guid.NewGuid().ToString(), Name = name!, CompartmentId = compartmentId ?? Settings.DefaultCompartmentId,
            VaultId = Ocid("vault"), OciKeyId = Ocid("key"), Created = now, Updated = now,
        };
        var material = RandomNumberGenerator.GetBytes(key.Length);
        var first = NewVersion(key.Id, material, "INTERNAL", "native", null, null, now);
        CryptographicOperations.ZeroMemory(material);
        if (!await _store.InsertKmsKeyAsync(key, first, ct).ConfigureAwait(false))
            throw new KmsException(KmsErrorKind.AlreadyExists, "name", $"a key named '{name}' already exists");
        await AuditAsync(caller, "kms.key.create", key.Id, AuditOutcome.Success, $"name={name}", ct).ConfigureAwait(false);
        return await GetKeyAsync(key.Id, ct).ConfigureAwait(false);
    }

    private KmsKeyVersionRecord NewVersion(string keyId, byte[] material, string origin, string materialOrigin, string? sourceId, string? tier, DateTimeOffset now)
    {
        var id = Guid.NewGuid().ToString();
        return new KmsKeyVersionRecord
        {
            Id = id, KeyId = keyId, OciVersionId = Ocid("keyversion"), Origin = origin, MaterialOrigin = materialOrigin,
            SourceKeyIdentifier = sourceId, SourceKeyTier = tier, WrappedMaterial = _cipher.Wrap(material, MaterialAad(id)),
            LifecycleState = "ENABLED", IsPrimary = true, Created = now, Updated = now,
        };
    }

    public async Task<KmsKeyInfo> GetKeyAsync(string idOrName, CancellationToken ct = default)
    {
        var key = await RequireKeyAsync(idOrName, ct).ConfigureAwait(false);
        return KeyInfo(key, await _store.ListKmsKeyVersionsAsync(key.Id, ct).ConfigureAwait(false));
    }

    public async Task<IReadOnlyList<KmsKeyInfo>> ListKeysAsync(CancellationToken ct = default)
    {
        var list = new List<KmsKeyInfo>();
        foreach (var k in await _store.ListKmsKeysAsync(ct).ConfigureAwait(false))
            list.Add(KeyInfo(k, await _store.ListKmsKeyVersionsAsync(k.Id, ct).ConfigureAwait(false)));
        return list;
    }

    private async Task<KmsKeyRecord> RequireKeyAsync(string idOrName, CancellationToken ct) =>
        await _store.GetKmsKeyAsync(idOrName, ct).ConfigureAwait(false)
            ?? throw new KmsException(KmsErrorKind.NotFound, "id", $"key '{idOrName}' does not exist");

    private static KmsKeyInfo KeyInfo(KmsKeyRecord k, IReadOnlyList<KmsKeyVersionRecord> versions)
    {
        var primary = versions.FirstOrDefault(v => v.IsPrimary);
        return new KmsKeyInfo
        {
            Id = k.Id, Name = k.Name, CompartmentId = k.CompartmentId, VaultId = k.VaultId, OciKeyId = k.OciKeyId, Algorithm = k.Algorithm,
            Length = k.Length, CurrentVersionId = primary?.Id, CurrentOciVersionId = primary?.OciVersionId, VersionCount = versions.Count,
            Created = k.Created, Updated = k.Updated,
        };
    }

    private static KmsKeyVersionInfo VersionInfo(KmsKeyRecord k, KmsKeyVersionRecord v) => new()
    {
        Id = v.Id, KeyId = k.Id, KeyName = k.Name, Number = v.Number, OciVersionId = v.OciVersionId, OciKeyId = k.OciKeyId,
        CompartmentId = k.CompartmentId, VaultId = k.VaultId, Origin = v.Origin, KeyMaterialOrigin = v.MaterialOrigin,
        SourceKeyIdentifier = v.SourceKeyIdentifier, SourceKeyTier = v.SourceKeyTier, LifecycleState = v.LifecycleState,
        IsPrimary = v.IsPrimary, Created = v.Created, Updated = v.Updated,
    };

    /// <summary>
    /// Adds a version that becomes primary (spec 004). Native: fresh material, origin INTERNAL; the source fields are ignored.
    /// Uploaded: the source key's material, origin EXTERNAL: tier <c>local</c> (default) is a key of this store (its primary
    /// version), other tiers need a configured source (400 naming the tier otherwise).
    /// </summary>
    public async Task<KmsKeyVersionInfo> AddVersionAsync(string keyIdOrName, bool isNative, string? sourceKeyIdentifier, string? sourceKeyTier, KmsCaller caller, CancellationToken ct = default)
    {
        var key = await RequireKeyAsync(keyIdOrName, ct).ConfigureAwait(false);
        byte[] material;
        string origin, materialOrigin;
        string? tier = null, sourceId = null;
        if (isNative)
        {
            material = RandomNumberGenerator.GetBytes(key.Length);
            origin = "INTERNAL";
            materialOrigin = "native";
        }
        else
        {
            tier = string.IsNullOrEmpty(sourceKeyTier) ? "local" : sourceKeyTier;
            if (!SourceKeyTiers.Contains(tier))
                throw new KmsException(KmsErrorKind.InvalidArgument, "source_key_tier", $"source_key_tier must be one of {string.Join(", ", SourceKeyTiers)}");
            if (string.IsNullOrWhiteSpace(sourceKeyIdentifier))
                throw new KmsException(KmsErrorKind.InvalidArgument, "source_key_identifier", "source_key_identifier is required when is_native is false");
            sourceId = sourceKeyIdentifier;
            material = tier == "local" ? await LocalSourceMaterialAsync(key, sourceKeyIdentifier, ct).ConfigureAwait(false)
                : _sources.TryGetValue(tier, out var source) ? source.Export(sourceKeyIdentifier)
                : throw new KmsException(KmsErrorKind.InvalidArgument, "source_key_tier", $"source_key_tier '{tier}' has no key source configured on this server");
            if (material.Length != key.Length)
            {
                CryptographicOperations.ZeroMemory(material);
                throw new KmsException(KmsErrorKind.InvalidArgument, "source_key_identifier", $"the source key is {material.Length * 8} bits; this key needs {key.Length * 8}");
            }
            origin = "EXTERNAL";
            materialOrigin = tier;
        }
        var version = NewVersion(key.Id, material, origin, materialOrigin, sourceId, tier, DateTimeOffset.UtcNow);
        CryptographicOperations.ZeroMemory(material);
        var added = await _store.AddKmsKeyVersionAsync(version, ct).ConfigureAwait(false);
        await AuditAsync(caller, "kms.key.version.create", key.Id, AuditOutcome.Success,
            $"version={added.Id} number={added.Number} origin={origin} material={materialOrigin}" + (tier is null || isNative ? "" : $" source={sourceId}"), ct).ConfigureAwait(false);
        return VersionInfo(key, added);
    }

    private async Task<byte[]> LocalSourceMaterialAsync(KmsKeyRecord target, string sourceId, CancellationToken ct)
    {
        var source = await _store.GetKmsKeyAsync(sourceId, ct).ConfigureAwait(false)
            ?? throw new KmsException(KmsErrorKind.InvalidArgument, "source_key_identifier", $"no key '{sourceId}' in the local key store");
        if (source.Id == target.Id)
            throw new KmsException(KmsErrorKind.InvalidArgument, "source_key_identifier", "a key cannot be its own source");
        var primary = (await _store.ListKmsKeyVersionsAsync(source.Id, ct).ConfigureAwait(false)).FirstOrDefault(v => v.IsPrimary)
            ?? throw new KmsException(KmsErrorKind.InvalidArgument, "source_key_identifier", $"the local key '{sourceId}' has no primary version");
        return _cipher.Unwrap(primary.WrappedMaterial, MaterialAad(primary.Id));
    }

    public async Task<IReadOnlyList<KmsKeyVersionInfo>> ListVersionsAsync(string keyIdOrName, CancellationToken ct = default)
    {
        var key = await RequireKeyAsync(keyIdOrName, ct).ConfigureAwait(false);
        return (await _store.ListKmsKeyVersionsAsync(key.Id, ct).ConfigureAwait(false)).Select(v => VersionInfo(key, v)).ToList();
    }

    /// <summary>A version by its id, its OCI version id, or its number ("1", "2"...); null or empty: the primary.</summary>
    public async Task<KmsKeyVersionInfo> GetVersionAsync(string keyIdOrName, string? version, CancellationToken ct = default) =>
        (await FindVersionAsync(keyIdOrName, version, ct).ConfigureAwait(false)).Info;

    private async Task<(KmsKeyVersionInfo Info, KmsKeyVersionRecord Record)> FindVersionAsync(string keyIdOrName, string? version, CancellationToken ct)
    {
        var key = await RequireKeyAsync(keyIdOrName, ct).ConfigureAwait(false);
        var versions = await _store.ListKmsKeyVersionsAsync(key.Id, ct).ConfigureAwait(false);
        var v = string.IsNullOrEmpty(version) ? versions.FirstOrDefault(x => x.IsPrimary)
            : versions.FirstOrDefault(x => x.Id == version || x.OciVersionId == version || x.Number.ToString(System.Globalization.CultureInfo.InvariantCulture) == version);
        if (v is null) throw new KmsException(KmsErrorKind.NotFound, "version", $"key '{keyIdOrName}' has no version '{version}'");
        return (VersionInfo(key, v), v);
    }

    /// <summary>The material of a version (null: the primary). Only for the attestation-gated release and local encryption.</summary>
    public async Task<(KmsKeyVersionInfo Version, byte[] Material)> GetVersionMaterialAsync(string keyIdOrName, string? version, CancellationToken ct = default)
    {
        var (info, rec) = await FindVersionAsync(keyIdOrName, version, ct).ConfigureAwait(false);
        if (rec.LifecycleState != "ENABLED") throw new KmsException(KmsErrorKind.InvalidArgument, "version", $"version {rec.Number} is {rec.LifecycleState}");
        return (info, _cipher.Unwrap(rec.WrappedMaterial, MaterialAad(rec.Id)));
    }

    /// <summary>
    /// Encrypts under the key's primary version: <c>0x01 || len || version id (ASCII) || nonce(12) || ciphertext || tag(16)</c>,
    /// AES-256-GCM with the key id and version id as associated data. <see cref="DecryptAsync"/> picks the version from the blob.
    /// </summary>
    public async Task<byte[]> EncryptAsync(string keyIdOrName, byte[] plaintext, CancellationToken ct = default)
    {
        var (v, material) = await GetVersionMaterialAsync(keyIdOrName, null, ct).ConfigureAwait(false);
        try { return KmsEnvelope.Seal(v.KeyId, v.Id, material, plaintext); }
        finally { CryptographicOperations.ZeroMemory(material); }
    }

    public async Task<byte[]> DecryptAsync(string keyIdOrName, byte[] blob, CancellationToken ct = default)
    {
        var versionId = KmsEnvelope.VersionOf(blob);
        var (v, material) = await GetVersionMaterialAsync(keyIdOrName, versionId, ct).ConfigureAwait(false);
        try { return KmsEnvelope.Open(v.KeyId, material, blob); }
        finally { CryptographicOperations.ZeroMemory(material); }
    }
}

/// <summary>The ciphertext format of <see cref="KmsEngine.EncryptAsync"/>, usable by devices holding a released version's material.</summary>
public static class KmsEnvelope
{
    public static byte[] Seal(string keyId, string versionId, byte[] material, byte[] plaintext)
    {
        var vid = Encoding.ASCII.GetBytes(versionId);
        if (vid.Length > 255) throw new ArgumentException("Version id too long.", nameof(versionId));
        var blob = new byte[2 + vid.Length + 12 + plaintext.Length + 16];
        blob[0] = 1;
        blob[1] = (byte)vid.Length;
        vid.CopyTo(blob, 2);
        int o = 2 + vid.Length;
        RandomNumberGenerator.Fill(blob.AsSpan(o, 12));
        using var aes = new AesGcm(material, 16);
        aes.Encrypt(blob.AsSpan(o, 12), plaintext, blob.AsSpan(o + 12, plaintext.Length), blob.AsSpan(o + 12 + plaintext.Length), Encoding.ASCII.GetBytes(keyId + "/" + versionId));
        return blob;
    }

    public static string VersionOf(byte[] blob)
    {
        if (blob is null || blob.Length < 2 + 12 + 16 || blob[0] != 1 || blob.Length < 2 + blob[1] + 28)
            throw new KmsException(KmsErrorKind.InvalidArgument, "ciphertext", "not a KMS ciphertext");
        return Encoding.ASCII.GetString(blob, 2, blob[1]);
    }

    public static byte[] Open(string keyId, byte[] material, byte[] blob)
    {
        var versionId = VersionOf(blob);
        int o = 2 + blob[1];
        var plain = new byte[blob.Length - o - 28];
        using var aes = new AesGcm(material, 16);
        try { aes.Decrypt(blob.AsSpan(o, 12), blob.AsSpan(o + 12, plain.Length), blob.AsSpan(blob.Length - 16), plain, Encoding.ASCII.GetBytes(keyId + "/" + versionId)); }
        catch (AuthenticationTagMismatchException) { throw new KmsException(KmsErrorKind.InvalidArgument, "ciphertext", "the ciphertext does not authenticate under that key version"); }
        return plain;
    }
}
