using System.Net.Security;
using System.Security.Cryptography.X509Certificates;

namespace TpmProvisioning.Pki;

/// <summary>
/// TLS server-certificate validation against one pinned CA (a server's own components CA, as Keylime's tenant trusts
/// its verifier's and registrar's CA): the name must match, and the chain must end at that CA, not at the system store.
/// </summary>
public static class PinnedCaTls
{
    /// <summary>True when <paramref name="cert"/> has no name or availability error and chains to <paramref name="ca"/>.</summary>
    public static bool Validates(X509Certificate2 ca, X509Certificate? cert, SslPolicyErrors errors)
    {
        ArgumentNullException.ThrowIfNull(ca);
        if (cert is null || (errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != SslPolicyErrors.None) return false;
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(ca);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.DisableCertificateDownloads = true;
        using var leaf = X509CertificateLoader.LoadCertificate(cert.GetRawCertData());
        return chain.Build(leaf);
    }
}
