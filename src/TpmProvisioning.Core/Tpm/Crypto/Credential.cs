using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Org.BouncyCastle.Crypto;
using Org.BouncyCastle.Crypto.Digests;
using Org.BouncyCastle.Crypto.Encodings;
using Org.BouncyCastle.Crypto.Engines;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Security;
using BcBigInteger = Org.BouncyCastle.Math.BigInteger;

namespace TpmProvisioning.Tpm;

/// <summary>
/// The output of MakeCredential: <see cref="IdObject"/> is the content of a TPM2B_ID_OBJECT (integrityHMAC as TPM2B_DIGEST, then
/// encIdentity) and <see cref="EncryptedSecret"/> the content of a TPM2B_ENCRYPTED_SECRET (the OAEP ciphertext for RSA, a
/// marshaled TPMS_ECC_POINT for ECC). Neither includes the outer 16-bit size.
/// </summary>
public sealed record CredentialBlob(byte[] IdObject, byte[] EncryptedSecret)
{
    /// <summary>TPM2B_ID_OBJECT: 16-bit size then <see cref="IdObject"/>, as TPM2_ActivateCredential takes it.</summary>
    public byte[] IdObjectTpm2B() => new TpmWriter(IdObject.Length + 2).B2(IdObject).ToArray();
    /// <summary>TPM2B_ENCRYPTED_SECRET: 16-bit size then <see cref="EncryptedSecret"/>.</summary>
    public byte[] EncryptedSecretTpm2B() => new TpmWriter(EncryptedSecret.Length + 2).B2(EncryptedSecret).ToArray();
}

/// <summary>
/// Software TPM2_MakeCredential (TPM 2.0 Part 1, 24: credential protection) against an EK public area, the tpm2-tools
/// credential file format, and a software ActivateCredential for keys whose private part is known (tests, load benchmarks).
/// The seed, KDF hash and HMAC use the EK's nameAlg; the symmetric key size is the EK's.
/// </summary>
public static class Credential
{
    /// <summary>tpm2-tools credential file magic.</summary>
    public const uint FileMagic = 0xBADCC0DE;
    /// <summary>tpm2-tools credential file version.</summary>
    public const uint FileVersion = 1;
    /// <summary>Largest TPM2B_ID_OBJECT content: TPM2B_DIGEST HMAC plus an encrypted TPM2B_DIGEST.</summary>
    public const int MaxIdObjectBytes = 2 * (2 + 64);
    /// <summary>Largest TPM2B_ENCRYPTED_SECRET content (an RSA-4096 ciphertext).</summary>
    public const int MaxEncryptedSecretBytes = 512;

    private static readonly byte[] IdentityLabel = "IDENTITY\0"u8.ToArray();

    /// <summary>
    /// The EK's key; an EK public area whose unique field holds no key (empty modulus or point, a coordinate longer than the curve)
    /// is a bad argument, like its other parameters.
    /// </summary>
    private static T UsableKey<T>(TpmPublic ek, Func<TpmPublic, T> get)
    {
        try { return get(ek); }
        catch (InvalidOperationException ex) { throw new ArgumentException("The EK public area holds no usable key: " + ex.Message, "ekPublic", ex); }
    }

    /// <summary>
    /// Protects <paramref name="secret"/> (at most the EK nameAlg's digest size) for the object <paramref name="objectName"/> under the EK.
    /// Throws <see cref="ArgumentException"/> for an EK or inputs it cannot use, <see cref="NotSupportedException"/> for an unsupported nameAlg or curve.
    /// </summary>
    public static CredentialBlob MakeCredential(TpmPublic ekPublic, byte[] objectName, byte[] secret)
    {
        ArgumentNullException.ThrowIfNull(ekPublic);
        ArgumentNullException.ThrowIfNull(objectName);
        ArgumentNullException.ThrowIfNull(secret);
        var hashAlg = ekPublic.NameAlg;
        if (!TpmHash.IsSupported(hashAlg)) throw new NotSupportedException($"EK nameAlg {hashAlg} is not supported.");
        int digestSize = TpmHash.DigestSize(hashAlg);
        if (secret.Length == 0 || secret.Length > digestSize)
            throw new ArgumentException($"The credential must be 1..{digestSize} bytes (the EK nameAlg's digest size).", nameof(secret));
        if (objectName.Length < 2) throw new ArgumentException("Object Name too short.", nameof(objectName));
        CheckSymmetric(ekPublic);

        byte[] seed, encSecret;
        if (ekPublic.IsRsa)
        {
            seed = RandomNumberGenerator.GetBytes(digestSize);
            var p = UsableKey(ekPublic, static k => k.ToRsaParameters());
            encSecret = RsaOaepEncrypt(p.Modulus!, p.Exponent!, seed, hashAlg, IdentityLabel);
        }
        else
        {
            using var ek = UsableKey(ekPublic, static k => k.GetECDiffieHellmanPublicKey());
            using var eph = ECDiffieHellman.Create(TpmPublic.ToECCurve(ekPublic.Curve));
            var q = eph.ExportParameters(false).Q;
            byte[] z = eph.DeriveRawSecretAgreement(ek.PublicKey);
            seed = Kdf.KdfE(hashAlg, z, IdentityLabel, q.X, ekPublic.X, digestSize * 8);
            CryptographicOperations.ZeroMemory(z);
            encSecret = new TpmWriter(8 + 2 * q.X!.Length).B2(q.X).B2(q.Y).ToArray();
        }
        var id = ProtectWithSeed(ekPublic, seed, objectName, secret);
        CryptographicOperations.ZeroMemory(seed);
        return new CredentialBlob(id, encSecret);
    }

    /// <summary>SecretToCredential given the seed: encIdentity = AES-CFB(KDFa(seed,"STORAGE",name), [size]16 || secret), HMAC over encIdentity || name.</summary>
    internal static byte[] ProtectWithSeed(TpmPublic ekPublic, byte[] seed, byte[] objectName, byte[] secret)
    {
        var hashAlg = ekPublic.NameAlg;
        int digestSize = TpmHash.DigestSize(hashAlg);
        var symKey = Kdf.KdfA(hashAlg, seed, "STORAGE", objectName, [], ekPublic.Symmetric.KeyBits);
        var plain = new byte[2 + secret.Length];
        BinaryPrimitives.WriteUInt16BigEndian(plain, (ushort)secret.Length);
        secret.CopyTo(plain, 2);
        var encIdentity = AesCfb(symKey, plain, encrypt: true);
        CryptographicOperations.ZeroMemory(plain);
        CryptographicOperations.ZeroMemory(symKey);
        var hmacKey = Kdf.KdfA(hashAlg, seed, "INTEGRITY", [], [], digestSize * 8);
        var integrity = TpmHash.Hmac(hashAlg, hmacKey, [.. encIdentity, .. objectName]);
        CryptographicOperations.ZeroMemory(hmacKey);
        return new TpmWriter(2 + integrity.Length + encIdentity.Length).B2(integrity).Bytes(encIdentity).ToArray();
    }

    /// <summary>
    /// Software ActivateCredential: recovers the secret from <paramref name="idObject"/> and <paramref name="encSecret"/> (contents, without the
    /// outer sizes) with the EK private key (<see cref="RSA"/> or <see cref="ECDiffieHellman"/>). Throws <see cref="TpmFormatException"/> for
    /// malformed blobs and <see cref="CryptographicException"/> when the integrity check fails (wrong EK, wrong Name or tampering).
    /// </summary>
    public static byte[] ActivateWithSoftwareEk(TpmPublic ekPublic, AsymmetricAlgorithm ekPrivate, byte[] objectName, byte[] idObject, byte[] encSecret)
    {
        ArgumentNullException.ThrowIfNull(ekPublic);
        ArgumentNullException.ThrowIfNull(ekPrivate);
        ArgumentNullException.ThrowIfNull(objectName);
        ArgumentNullException.ThrowIfNull(idObject);
        ArgumentNullException.ThrowIfNull(encSecret);
        var hashAlg = ekPublic.NameAlg;
        int digestSize = TpmHash.DigestSize(hashAlg);
        CheckSymmetric(ekPublic);

        byte[] seed;
        if (ekPublic.IsRsa)
        {
            if (ekPrivate is not RSA rsa) throw new ArgumentException("An RSA EK needs an RSA private key.", nameof(ekPrivate));
            var p = rsa.ExportParameters(true);
            var key = new RsaPrivateCrtKeyParameters(Bc(p.Modulus), Bc(p.Exponent), Bc(p.D), Bc(p.P), Bc(p.Q), Bc(p.DP), Bc(p.DQ), Bc(p.InverseQ));
            var oaep = Oaep(hashAlg);
            oaep.Init(false, key);
            try { seed = oaep.ProcessBlock(encSecret, 0, encSecret.Length); }
            catch (InvalidCipherTextException ex) { throw new CryptographicException("The encrypted seed does not decrypt under this EK.", ex); }
            catch (DataLengthException ex) { throw new TpmFormatException("TPM2B_ENCRYPTED_SECRET: wrong length for the EK.", ex); }
            CryptographicOperations.ZeroMemory(p.D); CryptographicOperations.ZeroMemory(p.P); CryptographicOperations.ZeroMemory(p.Q);
        }
        else
        {
            if (ekPrivate is not ECDiffieHellman ecdh) throw new ArgumentException("An ECC EK needs an ECDiffieHellman private key.", nameof(ekPrivate));
            var r = new TpmReader(encSecret, "TPMS_ECC_POINT");
            var x = r.B2(TpmPublic.MaxEccKeyBytes);
            var y = r.B2(TpmPublic.MaxEccKeyBytes);
            r.ExpectEnd();
            int n = TpmPublic.CoordinateSize(ekPublic.Curve);
            if (x.Length == 0 || y.Length == 0 || x.Length > n || y.Length > n) throw new TpmFormatException("TPMS_ECC_POINT: coordinate size does not fit the EK's curve.");
            ECDiffieHellman eph;
            try
            {
                eph = ECDiffieHellman.Create(new ECParameters { Curve = TpmPublic.ToECCurve(ekPublic.Curve), Q = new ECPoint { X = Pad(x, n), Y = Pad(y, n) } });
            }
            catch (CryptographicException ex) { throw new TpmFormatException("TPMS_ECC_POINT: not a point on the EK's curve.", ex); }
            using (eph)
            {
                byte[] z = ecdh.DeriveRawSecretAgreement(eph.PublicKey);
                seed = Kdf.KdfE(hashAlg, z, IdentityLabel, x, ekPublic.X, digestSize * 8);
                CryptographicOperations.ZeroMemory(z);
            }
        }

        var rd = new TpmReader(idObject, "TPM2B_ID_OBJECT");
        var integrity = rd.B2(64);
        var encIdentity = rd.Bytes(rd.Remaining).ToArray();
        if (integrity.Length != digestSize) throw new TpmFormatException($"TPM2B_ID_OBJECT: integrity HMAC of {integrity.Length} bytes, expected {digestSize}.");
        if (encIdentity.Length < 2) throw new TpmFormatException("TPM2B_ID_OBJECT: encIdentity too short.");
        var hmacKey = Kdf.KdfA(hashAlg, seed, "INTEGRITY", [], [], digestSize * 8);
        var expected = TpmHash.Hmac(hashAlg, hmacKey, [.. encIdentity, .. objectName]);
        if (!CryptographicOperations.FixedTimeEquals(expected, integrity))
            throw new CryptographicException("Credential integrity check failed (wrong EK, wrong object Name, or a modified blob).");
        var symKey = Kdf.KdfA(hashAlg, seed, "STORAGE", objectName, [], ekPublic.Symmetric.KeyBits);
        var plain = AesCfb(symKey, encIdentity, encrypt: false);
        CryptographicOperations.ZeroMemory(seed);
        CryptographicOperations.ZeroMemory(symKey);
        int size = BinaryPrimitives.ReadUInt16BigEndian(plain);
        if (size != plain.Length - 2) throw new TpmFormatException("Decrypted credential has an inconsistent size.");
        return plain[2..];
    }

    /// <summary>The tpm2-tools credential file (tpm2_makecredential -o): magic 0xBADCC0DE, version 1 (both 32-bit big-endian), TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.</summary>
    public static byte[] ToTpm2ToolsFile(byte[] idObject, byte[] encSecret)
    {
        ArgumentNullException.ThrowIfNull(idObject);
        ArgumentNullException.ThrowIfNull(encSecret);
        return new TpmWriter(12 + idObject.Length + encSecret.Length).U32(FileMagic).U32(FileVersion).B2(idObject).B2(encSecret).ToArray();
    }

    /// <summary>The tpm2-tools credential file for a <see cref="CredentialBlob"/>.</summary>
    public static byte[] ToTpm2ToolsFile(CredentialBlob blob)
    {
        ArgumentNullException.ThrowIfNull(blob);
        return ToTpm2ToolsFile(blob.IdObject, blob.EncryptedSecret);
    }

    /// <summary>Reads a tpm2-tools credential file; <see cref="TpmFormatException"/> for anything else.</summary>
    public static CredentialBlob FromTpm2ToolsFile(ReadOnlySpan<byte> file)
    {
        var r = new TpmReader(file, "tpm2-tools credential file");
        uint magic = r.U32();
        if (magic != FileMagic) throw new TpmFormatException($"tpm2-tools credential file: bad magic 0x{magic:X8}.");
        uint version = r.U32();
        if (version != FileVersion) throw new TpmFormatException($"tpm2-tools credential file: unsupported version {version}.");
        var id = r.B2(MaxIdObjectBytes);
        var secret = r.B2(MaxEncryptedSecretBytes);
        r.ExpectEnd();
        if (id.Length < 2) throw new TpmFormatException("tpm2-tools credential file: empty ID object.");
        return new CredentialBlob(id, secret);
    }

    private static void CheckSymmetric(TpmPublic ek)
    {
        if (ek.Symmetric.Algorithm != TpmAlgId.Aes || ek.Symmetric.Mode != TpmAlgId.Cfb || ek.Symmetric.KeyBits is not (128 or 192 or 256))
            throw new NotSupportedException($"EK symmetric definition {ek.Symmetric} is not AES-CFB; MakeCredential needs a storage EK.");
    }

    /// <summary>
    /// RSAES-OAEP encryption (RFC 8017, 7.1.1) with MGF1 and a label, which .NET's RSA does not take. The public operation is a
    /// plain modular exponentiation: BouncyCastle's RSA key parameters run a primality test on every new modulus (milliseconds),
    /// which a server making one credential per request for a fresh EK cannot afford.
    /// </summary>
    internal static byte[] RsaOaepEncrypt(byte[] modulus, byte[] exponent, ReadOnlySpan<byte> message, TpmAlgId hashAlg, ReadOnlySpan<byte> label)
    {
        var n = new System.Numerics.BigInteger(modulus, isUnsigned: true, isBigEndian: true);
        var e = new System.Numerics.BigInteger(exponent, isUnsigned: true, isBigEndian: true);
        int k = (int)((n.GetBitLength() + 7) / 8);
        int hLen = TpmHash.DigestSize(hashAlg);
        if (message.Length > k - 2 * hLen - 2) throw new ArgumentException("Message too long for RSA-OAEP with this key.", nameof(message));
        var em = new byte[k];
        var seed = em.AsSpan(1, hLen);
        var db = em.AsSpan(1 + hLen);
        TpmHash.Hash(hashAlg, label, db[..hLen]);
        db[^(message.Length + 1)] = 0x01;
        message.CopyTo(db[^message.Length..]);
        RandomNumberGenerator.Fill(seed);
        Mgf1Xor(hashAlg, seed, db);
        Mgf1Xor(hashAlg, db, seed);
        var m = new System.Numerics.BigInteger(em, isUnsigned: true, isBigEndian: true);
        CryptographicOperations.ZeroMemory(em);
        var c = System.Numerics.BigInteger.ModPow(m, e, n).ToByteArray(isUnsigned: true, isBigEndian: true);
        if (c.Length == k) return c;
        var outBuf = new byte[k];
        c.CopyTo(outBuf, k - c.Length);
        return outBuf;
    }

    /// <summary>target ^= MGF1(seed, target.Length).</summary>
    private static void Mgf1Xor(TpmAlgId hashAlg, ReadOnlySpan<byte> seed, Span<byte> target)
    {
        int hLen = TpmHash.DigestSize(hashAlg);
        var input = new byte[seed.Length + 4];
        seed.CopyTo(input);
        Span<byte> block = stackalloc byte[64];
        for (uint counter = 0, done = 0; done < target.Length; counter++)
        {
            BinaryPrimitives.WriteUInt32BigEndian(input.AsSpan(seed.Length), counter);
            TpmHash.Hash(hashAlg, input, block[..hLen]);
            int n = Math.Min(hLen, target.Length - (int)done);
            for (int i = 0; i < n; i++) target[(int)done + i] ^= block[i];
            done += (uint)n;
        }
    }

    private static OaepEncoding Oaep(TpmAlgId hashAlg) => new(new RsaEngine(), BcDigest(hashAlg), BcDigest(hashAlg), IdentityLabel);

    private static IDigest BcDigest(TpmAlgId alg) => alg switch
    {
        TpmAlgId.Sha1 => new Sha1Digest(),
        TpmAlgId.Sha256 => new Sha256Digest(),
        TpmAlgId.Sha384 => new Sha384Digest(),
        TpmAlgId.Sha512 => new Sha512Digest(),
        _ => throw new NotSupportedException($"Hash {alg} is not supported."),
    };

    private static BcBigInteger Bc(byte[]? v) => new(1, v ?? throw new CryptographicException("RSA private key lacks CRT parameters."));

    private static byte[] Pad(byte[] v, int n)
    {
        if (v.Length == n) return v;
        var o = new byte[n];
        v.CopyTo(o, n - v.Length);
        return o;
    }

    /// <summary>AES-CFB-128 with a zero IV over any length: pads to whole blocks, then cuts (CFB output for a prefix does not depend on what follows).</summary>
    internal static byte[] AesCfb(byte[] key, ReadOnlySpan<byte> data, bool encrypt)
    {
        using var aes = Aes.Create();
        aes.Key = key;
        int padded = (data.Length + 15) / 16 * 16;
        var buf = new byte[padded];
        data.CopyTo(buf);
        var iv = new byte[16];
        var outBuf = encrypt
            ? aes.EncryptCfb(buf, iv, PaddingMode.None, 128)
            : aes.DecryptCfb(buf, iv, PaddingMode.None, 128);
        return outBuf[..data.Length];
    }
}
