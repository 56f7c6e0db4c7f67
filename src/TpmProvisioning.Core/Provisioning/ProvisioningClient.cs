using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Pki;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Provisioning;

/// <summary>How the client reaches the provisioning server.</summary>
public sealed class ProvisioningClientOptions
{
    /// <summary>The server's base address, e.g. <c>https://factory-ca:8443</c>.</summary>
    public required Uri Server { get; init; }
    /// <summary>Trust only this CA for the server's TLS certificate (the server's components CA); null uses the system store.</summary>
    public X509Certificate2? CaCertificate { get; init; }
    /// <summary>Accept any server certificate. For labs only.</summary>
    public bool SkipCertificateCheck { get; init; }
    /// <summary>Use <c>/api/v1/namespaces/{Namespace}/api/tpm/tpm/provision</c> instead of <c>/api/tpm/tpm/provision</c>.</summary>
    public string? Namespace { get; init; }
    /// <summary>Per-request timeout.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(60);
}

/// <summary>What the device side does with its TPM.</summary>
public sealed class DeviceProvisioningOptions
{
    /// <summary>Which EK (and EK certificate NV index) to use. Default: RSA 2048 at 0x01C00002.</summary>
    public EkKind EkKind { get; init; } = EkKind.Rsa2048;
    /// <summary>The AK template; default <see cref="TpmTemplates.AkRsa2048"/> (as tpm2_createak -G rsa).</summary>
    public TpmPublic? AkTemplate { get; init; }
    /// <summary>Persist the AK here; null picks the first free handle from <see cref="AkHandleSearchStart"/> up.</summary>
    public uint? AkHandle { get; init; }
    /// <summary>Evict an object already at <see cref="AkHandle"/>. Without it an occupied handle fails before anything is sent.</summary>
    public bool ReplaceAkHandle { get; init; }
    /// <summary>
    /// What to do with an AK this flow persisted before (a restricted signing key at <see cref="AkHandle"/>, or the first one
    /// from <see cref="AkHandleSearchStart"/> up when no handle is given). Default <see cref="ExistingAkPolicy.Ignore"/>.
    /// </summary>
    public ExistingAkPolicy ExistingAk { get; init; } = ExistingAkPolicy.Ignore;
    /// <summary>Where the free-handle search starts (owner range; 0x81000001 is the conventional SRK).</summary>
    public uint AkHandleSearchStart { get; init; } = DeviceProvisioning.DefaultAkHandleSearchStart;
    /// <summary>Send ak_pub_key as TPM2B_PUBLIC (exact; default) or as DER SubjectPublicKeyInfo (the spec's form).</summary>
    public bool SendAkAsSubjectPublicKeyInfo { get; init; }
    /// <summary>The TPM CA certificate: when given, the AK certificate must chain to it.</summary>
    public X509Certificate2? TpmCaCertificate { get; init; }
    public byte[]? OwnerAuth { get; init; }
    public byte[]? EndorsementAuth { get; init; }
}

/// <summary>What the device flow does with an AK it persisted on an earlier run.</summary>
public enum ExistingAkPolicy
{
    /// <summary>Create a new AK and persist it at a free handle (or at the given one).</summary>
    Ignore,
    /// <summary>
    /// Send the persisted AK: when the server still holds a valid certificate for this device, EK and AK it returns it
    /// (already provisioned) and nothing changes; otherwise the persisted AK is certified. No second AK is created.
    /// </summary>
    Reuse,
    /// <summary>Create a new AK and persist it at the persisted AK's handle, evicting the old one (re-provisioning).</summary>
    Replace,
}

/// <summary>A provisioned device, as <c>New-TpmProvisioning</c> returns it.</summary>
public sealed record DeviceProvisioningResult
{
    /// <summary>
    /// True when the device was already provisioned with this AK (the server returned its existing certificate and nothing was
    /// created, persisted or recorded).
    /// </summary>
    public bool AlreadyProvisioned { get; init; }
    public required string Serial { get; init; }
    public required string DeviceName { get; init; }
    public required string Vendor { get; init; }
    public required string Version { get; init; }
    /// <summary>Persistent handle of the AK.</summary>
    public required uint AkHandle { get; init; }
    /// <summary>The AK's TPM Name, upper-case hex.</summary>
    public required string AkName { get; init; }
    public required X509Certificate2 AkCertificate { get; init; }
    /// <summary>SHA-256 of the EK certificate's DER, upper-case hex (the server's EK fingerprint).</summary>
    public required string EkThumbprint { get; init; }
    /// <summary>The server that provisioned it.</summary>
    public required string Server { get; init; }
}

/// <summary>The server refused a request; <see cref="StatusCode"/> and the server's message say why.</summary>
public sealed class ProvisioningRequestException : Exception
{
    public ProvisioningRequestException(HttpStatusCode status, string message, int? retryAfterSeconds = null)
        : base($"{(int)status} {status}: {message}")
    {
        StatusCode = status;
        ServerMessage = message;
        RetryAfterSeconds = retryAfterSeconds;
    }

    public HttpStatusCode StatusCode { get; }
    public string ServerMessage { get; }
    public int? RetryAfterSeconds { get; }
}

/// <summary>The device-side flow went wrong after the server answered (activation, decryption or certificate checks).</summary>
public sealed class DeviceProvisioningException : Exception
{
    public DeviceProvisioningException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>
/// The device side of spec 000 over HTTPS. One client (one connection pool) serves a whole batch; each
/// <see cref="ProvisionAsync"/> drives one TPM. Thread-safe.
/// </summary>
public sealed class ProvisioningClient : IDisposable
{
    private readonly HttpClient _http;
    private readonly bool _ownsHttp;
    private readonly Uri _endpoint;

    public ProvisioningClient(ProvisioningClientOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        Options = options;
        var ca = options.CaCertificate;
        var handler = new SocketsHttpHandler
        {
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
            SslOptions = new SslClientAuthenticationOptions
            {
                RemoteCertificateValidationCallback = options.SkipCertificateCheck
                    ? (_, _, _, _) => true
                    : ca is null ? null : (_, cert, _, errors) => PinnedCaTls.Validates(ca, cert, errors),
            },
        };
        _http = new HttpClient(handler) { Timeout = options.Timeout };
        _ownsHttp = true;
        _endpoint = EndpointOf(options);
    }

    /// <summary>A client over an existing <see cref="HttpClient"/> (tests; custom handlers).</summary>
    public ProvisioningClient(HttpClient http, ProvisioningClientOptions options)
    {
        _http = http ?? throw new ArgumentNullException(nameof(http));
        Options = options ?? throw new ArgumentNullException(nameof(options));
        _endpoint = EndpointOf(options);
    }

    public ProvisioningClientOptions Options { get; }

    /// <summary>The URL requests go to.</summary>
    public Uri Endpoint => _endpoint;

    private static Uri EndpointOf(ProvisioningClientOptions o)
    {
        var path = o.Namespace is null
            ? "api/tpm/tpm/provision"
            : $"api/v1/namespaces/{Uri.EscapeDataString(o.Namespace)}/api/tpm/tpm/provision";
        var b = o.Server.AbsoluteUri.EndsWith('/') ? o.Server : new Uri(o.Server.AbsoluteUri + "/");
        return new Uri(b, path);
    }

    /// <summary>Posts one request and returns the server's answer; <see cref="ProvisioningRequestException"/> for any non-200.</summary>
    public async Task<ProvisioningResponse> SendAsync(ProvisioningRequest request, CancellationToken ct = default) =>
        (await SendWithStatusAsync(request, ct).ConfigureAwait(false)).Response;

    /// <summary>As <see cref="SendAsync"/>, and whether the server said the device was already provisioned with this AK.</summary>
    public async Task<(ProvisioningResponse Response, bool AlreadyProvisioned)> SendWithStatusAsync(ProvisioningRequest request, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var json = JsonSerializer.Serialize(request, ProvisioningJsonContext.Default.ProvisioningRequest);
        using var content = new StringContent(json, Encoding.UTF8, "application/json");
        using var resp = await _http.PostAsync(_endpoint, content, ct).ConfigureAwait(false);
        var body = await resp.Content.ReadAsStringAsync(ct).ConfigureAwait(false);
        if (resp.StatusCode != HttpStatusCode.OK)
        {
            string message = body;
            try { message = JsonSerializer.Deserialize(body, ProvisioningJsonContext.Default.String) ?? body; }
            catch (JsonException) { }
            int? retry = resp.Headers.RetryAfter?.Delta is { } d ? (int)d.TotalSeconds : null;
            throw new ProvisioningRequestException(resp.StatusCode, message, retry);
        }
        bool already = resp.Headers.TryGetValues(ProvisioningHeaders.Status, out var v)
            && v.Any(x => string.Equals(x.Trim(), ProvisioningHeaders.AlreadyProvisioned, StringComparison.OrdinalIgnoreCase));
        try
        {
            return (JsonSerializer.Deserialize(body, ProvisioningJsonContext.Default.ProvisioningResponse)
                ?? throw new DeviceProvisioningException("The server answered 200 with an empty body."), already);
        }
        catch (JsonException ex)
        {
            throw new DeviceProvisioningException("The server's answer is not a provisioning response: " + ex.Message, ex);
        }
    }

    /// <summary>
    /// Provisions the device whose TPM is <paramref name="tpm"/>: reads the EK certificate from NV, creates the EK and an AK,
    /// has the AK sign a CSR through the TPM, posts the request, activates the credential with the EK, opens and checks the
    /// AK certificate, and only then persists the AK. On any failure the TPM is left as it was (transient objects flushed,
    /// nothing persisted).
    /// </summary>
    public async Task<DeviceProvisioningResult> ProvisionAsync(TpmDevice tpm, DeviceIdentity device, string apiKey,
        DeviceProvisioningOptions? options = null, IOperationReporter? reporter = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(tpm);
        ArgumentNullException.ThrowIfNull(device);
        ArgumentException.ThrowIfNullOrEmpty(apiKey);
        options ??= new DeviceProvisioningOptions();
        reporter ??= NullOperationReporter.Instance;

        var session = DeviceProvisioning.Prepare(tpm, device, options, reporter);
        try
        {
            var request = session.BuildRequest(apiKey);
            reporter.Progress(50, $"Sending the request to {_endpoint.GetLeftPart(UriPartial.Authority)}");
            reporter.Verbose($"POST {_endpoint}");
            var (response, already) = await SendWithStatusAsync(request, ct).ConfigureAwait(false);
            reporter.Progress(70, "Activating the credential with the EK");
            var cert = session.OpenResponse(response);
            if (already && session.ReusesPersistedAk)
            {
                reporter.Warning($"already provisioned: the AK at 0x{session.AkHandle:X8} holds a valid certificate (serial {cert.SerialNumber}); nothing was changed. Use -Force to provision again.");
                reporter.Progress(100, "Already provisioned");
                return session.Result(cert, session.AkHandle, _endpoint.GetLeftPart(UriPartial.Authority)) with { AlreadyProvisioned = true };
            }
            reporter.Progress(90, session.ReusesPersistedAk ? "Keeping the AK already persisted" : "Persisting the AK");
            uint handle = session.PersistAk();
            reporter.Progress(100, "Provisioned");
            return session.Result(cert, handle, _endpoint.GetLeftPart(UriPartial.Authority));
        }
        finally
        {
            session.Dispose();
        }
    }

    public void Dispose()
    {
        if (_ownsHttp) _http.Dispose();
    }
}

/// <summary>
/// The TPM half of the device flow, usable without HTTP (tests, other transports): prepare (EK certificate, EK, AK, CSR),
/// build the request, open the response, persist the AK. Dispose flushes the transient EK and AK.
/// </summary>
public sealed class DeviceProvisioning : IDisposable
{
    /// <summary>First handle tried for the AK: 0x81000002, just above the conventional SRK handle.</summary>
    public const uint DefaultAkHandleSearchStart = 0x81000002;
    private const uint OwnerPersistentEnd = 0x8100FFFF;

    private readonly TpmDevice _tpm;
    private readonly DeviceProvisioningOptions _options;
    private readonly IOperationReporter _reporter;
    private TpmObject? _ek;
    private TpmObject? _ak;
    private uint _akHandle;
    private bool _reuse;
    private bool _replace;

    private DeviceProvisioning(TpmDevice tpm, DeviceIdentity device, DeviceProvisioningOptions options, IOperationReporter reporter)
    {
        _tpm = tpm;
        Device = device;
        _options = options;
        _reporter = reporter;
    }

    public DeviceIdentity Device { get; }
    public byte[] EkCertificate { get; private set; } = [];
    public TpmObject Ek => _ek ?? throw new ObjectDisposedException(nameof(DeviceProvisioning));
    public TpmObject Ak => _ak ?? throw new ObjectDisposedException(nameof(DeviceProvisioning));
    /// <summary>The CSR (DER), signed by the AK through the TPM.</summary>
    public byte[] Csr { get; private set; } = [];
    /// <summary>The handle the AK will be persisted at.</summary>
    public uint AkHandle => _akHandle;
    /// <summary>True when this session signs with an AK persisted on an earlier run (<see cref="ExistingAkPolicy.Reuse"/>).</summary>
    public bool ReusesPersistedAk => _reuse;
    /// <summary>SHA-256 of the EK certificate, upper-case hex.</summary>
    public string EkThumbprint => Convert.ToHexString(SHA256.HashData(EkCertificate));

    /// <summary>Reads the EK certificate, creates the EK and the AK, and has the AK sign the CSR.</summary>
    public static DeviceProvisioning Prepare(TpmDevice tpm, DeviceIdentity device, DeviceProvisioningOptions? options = null, IOperationReporter? reporter = null)
    {
        ArgumentNullException.ThrowIfNull(tpm);
        ArgumentNullException.ThrowIfNull(device);
        var s = new DeviceProvisioning(tpm, device, options ?? new DeviceProvisioningOptions(), reporter ?? NullOperationReporter.Instance);
        try
        {
            s.PrepareCore();
            return s;
        }
        catch
        {
            s.Dispose();
            throw;
        }
    }

    private void PrepareCore()
    {
        var o = _options;
        uint nv = EkKinds.CertificateIndex(o.EkKind);
        _akHandle = ChooseAkHandle();
        _reporter.Progress(5, $"Reading the EK certificate from NV 0x{nv:X8}");
        EkCertificate = _tpm.ReadEkCertificateDer(o.EkKind)
            ?? throw new DeviceProvisioningException($"The TPM has no EK certificate at NV index 0x{nv:X8} ({o.EkKind}).");
        _reporter.Verbose($"EK certificate: {EkCertificate.Length} bytes, SHA-256 {EkThumbprint}");

        _reporter.Progress(15, $"Creating the {o.EkKind} EK");
        _ek = _tpm.CreateEk(o.EkKind, o.EndorsementAuth);
        using (var cert = X509CertificateLoader.LoadCertificate(EkCertificate))
        {
            if (!KeyIdentity.FromSubjectPublicKeyInfo(cert.PublicKey.ExportSubjectPublicKeyInfo()).Equals(KeyIdentity.FromTpmPublic(_ek.Public)))
                throw new DeviceProvisioningException($"The EK certificate at NV 0x{nv:X8} does not carry the key of the {o.EkKind} EK this TPM derives.");
        }

        if (_reuse)
        {
            _ak = _tpm.ReadPublic(_akHandle).Object;
            _reporter.Verbose($"Using the AK persisted at 0x{_akHandle:X8} (Name {Convert.ToHexString(_ak.Name)}) instead of creating another");
        }
        else
        {
            _reporter.Progress(25, "Creating the AK");
            _ak = _tpm.CreateAk(o.AkTemplate ?? TpmTemplates.AkRsa2048, null, o.OwnerAuth).Key;
            _reporter.Verbose($"AK Name {Convert.ToHexString(_ak.Name)}, to be persisted at 0x{_akHandle:X8}{(_replace ? " (replacing the AK there)" : "")}");
        }

        _reporter.Progress(35, "Signing the CSR with the AK in the TPM");
        Csr = AkCsr.Create(_ak.Public, Device, info => _tpm.SignWithRestrictedKey(_ak.Handle, info, _ak.Public.Scheme.HashAlg is TpmAlgId.Null ? TpmAlgId.Sha256 : _ak.Public.Scheme.HashAlg).Signature);
    }

    private uint ChooseAkHandle()
    {
        if (_options.ExistingAk is not ExistingAkPolicy.Ignore && FindPersistedAk() is { } existing)
        {
            if (_options.ExistingAk is ExistingAkPolicy.Reuse) _reuse = true;
            else _replace = true;
            return existing;
        }
        if (_options.AkHandle is { } h)
        {
            if ((h & 0xFF000000) != TpmHandle.HrPersistent) throw new ArgumentOutOfRangeException(nameof(_options.AkHandle), $"0x{h:X8} is not a persistent handle (0x81xxxxxx).");
            if (!_options.ReplaceAkHandle && _tpm.GetHandles(TpmHandle.HrPersistent).Contains(h))
                throw new DeviceProvisioningException($"Persistent handle 0x{h:X8} is in use; choose another or allow replacing it.");
            return h;
        }
        return _tpm.FindFreePersistentHandle(_options.AkHandleSearchStart, OwnerPersistentEnd)
            ?? throw new DeviceProvisioningException("No free persistent handle in the owner range.");
    }

    /// <summary>
    /// The AK an earlier run persisted: the restricted signing key at <see cref="DeviceProvisioningOptions.AkHandle"/>, or the
    /// first one in the owner range from <see cref="DeviceProvisioningOptions.AkHandleSearchStart"/> up; null when there is none.
    /// </summary>
    private uint? FindPersistedAk()
    {
        var persisted = _tpm.GetHandles(TpmHandle.HrPersistent);
        IEnumerable<uint> candidates = _options.AkHandle is { } h
            ? persisted.Where(x => x == h)
            : persisted.Where(x => x >= _options.AkHandleSearchStart && x <= OwnerPersistentEnd).Order();
        foreach (var c in candidates)
        {
            TpmPublic pub;
            try { pub = _tpm.ReadPublic(c).Object.Public; }
            catch (TpmException) { continue; }
            if (pub.IsRestrictedSigningKey(out _)) return c;
        }
        return null;
    }

    /// <summary>The request for this device (ek_pub_key as DER SubjectPublicKeyInfo, csr as PEM).</summary>
    public ProvisioningRequest BuildRequest(string apiKey) => new()
    {
        ApiKey = apiKey,
        AkPubKey = Convert.ToBase64String(_options.SendAkAsSubjectPublicKeyInfo ? Ak.Public.ToSubjectPublicKeyInfo() : new TpmWriter().B2(Ak.PublicBytes).ToArray()),
        Csr = AkCsr.ToPem(Csr),
        EkCert = Convert.ToBase64String(EkCertificate),
        EkPubKey = Convert.ToBase64String(Ek.Public.ToSubjectPublicKeyInfo()),
        Device = new ProvisioningDevice { Name = Device.Name, Serial = Device.Serial, Vendor = Device.Vendor, Version = Device.Version },
    };

    /// <summary>
    /// Activates the credential with the EK (the TPM releases the secret only for this AK's Name), decrypts the AK certificate and
    /// checks it: it carries the AK's key and this EK certificate's fingerprint, and chains to the TPM CA when one was given.
    /// </summary>
    public X509Certificate2 OpenResponse(ProvisioningResponse response)
    {
        ArgumentNullException.ThrowIfNull(response);
        byte[] bundle, sealedCert, nonce;
        try
        {
            bundle = Convert.FromBase64String(response.CredentialBundle);
            sealedCert = Convert.FromBase64String(response.EncryptedAkCert);
            nonce = Convert.FromBase64String(response.Nonce);
        }
        catch (FormatException ex) { throw new DeviceProvisioningException("The server's answer holds invalid base64.", ex); }
        CredentialBlob blob;
        try { blob = Credential.FromTpm2ToolsFile(bundle); }
        catch (TpmFormatException ex) { throw new DeviceProvisioningException("credential_bundle is not a tpm2-tools credential file: " + ex.Message, ex); }
        byte[] secret;
        try { secret = _tpm.ActivateCredential(Ek.Handle, Ak.Handle, blob, null, _options.EndorsementAuth); }
        catch (TpmException ex) { throw new DeviceProvisioningException("The TPM refused to activate the credential (made for another EK or AK?): " + ex.Message, ex); }
        byte[] der;
        try { der = ProvisioningEnvelope.Open(secret, sealedCert, nonce); }
        catch (Exception ex) when (ex is CryptographicException or ArgumentException)
        {
            throw new DeviceProvisioningException("encrypted_ak_cert does not decrypt under the activated secret.", ex);
        }
        finally { CryptographicOperations.ZeroMemory(secret); }
        X509Certificate2 cert;
        try { cert = X509CertificateLoader.LoadCertificate(der); }
        catch (CryptographicException ex) { throw new DeviceProvisioningException("The decrypted AK certificate is not a certificate.", ex); }
        try
        {
            CheckCertificate(cert);
            return cert;
        }
        catch
        {
            cert.Dispose();
            throw;
        }
    }

    private void CheckCertificate(X509Certificate2 cert)
    {
        if (!KeyIdentity.FromSubjectPublicKeyInfo(cert.PublicKey.ExportSubjectPublicKeyInfo()).Equals(KeyIdentity.FromTpmPublic(Ak.Public)))
            throw new DeviceProvisioningException("The AK certificate does not carry the AK's public key.");
        var fp = AkCertificateProfile.ReadEkCertificateSha256(cert);
        if (fp is null || !fp.AsSpan().SequenceEqual(SHA256.HashData(EkCertificate)))
            throw new DeviceProvisioningException("The AK certificate does not name this TPM's EK certificate.");
        if (_options.TpmCaCertificate is { } ca)
        {
            using var chain = new X509Chain();
            chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
            chain.ChainPolicy.CustomTrustStore.Add(ca);
            chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            chain.ChainPolicy.DisableCertificateDownloads = true;
            // tcg-kp-AIKCertificate is not an EKU .NET checks for; usage is not the question here.
            chain.ChainPolicy.VerificationFlags = X509VerificationFlags.IgnoreWrongUsage;
            if (!chain.Build(cert))
                throw new DeviceProvisioningException("The AK certificate does not chain to the TPM CA: "
                    + string.Join("; ", chain.ChainStatus.Select(s => s.StatusInformation.Trim())));
        }
        _reporter.Verbose($"AK certificate {cert.Subject}, serial {cert.SerialNumber}, issued by {cert.Issuer}");
    }

    /// <summary>Persists the AK at <see cref="AkHandle"/> (after a successful provisioning) and returns the handle.</summary>
    public uint PersistAk()
    {
        if (_reuse) return _akHandle;
        _tpm.PersistObject(Ak.Handle, _akHandle, _options.ReplaceAkHandle || _replace, _options.OwnerAuth);
        return _akHandle;
    }

    internal DeviceProvisioningResult Result(X509Certificate2 cert, uint handle, string server) => new()
    {
        Serial = Device.Serial,
        DeviceName = Device.Name,
        Vendor = Device.Vendor,
        Version = Device.Version,
        AkHandle = handle,
        AkName = Convert.ToHexString(Ak.Name),
        AkCertificate = cert,
        EkThumbprint = EkThumbprint,
        Server = server,
    };

    /// <summary>Flushes the transient EK and AK.</summary>
    public void Dispose()
    {
        if (_ak is { IsTransient: true } ak) _tpm.TryFlush(ak.Handle);
        if (_ek is { } ek) _tpm.TryFlush(ek.Handle);
        _ak = null;
        _ek = null;
    }
}
