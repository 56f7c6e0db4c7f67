using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.Data.Sqlite;
using TpmProvisioning.Attestation;
using TpmProvisioning.Attestation.Measurements;
using TpmProvisioning.Pki;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Tests.Provisioning;
using TpmProvisioning.Storage;
using System.Text.Json.Nodes;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Kms;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Fuzz;

/// <summary>
/// Inputs afl-fuzz found (tests/fuzz, <c>build.ps1 Fuzz</c>) that made a parser or its caller throw something other than its
/// documented bad-input error. Each input is the crashing one as the fuzzer saved it.
/// </summary>
public sealed class FuzzRegressionTests
{
    /// <summary>
    /// tpm-public crash: the swtpm AK with a few modulus bytes changed, so the modulus has a small factor. .NET imports it, BouncyCastle's
    /// RsaKeyParameters then threw ArgumentException out of <see cref="PreparedAk"/>.
    /// </summary>
    private const string AkWithSmallFactorModulus =
        "ARgAAQALAAUAcgAAABAAFAALCAAAAAAAAQDTbArIgSZTmUY3PBj54QweFVF0z6aFg++AdwHT6cfcj9LfdFEQiOTQx66JuccPJ/ewTxrHP0XQ7vchm5R1HKQANi4ZwGwHCqg2vIY4ObQXUwkmGV4UQjORWLbdWrWDcjYXw99czEeL0w57Q2tjGSI/CFZixRXQkIbg2qHfmo1sXaUGKhDEbQON6Er9xFHRSP1GuCUfS7anVumqeafcGxzowTWqFv3GSdFrKS3HVE8mbWYO43XTaqoDYCNJLOnRhsVbmOzBu/LK9vLoiHDlSQb6XmFvrsL7QYdxMzOQFTwLp8NexIeCNplkHhtINW5tErANsGMeRW9Ge0ODwTZ6p3U1";

    [Fact]
    public void PreparingAnAkWhoseModulusIsNoRsaKeyIsACryptographicError()
    {
        var pub = TpmPublic.ParseTpm2B(Convert.FromBase64String(AkWithSmallFactorModulus));
        Assert.Empty(pub.RestrictedSigningKeyProblems());
        var ex = Assert.Throws<CryptographicException>(() => PreparedAk.Create(pub));
        Assert.Contains("not valid", ex.Message);
    }

    /// <summary>
    /// verifier-agent crash (as saved, duplicate-looking members and all): the body passed every check, so the verifier answered 200
    /// and its watch then failed on the first quote with "internal.exception" when it prepared the AK. It must be a 400 naming ak_tpm.
    /// </summary>
    private const string VerifierBodyWithUnusableAk = """
        {
          "v": "3HZMmIEc6yyjfoxdCwcOgPk/6X1GuNG+tlCmNgqBM/I=",
          "cloudagent_ip": "127.0.0.1",
          "cloudagent_port": 9002,
          "ty": "{\"\"}",
          "ak_tpm": "ARgAAQALAAUAcgAAABAAFAALCAAAAAAAAQDjZ4J2HO7ekIONAX/eYIzt7ziiVAqE/1D7I9oEwIE88dIfqH0FQLJAg8u3+ZOgsJDQr9HiMhZRPhv8hRuia8ULdAomyOFA1cVzlBF+xcBUEemOIofbvcBNAoTY/x49r8LpqAEUBBiUeOniQbjfRaV2S5cEAA92wHLQAPLF9Sbf3zNxCnbhtRkEi6C3NYl8/FJqyu5Z9vvwEBBOFFTPasAxMtPm6a+Z5KJ4rDflipfaVcUvTKLIBRI7wkuXqhTR8BeIBiK9upQ3iBo+FbYjWSf+BaN+wodMNgPbzxyL+tuxVqiPefBbv+sTWVxmYfo5i84FlbNOAW3APH8c+jZ3tgbt",
            "runtime_policy_name": null,
          "runtime_policy": "",
          "ru": "",
          "runtimstate": "nuvl",
          "ima_sign_verification_keys": "[]",
          "metadata": "{\"\"}",
          "revgs": [
            "a1"
          ],
          "accept_tpm_encryption_algs": [
            "ecc",
            "rsa"
          ],
          "": [ ],
          "supported_version": "2.0"
        }
        """;

    [Fact]
    public void TheVerifierRefusesAnAkItCouldNotVerifyQuotesWith()
    {
        var config = VerifierAgentRequest.Parse(Encoding.UTF8.GetBytes(VerifierBodyWithUnusableAk), requireMtls: false, out var error);
        Assert.Null(config);
        Assert.StartsWith("ak_tpm: not a usable public key", error);
    }

    [Fact]
    public void TheVerifierStillAcceptsTheSameBodyWithARealAk()
    {
        var body = JsonNode.Parse(VerifierBodyWithUnusableAk)!.AsObject();
        body["ak_tpm"] = Software.SwtpmQuoteFixtures.AkPub;
        var config = VerifierAgentRequest.Parse(Encoding.UTF8.GetBytes(body.ToJsonString()), requireMtls: false, out var error);
        Assert.True(config is not null, error);
    }

    /// <summary>
    /// kms-bodies crash: a correctly signed revocation notice whose <c>msg</c> is JSON but not an object (<c>44</c>) threw
    /// InvalidOperationException from JsonElement.TryGetProperty, which the KMS role answers with 500. It is a bad notice (400).
    /// </summary>
    [Theory]
    [InlineData("44")]
    [InlineData("[\"agent_id\"]")]
    [InlineData("\"agent_id\"")]
    [InlineData("null")]
    public void ASignedNoticeWhoseMessageIsNotAnObjectIsInvalid(string msg)
    {
        using var rsa = RSA.Create(2048);
        var sig = rsa.SignData(Encoding.UTF8.GetBytes(msg), HashAlgorithmName.SHA256, RSASignaturePadding.Pss);
        var notice = new JsonObject { ["msg"] = msg, ["signature"] = Convert.ToBase64String(sig) }.ToJsonString();
        var ex = Assert.Throws<KmsException>(() => KeyReleaseService.VerifyRevocation(Encoding.UTF8.GetBytes(notice), rsa.ExportSubjectPublicKeyInfoPem()));
        Assert.Equal(KmsErrorKind.InvalidArgument, ex.Kind);
    }

    /// <summary>
    /// registrar-registration crash (the corpus entry <c>seed-ek-empty-modulus</c>, replayed through the harness): an RSA EK whose unique
    /// field is empty passed the EK checks, and MakeCredential's InvalidOperationException escaped RegisterAsync (a 500).
    /// </summary>
    private static readonly string RegistrationWithEmptyEkModulus =
        """{"ek_tpm": "ADoAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAAA", "aik_tpm": "ARgAAQALAAUAcgAAABAAFAALCAAAAAAAAQDTbArIgSZTmQw3PBj54UYeFVF0z6aFg++AdwHT6cfcj9LfdFEQiOTQx66JuccPJ/ewTxrHP0XQ7vchm5R1HKQANi4ZwGwHCqg2vIY4ObQXUwkmGV4UQjORWLbdWrWDcjYXw99czEeL0w57Q2tjGSI/CFZixRXQkIbg4KHfmo1sXaUGKhDEbQON6Er9xFHRSP1GuCUfS7anVumqeafcGxzowTWqFv3GSdFrKS3HVE8mbWYO43XTaqoDYCNJLOnRhsVbmOzBu/LK9vLoiHDlSQb6XmFvrsL7QYdxMzOQFTwLp8NexIeCNplkHhtINW5tErANsGMeRW9Ge0ODwTZ6p3U1"}""";

    [Fact]
    public void MakeCredentialForAnEkWithoutAKeyIsAnArgumentError()
    {
        var ek = TpmPublic.ParseTpm2B(Convert.FromBase64String(System.Text.Json.JsonDocument.Parse(RegistrationWithEmptyEkModulus).RootElement.GetProperty("ek_tpm").GetString()!));
        Assert.Empty(ek.Modulus);
        var ex = Assert.Throws<ArgumentException>(() => Credential.MakeCredential(ek, Convert.FromBase64String(Software.SwtpmQuoteFixtures.AkName), new byte[32]));
        Assert.Contains("no usable key", ex.Message);
    }

    [Fact]
    public async Task TheRegistrarRefusesAnEkWithoutAKey()
    {
        await using var scratch = await RegistrarScratch.CreateAsync();
        var outcome = await scratch.Service.RegisterAsync(Guid.NewGuid().ToString(), Encoding.UTF8.GetBytes(RegistrationWithEmptyEkModulus));
        Assert.Equal(400, outcome.Status);
        Assert.Contains("ek_tpm", outcome.Message);
    }

    [Fact]
    public async Task TheRegistrarRefusesAnEkWithoutAKeyNextToAnEkCertificate()
    {
        await using var scratch = await RegistrarScratch.CreateAsync();
        using var rsa = RSA.Create(2048);
        using var cert = new CertificateRequest("CN=TPM EK", rsa, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1)
            .CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        var body = JsonNode.Parse(RegistrationWithEmptyEkModulus)!.AsObject();
        body["ekcert"] = Convert.ToBase64String(cert.RawData);
        var outcome = await scratch.Service.RegisterAsync(Guid.NewGuid().ToString(), Encoding.UTF8.GetBytes(body.ToJsonString()));
        Assert.Equal(400, outcome.Status);
        Assert.StartsWith("ek_tpm: no usable public key", outcome.Message);
    }

    private sealed class RegistrarScratch : IAsyncDisposable
    {
        private readonly string _dir = Directory.CreateTempSubdirectory("tpmprov-fuzzreg-").FullName;
        private SqliteStore _store = null!;
        public RegistrarService Service { get; private set; } = null!;

        public static async Task<RegistrarScratch> CreateAsync()
        {
            var s = new RegistrarScratch();
            s._store = await SqliteStore.OpenAsync(Path.Combine(s._dir, "store.db"));
            s.Service = new RegistrarService(s._store, (EkTrustStore?)null, new RegistrarSettings { VerifyEkCertificateChain = false });
            return s;
        }

        public ValueTask DisposeAsync()
        {
            _store.Dispose();
            SqliteConnection.ClearAllPools();
            try { Directory.Delete(_dir, true); } catch (IOException) { }
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>
    /// keylime-quote: a part of only whitespace decoded to zero bytes and was accepted, although an empty part is refused (the quote
    /// then did not survive its own format round trip). Found by the target's round-trip check; kept in its corpus.
    /// </summary>
    [Theory]
    [InlineData("r :AAAA:AAAA")]
    [InlineData("rAAAA:\t\n :AAAA")]
    [InlineData("rAAAA:AAAA:    ")]
    public void AKeylimeQuotePartOfOnlyWhitespaceIsEmpty(string quote)
    {
        var ex = Assert.Throws<TpmFormatException>(() => KeylimeQuote.Parse(quote));
        Assert.Contains("part is empty", ex.Message);
    }

    // ------------------------------------------------------------------ provisioning-request crashes (kept in tests/fuzz/corpus)

    private static string FuzzFile(string relative)
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            var p = Path.Combine(d.FullName, "tests", "fuzz", relative);
            if (File.Exists(p)) return p;
        }
        throw new FileNotFoundException("tests/fuzz/" + relative);
    }

    /// <summary>A provisioning service trusting the fuzz harness's manufacturer, with the crashing body as the harness sends it.</summary>
    private static async Task<ProvisioningOutcome> ProvisionCrashAsync(string crash)
    {
        var root = X509CertificateLoader.LoadCertificateFromFile(FuzzFile("data/provisioning-ek-root.der"));
        var issuer = X509CertificateLoader.LoadCertificateFromFile(FuzzFile("data/provisioning-ek-issuer.der"));
        await using var h = await ProvisioningHarness.CreateAsync(trust: new EkTrustStore([root], [issuer]));
        var request = System.Text.Json.JsonSerializer.Deserialize(File.ReadAllBytes(FuzzFile("corpus/provisioning-request/" + crash)), ProvisioningJsonContext.Default.ProvisioningRequest)!;
        request.ApiKey = h.Key.Key;
        return await h.Service.ProvisionAsync(request);
    }

    /// <summary>
    /// A CSR whose key names an EC curve OpenSSL does not know, or a key algorithm .NET does not know: signature verification threw
    /// PlatformNotSupportedException / NotSupportedException (500).
    /// </summary>
    [Theory]
    [InlineData("crash-csr-unknown-curve")]
    [InlineData("crash-csr-unknown-key-algorithm")]
    public async Task ACsrWhoseKeyCannotBeUsedIsRefused(string crash)
    {
        var outcome = await ProvisionCrashAsync(crash);
        Assert.Equal(400, outcome.Status);
        Assert.Equal("csr: signature does not verify", outcome.Error);
    }

    /// <summary>An EK certificate whose basicConstraints extension does not decode: the CA check threw CryptographicException (500).</summary>
    [Fact]
    public async Task AnEkCertificateWithAMalformedBasicConstraintsIsRefused()
    {
        var outcome = await ProvisionCrashAsync("crash-ekcert-bad-basic-constraints");
        Assert.Equal(400, outcome.Status);
        Assert.Equal("ek_cert: its basicConstraints extension is malformed", outcome.Error);
    }

    /// <summary>
    /// An EK certificate whose validity dates do not decode (found by the short pass once the station's device log wrote them):
    /// reading NotBefore threw CryptographicException (500).
    /// </summary>
    [Fact]
    public async Task AnEkCertificateWithUndecodableValidityIsRefused()
    {
        var outcome = await ProvisionCrashAsync("crash-ekcert-bad-validity");
        Assert.Equal(400, outcome.Status);
        Assert.Equal("ek_cert: its validity dates do not decode", outcome.Error);
    }

    /// <summary>
    /// verifier-policies crash found by the short afl pass of <c>build.ps1 Test</c> (<c>crash-keyring-unknown-curve</c>): an ima-sig
    /// keyring key on an EC curve OpenSSL does not know threw PlatformNotSupportedException instead of the keyring's FormatException.
    /// </summary>
    [Fact]
    public void AKeyringKeyOnAnUnknownCurveIsMalformed()
    {
        var keyring = File.ReadAllText(FuzzFile("corpus/verifier-policies/crash-keyring-unknown-curve"))[1..];
        var ex = Assert.Throws<FormatException>(() => TpmProvisioning.Attestation.Measurements.ImaSignatureKeys.FromKeylimeKeyring(keyring));
        Assert.Contains("Not an RSA or EC public key", ex.Message);
    }

    // ------------------------------------------------------------------ verifier-policies: a member given twice

    /// <summary>
    /// verifier-policies crash (<c>crash-mb-refstate-duplicate-pcr</c>, PCR "2" twice): JsonObject threw ArgumentException on first
    /// enumeration, out of MeasuredBootPolicy.Parse and out of the verifier's mb_refstate validation (which expects FormatException).
    /// </summary>
    [Fact]
    public void AMeasuredBootRefstateWithAMemberTwiceIsMalformed()
    {
        var json = File.ReadAllText(FuzzFile("corpus/verifier-policies/crash-mb-refstate-duplicate-pcr"))[1..];
        Assert.Throws<FormatException>(() => MeasuredBootPolicy.Parse(json));
    }

    [Fact]
    public void TheVerifierRefusesSuchARefstateWithA400Reason()
    {
        var refstate = File.ReadAllText(FuzzFile("corpus/verifier-policies/crash-mb-refstate-duplicate-pcr"))[1..];
        var body = new JsonObject
        {
            ["cloudagent_ip"] = "127.0.0.1", ["cloudagent_port"] = 9002, ["ak_tpm"] = Software.SwtpmQuoteFixtures.AkPub, ["mtls_cert"] = "disabled",
            ["mb_refstate"] = refstate,
        };
        var config = VerifierAgentRequest.Parse(Encoding.UTF8.GetBytes(body.ToJsonString()), requireMtls: false, out var error);
        Assert.True(config is not null, error);
        var reasons = MeasurementChecks.Default.OfType<IConfigValidator>().Select(c => c.Validate(config!)).Where(r => r is not null).ToList();
        Assert.Contains(reasons, r => r!.StartsWith("mb_refstate:", StringComparison.Ordinal));
    }

    [Fact]
    public void ARuntimePolicyOrKeyringWithAMemberTwiceIsMalformed()
    {
        Assert.Throws<FormatException>(() => RuntimePolicy.Parse("""{"meta":{"version":1},"digests":{"/a":["aa"]},"digests":{"/b":["bb"]}}"""));
        Assert.Throws<FormatException>(() => RuntimePolicy.Parse("""{"meta":{"version":1},"ima":{"log_hash_alg":"sha1","log_hash_alg":"sha256"}}"""));
        Assert.Throws<FormatException>(() => ImaSignatureKeys.FromKeylimeKeyring("""{"pubkeys":[],"pubkeys":[]}"""));
    }
}
