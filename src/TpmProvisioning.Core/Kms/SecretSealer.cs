using System.Text;

namespace TpmProvisioning.Kms;

/// <summary>
/// Seals secrets the product keeps in text columns (the verifier's copy of a tenant's <c>revocation_key</c> and of <c>V</c>)
/// with the master key, as the KMS wraps its own material: <c>sealed:v1:&lt;base64 of AES-256-GCM blob&gt;</c>, bound to the
/// row and field it belongs to. A value without the prefix is a plaintext secret stored before sealing existed.
/// </summary>
public sealed class SecretSealer : IDisposable
{
    public const string Prefix = "sealed:v1:";
    private readonly MasterKeyCipher _cipher;

    /// <summary>A sealer over <paramref name="masterKey"/> (32 bytes; the caller zeroes its copy).</summary>
    public SecretSealer(ReadOnlySpan<byte> masterKey, string description)
    {
        _cipher = new MasterKeyCipher(masterKey);
        Description = description;
    }

    /// <summary>Where the master key lives (never secret), for logs.</summary>
    public string Description { get; }

    /// <summary>Loads the master key through <paramref name="wrapper"/> (creating it the first time).</summary>
    public static SecretSealer Open(IMasterKeyWrapper wrapper)
    {
        ArgumentNullException.ThrowIfNull(wrapper);
        var key = wrapper.LoadOrCreate();
        try { return new SecretSealer(key, wrapper.Description); }
        finally { System.Security.Cryptography.CryptographicOperations.ZeroMemory(key); }
    }

    public static bool IsSealed(string? value) => value is not null && value.StartsWith(Prefix, StringComparison.Ordinal);

    /// <summary>The sealed form of <paramref name="plaintext"/> for <paramref name="rowIdentity"/>; null and empty stay as they are.</summary>
    public string? Seal(string? plaintext, string rowIdentity)
    {
        if (string.IsNullOrEmpty(plaintext) || IsSealed(plaintext)) return plaintext;
        var bytes = Encoding.UTF8.GetBytes(plaintext);
        try { return Prefix + Convert.ToBase64String(_cipher.Wrap(bytes, rowIdentity)); }
        finally { System.Security.Cryptography.CryptographicOperations.ZeroMemory(bytes); }
    }

    /// <summary>
    /// The plaintext of a sealed value (a value stored before sealing is returned as it is); <see cref="KmsException"/>
    /// (Unavailable) when it was sealed with another master key or for another row.
    /// </summary>
    public string? Open(string? value, string rowIdentity)
    {
        if (!IsSealed(value)) return value;
        byte[] blob;
        try { blob = Convert.FromBase64String(value![Prefix.Length..]); }
        catch (FormatException) { throw new KmsException(KmsErrorKind.Unavailable, null, $"A sealed secret ({rowIdentity}) is not base64."); }
        var plain = _cipher.Unwrap(blob, rowIdentity);
        try { return Encoding.UTF8.GetString(plain); }
        finally { System.Security.Cryptography.CryptographicOperations.ZeroMemory(plain); }
    }

    public void Dispose() => _cipher.Dispose();
}
