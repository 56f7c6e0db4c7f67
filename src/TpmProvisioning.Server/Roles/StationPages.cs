using System.Net;
using System.Text;
using TpmProvisioning.Station;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Server.Roles;

/// <summary>
/// The station's server-rendered pages: plain HTML with inline style, no asset from outside the server (factory networks are
/// often air-gapped). Every value is HTML-encoded. The devices page refreshes itself over <c>/ws/devices</c>.
/// </summary>
internal static partial class StationPages
{
    internal static string E(string? s) => WebUtility.HtmlEncode(s ?? "");

    internal static string Layout(string title, string body, StationRole.Caller? caller) => $$"""
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>{{E(title)}} - TpmProvisioning station</title>
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <style>
        body{font-family:system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f8fa}
        header{background:#24292f;color:#fff;padding:10px 20px;display:flex;gap:18px;align-items:center}
        header a{color:#fff;text-decoration:none}header b{margin-right:20px}
        main{padding:20px}table{border-collapse:collapse;background:#fff;width:100%}
        th,td{border:1px solid #d0d7de;padding:6px 10px;text-align:left;font-size:14px}th{background:#eaeef2}
        .s-ABORTED,.s-FAILED{color:#cf222e;font-weight:bold}.s-FINISHED,.s-REGISTERED{color:#1a7f37;font-weight:bold}
        pre{background:#fff;border:1px solid #d0d7de;padding:10px;overflow:auto;font-size:13px}
        .muted{color:#57606a}
        </style></head><body>
        <header><b>TpmProvisioning station</b><a href="/devices">Devices</a><a href="/api/v2/manufacturing">Manufacturing</a><a href="/images/list">Images</a><a href="/customisation/list-scripts">Scripts</a><a href="/options/get">Options</a><a href="/options/firmware">Firmware</a><a href="/auditlog">Audit log</a>
        <span class="muted" style="margin-left:auto">{{E(caller?.Actor ?? "")}}</span></header>
        <main><h1>{{E(title)}}</h1>
        {{body}}
        </main></body></html>
        """;

    private static string StateClass(string state) =>
        state.EndsWith("-ABORTED", StringComparison.Ordinal) || state.EndsWith("-FAILED", StringComparison.Ordinal) ? "s-ABORTED"
        : state.EndsWith("-FINISHED", StringComparison.Ordinal) || state == DeviceStates.Registered ? "s-FINISHED" : "";

    public static string Devices(IReadOnlyList<StationDevice> devices, string? filter, StationRole.Caller caller)
    {
        var sb = new StringBuilder();
        sb.Append($"<p class=\"muted\">{devices.Count} device(s){(string.IsNullOrEmpty(filter) ? "" : " in state " + E(filter))}; newest first. <span id=\"live\"></span></p>");
        sb.Append("<table id=\"devices\"><thead><tr><th>Serial</th><th>Vendor</th><th>Name</th><th>State</th><th>Address</th><th>Last seen (UTC)</th></tr></thead><tbody>");
        foreach (var d in devices)
            sb.Append($"<tr class=\"device\" data-serial=\"{E(d.Serial)}\"><td><a href=\"/devices/{E(Uri.EscapeDataString(d.Serial))}\">{E(d.Serial)}</a></td><td>{E(d.Vendor)}</td><td>{E(d.Name)}</td><td class=\"state {StateClass(d.State)}\">{E(d.State)}</td><td>{E(d.Address)}</td><td>{E(StationRole.Ts(d.LastSeen))}</td></tr>");
        sb.Append("</tbody></table>");
        // Live: reload when a state changes (a few lines, no library).
        sb.Append("""
            <script>
            (function(){try{var ws=new WebSocket((location.protocol==='https:'?'wss://':'ws://')+location.host+'/ws/devices');var first=true;
            ws.onmessage=function(m){var d=JSON.parse(m.data);if(d.type==='snapshot'){document.getElementById('live').textContent='live';return;}if(d.type==='state'){location.reload();}};}catch(e){}})();
            </script>
            """);
        return Layout("Devices", sb.ToString(), caller);
    }

    public static string Device(StationDeviceDetail d, string? agentId, Dictionary<string, object?>? attestation, Dictionary<string, IReadOnlyList<DeviceLogLine>>? logs, StationRole.Caller caller)
    {
        var sb = new StringBuilder();
        sb.Append("<table><tbody>");
        void Row(string k, string? v) => sb.Append($"<tr><th>{E(k)}</th><td>{E(v)}</td></tr>");
        Row("Serial", d.Serial); Row("Vendor", d.Vendor); Row("Name", d.Name); Row("State", d.State); Row("Address", d.Address);
        Row("First seen (UTC)", StationRole.Ts(d.FirstSeen)); Row("Last seen (UTC)", StationRole.Ts(d.LastSeen));
        Row("Manufacturing record", d.Record is null ? "none" : d.Record.Id.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Row("AK certificate serial", d.Record?.AkCertificateSerial); Row("EK certificate SHA-256", d.Record?.EkFingerprint);
        Row("Agent id", agentId);
        Row("Attestation", attestation is null ? "no verifier configured" : string.Join(", ", attestation.Select(kv => $"{kv.Key}={kv.Value}")));
        sb.Append("</tbody></table><h2>History</h2><table><thead><tr><th>Time (UTC)</th><th>State</th><th>Detail</th></tr></thead><tbody>");
        foreach (var h in d.History)
            sb.Append($"<tr><td>{E(StationRole.Time(h.Time))}</td><td class=\"{StateClass(h.State)}\">{E(h.State)}</td><td>{E(h.Detail)}</td></tr>");
        sb.Append("</tbody></table>");
        if (logs is not null)
            foreach (var (type, lines) in logs)
                sb.Append($"<h2>Log: {E(type)}</h2><pre>{E(string.Join("\n", lines.Select(l => l.ToString())))}</pre>");
        else sb.Append("<p class=\"muted\">Sign in to see the logs.</p>");
        return Layout("Device " + d.Serial, sb.ToString(), caller);
    }

    public static string Scripts(IReadOnlyList<StationScript> scripts, StationRole.Caller caller)
    {
        var sb = new StringBuilder("<table><thead><tr><th>File</th><th>Stage</th><th>Exists</th><th>Enabled</th><th>SHA-256</th><th>Description</th></tr></thead><tbody>");
        foreach (var s in scripts)
            sb.Append($"<tr><td><a href=\"/customisation/get-script?script={E(Uri.EscapeDataString(s.Name))}\">{E(s.Filename)}</a></td><td>{E(s.Stage)}</td><td>{(s.Exists ? "yes" : "no")}</td><td>{(s.Enabled ? "yes" : "no")}</td><td><code>{E(s.Sha256)}</code></td><td>{E(s.Description)}</td></tr>");
        sb.Append("</tbody></table>");
        return Layout("Scripts", sb.ToString(), caller);
    }

    public static string Script(StationScript s, StationRole.Caller caller) =>
        Layout("Script " + s.Filename, $"<p>{(s.Exists ? "Saved" : "Not saved yet (template)")}; {(s.Enabled ? "enabled" : "disabled")}.</p><pre>{E(s.Content)}</pre>", caller);

    public static string Audit(IReadOnlyList<AuditEntry> entries, StationRole.Caller caller)
    {
        var sb = new StringBuilder("<table><thead><tr><th>Id</th><th>Time (UTC)</th><th>Event</th><th>Client</th><th>Address</th><th>Target</th><th>Outcome</th><th>Detail</th></tr></thead><tbody>");
        foreach (var e in entries)
            sb.Append($"<tr><td>{e.Id}</td><td>{E(StationRole.Time(e.Time))}</td><td>{E(e.Action)}</td><td>{E(e.Actor)}</td><td>{E(e.Source)}</td><td>{E(e.Target)}</td><td>{E(e.Outcome.ToString())}</td><td>{E(e.Detail)}</td></tr>");
        return Layout("Audit log", sb.Append("</tbody></table>").ToString(), caller);
    }

    public static string Login(string? next) => Layout("Sign in", $"""
        <form method="post" action="/login"><p>Operator token (from <code>New-StationToken</code>):</p>
        <input type="password" name="token" size="70" autocomplete="off"><input type="hidden" name="next" value="{E(next)}">
        <button type="submit">Sign in</button></form>
        """, null);

    public static string ErrorPage(int status, string title, string code, string detail, string? additional) => Layout($"{status} {title}", $"""
        <p><b>{E(code)}</b></p><p>{E(detail)}</p>{(additional is null ? "" : $"<p class=\"muted\">{E(additional)}</p>")}
        {(status == 401 ? "<p><a href=\"/login\">Sign in</a></p>" : "")}
        """, null);
}
