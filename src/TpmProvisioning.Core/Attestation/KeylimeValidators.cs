using System.Net;
using System.Text.RegularExpressions;

namespace TpmProvisioning.Attestation;

/// <summary>
/// The checks every surface applies to identifiers and contact addresses where they enter (registrar, verifier, KMS release
/// and revocation notices), so a value that one surface refuses is never stored by another.
/// </summary>
public static partial class KeylimeValidators
{
    [GeneratedRegex("^[A-Za-z0-9._-]{1,255}$")]
    private static partial Regex AgentIdRegex();

    /// <summary>
    /// Keylime's agent id rule (<c>validators.valid_agent_id</c>): 1-255 letters, digits, <c>.</c>, <c>_</c>, <c>-</c>; the
    /// path names <c>.</c> and <c>..</c> are refused as well, so an id is always safe as a file or URL path segment.
    /// </summary>
    public static bool IsValidAgentId(string? id) => id is not null && id is not ("." or "..") && AgentIdRegex().IsMatch(id);

    [GeneratedRegex("^(?=.{1,253}\\.?$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\\.?$")]
    private static partial Regex HostNameRegex();

    /// <summary>
    /// True when <paramref name="host"/> is an IPv4 or IPv6 address (without brackets, port or zone) or a DNS host name
    /// (RFC 1123 labels of letters, digits and hyphens, at most 253 characters). Anything else (URLs, SQL, control
    /// characters, spaces) is refused.
    /// </summary>
    public static bool IsValidContactHost(string? host)
    {
        if (string.IsNullOrEmpty(host) || host.Length > 253) return false;
        if (host.Contains(':'))
            return !host.Contains('%') && IPAddress.TryParse(host, out var v6) && v6.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6;
        // A dotted-quad must be a real IPv4 address, not a host name that merely looks like one (999.1.1.1).
        if (host.All(c => char.IsAsciiDigit(c) || c == '.'))
            return IPAddress.TryParse(host, out var v4) && v4.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork && host.Count(c => c == '.') == 3;
        return HostNameRegex().IsMatch(host);
    }
}
