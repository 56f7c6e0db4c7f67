using System.Text;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Attestation.Verifier;

/// <summary>What an agent answered to <c>/quotes/integrity</c>, as the verifier reads it.</summary>
public sealed record QuoteResponse
{
    public string? Quote { get; init; }
    public string? HashAlg { get; init; }
    public string? EncAlg { get; init; }
    public string? SignAlg { get; init; }
    public string? Pubkey { get; init; }
    public long Boottime { get; init; }
    public string? ImaMeasurementList { get; init; }
    public int? ImaMeasurementListEntry { get; init; }
    public string? MbMeasurementList { get; init; }

    /// <summary>Reads the <c>results</c> object of the agent's envelope; null when it is not an object.</summary>
    public static QuoteResponse? FromJson(System.Text.Json.JsonElement r)
    {
        if (r.ValueKind != System.Text.Json.JsonValueKind.Object) return null;
        static string? S(System.Text.Json.JsonElement e, string n) => e.TryGetProperty(n, out var v) && v.ValueKind == System.Text.Json.JsonValueKind.String ? v.GetString() : null;
        return new QuoteResponse
        {
            Quote = S(r, "quote"),
            HashAlg = S(r, "hash_alg"),
            EncAlg = S(r, "enc_alg"),
            SignAlg = S(r, "sign_alg"),
            Pubkey = S(r, "pubkey"),
            Boottime = r.TryGetProperty("boottime", out var b) && b.ValueKind == System.Text.Json.JsonValueKind.Number && b.TryGetInt64(out var bt) ? bt : 0,
            ImaMeasurementList = S(r, "ima_measurement_list"),
            ImaMeasurementListEntry = r.TryGetProperty("ima_measurement_list_entry", out var i) && i.ValueKind == System.Text.Json.JsonValueKind.Number && i.TryGetInt32(out var ie) ? ie : null,
            MbMeasurementList = S(r, "mb_measurement_list"),
        };
    }
}

/// <summary>The verdict on one quote.</summary>
public sealed record QuoteJudgement(IReadOnlyList<AttestationFailure> Failures, VerifierAgentProgress Progress, PcrValues? Pcrs)
{
    public bool Passed => Failures.Count == 0;
}

/// <summary>Extra checks over the quoted PCRs and the logs the agent sent (IMA, measured boot); plugged in by the verifier.</summary>
public interface IMeasurementCheck
{
    /// <summary>PCRs this check needs quoted for this agent (added to the policy's mask).</summary>
    uint RequiredMask(VerifierAgentConfig config);

    /// <summary>Judges the logs against the quoted PCRs; returns the failures and the updated progress (IMA position).</summary>
    (IReadOnlyList<AttestationFailure> Failures, VerifierAgentProgress Progress) Check(VerifierAgentConfig config, VerifierAgentProgress progress, QuoteResponse response, TpmAlgId bank, PcrValues pcrs, bool rebooted);
}

/// <summary>
/// Judges one <c>/quotes/integrity</c> answer as Keylime's verifier does, each failure named: the quote (magic, type, nonce
/// in extraData, signature with the agent's AK, PCR digest), the algorithms against the accepted lists, the TPM clock (reset
/// and restart counts never go back, <c>safe</c> set), PCR 16 against the NK, the static PCR policy, then the measurement checks.
/// </summary>
public static class QuoteJudge
{
    /// <summary>Keylime's event ids (its component is spelled <c>qoute_validation</c>; kept so tools matching on it work).</summary>
    public const string QuoteValidation = "qoute_validation.quote_validation";
    public const string InvalidHashAlg = "qoute_validation.invalid_hash_alg";
    public const string InvalidEncAlg = "qoute_validation.invalid_enc_alg";
    public const string InvalidSignAlg = "qoute_validation.invalid_sign_alg";
    public const string ClockWentBack = "qoute_validation.clock_went_back";
    public const string ClockNotSafe = "qoute_validation.clock_not_safe";
    public const string MissingPubkey = "qoute_validation.missing_pubkey";
    public const string PcrPrefix = "pcr_validation.invalid_pcr_";
    public const string PcrNotQuoted = "pcr_validation.pcr_not_quoted";

    /// <summary>The mask to ask for: the policy's PCRs, PCR 16 (the NK binding) and what the measurement checks need.</summary>
    public static uint QuoteMask(VerifierAgentConfig config, TpmPolicy policy, IEnumerable<IMeasurementCheck> checks)
    {
        uint mask = policy.Mask | (1u << AgentService.DataPcr);
        foreach (var c in checks) mask |= c.RequiredMask(config);
        return mask;
    }

    public static QuoteJudgement Judge(VerifierAgentConfig config, VerifierAgentProgress progress, PreparedAk ak, TpmPolicy policy,
        string nonce, uint mask, QuoteResponse? response, IEnumerable<IMeasurementCheck>? checks = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(progress);
        ArgumentNullException.ThrowIfNull(ak);
        ArgumentNullException.ThrowIfNull(policy);
        var failures = new List<AttestationFailure>();
        if (response?.Quote is not { Length: > 0 } quoteText)
        {
            failures.Add(new() { EventId = QuoteValidation, Reason = "The agent's answer carries no quote." });
            return new(failures, progress with { Failures = failures }, null);
        }

        // Algorithms: the agent's claims must be accepted, and must agree with the AK.
        string hashAlg = response.HashAlg ?? "";
        if (!config.AcceptTpmHashAlgs.Contains(hashAlg, StringComparer.OrdinalIgnoreCase))
            failures.Add(new() { EventId = InvalidHashAlg, Reason = $"Hash algorithm '{Clip(hashAlg)}' is not in accept_tpm_hash_algs ({string.Join(", ", config.AcceptTpmHashAlgs)}).", Recoverable = false });
        if (!config.AcceptTpmEncryptionAlgs.Contains(response.EncAlg ?? "", StringComparer.OrdinalIgnoreCase))
            failures.Add(new() { EventId = InvalidEncAlg, Reason = $"Encryption algorithm '{Clip(response.EncAlg ?? "")}' is not in accept_tpm_encryption_algs.", Recoverable = false });
        if (!config.AcceptTpmSigningAlgs.Contains(response.SignAlg ?? "", StringComparer.OrdinalIgnoreCase))
            failures.Add(new() { EventId = InvalidSignAlg, Reason = $"Signing algorithm '{Clip(response.SignAlg ?? "")}' is not in accept_tpm_signing_algs.", Recoverable = false });
        var bank = hashAlg.ToLowerInvariant() switch
        {
            "sha1" => TpmAlgId.Sha1,
            "sha256" => TpmAlgId.Sha256,
            "sha384" => TpmAlgId.Sha384,
            "sha512" => TpmAlgId.Sha512,
            _ => TpmAlgId.Null,
        };
        if (bank == TpmAlgId.Null)
        {
            if (failures.Count == 0) failures.Add(new() { EventId = InvalidHashAlg, Reason = $"Hash algorithm '{Clip(hashAlg)}' is not known.", Recoverable = false });
            return new(failures, progress with { Failures = failures }, null);
        }

        // The quote itself.
        var expected = PcrSelection.FromBitmask(bank, mask);
        var qr = QuoteVerifier.VerifyKeylime(quoteText, ak, Encoding.ASCII.GetBytes(nonce), expected);
        foreach (var f in qr.Failures)
            failures.Add(new() { EventId = QuoteValidation, Reason = $"{f.Code}: {f.Message}" });
        // The PCR values come from the quote's own blob, parsed once by the verification.
        PcrValues? pcrs = qr.IsValid ? qr.Pcrs : null;
        if (pcrs is null || qr.Attest is not { } attest)
            return new(failures, progress with { Failures = failures }, null);

        // The TPM clock: counters never go back; a new resetCount is a reboot.
        var ci = attest.ClockInfo;
        bool rebooted = progress.ResetCount is { } prevReset && ci.ResetCount > prevReset;
        if (progress.ResetCount is { } r0 && ci.ResetCount < r0)
            failures.Add(new() { EventId = ClockWentBack, Reason = $"The TPM resetCount went back from {r0} to {ci.ResetCount}: an old quote or another TPM.", Recoverable = false });
        else if (!rebooted && progress.RestartCount is { } s0 && ci.RestartCount < s0)
            failures.Add(new() { EventId = ClockWentBack, Reason = $"The TPM restartCount went back from {s0} to {ci.RestartCount}.", Recoverable = false });
        else if (!rebooted && progress.ResetCount == ci.ResetCount && progress.RestartCount == ci.RestartCount && progress.Clock is { } c0 && ci.Clock < c0)
            failures.Add(new() { EventId = ClockWentBack, Reason = $"The TPM clock went back from {c0} to {ci.Clock} ms without a reset: a replayed quote." });
        if (!ci.Safe)
            failures.Add(new() { EventId = ClockNotSafe, Reason = "The TPM reports its clock as not safe (it may have gone back)." });

        // The NK: learned from the first full quote, measured into PCR 16.
        string? nk = progress.NkPem;
        if (response.Pubkey is { Length: > 0 } pk)
        {
            if (nk is not null && !rebooted && pk != nk)
                failures.Add(new() { EventId = PcrPrefix + AgentService.DataPcr, Pcr = AgentService.DataPcr, Reason = "The agent presented another NK than before without a reboot.", Recoverable = false });
            nk = pk;
        }
        if (nk is null)
            failures.Add(new() { EventId = MissingPubkey, Reason = "The agent's NK (pubkey) is not known: the first quote must carry it." });
        else if ((mask & (1u << AgentService.DataPcr)) != 0)
        {
            var expectedData = ExpectedDataPcr(nk, bank);
            if (!pcrs.TryGet(bank, AgentService.DataPcr, out var v16) || !v16.AsSpan().SequenceEqual(expectedData))
                failures.Add(new() { EventId = PcrPrefix + AgentService.DataPcr, Pcr = AgentService.DataPcr, Reason = "PCR 16 does not equal the extend of the NK's digest: the NK is not bound to this TPM." });
        }

        // The static PCR policy: each listed PCR must hold one of its allowed values.
        foreach (var (pcr, allowed) in policy.Allowed.OrderBy(p => p.Key))
        {
            if (!pcrs.TryGet(bank, pcr, out var value))
            {
                failures.Add(new() { EventId = PcrNotQuoted, Pcr = pcr, Reason = $"PCR {pcr} is in the policy but not in the quote." });
                continue;
            }
            bool ok = false;
            foreach (var a in allowed) if (a.AsSpan().SequenceEqual(value)) { ok = true; break; }
            if (!ok)
                failures.Add(new() { EventId = PcrPrefix + pcr, Pcr = pcr, Reason = $"PCR {pcr} value {Convert.ToHexStringLower(value)} is not allowed by tpm_policy." });
        }

        var next = progress with
        {
            HashAlg = hashAlg.ToLowerInvariant(),
            EncAlg = response.EncAlg?.ToLowerInvariant(),
            SignAlg = response.SignAlg?.ToLowerInvariant(),
            NkPem = nk,
            Boottime = response.Boottime,
            ResetCount = Math.Max(ci.ResetCount, progress.ResetCount ?? 0),
            RestartCount = rebooted ? ci.RestartCount : Math.Max(ci.RestartCount, progress.RestartCount ?? 0),
            Clock = ci.Clock,
            ImaState = rebooted ? null : progress.ImaState,
            NextImaEntry = rebooted ? 0 : progress.NextImaEntry,
        };
        if (checks is not null && failures.Count == 0)
        {
            foreach (var c in checks)
            {
                var (f, p) = c.Check(config, next, response, bank, pcrs, rebooted);
                failures.AddRange(f);
                if (f.Count == 0) next = p;
            }
        }
        // A failed quote keeps the old position and counters, so a retry judges the same evidence again.
        return failures.Count == 0
            ? new(failures, next with { Failures = [] }, pcrs)
            : new(failures, progress with { Failures = failures, NkPem = progress.NkPem ?? nk, HashAlg = next.HashAlg, EncAlg = next.EncAlg, SignAlg = next.SignAlg }, pcrs);
    }

    private static string Clip(string s) => s.Length <= 24 ? s : s[..24] + "…";

    /// <summary>
    /// PCR 16 as the agent's NK binds it: the extend of zeros with the NK's digest. An agent's NK string is carried from quote to
    /// quote, so the value is kept with that string (per bank) instead of hashed again for every quote.
    /// </summary>
    private static byte[] ExpectedDataPcr(string nk, TpmAlgId bank)
    {
        var box = DataPcrs.GetValue(nk, static _ => new System.Runtime.CompilerServices.StrongBox<DataPcr?>());
        if (Volatile.Read(ref box.Value) is { } cached && cached.Bank == bank) return cached.Value;
        var value = TpmHash.Hash(bank, [.. new byte[TpmHash.DigestSize(bank)], .. TpmHash.Hash(bank, Encoding.UTF8.GetBytes(nk))]);
        Volatile.Write(ref box.Value, new DataPcr(bank, value));
        return value;
    }

    private sealed record DataPcr(TpmAlgId Bank, byte[] Value);

    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<string, System.Runtime.CompilerServices.StrongBox<DataPcr?>> DataPcrs = new();
}
