using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;
using TpmProvisioning.Attestation.Measurements;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Keylime;

/// <summary>
/// The verifier's IMA and measured-boot checks against a real agent on swtpm: the swtpm's PCR 10 (and 0-7) are extended with
/// the measurements of an IMA list (and of a real UEFI event log) before the agent starts, so the quotes agree with the lists
/// the agent serves; the runtime policy and refstate then decide.
/// </summary>
public sealed class VerifierMeasurementTests(SwtpmFixture tpm) : IClassFixture<SwtpmFixture>
{
    private static string Line(string path, byte[] fileDigest) =>
        $"10 {new string('0', 40)} ima-ng sha256:{Convert.ToHexStringLower(fileDigest)} {path}";

    /// <summary>An ima-ng list with correct template hashes (the kernel's SHA-1 column), and the values it extends into a sha256 PCR 10.</summary>
    private static (string Text, List<byte[]> Extends) ImaList(params (string Path, byte[] Digest)[] files)
    {
        var draft = string.Join("\n", files.Select(f => Line(f.Path, f.Digest))) + "\n";
        var parsed = ImaMeasurementList.Parse(draft);
        Assert.DoesNotContain(parsed.Errors, e => !e.Message.Contains("template hash", StringComparison.OrdinalIgnoreCase));
        var sb = new StringBuilder();
        var extends = new List<byte[]>();
        foreach (var e in parsed.Entries)
            sb.Append($"10 {Convert.ToHexStringLower(e.ComputedTemplateHash)} ima-ng {e.DigestAlgorithm}:{e.DigestHex} {e.Path}\n");
        var text = sb.ToString();
        // Parsed again with the real template hashes (a zero hash would mark a violation entry, which extends all-ones).
        var final = ImaMeasurementList.Parse(text).Entries;
        Assert.True(final.All(x => x.TemplateHashMatches && !x.IsViolation));
        extends.AddRange(final.Select(x => x.PcrExtendValue(TpmAlgId.Sha256)));
        return (text, extends);
    }

    [Fact]
    public async Task AnImaEntryOutsideTheRuntimePolicyFailsNamingItsPathWhileExcludedAndListedFilesPass()
    {
        tpm.FlushTransients();
        var (text, extends) = ImaList(
            ("boot_aggregate", SHA256.HashData("boot"u8)),
            ("/usr/bin/bash", SHA256.HashData("bash"u8)),
            ("/usr/lib/libc.so.6", SHA256.HashData("libc"u8)),
            ("/tmp/evil", SHA256.HashData("evil"u8)));
        using (var dev = tpm.Open())
            foreach (var v in extends) dev.PcrExtend(AgentServicePcr.Ima, (TpmAlgId.Sha256, v));
        var data = Directory.CreateTempSubdirectory("tpmprov-ima-").FullName;
        File.WriteAllText(Path.Combine(data, "ima.txt"), text);
        await using var bed = await VerifierTestBed.StartAsync(tpm, s => s.ImaMeasurementListPath = Path.Combine(data, "ima.txt"));
        using var client = bed.Tenant();

        // The full list as the policy: attested, count rising.
        var all = RuntimePolicy.FromImaList(text);
        var body = bed.Body();
        body["runtime_policy"] = Convert.ToBase64String(Encoding.UTF8.GetBytes(all.ToJson()));
        await client.AddAsync(bed.AgentId, body.ToJsonString());
        var s = await VerifierTestBed.WaitForAsync(client, bed.AgentId, x => x.AttestationCount >= 3 || x.OperationalState >= 7);
        Assert.True(s.AttestationCount >= 3, $"{s.OperationalState} {s.LastEventId}: {string.Join("; ", s.Failures)}");
        Assert.Equal(1, s.HasRuntimePolicy);
        await client.DeleteAsync(bed.AgentId);

        // Without /tmp/evil in the policy: INVALID_QUOTE naming the path.
        var missing = RuntimePolicy.FromImaList(string.Join("\n", text.Split('\n').Where(l => !l.EndsWith("/tmp/evil", StringComparison.Ordinal))));
        body["runtime_policy"] = Convert.ToBase64String(Encoding.UTF8.GetBytes(missing.ToJson()));
        await client.AddAsync(bed.AgentId, body.ToJsonString());
        s = await VerifierTestBed.WaitForAsync(client, bed.AgentId, x => x.OperationalState >= 7);
        Assert.Equal((int)OperationalState.InvalidQuote, s.OperationalState);
        Assert.Equal(MeasurementEventIds.ImaNotInAllowlist, s.LastEventId);
        Assert.Contains(s.Failures, f => f.Path == "/tmp/evil");
        await client.DeleteAsync(bed.AgentId);

        // A changed digest for a listed file: the digest-not-allowed failure, the path named.
        var wrong = RuntimePolicy.FromImaList(text);
        wrong.AddDigest("/usr/bin/bash", Convert.ToHexStringLower(SHA256.HashData("other"u8)));
        var wrongJson = wrong.ToJson().Replace(Convert.ToHexStringLower(SHA256.HashData("bash"u8)), Convert.ToHexStringLower(SHA256.HashData("old"u8)), StringComparison.Ordinal);
        body["runtime_policy"] = Convert.ToBase64String(Encoding.UTF8.GetBytes(wrongJson));
        await client.AddAsync(bed.AgentId, body.ToJsonString());
        s = await VerifierTestBed.WaitForAsync(client, bed.AgentId, x => x.OperationalState >= 7);
        Assert.Equal((int)OperationalState.InvalidQuote, s.OperationalState);
        Assert.Contains(s.Failures, f => f.Path == "/usr/bin/bash" && f.EventId == MeasurementEventIds.ImaDigestNotAllowed);
        await client.DeleteAsync(bed.AgentId);

        // /tmp excluded: attested again.
        missing.AddExcludes(["/tmp/.*"]);
        body["runtime_policy"] = Convert.ToBase64String(Encoding.UTF8.GetBytes(missing.ToJson()));
        await client.AddAsync(bed.AgentId, body.ToJsonString());
        s = await VerifierTestBed.WaitForAsync(client, bed.AgentId, x => x.AttestationCount >= 2 || x.OperationalState >= 7);
        Assert.True(s.AttestationCount >= 2, $"{s.OperationalState} {s.LastEventId}: {string.Join("; ", s.Failures)}");

        // A malformed runtime policy is a 400 that stores nothing.
        body["runtime_policy"] = Convert.ToBase64String("{\"digests\": 5}"u8);
        var ex = await Assert.ThrowsAsync<Attestation.KeylimeRequestException>(() => client.AddAsync(Guid.NewGuid().ToString(), body.ToJsonString()));
        Assert.Equal(400, ex.StatusCode);
        Assert.Single(await client.ListAsync());
        try { Directory.Delete(data, true); } catch (IOException) { }
    }

    [Fact]
    public async Task MeasuredBootReplaysARealEventLogIntoTheQuotedPcrsAndTheRefstateDecides()
    {
        tpm.FlushTransients();
        // A real crypto-agile log with SHA-256 digests whose PCR 0 starts from zero (no StartupLocality event).
        var (name, bytes, log) = SampleLogs().Select(n => (n, File.ReadAllBytes(Path.Combine(LogFolder(), n))))
            .Select(x => (x.n, x.Item2, UefiEventLog.TryParse(x.Item2, out var l, out _) ? l : null))
            .First(x => x.Item3 is { IsCryptoAgile: true, StartupLocality: 0 } l && l.Algorithms.ContainsKey(TpmAlgId.Sha256)
                && l.Extending.Any(e => e.Pcr == 7) && l.Extending.All(e => e.Pcr is >= 0 and <= 15));
        using (var dev = tpm.Open())
            foreach (var e in log!.Extending.Where(e => e.Pcr <= 7))
                dev.PcrExtend(e.Pcr, (TpmAlgId.Sha256, e.Digest(TpmAlgId.Sha256)!));
        var data = Directory.CreateTempSubdirectory("tpmprov-mb-").FullName;
        File.WriteAllBytes(Path.Combine(data, "bios.bin"), bytes);
        await using var bed = await VerifierTestBed.StartAsync(tpm, s => s.EventLogPath = Path.Combine(data, "bios.bin"));
        using var client = bed.Tenant();

        var body = bed.Body();
        body["mb_refstate"] = MeasuredBootPolicy.FromEventLog(bytes, TpmAlgId.Sha256).ToJson();
        await client.AddAsync(bed.AgentId, body.ToJsonString());
        var s = await VerifierTestBed.WaitForAsync(client, bed.AgentId, x => x.AttestationCount >= 2 || x.OperationalState >= 7);
        Assert.True(s.AttestationCount >= 2, $"{name}: {s.OperationalState} {s.LastEventId}: {string.Join("; ", s.Failures)}");
        Assert.Equal(1, s.HasMbRefstate);
        await client.DeleteAsync(bed.AgentId);

        // A refstate that expects another PCR 7 (another Secure Boot configuration): INVALID_QUOTE naming PCR 7.
        var other = MeasuredBootPolicy.FromEventLog(bytes, TpmAlgId.Sha256);
        other.Pcrs[7] = [new string('a', 64)];
        body["mb_refstate"] = other.ToJson();
        await client.AddAsync(bed.AgentId, body.ToJsonString());
        s = await VerifierTestBed.WaitForAsync(client, bed.AgentId, x => x.OperationalState >= 7);
        Assert.Equal((int)OperationalState.InvalidQuote, s.OperationalState);
        Assert.Contains(s.Failures, f => f.Pcr == 7);
        Assert.StartsWith("measured_boot.", s.LastEventId);
        try { Directory.Delete(data, true); } catch (IOException) { }
    }

    private static string LogFolder([CallerFilePath] string path = "") =>
        Path.Combine(Path.GetDirectoryName(path)!, "..", "..", "TpmProvisioning.Core.Tests", "Measurements", "TestData");

    private static IEnumerable<string> SampleLogs() =>
        Directory.EnumerateFiles(LogFolder()).Select(Path.GetFileName).Where(n => !n!.EndsWith(".yaml") && !n.EndsWith(".md")).Order()!;
}

internal static class AgentServicePcr
{
    public const int Ima = Attestation.AgentService.ImaPcr;
}
