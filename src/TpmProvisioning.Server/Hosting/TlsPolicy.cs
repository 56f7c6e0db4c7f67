using System.Net.Security;

namespace TpmProvisioning.Server.Hosting;

/// <summary>
/// The TLS cipher suites every server of the product offers: AEAD only (AES-GCM and ChaCha20-Poly1305 with ECDHE under TLS 1.2,
/// and TLS 1.3's own suites), never CBC-mode suites such as ECDHE-ECDSA-AES128-SHA256.
/// </summary>
/// <remarks>
/// .NET applies <see cref="CipherSuitesPolicy"/> on Linux and macOS (OpenSSL). On Windows it is not supported (SChannel takes
/// its suites from the operating system's policy: Group Policy "SSL Cipher Suite Order" or <c>Disable-TlsCipherSuite</c>), so
/// there the server leaves the choice to the OS; docs/rest/transport.md says how to restrict it.
/// </remarks>
public static class TlsPolicy
{
    /// <summary>The suites offered, strongest first.</summary>
    public static IReadOnlyList<TlsCipherSuite> AeadSuites { get; } =
    [
        TlsCipherSuite.TLS_AES_256_GCM_SHA384,
        TlsCipherSuite.TLS_AES_128_GCM_SHA256,
        TlsCipherSuite.TLS_CHACHA20_POLY1305_SHA256,
        TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        TlsCipherSuite.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        TlsCipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TlsCipherSuite.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];

    /// <summary>True where .NET can restrict the suites itself (everywhere but Windows).</summary>
    public static bool Enforced => !OperatingSystem.IsWindows();

    /// <summary>Restricts <paramref name="options"/> to <see cref="AeadSuites"/> where the platform allows it; on Windows, a no-op.</summary>
    public static void Apply(SslServerAuthenticationOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (OperatingSystem.IsWindows()) return;
        options.CipherSuitesPolicy = s_policy.Value;
    }

    private static readonly Lazy<CipherSuitesPolicy> s_policy = new(() =>
        OperatingSystem.IsWindows() ? throw new PlatformNotSupportedException() : new CipherSuitesPolicy(AeadSuites));
}
