using TpmProvisioning.Tpm;
using F = TpmProvisioning.Tests.Software.Tpm2ToolsCredentialFixtures;

namespace TpmProvisioning.Tests.Software;

/// <summary>
/// Feeds random, truncated and bit-flipped inputs to every parser: each must either return a value or throw
/// <see cref="TpmFormatException"/>, never anything else.
/// </summary>
public class ParserRobustnessTests
{
    private const int Iterations = 3000;

    private static IEnumerable<byte[]> Mutations(byte[] seed, int rngSeed)
    {
        var rnd = new Random(rngSeed);
        for (int i = 0; i <= seed.Length; i++) yield return seed[..i];            // every truncation
        for (int i = 0; i < Iterations; i++)
        {
            switch (i % 4)
            {
                case 0: // pure noise of assorted lengths
                    var noise = new byte[rnd.Next(0, 700)];
                    rnd.NextBytes(noise);
                    yield return noise;
                    break;
                case 1: // flip 1-4 bits of a valid input
                    var f = (byte[])seed.Clone();
                    if (f.Length == 0) break;
                    for (int k = rnd.Next(1, 5); k > 0; k--) f[rnd.Next(f.Length)] ^= (byte)(1 << rnd.Next(8));
                    yield return f;
                    break;
                case 2: // overwrite a 16-bit field with an extreme value (sizes, counts, algorithm ids)
                    var o = (byte[])seed.Clone();
                    if (o.Length < 2) break;
                    int at = rnd.Next(o.Length - 1);
                    ushort v = (ushort)(rnd.Next(3) switch { 0 => 0xFFFF, 1 => 0x0000, _ => rnd.Next(0x10000) });
                    o[at] = (byte)(v >> 8); o[at + 1] = (byte)v;
                    yield return o;
                    break;
                default: // truncate a mutated input, or append garbage
                    var t = (byte[])seed.Clone();
                    if (t.Length > 0) t[rnd.Next(t.Length)] = (byte)rnd.Next(256);
                    yield return rnd.Next(2) == 0 ? t[..rnd.Next(t.Length + 1)] : [.. t, .. new byte[rnd.Next(1, 9)]];
                    break;
            }
        }
    }

    private static void OnlyFormatErrors(byte[] seed, int rngSeed, Action<byte[]> parse, ref int accepted, ref int rejected)
    {
        foreach (var input in Mutations(seed, rngSeed))
        {
            try { parse(input); accepted++; }
            catch (TpmFormatException) { rejected++; }
            catch (Exception ex)
            {
                Assert.Fail($"{ex.GetType().Name} for input {Convert.ToHexString(input)}: {ex.Message}");
            }
        }
    }

    private static void Run(byte[] seed, int rngSeed, Action<byte[]> parse)
    {
        int accepted = 0, rejected = 0;
        parse(seed); // the seed itself is valid
        OnlyFormatErrors(seed, rngSeed, parse, ref accepted, ref rejected);
        Assert.True(rejected > Iterations / 4, $"only {rejected} inputs rejected: the parser is too lax or the mutations are broken");
        Assert.True(accepted > 0, "no mutated input parsed at all");
    }

    public static TheoryData<string> PublicSeeds => new()
    {
        nameof(TpmTemplates.EkRsa2048), nameof(TpmTemplates.EkEccP384High), nameof(TpmTemplates.AkEccP256), nameof(TpmTemplates.SrkRsa2048),
    };

    [Theory]
    [MemberData(nameof(PublicSeeds))]
    public void TpmPublicParsers(string template)
    {
        var t = (TpmPublic)typeof(TpmTemplates).GetProperty(template)!.GetValue(null)!;
        Run(t.ToBytes(), 1, b => TpmPublic.Parse(b).ComputeName());
        Run(t.ToTpm2B(), 2, b => TpmPublic.ParseTpm2B(b).ToBytes());
    }

    [Fact]
    public void TpmsAttestParser()
    {
        using var ak = SoftwareAttestationKey.CreateEccP256();
        var sel = PcrSelection.Create(TpmAlgId.Sha256, 0, 1, 7).Add(TpmAlgId.Sha1, 3);
        var attest = TpmsAttest.CreateQuote(ak.Name, [1, 2, 3, 4], new TpmsClockInfo(9, 1, 2, true), 7, sel, new byte[32]).Raw;
        Run(attest, 3, b => TpmsAttest.Parse(b));
    }

    [Fact]
    public void TpmtSignatureParser()
    {
        using var rsa = SoftwareAttestationKey.CreateRsa();
        using var ecc = SoftwareAttestationKey.CreateEccP256();
        Run(rsa.Sign([1, 2, 3]), 4, b => TpmtSignature.Parse(b));
        Run(ecc.Sign([1, 2, 3]), 5, b => TpmtSignature.Parse(b));
    }

    [Fact]
    public void PcrSelectionParser()
    {
        var sel = PcrSelection.Create(TpmAlgId.Sha256, 0, 1, 2, 23).Add(TpmAlgId.Sha384, 4).Add(TpmAlgId.Sha1, 31);
        Run(sel.ToBytes(), 6, b => PcrSelection.Parse(b).Enumerate().Count());
    }

    [Fact]
    public void Tpm2ToolsPcrBlobParser()
    {
        var sel = PcrSelection.Create(TpmAlgId.Sha256, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9).Add(TpmAlgId.Sha1, 0);
        var values = new PcrValues();
        foreach (var (bk, i) in sel.Enumerate()) values.Set(bk, i, new byte[TpmHash.DigestSize(bk)]);
        Run(Tpm2ToolsPcrBlob.Write(sel, values), 7, b => Tpm2ToolsPcrBlob.Parse(b));
    }

    [Fact]
    public void CredentialFileParser()
    {
        Run(Convert.FromBase64String(F.CredRsaOut), 8, b => Credential.FromTpm2ToolsFile(b));
        Run(Convert.FromBase64String(F.CredEccOut), 9, b => Credential.FromTpm2ToolsFile(b));
    }

    [Fact]
    public void KeylimeQuoteParserAndVerifierNeverThrow()
    {
        using var ak = SoftwareAttestationKey.CreateRsa();
        var sel = PcrSelection.Create(TpmAlgId.Sha256, 0, 1);
        var values = new PcrValues().Set(TpmAlgId.Sha256, 0, new byte[32]).Set(TpmAlgId.Sha256, 1, new byte[32]);
        var (attest, sig) = ak.Quote(sel, values, [5]);
        var quote = KeylimeQuote.Format(attest, sig, Tpm2ToolsPcrBlob.Write(sel, values));
        using var prepared = PreparedAk.Create(ak.Public);
        Assert.True(QuoteVerifier.VerifyKeylime(quote, prepared, [5]).IsValid);

        var rnd = new Random(10);
        const string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=:r \n";
        int rejected = 0;
        var original = Tpm2ToolsPcrBlob.Parse(KeylimeQuote.Parse(quote).PcrBlob);
        for (int i = 0; i < Iterations; i++)
        {
            string s;
            switch (i % 3)
            {
                case 0:
                    s = new string(Enumerable.Range(0, rnd.Next(0, 200)).Select(_ => alphabet[rnd.Next(alphabet.Length)]).ToArray());
                    break;
                case 1:
                    var chars = quote.ToCharArray();
                    for (int k = rnd.Next(1, 4); k > 0; k--) chars[rnd.Next(chars.Length)] = alphabet[rnd.Next(alphabet.Length)];
                    s = new string(chars);
                    break;
                default:
                    s = quote[..rnd.Next(quote.Length + 1)];
                    break;
            }
            try { KeylimeQuote.Parse(s); }
            catch (TpmFormatException) { rejected++; }
            // The verifier reports garbage as failures and never throws. When a mutated string still verifies, the mutation
            // only touched what carries no meaning (the PCR blob's C-struct padding and unused slots, base64 slack bits):
            // the signed bytes and the PCR values must be exactly the original ones.
            if (QuoteVerifier.VerifyKeylime(s, prepared, [5]).IsValid)
            {
                var q = KeylimeQuote.Parse(s);
                Assert.Equal(attest, q.Attest);
                Assert.Equal(sig, q.Signature);
                var blob = Tpm2ToolsPcrBlob.Parse(q.PcrBlob);
                Assert.True(blob.Selection.SelectsSame(original.Selection));
                Assert.Equal(original.Digests, blob.Digests);
            }
        }
        Assert.True(rejected > Iterations / 4, $"only {rejected} rejected");
    }

    [Fact]
    public void QuoteVerifierNeverThrowsOnMutatedEvidence()
    {
        using var ak = SoftwareAttestationKey.CreateEccP256();
        var sel = PcrSelection.Create(TpmAlgId.Sha256, 0, 1, 2);
        var values = new PcrValues();
        foreach (var (bk, i) in sel.Enumerate()) values.Set(bk, i, new byte[32]);
        var (attest, sig) = ak.Quote(sel, values, [7, 7]);
        using var p = PreparedAk.Create(ak.Public);
        int checkedCount = 0;
        // Whatever verifies must be byte-identical to the genuine evidence.
        foreach (var a in Mutations(attest, 11).Take(1500))
        {
            checkedCount++;
            if (QuoteVerifier.Verify(a, sig, values, p, [7, 7]).IsValid) Assert.Equal(attest, a);
        }
        foreach (var s in Mutations(sig, 12).Take(1500))
        {
            checkedCount++;
            if (QuoteVerifier.Verify(attest, s, values, p, [7, 7]).IsValid) Assert.Equal(sig, s);
        }
        Assert.Equal(3000, checkedCount);
    }
}
