using System.Management.Automation;
using System.Net;
using System.Security.Cryptography.X509Certificates;
using TpmProvisioning.Kms;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Cmdlets;

/// <summary>Base of the KMS cmdlets that work on a data path's store and master key (the server need not run).</summary>
public abstract class KmsLocalCmdletBase : PSCmdlet
{
    /// <summary>The server data path (default: TPMPROV_DATA or the per-user folder). Binds from a server object's DataPath.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? DataPath { get; set; }

    /// <summary>Local use: how the data path's master key is protected; default the kind already set up there, else Tpm.</summary>
    [Parameter]
    public MasterKeyKind? MasterKey { get; set; }

    /// <summary>Local use with a TPM-sealed master key: the TPM connection string (default TPM2TOOLS_TCTI or the platform TPM).</summary>
    [Parameter]
    [ArgumentCompleter(typeof(TpmConnectionCompleter))]
    public string? MasterKeyTpm { get; set; }

    /// <summary>Local use: the full KMS settings (PKCS#11 master key, hsm-luna key source, password iterations), as the server takes them.</summary>
    [Parameter]
    public KmsSettings? KmsSettings { get; set; }

    /// <summary>The data path in effect, resolved against the current location.</summary>
    protected string ResolvedDataPath => GetUnresolvedProviderPathFromPSPath(string.IsNullOrEmpty(DataPath) ? Defaults.DataPath : DataPath);

    /// <summary>Writes output tagged with its store (DataPath) or server (Server), so the next cmdlet binds it by property name.</summary>
    internal void Emit(object? value) => PipelineOrigin.Write(this, value, OriginServer is null ? ResolvedDataPath : null, OriginServer);

    /// <summary>The server the objects come from (remote use), else null.</summary>
    protected virtual Uri? OriginServer => null;

    /// <summary>Who the audit log names for local changes.</summary>
    internal static KmsCaller LocalCaller => new($"local:{Environment.UserName}", "local");

    internal LocalKmsBackend? OpenLocal(bool mayCreate)
    {
        var dir = ResolvedDataPath;
        var settings = KmsSettings ?? new KmsSettings();
        var present = KmsEngineFactory.DetectMasterKey(dir);
        if (MasterKey is { } chosen)
        {
            if (present is { } p && p != chosen)
                Terminate(new InvalidOperationException($"The data path '{dir}' has a {p} master key, not {chosen}; omit -MasterKey to use it."), "KmsMasterKeyMismatch", ErrorCategory.InvalidArgument, dir);
            settings.MasterKey = chosen;
        }
        else if (KmsSettings is null) settings.MasterKey = present ?? MasterKeyMemory.Read(dir)?.Kind ?? MasterKeyKind.Tpm;
        if (MasterKeyTpm is not null) settings.MasterKeyTpm = MasterKeyTpm;
        // Reading a data path that has no store is an error (StoreNotFound), not an empty KMS: the backend serves the whole
        // pipeline, so nothing after it could succeed either.
        if (!mayCreate && !DataPathStore.Exists(dir)) ThrowTerminatingError(Defaults.StoreNotFound(dir));
        if (present is null && !mayCreate) return null;
        if (settings.MasterKey == MasterKeyKind.Tpm && string.IsNullOrWhiteSpace(settings.MasterKeyTpm))
        {
            // A TPM-sealed key needs its TPM: the one this data path remembers, else TPM2TOOLS_TCTI or the platform's. Say which parameter to give.
            settings.MasterKeyTpm = MasterKeyMemory.DefaultTpm(dir);
            if (settings.MasterKeyTpm is null)
                Terminate(new InvalidOperationException(present is null
                        ? $"The data path '{dir}' has no KMS master key yet, and the default kind (Tpm) needs a TPM: give -MasterKeyTpm <connection> (for example swtpm:host=127.0.0.1,port=2321), or -MasterKey InsecureFile for a lab (or Pkcs11 with -KmsSettings)."
                        : $"The KMS master key of '{dir}' is sealed to a TPM, and no TPM is known for it: give -MasterKeyTpm <connection> naming the TPM that sealed it (for example swtpm:host=127.0.0.1,port=2321), or set TPM2TOOLS_TCTI."),
                    "KmsMasterKeyTpmRequired", ErrorCategory.InvalidArgument, dir);
        }

        // The data path's store: the PostgreSQL store its server recorded there, else its SQLite file (DataPathStore).
        IStore store = Defaults.OpenStore(this, dir, mayCreate: true);
        try
        {
            var (engine, wrapper) = KmsEngineFactory.OpenAsync(store, dir, settings).GetAwaiter().GetResult();
            MasterKeyMemory.Write(dir, wrapper.Kind, wrapper.Kind == MasterKeyKind.Tpm ? settings.MasterKeyTpm : null);
            if (wrapper.Kind == MasterKeyKind.InsecureFile) WriteWarning($"The KMS master key of '{dir}' is an INSECURE plaintext file; use it only in a lab.");
            WriteVerbose($"KMS master key: {wrapper.Description}");
            return new LocalKmsBackend(engine, store, LocalCaller);
        }
        catch (Tpm.Transport.TpmTransportException ex)
        {
            store.Dispose();
            Terminate(new InvalidOperationException($"The TPM of the KMS master key ({settings.MasterKeyTpm}) cannot be reached: {ex.Message} Check -MasterKeyTpm.", ex), "KmsMasterKeyTpmUnavailable", ErrorCategory.ConnectionError, dir);
            throw;
        }
        catch (Exception ex) when (ex is KmsException or Tpm.TpmException or Net.Pkcs11Interop.Common.Pkcs11Exception or IOException)
        {
            store.Dispose();
            Terminate(ex, "KmsUnavailable", ErrorCategory.ResourceUnavailable, dir);
            throw;
        }
    }

    /// <summary>Runs a KMS call; a failure becomes an error record with a stable id (terminating when nothing else can succeed).</summary>
    internal bool Try(Action call, object? target)
    {
        // Refused credentials are said once per pipeline (non-terminating); the calls after it are not sent, so a script's
        // later steps still run and the server's login throttle is not fed.
        if (_credentialsRefused) return false;
        try
        {
            call();
            return true;
        }
        catch (Exception ex) when (ex is KmsException { Kind: KmsErrorKind.Unauthenticated } && Transport is { } to)
        {
            _credentialsRefused = true;
            var who = RemoteUser is { Length: > 0 } u ? $"the credentials of '{u}'" : "the credentials";
            WriteError(new ErrorRecord(new TransportSecurityException($"{to.Server.GetLeftPart(UriPartial.Authority)} refused {who}: check the user name and password (New-KmsUser).", ex),
                TransportErrors.CredentialsRefused, ErrorCategory.AuthenticationError, target));
            return false;
        }
        catch (Exception ex) when (Transport is not null && TransportErrors.Classify(ex, Transport, target) is { } transport)
        {
            ThrowTerminatingError(transport);
            return false;
        }
        catch (Exception ex) when (KmsErrors.Record(ex, target) is { } record)
        {
            if (KmsErrors.IsFatal(ex)) ThrowTerminatingError(record);
            WriteError(record);
            return false;
        }
    }

    private bool _credentialsRefused;

    /// <summary>Remote use: the server, CA and client certificate the calls go to (null locally).</summary>
    internal TransportTarget? Transport { get; set; }

    /// <summary>Remote use: the user name given.</summary>
    internal string? RemoteUser { get; set; }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    internal void Terminate(Exception ex, string id, ErrorCategory category, object? target)
    {
        ThrowTerminatingError(new ErrorRecord(ex, id, category, target));
        throw ex;
    }

}

/// <summary>
/// Base of the KMS admin cmdlets: locally on a data path's store and master key (the server need not run), or remotely on a KMS
/// server with -Server and -Credential. Both write the same objects; errors carry the same ErrorIds.
/// </summary>
public abstract class KmsCmdletBase : KmsLocalCmdletBase
{
    /// <summary>Remote use: the KMS server's base address, e.g. https://kms:8443. Binds from a KMS object's Server.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(KmsUrlCompleter))]
    public Uri? Server { get; set; }

    /// <summary>Remote use: a KMS user's name and password (New-KmsUser).</summary>
    [Parameter]
    [Credential]
    public PSCredential? Credential { get; set; }

    /// <summary>Remote use: CA certificate (object or PEM/DER path) the server's TLS certificate must chain to.</summary>
    [Parameter]
    public object? CaCertificate { get; set; }

    /// <summary>Remote use: accept any server TLS certificate (labs only).</summary>
    [Parameter]
    public SwitchParameter SkipCertificateCheck { get; set; }

    private IKmsBackend? _backend;
    private bool _opened;
    private string? _openedFor;

    protected override Uri? OriginServer => Server;

    /// <summary>What ShouldProcess names as the place of a change.</summary>
    protected string Where => Server is not null ? Server.ToString() : ResolvedDataPath;

    /// <summary>
    /// The backend, opened once per pipeline. <paramref name="mayCreate"/> false: null when the data path has no KMS master key yet
    /// (read cmdlets then find nothing, and create no key as a side effect).
    /// </summary>
    internal IKmsBackend? Backend(bool mayCreate)
    {
        // A pipeline may carry objects of several stores or servers: each record acts on its own, never on the first one's.
        var target = Server?.ToString() ?? ResolvedDataPath;
        if (_opened && _openedFor == target) return _backend;
        if (_opened) DisposeBackend();
        _openedFor = target;
        _backend = Open(mayCreate);
        _opened = _backend is not null;
        return _backend;
    }

    private IKmsBackend? Open(bool mayCreate)
    {
        if (Server is not null)
        {
            if (!string.IsNullOrEmpty(DataPath) && MyInvocation.BoundParameters.ContainsKey(nameof(DataPath)) && MyInvocation.ExpectingInput is false)
                Terminate(new ArgumentException("-Server and -DataPath exclude each other: use a server remotely or a data path locally."), "KmsInvalidArgument", ErrorCategory.InvalidArgument, Server);
            if (Credential is null)
                Terminate(new ArgumentException("-Server needs -Credential: a KMS user's name and password (New-KmsUser)."), "KmsCredentialRequired", ErrorCategory.InvalidArgument, Server);
            TransportErrors.RequireServerUri(this, Server, nameof(Server));
            var ca = CertificateInput.Load(this, CaCertificate, nameof(CaCertificate));
            Transport = new TransportTarget(Server, ca, SkipCertificateCheck, null);
            RemoteUser = Credential!.UserName;
            return new RemoteKmsBackend(new KmsServerOptions(Server, ca, SkipCertificateCheck), Credential!.UserName, Credential.GetNetworkCredential().Password);
        }
        return OpenLocal(mayCreate);
    }

    protected override void EndProcessing() => DisposeBackend();

    protected override void StopProcessing() => DisposeBackend();

    private void DisposeBackend()
    {
        _backend?.Dispose();
        _backend = null;
    }
}

/// <summary>Stable error ids of the KMS cmdlets.</summary>
internal static class KmsErrors
{
    private static string Noun(string? field) => field switch
    {
        "provider" => "Provider",
        "id" or "name" => "Key",
        "version" => "KeyVersion",
        "username" => "User",
        _ => "",
    };

    /// <summary>The error record for a KMS failure; null for exceptions that are not a KMS call's failure.</summary>
    public static ErrorRecord? Record(Exception ex, object? target) => ex switch
    {
        KmsException k => k.Kind switch
        {
            KmsErrorKind.InvalidArgument => new ErrorRecord(ex, "KmsInvalidArgument", ErrorCategory.InvalidArgument, target),
            KmsErrorKind.AlreadyExists => new ErrorRecord(ex, $"Kms{Noun(k.Field)}Exists", ErrorCategory.ResourceExists, target),
            KmsErrorKind.NotFound => new ErrorRecord(ex, $"Kms{Noun(k.Field)}NotFound", ErrorCategory.ObjectNotFound, target),
            KmsErrorKind.Unauthenticated => new ErrorRecord(ex, "KmsUnauthenticated", ErrorCategory.AuthenticationError, target),
            KmsErrorKind.Unauthorized => new ErrorRecord(ex, "KmsUnauthorized", ErrorCategory.PermissionDenied, target),
            KmsErrorKind.Throttled => new ErrorRecord(ex, "KmsThrottled", ErrorCategory.LimitsExceeded, target),
            _ => new ErrorRecord(ex, "KmsUnavailable", ErrorCategory.ResourceUnavailable, target),
        },
        HttpRequestException => new ErrorRecord(ex, TransportErrors.ServerUnreachable, ErrorCategory.ConnectionError, target),
        TaskCanceledException or TimeoutException => new ErrorRecord(ex, "KmsServerTimeout", ErrorCategory.OperationTimeout, target),
        StoreUnavailableException => new ErrorRecord(ex, "StoreUnavailable", ErrorCategory.ResourceUnavailable, target),
        System.Security.Cryptography.CryptographicException or Net.Pkcs11Interop.Common.Pkcs11Exception => new ErrorRecord(ex, "KmsUnavailable", ErrorCategory.ResourceUnavailable, target),
        _ => null,
    };

    /// <summary>Failures after which no other item can succeed: bad credentials, no rights, an unusable server or store.</summary>
    public static bool IsFatal(Exception ex) => ex is KmsException { Kind: KmsErrorKind.Unauthenticated or KmsErrorKind.Unauthorized or KmsErrorKind.Unavailable or KmsErrorKind.Throttled or KmsErrorKind.Busy }
        or HttpRequestException or TaskCanceledException or TimeoutException or StoreUnavailableException;
}
