using System.Security.Cryptography;

namespace TpmProvisioning.Kms;

/// <summary>
/// The master keys a data path's secrets may be sealed with: the primary one (which seals everything new) and any other known
/// one (the verifier's fallback key file), each with a stable public key id: the first 8 bytes of SHA-256 over a key derived
/// from the master key (HKDF-SHA256, info <c>tpmprov-master-key-id-v1</c>), in lower-case hex. The id says which key wrapped a
/// secret without revealing anything about the key.
/// </summary>
public sealed class SecretKeyRing : IDisposable
{
    private sealed record Entry(string Id, string Description, MasterKeyKind Kind, SecretSealer Sealer, MasterKeyCipher Cipher);
    private readonly List<Entry> _keys = [];

    /// <summary>An empty ring: nothing can be sealed.</summary>
    public SecretKeyRing() { }

    /// <summary>The stable id of <paramref name="masterKey"/>.</summary>
    public static string KeyIdOf(ReadOnlySpan<byte> masterKey)
    {
        Span<byte> derived = stackalloc byte[32];
        HKDF.DeriveKey(HashAlgorithmName.SHA256, masterKey, derived, [], "tpmprov-master-key-id-v1"u8);
        var id = Convert.ToHexString(SHA256.HashData(derived)[..8]).ToLowerInvariant();
        CryptographicOperations.ZeroMemory(derived);
        return id;
    }

    /// <summary>Adds a master key (the first one added is the primary); the caller zeroes its copy.</summary>
    public void Add(ReadOnlySpan<byte> masterKey, string description, MasterKeyKind kind)
    {
        var id = KeyIdOf(masterKey);
        if (_keys.Any(k => k.Id == id)) return;
        _keys.Add(new Entry(id, description, kind, new SecretSealer(masterKey, description), new MasterKeyCipher(masterKey)));
    }

    /// <summary>True when a master key exists to seal with.</summary>
    public bool CanSeal => _keys.Count > 0;
    /// <summary>The id of the key that seals new secrets, or null.</summary>
    public string? PrimaryId => _keys.Count > 0 ? _keys[0].Id : null;
    public string? PrimaryDescription => _keys.Count > 0 ? _keys[0].Description : null;
    public MasterKeyKind? PrimaryKind => _keys.Count > 0 ? _keys[0].Kind : null;
    /// <summary>Every known key: id, where it lives (never secret), kind.</summary>
    public IEnumerable<(string Id, string Description, MasterKeyKind Kind)> Keys => _keys.Select(k => (k.Id, k.Description, k.Kind));

    /// <summary>The sealed form of <paramref name="plaintext"/> under the primary key (an already sealed value is returned as it is).</summary>
    public string Seal(string plaintext, string rowIdentity)
    {
        if (_keys.Count == 0) throw new InvalidOperationException("No master key to seal with.");
        return _keys[0].Sealer.Seal(plaintext, rowIdentity)!;
    }

    /// <summary>The plaintext of a value (a plaintext value as it is); <see cref="KmsException"/> when no known key opens it.</summary>
    public string Open(string value, string rowIdentity)
    {
        if (!SecretSealer.IsSealed(value)) return value;
        KmsException? last = null;
        foreach (var k in _keys)
        {
            try { return k.Sealer.Open(value, rowIdentity)!; }
            catch (KmsException ex) { last = ex; }
        }
        throw last ?? new KmsException(KmsErrorKind.Unavailable, null, $"The secret {rowIdentity} is sealed, but no master key is available.");
    }

    /// <summary>The id of the known key that opens a sealed value, or null.</summary>
    public string? Identify(string value, string rowIdentity)
    {
        foreach (var k in _keys)
        {
            try { k.Sealer.Open(value, rowIdentity); return k.Id; }
            catch (KmsException) { }
        }
        return null;
    }

    /// <summary>The id of the known key that unwraps a KMS blob, or null.</summary>
    public string? IdentifyBlob(byte[] blob, string rowIdentity)
    {
        foreach (var k in _keys)
        {
            try { CryptographicOperations.ZeroMemory(k.Cipher.Unwrap(blob, rowIdentity)); return k.Id; }
            catch (KmsException) { }
        }
        return null;
    }

    /// <summary>
    /// The ring of a data path: the master key the settings choose (or the one already set up in its <c>kms</c> folder; one that
    /// needs an HSM PIN the settings do not give is a <see cref="KmsException"/>), then the verifier's fallback key file when it exists. Nothing is created unless
    /// <paramref name="settings"/> are given.
    /// </summary>
    public static SecretKeyRing Open(string dataPath, KmsSettings? settings)
    {
        var ring = new SecretKeyRing();
        try
        {
            IMasterKeyWrapper? primary = null;
            if (settings is not null) primary = KmsEngine.CreateWrapper(settings, KmsEngineFactory.KmsDirectory(dataPath));
            else if (KmsEngineFactory.DetectMasterKey(dataPath) is { } kind)
            {
                // An HSM-wrapped master key needs the HSM's PIN, which only the server's settings hold: refuse rather than
                // fall back to another key (or to plaintext) for secrets that the server seals with its HSM key.
                if (kind == MasterKeyKind.Pkcs11)
                    throw new KmsException(KmsErrorKind.Unavailable, null, $"the master key of {dataPath} is wrapped by a PKCS#11 HSM; use the running server (-Server)");
                primary = KmsEngine.CreateWrapper(new KmsSettings { MasterKey = kind }, KmsEngineFactory.KmsDirectory(dataPath));
            }
            if (primary is not null) AddFrom(ring, primary);
            var verifierFile = new InsecureFileMasterKey(Path.Combine(dataPath, "verifier"));
            if (File.Exists(verifierFile.Path)) AddFrom(ring, verifierFile);
            return ring;
        }
        catch
        {
            ring.Dispose();
            throw;
        }
    }

    private static void AddFrom(SecretKeyRing ring, IMasterKeyWrapper wrapper)
    {
        var key = wrapper.LoadOrCreate();
        try { ring.Add(key, wrapper.Description, wrapper.Kind); }
        finally { CryptographicOperations.ZeroMemory(key); }
    }

    public void Dispose()
    {
        foreach (var k in _keys)
        {
            k.Sealer.Dispose();
            k.Cipher.Dispose();
        }
        _keys.Clear();
    }
}
