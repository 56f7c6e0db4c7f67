using System.Security.Cryptography;
using BenchmarkDotNet.Attributes;
using TpmProvisioning.Bench.Reporting;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Bench;

/// <summary>
/// Quote verifications per second per core for RSA-2048 and P-256 AKs beside the raw signature-verify rate of the same
/// machine, measured in the same run. Target: quote verification at least 70% of the raw verify rate.
/// </summary>
/// <remarks>
/// The raw baselines verify exactly the signature the quote carries, over the SHA-256 digest of the quote's TPMS_ATTEST
/// bytes, with a public-only key imported from the AK's public area (as <see cref="PreparedAk"/> does). So the gap between a
/// quote row and its raw row is what the verifier adds: hashing the attest, parsing TPMS_ATTEST and TPMT_SIGNATURE, the
/// nonce and selection checks and the PCR digest. The quote covers sha256 PCRs 0-23, a full bank, the most a Keylime
/// verifier asks for. Each benchmark runs on one thread, so ops/s is per core.
/// </remarks>
[ReportFile("quote-verify", "Quote verification vs raw signature verification (per core, single thread)")]
public class QuoteVerifyBenchmarks
{
    private const double Target = 0.70;

    // Keylime nonces are 20 characters.
    private static readonly byte[] Nonce = "0123456789abcdefghij"u8.ToArray();

    private PcrSelection _selection = null!;
    private PcrValues _values = null!;
    private readonly Case _rsa = new();
    private readonly Case _ecc = new();

    private sealed class Case
    {
        public SoftwareAttestationKey Key = null!;
        public PreparedAk Prepared = null!;
        public byte[] Attest = null!;
        public byte[] Signature = null!;
        public string Keylime = null!;
        public RSA? RawRsa;
        public ECDsa? RawEcdsa;
        public byte[] Digest = null!;
        public byte[] RawSignature = null!;
    }

    [GlobalSetup]
    public void Setup()
    {
        _selection = PcrSelection.Create(TpmAlgId.Sha256, Enumerable.Range(0, 24).ToArray());
        _values = new PcrValues();
        var rnd = new Random(2021);
        foreach (var (bank, index) in _selection.Enumerate())
        {
            var v = new byte[TpmHash.DigestSize(bank)];
            rnd.NextBytes(v);
            _values.Set(bank, index, v);
        }
        var blob = Tpm2ToolsPcrBlob.Write(_selection, _values);
        Prepare(_rsa, SoftwareAttestationKey.CreateRsa(), blob);
        Prepare(_ecc, SoftwareAttestationKey.CreateEccP256(), blob);
    }

    private void Prepare(Case c, SoftwareAttestationKey key, byte[] pcrBlob)
    {
        c.Key = key;
        (c.Attest, c.Signature) = key.Quote(_selection, _values, Nonce);
        // Prepared once from the wire form, as a verifier holding the registrar's TPM2B_PUBLIC would.
        c.Prepared = PreparedAk.FromTpm2B(key.Public.ToTpm2B());
        c.Keylime = KeylimeQuote.Format(c.Attest, c.Signature, pcrBlob);

        var sig = TpmtSignature.Parse(c.Signature);
        c.Digest = SHA256.HashData(c.Attest);
        if (key.Public.IsRsa)
        {
            c.RawRsa = key.Public.GetRsaPublicKey();
            c.RawSignature = sig.Signature;
        }
        else
        {
            c.RawEcdsa = key.Public.GetECDsaPublicKey();
            c.RawSignature = new byte[2 * TpmPublic.CoordinateSize(key.Public.Curve)];
            if (!sig.TryWriteP1363(c.RawSignature.Length / 2, c.RawSignature)) throw new InvalidOperationException("ECDSA signature does not fit P1363.");
        }

        // Measure only paths that succeed: a failing check could return early and look fast.
        bool raw = c.RawRsa is not null
            ? c.RawRsa.VerifyHash(c.Digest, c.RawSignature, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1)
            : c.RawEcdsa!.VerifyHash(c.Digest, c.RawSignature);
        if (!raw) throw new InvalidOperationException("Raw baseline signature does not verify.");
        var r = QuoteVerifier.Verify(c.Attest, c.Signature, _values, c.Prepared, Nonce, _selection);
        if (!r.IsValid) throw new InvalidOperationException("Quote does not verify: " + r);
        var k = QuoteVerifier.VerifyKeylime(c.Keylime, c.Prepared, Nonce, _selection);
        if (!k.IsValid) throw new InvalidOperationException("Keylime quote does not verify: " + k);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var c in new[] { _rsa, _ecc })
        {
            c.Prepared?.Dispose();
            c.Key?.Dispose();
            c.RawRsa?.Dispose();
            c.RawEcdsa?.Dispose();
        }
    }

    [Benchmark(Description = "Raw RSA-2048 verify (RSA.VerifyHash, PKCS#1 v1.5, SHA-256)")]
    public bool RawRsaVerify() =>
        _rsa.RawRsa!.VerifyHash(_rsa.Digest, _rsa.RawSignature, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);

    [Benchmark(Description = "Raw P-256 verify (ECDsa.VerifyHash)")]
    public bool RawP256Verify() => _ecc.RawEcdsa!.VerifyHash(_ecc.Digest, _ecc.RawSignature);

    [Benchmark(Description = "Quote verify, RSA-2048 AK (QuoteVerifier.Verify)")]
    [RatioTo(nameof(RawRsaVerify), Target = Target)]
    public QuoteVerificationResult QuoteVerifyRsa() =>
        QuoteVerifier.Verify(_rsa.Attest, _rsa.Signature, _values, _rsa.Prepared, Nonce, _selection);

    [Benchmark(Description = "Quote verify, P-256 AK (QuoteVerifier.Verify)")]
    [RatioTo(nameof(RawP256Verify), Target = Target)]
    public QuoteVerificationResult QuoteVerifyP256() =>
        QuoteVerifier.Verify(_ecc.Attest, _ecc.Signature, _values, _ecc.Prepared, Nonce, _selection);

    [Benchmark(Description = "Keylime quote string, RSA-2048 AK (QuoteVerifier.VerifyKeylime)")]
    [RatioTo(nameof(RawRsaVerify))]
    public QuoteVerificationResult KeylimeVerifyRsa() => QuoteVerifier.VerifyKeylime(_rsa.Keylime, _rsa.Prepared, Nonce, _selection);

    [Benchmark(Description = "Keylime quote string, P-256 AK (QuoteVerifier.VerifyKeylime)")]
    [RatioTo(nameof(RawP256Verify))]
    public QuoteVerificationResult KeylimeVerifyP256() => QuoteVerifier.VerifyKeylime(_ecc.Keylime, _ecc.Prepared, Nonce, _selection);
}
