using System.Text.RegularExpressions;

namespace TpmProvisioning;

/// <summary>
/// Masks secrets in text bound for logs and audit details: API keys, bearer tokens, passwords,
/// PEM private keys, and the Keylime payload keys (U, V, K). Applied by every log sink, so a
/// careless message cannot leak one.
/// </summary>
public static partial class SecretRedactor
{
    public const string Mask = "***";

    [GeneratedRegex(@"-----BEGIN ([A-Z ]*)PRIVATE KEY-----[\s\S]*?-----END \1PRIVATE KEY-----", RegexOptions.CultureInvariant)]
    private static partial Regex PemPrivateKey();

    [GeneratedRegex(@"(?i)(""?(?:api_key|apikey|x-api-key|password|passphrase|secret|token|client_secret|encrypted_key|u_key|v_key|pin)""?\s*[:=]\s*)(""[^""]*""|[^\s,;&}]+)", RegexOptions.CultureInvariant)]
    private static partial Regex KeyValueSecret();

    [GeneratedRegex(@"(?i)(authorization\s*:\s*\w+\s+)(\S+)", RegexOptions.CultureInvariant)]
    private static partial Regex AuthorizationHeader();

    [GeneratedRegex(@"(?i)(\b(?:bearer|basic)\s+)([A-Za-z0-9\-._~+/=]{8,})", RegexOptions.CultureInvariant)]
    private static partial Regex BearerToken();

    /// <summary>Known-secret prefix of API keys this module issues; any such token is masked wherever it appears.</summary>
    [GeneratedRegex(@"\btp(?:k|st)_[A-Za-z0-9_\-]{8,}", RegexOptions.CultureInvariant)]
    private static partial Regex IssuedApiKey();

    public static string Redact(string? text)
    {
        if (string.IsNullOrEmpty(text)) return text ?? "";
        var s = PemPrivateKey().Replace(text, "-----PRIVATE KEY REDACTED-----");
        s = AuthorizationHeader().Replace(s, m => m.Groups[1].Value + Mask);
        s = BearerToken().Replace(s, m => m.Groups[1].Value + Mask);
        s = KeyValueSecret().Replace(s, m => m.Groups[1].Value + (m.Groups[2].Value.StartsWith('"') ? "\"" + Mask + "\"" : Mask));
        s = IssuedApiKey().Replace(s, "tpk_" + Mask);
        return s;
    }
}
