using TpmProvisioning.Attestation.Verifier;

namespace TpmProvisioning.Cmdlets;

/// <summary>
/// The one set of agent state names every cmdlet writes (Get-AttestationAgent -Verifier, Test-AgentAttestation, help):
/// Keylime's operational state names, as strings, plus two for what a verifier cannot say about an agent it was not asked for.
/// </summary>
public static class AttestationStateNames
{
    public const string GetQuote = "GET_QUOTE";
    public const string InvalidQuote = "INVALID_QUOTE";
    public const string Failed = "FAILED";
    /// <summary>The verifier does not watch this agent (404).</summary>
    public const string NotWatched = "NOT_WATCHED";
    /// <summary>The verifier could not be asked about this agent.</summary>
    public const string Unknown = "UNKNOWN";

    /// <summary>Every name a State property of this module may hold.</summary>
    public static IReadOnlyList<string> All { get; } =
        [.. Enum.GetValues<OperationalState>().Select(OperationalStates.KeylimeName), NotWatched, Unknown];

    /// <summary>Keylime's verdict names: PASS, FAIL, PENDING.</summary>
    public static string Status(AttestationStatus status) => status.ToString().ToUpperInvariant();

    /// <summary>Failures as one line: <c>event_id: reason; ...</c>.</summary>
    public static string Summary(IEnumerable<AttestationFailure>? failures) =>
        failures is null ? "" : string.Join("; ", failures.Select(f => $"{f.EventId}: {f.Reason}"));
}
