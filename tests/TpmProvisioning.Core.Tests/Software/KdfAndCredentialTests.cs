using System.Security.Cryptography;
using System.Text;
using TpmProvisioning.Tpm;
using F = TpmProvisioning.Tests.Software.Tpm2ToolsCredentialFixtures;

namespace TpmProvisioning.Tests.Software;

public class KdfAndCredentialTests
{
    // Vectors computed with pyca/cryptography (KBKDFHMAC counter mode, r=32, L=32, label || 0x00 || context, which is KDFa; ConcatKDFHash, which is KDFe).
    [Theory]
    [InlineData(TpmAlgId.Sha256, 128, "4b6977df7782a6d0312cc5f537456667")]
    [InlineData(TpmAlgId.Sha256, 256, "d9300889a4dc087efd6b9d2ea0f779ec0d4e05566a54d177f768a862a6fd5ff7")]
    [InlineData(TpmAlgId.Sha384, 256, "516c5d259ce5c0ea6da7508ea6a4ac0f8e620d03d73608f68d6d02ff28c81a4a")]
    [InlineData(TpmAlgId.Sha256, 520, "984ebd802c877d91e21f3c68d361bb94218dda6799c2fa8cc93ee537aeaf1e3066476f87901e3372bddee111dc307a7be06f93983917b3267daf63ecc3616f5fd9")]
    [InlineData(TpmAlgId.Sha1, 160, "ec71e7de0a3f82d8ff2467d4c5552c533707b65d")]
    public void KdfAMatchesIndependentImplementation(TpmAlgId alg, int bits, string expectedHex)
    {
        var key = Enumerable.Range(0, 32).Select(i => (byte)i).ToArray();
        var contextU = Convert.FromHexString("000b" + string.Concat(Enumerable.Repeat("11", 32)));
        Assert.Equal(expectedHex, Convert.ToHexStringLower(Kdf.KdfA(alg, key, "STORAGE", contextU, [], bits)));
        // A label given as bytes with its terminator gives the same stream.
        Assert.Equal(expectedHex, Convert.ToHexStringLower(Kdf.KdfA(alg, key, "STORAGE\0"u8, contextU, [], bits)));
    }

    [Theory]
    [InlineData(TpmAlgId.Sha256, 256, "63065c03aa9f3c807c0954d032d982eea390e88f38da24ee041c4805c3bc7dd2")]
    [InlineData(TpmAlgId.Sha384, 384, "a4995ff30f07f4cee7be4dde135cb07716b5da818f0c13627946411294a23b0aee66dce8211cf513aa9a411e710eac66")]
    [InlineData(TpmAlgId.Sha256, 512, "63065c03aa9f3c807c0954d032d982eea390e88f38da24ee041c4805c3bc7dd2d05be74757dddf2b7da0e87b53a8b9473bb815e5064cc6f84523fcab245425cc")]
    public void KdfEMatchesIndependentImplementation(TpmAlgId alg, int bits, string expectedHex)
    {
        var z = Enumerable.Repeat((byte)0xAA, 32).ToArray();
        var u = Enumerable.Repeat((byte)0xBB, 32).ToArray();
        var v = Enumerable.Repeat((byte)0xCC, 32).ToArray();
        Assert.Equal(expectedHex, Convert.ToHexStringLower(Kdf.KdfE(alg, z, "IDENTITY", u, v, bits)));
    }

    [Fact]
    public void KdfAMasksPartialLeadingByte()
    {
        var full = Kdf.KdfA(TpmAlgId.Sha256, new byte[16], "X", [], [], 16);
        var part = Kdf.KdfA(TpmAlgId.Sha256, new byte[16], "X", [], [], 12);
        Assert.Equal(2, part.Length);
        Assert.Equal(0, part[0] & 0xF0);
        Assert.NotEqual(full, part); // the bit count is part of the input
    }

    private static RSA RsaFromPem(string b64) { var k = RSA.Create(); k.ImportFromPem(Encoding.ASCII.GetString(Convert.FromBase64String(b64))); return k; }
    private static ECDiffieHellman EcdhFromPem(string b64) { var k = ECDiffieHellman.Create(); k.ImportFromPem(Encoding.ASCII.GetString(Convert.FromBase64String(b64))); return k; }

    [Fact]
    public void ActivatesCredentialMadeByTpm2ToolsForRsaEk()
    {
        var ek = TpmPublic.ParseTpm2B(Convert.FromBase64String(F.EkRsaPub));
        using var priv = RsaFromPem(F.EkRsaPem);
        var blob = Credential.FromTpm2ToolsFile(Convert.FromBase64String(F.CredRsaOut));
        var secret = Credential.ActivateWithSoftwareEk(ek, priv, Convert.FromBase64String(F.Name), blob.IdObject, blob.EncryptedSecret);
        Assert.Equal(Convert.FromBase64String(F.Secret), secret);
        Assert.Equal(Convert.FromBase64String(F.CredRsaOut), Credential.ToTpm2ToolsFile(blob));
    }

    [Fact]
    public void ActivatesCredentialMadeByTpm2ToolsForEccP384Ek()
    {
        var ek = TpmPublic.ParseTpm2B(Convert.FromBase64String(F.EkEccPub));
        Assert.True(ek.ParametersEqual(TpmTemplates.EkEccP384High));
        using var priv = EcdhFromPem(F.EkEccPem);
        var blob = Credential.FromTpm2ToolsFile(Convert.FromBase64String(F.CredEccOut));
        var secret = Credential.ActivateWithSoftwareEk(ek, priv, Convert.FromBase64String(F.Name), blob.IdObject, blob.EncryptedSecret);
        Assert.Equal(Convert.FromBase64String(F.Secret), secret);
    }

    [Theory]
    [InlineData("rsa")]
    [InlineData("ecc256")]
    [InlineData("ecc384")]
    public void MakeThenActivateRoundTrips(string kind)
    {
        using var k = SoftwareEk.Create(kind);
        var name = TpmTemplates.AkRsa2048.ComputeName();
        var secret = RandomNumberGenerator.GetBytes(TpmHash.DigestSize(k.Public.NameAlg));
        var blob = Credential.MakeCredential(k.Public, name, secret);
        Assert.Equal(2 + TpmHash.DigestSize(k.Public.NameAlg) + 2 + secret.Length, blob.IdObject.Length);
        Assert.Equal(secret, Credential.ActivateWithSoftwareEk(k.Public, k.Private, name, blob.IdObject, blob.EncryptedSecret));

        // Through the tpm2-tools file and back.
        var file = Credential.FromTpm2ToolsFile(Credential.ToTpm2ToolsFile(blob));
        Assert.Equal(blob.IdObject, file.IdObject);
        Assert.Equal(blob.EncryptedSecret, file.EncryptedSecret);

        // Another object's Name, a flipped bit, or another EK: integrity failure.
        var otherName = (byte[])name.Clone(); otherName[^1] ^= 1;
        Assert.Throws<CryptographicException>(() => Credential.ActivateWithSoftwareEk(k.Public, k.Private, otherName, blob.IdObject, blob.EncryptedSecret));
        var tampered = (byte[])blob.IdObject.Clone(); tampered[^1] ^= 0x80;
        Assert.Throws<CryptographicException>(() => Credential.ActivateWithSoftwareEk(k.Public, k.Private, name, tampered, blob.EncryptedSecret));
        using var other = SoftwareEk.Create(kind);
        Assert.ThrowsAny<Exception>(() => Credential.ActivateWithSoftwareEk(other.Public, other.Private, name, blob.IdObject, blob.EncryptedSecret));
    }

    [Fact]
    public void SecretLongerThanEkDigestIsRefused()
    {
        using var k = SoftwareEk.Create("rsa");
        Assert.Throws<ArgumentException>(() => Credential.MakeCredential(k.Public, TpmTemplates.AkRsa2048.ComputeName(), new byte[33]));
        using var p384 = SoftwareEk.Create("ecc384");
        var blob = Credential.MakeCredential(p384.Public, TpmTemplates.AkRsa2048.ComputeName(), new byte[48]);
        Assert.Equal(2 + 48 + 2 + 48, blob.IdObject.Length); // SHA-384 HMAC from the EK's nameAlg, not the AK's
    }

    [Fact]
    public void SymmetricKeySizeComesFromTheEk()
    {
        // Same seed and Name, different EK symmetric sizes -> different encIdentity; the AES-256 one decrypts only with a 256-bit key.
        var seed = new byte[48];
        var name = TpmTemplates.AkRsa2048.ComputeName();
        var ek256 = TpmTemplates.EkEccP384High;
        var ek128 = TpmTemplates.EkEccP384High; ek128.Symmetric = TpmSymmetricDef.Aes128Cfb;
        var a = Credential.ProtectWithSeed(ek256, seed, name, [1, 2, 3]);
        var b = Credential.ProtectWithSeed(ek128, seed, name, [1, 2, 3]);
        Assert.NotEqual(a[50..], b[50..]);
        var key = Kdf.KdfA(TpmAlgId.Sha384, seed, "STORAGE", name, [], 256);
        Assert.Equal(new byte[] { 0, 3, 1, 2, 3 }, Credential.AesCfb(key, a[50..], encrypt: false));
    }

    [Fact]
    public void CredentialFileRejectsBadMagicVersionAndTrailingBytes()
    {
        var good = Convert.FromBase64String(F.CredRsaOut);
        var badMagic = (byte[])good.Clone(); badMagic[0] = 0;
        var badVersion = (byte[])good.Clone(); badVersion[7] = 2;
        Assert.Throws<TpmFormatException>(() => Credential.FromTpm2ToolsFile(badMagic));
        Assert.Throws<TpmFormatException>(() => Credential.FromTpm2ToolsFile(badVersion));
        Assert.Throws<TpmFormatException>(() => Credential.FromTpm2ToolsFile([.. good, 0]));
        Assert.Throws<TpmFormatException>(() => Credential.FromTpm2ToolsFile(good[..^1]));
    }
}

/// <summary>A software EK: a key pair and its public area from the matching EK template.</summary>
internal sealed class SoftwareEk : IDisposable
{
    public required TpmPublic Public { get; init; }
    public required AsymmetricAlgorithm Private { get; init; }

    public static SoftwareEk Create(string kind)
    {
        switch (kind)
        {
            case "rsa":
                var rsa = RSA.Create(2048);
                return new SoftwareEk { Public = TpmPublic.FromSubjectPublicKeyInfo(rsa.ExportSubjectPublicKeyInfo(), TpmTemplates.EkRsa2048), Private = rsa };
            case "ecc256":
                var e256 = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
                return new SoftwareEk { Public = TpmPublic.FromSubjectPublicKeyInfo(e256.ExportSubjectPublicKeyInfo(), TpmTemplates.EkEccP256), Private = e256 };
            case "ecc384":
                var e384 = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
                return new SoftwareEk { Public = TpmPublic.FromSubjectPublicKeyInfo(e384.ExportSubjectPublicKeyInfo(), TpmTemplates.EkEccP384High), Private = e384 };
            default:
                throw new ArgumentException(kind);
        }
    }

    public void Dispose() => Private.Dispose();
}
