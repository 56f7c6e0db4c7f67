using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using TpmProvisioning.Hosting;
using TpmProvisioning.Server.Hosting;

namespace TpmProvisioning.Tests.Hardening;

/// <summary>
/// TLS 1.2 offered CBC suites (ECDHE-ECDSA-AES128-SHA256). Every server of the product now offers AEAD suites only; checked with
/// .NET's own client restricted to one suite, and with OpenSSL's s_client where it is installed.
/// </summary>
public sealed class TlsCipherSuiteTests : IAsyncLifetime
{
    private readonly string data = Directory.CreateTempSubdirectory("tpmprov-tls-").FullName;
    private IServerHost host = null!;
    private Storage.SqliteStore store = null!;
    private int port;

    public async Task InitializeAsync()
    {
        (host, store, _) = await ScratchServer.StartAsync(data, [], ServerRole.Registrar | ServerRole.Provisioning, null);
        port = new Uri(host.Info.Urls[0]).Port;
    }

    public Task DisposeAsync() => ScratchServer.StopAsync(host, store, data);

    /// <summary>A TLS 1.2 handshake offering only <paramref name="suite"/>; the suite agreed, or null when the server refused.</summary>
    private async Task<TlsCipherSuite?> HandshakeAsync(TlsCipherSuite suite)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, port);
        using var ssl = new SslStream(tcp.GetStream(), false, (_, _, _, _) => true);
        try
        {
            await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
            {
                TargetHost = "localhost",
                EnabledSslProtocols = SslProtocols.Tls12,
                CipherSuitesPolicy = new CipherSuitesPolicy([suite]),
            });
            return ssl.NegotiatedCipherSuite;
        }
        catch (Exception ex) when (ex is AuthenticationException or IOException) { return null; }
    }

    [Theory]
    [InlineData(TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256)]
    [InlineData(TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA)]
    [InlineData(TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384)]
    [InlineData(TlsCipherSuite.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256)]
    public async Task CbcSuitesAreRefused(TlsCipherSuite suite)
    {
        if (OperatingSystem.IsWindows()) return; // the OS policy decides there (TlsPolicy)
        Assert.Null(await HandshakeAsync(suite));
    }

    [Fact]
    public async Task AnAeadSuiteIsAcceptedOverTls12()
    {
        if (OperatingSystem.IsWindows()) return;
        Assert.Equal(TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, await HandshakeAsync(TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256));
        Assert.Contains(TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TlsPolicy.AeadSuites);
    }

    [Fact]
    public async Task OpenSslSClientAgrees()
    {
        if (OperatingSystem.IsWindows()) return;
        var openssl = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(d => Path.Combine(d, "openssl")).FirstOrDefault(File.Exists);
        if (openssl is null) return; // the .NET handshakes above are the check where OpenSSL's tool is absent
        Assert.NotEqual(0, await SClientAsync(openssl, "ECDHE-ECDSA-AES128-SHA256"));
        Assert.Equal(0, await SClientAsync(openssl, "ECDHE-ECDSA-AES128-GCM-SHA256"));
    }

    private async Task<int> SClientAsync(string openssl, string cipher)
    {
        var psi = new ProcessStartInfo(openssl) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "s_client", "-connect", $"127.0.0.1:{port}", "-tls1_2", "-cipher", cipher, "-servername", "localhost" }) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var outTask = p.StandardOutput.ReadToEndAsync();
        var errTask = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try { await p.WaitForExitAsync(cts.Token); }
        catch (OperationCanceledException) { p.Kill(true); throw; }
        await Task.WhenAll(outTask, errTask);
        return p.ExitCode;
    }
}
