using TpmProvisioning.Tpm;
using S = TpmProvisioning.Tests.Software.SwtpmQuoteFixtures;

namespace TpmProvisioning.Tests.Software;

/// <summary>Structures and evidence produced by a real (software) TPM and tpm2-tools, read by our parsers and verifier.</summary>
public class TpmInteropTests
{
    private static byte[] B(string b64) => Convert.FromBase64String(b64);

    [Fact]
    public void Tpm2CreateekRsaMatchesTemplateL1()
    {
        var ek = TpmPublic.ParseTpm2B(B(S.EkPub));
        Assert.True(ek.ParametersEqual(TpmTemplates.EkRsa2048));
        Assert.Equal(256, ek.Modulus.Length);
        Assert.Equal(B(S.EkPub)[2..], ek.ToBytes()); // canonical re-marshaling
    }

    [Fact]
    public void Tpm2CreateekEccMatchesTemplateL2()
    {
        var ek = TpmPublic.ParseTpm2B(B(S.EkeccPub));
        Assert.True(ek.ParametersEqual(TpmTemplates.EkEccP256));
        Assert.Equal(32, ek.X.Length);
    }

    [Fact]
    public void Tpm2CreateakMatchesAkTemplateAndName()
    {
        var ak = TpmPublic.ParseTpm2B(B(S.AkPub));
        Assert.True(ak.ParametersEqual(TpmTemplates.AkRsa2048), ak.ToString());
        Assert.Equal(B(S.AkName), ak.ComputeName());
        Assert.True(ak.IsRestrictedSigningKey(out _));
    }

    [Fact]
    public void SwtpmQuoteVerifiesAndTamperingIsNamed()
    {
        using var ak = PreparedAk.FromTpm2B(B(S.AkPub));
        var blob = Tpm2ToolsPcrBlob.Parse(B(S.QuotePcrs));
        // swtpm_setup activates only the SHA-256 bank, so tpm2_quote kept the requested SHA-1 bank with an empty bitmap.
        Assert.Equal("sha256:0,1,2,3,4,5,6,7,8,9,10+sha1:", blob.Selection.ToString());
        Assert.Equal(11, blob.Digests.Count);
        var expected = PcrSelection.FromString("sha256:0,1,2,3,4,5,6,7,8,9,10");
        var r = QuoteVerifier.Verify(B(S.QuoteMsg), B(S.QuoteSig), blob.Values, ak, "1234"u8, expected);
        Assert.True(r.IsValid, r.ToString());
        // qualifiedSigner is the AK's qualified Name (SHA-256 under the EK hierarchy), not its Name.
        Assert.Equal(34, r.Attest!.QualifiedSigner.Length);
        Assert.Equal(new byte[] { 0x00, 0x0B }, r.Attest.QualifiedSigner[..2]);
        Assert.Equal(TpmSt.AttestQuote, r.Attest.Type);
        Assert.True(r.Attest.PcrSelect!.SelectsSame(expected));
        Assert.False(QuoteVerifier.Verify(B(S.QuoteMsg), B(S.QuoteSig), blob.Values, ak, "1234"u8, PcrSelection.FromString("sha256:0,1,2,3,4,5,6,7,8,9,10+sha1:0,7")).IsValid);

        var keylime = KeylimeQuote.Format(B(S.QuoteMsg), B(S.QuoteSig), B(S.QuotePcrs));
        Assert.True(QuoteVerifier.VerifyKeylime(keylime, ak, "1234"u8, expected).IsValid);
        Assert.Equal(new[] { QuoteFailureCodes.NonceMismatch }, QuoteVerifier.VerifyKeylime(keylime, ak, "1235"u8).Failures.Select(f => f.Code));

        // Our writer reproduces tpm2-tools' blob byte for byte.
        Assert.Equal(B(S.QuotePcrs), Tpm2ToolsPcrBlob.Write(blob.Selection, blob.Values));
    }
}
