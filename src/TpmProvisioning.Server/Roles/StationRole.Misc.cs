using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Hosting;
using TpmProvisioning.Station;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Server.Roles;

/// <summary>Services, service logs, the audit log, sign-in for pages, and <c>/ws/devices</c> (options: StationRole.Options.cs).</summary>
internal sealed partial class StationRole
{
    /// <summary>Service names and the log categories whose lines are theirs.</summary>
    private static readonly (string Name, ServerRole? Role, string Category, string Description)[] s_services =
    [
        ("provisioning", ServerRole.Provisioning, "TpmProvisioning.Provisioning", "spec 000: AK certificates for TPM devices"),
        ("registrar", ServerRole.Registrar, "TpmProvisioning.Registrar", "spec 001: Keylime registrar"),
        ("verifier", ServerRole.Verifier, "TpmProvisioning.Verifier", "spec 001: Keylime verifier and its watch loop"),
        ("webhook-dispatcher", ServerRole.Verifier, "TpmProvisioning.Revocation", "spec 001: revocation webhooks of the verifier"),
        ("agent", ServerRole.Agent, "TpmProvisioning.Agent", "spec 001: Keylime agent"),
        ("kms", ServerRole.Kms, "TpmProvisioning.Kms", "specs 002 and 004: key management and attested key release"),
        ("station", ServerRole.Station, "TpmProvisioning.Station", "spec 003: this station"),
        ("script-runner", ServerRole.Station, "TpmProvisioning.Station.Scripts", "spec 003: hook scripts in runspaces of their own"),
        ("device-updates", ServerRole.Station, "TpmProvisioning.Station.Updates", "spec 003: /ws/devices live updates"),
        ("registration-watch", ServerRole.Station, "TpmProvisioning.Station.Watch", "spec 003: REGISTERED, ATTESTING and ATTESTATION-FAILED from the registrar and the verifier"),
    ];

    private static void MapMisc(IEndpointRouteBuilder routes, StationEnv env)
    {
        var info = env.Context.Info;

        Route(routes, env, "/api/v2/services", "GET", Access.Operator, "station.services.read", (http, _) =>
        {
            var recent = env.Context.RecentLog(int.MaxValue);
            var list = s_services.Where(s => s.Role is { } r && info.Roles.HasFlag(r)).Select(s =>
            {
                var lines = recent.Where(l => BelongsTo(l, s.Category)).ToList();
                var counters = new Dictionary<string, object?> { ["log_lines"] = lines.Count, ["warnings"] = lines.Count(l => l.Level >= LogLevelName.Warning) };
                if (s.Name == "station") counters["states_written"] = env.Station.StatesWritten;
                if (s.Name == "script-runner") { counters["hooks_run"] = env.Station.HooksRun; counters["hooks_failed"] = env.Station.HooksFailed; counters["runner"] = env.Station.Settings.ScriptRunner is null ? "none" : "powershell"; }
                if (s.Name == "registration-watch") { counters["rounds"] = env.Station.WatchRounds; counters["last_error"] = env.Station.WatchError; counters["verifier"] = env.Station.Settings.Verifier?.ToString(); }
                if (s.Name == "device-updates") { counters["clients"] = env.Hub.Clients; counters["events_sent"] = env.Hub.EventsSent; }
                return new Dictionary<string, object?>
                {
                    ["name"] = s.Name,
                    ["full_name"] = $"{info.Name}/{s.Name}",
                    ["description"] = s.Description,
                    ["active"] = info.State == ServerState.Running ? "active" : "inactive",
                    ["status"] = info.Draining ? "draining" : info.State.ToString().ToLowerInvariant(),
                    ["start_time"] = Time(s.Name == "station" ? env.Station.Started : info.StartTime),
                    ["timestamp"] = lines.Count > 0 ? Time(lines[^1].Time) : null,
                    ["counters"] = counters,
                };
            }).ToList();
            return Task.FromResult(JsonOk(new Dictionary<string, object?> { ["services"] = list }));
        });

        Route(routes, env, "/api/v2/service-log/{name}", "GET", Access.Operator, "station.servicelog.read", (http, _) =>
        {
            string name = (string)http.GetRouteValue("name")!;
            var service = s_services.FirstOrDefault(s => s.Name == name && s.Role is { } r && info.Roles.HasFlag(r));
            if (service.Name is null)
                throw new StationException(404, "SERVICE_NOT_FOUND", "no such service on this server", "services: " + string.Join(", ", s_services.Where(s => s.Role is { } r && info.Roles.HasFlag(r)).Select(s => s.Name)));
            long offset = QueryLong(http, "offset", 0, long.MaxValue) ?? 0;
            long limit = QueryLong(http, "limit", 1, 1000) ?? 100;
            var order = http.Request.Query["order"].ToString();
            if (order.Length == 0) order = "desc";
            if (order is not ("asc" or "desc")) throw new StationException(400, "INVALID_PARAMETER", "order: asc or desc");
            var lines = env.Context.RecentLog(int.MaxValue).Where(l => BelongsTo(l, service.Category)).ToList();
            IEnumerable<ServerLogEntry> ordered = order == "desc" ? Enumerable.Reverse(lines) : lines;
            var page = ordered.Skip((int)Math.Min(offset, int.MaxValue)).Take((int)limit)
                .Select(l => $"{Time(l.Time)} {l.Level.ToString().ToUpperInvariant()} {l.Message}").ToList();
            return Task.FromResult(JsonOk(new Dictionary<string, object?>
            {
                ["logs"] = page, ["service_name"] = name, ["offset"] = offset, ["limit"] = limit, ["total_entries"] = lines.Count, ["order"] = order,
            }));
        });

        Route(routes, env, "/auditlog", "GET", Access.Operator, "station.audit.read", async (http, caller) =>
        {
            long limit = QueryLong(http, "limit", 1, 10_000) ?? 100;
            long offset = QueryLong(http, "offset", 0, 100_000) ?? 0;
            var q = http.Request.Query;
            AuditOutcome? outcome = null;
            if (q["outcome"].ToString() is { Length: > 0 } o)
                outcome = Enum.TryParse<AuditOutcome>(o, true, out var oc) && Enum.IsDefined(oc) ? oc
                    : throw new StationException(400, "INVALID_PARAMETER", "outcome: one of " + string.Join(", ", Enum.GetNames<AuditOutcome>()));
            var query = new AuditQuery
            {
                Action = Empty(q["event_type"]), Actor = Empty(q["client"]), Source = Empty(q["client_ip"]), Outcome = outcome,
                Since = Date(q["start_date"], "start_date"), Until = Date(q["end_date"], "end_date"), Limit = (int)(offset + limit),
            };
            var entries = (await env.Context.Store.QueryAuditAsync(query, http.RequestAborted)).Skip((int)offset).ToList();
            if (WantsHtml(http)) return Html(StationPages.Audit(entries, caller));
            return JsonOk(new Dictionary<string, object?>
            {
                ["audit_entries"] = entries.Select(e => new Dictionary<string, object?>
                {
                    ["id"] = e.Id, ["timestamp"] = Time(e.Time), ["event_type"] = e.Action, ["client"] = e.Actor, ["client_ip"] = e.Source,
                    ["target_path"] = e.Target, ["success"] = e.Outcome == AuditOutcome.Success, ["outcome"] = e.Outcome.ToString(), ["additional_info"] = e.Detail,
                }).ToList(),
                ["count"] = entries.Count,
                ["offset"] = offset,
                ["limit"] = limit,
            });
        });

        // Browser sign-in for the read-only pages: the operator token in a form becomes an HttpOnly, SameSite=Strict cookie that
        // only GET routes accept (state changes need the Authorization header or a client certificate, so no CSRF token is needed).
        routes.Map("/login", async (HttpContext http) =>
        {
            if (http.Request.Method == "GET")
            {
                await Html(StationPages.Login(http.Request.Query["next"].ToString())).ExecuteAsync(http);
                return;
            }
            if (http.Request.Method != "POST")
            {
                http.Response.Headers.Allow = "GET, POST";
                await Error(http, 405, "METHOD_NOT_ALLOWED", $"{http.Request.Method} is not allowed here").ExecuteAsync(http);
                return;
            }
            string? token = null, next = null;
            if (http.Request.HasFormContentType && http.Request.ContentLength is null or <= 8192)
            {
                var form = await http.Request.ReadFormAsync(http.RequestAborted);
                token = form["token"].ToString();
                next = form["next"].ToString();
            }
            var valid = await env.Station.Tokens.AuthenticateAsync(token, http.RequestAborted);
            await AuditAsync(env, http, valid is null ? null : new Caller($"session:{valid.TokenId}", "", true), "station.login", valid is null ? 401 : 200);
            if (valid is null)
            {
                await Error(http, 401, "INVALID_TOKEN", "the operator token is not valid").ExecuteAsync(http);
                return;
            }
            http.Response.Cookies.Append(SessionCookie, token!, new CookieOptions
            {
                HttpOnly = true, SameSite = SameSiteMode.Strict, Secure = http.Request.IsHttps, Path = "/", MaxAge = TimeSpan.FromHours(12),
            });
            http.Response.Redirect(next is { Length: > 1 } n && n[0] == '/' && n[1] != '/' && n[1] != '\\' && !n.Any(char.IsControl) ? n : "/devices", false);
        });

        routes.Map("/logout", async (HttpContext http) =>
        {
            if (http.Request.Method != "POST")
            {
                http.Response.Headers.Allow = "POST";
                await Error(http, 405, "METHOD_NOT_ALLOWED", $"{http.Request.Method} is not allowed here; use POST").ExecuteAsync(http);
                return;
            }
            http.Response.Cookies.Delete(SessionCookie, new CookieOptions { Path = "/" });
            http.Response.Redirect("/login", false);
        });

        Route(routes, env, "/ws/devices", "GET", Access.PublicRead, "station.ws.devices", async (http, caller) =>
        {
            if (!http.WebSockets.IsWebSocketRequest)
                throw new StationException(400, "WEBSOCKET_REQUIRED", "/ws/devices is a WebSocket endpoint");
            // A browser may only open it from a page of this server.
            var origin = http.Request.Headers.Origin.ToString();
            if (origin.Length > 0 && (!Uri.TryCreate(origin, UriKind.Absolute, out var o2) || !string.Equals(o2.Authority, http.Request.Host.Value, StringComparison.OrdinalIgnoreCase)))
                throw new StationException(403, "CROSS_ORIGIN", "the WebSocket must be opened from this server's pages");
            await env.Hub.ServeAsync(http, env);
            return Results.Empty;
        });
    }

    private static bool BelongsTo(ServerLogEntry l, string category) =>
        l.Category == category || (l.Category.StartsWith(category + ".", StringComparison.Ordinal) && !s_services.Any(s => s.Category != category && s.Category.StartsWith(category + ".", StringComparison.Ordinal) && (l.Category == s.Category || l.Category.StartsWith(s.Category + ".", StringComparison.Ordinal))));

    private static string? Empty(Microsoft.Extensions.Primitives.StringValues v) => v.Count == 0 || v.ToString().Length == 0 ? null : v.ToString();

    private static DateTimeOffset? Date(Microsoft.Extensions.Primitives.StringValues v, string name)
    {
        if (v.Count == 0 || v.ToString().Length == 0) return null;
        if (DateTimeOffset.TryParse(v.ToString(), System.Globalization.CultureInfo.InvariantCulture, System.Globalization.DateTimeStyles.AssumeUniversal, out var t)) return t;
        throw new StationException(400, "INVALID_PARAMETER", $"{name}: a date such as 2026-01-31 or 2026-01-31 13:45:00 (UTC)");
    }
}

/// <summary>
/// Live device updates: each <c>/ws/devices</c> client gets a snapshot of every device, then each state change in the order
/// the station stored them. A client subscribes before the snapshot is read, so nothing falls between the two.
/// </summary>
internal sealed class StationHub : IDisposable
{
    private readonly StationService _station;
    private readonly object _gate = new();
    private readonly List<Channel<StationEvent>> _clients = [];
    private long _sent;
    private VerifierClient? _verifier;

    public StationHub(StationService station)
    {
        _station = station;
        _station.StateChanged += OnState;
    }

    public int Clients { get { lock (_gate) return _clients.Count; } }
    public long EventsSent => Interlocked.Read(ref _sent);

    private void OnState(StationEvent ev)
    {
        lock (_gate)
            foreach (var c in _clients) c.Writer.TryWrite(ev);
    }

    public async Task ServeAsync(HttpContext http, StationRole.StationEnv env)
    {
        var channel = Channel.CreateBounded<StationEvent>(new BoundedChannelOptions(10_000) { FullMode = BoundedChannelFullMode.DropWrite, SingleReader = true });
        lock (_gate) _clients.Add(channel);
        try
        {
            using var ws = await http.WebSockets.AcceptWebSocketAsync();
            var ct = http.RequestAborted;
            var devices = await env.Context.Store.ListStationDevicesAsync(new StationDeviceQuery(), ct);
            long seen = devices.Count == 0 ? 0 : devices.Max(d => d.LastChangeId);
            await SendAsync(ws, new Dictionary<string, object?>
            {
                ["type"] = "snapshot", ["devices"] = devices.Select(StationRole.DeviceJson).ToList(), ["last_event_id"] = seen,
                ["timestamp"] = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
            }, ct);
            // Client messages are ignored; a close ends the session.
            var receive = Task.Run(async () =>
            {
                var buf = new byte[1024];
                try
                {
                    while (ws.State == WebSocketState.Open)
                    {
                        var r = await ws.ReceiveAsync(buf, ct);
                        if (r.MessageType == WebSocketMessageType.Close) break;
                    }
                }
                catch (Exception) { }
                channel.Writer.TryComplete();
            });
            await foreach (var ev in channel.Reader.ReadAllAsync(ct))
            {
                if (ev.Id <= seen) continue;
                await SendAsync(ws, new Dictionary<string, object?>
                {
                    ["type"] = "state", ["id"] = ev.Id, ["serial"] = ev.Serial, ["vendor"] = ev.Vendor, ["state"] = ev.State, ["detail"] = ev.Detail,
                    ["ip_address"] = ev.Address, ["timestamp"] = StationRole.Time(ev.Time),
                }, ct);
                Interlocked.Increment(ref _sent);
            }
            if (ws.State is WebSocketState.Open or WebSocketState.CloseReceived)
                await ws.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", CancellationToken.None);
            await receive;
        }
        catch (Exception e) when (e is WebSocketException or OperationCanceledException) { }
        finally
        {
            lock (_gate) _clients.Remove(channel);
        }
    }

    private static Task SendAsync(WebSocket ws, object message, CancellationToken ct) =>
        ws.SendAsync(JsonSerializer.SerializeToUtf8Bytes(message, StationRole.Json), WebSocketMessageType.Text, true, ct);

    private ServerContext? _context;

    /// <summary>The client of the configured verifier (components-CA client certificate), made once.</summary>
    private VerifierClient Verifier(ServerContext context, Uri uri)
    {
        lock (_gate)
            return _verifier ??= new VerifierClient(new VerifierClientOptions
            {
                Verifier = uri, CaCertificate = context.ComponentCa.Certificate, ClientCertificate = context.ComponentCa.IssueClientCertificate("station", role: Pki.ClientRole.Kms), // read-only, as the KMS reads
                Timeout = TimeSpan.FromSeconds(10),
            });
    }

    public void Bind(ServerContext context) => _context = context;

    /// <summary>Every agent the verifier watches, with its state (for the station's watch loop).</summary>
    public async Task<IReadOnlyDictionary<string, VerifierAgentStatus>> VerifierStatusesAsync(CancellationToken ct) =>
        await Verifier(_context!, _station.Settings.Verifier!).ListStatusAsync(ct);

    /// <summary>The verifier's view of an agent (as the KMS gate reads it), or null when no verifier is configured.</summary>
    public async Task<Dictionary<string, object?>?> AttestationAsync(StationRole.StationEnv env, string agentId, CancellationToken ct)
    {
        var uri = env.Station.Settings.Verifier;
        if (uri is null) return null;
        try
        {
            var s = await Verifier(env.Context, uri).GetAsync(agentId, ct);
            return new Dictionary<string, object?>
            {
                ["operational_state"] = s.OperationalState,
                ["state"] = Kms.KeylimeAttestationGate.StateName(s.OperationalState),
                ["last_successful_attestation"] = s.LastSuccessfulAttestation > 0 ? StationRole.Time(DateTimeOffset.FromUnixTimeSeconds(s.LastSuccessfulAttestation)) : null,
            };
        }
        catch (Exception ex) when (ex is Attestation.KeylimeRequestException or HttpRequestException or TaskCanceledException or JsonException)
        {
            return new Dictionary<string, object?> { ["error"] = "the verifier could not be asked: " + ex.Message };
        }
    }

    public void Dispose()
    {
        _station.StateChanged -= OnState;
        _verifier?.Dispose();
    }
}
