using System.Security.Cryptography;
using System.Text;
using Org.BouncyCastle.Crypto;
using Org.BouncyCastle.Crypto.Engines;
using Org.BouncyCastle.Crypto.Modes;
using Org.BouncyCastle.Crypto.Parameters;

namespace TpmProvisioning.Attestation;

/// <summary>
/// Keylime's bootstrap key and secure payload, byte for byte as Keylime's tenant, verifier and agents make them
/// (<c>keylime/crypto.py</c>, <c>user_data_encrypt.py</c>): a random 32-byte key K split into two random shares, U (the
/// tenant sends it to the agent's <c>keys/ukey</c>) and V (the verifier sends it to <c>keys/vkey</c> once the agent
/// attests), K = U xor V; each share travels RSA-OAEP(SHA-1, MGF1-SHA-1, no label) encrypted under the agent's NK
/// (<c>keys/pubkey</c>). The tenant also sends <c>auth_tag</c> = hex HMAC-SHA384(K, agent id), which tells the agent that
/// it combined the right shares, and optionally the payload: base64 of IV(16) ‖ AES-256-GCM ciphertext ‖ tag(16) under K.
/// <para>Tenant side: <see cref="Create"/>, <see cref="AuthTag"/>, <see cref="EncryptKeyShare"/>. Agent side:
/// <see cref="DecryptKeyShare"/>, <see cref="Combine"/>, <see cref="Decrypt"/>, <see cref="Hmac"/>.</para>
/// </summary>
public sealed class KeylimePayload
{
    /// <summary>Length of K, U and V in bytes (AES-256).</summary>
    public const int KeySize = 32;
    /// <summary>Length of the GCM IV Keylime uses (one AES block, not the usual 12).</summary>
    public const int IvSize = 16;
    /// <summary>Length of the GCM tag.</summary>
    public const int TagSize = 16;
    /// <summary>Largest encrypted payload (base64 characters) accepted, as Keylime's tenant <c>max_payload_size</c> default.</summary>
    public const int MaxEncryptedPayloadChars = 1024 * 1024;

    private KeylimePayload(byte[] k, byte[] u, byte[] v, string? encryptedPayload)
    {
        K = k;
        U = u;
        V = v;
        EncryptedPayload = encryptedPayload;
    }

    /// <summary>The bootstrap key.</summary>
    public byte[] K { get; }
    /// <summary>The tenant's share, for <c>keys/ukey</c>.</summary>
    public byte[] U { get; }
    /// <summary>The verifier's share, for <c>keys/vkey</c>.</summary>
    public byte[] V { get; }
    /// <summary>The payload encrypted under K (base64 of IV ‖ ciphertext ‖ tag), as <c>keys/ukey</c>'s <c>payload</c>; null without a payload.</summary>
    public string? EncryptedPayload { get; }

    /// <summary>Makes a fresh K, U and V (K = U xor V) and encrypts <paramref name="payload"/> under K when given.</summary>
    public static KeylimePayload Create(byte[]? payload)
    {
        var k = RandomNumberGenerator.GetBytes(KeySize);
        var u = RandomNumberGenerator.GetBytes(KeySize);
        var v = Combine(k, u);
        return new KeylimePayload(k, u, v, payload is null ? null : Encrypt(payload, k));
    }

    /// <summary><c>auth_tag</c>: hex HMAC-SHA384 under K of the agent id.</summary>
    public string AuthTag(string agentId) => Hmac(K, agentId);

    /// <summary>Hex (lower case) HMAC-SHA384 under <paramref name="key"/> of the UTF-8 of <paramref name="value"/>, as Keylime's <c>do_hmac</c>.</summary>
    public static string Hmac(byte[] key, string value)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        return Convert.ToHexStringLower(HMACSHA384.HashData(key, Encoding.UTF8.GetBytes(value)));
    }

    /// <summary>XOR of two key shares of equal length.</summary>
    public static byte[] Combine(byte[] a, byte[] b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.Length != b.Length) throw new ArgumentException("The key shares differ in length.");
        var r = new byte[a.Length];
        for (int i = 0; i < r.Length; i++) r[i] = (byte)(a[i] ^ b[i]);
        return r;
    }

    /// <summary>
    /// Encrypts a key share (U or V) for the agent: base64 of RSA-OAEP (SHA-1, MGF1-SHA-1, no label) under the NK, given
    /// as the PEM <c>keys/pubkey</c> (or a quote's <c>pubkey</c>) serves.
    /// </summary>
    public static string EncryptKeyShare(string nkPublicPem, byte[] share)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(nkPublicPem);
        ArgumentNullException.ThrowIfNull(share);
        using var rsa = RSA.Create();
        try { rsa.ImportFromPem(nkPublicPem); }
        catch (ArgumentException ex) { throw new ArgumentException("The agent's public key is not an RSA public key in PEM.", nameof(nkPublicPem), ex); }
        return Convert.ToBase64String(rsa.Encrypt(share, RSAEncryptionPadding.OaepSHA1));
    }

    /// <summary>The agent's side of <see cref="EncryptKeyShare"/>; throws <see cref="CryptographicException"/> when it does not decrypt.</summary>
    public static byte[] DecryptKeyShare(RSA nk, byte[] encrypted)
    {
        ArgumentNullException.ThrowIfNull(nk);
        ArgumentNullException.ThrowIfNull(encrypted);
        return nk.Decrypt(encrypted, RSAEncryptionPadding.OaepSHA1);
    }

    /// <summary>Encrypts as Keylime's <c>crypto.encrypt</c>: base64 of a random 16-byte IV ‖ AES-256-GCM ciphertext ‖ 16-byte tag.</summary>
    public static string Encrypt(byte[] plaintext, byte[] key) => Encrypt(plaintext, key, RandomNumberGenerator.GetBytes(IvSize));

    internal static string Encrypt(byte[] plaintext, byte[] key, byte[] iv)
    {
        ArgumentNullException.ThrowIfNull(plaintext);
        CheckKey(key);
        var gcm = Gcm(true, key, iv);
        var output = new byte[IvSize + gcm.GetOutputSize(plaintext.Length)];
        iv.CopyTo(output, 0);
        int n = gcm.ProcessBytes(plaintext, 0, plaintext.Length, output, IvSize);
        gcm.DoFinal(output, IvSize + n);
        return Convert.ToBase64String(output);
    }

    /// <summary>Decrypts <see cref="Encrypt"/>'s output (already base64-decoded); throws <see cref="CryptographicException"/> when the tag does not verify.</summary>
    public static byte[] Decrypt(byte[] ivCiphertextTag, byte[] key)
    {
        ArgumentNullException.ThrowIfNull(ivCiphertextTag);
        CheckKey(key);
        if (ivCiphertextTag.Length < IvSize + TagSize) throw new CryptographicException("The payload is shorter than its IV and tag.");
        var gcm = Gcm(false, key, ivCiphertextTag.AsSpan(0, IvSize).ToArray());
        var output = new byte[gcm.GetOutputSize(ivCiphertextTag.Length - IvSize)];
        try
        {
            int n = gcm.ProcessBytes(ivCiphertextTag, IvSize, ivCiphertextTag.Length - IvSize, output, 0);
            n += gcm.DoFinal(output, n);
            return n == output.Length ? output : output[..n];
        }
        catch (InvalidCipherTextException ex) { throw new CryptographicException("The payload does not decrypt under the bootstrap key (GCM tag mismatch).", ex); }
    }

    /// <summary>Decrypts the base64 text of <see cref="Encrypt"/>.</summary>
    public static byte[] Decrypt(string encrypted, byte[] key) => Decrypt(Convert.FromBase64String(encrypted), key);

    private static GcmBlockCipher Gcm(bool encrypt, byte[] key, byte[] iv)
    {
        var gcm = new GcmBlockCipher(new AesEngine());
        gcm.Init(encrypt, new AeadParameters(new KeyParameter(key), TagSize * 8, iv));
        return gcm;
    }

    private static void CheckKey(byte[] key)
    {
        ArgumentNullException.ThrowIfNull(key);
        if (key.Length != KeySize) throw new ArgumentException($"The bootstrap key must be {KeySize} bytes.", nameof(key));
    }
}
