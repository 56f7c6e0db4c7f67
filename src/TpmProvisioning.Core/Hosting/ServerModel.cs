using System.Net;
using System.Security.Cryptography.X509Certificates;

namespace TpmProvisioning.Hosting;

/// <summary>The surfaces a server can host. Combine with <c>|</c>.</summary>
[Flags]
public enum ServerRole
{
    None = 0,
    Provisioning = 1,
    Registrar = 2,
    Verifier = 4,
    Agent = 8,
    Kms = 16,
    Station = 32,
    All = Provisioning | Registrar | Verifier | Agent | Kms | Station,
}

/// <summary>Lifecycle of a hosted server.</summary>
public enum ServerState
{
    Starting,
    Running,
    Stopping,
    Stopped,
    Faulted,
}

/// <summary>How to start a server. Defaults are closed: loopback, HTTPS with the server's own CA.</summary>
public sealed class ServerOptions
{
    public string? Name { get; set; }
    public IPAddress Address { get; set; } = IPAddress.Loopback;
    /// <summary>TCP port; 0 picks a free one.</summary>
    public int Port { get; set; } = 8443;
    public required string DataPath { get; set; }
    public ServerRole Roles { get; set; } = ServerRole.Provisioning;
    /// <summary>Serve this certificate (with private key) instead of one issued by the server's own CA.</summary>
    public X509Certificate2? Certificate { get; set; }
    /// <summary>
    /// Roles whose routes require a client certificate issued by the server-components CA. The Keylime roles (registrar,
    /// agent) always require one on their protected routes when serving TLS, as Keylime does; their registration,
    /// activation and <c>/version</c> routes stay open.
    /// </summary>
    public ServerRole RequireClientCertificate { get; set; } = ServerRole.None;
    /// <summary>Serve plain HTTP. Off unless explicitly asked for; never for production.</summary>
    public bool InsecurePlainHttp { get; set; }
    /// <summary>Grace period for in-flight requests on stop.</summary>
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(10);
    /// <summary>
    /// Bytes of request bodies the server holds in memory at once, across all roles (default 96 MiB: three of the verifier's
    /// largest bodies). A body that does not fit is refused before it is read, with 503 and Retry-After in the surface's shape.
    /// </summary>
    public long MaxBufferedRequestBytes { get; set; } = 96L * 1024 * 1024;
    /// <summary>Minimum level written to the log file and the in-memory log.</summary>
    public LogLevelName LogLevel { get; set; } = LogLevelName.Information;
    /// <summary>
    /// Other CAs whose client certificates the mutual-TLS routes accept, each in the roles given (a site's Keylime verifier and
    /// tenant, whose certificates from Keylime's <c>cv_ca</c> carry no role). RSA or ECDSA.
    /// </summary>
    public List<TrustedClientCa> TrustedClientCas { get; set; } = [];
    /// <summary>
    /// The address agents and tenants are told to reach this server at (the agent's registered <c>ip</c>, the verifier's
    /// <c>verifier_ip</c>), when it differs from <see cref="Address"/> (NAT, a multi-homed host, or a wildcard bind).
    /// </summary>
    public string? ContactAddress { get; set; }
    /// <summary>The port registered and reported instead of the bound one (a port forwarded by NAT or a proxy).</summary>
    public int? ContactPort { get; set; }
    /// <summary>Settings of the provisioning surface (namespaces, body cap, signer timeout, file locations).</summary>
    public Provisioning.ProvisioningSettings Provisioning { get; set; } = new();
    /// <summary>Settings of the Keylime registrar surface (EK certificate checks, agent id rule, trust folders).</summary>
    public Attestation.RegistrarSettings Registrar { get; set; } = new();
    /// <summary>Settings of the Keylime agent surface (TPM, AK, registrar to register with, IMA and event log files).</summary>
    public Attestation.AgentSettings Agent { get; set; } = new();
    /// <summary>Settings of the Keylime verifier surface (quote interval, retries, revocation webhooks).</summary>
    public Attestation.Verifier.VerifierSettings Verifier { get; set; } = new();
    /// <summary>Settings of the KMS surface (master-key protection, key sources, sessions, the attestation gate's verifier).</summary>
    public Kms.KmsSettings Kms { get; set; } = new();
    /// <summary>Settings of the station surface (hook time limit, script size cap, public dashboard, script runner).</summary>
    public Station.StationSettings Station { get; set; } = new();
    /// <summary>
    /// Names of settings (docs/configuration.md) given explicitly at start: a value persisted by the options surface does not
    /// replace them. Start-ProvisioningServer fills it from its bound parameters.
    /// </summary>
    public ISet<string> ExplicitSettings { get; } = new HashSet<string>(StringComparer.OrdinalIgnoreCase);

    /// <summary>
    /// A PostgreSQL (Npgsql) connection string: the store several servers share (a fleet), instead of the SQLite file under
    /// <see cref="DataPath"/>. Null: the environment variable <c>TPMPROVISIONING_STORE</c> when set, else SQLite. Its password is
    /// never logged or returned.
    /// </summary>
    public string? StoreConnectionString { get; set; }

    /// <summary>The environment variable a server reads its store connection string from when none is given.</summary>
    public const string StoreConnectionStringVariable = "TPMPROVISIONING_STORE";
}

/// <summary>A CA trusted for client certificates in the given roles (<see cref="ServerOptions.TrustedClientCas"/>).</summary>
public sealed record TrustedClientCa(X509Certificate2 Certificate, Pki.ClientRole Roles);

/// <summary>Log levels, named as in Microsoft.Extensions.Logging but without depending on it.</summary>
public enum LogLevelName
{
    Trace,
    Debug,
    Information,
    Warning,
    Error,
    Critical,
    None,
}

/// <summary>One log line as kept in memory for <c>Get-ProvisioningServerLog</c>; already redacted.</summary>
public sealed record ServerLogEntry(DateTimeOffset Time, LogLevelName Level, string Category, string Message, string? Exception);

/// <summary>What a running (or stopped) server looks like to the pipeline.</summary>
public sealed class ServerInfo
{
    public int Id { get; init; }
    public string Name { get; init; } = "";
    public string[] Urls { get; set; } = [];
    public ServerRole Roles { get; init; }
    public string DataPath { get; init; } = "";
    public DateTimeOffset StartTime { get; init; }
    public ServerState State { get; set; }
    /// <summary>
    /// True once the server stops taking new work (<see cref="IServerHost.BeginDrain"/> or a stop in progress): surfaces answer
    /// 503 with Retry-After so load balancers and clients move on, while requests already in flight finish.
    /// </summary>
    public bool Draining { get; set; }
    public int Port { get; set; }
    /// <summary>The server-components CA certificate (PEM) clients trust, under the data path.</summary>
    public string? CaCertificatePath { get; init; }
    public string? CertificateThumbprint { get; init; }
    public ServerRole ClientCertificateRoles { get; init; }
    public string? LogPath { get; init; }
    /// <summary>The store: <c>sqlite</c> and its file, or <c>postgresql</c> with host, port, database and user (never a password).</summary>
    public string? Store { get; set; }
    /// <summary>Registrar role: the plain-HTTP port serving agent registration and activation, when one was asked for.</summary>
    public int? RegistrarPlainPort { get; set; }
    /// <summary>Registrar role: the plain-HTTP URL agents register at, when a plain port was asked for.</summary>
    public string? RegistrarPlainUrl { get; set; }
    /// <summary>Agent role: true once the agent registered and activated at its registrar.</summary>
    public bool AgentRegistered { get; set; }
    /// <summary>Agent role: why registration at the registrar failed, if it did.</summary>
    public string? AgentRegistrationError { get; set; }
    /// <summary>Agent role: the registrar's HTTP status when it refused the registration or activation; null when it did not answer.</summary>
    public int? AgentRegistrationStatus { get; set; }

    public override string ToString() => $"{Name} ({string.Join(", ", Urls)}) {State}";
}

/// <summary>A started server, as the hosting layer hands it to its caller.</summary>
public interface IServerHost : IAsyncDisposable
{
    ServerInfo Info { get; }
    /// <summary>The most recent log entries, oldest first.</summary>
    IReadOnlyList<ServerLogEntry> RecentLog(int max);
    /// <summary>Raised for each log entry at or above the configured level (already redacted).</summary>
    event Action<ServerLogEntry>? Logged;
    /// <summary>Stops taking new work without stopping: new requests get 503 and Retry-After; in-flight requests finish.</summary>
    void BeginDrain();
    Task StopAsync(CancellationToken ct = default);
}

/// <summary>The server could not start; <see cref="Reason"/> says why in a stable word.</summary>
public sealed class ServerStartException : Exception
{
    public ServerStartException(string reason, string message, Exception? inner = null) : base(message, inner) => Reason = reason;
    /// <summary><c>PortInUse</c>, <c>AddressNotAvailable</c>, <c>DataPathNotWritable</c>, <c>StoreUnavailable</c>, <c>CertificateInvalid</c>, <c>RoleConflict</c> or <c>Failed</c>.</summary>
    public string Reason { get; }
}
