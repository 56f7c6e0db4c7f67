using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Attestation;

/// <summary>How a client reaches a Keylime registrar.</summary>
public sealed class RegistrarClientOptions : KeylimeClientOptions
{
    /// <summary>The registrar's base address, e.g. <c>https://registrar:8891</c>.</summary>
    public required Uri Registrar { get; init; }
}

/// <summary>A Keylime endpoint answered with a non-success envelope.</summary>
public sealed class KeylimeRequestException : Exception
{
    public KeylimeRequestException(int status, string message) : base($"{status}: {message}")
    {
        StatusCode = status;
        ServerMessage = message;
    }

    public int StatusCode { get; }
    public string ServerMessage { get; }
}

/// <summary>What an agent sends about itself when registering.</summary>
public sealed record AgentIdentity
{
    public required string AgentId { get; init; }
    public string? Ip { get; init; }
    public int? Port { get; init; }
    /// <summary>The agent's HTTPS certificate, PEM; null sends none.</summary>
    public string? MtlsCertificatePem { get; init; }
}

/// <summary>The TPM side of a registration: the EK and AK (loaded or persistent handles) and the EK certificate.</summary>
public sealed record AgentTpmKeys
{
    public required uint EkHandle { get; init; }
    public required uint AkHandle { get; init; }
    /// <summary>The EK's TPM2B_PUBLIC, as the TPM reports it.</summary>
    public required byte[] EkPublic { get; init; }
    /// <summary>The AK's TPM2B_PUBLIC, as the TPM reports it.</summary>
    public required byte[] AkPublic { get; init; }
    /// <summary>The EK certificate (DER) from NV, or null.</summary>
    public byte[]? EkCertificate { get; init; }
    public byte[]? EndorsementAuth { get; init; }
    public byte[]? AkAuth { get; init; }
}

/// <summary>
/// A client of the Keylime registrar API v2.1: what an agent does at start (<see cref="RegisterAndActivateAsync"/>) and what
/// a tenant does (<see cref="ListAsync"/>, <see cref="GetAsync"/>, <see cref="DeleteAsync"/>, which need a client certificate).
/// </summary>
public sealed class RegistrarClient(RegistrarClientOptions options) : KeylimeRestClient(options.Registrar, options)
{
    /// <summary><c>GET /version</c>: the registrar's current and supported API versions.</summary>
    public async Task<KeylimeVersionInfo> GetVersionAsync(CancellationToken ct = default)
    {
        var r = await SendAsync(HttpMethod.Get, "/version", null, ct).ConfigureAwait(false);
        return new KeylimeVersionInfo
        {
            CurrentVersion = r.GetProperty("current_version").GetString() ?? "",
            SupportedVersions = r.TryGetProperty("supported_versions", out var v) && v.ValueKind == JsonValueKind.Array
                ? v.EnumerateArray().Select(e => e.GetString() ?? "").ToList() : [],
        };
    }

    /// <summary><c>POST /v2.1/agents/{id}</c>: returns the credential blob (base64 tpm2-tools credential file).</summary>
    public async Task<string> RegisterAsync(AgentIdentity agent, byte[] ekTpm, byte[] aikTpm, byte[]? ekCertificate, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(agent);
        var body = new Dictionary<string, object?>
        {
            ["ekcert"] = ekCertificate is null ? null : Convert.ToBase64String(ekCertificate),
            ["ek_tpm"] = Convert.ToBase64String(ekTpm),
            ["aik_tpm"] = Convert.ToBase64String(aikTpm),
            ["mtls_cert"] = agent.MtlsCertificatePem,
            ["ip"] = agent.Ip,
            ["port"] = agent.Port,
        };
        var r = await SendAsync(HttpMethod.Post, $"/v{KeylimeApi.CurrentVersion}/agents/{Uri.EscapeDataString(agent.AgentId)}", body, ct).ConfigureAwait(false);
        return r.GetProperty("blob").GetString() ?? throw new KeylimeRequestException(200, "registration answer carries no blob");
    }

    /// <summary><c>PUT /v2.1/agents/{id}/activate</c>.</summary>
    public async Task ActivateAsync(string agentId, string authTag, CancellationToken ct = default) =>
        await SendAsync(HttpMethod.Put, $"/v{KeylimeApi.CurrentVersion}/agents/{Uri.EscapeDataString(agentId)}/activate", new Dictionary<string, object?> { ["auth_tag"] = authTag }, ct).ConfigureAwait(false);

    /// <summary>
    /// Activates the credential blob on the TPM (EK and AK of <paramref name="keys"/>) and returns the auth tag the registrar
    /// expects (<see cref="RegistrarService.ComputeAuthTag"/>).
    /// </summary>
    public static string SolveChallenge(TpmDevice tpm, AgentTpmKeys keys, string agentId, string blob)
    {
        ArgumentNullException.ThrowIfNull(tpm);
        ArgumentNullException.ThrowIfNull(keys);
        byte[] file;
        try { file = Convert.FromBase64String(blob); }
        catch (FormatException) { throw new TpmFormatException("The registrar's blob is not base64."); }
        var cred = Credential.FromTpm2ToolsFile(file);
        var challenge = tpm.ActivateCredential(keys.EkHandle, keys.AkHandle, cred, keys.AkAuth, keys.EndorsementAuth);
        try { return RegistrarService.ComputeAuthTag(challenge, agentId); }
        finally { System.Security.Cryptography.CryptographicOperations.ZeroMemory(challenge); }
    }

    /// <summary>
    /// What an agent does at start: register the EK and AK, activate the returned credential with the TPM, send the auth tag.
    /// Returns the registrar's view of the agent when this client has a client certificate to read it, else null.
    /// </summary>
    public async Task<RegistrarAgentView?> RegisterAndActivateAsync(TpmDevice tpm, AgentTpmKeys keys, AgentIdentity agent, bool readBack = false, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(tpm);
        ArgumentNullException.ThrowIfNull(keys);
        ArgumentNullException.ThrowIfNull(agent);
        var blob = await RegisterAsync(agent, keys.EkPublic, keys.AkPublic, keys.EkCertificate, ct).ConfigureAwait(false);
        var tag = SolveChallenge(tpm, keys, agent.AgentId, blob);
        await ActivateAsync(agent.AgentId, tag, ct).ConfigureAwait(false);
        return readBack ? await GetAsync(agent.AgentId, ct).ConfigureAwait(false) : null;
    }

    /// <summary><c>GET /v2.1/agents/</c> (client certificate required).</summary>
    public async Task<IReadOnlyList<string>> ListAsync(CancellationToken ct = default)
    {
        var r = await SendAsync(HttpMethod.Get, $"/v{KeylimeApi.CurrentVersion}/agents/", null, ct).ConfigureAwait(false);
        return r.GetProperty("uuids").EnumerateArray().Select(e => e.GetString() ?? "").ToList();
    }

    /// <summary><c>GET /v2.1/agents/{id}</c> (client certificate required).</summary>
    public async Task<RegistrarAgentView> GetAsync(string agentId, CancellationToken ct = default)
    {
        var r = await SendAsync(HttpMethod.Get, $"/v{KeylimeApi.CurrentVersion}/agents/{Uri.EscapeDataString(agentId)}", null, ct).ConfigureAwait(false);
        static string? S(JsonElement e, string n) => e.TryGetProperty(n, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
        return new RegistrarAgentView
        {
            AgentId = agentId,
            AikTpm = S(r, "aik_tpm") ?? "",
            EkTpm = S(r, "ek_tpm") ?? "",
            EkCert = S(r, "ekcert"),
            MtlsCert = S(r, "mtls_cert"),
            Ip = S(r, "ip"),
            Port = r.TryGetProperty("port", out var p) && p.ValueKind == JsonValueKind.Number ? p.GetInt32() : null,
            RegCount = r.TryGetProperty("regcount", out var c) && c.ValueKind == JsonValueKind.Number ? c.GetInt32() : 0,
        };
    }

    /// <summary><c>DELETE /v2.1/agents/{id}</c> (client certificate required).</summary>
    public async Task DeleteAsync(string agentId, CancellationToken ct = default) =>
        await SendAsync(HttpMethod.Delete, $"/v{KeylimeApi.CurrentVersion}/agents/{Uri.EscapeDataString(agentId)}", null, ct).ConfigureAwait(false);
}
