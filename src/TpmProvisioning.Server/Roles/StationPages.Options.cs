using System.Globalization;
using System.Text;
using TpmProvisioning.Configuration;
using TpmProvisioning.Hosting;
using TpmProvisioning.Station;

namespace TpmProvisioning.Server.Roles;

/// <summary>The dashboard's options, firmware and manufacturing pages.</summary>
internal static partial class StationPages
{
    private static string V(object? v) => SettingDefinition.Format(v) is { Length: > 0 } s ? s : "";

    public static string Options(IReadOnlyList<ProvisioningOption> options, ServerRole roles, StationRole.Caller caller)
    {
        var sb = new StringBuilder();
        int live = options.Count(o => o.Apply == nameof(SettingApply.Live)), restart = options.Count(o => o.Apply == nameof(SettingApply.Restart));
        sb.Append($"<p class=\"muted\">{options.Count} settings of this server (roles: {E(roles.ToString())}): {live} apply at once, {restart} from the next start, the rest only as start parameters. ");
        sb.Append("Change them with <code>POST /options/set</code> or <code>Set-ProvisioningOption</code>; the reference is docs/configuration.md.</p>");
        var pending = options.Where(o => o.Pending is not null).ToList();
        if (pending.Count > 0)
            sb.Append($"<p id=\"pending\"><b>Restart needed</b> for {pending.Count} stored change(s): {E(string.Join(", ", pending.Select(p => p.Name)))}.</p>");
        foreach (var section in options.GroupBy(o => o.Section))
        {
            sb.Append($"<h2>{E(section.Key)}</h2><table class=\"options\"><thead><tr><th>Setting</th><th>Value</th><th>Default</th><th>Rule</th><th>Applies</th><th>Source</th><th>Meaning</th></tr></thead><tbody>");
            foreach (var o in section)
            {
                string value = V(o.Value) + (o.Pending is null ? "" : $" <span class=\"s-ABORTED\">(stored: {E(V(o.Pending))}, after restart)</span>");
                string applies = o.Apply switch { "Live" => "live", "Restart" => "restart", _ => "start parameter" };
                sb.Append($"<tr class=\"option\" data-name=\"{E(o.Name)}\"><td><code>{E(o.Name)}</code></td><td>{(o.Pending is null ? E(V(o.Value)) : value)}</td><td>{E(V(o.Default))}</td><td>{E(o.Rule)}</td><td>{applies}</td><td>{E(o.Source)}</td><td>{E(o.Description)}</td></tr>");
            }
            sb.Append("</tbody></table>");
        }
        return Layout("Options", sb.ToString(), caller);
    }

    public static string Firmware(IReadOnlyList<ProvisioningFirmware> releases, IReadOnlyList<string> families, StationRole.Caller caller)
    {
        var sb = new StringBuilder();
        sb.Append($"<p class=\"muted\">{releases.Count} release(s) in {families.Count} device famil{(families.Count == 1 ? "y" : "ies")}. Select one with <code>POST /options/firmware/set</code>.</p>");
        sb.Append("<table id=\"firmware\"><thead><tr><th>Family</th><th>Name</th><th>Version</th><th>Date</th><th>Size</th><th>SHA-256</th><th>Notes</th><th>Selected</th></tr></thead><tbody>");
        foreach (var f in releases)
        {
            string notes = f.HasNotes ? $"<a href=\"/options/firmware/notes/{E(Uri.EscapeDataString(f.Version))}?family={E(Uri.EscapeDataString(f.Family))}\">notes</a>" : "";
            sb.Append($"<tr class=\"release\"><td>{E(f.Family)}</td><td>{E(f.Name)}</td><td>{E(f.Version)}</td><td>{E(f.Date.UtcDateTime.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture))}</td><td>{f.Size}</td><td><code>{E(f.Sha256)}</code></td><td>{notes}</td><td>{(f.Selected ? "<b class=\"s-FINISHED\">selected</b>" : "")}</td></tr>");
        }
        sb.Append("</tbody></table>");
        return Layout("Firmware", sb.ToString(), caller);
    }

    public static string Manufacturing(IReadOnlyList<ManufacturingRow> rows, long offset, StationRole.Caller caller)
    {
        var sb = new StringBuilder();
        sb.Append($"<p class=\"muted\">{rows.Count} record(s) from offset {offset}; newest first.</p>");
        sb.Append("<table id=\"records\"><thead><tr><th>Id</th><th>Provisioned (UTC)</th><th>Serial</th><th>Vendor</th><th>Name</th><th>Version</th><th>AK certificate serial</th><th>EK certificate SHA-256</th><th>TPM CA key</th><th>Image</th><th>Agent id</th></tr></thead><tbody>");
        foreach (var r in rows)
            sb.Append($"<tr class=\"record\"><td>{r.Id}</td><td>{E(StationRole.Ts(r.ProvisionTime))}</td><td><a href=\"/devices/{E(Uri.EscapeDataString(r.Serial))}\">{E(r.Serial)}</a></td><td>{E(r.Vendor)}</td><td>{E(r.Name)}</td><td>{E(r.Version)}</td><td><code>{E(r.AkCertificateSerial)}</code></td><td><code title=\"{E(r.EkFingerprint)}\">{E(r.EkFingerprint.Length > 16 ? r.EkFingerprint[..16] + "…" : r.EkFingerprint)}</code></td><td>{E(r.CaKeyLabel)}</td><td>{E(r.ImageName)}</td><td>{E(r.AgentId)}</td></tr>");
        sb.Append("</tbody></table>");
        return Layout("Manufacturing", sb.ToString(), caller);
    }
}
