using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Kms;

/// <summary>Who asks, from where: for the audit log.</summary>
public sealed record KmsCaller(string Actor, string Source = "local");

/// <summary>
/// The KMS engine: providers (spec 002) with HKDF-derived data keys, keys and versions (spec 004), users, sessions and tokens.
/// Secrets reach the store only wrapped by the master key; none is logged or returned by a listing. Every change is audited.
/// </summary>
public sealed partial class KmsEngine : IDisposable
{
    /// <summary>HKDF info prefix of provider data keys; the key identifier (UTF-8) follows.</summary>
    public const string DataKeyInfoPrefix = "tpmprov-kms-data-key-v1:";
    public const int KeyDerivationKeyBytes = 32;
    private const string MasterCheck = "master_key_check";

    private readonly IStore _store;
    private readonly MasterKeyCipher _cipher;
    private readonly Dictionary<string, IKeySource> _sources;

    private KmsEngine(IStore store, MasterKeyCipher cipher, KmsSettings settings, IEnumerable<IKeySource> sources)
    {
        _store = store;
        _cipher = cipher;
        Settings = settings;
        _sources = sources.ToDictionary(s => s.Tier, StringComparer.Ordinal);
    }

    public KmsSettings Settings { get; }
    public IStore Store => _store;

    /// <summary>The master-key wrapper the settings choose, with its files under <paramref name="kmsDirectory"/>.</summary>
    public static IMasterKeyWrapper CreateWrapper(KmsSettings settings, string kmsDirectory)
    {
        ArgumentNullException.ThrowIfNull(settings);
        return settings.MasterKey switch
        {
            MasterKeyKind.Tpm => new TpmSealedMasterKey(kmsDirectory, settings.MasterKeyTpm),
            MasterKeyKind.Pkcs11 => new Pkcs11MasterKey(kmsDirectory, settings.MasterKeyPkcs11
                ?? throw new KmsException(KmsErrorKind.Unavailable, null, "The PKCS#11 master key needs an HSM (library, token label, PIN).")),
            MasterKeyKind.InsecureFile => new InsecureFileMasterKey(kmsDirectory),
            _ => throw new ArgumentOutOfRangeException(nameof(settings)),
        };
    }

    /// <summary>
    /// Loads (or creates) the master key and checks it against the store: a store first used with another master key is refused
    /// (<see cref="KmsErrorKind.Unavailable"/>) rather than producing keys that do not unwrap.
    /// </summary>
    public static async Task<KmsEngine> OpenAsync(IStore store, IMasterKeyWrapper wrapper, KmsSettings? settings = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(wrapper);
        settings ??= new KmsSettings();
        var key = wrapper.LoadOrCreate();
        var cipher = new MasterKeyCipher(key);
        CryptographicOperations.ZeroMemory(key);
        try
        {
            var check = await store.InitKmsMetaAsync(MasterCheck, cipher.Wrap(new byte[16], MasterCheck), ct).ConfigureAwait(false);
            try { cipher.Unwrap(check, MasterCheck); }
            catch (KmsException)
            {
                throw new KmsException(KmsErrorKind.Unavailable, null, $"The KMS store was set up with another master key than {wrapper.Description}.");
            }
            var sources = new List<IKeySource>();
            if (settings.HsmLunaSource is { } luna) sources.Add(new Pkcs11KeySource(luna, "hsm-luna"));
            return new KmsEngine(store, cipher, settings, sources);
        }
        catch
        {
            cipher.Dispose();
            throw;
        }
    }

    // ------------------------------------------------------------------ validation

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$", RegexOptions.CultureInvariant)]
    private static partial Regex NamePattern();

    /// <summary>Checks a provider, key or user name: 1-64 characters, letters, digits, '.', '_', ':', '-', starting with a letter or digit.</summary>
    public static void CheckName(string? name, string field)
    {
        if (string.IsNullOrEmpty(name)) throw new KmsException(KmsErrorKind.InvalidArgument, field, $"{field} is required and must not be empty");
        if (!NamePattern().IsMatch(name))
            throw new KmsException(KmsErrorKind.InvalidArgument, field, $"{field} must be 1-64 letters, digits, '.', '_', ':' or '-', starting with a letter or digit");
    }

    private static void CheckKeyId(string? keyId, string field)
    {
        if (string.IsNullOrWhiteSpace(keyId)) throw new KmsException(KmsErrorKind.InvalidArgument, field, $"{field} is required and must not be empty");
        if (keyId.Length > 256 || keyId.Any(char.IsControl))
            throw new KmsException(KmsErrorKind.InvalidArgument, field, $"{field} must be at most 256 printable characters");
    }

    /// <summary>Decodes a key derivation key: base64 of exactly 32 bytes.</summary>
    public static byte[] DecodeKeyDerivationKey(string? base64, string field = "native_spec.key_derivation_key")
    {
        if (string.IsNullOrEmpty(base64)) throw new KmsException(KmsErrorKind.InvalidArgument, field, $"{field} is required");
        byte[] kdk;
        try { kdk = Convert.FromBase64String(base64); }
        catch (FormatException) { throw new KmsException(KmsErrorKind.InvalidArgument, field, $"{field} must be base64"); }
        if (kdk.Length != KeyDerivationKeyBytes)
        {
            CryptographicOperations.ZeroMemory(kdk);
            throw new KmsException(KmsErrorKind.InvalidArgument, field, $"{field} must decode to {KeyDerivationKeyBytes} bytes (256 bits)");
        }
        return kdk;
    }

    private async Task AuditAsync(KmsCaller caller, string action, string? target, AuditOutcome outcome, string? detail, CancellationToken ct) =>
        await _store.AppendAuditAsync(new AuditEntry { Actor = caller.Actor, Source = caller.Source, Action = action, Target = target, Outcome = outcome, Detail = detail }, ct).ConfigureAwait(false);

    /// <summary>Audits a refused change (the surfaces call it for errors they map), so refusals show beside successes.</summary>
    public Task AuditRefusalAsync(KmsCaller caller, string action, string? target, KmsException error, CancellationToken ct = default) =>
        AuditAsync(caller, action, target, error.Kind is KmsErrorKind.Unauthenticated or KmsErrorKind.Unauthorized ? AuditOutcome.Denied
            : error.Kind == KmsErrorKind.Unavailable ? AuditOutcome.Failed : AuditOutcome.Rejected, $"{error.Kind}: {error.Message}", ct);

    // ------------------------------------------------------------------ providers (spec 002)

    private static string KdkAad(string provider) => $"kms:provider:{provider}:kdk";

    public async Task CreateProviderAsync(string? name, string? keyId, byte[] keyDerivationKey, KmsCaller caller, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(keyDerivationKey);
        CheckName(name, "provider");
        CheckKeyId(keyId, "native_spec.key_id");
        if (keyDerivationKey.Length != KeyDerivationKeyBytes)
            throw new KmsException(KmsErrorKind.InvalidArgument, "native_spec.key_derivation_key", $"native_spec.key_derivation_key must be {KeyDerivationKeyBytes} bytes (256 bits)");
        var now = DateTimeOffset.UtcNow;
        bool added = await _store.InsertKmsProviderAsync(new KmsProviderRecord
        {
            Name = name!, KeyId = keyId!, WrappedKdk = _cipher.Wrap(keyDerivationKey, KdkAad(name!)), Created = now, Updated = now,
        }, ct).ConfigureAwait(false);
        if (!added) throw new KmsException(KmsErrorKind.AlreadyExists, "provider", $"provider '{name}' already exists");
        await AuditAsync(caller, "kms.provider.create", name, AuditOutcome.Success, $"key_id={keyId}", ct).ConfigureAwait(false);
    }

    public async Task<KmsProviderInfo> GetProviderAsync(string name, CancellationToken ct = default)
    {
        var p = await _store.GetKmsProviderAsync(name, ct).ConfigureAwait(false)
            ?? throw new KmsException(KmsErrorKind.NotFound, "provider", $"provider '{name}' does not exist");
        return Info(p);
    }

    public async Task<IReadOnlyList<KmsProviderInfo>> ListProvidersAsync(CancellationToken ct = default) =>
        (await _store.ListKmsProvidersAsync(ct).ConfigureAwait(false)).Select(Info).ToList();

    private static KmsProviderInfo Info(KmsProviderRecord p) => new(p.Name, p.KeyId, p.Health, p.Created, p.Updated);

    /// <summary>Changes the provider's key id (vSphere's update spec); null leaves it unchanged.</summary>
    public async Task UpdateProviderAsync(string name, string? keyId, KmsCaller caller, CancellationToken ct = default)
    {
        if (keyId is not null) CheckKeyId(keyId, "native_spec.key_id");
        var p = await _store.GetKmsProviderAsync(name, ct).ConfigureAwait(false)
            ?? throw new KmsException(KmsErrorKind.NotFound, "provider", $"provider '{name}' does not exist");
        if (keyId is null || keyId == p.KeyId) return;
        await _store.UpdateKmsProviderAsync(name, keyId, DateTimeOffset.UtcNow, ct).ConfigureAwait(false);
        await AuditAsync(caller, "kms.provider.update", name, AuditOutcome.Success, $"key_id={keyId}", ct).ConfigureAwait(false);
    }

    public async Task DeleteProviderAsync(string name, KmsCaller caller, CancellationToken ct = default)
    {
        if (!await _store.DeleteKmsProviderAsync(name, ct).ConfigureAwait(false))
            throw new KmsException(KmsErrorKind.NotFound, "provider", $"provider '{name}' does not exist");
        await AuditAsync(caller, "kms.provider.delete", name, AuditOutcome.Success, null, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// The data key a provider yields for <paramref name="keyIdentifier"/>: HKDF-SHA256 with the provider's key derivation key
    /// as input keying material, no salt, info <c>"tpmprov-kms-data-key-v1:" || UTF-8(identifier)</c>, 32 bytes. The same
    /// identifier always yields the same key; nothing per key is stored.
    /// </summary>
    public async Task<byte[]> DeriveDataKeyAsync(string provider, string? keyIdentifier, CancellationToken ct = default)
    {
        CheckKeyId(keyIdentifier, "key_identifier");
        var p = await _store.GetKmsProviderAsync(provider, ct).ConfigureAwait(false)
            ?? throw new KmsException(KmsErrorKind.NotFound, "provider", $"provider '{provider}' does not exist");
        var kdk = _cipher.Unwrap(p.WrappedKdk, KdkAad(p.Name));
        try { return DeriveDataKey(kdk, keyIdentifier!); }
        finally { CryptographicOperations.ZeroMemory(kdk); }
    }

    /// <summary>The derivation itself (see <see cref="DeriveDataKeyAsync"/>), for clients that hold the key derivation key.</summary>
    public static byte[] DeriveDataKey(ReadOnlySpan<byte> keyDerivationKey, string keyIdentifier) =>
        HKDF.DeriveKey(HashAlgorithmName.SHA256, keyDerivationKey.ToArray(), 32, [], Encoding.UTF8.GetBytes(DataKeyInfoPrefix + keyIdentifier));

    public void Dispose() => _cipher.Dispose();
}
