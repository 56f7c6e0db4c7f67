using System.Collections;
using System.Management.Automation;
using System.Management.Automation.Language;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Cmdlets;

/// <summary>Completes names from the KMS tables of the data path being used (-DataPath, else the default); reading names needs no master key.</summary>
public abstract class KmsStoreNameCompleter : IArgumentCompleter
{
    private protected abstract IEnumerable<string> Names(IStore store);

    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        var dataPath = fakeBoundParameters["DataPath"] as string;
        var dir = string.IsNullOrEmpty(dataPath) ? Defaults.DataPath : dataPath;
        if (fakeBoundParameters.Contains("Server") || !DataPathStore.Exists(dir)) return [];
        try
        {
            // A completion must not hang on a database that does not answer.
            using var quick = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            using var store = DataPathStore.OpenAsync(dir, mayCreate: false, ct: quick.Token).GetAwaiter().GetResult();
            var pattern = new WildcardPattern((wordToComplete.Trim('\'', '"')) + "*", WildcardOptions.IgnoreCase);
            return Names(store).Where(pattern.IsMatch).Order(StringComparer.OrdinalIgnoreCase)
                .Select(n => new CompletionResult(n.Contains(' ') ? $"'{n}'" : n, n, CompletionResultType.ParameterValue, n)).ToList();
        }
        catch (Exception ex) when (ex is StoreUnavailableException or DataPathStoreException or IOException or InvalidOperationException or OperationCanceledException) { return []; }
    }
}

/// <summary>Completes KMS provider names.</summary>
public sealed class KmsProviderNameCompleter : KmsStoreNameCompleter
{
    private protected override IEnumerable<string> Names(IStore store) => store.ListKmsProvidersAsync().GetAwaiter().GetResult().Select(p => p.Name);
}

/// <summary>Completes KMS key names.</summary>
public sealed class KmsKeyNameCompleter : KmsStoreNameCompleter
{
    private protected override IEnumerable<string> Names(IStore store) => store.ListKmsKeysAsync().GetAwaiter().GetResult().Select(k => k.Name);
}
