using System.Collections.Concurrent;
using System.Management.Automation;
using System.Net;
using System.Security.Cryptography.X509Certificates;
using TpmProvisioning.Hosting;

namespace TpmProvisioning.Cmdlets;

/// <summary>Starts a provisioning/attestation server inside this PowerShell process.</summary>
[Cmdlet(VerbsLifecycle.Start, "ProvisioningServer", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(ServerInfo))]
public sealed class StartProvisioningServerCommand : PSCmdlet
{
    private readonly CancellationTokenSource _cts = new();

    /// <summary>A name for the server; defaults to server&lt;Id&gt;.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Name { get; set; }

    /// <summary>The surfaces to host.</summary>
    [Parameter(Position = 0)]
    [ValidateNotNullOrEmpty]
    public ServerRole[] Role { get; set; } = [ServerRole.Provisioning];

    /// <summary>The address to bind; loopback unless told otherwise.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string Address { get; set; } = "127.0.0.1";

    /// <summary>The TCP port; 0 picks a free one.</summary>
    [Parameter]
    [ValidateRange(0, 65535)]
    public int Port { get; set; } = 8443;

    /// <summary>Folder for the store, the CA, TLS material and logs.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? DataPath { get; set; }

    /// <summary>A TLS server certificate with private key to serve instead of one issued by the server's own CA.</summary>
    [Parameter]
    public X509Certificate2? Certificate { get; set; }

    /// <summary>Roles whose protected routes require a client certificate from the components CA (mutual TLS).</summary>
    [Parameter]
    public ServerRole[] RequireClientCertificate { get; set; } = [];

    /// <summary>Serve plain HTTP instead of HTTPS. For isolated labs only.</summary>
    [Parameter]
    public SwitchParameter InsecurePlainHttp { get; set; }

    /// <summary>Minimum level written to the server log.</summary>
    [Parameter]
    public LogLevelName LogLevel { get; set; } = LogLevelName.Information;

    /// <summary>Agent role: the TPM connection string (default TPM2TOOLS_TCTI, else device:/dev/tpmrm0 when it exists).</summary>
    [Parameter]
    [ArgumentCompleter(typeof(TpmConnectionCompleter))]
    public string? Tpm { get; set; }

    /// <summary>Agent role: the registrar to register with at start, e.g. https://registrar:8891.</summary>
    [Parameter]
    [ArgumentCompleter(typeof(RegistrarUrlCompleter))]
    public Uri? Registrar { get; set; }

    /// <summary>Agent role: the CA the registrar's TLS certificate chains to, a certificate or a PEM/DER file (default: this data path's components CA).</summary>
    [Parameter]
    public object? RegistrarCaCertificate { get; set; }

    /// <summary>Agent role: the agent id (a UUID); default derived from the EK.</summary>
    [Parameter]
    public string? AgentId { get; set; }

    /// <summary>Agent role: persistent handle of an AK to reuse (e.g. the one New-TpmProvisioning persisted); default a new AK.</summary>
    [Parameter]
    [TpmHandleTransformation]
    public uint? AkHandle { get; set; }

    /// <summary>Verifier role: how often each agent is asked for a quote (default 2 s).</summary>
    [Parameter]
    public TimeSpan? QuoteInterval { get; set; }

    /// <summary>
    /// Verifier role: what -QuoteInterval counts from. FixedRate (default): from when the last quote was due, so each agent is
    /// asked every interval. AfterVerdict: from the last verdict, as Keylime's own verifier paces (interval plus round trip).
    /// </summary>
    [Parameter]
    public TpmProvisioning.Attestation.Verifier.QuoteSchedule? QuoteSchedule { get; set; }

    /// <summary>
    /// A PostgreSQL store (Npgsql connection string, e.g. <c>Host=db1;Database=fleet</c>) that several servers share instead of
    /// this data path's SQLite file; servers on one database split the verifier's agents by lease. Default: the environment
    /// variable TPMPROVISIONING_STORE, else SQLite. Its password is never logged; prefer -StoreCredential.
    /// </summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? StoreConnectionString { get; set; }

    /// <summary>The user name and password for -StoreConnectionString (kept out of the string and the command history).</summary>
    [Parameter]
    [Credential]
    public PSCredential? StoreCredential { get; set; }

    /// <summary>Verifier role: this verifier's id (Keylime's verifier_id). On a shared store the default is an id generated once per data path.</summary>
    [Parameter]
    [ValidatePattern("^[A-Za-z0-9._-]{1,255}$")]
    public string? VerifierId { get; set; }

    /// <summary>Verifier role on a shared store: how long a claim on an agent lasts unrenewed (default three quote intervals, at least 6 s); a dead server's agents move within it.</summary>
    [Parameter]
    public TimeSpan? VerifierLease { get; set; }

    /// <summary>Verifier role: webhooks that receive signed revocation notifications when an agent fails attestation.</summary>
    [Parameter]
    public Uri[]? RevocationWebhook { get; set; }

    /// <summary>Verifier role: the client certificate (with key) presented to agents; default one issued by this data path's components CA.</summary>
    [Parameter]
    public X509Certificate2? VerifierClientCertificate { get; set; }
    /// <summary>Agent role: run autorun.ps1 from a delivered payload zip (Keylime's autorun.sh). Off by default.</summary>
    [Parameter]
    public SwitchParameter EnablePayloadScript { get; set; }

    /// <summary>Registrar role: also serve agent registration and activation over plain HTTP on this port (Keylime's 8890); 0 picks a free one.</summary>
    [Parameter]
    [ValidateRange(0, 65535)]
    public int? RegistrarPlainPort { get; set; }

    /// <summary>Kms role: the full KMS settings; the -Kms* parameters below override its fields.</summary>
    [Parameter]
    public TpmProvisioning.Kms.KmsSettings? KmsSettings { get; set; }

    /// <summary>Kms and Verifier roles: how the master key is protected (default Tpm; InsecureFile only for labs). It wraps the KMS's keys and seals the verifier's stored tenant secrets.</summary>
    [Parameter]
    [Alias("MasterKey")]
    public TpmProvisioning.Kms.MasterKeyKind? KmsMasterKey { get; set; }

    /// <summary>Kms and Verifier roles with a TPM-sealed master key: the server's TPM connection string.</summary>
    [Parameter]
    [Alias("MasterKeyTpm")]
    [ArgumentCompleter(typeof(TpmConnectionCompleter))]
    public string? KmsMasterKeyTpm { get; set; }

    /// <summary>Kms role: the Keylime verifier the key-release gate asks; without one nothing is released.</summary>
    [Parameter]
    [ArgumentCompleter(typeof(VerifierUrlCompleter))]
    public Uri? KmsVerifier { get; set; }

    /// <summary>Kms role: the Keylime registrar holding the agents' mTLS certificates (default: the verifier's address).</summary>
    [Parameter]
    [ArgumentCompleter(typeof(RegistrarUrlCompleter))]
    public Uri? KmsRegistrar { get; set; }

    /// <summary>Kms role: a release needs a successful attestation at most this old (default 60 s).</summary>
    [Parameter]
    public TimeSpan? KmsMaxAttestationAge { get; set; }

    /// <summary>Kms role: PEM file (or PEM text) of the public key that signs the verifier's revocation notices.</summary>
    [Parameter]
    public string? KmsRevocationPublicKey { get; set; }

    /// <summary>Station role: how long one hook script may run before it is stopped (default 1800 s).</summary>
    [Parameter]
    public TimeSpan? StationHookTimeout { get; set; }

    /// <summary>Station role: an anonymous read-only view of devices and their states (never logs or keys). Off by default.</summary>
    [Parameter]
    public SwitchParameter StationPublicDashboard { get; set; }

    /// <summary>Station role: the Keylime verifier whose attestation state device details show.</summary>
    [Parameter]
    public Uri? StationVerifier { get; set; }

    /// <summary>Agent and Verifier roles: the address registered (agent <c>ip</c>) and reported (<c>verifier_ip</c>) instead of -Address, behind NAT or on a multi-homed host.</summary>
    [Parameter]
    public string? ContactAddress { get; set; }

    /// <summary>Agent and Verifier roles: the port registered and reported instead of the bound one (a forwarded port).</summary>
    [Parameter]
    [ValidateRange(1, 65535)]
    public int? ContactPort { get; set; }

    /// <summary>Keylime roles: PEM files of other CAs (RSA or ECDSA) whose client certificates are accepted, such as a site's Keylime cv_ca; each gets -TrustedClientCaRole.</summary>
    [Parameter]
    public string[]? TrustedClientCa { get; set; }

    /// <summary>The roles certificates of -TrustedClientCa act in (default Tenant, Verifier: Keylime's tenant and verifier share cv_ca's client certificate).</summary>
    [Parameter]
    public TpmProvisioning.Pki.ClientRole[] TrustedClientCaRole { get; set; } = [TpmProvisioning.Pki.ClientRole.Tenant, TpmProvisioning.Pki.ClientRole.Verifier];

    /// <summary>Agent role: serve a self-signed TLS certificate and register it as mtls_cert, as Keylime's agents do (Keylime trusts it with its default set-up).</summary>
    [Parameter]
    public SwitchParameter AgentSelfSignedCertificate { get; set; }

    /// <summary>Keep the server in the foreground, relaying its log to the verbose stream, until Ctrl+C.</summary>
    [Parameter]
    public SwitchParameter Wait { get; set; }

    protected override void EndProcessing()
    {
        if (!IPAddress.TryParse(Address, out var ip))
        {
            ThrowTerminatingError(new ErrorRecord(new ArgumentException($"'{Address}' is not an IP address."), "InvalidAddress", ErrorCategory.InvalidArgument, Address));
            return;
        }
        if (AssemblyResolver.AspNetCoreFramework.Found is null)
        {
            var tried = string.Join(Environment.NewLine + "  ", AssemblyResolver.AspNetCoreFramework.Tried);
            ThrowTerminatingError(new ErrorRecord(
                new InvalidOperationException($"The ASP.NET Core runtime (Microsoft.AspNetCore.App {Environment.Version.Major}.{Environment.Version.Minor}) was not found. Install it, or set DOTNET_ROOT to a .NET installation that has it. Paths tried:{Environment.NewLine}  {tried}"),
                "AspNetCoreRuntimeNotFound", ErrorCategory.NotInstalled, null));
            return;
        }

        var roles = Role.Aggregate(ServerRole.None, (a, r) => a | r);
        var mutual = RequireClientCertificate.Aggregate(ServerRole.None, (a, r) => a | r);
        var dataPath = GetUnresolvedProviderPathFromPSPath(DataPath ?? Defaults.DataPath);
        string? storeConnection = StoreConnectionString;
        if (StoreCredential is not null && storeConnection is null)
        {
            ThrowTerminatingError(new ErrorRecord(new ArgumentException("-StoreCredential needs -StoreConnectionString."), "StoreCredentialWithoutStore", ErrorCategory.InvalidArgument, null));
            return;
        }
        try
        {
            if (storeConnection is not null && StoreCredential is { } sc)
                storeConnection = TpmProvisioning.Storage.PostgresStore.WithCredential(storeConnection, sc.UserName, sc.GetNetworkCredential().Password);
            if (storeConnection is not null && !TpmProvisioning.Storage.PostgresStore.IsPostgresConnectionString(storeConnection))
                throw new ArgumentException("-StoreConnectionString must be a PostgreSQL (Npgsql) connection string with a Host, e.g. 'Host=db1;Database=fleet'.");
        }
        catch (ArgumentException ex)
        {
            ThrowTerminatingError(new ErrorRecord(ex, "InvalidStoreConnectionString", ErrorCategory.InvalidArgument, null));
            return;
        }
        if (VerifierLease is { } vl && (vl < TimeSpan.FromSeconds(1) || vl > TimeSpan.FromHours(1)))
        {
            ThrowTerminatingError(new ErrorRecord(new ArgumentOutOfRangeException(nameof(VerifierLease), vl, "-VerifierLease must be between 1 second and 1 hour."), "InvalidVerifierLease", ErrorCategory.InvalidArgument, vl));
            return;
        }
        string storeText = storeConnection is null ? "" : " store=" + TpmProvisioning.Storage.PostgresStore.Describe(storeConnection);
        var target = $"{(InsecurePlainHttp ? "http" : "https")}://{ip}:{Port} roles={roles} data={dataPath}{storeText}";
        if (!ShouldProcess(target, "Start provisioning server")) return;
        if (InsecurePlainHttp)
            WriteWarning("Serving plain HTTP: requests, API keys and quotes travel unencrypted. Use this only in an isolated lab.");

        var options = new ServerOptions
        {
            Name = Name,
            Address = ip,
            Port = Port,
            DataPath = dataPath,
            Roles = roles,
            Certificate = Certificate,
            RequireClientCertificate = mutual,
            InsecurePlainHttp = InsecurePlainHttp,
            LogLevel = LogLevel,
            ContactAddress = ContactAddress,
            ContactPort = ContactPort,
            StoreConnectionString = storeConnection,
        };
        if (ContactAddress is not null && !TpmProvisioning.Attestation.KeylimeValidators.IsValidContactHost(ContactAddress))
        {
            ThrowTerminatingError(new ErrorRecord(new ArgumentException($"-ContactAddress '{ContactAddress}' is not an IP address or host name."), "InvalidContactAddress", ErrorCategory.InvalidArgument, ContactAddress));
            return;
        }
        var trustedRoles = TrustedClientCaRole.Aggregate(TpmProvisioning.Pki.ClientRole.None, (a, r) => a | r);
        foreach (var path in TrustedClientCa ?? [])
        {
            var full = GetUnresolvedProviderPathFromPSPath(path);
            try
            {
                options.TrustedClientCas.Add(new TrustedClientCa(TpmProvisioning.Pki.ComponentCa.ReadCaCertificate(full), trustedRoles));
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException or System.Security.Cryptography.CryptographicException)
            {
                ThrowTerminatingError(new ErrorRecord(new ArgumentException($"-TrustedClientCa '{path}': {ex.Message}", ex), "InvalidTrustedClientCa", ErrorCategory.InvalidArgument, path));
                return;
            }
        }
        if (roles.HasFlag(ServerRole.Agent))
        {
            options.Agent = new TpmProvisioning.Attestation.AgentSettings
            {
                Tpm = Tpm,
                Registrar = Registrar,
                RegistrarCaCertificatePath = RegistrarCaCertificateFile(dataPath),
                AgentId = AgentId,
                AkHandle = AkHandle,
                RunPayloadScript = EnablePayloadScript,
                SelfSignedCertificate = AgentSelfSignedCertificate,
            };
        }
        if (RegistrarPlainPort is { } plainPort)
        {
            if (!roles.HasFlag(ServerRole.Registrar))
            {
                ThrowTerminatingError(new ErrorRecord(new ArgumentException("-RegistrarPlainPort needs the Registrar role."), "RegistrarPlainPortWithoutRegistrar", ErrorCategory.InvalidArgument, plainPort));
                return;
            }
            options.Registrar.PlainPort = plainPort;
        }
        if (roles.HasFlag(ServerRole.Agent) && EnablePayloadScript)
            WriteWarning("Payload scripts are enabled: autorun.ps1 in a payload delivered by the tenant runs with this session's rights once the verifier releases the key.");

        if (roles.HasFlag(ServerRole.Verifier))
        {
            if (QuoteInterval is { } qi && (qi < TimeSpan.Zero || qi > TimeSpan.FromDays(1)))
            {
                ThrowTerminatingError(new ErrorRecord(new ArgumentOutOfRangeException(nameof(QuoteInterval), qi, "-QuoteInterval must be between 0 and 1 day."), "InvalidQuoteInterval", ErrorCategory.InvalidArgument, qi));
                return;
            }
            options.Verifier = new TpmProvisioning.Attestation.Verifier.VerifierSettings
            {
                QuoteInterval = QuoteInterval ?? TimeSpan.FromSeconds(2),
                QuoteSchedule = QuoteSchedule ?? TpmProvisioning.Attestation.Verifier.QuoteSchedule.FixedRate,
                RevocationWebhooks = RevocationWebhook ?? [],
                ClientCertificate = VerifierClientCertificate,
                VerifierId = VerifierId ?? "default",
                LeaseDuration = VerifierLease,
            };
        }

        // The master key also seals the verifier's stored tenant secrets: given for a verifier, it applies there too.
        bool masterKeyGiven = KmsSettings is not null || KmsMasterKey is not null || KmsMasterKeyTpm is not null;
        if ((roles.HasFlag(ServerRole.Kms) || ((roles.HasFlag(ServerRole.Verifier) || roles.HasFlag(ServerRole.Station)) && masterKeyGiven)) && !TryKmsSettings(options)) return;
        if (roles.HasFlag(ServerRole.Verifier) && masterKeyGiven && options.Verifier is not null) options.Verifier.MasterKey = options.Kms;
        if (roles.HasFlag(ServerRole.Station))
        {
            if (StationHookTimeout is { } ht && (ht <= TimeSpan.Zero || ht > TimeSpan.FromDays(1)))
            {
                ThrowTerminatingError(new ErrorRecord(new ArgumentOutOfRangeException(nameof(StationHookTimeout), ht, "-StationHookTimeout must be more than 0 and at most 1 day."), "InvalidStationHookTimeout", ErrorCategory.InvalidArgument, ht));
                return;
            }
            options.Station = new TpmProvisioning.Station.StationSettings
            {
                HookTimeout = StationHookTimeout ?? TimeSpan.FromSeconds(1800),
                PublicDashboard = StationPublicDashboard,
                Verifier = StationVerifier,
                // Hooks are PowerShell: each runs in a runspace of its own, never in this session's.
                ScriptRunner = new Station.PowerShellScriptRunner(),
                // The master key also seals the station's signing keys and PKCS#11 PINs.
                MasterKey = masterKeyGiven ? options.Kms : null,
            };
        }

        // Parameters given here win over settings persisted by the options surface (docs/configuration.md).
        TpmProvisioning.Configuration.SettingsCatalog.MarkExplicit(options, MyInvocation.BoundParameters.Keys);
        WriteVerbose($"ASP.NET Core shared framework: {AssemblyResolver.AspNetCoreFramework.Found}");
        if (Name is not null && ServerRegistry.Named(Name) is { } sameName)
        {
            ThrowTerminatingError(new ErrorRecord(new InvalidOperationException(
                    $"A server named '{Name}' already runs in this session (Id {sameName.Info.Id}, {string.Join(", ", sameName.Info.Urls)}): choose another -Name or stop it first."),
                "ServerNameInUse", ErrorCategory.ResourceExists, Name));
            return;
        }
        // One server per data path (one store, one CA), in this session or any other process: the running server holds a lock file there.
        var dataPathLock = ServerRegistry.TryLockDataPath(dataPath, out var inUseBy);
        if (inUseBy is not null)
        {
            ThrowTerminatingError(new ErrorRecord(new InvalidOperationException(
                    $"The data path '{dataPath}' is in use by {inUseBy}: one server per data path (it holds {ServerRegistry.LockFile(dataPath)}). Give another -DataPath or stop that server."),
                "DataPathInUse", ErrorCategory.ResourceBusy, dataPath));
            return;
        }
        IServerHost host;
        try
        {
            host = ServerRegistry.Start(options, _cts.Token);
        }
        catch (ServerStartException ex)
        {
            dataPathLock?.Dispose();
            var category = ex.Reason switch
            {
                "PortInUse" => ErrorCategory.ResourceUnavailable,
                "AddressNotAvailable" => ErrorCategory.InvalidArgument,
                "DataPathNotWritable" => ErrorCategory.PermissionDenied,
                "StoreUnavailable" => ErrorCategory.ResourceUnavailable,
                "CertificateInvalid" => ErrorCategory.InvalidArgument,
                "RoleConflict" => ErrorCategory.InvalidArgument,
                "AgentTpmUnavailable" => ErrorCategory.ResourceUnavailable,
                _ => ErrorCategory.NotSpecified,
            };
            // The agent's own failures keep their reason as the ErrorId (AgentTpmUnavailable); the others are ServerStart<Reason>.
            ThrowTerminatingError(new ErrorRecord(ex, ex.Reason.StartsWith("Agent", StringComparison.Ordinal) ? ex.Reason : "ServerStart" + ex.Reason, category, target));
            return;
        }
        catch
        {
            dataPathLock?.Dispose();
            throw;
        }
        ServerRegistry.Add(host, dataPathLock);
        if (options.Kms is { } startedKms) MasterKeyMemory.Write(dataPath, startedKms.MasterKey, startedKms.MasterKey == TpmProvisioning.Kms.MasterKeyKind.Tpm ? startedKms.MasterKeyTpm : null);
        WriteVerbose($"Server {host.Info.Name} (Id {host.Info.Id}) listening on {string.Join(", ", host.Info.Urls)}; CA certificate: {host.Info.CaCertificatePath}; log: {host.Info.LogPath}");
        if (roles.HasFlag(ServerRole.Agent) && Registrar is not null)
        {
            // The agent registers and activates in the background; wait (up to 30 s) so the object shows the outcome.
            var progress = new ProgressRecord(1, "Start-ProvisioningServer", $"Agent registering with {Registrar}");
            var until = DateTime.UtcNow.AddSeconds(30);
            while (!host.Info.AgentRegistered && host.Info.AgentRegistrationError is null && DateTime.UtcNow < until && !_cts.IsCancellationRequested)
            {
                WriteProgress(progress);
                Thread.Sleep(50);
            }
            progress.RecordType = ProgressRecordType.Completed;
            WriteProgress(progress);
        }
        if (roles.HasFlag(ServerRole.Agent) && Registrar is not null && !host.Info.AgentRegistered)
        {
            // As Keylime's agent exits when it cannot register: stop the server and fail.
            var status = host.Info.AgentRegistrationStatus;
            var why = host.Info.AgentRegistrationError ?? "registration did not finish within 30 seconds";
            ServerRegistry.Remove(host.Info.Id);
            try { host.StopAsync().GetAwaiter().GetResult(); } catch (Exception stopEx) { WriteVerbose("Stopping after the failed registration: " + stopEx.Message); }
            var category = status switch
            {
                401 or 403 => ErrorCategory.PermissionDenied,
                400 or 404 => ErrorCategory.InvalidData,
                null => host.Info.AgentRegistrationError is null ? ErrorCategory.OperationTimeout : ErrorCategory.ConnectionError,
                _ => ErrorCategory.InvalidResult,
            };
            ThrowTerminatingError(new ErrorRecord(
                new InvalidOperationException($"The agent could not register at {Registrar}{(status is null ? "" : $" (registrar answered {status})")}: {why}. The server was stopped."),
                "AgentRegistrationFailed", category, Registrar) { ErrorDetails = new ErrorDetails($"Agent registration failed{(status is null ? "" : $" with status {status}")}: {why}") });
            return;
        }
        WriteObject(host.Info);

        if (Wait) RunInForeground(host);
    }

    /// <summary>The Kms role's settings from -KmsSettings and the -Kms* parameters; false after a terminating error.</summary>
    private bool TryKmsSettings(ServerOptions options)
    {
        var kms = KmsSettings ?? new TpmProvisioning.Kms.KmsSettings();
        if (KmsMasterKey is { } kind) kms.MasterKey = kind;
        if (KmsMasterKeyTpm is not null) kms.MasterKeyTpm = KmsMasterKeyTpm;
        // The data path remembers its master key's kind and TPM (MasterKeyMemory): used when neither is given.
        var dataPath = options.DataPath;
        if (KmsSettings is null && KmsMasterKey is null && (TpmProvisioning.Kms.KmsEngineFactory.DetectMasterKey(dataPath) ?? MasterKeyMemory.Read(dataPath)?.Kind) is { } known) kms.MasterKey = known;
        if (kms.MasterKey == TpmProvisioning.Kms.MasterKeyKind.Tpm && kms.MasterKeyTpm is null && MasterKeyMemory.Read(dataPath) is { Tpm: { } rememberedTpm }) kms.MasterKeyTpm = rememberedTpm;
        if (KmsVerifier is not null) kms.Verifier = KmsVerifier;
        if (KmsRegistrar is not null) kms.Registrar = KmsRegistrar;
        if (KmsMaxAttestationAge is { } age) kms.MaxAttestationAge = age;
        if (KmsRevocationPublicKey is { } pem)
        {
            try
            {
                if (!pem.Contains("-----BEGIN", StringComparison.Ordinal)) pem = File.ReadAllText(GetUnresolvedProviderPathFromPSPath(pem));
                using var rsa = System.Security.Cryptography.RSA.Create();
                rsa.ImportFromPem(pem);
                kms.RevocationPublicKeyPem = pem;
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException or System.Security.Cryptography.CryptographicException)
            {
                ThrowTerminatingError(new ErrorRecord(ex, "KmsInvalidRevocationKey", ErrorCategory.InvalidArgument, KmsRevocationPublicKey));
                return false;
            }
        }
        if (kms.MasterKey == TpmProvisioning.Kms.MasterKeyKind.InsecureFile)
            WriteWarning("The KMS master key is an INSECURE plaintext file: anyone who reads it reads every key. Use it only in a lab.");
        options.Kms = kms;
        return true;
    }

    private void RunInForeground(IServerHost host)
    {
        var queue = new BlockingCollection<ServerLogEntry>();
        void Relay(ServerLogEntry e) => queue.Add(e);
        host.Logged += Relay;
        try
        {
            WriteVerbose("Running in the foreground; press Ctrl+C to stop.");
            while (!_cts.IsCancellationRequested && host.Info.State == ServerState.Running)
            {
                try
                {
                    if (queue.TryTake(out var e, 250, _cts.Token))
                        WriteVerbose($"[{e.Level}] {e.Category}: {e.Message}");
                }
                catch (OperationCanceledException) { break; }
            }
        }
        finally
        {
            host.Logged -= Relay;
            ServerRegistry.Remove(host.Info.Id);
            host.StopAsync().GetAwaiter().GetResult();
        }
    }

    protected override void StopProcessing() => _cts.Cancel();

    /// <summary>
    /// -RegistrarCaCertificate as a PEM file for the agent: a path as given (after checking it holds a certificate), a certificate
    /// object written to <c>&lt;DataPath&gt;/agent/registrar-ca.pem</c>.
    /// </summary>
    private string? RegistrarCaCertificateFile(string dataPath)
    {
        var value = RegistrarCaCertificate is PSObject p ? p.BaseObject : RegistrarCaCertificate;
        if (value is null) return null;
        var cert = CertificateInput.Load(this, value, nameof(RegistrarCaCertificate));
        if (value is string or FileInfo)
        {
            cert?.Dispose();
            return value is FileInfo f ? f.FullName : GetUnresolvedProviderPathFromPSPath((string)value);
        }
        var dir = Path.Combine(dataPath, "agent");
        Directory.CreateDirectory(dir);
        var file = Path.Combine(dir, "registrar-ca.pem");
        File.WriteAllText(file, cert!.ExportCertificatePem() + "\n");
        return file;
    }

}
