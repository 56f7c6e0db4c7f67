using System.Text;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Software;

public class QuoteVerifierTests
{
    private static readonly byte[] Nonce = "nonce-1234567890"u8.ToArray();

    private static (PcrSelection Sel, PcrValues Values) Pcrs(int seed = 7)
    {
        var sel = PcrSelection.Create(TpmAlgId.Sha256, 0, 1, 2, 3, 4, 5, 6, 7, 10).Add(TpmAlgId.Sha1, 0, 7);
        var values = new PcrValues();
        var rnd = new Random(seed);
        foreach (var (b, i) in sel.Enumerate())
        {
            var v = new byte[TpmHash.DigestSize(b)];
            rnd.NextBytes(v);
            values.Set(b, i, v);
        }
        return (sel, values);
    }

    public static TheoryData<string> Kinds => new() { "rsassa", "rsapss", "ecdsa" };

    private static SoftwareAttestationKey Ak(string kind) => kind switch
    {
        "rsassa" => SoftwareAttestationKey.CreateRsa(),
        "rsapss" => SoftwareAttestationKey.CreateRsa(pss: true),
        _ => SoftwareAttestationKey.CreateEccP256(),
    };

    private static string[] Codes(QuoteVerificationResult r) => r.Failures.Select(f => f.Code).OrderBy(c => c, StringComparer.Ordinal).ToArray();

    [Theory]
    [MemberData(nameof(Kinds))]
    public void GenuineQuoteVerifies(string kind)
    {
        using var ak = Ak(kind);
        var (sel, values) = Pcrs();
        var (attest, sig) = ak.Quote(sel, values, Nonce);
        using var prepared = PreparedAk.Create(ak.Public);
        var r = QuoteVerifier.Verify(attest, sig, values, prepared, Nonce, sel);
        Assert.True(r.IsValid, r.ToString());
        Assert.Equal(Nonce, r.Attest!.ExtraData);
        Assert.True(r.Attest.PcrSelect!.SelectsSame(sel));
        // The unprepared overload agrees.
        Assert.True(QuoteVerifier.Verify(attest, sig, values, ak.Public, Nonce).IsValid);
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void FlippedBitInAttestBreaksSignature(string kind)
    {
        using var ak = Ak(kind);
        var (sel, values) = Pcrs();
        var (attest, sig) = ak.Quote(sel, values, Nonce);
        using var p = PreparedAk.Create(ak.Public);
        // Flip a bit inside the clock (parses fine; only the signature notices).
        var t = (byte[])attest.Clone();
        int clockAt = 4 + 2 + 2 + ak.Name.Length + 2 + Nonce.Length;
        t[clockAt + 7] ^= 0x01;
        var r = QuoteVerifier.Verify(t, sig, values, p, Nonce);
        Assert.Equal(new[] { QuoteFailureCodes.BadSignature }, Codes(r));
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void FlippedBitInSignatureIsBadSignature(string kind)
    {
        using var ak = Ak(kind);
        var (sel, values) = Pcrs();
        var (attest, sig) = ak.Quote(sel, values, Nonce);
        using var p = PreparedAk.Create(ak.Public);
        var t = (byte[])sig.Clone();
        t[^3] ^= 0x10;
        Assert.Equal(new[] { QuoteFailureCodes.BadSignature }, Codes(QuoteVerifier.Verify(attest, t, values, p, Nonce)));
    }

    [Fact]
    public void WrongNonceIsNamed()
    {
        using var ak = Ak("rsassa");
        var (sel, values) = Pcrs();
        var (attest, sig) = ak.Quote(sel, values, Nonce);
        var r = QuoteVerifier.Verify(attest, sig, values, ak.Public, "other-nonce"u8);
        Assert.Equal(new[] { QuoteFailureCodes.NonceMismatch }, Codes(r));
    }

    [Fact]
    public void PcrValueNotMatchingDigestIsNamed()
    {
        using var ak = Ak("ecdsa");
        var (sel, values) = Pcrs();
        var (attest, sig) = ak.Quote(sel, values, Nonce);
        values.TryGet(TpmAlgId.Sha256, 10, out var v);
        var changed = (byte[])v.Clone(); changed[0] ^= 1;
        values.Set(TpmAlgId.Sha256, 10, changed);
        Assert.Equal(new[] { QuoteFailureCodes.PcrDigestMismatch }, Codes(QuoteVerifier.Verify(attest, sig, values, ak.Public, Nonce)));
    }

    [Fact]
    public void MissingPcrValueIsNamed()
    {
        using var ak = Ak("rsassa");
        var (sel, values) = Pcrs();
        var (attest, sig) = ak.Quote(sel, values, Nonce);
        var partial = new PcrValues();
        foreach (var (b, i) in sel.Enumerate()) if (!(b == TpmAlgId.Sha1 && i == 7)) { values.TryGet(b, i, out var v); partial.Set(b, i, v); }
        var r = QuoteVerifier.Verify(attest, sig, partial, ak.Public, Nonce);
        Assert.Equal(new[] { QuoteFailureCodes.PcrValueMissing }, Codes(r));
        Assert.Contains("sha1:7", r.Failures[0].Message);
    }

    [Fact]
    public void ExpectedSelectionMismatchIsNamed()
    {
        using var ak = Ak("rsassa");
        var (sel, values) = Pcrs();
        var (attest, sig) = ak.Quote(sel, values, Nonce);
        var r = QuoteVerifier.Verify(attest, sig, values, ak.Public, Nonce, PcrSelection.Create(TpmAlgId.Sha256, 0, 1, 2));
        Assert.Equal(new[] { QuoteFailureCodes.PcrSelectionMismatch }, Codes(r));
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void OtherAkIsBadSignature(string kind)
    {
        using var ak = Ak(kind);
        using var other = Ak(kind);
        var (sel, values) = Pcrs();
        var (attest, sig) = ak.Quote(sel, values, Nonce);
        Assert.Equal(new[] { QuoteFailureCodes.BadSignature }, Codes(QuoteVerifier.Verify(attest, sig, values, other.Public, Nonce)));
    }

    [Theory]
    [InlineData("rsapss")]
    [InlineData("rsassa")]
    public void SignatureValueNotBelowTheModulusIsBadSignatureNotAnException(string kind)
    {
        using var ak = Ak(kind);
        var (sel, values) = Pcrs();
        var (attest, sig) = ak.Quote(sel, values, Nonce);
        var forged = (byte[])sig.Clone();
        forged.AsSpan(6).Fill(0xFF); // TPMT_SIGNATURE: sigAlg, hash, size, then the value: all ones exceeds any modulus
        Assert.Equal(new[] { QuoteFailureCodes.BadSignature }, Codes(QuoteVerifier.Verify(attest, forged, values, ak.Public, Nonce)));
    }

    [Fact]
    public void SignatureOfWrongKindIsAlgorithmMismatch()
    {
        using var rsa = Ak("rsassa");
        using var ecc = Ak("ecdsa");
        using var pss = Ak("rsapss");
        var (sel, values) = Pcrs();
        var (attest, sig) = ecc.Quote(sel, values, Nonce);
        Assert.Equal(new[] { QuoteFailureCodes.SignatureAlgorithmMismatch }, Codes(QuoteVerifier.Verify(attest, sig, values, rsa.Public, Nonce)));
        // An RSASSA AK must not accept an RSAPSS signature (restricted keys sign only with their own scheme), even by the same key material.
        var (attest2, sig2) = pss.Quote(sel, values, Nonce);
        var pssKeyAsRsassa = pss.Public.Clone();
        pssKeyAsRsassa.Scheme = new TpmScheme(TpmAlgId.RsaSsa, TpmAlgId.Sha256);
        Assert.Equal(new[] { QuoteFailureCodes.SignatureAlgorithmMismatch }, Codes(QuoteVerifier.Verify(attest2, sig2, values, pssKeyAsRsassa, Nonce)));
    }

    [Fact]
    public void EveryFailureIsReportedNotJustTheFirst()
    {
        using var ak = Ak("rsassa");
        using var other = Ak("rsassa");
        var (sel, values) = Pcrs();
        var (_, _) = (sel, values);
        // A non-TPM-generated structure that is also the wrong nonce, wrong PCRs and signed by another key.
        var digest = values.ComputeDigest(sel, TpmAlgId.Sha256, out _)!;
        digest[0] ^= 1;
        var attest = TpmsAttest.CreateQuote(ak.Name, "stale"u8.ToArray(), new TpmsClockInfo(1, 1, 1, true), 1, sel, digest, magic: 0x12345678).Raw;
        var sig = other.Sign(attest);
        var r = QuoteVerifier.Verify(attest, sig, values, ak.Public, Nonce, PcrSelection.Create(TpmAlgId.Sha256, 0));
        Assert.Equal(new[]
        {
            QuoteFailureCodes.BadMagic, QuoteFailureCodes.BadSignature, QuoteFailureCodes.NonceMismatch,
            QuoteFailureCodes.PcrDigestMismatch, QuoteFailureCodes.PcrSelectionMismatch,
        }, Codes(r));
        Assert.False(r.IsValid);
    }

    [Fact]
    public void NonQuoteAttestationIsNotAQuote()
    {
        using var ak = Ak("ecdsa");
        // A TPMS_ATTEST of type certify, signed by the AK.
        var w = new TpmWriter();
        w.U32(TpmGenerated.Value).U16((ushort)TpmSt.AttestCertify).B2(ak.Name).B2(Nonce).U64(5).U32(1).U32(0).U8(1).U64(0)
            .B2(ak.Name).B2(ak.Name);
        var attest = w.ToArray();
        var r = QuoteVerifier.Verify(attest, ak.Sign(attest), new PcrValues(), ak.Public, Nonce);
        Assert.Equal(new[] { QuoteFailureCodes.NotAQuote }, Codes(r));
        Assert.Equal(TpmSt.AttestCertify, r.Attest!.Type);
        Assert.Equal(ak.Name, r.Attest.ObjectName);
    }

    [Fact]
    public void GarbageIsMalformedNotAnException()
    {
        using var ak = Ak("rsassa");
        var r = QuoteVerifier.Verify([1, 2, 3], [0, 0x14, 0], new PcrValues(), ak.Public, Nonce);
        Assert.Equal(new[] { QuoteFailureCodes.MalformedQuote, QuoteFailureCodes.MalformedSignature }, Codes(r));
    }

    [Fact]
    public void UnrestrictedAkIsFlagged()
    {
        using var ak = Ak("rsassa");
        var (sel, values) = Pcrs();
        var (attest, sig) = ak.Quote(sel, values, Nonce);
        var loose = ak.Public.Clone();
        loose.Attributes &= ~TpmaObject.Restricted;
        Assert.Equal(new[] { QuoteFailureCodes.AkNotRestrictedSigningKey }, Codes(QuoteVerifier.Verify(attest, sig, values, loose, Nonce)));
    }

    [Fact]
    public void PreparedAkServesConcurrentVerifications()
    {
        using var ak = Ak("rsassa");
        var (sel, values) = Pcrs();
        var good = ak.Quote(sel, values, Nonce);
        var bad = ak.Quote(sel, values, "x"u8.ToArray());
        using var p = PreparedAk.Create(ak.Public);
        int wrong = 0;
        Parallel.For(0, 2000, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
        {
            var q = i % 2 == 0 ? good : bad;
            var r = QuoteVerifier.Verify(q.Attest, q.Signature, values, p, Nonce);
            if (r.IsValid != (i % 2 == 0)) Interlocked.Increment(ref wrong);
        });
        Assert.Equal(0, wrong);
    }

    [Fact]
    public void KeylimeQuoteRoundTripsAndVerifies()
    {
        using var ak = Ak("rsassa");
        var (sel, values) = Pcrs();
        var (attest, sig) = ak.Quote(sel, values, Nonce);
        var blob = Tpm2ToolsPcrBlob.Write(sel, values);
        var s = KeylimeQuote.Format(attest, sig, blob);
        Assert.StartsWith("r", s);
        Assert.Equal(3, s.Split(':').Length);
        var parsed = KeylimeQuote.Parse(s);
        Assert.Equal(attest, parsed.Attest);
        Assert.Equal(sig, parsed.Signature);
        Assert.Equal(blob, parsed.PcrBlob);
        Assert.Equal(s, parsed.ToString());

        using var p = PreparedAk.Create(ak.Public);
        Assert.True(QuoteVerifier.VerifyKeylime(s, p, Nonce, sel).IsValid);

        // A flipped bit in the PCR values part of the blob: the digest no longer matches.
        var tampered = (byte[])blob.Clone();
        tampered[Tpm2ToolsPcrBlob.SelectionStructSize + 4 + 4 + 2 + 5] ^= 0x40;
        var r = QuoteVerifier.VerifyKeylime(KeylimeQuote.Format(attest, sig, tampered), p, Nonce);
        Assert.Equal(new[] { QuoteFailureCodes.PcrDigestMismatch }, Codes(r));

        // A blob whose selection differs from the quote's.
        var sel2 = PcrSelection.Create(TpmAlgId.Sha256, 0, 1, 2, 3, 4, 5, 6, 7, 10, 11).Add(TpmAlgId.Sha1, 0, 7);
        values.Set(TpmAlgId.Sha256, 11, new byte[32]);
        var r2 = QuoteVerifier.VerifyKeylime(KeylimeQuote.Format(attest, sig, Tpm2ToolsPcrBlob.Write(sel2, values)), p, Nonce);
        Assert.Contains(QuoteFailureCodes.PcrSelectionMismatch, Codes(r2));

        Assert.Equal(new[] { QuoteFailureCodes.MalformedQuote }, Codes(QuoteVerifier.VerifyKeylime("r!!:AA:AA", p, Nonce)));
    }

    [Fact]
    public void PcrBlobLayoutIsTheTpm2ToolsCStructDump()
    {
        var sel = PcrSelection.Create(TpmAlgId.Sha256, 0, 1, 16, 23);
        var values = new PcrValues();
        foreach (var (b, i) in sel.Enumerate()) values.Set(b, i, Enumerable.Repeat((byte)(i + 1), 32).ToArray());
        var blob = Tpm2ToolsPcrBlob.Write(sel, values);
        Assert.Equal(132 + 4 + 532, blob.Length);
        Assert.Equal(new byte[] { 1, 0, 0, 0 }, blob[0..4]);                        // count, little-endian
        Assert.Equal(new byte[] { 0x0B, 0x00, 3, 0x03, 0x00, 0x81, 0, 0 }, blob[4..12]); // sha256 LE, sizeofSelect 3, bitmap, pad
        Assert.All(blob[12..132], b => Assert.Equal(0, b));                           // unused selection slots
        Assert.Equal(new byte[] { 1, 0, 0, 0 }, blob[132..136]);                    // one TPML_DIGEST
        Assert.Equal(new byte[] { 4, 0, 0, 0, 32, 0 }, blob[136..142]);             // four digests; first is 32 bytes
        Assert.Equal(1, blob[142]);
        Assert.Equal(new byte[] { 32, 0, 24 }, blob[(140 + 3 * 66)..(140 + 3 * 66 + 3)]); // fourth digest (PCR 23)

        var back = Tpm2ToolsPcrBlob.Parse(blob);
        Assert.True(back.Selection.SelectsSame(sel));
        Assert.Equal(4, back.Digests.Count);
        Assert.True(back.Values.TryGet(TpmAlgId.Sha256, 23, out var v23));
        Assert.Equal(24, v23[0]);
    }

    [Fact]
    public void PcrSelectionHelpersAgree()
    {
        var a = PcrSelection.FromBitmask(TpmAlgId.Sha256, 0x00_04_00_FFu);
        var b = PcrSelection.FromString("sha256:0,1,2,3,4,5,6,7,18");
        Assert.True(a.SelectsSame(b));
        Assert.Equal("sha256:0,1,2,3,4,5,6,7,18", a.ToString());
        Assert.Equal(Convert.FromHexString("00000001000B03FF0004"), a.ToBytes());
        Assert.Equal(a.ToBytes(), PcrSelection.Parse(a.ToBytes()).ToBytes());
        Assert.False(a.SelectsSame(PcrSelection.FromString("sha1:0,1,2,3,4,5,6,7,18")));
        Assert.Equal(9, a.Count);
    }

    [Fact]
    public void SignatureMarshalsAndParses()
    {
        var e = TpmtSignature.EcDsa(TpmAlgId.Sha256, [0, 1, 2], [3]);
        Assert.Equal(Convert.FromHexString("0018000B0003000102000103"), e.ToBytes());
        var back = TpmtSignature.Parse(e.ToBytes());
        Assert.Equal(new byte[] { 0, 1, 2 }, back.R);
        Span<byte> p1363 = stackalloc byte[8];
        Assert.True(back.TryWriteP1363(4, p1363));
        Assert.Equal(new byte[] { 0, 0, 1, 2, 0, 0, 0, 3 }, p1363.ToArray());
        Assert.False(TpmtSignature.EcDsa(TpmAlgId.Sha256, [1, 2, 3, 4, 5], [1]).TryWriteP1363(4, p1363));
        var rs = TpmtSignature.RsaSsa(TpmAlgId.Sha384, [9, 9]);
        Assert.Equal(Convert.FromHexString("0014000C00020909"), rs.ToBytes());
        Assert.Throws<TpmFormatException>(() => TpmtSignature.Parse(Convert.FromHexString("0099000B0000")));
    }
}
