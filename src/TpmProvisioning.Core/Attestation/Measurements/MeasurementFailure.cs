namespace TpmProvisioning.Attestation.Measurements;

/// <summary>
/// One failed measurement check. <see cref="EventId"/> is stable (see <see cref="MeasurementEventIds"/>) and follows
/// Keylime's failure event naming (component, sub-components and event joined by dots), so a verifier can store it as
/// <c>last_event_id</c>. <see cref="Reason"/> is for people; <see cref="Pcr"/> and <see cref="Path"/> are set when known.
/// </summary>
public sealed record MeasurementFailure(string EventId, string Reason, int? Pcr, string? Path)
{
    /// <inheritdoc />
    public override string ToString() => Path is null ? $"{EventId}: {Reason}" : $"{EventId}: {Reason} ({Path})";
}

/// <summary>The stable event ids of <see cref="MeasurementFailure"/>. IMA ids are Keylime's own.</summary>
public static class MeasurementEventIds
{
    /// <summary>An IMA list line does not parse (Keylime: ima.parser.entry).</summary>
    public const string ImaParser = "ima.parser.entry";
    /// <summary>No prefix of the replayed list equals the quoted PCR 10.</summary>
    public const string ImaPcrMismatch = "ima.pcr_mismatch";
    /// <summary>The list does not start where the stored state expects (neither entry 0 nor the stored next entry).</summary>
    public const string ImaListOffset = "ima.list_offset";
    /// <summary>An entry names a PCR other than 10.</summary>
    public const string ImaEntryPcr = "ima.validation.ima_pcr";
    /// <summary>An entry's template hash differs from the hash of its template data.</summary>
    public const string ImaTemplateHash = "ima.validation.ima_hash";
    /// <summary>A violation (ToMToU / open-writers) entry, reported only when violations are configured as failures.</summary>
    public const string ImaViolation = "ima.validation.tomtou";
    /// <summary>The path (or ima-buf name, or keyring) is not in the runtime policy.</summary>
    public const string ImaNotInAllowlist = "ima.validation.ima-ng.not_in_allowlist";
    /// <summary>The path is in the runtime policy but with other digests.</summary>
    public const string ImaDigestNotAllowed = "ima.validation.ima-ng.runtime_policy_hash";
    /// <summary>An ima-sig entry has no valid signature under the given keys and no runtime policy allows it.</summary>
    public const string ImaInvalidSignature = "ima.validator.ima-sig.invalid_signature";
    /// <summary>The boot_aggregate entry differs from the hash of the quoted PCRs 0-7 (0-9 for non-SHA-1 banks).</summary>
    public const string ImaBootAggregate = "ima.validation.boot_aggregate";
    /// <summary>More failures than the cap; the rest are counted in this failure's reason.</summary>
    public const string ImaTooManyFailures = "ima.too_many_failures";

    /// <summary>The UEFI event log does not parse.</summary>
    public const string BootLogInvalid = "measured_boot.invalid_log";
    /// <summary>The event log has no digests for the quote's PCR bank.</summary>
    public const string BootLogBankMissing = "measured_boot.bank_missing";
    /// <summary>Prefix of the per-PCR id: the log's replay differs from the quoted PCR (e.g. <c>measured_boot.invalid_pcr_7</c>).</summary>
    public const string BootPcrPrefix = "measured_boot.invalid_pcr_";
    /// <summary>The refstate's digests are for another bank than the quote's.</summary>
    public const string BootPolicyBank = "measured_boot.policy.bank";
    /// <summary>Prefix of the per-PCR id: the PCR's final value is not one the refstate allows (e.g. <c>measured_boot.policy.pcr_0</c>).</summary>
    public const string BootPolicyPcrPrefix = "measured_boot.policy.pcr_";
    /// <summary>An event's digest is not among those the refstate allows for its PCR and type.</summary>
    public const string BootPolicyEventDigest = "measured_boot.policy.event_digest";
    /// <summary>Secure Boot is required but the log does not show SecureBoot = 1.</summary>
    public const string BootPolicySecureBoot = "measured_boot.policy.secure_boot";
    /// <summary>Prefix: a PK/KEK/db entry is not allowed, or the variable is missing (e.g. <c>measured_boot.policy.db</c>).</summary>
    public const string BootPolicyVariablePrefix = "measured_boot.policy.";
    /// <summary>A dbx entry that the refstate requires is absent from the measured dbx.</summary>
    public const string BootPolicyDbx = "measured_boot.policy.dbx";

    /// <summary>The id for a replay mismatch of one PCR.</summary>
    public static string BootPcr(int pcr) => BootPcrPrefix + pcr.ToString(System.Globalization.CultureInfo.InvariantCulture);
    /// <summary>The id for a refstate final-value mismatch of one PCR.</summary>
    public static string BootPolicyPcr(int pcr) => BootPolicyPcrPrefix + pcr.ToString(System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>Hex helpers shared by the measurement parsers (lower-case output, no exceptions on bad input).</summary>
internal static class MeasurementHex
{
    public static string ToHex(ReadOnlySpan<byte> bytes) => Convert.ToHexStringLower(bytes);

    /// <summary>Parses hex (either case) into bytes; false for odd length or a non-hex character.</summary>
    public static bool TryParse(ReadOnlySpan<char> text, out byte[] bytes)
    {
        bytes = [];
        if ((text.Length & 1) != 0) return false;
        var result = new byte[text.Length / 2];
        for (int i = 0; i < result.Length; i++)
        {
            int hi = Nibble(text[2 * i]), lo = Nibble(text[2 * i + 1]);
            if ((hi | lo) < 0) return false;
            result[i] = (byte)((hi << 4) | lo);
        }
        bytes = result;
        return true;
    }

    /// <summary>Normalises a hex digest from a policy: optional 0x prefix removed, lower case; null when not hex or empty.</summary>
    public static string? Normalize(string? text)
    {
        if (text is null) return null;
        var span = text.AsSpan().Trim();
        if (span.StartsWith("0x", StringComparison.OrdinalIgnoreCase)) span = span[2..];
        if (span.Length == 0 || !TryParse(span, out var bytes)) return null;
        return ToHex(bytes);
    }

    private static int Nibble(char c) => c switch
    {
        >= '0' and <= '9' => c - '0',
        >= 'a' and <= 'f' => c - 'a' + 10,
        >= 'A' and <= 'F' => c - 'A' + 10,
        _ => -1,
    };

    public static bool IsAll(ReadOnlySpan<byte> bytes, byte value)
    {
        foreach (var b in bytes) if (b != value) return false;
        return true;
    }
}
