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
    public static IEnumerable<IServerHost> Select(PSCmdlet cmdlet, string[]? names, int[]? ids) =>
        NamedLookup.Select(cmdlet, ServerRegistry.All.ToList(), h => h.Info.Name, h => h.Info.Id, names, ids, "server", "ServerNotFound");
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

/// <summary>Completes a server address (-Registrar, -Verifier, -Server) with the URLs of running servers that host the role.</summary>
public abstract class ServerUrlCompleter(ServerRole role) : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, System.Management.Automation.Language.CommandAst commandAst, System.Collections.IDictionary fakeBoundParameters)
    {
        var typed = (wordToComplete ?? "").Trim('\'', '"');
        foreach (var h in ServerRegistry.All.Where(h => h.Info.Roles.HasFlag(role) && h.Info.State == ServerState.Running))
            foreach (var url in h.Info.Urls.Where(u => u.StartsWith(typed, StringComparison.OrdinalIgnoreCase)))
                yield return new CompletionResult(url, url, CompletionResultType.ParameterValue, $"{h.Info.Name} ({role})");
    }
}

/// <summary>Completes -Registrar with the URLs of running registrars.</summary>
public sealed class RegistrarUrlCompleter() : ServerUrlCompleter(ServerRole.Registrar);

/// <summary>Completes -Verifier with the URLs of running verifiers.</summary>
public sealed class VerifierUrlCompleter() : ServerUrlCompleter(ServerRole.Verifier);

/// <summary>Completes a KMS -Server with the URLs of running KMS servers.</summary>
public sealed class KmsUrlCompleter() : ServerUrlCompleter(ServerRole.Kms);
