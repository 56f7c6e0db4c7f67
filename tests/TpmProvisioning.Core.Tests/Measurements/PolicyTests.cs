using System.Security.Cryptography;
using System.Text.Json.Nodes;
using TpmProvisioning.Attestation.Measurements;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Measurements;

public class RuntimePolicyTests
{
    private const string KeylimeEmpty = """{"meta": {"version": 1, "generator": 1}, "release": 0, "digests": {}, "excludes": [], "keyrings": {}, "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null}, "ima-buf": {}, "verification-keys": ""}""";

    [Fact]
    public void Parse_KeylimeShapes_AndRoundTrip()
    {
        var empty = RuntimePolicy.Parse(KeylimeEmpty);
        Assert.Equal(1, empty.Generator);
        Assert.Empty(empty.Digests);

        var json = """
        {"meta":{"version":1,"generator":2,"timestamp":"2024-01-01 00:00:00"},"release":3,
         "digests":{"/usr/bin/ls":["ABCDEF0123456789abcdef0123456789abcdef01","0x00112233445566778899aabbccddeeff00112233"],"boot_aggregate":["0000000000000000000000000000000000000000"]},
         "excludes":["/tmp/.*","(?P<var>/var/log)/.*"],"keyrings":{".ima":["aa"]},
         "ima":{"ignored_keyrings":["*"],"log_hash_alg":"sha256","dm_policy":{"version":1,"match_on":"name","rules":{}}},
         "ima-buf":{"kexec-cmdline":["bb"]},"verification-keys":"","rules":"ignored"}
        """;
        var p = RuntimePolicy.Parse(json);
        Assert.Equal(["abcdef0123456789abcdef0123456789abcdef01", "00112233445566778899aabbccddeeff00112233"], p.Digests["/usr/bin/ls"]);
        Assert.True(p.IsExcluded("/var/log/messages"));
        Assert.False(p.IsExcluded("/usr/var/log/x"));
        Assert.Equal("sha256", p.LogHashAlgorithm);
        Assert.NotNull(p.DmPolicy);
        Assert.Equal(RuntimePolicyDecision.Allowed, p.Check("/usr/bin/ls", Convert.FromHexString("abcdef0123456789abcdef0123456789abcdef01")));

        var again = RuntimePolicy.Parse(p.ToJson());
        Assert.Equal(p.ToJson(), again.ToJson());
        var node = JsonNode.Parse(p.ToJson())!.AsObject();
        Assert.Equal(["meta", "release", "digests", "excludes", "keyrings", "ima", "ima-buf", "verification-keys"], node.Select(kv => kv.Key));
    }

    [Theory]
    [InlineData("not json", "not valid JSON")]
    [InlineData("[]", "not a JSON object")]
    [InlineData("{}", "'meta'")]
    [InlineData("""{"meta":{"version":2}}""", "not supported")]
    [InlineData("""{"meta":{"version":"1"}}""", "meta.version")]
    [InlineData("""{"meta":{"version":1},"digests":{"/a":["xyz"]}}""", "not hex")]
    [InlineData("""{"meta":{"version":1},"digests":{"/a":["abc"]}}""", "not hex")]
    [InlineData("""{"meta":{"version":1},"digests":{"/a":"aa"}}""", "not an array")]
    [InlineData("""{"meta":{"version":1},"digests":[]}""", "not an object")]
    [InlineData("""{"meta":{"version":1},"excludes":["(unclosed"]}""", "not a valid regular expression")]
    [InlineData("""{"meta":{"version":1},"excludes":"x"}""", "excludes")]
    [InlineData("""{"meta":{"version":1},"ima":{"log_hash_alg":"md5"}}""", "log_hash_alg")]
    [InlineData("""{"meta":{"version":1},"verification-keys":"{\"pubkeys\":[\"!!\"]}"}""", "verification-keys")]
    [InlineData("""{"meta":{"version":1},"release":"x"}""", "release")]
    public void Parse_BadInput_IsFormatExceptionNamingTheProblem(string json, string expected)
    {
        var e = Assert.ThrowsAny<FormatException>(() => RuntimePolicy.Parse(json));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Fuzz_MutatedPolicies_OnlyFormatExceptions()
    {
        var json = RuntimePolicy.FromImaList(ImaListBuilder.System(20).Text(), ["/tmp/.*"]).ToJson();
        var rng = new Random(7);
        for (int i = 0; i < 300; i++)
        {
            var chars = json.ToCharArray();
            for (int f = rng.Next(1, 4); f > 0; f--) chars[rng.Next(chars.Length)] = (char)rng.Next(32, 127);
            var text = i % 3 == 0 ? json[..rng.Next(json.Length)] : new string(chars);
            try { _ = RuntimePolicy.Parse(text).ToJson(); }
            catch (FormatException) { }
        }
    }

    [Fact]
    public void FromImaList_TakesFilesBuffersAndBootAggregate_SkipsExcludedAndViolations()
    {
        var list = ImaListBuilder.System(3).Ng("/tmp/x", new byte[32]).Violation("/var/v").Buf("kexec-cmdline", "ro"u8.ToArray());
        var p = RuntimePolicy.FromImaList(list.Text(), ["/tmp/"]);
        Assert.Contains("boot_aggregate", p.Digests.Keys);
        Assert.DoesNotContain("/tmp/x", p.Digests.Keys);
        Assert.DoesNotContain("/var/v", p.Digests.Keys);
        Assert.Contains("kexec-cmdline", p.ImaBuf.Keys);
        Assert.Equal(2, p.Generator);
        Assert.Contains("entry 1", Assert.ThrowsAny<FormatException>(() => RuntimePolicy.FromImaList("10 aa ima-ng\n" + "bad line\n")).Message);
    }

    [Fact]
    public void FromDirectory_HashesEveryFile_WithPrefixAndExcludes()
    {
        var root = Directory.CreateTempSubdirectory("tpmprov-policy-");
        try
        {
            Directory.CreateDirectory(Path.Combine(root.FullName, "usr", "bin"));
            Directory.CreateDirectory(Path.Combine(root.FullName, "var", "log"));
            File.WriteAllText(Path.Combine(root.FullName, "usr", "bin", "tool"), "tool");
            File.WriteAllText(Path.Combine(root.FullName, "var", "log", "syslog"), "log");
            File.WriteAllBytes(Path.Combine(root.FullName, "empty"), []);
            File.CreateSymbolicLink(Path.Combine(root.FullName, "usr", "bin", "link"), Path.Combine(root.FullName, "usr", "bin", "tool"));

            var p = RuntimePolicy.FromDirectory(root.FullName, ["/var/log/.*"]);
            Assert.Equal(["/empty", "/usr/bin/tool"], p.Digests.Keys.Order());
            Assert.Equal(Convert.ToHexStringLower(SHA256.HashData("tool"u8)), p.Digests["/usr/bin/tool"].Single());
            Assert.Equal(Convert.ToHexStringLower(SHA256.HashData([])), p.Digests["/empty"].Single());

            var q = RuntimePolicy.FromDirectory(root.FullName, null, "sha1", "/opt/app/");
            Assert.Equal(Convert.ToHexStringLower(SHA1.HashData("tool"u8)), q.Digests["/opt/app/usr/bin/tool"].Single());
            Assert.Contains("/opt/app/var/log/syslog", q.Digests.Keys);

            // A list measured from that tree passes against the policy.
            var list = new ImaListBuilder().Ng("/usr/bin/tool", SHA256.HashData("tool"u8)).Ng("/var/log/syslog", new byte[32]);
            var r = ImaVerifier.Verify(new ImaVerifyInput { MeasurementList = list.Text(), PcrBank = TpmAlgId.Sha256, QuotedPcr10 = list.Pcr(HashAlgorithmName.SHA256), Policy = p });
            Assert.True(r.Passed, r.ToString());

            Assert.Throws<ArgumentException>(() => RuntimePolicy.FromDirectory(root.FullName, null, "md5"));
            Assert.Throws<DirectoryNotFoundException>(() => RuntimePolicy.FromDirectory(Path.Combine(root.FullName, "none")));
        }
        finally { root.Delete(true); }
    }

    [Fact]
    public void SignatureKeys_BadInput_IsFormatException()
    {
        Assert.ThrowsAny<FormatException>(() => ImaSignatureKeys.FromPem("no pem here"));
        Assert.ThrowsAny<FormatException>(() => ImaSignatureKeys.FromDer([1, 2, 3]));
        Assert.ThrowsAny<FormatException>(() => ImaSignatureKeys.FromKeylimeKeyring("{\"pubkeys\":[\"AAAA\"]}"));
        var keys = ImaSignatureKeys.FromPem(RSA.Create(2048).ExportRSAPublicKeyPem());
        Assert.Equal(1, keys.Count);
        Assert.False(keys.Verify([3, 2], new byte[32], "sha256", out var why));
        Assert.Contains("header", why);
        Assert.False(keys.Verify([3, 2, 4, 0, 0, 0, 0, 0, 9, 1], new byte[32], "sha256", out why));
        Assert.Contains("size", why);
        Assert.False(keys.Verify([3, 2, 2, 0, 0, 0, 0, 0, 1, 1], new byte[32], "sha256", out why));
        Assert.Contains("sha1", why);
    }
}

public class MeasuredBootTests
{
    private const string Log = "keylime-binary_bios_measurements-secureboot";

    private static Dictionary<int, byte[]> Quote(byte[] log, TpmAlgId bank) =>
        UefiEventLog.Parse(log).Replay(bank).Select((v, i) => (v, i)).Where(x => x.i != 10).ToDictionary(x => x.i, x => x.v);

    private static string Ids(MeasuredBootResult r) => string.Join(",", r.Failures.Select(f => f.EventId).Distinct());

    [Theory]
    [InlineData("keylime-binary_bios_measurements-secureboot")]
    [InlineData("keylime-binary_bios_measurements")]
    [InlineData("goattest-sb_cert_eventlog")]
    [InlineData("tpm2tools-event-arch-linux.bin")]
    public void GoodLog_AgainstItsQuote_AndItsOwnRefstate_Passes(string name)
    {
        var log = TestLogs.Read(name);
        var bank = UefiEventLog.Parse(log).Algorithms.Keys.Last(TpmHash.IsSupported);
        var quote = Quote(log, bank);
        Assert.True(MeasuredBootVerifier.Verify(log, bank, quote, null).Passed);
        var refstate = MeasuredBootPolicy.FromEventLog(log, bank);
        var r = MeasuredBootVerifier.Verify(log, bank, quote, MeasuredBootPolicy.Parse(refstate.ToJson()));
        Assert.True(r.Passed, r.ToString());
        Assert.NotNull(r.ReplayedPcrs);
    }

    [Fact]
    public void QuotedPcrDiffersFromTheLog_FailsNamingThePcr()
    {
        var log = TestLogs.Read(Log);
        var quote = Quote(log, TpmAlgId.Sha256);
        quote[4] = SHA256.HashData(quote[4]);
        var r = MeasuredBootVerifier.Verify(log, TpmAlgId.Sha256, quote, null);
        var f = Assert.Single(r.Failures);
        Assert.Equal("measured_boot.invalid_pcr_4", f.EventId);
        Assert.Equal(4, f.Pcr);

        quote.Remove(4);
        Assert.True(MeasuredBootVerifier.Verify(log, TpmAlgId.Sha256, quote, null).Passed); // only quoted PCRs are compared
        Assert.Equal("measured_boot.invalid_pcr_4", Ids(MeasuredBootVerifier.Verify(log, TpmAlgId.Sha256, quote, new MeasuredBootPolicy())));
    }

    [Fact]
    public void RefstateOfAnotherMachine_Fails_OnPcrsEventsAndCertificates()
    {
        var good = TestLogs.Read(Log);
        var other = TestLogs.Read("keylime-binary_bios_measurements");
        var refstate = MeasuredBootPolicy.FromEventLog(good, TpmAlgId.Sha256);
        Assert.True(refstate.RequireSecureBoot);
        Assert.NotNull(refstate.Db);
        var r = MeasuredBootVerifier.Verify(other, TpmAlgId.Sha256, Quote(other, TpmAlgId.Sha256), refstate);
        Assert.False(r.Passed);
        Assert.Contains(r.Failures, f => f.EventId.StartsWith(MeasurementEventIds.BootPolicyPcrPrefix));
    }

    [Fact]
    public void SecureBootRequired_OnALogWithoutIt_Fails()
    {
        var log = TestLogs.Read("goattest-ubuntu_2104_shielded_vm_no_secure_boot_eventlog");
        var bank = TpmAlgId.Sha256;
        var r = MeasuredBootVerifier.Verify(log, bank, Quote(log, bank), MeasuredBootPolicy.Parse("""{"secure_boot": true}"""));
        Assert.Equal(MeasurementEventIds.BootPolicySecureBoot, Ids(r));
    }

    [Fact]
    public void CertificateRules_DbNotAllowed_DbxEntryMissing()
    {
        var log = TestLogs.Read(Log);
        var quote = Quote(log, TpmAlgId.Sha256);
        var refstate = MeasuredBootPolicy.FromEventLog(log, TpmAlgId.Sha256);
        refstate.Db = refstate.Db!.Skip(1).ToList();
        refstate.Dbx = [.. refstate.Dbx ?? [], new string('a', 64)];
        var r = MeasuredBootVerifier.Verify(log, TpmAlgId.Sha256, quote, refstate);
        Assert.Contains(r.Failures, f => f.EventId == "measured_boot.policy.db");
        Assert.Contains(r.Failures, f => f.EventId == MeasurementEventIds.BootPolicyDbx && f.Reason.Contains(new string('a', 64)));
    }

    [Fact]
    public void EventRules_AndMinimalPcrForm()
    {
        var log = TestLogs.Read(Log);
        var quote = Quote(log, TpmAlgId.Sha256);
        var minimal = MeasuredBootPolicy.Parse("{\"pcrs\": {\"0\": \"0x" + Convert.ToHexString(quote[0]) + "\", \"pcr7\": [\"" + Convert.ToHexStringLower(quote[7]) + "\"]}}");
        Assert.True(MeasuredBootVerifier.Verify(log, TpmAlgId.Sha256, quote, minimal).Passed);
        var wrong = MeasuredBootPolicy.Parse("{\"pcrs\": {\"7\": \"" + new string('0', 64) + "\"}}");
        Assert.Equal("measured_boot.policy.pcr_7", Ids(MeasuredBootVerifier.Verify(log, TpmAlgId.Sha256, quote, wrong)));

        var rule = MeasuredBootPolicy.Parse($$"""{"hash_alg":"sha256","events":[{"pcr":4,"type":"EV_EFI_BOOT_SERVICES_APPLICATION","digests":["{{new string('1', 64)}}"]}]}""");
        var r = MeasuredBootVerifier.Verify(log, TpmAlgId.Sha256, quote, rule);
        Assert.Equal(MeasurementEventIds.BootPolicyEventDigest, Ids(r));
        Assert.All(r.Failures, f => Assert.Equal(4, f.Pcr));

        var sha1Policy = MeasuredBootPolicy.Parse("""{"hash_alg":"sha1","pcrs":{}}""");
        Assert.Equal(MeasurementEventIds.BootPolicyBank, Ids(MeasuredBootVerifier.Verify(log, TpmAlgId.Sha256, quote, sha1Policy)));
    }

    [Theory]
    [InlineData("nope")]
    [InlineData("[]")]
    [InlineData("""{"version":2}""")]
    [InlineData("""{"pcrs":{"24":"00"}}""")]
    [InlineData("""{"pcrs":{"x":"00"}}""")]
    [InlineData("""{"pcrs":{"0":"0g"}}""")]
    [InlineData("""{"hash_alg":"sha256","pcrs":{"0":"00"}}""")]
    [InlineData("""{"events":[{"pcr":4,"type":"EV_BOGUS","digests":[]}]}""")]
    [InlineData("""{"events":[{"type":"EV_SEPARATOR","digests":[]}]}""")]
    [InlineData("""{"secure_boot":"yes"}""")]
    [InlineData("""{"db":["abcd"]}""")]
    public void Refstate_BadInput_IsFormatException(string json) =>
        Assert.ThrowsAny<FormatException>(() => MeasuredBootPolicy.Parse(json));

    [Fact]
    public void BadLogOrMissingBank_AreFailuresNotExceptions()
    {
        var r = MeasuredBootVerifier.Verify([1, 2, 3], TpmAlgId.Sha256, new Dictionary<int, byte[]>(), null);
        Assert.Equal(MeasurementEventIds.BootLogInvalid, Ids(r));
        var sha1Only = TestLogs.Read("tpm2tools-event-uefi-sha1-log.bin");
        Assert.Equal(MeasurementEventIds.BootLogBankMissing, Ids(MeasuredBootVerifier.Verify(sha1Only, TpmAlgId.Sha256, new Dictionary<int, byte[]>(), null)));
        Assert.True(MeasuredBootVerifier.Verify(sha1Only, TpmAlgId.Sha1, Quote(sha1Only, TpmAlgId.Sha1), null).Passed);
    }
}
