using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using TpmProvisioning.Pki;
using TpmProvisioning.Station;
using TpmProvisioning.Storage;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Provisioning;

/// <summary>
/// The server side of spec 000. Checks a provisioning request — API key, rate, device fields, vendor scope, the EK
/// certificate's chain to a trusted manufacturer, the EK key, the AK's attributes, the CSR's signature and key, the device's
/// binding to its EK — then issues the AK certificate from the TPM CA and seals it so that only the TPM holding the EK, with
/// the AK loaded, can open it (MakeCredential over the AK Name, AES-256-GCM under the credential secret).
/// Every call is audited; a success becomes a manufacturing record; a rejection changes nothing else.
/// Thread-safe: one instance serves every request of a server.
/// </summary>
public sealed class ProvisioningService
{
    /// <summary>Most characters of a device field and of the api_key (the spec's limit).</summary>
    public const int MaxFieldChars = 1024;
    /// <summary>
    /// Most characters of ek_cert, ek_pub_key, ak_pub_key and csr. The spec says 1024, but a real RSA EK certificate is
    /// about 1.3 KB of DER (1.8 K characters of base64): a deliberate, documented deviation.
    /// </summary>
    public const int MaxEncodedChars = 16 * 1024;
    /// <summary>Fewest characters of device.name.</summary>
    public const int MinDeviceNameChars = 6;
    public const string AuditAction = "provision.create";

    private readonly IStore _store;
    private readonly TpmCa _ca;
    private readonly Func<EkTrustStore> _trust;
    private readonly ProvisioningSettings _settings;

    public ProvisioningService(IStore store, TpmCa ca, EkTrustAnchors trust, ProvisioningSettings? settings = null, ApiKeyRateLimiter? rateLimiter = null)
        : this(store, ca, () => trust.Current, settings, rateLimiter)
    {
        ArgumentNullException.ThrowIfNull(trust);
    }

    public ProvisioningService(IStore store, TpmCa ca, EkTrustStore trust, ProvisioningSettings? settings = null, ApiKeyRateLimiter? rateLimiter = null)
        : this(store, ca, () => trust, settings, rateLimiter)
    {
        ArgumentNullException.ThrowIfNull(trust);
    }

    private ProvisioningService(IStore store, TpmCa ca, Func<EkTrustStore> trust, ProvisioningSettings? settings, ApiKeyRateLimiter? rateLimiter)
    {
        _store = store ?? throw new ArgumentNullException(nameof(store));
        _ca = ca ?? throw new ArgumentNullException(nameof(ca));
        _trust = trust;
        _settings = settings ?? new ProvisioningSettings();
        _ca.SignerTimeout = _settings.SignerTimeout;
        ApiKeys = new ApiKeyManager(store);
        RateLimiter = rateLimiter ?? new ApiKeyRateLimiter();
    }

    public ApiKeyManager ApiKeys { get; }
    public ApiKeyRateLimiter RateLimiter { get; }
    public TpmCa Ca => _ca;

    /// <summary>
    /// Resolves the CA that signs each request's AK certificate (the station's active signing key, cached until it changes);
    /// null means the CA given at construction. A <see cref="SigningKeyUnavailableException"/> from it answers 503.
    /// </summary>
    public Func<CancellationToken, Task<TpmCa>>? CaSource { get; set; }

    /// <summary>A rejection carrying its status, raised inside the checks and turned into an outcome at the top.</summary>
    private sealed class Rejection(int status, string message, int? retryAfter = null) : Exception(message)
    {
        public int Status { get; } = status;
        public int? RetryAfter { get; } = retryAfter;
    }

    private static Rejection Bad(string field, string why) => new(400, $"{field}: {why}");

    /// <summary>
    /// Watches each provisioning (the station): states, per-step log lines and hook stages. Null means nobody watches. A hook
    /// that fails aborts its phase; an observer that throws anywhere else is ignored (it must not break provisioning).
    /// </summary>
    public IProvisioningObserver? Observer { get; set; }

    /// <summary>Runs one provisioning request to its outcome. Never throws for a bad request; only cancellation escapes.</summary>
    public async Task<ProvisioningOutcome> ProvisionAsync(ProvisioningRequest? request, ProvisioningCallInfo? call = null, CancellationToken ct = default)
    {
        call ??= new ProvisioningCallInfo();
        string actor = "-";
        string? target = null;
        ProvisioningOutcome outcome;
        var observer = Observer;
        var watch = new Watch(observer);
        try
        {
            if (request is null) throw Bad("body", "a JSON object is required");
            target = TargetOf(request.Device);

            // 1. Who is calling: the body's api_key, else the Authorization header.
            string? presented = !string.IsNullOrEmpty(request.ApiKey) ? request.ApiKey : ApiKeyManager.FromAuthorizationHeader(call.Authorization);
            if (presented is { Length: > MaxFieldChars }) throw Bad("api_key", $"longer than {MaxFieldChars} characters");
            var (check, key) = await ApiKeys.AuthenticateAsync(presented, ct).ConfigureAwait(false);
            if (key is not null) actor = key.KeyId;
            switch (check)
            {
                case ApiKeyCheck.Missing: throw new Rejection(401, "api_key: missing");
                case ApiKeyCheck.Unknown: throw new Rejection(401, "api_key: not a valid API key");
                case ApiKeyCheck.Disabled: throw new Rejection(403, "api_key: this API key is disabled");
            }

            // 2. How often.
            if (!RateLimiter.TryAcquire(key!.KeyId, key.RatePerMinute, out int retry))
                throw new Rejection(429, $"api_key: rate limit of {key.RatePerMinute} requests per minute exceeded; retry in {retry} s", retry);

            // 3. The device, and whether this key may provision its vendor.
            var device = CheckDevice(request.Device);
            if (!key.AllowsVendor(device.Vendor))
                throw new Rejection(403, $"device.vendor: this API key may not provision devices of vendor '{device.Vendor}'");

            // From here on the device is known and the caller authenticated: the station watches (bootstrap phase).
            watch.Progress = new ProvisioningProgress
            {
                Serial = device.Serial, Vendor = device.Vendor, DeviceName = device.Name, DeviceVersion = device.Version,
                Source = call.Source, ApiKeyId = key.KeyId, CorrelationId = call.CorrelationId,
            };
            var p = watch.Progress;
            await watch.EnterAsync("BOOTSTRAP", DeviceLogType.Bootstrap, DeviceStates.BootstrapStarted, ct).ConfigureAwait(false);
            await watch.LogAsync($"provisioning request from {call.Source} with API key {key.KeyId}: device '{device.Name}' {device.Vendor}/{device.Serial} version {device.Version}", ct).ConfigureAwait(false);

            // 4. The EK: a genuine TPM's (certificate chains to a trusted manufacturer) and the key the client says it is.
            var ekCertDer = DecodeCertificate("ek_cert", request.EkCert);
            X509Certificate2 ekCert;
            try { ekCert = X509CertificateLoader.LoadCertificate(ekCertDer); }
            catch (CryptographicException) { throw Bad("ek_cert", "not a DER X.509 certificate"); }
            using (ekCert)
            {
                p.EkFingerprint = Convert.ToHexString(SHA256.HashData(ekCertDer));
                p.EkSubject = ekCert.Subject;
                p.EkIssuer = ekCert.Issuer;
                // .NET decodes the validity lazily: a certificate that loaded may still hold dates that do not decode.
                DateTime notBefore, notAfter;
                try { (notBefore, notAfter) = (ekCert.NotBefore, ekCert.NotAfter); }
                catch (CryptographicException) { throw Bad("ek_cert", "its validity dates do not decode"); }
                await watch.LogAsync($"EK certificate: serial {ekCert.SerialNumber}, subject '{ekCert.Subject}', issuer '{ekCert.Issuer}', SHA-256 {p.EkFingerprint}, valid {notBefore.ToUniversalTime():yyyy-MM-dd} to {notAfter.ToUniversalTime():yyyy-MM-dd}", ct).ConfigureAwait(false);
                var chain = _trust().Validate(ekCert);
                if (!chain.Trusted) throw Bad("ek_cert", chain.Problem ?? "not trusted");
                await watch.LogAsync($"EK certificate chain: trusted, root '{chain.Root?.Subject}' (SHA-256 {(chain.Root is null ? "-" : Convert.ToHexString(SHA256.HashData(chain.Root.RawData)))})", ct).ConfigureAwait(false);
                await watch.StageAsync(HookStages.Bootstrap, ct).ConfigureAwait(false);
                await watch.FinishAsync(DeviceStates.BootstrapFinished, ct).ConfigureAwait(false);

                // Triage: the checks.
                await watch.EnterAsync("TRIAGE", DeviceLogType.Triage, DeviceStates.TriageStarted, ct).ConfigureAwait(false);
                KeyIdentity certKey;
                try { certKey = KeyIdentity.FromSubjectPublicKeyInfo(ekCert.PublicKey.ExportSubjectPublicKeyInfo()); }
                catch (FormatException ex) { throw Bad("ek_cert", "its public key cannot be read: " + ex.Message); }
                var ekPublic = ParseEkPublic(request.EkPubKey, certKey);
                await watch.LogAsync($"EK key: {certKey} matches the EK certificate; nameAlg {ekPublic.NameAlg}, symmetric {ekPublic.Symmetric.Algorithm}-{ekPublic.Symmetric.Mode}", ct).ConfigureAwait(false);

                // 5. The AK: a restricted signing key that never leaves its TPM; its Name is what the credential is bound to.
                var (akPublic, akName) = ParseAkPublic(request.AkPubKey);
                var akKey = KeyIdentity.FromTpmPublic(akPublic);
                p.AkName = Convert.ToHexString(akName);
                await watch.LogAsync($"AK: {akKey}, restricted signing key (fixedTPM, fixedParent, sensitiveDataOrigin); Name {p.AkName}", ct).ConfigureAwait(false);

                // 6. The CSR: signed by the AK.
                CheckCsr(request.Csr, akKey);
                await watch.LogAsync("CSR: the signature verifies and its key is the AK", ct).ConfigureAwait(false);

                // 7. One device, one EK.
                string ekFingerprint = p.EkFingerprint;
                var binding = await _store.CheckDeviceBindingAsync(device.Vendor, device.Serial, ekFingerprint, ct).ConfigureAwait(false);
                ThrowIfConflict(binding);
                await watch.LogAsync(binding.State == DeviceBindingState.SameDevice
                    ? "binding: the device is already bound to this EK (re-provisioning)"
                    : "binding: neither the serial nor the EK is bound yet", ct).ConfigureAwait(false);

                // 7b. The same device, EK and AK again (a re-run batch): idempotent. The record's still valid certificate is
                // sealed again for this AK; nothing is issued or written but the audit entry.
                if (binding.State == DeviceBindingState.SameDevice
                    && await FindCurrentRecordAsync(device, ekFingerprint, Convert.ToHexString(akName), ct).ConfigureAwait(false) is { } existing)
                {
                    await watch.LogAsync($"already provisioned: record {existing.Id} holds this AK (Name {p.AkName}) with certificate serial {existing.AkCertificateSerial}, still valid", ct).ConfigureAwait(false);
                    await watch.FinishAsync(DeviceStates.TriageFinished, ct).ConfigureAwait(false);
                    // The device ends where a provisioning ends; no hook runs (nothing is issued) and the record's station facts
                    // stay as they are (no Record on the progress).
                    await watch.EnterAsync("PROVISIONER", DeviceLogType.Provisioner, DeviceStates.ProvisionerStarted, ct).ConfigureAwait(false);
                    await watch.LogAsync($"AK certificate serial {existing.AkCertificateSerial} sealed again for AK Name {p.AkName}; nothing issued, record {existing.Id} unchanged", ct).ConfigureAwait(false);
                    await watch.FinishAsync(DeviceStates.ProvisionerFinished, ct).ConfigureAwait(false);
                    outcome = Seal(existing, ekPublic, akName, key.KeyId, alreadyProvisioned: true);
                    await AuditAsync(actor, target, call, AuditOutcome.Success,
                        $"200 already provisioned; ak_cert_serial={existing.AkCertificateSerial} returned again, record {existing.Id} unchanged, ek_cert_sha256={ekFingerprint}", ct).ConfigureAwait(false);
                    return outcome;
                }
                await watch.FinishAsync(DeviceStates.TriageFinished, ct).ConfigureAwait(false);

                // 8. Issue, protect, record.
                await watch.EnterAsync("PROVISIONER", DeviceLogType.Provisioner, DeviceStates.ProvisionerStarted, ct).ConfigureAwait(false);
                await watch.StageAsync(HookStages.ProvisionStarted, ct).ConfigureAwait(false);
                var ca = CaSource is null ? _ca : await CaSource(ct).ConfigureAwait(false);
                ca.SignerTimeout = _settings.SignerTimeout;
                var (akCertDer, akCertSerial) = await ca.IssueAkCertificateDerAsync(new AkCertificateRequest
                {
                    AkSubjectPublicKeyInfo = akKey.ToSubjectPublicKeyInfo(),
                    DeviceName = device.Name,
                    Serial = device.Serial,
                    Vendor = device.Vendor,
                    Version = device.Version,
                    EkCertificateSha256 = SHA256.HashData(ekCertDer),
                    Lifetime = _settings.AkCertificateLifetime,
                }, ct).ConfigureAwait(false);
                p.AkCertificate = akCertDer;
                p.AkCertificateSerial = akCertSerial;
                p.CaKeyLabel = ca.Signer.Description;
                p.CaFingerprint = Convert.ToHexString(SHA256.HashData(ca.Certificate.RawData));
                await watch.LogAsync($"AK certificate issued: serial {akCertSerial}, SHA-256 {Convert.ToHexString(SHA256.HashData(akCertDer))}, by '{ca.Certificate.Subject}' (key {p.CaKeyLabel}, CA SHA-256 {p.CaFingerprint})", ct).ConfigureAwait(false);
                await watch.StageAsync(HookStages.CertificateIssued, ct).ConfigureAwait(false);

                await watch.LogAsync($"credential: a fresh secret protected under the EK for AK Name {p.AkName}; the AK certificate sealed under it (AES-256-GCM)", ct).ConfigureAwait(false);

                var record = new ManufacturingRecord
                {
                    Serial = device.Serial,
                    Vendor = device.Vendor,
                    DeviceName = device.Name,
                    DeviceVersion = device.Version,
                    EkFingerprint = ekFingerprint,
                    AkName = Convert.ToHexString(akName),
                    AkCertificateSerial = akCertSerial,
                    AkCertificate = akCertDer,
                    ApiKeyId = key.KeyId,
                };
                p.Record = record;
                await watch.StageAsync(HookStages.PostProvision, ct).ConfigureAwait(false);
                var (committed, id) = await _store.AddManufacturingRecordAsync(record, ct).ConfigureAwait(false);
                ThrowIfConflict(committed);
                record = record with { Id = id };
                p.Record = record;
                await watch.LogAsync($"manufacturing record {id} written{(committed.State == DeviceBindingState.SameDevice ? " (re-provisioned)" : "")}; the device registers with the registrar next", ct).ConfigureAwait(false);
                await watch.FinishAsync(DeviceStates.ProvisionerFinished, ct).ConfigureAwait(false);

                outcome = Seal(record, ekPublic, akName, key.KeyId, alreadyProvisioned: false);
                await AuditAsync(actor, target, call, AuditOutcome.Success,
                    $"200 ak_cert_serial={record.AkCertificateSerial} ek_cert_sha256={ekFingerprint}{(committed.State == DeviceBindingState.SameDevice ? " reprovisioned" : "")}", ct).ConfigureAwait(false);
                return outcome;
            }
        }
        catch (Rejection r)
        {
            outcome = new ProvisioningOutcome { Status = r.Status, Error = r.Message, RetryAfterSeconds = r.RetryAfter, ApiKeyId = actor == "-" ? null : actor };
        }
        catch (StoreUnavailableException)
        {
            outcome = new ProvisioningOutcome
            {
                Status = 503, Error = "the provisioning store is unavailable; retry later", RetryAfterSeconds = _settings.UnavailableRetryAfterSeconds,
                ApiKeyId = actor == "-" ? null : actor,
            };
        }
        catch (SigningKeyUnavailableException ex)
        {
            outcome = new ProvisioningOutcome { Status = 503, Error = "the TPM CA signing key is unavailable: " + ex.Message, RetryAfterSeconds = _settings.UnavailableRetryAfterSeconds, ApiKeyId = actor == "-" ? null : actor };
        }
        catch (CertificateSignerTimeoutException)
        {
            outcome = new ProvisioningOutcome { Status = 504, Error = "the TPM CA signer did not answer in time; retry later", ApiKeyId = actor == "-" ? null : actor };
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            await watch.AbortAsync("the request was cancelled", CancellationToken.None).ConfigureAwait(false);
            throw;
        }
        catch (Exception ex)
        {
            outcome = new ProvisioningOutcome
            {
                Status = 500, Fault = ex, ApiKeyId = actor == "-" ? null : actor,
                Error = "internal error" + (call.CorrelationId is { } cid ? $"; correlation id {cid}" : ""),
            };
        }
        await watch.AbortAsync($"{outcome.Status} {outcome.Error}", ct).ConfigureAwait(false);
        await AuditAsync(actor, target, call, OutcomeOf(outcome.Status), $"{outcome.Status} {outcome.Error}", ct).ConfigureAwait(false);
        return outcome;
    }

    /// <summary>
    /// The observer's view of one provisioning: which phase runs (its state prefix and log), the lines and states it is told, and
    /// the abort of the current phase (state <c>&lt;PHASE&gt;-ABORTED</c>, the reason in its log, then <c>provision-failed</c>).
    /// </summary>
    private sealed class Watch(IProvisioningObserver? observer)
    {
        public ProvisioningProgress? Progress { get; set; }
        private string? _phase;
        private DeviceLogType _log;

        public async Task EnterAsync(string phase, DeviceLogType log, string state, CancellationToken ct)
        {
            _phase = phase;
            _log = log;
            await StateAsync(state, null, ct).ConfigureAwait(false);
        }

        public async Task FinishAsync(string state, CancellationToken ct)
        {
            await StateAsync(state, null, ct).ConfigureAwait(false);
            _phase = null;
        }

        public async Task LogAsync(string line, CancellationToken ct)
        {
            if (observer is null || Progress is null) return;
            try { await observer.LogAsync(Progress, _log, line, ct).ConfigureAwait(false); }
            catch (Exception) when (!ct.IsCancellationRequested) { }
        }

        private async Task StateAsync(string state, string? reason, CancellationToken ct)
        {
            if (observer is null || Progress is null) return;
            try { await observer.StateAsync(Progress, state, reason, ct).ConfigureAwait(false); }
            catch (Exception) when (!ct.IsCancellationRequested) { }
        }

        /// <summary>Runs a hook stage; its failure aborts the phase with 403 and the hook's message.</summary>
        public async Task StageAsync(string stage, CancellationToken ct)
        {
            if (observer is null || Progress is null) return;
            string? failure;
            try { failure = await observer.StageAsync(Progress, stage, ct).ConfigureAwait(false); }
            catch (Exception ex) when (!ct.IsCancellationRequested) { failure = ex.Message; }
            if (failure is not null)
                throw new Rejection(403, $"station: the {stage} hook failed: {Clip(failure, 512)}");
        }

        public async Task AbortAsync(string reason, CancellationToken ct)
        {
            if (observer is null || Progress is null || _phase is null) return;
            string phase = _phase;
            _phase = null;
            Progress.FailedPhase = phase;
            Progress.FailureReason = reason;
            try
            {
                await observer.LogAsync(Progress, _log, $"{phase.ToLowerInvariant()} aborted: {reason}", ct).ConfigureAwait(false);
                await observer.StateAsync(Progress, phase + "-ABORTED", reason, ct).ConfigureAwait(false);
                string? failed = await observer.StageAsync(Progress, HookStages.ProvisionFailed, ct).ConfigureAwait(false);
                if (failed is not null) await observer.LogAsync(Progress, _log, $"the {HookStages.ProvisionFailed} hook failed: {Clip(failed, 512)}", ct).ConfigureAwait(false);
            }
            catch (Exception) when (!ct.IsCancellationRequested) { }
        }

        private static string Clip(string s, int max) => s.Length <= max ? s : s[..max] + "…";
    }

    /// <summary>
    /// Audits a call refused before it reached the engine (malformed JSON, oversized body, unknown namespace, draining) and
    /// returns its outcome, so every call leaves exactly one audit entry.
    /// </summary>
    public async Task<ProvisioningOutcome> RejectAsync(int status, string error, ProvisioningCallInfo? call = null, int? retryAfterSeconds = null, CancellationToken ct = default)
    {
        call ??= new ProvisioningCallInfo();
        await AuditAsync("-", null, call, OutcomeOf(status), $"{status} {error}", ct).ConfigureAwait(false);
        return new ProvisioningOutcome { Status = status, Error = error, RetryAfterSeconds = retryAfterSeconds };
    }

    private static AuditOutcome OutcomeOf(int status) => status switch
    {
        200 => AuditOutcome.Success,
        401 or 403 or 429 => AuditOutcome.Denied,
        >= 500 => AuditOutcome.Failed,
        _ => AuditOutcome.Rejected,
    };

    private async Task AuditAsync(string actor, string? target, ProvisioningCallInfo call, AuditOutcome outcome, string detail, CancellationToken ct)
    {
        try
        {
            var d = call.CorrelationId is { } cid ? $"{detail} correlation={cid}" : detail;
            if (call.Namespace is { } ns) d += $" namespace={ns}";
            await _store.AppendAuditAsync(new AuditEntry { Actor = actor, Action = AuditAction, Target = target, Source = call.Source, Outcome = outcome, Detail = d }, ct).ConfigureAwait(false);
        }
        catch (StoreUnavailableException)
        {
            // The outcome already says 503 when the store is down; an audit that cannot be written must not turn a reply into a 500.
        }
    }

    private static string? TargetOf(ProvisioningDevice? d) =>
        d?.Serial is { Length: > 0 and <= MaxFieldChars } s ? $"{Trunc(d.Vendor)}/{s}" : null;

    private static string Trunc(string? s) => s is null ? "" : s.Length <= 128 ? s : s[..128];

    /// <summary>
    /// The success outcome for <paramref name="record"/>: a fresh secret protected under the EK for the AK Name (MakeCredential),
    /// the record's AK certificate sealed under it.
    /// </summary>
    private static ProvisioningOutcome Seal(ManufacturingRecord record, TpmPublic ekPublic, byte[] akName, string apiKeyId, bool alreadyProvisioned)
    {
        var secret = RandomNumberGenerator.GetBytes(ProvisioningEnvelope.SecretBytes);
        var blob = Credential.MakeCredential(ekPublic, akName, secret);
        var (sealedCert, nonce) = ProvisioningEnvelope.Seal(secret, record.AkCertificate);
        CryptographicOperations.ZeroMemory(secret);
        return new ProvisioningOutcome
        {
            Status = 200,
            ApiKeyId = apiKeyId,
            Record = record,
            AkCertificate = record.AkCertificate,
            AlreadyProvisioned = alreadyProvisioned,
            Response = new ProvisioningResponse
            {
                CredentialBundle = Convert.ToBase64String(Credential.ToTpm2ToolsFile(blob)),
                EncryptedAkCert = Convert.ToBase64String(sealedCert),
                Nonce = Convert.ToBase64String(nonce),
            },
        };
    }

    /// <summary>
    /// The device's newest record when it holds this EK and this AK and its AK certificate is still valid (and issued by the
    /// current TPM CA); otherwise null, and the request is a re-provisioning.
    /// </summary>
    private async Task<ManufacturingRecord?> FindCurrentRecordAsync(DeviceIdentity device, string ekFingerprint, string akName, CancellationToken ct)
    {
        var records = await _store.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery
        {
            Vendor = device.Vendor, Serial = device.Serial, EkFingerprint = ekFingerprint, Limit = 1,
        }, ct).ConfigureAwait(false);
        var r = records.FirstOrDefault();
        if (r is null || !string.Equals(r.AkName, akName, StringComparison.OrdinalIgnoreCase)) return null;
        try
        {
            using var cert = X509CertificateLoader.LoadCertificate(r.AkCertificate);
            var now = DateTime.UtcNow;
            if (cert.NotAfter.ToUniversalTime() <= now.AddMinutes(5) || cert.NotBefore.ToUniversalTime() > now.AddMinutes(5)) return null;
            // A replaced TPM CA re-issues: the old certificate would not chain to what verifiers now trust.
            if (!cert.IssuerName.RawData.AsSpan().SequenceEqual(_ca.Certificate.SubjectName.RawData)) return null;
            if (AkCertificateProfile.ReadEkCertificateSha256(cert) is not { } ekSha
                || !string.Equals(Convert.ToHexString(ekSha), ekFingerprint, StringComparison.OrdinalIgnoreCase)) return null;
        }
        catch (CryptographicException) { return null; }
        return r;
    }

    private static void ThrowIfConflict(DeviceBindingCheck b)
    {
        switch (b.State)
        {
            case DeviceBindingState.SerialBoundToOtherEk:
                throw new Rejection(409, $"device.serial: '{b.OtherSerial}' of vendor '{b.OtherVendor}' is already bound to another EK");
            case DeviceBindingState.EkBoundToOtherDevice:
                throw new Rejection(409, "ek_cert: this EK is already bound to another device");
        }
    }

    // ------------------------------------------------------------------ field checks

    private static DeviceIdentity CheckDevice(ProvisioningDevice? d)
    {
        if (d is null) throw Bad("device", "required");
        return new DeviceIdentity(
            Field("device.name", d.Name, MinDeviceNameChars),
            Field("device.serial", d.Serial, 1),
            Field("device.vendor", d.Vendor, 1),
            Field("device.version", d.Version, 1));
    }

    private static string Field(string name, string? value, int min)
    {
        if (value is null) throw Bad(name, "required");
        if (value.Length < min) throw Bad(name, min == 1 ? "must not be empty" : $"must be at least {min} characters");
        if (value.Length > MaxFieldChars) throw Bad(name, $"must be at most {MaxFieldChars} characters");
        foreach (char c in value)
            if (char.IsControl(c)) throw Bad(name, "must not contain control characters");
        if (value.Trim().Length == 0) throw Bad(name, "must not be blank");
        return value;
    }

    private static byte[] Base64Field(string field, string? value)
    {
        if (value is null) throw Bad(field, "required");
        if (value.Length == 0) throw Bad(field, "must not be empty");
        if (value.Length > MaxEncodedChars) throw Bad(field, $"must be at most {MaxEncodedChars} characters");
        try { return Convert.FromBase64String(value); }
        catch (FormatException) { throw Bad(field, "not valid base64"); }
    }

    /// <summary>A certificate field: base64 DER, or PEM.</summary>
    private static byte[] DecodeCertificate(string field, string? value)
    {
        if (value is not null && value.Length <= MaxEncodedChars && value.TrimStart().StartsWith("-----BEGIN", StringComparison.Ordinal))
        {
            if (!PemEncoding.TryFind(value, out var f) || value[f.Label] != "CERTIFICATE") throw Bad(field, "PEM without a CERTIFICATE block");
            try { return Convert.FromBase64String(value[f.Base64Data].ToString()); }
            catch (FormatException) { throw Bad(field, "not valid base64 inside its PEM block"); }
        }
        var der = Base64Field(field, value);
        if (der.Length < 2 || der[0] != 0x30) throw Bad(field, "not DER (a certificate starts with a SEQUENCE)");
        return der;
    }

    /// <summary>
    /// ek_pub_key as DER SubjectPublicKeyInfo (the spec) or TPM2B_PUBLIC; it must be the certificate's key. Returns the EK
    /// public area MakeCredential needs: the TPM2B as given, or the EK Credential Profile template for the key's type.
    /// </summary>
    private static TpmPublic ParseEkPublic(string? value, KeyIdentity certKey)
    {
        var bytes = Base64Field("ek_pub_key", value);
        TpmPublic ek;
        KeyIdentity key;
        if (bytes.Length > 0 && bytes[0] == 0x30)
        {
            try { key = KeyIdentity.FromSubjectPublicKeyInfo(bytes); }
            catch (FormatException ex) { throw Bad("ek_pub_key", "not a DER SubjectPublicKeyInfo: " + ex.Message); }
            var template = key.IsRsa
                ? key.KeySizeBits == 2048 ? TpmTemplates.EkRsa2048 : null
                : key.TpmCurve switch
                {
                    TpmEccCurve.NistP256 => TpmTemplates.EkEccP256,
                    TpmEccCurve.NistP384 => TpmTemplates.EkEccP384High,
                    _ => null,
                };
            if (template is null) throw Bad("ek_pub_key", $"unsupported EK key {key}; supported are RSA-2048, EC P-256 and EC P-384");
            if (!key.Equals(certKey)) throw Bad("ek_pub_key", "does not match the EK certificate's public key");
            try { ek = key.ToTpmPublic(template); }
            catch (FormatException ex) { throw Bad("ek_pub_key", ex.Message); }
        }
        else
        {
            try { ek = TpmPublic.ParseTpm2B(bytes); }
            catch (TpmFormatException ex) { throw Bad("ek_pub_key", "neither a DER SubjectPublicKeyInfo nor a TPM2B_PUBLIC: " + ex.Message); }
            if (!ek.IsRestrictedDecryptionKey(out var problem)) throw Bad("ek_pub_key", "not a restricted decryption key: " + problem);
            try { key = KeyIdentity.FromTpmPublic(ek); }
            catch (Exception ex) when (ex is InvalidOperationException or NotSupportedException or CryptographicException) { throw Bad("ek_pub_key", "no usable public key: " + ex.Message); }
            if (!key.Equals(certKey)) throw Bad("ek_pub_key", "does not match the EK certificate's public key");
            if (ek.Symmetric.Algorithm != TpmAlgId.Aes || ek.Symmetric.Mode != TpmAlgId.Cfb || !TpmHash.IsSupported(ek.NameAlg))
                throw Bad("ek_pub_key", $"unsupported EK parameters ({ek}); MakeCredential needs an AES-CFB storage key");
        }
        return ek;
    }

    /// <summary>
    /// ak_pub_key as DER SubjectPublicKeyInfo (rebuilt with the module's AK template: RSA-2048 RSASSA-SHA256 or P-256
    /// ECDSA-SHA256, as <c>tpm2_createak</c> and <see cref="TpmDevice.CreateAk(TpmPublic?, TpmPublic?, byte[]?)"/> make it) or
    /// TPM2B_PUBLIC (used as is, and it must be a restricted, fixedTPM, fixedParent, sensitiveDataOrigin signing key).
    /// Returns the public area and its Name.
    /// </summary>
    private static (TpmPublic Public, byte[] Name) ParseAkPublic(string? value)
    {
        var bytes = Base64Field("ak_pub_key", value);
        if (bytes.Length > 0 && bytes[0] == 0x30)
        {
            KeyIdentity key;
            try { key = KeyIdentity.FromSubjectPublicKeyInfo(bytes); }
            catch (FormatException ex) { throw Bad("ak_pub_key", "not a DER SubjectPublicKeyInfo: " + ex.Message); }
            var template = key.IsRsa
                ? key.KeySizeBits == 2048 ? TpmTemplates.AkRsa2048 : null
                : key.TpmCurve == TpmEccCurve.NistP256 ? TpmTemplates.AkEccP256 : null;
            if (template is null) throw Bad("ak_pub_key", $"unsupported AK key {key}; as SubjectPublicKeyInfo the AK must be RSA-2048 or EC P-256 (send a TPM2B_PUBLIC for others)");
            TpmPublic ak;
            try { ak = key.ToTpmPublic(template); }
            catch (FormatException ex) { throw Bad("ak_pub_key", ex.Message); }
            return (ak, ak.ComputeName());
        }
        TpmPublic pub;
        try { pub = TpmPublic.ParseTpm2B(bytes); }
        catch (TpmFormatException ex) { throw Bad("ak_pub_key", "neither a DER SubjectPublicKeyInfo nor a TPM2B_PUBLIC: " + ex.Message); }
        var problems = pub.RestrictedSigningKeyProblems();
        if (problems.Count > 0) throw Bad("ak_pub_key", "not a restricted signing key fit for attestation: " + string.Join(", ", problems));
        if (!TpmHash.IsSupported(pub.NameAlg)) throw Bad("ak_pub_key", $"unsupported nameAlg {pub.NameAlg}");
        try { KeyIdentity.FromTpmPublic(pub); }
        catch (Exception ex) when (ex is InvalidOperationException or NotSupportedException or CryptographicException) { throw Bad("ak_pub_key", "no usable public key: " + ex.Message); }
        // The Name over the exact bytes sent, not a re-marshaling.
        return (pub, TpmPublic.ComputeName(pub.NameAlg, bytes.AsSpan(2)));
    }

    private static void CheckCsr(string? value, KeyIdentity akKey)
    {
        if (value is null) throw Bad("csr", "required");
        if (value.Length == 0) throw Bad("csr", "must not be empty");
        if (value.Length > MaxEncodedChars) throw Bad("csr", $"must be at most {MaxEncodedChars} characters");
        byte[] der;
        if (value.TrimStart().StartsWith("-----BEGIN", StringComparison.Ordinal))
        {
            if (!PemEncoding.TryFind(value, out var f) || value[f.Label] is not ("CERTIFICATE REQUEST" or "NEW CERTIFICATE REQUEST"))
                throw Bad("csr", "PEM without a CERTIFICATE REQUEST block");
            try { der = Convert.FromBase64String(value[f.Base64Data].ToString()); }
            catch (FormatException) { throw Bad("csr", "not valid base64 inside its PEM block"); }
        }
        else
        {
            der = Base64Field("csr", value);
        }
        if (der.Length < 2 || der[0] != 0x30) throw Bad("csr", "not a DER PKCS#10 request");
        // .NET (OpenSSL) parses and verifies: RSASSA-PKCS1-v1_5, RSASSA-PSS and ECDSA. BouncyCastle would run a primality test on
        // every new RSA modulus before verifying, which costs milliseconds per request.
        CertificateRequest csr;
        try { csr = CertificateRequest.LoadSigningRequest(der, HashAlgorithmName.SHA256, CertificateRequestLoadOptions.SkipSignatureValidation); }
        catch (CryptographicException) { throw Bad("csr", "not a DER PKCS#10 request"); }
        // A key algorithm .NET does not know (NotSupportedException), or a curve OpenSSL does not know (PlatformNotSupportedException):
        // that CSR cannot be verified either.
        try { CertificateRequest.LoadSigningRequest(der, HashAlgorithmName.SHA256); }
        catch (Exception ex) when (ex is CryptographicException or NotSupportedException) { throw Bad("csr", "signature does not verify"); }
        KeyIdentity csrKey;
        try { csrKey = KeyIdentity.FromSubjectPublicKeyInfo(csr.PublicKey.ExportSubjectPublicKeyInfo()); }
        catch (FormatException ex) { throw Bad("csr", "its public key cannot be read: " + ex.Message); }
        if (!csrKey.Equals(akKey)) throw Bad("csr", "its public key is not the AK (ak_pub_key)");
    }
}
