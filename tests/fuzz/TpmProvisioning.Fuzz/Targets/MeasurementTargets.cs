using System.Security.Cryptography;
using System.Text;
using TpmProvisioning.Attestation.Measurements;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Fuzz;

/// <summary>
/// The IMA ASCII measurement list as the verifier receives it from an agent: parsed, replayed into PCR 10, template hashes
/// recomputed, checked against a runtime policy, ima-sig signatures verified and keyring keys learned; then the list is
/// continued from the returned state, as the next quote does. <see cref="ImaVerifier.Verify"/> never throws for list text.
/// </summary>
public sealed class ImaListTarget : FuzzTarget
{
    private static readonly Lazy<(RuntimePolicy Policy, ImaSignatureKeys Keys, Dictionary<int, byte[]> BootPcrs)> Setup = new(() =>
    {
        using var key = ECDsa.Create();
        key.ImportFromPem(File.ReadAllText(FuzzData.File("ima-signing-key.pem")));
        var keys = ImaSignatureKeys.FromDer(key.ExportSubjectPublicKeyInfo());
        var policy = RuntimePolicy.Parse(File.ReadAllText(FuzzData.File("ima-runtime-policy.json")));
        var boot = new Dictionary<int, byte[]>();
        for (int i = 0; i < 10; i++) boot[i] = new byte[32];
        return (policy, keys, boot);
    });

    public override string Name => "ima-list";
    public override string Description => "IMA ASCII list: parse, PCR 10 replay, template hashes, runtime policy, ima-sig, keyrings";

    public override void Run(byte[] data)
    {
        var (policy, keys, boot) = Setup.Value;
        var text = Encoding.UTF8.GetString(data);
        var parsed = ImaMeasurementList.Parse(text);
        foreach (var e in parsed.Entries) { _ = e.DigestHex; _ = e.PcrExtendValue(TpmAlgId.Sha1); }

        var first = ImaVerifier.Verify(new ImaVerifyInput { MeasurementList = text, PcrBank = TpmAlgId.Sha256, Policy = policy, Keys = keys, BootPcrs = boot });
        Verbose.Say($"ima: {parsed.Entries.Count} entries, {parsed.Errors.Count} errors; {first}");
        var state = ImaVerifierState.FromJson(first.NewState.ToJson());
        // The next quote: the same list again from where the state says, and a quoted PCR 10 the replay must find.
        var next = ImaVerifier.Verify(new ImaVerifyInput
        {
            MeasurementList = text, FirstEntry = state.NextEntry, PcrBank = TpmAlgId.Sha256, PreviousState = state,
            QuotedPcr10 = state.Aggregate, Policy = policy, BootPcrs = boot, MaxFailures = 3,
        });
        _ = next.ToString();
        _ = ImaVerifier.Verify(new ImaVerifyInput { MeasurementList = text, PcrBank = TpmAlgId.Sha1, FailOnViolations = true, QuotedPcr10 = new byte[20] });
    }

    public override IEnumerable<(string, byte[])> Seeds()
    {
        using var key = ECDsa.Create();
        key.ImportFromPem(File.ReadAllText(FuzzData.File("ima-signing-key.pem")));
        uint keyId = ImaSignatureKeys.KeyIdOf(key.ExportSubjectPublicKeyInfo());
        var fileDigest = SHA256.HashData("file contents"u8);
        var sig = ImaSignatureKeys.BuildSignatureBlob("sha256", keyId, key.SignHash(fileDigest, DSASignatureFormat.Rfc3279DerSequence));
        string[] lines =
        [
            $"10 {new string('0', 40)} ima-ng sha256:{new string('0', 64)} boot_aggregate",
            $"10 {new string('0', 40)} ima-ng sha256:{Convert.ToHexStringLower(SHA256.HashData("ls"u8))} /usr/bin/ls",
            $"10 {new string('0', 40)} ima-sig sha256:{Convert.ToHexStringLower(fileDigest)} /usr/bin/signed {Convert.ToHexStringLower(sig)}",
            $"10 {new string('0', 40)} ima-sig sha256:{Convert.ToHexStringLower(fileDigest)} /usr/bin/unsigned",
            $"10 {new string('0', 40)} ima-buf sha256:{Convert.ToHexStringLower(SHA256.HashData(key.ExportSubjectPublicKeyInfo()))} .ima {Convert.ToHexStringLower(key.ExportSubjectPublicKeyInfo())}",
            $"10 {new string('0', 40)} ima-buf sha256:{Convert.ToHexStringLower(SHA256.HashData("cmd"u8))} kexec-cmdline 636d64",
            $"10 {new string('0', 40)} ima {Convert.ToHexStringLower(SHA1.HashData("old"u8))} /old/template",
            $"10 {new string('0', 40)} ima-ng sha1:{Convert.ToHexStringLower(SHA1.HashData("tmp"u8))} /tmp/excluded",
        ];
        // The template hashes as the kernel computes them (the engine's own recomputation, checked by the tests against an independent one).
        var fixedLines = lines.Select(l =>
        {
            var e = ImaMeasurementList.Parse(l).Entries.Single();
            return "10 " + Convert.ToHexStringLower(SHA1.HashData(e.TemplateData)) + l[(3 + 40)..];
        }).ToList();
        fixedLines.Add($"10 {new string('0', 40)} ima-ng sha256:{new string('f', 64)} /violation");
        yield return ("list", Encoding.UTF8.GetBytes(string.Join('\n', fixedLines) + "\n"));
        yield return ("one-entry", Encoding.UTF8.GetBytes(fixedLines[1] + "\n"));
    }
}

/// <summary>
/// The UEFI event log as the verifier receives it: parsed, replayed in each bank, a refstate derived from it, and checked
/// against the replayed PCRs with and without that refstate.
/// </summary>
public sealed class UefiEventLogTarget : FuzzTarget
{
    public override string Name => "uefi-eventlog";
    public override string Description => "TCG PC Client event log: parse, replay, refstate from log, MeasuredBootVerifier";

    public override void Run(byte[] data)
    {
        if (!UefiEventLog.TryParse(data, out var log, out _))
        {
            // The verifier still judges a log that does not parse; that must be a failure, not an exception.
            _ = MeasuredBootVerifier.Verify(data, TpmAlgId.Sha256, new Dictionary<int, byte[]>(), null);
            return;
        }
        foreach (var e in log!.Events) { _ = e.EventTypeName; }
        foreach (var bank in log.Algorithms.Keys.Where(TpmHash.IsSupported).ToList())
        {
            var pcrs = log.Replay(bank);
            var quoted = new Dictionary<int, byte[]>();
            for (int i = 0; i < pcrs.Count; i++) quoted[i] = pcrs[i];
            MeasuredBootPolicy? refstate = null;
            try { refstate = MeasuredBootPolicy.Parse(MeasuredBootPolicy.FromEventLog(data, bank).ToJson()); }
            catch (FormatException) { }
            catch (ArgumentException) { }
            var r = MeasuredBootVerifier.Verify(data, bank, quoted, refstate);
            Verbose.Say($"uefi: {bank} {log.Events.Count} events, refstate {(refstate is null ? "none" : "made")}: {r}");
            if (refstate is not null && !r.Passed) throw new InvalidOperationException($"The log does not pass the refstate made from itself: {r}");
            _ = MeasuredBootVerifier.Verify(data, bank, new Dictionary<int, byte[]> { [0] = new byte[TpmHash.DigestSize(bank)] }, null).ToString();
        }
    }

    public override IEnumerable<(string, byte[])> Seeds()
    {
        // Small real logs (the larger ones in shared test data are kept out: afl wants small seeds).
        foreach (var name in (string[])["tpm2tools-event-sd-boot-fedora37.bin", "tpm2tools-event-uefi-sha1-log.bin"])
            yield return (name, File.ReadAllBytes(FuzzData.File(name)));
    }
}

/// <summary>Files under tests/fuzz/data, copied beside the harness.</summary>
internal static class FuzzData
{
    public static string File(string name) => Path.Combine(AppContext.BaseDirectory, "data", name);
}
