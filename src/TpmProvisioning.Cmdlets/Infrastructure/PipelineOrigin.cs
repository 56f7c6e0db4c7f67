using System.Collections;
using System.Management.Automation;

namespace TpmProvisioning.Cmdlets;

/// <summary>
/// Marks an output object with where it came from, a <c>DataPath</c> (local store) or a <c>Server</c> (remote), so the next
/// cmdlet in a pipeline binds it by property name and acts on the same store or server, never silently on the default one.
/// </summary>
internal static class PipelineOrigin
{
    public static PSObject Tag(object item, string? dataPath, Uri? server)
    {
        var ps = PSObject.AsPSObject(item);
        if (server is not null)
        {
            if (ps.Properties["Server"] is null) ps.Properties.Add(new PSNoteProperty("Server", server.ToString()));
        }
        else if (dataPath is not null)
        {
            ps.Properties.Remove("DataPath");
            ps.Properties.Add(new PSNoteProperty("DataPath", dataPath));
        }
        return ps;
    }

    /// <summary>Writes <paramref name="value"/> (each item of a collection) tagged with its origin.</summary>
    public static void Write(Cmdlet cmdlet, object? value, string? dataPath, Uri? server)
    {
        if (value is null) return;
        if (value is IEnumerable items and not string)
        {
            foreach (var item in items)
                if (item is not null) cmdlet.WriteObject(Tag(item, dataPath, server));
            return;
        }
        cmdlet.WriteObject(Tag(value, dataPath, server));
    }
}
