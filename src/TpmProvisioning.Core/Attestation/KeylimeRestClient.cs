using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;

namespace TpmProvisioning.Attestation;

/// <summary>How a client reaches a Keylime service (registrar, verifier, agent) over TLS.</summary>
public class KeylimeClientOptions
{
    /// <summary>Trust only this CA for the service's TLS certificate (the server-components CA); null uses the system store.</summary>
    public X509Certificate2? CaCertificate { get; init; }
    /// <summary>Client certificate (with key) from the components CA, for the routes that need mutual TLS.</summary>
    public X509Certificate2? ClientCertificate { get; init; }
    /// <summary>Accept any server certificate. For labs only.</summary>
    public bool SkipCertificateCheck { get; init; }
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(60);
}

/// <summary>The HTTP side every Keylime client shares: TLS trust, the client certificate, the <c>{code, status, results}</c> envelope.</summary>
public abstract class KeylimeRestClient : IDisposable
{
    private readonly HttpClient _http;
    private readonly Uri _base;

    protected KeylimeRestClient(Uri baseUri, KeylimeClientOptions options)
    {
        ArgumentNullException.ThrowIfNull(baseUri);
        ArgumentNullException.ThrowIfNull(options);
        _base = baseUri;
        var handler = new SocketsHttpHandler { SslOptions = new SslClientAuthenticationOptions() };
        if (options.ClientCertificate is { } cc)
            handler.SslOptions.LocalCertificateSelectionCallback = (_, _, _, _, _) => cc;
        if (options.SkipCertificateCheck)
            handler.SslOptions.RemoteCertificateValidationCallback = (_, _, _, _) => true;
        else if (options.CaCertificate is { } ca)
            handler.SslOptions.RemoteCertificateValidationCallback = (_, cert, _, errors) => Pki.PinnedCaTls.Validates(ca, cert, errors);
        _http = new HttpClient(handler) { Timeout = options.Timeout };
    }

    protected static string V => "/v" + KeylimeApi.CurrentVersion;

    /// <summary>Sends a request; returns <c>results</c> for a 2xx answer, else throws <see cref="KeylimeRequestException"/>.</summary>
    protected async Task<JsonElement> SendAsync(HttpMethod method, string path, object? body, CancellationToken ct)
    {
        using var req = new HttpRequestMessage(method, new Uri(_base, path));
        if (body is not null)
            req.Content = new StringContent(body as string ?? JsonSerializer.Serialize(body), Encoding.UTF8, new MediaTypeHeaderValue("application/json"));
        using var resp = await _http.SendAsync(req, ct).ConfigureAwait(false);
        var text = await resp.Content.ReadAsStringAsync(ct).ConfigureAwait(false);
        JsonElement root;
        try { root = JsonDocument.Parse(text).RootElement.Clone(); }
        catch (JsonException) { throw new KeylimeRequestException((int)resp.StatusCode, text.Length > 200 ? text[..200] : text); }
        string status = root.ValueKind == JsonValueKind.Object && root.TryGetProperty("status", out var st) && st.ValueKind == JsonValueKind.String ? st.GetString() ?? "" : resp.ReasonPhrase ?? "";
        if ((int)resp.StatusCode is < 200 or > 299) throw new KeylimeRequestException((int)resp.StatusCode, status);
        return root.ValueKind == JsonValueKind.Object && root.TryGetProperty("results", out var results) ? results : default;
    }

    public void Dispose()
    {
        _http.Dispose();
        GC.SuppressFinalize(this);
    }
}
