using System.Text.Json;
using System.Text.Json.Nodes;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Attestation.Measurements;

/// <summary>
/// Where incremental IMA verification of one agent stands: the number of the next list entry to ask the agent for and
/// the PCR 10 aggregate (in <see cref="Bank"/>) of all entries before it, plus keys learned from keyring measurements.
/// Immutable; store it with <see cref="ToJson"/> and read it back with <see cref="FromJson"/>.
/// </summary>
public sealed class ImaVerifierState
{
    /// <summary>Creates a state.</summary>
    public ImaVerifierState(int nextEntry, TpmAlgId bank, byte[] aggregate, IReadOnlyList<string>? learnedKeys = null)
    {
        if (nextEntry < 0) throw new ArgumentOutOfRangeException(nameof(nextEntry));
        if (!TpmHash.IsSupported(bank)) throw new ArgumentException($"PCR bank 0x{(ushort)bank:X4} is not supported.", nameof(bank));
        ArgumentNullException.ThrowIfNull(aggregate);
        if (aggregate.Length != TpmHash.DigestSize(bank)) throw new ArgumentException("Aggregate size does not fit the bank.", nameof(aggregate));
        NextEntry = nextEntry;
        Bank = bank;
        Aggregate = aggregate;
        LearnedKeys = learnedKeys ?? [];
    }

    /// <summary>The state before the first quote: entry 0, aggregate all zeros.</summary>
    public static ImaVerifierState Initial(TpmAlgId bank) => new(0, bank, new byte[TpmHash.DigestSize(bank)]);

    /// <summary>The number of the next entry to request (the agent's <c>nth_entry</c>).</summary>
    public int NextEntry { get; }
    /// <summary>The PCR bank of <see cref="Aggregate"/>.</summary>
    public TpmAlgId Bank { get; }
    /// <summary>PCR 10 after extending entries 0 .. NextEntry-1.</summary>
    public byte[] Aggregate { get; }
    /// <summary>Public keys (base64 DER certificate or SubjectPublicKeyInfo) taken from keyring measurements the policy allowed, for later ima-sig entries.</summary>
    public IReadOnlyList<string> LearnedKeys { get; }

    /// <summary>JSON: <c>{"next_entry":n,"bank":"sha256","aggregate":"hex","learned_keys":[...]}</c>.</summary>
    public string ToJson() => new JsonObject
    {
        ["next_entry"] = NextEntry,
        ["bank"] = ImaHashAlgorithms.FromTpm(Bank),
        ["aggregate"] = MeasurementHex.ToHex(Aggregate),
        ["learned_keys"] = new JsonArray(LearnedKeys.Select(k => (JsonNode?)JsonValue.Create(k)).ToArray()),
    }.ToJsonString();

    /// <summary>Reads <see cref="ToJson"/> output; throws <see cref="FormatException"/> for anything else.</summary>
    public static ImaVerifierState FromJson(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        try
        {
            if (JsonNode.Parse(json) is not JsonObject o) throw new FormatException("IMA verifier state: not a JSON object.");
            int next = o["next_entry"]?.GetValue<int>() ?? throw new FormatException("IMA verifier state: next_entry missing.");
            var bankName = o["bank"]?.GetValue<string>() ?? throw new FormatException("IMA verifier state: bank missing.");
            var bank = ImaHashAlgorithms.ToTpm(bankName) ?? throw new FormatException($"IMA verifier state: bank '{bankName}' is not supported.");
            var hex = o["aggregate"]?.GetValue<string>() ?? throw new FormatException("IMA verifier state: aggregate missing.");
            if (!MeasurementHex.TryParse(hex, out var aggregate) || aggregate.Length != TpmHash.DigestSize(bank))
                throw new FormatException("IMA verifier state: aggregate is not a hex digest of the bank's size.");
            if (next < 0) throw new FormatException("IMA verifier state: next_entry is negative.");
            var keys = new List<string>();
            if (o["learned_keys"] is JsonArray arr)
                foreach (var k in arr) keys.Add(k?.GetValue<string>() ?? throw new FormatException("IMA verifier state: null learned key."));
            return new ImaVerifierState(next, bank, aggregate, keys);
        }
        catch (JsonException e) { throw new FormatException($"IMA verifier state: not JSON: {e.Message}"); }
        catch (InvalidOperationException e) { throw new FormatException($"IMA verifier state: wrong JSON type: {e.Message}"); }
    }
}

/// <summary>What <see cref="ImaVerifier.Verify"/> checks.</summary>
public sealed class ImaVerifyInput
{
    /// <summary>The IMA list text the agent served, starting at entry <see cref="FirstEntry"/>.</summary>
    public required string MeasurementList { get; init; }
    /// <summary>The number of the list's first entry (the agent's <c>ima_measurement_list_entry</c>).</summary>
    public int FirstEntry { get; init; }
    /// <summary>The hash algorithm of the quote's PCR bank.</summary>
    public required TpmAlgId PcrBank { get; init; }
    /// <summary>The quoted PCR 10; null to skip the PCR comparison (replay and policy only).</summary>
    public byte[]? QuotedPcr10 { get; init; }
    /// <summary>The state after the previous passing quote; null on the first quote.</summary>
    public ImaVerifierState? PreviousState { get; init; }
    /// <summary>The runtime policy; null to only replay (and check signatures when keys are given).</summary>
    public RuntimePolicy? Policy { get; init; }
    /// <summary>Keys for ima-sig entries (the policy's verification-keys are added to them).</summary>
    public ImaSignatureKeys? Keys { get; init; }
    /// <summary>Quoted PCRs 0-9 (in <see cref="PcrBank"/>); when present the boot_aggregate entry is checked against them.</summary>
    public IReadOnlyDictionary<int, byte[]>? BootPcrs { get; init; }
    /// <summary>Report violation (ToMToU / open-writers) entries as failures (Keylime's verifier default ignores them).</summary>
    public bool FailOnViolations { get; init; }
    /// <summary>At most this many failures are listed; the rest are counted in one last failure.</summary>
    public int MaxFailures { get; init; } = 1000;
}

/// <summary>The outcome of <see cref="ImaVerifier.Verify"/>.</summary>
public sealed class ImaVerifyResult
{
    internal ImaVerifyResult(bool passed, IReadOnlyList<MeasurementFailure> failures, ImaVerifierState newState, int entriesChecked, int? matchedAtEntry)
    {
        Passed = passed;
        Failures = failures;
        NewState = newState;
        EntriesChecked = entriesChecked;
        MatchedAtEntry = matchedAtEntry;
    }

    /// <summary>True when no check failed.</summary>
    public bool Passed { get; }
    /// <summary>Every failed check, in list order.</summary>
    public IReadOnlyList<MeasurementFailure> Failures { get; }
    /// <summary>
    /// The state for the next quote. When passed: positioned just after the entry at which the replay equalled the quoted
    /// PCR 10 (entries beyond it are checked now and replayed again next time). When failed: the initial state (Keylime
    /// resets and asks for the whole list again).
    /// </summary>
    public ImaVerifierState NewState { get; }
    /// <summary>The number of list lines looked at.</summary>
    public int EntriesChecked { get; }
    /// <summary>The number of the entry after which the replay equalled the quoted PCR 10 (FirstEntry - 1 when it already did before any entry); null when it never did.</summary>
    public int? MatchedAtEntry { get; }

    /// <inheritdoc />
    public override string ToString() => Passed ? $"passed ({EntriesChecked} entries)" : string.Join("; ", Failures.Take(3));
}

/// <summary>
/// Keylime's IMA check: replays the list into PCR 10 of the quote's bank, accepts when some prefix equals the quoted value,
/// recomputes every template hash and checks every entry against the runtime policy and the ima-sig keys. Stateless and
/// thread-safe; the caller keeps <see cref="ImaVerifierState"/> per agent.
/// </summary>
public static class ImaVerifier
{
    /// <summary>The PCR IMA extends.</summary>
    public const int ImaPcr = 10;
    /// <summary>The name of the kernel's first entry.</summary>
    public const string BootAggregateName = "boot_aggregate";

    /// <summary>Verifies; never throws for bad list text (it becomes failures). Throws <see cref="ArgumentException"/> for an unsupported bank.</summary>
    public static ImaVerifyResult Verify(ImaVerifyInput input)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(input.MeasurementList);
        var bank = input.PcrBank;
        if (!TpmHash.IsSupported(bank)) throw new ArgumentException($"PCR bank 0x{(ushort)bank:X4} is not supported.", nameof(input));
        var failures = new FailureList(Math.Max(1, input.MaxFailures));
        int size = TpmHash.DigestSize(bank);
        if (input.QuotedPcr10 is { } q && q.Length != size)
        {
            failures.Add(new(MeasurementEventIds.ImaPcrMismatch, $"quoted PCR 10 has {q.Length} bytes, the {ImaHashAlgorithms.FromTpm(bank)} bank has {size}", ImaPcr, null));
            return new ImaVerifyResult(false, failures.ToList(), ImaVerifierState.Initial(bank), 0, null);
        }

        byte[] running;
        var learned = new List<string>();
        var prev = input.PreviousState;
        if (input.FirstEntry == 0)
        {
            running = new byte[size];
        }
        else if (prev is not null && prev.Bank == bank && prev.NextEntry == input.FirstEntry)
        {
            running = (byte[])prev.Aggregate.Clone();
            learned.AddRange(prev.LearnedKeys);
        }
        else
        {
            var why = prev is null ? "there is no stored state"
                : prev.Bank != bank ? $"the stored state is for the {ImaHashAlgorithms.FromTpm(prev.Bank)} bank"
                : $"the stored state expects entry {prev.NextEntry}";
            failures.Add(new(MeasurementEventIds.ImaListOffset, $"the list starts at entry {input.FirstEntry} but {why}", ImaPcr, null));
            return new ImaVerifyResult(false, failures.ToList(), ImaVerifierState.Initial(bank), 0, null);
        }

        var parsed = ImaMeasurementList.Parse(input.MeasurementList, input.FirstEntry);
        foreach (var err in parsed.Errors)
            failures.Add(new(MeasurementEventIds.ImaParser, $"entry {err.EntryNumber} is not a valid IMA entry: {err.Message}", ImaPcr, null));

        var keys = new KeyHolder { Keys = BuildKeys(input, learned, failures) };
        var policy = input.Policy;
        var quoted = input.QuotedPcr10;
        bool found = quoted is null || running.AsSpan().SequenceEqual(quoted);
        int? matchedAt = found && quoted is not null ? input.FirstEntry - 1 : null;
        ImaVerifierState? matchState = found && quoted is not null ? new ImaVerifierState(input.FirstEntry, bank, (byte[])running.Clone(), learned.ToArray()) : null;

        Span<byte> concat = stackalloc byte[2 * 64];
        foreach (var e in parsed.Entries)
        {
            if (e.Pcr != ImaPcr)
            {
                failures.Add(new(MeasurementEventIds.ImaEntryPcr, $"entry {e.EntryNumber} is for PCR {e.Pcr}, not {ImaPcr}", e.Pcr, e.Path));
                continue;
            }
            running.CopyTo(concat);
            e.PcrExtendValue(bank).CopyTo(concat[size..]);
            TpmHash.Hash(bank, concat[..(2 * size)], running);

            if (!e.TemplateHashMatches)
                failures.Add(new(MeasurementEventIds.ImaTemplateHash, $"entry {e.EntryNumber}: template hash {MeasurementHex.ToHex(e.TemplateHash)} is not the hash of the entry's fields ({MeasurementHex.ToHex(e.ComputedTemplateHash)})", ImaPcr, e.Path));
            else if (e.IsViolation)
            {
                if (input.FailOnViolations)
                    failures.Add(new(MeasurementEventIds.ImaViolation, $"entry {e.EntryNumber} is a violation (time-of-measure/time-of-use or open-writers) entry", ImaPcr, e.Path));
            }
            else
                CheckContent(e, input, policy, keys, learned, failures);

            if (!found && running.AsSpan().SequenceEqual(quoted))
            {
                found = true;
                matchedAt = e.EntryNumber;
                matchState = new ImaVerifierState(e.EntryNumber + 1, bank, (byte[])running.Clone(), learned.ToArray());
            }
        }

        if (!found)
            failures.Add(new(MeasurementEventIds.ImaPcrMismatch, $"IMA measurement list (entries {input.FirstEntry}..{input.FirstEntry + parsed.LineCount - 1}) does not match TPM PCR 10 {MeasurementHex.ToHex(quoted)}", ImaPcr, null));

        bool passed = failures.Count == 0;
        var newState = !passed ? ImaVerifierState.Initial(bank)
            : matchState ?? new ImaVerifierState(input.FirstEntry + parsed.LineCount, bank, running, learned.ToArray());
        return new ImaVerifyResult(passed, failures.ToList(), newState, parsed.LineCount, matchedAt);
    }

    private static ImaSignatureKeys? BuildKeys(ImaVerifyInput input, List<string> learned, FailureList failures)
    {
        var policyKeys = input.Policy?.VerificationKeys;
        if (input.Keys is null && string.IsNullOrEmpty(policyKeys) && learned.Count == 0) return null;
        var keys = new ImaSignatureKeys();
        if (input.Keys is not null) keys.AddAll(input.Keys);
        try { keys.AddKeylimeKeyring(policyKeys); }
        catch (FormatException e) { failures.Add(new(MeasurementEventIds.ImaInvalidSignature, $"the policy's verification-keys do not load: {e.Message}", ImaPcr, null)); }
        foreach (var k in learned)
        {
            try { keys.AddDer(Convert.FromBase64String(k)); }
            catch (FormatException) { /* a stored key that no longer loads verifies nothing */ }
        }
        return keys;
    }

    private static void CheckContent(ImaEntry e, ImaVerifyInput input, RuntimePolicy? policy, KeyHolder holder, List<string> learned, FailureList failures)
    {
        var keys = holder.Keys;
        if (e.Path == BootAggregateName && e.EntryNumber == 0 && e.Template != ImaTemplate.ImaBuf)
        {
            var verdict = CheckBootAggregate(e, input.PcrBank, input.BootPcrs);
            if (verdict == false)
            {
                failures.Add(new(MeasurementEventIds.ImaBootAggregate, $"boot_aggregate {e.DigestHex} is not the hash of the quoted PCRs 0-{(e.DigestAlgorithm == "sha1" ? 7 : 9)}", ImaPcr, e.Path));
                return;
            }
            if (verdict == true) return;
        }

        switch (e.Template)
        {
            case ImaTemplate.Ima:
            case ImaTemplate.ImaNg:
                CheckPolicy(e, policy, RuntimePolicySection.Digests, failures);
                break;
            case ImaTemplate.ImaSig:
                if (keys is not null && e.Signature is not null)
                {
                    if (policy is not null && policy.IsExcluded(e.Path)) return;
                    if (keys.Verify(e.Signature, e.Digest, e.DigestAlgorithm, out var why)) return;
                    if (policy is null)
                    {
                        failures.Add(new(MeasurementEventIds.ImaInvalidSignature, $"entry {e.EntryNumber}: signature for file {e.Path} could not be validated: {why}", ImaPcr, e.Path));
                        return;
                    }
                }
                if (policy is not null) CheckPolicy(e, policy, RuntimePolicySection.Digests, failures);
                else if (keys is not null)
                    failures.Add(new(MeasurementEventIds.ImaInvalidSignature, $"entry {e.EntryNumber}: file {e.Path} is not signed", ImaPcr, e.Path));
                break;
            case ImaTemplate.ImaBuf:
                CheckBuffer(e, policy, holder, learned, failures);
                break;
        }
    }

    private static void CheckBuffer(ImaEntry e, RuntimePolicy? policy, KeyHolder holder, List<string> learned, FailureList failures)
    {
        // A key measured into a keyring: the buffer is a DER certificate or public key (kept as is, so a certificate's
        // Subject Key Identifier still gives the key id).
        byte[]? spki = null;
        try
        {
            if (ImaSignatureKeys.FromDer(e.Buffer!).Count == 1) spki = e.Buffer;
        }
        catch (FormatException) { }
        if (spki is not null)
        {
            if (policy is null) return;
            if (policy.IgnoredKeyrings.Contains("*") || policy.IgnoredKeyrings.Contains(e.Path)) return;
            if (CheckPolicy(e, policy, RuntimePolicySection.Keyrings, failures))
            {
                var b64 = Convert.ToBase64String(spki);
                if (!learned.Contains(b64))
                {
                    learned.Add(b64);
                    (holder.Keys ??= new ImaSignatureKeys()).AddDer(spki);
                }
            }
            return;
        }
        CheckPolicy(e, policy, RuntimePolicySection.ImaBuf, failures);
    }

    /// <summary>True when allowed (or no policy).</summary>
    private static bool CheckPolicy(ImaEntry e, RuntimePolicy? policy, RuntimePolicySection section, FailureList failures)
    {
        if (policy is null) return true;
        switch (policy.Check(e.Path, e.Digest, section))
        {
            case RuntimePolicyDecision.NotInPolicy:
                failures.Add(new(MeasurementEventIds.ImaNotInAllowlist, $"entry {e.EntryNumber}: {SectionNoun(section)} not found in allowlist: {e.Path}", ImaPcr, e.Path));
                return false;
            case RuntimePolicyDecision.DigestNotAllowed:
                failures.Add(new(MeasurementEventIds.ImaDigestNotAllowed, $"entry {e.EntryNumber}: hash {e.DigestAlgorithm}:{e.DigestHex} of {e.Path} not found in runtime policy", ImaPcr, e.Path));
                return false;
            default:
                return true;
        }
    }

    private static string SectionNoun(RuntimePolicySection s) => s switch
    {
        RuntimePolicySection.Keyrings => "keyring",
        RuntimePolicySection.ImaBuf => "ima-buf name",
        _ => "file",
    };

    /// <summary>
    /// The kernel's boot_aggregate for quoted PCRs: hash (in the entry's algorithm, which must be the quote's bank) over PCRs
    /// 0-7, and 8-9 as well for non-SHA-1 banks (kernel 5.8+). True/false when checkable; null when the PCRs or bank are not there.
    /// </summary>
    internal static bool? CheckBootAggregate(ImaEntry e, TpmAlgId bank, IReadOnlyDictionary<int, byte[]>? pcrs)
    {
        if (pcrs is null || ImaHashAlgorithms.ToTpm(e.DigestAlgorithm) != bank) return null;
        var expected = ComputeBootAggregate(bank, pcrs);
        return expected is null ? null : expected.AsSpan().SequenceEqual(e.Digest);
    }

    /// <summary>The boot_aggregate the kernel computes from these PCR values of <paramref name="bank"/>; null when a needed PCR is missing.</summary>
    public static byte[]? ComputeBootAggregate(TpmAlgId bank, IReadOnlyDictionary<int, byte[]> pcrs)
    {
        int last = bank == TpmAlgId.Sha1 ? 7 : 9;
        int size = TpmHash.DigestSize(bank);
        var data = new byte[(last + 1) * size];
        for (int i = 0; i <= last; i++)
        {
            if (!pcrs.TryGetValue(i, out var v) || v.Length != size) return null;
            v.CopyTo(data, i * size);
        }
        return TpmHash.Hash(bank, data);
    }

    private sealed class KeyHolder
    {
        public ImaSignatureKeys? Keys;
    }

    private sealed class FailureList(int max)
    {
        private readonly List<MeasurementFailure> _items = new();
        private int _dropped;
        public int Count => _items.Count + _dropped;
        public void Add(MeasurementFailure f)
        {
            if (_items.Count < max) _items.Add(f); else _dropped++;
        }
        public List<MeasurementFailure> ToList()
        {
            var list = new List<MeasurementFailure>(_items);
            if (_dropped > 0) list.Add(new(MeasurementEventIds.ImaTooManyFailures, $"{_dropped} more failures not listed", ImaPcr, null));
            return list;
        }
    }
}
