using System.Net;
using System.Runtime.CompilerServices;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;

namespace TpmProvisioning.Attestation.Verifier;

/// <summary>How one request to an agent ended.</summary>
public enum AgentCallStatus
{
    /// <summary>200 with a parseable envelope.</summary>
    Ok,
    /// <summary>Could not connect, timed out, or the agent answered 408/500/503 (Keylime retries these).</summary>
    Unreachable,
    /// <summary>Any other answer: Keylime stops watching (FAILED).</summary>
    Refused,
}

/// <summary>The outcome of one request to an agent.</summary>
public sealed record AgentCallResult(AgentCallStatus Status, int HttpStatus, string Message, JsonElement Results);

/// <summary>
/// Talks to Keylime agents as the verifier: <c>GET /quotes/integrity</c> and <c>POST /keys/vkey</c> over mutual TLS, presenting
/// the verifier's client certificate and accepting only the server certificate the agent registered (<c>mtls_cert</c>), as
/// Keylime's verifier pins it. Agents with the same certificate share a connection pool.
/// </summary>
public sealed class AgentConnector : IDisposable
{
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, HttpClient> _clients = new(StringComparer.OrdinalIgnoreCase);
    private readonly X509Certificate2? _clientCertificate;
    private readonly TimeSpan _timeout;

    /// <param name="clientCertificate">The verifier's client certificate (with key), trusted by the agents.</param>
    /// <param name="timeout">Timeout of one request.</param>
    public AgentConnector(X509Certificate2? clientCertificate, TimeSpan timeout)
    {
        _clientCertificate = clientCertificate;
        _timeout = timeout;
    }

    /// <summary>
    /// The largest answer read from an agent (64 MiB: room for a long IMA log and a UEFI event log); a larger one is not buffered
    /// and counts as no answer, so a hostile agent cannot make the verifier hold gigabytes.
    /// </summary>
    public const int MaxAnswerBytes = 64 * 1024 * 1024;

    /// <summary>How long a connection to an agent is kept unused before it is closed.</summary>
    public static readonly TimeSpan IdleConnectionTimeout = TimeSpan.FromMinutes(5);

    /// <summary>One connection pool per pinned agent certificate (agents without one share the plain-HTTP pool).</summary>
    private HttpClient ClientFor(string? pin) => _clients.GetOrAdd(pin ?? "", p =>
    {
        var handler = new SocketsHttpHandler
        {
            // One connection per agent, kept between quotes: a new one costs a TLS handshake (key exchange and the agent's certificate)
            // that is several times the cost of a quote. Kept well beyond the quote interval, so a verifier that falls behind (a busy
            // machine, a burst of new agents) is not pushed further behind by handshaking again for every quote.
            PooledConnectionIdleTimeout = IdleConnectionTimeout,
            ConnectTimeout = _timeout,
            SslOptions = new SslClientAuthenticationOptions
            {
                // The agent's certificate is pinned (below): nothing to fetch for its chain, ever.
                CertificateChainPolicy = new X509ChainPolicy { DisableCertificateDownloads = true, RevocationMode = X509RevocationMode.NoCheck },
                // Only the certificate the agent registered (its mtls_cert) is accepted, as Keylime's verifier pins it.
                RemoteCertificateValidationCallback = (_, cert, _, _) =>
                    p.Length > 0 && cert is not null && string.Equals(cert.GetCertHashString(System.Security.Cryptography.HashAlgorithmName.SHA256), p, StringComparison.OrdinalIgnoreCase),
            },
        };
        if (_clientCertificate is { } cc) handler.SslOptions.LocalCertificateSelectionCallback = (_, _, _, _, _) => cc;
        return new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan, MaxResponseContentBufferSize = MaxAnswerBytes };
    });

    /// <summary>The SHA-256 thumbprint an agent's <c>mtls_cert</c> pins; null when it is absent or not a certificate.</summary>
    public static string? PinOf(string? mtlsCertPem)
    {
        if (string.IsNullOrWhiteSpace(mtlsCertPem) || mtlsCertPem == "disabled") return null;
        try
        {
            using var c = X509Certificate2.CreateFromPem(mtlsCertPem);
            return c.GetCertHashString(System.Security.Cryptography.HashAlgorithmName.SHA256);
        }
        catch (Exception ex) when (ex is System.Security.Cryptography.CryptographicException or ArgumentException) { return null; }
    }

    /// <summary>The agent's base address: https when its certificate is pinned (<paramref name="pin"/>), http when the agent has none (only when the verifier allows that).</summary>
    private static string BaseAddress(VerifierAgentConfig config, string? pin)
    {
        var host = IPAddress.TryParse(config.Ip, out var ip) && ip.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{ip}]" : config.Ip;
        return new Uri($"{(pin is null ? "http" : "https")}://{host}:{config.Port}").GetLeftPart(UriPartial.Authority);
    }

    /// <summary>Base addresses by agent config: a watch holds its agent's config, so the address is built once, not per request.</summary>
    private readonly ConditionalWeakTable<VerifierAgentConfig, string> _bases = new();

    private Uri RequestUri(VerifierAgentConfig config, string? pin, string pathAndQuery)
    {
        // Looked up first, so the common case allocates no closure over the pin.
        if (!_bases.TryGetValue(config, out var address))
        {
            address = BaseAddress(config, pin);
            _bases.AddOrUpdate(config, address);
        }
        return new(address + pathAndQuery);
    }

    /// <summary>Pins by certificate text: a watched agent's request is held by its watch, so its certificate is parsed once, not per request.</summary>
    private readonly System.Runtime.CompilerServices.ConditionalWeakTable<string, StrongBox<string?>> _pins = new();

    private string? Pin(string? mtlsCertPem) =>
        mtlsCertPem is null ? null : _pins.GetValue(mtlsCertPem, pem => new StrongBox<string?>(PinOf(pem))).Value;

    /// <summary><c>GET /v{version}/quotes/integrity?nonce=&amp;mask=&amp;partial=&amp;ima_ml_entry=</c>.</summary>
    public Task<AgentCallResult> GetIntegrityQuoteAsync(VerifierAgentConfig config, string nonce, uint mask, bool partial, int imaEntry, CancellationToken ct) =>
        SendAsync(config, HttpMethod.Get,
            $"/v{Version(config)}/quotes/integrity?nonce={nonce}&mask=0x{mask:x}&partial={(partial ? 1 : 0)}&ima_ml_entry={imaEntry}", null, ct);

    /// <summary><c>GET /v{version}/quotes/identity?nonce=</c>.</summary>
    public Task<AgentCallResult> GetIdentityQuoteAsync(VerifierAgentConfig config, string nonce, CancellationToken ct) =>
        SendAsync(config, HttpMethod.Get, $"/v{Version(config)}/quotes/identity?nonce={nonce}", null, ct);

    /// <summary><c>POST /v{version}/keys/vkey</c> with V encrypted to the agent's NK (RSA-OAEP-SHA1, as Keylime).</summary>
    public Task<AgentCallResult> ProvideVAsync(VerifierAgentConfig config, string encryptedV, CancellationToken ct) =>
        SendAsync(config, HttpMethod.Post, $"/v{Version(config)}/keys/vkey", JsonSerializer.Serialize(new Dictionary<string, string> { ["encrypted_key"] = encryptedV }), ct);

    /// <summary><c>POST /v{version}/keys/ukey</c>: the tenant's U encrypted to the NK, the auth tag and the encrypted payload.</summary>
    public Task<AgentCallResult> ProvideUAsync(VerifierAgentConfig config, string encryptedU, string authTag, string? encryptedPayload, CancellationToken ct)
    {
        var body = new Dictionary<string, string> { ["encrypted_key"] = encryptedU, ["auth_tag"] = authTag };
        if (encryptedPayload is not null) body["payload"] = encryptedPayload;
        return SendAsync(config, HttpMethod.Post, $"/v{Version(config)}/keys/ukey", JsonSerializer.Serialize(body), ct);
    }

    /// <summary><c>GET /v{version}/keys/verify?challenge=</c>: the agent's HMAC of the challenge under K, once it has K.</summary>
    public Task<AgentCallResult> VerifyKeyAsync(VerifierAgentConfig config, string challenge, CancellationToken ct) =>
        SendAsync(config, HttpMethod.Get, $"/v{Version(config)}/keys/verify?challenge={Uri.EscapeDataString(challenge)}", null, ct);

    private static string Version(VerifierAgentConfig config) =>
        KeylimeApi.SupportedVersions.Contains(config.SupportedVersion) ? config.SupportedVersion : KeylimeApi.CurrentVersion;

    private async Task<AgentCallResult> SendAsync(VerifierAgentConfig config, HttpMethod method, string pathAndQuery, string? json, CancellationToken ct)
    {
        var pin = Pin(config.MtlsCert);
        var http = ClientFor(pin);
        using var req = new HttpRequestMessage(method, RequestUri(config, pin, pathAndQuery));
        if (json is not null) req.Content = new StringContent(json, Encoding.UTF8, new MediaTypeHeaderValue("application/json"));
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(_timeout);
        try
        {
            using var resp = await http.SendAsync(req, HttpCompletionOption.ResponseContentRead, cts.Token).ConfigureAwait(false);
            int code = (int)resp.StatusCode;
            // The answer is already buffered (ResponseContentRead): parse it from that buffer instead of copying it out first.
            using var body = await resp.Content.ReadAsStreamAsync(cts.Token).ConfigureAwait(false);
            JsonElement results = default;
            string message = resp.ReasonPhrase ?? "";
            try
            {
                using var doc = await JsonDocument.ParseAsync(body, default, cts.Token).ConfigureAwait(false);
                if (doc.RootElement.ValueKind == JsonValueKind.Object)
                {
                    if (doc.RootElement.TryGetProperty("status", out var st) && st.ValueKind == JsonValueKind.String) message = st.GetString() ?? message;
                    if (doc.RootElement.TryGetProperty("results", out var r)) results = r.Clone();
                }
            }
            catch (JsonException) { if (code == 200) return new(AgentCallStatus.Refused, code, "The agent's answer is not JSON.", default); }
            if (code == 200) return new(AgentCallStatus.Ok, code, message, results);
            return new(code is 408 or 500 or 502 or 503 or 504 or 599 ? AgentCallStatus.Unreachable : AgentCallStatus.Refused, code, message, results);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            return new(AgentCallStatus.Unreachable, 599, "The agent did not answer in time.", default);
        }
        catch (HttpRequestException ex)
        {
            // A refused handshake (wrong certificate) is as fatal as Keylime's SSL errors: it will not heal by retrying... but a
            // restarting agent also drops connections, so treat it as unreachable and let the retries decide.
            return new(AgentCallStatus.Unreachable, 599, ex.InnerException?.Message ?? ex.Message, default);
        }
    }

    public void Dispose()
    {
        foreach (var c in _clients.Values) c.Dispose();
        _clients.Clear();
    }
}
