using System.Globalization;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Org.BouncyCastle.Crypto.Digests;
using Org.BouncyCastle.Crypto.Engines;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Crypto.Signers;
using BcBigInteger = Org.BouncyCastle.Math.BigInteger;

namespace TpmProvisioning.Attestation.Verifier;

/// <summary>A revocation notification in Keylime's shape: <c>msg</c> is a JSON text, <c>signature</c> its RSA-PSS-SHA256 signature (base64) or <c>none</c>.</summary>
public sealed record RevocationNotice(string Msg, string Signature)
{
    /// <summary>The JSON body a webhook receives.</summary>
    public string ToJson() => JsonSerializer.Serialize(new Dictionary<string, string> { ["msg"] = Msg, ["signature"] = Signature });
}

/// <summary>
/// Builds and sends revocation notifications as Keylime's verifier does (<c>prepare_error</c>, <c>notify_webhook</c>): the message
/// names the agent, the event and its severity, and is signed with the tenant's revocation key (RSA-PSS with SHA-256, MGF1-SHA-256
/// and the largest salt, as Keylime's <c>rsa_sign</c>). Each notice goes once to each subscribed webhook — not to every agent of
/// the fleet as Keylime's agent notifier does.
/// </summary>
public sealed class RevocationNotifier : IDisposable
{
    private readonly HttpClient _http;
    private readonly IReadOnlyList<Uri> _webhooks;
    private readonly Action<string>? _log;

    /// <param name="webhooks">Subscribers.</param>
    /// <param name="trustedCa">Besides the system store, accept HTTPS webhooks whose certificate chains to this CA (the server-components CA).</param>
    /// <param name="log">Where delivery problems are reported.</param>
    public RevocationNotifier(IEnumerable<Uri> webhooks, System.Security.Cryptography.X509Certificates.X509Certificate2? trustedCa = null, Action<string>? log = null)
    {
        _webhooks = webhooks?.ToList() ?? [];
        var handler = new SocketsHttpHandler();
        if (trustedCa is not null)
            handler.SslOptions.RemoteCertificateValidationCallback = (_, cert, _, errors) =>
                errors == System.Net.Security.SslPolicyErrors.None || Pki.PinnedCaTls.Validates(trustedCa, cert, errors);
        _http = new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(10) };
        _log = log;
    }

    public IReadOnlyList<Uri> Webhooks => _webhooks;

    /// <summary>Builds the notice for <paramref name="agent"/> (Keylime's <c>prepare_error</c>).</summary>
    public static RevocationNotice Prepare(VerifierAgentRecord agent, string type, AttestationFailure? failure, int severity, DateTimeOffset at)
    {
        ArgumentNullException.ThrowIfNull(agent);
        var msg = new Dictionary<string, object?>
        {
            ["type"] = type,
            ["ip"] = agent.Config.Ip,
            ["agent_id"] = agent.AgentId,
            ["port"] = agent.Config.Port,
            ["tpm_policy"] = agent.Config.TpmPolicy,
            ["meta_data"] = agent.Config.Metadata ?? "{}",
            ["event_time"] = at.UtcDateTime.ToString("ddd MMM d HH:mm:ss yyyy", CultureInfo.InvariantCulture),
        };
        if (failure is not null)
        {
            msg["event_id"] = failure.EventId;
            msg["severity_label"] = VerifierSeverity.Label(severity);
            msg["context"] = JsonSerializer.Serialize(new Dictionary<string, object?> { ["message"] = failure.Reason, ["pcr"] = failure.Pcr, ["path"] = failure.Path });
        }
        string text = JsonSerializer.Serialize(msg);
        return new RevocationNotice(text, string.IsNullOrWhiteSpace(agent.Config.RevocationKey) ? "none" : Sign(agent.Config.RevocationKey, Encoding.UTF8.GetBytes(text)));
    }

    /// <summary>RSA-PSS-SHA256 with MGF1-SHA256 and the maximum salt length, base64 (Keylime's <c>crypto.rsa_sign</c>).</summary>
    public static string Sign(string privateKeyPem, byte[] message)
    {
        using var rsa = RSA.Create();
        rsa.ImportFromPem(privateKeyPem);
        var p = rsa.ExportParameters(true);
        try
        {
            var key = new RsaPrivateCrtKeyParameters(B(p.Modulus!), B(p.Exponent!), B(p.D!), B(p.P!), B(p.Q!), B(p.DP!), B(p.DQ!), B(p.InverseQ!));
            int emLen = (rsa.KeySize - 1 + 7) / 8;
            var signer = new PssSigner(new RsaBlindedEngine(), new Sha256Digest(), new Sha256Digest(), emLen - 32 - 2);
            signer.Init(true, key);
            signer.BlockUpdate(message, 0, message.Length);
            return Convert.ToBase64String(signer.GenerateSignature());
        }
        finally
        {
            CryptographicOperations.ZeroMemory(p.D);
            CryptographicOperations.ZeroMemory(p.P);
            CryptographicOperations.ZeroMemory(p.Q);
            CryptographicOperations.ZeroMemory(p.DP);
            CryptographicOperations.ZeroMemory(p.DQ);
            CryptographicOperations.ZeroMemory(p.InverseQ);
        }
    }

    /// <summary>Verifies a notice's signature with the revocation key's public half (any PSS salt length, as OpenSSL's auto-detect).</summary>
    public static bool Verify(RSA publicKey, RevocationNotice notice)
    {
        ArgumentNullException.ThrowIfNull(notice);
        byte[] sig;
        try { sig = Convert.FromBase64String(notice.Signature); }
        catch (FormatException) { return false; }
        return VerifyPssSha256(publicKey, Encoding.UTF8.GetBytes(notice.Msg), sig);
    }

    /// <summary>RSA-PSS-SHA256 (MGF1-SHA256) with the maximum salt (Keylime, pyca <c>PSS.MAX_LENGTH</c>) or a digest-length salt (.NET).</summary>
    public static bool VerifyPssSha256(RSA publicKey, byte[] message, byte[] sig)
    {
        ArgumentNullException.ThrowIfNull(publicKey);
        var p = publicKey.ExportParameters(false);
        var key = new RsaKeyParameters(false, B(p.Modulus!), B(p.Exponent!));
        int emLen = (publicKey.KeySize - 1 + 7) / 8;
        foreach (int salt in new[] { emLen - 32 - 2, 32 })
        {
            var v = new PssSigner(new RsaBlindedEngine(), new Sha256Digest(), new Sha256Digest(), salt);
            v.Init(false, key);
            v.BlockUpdate(message, 0, message.Length);
            // A signature value at or above the modulus makes the engine throw (DataLengthException): it does not verify.
            try { if (v.VerifySignature(sig)) return true; }
            catch (Exception ex) when (ex is Org.BouncyCastle.Crypto.CryptoException or ArgumentException or InvalidOperationException) { }
        }
        return false;
    }

    private static BcBigInteger B(byte[] b) => new(1, b);

    /// <summary>Posts the notice to every webhook, each tried up to three times; never throws.</summary>
    public async Task SendAsync(RevocationNotice notice, CancellationToken ct = default)
    {
        foreach (var hook in _webhooks)
        {
            for (int attempt = 1; attempt <= 3; attempt++)
            {
                try
                {
                    using var content = new StringContent(notice.ToJson(), Encoding.UTF8, new MediaTypeHeaderValue("application/json"));
                    using var resp = await _http.PostAsync(hook, content, ct).ConfigureAwait(false);
                    if (resp.IsSuccessStatusCode) break;
                    _log?.Invoke($"Revocation webhook {hook} answered {(int)resp.StatusCode} (attempt {attempt})");
                }
                catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException && !ct.IsCancellationRequested)
                {
                    _log?.Invoke($"Revocation webhook {hook} failed: {ex.Message} (attempt {attempt})");
                }
                if (attempt < 3) await Task.Delay(TimeSpan.FromMilliseconds(250 * attempt), ct).ConfigureAwait(false);
            }
        }
    }

    public void Dispose() => _http.Dispose();
}

/// <summary>Keylime's default severity labels (<c>severity_labels</c>) with their levels; by default every event is <c>emergency</c>, the highest, which stops watching.</summary>
public static class VerifierSeverity
{
    private static readonly string[] Labels = ["info", "notice", "warning", "error", "critical", "alert", "emergency"];
    public const int Emergency = 6;
    public static string Label(int level) => level >= 0 && level < Labels.Length ? Labels[level] : level.ToString(CultureInfo.InvariantCulture);
}
