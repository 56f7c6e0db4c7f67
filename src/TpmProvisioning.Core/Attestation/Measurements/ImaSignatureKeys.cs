using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace TpmProvisioning.Attestation.Measurements;

/// <summary>
/// Public keys that verify IMA file signatures (<c>ima-sig</c>), indexed by the 32-bit key id of the IMA v2 signature
/// header. The key id is the last four bytes of the certificate's Subject Key Identifier, or of SHA-1 over the key
/// (PKCS#1 DER for RSA, the uncompressed point for ECDSA), as the kernel and evmctl compute it. Read-only after loading,
/// so one instance may serve concurrent verifications.
/// </summary>
public sealed class ImaSignatureKeys
{
    private readonly Dictionary<uint, PublicKey> _keys = new();

    private sealed record PublicKey(RSA? Rsa, ECDsa? Ecdsa, byte[] Spki);

    /// <summary>The key ids loaded.</summary>
    public IReadOnlyCollection<uint> KeyIds => _keys.Keys;
    /// <summary>The number of keys loaded.</summary>
    public int Count => _keys.Count;

    /// <summary>Keys from PEM text: any number of PUBLIC KEY, RSA PUBLIC KEY and CERTIFICATE blocks. Throws <see cref="FormatException"/> when none loads.</summary>
    public static ImaSignatureKeys FromPem(string pem)
    {
        var keys = new ImaSignatureKeys();
        keys.AddPem(pem);
        return keys;
    }

    /// <summary>Keys from DER blobs (SubjectPublicKeyInfo or X.509 certificate each).</summary>
    public static ImaSignatureKeys FromDer(params byte[][] der)
    {
        var keys = new ImaSignatureKeys();
        foreach (var d in der) keys.AddDer(d);
        return keys;
    }

    /// <summary>
    /// Keys from a Keylime keyring string (the runtime policy's <c>verification-keys</c>): JSON
    /// <c>{"pubkeys":["base64 DER SPKI",...],"keyids":[n,...]}</c>, possibly JSON-encoded twice. Empty text gives no keys.
    /// </summary>
    public static ImaSignatureKeys FromKeylimeKeyring(string? text)
    {
        var keys = new ImaSignatureKeys();
        keys.AddKeylimeKeyring(text);
        return keys;
    }

    /// <summary>Adds every key of <paramref name="other"/>.</summary>
    public void AddAll(ImaSignatureKeys other)
    {
        foreach (var (id, key) in other._keys) _keys[id] = key;
    }

    /// <summary>Adds the keys of PEM text; throws <see cref="FormatException"/> when a block is malformed or none is found.</summary>
    public void AddPem(string pem)
    {
        ArgumentNullException.ThrowIfNull(pem);
        int added = 0;
        var span = pem.AsSpan();
        while (PemEncoding.TryFind(span, out var fields))
        {
            var label = span[fields.Label];
            byte[] der;
            try { der = Convert.FromBase64String(span[fields.Base64Data].ToString()); }
            catch (FormatException) { throw new FormatException($"PEM block '{label}' is not base64."); }
            if (label.SequenceEqual("RSA PUBLIC KEY"))
            {
                var rsa = RSA.Create();
                try { rsa.ImportRSAPublicKey(der, out _); }
                catch (CryptographicException e) { rsa.Dispose(); throw new FormatException($"RSA PUBLIC KEY block does not parse: {e.Message}"); }
                Add(rsa.ExportSubjectPublicKeyInfo(), null);
                rsa.Dispose();
            }
            else if (label.SequenceEqual("PUBLIC KEY") || label.SequenceEqual("CERTIFICATE"))
            {
                AddDer(der);
            }
            added++;
            span = span[fields.Location.End..];
        }
        if (added == 0) throw new FormatException("No PUBLIC KEY or CERTIFICATE block in the PEM text.");
    }

    /// <summary>Adds a DER SubjectPublicKeyInfo or certificate (RSA or EC); throws <see cref="FormatException"/> otherwise.</summary>
    public void AddDer(byte[] der)
    {
        ArgumentNullException.ThrowIfNull(der);
        byte[]? skid = null;
        byte[] spki;
        try
        {
            using var cert = X509CertificateLoader.LoadCertificate(der);
            spki = cert.PublicKey.ExportSubjectPublicKeyInfo();
            if (cert.Extensions["2.5.29.14"] is X509SubjectKeyIdentifierExtension ext && ext.SubjectKeyIdentifierBytes.Length >= 4)
                skid = ext.SubjectKeyIdentifierBytes.ToArray();
        }
        catch (CryptographicException)
        {
            spki = der;
        }
        Add(spki, skid);
    }

    private void Add(byte[] spki, byte[]? skid)
    {
        RSA? rsa = null;
        ECDsa? ec = null;
        byte[] idSource;
        try
        {
            rsa = RSA.Create();
            rsa.ImportSubjectPublicKeyInfo(spki, out int read);
            if (read != spki.Length) throw new CryptographicException("trailing bytes");
            idSource = rsa.ExportRSAPublicKey();
        }
        catch (CryptographicException)
        {
            rsa?.Dispose();
            rsa = null;
            try
            {
                ec = ECDsa.Create();
                ec.ImportSubjectPublicKeyInfo(spki, out int read);
                if (read != spki.Length) throw new CryptographicException("trailing bytes");
                var q = ec.ExportParameters(false).Q;
                idSource = [0x04, .. q.X!, .. q.Y!];
            }
            // An EC key on a curve OpenSSL does not know is PlatformNotSupportedException, an unknown algorithm NotSupportedException:
            // both mean "not a key this verifier can use", as a malformed one does.
            catch (Exception e) when (e is CryptographicException or PlatformNotSupportedException or NotSupportedException)
            {
                ec?.Dispose();
                throw new FormatException($"Not an RSA or EC public key or certificate: {e.Message}");
            }
        }
        uint keyId = skid is not null
            ? BinaryPrimitives.ReadUInt32BigEndian(skid.AsSpan(skid.Length - 4))
            : BinaryPrimitives.ReadUInt32BigEndian(SHA1.HashData(idSource).AsSpan(16));
        _keys[keyId] = new PublicKey(rsa, ec, spki);
    }

    /// <summary>Adds the keys of a Keylime keyring string (see <see cref="FromKeylimeKeyring"/>); throws <see cref="FormatException"/> when malformed.</summary>
    public void AddKeylimeKeyring(string? text)
    {
        if (string.IsNullOrWhiteSpace(text)) return;
        try
        {
            // A member given twice is malformed (JsonObject would throw ArgumentException on first access otherwise).
            var options = new JsonDocumentOptions { AllowDuplicateProperties = false };
            var node = JsonNode.Parse(text, documentOptions: options);
            if (node is JsonValue v && v.TryGetValue<string>(out var inner)) node = JsonNode.Parse(inner, documentOptions: options);
            if (node is not JsonObject obj) throw new FormatException("verification-keys: not a JSON object.");
            var pubkeys = obj["pubkeys"] as JsonArray ?? throw new FormatException("verification-keys: 'pubkeys' is not an array.");
            var keyids = obj["keyids"] as JsonArray;
            for (int i = 0; i < pubkeys.Count; i++)
            {
                var b64 = pubkeys[i]?.GetValue<string>() ?? throw new FormatException("verification-keys: a pubkey is null.");
                byte[] der;
                try { der = Convert.FromBase64String(b64); }
                catch (FormatException) { throw new FormatException($"verification-keys: pubkey {i} is not base64."); }
                byte[]? id = null;
                if (keyids is not null && i < keyids.Count && keyids[i] is JsonValue idv && idv.TryGetValue<long>(out var n) && n is > 0 and <= uint.MaxValue)
                {
                    id = new byte[4];
                    BinaryPrimitives.WriteUInt32BigEndian(id, (uint)n);
                }
                Add(der, id);
            }
        }
        catch (JsonException e) { throw new FormatException($"verification-keys: not JSON: {e.Message}"); }
        catch (InvalidOperationException e) { throw new FormatException($"verification-keys: wrong JSON type: {e.Message}"); }
    }

    /// <summary>This key set as a Keylime keyring string (see <see cref="FromKeylimeKeyring"/>).</summary>
    public string ToKeylimeKeyring()
    {
        var obj = new JsonObject
        {
            ["pubkeys"] = new JsonArray(_keys.Values.Select(k => (JsonNode?)JsonValue.Create(Convert.ToBase64String(k.Spki))).ToArray()),
            ["keyids"] = new JsonArray(_keys.Keys.Select(k => (JsonNode?)JsonValue.Create((long)k)).ToArray()),
        };
        return obj.ToJsonString();
    }

    /// <summary>
    /// Verifies an IMA signature blob (<c>struct signature_v2_hdr</c>: type 0x03 or 0x05, version 2, hash_algo, key id (4,
    /// big-endian), signature size (2, big-endian), signature) over a file digest whose kernel algorithm name is
    /// <paramref name="digestAlgorithm"/>. Returns false with a reason for anything that does not verify; never throws for bad input.
    /// </summary>
    public bool Verify(ReadOnlySpan<byte> signature, ReadOnlySpan<byte> fileDigest, string digestAlgorithm, out string reason)
    {
        const int HeaderSize = 9;
        if (signature.Length < HeaderSize) { reason = "signature shorter than its header"; return false; }
        if (signature[0] is not (0x03 or 0x05)) { reason = $"signature type 0x{signature[0]:x2} is not a digital signature"; return false; }
        if (signature[1] != 2) { reason = $"signature version {signature[1]} is not 2"; return false; }
        var sigAlg = ImaHashAlgorithms.FromLinuxHashAlgo(signature[2]);
        if (sigAlg is null) { reason = $"signature hash_algo {signature[2]} is not supported"; return false; }
        if (sigAlg != digestAlgorithm) { reason = $"signature is over {sigAlg} but the file digest is {digestAlgorithm}"; return false; }
        uint keyId = BinaryPrimitives.ReadUInt32BigEndian(signature[3..]);
        int size = BinaryPrimitives.ReadUInt16BigEndian(signature[7..]);
        if (size != signature.Length - HeaderSize) { reason = "signature size field disagrees with its length"; return false; }
        if (!_keys.TryGetValue(keyId, out var key)) { reason = $"no key with id {keyId:x8}"; return false; }
        var tpmAlg = ImaHashAlgorithms.ToTpm(sigAlg)!.Value;
        if (fileDigest.Length != TpmProvisioning.Tpm.TpmHash.DigestSize(tpmAlg)) { reason = "file digest size does not fit its algorithm"; return false; }
        var sig = signature[HeaderSize..];
        bool ok;
        try
        {
            ok = key.Rsa is not null
                ? key.Rsa.VerifyHash(fileDigest, sig, TpmProvisioning.Tpm.TpmHash.Name(tpmAlg), RSASignaturePadding.Pkcs1)
                : key.Ecdsa!.VerifyHash(fileDigest, sig, DSASignatureFormat.Rfc3279DerSequence);
        }
        catch (CryptographicException) { ok = false; }
        reason = ok ? "" : $"signature does not verify under key {keyId:x8}";
        return ok;
    }

    /// <summary>Builds the IMA v2 signature header and blob for a raw signature (used to create test data and by signing tools).</summary>
    public static byte[] BuildSignatureBlob(string digestAlgorithm, uint keyId, ReadOnlySpan<byte> rawSignature)
    {
        var blob = new byte[9 + rawSignature.Length];
        blob[0] = 0x03;
        blob[1] = 2;
        blob[2] = ImaHashAlgorithms.ToLinuxHashAlgo(digestAlgorithm);
        BinaryPrimitives.WriteUInt32BigEndian(blob.AsSpan(3), keyId);
        BinaryPrimitives.WriteUInt16BigEndian(blob.AsSpan(7), checked((ushort)rawSignature.Length));
        rawSignature.CopyTo(blob.AsSpan(9));
        return blob;
    }

    /// <summary>The key id the kernel computes for a key given as DER SubjectPublicKeyInfo (no certificate SKID).</summary>
    public static uint KeyIdOf(byte[] spki) => FromDer(spki).KeyIds.Single();
}
