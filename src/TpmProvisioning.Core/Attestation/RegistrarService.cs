using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.RegularExpressions;
using TpmProvisioning.Pki;
using TpmProvisioning.Storage;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Attestation;

/// <summary>
/// Spec 001's registrar: binds an agent's AK to its TPM's EK. Registration checks the AK is a TPM-resident restricted signing
/// key, checks the EK certificate (when sent) against the EK and the trusted manufacturers, and answers a credential made with
/// MakeCredential over the AK's Name; activation accepts only the HMAC a TPM holding both keys can compute. Every change is audited.
/// </summary>
public sealed partial class RegistrarService
{
    public const string AuditRegister = "registrar.register";
    public const string AuditActivate = "registrar.activate";
    public const string AuditDelete = "registrar.delete";

    /// <summary>Length of the activation challenge (printable characters, as Keylime's registrar makes it).</summary>
    public const int ChallengeLength = 32;

    private readonly IStore _store;
    private readonly Func<EkTrustStore>? _trust;
    private readonly RegistrarSettings _settings;
    private readonly TimeProvider _time;

    /// <summary>A registrar over <paramref name="store"/>, checking EK certificates against <paramref name="trust"/> (its folders are re-read as they change).</summary>
    public RegistrarService(IStore store, EkTrustAnchors? trust, RegistrarSettings? settings = null, TimeProvider? time = null)
        : this(store, trust is null ? null : () => trust.Current, settings, time) { }

    /// <summary>A registrar with a fixed set of trusted manufacturers.</summary>
    public RegistrarService(IStore store, EkTrustStore? trust, RegistrarSettings? settings = null, TimeProvider? time = null)
        : this(store, trust is null ? null : () => trust, settings, time) { }

    private RegistrarService(IStore store, Func<EkTrustStore>? trust, RegistrarSettings? settings, TimeProvider? time)
    {
        _store = store ?? throw new ArgumentNullException(nameof(store));
        _trust = trust;
        _settings = settings ?? new RegistrarSettings();
        _time = time ?? TimeProvider.System;
    }

    public RegistrarSettings Settings => _settings;

    [GeneratedRegex("^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")]
    private static partial Regex UuidRegex();

    [GeneratedRegex("^[A-Za-z0-9._-]{1,80}$")]
    private static partial Regex LooseIdRegex();

    /// <summary>True when <paramref name="agentId"/> is an acceptable agent id under these settings.</summary>
    public bool IsValidAgentId(string? agentId) =>
        agentId is not null && (UuidRegex().IsMatch(agentId) || (_settings.AcceptNonUuidAgentIds && LooseIdRegex().IsMatch(agentId)));

    /// <summary>
    /// The auth tag an agent computes after TPM2_ActivateCredential released <paramref name="challenge"/>: lower-case hex
    /// HMAC-SHA384 keyed by the base64 text of the challenge, over the agent id (Keylime's <c>crypto.do_hmac</c>, and the
    /// Rust agent's <c>compute_hmac</c>).
    /// </summary>
    public static string ComputeAuthTag(ReadOnlySpan<byte> challenge, string agentId)
    {
        ArgumentNullException.ThrowIfNull(agentId);
        var key = Encoding.ASCII.GetBytes(Convert.ToBase64String(challenge));
        return Convert.ToHexStringLower(HMACSHA384.HashData(key, Encoding.UTF8.GetBytes(agentId)));
    }

    // ------------------------------------------------------------------ register

    /// <summary>
    /// Registers (or re-registers) an agent and returns the credential blob. 400 for malformed ids, base64 or TPM structures,
    /// an AK that is not a TPM-resident restricted signing key, or an EK certificate that does not carry the EK or is not
    /// trusted; 403 when the id is registered with another EK or AK. Nothing is stored unless the call succeeds.
    /// </summary>
    public async Task<AttestationOutcome<RegistrationResult>> RegisterAsync(string agentId, AgentRegistration? request, AttestationCallInfo? call = null, CancellationToken ct = default)
    {
        call ??= new AttestationCallInfo();
        if (!IsValidAgentId(agentId))
            return await RejectAsync<RegistrationResult>(AuditRegister, 400, "agent_id: must be a UUID", Clip(agentId), call, ct).ConfigureAwait(false);
        if (request is null)
            return await RejectAsync<RegistrationResult>(AuditRegister, 400, "body: missing", agentId, call, ct).ConfigureAwait(false);

        var check = CheckRegistration(request);
        if (check.Error is not null)
            return await RejectAsync<RegistrationResult>(AuditRegister, 400, check.Error, agentId, call, ct).ConfigureAwait(false);

        var existing = await _store.GetRegistrarAgentAsync(agentId, ct).ConfigureAwait(false);
        if (existing is not null && (!existing.EkTpm.AsSpan().SequenceEqual(check.EkBytes) || !existing.AikTpm.AsSpan().SequenceEqual(check.AikBytes)))
        {
            string which = !existing.EkTpm.AsSpan().SequenceEqual(check.EkBytes) ? "EK" : "AK";
            return await RejectAsync<RegistrationResult>(AuditRegister, 403,
                $"Agent with ID '{agentId}' is registered with a different {which}; delete it first to register another TPM or AK", agentId, call, ct).ConfigureAwait(false);
        }

        // The challenge: random printable characters, released by the TPM only to the holder of both the EK and the AK.
        byte[] challenge = RandomChallenge();
        byte[] blobFile;
        try
        {
            var cred = Credential.MakeCredential(check.Ek!, check.Aik!.ComputeName(), challenge);
            blobFile = Credential.ToTpm2ToolsFile(cred);
        }
        catch (Exception ex) when (ex is NotSupportedException or ArgumentException or TpmFormatException or CryptographicException)
        {
            return await RejectAsync<RegistrationResult>(AuditRegister, 400, "ek_tpm: cannot make a credential for this EK: " + ex.Message, agentId, call, ct).ConfigureAwait(false);
        }
        var tagHash = SHA256.HashData(Encoding.ASCII.GetBytes(ComputeAuthTag(challenge, agentId)));
        CryptographicOperations.ZeroMemory(challenge);

        var now = _time.GetUtcNow();
        if (existing is { Active: true })
        {
            // The EK and AK are public: anyone may send them. An active registration therefore stays as it is until this
            // re-registration proves, by its own activation, that it comes from the TPM holding both keys.
            var pending = new PendingRegistration { MtlsCert = request.MtlsCert, Ip = request.Ip, Port = request.Port, AuthTagHash = tagHash, Registered = now };
            if (await _store.SetPendingRegistrationAsync(agentId, pending, ct).ConfigureAwait(false))
            {
                await AuditAsync(AuditRegister, agentId, AuditOutcome.Success, $"re-registration held pending until it activates (active regcount={existing.RegCount})", call, ct).ConfigureAwait(false);
                return AttestationOutcome<RegistrationResult>.Ok(new RegistrationResult { Blob = Convert.ToBase64String(blobFile) });
            }
            // Deleted or deactivated meanwhile: register afresh below.
            existing = await _store.GetRegistrarAgentAsync(agentId, ct).ConfigureAwait(false);
        }
        var record = new RegistrarAgentRecord
        {
            AgentId = agentId,
            AikTpm = check.AikBytes,
            EkTpm = check.EkBytes,
            EkCert = check.EkCertDer,
            MtlsCert = request.MtlsCert,
            Ip = request.Ip,
            Port = request.Port,
            RegCount = (existing?.RegCount ?? 0) + 1,
            Active = false,
            AuthTagHash = tagHash,
            Registered = existing?.Registered ?? now,
            Updated = now,
            Activated = null,
        };
        await _store.UpsertRegistrarAgentAsync(record, ct).ConfigureAwait(false);
        await AuditAsync(AuditRegister, agentId, AuditOutcome.Success, $"regcount={record.RegCount} ek={(check.EkCertDer is null ? "no certificate" : "certificate " + Convert.ToHexString(SHA256.HashData(check.EkCertDer))[..16])} ak={Convert.ToHexString(check.Aik!.ComputeName())}", call, ct).ConfigureAwait(false);
        return AttestationOutcome<RegistrationResult>.Ok(new RegistrationResult { Blob = Convert.ToBase64String(blobFile) });
    }

    /// <summary>Registers from a Keylime JSON body (see <see cref="AgentRegistration.Parse"/>); a body that does not parse is a 400.</summary>
    public async Task<AttestationOutcome<RegistrationResult>> RegisterAsync(string agentId, ReadOnlyMemory<byte> jsonBody, AttestationCallInfo? call = null, CancellationToken ct = default)
    {
        call ??= new AttestationCallInfo();
        if (!IsValidAgentId(agentId))
            return await RejectAsync<RegistrationResult>(AuditRegister, 400, "agent_id: must be a UUID", Clip(agentId), call, ct).ConfigureAwait(false);
        var reg = AgentRegistration.Parse(jsonBody.Span, out var why);
        if (reg is null)
            return await RejectAsync<RegistrationResult>(AuditRegister, 400, why ?? "body: invalid", agentId, call, ct).ConfigureAwait(false);
        return await RegisterAsync(agentId, reg, call, ct).ConfigureAwait(false);
    }

    private static byte[] RandomChallenge()
    {
        const string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        var s = RandomNumberGenerator.GetString(alphabet, ChallengeLength);
        return Encoding.ASCII.GetBytes(s);
    }

    private sealed record Checked(string? Error, TpmPublic? Aik = null, byte[] AikBytes = null!, TpmPublic? Ek = null, byte[] EkBytes = null!, byte[]? EkCertDer = null);

    private Checked CheckRegistration(AgentRegistration r)
    {
        if (r.Ip is not null && !KeylimeValidators.IsValidContactHost(r.Ip)) return new("ip: must be an IP address or host name");
        if (r.MtlsCert is not (null or "" or "disabled"))
        {
            // Parsed here, as the verifier parses it, so the registrar never hands a tenant a certificate nobody can use.
            try { using var mtls = X509Certificate2.CreateFromPem(r.MtlsCert); }
            catch (Exception ex) when (ex is CryptographicException or ArgumentException) { return new("mtls_cert: not a PEM certificate"); }
        }
        if (string.IsNullOrEmpty(r.AikTpm)) return new("aik_tpm: required");
        if (!TryBase64(r.AikTpm, out var aikBytes)) return new("aik_tpm: not base64");
        TpmPublic aik;
        try { aik = TpmPublic.ParseTpm2B(aikBytes); }
        catch (TpmFormatException ex) { return new("aik_tpm: not a TPM2B_PUBLIC: " + ex.Message); }
        var problems = aik.RestrictedSigningKeyProblems();
        if (problems.Count > 0) return new("aik_tpm: not a TPM-resident restricted signing key (" + string.Join(", ", problems) + ")");
        if (!TpmHash.IsSupported(aik.NameAlg)) return new($"aik_tpm: nameAlg {aik.NameAlg} is not supported");

        byte[]? certDer = null;
        X509Certificate2? cert = null;
        if (!string.IsNullOrEmpty(r.EkCert))
        {
            if (!TryBase64(r.EkCert, out certDer)) return new("ekcert: not base64");
            try { cert = X509CertificateLoader.LoadCertificate(certDer); }
            catch (CryptographicException) { return new("ekcert: not a DER X.509 certificate"); }
        }
        else if (_settings.RequireEkCertificate) return new("ekcert: required by configuration");

        try
        {
            TpmPublic ek;
            byte[] ekBytes;
            if (!string.IsNullOrEmpty(r.EkTpm))
            {
                if (!TryBase64(r.EkTpm, out ekBytes)) return new("ek_tpm: not base64");
                try { ek = TpmPublic.ParseTpm2B(ekBytes); }
                catch (TpmFormatException ex) { return new("ek_tpm: not a TPM2B_PUBLIC: " + ex.Message); }
            }
            else if (cert is not null)
            {
                var derived = EkFromCertificate(cert, out var why);
                if (derived is null) return new("ek_tpm: missing, and " + why);
                ek = derived;
                ekBytes = ek.ToTpm2B();
            }
            else return new("ek_tpm: required");

            if (!ek.IsRestrictedDecryptionKey(out var ekProblem)) return new("ek_tpm: not a restricted decryption key (" + ekProblem + ")");
            if (cert is not null)
            {
                KeyIdentity certKey;
                try { certKey = KeyIdentity.FromSubjectPublicKeyInfo(cert.PublicKey.ExportSubjectPublicKeyInfo()); }
                catch (FormatException ex) { return new("ekcert: " + ex.Message); }
                KeyIdentity ekKey;
                try { ekKey = KeyIdentity.FromTpmPublic(ek); }
                catch (Exception ex) when (ex is InvalidOperationException or NotSupportedException or CryptographicException) { return new("ek_tpm: no usable public key: " + ex.Message); }
                if (!ekKey.Equals(certKey)) return new("ek_tpm: must contain the same public key found in ekcert");
                if (_settings.VerifyEkCertificateChain)
                {
                    if (_trust is null) return new("ekcert: no trusted TPM manufacturer is configured");
                    var chain = _trust().Validate(cert);
                    if (!chain.Trusted) return new("ekcert: not issued by a trusted TPM manufacturer: " + chain.Problem);
                }
            }
            return new(null, aik, aikBytes, ek, ekBytes, certDer);
        }
        finally { cert?.Dispose(); }
    }

    /// <summary>The TCG default EK public area holding the certificate's key (RSA 2048: template L-1; ECC P-256: L-2; P-384: H-4).</summary>
    private static TpmPublic? EkFromCertificate(X509Certificate2 cert, out string? why)
    {
        why = null;
        var spki = cert.PublicKey.ExportSubjectPublicKeyInfo();
        TpmPublic[] candidates = [TpmTemplates.EkRsa2048, TpmTemplates.EkEccP256, TpmTemplates.EkEccP384High];
        foreach (var t in candidates)
        {
            try { return TpmPublic.FromSubjectPublicKeyInfo(spki, t); }
            catch (TpmFormatException) { }
        }
        why = "the EK certificate's key fits no default EK template";
        return null;
    }

    private static bool TryBase64(string s, out byte[] bytes)
    {
        bytes = new byte[s.Length / 4 * 3 + 3];
        if (Convert.TryFromBase64String(s, bytes, out int n) && n > 0) { bytes = bytes[..n]; return true; }
        bytes = [];
        return false;
    }

    // ------------------------------------------------------------------ activate

    /// <summary>
    /// Activates an agent: <paramref name="authTag"/> must be the HMAC the TPM's released challenge gives
    /// (<see cref="ComputeAuthTag"/>), compared in constant time. A wrong tag deletes the registration (the agent must
    /// register again) and answers 400; an unknown agent 404.
    /// </summary>
    public async Task<AttestationOutcome<EmptyResults>> ActivateAsync(string agentId, string? authTag, AttestationCallInfo? call = null, CancellationToken ct = default)
    {
        call ??= new AttestationCallInfo();
        if (!IsValidAgentId(agentId))
            return await RejectAsync<EmptyResults>(AuditActivate, 400, "agent_id: must be a UUID", Clip(agentId), call, ct).ConfigureAwait(false);
        if (string.IsNullOrEmpty(authTag))
            return await RejectAsync<EmptyResults>(AuditActivate, 400, "auth_tag: required", agentId, call, ct).ConfigureAwait(false);
        var agent = await _store.GetRegistrarAgentAsync(agentId, ct).ConfigureAwait(false);
        if (agent is null)
            return await RejectAsync<EmptyResults>(AuditActivate, 404, $"Agent with ID '{agentId}' not found", agentId, call, ct).ConfigureAwait(false);
        var presented = SHA256.HashData(Encoding.ASCII.GetBytes(authTag.Trim().ToLowerInvariant()));
        if (agent.Active)
        {
            if (agent.Pending is not { } pending) return AttestationOutcome<EmptyResults>.Ok(EmptyResults.Instance);
            if (CryptographicOperations.FixedTimeEquals(presented, pending.AuthTagHash)
                && await _store.PromotePendingRegistrationAsync(agentId, pending.AuthTagHash, _time.GetUtcNow(), ct).ConfigureAwait(false))
            {
                await AuditAsync(AuditActivate, agentId, AuditOutcome.Success, $"re-registration activated: regcount={agent.RegCount + 1}", call, ct).ConfigureAwait(false);
                return AttestationOutcome<EmptyResults>.Ok(EmptyResults.Instance);
            }
            // Only the unproven re-registration goes; the active registration, and the agent's attestation, are untouched.
            await _store.DiscardPendingRegistrationAsync(agentId, pending.AuthTagHash, ct).ConfigureAwait(false);
            await AuditAsync(AuditActivate, agentId, AuditOutcome.Rejected, "auth tag mismatch: pending re-registration discarded, active registration kept", call, ct).ConfigureAwait(false);
            return AttestationOutcome<EmptyResults>.Fail(400,
                $"Auth tag for agent '{agentId}' does not match expected value. The pending re-registration was discarded; the active registration is unchanged");
        }

        bool match = agent.AuthTagHash is { } expected && CryptographicOperations.FixedTimeEquals(presented, expected);
        if (match && await _store.ActivateRegistrarAgentAsync(agentId, agent.AuthTagHash!, _time.GetUtcNow(), ct).ConfigureAwait(false))
        {
            await AuditAsync(AuditActivate, agentId, AuditOutcome.Success, $"regcount={agent.RegCount}", call, ct).ConfigureAwait(false);
            return AttestationOutcome<EmptyResults>.Ok(EmptyResults.Instance);
        }
        await _store.DeleteRegistrarAgentAsync(agentId, ct).ConfigureAwait(false);
        await AuditAsync(AuditActivate, agentId, AuditOutcome.Rejected, "auth tag mismatch: registration deleted", call, ct).ConfigureAwait(false);
        return AttestationOutcome<EmptyResults>.Fail(400,
            $"Auth tag for agent '{agentId}' does not match expected value. The agent has been deleted from the database and will need to be restarted to reattempt registration");
    }

    // ------------------------------------------------------------------ read and delete

    /// <summary>All registered agent ids, ordered.</summary>
    public async Task<AttestationOutcome<RegistrarAgentList>> ListAsync(CancellationToken ct = default) =>
        AttestationOutcome<RegistrarAgentList>.Ok(new RegistrarAgentList { Uuids = await _store.ListRegistrarAgentIdsAsync(ct).ConfigureAwait(false) });

    /// <summary>An active agent's keys, certificates and contact; 404 when unknown or not yet activated.</summary>
    public async Task<AttestationOutcome<RegistrarAgentView>> GetAsync(string agentId, CancellationToken ct = default)
    {
        if (!IsValidAgentId(agentId)) return AttestationOutcome<RegistrarAgentView>.Fail(400, "agent_id: must be a UUID");
        var a = await _store.GetRegistrarAgentAsync(agentId, ct).ConfigureAwait(false);
        if (a is null) return AttestationOutcome<RegistrarAgentView>.Fail(404, $"Agent with ID '{agentId}' not found");
        if (!a.Active) return AttestationOutcome<RegistrarAgentView>.Fail(404, $"Agent with ID '{agentId}' has not been activated");
        return AttestationOutcome<RegistrarAgentView>.Ok(ToView(a));
    }

    /// <summary>The stored record (active or not), for admin tools; null when unknown.</summary>
    public Task<RegistrarAgentRecord?> GetRecordAsync(string agentId, CancellationToken ct = default) => _store.GetRegistrarAgentAsync(agentId, ct);

    /// <summary>Removes an agent; 404 when unknown.</summary>
    public async Task<AttestationOutcome<EmptyResults>> DeleteAsync(string agentId, AttestationCallInfo? call = null, CancellationToken ct = default)
    {
        call ??= new AttestationCallInfo();
        if (!IsValidAgentId(agentId)) return AttestationOutcome<EmptyResults>.Fail(400, "agent_id: must be a UUID");
        if (!await _store.DeleteRegistrarAgentAsync(agentId, ct).ConfigureAwait(false))
            return AttestationOutcome<EmptyResults>.Fail(404, $"Agent with ID '{agentId}' not found");
        await AuditAsync(AuditDelete, agentId, AuditOutcome.Success, null, call, ct).ConfigureAwait(false);
        return AttestationOutcome<EmptyResults>.Ok(EmptyResults.Instance);
    }

    public static RegistrarAgentView ToView(RegistrarAgentRecord a) => new()
    {
        AgentId = a.AgentId,
        AikTpm = Convert.ToBase64String(a.AikTpm),
        EkTpm = Convert.ToBase64String(a.EkTpm),
        EkCert = a.EkCert is null ? null : Convert.ToBase64String(a.EkCert),
        MtlsCert = a.MtlsCert,
        Ip = a.Ip,
        Port = a.Port,
        RegCount = a.RegCount,
    };

    // ------------------------------------------------------------------ audit

    private async Task<AttestationOutcome<T>> RejectAsync<T>(string action, int status, string message, string? target, AttestationCallInfo call, CancellationToken ct)
    {
        await AuditAsync(action, target, status == 403 ? AuditOutcome.Denied : AuditOutcome.Rejected, $"{status} {message}", call, ct).ConfigureAwait(false);
        return AttestationOutcome<T>.Fail(status, message);
    }

    private Task AuditAsync(string action, string? target, AuditOutcome outcome, string? detail, AttestationCallInfo call, CancellationToken ct) =>
        _store.AppendAuditAsync(new AuditEntry { Time = _time.GetUtcNow(), Actor = call.Actor, Action = action, Target = target, Source = call.Source, Outcome = outcome, Detail = detail }, ct);

    private static string Clip(string? s) => s is null ? "" : s.Length <= 64 ? s : s[..64] + "…";
}
