using System.Buffers.Binary;
using System.Security.Cryptography;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Software;

public class TpmPublicTests
{
    private static byte[] PolicySecretDigest(TpmAlgId alg, uint authHandle)
    {
        // PolicySecret: d = H(d || TPM_CC_PolicySecret || authObject.Name), then PolicyUpdate with empty policyRef: d = H(d).
        int n = TpmHash.DigestSize(alg);
        var buf = new byte[n + 4 + 4];
        BinaryPrimitives.WriteUInt32BigEndian(buf.AsSpan(n), (uint)TpmCc.PolicySecret);
        BinaryPrimitives.WriteUInt32BigEndian(buf.AsSpan(n + 4), authHandle);
        return TpmHash.Hash(alg, TpmHash.Hash(alg, buf));
    }

    private static byte[] PolicyOrDigest(TpmAlgId alg, params byte[][] branches)
    {
        int n = TpmHash.DigestSize(alg);
        var w = new TpmWriter();
        w.Bytes(new byte[n]).U32((uint)TpmCc.PolicyOR);
        foreach (var b in branches) w.Bytes(b);
        return TpmHash.Hash(alg, w.Span);
    }

    [Fact]
    public void PolicyAIsPolicySecretOfEndorsementHierarchy()
    {
        Assert.Equal(TpmTemplates.PolicyASha256, PolicySecretDigest(TpmAlgId.Sha256, TpmHandle.RhEndorsement));
        Assert.Equal(TpmTemplates.PolicyASha384, PolicySecretDigest(TpmAlgId.Sha384, TpmHandle.RhEndorsement));
    }

    [Fact]
    public void PolicyBIsPolicyOrOfAAndC()
    {
        Assert.Equal(TpmTemplates.PolicyBSha256, PolicyOrDigest(TpmAlgId.Sha256, TpmTemplates.PolicyASha256, TpmTemplates.PolicyCSha256));
        Assert.Equal(TpmTemplates.PolicyBSha384, PolicyOrDigest(TpmAlgId.Sha384, TpmTemplates.PolicyASha384, TpmTemplates.PolicyCSha384));
    }

    [Fact]
    public void EkRsaTemplateMarshalsToTheProfileBytes()
    {
        var bytes = TpmTemplates.EkRsa2048.ToBytes();
        var expectedHead = Convert.FromHexString(
            "0001" + "000B" + "000300B2" + "0020" + "837197674484B3F81A90CC8D46A5D724FD52D76E06520B64F2A1DA1B331469AA"
            + "0006" + "0080" + "0043" + "0010" + "0800" + "00000000" + "0100");
        Assert.Equal(expectedHead, bytes[..expectedHead.Length]);
        Assert.Equal(expectedHead.Length + 256, bytes.Length);
        Assert.All(bytes[expectedHead.Length..], b => Assert.Equal(0, b));
    }

    [Fact]
    public void EccP384HighTemplateMatchesSwtpmLayout()
    {
        var bytes = TpmTemplates.EkEccP384High.ToBytes();
        var expected = Convert.FromHexString(
            "0023" + "000C" + "000300F2" + "0030" + Convert.ToHexString(TpmTemplates.PolicyBSha384)
            + "0006" + "0100" + "0043" + "0010" + "0004" + "0010" + "0000" + "0000");
        Assert.Equal(expected, bytes);
    }

    [Fact]
    public void AkTemplatesHaveTpm2ToolsAttributes()
    {
        Assert.Equal(0x00050072u, (uint)TpmTemplates.AkRsa2048.Attributes);
        Assert.Equal(0x00030072u, (uint)TpmTemplates.SrkRsa2048.Attributes);
        Assert.Equal(0x000300F2u, (uint)TpmTemplates.EkRsa2048High.Attributes);
        Assert.True(TpmTemplates.AkRsa2048.IsRestrictedSigningKey(out var p), p);
        Assert.True(TpmTemplates.AkEccP256.IsRestrictedSigningKey(out p), p);
        Assert.True(TpmTemplates.EkRsa2048.IsRestrictedDecryptionKey(out p), p);
        Assert.False(TpmTemplates.EkRsa2048.IsRestrictedSigningKey(out p));
        Assert.Equal("sign missing", p);
    }

    [Fact]
    public void AttributeProblemsNameEachMissingBit()
    {
        var ak = TpmTemplates.AkRsa2048;
        ak.Attributes &= ~(TpmaObject.FixedTpm | TpmaObject.SensitiveDataOrigin);
        ak.Attributes |= TpmaObject.Decrypt;
        var problems = ak.RestrictedSigningKeyProblems();
        Assert.Equal(new[] { "decrypt must be clear", "fixedTPM missing", "sensitiveDataOrigin missing" }, problems);
    }

    [Fact]
    public void ARestrictedSigningKeyWithASymmetricCipherIsNotAnAk()
    {
        // restricted|sign with AES-128-CFB: a combination no TPM creates (Part 1, 25.1), so it cannot be a TPM-resident AK.
        var ak = TpmTemplates.AkRsa2048;
        ak.Symmetric = TpmSymmetricDef.Aes128Cfb;
        var parsed = TpmPublic.ParseTpm2B(ak.ToTpm2B());
        Assert.Equal(new[] { "symmetric must be TPM_ALG_NULL for a signing key (is Aes)" }, parsed.RestrictedSigningKeyProblems());
        Assert.False(parsed.IsRestrictedSigningKey(out _));
        var ecc = TpmTemplates.AkEccP256;
        ecc.Symmetric = TpmSymmetricDef.Aes256Cfb;
        Assert.Single(TpmPublic.ParseTpm2B(ecc.ToTpm2B()).RestrictedSigningKeyProblems());
    }

    public static TheoryData<string> TemplateNames => new()
    {
        nameof(TpmTemplates.EkRsa2048), nameof(TpmTemplates.EkEccP256), nameof(TpmTemplates.EkRsa2048High),
        nameof(TpmTemplates.EkEccP256High), nameof(TpmTemplates.EkEccP384High), nameof(TpmTemplates.SrkRsa2048),
        nameof(TpmTemplates.SrkEccP256), nameof(TpmTemplates.AkRsa2048), nameof(TpmTemplates.AkEccP256),
    };

    private static TpmPublic Template(string name) =>
        (TpmPublic)typeof(TpmTemplates).GetProperty(name)!.GetValue(null)!;

    [Theory]
    [MemberData(nameof(TemplateNames))]
    public void TemplatesRoundTripThroughTpm2B(string name)
    {
        var t = Template(name);
        var b2 = t.ToTpm2B();
        Assert.Equal(b2.Length - 2, BinaryPrimitives.ReadUInt16BigEndian(b2));
        var back = TpmPublic.ParseTpm2B(b2);
        Assert.Equal(t.ToBytes(), back.ToBytes());
        Assert.True(t.ParametersEqual(back));
        Assert.Equal(t.ComputeName(), back.ComputeName());
    }

    [Fact]
    public void NameIsNameAlgThenDigestOfPublicArea()
    {
        var t = TpmTemplates.EkEccP384High;
        var name = t.ComputeName();
        Assert.Equal(2 + 48, name.Length);
        Assert.Equal(new byte[] { 0x00, 0x0C }, name[..2]);
        Assert.Equal(SHA384.HashData(t.ToBytes()), name[2..]);
    }

    [Fact]
    public void RsaSpkiRoundTripFillsTheModulus()
    {
        using var rsa = RSA.Create(2048);
        var spki = rsa.ExportSubjectPublicKeyInfo();
        var ek = TpmPublic.FromSubjectPublicKeyInfo(spki, TpmTemplates.EkRsa2048);
        Assert.Equal(rsa.ExportParameters(false).Modulus, ek.Modulus);
        Assert.Equal(0u, ek.Exponent);
        Assert.Equal(spki, ek.ToSubjectPublicKeyInfo());
        // The template itself is untouched.
        Assert.All(TpmTemplates.EkRsa2048.Modulus, b => Assert.Equal(0, b));
    }

    [Fact]
    public void EccSpkiRoundTripFillsThePoint()
    {
        using var ec = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP384);
        var spki = ec.ExportSubjectPublicKeyInfo();
        var ek = TpmPublic.FromSubjectPublicKeyInfo(spki, TpmTemplates.EkEccP384High);
        Assert.Equal(48, ek.X.Length);
        Assert.Equal(spki, ek.ToSubjectPublicKeyInfo());
        using var back = ek.GetECDiffieHellmanPublicKey();
        Assert.Equal(ec.ExportParameters(false).Q.Y, back.ExportParameters(false).Q.Y);
    }

    [Fact]
    public void SpkiOfWrongKindIsRejected()
    {
        using var ec = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        Assert.Throws<TpmFormatException>(() => TpmPublic.FromSubjectPublicKeyInfo(ec.ExportSubjectPublicKeyInfo(), TpmTemplates.EkRsa2048));
        Assert.Throws<TpmFormatException>(() => TpmPublic.FromSubjectPublicKeyInfo(ec.ExportSubjectPublicKeyInfo(), TpmTemplates.EkEccP384High));
        using var rsa = RSA.Create(3072);
        Assert.Throws<TpmFormatException>(() => TpmPublic.FromSubjectPublicKeyInfo(rsa.ExportSubjectPublicKeyInfo(), TpmTemplates.EkRsa2048));
        Assert.Throws<TpmFormatException>(() => TpmPublic.FromSubjectPublicKeyInfo(new byte[] { 0x30, 0x03, 0x02, 0x01, 0x00 }, TpmTemplates.EkRsa2048));
    }

    [Fact]
    public void ParseRejectsUnknownTypeOversizeAndTrailingBytes()
    {
        var good = TpmTemplates.AkRsa2048.ToBytes();
        var badType = (byte[])good.Clone();
        badType[1] = 0x08; // keyedHash: not handled here
        Assert.Throws<TpmFormatException>(() => TpmPublic.Parse(badType));

        var bigPolicy = TpmTemplates.AkRsa2048;
        bigPolicy.AuthPolicy = new byte[65];
        Assert.Throws<TpmFormatException>(() => TpmPublic.Parse(bigPolicy.ToBytes()));

        var bigModulus = TpmTemplates.AkRsa2048;
        bigModulus.Modulus = new byte[513];
        Assert.Throws<TpmFormatException>(() => TpmPublic.Parse(bigModulus.ToBytes()));

        Assert.Throws<TpmFormatException>(() => TpmPublic.Parse([.. good, 0]));
        Assert.Throws<TpmFormatException>(() => TpmPublic.Parse(good[..^1]));
        Assert.Throws<TpmFormatException>(() => TpmPublic.ParseTpm2B([0, 0]));
    }
}
