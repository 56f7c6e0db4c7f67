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
        var body = quote.AsSpan(1);
        int c1 = body.IndexOf(':');
        int c2 = c1 < 0 ? -1 : body[(c1 + 1)..].IndexOf(':');
        if (c1 < 0 || c2 < 0 || body[(c1 + 1 + c2 + 1)..].Contains(':'))
            throw new TpmFormatException("Keylime quote: expected three ':'-separated parts.");
        c2 += c1 + 1;
        return new KeylimeQuote(B64(body[..c1], "TPMS_ATTEST"), B64(body[(c1 + 1)..c2], "TPMT_SIGNATURE"), B64(body[(c2 + 1)..], "PCR blob"));
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

    private static byte[] B64(ReadOnlySpan<char> s, string what)
    {
        if (s.Length == 0) throw new TpmFormatException($"Keylime quote: {what} part is empty.");
        // Exact decoded size for canonical base64; anything else (whitespace, bad length) takes the slower checked path.
        int pad = s[^1] == '=' ? (s.Length > 1 && s[^2] == '=' ? 2 : 1) : 0;
        if (s.Length % 4 == 0)
        {
            var exact = new byte[s.Length / 4 * 3 - pad];
            if (Convert.TryFromBase64Chars(s, exact, out int n) && n == exact.Length) return exact;
        }
        var buf = new byte[s.Length / 4 * 3 + 3];
        if (!Convert.TryFromBase64Chars(s, buf, out int m)) throw new TpmFormatException($"Keylime quote: {what} part is not base64.");
        // Only whitespace decodes to nothing: as empty as an empty part.
        if (m == 0) throw new TpmFormatException($"Keylime quote: {what} part is empty.");
        return buf[..m];
    }
}
