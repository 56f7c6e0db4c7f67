using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Attestation;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Kms;

/// <summary>The gate's answer: release or not, and why (for the audit log and the refusal message).</summary>
public sealed record GateVerdict(bool Allowed, string Reason, int? OperationalState = null, DateTimeOffset? LastSuccessfulAttestation = null)
{
    public static GateVerdict Refuse(string reason, int? state = null, DateTimeOffset? last = null) => new(false, reason, state, last);
}

/// <summary>Decides whether an agent, authenticated by its TLS client certificate, may receive keys now.</summary>
public interface IAttestationGate
{
    Task<GateVerdict> CheckAsync(string agentId, X509Certificate2 clientCert, CancellationToken ct);
}

/// <summary>How <see cref="KeylimeAttestationGate"/> reaches Keylime.</summary>
public sealed class KeylimeGateOptions
{
    public required Uri Verifier { get; init; }
    /// <summary>Null: the verifier's address.</summary>
    public Uri? Registrar { get; init; }
    /// <summary>CA of the verifier's and registrar's TLS certificates (pinned); null: the system store.</summary>
    public X509Certificate2? CaCertificate { get; init; }
    /// <summary>Client certificate the verifier and registrar accept (Keylime's components CA).</summary>
    public X509Certificate2? ClientCertificate { get; init; }
    public TimeSpan MaxAttestationAge { get; init; } = TimeSpan.FromSeconds(60);
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>The clock (tests move it); default UTC now.</summary>
    public Func<DateTimeOffset> Clock { get; init; } = () => DateTimeOffset.UtcNow;
}

/// <summary>
/// The gate over Keylime: the client certificate must be the agent's registered <c>mtls_cert</c> (registrar
/// <c>GET /v2.1/agents/{id}</c>), and the verifier (<c>GET /v2.1/agents/{id}</c>) must report the agent in an attesting state
/// (<c>operational_state</c> 3-6: GET_QUOTE, GET_QUOTE_RETRY, PROVIDE_V, PROVIDE_V_RETRY) with <c>last_successful_attestation</c>
/// within <see cref="KeylimeGateOptions.MaxAttestationAge"/>. Anything else, unreachable services included, refuses.
/// </summary>
public sealed class KeylimeAttestationGate : IAttestationGate, IDisposable
{
    private readonly KeylimeGateOptions _options;
    private readonly VerifierClient _verifier;
    private readonly RegistrarClient _registrar;

    public KeylimeAttestationGate(KeylimeGateOptions options)
    {
        _options = options ?? throw new ArgumentNullException(nameof(options));
        _verifier = new VerifierClient(new VerifierClientOptions
        {
            Verifier = options.Verifier, CaCertificate = options.CaCertificate, ClientCertificate = options.ClientCertificate, Timeout = options.Timeout,
        });
        _registrar = new RegistrarClient(new RegistrarClientOptions
        {
            Registrar = options.Registrar ?? options.Verifier, CaCertificate = options.CaCertificate, ClientCertificate = options.ClientCertificate, Timeout = options.Timeout,
        });
    }

    /// <summary>Keylime's name of an operational state.</summary>
    public static string StateName(int state) =>
        Enum.IsDefined((OperationalState)state) ? OperationalStates.KeylimeName((OperationalState)state) : "UNKNOWN";

    public async Task<GateVerdict> CheckAsync(string agentId, X509Certificate2 clientCert, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(agentId);
        ArgumentNullException.ThrowIfNull(clientCert);
        // 1. The caller is the agent: its TLS certificate is the one the registrar holds for it.
        try
        {
            var reg = await _registrar.GetAsync(agentId, ct).ConfigureAwait(false);
            if (string.IsNullOrEmpty(reg.MtlsCert) || reg.MtlsCert == "disabled")
                return GateVerdict.Refuse("the registrar holds no mTLS certificate for the agent");
            X509Certificate2 registered;
            try { registered = X509Certificate2.CreateFromPem(reg.MtlsCert); }
            catch (CryptographicException) { return GateVerdict.Refuse("the agent's registered mTLS certificate does not parse"); }
            using (registered)
                if (!registered.RawData.AsSpan().SequenceEqual(clientCert.RawData))
                    return GateVerdict.Refuse("the client certificate is not the agent's registered mTLS certificate");
        }
        catch (KeylimeRequestException ex) when (ex.StatusCode == 404) { return GateVerdict.Refuse("the agent is not registered at the registrar"); }
        catch (Exception ex) when (ex is KeylimeRequestException or HttpRequestException or TaskCanceledException or JsonException or InvalidOperationException or KeyNotFoundException)
        {
            return GateVerdict.Refuse($"the registrar could not be asked: {ex.Message}");
        }

        // 2. The verifier's current state for the agent.
        VerifierAgentStatus status;
        try { status = await _verifier.GetAsync(agentId, ct).ConfigureAwait(false); }
        catch (KeylimeRequestException ex) when (ex.StatusCode == 404) { return GateVerdict.Refuse("the verifier does not monitor the agent"); }
        catch (KeylimeRequestException ex) when (ex.StatusCode == 200) { return GateVerdict.Refuse("the verifier's answer has no results"); }
        catch (KeylimeRequestException ex) { return GateVerdict.Refuse($"the verifier answered {ex.StatusCode}"); }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or JsonException)
        {
            return GateVerdict.Refuse($"the verifier could not be asked: {ex.Message}");
        }
        int state = status.OperationalState;
        DateTimeOffset? last = status.LastSuccessfulAttestation > 0 ? DateTimeOffset.FromUnixTimeSeconds(status.LastSuccessfulAttestation) : null;
        if (OperationalStates.Status((OperationalState)state) != AttestationStatus.Pass)
            return GateVerdict.Refuse($"the verifier reports operational_state {state} ({StateName(state)})", state, last);
        if (last is null) return GateVerdict.Refuse("the verifier reports no successful attestation", state, last);
        var age = _options.Clock() - last.Value;
        if (age > _options.MaxAttestationAge)
            return GateVerdict.Refuse($"the last successful attestation is {(long)age.TotalSeconds} s old (limit {(long)_options.MaxAttestationAge.TotalSeconds} s)", state, last);
        return new GateVerdict(true, $"operational_state {state} ({StateName(state)}), attested {(long)Math.Max(0, age.TotalSeconds)} s ago", state, last);
    }

    public void Dispose()
    {
        _verifier.Dispose();
        _registrar.Dispose();
    }
}

/// <summary>What a device asks for: a provider's data key by identifier, or a key's version (null: primary).</summary>
public sealed record KeyReleaseRequest
{
    public string? Provider { get; init; }
    public string? KeyIdentifier { get; init; }
    public string? KeyId { get; init; }
    public string? Version { get; init; }
}

/// <summary>A released key: the material is here and in the response, nowhere else.</summary>
public sealed record KeyRelease
{
    public required string AgentId { get; init; }
    public string? Provider { get; init; }
    public string? KeyIdentifier { get; init; }
    public string? KeyId { get; init; }
    public string? VersionId { get; init; }
    public int? VersionNumber { get; init; }
    public required byte[] Key { get; init; }
    public string Algorithm => "AES-256";
}

/// <summary>A verified Keylime revocation notice.</summary>
public sealed record RevocationNotice(string AgentId, string? Type, string? EventId, string Message);

/// <summary>
/// Release of keys to attested devices: the gate decides, a revocation notice stops release at once (until the verifier
/// reports a successful attestation after it), and every release and refusal is audited (<c>kms.release</c>).
/// </summary>
public sealed class KeyReleaseService(KmsEngine engine, IAttestationGate gate)
{
    public async Task<KeyRelease> ReleaseAsync(string? agentId, X509Certificate2? clientCert, KeyReleaseRequest request, KmsCaller caller, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        string what = request.Provider is not null ? $"provider={request.Provider} key_identifier={request.KeyIdentifier}" : $"key={request.KeyId} version={request.Version ?? "primary"}";
        async Task<KmsException> Refuse(KmsErrorKind kind, string? field, string why)
        {
            await engine.Store.AppendAuditAsync(new AuditEntry { Actor = caller.Actor, Source = caller.Source, Action = "kms.release", Target = agentId, Outcome = kind is KmsErrorKind.InvalidArgument or KmsErrorKind.NotFound ? AuditOutcome.Rejected : AuditOutcome.Denied, Detail = $"{what}: {why}" }, ct).ConfigureAwait(false);
            return new KmsException(kind, field, why);
        }
        if (string.IsNullOrWhiteSpace(agentId) || agentId.Length > 128) throw await Refuse(KmsErrorKind.InvalidArgument, "agent_id", "agent_id is required (at most 128 characters)");
        if (clientCert is null) throw await Refuse(KmsErrorKind.Unauthenticated, null, "a client certificate is required");
        bool byProvider = !string.IsNullOrEmpty(request.Provider), byKey = !string.IsNullOrEmpty(request.KeyId);
        if (byProvider == byKey) throw await Refuse(KmsErrorKind.InvalidArgument, "provider", "give either provider and key_identifier, or key_id (and optionally version)");

        var verdict = await gate.CheckAsync(agentId, clientCert, ct).ConfigureAwait(false);
        if (verdict.Allowed && await engine.Store.GetKmsRevocationAsync(agentId, ct).ConfigureAwait(false) is { } revoked
            && (verdict.LastSuccessfulAttestation is null || verdict.LastSuccessfulAttestation <= revoked.Time))
            verdict = GateVerdict.Refuse($"revoked by the verifier at {revoked.Time:u} ({revoked.Type ?? "revocation"}{(revoked.EventId is null ? "" : " " + revoked.EventId)})", verdict.OperationalState, verdict.LastSuccessfulAttestation);
        if (!verdict.Allowed) throw await Refuse(KmsErrorKind.Unauthorized, null, "attestation gate: " + verdict.Reason);

        KeyRelease release;
        try
        {
            if (byProvider)
                release = new KeyRelease { AgentId = agentId, Provider = request.Provider, KeyIdentifier = request.KeyIdentifier, Key = await engine.DeriveDataKeyAsync(request.Provider!, request.KeyIdentifier, ct).ConfigureAwait(false) };
            else
            {
                var (v, material) = await engine.GetVersionMaterialAsync(request.KeyId!, request.Version, ct).ConfigureAwait(false);
                release = new KeyRelease { AgentId = agentId, KeyId = v.KeyId, VersionId = v.Id, VersionNumber = v.Number, Key = material };
            }
        }
        catch (KmsException ex) when (ex.Kind is KmsErrorKind.NotFound or KmsErrorKind.InvalidArgument)
        {
            throw await Refuse(ex.Kind, ex.Field, ex.Message);
        }
        await engine.Store.AppendAuditAsync(new AuditEntry { Actor = caller.Actor, Source = caller.Source, Action = "kms.release", Target = agentId, Outcome = AuditOutcome.Success, Detail = $"{what}{(release.VersionId is null ? "" : $" version_id={release.VersionId}")}: {verdict.Reason}" }, ct).ConfigureAwait(false);
        return release;
    }

    /// <summary>
    /// Verifies a Keylime revocation notice (<c>{"msg": "&lt;json&gt;", "signature": "&lt;base64&gt;"}</c>, RSA-PSS SHA-256 over the
    /// msg string) with <paramref name="publicKeyPem"/> and records it: release to the agent stops at once. Audited either way.
    /// </summary>
    public async Task<RevocationNotice> AcceptRevocationAsync(byte[] body, string? publicKeyPem, KmsCaller caller, CancellationToken ct = default)
    {
        RevocationNotice notice;
        try { notice = VerifyRevocation(body, publicKeyPem); }
        catch (KmsException ex)
        {
            await engine.Store.AppendAuditAsync(new AuditEntry { Actor = caller.Actor, Source = caller.Source, Action = "kms.revocation", Outcome = AuditOutcome.Rejected, Detail = ex.Message }, ct).ConfigureAwait(false);
            throw;
        }
        await engine.Store.UpsertKmsRevocationAsync(new KmsRevocationRecord { AgentId = notice.AgentId, EventId = notice.EventId, Type = notice.Type, Time = DateTimeOffset.UtcNow, Detail = notice.Message.Length > 1024 ? notice.Message[..1024] : notice.Message }, ct).ConfigureAwait(false);
        await engine.Store.AppendAuditAsync(new AuditEntry { Actor = caller.Actor, Source = caller.Source, Action = "kms.revocation", Target = notice.AgentId, Outcome = AuditOutcome.Success, Detail = $"type={notice.Type} event_id={notice.EventId}: release stopped" }, ct).ConfigureAwait(false);
        return notice;
    }

    /// <summary>Parses and verifies a notice; <see cref="KmsException"/> InvalidArgument (bad shape) or Unauthenticated (bad signature).</summary>
    public static RevocationNotice VerifyRevocation(byte[] body, string? publicKeyPem)
    {
        if (string.IsNullOrEmpty(publicKeyPem)) throw new KmsException(KmsErrorKind.Unavailable, null, "no revocation public key is configured");
        string msg, sig;
        try
        {
            if (!System.Text.Unicode.Utf8.IsValid(body)) throw new KmsException(KmsErrorKind.InvalidArgument, "msg", "the notice is not valid UTF-8");
            using var doc = JsonDocument.Parse(body);
            if (doc.RootElement.ValueKind != JsonValueKind.Object
                || !doc.RootElement.TryGetProperty("msg", out var m) || m.ValueKind != JsonValueKind.String
                || !doc.RootElement.TryGetProperty("signature", out var s) || s.ValueKind != JsonValueKind.String)
                throw new KmsException(KmsErrorKind.InvalidArgument, "msg", "a revocation notice is {\"msg\": string, \"signature\": string}");
            msg = m.GetString()!;
            sig = s.GetString()!;
        }
        catch (JsonException) { throw new KmsException(KmsErrorKind.InvalidArgument, "body", "the revocation notice is not JSON"); }
        byte[] signature;
        try { signature = Convert.FromBase64String(sig); }
        catch (FormatException) { throw new KmsException(KmsErrorKind.InvalidArgument, "signature", "signature must be base64"); }
        using var rsa = RSA.Create();
        try { rsa.ImportFromPem(publicKeyPem); }
        catch (ArgumentException) { throw new KmsException(KmsErrorKind.Unavailable, null, "the configured revocation public key does not parse"); }
        if (!Attestation.Verifier.RevocationNotifier.VerifyPssSha256(rsa, Encoding.UTF8.GetBytes(msg), signature))
            throw new KmsException(KmsErrorKind.Unauthenticated, "signature", "the revocation notice's signature does not verify");
        try
        {
            using var inner = JsonDocument.Parse(msg);
            var root = inner.RootElement;
            string? S(string n) => root.TryGetProperty(n, out var v) ? v.ValueKind == JsonValueKind.String ? v.GetString() : v.ValueKind == JsonValueKind.Null ? null : v.GetRawText() : null;
            var agent = root.ValueKind == JsonValueKind.Object ? S("agent_id") : null;
            if (string.IsNullOrEmpty(agent))
                throw new KmsException(KmsErrorKind.InvalidArgument, "msg", "the notice names no agent_id");
            return new RevocationNotice(agent, S("type"), S("event_id"), msg);
        }
        catch (JsonException) { throw new KmsException(KmsErrorKind.InvalidArgument, "msg", "msg is not JSON"); }
    }

    /// <summary>
    /// RSA-PSS SHA-256 with MGF1 SHA-256, salt length either the digest length or the maximum (Keylime signs with
    /// <c>PSS.MAX_LENGTH</c>, which .NET's verifier does not accept, so that case is checked with BouncyCastle).
    /// </summary>
}
