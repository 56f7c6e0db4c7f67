using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.Logging;
using TpmProvisioning.Attestation.Verifier;

namespace TpmProvisioning.Tests.Keylime;

/// <summary>
/// How the verifier connects to agents: one TLS connection per agent kept between quotes, and a pinned agent certificate whose
/// chain is never completed from the network (its AIA address is not fetched), over a real Kestrel agent stand-in on loopback.
/// </summary>
public sealed class AgentConnectorConnectionTests : IAsyncLifetime
{
    private WebApplication _agent = null!;
    private TcpListener _aia = null!;
    private int _aiaConnections;
    private int _agentConnections;
    private X509Certificate2 _agentCert = null!;
    private int _port;
    private readonly CancellationTokenSource _stop = new();

    public async Task InitializeAsync()
    {
        // The "AIA server": counts who connects, answers nothing.
        _aia = new TcpListener(IPAddress.Loopback, 0);
        _aia.Start();
        int aiaPort = ((IPEndPoint)_aia.LocalEndpoint).Port;
        _ = Task.Run(async () =>
        {
            try
            {
                while (!_stop.IsCancellationRequested)
                {
                    using var c = await _aia.AcceptTcpClientAsync(_stop.Token);
                    Interlocked.Increment(ref _aiaConnections);
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException) { }
        });

        // The agent's certificate comes from a CA the verifier does not have, and names where to fetch that CA.
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caReq = new CertificateRequest("CN=agent issuing CA", caKey, HashAlgorithmName.SHA256);
        caReq.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        using var ca = caReq.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        using var leafKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var leafReq = new CertificateRequest("CN=agent", leafKey, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback);
        leafReq.CertificateExtensions.Add(san.Build());
        leafReq.CertificateExtensions.Add(new X509AuthorityInformationAccessExtension(null, [$"http://127.0.0.1:{aiaPort}/ca.cer"]));
        using var leafPublic = leafReq.Create(ca, DateTimeOffset.UtcNow.AddMinutes(-1), DateTimeOffset.UtcNow.AddHours(12), [1, 2, 3, 4]);
        using var leaf = leafPublic.CopyWithPrivateKey(leafKey);
        _agentCert = X509CertificateLoader.LoadPkcs12(leaf.Export(X509ContentType.Pkcs12), null);

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ApplicationName = "agent-connector-test", ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, lo =>
        {
            lo.Use(next => ctx => { Interlocked.Increment(ref _agentConnections); return next(ctx); });
            // offline: the stand-in itself must not fetch its chain, so every visit to the AIA address is the verifier's.
            var context = SslStreamCertificateContext.Create(_agentCert, null, offline: true);
            lo.UseHttps(new TlsHandshakeCallbackOptions
            {
                OnConnection = _ => ValueTask.FromResult(new SslServerAuthenticationOptions { ServerCertificateContext = context }),
            });
        }));
        _agent = builder.Build();
        _agent.MapGet("/v2.1/quotes/integrity", () => Results.Json(new { code = 200, status = "Success", results = new { quote = "r" } }));
        await _agent.StartAsync();
        var addresses = _agent.Services.GetService(typeof(IServer)) is IServer s ? s.Features.Get<IServerAddressesFeature>()!.Addresses : [];
        _port = new Uri(addresses.Single()).Port;
    }

    public async Task DisposeAsync()
    {
        _stop.Cancel();
        _aia.Stop();
        await _agent.StopAsync();
        await _agent.DisposeAsync();
        _agentCert.Dispose();
    }

    [Fact]
    public async Task QuotesOfOneAgentShareOneConnectionAndThePinnedCertificatesIssuerIsNeverFetched()
    {
        using var connector = new AgentConnector(null, TimeSpan.FromSeconds(30));
        var config = new VerifierAgentConfig { Ip = "127.0.0.1", Port = _port, MtlsCert = _agentCert.ExportCertificatePem() };

        for (int i = 0; i < 3; i++)
        {
            var r = await connector.GetIntegrityQuoteAsync(config, VerifierService.NewNonce(), 1u << 16, partial: i > 0, 0, default);
            Assert.True(r.Status == AgentCallStatus.Ok, r.Message);
        }

        Assert.Equal(1, Volatile.Read(ref _agentConnections));
        Assert.Equal(0, Volatile.Read(ref _aiaConnections));
        Assert.True(AgentConnector.IdleConnectionTimeout >= TimeSpan.FromMinutes(1), "connections must outlive a busy verifier's quote period");
    }

    [Fact]
    public async Task AnotherCertificateThanThePinnedOneIsStillRefused()
    {
        using var connector = new AgentConnector(null, TimeSpan.FromSeconds(30));
        using var otherKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var other = new CertificateRequest("CN=someone else", otherKey, HashAlgorithmName.SHA256).CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        var config = new VerifierAgentConfig { Ip = "127.0.0.1", Port = _port, MtlsCert = other.ExportCertificatePem() };

        var r = await connector.GetIntegrityQuoteAsync(config, VerifierService.NewNonce(), 1u << 16, partial: false, 0, default);

        Assert.Equal(AgentCallStatus.Unreachable, r.Status);
        Assert.Equal(0, Volatile.Read(ref _aiaConnections));
    }
}
