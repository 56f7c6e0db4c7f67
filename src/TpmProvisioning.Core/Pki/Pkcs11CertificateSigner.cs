using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Net.Pkcs11Interop.Common;
using Net.Pkcs11Interop.HighLevelAPI;
using Org.BouncyCastle.Asn1;
using Org.BouncyCastle.Asn1.X509;
using TpmProvisioning.Kms;

namespace TpmProvisioning.Pki;

/// <summary>
/// A CA key inside a PKCS#11 token: every signature is made by the token (CKM_ECDSA over the SHA-256/384 digest, or
/// CKM_SHA256_RSA_PKCS), so the private key never leaves it. The public key comes from the CA certificate the key was
/// registered with; <see cref="SelfTest"/> proves that the token's key matches it.
/// </summary>
public sealed class Pkcs11CertificateSigner : ICertificateSigner
{
    private readonly Pkcs11Settings _token;
    private readonly string? _keyLabel;
    private readonly byte[]? _keyId;
    private readonly bool _ec;
    private readonly HashAlgorithmName _hash;
    private readonly int _fieldBytes;

    /// <summary>A signer for the private key with <paramref name="keyLabel"/> (CKA_LABEL) and/or <paramref name="keyIdHex"/> (CKA_ID).</summary>
    public Pkcs11CertificateSigner(Pkcs11Settings token, string? keyLabel, string? keyIdHex, byte[] subjectPublicKeyInfo)
    {
        ArgumentNullException.ThrowIfNull(token);
        ArgumentNullException.ThrowIfNull(subjectPublicKeyInfo);
        if (string.IsNullOrEmpty(keyLabel) && string.IsNullOrEmpty(keyIdHex)) throw new ArgumentException("A PKCS#11 key needs a label or an id.");
        _token = token;
        _keyLabel = string.IsNullOrEmpty(keyLabel) ? null : keyLabel;
        _keyId = string.IsNullOrEmpty(keyIdHex) ? null : Convert.FromHexString(keyIdHex);
        SubjectPublicKeyInfo = subjectPublicKeyInfo;
        var spki = Org.BouncyCastle.Asn1.X509.SubjectPublicKeyInfo.GetInstance(subjectPublicKeyInfo);
        string alg = spki.Algorithm.Algorithm.Id;
        if (alg == "1.2.840.10045.2.1")
        {
            _ec = true;
            string curve = DerObjectIdentifier.GetInstance(spki.Algorithm.Parameters).Id;
            (_hash, _fieldBytes, string oid) = curve switch
            {
                "1.2.840.10045.3.1.7" => (HashAlgorithmName.SHA256, 32, "1.2.840.10045.4.3.2"),
                "1.3.132.0.34" => (HashAlgorithmName.SHA384, 48, "1.2.840.10045.4.3.3"),
                _ => throw new CryptographicException($"The EC curve {curve} is not allowed for a CA key (P-256 or P-384)."),
            };
            SignatureAlgorithm = new AlgorithmIdentifier(new DerObjectIdentifier(oid)).GetDerEncoded();
        }
        else if (alg == "1.2.840.113549.1.1.1")
        {
            _hash = HashAlgorithmName.SHA256;
            SignatureAlgorithm = new AlgorithmIdentifier(new DerObjectIdentifier("1.2.840.113549.1.1.11"), DerNull.Instance).GetDerEncoded();
        }
        else throw new CryptographicException($"The key algorithm {alg} is not allowed for a CA key (RSA or EC).");
        Description = $"pkcs11:token={token.TokenLabel};object={keyLabel ?? keyIdHex}";
    }

    public string Description { get; }
    public byte[] SubjectPublicKeyInfo { get; }
    public byte[] SignatureAlgorithm { get; }

    /// <summary>The token's private key object, or null.</summary>
    public static IObjectHandle? FindPrivateKey(ISession session, string? label, byte[]? id)
    {
        var f = Pkcs11Token.Factories.ObjectAttributeFactory;
        var template = new List<IObjectAttribute> { f.Create(CKA.CKA_CLASS, CKO.CKO_PRIVATE_KEY) };
        if (label is not null) template.Add(f.Create(CKA.CKA_LABEL, label));
        if (id is not null) template.Add(f.Create(CKA.CKA_ID, id));
        var found = session.FindAllObjects(template);
        return found.Count == 0 ? null : found[0];
    }

    public Task<byte[]> SignAsync(ReadOnlyMemory<byte> data, CancellationToken ct = default)
    {
        ct.ThrowIfCancellationRequested();
        var bytes = data.ToArray();
        // The token call blocks; run it off the request thread so the CA's timeout can fire.
        return Task.Run(() => Sign(bytes), ct);
    }

    private byte[] Sign(byte[] data) => Pkcs11Token.Run(_token, session =>
    {
        var key = FindPrivateKey(session, _keyLabel, _keyId)
            ?? throw new KmsException(KmsErrorKind.Unavailable, null, $"The PKCS#11 token '{_token.TokenLabel}' has no private key {_keyLabel ?? Convert.ToHexString(_keyId!)}.");
        var m = Pkcs11Token.Factories.MechanismFactory;
        if (!_ec) return session.Sign(m.Create(CKM.CKM_SHA256_RSA_PKCS), key, data);
        var digest = _hash == HashAlgorithmName.SHA384 ? SHA384.HashData(data) : SHA256.HashData(data);
        var raw = session.Sign(m.Create(CKM.CKM_ECDSA), key, digest);
        if (raw.Length != 2 * _fieldBytes) throw new CryptographicException($"The token returned an ECDSA signature of {raw.Length} bytes.");
        return new DerSequence(
            new DerInteger(new Org.BouncyCastle.Math.BigInteger(1, raw, 0, _fieldBytes)),
            new DerInteger(new Org.BouncyCastle.Math.BigInteger(1, raw, _fieldBytes, _fieldBytes))).GetDerEncoded();
    });

    /// <summary>Signs a probe inside the token and verifies it with the certificate's public key: the key is there, the PIN works, and the key is the certificate's.</summary>
    public void SelfTest()
    {
        var probe = RandomNumberGenerator.GetBytes(32);
        var sig = Sign(probe);
        bool ok;
        if (_ec)
        {
            using var ec = ECDsa.Create();
            ec.ImportSubjectPublicKeyInfo(SubjectPublicKeyInfo, out _);
            ok = ec.VerifyData(probe, sig, _hash, DSASignatureFormat.Rfc3279DerSequence);
        }
        else
        {
            using var rsa = RSA.Create();
            rsa.ImportSubjectPublicKeyInfo(SubjectPublicKeyInfo, out _);
            ok = rsa.VerifyData(probe, sig, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        }
        if (!ok) throw new CryptographicException("The token's key does not match the certificate: its signature does not verify with the certificate's public key.");
    }

    public void Dispose() { }
}

/// <summary>The active signing key cannot be loaded (its PIN is missing or refused, its token is gone, its seal does not open); provisioning answers 503.</summary>
public sealed class SigningKeyUnavailableException(string message, Exception? inner = null) : Exception(message, inner);
