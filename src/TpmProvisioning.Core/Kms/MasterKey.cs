using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Net.Pkcs11Interop.Common;
using Net.Pkcs11Interop.HighLevelAPI;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Kms;

/// <summary>How the KMS master key is protected at rest.</summary>
public enum MasterKeyKind
{
    /// <summary>Sealed to the server's own TPM (a keyed-hash sealed object under an owner-hierarchy storage primary).</summary>
    Tpm,
    /// <summary>Wrapped by an AES key that never leaves a PKCS#11 HSM.</summary>
    Pkcs11,
    /// <summary>A plain key file on disk: anyone who reads the file reads every key. Only when explicitly chosen; never for production.</summary>
    InsecureFile,
}

/// <summary>
/// Protects the 32-byte KMS master key. <see cref="LoadOrCreate"/> returns it, creating and protecting a fresh random one the
/// first time. Everything secret the KMS stores is wrapped with it (<see cref="MasterKeyCipher"/>).
/// </summary>
public interface IMasterKeyWrapper
{
    MasterKeyKind Kind { get; }
    /// <summary>Where the protected key lives, for logs and <c>Get-ProvisioningServer</c> (never secret).</summary>
    string Description { get; }
    /// <summary>The master key (32 bytes). The caller zeroes it when done.</summary>
    byte[] LoadOrCreate();
}

/// <summary>The master key sealed to a TPM: <c>master-key.tpm.json</c> holds the sealed object's public and private blobs.</summary>
public sealed class TpmSealedMasterKey(string directory, string? tpmConnection) : IMasterKeyWrapper
{
    public const string FileName = "master-key.tpm.json";
    public MasterKeyKind Kind => MasterKeyKind.Tpm;
    public string Path => System.IO.Path.Combine(directory, FileName);
    public string Description => $"TPM-sealed ({tpmConnection ?? "default TPM"}) {Path}";

    private sealed record Blob(string Public, string Private);

    public byte[] LoadOrCreate()
    {
        using var tpm = TpmDevice.Open(tpmConnection);
        // The storage primary is re-derived from the owner seed at every start (same template, same key); nothing to persist.
        var srk = tpm.CreateSrk(TpmTemplates.SrkEccP256);
        try
        {
            if (File.Exists(Path))
            {
                var blob = JsonSerializer.Deserialize<Blob>(File.ReadAllText(Path))
                    ?? throw new KmsException(KmsErrorKind.Unavailable, null, $"The sealed master key {Path} is empty.");
                uint h;
                try { h = tpm.LoadObject(srk.Handle, Convert.FromBase64String(blob.Private), Convert.FromBase64String(blob.Public)); }
                catch (TpmException ex)
                {
                    throw new KmsException(KmsErrorKind.Unavailable, null, $"The sealed master key {Path} does not load on this TPM (another TPM, or its owner seed changed): {ex.Message}");
                }
                try
                {
                    var key = tpm.Unseal(h);
                    if (key.Length != MasterKeyCipher.KeyBytes) throw new KmsException(KmsErrorKind.Unavailable, null, $"The sealed master key {Path} holds {key.Length} bytes, not 32.");
                    return key;
                }
                finally { tpm.TryFlush(h); }
            }
            var fresh = RandomNumberGenerator.GetBytes(MasterKeyCipher.KeyBytes);
            var fromTpm = tpm.GetRandom(MasterKeyCipher.KeyBytes);
            for (int i = 0; i < fresh.Length && i < fromTpm.Length; i++) fresh[i] ^= fromTpm[i];
            var (priv, pub) = tpm.CreateSealed(srk.Handle, fresh);
            Storage.PrivateFiles.CreateFolder(directory);
            Pki.ComponentCa.WriteSecretFile(Path, JsonSerializer.Serialize(new Blob(Convert.ToBase64String(pub), Convert.ToBase64String(priv))));
            return fresh;
        }
        finally { tpm.TryFlush(srk.Handle); }
    }
}

/// <summary>
/// The master key wrapped by an AES-256 key inside a PKCS#11 token (created there, non-extractable, when absent):
/// <c>master-key.pkcs11.json</c> holds the GCM nonce and ciphertext.
/// </summary>
public sealed class Pkcs11MasterKey(string directory, Pkcs11Settings settings) : IMasterKeyWrapper
{
    public const string FileName = "master-key.pkcs11.json";
    private static readonly byte[] s_aad = Encoding.ASCII.GetBytes("tpmprov-kms-master-key");
    public MasterKeyKind Kind => MasterKeyKind.Pkcs11;
    public string Path => System.IO.Path.Combine(directory, FileName);
    public string Description => $"PKCS#11-wrapped ({settings}, key '{settings.KeyLabel}') {Path}";

    private sealed record Blob(string KeyLabel, string Nonce, string Ciphertext);

    public byte[] LoadOrCreate() => Pkcs11Token.Run(settings, session =>
    {
        var f = Pkcs11Token.Factories;
        if (File.Exists(Path))
        {
            var blob = JsonSerializer.Deserialize<Blob>(File.ReadAllText(Path))
                ?? throw new KmsException(KmsErrorKind.Unavailable, null, $"The wrapped master key {Path} is empty.");
            var key = Pkcs11Token.FindSecretKey(session, blob.KeyLabel)
                ?? throw new KmsException(KmsErrorKind.Unavailable, null, $"The wrapping key '{blob.KeyLabel}' is not on token '{settings.TokenLabel}'.");
            try
            {
                var plain = session.Decrypt(Gcm(Convert.FromBase64String(blob.Nonce)), key, Convert.FromBase64String(blob.Ciphertext));
                if (plain.Length != MasterKeyCipher.KeyBytes) throw new KmsException(KmsErrorKind.Unavailable, null, "The unwrapped master key is not 32 bytes.");
                return plain;
            }
            catch (Pkcs11Exception ex)
            {
                throw new KmsException(KmsErrorKind.Unavailable, null, $"The HSM could not unwrap the master key {Path} ({ex.RV}).");
            }
        }
        var wrapping = Pkcs11Token.FindSecretKey(session, settings.KeyLabel) ?? session.GenerateKey(f.MechanismFactory.Create(CKM.CKM_AES_KEY_GEN),
        [
            f.ObjectAttributeFactory.Create(CKA.CKA_CLASS, CKO.CKO_SECRET_KEY),
            f.ObjectAttributeFactory.Create(CKA.CKA_KEY_TYPE, CKK.CKK_AES),
            f.ObjectAttributeFactory.Create(CKA.CKA_VALUE_LEN, 32UL),
            f.ObjectAttributeFactory.Create(CKA.CKA_LABEL, settings.KeyLabel),
            f.ObjectAttributeFactory.Create(CKA.CKA_TOKEN, true),
            f.ObjectAttributeFactory.Create(CKA.CKA_PRIVATE, true),
            f.ObjectAttributeFactory.Create(CKA.CKA_SENSITIVE, true),
            f.ObjectAttributeFactory.Create(CKA.CKA_EXTRACTABLE, false),
            f.ObjectAttributeFactory.Create(CKA.CKA_ENCRYPT, true),
            f.ObjectAttributeFactory.Create(CKA.CKA_DECRYPT, true),
        ]);
        var fresh = RandomNumberGenerator.GetBytes(MasterKeyCipher.KeyBytes);
        var nonce = RandomNumberGenerator.GetBytes(12);
        var ct = session.Encrypt(Gcm(nonce), wrapping, fresh);
        Storage.PrivateFiles.CreateFolder(directory);
        Pki.ComponentCa.WriteSecretFile(Path, JsonSerializer.Serialize(new Blob(settings.KeyLabel, Convert.ToBase64String(nonce), Convert.ToBase64String(ct))));
        return fresh;
    });

    private static IMechanism Gcm(byte[] nonce) => Pkcs11Token.Factories.MechanismFactory.Create(CKM.CKM_AES_GCM,
        Pkcs11Token.Factories.MechanismParamsFactory.CreateCkGcmParams(nonce, (ulong)nonce.Length * 8, s_aad, 128));
}

/// <summary>
/// INSECURE: the master key in a plain file (<c>master-key.INSECURE-PLAINTEXT</c>, mode 0600). Anyone who can read the file
/// and the database reads every key. For labs and tests only, and only when chosen by name.
/// </summary>
public sealed class InsecureFileMasterKey(string directory) : IMasterKeyWrapper
{
    public const string FileName = "master-key.INSECURE-PLAINTEXT";
    public MasterKeyKind Kind => MasterKeyKind.InsecureFile;
    public string Path => System.IO.Path.Combine(directory, FileName);
    public string Description => $"INSECURE plaintext file {Path}";

    public byte[] LoadOrCreate()
    {
        if (File.Exists(Path))
        {
            var key = Convert.FromBase64String(File.ReadAllText(Path).Trim());
            if (key.Length != MasterKeyCipher.KeyBytes) throw new KmsException(KmsErrorKind.Unavailable, null, $"The master key file {Path} does not hold 32 bytes.");
            return key;
        }
        var fresh = RandomNumberGenerator.GetBytes(MasterKeyCipher.KeyBytes);
        Storage.PrivateFiles.CreateFolder(directory);
        Pki.ComponentCa.WriteSecretFile(Path, Convert.ToBase64String(fresh));
        return fresh;
    }
}

/// <summary>
/// AES-256-GCM wrapping of stored secrets under the master key. Blob: <c>0x01 || nonce(12) || ciphertext || tag(16)</c>; the
/// associated data names the row the secret belongs to, so a wrapped value copied into another row does not unwrap.
/// </summary>
public sealed class MasterKeyCipher : IDisposable
{
    public const int KeyBytes = 32;
    private const byte Format = 1;
    private readonly AesGcm _aes;

    /// <summary>Derives the wrapping key from <paramref name="masterKey"/> (HKDF-SHA256, info <c>tpmprov-kms-wrap-v1</c>).</summary>
    public MasterKeyCipher(ReadOnlySpan<byte> masterKey)
    {
        if (masterKey.Length != KeyBytes) throw new ArgumentException("The master key must be 32 bytes.", nameof(masterKey));
        Span<byte> k = stackalloc byte[KeyBytes];
        HKDF.DeriveKey(HashAlgorithmName.SHA256, masterKey, k, [], "tpmprov-kms-wrap-v1"u8);
        _aes = new AesGcm(k, 16);
        CryptographicOperations.ZeroMemory(k);
    }

    public byte[] Wrap(ReadOnlySpan<byte> plaintext, string rowIdentity)
    {
        var blob = new byte[1 + 12 + plaintext.Length + 16];
        blob[0] = Format;
        RandomNumberGenerator.Fill(blob.AsSpan(1, 12));
        _aes.Encrypt(blob.AsSpan(1, 12), plaintext, blob.AsSpan(13, plaintext.Length), blob.AsSpan(13 + plaintext.Length), Encoding.UTF8.GetBytes(rowIdentity));
        return blob;
    }

    /// <summary>The plaintext; <see cref="KmsException"/> (Unavailable) when the blob was made with another master key or for another row.</summary>
    public byte[] Unwrap(ReadOnlySpan<byte> blob, string rowIdentity)
    {
        if (blob.Length < 1 + 12 + 16 || blob[0] != Format)
            throw new KmsException(KmsErrorKind.Unavailable, null, $"A stored secret ({rowIdentity}) is not in a known format.");
        var plain = new byte[blob.Length - 29];
        try { _aes.Decrypt(blob.Slice(1, 12), blob.Slice(13, plain.Length), blob[^16..], plain, Encoding.UTF8.GetBytes(rowIdentity)); }
        catch (AuthenticationTagMismatchException)
        {
            throw new KmsException(KmsErrorKind.Unavailable, null, $"A stored secret ({rowIdentity}) does not unwrap with this master key.");
        }
        return plain;
    }

    public void Dispose() => _aes.Dispose();
}
