using System.Security.Cryptography;
using System.Text;
using BenchmarkDotNet.Attributes;
using TpmProvisioning.Attestation;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Bench.Reporting;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Bench;

/// <summary>
/// The verifier's cost per judged quote (per core): the whole judgement of a Keylime quote string — quote checks, algorithms,
/// clock, PCR 16 against the NK, a tpm_policy over PCR 15 — with the agent's AK parsed once and kept, beside the same judgement
/// re-parsing the AK for every quote (what Keylime does), and the raw RSA verify of the same signature as the floor.
/// </summary>
[ReportFile("verifier-judge", "Verifier judgement per quote (per core, single thread)")]
public class VerifierJudgeBenchmarks
{
    private const string Nonce = "0123456789abcdefghij";
    private VerifierAgentConfig _config = null!;
    private VerifierAgentProgress _progress = null!;
    private TpmPolicy _policy = null!;
    private PreparedAk _ak = null!;
    private QuoteResponse _response = null!;
    private uint _mask;
    private RSA _raw = null!;
    private byte[] _digest = null!;
    private byte[] _sig = null!;

    [GlobalSetup]
    public void Setup()
    {
        var key = SoftwareAttestationKey.CreateRsa();
        using var nk = RSA.Create(2048);
        string nkPem = nk.ExportSubjectPublicKeyInfoPem() + "\n";
        var values = new PcrValues();
        values.Set(TpmAlgId.Sha256, 15, new byte[32]);
        values.Set(TpmAlgId.Sha256, 16, SHA256.HashData([.. new byte[32], .. SHA256.HashData(Encoding.UTF8.GetBytes(nkPem))]));
        _config = new VerifierAgentConfig { Ip = "127.0.0.1", Port = 9002, AkTpm = Convert.ToBase64String(key.Public.ToTpm2B()), TpmPolicy = TpmPolicy.Format(new Dictionary<int, IReadOnlyList<string>> { [15] = [new string('0', 64)] }) };
        _policy = TpmPolicy.TryParse(_config.TpmPolicy, out _)!;
        _mask = QuoteJudge.QuoteMask(_config, _policy, []);
        var selection = PcrSelection.FromBitmask(TpmAlgId.Sha256, _mask);
        var (attest, signature) = key.Quote(selection, values, Encoding.ASCII.GetBytes(Nonce));
        _response = new QuoteResponse
        {
            Quote = KeylimeQuote.Format(attest, signature, Tpm2ToolsPcrBlob.Write(selection, values)),
            HashAlg = "sha256", EncAlg = "rsa", SignAlg = "rsassa",
        };
        _progress = new VerifierAgentProgress { NkPem = nkPem };
        _ak = PreparedAk.FromTpm2B(key.Public.ToTpm2B());
        var check = QuoteJudge.Judge(_config, _progress, _ak, _policy, Nonce, _mask, _response);
        if (!check.Passed) throw new InvalidOperationException("benchmark quote does not pass: " + string.Join("; ", check.Failures));
        _raw = key.Public.GetRsaPublicKey();
        _digest = SHA256.HashData(attest);
        _sig = TpmtSignature.Parse(signature).Signature;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _ak.Dispose();
        _raw.Dispose();
    }

    [Benchmark(Description = "Raw RSA-2048 verify of the quote's signature")]
    public bool RawRsaVerify() => _raw.VerifyHash(_digest, _sig, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);

    [Benchmark(Description = "Judge a quote, AK prepared once (ours)")]
    [RatioTo(nameof(RawRsaVerify))]
    public bool JudgePreparedAk() => QuoteJudge.Judge(_config, _progress, _ak, _policy, Nonce, _mask, _response).Passed;

    [Benchmark(Description = "Judge a quote, AK parsed per quote (as Keylime)")]
    [RatioTo(nameof(RawRsaVerify))]
    public bool JudgeReparsedAk()
    {
        using var ak = PreparedAk.FromTpm2B(Convert.FromBase64String(_config.AkTpm));
        return QuoteJudge.Judge(_config, _progress, ak, _policy, Nonce, _mask, _response).Passed;
    }
}
