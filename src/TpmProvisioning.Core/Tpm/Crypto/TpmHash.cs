using System.Security.Cryptography;

namespace TpmProvisioning.Tpm;

/// <summary>Maps TPM hash algorithm identifiers to .NET hashing and computes digests and HMACs.</summary>
public static class TpmHash
{
    /// <summary>True for the hash algorithms this engine can compute (SHA-1, SHA-256, SHA-384, SHA-512).</summary>
    public static bool IsSupported(TpmAlgId alg) =>
        alg is TpmAlgId.Sha1 or TpmAlgId.Sha256 or TpmAlgId.Sha384 or TpmAlgId.Sha512;

    /// <summary>True for any TPM hash identifier the parsers accept (supported ones plus SM3-256).</summary>
    public static bool IsHashAlg(TpmAlgId alg) => IsSupported(alg) || alg == TpmAlgId.Sm3_256;

    /// <summary>Digest size in bytes; 0 for <see cref="TpmAlgId.Null"/>; throws for a non-hash identifier.</summary>
    public static int DigestSize(TpmAlgId alg) => alg switch
    {
        TpmAlgId.Sha1 => 20,
        TpmAlgId.Sha256 => 32,
        TpmAlgId.Sm3_256 => 32,
        TpmAlgId.Sha384 => 48,
        TpmAlgId.Sha512 => 64,
        TpmAlgId.Null => 0,
        _ => throw new NotSupportedException($"0x{(ushort)alg:X4} is not a hash algorithm."),
    };

    /// <summary>The .NET name of a supported hash algorithm.</summary>
    public static HashAlgorithmName Name(TpmAlgId alg) => alg switch
    {
        TpmAlgId.Sha1 => HashAlgorithmName.SHA1,
        TpmAlgId.Sha256 => HashAlgorithmName.SHA256,
        TpmAlgId.Sha384 => HashAlgorithmName.SHA384,
        TpmAlgId.Sha512 => HashAlgorithmName.SHA512,
        _ => throw new NotSupportedException($"Hash algorithm 0x{(ushort)alg:X4} is not supported."),
    };

    /// <summary>The TPM identifier for a .NET hash name.</summary>
    public static TpmAlgId FromName(HashAlgorithmName name)
    {
        if (name == HashAlgorithmName.SHA1) return TpmAlgId.Sha1;
        if (name == HashAlgorithmName.SHA256) return TpmAlgId.Sha256;
        if (name == HashAlgorithmName.SHA384) return TpmAlgId.Sha384;
        if (name == HashAlgorithmName.SHA512) return TpmAlgId.Sha512;
        throw new NotSupportedException($"Hash {name} has no TPM identifier here.");
    }

    /// <summary>Digest of <paramref name="data"/>.</summary>
    public static byte[] Hash(TpmAlgId alg, ReadOnlySpan<byte> data) => alg switch
    {
        TpmAlgId.Sha1 => SHA1.HashData(data),
        TpmAlgId.Sha256 => SHA256.HashData(data),
        TpmAlgId.Sha384 => SHA384.HashData(data),
        TpmAlgId.Sha512 => SHA512.HashData(data),
        _ => throw new NotSupportedException($"Hash algorithm 0x{(ushort)alg:X4} is not supported."),
    };

    /// <summary>Writes the digest of <paramref name="data"/> into <paramref name="destination"/>; returns the bytes written.</summary>
    public static int Hash(TpmAlgId alg, ReadOnlySpan<byte> data, Span<byte> destination) => alg switch
    {
        TpmAlgId.Sha1 => SHA1.HashData(data, destination),
        TpmAlgId.Sha256 => SHA256.HashData(data, destination),
        TpmAlgId.Sha384 => SHA384.HashData(data, destination),
        TpmAlgId.Sha512 => SHA512.HashData(data, destination),
        _ => throw new NotSupportedException($"Hash algorithm 0x{(ushort)alg:X4} is not supported."),
    };

    /// <summary>HMAC of <paramref name="data"/> under <paramref name="key"/>.</summary>
    public static byte[] Hmac(TpmAlgId alg, ReadOnlySpan<byte> key, ReadOnlySpan<byte> data) => alg switch
    {
        TpmAlgId.Sha1 => HMACSHA1.HashData(key, data),
        TpmAlgId.Sha256 => HMACSHA256.HashData(key, data),
        TpmAlgId.Sha384 => HMACSHA384.HashData(key, data),
        TpmAlgId.Sha512 => HMACSHA512.HashData(key, data),
        _ => throw new NotSupportedException($"Hash algorithm 0x{(ushort)alg:X4} is not supported."),
    };

    /// <summary>An incremental hash for a supported algorithm.</summary>
    public static IncrementalHash CreateIncremental(TpmAlgId alg) => IncrementalHash.CreateHash(Name(alg));

    /// <summary>An incremental HMAC for a supported algorithm.</summary>
    public static IncrementalHash CreateIncrementalHmac(TpmAlgId alg, ReadOnlySpan<byte> key) => IncrementalHash.CreateHMAC(Name(alg), key);
}
