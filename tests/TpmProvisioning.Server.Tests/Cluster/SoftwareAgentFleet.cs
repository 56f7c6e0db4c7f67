using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.Logging;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Cluster;

/// <summary>
/// Software Keylime agents for cluster tests and the bench (as the verifier load bench makes them): N agents, each on its own
/// loopback HTTPS port with its own P-256 AK, answering <c>/v2.1/quotes/integrity</c> with quotes made in software (TPMS_ATTEST
/// over the nonce, PCR 16 bound to the NK). Each answered quote is logged per agent with the time and the verifier that asked
/// (the subject of its client certificate, <c>verifier &lt;id&gt;</c>), so a test can tell who judged which agent when.
/// </summary>
public sealed class SoftwareAgentFleet : IAsyncDisposable
{
    public sealed record Quote(long Ticks, string Verifier)
    {
        public TimeSpan At => TimeSpan.FromTicks(Ticks);
    }

    private readonly WebApplication _app;
    private readonly SoftwareAttestationKey[] _keys;
    private readonly Dictionary<int, int> _portToAgent = [];
    private readonly ConcurrentQueue<Quote>[] _log;
    private readonly X509Certificate2 _tls;
    private readonly string _nkPem;
    private readonly string _dir;
    private static readonly Stopwatch Clock = Stopwatch.StartNew();

    private SoftwareAgentFleet(WebApplication app, SoftwareAttestationKey[] keys, X509Certificate2 tls, string nkPem, string dir)
    {
        _app = app; _keys = keys; _tls = tls; _nkPem = nkPem; _dir = dir;
        _log = keys.Select(_ => new ConcurrentQueue<Quote>()).ToArray();
        _requests = new int[keys.Length];
    }

    public int Count => _keys.Length;
    public IReadOnlyList<int> Ports { get; private set; } = [];
    public IReadOnlyList<string> AgentIds { get; private set; } = [];
    /// <summary>How long each agent takes to answer a quote (a real TPM takes a fraction of a second); zero by default.</summary>
    public TimeSpan AnswerDelay { get; set; }

    /// <summary>Time on the fleet's clock (the one quotes are logged with).</summary>
    public static TimeSpan Now => Clock.Elapsed;

    private readonly int[] _requests;

    /// <summary>Quote requests agent <paramref name="i"/> has received, answered or not yet.</summary>
    public int Requests(int i) => Volatile.Read(ref _requests[i]);

    /// <summary>Quotes answered for agent <paramref name="i"/>, oldest first.</summary>
    public IReadOnlyList<Quote> Quotes(int i) => _log[i].ToArray();

    public static async Task<SoftwareAgentFleet> StartAsync(int agents)
    {
        var dir = Directory.CreateTempSubdirectory("tpmprov-fleet-").FullName;
        using var nk = RSA.Create(2048);
        string nkPem = nk.ExportSubjectPublicKeyInfoPem() + "\n";
        var pcr16 = SHA256.HashData([.. new byte[32], .. SHA256.HashData(Encoding.UTF8.GetBytes(nkPem))]);
        using var tlsKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest("CN=fleet-agents", tlsKey, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback);
        req.CertificateExtensions.Add(san.Build());
        using var eph = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        var tls = X509CertificateLoader.LoadPkcs12(eph.Export(X509ContentType.Pkcs12), null);
        var keys = Enumerable.Range(0, agents).Select(_ => SoftwareAttestationKey.CreateEccP256()).ToArray();

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ApplicationName = "tpmprov-fleet", ContentRootPath = dir });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            for (int i = 0; i < agents; i++)
                k.Listen(IPAddress.Loopback, 0, lo => lo.UseHttps(new HttpsConnectionAdapterOptions
                {
                    ServerCertificate = tls,
                    // The verifier's client certificate names it; the fleet only reads it (any issuer).
                    ClientCertificateMode = Microsoft.AspNetCore.Server.Kestrel.Https.ClientCertificateMode.AllowCertificate,
                    ClientCertificateValidation = (_, _, _) => true,
                }));
        });
        var app = builder.Build();
        var fleet = new SoftwareAgentFleet(app, keys, tls, nkPem, dir);
        long boot = Environment.TickCount64;
        app.MapGet("/v2.1/quotes/integrity", async (HttpContext ctx) =>
        {
            int i = fleet._portToAgent[ctx.Connection.LocalPort];
            Interlocked.Increment(ref fleet._requests[i]);
            if (fleet.AnswerDelay > TimeSpan.Zero) await Task.Delay(fleet.AnswerDelay);
            var q = ctx.Request.Query;
            string nonce = q["nonce"].ToString();
            uint mask = Attestation.AgentService.ParseMask(q["mask"].ToString()) ?? (1u << 16);
            var selection = PcrSelection.FromBitmask(TpmAlgId.Sha256, mask);
            var values = new PcrValues();
            foreach (var (bank, index) in selection.Enumerate()) values.Set(bank, index, index == 16 ? pcr16 : new byte[32]);
            var clock = new TpmsClockInfo((ulong)(Environment.TickCount64 - boot), 1, 0, true);
            var (attest, sig) = keys[i].Quote(selection, values, Encoding.ASCII.GetBytes(nonce), clock);
            var results = new Dictionary<string, object?>
            {
                ["quote"] = KeylimeQuote.Format(attest, sig, Tpm2ToolsPcrBlob.Write(selection, values)),
                ["hash_alg"] = "sha256", ["enc_alg"] = "ecc", ["sign_alg"] = "ecdsa", ["boottime"] = 1000,
            };
            if (q["partial"] != "1") results["pubkey"] = nkPem;
            string who = ctx.Connection.ClientCertificate?.GetNameInfo(X509NameType.SimpleName, false) ?? "?";
            fleet._log[i].Enqueue(new Quote(Clock.Elapsed.Ticks, who.StartsWith("verifier ", StringComparison.Ordinal) ? who[9..] : who));
            return Results.Json(new Dictionary<string, object> { ["code"] = 200, ["status"] = "Success", ["results"] = results });
        });
        await app.StartAsync();
        var ports = app.Services.GetService(typeof(IServer)) is IServer server && server.Features.Get<IServerAddressesFeature>() is { } f
            ? f.Addresses.Select(a => new Uri(a).Port).ToList() : [];
        if (ports.Count != agents) throw new InvalidOperationException($"Kestrel bound {ports.Count} of {agents} ports.");
        for (int i = 0; i < agents; i++) fleet._portToAgent[ports[i]] = i;
        fleet.Ports = ports;
        fleet.AgentIds = Enumerable.Range(0, agents).Select(i => $"fleet-{i:D5}-{Guid.NewGuid():N}"[..32]).ToArray();
        return fleet;
    }

    /// <summary>The tenant's <c>POST /v2.1/agents/{id}</c> body for agent <paramref name="i"/> (PCR 15 policy, mTLS pinned to the fleet's certificate).</summary>
    public string AddBody(int i)
    {
        string policy = TpmPolicy.Format(new Dictionary<int, IReadOnlyList<string>> { [15] = [new string('0', 64)] });
        return new JsonObject
        {
            ["cloudagent_ip"] = "127.0.0.1", ["cloudagent_port"] = Ports[i], ["tpm_policy"] = policy,
            ["ak_tpm"] = Convert.ToBase64String(_keys[i].Public.ToTpm2B()), ["mtls_cert"] = _tls.ExportCertificatePem(),
            ["accept_tpm_hash_algs"] = new JsonArray("sha256"), ["accept_tpm_encryption_algs"] = new JsonArray("ecc"),
            ["accept_tpm_signing_algs"] = new JsonArray("ecdsa"),
        }.ToJsonString();
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
        foreach (var k in _keys) k.Dispose();
        _tls.Dispose();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }
}
