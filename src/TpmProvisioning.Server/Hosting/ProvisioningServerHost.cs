using System.Net;
using System.Net.Sockets;
using System.Reflection;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Server.Roles;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Server.Hosting;

/// <summary>
/// Kestrel hosted in the caller's process (a pwsh session, a test, a service). Started with
/// <see cref="StartAsync"/>, never Run: the caller keeps its thread and its console.
/// </summary>
public sealed class ProvisioningServerHost : IServerHost
{
    private static int s_nextId;

    private readonly WebApplication _app;
    private readonly FileLoggerProvider _log;
    private readonly IStore _store;
    private readonly ComponentCa _ca;
    private readonly ServerOptions _options;
    private int _stopped;

    private ProvisioningServerHost(WebApplication app, FileLoggerProvider log, IStore store, ComponentCa ca, ServerOptions options, ServerInfo info)
    {
        _app = app;
        _log = log;
        _store = store;
        _ca = ca;
        _options = options;
        Info = info;
    }

    public ServerInfo Info { get; }

    public event Action<ServerLogEntry>? Logged
    {
        add => _log.Logged += value;
        remove => _log.Logged -= value;
    }

    public IReadOnlyList<ServerLogEntry> RecentLog(int max) => _log.Recent(max);

    /// <summary>
    /// Settings persisted by the options surface (docs/configuration.md) replace the defaults in <paramref name="options"/>, except
    /// those given explicitly at start (<see cref="ServerOptions.ExplicitSettings"/>), which win.
    /// </summary>
    private static async Task ApplyPersistedSettingsAsync(IStore store, ServerOptions options, FileLoggerProvider log, CancellationToken ct)
    {
        var (applied, skipped) = Configuration.SettingsCatalog.ApplyPersisted(options, await store.GetSettingsAsync(ct).ConfigureAwait(false));
        log.MinLevel = (LogLevel)(int)options.LogLevel;
        var logger = log.CreateLogger("TpmProvisioning.Server");
        if (applied.Count > 0) logger.LogInformation("Stored settings applied: {Names}", string.Join(", ", applied));
        foreach (var s in skipped) logger.LogWarning("Stored setting not applied: {Why}", s);
    }

    /// <summary>Starts a server. Throws <see cref="ServerStartException"/> with a stable reason when it cannot.</summary>
    public static async Task<IServerHost> StartAsync(ServerOptions options, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Port is < 0 or > 65535)
            throw new ServerStartException("Failed", $"Port {options.Port} is outside 0-65535.");
        if (PlainRegistrarPort(options) is { } pp && (pp is < 0 or > 65535 || (pp != 0 && pp == options.Port)))
            throw new ServerStartException("Failed", $"The registrar's plain port {pp} must be 0-65535 and differ from the server's port.");
        if (options.MaxBufferedRequestBytes < 64 * 1024)
            throw new ServerStartException("Failed", $"MaxBufferedRequestBytes {options.MaxBufferedRequestBytes} is below the 64 KiB a single small request needs.");
        if (options.Roles == ServerRole.None)
            throw new ServerStartException("Failed", "No role given: a server must host at least one surface.");
        if (options.Roles.HasFlag(ServerRole.Registrar) && options.Roles.HasFlag(ServerRole.Verifier))
            throw new ServerStartException("RoleConflict",
                "The Registrar and Verifier roles both serve Keylime's /v2.1/agents/ routes, so they cannot share a server (Keylime runs them apart too): start one server for each, on its own port.");

        string dataPath = Path.GetFullPath(options.DataPath);
        IReadOnlyList<string> loosened;
        try
        {
            PrivateFiles.CreateFolder(dataPath);
            var probe = Path.Combine(dataPath, ".write-probe");
            PrivateFiles.Touch(probe);
            File.Delete(probe);
            // Secrets live here (keys, the database and its WAL, logs): nobody but the owner may read any of it.
            loosened = PrivateFiles.Secure(dataPath);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new ServerStartException("DataPathNotWritable", $"The data path '{dataPath}' is not writable: {ex.Message}", ex);
        }

        var log = new FileLoggerProvider(Path.Combine(dataPath, "logs"), (LogLevel)(int)options.LogLevel);
        if (loosened.Count > 0)
            log.CreateLogger("TpmProvisioning.Server").LogWarning("The data path had {Count} file(s) or folder(s) that others could read; they are now owner-only: {Changed}",
                loosened.Count, string.Join("; ", loosened.Take(20)) + (loosened.Count > 20 ? "; ..." : ""));
        IStore? store = null;
        ComponentCa? ca = null;
        try
        {
            string? storeConnection = options.StoreConnectionString ?? Environment.GetEnvironmentVariable(ServerOptions.StoreConnectionStringVariable);
            try
            {
                store = string.IsNullOrWhiteSpace(storeConnection)
                    ? await SqliteStore.OpenInDataPathAsync(dataPath, ct).ConfigureAwait(false)
                    : await PostgresStore.OpenAsync(storeConnection, ct).ConfigureAwait(false);
            }
            catch (ArgumentException ex)
            {
                throw new ServerStartException("StoreUnavailable", $"The store connection string is not valid: {ex.Message}");
            }
            catch (Exception ex) when (ex is StoreUnavailableException or System.Data.Common.DbException)
            {
                string where = string.IsNullOrWhiteSpace(storeConnection) ? $"under '{dataPath}'" : "at " + SafeDescribe(storeConnection);
                throw new ServerStartException("StoreUnavailable", $"The store {where} cannot be opened: {ex.Message}", ex);
            }
            await ApplyPersistedSettingsAsync(store, options, log, ct).ConfigureAwait(false);

            ca = ComponentCa.LoadOrCreate(Path.Combine(dataPath, "ca"));
            foreach (var t in options.TrustedClientCas) ca.TrustClientCa(t.Certificate, t.Roles);
            X509Certificate2? serverCert = null;
            if (!options.InsecurePlainHttp)
            {
                serverCert = options.Certificate
                    ?? (options.Roles.HasFlag(ServerRole.Agent) && options.Agent.SelfSignedCertificate
                        ? Attestation.AgentSelfSignedCertificate.LoadOrCreate(Path.Combine(dataPath, "agent", "mtls"), options.Address)
                        : LoadOrIssueServerCertificate(ca, dataPath, options.Address));
                if (!serverCert.HasPrivateKey)
                    throw new ServerStartException("CertificateInvalid", $"The server certificate {serverCert.Subject} has no private key.");
            }

            int id = Interlocked.Increment(ref s_nextId);
            var info = new ServerInfo
            {
                Id = id,
                Name = string.IsNullOrWhiteSpace(options.Name) ? $"server{id}" : options.Name!,
                Roles = options.Roles,
                DataPath = dataPath,
                StartTime = DateTimeOffset.Now,
                State = ServerState.Starting,
                CaCertificatePath = ca.CertificatePath,
                CertificateThumbprint = serverCert?.Thumbprint,
                ClientCertificateRoles = options.InsecurePlainHttp ? ServerRole.None
                    : (options.RequireClientCertificate | RoleModules.All.Where(m => m.ChoosesClientCertificatesPerRoute).Aggregate(ServerRole.None, (a, m) => a | m.Role)) & options.Roles,
                LogPath = Path.Combine(dataPath, "logs"),
                Store = store switch { PostgresStore pgs => "postgresql " + pgs.Description, SqliteStore sq => "sqlite " + sq.Path, _ => store.Provider },
            };

            var (app, plainListen, context) = BuildApp(options, dataPath, log, store, ca, serverCert, info);
            var host = new ProvisioningServerHost(app, log, store, ca, options, info);
            try
            {
                await app.StartAsync(ct).ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                context.MarkStarted(false);
                await app.DisposeAsync().ConfigureAwait(false);
                throw Classify(ex, options);
            }

            var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses ?? [];
            var urls = addresses.Select(a => a.Replace("[::]", "localhost")).ToList();
            if (plainListen is not null)
            {
                // Kestrel writes the bound port back into the listen options (port 0 picks one).
                info.RegistrarPlainPort = plainListen.IPEndPoint!.Port;
                info.RegistrarPlainUrl = urls.FirstOrDefault(u => new Uri(u).Port == info.RegistrarPlainPort);
                urls.RemoveAll(u => u == info.RegistrarPlainUrl);
            }
            info.Urls = urls.ToArray();
            info.Port = info.Urls.Select(u => new Uri(u).Port).FirstOrDefault();
            info.State = ServerState.Running;
            context.MarkStarted(true);
            app.Logger.LogInformation("Server {Name} started on {Urls} with roles {Roles}", info.Name, string.Join(", ", info.Urls), info.Roles);
            // The data path says where its store is (PostgreSQL, without password), so admin cmdlets on it follow the server.
            try { StoreSettingsFile.Record(dataPath, string.IsNullOrWhiteSpace(storeConnection) ? null : storeConnection); }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { app.Logger.LogWarning("Cannot record the store in {File}: {Why}", StoreSettingsFile.PathOf(dataPath), ex.Message); }
            await store.AppendAuditAsync(new AuditEntry { Actor = Environment.UserName, Action = "server.start", Target = info.Name, Outcome = AuditOutcome.Success, Detail = $"{string.Join(" ", info.Urls)} roles={info.Roles}" }, ct).ConfigureAwait(false);
            return host;
        }
        catch
        {
            store?.Dispose();
            ca?.Dispose();
            log.Dispose();
            throw;
        }
    }

    private static string SafeDescribe(string connectionString)
    {
        try { return PostgresStore.Describe(connectionString); }
        catch (ArgumentException) { return "the given connection string"; }
    }

    private static ServerStartException Classify(Exception ex, ServerOptions options)
    {
        for (Exception? e = ex; e is not null; e = e.InnerException)
        {
            if (e is SocketException { SocketErrorCode: SocketError.AddressAlreadyInUse } || (e is IOException && e.Message.Contains("address already in use", StringComparison.OrdinalIgnoreCase)))
                return new ServerStartException("PortInUse", $"Port {options.Port} on {options.Address} is already in use. Choose another -Port, or -Port 0 for a free one.", ex);
            if (e is SocketException { SocketErrorCode: SocketError.AddressNotAvailable })
                return new ServerStartException("AddressNotAvailable", $"Address {options.Address} is not available on this machine.", ex);
            if (e is SocketException { SocketErrorCode: SocketError.AccessDenied })
                return new ServerStartException("AddressNotAvailable", $"Binding {options.Address}:{options.Port} was refused (privileged port?).", ex);
        }
        return new ServerStartException("Failed", $"The server failed to start: {ex.Message}", ex);
    }

    private static X509Certificate2 LoadOrIssueServerCertificate(ComponentCa ca, string dataPath, IPAddress address)
    {
        var dir = Path.Combine(dataPath, "tls");
        PrivateFiles.CreateFolder(dir);
        var pfx = Path.Combine(dir, "server.pfx");
        if (File.Exists(pfx))
        {
            var existing = X509CertificateLoader.LoadPkcs12FromFile(pfx, null, X509KeyStorageFlags.Exportable);
            bool covers = address.Equals(IPAddress.Loopback) || address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any)
                || existing.Extensions.OfType<X509SubjectAlternativeNameExtension>().Any(s => s.EnumerateIPAddresses().Contains(address));
            if (existing.NotAfter > DateTime.Now.AddDays(30) && ca.Validates(existing) && covers) return existing;
            existing.Dispose();
        }
        var dns = new List<string> { "localhost" };
        try { dns.Add(Dns.GetHostName()); } catch (SocketException) { }
        var ips = new List<IPAddress> { IPAddress.Loopback, IPAddress.IPv6Loopback };
        if (!address.Equals(IPAddress.Any) && !address.Equals(IPAddress.IPv6Any)) ips.Add(address);
        var cert = ca.IssueServerCertificate(dns, ips);
        PrivateFiles.WriteAllBytes(pfx, cert.Export(X509ContentType.Pkcs12));
        return cert;
    }

    /// <summary>The registrar's plain port when the registrar role is hosted and one was asked for.</summary>
    private static int? PlainRegistrarPort(ServerOptions options) =>
        options.Roles.HasFlag(ServerRole.Registrar) ? options.Registrar?.PlainPort : null;

    private static (WebApplication App, ListenOptions? PlainListen, ServerContext Context) BuildApp(ServerOptions options, string dataPath, FileLoggerProvider log, IStore store, ComponentCa ca, X509Certificate2? serverCert, ServerInfo info)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            ApplicationName = "TpmProvisioning.Server",
            ContentRootPath = dataPath,
            EnvironmentName = Environments.Production,
            Args = [],
        });
        builder.Logging.ClearProviders();
        builder.Logging.AddProvider(log);
        builder.Logging.SetMinimumLevel((LogLevel)(int)options.LogLevel);
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        builder.Logging.AddFilter("Microsoft.Hosting", LogLevel.Warning);
        builder.Services.AddSingleton<IHostLifetime, NoopHostLifetime>();
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = options.ShutdownTimeout);

        var modules = RoleModules.All.Where(m => options.Roles.HasFlag(m.Role)).ToList();
        ListenOptions? plainListen = null;
        bool anyMutual = (options.RequireClientCertificate & options.Roles) != ServerRole.None || modules.Any(m => m.ChoosesClientCertificatesPerRoute);
        bool anyIssuer = modules.Any(m => m.AcceptsClientCertificatesFromAnyIssuer);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = 1 * 1024 * 1024;
            k.Limits.MaxRequestHeadersTotalSize = 32 * 1024;
            k.Listen(options.Address, options.Port, lo =>
            {
                lo.Protocols = HttpProtocols.Http1AndHttp2;
                if (serverCert is null) return;
                lo.UseHttps(new HttpsConnectionAdapterOptions
                {
                    ServerCertificate = serverCert,
                    SslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                    // Mutual TLS is enforced per route (some routes of a surface are open to agents, as in Keylime);
                    // the handshake asks for a certificate and validates it against the components CA when given.
                    ClientCertificateMode = anyMutual ? ClientCertificateMode.AllowCertificate : ClientCertificateMode.NoCertificate,
                    ClientCertificateValidation = (cert, _, _) => anyIssuer || ca.ValidatesClient(cert),
                    // AEAD suites only (no CBC under TLS 1.2); on Windows the OS policy decides (TlsPolicy).
                    OnAuthenticate = (_, ssl) => TlsPolicy.Apply(ssl),
                });
            });
            if (PlainRegistrarPort(options) is { } plainPort)
            {
                // Keylime's registrar port for agents without a client certificate (8890 beside 8891): plain HTTP, and
                // only the routes marked ServedOnPlainPort answer on it (checked below).
                k.Listen(options.Address, plainPort, lo =>
                {
                    lo.Protocols = HttpProtocols.Http1;
                    lo.Use(next => connection =>
                    {
                        connection.Items[ServedOnPlainPortAttribute.ConnectionKey] = true;
                        return next(connection);
                    });
                    plainListen = lo;
                });
            }
        });

        var context = new ServerContext { Options = options, Store = store, ComponentCa = ca, Info = info, Tls = serverCert is not null, RecentLog = log.Recent };
        foreach (var m in modules) m.AddServices(builder.Services, context);
        builder.Services.AddSingleton(context);
        builder.Services.AddSingleton(store);
        builder.Services.AddSingleton(new RequestBodyBudget(options.MaxBufferedRequestBytes));

        var app = builder.Build();
        StoreOutage.Use(app); // a store outage is a 503 with Retry-After in each surface's shape, not a 500
        if (plainListen is not null)
        {
            app.Use(async (http, next) =>
            {
                var items = http.Features.Get<Microsoft.AspNetCore.Connections.Features.IConnectionItemsFeature>()?.Items;
                if (items is not null && items.ContainsKey(ServedOnPlainPortAttribute.ConnectionKey)
                    && http.GetEndpoint()?.Metadata.GetMetadata<ServedOnPlainPortAttribute>() is null)
                {
                    await Results.Json(new { code = 403, status = "Forbidden: the registrar's plain port serves only agent registration, activation and /version; use the TLS port with a client certificate", results = new { } }, statusCode: 403).ExecuteAsync(http);
                    return;
                }
                await next(http);
            });
        }
        if (modules.Any(m => m.Role == ServerRole.Station)) app.UseWebSockets(); // the station's /ws/devices
        var version = typeof(ProvisioningServerHost).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0";
        app.MapGet("/healthz", async (HttpContext http) =>
        {
            bool storeOk = await store.PingAsync(http.RequestAborted);
            var body = new
            {
                status = storeOk ? "ok" : "degraded",
                name = info.Name,
                version = version.Split('+')[0],
                roles = Enum.GetValues<ServerRole>().Where(r => r is not ServerRole.None and not ServerRole.All && info.Roles.HasFlag(r)).Select(r => r.ToString().ToLowerInvariant()).ToArray(),
                store = new { provider = store.Provider, schema = store.SchemaVersion, ok = storeOk },
                uptime_seconds = (long)(DateTimeOffset.Now - info.StartTime).TotalSeconds,
            };
            return Results.Json(body, statusCode: storeOk ? 200 : 503);
        });

        foreach (var m in modules)
        {
            var group = app.MapGroup("");
            if (options.RequireClientCertificate.HasFlag(m.Role) && serverCert is not null && !m.ChoosesClientCertificatesPerRoute)
                group.AddEndpointFilter(new ClientCertificateFilter(ca));
            m.Map(group, context);
        }
        return (app, plainListen, context);
    }

    /// <summary>Stops taking new work: surfaces answer 503 with Retry-After from now on; requests in flight finish.</summary>
    public void BeginDrain()
    {
        if (Info.Draining) return;
        Info.Draining = true;
        _app.Logger.LogInformation("Server {Name} is draining: new requests get 503", Info.Name);
    }

    /// <summary>Stops gracefully: in-flight requests get the shutdown timeout, then the store and log close.</summary>
    public async Task StopAsync(CancellationToken ct = default)
    {
        if (Interlocked.Exchange(ref _stopped, 1) == 1) return;
        Info.Draining = true;
        Info.State = ServerState.Stopping;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(_options.ShutdownTimeout);
            await _app.StopAsync(timeout.Token).ConfigureAwait(false);
            try
            {
                await _store.AppendAuditAsync(new AuditEntry { Actor = Environment.UserName, Action = "server.stop", Target = Info.Name, Outcome = AuditOutcome.Success }, CancellationToken.None).ConfigureAwait(false);
            }
            catch (StoreUnavailableException) { }
            Info.State = ServerState.Stopped;
        }
        catch
        {
            Info.State = ServerState.Faulted;
            throw;
        }
        finally
        {
            await _app.DisposeAsync().ConfigureAwait(false);
            _store.Dispose();
            _ca.Dispose();
            _log.Dispose();
        }
    }

    public async ValueTask DisposeAsync() => await StopAsync().ConfigureAwait(false);
}
