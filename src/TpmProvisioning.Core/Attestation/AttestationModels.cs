using System.Text.Json;
using System.Text.Json.Serialization;

namespace TpmProvisioning.Attestation;

/// <summary>The Keylime REST API versions this engine implements.</summary>
public static class KeylimeApi
{
    /// <summary>The version our own clients (cmdlets, the agent's registration, the verifier) speak; one of <see cref="SupportedVersions"/>.</summary>
    public const string CurrentVersion = "2.1";
    /// <summary>The newest version served, <c>current_version</c> in <c>GET /version</c>.</summary>
    public const string LatestVersion = "2.5";
    /// <summary>
    /// Every version served (the same routes under <c>/v2.0/</c> … <c>/v2.5/</c>) and advertised in <c>GET /version</c>'s
    /// <c>supported_versions</c>; Keylime's tenant and verifier pick the highest one both sides know. Keylime 7.14 answers the
    /// 2.x routes the registrar, verifier and agent share the same way in every 2.x version (only 1.0 differs: compressed
    /// quotes), and rust-keylime's agent speaks 2.1 to 2.5.
    /// </summary>
    public static IReadOnlyList<string> SupportedVersions { get; } = ["2.0", "2.1", "2.2", "2.3", "2.4", "2.5"];
}

/// <summary>
/// The outcome of an attestation engine call, in the terms a Keylime envelope needs: the HTTP-style status, Keylime's
/// status text (<c>Success</c> or a reason) and, on success, the results object.
/// </summary>
public sealed record AttestationOutcome<T>(int Status, string Message, T? Value)
{
    public bool Succeeded => Status is >= 200 and < 300;
    public static AttestationOutcome<T> Ok(T value) => new(200, "Success", value);
    public static AttestationOutcome<T> Fail(int status, string message) => new(status, message, default);
}

/// <summary>Who called, for the audit log.</summary>
public sealed record AttestationCallInfo
{
    /// <summary>Client certificate subject, or <c>agent</c> for unauthenticated agent calls, or the local user.</summary>
    public string Actor { get; init; } = "agent";
    /// <summary>Remote address, or <c>local</c>.</summary>
    public string Source { get; init; } = "local";
}

/// <summary>
/// An agent's registration (<c>POST /v2.1/agents/{agent_id}</c>). Binary fields are base64 as on the wire; they are
/// decoded and checked by <see cref="RegistrarService.RegisterAsync"/>.
/// </summary>
public sealed record AgentRegistration
{
    /// <summary>base64 TPM2B_PUBLIC of the AK.</summary>
    public string? AikTpm { get; init; }
    /// <summary>base64 TPM2B_PUBLIC of the EK. When absent, taken from <see cref="EkCert"/> with the TCG default EK template for its key.</summary>
    public string? EkTpm { get; init; }
    /// <summary>base64 DER of the EK certificate.</summary>
    public string? EkCert { get; init; }
    /// <summary>The agent's HTTPS certificate, PEM, or <c>disabled</c>.</summary>
    public string? MtlsCert { get; init; }
    public string? Ip { get; init; }
    public int? Port { get; init; }

    /// <summary>
    /// Reads Keylime's registration body. Unknown members are ignored (Keylime agents send extras such as
    /// <c>iak_tpm</c>); <c>port</c> may be a number or a string, as Keylime's own example has it. Returns null with
    /// <paramref name="error"/> when the body is not a JSON object of that shape.
    /// </summary>
    public static AgentRegistration? Parse(ReadOnlySpan<byte> json, out string? error)
    {
        error = null;
        JsonDocument doc;
        if (!System.Text.Unicode.Utf8.IsValid(json)) { error = "body: not valid UTF-8"; return null; }
        try { doc = JsonDocument.Parse(json.ToArray(), new JsonDocumentOptions { MaxDepth = 16 }); }
        catch (JsonException) { error = "body: not valid JSON"; return null; }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) { error = "body: must be a JSON object"; return null; }
            string? Str(string name, ref string? err)
            {
                if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
                if (v.ValueKind != JsonValueKind.String) { err ??= $"{name}: must be a string"; return null; }
                // A lone surrogate escape (\uDF00) is valid JSON but no text: reading it throws InvalidOperationException.
                try { return v.GetString(); }
                catch (InvalidOperationException) { err ??= $"{name}: not valid text (a lone surrogate escape)"; return null; }
            }
            string? e = null;
            var reg = new AgentRegistration
            {
                AikTpm = Str("aik_tpm", ref e),
                EkTpm = Str("ek_tpm", ref e),
                EkCert = Str("ekcert", ref e),
                MtlsCert = Str("mtls_cert", ref e),
                Ip = Str("ip", ref e),
            };
            int? port = null;
            if (root.TryGetProperty("port", out var p) && p.ValueKind != JsonValueKind.Null)
            {
                if (p.ValueKind == JsonValueKind.Number && p.TryGetInt32(out int n)) port = n;
                else if (p.ValueKind == JsonValueKind.String && int.TryParse(p.GetString(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int m)) port = m;
                else e ??= "port: must be a port number";
                if (port is < 0 or > 65535) e ??= "port: must be 0-65535";
            }
            if (e is not null) { error = e; return null; }
            return reg with { Port = port };
        }
    }
}

/// <summary>The registrar's answer to a registration: the credential blob the agent activates.</summary>
public sealed record RegistrationResult
{
    /// <summary>base64 of a tpm2-tools credential file (magic 0xBADCC0DE, version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET), as Keylime sends it.</summary>
    [JsonPropertyName("blob")] public required string Blob { get; init; }
}

/// <summary>The registrar's view of an active agent (<c>GET /v2.1/agents/{agent_id}</c>), field for field as Keylime renders it.</summary>
public sealed record RegistrarAgentView
{
    [JsonPropertyName("aik_tpm")] public required string AikTpm { get; init; }
    [JsonPropertyName("ek_tpm")] public required string EkTpm { get; init; }
    [JsonPropertyName("ekcert")] public string? EkCert { get; init; }
    [JsonPropertyName("mtls_cert")] public string? MtlsCert { get; init; }
    [JsonPropertyName("ip")] public string? Ip { get; init; }
    [JsonPropertyName("port")] public int? Port { get; init; }
    [JsonPropertyName("regcount")] public int RegCount { get; init; }

    /// <summary>The agent id (not part of Keylime's body; the route carries it).</summary>
    [JsonIgnore] public string AgentId { get; init; } = "";
}

/// <summary><c>GET /v2.1/agents/</c>'s results.</summary>
public sealed record RegistrarAgentList
{
    [JsonPropertyName("uuids")] public required IReadOnlyList<string> Uuids { get; init; }
}

/// <summary>Results with no members (<c>{}</c>).</summary>
public sealed record EmptyResults
{
    public static EmptyResults Instance { get; } = new();
}

/// <summary><c>GET /version</c>'s results.</summary>
public sealed record KeylimeVersionInfo
{
    [JsonPropertyName("current_version")] public string CurrentVersion { get; init; } = KeylimeApi.LatestVersion;
    [JsonPropertyName("supported_versions")] public IReadOnlyList<string> SupportedVersions { get; init; } = KeylimeApi.SupportedVersions;
}

/// <summary>Settings of the registrar surface.</summary>
public sealed class RegistrarSettings
{
    /// <summary>An <c>ekcert</c>, when sent, must chain to a trusted TPM-manufacturer root. On by default.</summary>
    public bool VerifyEkCertificateChain { get; set; } = true;
    /// <summary>Refuse registrations without an <c>ekcert</c>. Off by default (Keylime leaves that check to the tenant).</summary>
    public bool RequireEkCertificate { get; set; }
    /// <summary>
    /// Accept agent ids that are not UUIDs but match Keylime's looser rule (letters, digits, <c>.</c>, <c>_</c>, <c>-</c>;
    /// at most 80), as Keylime's <c>hash_ek</c> or <c>hostname</c> agent ids are. Off: only canonical UUIDs.
    /// </summary>
    public bool AcceptNonUuidAgentIds { get; set; }
    /// <summary>Trusted EK roots; null means the provisioning surface's folder under the data path.</summary>
    public string? EkRootsDirectory { get; set; }
    /// <summary>EK intermediates; null means the provisioning surface's folder under the data path.</summary>
    public string? EkIntermediatesDirectory { get; set; }
    /// <summary>
    /// A second, plain-HTTP port on the same address for agents without a client certificate, as Keylime's registrar serves
    /// 8890 beside its TLS port 8891: only <c>/version</c>, registration (<c>POST /v2.1/agents/{id}</c>) and activation
    /// (<c>PUT /v2.1/agents/{id}/activate</c>) answer there; everything else is refused with 403. Null: no plain port; 0
    /// picks a free one (see <see cref="Hosting.ServerInfo.RegistrarPlainPort"/>).
    /// </summary>
    public int? PlainPort { get; set; }
}
