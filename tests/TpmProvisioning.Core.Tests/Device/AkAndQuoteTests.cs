using System.Security.Cryptography;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Device;

public class AkAndQuoteTests : IClassFixture<SwtpmFixture>
{
    private readonly SwtpmFixture tpm;

    public AkAndQuoteTests(SwtpmFixture fixture)
    {
        tpm = fixture;
        tpm.FlushTransients();
    }

    private const uint AkPersistent = 0x81000A01;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AkNameEqualsTpm2ReadPublicName(bool ecc)
    {
        TpmObject ak;
        using (var dev = tpm.Open())
        {
            var created = dev.CreateAk(ecc ? TpmTemplates.AkEccP256 : TpmTemplates.AkRsa2048);
            ak = created.Key;
            Assert.True(ak.Public.IsRestrictedSigningKey(out _));
            Assert.Equal(ak.Public.ComputeName(), ak.Name);
            var persisted = dev.PersistObject(ak.Handle, AkPersistent, replace: true);
            dev.FlushContext(ak.Handle);
            Assert.Equal(ak.Name, persisted.Name);
        }
        using var tmp = new TempDir();
        try
        {
            tpm.Tools("tpm2_readpublic", "-c", "0x" + AkPersistent.ToString("x"), "-n", tmp["ak.name"], "-o", tmp["ak.pub"]);
            Assert.Equal(File.ReadAllBytes(tmp["ak.name"]), ak.Name);
            Assert.Equal(File.ReadAllBytes(tmp["ak.pub"]).AsSpan(2).ToArray(), ak.PublicBytes);
        }
        finally
        {
            using var dev = tpm.Open();
            dev.EvictPersistent(AkPersistent);
            Assert.DoesNotContain(AkPersistent, dev.GetInfo().PersistentHandles);
        }
    }

    [Fact]
    public void Tpm2CreateAkUsesOurTemplateParameters()
    {
        using var tmp = new TempDir();
        tpm.Tools("tpm2_createek", "-G", "rsa", "-c", tmp["ek.ctx"]);
        tpm.Tools("tpm2_createak", "-C", tmp["ek.ctx"], "-c", tmp["ak.ctx"], "-G", "rsa", "-g", "sha256", "-s", "rsassa",
            "-u", tmp["ak.pub"], "-n", tmp["ak.name"]);
        var theirs = TpmPublic.ParseTpm2B(File.ReadAllBytes(tmp["ak.pub"]));
        Assert.Equal(File.ReadAllBytes(tmp["ak.name"]), theirs.ComputeName());
        var template = TpmTemplates.AkRsa2048;
        Assert.Equal(template.Attributes, theirs.Attributes);
        Assert.Equal(template.Scheme, theirs.Scheme);
        Assert.Equal(template.NameAlg, theirs.NameAlg);
    }

    private static (byte[] attest, byte[] sig, PcrValues pcrs, TpmPublic akPub) OurQuote(TpmDevice dev, PcrSelection sel, byte[] nonce, bool ecc)
    {
        var ak = dev.CreateAk(ecc ? TpmTemplates.AkEccP256 : TpmTemplates.AkRsa2048).Key;
        try
        {
            var q = dev.Quote(ak.Handle, nonce, sel);
            var pcrs = dev.PcrRead(sel);
            return (q.Attest, q.Signature, pcrs, ak.Public);
        }
        finally
        {
            dev.FlushContext(ak.Handle);
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void OurQuotePassesTpm2CheckQuote(bool ecc)
    {
        var sel = PcrSelection.FromString("sha256:0,1,2,3,4,5,6,7,8,9,10,15,16,23");
        var nonce = RandomNumberGenerator.GetBytes(20);
        (byte[] attest, byte[] sig, PcrValues pcrs, TpmPublic akPub) q;
        using (var dev = tpm.Open()) q = OurQuote(dev, sel, nonce, ecc);

        var attest = TpmsAttest.Parse(q.attest);
        Assert.Equal(TpmSt.AttestQuote, attest.Type);
        Assert.Equal(nonce, attest.ExtraData);
        Assert.True(QuoteVerifier.Verify(q.attest, q.sig, q.pcrs, q.akPub, nonce, sel).IsValid);

        using var tmp = new TempDir();
        File.WriteAllBytes(tmp["quote.msg"], q.attest);
        File.WriteAllBytes(tmp["quote.sig"], q.sig);
        File.WriteAllBytes(tmp["quote.pcrs"], Tpm2ToolsPcrBlob.Write(sel, q.pcrs));
        File.WriteAllText(tmp["ak.pem"], PemEncoding.WriteString("PUBLIC KEY", q.akPub.ToSubjectPublicKeyInfo()));
        File.WriteAllBytes(tmp["ak.pub"], q.akPub.ToTpm2B());
        tpm.Tools("tpm2_checkquote", "-u", tmp["ak.pem"], "-m", tmp["quote.msg"], "-s", tmp["quote.sig"], "-f", tmp["quote.pcrs"],
            "-g", "sha256", "-q", Convert.ToHexString(nonce));
        tpm.Tools("tpm2_checkquote", "-u", tmp["ak.pub"], "-m", tmp["quote.msg"], "-s", tmp["quote.sig"], "-f", tmp["quote.pcrs"],
            "-g", "sha256", "-q", Convert.ToHexString(nonce));

        // A different nonce must fail.
        Assert.Throws<InvalidOperationException>(() => tpm.Tools("tpm2_checkquote", "-u", tmp["ak.pem"], "-m", tmp["quote.msg"],
            "-s", tmp["quote.sig"], "-f", tmp["quote.pcrs"], "-g", "sha256", "-q", "00112233"));
    }

    [Fact]
    public void Tpm2QuoteVerifiesWithQuoteVerifier()
    {
        using var tmp = new TempDir();
        tpm.Tools("tpm2_createprimary", "-C", "o", "-c", tmp["srk.ctx"]);
        tpm.Tools("tpm2_create", "-C", tmp["srk.ctx"], "-G", "rsa2048:rsassa-sha256:null", "-a",
            "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign", "-u", tmp["ak.pub"], "-r", tmp["ak.priv"]);
        tpm.Tools("tpm2_load", "-C", tmp["srk.ctx"], "-u", tmp["ak.pub"], "-r", tmp["ak.priv"], "-c", tmp["ak.ctx"]);
        tpm.Tools("tpm2_quote", "-c", tmp["ak.ctx"], "-l", "sha256:0,1,2,3,4,5,6,7,8,9,10,11", "-q", "c0ffee1234", "-m", tmp["q.msg"],
            "-s", tmp["q.sig"], "-o", tmp["q.pcrs"], "-g", "sha256");
        var blob = Tpm2ToolsPcrBlob.Parse(File.ReadAllBytes(tmp["q.pcrs"]));
        var akPub = TpmPublic.ParseTpm2B(File.ReadAllBytes(tmp["ak.pub"]));
        var result = QuoteVerifier.Verify(File.ReadAllBytes(tmp["q.msg"]), File.ReadAllBytes(tmp["q.sig"]), blob.Values, akPub,
            Convert.FromHexString("c0ffee1234"), blob.Selection);
        Assert.True(result.IsValid, result.ToString());

        // Our PCR read agrees with the values tpm2_quote recorded.
        using var dev = tpm.Open();
        var ours = dev.PcrRead(blob.Selection);
        foreach (var (bank, i) in blob.Selection.Enumerate())
        {
            Assert.True(ours.TryGet(bank, i, out var v));
            Assert.True(blob.Values.TryGet(bank, i, out var w));
            Assert.Equal(w, v);
        }
    }

    [Fact]
    public void RestrictedAkSignsACsrLikeMessageAndRefusesTpmGeneratedData()
    {
        using var dev = tpm.Open();
        var ak = dev.CreateAk().Key;
        try
        {
            var message = RandomNumberGenerator.GetBytes(700);
            var (digest, sigBytes) = dev.SignWithRestrictedKey(ak.Handle, message);
            Assert.Equal(SHA256.HashData(message), digest);
            var sig = TpmtSignature.Parse(sigBytes);
            Assert.Equal(TpmAlgId.RsaSsa, sig.SigAlg);
            using var rsa = ak.Public.GetRsaPublicKey();
            Assert.True(rsa.VerifyData(message, sig.Signature, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1));

            // Longer than TPM2B_MAX_BUFFER: hashed with a sequence.
            var big = RandomNumberGenerator.GetBytes(dev.MaxInputBuffer * 2 + 17);
            var (d2, s2) = dev.SignWithRestrictedKey(ak.Handle, big);
            Assert.Equal(SHA256.HashData(big), d2);
            Assert.True(rsa.VerifyData(big, TpmtSignature.Parse(s2).Signature, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1));

            byte[] forged = [0xFF, 0x54, 0x43, 0x47, 1, 2, 3];
            Assert.Throws<ArgumentException>(() => dev.SignWithRestrictedKey(ak.Handle, forged));
            // The TPM itself refuses: TPM2_Hash gives no ticket for TPM_GENERATED data, so Sign fails with TPM_RC_TICKET.
            var (fd, ticket) = dev.Hash(forged, TpmAlgId.Sha256);
            var ex = Assert.Throws<TpmException>(() => dev.Sign(ak.Handle, fd, null, ticket));
            Assert.Equal(TpmCc.Sign, ex.Command);
            Assert.Equal("TPM_RC_TICKET", ex.Decoded.Name);
        }
        finally
        {
            dev.FlushContext(ak.Handle);
        }
    }

    [Fact]
    public void EccAkSignsWithRestrictedKey()
    {
        using var dev = tpm.Open();
        var ak = dev.CreateAk(TpmTemplates.AkEccP256).Key;
        try
        {
            var message = "certification request info"u8.ToArray();
            var (_, sigBytes) = dev.SignWithRestrictedKey(ak.Handle, message);
            var sig = TpmtSignature.Parse(sigBytes);
            var p1363 = new byte[64];
            Assert.True(sig.TryWriteP1363(32, p1363));
            using var ecdsa = ak.Public.GetECDsaPublicKey();
            Assert.True(ecdsa.VerifyData(message, p1363, HashAlgorithmName.SHA256));
        }
        finally
        {
            dev.FlushContext(ak.Handle);
        }
    }
}
