using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace TpmProvisioning.Attestation.Verifier;

/// <summary>
/// The verifier's operational states, with Keylime's numbers and meanings (<c>keylime/common/states.py</c>), so a tenant that
/// reads <c>operational_state</c> understands ours.
/// </summary>
public enum OperationalState
{
    /// <summary>Known to the registrar, not yet added to a verifier.</summary>
    Registered = 0,
    /// <summary>Added; the first quote has not been asked for yet.</summary>
    Start = 1,
    /// <summary>Saved without being watched.</summary>
    Saved = 2,
    /// <summary>Being watched: the last quote passed and the next one is scheduled.</summary>
    GetQuote = 3,
    /// <summary>The agent did not answer; retrying.</summary>
    GetQuoteRetry = 4,
    /// <summary>Delivering V (the verifier's half of the payload key).</summary>
    ProvideV = 5,
    /// <summary>The agent did not take V; retrying.</summary>
    ProvideVRetry = 6,
    /// <summary>Unreachable after every retry, or an unexpected answer: watching stopped.</summary>
    Failed = 7,
    /// <summary>Deleted while being watched; removed once the loop notices.</summary>
    Terminated = 8,
    /// <summary>A quote failed its checks: watching stopped, subscribers notified.</summary>
    InvalidQuote = 9,
    /// <summary>Stopped by the tenant (<c>PUT .../stop</c>).</summary>
    TenantFailed = 10,
}

/// <summary>Keylime's verdict derived from the operational state.</summary>
public enum AttestationStatus
{
    Pending,
    Pass,
    Fail,
}

/// <summary>Facts about the states, as Keylime defines them.</summary>
public static class OperationalStates
{
    /// <summary>States from which <c>PUT .../reactivate</c> (and a verifier restart) resumes watching: 1, 3, 4, 5, 6.</summary>
    public static bool IsApprovedReactivate(OperationalState s) =>
        s is OperationalState.Start or OperationalState.GetQuote or OperationalState.GetQuoteRetry or OperationalState.ProvideV or OperationalState.ProvideVRetry;

    /// <summary>States whose agent is watched by the loop.</summary>
    public static bool IsWatched(OperationalState s) => IsApprovedReactivate(s);

    /// <summary>PASS for 3-6, FAIL for 7, 9, 10, PENDING otherwise.</summary>
    public static AttestationStatus Status(OperationalState s) => s switch
    {
        OperationalState.GetQuote or OperationalState.GetQuoteRetry or OperationalState.ProvideV or OperationalState.ProvideVRetry => AttestationStatus.Pass,
        OperationalState.Failed or OperationalState.InvalidQuote or OperationalState.TenantFailed => AttestationStatus.Fail,
        _ => AttestationStatus.Pending,
    };

    /// <summary>Keylime's upper-case state name (<c>GET_QUOTE</c>, <c>INVALID_QUOTE</c>...).</summary>
    public static string KeylimeName(OperationalState s) => s switch
    {
        OperationalState.Registered => "REGISTERED",
        OperationalState.Start => "START",
        OperationalState.Saved => "SAVED",
        OperationalState.GetQuote => "GET_QUOTE",
        OperationalState.GetQuoteRetry => "GET_QUOTE_RETRY",
        OperationalState.ProvideV => "PROVIDE_V",
        OperationalState.ProvideVRetry => "PROVIDE_V_RETRY",
        OperationalState.Failed => "FAILED",
        OperationalState.Terminated => "TERMINATED",
        OperationalState.InvalidQuote => "INVALID_QUOTE",
        OperationalState.TenantFailed => "TENANT_FAILED",
        _ => ((int)s).ToString(CultureInfo.InvariantCulture),
    };
}

/// <summary>
/// One failed check of an attestation: Keylime's event id (<c>pcr_validation.invalid_pcr_15</c>, <c>qoute_validation.quote_validation</c>
/// — Keylime's own spelling — <c>ima.*</c>, <c>measured_boot.*</c>), a readable reason, and the PCR or file it concerns.
/// </summary>
public sealed record AttestationFailure
{
    [JsonPropertyName("event_id")] public required string EventId { get; init; }
    [JsonPropertyName("reason")] public required string Reason { get; init; }
    [JsonPropertyName("pcr")] public int? Pcr { get; init; }
    [JsonPropertyName("path")] public string? Path { get; init; }
    /// <summary>True when a later quote could pass again (Keylime's <c>recoverable</c>).</summary>
    [JsonPropertyName("recoverable")] public bool Recoverable { get; init; } = true;

    public override string ToString() => Pcr is { } p ? $"{EventId} (PCR {p}): {Reason}" : Path is { } f ? $"{EventId} ({f}): {Reason}" : $"{EventId}: {Reason}";
}

/// <summary>
/// Keylime's static PCR policy: a JSON object (sent as a string) mapping PCR numbers to the values allowed in any bank
/// (hex, of any digest size), plus <c>mask</c>, the PCRs to quote.
/// </summary>
public sealed class TpmPolicy
{
    private TpmPolicy(uint mask, IReadOnlyDictionary<int, IReadOnlyList<byte[]>> allowed, string text)
    {
        Mask = mask;
        Allowed = allowed;
        Text = text;
    }

    /// <summary>The PCRs the policy asks to quote (bits 0-23).</summary>
    public uint Mask { get; }
    /// <summary>Allowed values per PCR.</summary>
    public IReadOnlyDictionary<int, IReadOnlyList<byte[]>> Allowed { get; }
    /// <summary>The policy as given (a JSON string).</summary>
    public string Text { get; }

    /// <summary>An empty policy: no PCR checked, nothing quoted beyond what the verifier adds.</summary>
    public static TpmPolicy Empty { get; } = new(0, new Dictionary<int, IReadOnlyList<byte[]>>(), "{}");

    /// <summary>Parses a <c>tpm_policy</c> string; null with <paramref name="error"/> when malformed.</summary>
    public static TpmPolicy? TryParse(string? json, out string? error)
    {
        error = null;
        if (string.IsNullOrWhiteSpace(json) || json.Trim() is "null" or "{}") return Empty;
        if (json.Length > 256 * 1024) { error = "tpm_policy: larger than 256 KiB"; return null; }
        try
        {
            using var doc = JsonDocument.Parse(json);
            if (doc.RootElement.ValueKind != JsonValueKind.Object) { error = "tpm_policy: must be a JSON object"; return null; }
            uint mask = 0;
            var allowed = new Dictionary<int, IReadOnlyList<byte[]>>();
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (p.Name == "mask")
                {
                    if (p.Value.ValueKind != JsonValueKind.String || AgentService.ParseMask(p.Value.GetString()) is not { } m)
                    {
                        if (p.Value.ValueKind == JsonValueKind.String && p.Value.GetString() is "0x0" or "0") continue;
                        error = "tpm_policy.mask: must be a hex PCR mask such as 0x408000";
                        return null;
                    }
                    mask = m;
                    continue;
                }
                if (!int.TryParse(p.Name, NumberStyles.None, CultureInfo.InvariantCulture, out int pcr) || pcr > 23)
                {
                    error = $"tpm_policy: '{Clip(p.Name)}' is not a PCR number 0-23";
                    return null;
                }
                var values = new List<byte[]>();
                var items = p.Value.ValueKind switch
                {
                    JsonValueKind.Array => p.Value.EnumerateArray().ToList(),
                    JsonValueKind.String => [p.Value],
                    _ => null,
                };
                if (items is null) { error = $"tpm_policy.{pcr}: must be a list of hex digests"; return null; }
                foreach (var v in items)
                {
                    var s = v.ValueKind == JsonValueKind.String ? v.GetString() : null;
                    if (s is null || s.Length is not (40 or 64 or 96 or 128) || !IsHex(s))
                    {
                        error = $"tpm_policy.{pcr}: '{Clip(s ?? v.ToString())}' is not a SHA-1/256/384/512 digest in hex";
                        return null;
                    }
                    values.Add(Convert.FromHexString(s));
                }
                allowed[pcr] = values;
                mask |= 1u << pcr;
            }
            return new TpmPolicy(mask, allowed, json);
        }
        catch (JsonException ex)
        {
            error = "tpm_policy: not valid JSON (" + ex.Message + ")";
            return null;
        }
    }

    /// <summary>Builds a policy text from PCR values (hex).</summary>
    public static string Format(IReadOnlyDictionary<int, IReadOnlyList<string>> values, uint extraMask = 0)
    {
        uint mask = extraMask;
        var d = new Dictionary<string, object>();
        foreach (var (pcr, list) in values.OrderBy(v => v.Key))
        {
            d[pcr.ToString(CultureInfo.InvariantCulture)] = list.Select(x => x.ToLowerInvariant()).ToArray();
            mask |= 1u << pcr;
        }
        d["mask"] = "0x" + mask.ToString("x", CultureInfo.InvariantCulture);
        return JsonSerializer.Serialize(d);
    }

    private static bool IsHex(string s)
    {
        foreach (char c in s) if (!char.IsAsciiHexDigit(c)) return false;
        return true;
    }

    private static string Clip(string s) => s.Length <= 40 ? s : s[..40] + "…";
}

/// <summary>What the quote interval counts from.</summary>
public enum QuoteSchedule
{
    /// <summary>
    /// From when the last quote was due: each agent is asked every interval (start to start), however long the round trip took,
    /// so a fleet of N agents is judged at N / interval per second. An agent is never asked sooner than half an interval after its
    /// last verdict: a quote that came later than that moves the agent to a new slot, and missed quotes are not made up.
    /// </summary>
    FixedRate,
    /// <summary>
    /// From the last verdict, as Keylime's verifier schedules it: each agent's period is the interval plus its round trip
    /// (network, the agent's TPM, judging), so a fleet is judged somewhat slower than N / interval.
    /// </summary>
    AfterVerdict,
}

/// <summary>Settings of the verifier surface.</summary>
public sealed class VerifierSettings
{
    /// <summary>How often each agent is asked for a quote (Keylime's <c>quote_interval</c>, "time between integrity measurement checks", default 2 s); see <see cref="QuoteSchedule"/>.</summary>
    public TimeSpan QuoteInterval { get; set; } = TimeSpan.FromSeconds(2);
    /// <summary>What <see cref="QuoteInterval"/> counts from: the time the last quote was due (default) or its verdict, as Keylime's own verifier does.</summary>
    public QuoteSchedule QuoteSchedule { get; set; } = QuoteSchedule.FixedRate;
    /// <summary>Base of the retry back-off (Keylime's <c>retry_interval</c>, default 2 s): retry n waits interval^n seconds.</summary>
    public double RetryInterval { get; set; } = 2;
    /// <summary>Retries before an unreachable agent is FAILED (Keylime's <c>max_retries</c>, default 5).</summary>
    public int MaxRetries { get; set; } = 5;
    /// <summary>Exponential back-off (Keylime's <c>exponential_backoff</c>, default true); false retries every <see cref="RetryInterval"/> seconds.</summary>
    public bool ExponentialBackoff { get; set; } = true;
    /// <summary>Timeout of one request to an agent.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(30);
    /// <summary>How many agents are asked for a quote at the same time; the rest wait their turn.</summary>
    public int MaxConcurrentRequests { get; set; } = 64;
    /// <summary>This verifier's id (Keylime's <c>verifier_id</c>). On a shared store, "default" becomes a stable id generated once per data path.</summary>
    public string VerifierId { get; set; } = "default";
    /// <summary>Shared store: how long a verifier's claim on an agent lasts unrenewed (default three quote intervals, at least 6 s).</summary>
    public TimeSpan? LeaseDuration { get; set; }
    /// <summary>Webhooks that receive revocation notifications (Keylime's <c>webhook_url</c>), once per event.</summary>
    public IList<Uri> RevocationWebhooks { get; set; } = [];
    /// <summary>Require agents to present the certificate registered as <c>mtls_cert</c> (Keylime's <c>enable_agent_mtls</c>, on).</summary>
    public bool RequireAgentMtls { get; set; } = true;
    /// <summary>The client certificate (with key) the verifier presents to agents; null issues one from the server-components CA at start.</summary>
    public System.Security.Cryptography.X509Certificates.X509Certificate2? ClientCertificate { get; set; }
    /// <summary>
    /// Seals the tenant's secrets (<c>revocation_key</c>, <c>v</c>) with the master key before they are stored; the server always
    /// sets one. Null (an engine used without a server) stores them as given.
    /// </summary>
    public Kms.SecretSealer? Secrets { get; set; }
    /// <summary>
    /// The master key that seals them (kind, TPM or HSM), as for the KMS. Null: the server's KMS master key when it hosts the KMS
    /// or the data path already has one, else a key file of the verifier's own under <c>&lt;DataPath&gt;/verifier</c>.
    /// </summary>
    public Kms.KmsSettings? MasterKey { get; set; }
}
