using System.Text;
using System.Text.Json.Nodes;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Verifier;

/// <summary>
/// No input crashes the verifier: random, truncated and mutated add-request bodies give a named 400 reason or a valid
/// config, never an exception; random or mangled quote answers are judged as failures, never thrown.
/// </summary>
public sealed class VerifierInputFuzzTests
{
    private static string SeedBody()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            var p = Path.Combine(d.FullName, "seeds", "keylime", "verifier-post-agent.request.json");
            if (File.Exists(p)) return File.ReadAllText(p);
        }
        throw new FileNotFoundException("seed not found");
    }

    [Fact]
    public void RandomTruncatedAndMutatedBodiesNeverThrow()
    {
        var rnd = new Random(6);
        var seed = Encoding.UTF8.GetBytes(SeedBody());
        int accepted = 0, refused = 0;
        for (int i = 0; i < 3000; i++)
        {
            byte[] body = (i % 3) switch
            {
                0 => seed[..rnd.Next(seed.Length + 1)],
                1 => Mutate(seed, rnd),
                _ => RandomBytes(rnd),
            };
            var config = VerifierAgentRequest.Parse(body, requireMtls: false, out var error);
            if (config is null) { Assert.False(string.IsNullOrWhiteSpace(error)); refused++; }
            else accepted++;
        }
        Assert.True(refused > 2000, $"refused {refused}");
        // Field-level mutations of a valid body: each wrong type gives a reason naming a field.
        var valid = JsonNode.Parse(SeedBody())!.AsObject();
        valid["mtls_cert"] = "disabled";
        valid["revocation_key"] = "";
        Assert.NotNull(VerifierAgentRequest.Parse(Encoding.UTF8.GetBytes(valid.ToJsonString()), false, out var e0));
        foreach (var field in valid.Select(p => p.Key).ToList())
        {
            foreach (JsonNode? bad in new JsonNode?[] { 12345, new JsonArray(1, 2), new JsonObject { ["x"] = 1 }, "\u0000", new string('9', 70000) })
            {
                var copy = JsonNode.Parse(valid.ToJsonString())!.AsObject();
                copy[field] = bad?.DeepClone();
                _ = VerifierAgentRequest.Parse(Encoding.UTF8.GetBytes(copy.ToJsonString()), false, out _);
            }
        }
        Assert.Null(e0);
    }

    [Theory]
    [InlineData("127.0.0.1\u0000", false)]
    [InlineData("1.1.1.1'; DROP TABLE x;--", false)]
    [InlineData("http://127.0.0.1/", false)]
    [InlineData("agent one", false)]
    [InlineData("-agent", false)]
    [InlineData("256.0.0.1", false)]
    [InlineData("fe80::1%eth0", false)]
    [InlineData("127.0.0.1", true)]
    [InlineData("::1", true)]
    [InlineData("agent-7.plant.example", true)]
    [InlineData("agent-7.plant.example.", true)]
    public void TheContactAddressIsAnIpAddressOrAHostName(string ip, bool ok)
    {
        var body = JsonNode.Parse(SeedBody())!.AsObject();
        body["mtls_cert"] = "disabled";
        body["revocation_key"] = "";
        body["cloudagent_ip"] = ip;
        var config = VerifierAgentRequest.Parse(Encoding.UTF8.GetBytes(body.ToJsonString()), false, out var error);
        Assert.Equal(ok, config is not null);
        if (!ok) Assert.Equal("cloudagent_ip: must be an IP address or host name", error);
        Assert.False(TpmProvisioning.Attestation.KeylimeValidators.IsValidContactHost(new string('a', 254)));
        Assert.Equal(ok, TpmProvisioning.Attestation.KeylimeValidators.IsValidContactHost(ip));
    }

    [Theory]
    [InlineData("d432fbb3-d2f1-4a97-9ef7-75bd81c00000", true)]
    [InlineData("agent_7.lab", true)]
    [InlineData("../../x", false)]
    [InlineData("..", false)]
    [InlineData(".", false)]
    [InlineData("a/b", false)]
    [InlineData("a\u0000", false)]
    [InlineData("", false)]
    public void AgentIdsAreCheckedOneWayEverywhere(string id, bool ok)
    {
        Assert.Equal(ok, TpmProvisioning.Attestation.KeylimeValidators.IsValidAgentId(id));
        Assert.Equal(ok, VerifierService.IsValidAgentId(id));
    }

    [Fact]
    public void MangledQuoteAnswersAreJudgedAsFailuresNeverThrown()
    {
        using var key = SoftwareAttestationKey.CreateEccP256();
        using var ak = PreparedAk.FromTpm2B(key.Public.ToTpm2B());
        var config = new VerifierAgentConfig { Ip = "127.0.0.1", Port = 9002, AkTpm = Convert.ToBase64String(key.Public.ToTpm2B()), AcceptTpmHashAlgs = ["sha256"], AcceptTpmSigningAlgs = ["ecdsa"], AcceptTpmEncryptionAlgs = ["ecc"] };
        var selection = PcrSelection.FromBitmask(TpmAlgId.Sha256, 1u << 16);
        var values = new PcrValues().Set(TpmAlgId.Sha256, 16, new byte[32]);
        var (attest, sig) = key.Quote(selection, values, "abc"u8.ToArray(), new TpmsClockInfo(5, 1, 0, true));
        string good = KeylimeQuote.Format(attest, sig, Tpm2ToolsPcrBlob.Write(selection, values));
        var rnd = new Random(7);
        for (int i = 0; i < 2000; i++)
        {
            string quote = (i % 4) switch
            {
                0 => good[..rnd.Next(good.Length)],
                1 => MutateText(good, rnd),
                2 => Convert.ToBase64String(RandomBytes(rnd)),
                _ => string.Join(':', Enumerable.Range(0, rnd.Next(1, 5)).Select(_ => Convert.ToBase64String(RandomBytes(rnd)))),
            };
            var response = new QuoteResponse { Quote = quote, HashAlg = "sha256", EncAlg = "ecc", SignAlg = "ecdsa", Pubkey = i % 2 == 0 ? "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n" : null };
            var verdict = QuoteJudge.Judge(config, new VerifierAgentProgress(), ak, TpmPolicy.Empty, "abc", 1u << 16, response, MeasurementChecks.Default);
            Assert.False(verdict.Passed);
        }
        Assert.False(QuoteJudge.Judge(config, new VerifierAgentProgress(), ak, TpmPolicy.Empty, "abc", 1u << 16, null).Passed);
    }

    private static byte[] RandomBytes(Random rnd)
    {
        var b = new byte[rnd.Next(0, 400)];
        rnd.NextBytes(b);
        return b;
    }

    private static byte[] Mutate(byte[] seed, Random rnd)
    {
        var b = (byte[])seed.Clone();
        for (int k = rnd.Next(1, 6); k > 0; k--) b[rnd.Next(b.Length)] = (byte)rnd.Next(256);
        return b;
    }

    private static string MutateText(string s, Random rnd)
    {
        var c = s.ToCharArray();
        for (int k = rnd.Next(1, 4); k > 0; k--) c[rnd.Next(c.Length)] = "AZaz09+/:=!"[rnd.Next(11)];
        return new string(c);
    }
}
