using System.Formats.Asn1;
using System.Security.Cryptography;
using TpmProvisioning.Pki;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Provisioning;

public class KeyIdentityTests
{
    [Fact]
    public void RsaKeysCompareAcrossEncodings()
    {
        using var rsa = RSA.Create(2048);
        var spki = rsa.ExportSubjectPublicKeyInfo();
        var a = KeyIdentity.FromSubjectPublicKeyInfo(spki);
        Assert.True(a.IsRsa);
        Assert.Equal("RSA-2048", a.ToString());
        Assert.Equal(spki, a.ToSubjectPublicKeyInfo()); // our writer gives .NET's exact encoding

        // The same key published as RSAES-OAEP (as some EK certificates do) is the same key.
        var w = new AsnWriter(AsnEncodingRules.DER);
        using (w.PushSequence())
        {
            using (w.PushSequence()) w.WriteObjectIdentifier("1.2.840.113549.1.1.7");
            w.WriteBitString(rsa.ExportRSAPublicKey());
        }
        Assert.Equal(a, KeyIdentity.FromSubjectPublicKeyInfo(w.Encode()));

        var pub = a.ToTpmPublic(TpmTemplates.AkRsa2048);
        Assert.Equal(0u, pub.Exponent);
        Assert.Equal(a, KeyIdentity.FromTpmPublic(pub));
        using var other = RSA.Create(2048);
        Assert.NotEqual(a, KeyIdentity.FromSubjectPublicKeyInfo(other.ExportSubjectPublicKeyInfo()));
        Assert.Throws<FormatException>(() => a.ToTpmPublic(TpmTemplates.AkEccP256));
    }

    [Fact]
    public void EcKeysCompareCompressedOrNotAndOffCurvePointsAreRefused()
    {
        using var ec = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var spki = ec.ExportSubjectPublicKeyInfo();
        var a = KeyIdentity.FromSubjectPublicKeyInfo(spki);
        Assert.Equal("EC P-256", a.ToString());
        Assert.Equal(TpmEccCurve.NistP256, a.TpmCurve);
        Assert.Equal(spki, a.ToSubjectPublicKeyInfo());

        var q = ec.ExportParameters(false).Q;
        Assert.Equal(a, KeyIdentity.FromSubjectPublicKeyInfo(Spki("1.2.840.10045.3.1.7", [(byte)(0x02 | (q.Y![^1] & 1)), .. q.X!])));

        var bad = (byte[])q.Y.Clone();
        bad[^1] ^= 1;
        Assert.Throws<FormatException>(() => KeyIdentity.FromSubjectPublicKeyInfo(Spki("1.2.840.10045.3.1.7", [0x04, .. q.X, .. bad])));
        Assert.Throws<FormatException>(() => KeyIdentity.FromSubjectPublicKeyInfo([0x30, 0x03, 0x02, 0x01, 0x01]));
        Assert.Throws<FormatException>(() => KeyIdentity.FromSubjectPublicKeyInfo([.. spki, 0x00])); // trailing bytes

        var ecdh = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        Assert.Equal(TpmEccCurve.NistP384, KeyIdentity.FromSubjectPublicKeyInfo(ecdh.ExportSubjectPublicKeyInfo()).TpmCurve);
    }

    private static byte[] Spki(string curve, byte[] point)
    {
        var w = new AsnWriter(AsnEncodingRules.DER);
        using (w.PushSequence())
        {
            using (w.PushSequence())
            {
                w.WriteObjectIdentifier("1.2.840.10045.2.1");
                w.WriteObjectIdentifier(curve);
            }
            w.WriteBitString(point);
        }
        return w.Encode();
    }

    [Theory]
    [InlineData(TpmAlgId.Sha256)]
    [InlineData(TpmAlgId.Sha1)]
    [InlineData(TpmAlgId.Sha384)]
    public void OurOaepEncryptionDecryptsWithDotNet(TpmAlgId hash)
    {
        // With an empty label our OAEP must be exactly RFC 8017's, which .NET decrypts.
        using var rsa = RSA.Create(2048);
        var p = rsa.ExportParameters(false);
        var msg = RandomNumberGenerator.GetBytes(32);
        var c = Credential.RsaOaepEncrypt(p.Modulus!, p.Exponent!, msg, hash, []);
        Assert.Equal(256, c.Length);
        var padding = RSAEncryptionPadding.CreateOaep(TpmHash.Name(hash));
        Assert.Equal(msg, rsa.Decrypt(c, padding));
        Assert.NotEqual(c, Credential.RsaOaepEncrypt(p.Modulus!, p.Exponent!, msg, hash, [])); // randomized
    }
}
