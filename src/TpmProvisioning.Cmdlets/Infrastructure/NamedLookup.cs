using System.Management.Automation;

namespace TpmProvisioning.Cmdlets;

/// <summary>
/// Selects session objects (servers, simulators) by id or by name with wildcards, writing a not-found error for each id or
/// literal name that matches nothing.
/// </summary>
internal static class NamedLookup
{
    public static IEnumerable<T> Select<T>(PSCmdlet cmdlet, IReadOnlyList<T> all, Func<T, string> name, Func<T, int> id,
        string[]? names, int[]? ids, string what, string errorId)
    {
        if (ids is not null)
        {
            foreach (var i in ids)
            {
                var hit = all.FirstOrDefault(x => id(x) == i);
                if (hit is null)
                    cmdlet.WriteError(new ErrorRecord(new ItemNotFoundException($"No {what} with Id {i} runs in this session."), errorId, ErrorCategory.ObjectNotFound, i));
                else yield return hit;
            }
            yield break;
        }
        if (names is null || names.Length == 0)
        {
            foreach (var x in all) yield return x;
            yield break;
        }
        foreach (var n in names)
        {
            var pattern = new WildcardPattern(n, WildcardOptions.IgnoreCase);
            var hits = all.Where(x => pattern.IsMatch(name(x))).ToList();
            if (hits.Count == 0 && !WildcardPattern.ContainsWildcardCharacters(n))
                cmdlet.WriteError(new ErrorRecord(new ItemNotFoundException($"No {what} named '{n}' runs in this session."), errorId, ErrorCategory.ObjectNotFound, n));
            foreach (var x in hits) yield return x;
        }
    }
}
