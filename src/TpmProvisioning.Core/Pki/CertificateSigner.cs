using System.Security.Cryptography;
using Org.BouncyCastle.Asn1;
using Org.BouncyCastle.Asn1.X509;

namespace TpmProvisioning.Pki;

/// <summary>
/// A CA's private key, wherever it lives (a file here; an HSM through PKCS#11 later). It signs the DER bytes of a
/// TBSCertificate and returns the X.509 signature value (RSASSA-PKCS1-v1_5 bytes, or a DER ECDSA-Sig-Value).
/// </summary>
public interface ICertificateSigner : IDisposable
{
    /// <summary>Where the key is, for people: <c>file:/…/cakey.pem</c>, <c>pkcs11:token=…</c>.</summary>
    string Description { get; }

    /// <summary>The signer's public key as DER SubjectPublicKeyInfo (must match the CA certificate's).</summary>
    byte[] SubjectPublicKeyInfo { get; }

    /// <summary>DER AlgorithmIdentifier of the signatures this signer makes, e.g. ecdsa-with-SHA256.</summary>
    byte[] SignatureAlgorithm { get; }

    /// <summary>Signs <paramref name="data"/> (hashing it with the algorithm's hash).</summary>
    Task<byte[]> SignAsync(ReadOnlyMemory<byte> data, CancellationToken ct = default);
}

/// <summary>The CA's signer did not answer in time; the provisioning surface answers 504.</summary>
public sealed class CertificateSignerTimeoutException : TimeoutException
{
    public CertificateSignerTimeoutException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>
/// A signer whose key is a PKCS#8 PEM file (ECDSA P-256/P-384 or RSA ≥ 2048), loaded into memory. The file is written
/// readable by its owner only (0600 on Unix).
/// </summary>
public sealed class FileCertificateSigner : ICertificateSigner
{
    private readonly AsymmetricAlgorithm _key;
    private readonly HashAlgorithmName _hash;

    private FileCertificateSigner(AsymmetricAlgorithm key, string description)
    {
        _key = key;
        Description = description;
        switch (key)
        {
            case ECDsa ec:
                SubjectPublicKeyInfo = ec.ExportSubjectPublicKeyInfo();
                int bits = ec.KeySize;
                (_hash, string oid) = bits switch
                {
                    256 => (HashAlgorithmName.SHA256, "1.2.840.10045.4.3.2"),
                    384 => (HashAlgorithmName.SHA384, "1.2.840.10045.4.3.3"),
                    521 => (HashAlgorithmName.SHA512, "1.2.840.10045.4.3.4"),
                    _ => throw new CryptographicException($"Unsupported EC key size {bits}."),
                };
                SignatureAlgorithm = new AlgorithmIdentifier(new DerObjectIdentifier(oid)).GetDerEncoded();
                break;
            case RSA rsa:
                if (rsa.KeySize < 2048) throw new CryptographicException($"An RSA CA key needs at least 2048 bits (this one has {rsa.KeySize}).");
                SubjectPublicKeyInfo = rsa.ExportSubjectPublicKeyInfo();
                _hash = HashAlgorithmName.SHA256;
                SignatureAlgorithm = new AlgorithmIdentifier(new DerObjectIdentifier("1.2.840.113549.1.1.11"), DerNull.Instance).GetDerEncoded();
                break;
            default:
                throw new CryptographicException("Only ECDSA and RSA CA keys are supported.");
        }
    }

    public string Description { get; }
    public byte[] SubjectPublicKeyInfo { get; }
    public byte[] SignatureAlgorithm { get; }

    /// <summary>Generates a new ECDSA P-256 key and writes it to <paramref name="keyPath"/> (0600).</summary>
    public static FileCertificateSigner CreateEcdsaP256(string keyPath)
    {
        var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        ComponentCa.WriteSecretFile(keyPath, key.ExportPkcs8PrivateKeyPem());
        return new FileCertificateSigner(key, "file:" + keyPath);
    }

    /// <summary>Loads a key file (PKCS#8, SEC1 EC or PKCS#1 RSA PEM).</summary>
    public static FileCertificateSigner Load(string keyPath) => FromPem(File.ReadAllText(keyPath), "file:" + keyPath);

    /// <summary>A signer over a PEM private key held in memory.</summary>
    /// <summary>True when the PEM holds an encrypted private key (PKCS#8 <c>ENCRYPTED PRIVATE KEY</c>, or OpenSSL's legacy <c>Proc-Type: 4,ENCRYPTED</c>).</summary>
    public static bool IsEncryptedPem(string privateKeyPem) =>
        privateKeyPem.Contains("ENCRYPTED PRIVATE KEY", StringComparison.Ordinal) || privateKeyPem.Contains("Proc-Type: 4,ENCRYPTED", StringComparison.Ordinal);

    /// <summary>
    /// Opens an encrypted PKCS#8 private key (<c>BEGIN ENCRYPTED PRIVATE KEY</c>, what <c>openssl pkey -aes256</c> writes) with its
    /// password and returns it as an unencrypted PKCS#8 PEM, held only in memory. Throws <see cref="CryptographicException"/>
    /// for a wrong password or a key that is not EC or RSA, and <see cref="NotSupportedException"/> for OpenSSL's legacy
    /// encrypted form (convert it with <c>openssl pkcs8 -topk8</c>).
    /// </summary>
    public static string DecryptPem(string encryptedPem, ReadOnlySpan<char> password)
    {
        ArgumentNullException.ThrowIfNull(encryptedPem);
        if (encryptedPem.Contains("Proc-Type: 4,ENCRYPTED", StringComparison.Ordinal))
            throw new NotSupportedException("The key is in OpenSSL's legacy encrypted form; convert it to encrypted PKCS#8 with 'openssl pkcs8 -topk8 -v2 aes-256-cbc'.");
        using (var ec = ECDsa.Create())
        {
            try { ec.ImportFromEncryptedPem(encryptedPem, password); return ec.ExportPkcs8PrivateKeyPem(); }
            catch (CryptographicException) { }
            catch (ArgumentException) { }
        }
        using var rsa = RSA.Create();
        try { rsa.ImportFromEncryptedPem(encryptedPem, password); return rsa.ExportPkcs8PrivateKeyPem(); }
        catch (Exception ex) when (ex is CryptographicException or ArgumentException)
        {
            throw new CryptographicException("The encrypted private key cannot be opened: the password is wrong, or it is neither an EC nor an RSA key.", ex);
        }
    }

    public static FileCertificateSigner FromPem(string privateKeyPem, string description = "memory")
    {
        ArgumentNullException.ThrowIfNull(privateKeyPem);
        var kind = privateKeyPem.Contains("RSA PRIVATE KEY", StringComparison.Ordinal) ? "rsa"
            : privateKeyPem.Contains("EC PRIVATE KEY", StringComparison.Ordinal) ? "ec" : "pkcs8";
        if (kind == "pkcs8")
        {
            // PKCS#8: try EC first, then RSA.
            var ec = ECDsa.Create();
            try { ec.ImportFromPem(privateKeyPem); return new FileCertificateSigner(ec, description); }
            catch (CryptographicException) { ec.Dispose(); }
            catch (ArgumentException) { ec.Dispose(); }
            var rsa = RSA.Create();
            try { rsa.ImportFromPem(privateKeyPem); return new FileCertificateSigner(rsa, description); }
            catch (Exception ex) when (ex is CryptographicException or ArgumentException)
            {
                rsa.Dispose();
                throw new CryptographicException("The private key PEM holds neither an EC nor an RSA private key.", ex);
            }
        }
        AsymmetricAlgorithm key = kind == "rsa" ? RSA.Create() : ECDsa.Create();
        try
        {
            if (key is RSA r) r.ImportFromPem(privateKeyPem); else ((ECDsa)key).ImportFromPem(privateKeyPem);
            return new FileCertificateSigner(key, description);
        }
        catch (Exception ex) when (ex is CryptographicException or ArgumentException)
        {
            key.Dispose();
            throw new CryptographicException("The private key PEM cannot be read: " + ex.Message, ex);
        }
    }

    /// <summary>Writes the key as PKCS#8 PEM to <paramref name="keyPath"/> (0600).</summary>
    public void Save(string keyPath) => ComponentCa.WriteSecretFile(keyPath, _key switch
    {
        ECDsa ec => ec.ExportPkcs8PrivateKeyPem(),
        RSA rsa => rsa.ExportPkcs8PrivateKeyPem(),
        _ => throw new InvalidOperationException(),
    });

    public Task<byte[]> SignAsync(ReadOnlyMemory<byte> data, CancellationToken ct = default)
    {
        ct.ThrowIfCancellationRequested();
        byte[] sig = _key switch
        {
            ECDsa ec => ec.SignData(data.Span, _hash, DSASignatureFormat.Rfc3279DerSequence),
            RSA rsa => rsa.SignData(data.Span, _hash, RSASignaturePadding.Pkcs1),
            _ => throw new InvalidOperationException(),
        };
        return Task.FromResult(sig);
    }

    public void Dispose() => _key.Dispose();
}
