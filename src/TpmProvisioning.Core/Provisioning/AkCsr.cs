using System.Security.Cryptography;
using Org.BouncyCastle.Asn1;
using Org.BouncyCastle.Asn1.Nist;
using Org.BouncyCastle.Asn1.Oiw;
using Org.BouncyCastle.Asn1.Pkcs;
using Org.BouncyCastle.Asn1.X509;
using TpmProvisioning.Pki;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Provisioning;

/// <summary>
/// A PKCS#10 request for an AK, signed by the AK itself. A restricted signing key cannot sign an arbitrary digest: the TPM
/// hashes the CertificationRequestInfo and issues the hash ticket TPM2_Sign demands (<see cref="TpmDevice.SignWithRestrictedKey"/>).
/// This class builds the structure and turns the TPMT_SIGNATURE into X.509 form; the signing itself is a callback, so the same
/// code serves a TPM and software keys (tests, load benchmarks).
/// </summary>
public static class AkCsr
{
    /// <summary>DER CertificationRequestInfo: subject CN=name, serialNumber=serial, O=vendor; the AK's key; no attributes.</summary>
    public static byte[] BuildRequestInfo(TpmPublic akPublic, DeviceIdentity device)
    {
        ArgumentNullException.ThrowIfNull(akPublic);
        ArgumentNullException.ThrowIfNull(device);
        var subject = TpmCa.BuildSubject(device.Name, device.Serial, device.Vendor);
        var spki = SubjectPublicKeyInfo.GetInstance(akPublic.ToSubjectPublicKeyInfo());
        return new CertificationRequestInfo(subject, spki, new DerSet()).GetDerEncoded();
    }

    /// <summary>DER CertificationRequest from the request info and the TPM's TPMT_SIGNATURE over it.</summary>
    public static byte[] Assemble(byte[] requestInfo, byte[] tpmtSignature)
    {
        ArgumentNullException.ThrowIfNull(requestInfo);
        ArgumentNullException.ThrowIfNull(tpmtSignature);
        var sig = TpmtSignature.Parse(tpmtSignature);
        var (alg, value) = ToX509Signature(sig);
        var info = CertificationRequestInfo.GetInstance(Asn1Object.FromByteArray(requestInfo));
        return new CertificationRequest(info, alg, new DerBitString(value)).GetDerEncoded();
    }

    /// <summary>Builds, signs through <paramref name="signTpmt"/> (message in, TPMT_SIGNATURE out) and assembles a request; returns DER.</summary>
    public static byte[] Create(TpmPublic akPublic, DeviceIdentity device, Func<byte[], byte[]> signTpmt)
    {
        ArgumentNullException.ThrowIfNull(signTpmt);
        var info = BuildRequestInfo(akPublic, device);
        return Assemble(info, signTpmt(info));
    }

    /// <summary>PEM (<c>CERTIFICATE REQUEST</c>) of a DER request.</summary>
    public static string ToPem(byte[] der) => new string(PemEncoding.Write("CERTIFICATE REQUEST", der)) + "\n";

    /// <summary>The X.509 AlgorithmIdentifier and signature value for a TPM signature.</summary>
    internal static (AlgorithmIdentifier Alg, byte[] Value) ToX509Signature(TpmtSignature sig)
    {
        switch (sig.SigAlg)
        {
            case TpmAlgId.RsaSsa:
                return (new AlgorithmIdentifier(sig.Hash switch
                {
                    TpmAlgId.Sha1 => PkcsObjectIdentifiers.Sha1WithRsaEncryption,
                    TpmAlgId.Sha256 => PkcsObjectIdentifiers.Sha256WithRsaEncryption,
                    TpmAlgId.Sha384 => PkcsObjectIdentifiers.Sha384WithRsaEncryption,
                    TpmAlgId.Sha512 => PkcsObjectIdentifiers.Sha512WithRsaEncryption,
                    _ => throw new NotSupportedException($"RSASSA with {sig.Hash} has no X.509 algorithm here."),
                }, DerNull.Instance), sig.Signature);
            case TpmAlgId.RsaPss:
            {
                var hash = new AlgorithmIdentifier(HashOid(sig.Hash), DerNull.Instance);
                var mgf = new AlgorithmIdentifier(PkcsObjectIdentifiers.IdMgf1, hash);
                // The TPM's PSS salt is the digest size (TPM 2.0 Part 1, B.7 / libtpms).
                var prm = new RsassaPssParameters(hash, mgf, DerInteger.ValueOf(TpmHash.DigestSize(sig.Hash)), DerInteger.One);
                return (new AlgorithmIdentifier(PkcsObjectIdentifiers.IdRsassaPss, prm), sig.Signature);
            }
            case TpmAlgId.EcDsa:
            {
                var oid = sig.Hash switch
                {
                    TpmAlgId.Sha1 => X9ObjectIdentifiersEcdsaWithSha1,
                    TpmAlgId.Sha256 => Org.BouncyCastle.Asn1.X9.X9ObjectIdentifiers.ECDsaWithSha256,
                    TpmAlgId.Sha384 => Org.BouncyCastle.Asn1.X9.X9ObjectIdentifiers.ECDsaWithSha384,
                    TpmAlgId.Sha512 => Org.BouncyCastle.Asn1.X9.X9ObjectIdentifiers.ECDsaWithSha512,
                    _ => throw new NotSupportedException($"ECDSA with {sig.Hash} has no X.509 algorithm here."),
                };
                var seq = new DerSequence(new DerInteger(new Org.BouncyCastle.Math.BigInteger(1, sig.R)), new DerInteger(new Org.BouncyCastle.Math.BigInteger(1, sig.S)));
                return (new AlgorithmIdentifier(oid), seq.GetDerEncoded());
            }
            default:
                throw new NotSupportedException($"A {sig.SigAlg} signature cannot sign an X.509 request.");
        }
    }

    private static readonly DerObjectIdentifier X9ObjectIdentifiersEcdsaWithSha1 = Org.BouncyCastle.Asn1.X9.X9ObjectIdentifiers.ECDsaWithSha1;

    private static DerObjectIdentifier HashOid(TpmAlgId hash) => hash switch
    {
        TpmAlgId.Sha1 => OiwObjectIdentifiers.IdSha1,
        TpmAlgId.Sha256 => NistObjectIdentifiers.IdSha256,
        TpmAlgId.Sha384 => NistObjectIdentifiers.IdSha384,
        TpmAlgId.Sha512 => NistObjectIdentifiers.IdSha512,
        _ => throw new NotSupportedException($"Hash {hash} is not supported."),
    };
}

/// <summary>
/// The sealed AK certificate of a provisioning response: AES-256-GCM under the 32-byte credential secret, a 12-byte random
/// nonce, no associated data; the output is the ciphertext followed by the 16-byte tag.
/// </summary>
public static class ProvisioningEnvelope
{
    public const int SecretBytes = 32;
    public const int NonceBytes = 12;
    public const int TagBytes = 16;

    /// <summary>Encrypts <paramref name="plaintext"/>; returns ciphertext‖tag and the fresh nonce.</summary>
    public static (byte[] CiphertextAndTag, byte[] Nonce) Seal(ReadOnlySpan<byte> secret, ReadOnlySpan<byte> plaintext)
    {
        if (secret.Length != SecretBytes) throw new ArgumentException($"The secret must be {SecretBytes} bytes.", nameof(secret));
        var nonce = RandomNumberGenerator.GetBytes(NonceBytes);
        var output = new byte[plaintext.Length + TagBytes];
        using var gcm = new AesGcm(secret, TagBytes);
        gcm.Encrypt(nonce, plaintext, output.AsSpan(0, plaintext.Length), output.AsSpan(plaintext.Length));
        return (output, nonce);
    }

    /// <summary>Decrypts ciphertext‖tag; <see cref="AuthenticationTagMismatchException"/> when anything was altered or the secret is wrong.</summary>
    public static byte[] Open(ReadOnlySpan<byte> secret, ReadOnlySpan<byte> ciphertextAndTag, ReadOnlySpan<byte> nonce)
    {
        if (secret.Length != SecretBytes) throw new ArgumentException($"The secret must be {SecretBytes} bytes.", nameof(secret));
        if (nonce.Length != NonceBytes) throw new ArgumentException($"The nonce must be {NonceBytes} bytes.", nameof(nonce));
        if (ciphertextAndTag.Length < TagBytes) throw new ArgumentException("The ciphertext is shorter than its tag.", nameof(ciphertextAndTag));
        int n = ciphertextAndTag.Length - TagBytes;
        var plain = new byte[n];
        using var gcm = new AesGcm(secret, TagBytes);
        gcm.Decrypt(nonce, ciphertextAndTag[..n], ciphertextAndTag[n..], plain);
        return plain;
    }
}
