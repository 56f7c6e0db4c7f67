using System.Management.Automation;
using TpmProvisioning.Hosting;

namespace TpmProvisioning.Cmdlets;

/// <summary>Reads the recent log of a running server (already redacted of secrets).</summary>
[Cmdlet(VerbsCommon.Get, "ProvisioningServerLog")]
[OutputType(typeof(ServerLogEntry))]
public sealed class GetProvisioningServerLogCommand : PSCmdlet
{
    /// <summary>The server; defaults to every running server.</summary>
    [Parameter(ValueFromPipeline = true, Position = 0)]
    public ServerInfo? InputObject { get; set; }

    /// <summary>How many of the newest entries per server.</summary>
    [Parameter]
    [ValidateRange(1, 100000)]
    [Alias("Tail")]
    public int Last { get; set; } = 100;

    /// <summary>Only entries at or above this level.</summary>
    [Parameter]
    public LogLevelName MinimumLevel { get; set; } = LogLevelName.Trace;

    protected override void ProcessRecord()
    {
        var hosts = InputObject is null ? ServerRegistry.All : ServerLookup.Select(this, null, [InputObject.Id]);
        foreach (var h in hosts)
            foreach (var e in h.RecentLog(Last).Where(e => e.Level >= MinimumLevel))
                WriteObject(e);
    }
}
