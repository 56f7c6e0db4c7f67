using System.Security.Cryptography;
using System.Text;
using TpmProvisioning.Pki;
using TpmProvisioning.Tests.Software;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Fuzz;

/// <summary>TPM2B_PUBLIC / TPMT_PUBLIC, then what the registrar, provisioning and verifier do with a public area that parsed.</summary>
public sealed class TpmPublicTarget : FuzzTarget
{
    public override string Name => "tpm-public";
    public override string Description => "TPM2B_PUBLIC/TPMT_PUBLIC parse, Name, attribute checks, key conversion, PreparedAk";

    public override void Run(byte[] data)
    {
        TpmPublic p;
        try { p = TpmPublic.ParseTpm2B(data); }
        catch (TpmFormatException) { return; }
        Exercise(p, data.AsSpan(2));
    }

    /// <summary>What callers do with a parsed public area; only the exceptions they catch are allowed.</summary>
    internal static void Exercise(TpmPublic p, ReadOnlySpan<byte> tpmt)
    {
        _ = p.ToString();
        _ = p.RestrictedSigningKeyProblems();
        _ = p.IsRestrictedDecryptionKey(out _);
        var again = TpmPublic.Parse(p.ToBytes());
        if (!again.ParametersEqual(p)) throw new InvalidOperationException("TPMT_PUBLIC does not survive a marshal round trip.");
        if (TpmHash.IsSupported(p.NameAlg))
        {
            _ = p.ComputeName();
            _ = TpmPublic.ComputeName(p.NameAlg, tpmt);
        }
        try
        {
            var key = KeyIdentity.FromTpmPublic(p);
            _ = key.ToSubjectPublicKeyInfo();
        }
        catch (Exception ex) when (ex is InvalidOperationException or NotSupportedException or CryptographicException) { }
        try
        {
            using var ak = PreparedAk.Create(p);
        }
        catch (Exception ex) when (ex is InvalidOperationException or NotSupportedException or CryptographicException) { }
    }

    public override IEnumerable<(string, byte[])> Seeds()
    {
        yield return ("swtpm-ek-rsa", Convert.FromBase64String(SwtpmQuoteFixtures.EkPub));
        yield return ("swtpm-ek-ecc", Convert.FromBase64String(SwtpmQuoteFixtures.EkeccPub));
        yield return ("swtpm-ak-rsa", Convert.FromBase64String(SwtpmQuoteFixtures.AkPub));
        yield return ("template-ak-ecc", TpmTemplates.AkEccP256.ToTpm2B());
        yield return ("template-ek-p384", TpmTemplates.EkEccP384High.ToTpm2B());
    }
}

/// <summary>TPMS_ATTEST of every attestation type.</summary>
public sealed class TpmsAttestTarget : FuzzTarget
{
    public override string Name => "tpms-attest";
    public override string Description => "TPMS_ATTEST parse (quote, certify, creation, time, audit, NV)";

    public override void Run(byte[] data)
    {
        TpmsAttest a;
        try { a = TpmsAttest.Parse(data); }
        catch (TpmFormatException) { return; }
        if (!a.Raw.AsSpan().SequenceEqual(data)) throw new InvalidOperationException("Raw differs from the input.");
        if (a.PcrSelect is { } sel)
        {
            _ = sel.ToString();
            _ = sel.SelectsSame(sel);
            _ = sel.Enumerate().Count();
            _ = new PcrValues().ComputeDigest(sel, TpmAlgId.Sha256, out _);
        }
    }

    public override IEnumerable<(string, byte[])> Seeds()
    {
        yield return ("swtpm-quote", Convert.FromBase64String(SwtpmQuoteFixtures.QuoteMsg));
        using var ak = SoftwareAttestationKey.CreateEccP256();
        var values = new PcrValues();
        for (int i = 0; i < 8; i++) values.Set(TpmAlgId.Sha256, i, new byte[32]);
        var (attest, _) = ak.Quote(PcrSelection.Create(TpmAlgId.Sha256, 0, 1, 2, 3, 4, 5, 6, 7), values, Encoding.ASCII.GetBytes("nonce"));
        yield return ("software-quote-ecc", attest);
    }
}

/// <summary>TPMT_SIGNATURE, and the P1363 conversion the verifier applies to ECC signatures.</summary>
public sealed class TpmtSignatureTarget : FuzzTarget
{
    public override string Name => "tpmt-signature";
    public override string Description => "TPMT_SIGNATURE parse, re-marshal, ECDSA P1363 conversion";

    public override void Run(byte[] data)
    {
        TpmtSignature s;
        try { s = TpmtSignature.Parse(data); }
        catch (TpmFormatException) { return; }
        if (!s.ToBytes().AsSpan().SequenceEqual(data)) throw new InvalidOperationException("TPMT_SIGNATURE does not survive a marshal round trip.");
        Span<byte> p1363 = stackalloc byte[2 * 66];
        foreach (int size in (int[])[32, 48, 66]) _ = s.TryWriteP1363(size, p1363);
    }

    public override IEnumerable<(string, byte[])> Seeds()
    {
        yield return ("swtpm-rsassa", Convert.FromBase64String(SwtpmQuoteFixtures.QuoteSig));
        using var ak = SoftwareAttestationKey.CreateEccP256();
        yield return ("software-ecdsa", ak.Sign("data"u8));
        yield return ("null", [0x00, 0x10]);
        yield return ("hmac-sha1", [0x00, 0x05, 0x00, 0x04, .. new byte[20]]);
    }
}

/// <summary>TPML_PCR_SELECTION (TPM marshaling) and the tpm2-tools PCR blob Keylime carries in its quote.</summary>
public sealed class PcrSelectionTarget : FuzzTarget
{
    public override string Name => "pcr-selection";
    public override string Description => "TPML_PCR_SELECTION (first byte 0) or tpm2-tools PCR blob (first byte 1)";

    public override void Run(byte[] data)
    {
        if (data.Length == 0) return;
        var body = data.AsSpan(1);
        if (data[0] % 2 == 0)
        {
            PcrSelection s;
            try { s = PcrSelection.Parse(body); }
            catch (TpmFormatException) { return; }
            if (!s.ToBytes().AsSpan().SequenceEqual(body)) throw new InvalidOperationException("TPML_PCR_SELECTION does not survive a marshal round trip.");
            _ = s.ToString();
            _ = s.NonEmptyBanks;
            _ = s.SelectsSame(PcrSelection.Create(TpmAlgId.Sha256, 0, 1, 2));
        }
        else
        {
            Tpm2ToolsPcrBlob b;
            try { b = Tpm2ToolsPcrBlob.Parse(body); }
            catch (TpmFormatException) { return; }
            foreach (var bank in b.Values.Banks) _ = b.Values.Bank(bank);
            _ = b.Values.ComputeDigest(b.Selection, TpmAlgId.Sha256, out _);
            var rewritten = Tpm2ToolsPcrBlob.Write(b.Selection, b.Values);
            _ = Tpm2ToolsPcrBlob.Parse(rewritten);
        }
    }

    public override IEnumerable<(string, byte[])> Seeds()
    {
        yield return ("selection-sha256-0-7", [0, .. PcrSelection.Create(TpmAlgId.Sha256, 0, 1, 2, 3, 4, 5, 6, 7).ToBytes()]);
        yield return ("selection-two-banks", [0, .. PcrSelection.FromString("sha256:0,1,2,10+sha1:0,7").ToBytes()]);
        yield return ("swtpm-pcr-blob", [1, .. Convert.FromBase64String(SwtpmQuoteFixtures.QuotePcrs)]);
    }
}

/// <summary>Keylime's quote string, parsed and then judged against the swtpm AK the way the verifier judges an agent's answer.</summary>
public sealed class KeylimeQuoteTarget : FuzzTarget
{
    private static readonly Lazy<PreparedAk> Ak = new(() => PreparedAk.FromTpm2B(Convert.FromBase64String(SwtpmQuoteFixtures.AkPub)));
    private static readonly byte[] Nonce = Encoding.ASCII.GetBytes("1234");

    public override string Name => "keylime-quote";
    public override string Description => "Keylime quote string r<attest>:<sig>:<pcrs>: parse, parts, QuoteVerifier.VerifyKeylime";

    public override void Run(byte[] data)
    {
        var text = Encoding.UTF8.GetString(data);
        if (KeylimeQuote.TryParse(text, out var q, out _))
        {
            try { _ = TpmsAttest.Parse(q!.Attest); } catch (TpmFormatException) { }
            try { _ = TpmtSignature.Parse(q!.Signature); } catch (TpmFormatException) { }
            try { _ = Tpm2ToolsPcrBlob.Parse(q!.PcrBlob); } catch (TpmFormatException) { }
            if (q!.ToString() is var again && KeylimeQuote.Parse(again).ToString() != again)
                throw new InvalidOperationException("Keylime quote does not survive a format round trip.");
        }
        var result = QuoteVerifier.VerifyKeylime(text, Ak.Value, Nonce, PcrSelection.FromString("sha256:0,1,2,3,4,5,6,7,8,9,10+sha1:0,7"));
        _ = result.ToString();
    }

    public override IEnumerable<(string, byte[])> Seeds()
    {
        yield return ("swtpm-quote", Encoding.ASCII.GetBytes(KeylimeQuote.Format(
            Convert.FromBase64String(SwtpmQuoteFixtures.QuoteMsg), Convert.FromBase64String(SwtpmQuoteFixtures.QuoteSig), Convert.FromBase64String(SwtpmQuoteFixtures.QuotePcrs))));
        yield return ("short", "rAAAA:AAAA:AAAA"u8.ToArray());
    }
}
