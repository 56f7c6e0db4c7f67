using System.Security.Cryptography;
using Net.Pkcs11Interop.Common;

namespace TpmProvisioning.Kms;

/// <summary>A key source tier an uploaded version can take its material from (spec 004's <c>source_key_tier</c>).</summary>
public interface IKeySource
{
    /// <summary>The tier name (<c>hsm-luna</c>, <c>dsm</c>).</summary>
    string Tier { get; }
    /// <summary>The material of the source key; <see cref="KmsException"/> NotFound/InvalidArgument when it cannot be had.</summary>
    byte[] Export(string sourceKeyIdentifier);
}

/// <summary>
/// A PKCS#11 HSM as a key source (the <c>hsm-luna</c> tier; any PKCS#11 module serves). The source key (AES secret key found by
/// CKA_LABEL, or CKA_ID in hex) must be extractable; it is wrapped out under a one-time AES-256 key imported as a session object
/// (CKM_AES_KEY_WRAP, RFC 3394) and unwrapped here, so the material never crosses the PKCS#11 boundary in clear.
/// </summary>
public sealed class Pkcs11KeySource(Pkcs11Settings settings, string tier = "hsm-luna") : IKeySource
{
    public string Tier => tier;

    public byte[] Export(string sourceKeyIdentifier) => Pkcs11Token.Run(settings, session =>
    {
        var f = Pkcs11Token.Factories;
        var source = Pkcs11Token.FindSecretKey(session, sourceKeyIdentifier)
            ?? throw new KmsException(KmsErrorKind.InvalidArgument, "source_key_identifier", $"no key '{sourceKeyIdentifier}' on the {tier} source");
        var kek = RandomNumberGenerator.GetBytes(32);
        var kekHandle = session.CreateObject(
        [
            f.ObjectAttributeFactory.Create(CKA.CKA_CLASS, CKO.CKO_SECRET_KEY),
            f.ObjectAttributeFactory.Create(CKA.CKA_KEY_TYPE, CKK.CKK_AES),
            f.ObjectAttributeFactory.Create(CKA.CKA_VALUE, kek),
            f.ObjectAttributeFactory.Create(CKA.CKA_TOKEN, false),
            f.ObjectAttributeFactory.Create(CKA.CKA_WRAP, true),
        ]);
        try
        {
            byte[] wrapped;
            try { wrapped = session.WrapKey(f.MechanismFactory.Create(CKM.CKM_AES_KEY_WRAP), kekHandle, source); }
            catch (Pkcs11Exception ex) when (ex.RV is CKR.CKR_KEY_UNEXTRACTABLE or CKR.CKR_KEY_NOT_WRAPPABLE)
            {
                throw new KmsException(KmsErrorKind.InvalidArgument, "source_key_identifier", $"the {tier} key '{sourceKeyIdentifier}' is not extractable");
            }
            return AesKeyWrap.Unwrap(kek, wrapped);
        }
        finally
        {
            session.DestroyObject(kekHandle);
            CryptographicOperations.ZeroMemory(kek);
        }
    });
}

/// <summary>AES key wrap (RFC 3394) with the default IV, for unwrapping what an HSM wrapped out.</summary>
public static class AesKeyWrap
{
    private static readonly byte[] s_iv = [0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6];

    public static byte[] Wrap(byte[] kek, byte[] plain)
    {
        if (plain.Length % 8 != 0 || plain.Length < 16) throw new ArgumentException("RFC 3394 wraps 16 or more bytes in 8-byte blocks.", nameof(plain));
        using var aes = Aes.Create();
        aes.Key = kek;
        int n = plain.Length / 8;
        var a = (byte[])s_iv.Clone();
        var r = new byte[n][];
        for (int i = 0; i < n; i++) r[i] = plain.AsSpan(i * 8, 8).ToArray();
        var b = new byte[16];
        for (int j = 0; j <= 5; j++)
            for (int i = 0; i < n; i++)
            {
                a.CopyTo(b, 0); r[i].CopyTo(b, 8);
                var e = aes.EncryptEcb(b, PaddingMode.None);
                ulong t = (ulong)(n * j + i + 1);
                for (int k = 0; k < 8; k++) a[k] = (byte)(e[k] ^ (byte)(t >> (8 * (7 - k))));
                r[i] = e.AsSpan(8, 8).ToArray();
            }
        return [.. a, .. r.SelectMany(x => x)];
    }

    public static byte[] Unwrap(byte[] kek, byte[] wrapped)
    {
        if (wrapped.Length % 8 != 0 || wrapped.Length < 24) throw new CryptographicException("The wrapped key has a bad length.");
        using var aes = Aes.Create();
        aes.Key = kek;
        int n = wrapped.Length / 8 - 1;
        var a = wrapped.AsSpan(0, 8).ToArray();
        var r = new byte[n][];
        for (int i = 0; i < n; i++) r[i] = wrapped.AsSpan((i + 1) * 8, 8).ToArray();
        var b = new byte[16];
        for (int j = 5; j >= 0; j--)
            for (int i = n - 1; i >= 0; i--)
            {
                ulong t = (ulong)(n * j + i + 1);
                for (int k = 0; k < 8; k++) b[k] = (byte)(a[k] ^ (byte)(t >> (8 * (7 - k))));
                r[i].CopyTo(b, 8);
                var d = aes.DecryptEcb(b, PaddingMode.None);
                a = d.AsSpan(0, 8).ToArray();
                r[i] = d.AsSpan(8, 8).ToArray();
            }
        if (!CryptographicOperations.FixedTimeEquals(a, s_iv)) throw new CryptographicException("The wrapped key does not unwrap (integrity check failed).");
        return r.SelectMany(x => x).ToArray();
    }
}
