using System.Management.Automation;
using TpmProvisioning.Hosting;

namespace TpmProvisioning.Cmdlets;

/// <summary>Lists the servers running in this PowerShell process.</summary>
[Cmdlet(VerbsCommon.Get, "ProvisioningServer", DefaultParameterSetName = "Name")]
[OutputType(typeof(ServerInfo))]
public sealed class GetProvisioningServerCommand : PSCmdlet
{
    /// <summary>Server names; wildcards allowed.</summary>
    [Parameter(ParameterSetName = "Name", Position = 0)]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(ServerNameCompleter))]
    public string[]? Name { get; set; }

    /// <summary>Server ids.</summary>
    [Parameter(ParameterSetName = "Id", Mandatory = true, ValueFromPipelineByPropertyName = true)]
    public int[]? Id { get; set; }

    protected override void ProcessRecord()
    {
        foreach (var info in ServerLookup.Select(this, Name, Id))
            WriteObject(info.Info);
    }
}

/// <summary>Shared lookup by name (wildcards) or id; writes a not-found error per name or id that matches nothing.</summary>
internal static class ServerLookup
{
    public static IEnumerable<IServerHost> Select(PSCmdlet cmdlet, string[]? names, int[]? ids)
    {
        var all = ServerRegistry.All.ToList();
        if (ids is not null)
        {
            foreach (var id in ids)
            {
                var h = ServerRegistry.Get(id);
                if (h is null)
                    cmdlet.WriteError(new ErrorRecord(new ItemNotFoundException($"No server with Id {id} runs in this session."), "ServerNotFound", ErrorCategory.ObjectNotFound, id));
                else yield return h;
            }
            yield break;
        }
        if (names is null || names.Length == 0)
        {
            foreach (var h in all) yield return h;
            yield break;
        }
        foreach (var n in names)
        {
            var pattern = new WildcardPattern(n, WildcardOptions.IgnoreCase);
            var hits = all.Where(h => pattern.IsMatch(h.Info.Name)).ToList();
            if (hits.Count == 0 && !WildcardPattern.ContainsWildcardCharacters(n))
                cmdlet.WriteError(new ErrorRecord(new ItemNotFoundException($"No server named '{n}' runs in this session."), "ServerNotFound", ErrorCategory.ObjectNotFound, n));
            foreach (var h in hits) yield return h;
        }
    }
}

/// <summary>Completes -Name with the names of running servers.</summary>
public sealed class ServerNameCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, System.Management.Automation.Language.CommandAst commandAst, System.Collections.IDictionary fakeBoundParameters)
    {
        var pattern = new WildcardPattern((wordToComplete ?? "").Trim('\'', '"') + "*", WildcardOptions.IgnoreCase);
        foreach (var h in ServerRegistry.All.Where(h => pattern.IsMatch(h.Info.Name)))
            yield return new CompletionResult(h.Info.Name, h.Info.Name, CompletionResultType.ParameterValue, string.Join(", ", h.Info.Urls));
    }
}
