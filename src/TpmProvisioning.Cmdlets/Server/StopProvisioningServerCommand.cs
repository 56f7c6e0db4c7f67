using System.Management.Automation;
using TpmProvisioning.Hosting;

namespace TpmProvisioning.Cmdlets;

/// <summary>Stops servers gracefully: in-flight requests finish (up to the shutdown timeout), the store and log close.</summary>
[Cmdlet(VerbsLifecycle.Stop, "ProvisioningServer", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, DefaultParameterSetName = "InputObject")]
[OutputType(typeof(ServerInfo))]
public sealed class StopProvisioningServerCommand : PSCmdlet
{
    /// <summary>Servers from Start- or Get-ProvisioningServer.</summary>
    [Parameter(ParameterSetName = "InputObject", Mandatory = true, ValueFromPipeline = true, Position = 0)]
    public ServerInfo[]? InputObject { get; set; }

    /// <summary>Server names; wildcards allowed.</summary>
    [Parameter(ParameterSetName = "Name", Mandatory = true)]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(ServerNameCompleter))]
    public string[]? Name { get; set; }

    /// <summary>Server ids.</summary>
    [Parameter(ParameterSetName = "Id", Mandatory = true)]
    public int[]? Id { get; set; }

    /// <summary>Write the stopped server to the pipeline.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        IEnumerable<IServerHost> hosts = ParameterSetName == "InputObject"
            ? ServerLookup.Select(this, null, InputObject!.Select(i => i.Id).ToArray())
            : ServerLookup.Select(this, Name, Id);
        foreach (var host in hosts.ToList())
        {
            if (!ShouldProcess($"{host.Info.Name} ({string.Join(", ", host.Info.Urls)})", "Stop provisioning server")) continue;
            try
            {
                host.StopAsync().GetAwaiter().GetResult();
            }
            catch (Exception ex)
            {
                WriteError(new ErrorRecord(ex, "ServerStopFailed", ErrorCategory.CloseError, host.Info));
            }
            finally
            {
                ServerRegistry.Remove(host.Info.Id);
            }
            if (PassThru) WriteObject(host.Info);
        }
    }
}
