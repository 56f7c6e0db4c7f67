using System.Security.Cryptography.X509Certificates;

namespace TpmProvisioning.Pki;

/// <summary>
/// What a components-CA client certificate may do. The CA issues agents and servers certificates too (serverAuth), so the
/// chain alone does not say who is calling: a client certificate names its role in its extended key usage.
/// </summary>
[Flags]
public enum ClientRole
{
    None = 0,
    /// <summary>The admin: registers agents with the verifier, reads and deletes registrations, talks to agents (Keylime's tenant).</summary>
    Tenant = 1,
    /// <summary>A verifier asking agents for quotes and delivering V.</summary>
    Verifier = 2,
    /// <summary>Read only: a KMS reading the registrar and the verifier to decide a key release, or a station showing attestation states.</summary>
    Kms = 4,
}

/// <summary>The extended-key-usage OIDs of <see cref="ClientRole"/>.</summary>
public static class ClientRoles
{
    /// <summary>id-kp-clientAuth (RFC 5280): required of every client certificate.</summary>
    public const string ClientAuthOid = "1.3.6.1.5.5.7.3.2";
    /// <summary>The product's OID arc: a UUID-derived OID (ITU-T X.667, <c>2.25.&lt;UUID as an integer&gt;</c>), so no registration is needed.</summary>
    public const string Arc = "2.25.63722114495415869064246890909618484862";
    /// <summary>Role usages live under <c>&lt;arc&gt;.1</c>: <c>.1.1</c> tenant, <c>.1.2</c> verifier, <c>.1.3</c> KMS.</summary>
    public static string Oid(ClientRole role) => role switch
    {
        ClientRole.Tenant => Arc + ".1.1",
        ClientRole.Verifier => Arc + ".1.2",
        ClientRole.Kms => Arc + ".1.3",
        _ => throw new ArgumentOutOfRangeException(nameof(role), "one role at a time"),
    };

    /// <summary>The single roles in <paramref name="roles"/>.</summary>
    public static IEnumerable<ClientRole> Each(ClientRole roles) =>
        new[] { ClientRole.Tenant, ClientRole.Verifier, ClientRole.Kms }.Where(r => roles.HasFlag(r));

    /// <summary>The roles a certificate's extended key usage grants; none without clientAuth or without an extended key usage.</summary>
    public static ClientRole Of(X509Certificate2 cert)
    {
        ArgumentNullException.ThrowIfNull(cert);
        var eku = cert.Extensions.OfType<X509EnhancedKeyUsageExtension>().FirstOrDefault();
        if (eku is null) return ClientRole.None;
        var oids = eku.EnhancedKeyUsages.Cast<System.Security.Cryptography.Oid>().Select(o => o.Value).ToHashSet(StringComparer.Ordinal);
        if (!oids.Contains(ClientAuthOid)) return ClientRole.None;
        var roles = ClientRole.None;
        foreach (var r in Each(ClientRole.Tenant | ClientRole.Verifier | ClientRole.Kms))
            if (oids.Contains(Oid(r))) roles |= r;
        return roles;
    }

    /// <summary>Names for messages: <c>tenant</c>, <c>verifier or kms</c>, <c>none</c>.</summary>
    public static string Describe(ClientRole roles) =>
        roles == ClientRole.None ? "none" : string.Join(" or ", Each(roles).Select(r => r.ToString().ToLowerInvariant()));
}
