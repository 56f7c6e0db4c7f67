using System.Management.Automation;
using System.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using TpmProvisioning.Attestation;
using TpmProvisioning.Pki;
using TpmProvisioning.Storage;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Cmdlets;

/// <summary>An agent as a Keylime registrar knows it.</summary>
public sealed class AttestationAgent
{
    /// <summary>The agent id.</summary>
    public string AgentId { get; init; } = "";
    /// <summary>The registrar asked.</summary>
    public string Registrar { get; init; } = "";
    /// <summary>Registrations of this id with the same TPM (Keylime's regcount); null when not read back.</summary>
    public int? RegCount { get; init; }
    /// <summary>Contact address the agent registered.</summary>
    public string? Ip { get; init; }
    /// <summary>Contact port the agent registered.</summary>
    public int? Port { get; init; }
    /// <summary>The AK's TPM2B_PUBLIC, base64 (aik_tpm).</summary>
    public string AikTpm { get; init; } = "";
    /// <summary>The EK's TPM2B_PUBLIC, base64 (ek_tpm).</summary>
    public string EkTpm { get; init; } = "";
    /// <summary>The EK certificate, when registered.</summary>
    public X509Certificate2? EkCertificate { get; init; }
    /// <summary>The agent's mTLS certificate (PEM), when registered.</summary>
    public string? MtlsCertificate { get; init; }
    /// <summary>Persistent AK handle on the device as 0x81000002 (known to Register-AttestationAgent only; binds to -AkHandle).</summary>
    public string? AkHandle { get; init; }
    /// <summary>Name of the AK, hex.</summary>
    public string AkName { get; init; } = "";
    /// <summary>The manufacturing serial of the device with this agent's EK (with -DataPath: the provisioning store's record).</summary>
    public string? Serial { get; init; }
    /// <summary>The manufacturing device name, with -DataPath.</summary>
    public string? DeviceName { get; init; }

    internal static AttestationAgent From(RegistrarAgentView v, string registrar)
    {
        X509Certificate2? ek = null;
        if (!string.IsNullOrEmpty(v.EkCert))
        {
            try { ek = X509CertificateLoader.LoadCertificate(Convert.FromBase64String(v.EkCert)); }
            catch (Exception e) when (e is FormatException or CryptographicException) { }
        }
        string akName = "";
        try { akName = TpmCmdletBase.Hex(TpmPublic.ParseTpm2B(Convert.FromBase64String(v.AikTpm)).ComputeName()); }
        catch (Exception e) when (e is FormatException or TpmFormatException) { }
        return new AttestationAgent
        {
            AgentId = v.AgentId, Registrar = registrar, RegCount = v.RegCount, Ip = v.Ip, Port = v.Port, AikTpm = v.AikTpm, EkTpm = v.EkTpm,
            EkCertificate = ek, MtlsCertificate = v.MtlsCert, AkName = akName,
        };
    }
}

/// <summary>Base of the cmdlets that talk to a Keylime registrar: address, TLS trust and the tenant's client certificate.</summary>
public abstract class RegistrarCmdletBase : PSCmdlet
{
    /// <summary>The registrar's base address, e.g. https://registrar:8891.</summary>
    [Parameter(Mandatory = true, ValueFromPipelineByPropertyName = true, ParameterSetName = "Registrar")]
    [ArgumentCompleter(typeof(RegistrarUrlCompleter))]
    public Uri? Registrar { get; set; }

    /// <summary>CA certificate (object or PEM/DER path) the registrar's TLS certificate must chain to: the server-components CA.</summary>
    [Parameter]
    public object? CaCertificate { get; set; }

    /// <summary>Accept any registrar TLS certificate (labs only).</summary>
    [Parameter]
    public SwitchParameter SkipCertificateCheck { get; set; }

    /// <summary>Load a certificate from an object or a PEM/DER file path; a terminating error when it cannot be read.</summary>
    protected X509Certificate2? LoadCertificate(object? value, string parameter) => CertificateInput.Load(this, value, parameter);

    /// <summary>A client for this record's registrar.</summary>
    protected RegistrarClient Client(X509Certificate2? clientCertificate)
    {
        TransportErrors.RequireServerUri(this, Registrar, nameof(Registrar));
        var ca = LoadCertificate(CaCertificate, nameof(CaCertificate));
        Transport = new TransportTarget(Registrar!, ca, SkipCertificateCheck, clientCertificate);
        return new(new RegistrarClientOptions
        {
            Registrar = Registrar!, CaCertificate = ca, ClientCertificate = clientCertificate,
            SkipCertificateCheck = SkipCertificateCheck,
        });
    }

    /// <summary>The server, CA and client certificate of the last client made: what a transport failure is judged against.</summary>
    internal TransportTarget? Transport { get; set; }

    /// <summary>Maps a registrar failure to an error record with a stable id (RegistrarRefused&lt;status&gt;, ServerUnreachable, ServerCertificateNotTrusted, ClientCertificateRefused...; TPM failures for the registering cmdlet).</summary>
    protected ErrorRecord RegistrarError(Exception ex, object? target) => ex switch
    {
        TpmException => new ErrorRecord(ex, "TpmCommandFailed", ErrorCategory.DeviceError, target),
        global::TpmProvisioning.Tpm.Transport.TpmTransportException or IOException => new ErrorRecord(ex, "TpmConnectionFailed", ErrorCategory.ConnectionError, target),
        _ => KeylimeError(ex, "Registrar", target, Transport),
    };

    /// <summary>
    /// A Keylime service's failure as an error record: <c>&lt;Service&gt;Refused&lt;status&gt;</c> with the category of the
    /// status, <c>&lt;Service&gt;Unreachable</c>, <c>&lt;Service&gt;Timeout</c>, else <c>&lt;Service&gt;OperationFailed</c>.
    /// </summary>
    internal static ErrorRecord KeylimeError(Exception ex, string service, object? target, TransportTarget? to = null) => ex switch
    {
        KeylimeRequestException k when TransportErrors.FromStatus(k.StatusCode, k.ServerMessage, ex, to, target) is { } refused => refused,
        _ when TransportErrors.Classify(ex, to, target) is { } transport => transport,
        KeylimeRequestException k => new ErrorRecord(ex, $"{service}Refused{k.StatusCode}", k.StatusCode switch
        {
            401 => ErrorCategory.AuthenticationError,
            403 => ErrorCategory.PermissionDenied,
            404 => ErrorCategory.ObjectNotFound,
            409 => ErrorCategory.ResourceExists,
            400 => ErrorCategory.InvalidData,
            _ => ErrorCategory.ResourceUnavailable,
        }, target),
        HttpRequestException => new ErrorRecord(ex, $"{service}Unreachable", ErrorCategory.ConnectionError, target),
        TaskCanceledException or TimeoutException => new ErrorRecord(ex, $"{service}Timeout", ErrorCategory.OperationTimeout, target),
        _ => new ErrorRecord(ex, $"{service}OperationFailed", ErrorCategory.NotSpecified, target),
    };

    internal static bool IsExpected(Exception ex) => ex is KeylimeRequestException or HttpRequestException or TaskCanceledException or TimeoutException
        or TpmException or global::TpmProvisioning.Tpm.Transport.TpmTransportException or IOException or TpmFormatException or ArgumentException or InvalidOperationException;
}

/// <summary>Registers this device's TPM with a Keylime registrar and activates it (the exchange a Keylime agent makes at start).</summary>
[Cmdlet(VerbsLifecycle.Register, "AttestationAgent", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(AttestationAgent))]
public sealed class RegisterAttestationAgentCommand : RegistrarCmdletBase
{
    /// <summary>TPM connection string (default TPM2TOOLS_TCTI, else the platform TPM).</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [Alias("ConnectionString", "Tcti")]
    [ArgumentCompleter(typeof(TpmConnectionCompleter))]
    public string? Tpm { get; set; }

    /// <summary>The agent id (a UUID). Default: a UUID derived from the EK, stable for this TPM.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? AgentId { get; set; }

    /// <summary>Persistent handle of the AK to register (e.g. from New-TpmProvisioning). Default: a new AK persisted at the first free handle from 0x81000010.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [TpmHandleTransformation]
    public uint? AkHandle { get; set; }

    /// <summary>Which EK to register (default Rsa2048).</summary>
    [Parameter]
    public EkKind EkKind { get; set; } = EkKind.Rsa2048;

    /// <summary>Contact address the verifier should use for this agent.</summary>
    [Parameter]
    public string? ContactIp { get; set; }

    /// <summary>Contact port the verifier should use for this agent.</summary>
    [Parameter]
    [ValidateRange(1, 65535)]
    public int? ContactPort { get; set; }

    /// <summary>Tenant client certificate (with key) from the components CA; when given, the registrar's view is read back.</summary>
    [Parameter]
    public X509Certificate2? ClientCertificate { get; set; }

    protected override void ProcessRecord()
    {
        string tpmCs;
        try { tpmCs = string.IsNullOrWhiteSpace(Tpm) ? global::TpmProvisioning.Tpm.Transport.TpmTransportFactory.DefaultConnectionString() : Tpm.Trim(); }
        catch (global::TpmProvisioning.Tpm.Transport.TpmTransportException ex) { WriteError(new ErrorRecord(ex, "TpmConnectionFailed", ErrorCategory.ConnectionError, null)); return; }
        if (!ShouldProcess($"{tpmCs} at {Registrar}", "Register and activate the TPM as an attestation agent")) return;
        AttestationAgent? output = null;
        // Certificates are read first: a bad -CaCertificate must stop us before the TPM changes.
        using var client = Client(ClientCertificate);
        try
        {
            using var dev = TpmDevice.Open(tpmCs);
            var ek = dev.CreateEk(EkKind);
            uint? transientAk = null;
            try
            {
                uint akHandle;
                uint persistAt = 0;
                if (AkHandle is { } h) akHandle = h;
                else
                {
                    persistAt = dev.FindFreePersistentHandle(NewTpmAttestationKeyCommand.FirstAutoHandle, NewTpmAttestationKeyCommand.LastAutoHandle)
                        ?? throw new InvalidOperationException("No free persistent handle for the AK; pass -AkHandle.");
                    // A new AK stays transient until the registrar has accepted and activated it; only then is it persisted.
                    transientAk = dev.CreateAk().Key.Handle;
                    akHandle = transientAk.Value;
                }
                var ak = dev.ReadPublic(akHandle).Object;
                var keys = new AgentTpmKeys
                {
                    EkHandle = ek.Handle, AkHandle = akHandle, EkPublic = ek.Public.ToTpm2B(), AkPublic = ak.Public.ToTpm2B(),
                    EkCertificate = dev.ReadEkCertificateDer(EkKind),
                };
                var id = AgentId ?? AgentService.AgentIdFromEk(ek.Public.ToTpm2B());
                var view = client.RegisterAndActivateAsync(dev, keys, new AgentIdentity { AgentId = id, Ip = ContactIp, Port = ContactPort }, ClientCertificate is not null)
                    .GetAwaiter().GetResult();
                if (transientAk is not null)
                {
                    dev.PersistObject(transientAk.Value, persistAt);
                    WriteVerbose($"Registered; AK persisted at 0x{persistAt:x8}.");
                    akHandle = persistAt;
                }
                var registrar = Registrar!.GetLeftPart(UriPartial.Authority);
                output = view is not null
                    ? AttestationAgent.From(view with { AgentId = id }, registrar) is var a ? new AttestationAgent
                    {
                        AgentId = a.AgentId, Registrar = a.Registrar, RegCount = a.RegCount, Ip = a.Ip, Port = a.Port, AikTpm = a.AikTpm, EkTpm = a.EkTpm,
                        EkCertificate = a.EkCertificate, MtlsCertificate = a.MtlsCertificate, AkName = a.AkName, AkHandle = OutputFormat.Handle(akHandle),
                    } : null
                    : new AttestationAgent
                    {
                        AgentId = id, Registrar = registrar, Ip = ContactIp, Port = ContactPort, AikTpm = Convert.ToBase64String(keys.AkPublic),
                        EkTpm = Convert.ToBase64String(keys.EkPublic), AkHandle = OutputFormat.Handle(akHandle), AkName = TpmCmdletBase.Hex(ak.Name),
                        EkCertificate = keys.EkCertificate is null ? null : X509CertificateLoader.LoadCertificate(keys.EkCertificate),
                    };
            }
            finally
            {
                dev.TryFlush(ek.Handle);
                if (transientAk is { } t) dev.TryFlush(t);
            }
        }
        catch (Exception ex) when (IsExpected(ex))
        {
            WriteError(RegistrarError(ex, AgentId ?? tpmCs));
            return;
        }
        WriteObject(output);
    }
}

/// <summary>Lists the agents a Keylime registrar knows or a verifier watches, or reads given ones (mutual TLS).</summary>
[Cmdlet(VerbsCommon.Get, "AttestationAgent", DefaultParameterSetName = "Registrar")]
[OutputType(typeof(AttestationAgent), ParameterSetName = ["Registrar"])]
[OutputType(typeof(VerifierAgent), ParameterSetName = ["Verifier"])]
public sealed class GetAttestationAgentCommand : RegistrarCmdletBase
{
    /// <summary>The verifier's base address, e.g. https://verifier:8881: list what it watches, with each agent's state.</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Verifier")]
    [ArgumentCompleter(typeof(VerifierUrlCompleter))]
    public Uri? Verifier { get; set; }

    /// <summary>Agent ids to read; default every agent the registrar lists.</summary>
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    public string[]? AgentId { get; set; }

    /// <summary>Tenant client certificate (with key) from the components CA.</summary>
    [Parameter(Mandatory = true)]
    public X509Certificate2? ClientCertificate { get; set; }

    /// <summary>
    /// A provisioning server's data path: each agent is shown with the serial and device name of the manufacturing record whose EK
    /// it registered (matched by the EK certificate's SHA-256; with -Verifier, through the registrar rows of that store).
    /// </summary>
    [Parameter]
    public string? DataPath { get; set; }

    private DeviceLookup? _devices;

    protected override void BeginProcessing()
    {
        if (DataPath is null) return;
        // The data path's store: the PostgreSQL store its server recorded there, else its SQLite file.
        var dir = GetUnresolvedProviderPathFromPSPath(DataPath);
        using var store = Defaults.OpenStore(this, dir, mayCreate: false);
        try
        {
            _devices = DeviceLookup.LoadAsync(store).GetAwaiter().GetResult();
        }
        catch (Exception ex) when (ex is not PipelineStoppedException)
        {
            ThrowTerminatingError(new ErrorRecord(ex, "StoreUnavailable", ErrorCategory.ResourceUnavailable, DataPath));
        }
    }

    private AttestationAgent Link(AttestationAgent a)
    {
        if (_devices is null || a.EkCertificate is null) return a;
        var r = _devices.ByEk(Convert.ToHexString(SHA256.HashData(a.EkCertificate.RawData)));
        return r is null ? a : new AttestationAgent
        {
            AgentId = a.AgentId, Registrar = a.Registrar, RegCount = a.RegCount, Ip = a.Ip, Port = a.Port, AikTpm = a.AikTpm, EkTpm = a.EkTpm,
            EkCertificate = a.EkCertificate, MtlsCertificate = a.MtlsCertificate, AkHandle = a.AkHandle, AkName = a.AkName,
            Serial = r.Serial, DeviceName = r.DeviceName,
        };
    }

    private VerifierAgent Link(VerifierAgent a)
    {
        var r = _devices?.ByAgent(a.AgentId);
        if (r is null) return a;
        var ps = a.WithDevice(r.Serial, r.DeviceName);
        return ps;
    }

    protected override void ProcessRecord()
    {
        if (ParameterSetName == "Verifier") { ListVerifier(); return; }
        using var client = Client(ClientCertificate);
        var registrar = Registrar!.GetLeftPart(UriPartial.Authority);
        IReadOnlyList<string> ids;
        try { ids = AgentId is { Length: > 0 } ? AgentId : client.ListAsync().GetAwaiter().GetResult(); }
        catch (Exception ex) when (IsExpected(ex)) { WriteError(RegistrarError(ex, registrar)); return; }
        foreach (var id in ids)
        {
            try { WriteObject(Link(AttestationAgent.From(client.GetAsync(id).GetAwaiter().GetResult() with { AgentId = id }, registrar))); }
            catch (Exception ex) when (IsExpected(ex)) { WriteError(RegistrarError(ex, id)); }
        }
    }

    private void ListVerifier()
    {
        TransportErrors.RequireServerUri(this, Verifier, nameof(Verifier));
        var ca = LoadCertificate(CaCertificate, nameof(CaCertificate));
        var to = new TransportTarget(Verifier!, ca, SkipCertificateCheck, ClientCertificate);
        using var client = new global::TpmProvisioning.Attestation.Verifier.VerifierClient(new global::TpmProvisioning.Attestation.Verifier.VerifierClientOptions
        {
            Verifier = Verifier!, CaCertificate = ca, ClientCertificate = ClientCertificate,
            SkipCertificateCheck = SkipCertificateCheck,
        });
        try
        {
            if (AgentId is { Length: > 0 })
            {
                foreach (var id in AgentId)
                {
                    try { WriteObject(Link(VerifierAgent.From(id, client.GetAsync(id).GetAwaiter().GetResult(), Verifier!))); }
                    catch (Exception ex) when (IsExpected(ex)) { WriteError(KeylimeError(ex, "Verifier", id, to)); }
                }
                return;
            }
            foreach (var (id, status) in client.ListStatusAsync().GetAwaiter().GetResult())
                WriteObject(Link(VerifierAgent.From(id, status, Verifier!)));
        }
        catch (Exception ex) when (IsExpected(ex)) { WriteError(KeylimeError(ex, "Verifier", Verifier, to)); }
    }
}

/// <summary>Deletes agents from a Keylime registrar (mutual TLS).</summary>
[Cmdlet(VerbsCommon.Remove, "AttestationAgent", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
public sealed class RemoveAttestationAgentCommand : RegistrarCmdletBase
{
    /// <summary>The agent id (binds from Get-AttestationAgent output).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    public string AgentId { get; set; } = "";

    /// <summary>Tenant client certificate (with key) from the components CA.</summary>
    [Parameter(Mandatory = true)]
    public X509Certificate2? ClientCertificate { get; set; }

    protected override void ProcessRecord()
    {
        if (!ShouldProcess($"{AgentId} at {Registrar}", "Remove attestation agent")) return;
        using var client = Client(ClientCertificate);
        try { client.DeleteAsync(AgentId).GetAwaiter().GetResult(); }
        catch (Exception ex) when (IsExpected(ex)) { WriteError(RegistrarError(ex, AgentId)); }
    }
}

/// <summary>Issues a client certificate from a server's components CA, for the tenant side (cmdlets) or a verifier.</summary>
[Cmdlet(VerbsCommon.New, "ProvisioningClientCertificate", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(X509Certificate2), typeof(FileInfo))]
public sealed class NewProvisioningClientCertificateCommand : ProvisioningDataCmdletBase
{
    /// <summary>Common name of the client, e.g. tenant-alice.</summary>
    [Parameter(Mandatory = true, Position = 0)]
    [ValidateLength(1, 64)]
    public string Name { get; set; } = "";

    /// <summary>Validity in days (default 397).</summary>
    [Parameter]
    [ValidateRange(1, 3650)]
    public int ValidDays { get; set; } = 397;

    /// <summary>What the certificate may do: Tenant (default: the admin), Verifier (quotes and V at agents), Kms (read the registrar and verifier).</summary>
    [Parameter]
    [ValidateSet(nameof(ClientRole.Tenant), nameof(ClientRole.Verifier), nameof(ClientRole.Kms))]
    public ClientRole Role { get; set; } = ClientRole.Tenant;

    /// <summary>Write the certificate and key as a PKCS#12 (PFX) file here instead of returning the certificate.</summary>
    [Parameter]
    public string? Path { get; set; }

    /// <summary>Password for the PFX file (required with -Path).</summary>
    [Parameter]
    public SecureString? Password { get; set; }

    protected override void ProcessRecord()
    {
        var caDir = System.IO.Path.Combine(ResolvedDataPath, "ca");
        if (!File.Exists(System.IO.Path.Combine(caDir, "cacert.pem")))
        {
            WriteError(new ErrorRecord(new ItemNotFoundException($"No components CA in '{caDir}'; start a server on this data path first."), "ComponentCaNotFound", ErrorCategory.ObjectNotFound, caDir));
            return;
        }
        if (Path is not null && Password is null)
        {
            WriteError(new ErrorRecord(new ArgumentException("-Path needs -Password: the PFX holds the private key."), "PasswordRequired", ErrorCategory.InvalidArgument, Path));
            return;
        }
        if (!ShouldProcess(Name, $"Issue a {Role.ToString().ToLowerInvariant()} client certificate from the components CA")) return;
        using var ca = ComponentCa.LoadOrCreate(caDir);
        var cert = ca.IssueClientCertificate(Name, TimeSpan.FromDays(ValidDays), Role);
        Audit("ca.client.issue", cert.Thumbprint, $"{cert.Subject} role={Role.ToString().ToLowerInvariant()}");
        if (Path is null) { WriteObject(cert); return; }
        var target = GetUnresolvedProviderPathFromPSPath(Path);
        var pfx = cert.Export(X509ContentType.Pkcs12, new System.Net.NetworkCredential("", Password).Password);
        File.WriteAllBytes(target, pfx);
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(target, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        WriteObject(new FileInfo(target));
    }
}

/// <summary>Manufacturing records of one store by EK fingerprint and by the agent id registered with that EK.</summary>
internal sealed class DeviceLookup
{
    private readonly Dictionary<string, ManufacturingRecord> _byEk = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, ManufacturingRecord> _byAgent = new(StringComparer.Ordinal);

    public ManufacturingRecord? ByEk(string ekSha256) => _byEk.GetValueOrDefault(ekSha256);
    public ManufacturingRecord? ByAgent(string agentId) => _byAgent.GetValueOrDefault(agentId);

    public static async Task<DeviceLookup> LoadAsync(IStore store)
    {
        var l = new DeviceLookup();
        // Oldest first, so the newest record of a device wins.
        foreach (var r in (await store.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery { Limit = 1_000_000 }).ConfigureAwait(false)).Reverse())
            l._byEk[r.EkFingerprint] = r;
        foreach (var (ek, agent) in await ManufacturingRecordInfo.AgentsByEkAsync(store).ConfigureAwait(false))
            if (l._byEk.TryGetValue(ek, out var r)) l._byAgent[agent] = r;
        return l;
    }
}
