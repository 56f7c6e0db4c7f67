namespace TpmProvisioning.Tpm;

/// <summary>
/// Keylime's quote string: <c>r</c> followed by base64(TPMS_ATTEST) <c>:</c> base64(TPMT_SIGNATURE) <c>:</c> base64(tpm2-tools PCR blob),
/// as the Keylime agent returns from <c>/quotes/integrity</c> and the verifier checks (see <see cref="Tpm2ToolsPcrBlob"/>).
/// </summary>
public sealed class KeylimeQuote
{
    /// <summary>Creates a quote from its three parts.</summary>
    public KeylimeQuote(byte[] attest, byte[] signature, byte[] pcrBlob)
    {
        Attest = attest ?? throw new ArgumentNullException(nameof(attest));
        Signature = signature ?? throw new ArgumentNullException(nameof(signature));
        PcrBlob = pcrBlob ?? throw new ArgumentNullException(nameof(pcrBlob));
    }

    /// <summary>The TPMS_ATTEST bytes.</summary>
    public byte[] Attest { get; }
    /// <summary>The marshaled TPMT_SIGNATURE.</summary>
    public byte[] Signature { get; }
    /// <summary>The tpm2-tools PCR blob.</summary>
    public byte[] PcrBlob { get; }

    /// <summary>Formats the three parts as a Keylime quote string.</summary>
    public static string Format(ReadOnlySpan<byte> attest, ReadOnlySpan<byte> signature, ReadOnlySpan<byte> pcrBlob) =>
        "r" + Convert.ToBase64String(attest) + ":" + Convert.ToBase64String(signature) + ":" + Convert.ToBase64String(pcrBlob);

    /// <summary>This quote as a Keylime quote string.</summary>
    public override string ToString() => Format(Attest, Signature, PcrBlob);

    /// <summary>Parses a Keylime quote string; throws <see cref="TpmFormatException"/> for anything else. The parts are not interpreted here.</summary>
    public static KeylimeQuote Parse(string quote)
    {
        if (string.IsNullOrEmpty(quote)) throw new TpmFormatException("Keylime quote: empty.");
        if (quote[0] != 'r') throw new TpmFormatException("Keylime quote: does not start with 'r'.");
        var parts = quote[1..].Split(':');
        if (parts.Length != 3) throw new TpmFormatException($"Keylime quote: {parts.Length} ':'-separated parts, expected 3.");
        return new KeylimeQuote(B64(parts[0], "TPMS_ATTEST"), B64(parts[1], "TPMT_SIGNATURE"), B64(parts[2], "PCR blob"));
    }

    /// <summary>Parses without throwing; <paramref name="error"/> says why on failure.</summary>
    public static bool TryParse(string? quote, out KeylimeQuote? result, out string? error)
    {
        try
        {
            result = Parse(quote ?? "");
            error = null;
            return true;
        }
        catch (TpmFormatException ex)
        {
            result = null;
            error = ex.Message;
            return false;
        }
    }

    private static byte[] B64(string s, string what)
    {
        if (s.Length == 0) throw new TpmFormatException($"Keylime quote: {what} part is empty.");
        var buf = new byte[s.Length / 4 * 3 + 3];
        if (!Convert.TryFromBase64String(s, buf, out int n)) throw new TpmFormatException($"Keylime quote: {what} part is not base64.");
        return buf[..n];
    }
}
